//! A deliberately naive reference model of the matching engine, and the random command
//! generator the property and replay tests share.
//!
//! The model is written from the rulebook (`matching-engine/README.md`) and DESIGN sections 2-4,
//! 11 and 12 (the handoff: leases provisioning until ready, billing from `ready_at`, failures
//! and provisioning timeouts, ssh keys, model pools), not from `engine/`: every bid, block, lease and timer lives in a plain `Vec`; the book is
//! not stored at all but recomputed by filtering and sorting those `Vec`s whenever it is needed
//! (no ladders, no slabs, no linked lists, no incremental totals). Slow, and obviously right is
//! the point: the engine's events and views must equal the model's after every command.
//!
//! Where the rulebook is silent, the model follows the engine's documented behaviour (the doc
//! comments of the public types); each such choice is marked `Rulebook silent`. One convention
//! the events depend on: a lease's end is scheduled before its provisioning timeout, so of two
//! timers due at the same moment the older fires first.
//!
//! This file is included as a module by `property.rs` and `replay.rs`; cargo also builds it as
//! a test target of its own, which has no tests (hence the `allow(dead_code)`).

#![allow(dead_code)]

use matching_engine::limits::{
    AUCTION_CANDIDATE_PRICES_MAX, CLIENT_ORDER_ID_TTL_MS, NODES_PER_BLOCK_MAX, PRICE_LEVELS_MAX,
};
use matching_engine::{
    Access, AccessStatus, AccountLimits, AmendBid, AuctionMode, BlockStatus, BlockView,
    CancelReason, Command, Depth, Endpoint, Event, Handoff, KillTarget, LeaseId, LeaseReady,
    LeaseStatus, LeaseView, Level, Name, NodeGpus, Offering, OrderId, OrderStatus, OrderView,
    PlaceBid, PoolConfig, PoolSummary, PriceMicros, Quote, ReclaimCapacity, Rejection,
    ReleaseCapacity, Side, SshKeys, TimeInForce, TimeMs, TradeId, TradeView, UpdateCapacity,
};

/// DESIGN section 11: a pool's `provision_timeout_s` is 1 to 86,400.
const PROVISION_TIMEOUT_S_RANGE: std::ops::RangeInclusive<u32> = 1..=86_400;
/// DESIGN section 11: the reason a lease fails when its provisioner stays silent.
const PROVISION_TIMEOUT_REASON: &str = "provision_timeout";

/// `price * gpus * seconds / 3600`, rounded down (DESIGN section 2).
fn cost(price: u64, gpus: u32, seconds: u64) -> u64 {
    let owed = price as u128 * gpus as u128 * seconds as u128 / 3600;
    owed.min(u64::MAX as u128) as u64
}

/// What a resting bid commits: `price * gpus * duration_s / 3600`, rounded down.
fn notional(price: u64, gpus: u32, duration_s: u32) -> u128 {
    price as u128 * gpus as u128 * duration_s as u128 / 3600
}

/// Whole seconds from `from` to `to`.
fn whole_seconds(from: i64, to: i64) -> u64 {
    (to - from).max(0) as u64 / 1000
}

fn plus_s(at: i64, seconds: u64) -> i64 {
    at.saturating_add((seconds as i64).saturating_mul(1000))
}

fn name(text: &str) -> Name {
    Name::from(text)
}

#[derive(Clone, Debug)]
enum Due {
    LeaseEnds(LeaseId),
    NoticeEnds(LeaseId),
    BidExpires(OrderId),
    BlockOpens(u64),
    BlockCloses(u64),
    Auction(String),
    ForgetClientOrderId(String, String),
    ProvisionTimeout(LeaseId),
}

#[derive(Clone, Debug)]
struct Timer {
    due: i64,
    seq: u64,
    what: Due,
}

#[derive(Clone, Debug)]
struct Pool {
    config: PoolConfig,
    halted: bool,
    last_price: Option<u64>,
    auction_at: Option<i64>,
    /// Reclaims accepted with a notice shorter than promised.
    emergency_reclaims: u64,
}

impl Pool {
    fn batch_interval_ms(&self) -> Option<i64> {
        match self.config.auction {
            AuctionMode::Batch { interval_ms } => Some(interval_ms as i64),
            AuctionMode::Continuous => None,
        }
    }

    fn check_price(&self, price: u64) -> Result<(), Rejection> {
        if !price.is_multiple_of(self.config.tick.0) {
            return Err(Rejection::PriceNotOnTick);
        }
        if price < self.config.price_min.0 || price > self.config.price_max.0 {
            return Err(Rejection::PriceOutOfBand);
        }
        Ok(())
    }
}

/// A live bid: Open, or Filled and persistent while its leases run.
#[derive(Clone, Debug)]
struct Bid {
    id: OrderId,
    account: String,
    pool: String,
    price: u64,
    gpus: u32,
    remaining: u32,
    min_gpus: u32,
    duration_s: u32,
    max_duration_s: u32,
    tif: TimeInForce,
    expires_at: Option<i64>,
    persistent: bool,
    client_order_id: Option<String>,
    status: OrderStatus,
    cancel_reason: Option<CancelReason>,
    created_at: i64,
    updated_at: i64,
    priority: u64,
    /// Bare-metal pools: the keys its leases carry (the bid's own, or else its account's
    /// defaults when it was placed); `None` when there were none.
    ssh_keys: Option<Vec<String>>,
}

impl Bid {
    fn on_book(&self) -> bool {
        self.status == OrderStatus::Open
    }
}

#[derive(Clone, Debug)]
struct Node {
    name: String,
    gpus: u32,
    /// GPUs of this node no lease holds.
    free: u32,
}

/// A known block: Pending, Open, or Closed with leases still running.
#[derive(Clone, Debug)]
struct Block {
    serial: u64,
    supplier: String,
    block_id: String,
    pool: String,
    status: BlockStatus,
    gpus: u32,
    unsold: u32,
    reclaimed: u32,
    /// Of the reclaimed GPUs, those of leases that failed: they left the block.
    failed: u32,
    /// What reclaims still need from leases under notice.
    reclaiming: u32,
    reserve_price: u64,
    available_from: i64,
    available_until: i64,
    revenue: u64,
    forecast_at: Option<i64>,
    nodes: Vec<Node>,
    priority: u64,
    updated_at: i64,
}

impl Block {
    fn on_book(&self) -> bool {
        self.status == BlockStatus::Open && self.unsold > 0
    }
}

/// A running lease (Active or Preempting).
#[derive(Clone, Debug)]
struct Lease {
    id: LeaseId,
    order_id: OrderId,
    buyer: String,
    supplier: String,
    pool: String,
    block_serial: u64,
    block_id: String,
    gpus: u32,
    price: u64,
    status: LeaseStatus,
    started_at: i64,
    ends_at: i64,
    notice_ends_at: Option<i64>,
    preempted_at: Option<i64>,
    emergency: bool,
    /// The pool's `notice_s` when it opened: its promise.
    notice_s: u32,
    /// `(node index in the block, GPUs)`.
    nodes: Vec<(usize, u32)>,
    /// The handoff (DESIGN section 11).
    handoff: Handover,
    /// The buyer's keys, copied from its bid when it opened.
    ssh_keys: Option<Vec<String>>,
}

/// Where a lease's handoff stands, spelled out field by field.
#[derive(Clone, Debug)]
struct Handover {
    status: AccessStatus,
    ready_at: Option<i64>,
    endpoints: Vec<Endpoint>,
    endpoint: Option<String>,
    failure: Option<String>,
}

impl Handover {
    fn provisioning() -> Handover {
        Handover {
            status: AccessStatus::Provisioning,
            ready_at: None,
            endpoints: Vec::new(),
            endpoint: None,
            failure: None,
        }
    }
}

/// The reference model. See the module documentation.
#[derive(Clone, Debug)]
pub struct Model {
    now: i64,
    next_id: u64,
    next_priority: u64,
    next_timer_seq: u64,
    timers: Vec<Timer>,
    pools: Vec<Pool>,
    limits: Vec<(String, AccountLimits)>,
    killed: Vec<String>,
    bids: Vec<Bid>,
    /// `(account, client_order_id, order, placed_at)` remembered for a day.
    client_order_ids: Vec<(String, String, OrderId, i64)>,
    blocks: Vec<Block>,
    leases: Vec<Lease>,
    /// Accounts' default ssh keys, as last set.
    default_ssh_keys: Vec<(String, Vec<String>)>,
    /// Book levels touched by the current timer or command: `(pool, side, price, before)`.
    touched: Vec<(String, Side, u64, (u64, u32))>,
    out: Vec<Event>,
}

impl Default for Model {
    fn default() -> Self {
        Model::new()
    }
}

impl Model {
    /// An empty market at time zero.
    pub fn new() -> Model {
        Model {
            now: 0,
            next_id: 1,
            next_priority: 1,
            next_timer_seq: 0,
            timers: Vec::new(),
            pools: Vec::new(),
            limits: Vec::new(),
            killed: Vec::new(),
            bids: Vec::new(),
            client_order_ids: Vec::new(),
            blocks: Vec::new(),
            leases: Vec::new(),
            default_ssh_keys: Vec::new(),
            touched: Vec::new(),
            out: Vec::new(),
        }
    }

    /// The model's clock.
    pub fn now(&self) -> TimeMs {
        TimeMs(self.now)
    }

    /// Applies one command stamped at `at` and returns what the engine must have emitted.
    pub fn apply(&mut self, at: TimeMs, command: &Command) -> Vec<Event> {
        self.out.clear();
        self.advance(at.0);
        match command {
            Command::ConfigurePool(config) => self.configure_pool(config),
            Command::PlaceBid(bid) => self.place_bid(bid),
            Command::AmendBid(amend) => self.amend_bid(amend),
            Command::CancelBid { account, order_id } => self.cancel_bid(account, *order_id),
            Command::ReleaseCapacity(release) => self.release_capacity(release),
            Command::UpdateCapacity(update) => self.update_capacity(update),
            Command::ReclaimCapacity(reclaim) => self.reclaim_capacity(reclaim),
            Command::ForecastReclaim {
                supplier,
                block_id,
                reclaim_at,
            } => self.forecast_reclaim(supplier, block_id, reclaim_at.0),
            Command::ReleaseLease { account, lease_id } => self.release_lease(account, *lease_id),
            Command::LeaseReady(ready) => self.lease_ready(ready),
            Command::LeaseFailed {
                supplier,
                block_id,
                lease_id,
                reason,
            } => self.lease_failed(supplier, block_id, *lease_id, reason),
            Command::SetSshKeys { account, keys } => {
                self.default_ssh_keys
                    .retain(|(holder, _)| holder != account);
                self.default_ssh_keys.push((account.clone(), keys.clone()));
                self.emit(Event::SshKeysChanged {
                    account: name(account),
                });
            }
            Command::Tick => {}
            Command::SetKillSwitch { target, engaged } => self.set_kill_switch(target, *engaged),
            Command::SetAccountLimits { account, limits } => {
                self.limits.retain(|(holder, _)| holder != account);
                self.limits.push((account.clone(), *limits));
                self.emit(Event::AccountLimitsChanged {
                    account: name(account),
                    limits: *limits,
                });
            }
        }
        self.flush_levels();
        std::mem::take(&mut self.out)
    }

    fn emit(&mut self, event: Event) {
        self.out.push(event);
    }

    fn reject(&mut self, reason: Rejection) {
        self.emit(Event::Rejected { reason });
    }

