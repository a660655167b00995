//! One named scenario per rule of the handoff (DESIGN sections 11 and 12): a lease opens
//! provisioning, its supplier reports it ready (billing starts) or failed, a lease not ready in
//! time fails, a failed lease's GPUs leave its block, and a buyer's ssh keys travel with its
//! leases. Every step checks `Engine::assert_invariants`.

use matching_engine::*;

const T0: i64 = 1_800_000_000_000;
const POOL: &str = "h100-sxm.us-east";
const MODEL_POOL: &str = "llama-3.1-8b-instruct.us-central";
const SUPPLIER: &str = "sched";
const HOUR_S: u32 = 3600;
const KEY_LAPTOP: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAda ada@laptop";
const KEY_CI: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBob ada@ci";
const KEY_DESK: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAy ada@desk";
const GATEWAY: &str = "https://gw.offpeak.example/v1";

fn usd(cents: u64) -> PriceMicros {
    PriceMicros(cents * 10_000)
}

fn at_s(seconds: i64) -> TimeMs {
    TimeMs(T0 + seconds * 1000)
}

fn at_ms(milliseconds: i64) -> TimeMs {
    TimeMs(T0 + milliseconds)
}

/// A bare-metal pool that waits for the handoff (the default).
fn bare_metal_pool() -> PoolConfig {
    PoolConfig::with_defaults("h100-sxm", "us-east")
}

/// A bare-metal pool whose suppliers hand access over outside offpeak.
fn pool_without_handoff() -> PoolConfig {
    PoolConfig {
        handoff: Handoff::None,
        ..bare_metal_pool()
    }
}

/// A model pool (DESIGN section 12): GPUs of a `llama-3.1-8b-instruct` deployment on L4s.
fn model_pool() -> PoolConfig {
    let config =
        PoolConfig::model_with_defaults("llama-3.1-8b-instruct", "l4", "us-central", 2_500);
    assert_eq!(config.id, MODEL_POOL);
    config
}

/// A market driven at explicit times, checking the engine's invariants after every command.
struct Market {
    engine: Engine,
    now: TimeMs,
}

impl Market {
    fn with_pools(configs: impl IntoIterator<Item = PoolConfig>) -> Market {
        let mut market = Market {
            engine: Engine::new(),
            now: at_s(0),
        };
        for config in configs {
            let events = market.run(Command::ConfigurePool(config));
            assert!(
                matches!(events[..], [Event::PoolConfigured { .. }]),
                "{events:?}"
            );
        }
        market
    }

    fn new() -> Market {
        Market::with_pools([bare_metal_pool()])
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

    /// Releases a block with a ten-hour window, optionally on nodes.
    fn release(
        &mut self,
        pool: &str,
        block_id: &str,
        gpus: u32,
        cents: u64,
        nodes: &[(&str, u32)],
    ) {
        self.release_by(SUPPLIER, pool, block_id, gpus, cents, nodes);
    }

    fn release_by(
        &mut self,
        supplier: &str,
        pool: &str,
        block_id: &str,
        gpus: u32,
        cents: u64,
        nodes: &[(&str, u32)],
    ) {
        let events = self.run(Command::ReleaseCapacity(ReleaseCapacity {
            supplier: supplier.into(),
            block_id: block_id.into(),
            pool: pool.into(),
            gpus,
            reserve_price: usd(cents),
            available_from: None,
            available_until: TimeMs(self.now.0 + 10 * 3_600_000),
            nodes: nodes
                .iter()
                .map(|&(node, gpus)| NodeGpus {
                    node: node.into(),
                    gpus,
                })
                .collect(),
        }));
        assert!(rejection(&events).is_none(), "release refused: {events:?}");
    }

    fn place(&mut self, bid: PlaceBid) -> Vec<Event> {
        let events = self.run(Command::PlaceBid(bid));
        assert!(rejection(&events).is_none(), "bid refused: {events:?}");
        events
    }

    /// The one running lease of `buyer`.
    fn lease_of(&self, buyer: &str) -> LeaseView {
        let leases = self.engine.leases_of(buyer);
        assert_eq!(leases.len(), 1, "{buyer} runs {leases:?}");
        leases[0].clone()
    }

    fn block(&self, block_id: &str) -> BlockView {
        self.engine.block(SUPPLIER, block_id).expect("known block")
    }

    fn ready(&mut self, lease: &LeaseView, endpoints: Vec<Endpoint>) -> Vec<Event> {
        self.run(Command::LeaseReady(LeaseReady {
            supplier: lease.supplier.to_string(),
            block_id: lease.block_id.to_string(),
            lease_id: lease.id,
            endpoints,
            endpoint: None,
        }))
    }

    fn ready_with_gateway(&mut self, lease: &LeaseView) -> Vec<Event> {
        self.run(Command::LeaseReady(LeaseReady {
            supplier: lease.supplier.to_string(),
            block_id: lease.block_id.to_string(),
            lease_id: lease.id,
            endpoints: vec![],
            endpoint: Some(GATEWAY.into()),
        }))
    }

    fn fail(&mut self, lease: &LeaseView, reason: &str) -> Vec<Event> {
        self.run(Command::LeaseFailed {
            supplier: lease.supplier.to_string(),
            block_id: lease.block_id.to_string(),
            lease_id: lease.id,
            reason: reason.into(),
        })
    }

    fn reclaim(&mut self, block_id: &str, gpus: u32) -> Vec<Event> {
        let events = self.run(Command::ReclaimCapacity(ReclaimCapacity {
            supplier: SUPPLIER.into(),
            block_id: block_id.into(),
            gpus,
            notice_s: None,
            emergency: false,
        }));
        assert!(rejection(&events).is_none(), "reclaim refused: {events:?}");
        events
    }

    fn set_keys(&mut self, account: &str, keys: &[&str]) -> Vec<Event> {
        self.run(Command::SetSshKeys {
            account: account.into(),
            keys: keys.iter().map(|key| key.to_string()).collect(),
        })
    }
}

/// A one-hour GTC bid in `pool` whose leases may run eight hours.
fn bid(account: &str, pool: &str, gpus: u32, cents: u64) -> PlaceBid {
    PlaceBid {
        account: account.into(),
        pool: pool.into(),
        gpus,
        min_gpus: None,
        price: usd(cents),
        duration_s: HOUR_S,
        max_duration_s: Some(8 * HOUR_S),
        tif: TimeInForce::Gtc,
        expires_at: None,
        persistent: false,
        client_order_id: None,
        ssh_public_keys: vec![],
    }
}

fn persistent(bid: PlaceBid) -> PlaceBid {
    PlaceBid {
        persistent: true,
        ..bid
    }
}

fn ssh_to(node: Option<&str>) -> Endpoint {
    Endpoint {
        node: node.map(Into::into),
        host: "10.0.0.7".into(),
        port: 22,
        user: "ubuntu".into(),
    }
}

fn keys(keys: &[&str]) -> Option<SshKeys> {
    Some(keys.iter().map(|key| key.to_string()).collect())
}

fn rejection(events: &[Event]) -> Option<Rejection> {
    events.iter().find_map(|e| match e {
        Event::Rejected { reason } => Some(*reason),
        _ => None,
    })
}

fn rejected_as(reason: Rejection) -> Vec<Event> {
    vec![Event::Rejected { reason }]
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

fn opened(events: &[Event]) -> Vec<LeaseView> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::LeaseOpened { lease } => Some(LeaseView::clone(lease)),
            _ => None,
        })
        .collect()
}

