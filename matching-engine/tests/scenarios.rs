//! One named scenario per rule of the rulebook (matching-engine/README.md); the handoff's
//! rules (DESIGN section 11) are in `handoff.rs`.

use matching_engine::*;

const HOUR_S: u32 = 3600;
const T0: i64 = 1_800_000_000_000;
const POOL: &str = "h100-sxm.us-east";

/// The pool of these scenarios. Its leases are ready, and billed, from the moment they open
/// (`handoff: none`), so the rules here read without the handoff; `tests/handoff.rs` has the
/// handoff's own scenarios.
fn pool_config() -> PoolConfig {
    PoolConfig {
        handoff: Handoff::None,
        ..PoolConfig::with_defaults("h100-sxm", "us-east")
    }
}

fn usd(cents: u64) -> PriceMicros {
    PriceMicros(cents * 10_000)
}

fn at_s(seconds: i64) -> TimeMs {
    TimeMs(T0 + seconds * 1000)
}

/// A market with one continuous pool, driven at explicit times.
struct Market {
    engine: Engine,
    now: TimeMs,
}

impl Market {
    fn new() -> Market {
        Market::with_pool(pool_config())
    }

    fn with_pool(config: PoolConfig) -> Market {
        let mut market = Market {
            engine: Engine::new(),
            now: at_s(0),
        };
        let events = market.run(Command::ConfigurePool(config));
        assert!(matches!(events[0], Event::PoolConfigured { .. }));
        market
    }

    fn run(&mut self, command: Command) -> Vec<Event> {
        let mut out = Vec::new();
        self.engine.apply(self.now, &command, &mut out);
        self.engine.assert_invariants();
        out
    }

    fn at(&mut self, seconds: i64) -> &mut Market {
        self.now = at_s(seconds);
        self
    }

    fn tick(&mut self, seconds: i64) -> Vec<Event> {
        self.now = at_s(seconds);
        self.run(Command::Tick)
    }

    fn release(&mut self, supplier: &str, block: &str, gpus: u32, cents: u64, hours: i64) {
        let events = self.try_release(supplier, block, gpus, cents, hours);
        assert!(!rejected(&events), "release refused: {events:?}");
    }

    fn try_release(
        &mut self,
        supplier: &str,
        block: &str,
        gpus: u32,
        cents: u64,
        hours: i64,
    ) -> Vec<Event> {
        let until = TimeMs(self.now.0 + hours * 3_600_000);
        self.run(Command::ReleaseCapacity(ReleaseCapacity {
            supplier: supplier.into(),
            block_id: block.into(),
            pool: POOL.into(),
            gpus,
            reserve_price: usd(cents),
            available_from: None,
            available_until: until,
            nodes: vec![],
        }))
    }

    fn bid(&mut self, account: &str, gpus: u32, cents: u64) -> OrderId {
        self.place(bid(account, gpus, cents))
    }

    fn place(&mut self, bid: PlaceBid) -> OrderId {
        let events = self.run(Command::PlaceBid(bid));
        accepted_id(&events).unwrap_or_else(|| panic!("bid refused: {events:?}"))
    }

    fn reclaim(&mut self, block: &str, gpus: u32) -> Vec<Event> {
        self.run(Command::ReclaimCapacity(ReclaimCapacity {
            supplier: "sched".into(),
            block_id: block.into(),
            gpus,
            notice_s: None,
            emergency: false,
        }))
    }

    fn depth(&self) -> Depth {
        self.engine.depth(POOL, 100).unwrap()
    }

    fn block(&self, block: &str) -> BlockView {
        self.engine.block("sched", block).unwrap()
    }
}

fn bid(account: &str, gpus: u32, cents: u64) -> PlaceBid {
    PlaceBid {
        account: account.into(),
        pool: POOL.into(),
        gpus,
        min_gpus: None,
        price: usd(cents),
        duration_s: HOUR_S,
        max_duration_s: None,
        tif: TimeInForce::Gtc,
        expires_at: None,
        persistent: false,
        client_order_id: None,
        ssh_public_keys: vec![],
    }
}

fn accepted_id(events: &[Event]) -> Option<OrderId> {
    events.iter().find_map(|e| match e {
        Event::BidAccepted { order } => Some(order.id),
        _ => None,
    })
}

fn rejected(events: &[Event]) -> bool {
    events.iter().any(|e| matches!(e, Event::Rejected { .. }))
}

fn rejection(events: &[Event]) -> Option<Rejection> {
    events.iter().find_map(|e| match e {
        Event::Rejected { reason } => Some(*reason),
        _ => None,
    })
}

fn trades(events: &[Event]) -> Vec<TradeView> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Traded { trade } => Some(trade.clone()),
            _ => None,
        })
        .collect()
}

fn lease_changes(events: &[Event]) -> Vec<LeaseView> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::LeaseChanged { lease } => Some(LeaseView::clone(lease)),
            _ => None,
        })
        .collect()
}

fn last_order_state(events: &[Event]) -> Option<OrderView> {
    events.iter().rev().find_map(|e| match e {
        Event::OrderChanged { order } | Event::BidAccepted { order } => Some(order.clone()),
        _ => None,
    })
}

// ----- price-time priority and eligibility --------------------------------------------------

#[test]
fn bid_takes_the_cheapest_ask_first() {
    let mut m = Market::new();
    m.release("sched", "dear", 8, 150, 10);
    m.release("sched", "cheap", 8, 120, 10);
    m.bid("acme", 8, 200);
    let events = m.run(Command::Tick);
    assert!(events.is_empty());
    assert_eq!(m.block("cheap").gpus_sold, 8);
    assert_eq!(m.block("dear").gpus_sold, 0);
}

#[test]
fn equal_price_asks_fill_in_arrival_order() {
    let mut m = Market::new();
    m.release("sched", "first", 4, 100, 10);
    m.release("sched", "second", 4, 100, 10);
    let events = m.run(Command::PlaceBid(bid("acme", 4, 100)));
    let fills = trades(&events);
    assert_eq!(fills.len(), 1);
    assert_eq!(&*fills[0].block_id, "first");
}