    fn take_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id - 1
    }

    fn take_priority(&mut self) -> u64 {
        self.next_priority += 1;
        self.next_priority - 1
    }

    // ----- time ---------------------------------------------------------------------------

    fn schedule(&mut self, due: i64, what: Due) {
        self.next_timer_seq += 1;
        self.timers.push(Timer {
            due,
            seq: self.next_timer_seq,
            what,
        });
    }

    /// Fires every timer due by `at` in `(due, scheduling order)`, then moves the clock to `at`
    /// (never backwards).
    fn advance(&mut self, at: i64) {
        loop {
            let next = self
                .timers
                .iter()
                .enumerate()
                .filter(|(_, timer)| timer.due <= at)
                .min_by_key(|(_, timer)| (timer.due, timer.seq))
                .map(|(index, _)| index);
            let Some(index) = next else { break };
            let timer = self.timers.remove(index);
            self.now = self.now.max(timer.due);
            self.fire(timer.what);
            self.flush_levels();
        }
        self.now = self.now.max(at);
    }

    fn fire(&mut self, what: Due) {
        match what {
            Due::LeaseEnds(id) => {
                if self.lease(id).is_some_and(|l| l.ends_at == self.now) {
                    self.end_lease(id, LeaseStatus::Completed);
                }
            }
            Due::NoticeEnds(id) => {
                if self
                    .lease(id)
                    .is_some_and(|l| l.notice_ends_at == Some(self.now))
                {
                    self.end_lease(id, LeaseStatus::Preempted);
                }
            }
            Due::BidExpires(id) => {
                let due = self.bid(id).is_some_and(|bid| {
                    bid.status == OrderStatus::Open && bid.expires_at == Some(self.now)
                });
                if due {
                    self.finish_bid(id, OrderStatus::Expired, None);
                }
            }
            Due::BlockOpens(serial) => {
                if self
                    .block(serial)
                    .is_some_and(|b| b.status == BlockStatus::Pending)
                {
                    let now = self.now;
                    self.change_block(serial, |block| {
                        block.status = BlockStatus::Open;
                        block.updated_at = now;
                    });
                    self.emit_block(serial);
                    let pool = self.block(serial).expect("opened").pool.clone();
                    self.supply_changed(&pool);
                }
            }
            Due::BlockCloses(serial) => {
                let closes = self.block(serial).is_some_and(|b| {
                    b.available_until == self.now && b.status != BlockStatus::Closed
                });
                if closes {
                    let now = self.now;
                    self.change_block(serial, |block| {
                        block.status = BlockStatus::Closed;
                        block.updated_at = now;
                    });
                    self.emit_block(serial);
                    self.forget_block_if_done(serial);
                }
            }
            Due::Auction(pool) => {
                let index = self.pool_index(&pool).expect("pools are never removed");
                if self.pools[index].auction_at == Some(self.now) {
                    self.pools[index].auction_at = None;
                    self.uncross(&pool);
                }
            }
            Due::ProvisionTimeout(id) => {
                let silent = self
                    .lease(id)
                    .is_some_and(|l| l.handoff.status == AccessStatus::Provisioning);
                if silent {
                    self.lease_mut(id).handoff.failure = Some(PROVISION_TIMEOUT_REASON.to_owned());
                    self.end_lease(id, LeaseStatus::Failed);
                }
            }
            Due::ForgetClientOrderId(account, key) => {
                let now = self.now;
                self.client_order_ids.retain(|(holder, k, _, placed_at)| {
                    !(holder == &account && k == &key && placed_at + CLIENT_ORDER_ID_TTL_MS <= now)
                });
            }
        }
    }

    // ----- lookups --------------------------------------------------------------------------

    fn pool_index(&self, pool: &str) -> Option<usize> {
        self.pools.iter().position(|p| p.config.id == pool)
    }

    fn pool(&self, pool: &str) -> &Pool {
        &self.pools[self.pool_index(pool).expect("known pool")]
    }

    fn bid(&self, id: OrderId) -> Option<&Bid> {
        self.bids.iter().find(|bid| bid.id == id)
    }

    fn bid_mut(&mut self, id: OrderId) -> &mut Bid {
        self.bids
            .iter_mut()
            .find(|bid| bid.id == id)
            .expect("live bid")
    }

    fn block(&self, serial: u64) -> Option<&Block> {
        self.blocks.iter().find(|block| block.serial == serial)
    }

    fn block_mut(&mut self, serial: u64) -> &mut Block {
        self.blocks
            .iter_mut()
            .find(|block| block.serial == serial)
            .expect("known block")
    }

    fn owned_block(&self, supplier: &str, block_id: &str) -> Option<u64> {
        self.blocks
            .iter()
            .find(|b| b.supplier == supplier && b.block_id == block_id)
            .map(|b| b.serial)
    }

    fn lease(&self, id: LeaseId) -> Option<&Lease> {
        self.leases.iter().find(|lease| lease.id == id)
    }

    fn lease_mut(&mut self, id: LeaseId) -> &mut Lease {
        self.leases
            .iter_mut()
            .find(|lease| lease.id == id)
            .expect("running lease")
    }

    fn default_ssh_keys_of(&self, account: &str) -> Vec<String> {
        self.default_ssh_keys
            .iter()
            .find(|(holder, _)| holder == account)
            .map_or_else(Vec::new, |(_, keys)| keys.clone())
    }

    fn limits_of(&self, account: &str) -> AccountLimits {
        self.limits
            .iter()
            .find(|(holder, _)| holder == account)
            .map_or(AccountLimits::default(), |(_, limits)| *limits)
    }

    fn is_killed(&self, account: &str) -> bool {
        self.killed.iter().any(|killed| killed == account)
    }

    fn sold_of(&self, serial: u64) -> u32 {
        self.leases
            .iter()
            .filter(|l| l.block_serial == serial)
            .map(|l| l.gpus)
            .sum()
    }

    fn running_leases_of_bid(&self, id: OrderId) -> usize {
        self.leases.iter().filter(|l| l.order_id == id).count()
    }

    /// Open bids of a pool in priority order: highest price first, then time.
    fn bids_in_priority(&self, pool: &str) -> Vec<OrderId> {
        let mut bids: Vec<&Bid> = self
            .bids
            .iter()
            .filter(|bid| bid.pool == pool && bid.on_book())
            .collect();
        bids.sort_by_key(|bid| (std::cmp::Reverse(bid.price), bid.priority));
        bids.iter().map(|bid| bid.id).collect()
    }

    /// Blocks resting on a pool's ask side in priority order: lowest price first, then time.
    fn asks_in_priority(&self, pool: &str) -> Vec<u64> {
        let mut asks: Vec<&Block> = self
            .blocks
            .iter()
            .filter(|block| block.pool == pool && block.on_book())
            .collect();
        asks.sort_by_key(|block| (block.reserve_price, block.priority));
        asks.iter().map(|block| block.serial).collect()
    }

    /// `(gpus, orders)` resting at one level, counted from scratch.
    fn level(&self, pool: &str, side: Side, price: u64) -> (u64, u32) {
        match side {
            Side::Bid => self
                .bids
                .iter()
                .filter(|b| b.pool == pool && b.on_book() && b.price == price)
                .fold((0, 0), |(g, n), b| (g + b.remaining as u64, n + 1)),
            Side::Ask => self
                .blocks
                .iter()
                .filter(|b| b.pool == pool && b.on_book() && b.reserve_price == price)
                .fold((0, 0), |(g, n), b| (g + b.unsold as u64, n + 1)),
        }
    }

    // ----- book-level changes ---------------------------------------------------------------

    fn touch(&mut self, pool: &str, side: Side, price: u64) {
        if self
            .touched
            .iter()
            .any(|(p, s, l, _)| p == pool && *s == side && *l == price)
        {
            return;
        }
        let before = self.level(pool, side, price);
        self.touched.push((pool.to_owned(), side, price, before));
    }

    /// One `BookLevelChanged` per touched level whose totals differ, in first-touch order.
    fn flush_levels(&mut self) {
        for (pool, side, price, before) in std::mem::take(&mut self.touched) {
            let (gpus, orders) = self.level(&pool, side, price);
            if (gpus, orders) != before {
                self.emit(Event::BookLevelChanged {
                    pool: name(&pool),
                    side,
                    price: PriceMicros(price),
                    gpus,
                    orders,
                });
            }
        }
    }

    /// Changes a bid; the book levels its resting GPUs leave and join are touched first.
    fn change_bid(&mut self, id: OrderId, change: impl FnOnce(&mut Bid)) {
        let before = self.bid(id).expect("live bid").clone();
        let mut after = before.clone();
        change(&mut after);
        let (b, a) = (&before, &after);
        let left =
            b.on_book() && (!a.on_book() || a.price != b.price || a.remaining != b.remaining);
        let joined =
            a.on_book() && (!b.on_book() || a.price != b.price || a.remaining != b.remaining);
        if left {
            self.touch(&b.pool, Side::Bid, b.price);
        }
        if joined {
            self.touch(&a.pool, Side::Bid, a.price);
        }
        *self.bid_mut(id) = after;
    }

    /// Changes a block; the ask levels touched as above. A block that starts resting (or
    /// rests again at a new price) takes a fresh priority: the back of its level.
    fn change_block(&mut self, serial: u64, change: impl FnOnce(&mut Block)) {
        let before = self.block(serial).expect("known block").clone();
        let mut after = before.clone();
        change(&mut after);
        let (b, a) = (&before, &after);
        let moved = a.reserve_price != b.reserve_price;
        let left = b.on_book() && (!a.on_book() || moved || a.unsold != b.unsold);
        let joined = a.on_book() && (!b.on_book() || moved || a.unsold != b.unsold);
        if left {
            self.touch(&b.pool, Side::Ask, b.reserve_price);
        }
        if joined {
            self.touch(&a.pool, Side::Ask, a.reserve_price);
        }
        // Rulebook: "resting (again) takes a fresh, larger priority". GPUs added to a block
        // that is still resting do not rest it again (rulebook silent; the engine keeps its
        // place).
        if a.on_book() && (!b.on_book() || moved) {
            after.priority = self.take_priority();
        }
        *self.block_mut(serial) = after;
    }

    // ----- views ----------------------------------------------------------------------------

    fn order_view(&self, bid: &Bid) -> OrderView {
        OrderView {
            id: bid.id,
            account: name(&bid.account),
            pool: name(&bid.pool),
            price: PriceMicros(bid.price),
            gpus: bid.gpus,
            remaining_gpus: bid.remaining,
            filled_gpus: bid.gpus - bid.remaining,
            min_gpus: bid.min_gpus,
            duration_s: bid.duration_s,
            max_duration_s: bid.max_duration_s,
            tif: bid.tif,
            expires_at: bid.expires_at.map(TimeMs),
            persistent: bid.persistent,
            client_order_id: bid.client_order_id.as_deref().map(name),
            status: bid.status,
            cancel_reason: bid.cancel_reason,
            created_at: TimeMs(bid.created_at),
            updated_at: TimeMs(bid.updated_at),
        }
    }

    fn emit_order(&mut self, id: OrderId) {
        let view = self.order_view(self.bid(id).expect("live bid"));
        self.emit(Event::OrderChanged { order: view });
    }

    /// A lease's view; `ended` is `(ended_at, final cost)`, otherwise the cost accrued so far.
    fn lease_view(&self, lease: &Lease, ended: Option<(i64, u64)>) -> LeaseView {
        let block = self.block(lease.block_serial);
        LeaseView {
            id: lease.id,
            order_id: lease.order_id,
            buyer: name(&lease.buyer),
            supplier: name(&lease.supplier),
            pool: name(&lease.pool),
            block_id: name(&lease.block_id),
            gpus: lease.gpus,
            price: PriceMicros(lease.price),
            status: lease.status,
            started_at: TimeMs(lease.started_at),
            ends_at: TimeMs(lease.ends_at),
            notice_ends_at: lease.notice_ends_at.map(TimeMs),
            preempted_at: lease.preempted_at.map(TimeMs),
            emergency: lease.emergency,
            notice_s: lease.notice_s,
            ended_at: ended.map(|(at, _)| TimeMs(at)),
            // DESIGN section 11: cost accrues from `ready_at`; nothing before.
            cost_micros: ended.map_or_else(
                || {
                    lease.handoff.ready_at.map_or(0, |ready_at| {
                        cost(lease.price, lease.gpus, whole_seconds(ready_at, self.now))
                    })
                },
                |(_, cost)| cost,
            ),
            nodes: self.lease_nodes(lease, block),
            access: Access {
                status: lease.handoff.status,
                ready_at: lease.handoff.ready_at.map(TimeMs),
                endpoints: lease.handoff.endpoints.clone(),
                endpoint: lease.handoff.endpoint.as_deref().map(name),
                reason: lease.handoff.failure.as_deref().map(name),
            },
            ssh_public_keys: lease
                .ssh_keys
                .as_ref()
                .map(|keys| SshKeys::from(keys.clone())),
        }
    }

    /// The GPUs a lease holds on its block's nodes, by node name.
    fn lease_nodes(&self, lease: &Lease, block: Option<&Block>) -> Vec<NodeGpus> {
        lease
            .nodes
            .iter()
            .map(|&(index, gpus)| NodeGpus {
                node: name(&block.expect("a running lease's block is known").nodes[index].name),
                gpus,
            })
            .collect()
    }

    fn block_view(&self, block: &Block) -> BlockView {
        BlockView {
            supplier: name(&block.supplier),
            block_id: name(&block.block_id),
            pool: name(&block.pool),
            status: block.status,
            gpus: block.gpus,
            gpus_sold: self.sold_of(block.serial),
            gpus_unsold: block.unsold,
            gpus_reclaimed: block.reclaimed,
            gpus_failed: block.failed,
            gpus_reclaiming: block.reclaiming,
            reserve_price: PriceMicros(block.reserve_price),
            available_from: TimeMs(block.available_from),
            available_until: TimeMs(block.available_until),
            revenue_micros: block.revenue,
            reclaim_forecast_at: block.forecast_at.map(TimeMs),
            reclaim_expected_at: self.expected_reclaim_of(block).map(TimeMs),
            nodes: block
                .nodes
                .iter()
                .map(|n| NodeGpus {
                    node: name(&n.name),
                    gpus: n.gpus,
                })
                .collect(),
            updated_at: TimeMs(block.updated_at),
        }
    }

    /// Rulebook: a block's forecast is pending while its time is now or later.
    fn expected_reclaim_of(&self, block: &Block) -> Option<i64> {
        block.forecast_at.filter(|at| *at >= self.now)
    }

    fn emit_block(&mut self, serial: u64) {
        let view = self.block_view(self.block(serial).expect("known block"));
        self.emit(Event::BlockChanged { block: view });
    }

    // ----- pools, accounts, kill switches ---------------------------------------------------

    fn configure_pool(&mut self, config: &PoolConfig) {
        let levels = if config.tick.0 == 0
            || config.price_min.0 == 0
            || config.price_min > config.price_max
            || !config.price_min.0.is_multiple_of(config.tick.0)
            || !config.price_max.0.is_multiple_of(config.tick.0)
        {
            None
        } else {
            Some((config.price_max.0 - config.price_min.0) / config.tick.0 + 1)
        };
        let valid = levels.is_some_and(|n| n <= PRICE_LEVELS_MAX)
            && !config.gpu.is_empty()
            && !config.region.is_empty()
            && config.id == format!("{}.{}", pool_named_after(config), config.region)
            && config.gpus_per_order_max > 0
            && config.duration_min_s > 0
            && config.duration_min_s <= config.duration_max_s
            && config.auction != AuctionMode::Batch { interval_ms: 0 }
            && offering_settings_agree(config)
            && PROVISION_TIMEOUT_S_RANGE.contains(&config.provision_timeout_s);
        if !valid {
            return self.reject(Rejection::PoolConfigInvalid);
        }
        match self.pool_index(&config.id) {
            Some(index) => {
                let old = &self.pools[index].config;
                let grid_moves = old.tick != config.tick
                    || old.price_min != config.price_min
                    || old.price_max != config.price_max;
                // Rulebook silent on what "not empty" means. The model reads it as: no bid
                // and no block of the pool could ever rest at a price of the old grid again,
                // so pending blocks, blocks whose sold GPUs may come back, and filled
                // persistent bids all count.
                let in_use = self.bids.iter().any(|b| b.pool == config.id)
                    || self
                        .blocks
                        .iter()
                        .any(|b| b.pool == config.id && b.status != BlockStatus::Closed);
                // What the pool sells may not change under its bids and leases either.
                let offering_moves = old.offering != config.offering || old.model != config.model;
                if (grid_moves || offering_moves) && in_use {
                    return self.reject(Rejection::PoolNotEmpty);
                }
                self.pools[index].config = config.clone();
                self.emit(Event::PoolConfigured {
                    pool: name(&config.id),
                });
                self.supply_changed(&config.id);
            }
            None => {
                self.pools.push(Pool {
                    config: config.clone(),
                    halted: false,
                    last_price: None,
                    auction_at: None,
                    emergency_reclaims: 0,
                });
                self.emit(Event::PoolConfigured {
                    pool: name(&config.id),
                });
            }
        }
    }

    fn set_kill_switch(&mut self, target: &KillTarget, engaged: bool) {
        let (kind, id, cancel): (&'static str, &String, Vec<OrderId>) = match target {
            KillTarget::Account(account) => {
                self.killed.retain(|a| a != account);
                if engaged {
                    self.killed.push(account.clone());
                }
                let mut ids: Vec<OrderId> = self
                    .bids
                    .iter()
                    .filter(|b| &b.account == account)
                    .map(|b| b.id)
                    .collect();
                ids.sort();
                ("account", account, ids)
            }
            KillTarget::Pool(pool) => {
                let Some(index) = self.pool_index(pool) else {
                    return self.reject(Rejection::UnknownPool);
                };
                self.pools[index].halted = engaged;
                let mut ids: Vec<OrderId> = self
                    .bids
                    .iter()
                    .filter(|b| &b.pool == pool)
                    .map(|b| b.id)
                    .collect();
                ids.sort();
                ("pool", pool, ids)
            }
        };
        self.emit(Event::KillSwitchChanged {
            kind,
            id: name(id),
            engaged,
        });
        if engaged {
            for order in cancel {
                self.finish_bid(
                    order,
                    OrderStatus::Cancelled,
                    Some(CancelReason::KillSwitch),
                );
            }
        } else if let KillTarget::Pool(pool) = target {
            self.supply_changed(pool);
        }
    }

    // ----- bids -----------------------------------------------------------------------------

    fn open_orders_and_notional(&self, account: &str) -> (u32, u128) {
        self.bids
            .iter()
            .filter(|b| b.account == account && b.on_book())
            .fold((0, 0), |(n, total), b| {
                (n + 1, total + notional(b.price, b.remaining, b.duration_s))
            })
    }

    fn place_bid(&mut self, cmd: &PlaceBid) {
        let Some(pool_index) = self.pool_index(&cmd.pool) else {
            return self.reject(Rejection::UnknownPool);
        };
        if let Some(key) = &cmd.client_order_id {
            let first = self
                .client_order_ids
                .iter()
                .find(|(account, k, _, _)| account == &cmd.account && k == key)
                .map(|(_, _, order, _)| *order);
            if let Some(order_id) = first {
                return self.emit(Event::DuplicateClientOrderId { order_id });
            }
        }
        let pool = self.pools[pool_index].clone();
        if pool.halted || self.is_killed(&cmd.account) {
            return self.reject(Rejection::KillSwitch);
        }
        let config = &pool.config;
        if cmd.gpus == 0 {
            return self.reject(Rejection::GpusMustNotBeZero);
        }
        if cmd.gpus > config.gpus_per_order_max {
            return self.reject(Rejection::GpusOverMax);
        }
        if cmd.min_gpus.is_some_and(|min| min == 0 || min > cmd.gpus) {
            return self.reject(Rejection::MinGpusInvalid);
        }
        if let Err(reason) = pool.check_price(cmd.price.0) {
            return self.reject(reason);
        }
        if cmd.duration_s < config.duration_min_s {
            return self.reject(Rejection::DurationTooShort);
        }
        let max_duration_s = cmd.max_duration_s.unwrap_or(cmd.duration_s);
        if max_duration_s < cmd.duration_s {
            return self.reject(Rejection::MaxDurationBelowDuration);
        }
        if max_duration_s > config.duration_max_s {
            return self.reject(Rejection::DurationTooLong);
        }
        let expiry_ok = match (cmd.tif, cmd.expires_at) {
            (TimeInForce::Gtd, Some(at)) => at.0 > self.now,
            (TimeInForce::Gtd, None) => false,
            (_, expires_at) => expires_at.is_none(),
        };
        if !expiry_ok {
            return self.reject(Rejection::ExpiresAtInvalid);
        }
        let limits = self.limits_of(&cmd.account);
        let (open_orders, open_notional) = self.open_orders_and_notional(&cmd.account);
        if open_orders >= limits.orders_open_max {
            return self.reject(Rejection::LimitOrdersOpen);
        }
        if open_notional + notional(cmd.price.0, cmd.gpus, cmd.duration_s)
            > limits.open_notional_max_micros as u128
        {
            return self.reject(Rejection::LimitNotional);
        }

        let id = OrderId(self.take_id());
        let batch = pool.batch_interval_ms().is_some();
        // DESIGN section 11: machines get the bid's keys, or else the account's default keys
        // as they are now; a model pool's leases carry none.
        let ssh_keys = match pool.config.offering {
            Offering::BareMetal if cmd.ssh_public_keys.is_empty() => {
                Some(self.default_ssh_keys_of(&cmd.account))
            }
            Offering::BareMetal => Some(cmd.ssh_public_keys.clone()),
            Offering::Model => None,
        }
        .filter(|keys| !keys.is_empty());
        if let Some(key) = &cmd.client_order_id {
            self.client_order_ids
                .push((cmd.account.clone(), key.clone(), id, self.now));
            self.schedule(
                self.now + CLIENT_ORDER_ID_TTL_MS,
                Due::ForgetClientOrderId(cmd.account.clone(), key.clone()),
            );
        }
        if let Some(expires_at) = cmd.expires_at {
            self.schedule(expires_at.0, Due::BidExpires(id));
        }
        let priority = self.take_priority();
        self.touch(&cmd.pool, Side::Bid, cmd.price.0);
        self.bids.push(Bid {
            id,
            account: cmd.account.clone(),
            pool: cmd.pool.clone(),
            price: cmd.price.0,
            gpus: cmd.gpus,
            remaining: cmd.gpus,
            min_gpus: cmd.min_gpus.unwrap_or(cmd.gpus),
            duration_s: cmd.duration_s,
            max_duration_s,
            tif: cmd.tif,
            expires_at: cmd.expires_at.map(|t| t.0),
            persistent: cmd.persistent,
            client_order_id: cmd.client_order_id.clone(),
            status: OrderStatus::Open,
            cancel_reason: None,
            created_at: self.now,
            updated_at: self.now,
            priority,
            ssh_keys,
        });
        let view = self.order_view(self.bid(id).expect("just placed"));
        self.emit(Event::BidAccepted { order: view });
        if batch {
            self.arm_auction(&cmd.pool);
        } else {
            self.match_or_cancel_remainder(id);
        }
    }

    /// Continuous pools: matches a bid; whatever of an IOC or FOK bid stays is cancelled.
    fn match_or_cancel_remainder(&mut self, id: OrderId) {
        if self.match_bid(id) {
            return;
        }
        let reason = match self.bid(id).expect("still open").tif {
            TimeInForce::Ioc => CancelReason::IocRemainder,
            TimeInForce::Fok => CancelReason::FokNotFillable,
            TimeInForce::Gtc | TimeInForce::Gtd => return,
        };
        self.finish_bid(id, OrderStatus::Cancelled, Some(reason));
    }

    fn amend_bid(&mut self, cmd: &AmendBid) {
        let Some(bid) = self.bid(cmd.order_id).cloned() else {
            return self.reject(Rejection::UnknownOrder);
        };
        if bid.account != cmd.account {
            return self.reject(Rejection::NotYourOrder);
        }
        if bid.status != OrderStatus::Open {
            return self.reject(Rejection::OrderNotOpen);
        }
        let pool = self.pool(&bid.pool).clone();
        if pool.halted || self.is_killed(&bid.account) {
            return self.reject(Rejection::KillSwitch);
        }
        let new_price = cmd.price.map_or(bid.price, |p| p.0);
        let new_gpus = cmd.gpus.unwrap_or(bid.gpus);
        if new_price == bid.price && new_gpus == bid.gpus {
            return self.reject(Rejection::NothingToChange);
        }
        if let Err(reason) = pool.check_price(new_price) {
            return self.reject(reason);
        }
        if new_gpus == 0 {
            return self.reject(Rejection::GpusMustNotBeZero);
        }
        if new_gpus > pool.config.gpus_per_order_max {
            return self.reject(Rejection::GpusOverMax);
        }
        let filled = bid.gpus - bid.remaining;
        if new_gpus <= filled {
            return self.reject(Rejection::GpusNotAboveFilled);
        }
        let new_remaining = new_gpus - filled;
        let old_notional = notional(bid.price, bid.remaining, bid.duration_s);
        let new_notional = notional(new_price, new_remaining, bid.duration_s);
        let (_, open_notional) = self.open_orders_and_notional(&bid.account);
        if new_notional > old_notional
            && open_notional - old_notional + new_notional
                > self.limits_of(&bid.account).open_notional_max_micros as u128
        {
            return self.reject(Rejection::LimitNotional);
        }
        let keeps_place = new_price == bid.price && new_gpus < bid.gpus;
        let batch = pool.batch_interval_ms().is_some();
        let pool_id = bid.pool.clone();
        let now = self.now;
        if !keeps_place {
            // Off the book, then back on at the back of the (new) level.
            self.change_bid(cmd.order_id, |bid| bid.status = OrderStatus::Cancelled);
        }
        let priority = if keeps_place {
            bid.priority
        } else {
            self.take_priority()
        };
        self.change_bid(cmd.order_id, |bid| {
            bid.status = OrderStatus::Open;
            bid.price = new_price;
            bid.gpus = new_gpus;
            bid.remaining = new_remaining;
            // Rulebook silent: the engine documents min_gpus as "the least GPUs one execution
            // may give"; a smaller bid lowers it to its new size.
            bid.min_gpus = bid.min_gpus.min(new_gpus);
            bid.priority = priority;
            bid.updated_at = now;
        });
        if batch {
            self.emit_order(cmd.order_id);
            self.arm_auction(&pool_id);
        } else if !self.match_bid(cmd.order_id) {
            // Rulebook: "if that does not fill it, OrderChanged" — also after a partial fill,
            // which already emitted one.
            self.emit_order(cmd.order_id);
        }
    }

    fn cancel_bid(&mut self, account: &str, order: OrderId) {
        let Some(bid) = self.bid(order).cloned() else {
            return self.reject(Rejection::UnknownOrder);
        };
        if bid.account != account {
            return self.reject(Rejection::NotYourOrder);
        }
        if bid.status.is_terminal() {
            return self.reject(Rejection::OrderNotOpen);
        }
        self.finish_bid(order, OrderStatus::Cancelled, Some(CancelReason::ByOwner));
    }

    /// Ends an Open (or persistent Filled) bid: off the book, `OrderChanged`, forgotten
    /// unless it is a filled persistent bid with leases running.
    fn finish_bid(&mut self, id: OrderId, status: OrderStatus, reason: Option<CancelReason>) {
        let now = self.now;
        self.change_bid(id, |bid| {
            bid.status = status;
            bid.cancel_reason = reason;
            bid.updated_at = now;
        });
        self.emit_order(id);
        self.forget_bid_if_done(id);
    }

    fn forget_bid_if_done(&mut self, id: OrderId) {
        let bid = self.bid(id).expect("live bid");
        let done = match bid.status {
            OrderStatus::Open => false,
            OrderStatus::Filled => !bid.persistent || self.running_leases_of_bid(id) == 0,
            OrderStatus::Cancelled | OrderStatus::Expired => true,
        };
        if done {
            self.bids.retain(|b| b.id != id);
        }
    }

    /// The GPUs a bid can take now: walks the asks in priority order up to its price,
    /// skipping blocks that close before `now + duration_s`.
    fn fills_for(&self, id: OrderId) -> Vec<(u64, u32)> {
        let bid = self.bid(id).expect("live bid");
        let shortest_until = plus_s(self.now, bid.duration_s as u64);
        let mut want = bid.remaining;
        let mut fills = Vec::new();
        for serial in self.asks_in_priority(&bid.pool) {
            let block = self.block(serial).expect("resting block");
            if want == 0 || block.reserve_price > bid.price {
                break;
            }
            if block.available_until >= shortest_until {
                let take = block.unsold.min(want);
                fills.push((serial, take));
                want -= take;
            }
        }
        fills
    }

    /// The least GPUs one execution must give the bid.
    fn minimum_of(bid: &Bid) -> u32 {
        match bid.tif {
            TimeInForce::Fok => bid.remaining,
            _ => bid.min_gpus.min(bid.remaining),
        }
    }

    /// Whether a continuous-pool bid could execute right now.
    fn could_fill(&self, id: OrderId) -> bool {
        let bid = self.bid(id).expect("live bid");
        let got: u32 = self.fills_for(id).iter().map(|(_, g)| g).sum();
        got > 0 && got >= Model::minimum_of(bid)
    }

    /// Matches one Open bid of a continuous pool. Returns whether it is now filled.
    fn match_bid(&mut self, id: OrderId) -> bool {
        let bid = self.bid(id).expect("live bid");
        if self.pool(&bid.pool).halted || !self.could_fill(id) {
            return false;
        }
        let fills = self.fills_for(id);
        self.execute(id, &fills, None);
        self.bid(id)
            .is_none_or(|bid| bid.status != OrderStatus::Open)
    }

    /// Executes a bid against blocks: a trade and a lease per block, in order; then each
    /// block's `BlockChanged`, then the bid's `OrderChanged`.
    fn execute(&mut self, id: OrderId, fills: &[(u64, u32)], uniform_price: Option<u64>) {
        let now = self.now;
        let total: u32 = fills.iter().map(|(_, gpus)| gpus).sum();
        let mut used: Vec<u64> = Vec::new();
        for &(serial, gpus) in fills {
            let bid = self.bid(id).expect("live bid").clone();
            let block = self.block(serial).expect("resting block").clone();
            let bid_rested_first = bid.priority < block.priority;
            let maker_side = if bid_rested_first {
                Side::Bid
            } else {
                Side::Ask
            };
            let price = match uniform_price {
                Some(price) => price,
                None if bid_rested_first => bid.price,
                None => block.reserve_price,
            };
            let ends_at = plus_s(now, bid.max_duration_s as u64).min(block.available_until);
            let trade_id = TradeId(self.take_id());
            let lease_id = LeaseId(self.take_id());
            let mut nodes = Vec::new();
            self.change_block(serial, |block| {
                block.unsold -= gpus;
                block.updated_at = now;
                // First node first, from the GPUs no lease holds.
                let mut left = gpus;
                for (index, node) in block.nodes.iter_mut().enumerate() {
                    let take = node.free.min(left);
                    if take > 0 {
                        node.free -= take;
                        left -= take;
                        nodes.push((index, take));
                    }
                }
            });
            let pool = self.pool_index(&bid.pool).expect("known pool");
            self.pools[pool].last_price = Some(price);
            let handoff = self.pools[pool].config.handoff;
            let provision_timeout_s = self.pools[pool].config.provision_timeout_s;
            let lease = Lease {
                id: lease_id,
                order_id: id,
                buyer: bid.account.clone(),
                supplier: block.supplier.clone(),
                pool: bid.pool.clone(),
                block_serial: serial,
                block_id: block.block_id.clone(),
                gpus,
                price,
                status: LeaseStatus::Active,
                started_at: now,
                ends_at,
                notice_ends_at: None,
                preempted_at: None,
                emergency: false,
                notice_s: self.pools[pool].config.notice_s,
                nodes,
                // DESIGN section 11: with `handoff: none` a lease is ready, and billed, from
                // the moment it opens.
                handoff: match handoff {
                    Handoff::Required => Handover::provisioning(),
                    Handoff::None => Handover {
                        status: AccessStatus::Ready,
                        ready_at: Some(now),
                        ..Handover::provisioning()
                    },
                },
                ssh_keys: bid.ssh_keys.clone(),
            };
            self.schedule(ends_at, Due::LeaseEnds(lease_id));
            // Rulebook silent on a timeout at or after the lease's end: it would never matter
            // (the lease is over by then), and the engine schedules none.
            let timeout_at = plus_s(now, provision_timeout_s as u64);
            if handoff == Handoff::Required && timeout_at < ends_at {
                self.schedule(timeout_at, Due::ProvisionTimeout(lease_id));
            }
            self.emit(Event::Traded {
                trade: TradeView {
                    id: trade_id,
                    pool: name(&bid.pool),
                    price: PriceMicros(price),
                    gpus,
                    order_id: id,
                    lease_id,
                    buyer: name(&bid.account),
                    supplier: name(&block.supplier),
                    block_id: name(&block.block_id),
                    maker_side,
                    at: TimeMs(now),
                },
            });
            let view = self.lease_view(&lease, None);
            self.leases.push(lease);
            self.emit(Event::LeaseOpened {
                lease: Box::new(view),
            });
            // Rulebook: a lease opened on a block under a pending forecast is warned at once.
            let block_now = self.block(serial).expect("resting block").clone();
            if let Some(reclaim_at) = self.expected_reclaim_of(&block_now) {
                self.emit(Event::ReclaimForecast {
                    lease_id,
                    buyer: name(&bid.account),
                    reclaim_at: TimeMs(reclaim_at),
                });
            }
            if !used.contains(&serial) {
                used.push(serial);
            }
        }
        for serial in used {
            self.emit_block(serial);
        }
        let filled = total == self.bid(id).expect("live bid").remaining;
        self.change_bid(id, |bid| {
            bid.remaining -= total;
            bid.updated_at = now;
            if filled {
                bid.status = OrderStatus::Filled;
            }
        });
        self.emit_order(id);
        if filled {
            self.forget_bid_if_done(id);
        }
    }

    /// Supply changed: a batch pool arms its auction; a continuous pool looks at every
    /// resting bid again in priority order (those that cannot fill do nothing).
    fn supply_changed(&mut self, pool: &str) {
        let index = self.pool_index(pool).expect("known pool");
        if self.pools[index].batch_interval_ms().is_some() {
            return self.arm_auction(pool);
        }
        if self.pools[index].halted {
            return;
        }
        for id in self.bids_in_priority(pool) {
            if self.bid(id).is_some_and(|bid| bid.on_book()) {
                self.match_bid(id);
            }
        }
    }

    // ----- capacity blocks ------------------------------------------------------------------

    fn release_capacity(&mut self, cmd: &ReleaseCapacity) {
        let Some(pool_index) = self.pool_index(&cmd.pool) else {
            return self.reject(Rejection::UnknownPool);
        };
        let pool = self.pools[pool_index].clone();
        if pool.halted || self.is_killed(&cmd.supplier) {
            return self.reject(Rejection::KillSwitch);
        }
        if self.owned_block(&cmd.supplier, &cmd.block_id).is_some() {
            return self.reject(Rejection::BlockIdTaken);
        }
        if cmd.gpus == 0 {
            return self.reject(Rejection::GpusMustNotBeZero);
        }
        if cmd.gpus > pool.config.gpus_per_order_max {
            return self.reject(Rejection::GpusOverMax);
        }
        if let Err(reason) = pool.check_price(cmd.reserve_price.0) {
            return self.reject(reason);
        }
        let available_from = cmd.available_from.map_or(self.now, |t| t.0).max(self.now);
        if cmd.available_until.0 < plus_s(available_from, pool.config.duration_min_s as u64) {
            return self.reject(Rejection::WindowInvalid);
        }
        // Rulebook: nodes must add up to `gpus`. Silent on the rest; the engine's
        // `nodes_do_not_match_gpus` also covers an empty node, more than NODES_PER_BLOCK_MAX,
        // and a node listed twice (a lease's GPUs go back to their node by name).
        let mut names: Vec<&str> = cmd.nodes.iter().map(|n| &*n.node).collect();
        names.sort_unstable();
        names.dedup();
        if !cmd.nodes.is_empty()
            && (cmd.nodes.len() > NODES_PER_BLOCK_MAX
                || names.len() != cmd.nodes.len()
                || cmd.nodes.iter().any(|n| n.gpus == 0)
                || cmd.nodes.iter().map(|n| n.gpus as u64).sum::<u64>() != cmd.gpus as u64)
        {
            return self.reject(Rejection::NodesDoNotMatchGpus);
        }
        let serial = self.take_id();
        let open_now = available_from <= self.now;
        self.blocks.push(Block {
            serial,
            supplier: cmd.supplier.clone(),
            block_id: cmd.block_id.clone(),
            pool: cmd.pool.clone(),
            status: BlockStatus::Pending,
            gpus: cmd.gpus,
            unsold: cmd.gpus,
            reclaimed: 0,
            failed: 0,
            reclaiming: 0,
            reserve_price: cmd.reserve_price.0,
            available_from,
            available_until: cmd.available_until.0,
            revenue: 0,
            forecast_at: None,
            nodes: cmd
                .nodes
                .iter()
                .map(|n| Node {
                    name: n.node.to_string(),
                    gpus: n.gpus,
                    free: n.gpus,
                })
                .collect(),
            priority: 0,
            updated_at: self.now,
        });
        self.schedule(cmd.available_until.0, Due::BlockCloses(serial));
        if open_now {
            self.change_block(serial, |block| block.status = BlockStatus::Open);
        } else {
            self.schedule(available_from, Due::BlockOpens(serial));
        }
        self.emit_block(serial);
        if open_now {
            self.supply_changed(&cmd.pool);
        }
    }

    fn update_capacity(&mut self, cmd: &UpdateCapacity) {
        let Some(serial) = self.owned_block(&cmd.supplier, &cmd.block_id) else {
            return self.reject(Rejection::UnknownBlock);
        };
        let block = self.block(serial).expect("owned").clone();
        if block.status == BlockStatus::Closed {
            return self.reject(Rejection::BlockClosed);
        }
        // Rulebook: `nothing_to_change`. Like an amend, an update that names only the
        // current values changes nothing.
        let repriced = cmd
            .reserve_price
            .is_some_and(|p| p.0 != block.reserve_price);
        let extended = cmd
            .available_until
            .is_some_and(|t| t.0 > block.available_until);
        let shrinks = cmd
            .available_until
            .is_some_and(|t| t.0 < block.available_until);
        if !repriced && !extended && !shrinks {
            return self.reject(Rejection::NothingToChange);
        }
        if let Some(price) = cmd.reserve_price {
            if let Err(reason) = self.pool(&block.pool).check_price(price.0) {
                return self.reject(reason);
            }
        }
        if shrinks {
            return self.reject(Rejection::WindowCannotShrink);
        }
        let pool = block.pool.clone();
        let now = self.now;
        self.change_block(serial, |block| {
            if let Some(price) = cmd.reserve_price {
                block.reserve_price = price.0;
            }
            if let Some(until) = cmd.available_until {
                block.available_until = until.0;
            }
            block.updated_at = now;
        });
        if extended {
            self.schedule(
                cmd.available_until.expect("extended").0,
                Due::BlockCloses(serial),
            );
        }
        self.emit_block(serial);
        if self.block(serial).expect("owned").status == BlockStatus::Open {
            self.supply_changed(&pool);
        }
    }

    fn reclaim_capacity(&mut self, cmd: &ReclaimCapacity) {
        let Some(serial) = self.owned_block(&cmd.supplier, &cmd.block_id) else {
            return self.reject(Rejection::UnknownBlock);
        };
        if cmd.gpus == 0 {
            return self.reject(Rejection::GpusMustNotBeZero);
        }
        let block = self.block(serial).expect("owned").clone();
        let pool_notice_s = self.pool(&block.pool).config.notice_s;
        // Rulebook: `notice_too_short` (below the pool's notice without `emergency`) comes
        // before `reclaim_over_block`.
        if cmd.notice_s.is_some_and(|n| n < pool_notice_s) && !cmd.emergency {
            return self.reject(Rejection::NoticeTooShort);
        }
        let mut active: Vec<Lease> = self
            .leases
            .iter()
            .filter(|l| l.block_serial == serial && l.status == LeaseStatus::Active)
            .cloned()
            .collect();
        let active_gpus: u32 = active.iter().map(|l| l.gpus).sum();
        if cmd.gpus > block.unsold + active_gpus {
            return self.reject(Rejection::ReclaimOverBlock);
        }
        let now = self.now;
        let from_book = cmd.gpus.min(block.unsold);
        let still_needed = cmd.gpus - from_book;
        // Whole active leases: lowest price first, then newest start, then highest id.
        active.sort_by_key(|l| {
            (
                l.price,
                std::cmp::Reverse(l.started_at),
                std::cmp::Reverse(l.id),
            )
        });
        let mut covered = 0;
        let mut hit: Vec<Lease> = Vec::new();
        for lease in active {
            if covered >= still_needed {
                break;
            }
            covered += lease.gpus;
            hit.push(lease);
        }
        // Rulebook: each lease is owed the larger of the pool's notice now and its own promise;
        // an explicit notice below what the pool or a hit lease is owed is an emergency.
        let owed = |lease: &Lease| pool_notice_s.max(lease.notice_s);
        let emergency = match cmd.notice_s {
            None => false,
            Some(n) => n < pool_notice_s || hit.iter().any(|l| n < owed(l)),
        };
        if emergency && !cmd.emergency {
            return self.reject(Rejection::NoticeTooShort);
        }
        self.change_block(serial, |block| {
            block.unsold -= from_book;
            block.reclaimed += from_book;
            take_free_node_gpus(&mut block.nodes, from_book);
            block.reclaiming += still_needed;
            block.updated_at = now;
        });
        let mut last_end = plus_s(now, cmd.notice_s.unwrap_or(pool_notice_s) as u64);
        let mut preempted = Vec::new();
        for lease in &hit {
            let notice_s = cmd.notice_s.unwrap_or(owed(lease));
            let notice_ends_at = plus_s(now, notice_s as u64);
            last_end = last_end.max(notice_ends_at);
            preempted.push((lease.id, notice_ends_at));
            let running = self
                .leases
                .iter_mut()
                .find(|l| l.id == lease.id)
                .expect("running");
            running.status = LeaseStatus::Preempting;
            running.notice_ends_at = Some(notice_ends_at);
            running.preempted_at = Some(now);
            running.emergency = notice_s < owed(lease);
        }
        if emergency {
            let index = self.pool_index(&block.pool).expect("known pool");
            self.pools[index].emergency_reclaims += 1;
        }
        self.emit(Event::ReclaimAccepted {
            pool: name(&block.pool),
            supplier: name(&cmd.supplier),
            block_id: name(&cmd.block_id),
            gpus: cmd.gpus,
            gpus_from_book: from_book,
            leases_preempted: preempted.len() as u32,
            notice_ends_at: TimeMs(last_end),
            emergency,
        });
        for (id, notice_ends_at) in preempted {
            self.schedule(notice_ends_at, Due::NoticeEnds(id));
            let view = self.lease_view(self.lease(id).expect("running"), None);
            self.emit(Event::LeaseChanged {
                lease: Box::new(view),
            });
        }
        self.emit_block(serial);
    }

    fn forecast_reclaim(&mut self, supplier: &str, block_id: &str, reclaim_at: i64) {
        let Some(serial) = self.owned_block(supplier, block_id) else {
            return self.reject(Rejection::UnknownBlock);
        };
        if reclaim_at < self.now {
            return self.reject(Rejection::ReclaimAtInPast);
        }
        let now = self.now;
        let block = self.block_mut(serial);
        block.forecast_at = Some(reclaim_at);
        block.updated_at = now;
        let mut warned: Vec<(LeaseId, String)> = self
            .leases
            .iter()
            .filter(|l| l.block_serial == serial && l.status == LeaseStatus::Active)
            .map(|l| (l.id, l.buyer.clone()))
            .collect();
        warned.sort();
        for (lease_id, buyer) in warned {
            self.emit(Event::ReclaimForecast {
                lease_id,
                buyer: name(&buyer),
                reclaim_at: TimeMs(reclaim_at),
            });
        }
        self.emit_block(serial);
    }

    fn forget_block_if_done(&mut self, serial: u64) {
        let block = self.block(serial).expect("known block");
        if block.status == BlockStatus::Closed
            && !self.leases.iter().any(|l| l.block_serial == serial)
        {
            self.blocks.retain(|b| b.serial != serial);
        }
    }

    // ----- leases ---------------------------------------------------------------------------

    fn release_lease(&mut self, account: &str, id: LeaseId) {
        let Some(lease) = self.lease(id).cloned() else {
            return self.reject(Rejection::UnknownLease);
        };
        if lease.buyer != account {
            return self.reject(Rejection::NotYourLease);
        }
        self.end_lease(id, LeaseStatus::Released);
    }

    fn end_lease(&mut self, id: LeaseId, status: LeaseStatus) {
        let now = self.now;
        let position = self
            .leases
            .iter()
            .position(|l| l.id == id)
            .expect("running");
        let mut lease = self.leases.remove(position);
        let was_preempting = lease.status == LeaseStatus::Preempting;
        lease.status = status;
        let failed = status == LeaseStatus::Failed;
        if failed {
            lease.handoff.status = AccessStatus::Failed;
        }
        let free_within_s = self.pool(&lease.pool).config.free_if_preempted_within_s;
        // DESIGN section 11: billed from `ready_at` (never ready: nothing), and the free first
        // hour counts from `ready_at` too. Rulebook silent on notice given before the lease was
        // ready: the notice came within the free window of ready (before it), so it is free.
        let owed = match lease.handoff.ready_at {
            None => 0,
            Some(ready_at)
                if status == LeaseStatus::Preempted
                    && lease
                        .preempted_at
                        .is_some_and(|at| at - ready_at < free_within_s as i64 * 1000) =>
            {
                0
            }
            Some(ready_at) => cost(lease.price, lease.gpus, whole_seconds(ready_at, now)),
        };
        let block = self
            .block(lease.block_serial)
            .expect("a lease's block")
            .clone();
        let to_supplier = if was_preempting {
            lease.gpus.min(block.reclaiming)
        } else {
            0
        };
        // A failed lease's GPUs leave the block with it: none come back to the book.
        let back = if failed { 0 } else { lease.gpus - to_supplier };
        let block_open = block.status == BlockStatus::Open;
        let view = self.lease_view(&lease, Some((now, owed)));
        self.change_block(lease.block_serial, |block| {
            block.revenue += owed;
            block.updated_at = now;
            block.reclaiming -= to_supplier;
            if failed {
                // DESIGN section 11: suspect until the supplier releases them again, so they
                // count as reclaimed (and failed), and leave their nodes.
                block.reclaimed += lease.gpus;
                block.failed += lease.gpus;
                for &(index, gpus) in &lease.nodes {
                    block.nodes[index].gpus -= gpus;
                }
            } else {
                block.reclaimed += to_supplier;
                for &(index, gpus) in &lease.nodes {
                    block.nodes[index].free += gpus;
                }
                take_free_node_gpus(&mut block.nodes, to_supplier);
            }
            block.unsold += back;
        });
        self.emit(Event::LeaseChanged {
            lease: Box::new(view),
        });
        self.emit_block(lease.block_serial);
        self.forget_block_if_done(lease.block_serial);

        let lost = matches!(status, LeaseStatus::Preempted | LeaseStatus::Failed);
        if let Some(bid) = self.bid(lease.order_id).cloned() {
            if lost && bid.persistent {
                if bid.tif == TimeInForce::Gtd && bid.expires_at.is_some_and(|at| at <= now) {
                    // A GTD bid past its date does not bid again: it expires.
                    self.finish_bid(bid.id, OrderStatus::Expired, None);
                } else {
                    self.reopen(bid.id, lease.gpus);
                }
            } else {
                self.forget_bid_if_done(bid.id);
            }
        }
        if back > 0 && block_open {
            self.supply_changed(&lease.pool);
        }
    }

    // ----- the handoff (DESIGN section 11) --------------------------------------------------

    /// The running lease `id`, when it is on `supplier`'s block `block_id` (rulebook: an
    /// empty `block_id` names any of the supplier's blocks; a capacity signal may leave it
    /// out).
    fn supplied_lease(&self, supplier: &str, block_id: &str, id: LeaseId) -> Option<Lease> {
        self.lease(id)
            .filter(|l| l.supplier == supplier && (block_id.is_empty() || l.block_id == block_id))
            .cloned()
    }

    fn lease_ready(&mut self, ready: &LeaseReady) {
        let Some(lease) = self.supplied_lease(&ready.supplier, &ready.block_id, ready.lease_id)
        else {
            return self.reject(Rejection::UnknownLease);
        };
        if lease.handoff.status == AccessStatus::Ready {
            // Exactly once, like every signal: a repeat changes nothing and says nothing.
            return;
        }
        // Rulebook silent on a pool whose offering changed since the lease opened: the
        // pool's offering now decides.
        let fits = match self.pool(&lease.pool).config.offering {
            Offering::BareMetal => {
                let held = self.lease_nodes(&lease, self.block(lease.block_serial));
                ready.endpoint.is_none()
                    && !ready.endpoints.is_empty()
                    && ready.endpoints.iter().all(|endpoint| match &endpoint.node {
                        None => true,
                        Some(node) => held.iter().any(|h| h.node == *node),
                    })
            }
            Offering::Model => ready.endpoint.is_some() && ready.endpoints.is_empty(),
        };
        if !fits {
            return self.reject(Rejection::EndpointsInvalid);
        }
        let now = self.now;
        let lease = self.lease_mut(ready.lease_id);
        lease.handoff.status = AccessStatus::Ready;
        lease.handoff.ready_at = Some(now);
        lease.handoff.endpoints = ready.endpoints.clone();
        lease.handoff.endpoint = ready.endpoint.clone();
        let view = self.lease_view(self.lease(ready.lease_id).expect("running"), None);
        self.emit(Event::LeaseChanged {
            lease: Box::new(view),
        });
    }

    fn lease_failed(&mut self, supplier: &str, block_id: &str, id: LeaseId, reason: &str) {
        let Some(lease) = self.supplied_lease(supplier, block_id, id) else {
            return self.reject(Rejection::UnknownLease);
        };
        if lease.handoff.status != AccessStatus::Provisioning {
            return self.reject(Rejection::LeaseNotProvisioning);
        }
        self.lease_mut(id).handoff.failure = Some(reason.to_owned());
        self.end_lease(id, LeaseStatus::Failed);
    }

    /// A persistent bid asks again for the GPUs a preemption (or a failure) took: it re-rests with a fresh
    /// priority and is matched (continuous) or waits for the auction (batch).
    fn reopen(&mut self, id: OrderId, gpus: u32) {
        let now = self.now;
        let bid = self.bid(id).expect("live bid").clone();
        if bid.on_book() {
            self.change_bid(id, |bid| bid.status = OrderStatus::Cancelled);
        }
        let priority = self.take_priority();
        self.change_bid(id, |bid| {
            bid.status = OrderStatus::Open;
            bid.remaining += gpus;
            bid.priority = priority;
            bid.updated_at = now;
        });
        self.emit_order(id);
        if self.pool(&bid.pool).batch_interval_ms().is_some() {
            self.arm_auction(&bid.pool);
        } else {
            self.match_or_cancel_remainder(id);
        }
    }

    // ----- batch auctions -------------------------------------------------------------------

    fn arm_auction(&mut self, pool: &str) {
        let index = self.pool_index(pool).expect("known pool");
        let Some(interval) = self.pools[index].batch_interval_ms() else {
            return;
        };
        if self.pools[index].auction_at.is_some() {
            return;
        }
        let at = (self.now.div_euclid(interval) + 1) * interval;
        self.pools[index].auction_at = Some(at);
        self.schedule(at, Due::Auction(pool.to_owned()));
    }

    /// The greedy allocation at one price: bids at or above it in priority order, each taking
    /// eligible asks at or below it in priority order, at least its minimum or nothing.
    /// Executes it when `execute`. Returns the GPUs allocated.
    fn allocate(&mut self, pool: &str, price: u64, execute: bool) -> u64 {
        let mut asks: Vec<(u64, u32, i64)> = self
            .asks_in_priority(pool)
            .into_iter()
            .map(|serial| self.block(serial).expect("resting"))
            .filter(|block| block.reserve_price <= price)
            .map(|block| (block.serial, block.unsold, block.available_until))
            .collect();
        let bids: Vec<OrderId> = self
            .bids_in_priority(pool)
            .into_iter()
            .filter(|id| self.bid(*id).expect("resting").price >= price)
            .collect();
        let mut volume = 0;
        for id in bids {
            let bid = self.bid(id).expect("resting").clone();
            let shortest_until = plus_s(self.now, bid.duration_s as u64);
            let mut want = bid.remaining;
            let mut fills: Vec<(usize, u32)> = Vec::new();
            for (index, &(_, available, until)) in asks.iter().enumerate() {
                if want == 0 {
                    break;
                }
                if available > 0 && until >= shortest_until {
                    let take = available.min(want);
                    fills.push((index, take));
                    want -= take;
                }
            }
            let got = bid.remaining - want;
            if got == 0 || got < Model::minimum_of(&bid) {
                continue;
            }
            for &(index, take) in &fills {
                asks[index].1 -= take;
            }
            volume += got as u64;
            if execute {
                let block_fills: Vec<(u64, u32)> = fills
                    .iter()
                    .map(|&(index, take)| (asks[index].0, take))
                    .collect();
                self.execute(id, &block_fills, Some(price));
            }
        }
        volume
    }

    fn uncross(&mut self, pool: &str) {
        let index = self.pool_index(pool).expect("known pool");
        if self.pools[index].halted {
            return;
        }
        let bids = self.bids_in_priority(pool);
        let asks = self.asks_in_priority(pool);
        let best_bid = bids.first().map(|id| self.bid(*id).expect("resting").price);
        let best_ask = asks
            .first()
            .map(|serial| self.block(*serial).expect("resting").reserve_price);
        if let (Some(best_bid), Some(best_ask)) = (best_bid, best_ask) {
            if best_bid >= best_ask {
                let mut candidates: Vec<u64> = bids
                    .iter()
                    .map(|id| self.bid(*id).expect("resting").price)
                    .chain(
                        asks.iter()
                            .map(|s| self.block(*s).expect("resting").reserve_price),
                    )
                    .filter(|p| (best_ask..=best_bid).contains(p))
                    .collect();
                candidates.sort_unstable();
                candidates.dedup();
                candidates.truncate(AUCTION_CANDIDATE_PRICES_MAX);
                let last = self.pools[index].last_price;
                // Most GPUs, then the smallest imbalance, then closest to the last trade, then
                // the lowest price.
                let mut best: Option<(u64, u64, u64, u64)> = None;
                for price in candidates {
                    let volume = self.allocate(pool, price, false);
                    if volume == 0 {
                        continue;
                    }
                    let demand: u64 = bids
                        .iter()
                        .map(|id| self.bid(*id).expect("resting"))
                        .filter(|b| b.price >= price)
                        .map(|b| b.remaining as u64)
                        .sum();
                    let supply: u64 = asks
                        .iter()
                        .map(|s| self.block(*s).expect("resting"))
                        .filter(|b| b.reserve_price <= price)
                        .map(|b| b.unsold as u64)
                        .sum();
                    let imbalance = demand.abs_diff(supply);
                    let distance = last.map_or(0, |l| l.abs_diff(price));
                    let better = match best {
                        None => true,
                        Some((v, i, d, p)) => (
                            volume,
                            std::cmp::Reverse(imbalance),
                            std::cmp::Reverse(distance),
                        )
                            .cmp(&(v, std::cmp::Reverse(i), std::cmp::Reverse(d)))
                            .then(p.cmp(&price))
                            .is_gt(),
                    };
                    if better {
                        best = Some((volume, imbalance, distance, price));
                    }
                }
                if let Some((_, _, _, price)) = best {
                    let volume = self.allocate(pool, price, true);
                    self.emit(Event::AuctionCleared {
                        pool: name(pool),
                        price: PriceMicros(price),
                        gpus: volume,
                    });
                }
            }
        }
        // IOC and FOK bids live for one uncross only.
        let mut leftovers: Vec<(OrderId, TimeInForce)> = self
            .bids
            .iter()
            .filter(|b| {
                b.pool == pool
                    && b.on_book()
                    && matches!(b.tif, TimeInForce::Ioc | TimeInForce::Fok)
            })
            .map(|b| (b.id, b.tif))
            .collect();
        leftovers.sort_by_key(|(id, _)| *id);
        for (id, tif) in leftovers {
            let reason = if tif == TimeInForce::Fok {
                CancelReason::FokNotFillable
            } else {
                CancelReason::IocRemainder
            };
            self.finish_bid(id, OrderStatus::Cancelled, Some(reason));
        }
    }

    // ----- queries (what the engine's query methods must return) ----------------------------

    /// Every pool's summary, in configuration order.
    pub fn pools(&self) -> Vec<PoolSummary> {
        self.pools
            .iter()
            .map(|pool| {
                let id = &pool.config.id;
                let depth = self.depth(id, usize::MAX).expect("known pool");
                let leases = self.leases.iter().filter(|l| &l.pool == id);
                PoolSummary {
                    config: pool.config.clone(),
                    best_bid: depth.bids.first().map(|l| l.price),
                    best_ask: depth.asks.first().map(|l| l.price),
                    last_price: pool.last_price.map(PriceMicros),
                    idle_gpus: depth.asks.iter().map(|l| l.gpus).sum(),
                    leased_gpus: leases.clone().map(|l| l.gpus as u64).sum(),
                    reclaiming_gpus: leases
                        .filter(|l| l.status == LeaseStatus::Preempting)
                        .map(|l| l.gpus as u64)
                        .sum(),
                    halted: pool.halted,
                    emergency_reclaims: pool.emergency_reclaims,
                }
            })
            .collect()
    }

    /// Aggregated levels of both sides, best first, at most `levels` each.
    pub fn depth(&self, pool: &str, levels: usize) -> Option<Depth> {
        self.pool_index(pool)?;
        let mut bid_prices: Vec<u64> = self
            .bids
            .iter()
            .filter(|b| b.pool == pool && b.on_book())
            .map(|b| b.price)
            .collect();
        bid_prices.sort_unstable_by(|a, b| b.cmp(a));
        bid_prices.dedup();
        let mut ask_prices: Vec<u64> = self
            .blocks
            .iter()
            .filter(|b| b.pool == pool && b.on_book())
            .map(|b| b.reserve_price)
            .collect();
        ask_prices.sort_unstable();
        ask_prices.dedup();
        let to_levels = |side: Side, prices: Vec<u64>| -> Vec<Level> {
            prices
                .into_iter()
                .take(levels)
                .map(|price| {
                    let (gpus, orders) = self.level(pool, side, price);
                    Level {
                        price: PriceMicros(price),
                        gpus,
                        orders,
                    }
                })
                .collect()
        };
        Some(Depth {
            bids: to_levels(Side::Bid, bid_prices),
            asks: to_levels(Side::Ask, ask_prices),
        })
    }

    /// What a bid for `gpus` (at least `min_gpus` at once) lasting `duration_s` would lease
    /// now. Rulebook: the quote is a bid at the top of the pool's band placed now; the model
    /// places it in a copy of itself and reads what matching (continuous) or the uncross
    /// (batch, run now) gives it.
    pub fn quote(&self, pool: &str, gpus: u32, min_gpus: u32, duration_s: u32) -> Option<Quote> {
        let index = self.pool_index(pool)?;
        let config = self.pools[index].config.clone();
        let mut quote = Quote {
            clears_at: self.pools[index].batch_interval_ms().map(|interval| {
                TimeMs(
                    self.pools[index]
                        .auction_at
                        .unwrap_or((self.now.div_euclid(interval) + 1) * interval),
                )
            }),
            ..Quote::default()
        };
        if self.pools[index].halted || gpus == 0 {
            return Some(quote);
        }
        // A copy of this pool's market only: nothing else can take part in its matching.
        let mut copy = Model {
            now: self.now,
            next_id: self.next_id,
            next_priority: self.next_priority,
            pools: self.pools.clone(),
            bids: self
                .bids
                .iter()
                .filter(|b| b.pool == pool)
                .cloned()
                .collect(),
            blocks: self
                .blocks
                .iter()
                .filter(|b| b.pool == pool)
                .cloned()
                .collect(),
            ..Model::new()
        };
        let id = OrderId(u64::MAX);
        let priority = copy.take_priority();
        copy.bids.push(Bid {
            id,
            account: "quote".to_owned(),
            pool: pool.to_owned(),
            price: config.price_max.0,
            gpus,
            remaining: gpus,
            min_gpus: min_gpus.clamp(1, gpus),
            duration_s,
            max_duration_s: duration_s,
            tif: TimeInForce::Gtc,
            expires_at: None,
            persistent: false,
            client_order_id: None,
            status: OrderStatus::Open,
            cancel_reason: None,
            created_at: self.now,
            updated_at: self.now,
            priority,
            ssh_keys: None,
        });
        if copy.pools[index].batch_interval_ms().is_some() {
            copy.uncross(pool);
        } else {
            copy.match_bid(id);
        }
        let mut paid: u128 = 0;
        for event in &copy.out {
            let Event::Traded { trade } = event else {
                continue;
            };
            if trade.order_id != id {
                continue;
            }
            quote.fillable_gpus += trade.gpus;
            quote.worst_price = quote.worst_price.max(Some(trade.price));
            paid += trade.price.0 as u128 * trade.gpus as u128;
            // Rulebook silent: the cost is each lease's cost for the duration, added up.
            quote.total_cost_micros += cost(trade.price.0, trade.gpus, duration_s as u64);
            let block = self
                .blocks
                .iter()
                .find(|b| b.supplier == *trade.supplier && b.block_id == *trade.block_id)
                .expect("a traded block is known");
            if let Some(at) = self.expected_reclaim_of(block) {
                quote.reclaim_expected_at = Some(
                    quote
                        .reclaim_expected_at
                        .map_or(TimeMs(at), |q| q.min(TimeMs(at))),
                );
            }
        }
        if quote.fillable_gpus > 0 {
            quote.average_price = Some(PriceMicros((paid / quote.fillable_gpus as u128) as u64));
        }
        Some(quote)
    }

    /// A live bid.
    pub fn order(&self, id: OrderId) -> Option<OrderView> {
        self.bid(id).map(|bid| self.order_view(bid))
    }

    /// An account's live bids, by id.
    pub fn orders_of(&self, account: &str) -> Vec<OrderView> {
        let mut bids: Vec<&Bid> = self.bids.iter().filter(|b| b.account == account).collect();
        bids.sort_by_key(|b| b.id);
        bids.into_iter().map(|b| self.order_view(b)).collect()
    }

    /// An account's running leases, by id.
    pub fn leases_of(&self, account: &str) -> Vec<LeaseView> {
        let mut leases: Vec<&Lease> = self.leases.iter().filter(|l| l.buyer == account).collect();
        leases.sort_by_key(|l| l.id);
        leases
            .into_iter()
            .map(|l| self.lease_view(l, None))
            .collect()
    }

    /// A supplier's known blocks, in release order.
    pub fn blocks_of(&self, supplier: &str) -> Vec<BlockView> {
        let mut blocks: Vec<&Block> = self
            .blocks
            .iter()
            .filter(|b| b.supplier == supplier)
            .collect();
        blocks.sort_by_key(|b| b.serial);
        blocks.into_iter().map(|b| self.block_view(b)).collect()
    }

    /// An account's limits.
    pub fn account_limits(&self, account: &str) -> AccountLimits {
        self.limits_of(account)
    }

    /// When the next timer is due (stale timers included: they fire and do nothing).
    pub fn next_timer_at(&self) -> Option<TimeMs> {
        self.timers.iter().map(|t| TimeMs(t.due)).min()
    }

    /// Open bids of continuous, running pools that could execute right now: the book is
    /// crossed for them. Must always be empty.
    pub fn fillable_resting_bids(&self) -> Vec<OrderId> {
        self.bids
            .iter()
            .filter(|bid| bid.on_book())
            .filter(|bid| {
                let pool = self.pool(&bid.pool);
                pool.batch_interval_ms().is_none() && !pool.halted
            })
            .map(|bid| bid.id)
            .filter(|id| self.could_fill(*id))
            .collect()
    }

    /// Every lease id the model knows running, with its buyer.
    pub fn running_leases(&self) -> Vec<(LeaseId, String)> {
        self.leases
            .iter()
            .map(|l| (l.id, l.buyer.clone()))
            .collect()
    }

    /// Every live bid id with its owner.
    pub fn live_orders(&self) -> Vec<(OrderId, String)> {
        self.bids
            .iter()
            .map(|b| (b.id, b.account.clone()))
            .collect()
    }

    /// Pool ids in configuration order.
    pub fn pool_ids(&self) -> Vec<String> {
        self.pools.iter().map(|p| p.config.id.clone()).collect()
    }
}