/// Each event's kind, for checking the order of what a command did.
fn kinds(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|event| {
            let debug = format!("{event:?}");
            debug
                .split([' ', '{', '('])
                .next()
                .unwrap_or("?")
                .to_owned()
        })
        .collect()
}

// ----- billing from ready -------------------------------------------------------------------

#[test]
fn lease_opens_provisioning_and_costs_nothing_until_ready() {
    let mut m = Market::new();
    m.release(POOL, "x", 4, 360, &[]);
    let events = m.place(bid("ada", POOL, 4, 360));
    let lease = &opened(&events)[0];
    assert_eq!(lease.access, Access::provisioning());
    assert_eq!(lease.cost_micros, 0);
    m.tick(500);
    assert_eq!(
        m.engine.lease(lease.id).unwrap().cost_micros,
        0,
        "not billed while provisioning"
    );
}

#[test]
fn cost_counts_from_ready_at_not_from_started_at() {
    let mut m = Market::new();
    m.release(POOL, "x", 4, 360, &[]);
    m.place(bid("ada", POOL, 4, 360));
    let lease = m.lease_of("ada");
    m.now = at_ms(100_400);
    let events = m.ready(&lease, vec![ssh_to(None)]);
    let [Event::LeaseChanged { lease: ready }] = &events[..] else {
        panic!("one LeaseChanged expected: {events:?}");
    };
    assert_eq!(ready.status, LeaseStatus::Active);
    assert_eq!(ready.access.status, AccessStatus::Ready);
    assert_eq!(ready.access.ready_at, Some(at_ms(100_400)));
    assert_eq!(ready.access.endpoints, vec![ssh_to(None)]);
    assert_eq!(ready.cost_micros, 0);
    // Accrued: $3.60 x 4 GPUs x 899 whole seconds since ready (not 1000 since the start).
    m.now = at_s(1000);
    m.run(Command::Tick);
    assert_eq!(m.engine.lease(lease.id).unwrap().cost_micros, 3_596_000);
    m.now = at_s(1100);
    let events = m.run(Command::ReleaseLease {
        account: "ada".into(),
        lease_id: lease.id,
    });
    let ended = &lease_changes(&events)[0];
    assert_eq!(ended.status, LeaseStatus::Released);
    // 999.6 s since ready: 999 whole seconds, $3.60 x 4 x 999 / 3600.
    assert_eq!(ended.cost_micros, 3_996_000);
    assert_eq!(m.block("x").revenue_micros, 3_996_000);
}