#[test]
fn trade_price_is_the_resting_orders_price() {
    let mut m = Market::new();
    m.release("sched", "ask", 4, 100, 10);
    let events = m.run(Command::PlaceBid(bid("acme", 4, 180)));
    assert_eq!(
        trades(&events)[0].price,
        usd(100),
        "incoming bid pays the ask"
    );
    assert_eq!(trades(&events)[0].maker_side, Side::Ask);

    m.bid("beta", 4, 170);
    let events = m.try_release("sched", "late", 4, 110, 10);
    assert_eq!(
        trades(&events)[0].price,
        usd(170),
        "incoming block gets the bid"
    );
    assert_eq!(trades(&events)[0].maker_side, Side::Bid);
}

#[test]
fn bid_skips_blocks_that_close_before_its_duration() {
    let mut m = Market::new();
    m.release("sched", "short", 8, 100, 1);
    m.release("sched", "long", 8, 150, 10);
    let mut wants_two_hours = bid("acme", 8, 200);
    wants_two_hours.duration_s = 2 * HOUR_S;
    m.place(wants_two_hours);
    assert_eq!(m.block("short").gpus_sold, 0);
    assert_eq!(m.block("long").gpus_sold, 8);
}

#[test]
fn min_gpus_execution_combines_several_blocks_one_lease_each() {
    let mut m = Market::new();
    m.release("sched", "a", 3, 100, 10);
    m.release("sched", "b", 3, 110, 10);
    m.release("sched", "c", 3, 120, 10);
    let events = m.run(Command::PlaceBid(bid("acme", 8, 200)));
    let opened: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::LeaseOpened { lease } => Some((lease.block_id.to_string(), lease.gpus)),
            _ => None,
        })
        .collect();
    assert_eq!(
        opened,
        vec![("a".into(), 3), ("b".into(), 3), ("c".into(), 2)]
    );
    assert_eq!(
        last_order_state(&events).unwrap().status,
        OrderStatus::Filled
    );
}

#[test]
fn all_or_none_bid_rests_until_supply_is_enough_then_fills() {
    let mut m = Market::new();
    m.release("sched", "a", 4, 100, 10);
    let id = m.bid("acme", 8, 200);
    assert_eq!(m.engine.order(id).unwrap().status, OrderStatus::Open);
    assert_eq!(
        m.block("a").gpus_sold,
        0,
        "all-or-none takes nothing partial"
    );
    m.release("sched", "b", 4, 100, 10);
    assert!(m.engine.order(id).is_none(), "filled and forgotten");
    assert_eq!(m.engine.leases_of("acme").len(), 2);
}

#[test]
fn resting_bids_are_looked_at_again_in_priority_order() {
    let mut m = Market::new();
    let low = m.bid("low", 4, 150);
    let high = m.bid("high", 4, 190);
    let later_high = m.bid("later", 4, 190);
    m.release("sched", "a", 4, 100, 10);
    assert!(m.engine.order(high).is_none(), "best price fills first");
    assert!(m.engine.order(later_high).is_some());
    m.release("sched", "b", 4, 100, 10);
    assert!(m.engine.order(later_high).is_none(), "then time priority");
    assert!(m.engine.order(low).is_some());
}

#[test]
fn ioc_bid_cancels_its_remainder() {
    let mut m = Market::new();
    m.release("sched", "a", 3, 100, 10);
    let mut ioc = bid("acme", 8, 200);
    ioc.tif = TimeInForce::Ioc;
    ioc.min_gpus = Some(1);
    let events = m.run(Command::PlaceBid(ioc));
    let last = last_order_state(&events).unwrap();
    assert_eq!(last.status, OrderStatus::Cancelled);
    assert_eq!(last.cancel_reason, Some(CancelReason::IocRemainder));
    assert_eq!(last.filled_gpus, 3);
    assert!(m.depth().bids.is_empty());
}

#[test]
fn fok_bid_never_rests() {
    let mut m = Market::new();
    m.release("sched", "a", 3, 100, 10);
    let mut fok = bid("acme", 8, 200);
    fok.tif = TimeInForce::Fok;
    fok.min_gpus = Some(1);
    let events = m.run(Command::PlaceBid(fok));
    let last = last_order_state(&events).unwrap();
    assert_eq!(last.status, OrderStatus::Cancelled);
    assert_eq!(last.cancel_reason, Some(CancelReason::FokNotFillable));
    assert!(trades(&events).is_empty());
    assert!(m.depth().bids.is_empty());
    assert_eq!(m.block("a").gpus_unsold, 3);
}

#[test]
fn gtd_bid_expires_at_its_time() {
    let mut m = Market::new();
    let mut gtd = bid("acme", 8, 100);
    gtd.tif = TimeInForce::Gtd;
    gtd.expires_at = Some(at_s(60));
    let id = m.place(gtd);
    assert!(m.tick(59).is_empty());
    let events = m.tick(61);
    assert_eq!(
        last_order_state(&events).unwrap().status,
        OrderStatus::Expired
    );
    assert!(m.engine.order(id).is_none());
    assert!(m.depth().bids.is_empty());
}

#[test]
fn gtd_needs_a_future_expiry_and_others_none() {
    let mut m = Market::new();
    let mut gtd = bid("acme", 8, 100);
    gtd.tif = TimeInForce::Gtd;
    let events = m.run(Command::PlaceBid(gtd));
    assert_eq!(rejection(&events), Some(Rejection::ExpiresAtInvalid));
    let mut gtc = bid("acme", 8, 100);
    gtc.expires_at = Some(at_s(60));
    let events = m.run(Command::PlaceBid(gtc));
    assert_eq!(rejection(&events), Some(Rejection::ExpiresAtInvalid));
}

// ----- amend, cancel, idempotency -----------------------------------------------------------