/// DESIGN sections 3 and 12: a pool's id is `<gpu>.<region>`, a model pool's
/// `<model>.<region>`.
fn pool_named_after(config: &PoolConfig) -> &str {
    match (config.offering, &config.model) {
        (Offering::Model, Some(model)) => model,
        _ => &config.gpu,
    }
}

/// DESIGN section 12: a model pool names its model and guarantees a throughput per GPU; a
/// bare-metal pool does neither.
fn offering_settings_agree(config: &PoolConfig) -> bool {
    match config.offering {
        Offering::BareMetal => config.model.is_none() && config.tokens_per_s_per_gpu == 0,
        Offering::Model => {
            config.model.as_ref().is_some_and(|model| !model.is_empty())
                && config.tokens_per_s_per_gpu > 0
        }
    }
}

/// Takes reclaimed GPUs out of a block's free node GPUs, last node first (rulebook silent;
/// the engine's choice, visible in the block's node list).
fn take_free_node_gpus(nodes: &mut [Node], mut gpus: u32) {
    for node in nodes.iter_mut().rev() {
        let take = node.free.min(gpus);
        node.free -= take;
        node.gpus -= take;
        gpus -= take;
    }
}

impl Model {
    /// A running lease's view.
    pub fn lease_view_of(&self, id: LeaseId) -> Option<LeaseView> {
        self.lease(id).map(|lease| self.lease_view(lease, None))
    }