#[test]
fn lease_that_ends_before_it_was_ready_costs_nothing() {
    let mut m = Market::new();
    m.release(POOL, "x", 4, 360, &[]);
    m.place(bid("ada", POOL, 4, 360));
    let lease = m.lease_of("ada");
    let events = m.at(300).run(Command::ReleaseLease {
        account: "ada".into(),
        lease_id: lease.id,
    });
    let ended = &lease_changes(&events)[0];
    assert_eq!(ended.status, LeaseStatus::Released);
    assert_eq!(ended.access.status, AccessStatus::Provisioning);
    assert_eq!(ended.cost_micros, 0);
    assert_eq!(
        m.block("x").gpus_unsold,
        4,
        "released, not failed: back on the book"
    );
}

#[test]
fn free_first_hour_counts_from_ready_at() {
    let mut config = bare_metal_pool();
    config.provision_timeout_s = PROVISION_TIMEOUT_S_MAX;
    config.free_if_preempted_within_s = 3600;
    config.notice_s = 120;
    let mut m = Market::with_pools([config]);
    m.release(POOL, "slow", 4, 100, &[]);
    m.place(bid("slow", POOL, 4, 100));
    m.release(POOL, "quick", 4, 100, &[]);
    m.place(bid("quick", POOL, 4, 100));
    let (slow, quick) = (m.lease_of("slow"), m.lease_of("quick"));
    m.at(100).ready(&quick, vec![ssh_to(None)]);
    m.at(5400).ready(&slow, vec![ssh_to(None)]);
    // Notice 2 h after the start but 30 min after ready: free.
    m.at(7200).reclaim("slow", 4);
    // Notice 2 h after ready: billed, from ready to the notice's end.
    m.at(7300).reclaim("quick", 4);
    let events = m.tick(7320);
    let ended = &lease_changes(&events)[0];
    assert_eq!((ended.id, ended.status), (slow.id, LeaseStatus::Preempted));
    assert_eq!(ended.cost_micros, 0);
    let events = m.tick(7420);
    let ended = &lease_changes(&events)[0];
    assert_eq!((ended.id, ended.status), (quick.id, LeaseStatus::Preempted));
    // $1 x 4 GPUs x (7420 - 100) s / 3600, rounded down.
    assert_eq!(ended.cost_micros, 8_133_333);
}

// ----- provisioning timeout -----------------------------------------------------------------

#[test]
fn lease_not_ready_in_time_fails_at_exactly_started_at_plus_the_timeout() {
    let mut config = bare_metal_pool();
    config.provision_timeout_s = 300;
    let mut m = Market::with_pools([config]);
    m.at(10).release(POOL, "x", 4, 100, &[]);
    m.place(bid("ada", POOL, 4, 100));
    let lease = m.lease_of("ada");
    assert_eq!(m.engine.next_timer_at(), Some(at_s(310)));
    m.now = at_ms(309_999);
    assert!(m.run(Command::Tick).is_empty(), "still provisioning");
    let events = m.tick(310);
    assert_eq!(kinds(&events), ["LeaseChanged", "BlockChanged"]);
    let failed = &lease_changes(&events)[0];
    assert_eq!(failed.status, LeaseStatus::Failed);
    assert_eq!(failed.access.status, AccessStatus::Failed);
    assert_eq!(failed.access.reason.as_deref(), Some("provision_timeout"));
    assert_eq!(failed.ended_at, Some(at_s(310)));
    assert_eq!(failed.cost_micros, 0);
    assert!(m.engine.lease(lease.id).is_none());
    let late = m.at(311).ready(&lease, vec![ssh_to(None)]);
    assert_eq!(late, rejected_as(Rejection::UnknownLease));
}

#[test]
fn provision_timeout_fires_at_its_own_time_before_a_later_command() {
    let mut config = bare_metal_pool();
    config.provision_timeout_s = 300;
    let mut m = Market::with_pools([config]);
    m.release(POOL, "x", 4, 100, &[]);
    m.place(bid("ada", POOL, 4, 100));
    // The next command comes long after: the timeout fires first, at its own time.
    let events = m.at(900).run(Command::PlaceBid(bid("bob", POOL, 1, 100)));
    assert_eq!(
        kinds(&events)[..3],
        ["LeaseChanged", "BlockChanged", "BidAccepted"]
    );
    assert_eq!(lease_changes(&events)[0].ended_at, Some(at_s(300)));
}

#[test]
fn lease_ready_in_time_leaves_its_provision_timeout_nothing_to_do() {
    let mut config = bare_metal_pool();
    config.provision_timeout_s = 300;
    let mut m = Market::with_pools([config]);
    m.release(POOL, "x", 4, 100, &[]);
    m.place(bid("ada", POOL, 4, 100));
    let lease = m.lease_of("ada");
    m.at(299).ready(&lease, vec![ssh_to(None)]);
    assert!(m.tick(300).is_empty(), "the stale timer does nothing");
    assert_eq!(m.lease_of("ada").access.status, AccessStatus::Ready);
}