#[test]
fn amend_price_change_loses_time_priority() {
    let mut m = Market::new();
    let first = m.bid("a", 4, 150);
    let second = m.bid("b", 4, 150);
    let events = m.run(Command::AmendBid(AmendBid {
        account: "a".into(),
        order_id: first,
        price: Some(usd(140)),
        gpus: None,
    }));
    assert!(!rejected(&events));
    m.run(Command::AmendBid(AmendBid {
        account: "a".into(),
        order_id: first,
        price: Some(usd(150)),
        gpus: None,
    }));
    m.release("sched", "x", 4, 100, 10);
    assert!(
        m.engine.order(second).is_none(),
        "the untouched bid filled first"
    );
    assert!(m.engine.order(first).is_some());
}

#[test]
fn amend_size_decrease_keeps_time_priority() {
    let mut m = Market::new();
    let first = m.bid("a", 8, 150);
    let second = m.bid("b", 4, 150);
    let events = m.run(Command::AmendBid(AmendBid {
        account: "a".into(),
        order_id: first,
        price: None,
        gpus: Some(4),
    }));
    assert_eq!(last_order_state(&events).unwrap().gpus, 4);
    m.release("sched", "x", 4, 100, 10);
    assert!(
        m.engine.order(first).is_none(),
        "kept its place at the front"
    );
    assert!(m.engine.order(second).is_some());
}

#[test]
fn amend_into_the_ask_trades_at_once() {
    let mut m = Market::new();
    m.release("sched", "x", 4, 120, 10);
    let id = m.bid("a", 4, 100);
    let events = m.run(Command::AmendBid(AmendBid {
        account: "a".into(),
        order_id: id,
        price: Some(usd(130)),
        gpus: None,
    }));
    assert_eq!(trades(&events)[0].price, usd(120));
}

#[test]
fn another_accounts_order_cannot_be_touched() {
    let mut m = Market::new();
    let id = m.bid("a", 4, 100);
    let cancel = m.run(Command::CancelBid {
        account: "mallory".into(),
        order_id: id,
    });
    assert_eq!(rejection(&cancel), Some(Rejection::NotYourOrder));
    let amend = m.run(Command::AmendBid(AmendBid {
        account: "mallory".into(),
        order_id: id,
        price: Some(usd(90)),
        gpus: None,
    }));
    assert_eq!(rejection(&amend), Some(Rejection::NotYourOrder));
    assert_eq!(m.engine.order(id).unwrap().price, usd(100));
}

#[test]
fn cancel_takes_the_bid_off_the_book() {
    let mut m = Market::new();
    let id = m.bid("a", 4, 100);
    let events = m.run(Command::CancelBid {
        account: "a".into(),
        order_id: id,
    });
    assert_eq!(
        last_order_state(&events).unwrap().cancel_reason,
        Some(CancelReason::ByOwner)
    );
    assert!(m.depth().bids.is_empty());
    let again = m.run(Command::CancelBid {
        account: "a".into(),
        order_id: id,
    });
    assert_eq!(rejection(&again), Some(Rejection::UnknownOrder));
}

#[test]
fn client_order_id_returns_the_first_order_and_creates_nothing() {
    let mut m = Market::new();
    let mut keyed = bid("a", 4, 100);
    keyed.client_order_id = Some("k-1".into());
    let first = m.place(keyed.clone());
    let events = m.run(Command::PlaceBid(keyed.clone()));
    assert_eq!(
        events,
        vec![Event::DuplicateClientOrderId { order_id: first }]
    );
    assert_eq!(m.depth().bids[0].orders, 1);
    keyed.account = "b".into();
    assert_ne!(m.place(keyed), first, "keys are per account");
}

// ----- validation and limits ----------------------------------------------------------------

#[test]
fn malformed_bids_are_rejected_with_a_reason() {
    let mut m = Market::new();
    let cases: Vec<(PlaceBid, Rejection)> = vec![
        (
            PlaceBid {
                price: PriceMicros(1_234_567),
                ..bid("a", 1, 0)
            },
            Rejection::PriceNotOnTick,
        ),
        (bid("a", 1, 20_000), Rejection::PriceOutOfBand),
        (bid("a", 0, 100), Rejection::GpusMustNotBeZero),
        (bid("a", 5000, 100), Rejection::GpusOverMax),
        (
            PlaceBid {
                min_gpus: Some(9),
                ..bid("a", 8, 100)
            },
            Rejection::MinGpusInvalid,
        ),
        (
            PlaceBid {
                duration_s: 10,
                ..bid("a", 8, 100)
            },
            Rejection::DurationTooShort,
        ),
        (
            PlaceBid {
                max_duration_s: Some(10),
                ..bid("a", 8, 100)
            },
            Rejection::MaxDurationBelowDuration,
        ),
        (
            PlaceBid {
                pool: "nope.nowhere".into(),
                ..bid("a", 8, 100)
            },
            Rejection::UnknownPool,
        ),
    ];
    for (bad, reason) in cases {
        let events = m.run(Command::PlaceBid(bad.clone()));
        assert_eq!(events, vec![Event::Rejected { reason }], "for {bad:?}");
    }
    assert!(m.depth().bids.is_empty());
}

#[test]
fn account_limits_cap_open_orders_and_notional() {
    let mut m = Market::new();
    m.run(Command::SetAccountLimits {
        account: "a".into(),
        limits: AccountLimits {
            orders_open_max: 2,
            open_notional_max_micros: 100_000_000,
        },
    });
    m.bid("a", 1, 100);
    m.bid("a", 1, 100);
    let third = m.run(Command::PlaceBid(bid("a", 1, 100)));
    assert_eq!(rejection(&third), Some(Rejection::LimitOrdersOpen));
    let mut big = bid("b", 1, 100);
    big.account = "a".into();
    m.run(Command::SetAccountLimits {
        account: "a".into(),
        limits: AccountLimits {
            orders_open_max: 10,
            open_notional_max_micros: 3_000_000,
        },
    });
    // $1 * 1 GPU * 1 h each: two resting use $2 of $3.
    let over = m.run(Command::PlaceBid(bid("a", 2, 100)));
    assert_eq!(rejection(&over), Some(Rejection::LimitNotional));
    m.bid("a", 1, 100);
}