    /// An account's default ssh keys.
    pub fn ssh_keys_of(&self, account: &str) -> Vec<String> {
        self.default_ssh_keys_of(account)
    }

    /// The next id the engine will hand out.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }
}

/// Seeded random commands, biased to edge values and aimed at what the model says exists.
pub mod random {
    use super::{Block, Lease, Model};
    use matching_engine::{
        AccessStatus, AccountLimits, AmendBid, AuctionMode, Command, Endpoint, Handoff, KillTarget,
        LeaseId, LeaseReady, NodeGpus, Offering, OrderId, PlaceBid, PoolConfig, PriceMicros,
        ReclaimCapacity, ReleaseCapacity, TimeInForce, TimeMs, UpdateCapacity,
    };
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use std::collections::VecDeque;

    /// Buyers. `bob` is also a supplier.
    pub const BUYERS: [&str; 4] = ["ada", "bob", "cyd", "dee"];
    /// Suppliers (internal schedulers).
    pub const SUPPLIERS: [&str; 3] = ["sched-east", "sched-west", "bob"];
    /// Every account name the generator uses, plus one that never acts.
    pub const ACCOUNTS: [&str; 7] = [
        "ada",
        "bob",
        "cyd",
        "dee",
        "sched-east",
        "sched-west",
        "nobody",
    ];
    /// A pool that is never configured.
    pub const UNKNOWN_POOL: &str = "tpu-v5.mars";
    /// A pool the generator may create halfway through a run.
    pub const LATE_POOL: (&str, &str) = ("h200", "ap-south");
    /// The model pool of every seed (DESIGN section 12): its model, the GPU its deployment
    /// runs on, its region.
    pub const MODEL_POOL: (&str, &str, &str) = ("llama-3.1-8b-instruct", "l4", "us-central");
    /// OpenSSH public keys buyers put on bids and set as defaults (the engine takes them as
    /// already checked).
    const SSH_KEYS: [&str; 3] = [
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAda ada@laptop",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBob bob@ci",
        "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBCyd cyd@desk",
    ];
    /// Why provisioners give up.
    const FAILURE_REASONS: [&str; 3] = ["image_pull_failed", "node_unhealthy", ""];