#[test]
fn no_provision_timeout_is_scheduled_at_or_after_the_leases_end() {
    let mut m = Market::new();
    m.release(POOL, "x", 4, 100, &[]);
    let mut short = bid("ada", POOL, 4, 100);
    short.duration_s = 600;
    short.max_duration_s = None;
    m.place(short);
    // The lease ends at 600 s, exactly when a 600 s timeout would fire: it completes instead.
    assert_eq!(m.engine.next_timer_at(), Some(at_s(600)));
    let events = m.tick(600);
    let ended = &lease_changes(&events)[0];
    assert_eq!(ended.status, LeaseStatus::Completed);
    assert_eq!(ended.access.status, AccessStatus::Provisioning);
    assert_eq!(ended.cost_micros, 0);
    assert_eq!(m.block("x").gpus_failed, 0);
}

// ----- failure ------------------------------------------------------------------------------

#[test]
fn failed_lease_gpus_leave_the_block_and_never_return_to_the_book() {
    let mut m = Market::new();
    m.release(POOL, "x", 8, 100, &[("n1", 4), ("n2", 4)]);
    m.place(bid("ada", POOL, 6, 100));
    let lease = m.lease_of("ada");
    assert_eq!(m.engine.depth(POOL, 10).unwrap().asks[0].gpus, 2);
    let events = m.at(60).fail(&lease, "image_pull_failed");
    assert_eq!(
        kinds(&events),
        ["LeaseChanged", "BlockChanged"],
        "nothing back on the book"
    );
    let failed = &lease_changes(&events)[0];
    assert_eq!(failed.status, LeaseStatus::Failed);
    assert_eq!(failed.access.reason.as_deref(), Some("image_pull_failed"));
    assert_eq!(failed.cost_micros, 0);
    let block = m.block("x");
    assert_eq!(
        (
            block.gpus_sold,
            block.gpus_unsold,
            block.gpus_reclaimed,
            block.gpus_failed
        ),
        (0, 2, 6, 6)
    );
    assert_eq!(
        block.nodes,
        vec![
            NodeGpus {
                node: "n1".into(),
                gpus: 0
            },
            NodeGpus {
                node: "n2".into(),
                gpus: 2
            },
        ],
        "the lease's node GPUs left with it"
    );
    let asks = m.engine.depth(POOL, 10).unwrap().asks;
    assert_eq!(
        (asks.len(), asks[0].gpus),
        (1, 2),
        "the ask ladder is as before"
    );
    let pool = m.engine.pool(POOL).unwrap();
    assert_eq!((pool.leased_gpus, pool.idle_gpus), (0, 2));
}

#[test]
fn lease_failing_under_notice_settles_what_the_reclaim_still_needs() {
    let mut m = Market::new();
    m.release(POOL, "x", 8, 100, &[]);
    m.place(bid("ada", POOL, 8, 100));
    let lease = m.lease_of("ada");
    m.at(10).reclaim("x", 4);
    assert_eq!(m.block("x").gpus_reclaiming, 4);
    assert_eq!(m.engine.pool(POOL).unwrap().reclaiming_gpus, 8);
    m.at(20).fail(&lease, "node_unhealthy");
    let block = m.block("x");
    assert_eq!(
        (
            block.gpus_sold,
            block.gpus_unsold,
            block.gpus_reclaimed,
            block.gpus_failed,
            block.gpus_reclaiming
        ),
        (0, 0, 8, 8, 0)
    );
    let pool = m.engine.pool(POOL).unwrap();
    assert_eq!((pool.leased_gpus, pool.reclaiming_gpus), (0, 0));
    assert!(
        m.tick(130).is_empty(),
        "the notice's end finds nothing to do"
    );
}

#[test]
fn persistent_bid_bids_again_after_its_lease_failed() {
    let mut m = Market::new();
    m.release(POOL, "x", 4, 100, &[]);
    m.release(POOL, "y", 4, 110, &[]);
    m.place(persistent(bid("ada", POOL, 4, 120)));
    let first = m.lease_of("ada");
    assert_eq!(&*first.block_id, "x");
    let events = m.at(60).fail(&first, "image_pull_failed");
    assert_eq!(
        kinds(&events),
        [
            "LeaseChanged",
            "BlockChanged",
            "OrderChanged",
            "Traded",
            "LeaseOpened",
            "BlockChanged",
            "OrderChanged",
            "BookLevelChanged"
        ]
    );
    let Event::OrderChanged { order } = &events[2] else {
        unreachable!()
    };
    assert_eq!((order.status, order.remaining_gpus), (OrderStatus::Open, 4));
    let second = m.lease_of("ada");
    assert_eq!((&*second.block_id, second.order_id), ("y", first.order_id));
    assert_eq!(second.access, Access::provisioning());
}