#[test]
fn account_kill_switch_cancels_and_refuses() {
    let mut m = Market::new();
    let id = m.bid("a", 4, 100);
    let events = m.run(Command::SetKillSwitch {
        target: KillTarget::Account("a".into()),
        engaged: true,
    });
    assert_eq!(
        last_order_state(&events).unwrap().cancel_reason,
        Some(CancelReason::KillSwitch)
    );
    assert!(m.engine.order(id).is_none());
    let refused = m.run(Command::PlaceBid(bid("a", 4, 100)));
    assert_eq!(rejection(&refused), Some(Rejection::KillSwitch));
    m.run(Command::SetKillSwitch {
        target: KillTarget::Account("a".into()),
        engaged: false,
    });
    m.bid("a", 4, 100);
}

#[test]
fn pool_kill_switch_halts_trading() {
    let mut m = Market::new();
    m.release("sched", "x", 4, 100, 10);
    m.bid("a", 8, 90);
    m.run(Command::SetKillSwitch {
        target: KillTarget::Pool(POOL.into()),
        engaged: true,
    });
    assert!(m.depth().bids.is_empty());
    assert!(m.engine.pool(POOL).unwrap().halted);
    let refused = m.run(Command::PlaceBid(bid("b", 4, 200)));
    assert_eq!(rejection(&refused), Some(Rejection::KillSwitch));
    let refused = m.try_release("sched", "y", 4, 100, 10);
    assert_eq!(rejection(&refused), Some(Rejection::KillSwitch));
}

// ----- blocks -------------------------------------------------------------------------------

#[test]
fn block_ids_are_unique_per_supplier() {
    let mut m = Market::new();
    m.release("sched", "x", 4, 100, 10);
    let again = m.try_release("sched", "x", 4, 100, 10);
    assert_eq!(rejection(&again), Some(Rejection::BlockIdTaken));
    m.release("other", "x", 4, 100, 10);
}

#[test]
fn pending_block_rests_when_its_window_opens() {
    let mut m = Market::new();
    let events = m.run(Command::ReleaseCapacity(ReleaseCapacity {
        supplier: "sched".into(),
        block_id: "night".into(),
        pool: POOL.into(),
        gpus: 8,
        reserve_price: usd(100),
        available_from: Some(at_s(600)),
        available_until: at_s(600 + 8 * 3600),
        nodes: vec![],
    }));
    assert!(!rejected(&events));
    assert_eq!(m.block("night").status, BlockStatus::Pending);
    assert!(m.depth().asks.is_empty());
    m.tick(600);
    assert_eq!(m.block("night").status, BlockStatus::Open);
    assert_eq!(m.depth().asks[0].gpus, 8);
}

#[test]
fn block_window_can_grow_but_never_shrink() {
    let mut m = Market::new();
    m.release("sched", "x", 4, 100, 2);
    let shrink = m.run(Command::UpdateCapacity(UpdateCapacity {
        supplier: "sched".into(),
        block_id: "x".into(),
        reserve_price: None,
        available_until: Some(at_s(3600)),
    }));
    assert_eq!(rejection(&shrink), Some(Rejection::WindowCannotShrink));
    m.run(Command::UpdateCapacity(UpdateCapacity {
        supplier: "sched".into(),
        block_id: "x".into(),
        reserve_price: None,
        available_until: Some(at_s(5 * 3600)),
    }));
    m.tick(2 * 3600 + 1);
    assert_eq!(m.block("x").status, BlockStatus::Open, "the old end passed");
    m.tick(5 * 3600);
    assert!(
        m.engine.block("sched", "x").is_none(),
        "closed and forgotten"
    );
    assert!(m.depth().asks.is_empty());
}

#[test]
fn lowering_a_reserve_price_fills_resting_bids() {
    let mut m = Market::new();
    m.release("sched", "x", 4, 150, 10);
    let id = m.bid("a", 4, 120);
    let events = m.run(Command::UpdateCapacity(UpdateCapacity {
        supplier: "sched".into(),
        block_id: "x".into(),
        reserve_price: Some(usd(110)),
        available_until: None,
    }));
    assert_eq!(trades(&events)[0].price, usd(120), "the bid rested first");
    assert!(m.engine.order(id).is_none());
}

#[test]
fn nodes_are_assigned_to_leases() {
    let mut m = Market::new();
    m.run(Command::ReleaseCapacity(ReleaseCapacity {
        supplier: "sched".into(),
        block_id: "rack".into(),
        pool: POOL.into(),
        gpus: 16,
        reserve_price: usd(100),
        available_from: None,
        available_until: at_s(10 * 3600),
        nodes: vec![
            NodeGpus {
                node: "n1".into(),
                gpus: 8,
            },
            NodeGpus {
                node: "n2".into(),
                gpus: 8,
            },
        ],
    }));
    m.bid("a", 12, 100);
    let lease = &m.engine.leases_of("a")[0];
    assert_eq!(
        lease.nodes,
        vec![
            NodeGpus {
                node: "n1".into(),
                gpus: 8
            },
            NodeGpus {
                node: "n2".into(),
                gpus: 4
            }
        ]
    );
    let mismatched = m.run(Command::ReleaseCapacity(ReleaseCapacity {
        supplier: "sched".into(),
        block_id: "bad".into(),
        pool: POOL.into(),
        gpus: 16,
        reserve_price: usd(100),
        available_from: None,
        available_until: at_s(10 * 3600),
        nodes: vec![NodeGpus {
            node: "n1".into(),
            gpus: 8,
        }],
    }));
    assert_eq!(rejection(&mismatched), Some(Rejection::NodesDoNotMatchGpus));
}

// ----- leases and reclaim -------------------------------------------------------------------