    /// 2026-01-01T00:00:00Z.
    const EPOCH_MS: i64 = 1_767_225_600_000;
    const HOUR_MS: i64 = 3_600_000;

    /// A deterministic stream of `(time, command)` for one seed.
    pub struct Commands {
        rng: ChaCha8Rng,
        setup: VecDeque<Command>,
        start: i64,
    }

    impl Commands {
        /// The stream of one seed: first the pools, then random commands.
        pub fn new(seed: u64) -> Commands {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let start = EPOCH_MS + rng.gen_range(0..HOUR_MS);
            let setup = pool_configs(&mut rng)
                .into_iter()
                .map(Command::ConfigurePool)
                .collect();
            Commands { rng, setup, start }
        }

        /// The next command and the time the sequencer stamps on it.
        pub fn next(&mut self, model: &Model) -> (TimeMs, Command) {
            if let Some(command) = self.setup.pop_front() {
                return (TimeMs(self.start), command);
            }
            let mut kind = self.rng.gen_range(0..1000);
            // A provisioner answers soon after a lease opens, or its provisioning timeout
            // (a timer the clock often jumps to) fails the lease first.
            let provisioning = model
                .leases
                .iter()
                .any(|l| l.handoff.status == AccessStatus::Provisioning);
            if provisioning && self.chance(15) {
                kind = if self.chance(85) { 740 } else { 795 };
            }
            let at = if kind >= 860 {
                self.tick_time(model)
            } else {
                self.command_time(model)
            };
            // The time the command takes effect: the clock never goes backwards.
            let now = at.max(model.now);
            let command = match kind {
                0..=279 => self.place_bid(model, now),
                280..=359 => self.amend_bid(model),
                360..=414 => self.cancel_bid(model),
                415..=549 => self.release_capacity(model, now),
                550..=594 => self.update_capacity(model),
                595..=664 => self.reclaim_capacity(model),
                665..=694 => self.forecast_reclaim(model, now),
                695..=739 => self.release_lease(model),
                740..=794 => self.lease_ready(model),
                795..=809 => self.lease_failed(model),
                810..=817 => self.set_ssh_keys(),
                818..=829 => self.kill_switch(model),
                830..=846 => self.account_limits(),
                847..=859 => self.configure_pool(model),
                _ => Command::Tick,
            };
            (TimeMs(at), command)
        }