#[test]
fn persistent_bid_bids_again_after_a_provision_timeout() {
    let mut m = Market::new();
    m.release(POOL, "x", 4, 100, &[]);
    let events = m.place(persistent(bid("ada", POOL, 4, 120)));
    let order_id = opened(&events)[0].order_id;
    let events = m.tick(600);
    assert_eq!(
        kinds(&events),
        [
            "LeaseChanged",
            "BlockChanged",
            "OrderChanged",
            "BookLevelChanged"
        ]
    );
    let reopened = m.engine.order(order_id).unwrap();
    assert_eq!(
        (reopened.status, reopened.remaining_gpus),
        (OrderStatus::Open, 4)
    );
    assert_eq!(m.engine.depth(POOL, 10).unwrap().bids[0].gpus, 4);
    m.at(601).release(POOL, "y", 4, 100, &[]);
    assert_eq!(&*m.lease_of("ada").block_id, "y", "leased again");
}

#[test]
fn persistent_gtd_bid_past_its_date_expires_instead_of_bidding_again_after_a_failure() {
    let mut m = Market::new();
    m.release(POOL, "x", 4, 100, &[]);
    let mut gtd = persistent(bid("ada", POOL, 4, 120));
    gtd.tif = TimeInForce::Gtd;
    gtd.expires_at = Some(at_s(300));
    let events = m.place(gtd);
    let lease = &opened(&events)[0];
    let events = m.at(400).fail(lease, "node_unhealthy");
    let Some(Event::OrderChanged { order }) = events.last() else {
        panic!("the bid's end expected last: {events:?}");
    };
    assert_eq!(order.status, OrderStatus::Expired);
    assert!(m.engine.order(lease.order_id).is_none());
}

// ----- the supplier's reports ---------------------------------------------------------------

#[test]
fn a_second_ready_changes_nothing() {
    let mut m = Market::new();
    m.release(POOL, "x", 4, 100, &[]);
    m.place(bid("ada", POOL, 4, 100));
    let lease = m.lease_of("ada");
    m.at(100).ready(&lease, vec![ssh_to(None)]);
    let ready = m.lease_of("ada");
    let hash = m.engine.state_hash();
    assert!(
        m.ready(&lease, vec![ssh_to(None)]).is_empty(),
        "a redelivery"
    );
    assert_eq!(m.engine.state_hash(), hash);
    let other = Endpoint {
        host: "10.9.9.9".into(),
        ..ssh_to(None)
    };
    assert!(
        m.at(200).ready(&lease, vec![other]).is_empty(),
        "a retry, later"
    );
    assert_eq!(m.lease_of("ada").access, ready.access);
    assert_eq!(m.lease_of("ada").access.ready_at, Some(at_s(100)));
}

#[test]
fn reports_from_another_supplier_or_about_another_block_are_unknown_leases() {
    let mut m = Market::new();
    m.release(POOL, "x", 4, 100, &[]);
    m.release(POOL, "y", 4, 200, &[]);
    m.release_by("other", POOL, "x", 4, 200, &[]);
    m.place(bid("ada", POOL, 4, 100));
    let lease = m.lease_of("ada");
    assert_eq!(&*lease.block_id, "x");
    let from_other = LeaseView {
        supplier: "other".into(),
        ..lease.clone()
    };
    let wrong_block = LeaseView {
        block_id: "y".into(),
        ..lease.clone()
    };
    let no_such_lease = LeaseView {
        id: LeaseId(lease.id.0 + 100),
        ..lease.clone()
    };
    for wrong in [&from_other, &wrong_block, &no_such_lease] {
        let ready = m.ready(wrong, vec![ssh_to(None)]);
        assert_eq!(
            ready,
            rejected_as(Rejection::UnknownLease),
            "ready {wrong:?}"
        );
        let failed = m.fail(wrong, "node_unhealthy");
        assert_eq!(
            failed,
            rejected_as(Rejection::UnknownLease),
            "failed {wrong:?}"
        );
    }
    assert_eq!(m.lease_of("ada").access, Access::provisioning());
}

#[test]
fn reports_without_a_block_id_find_the_suppliers_lease_on_any_of_its_blocks() {
    let mut m = Market::new();
    m.release(POOL, "x", 4, 100, &[]);
    m.release_by("other", POOL, "w", 4, 100, &[]);
    m.place(bid("ada", POOL, 4, 100));
    m.place(bid("bob", POOL, 4, 100));
    let (ada, bob) = (m.lease_of("ada"), m.lease_of("bob"));
    assert_eq!((&*ada.block_id, &*bob.block_id), ("x", "w"));
    let unnamed = |lease: &LeaseView, supplier: &str| LeaseView {
        supplier: supplier.into(),
        block_id: "".into(),
        ..lease.clone()
    };
    let not_its_supplier = m.ready(&unnamed(&ada, "other"), vec![ssh_to(None)]);
    assert_eq!(not_its_supplier, rejected_as(Rejection::UnknownLease));
    let events = m.ready(&unnamed(&ada, SUPPLIER), vec![ssh_to(None)]);
    assert_eq!(lease_changes(&events)[0].access.status, AccessStatus::Ready);
    let events = m.fail(&unnamed(&bob, "other"), "node_unhealthy");
    assert_eq!(lease_changes(&events)[0].status, LeaseStatus::Failed);
}