#[test]
fn lease_ends_at_the_earlier_of_its_max_duration_and_the_block_window() {
    let mut m = Market::new();
    m.release("sched", "x", 4, 100, 3);
    let mut long = bid("a", 4, 100);
    long.max_duration_s = Some(10 * HOUR_S);
    m.place(long);
    assert_eq!(m.engine.leases_of("a")[0].ends_at, at_s(3 * 3600));
}

#[test]
fn completed_lease_costs_per_second_and_returns_gpus_to_the_book() {
    let mut m = Market::new();
    m.release("sched", "x", 4, 100, 10);
    m.bid("a", 4, 100);
    let events = m.tick(3600);
    let ended = &lease_changes(&events)[0];
    assert_eq!(ended.status, LeaseStatus::Completed);
    assert_eq!(ended.cost_micros, 4_000_000, "$1 x 4 GPUs x 1 h");
    assert_eq!(m.depth().asks[0].gpus, 4);
    assert_eq!(m.block("x").revenue_micros, 4_000_000);
}

#[test]
fn lease_cost_is_rounded_down_to_a_whole_micro_dollar() {
    assert_eq!(cost_micros(PriceMicros(1_000_000), 1, 1), 277);
    assert_eq!(cost_micros(PriceMicros(10_000), 3, 7), 58);
}

#[test]
fn buyer_can_release_a_lease_early() {
    let mut m = Market::new();
    m.release("sched", "x", 4, 360, 10);
    m.bid("a", 4, 360);
    let lease = m.engine.leases_of("a")[0].id;
    let other = m.at(100).run(Command::ReleaseLease {
        account: "b".into(),
        lease_id: lease,
    });
    assert_eq!(rejection(&other), Some(Rejection::NotYourLease));
    let events = m.run(Command::ReleaseLease {
        account: "a".into(),
        lease_id: lease,
    });
    let ended = &lease_changes(&events)[0];
    assert_eq!(ended.status, LeaseStatus::Released);
    assert_eq!(ended.cost_micros, 400_000, "$3.60 x 4 x 100 s");
    assert!(m.engine.lease(lease).is_none());
}

#[test]
fn reclaim_takes_unsold_gpus_first() {
    let mut m = Market::new();
    m.release("sched", "x", 8, 100, 10);
    m.bid("a", 4, 100);
    let events = m.reclaim("x", 3);
    assert!(lease_changes(&events).is_empty(), "no lease preempted");
    let block = m.block("x");
    assert_eq!(
        (block.gpus_sold, block.gpus_unsold, block.gpus_reclaimed),
        (4, 1, 3)
    );
    assert_eq!(m.depth().asks[0].gpus, 1);
}

#[test]
fn reclaim_preempts_lowest_price_lease_first() {
    let mut m = Market::new();
    m.release("sched", "x", 8, 100, 10);
    m.bid("rich", 4, 150);
    m.bid("cheap", 4, 100);
    let events = m.reclaim("x", 4);
    let preempted = lease_changes(&events);
    assert_eq!(preempted.len(), 1);
    assert_eq!(&*preempted[0].buyer, "cheap");
    assert_eq!(preempted[0].status, LeaseStatus::Preempting);
}

#[test]
fn reclaim_preempts_newest_lease_first_among_equal_prices() {
    let mut m = Market::new();
    m.release("sched", "x", 8, 100, 10);
    m.bid("old", 4, 100);
    m.at(60).bid("new", 4, 100);
    let events = m.reclaim("x", 2);
    let preempted = lease_changes(&events);
    assert_eq!(
        preempted.iter().map(|l| &*l.buyer).collect::<Vec<_>>(),
        vec!["new"]
    );
}

#[test]
fn notice_is_never_shorter_than_the_pool_promise() {
    let mut m = Market::new();
    m.release("sched", "x", 4, 100, 10);
    m.bid("a", 4, 100);
    let short = m.run(Command::ReclaimCapacity(ReclaimCapacity {
        supplier: "sched".into(),
        block_id: "x".into(),
        gpus: 4,
        notice_s: Some(30),
        emergency: false,
    }));
    assert_eq!(rejection(&short), Some(Rejection::NoticeTooShort));
    let events = m.at(10).reclaim("x", 4);
    let notice = &lease_changes(&events)[0];
    assert_eq!(notice.notice_ends_at, Some(at_s(10 + 120)));
    let before = m.tick(129);
    assert!(lease_changes(&before).is_empty(), "still running at 129 s");
    let after = m.tick(130);
    assert_eq!(lease_changes(&after)[0].status, LeaseStatus::Preempted);
    assert_eq!(lease_changes(&after)[0].ended_at, Some(at_s(130)));
    assert_eq!(m.block("x").gpus_reclaimed, 4);
}

#[test]
fn emergency_reclaim_may_give_shorter_notice_and_is_recorded() {
    let mut m = Market::new();
    m.release("sched", "x", 4, 100, 10);
    m.bid("a", 4, 100);
    let events = m.run(Command::ReclaimCapacity(ReclaimCapacity {
        supplier: "sched".into(),
        block_id: "x".into(),
        gpus: 4,
        notice_s: Some(5),
        emergency: true,
    }));
    let notice = &lease_changes(&events)[0];
    assert!(notice.emergency);
    assert_eq!(notice.notice_ends_at, Some(at_s(5)));
}

#[test]
fn preempted_within_the_free_window_costs_nothing() {
    let mut m = Market::new();
    m.release("sched", "x", 4, 100, 10);
    m.bid("early", 4, 100);
    m.at(1800).reclaim("x", 4);
    let events = m.tick(1800 + 120);
    assert_eq!(lease_changes(&events)[0].cost_micros, 0);

    m.at(4000).release("sched", "y", 4, 100, 10);
    let mut late = bid("late", 4, 100);
    late.max_duration_s = Some(3 * HOUR_S);
    m.place(late);
    m.at(4000 + 3600).reclaim("y", 4);
    let events = m.tick(4000 + 3600 + 120);
    let ended = &lease_changes(&events)[0];
    assert_eq!(ended.status, LeaseStatus::Preempted);
    assert_eq!(ended.cost_micros, 4 * 3720 * 1_000_000 / 3600);
}