        fn chance(&mut self, percent: u32) -> bool {
            self.rng.gen_range(0..100) < percent
        }

        fn pick<T: Clone>(&mut self, items: &[T]) -> T {
            items.choose(&mut self.rng).expect("non-empty").clone()
        }

        fn command_time(&mut self, model: &Model) -> i64 {
            let now = model.now;
            match self.rng.gen_range(0..100) {
                0..=39 => now,
                40..=69 => now + self.rng.gen_range(1..=3_000),
                70..=84 => now + self.rng.gen_range(1..=60) * 1_000,
                85..=95 => self.around_next_timer(model),
                96..=97 => now + self.rng.gen_range(1..=HOUR_MS / 4),
                // The sequencer never does this, but the engine must not go back in time.
                _ => now - self.rng.gen_range(1..=5_000),
            }
        }

        fn tick_time(&mut self, model: &Model) -> i64 {
            let now = model.now;
            match self.rng.gen_range(0..100) {
                0..=64 => self.around_next_timer(model),
                65..=93 => now + self.rng.gen_range(1..=120_000),
                94..=98 => now + self.rng.gen_range(1..=2 * HOUR_MS),
                // Past every lease, notice and window, and past the idempotency day.
                _ => now + self.rng.gen_range(1..=30 * HOUR_MS),
            }
        }