#[test]
fn failed_after_ready_is_refused_as_not_provisioning() {
    let mut m = Market::new();
    m.release(POOL, "x", 4, 100, &[]);
    m.place(bid("ada", POOL, 4, 100));
    let lease = m.lease_of("ada");
    m.at(100).ready(&lease, vec![ssh_to(None)]);
    let events = m.at(200).fail(&lease, "node_unhealthy");
    assert_eq!(events, rejected_as(Rejection::LeaseNotProvisioning));
    let running = m.lease_of("ada");
    assert_eq!(running.status, LeaseStatus::Active);
    assert_eq!(running.access.status, AccessStatus::Ready);
}

#[test]
fn bare_metal_ready_needs_endpoints_on_the_leases_own_nodes() {
    let mut m = Market::new();
    m.release(POOL, "racked", 8, 100, &[("n1", 4), ("n2", 4)]);
    m.place(bid("ada", POOL, 4, 100));
    let lease = m.lease_of("ada");
    assert_eq!(
        lease.nodes,
        vec![NodeGpus {
            node: "n1".into(),
            gpus: 4
        }]
    );
    let refused = [
        vec![ssh_to(Some("n2"))],
        vec![ssh_to(Some("n1")), ssh_to(Some("n2"))],
        vec![ssh_to(Some("rack9-n9"))],
        vec![],
    ];
    for endpoints in refused {
        let events = m.ready(&lease, endpoints.clone());
        assert_eq!(
            events,
            rejected_as(Rejection::EndpointsInvalid),
            "{endpoints:?}"
        );
    }
    let with_gateway = m.run(Command::LeaseReady(LeaseReady {
        supplier: SUPPLIER.into(),
        block_id: "racked".into(),
        lease_id: lease.id,
        endpoints: vec![ssh_to(Some("n1"))],
        endpoint: Some(GATEWAY.into()),
    }));
    assert_eq!(with_gateway, rejected_as(Rejection::EndpointsInvalid));
    assert_eq!(m.lease_of("ada").access, Access::provisioning());
    let events = m.ready(&lease, vec![ssh_to(Some("n1"))]);
    assert_eq!(
        lease_changes(&events)[0].access.endpoints,
        vec![ssh_to(Some("n1"))]
    );

    // A lease on a block without nodes: endpoints name no node.
    m.release(POOL, "bare", 4, 90, &[]);
    m.place(bid("bob", POOL, 4, 100));
    let lease = m.lease_of("bob");
    let named = m.ready(&lease, vec![ssh_to(Some("n1"))]);
    assert_eq!(named, rejected_as(Rejection::EndpointsInvalid));
    let events = m.ready(&lease, vec![ssh_to(None)]);
    assert_eq!(lease_changes(&events)[0].access.status, AccessStatus::Ready);
}

#[test]
fn model_pool_ready_needs_the_gateway_endpoint_and_no_machines() {
    let mut m = Market::with_pools([model_pool()]);
    m.release(MODEL_POOL, "gpu-fleet", 4, 100, &[]);
    m.place(bid("ada", MODEL_POOL, 4, 100));
    let lease = m.lease_of("ada");
    let machines = m.ready(&lease, vec![ssh_to(None)]);
    assert_eq!(machines, rejected_as(Rejection::EndpointsInvalid));
    let nothing = m.ready(&lease, vec![]);
    assert_eq!(nothing, rejected_as(Rejection::EndpointsInvalid));
    let both = m.run(Command::LeaseReady(LeaseReady {
        supplier: SUPPLIER.into(),
        block_id: "gpu-fleet".into(),
        lease_id: lease.id,
        endpoints: vec![ssh_to(None)],
        endpoint: Some(GATEWAY.into()),
    }));
    assert_eq!(both, rejected_as(Rejection::EndpointsInvalid));
    let events = m.at(30).ready_with_gateway(&lease);
    let ready = &lease_changes(&events)[0];
    assert_eq!(ready.access.status, AccessStatus::Ready);
    assert_eq!(ready.access.endpoint.as_deref(), Some(GATEWAY));
    assert!(ready.access.endpoints.is_empty());
    assert_eq!(ready.access.ready_at, Some(at_s(30)));
}

// ----- ssh keys -----------------------------------------------------------------------------

#[test]
fn bid_keys_beat_the_account_default_keys() {
    let mut m = Market::new();
    let events = m.set_keys("ada", &[KEY_LAPTOP]);
    assert_eq!(
        events,
        vec![Event::SshKeysChanged {
            account: "ada".into()
        }]
    );
    assert_eq!(
        m.engine.ssh_keys_of("ada").to_vec(),
        vec![KEY_LAPTOP.to_owned()]
    );
    m.release(POOL, "x", 4, 100, &[]);
    let mut own_keys = bid("ada", POOL, 4, 100);
    own_keys.ssh_public_keys = vec![KEY_CI.into(), KEY_DESK.into()];
    let events = m.place(own_keys);
    assert_eq!(
        opened(&events)[0].ssh_public_keys,
        keys(&[KEY_CI, KEY_DESK])
    );
}