#[test]
fn surplus_gpus_return_to_the_book_when_the_notice_ends() {
    let mut m = Market::new();
    m.release("sched", "x", 8, 100, 10);
    m.bid("a", 8, 100);
    m.reclaim("x", 3);
    assert!(m.depth().asks.is_empty());
    m.tick(120);
    let block = m.block("x");
    assert_eq!((block.gpus_reclaimed, block.gpus_unsold), (3, 5));
    assert_eq!(m.depth().asks[0].gpus, 5);
}

#[test]
fn reclaim_cannot_take_more_than_the_block_holds() {
    let mut m = Market::new();
    m.release("sched", "x", 8, 100, 10);
    m.reclaim("x", 6);
    let over = m.reclaim("x", 3);
    assert_eq!(rejection(&over), Some(Rejection::ReclaimOverBlock));
}

#[test]
fn persistent_bid_bids_again_after_preemption() {
    let mut m = Market::new();
    m.release("sched", "x", 4, 100, 10);
    let mut persistent = bid("a", 4, 120);
    persistent.persistent = true;
    let id = m.place(persistent);
    assert_eq!(m.engine.order(id).unwrap().status, OrderStatus::Filled);
    m.reclaim("x", 4);
    let events = m.tick(120);
    let reopened = last_order_state(&events).unwrap();
    assert_eq!(reopened.status, OrderStatus::Open);
    assert_eq!(reopened.remaining_gpus, 4);
    m.release("sched", "y", 4, 110, 10);
    assert_eq!(m.engine.leases_of("a").len(), 1, "leased again");
}

#[test]
fn forecast_warns_the_blocks_buyers() {
    let mut m = Market::new();
    m.release("sched", "x", 8, 100, 10);
    m.bid("a", 4, 100);
    m.bid("b", 4, 100);
    let events = m.run(Command::ForecastReclaim {
        supplier: "sched".into(),
        block_id: "x".into(),
        reclaim_at: at_s(1800),
    });
    let warned: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::ReclaimForecast { buyer, .. } => Some(&**buyer),
            _ => None,
        })
        .collect();
    assert_eq!(warned, vec!["a", "b"]);
    assert_eq!(m.block("x").reclaim_forecast_at, Some(at_s(1800)));
}

// ----- batch pools --------------------------------------------------------------------------

fn batch_market() -> Market {
    let mut config = pool_config();
    config.auction = AuctionMode::Batch { interval_ms: 1000 };
    Market::with_pool(config)
}

#[test]
fn batch_pool_collects_orders_until_the_uncross() {
    let mut m = batch_market();
    m.release("sched", "x", 4, 100, 10);
    let events = m.run(Command::PlaceBid(bid("a", 4, 150)));
    assert!(
        trades(&events).is_empty(),
        "nothing trades between auctions"
    );
    let events = m.tick(1);
    assert_eq!(trades(&events).len(), 1);
}

#[test]
fn batch_pool_uncrosses_at_one_price_that_executes_the_most() {
    let mut m = batch_market();
    m.release("s1", "a", 4, 100, 10);
    m.release("s2", "b", 4, 140, 10);
    m.bid("x", 4, 160);
    m.bid("y", 4, 150);
    m.bid("z", 4, 110);
    let events = m.tick(1);
    let fills = trades(&events);
    assert_eq!(fills.len(), 2, "8 GPUs clear: both asks, the two best bids");
    assert!(fills.iter().all(|t| t.price == usd(140)));
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::AuctionCleared { price, gpus: 8, .. } if *price == usd(140))));
}

#[test]
fn batch_ioc_bids_live_for_one_uncross() {
    let mut m = batch_market();
    let mut ioc = bid("a", 4, 150);
    ioc.tif = TimeInForce::Ioc;
    let id = m.place(ioc);
    let events = m.tick(1);
    assert_eq!(
        last_order_state(&events).unwrap().cancel_reason,
        Some(CancelReason::IocRemainder)
    );
    assert!(m.engine.order(id).is_none());
}

// ----- determinism --------------------------------------------------------------------------

#[test]
fn snapshot_and_restore_keep_the_state_hash_and_the_future() {
    let mut m = Market::new();
    m.release("sched", "x", 8, 100, 10);
    m.bid("a", 4, 100);
    m.bid("b", 4, 90);
    m.bid("c", 4, 95);
    let json = serde_json::to_string(&m.engine.snapshot()).unwrap();
    let mut restored = Engine::restore(serde_json::from_str(&json).unwrap());
    assert_eq!(restored.state_hash(), m.engine.state_hash());
    let next = Command::ReleaseCapacity(ReleaseCapacity {
        supplier: "sched".into(),
        block_id: "y".into(),
        pool: POOL.into(),
        gpus: 4,
        reserve_price: usd(90),
        available_from: None,
        available_until: at_s(3600 * 5),
        nodes: vec![],
    });
    let mut a = Vec::new();
    let mut b = Vec::new();
    m.engine.apply(at_s(5), &next, &mut a);
    restored.apply(at_s(5), &next, &mut b);
    assert_eq!(a, b);
    assert_eq!(restored.state_hash(), m.engine.state_hash());
}

#[test]
fn quote_prices_a_bid_without_placing_it() {
    let mut m = Market::new();
    m.release("sched", "a", 4, 100, 10);
    m.release("sched", "b", 4, 200, 10);
    let quote = m.engine.quote(POOL, 6, 6, HOUR_S).unwrap();
    assert_eq!(quote.fillable_gpus, 6);
    assert_eq!(quote.worst_price, Some(usd(200)));
    assert_eq!(quote.average_price, Some(PriceMicros(1_333_333)));
    assert_eq!(quote.total_cost_micros, 8_000_000);
    assert_eq!(m.depth().asks.len(), 2, "nothing placed");
}