        /// Exactly at, just before or just after the next thing due.
        fn around_next_timer(&mut self, model: &Model) -> i64 {
            let Some(next) = model.next_timer_at() else {
                return model.now + 1_000;
            };
            next.0 + self.pick(&[-1, 0, 0, 0, 1])
        }

        fn pool_id(&mut self, model: &Model) -> String {
            if self.chance(2) {
                return UNKNOWN_POOL.to_owned();
            }
            self.pick(&model.pool_ids())
        }

        fn config<'m>(&self, model: &'m Model, pool: &str) -> Option<&'m PoolConfig> {
            model
                .pools
                .iter()
                .find(|p| p.config.id == pool)
                .map(|p| &p.config)
        }

        /// A price for a pool: mostly on the grid and near the touch, often at or just past
        /// the band's edges, sometimes off the tick.
        fn price(&mut self, model: &Model, pool: &str) -> PriceMicros {
            let Some(config) = self.config(model, pool) else {
                return PriceMicros(self.rng.gen_range(1..=50) * 10_000);
            };
            let (tick, min, max) = (config.tick.0, config.price_min.0, config.price_max.0);
            let levels = (max - min) / tick;
            let on_grid = min + tick * self.rng.gen_range(0..=levels);
            let depth = model.depth(pool, usize::MAX).expect("known pool");
            let touch = depth
                .asks
                .first()
                .or(depth.bids.first())
                .map_or(on_grid, |level| level.price.0);
            // A level something already rests at: joining its queue is where time priority
            // decides.
            let levels_in_use: Vec<u64> = depth
                .bids
                .iter()
                .chain(&depth.asks)
                .map(|level| level.price.0)
                .collect();
            let price = match self.rng.gen_range(0..100) {
                0..=24 => on_grid,
                25..=44 => levels_in_use
                    .choose(&mut self.rng)
                    .copied()
                    .unwrap_or(on_grid),
                45..=64 => {
                    let offset = tick * self.rng.gen_range(0..=2);
                    if self.chance(50) {
                        touch + offset
                    } else {
                        touch.saturating_sub(offset)
                    }
                }
                65..=69 => min,
                70..=74 => max,
                75..=77 => min - tick,
                78..=80 => max + tick,
                81..=85 => on_grid + 1,
                86..=88 => on_grid + tick / 2,
                89 => 0,
                _ => on_grid,
            };
            PriceMicros(price)
        }

        fn gpus(&mut self, max: u32) -> u32 {
            match self.rng.gen_range(0..100) {
                0..=2 => 0,
                3..=24 => 1,
                25..=54 => self.rng.gen_range(1..=max.min(4)),
                55..=61 => max,
                62..=64 => max + 1,
                _ => self.rng.gen_range(1..=max),
            }
        }

        /// Seconds from `now` until a resting block of the pool closes, give or take one:
        /// the edge of duration eligibility.
        fn window_edge_s(&mut self, model: &Model, pool: &str, now: i64) -> Option<u32> {
            let open: Vec<&Block> = model
                .blocks
                .iter()
                .filter(|b| b.pool == pool && b.available_until > now)
                .collect();
            let block = open.choose(&mut self.rng)?;
            let seconds = (block.available_until - now) / 1_000;
            Some((seconds + self.pick(&[-1, 0, 0, 1])).max(0) as u32)
        }

        fn place_bid(&mut self, model: &Model, now: i64) -> Command {
            let pool = self.pool_id(model);
            let defaults = PoolConfig::with_defaults("x", "y");
            let config = self.config(model, &pool).unwrap_or(&defaults).clone();
            let gpus = self.gpus(config.gpus_per_order_max);
            let min_gpus = match self.rng.gen_range(0..100) {
                0..=49 => None,
                50..=64 => Some(1),
                65..=69 => Some(gpus),
                70..=71 => Some(0),
                72..=73 => Some(gpus + 1),
                _ => Some(self.rng.gen_range(1..=gpus.max(1))),
            };
            let shortest = config.duration_min_s;
            let duration_s = match self.rng.gen_range(0..100) {
                0..=2 => shortest - 1,
                3..=22 => shortest,
                23..=27 => shortest + 1,
                28..=44 => self.window_edge_s(model, &pool, now).unwrap_or(shortest),
                45..=46 => config.duration_max_s + 1,
                47..=56 => self
                    .rng
                    .gen_range(shortest..=config.duration_max_s.max(shortest)),
                _ => self.rng.gen_range(shortest..=shortest * 10),
            };
            let max_duration_s = match self.rng.gen_range(0..100) {
                0..=39 => None,
                40..=49 => Some(duration_s),
                50..=52 => Some(duration_s.saturating_sub(1)),
                53..=67 => Some(config.duration_max_s),
                68..=69 => Some(config.duration_max_s + 1),
                _ if duration_s <= config.duration_max_s => {
                    Some(self.rng.gen_range(duration_s..=config.duration_max_s))
                }
                _ => None,
            };
            let tif = match self.rng.gen_range(0..100) {
                0..=54 => TimeInForce::Gtc,
                55..=69 => TimeInForce::Ioc,
                70..=81 => TimeInForce::Fok,
                _ => TimeInForce::Gtd,
            };
            let expires_at = if tif == TimeInForce::Gtd {
                match self.rng.gen_range(0..100) {
                    0..=9 => Some(now + 1),
                    10..=24 => Some(now + 1_000),
                    25..=29 => Some(now),
                    30..=32 => None,
                    _ => Some(now + self.rng.gen_range(1..=600_000)),
                }
            } else if self.chance(3) {
                Some(now + 1_000)
            } else {
                None
            };
            let client_order_id = if self.chance(15) {
                Some(format!("c{}", self.rng.gen_range(0..4)))
            } else {
                None
            };
            let ssh_public_keys = self.ssh_keys(70);
            Command::PlaceBid(PlaceBid {
                account: self.pick(&BUYERS).to_owned(),
                price: self.price(model, &pool),
                pool,
                gpus,
                min_gpus,
                duration_s,
                max_duration_s,
                tif,
                expires_at: expires_at.map(TimeMs),
                persistent: self.chance(25),
                client_order_id,
                ssh_public_keys,
            })
        }

        /// None in `none_percent` of cases, otherwise one or two distinct keys.
        fn ssh_keys(&mut self, none_percent: u32) -> Vec<String> {
            if self.chance(none_percent) {
                return Vec::new();
            }
            let count = if self.chance(70) { 1 } else { 2 };
            SSH_KEYS
                .choose_multiple(&mut self.rng, count)
                .map(|key| key.to_string())
                .collect()
        }

        fn set_ssh_keys(&mut self) -> Command {
            Command::SetSshKeys {
                account: self.pick(&BUYERS).to_owned(),
                keys: self.ssh_keys(25),
            }
        }

        /// A running lease (mostly one still provisioning) and who reports on it: mostly its
        /// block's supplier, sometimes another supplier or another block id, sometimes about a
        /// lease nobody has.
        fn lease_and_reporter(
            &mut self,
            model: &Model,
        ) -> (Option<Lease>, String, String, LeaseId) {
            let provisioning: Vec<&Lease> = model
                .leases
                .iter()
                .filter(|l| l.handoff.status == AccessStatus::Provisioning)
                .collect();
            let lease = if model.leases.is_empty() || self.chance(4) {
                None
            } else if !provisioning.is_empty() && self.chance(85) {
                Some((*provisioning.choose(&mut self.rng).expect("non-empty")).clone())
            } else {
                Some(self.pick(&model.leases))
            };
            let Some(lease) = lease else {
                let id = LeaseId(model.next_id() + self.rng.gen_range(0..3));
                let block_id = format!("blk-{}", self.rng.gen_range(0..6));
                return (None, self.pick(&SUPPLIERS).to_owned(), block_id, id);
            };
            let supplier = if self.chance(6) {
                self.pick(&SUPPLIERS).to_owned()
            } else {
                lease.supplier.clone()
            };
            let block_id = match self.rng.gen_range(0..100) {
                0..=4 => format!("blk-{}", self.rng.gen_range(0..6)),
                // A capacity signal that leaves the block out.
                5..=9 => String::new(),
                _ => lease.block_id.clone(),
            };
            let id = lease.id;
            (Some(lease), supplier, block_id, id)
        }

        fn endpoint_to(&mut self, node: Option<&str>) -> Endpoint {
            Endpoint {
                node: node.map(Into::into),
                host: format!(
                    "10.0.{}.{}",
                    self.rng.gen_range(0..4),
                    self.rng.gen_range(1..255)
                )
                .into(),
                port: self.pick(&[22, 2222]),
                user: "ubuntu".into(),
            }
        }

        fn lease_ready(&mut self, model: &Model) -> Command {
            let (lease, supplier, block_id, lease_id) = self.lease_and_reporter(model);
            let offering = lease.as_ref().map_or(Offering::BareMetal, |l| {
                self.config(model, &l.pool).expect("known").offering
            });
            // The lease's nodes, and a node of its block it does not hold (when there is one).
            let (held, elsewhere): (Vec<String>, Option<String>) = match &lease {
                Some(l) => {
                    let block = model.block(l.block_serial);
                    let held: Vec<String> = model
                        .lease_nodes(l, block)
                        .iter()
                        .map(|n| n.node.to_string())
                        .collect();
                    let elsewhere = block
                        .into_iter()
                        .flat_map(|b| &b.nodes)
                        .map(|n| n.name.clone())
                        .find(|n| !held.contains(n));
                    (held, elsewhere)
                }
                None => (Vec::new(), None),
            };
            let gateway = || Some("https://gw.offpeak.example/v1".to_owned());
            let (endpoints, endpoint) = match (offering, self.rng.gen_range(0..100)) {
                (Offering::BareMetal, 0..=69) if held.is_empty() => {
                    (vec![self.endpoint_to(None)], None)
                }
                (Offering::BareMetal, 0..=69) => {
                    let endpoints = held.iter().map(|n| self.endpoint_to(Some(n))).collect();
                    (endpoints, None)
                }
                (Offering::BareMetal, 70..=76) => (vec![self.endpoint_to(None)], None),
                (Offering::BareMetal, 77..=83) => {
                    let stranger = elsewhere.unwrap_or_else(|| "rack9-n9".to_owned());
                    let mut endpoints: Vec<Endpoint> =
                        held.iter().map(|n| self.endpoint_to(Some(n))).collect();
                    endpoints.push(self.endpoint_to(Some(&stranger)));
                    (endpoints, None)
                }
                (Offering::BareMetal, 84..=89) => (Vec::new(), None),
                (Offering::BareMetal, 90..=94) => (vec![self.endpoint_to(None)], gateway()),
                (Offering::BareMetal, _) => (Vec::new(), gateway()),
                (Offering::Model, 0..=79) => (Vec::new(), gateway()),
                (Offering::Model, 80..=89) => (Vec::new(), None),
                (Offering::Model, 90..=94) => (vec![self.endpoint_to(None)], gateway()),
                (Offering::Model, _) => (vec![self.endpoint_to(None)], None),
            };
            Command::LeaseReady(LeaseReady {
                supplier,
                block_id,
                lease_id,
                endpoints,
                endpoint,
            })
        }

        fn lease_failed(&mut self, model: &Model) -> Command {
            let (_, supplier, block_id, lease_id) = self.lease_and_reporter(model);
            Command::LeaseFailed {
                supplier,
                block_id,
                lease_id,
                reason: self.pick(&FAILURE_REASONS).to_owned(),
            }
        }

        /// A live order and who sends the command about it: mostly its owner, sometimes
        /// another account, sometimes an id nobody has.
        fn order_and_sender(&mut self, model: &Model) -> (OrderId, String) {
            let orders = model.live_orders();
            if orders.is_empty() || self.chance(5) {
                let id = OrderId(model.next_id() + self.rng.gen_range(0..3));
                return (id, self.pick(&BUYERS).to_owned());
            }
            let (id, owner) = self.pick(&orders);
            if self.chance(10) {
                return (id, self.pick(&BUYERS).to_owned());
            }
            (id, owner)
        }

        fn amend_bid(&mut self, model: &Model) -> Command {
            let (order_id, account) = self.order_and_sender(model);
            let bid = model.bids.iter().find(|b| b.id == order_id).cloned();
            let (pool, gpus, filled, max) = match &bid {
                Some(bid) => {
                    let max = self
                        .config(model, &bid.pool)
                        .expect("known")
                        .gpus_per_order_max;
                    (bid.pool.clone(), bid.gpus, bid.gpus - bid.remaining, max)
                }
                None => (self.pool_id(model), 4, 0, 8),
            };
            let price = if self.chance(55) {
                Some(self.price(model, &pool))
            } else {
                None
            };
            let new_gpus = match self.rng.gen_range(0..100) {
                0..=39 => None,
                40..=42 => Some(0),
                43..=47 => Some(filled),
                48..=52 => Some(filled + 1),
                53..=64 => Some(gpus.saturating_sub(1)),
                65..=74 => Some(gpus + 1),
                75..=79 => Some(gpus),
                80..=84 => Some(max),
                85..=86 => Some(max + 1),
                _ => Some(self.rng.gen_range(1..=max)),
            };
            Command::AmendBid(AmendBid {
                account,
                order_id,
                price,
                gpus: new_gpus,
            })
        }

        fn cancel_bid(&mut self, model: &Model) -> Command {
            let (order_id, account) = self.order_and_sender(model);
            Command::CancelBid { account, order_id }
        }

        fn release_capacity(&mut self, model: &Model, now: i64) -> Command {
            let pool = self.pool_id(model);
            let defaults = PoolConfig::with_defaults("x", "y");
            let config = self.config(model, &pool).unwrap_or(&defaults).clone();
            let gpus = match self.rng.gen_range(0..100) {
                0..=1 => 0,
                2..=11 => 1,
                12..=21 => config.gpus_per_order_max,
                22..=23 => config.gpus_per_order_max + 1,
                _ => self.rng.gen_range(1..=config.gpus_per_order_max),
            };
            let available_from = match self.rng.gen_range(0..100) {
                0..=59 => None,
                60..=64 => Some(now - self.rng.gen_range(1..=60_000)),
                65..=69 => Some(now),
                _ => Some(now + self.rng.gen_range(1..=120_000)),
            };
            let opens = available_from.unwrap_or(now).max(now);
            let shortest = config.duration_min_s as i64 * 1_000;
            let available_until = match self.rng.gen_range(0..100) {
                0..=4 => opens + shortest - 1,
                5..=11 => opens + shortest,
                12..=14 => opens + shortest + 1,
                15..=44 => opens + shortest + self.rng.gen_range(0..=10 * shortest),
                _ => opens + shortest + self.rng.gen_range(0..=6 * HOUR_MS),
            };
            let nodes = if gpus > 0 && self.chance(30) {
                let parts = self.rng.gen_range(1..=gpus.min(3));
                let mut left = gpus;
                let mut nodes: Vec<NodeGpus> = (0..parts)
                    .map(|index| {
                        let take = if index + 1 == parts {
                            left
                        } else {
                            self.rng.gen_range(1..=left - (parts - index - 1))
                        };
                        left -= take;
                        NodeGpus {
                            node: format!("rack{}-n{index}", self.rng.gen_range(1..=2)).into(),
                            gpus: take,
                        }
                    })
                    .collect();
                match self.rng.gen_range(0..100) {
                    0..=7 => nodes[0].gpus += 1,
                    8..=11 => nodes.push(NodeGpus {
                        node: "spare".into(),
                        gpus: 0,
                    }),
                    12..=19 if nodes.len() > 1 => nodes[1].node = nodes[0].node.clone(),
                    _ => {}
                }
                nodes
            } else {
                Vec::new()
            };
            Command::ReleaseCapacity(ReleaseCapacity {
                supplier: self.pick(&SUPPLIERS).to_owned(),
                block_id: format!("blk-{}", self.rng.gen_range(0..6)),
                reserve_price: self.price(model, &pool),
                pool,
                gpus,
                available_from: available_from.map(TimeMs),
                available_until: TimeMs(available_until),
                nodes,
            })
        }

        /// A known block and who sends the command about it.
        fn block_and_sender(&mut self, model: &Model) -> (Option<Block>, String, String) {
            if model.blocks.is_empty() || self.chance(5) {
                let block_id = format!("blk-{}", self.rng.gen_range(0..8));
                return (None, self.pick(&SUPPLIERS).to_owned(), block_id);
            }
            let block = self.pick(&model.blocks);
            let sender = if self.chance(10) {
                self.pick(&SUPPLIERS).to_owned()
            } else {
                block.supplier.clone()
            };
            let block_id = block.block_id.clone();
            (Some(block), sender, block_id)
        }

        fn update_capacity(&mut self, model: &Model) -> Command {
            let (block, supplier, block_id) = self.block_and_sender(model);
            let pool = block
                .as_ref()
                .map_or_else(|| self.pool_id(model), |b| b.pool.clone());
            let until = block
                .as_ref()
                .map_or(model.now + HOUR_MS, |b| b.available_until);
            let reserve_price = match self.rng.gen_range(0..100) {
                0..=39 => None,
                40..=49 => block.as_ref().map(|b| PriceMicros(b.reserve_price)),
                _ => Some(self.price(model, &pool)),
            };
            let available_until = match self.rng.gen_range(0..100) {
                0..=49 => None,
                50..=54 => Some(until - 1),
                55..=64 => Some(until),
                _ => Some(until + self.rng.gen_range(1..=HOUR_MS)),
            };
            Command::UpdateCapacity(UpdateCapacity {
                supplier,
                block_id,
                reserve_price,
                available_until: available_until.map(TimeMs),
            })
        }

        fn reclaim_capacity(&mut self, model: &Model) -> Command {
            let (block, supplier, block_id) = self.block_and_sender(model);
            let (gpus, unsold, active, pool_notice) = match &block {
                Some(b) => {
                    let active: u32 = model
                        .leases
                        .iter()
                        .filter(|l| {
                            l.block_serial == b.serial
                                && l.status == matching_engine::LeaseStatus::Active
                        })
                        .map(|l| l.gpus)
                        .sum();
                    let notice = self.config(model, &b.pool).expect("known").notice_s;
                    (b.gpus, b.unsold, active, notice)
                }
                None => (4, 0, 0, 120),
            };
            let wanted = match self.rng.gen_range(0..100) {
                0..=2 => 0,
                3..=22 => 1,
                23..=37 => unsold.max(1),
                38..=57 => (unsold + active).max(1),
                58..=62 => unsold + active + 1,
                _ => self.rng.gen_range(1..=gpus),
            };
            // The largest promise among the block's running leases (their notice at opening).
            let promise = block.as_ref().map_or(0, |b| {
                model
                    .leases
                    .iter()
                    .filter(|l| l.block_serial == b.serial)
                    .map(|l| l.notice_s)
                    .max()
                    .unwrap_or(0)
            });
            let notice_s = match self.rng.gen_range(0..100) {
                0..=44 => None,
                45..=54 => Some(0),
                55..=62 => Some(pool_notice.saturating_sub(1)),
                63..=70 => Some(pool_notice),
                71..=75 => Some(promise.saturating_sub(1)),
                76..=79 => Some(promise),
                _ => Some(pool_notice + self.rng.gen_range(1..=600)),
            };
            Command::ReclaimCapacity(ReclaimCapacity {
                supplier,
                block_id,
                gpus: wanted,
                notice_s,
                emergency: self.chance(40),
            })
        }

        fn forecast_reclaim(&mut self, model: &Model, now: i64) -> Command {
            let (_, supplier, block_id) = self.block_and_sender(model);
            let reclaim_at = match self.rng.gen_range(0..100) {
                0..=9 => now - 1,
                10..=19 => now,
                _ => now + self.rng.gen_range(1..=HOUR_MS),
            };
            Command::ForecastReclaim {
                supplier,
                block_id,
                reclaim_at: TimeMs(reclaim_at),
            }
        }

        fn release_lease(&mut self, model: &Model) -> Command {
            let leases = model.running_leases();
            let (lease_id, account) = if leases.is_empty() || self.chance(5) {
                (
                    LeaseId(model.next_id() + self.rng.gen_range(0..3)),
                    self.pick(&BUYERS).to_owned(),
                )
            } else {
                let (id, buyer) = self.pick(&leases);
                if self.chance(10) {
                    (id, self.pick(&BUYERS).to_owned())
                } else {
                    (id, buyer)
                }
            };
            Command::ReleaseLease { account, lease_id }
        }

        fn kill_switch(&mut self, model: &Model) -> Command {
            let mut engaged_targets: Vec<KillTarget> = model
                .killed
                .iter()
                .map(|a| KillTarget::Account(a.clone()))
                .collect();
            engaged_targets.extend(
                model
                    .pools
                    .iter()
                    .filter(|p| p.halted)
                    .map(|p| KillTarget::Pool(p.config.id.clone())),
            );
            if !engaged_targets.is_empty() && self.chance(80) {
                return Command::SetKillSwitch {
                    target: self.pick(&engaged_targets),
                    engaged: false,
                };
            }
            let target = match self.rng.gen_range(0..100) {
                0..=54 => KillTarget::Account(self.pick(&ACCOUNTS).to_owned()),
                55..=94 => KillTarget::Pool(self.pick(&model.pool_ids())),
                _ => KillTarget::Pool(UNKNOWN_POOL.to_owned()),
            };
            Command::SetKillSwitch {
                target,
                engaged: self.chance(85),
            }
        }

        fn account_limits(&mut self) -> Command {
            let limits = if self.chance(35) {
                AccountLimits::default()
            } else {
                AccountLimits {
                    orders_open_max: self.pick(&[0, 1, 2, 3, 5, 1_000]),
                    open_notional_max_micros: self.pick(&[
                        0,
                        10_000,
                        100_000,
                        1_000_000,
                        10_000_000,
                        AccountLimits::default().open_notional_max_micros,
                    ]),
                }
            };
            Command::SetAccountLimits {
                account: self.pick(&ACCOUNTS).to_owned(),
                limits,
            }
        }

        fn configure_pool(&mut self, model: &Model) -> Command {
            let ids = model.pool_ids();
            if ids.len() < 5 && self.chance(15) {
                let (gpu, region) = LATE_POOL;
                let mut config = PoolConfig::with_defaults(gpu, region);
                config.price_max = PriceMicros(500_000);
                config.gpus_per_order_max = 8;
                return Command::ConfigurePool(config);
            }
            let id = self.pick(&ids);
            let mut config = self.config(model, &id).expect("known").clone();
            match self.rng.gen_range(0..100) {
                0..=12 => config.notice_s = self.pick(&[0, 30, 120, 600]),
                13..=25 => config.free_if_preempted_within_s = self.pick(&[0, 60, 600, 3600]),
                26..=33 => config.gpus_per_order_max = self.pick(&[1, 4, 8, 16, 64]),
                34..=41 => {
                    config.duration_min_s = self.pick(&[1, 60, 300]);
                    config.duration_max_s = self.pick(&[300, 3600, 86_400]);
                }
                42..=45 => {
                    config.handoff = match config.handoff {
                        Handoff::Required => Handoff::None,
                        Handoff::None => Handoff::Required,
                    }
                }
                46..=49 => config.provision_timeout_s = self.pick(&[1, 2, 30, 600, 86_400]),
                50..=51 => config.provision_timeout_s = self.pick(&[0, 86_401]),
                52..=53 => match config.offering {
                    // Settings of the other offering: refused.
                    Offering::BareMetal if self.chance(50) => config.tokens_per_s_per_gpu = 100,
                    Offering::BareMetal => config.model = Some("llama-3.1-8b-instruct".into()),
                    Offering::Model if self.chance(50) => config.tokens_per_s_per_gpu = 0,
                    Offering::Model => config.model = self.pick(&[None, Some(String::new())]),
                },
                54..=59 => {
                    config.auction = match config.auction {
                        AuctionMode::Continuous => AuctionMode::Batch {
                            interval_ms: self.pick(&[250, 1_000, 5_000]),
                        },
                        AuctionMode::Batch { .. } => AuctionMode::Continuous,
                    }
                }
                60..=84 => {
                    // A new price grid: refused while anything of the pool could rest.
                    let tick = self.pick(&[5_000, 10_000, 20_000]);
                    config.tick = PriceMicros(tick);
                    config.price_min = PriceMicros(tick * self.rng.gen_range(1..=3));
                    config.price_max =
                        PriceMicros(config.price_min.0 + tick * self.rng.gen_range(5..=30));
                }
                85..=89 => config.auction = AuctionMode::Batch { interval_ms: 0 },
                90..=92 => config.price_min = PriceMicros(config.price_max.0 + config.tick.0),
                93..=94 => {
                    // One level more than a dense ladder may hold.
                    let levels = matching_engine::limits::PRICE_LEVELS_MAX;
                    config.price_max = PriceMicros(config.price_min.0 + config.tick.0 * levels);
                }
                _ => config.id = format!("{}.elsewhere", config.gpu),
            }
            Command::ConfigurePool(config)
        }
    }

    /// The pools of one seed: two continuous pools with different grids, one batch pool with a
    /// short interval and a continuous model pool. Narrow bands, so bids and asks cross often.
    /// The h100 and model pools wait for the handoff with short provisioning timeouts (so
    /// timeouts fire as often as `ready` comes in), the a100 pool has none, the batch pool
    /// either.
    fn pool_configs(rng: &mut ChaCha8Rng) -> Vec<PoolConfig> {
        let mut pick = |items: &[u32]| *items.choose(rng).expect("non-empty");
        let mut h100 = PoolConfig::with_defaults("h100-sxm", "us-east");
        h100.price_max = PriceMicros(h100.price_min.0 + h100.tick.0 * pick(&[8, 20, 40]) as u64);
        h100.gpus_per_order_max = pick(&[2, 8, 16]);
        h100.duration_max_s = pick(&[3_600, 14_400, 86_400]);
        h100.notice_s = pick(&[30, 120, 600]);
        h100.free_if_preempted_within_s = pick(&[0, 60, 600, 3_600]);
        h100.handoff = Handoff::Required;
        h100.provision_timeout_s = pick(&[5, 30, 120, 600]);

        let mut a100 = PoolConfig::with_defaults("a100-80gb", "eu-west");
        a100.tick = PriceMicros(5_000);
        a100.price_min = PriceMicros(5_000 * pick(&[1, 10]) as u64);
        a100.price_max = PriceMicros(a100.price_min.0 + 5_000 * pick(&[10, 25]) as u64);
        a100.gpus_per_order_max = pick(&[4, 64]);
        a100.duration_min_s = pick(&[60, 300]);
        a100.duration_max_s = 14_400;
        a100.handoff = Handoff::None;

        let mut l4 = PoolConfig::with_defaults("l4", "us-west");
        l4.price_max = PriceMicros(l4.price_min.0 + l4.tick.0 * pick(&[10, 30]) as u64);
        l4.gpus_per_order_max = pick(&[8, 32]);
        l4.duration_max_s = 7_200;
        l4.auction = AuctionMode::Batch {
            interval_ms: pick(&[250, 1_000, 5_000]) as u64,
        };
        l4.handoff = if pick(&[0, 1]) == 0 {
            Handoff::Required
        } else {
            Handoff::None
        };
        l4.provision_timeout_s = pick(&[30, 600]);

        let (model, gpu, region) = MODEL_POOL;
        let mut llama = PoolConfig {
            id: format!("{model}.{region}"),
            offering: Offering::Model,
            model: Some(model.to_owned()),
            ..PoolConfig::with_defaults(gpu, region)
        };
        llama.tokens_per_s_per_gpu = pick(&[1_500, 2_500]);
        llama.price_max = PriceMicros(llama.price_min.0 + llama.tick.0 * pick(&[8, 20]) as u64);
        llama.gpus_per_order_max = pick(&[4, 8]);
        llama.duration_max_s = 7_200;
        llama.notice_s = pick(&[30, 120]);
        llama.free_if_preempted_within_s = pick(&[0, 60, 600]);
        llama.provision_timeout_s = pick(&[2, 60, 600]);
        vec![h100, a100, l4, llama]
    }
}