#[test]
fn account_default_keys_at_placement_apply_when_the_bid_has_none() {
    let mut m = Market::new();
    m.set_keys("ada", &[KEY_LAPTOP]);
    let resting = m.place(bid("ada", POOL, 4, 100));
    assert!(opened(&resting).is_empty(), "no supply yet");
    // Later defaults are for later bids: the resting bid keeps what it was placed with.
    m.set_keys("ada", &[KEY_DESK]);
    m.release(POOL, "x", 4, 100, &[]);
    assert_eq!(m.lease_of("ada").ssh_public_keys, keys(&[KEY_LAPTOP]));
    m.release(POOL, "y", 4, 100, &[]);
    let events = m.place(bid("ada", POOL, 4, 100));
    assert_eq!(opened(&events)[0].ssh_public_keys, keys(&[KEY_DESK]));
    m.release(POOL, "z", 4, 100, &[]);
    let events = m.place(bid("bob", POOL, 4, 100));
    assert_eq!(opened(&events)[0].ssh_public_keys, None, "bob has no keys");
    m.set_keys("ada", &[]);
    assert!(m.engine.ssh_keys_of("ada").is_empty());
}

#[test]
fn persistent_bid_keeps_its_keys_for_the_leases_it_opens_again() {
    let mut m = Market::new();
    m.release(POOL, "x", 4, 100, &[]);
    let mut keyed = persistent(bid("ada", POOL, 4, 100));
    keyed.ssh_public_keys = vec![KEY_CI.into()];
    m.place(keyed);
    let first = m.lease_of("ada");
    m.set_keys("ada", &[KEY_DESK]);
    m.release(POOL, "y", 4, 100, &[]);
    m.at(10).fail(&first, "node_unhealthy");
    assert_eq!(m.lease_of("ada").ssh_public_keys, keys(&[KEY_CI]));
}

#[test]
fn model_pool_leases_carry_no_keys() {
    let mut m = Market::with_pools([model_pool()]);
    m.set_keys("ada", &[KEY_LAPTOP]);
    m.release(MODEL_POOL, "gpu-fleet", 8, 100, &[]);
    let mut own_keys = bid("ada", MODEL_POOL, 4, 100);
    own_keys.ssh_public_keys = vec![KEY_CI.into()];
    let events = m.place(own_keys);
    assert_eq!(opened(&events)[0].ssh_public_keys, None);
    let events = m.place(bid("ada", MODEL_POOL, 4, 100));
    assert_eq!(opened(&events)[0].ssh_public_keys, None);
}

// ----- pools without the handoff ------------------------------------------------------------

#[test]
fn pool_without_handoff_leases_are_ready_and_billed_from_open() {
    let mut m = Market::with_pools([pool_without_handoff()]);
    m.at(5).release(POOL, "x", 4, 100, &[]);
    let events = m.place(bid("ada", POOL, 4, 100));
    let lease = &opened(&events)[0];
    assert_eq!(lease.access, Access::ready_at(at_s(5)));
    assert_eq!(
        m.engine.next_timer_at(),
        Some(at_s(5 + 8 * 3600)),
        "no provisioning timeout: the lease's end is next"
    );
    assert!(m.at(10).ready(lease, vec![ssh_to(None)]).is_empty());
    let refused = m.fail(lease, "node_unhealthy");
    assert_eq!(refused, rejected_as(Rejection::LeaseNotProvisioning));
    assert!(m.tick(5 + 600).is_empty(), "nothing times out");
    let events = m.at(1005).run(Command::ReleaseLease {
        account: "ada".into(),
        lease_id: lease.id,
    });
    // $1 x 4 GPUs x 1000 s since it opened.
    assert_eq!(lease_changes(&events)[0].cost_micros, 1_111_111);
}

// ----- pool settings ------------------------------------------------------------------------

#[test]
fn pool_settings_must_agree_with_the_offering_and_bound_the_timeout() {
    let defaults = bare_metal_pool();
    assert_eq!(defaults.handoff, Handoff::Required);
    assert_eq!(defaults.provision_timeout_s, PROVISION_TIMEOUT_S_DEFAULT);
    let invalid = [
        PoolConfig {
            tokens_per_s_per_gpu: 100,
            ..bare_metal_pool()
        },
        PoolConfig {
            model: Some("llama-3.1-8b-instruct".into()),
            ..bare_metal_pool()
        },
        PoolConfig {
            model: None,
            ..model_pool()
        },
        PoolConfig {
            model: Some(String::new()),
            ..model_pool()
        },
        PoolConfig {
            tokens_per_s_per_gpu: 0,
            ..model_pool()
        },
        // A model pool is named after its model, not its GPU.
        PoolConfig {
            id: "l4.us-central".into(),
            ..model_pool()
        },
        PoolConfig {
            provision_timeout_s: 0,
            ..bare_metal_pool()
        },
        PoolConfig {
            provision_timeout_s: PROVISION_TIMEOUT_S_MAX + 1,
            ..bare_metal_pool()
        },
    ];
    let mut m = Market::with_pools([]);
    for config in invalid {
        let events = m.run(Command::ConfigurePool(config.clone()));
        assert_eq!(
            events,
            rejected_as(Rejection::PoolConfigInvalid),
            "{config:?}"
        );
    }
    assert!(m.engine.pools().is_empty());
    for timeout_s in [1, PROVISION_TIMEOUT_S_MAX] {
        let config = PoolConfig {
            provision_timeout_s: timeout_s,
            ..bare_metal_pool()
        };
        assert_eq!(rejection(&m.run(Command::ConfigurePool(config))), None);
    }
    assert_eq!(
        rejection(&m.run(Command::ConfigurePool(model_pool()))),
        None
    );
}