#[test]
fn quote_respects_min_gpus_as_matching_would() {
    let mut m = Market::new();
    m.release("sched", "a", 4, 100, 10);
    let all_or_none = m.engine.quote(POOL, 6, 6, HOUR_S).unwrap();
    assert_eq!(all_or_none.fillable_gpus, 0, "6 GPUs all-or-none: nothing");
    assert_eq!(all_or_none.average_price, None);
    assert_eq!(all_or_none.total_cost_micros, 0);
    let at_least_four = m.engine.quote(POOL, 6, 4, HOUR_S).unwrap();
    assert_eq!(at_least_four.fillable_gpus, 4);
    assert_eq!(at_least_four.worst_price, Some(usd(100)));
    assert_eq!(
        at_least_four.clears_at, None,
        "a continuous pool has no uncross"
    );
    // What the quote says is what the same bid gets.
    let mut same = bid("a", 6, 500);
    same.min_gpus = Some(4);
    m.place(same);
    assert_eq!(m.engine.leases_of("a")[0].gpus, 4);
}

#[test]
fn batch_quote_is_the_next_uncross_price_with_the_bid_added() {
    let mut m = batch_market();
    m.at(0).release("s1", "a", 4, 100, 10);
    m.release("s2", "b", 4, 140, 10);
    m.bid("x", 4, 160);
    // With the quote's 4 GPUs added, 8 GPUs clear; only at 140 can both asks sell.
    let quote = m.engine.quote(POOL, 4, 4, HOUR_S).unwrap();
    assert_eq!(quote.fillable_gpus, 4);
    assert_eq!(quote.average_price, Some(usd(140)));
    assert_eq!(quote.worst_price, Some(usd(140)));
    assert_eq!(quote.total_cost_micros, 4 * 1_400_000);
    assert_eq!(quote.clears_at, Some(at_s(1)));
    // The quote's bid is at the top of the band, so it goes before x: 5 GPUs leave x's
    // all-or-none 4 unfillable, and 5 still clear at 140.
    let ahead = m.engine.quote(POOL, 5, 5, HOUR_S).unwrap();
    assert_eq!(ahead.fillable_gpus, 5);
    assert_eq!(ahead.average_price, Some(usd(140)));
    // More than all supply, all-or-none: nothing, yet the uncross time is known.
    let too_many = m.engine.quote(POOL, 9, 9, HOUR_S).unwrap();
    assert_eq!(too_many.fillable_gpus, 0);
    assert_eq!(too_many.average_price, None);
    assert_eq!(too_many.clears_at, Some(at_s(1)));
    // The quote placed nothing: the uncross clears only the resting bid.
    let events = m.tick(1);
    assert_eq!(trades(&events).len(), 1);
}

#[test]
fn lease_records_the_notice_promised_when_it_opened() {
    let mut config = pool_config();
    config.notice_s = 600;
    let mut m = Market::with_pool(config.clone());
    m.release("sched", "x", 4, 100, 10);
    m.bid("a", 4, 100);
    assert_eq!(m.engine.leases_of("a")[0].notice_s, 600);
    // The pool lowers its notice; the running lease keeps its promise.
    config.notice_s = 60;
    m.run(Command::ConfigurePool(config));
    assert_eq!(m.engine.leases_of("a")[0].notice_s, 600);
    let events = m.at(10).reclaim("x", 4);
    let notice = &lease_changes(&events)[0];
    assert_eq!(notice.notice_ends_at, Some(at_s(10 + 600)));
    assert!(!notice.emergency);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::ReclaimAccepted { notice_ends_at, emergency: false, .. } if *notice_ends_at == at_s(610)
    )));
}

#[test]
fn reclaim_without_notice_gives_the_larger_of_the_pools_notice_and_the_promise() {
    let mut config = pool_config();
    config.notice_s = 60;
    let mut m = Market::with_pool(config.clone());
    m.release("sched", "x", 8, 100, 10);
    m.bid("a", 4, 100);
    // The pool raises its notice after the lease opened: the lease gets the larger one.
    config.notice_s = 300;
    m.run(Command::ConfigurePool(config));
    m.bid("b", 4, 100);
    let events = m.reclaim("x", 8);
    let notices: Vec<_> = lease_changes(&events)
        .iter()
        .map(|l| (l.buyer.to_string(), l.notice_s, l.notice_ends_at))
        .collect();
    assert_eq!(
        notices,
        vec![
            ("b".to_owned(), 300, Some(at_s(300))),
            ("a".to_owned(), 60, Some(at_s(300))),
        ]
    );
}

#[test]
fn explicit_notice_below_a_leases_promise_needs_emergency() {
    let mut config = pool_config();
    config.notice_s = 600;
    let mut m = Market::with_pool(config.clone());
    m.release("sched", "x", 4, 100, 10);
    m.bid("a", 4, 100);
    config.notice_s = 60;
    m.run(Command::ConfigurePool(config));
    // 120 s satisfies the pool's 60 s but not the lease's 600 s promise.
    let reclaim = |emergency| {
        Command::ReclaimCapacity(ReclaimCapacity {
            supplier: "sched".into(),
            block_id: "x".into(),
            gpus: 4,
            notice_s: Some(120),
            emergency,
        })
    };
    let refused = m.run(reclaim(false));
    assert_eq!(rejection(&refused), Some(Rejection::NoticeTooShort));
    assert_eq!(m.engine.pool(POOL).unwrap().emergency_reclaims, 0);
    let events = m.run(reclaim(true));
    let notice = &lease_changes(&events)[0];
    assert!(notice.emergency, "shorter than its promise");
    assert_eq!(notice.notice_ends_at, Some(at_s(120)));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::ReclaimAccepted {
            emergency: true,
            ..
        }
    )));
}

#[test]
fn emergency_reclaims_are_counted_per_pool() {
    let mut m = Market::new();
    m.release("sched", "x", 8, 100, 10);
    m.bid("a", 4, 100);
    m.reclaim("x", 2);
    assert_eq!(m.engine.pool(POOL).unwrap().emergency_reclaims, 0);
    let events = m.run(Command::ReclaimCapacity(ReclaimCapacity {
        supplier: "sched".into(),
        block_id: "x".into(),
        gpus: 4,
        notice_s: Some(5),
        emergency: true,
    }));
    assert!(lease_changes(&events)[0].emergency);
    assert_eq!(m.engine.pool(POOL).unwrap().emergency_reclaims, 1);
    // A long explicit notice with the flag set is no emergency.
    m.release("sched", "y", 4, 100, 10);
    m.run(Command::ReclaimCapacity(ReclaimCapacity {
        supplier: "sched".into(),
        block_id: "y".into(),
        gpus: 1,
        notice_s: Some(900),
        emergency: true,
    }));
    let snapshot = serde_json::to_string(&m.engine.snapshot()).unwrap();
    let restored = Engine::restore(serde_json::from_str(&snapshot).unwrap());
    assert_eq!(restored.pool(POOL).unwrap().emergency_reclaims, 1);
}

#[test]
fn forecast_shows_on_the_block_and_the_quote_until_it_passes() {
    let mut m = Market::new();
    m.release("sched", "x", 4, 100, 10);
    m.release("sched", "y", 4, 200, 10);
    m.run(Command::ForecastReclaim {
        supplier: "sched".into(),
        block_id: "y".into(),
        reclaim_at: at_s(1800),
    });
    assert_eq!(m.block("y").reclaim_expected_at, Some(at_s(1800)));
    assert_eq!(m.block("x").reclaim_expected_at, None);
    let only_x = m.engine.quote(POOL, 4, 4, HOUR_S).unwrap();
    assert_eq!(
        only_x.reclaim_expected_at, None,
        "the fill uses block x only"
    );
    let both = m.engine.quote(POOL, 8, 8, HOUR_S).unwrap();
    assert_eq!(both.reclaim_expected_at, Some(at_s(1800)));
    m.tick(1801);
    assert_eq!(
        m.block("y").reclaim_expected_at,
        None,
        "the forecast passed"
    );
    assert_eq!(m.block("y").reclaim_forecast_at, Some(at_s(1800)));
}

#[test]
fn lease_opened_under_a_pending_forecast_is_warned_at_once() {
    let mut m = Market::new();
    m.release("sched", "x", 8, 100, 10);
    m.run(Command::ForecastReclaim {
        supplier: "sched".into(),
        block_id: "x".into(),
        reclaim_at: at_s(1800),
    });
    let events = m.at(60).run(Command::PlaceBid(bid("late", 4, 100)));
    let opened = events
        .iter()
        .position(|e| matches!(e, Event::LeaseOpened { .. }))
        .expect("a lease opened");
    match &events[opened + 1] {
        Event::ReclaimForecast {
            buyer, reclaim_at, ..
        } => {
            assert_eq!(&**buyer, "late");
            assert_eq!(*reclaim_at, at_s(1800));
        }
        other => panic!("expected the warning right after the lease opened, got {other:?}"),
    }
    // Once the forecast time has passed, a new lease is not warned.
    let events = m.at(1801).run(Command::PlaceBid(bid("later", 4, 100)));
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::ReclaimForecast { .. })));
}

#[test]
fn amending_gpus_to_no_more_than_filled_is_refused_as_such() {
    let mut m = Market::new();
    m.release("sched", "x", 2, 100, 10);
    let mut partial = bid("a", 6, 100);
    partial.min_gpus = Some(1);
    let id = m.place(partial);
    assert_eq!(m.engine.order(id).unwrap().filled_gpus, 2);
    let events = m.run(Command::AmendBid(AmendBid {
        account: "a".into(),
        order_id: id,
        price: None,
        gpus: Some(2),
    }));
    assert_eq!(rejection(&events), Some(Rejection::GpusNotAboveFilled));
    let events = m.run(Command::AmendBid(AmendBid {
        account: "a".into(),
        order_id: id,
        price: None,
        gpus: Some(3),
    }));
    assert!(!rejected(&events));
    assert_eq!(m.engine.order(id).unwrap().remaining_gpus, 1);
}

#[test]
fn a_block_whose_window_ended_is_forgotten_so_an_update_names_no_block() {
    // The window's end and its last lease's end are timers due before any later command, so a
    // command never finds a Closed block: `block_closed` is the engine's guard for that state,
    // and the server answers it for blocks it still has on record as closed.
    let mut m = Market::new();
    m.release("sched", "x", 4, 100, 1);
    m.bid("a", 2, 100);
    m.tick(3600);
    assert!(m.engine.block("sched", "x").is_none());
    let events = m.run(Command::UpdateCapacity(UpdateCapacity {
        supplier: "sched".into(),
        block_id: "x".into(),
        reserve_price: Some(usd(120)),
        available_until: None,
    }));
    assert_eq!(rejection(&events), Some(Rejection::UnknownBlock));
}

#[test]
fn usage_integrates_offered_and_leased_gpus_over_time() {
    let mut m = Market::new();
    m.at(0).release("sched", "b1", 8, 150, 3);
    // 8 GPUs offered for 600 s, then 4 of them leased for 1,200 s, then the lease released.
    m.at(600).bid("acme", 4, 200);
    let lease = m.engine.leases_of("acme")[0].id;
    m.at(1800).run(Command::ReleaseLease {
        account: "acme".into(),
        lease_id: lease,
    });
    m.tick(2400);
    let usage = &m.engine.usage()[0];
    assert_eq!(&*usage.pool, POOL);
    assert_eq!(usage.offered_gpu_ms, 8 * 2400 * 1000);
    assert_eq!(usage.leased_gpu_ms, 4 * 1200 * 1000);
    // A restored engine goes on from the same integrals.
    let mut restored = Engine::restore(m.engine.snapshot());
    restored.apply(at_s(3000), &Command::Tick, &mut Vec::new());
    assert_eq!(restored.usage()[0].offered_gpu_ms, 8 * 3000 * 1000);
}