#[test]
fn pools_journaled_before_the_handoff_replay_without_it() {
    let mut journaled = serde_json::to_value(bare_metal_pool()).unwrap();
    let fields = journaled.as_object_mut().unwrap();
    for added in [
        "offering",
        "model",
        "tokens_per_s_per_gpu",
        "handoff",
        "provision_timeout_s",
    ] {
        fields.remove(added).expect("the field exists today");
    }
    let config: PoolConfig = serde_json::from_value(journaled).unwrap();
    assert_eq!(
        config.handoff,
        Handoff::None,
        "leases ran billed from their start then"
    );
    assert_eq!(config.offering, Offering::BareMetal);
    assert_eq!(config.provision_timeout_s, PROVISION_TIMEOUT_S_DEFAULT);
}

// ----- snapshots ----------------------------------------------------------------------------

#[test]
fn snapshot_mid_provisioning_restores_the_same_state_and_the_same_future() {
    let mut config = bare_metal_pool();
    config.provision_timeout_s = 300;
    let mut m = Market::with_pools([config, model_pool()]);
    m.set_keys("ada", &[KEY_LAPTOP]);
    m.release(POOL, "x", 8, 100, &[("n1", 4), ("n2", 4)]);
    m.release(POOL, "y", 4, 100, &[]);
    m.release(MODEL_POOL, "fleet", 4, 100, &[]);
    m.place(persistent(bid("ada", POOL, 4, 100)));
    let mut keyed = bid("bob", POOL, 4, 100);
    keyed.ssh_public_keys = vec![KEY_CI.into()];
    m.place(keyed);
    m.place(bid("cyd", POOL, 4, 100));
    m.place(bid("dee", MODEL_POOL, 4, 100));
    let (ada, bob, cyd, dee) = (
        m.lease_of("ada"),
        m.lease_of("bob"),
        m.lease_of("cyd"),
        m.lease_of("dee"),
    );
    m.at(50).ready(&bob, vec![ssh_to(Some("n2"))]);
    m.at(60).fail(&cyd, "node_unhealthy");
    m.at(70)
        .run(Command::PlaceBid(persistent(bid("ada", POOL, 2, 100))));
    // Mid-provisioning: ada's and dee's leases wait, bob's is ready, cyd's failed.
    assert_eq!(m.block("x").gpus_failed + m.block("y").gpus_failed, 4);

    let text = serde_json::to_string(&m.engine.snapshot()).unwrap();
    let mut restored = Engine::restore(serde_json::from_str(&text).unwrap());
    assert_eq!(restored.snapshot(), m.engine.snapshot());
    assert_eq!(restored.state_hash(), m.engine.state_hash());
    restored.assert_invariants();

    let future = [
        (
            at_s(80),
            Command::LeaseReady(LeaseReady {
                supplier: SUPPLIER.into(),
                block_id: dee.block_id.to_string(),
                lease_id: dee.id,
                endpoints: vec![],
                endpoint: Some(GATEWAY.into()),
            }),
        ),
        (
            at_s(90),
            Command::LeaseReady(LeaseReady {
                supplier: SUPPLIER.into(),
                block_id: bob.block_id.to_string(),
                lease_id: bob.id,
                endpoints: vec![ssh_to(None)],
                endpoint: None,
            }),
        ),
        // ada's lease times out at 300 s; the persistent bid bids again.
        (at_s(400), Command::Tick),
        (
            at_s(410),
            Command::ReleaseCapacity(ReleaseCapacity {
                supplier: SUPPLIER.into(),
                block_id: "z".into(),
                pool: POOL.into(),
                gpus: 8,
                reserve_price: usd(100),
                available_from: None,
                available_until: at_s(10 * 3600),
                nodes: vec![],
            }),
        ),
        (
            at_s(1000),
            Command::ReleaseLease {
                account: "bob".into(),
                lease_id: bob.id,
            },
        ),
        (at_s(9 * 3600), Command::Tick),
    ];
    let mut failures = 0;
    for (at, command) in &future {
        let (mut expected, mut actual) = (Vec::new(), Vec::new());
        m.engine.apply(*at, command, &mut expected);
        restored.apply(*at, command, &mut actual);
        m.engine.assert_invariants();
        restored.assert_invariants();
        assert_eq!(actual, expected, "after {command:?}");
        assert_eq!(
            restored.state_hash(),
            m.engine.state_hash(),
            "after {command:?}"
        );
        failures += lease_changes(&expected)
            .iter()
            .filter(|l| l.status == LeaseStatus::Failed && l.id == ada.id)
            .count();
    }
    assert_eq!(failures, 1, "ada's lease timed out in both");
}
