//! The engine: pools of bids and capacity blocks, executions into leases, preemption.
//!
//! Layout: bids and blocks live in slabs and rest in each pool's two dense ladders
//! ([`Ladder`]); running leases live in a map by id; everything that happens at a future time
//! (lease ends, notice ends, GTD expiries, block windows, batch uncrosses) is a timer in one
//! ordered queue keyed by `(time, insertion sequence)`, so timers fire in a deterministic order.
//! Nothing observable depends on slab keys or hash-map iteration order.
//!
//! Invariants (checked by the property tests after every command):
//! - a continuous pool's book is never crossed for bids that could trade;
//! - per block, `gpus_sold + gpus_unsold + gpus_reclaimed == gpus`;
//! - an Open bid rests on its pool's bid ladder at its price; a block's unsold GPUs rest on the
//!   ask ladder exactly while its window is open;
//! - no lease ends after its block's window.

use crate::command::{
    AmendBid, Command, KillTarget, PlaceBid, ReclaimCapacity, ReleaseCapacity, UpdateCapacity,
};
use crate::event::{
    BlockView, Depth, Event, LeaseView, Level, OrderView, PoolSummary, Quote, TradeView,
};
use crate::ladder::{Ladder, Links, Resting, NIL};
use crate::limits::{
    AUCTION_CANDIDATE_PRICES_MAX, CLIENT_ORDER_ID_TTL_MS, NODES_PER_BLOCK_MAX, PRICE_LEVELS_MAX,
};
use crate::types::{
    cost_micros, AccountLimits, AuctionMode, BlockStatus, CancelReason, LeaseId, LeaseStatus,
    Micros, Name, NodeGpus, OrderId, OrderStatus, PoolConfig, PriceMicros, Rejection, Side,
    TimeInForce, TimeMs, TradeId,
};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use slab::Slab;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A bid resting in, or remembered by, the engine. Kept small: a million of them must fit in
/// well under 160 bytes each, index included.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Bid {
    pub id: OrderId,
    pub price: PriceMicros,
    pub priority: u64,
    pub created_at: TimeMs,
    pub updated_at: TimeMs,
    /// GTD expiry, `i64::MIN` when none.
    pub expires_at: i64,
    pub account: u32,
    pub gpus: u32,
    pub remaining: u32,
    pub min_gpus: u32,
    pub duration_s: u32,
    pub max_duration_s: u32,
    pub active_leases: u32,
    pub links: Links,
    pub pool: u16,
    pub tif: TimeInForce,
    pub status: OrderStatus,
    pub cancel_reason: Option<CancelReason>,
    pub persistent: bool,
    /// Whether `client_order_id_of` holds a key for it (spares a map lookup per view).
    pub has_client_order_id: bool,
}

impl Resting for Bid {
    fn links(&self) -> Links {
        self.links
    }
    fn links_mut(&mut self) -> &mut Links {
        &mut self.links
    }
}

/// GPUs of a block on one node, and how many of them no lease holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct NodeState {
    pub node: Name,
    pub gpus: u32,
    pub free: u32,
}

/// A supplier's capacity block.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Block {
    pub serial: u64,
    pub supplier: u32,
    pub pool: u16,
    pub block_id: Name,
    pub status: BlockStatus,
    pub gpus: u32,
    pub unsold: u32,
    pub leased: u32,
    pub reclaimed: u32,
    /// GPUs of preempting leases that go back to the supplier when their notice ends.
    pub reclaim_pending: u32,
    pub reserve_price: PriceMicros,
    pub available_from: TimeMs,
    pub available_until: TimeMs,
    pub revenue: Micros,
    pub forecast_at: Option<TimeMs>,
    pub nodes: Vec<NodeState>,
    /// Running leases, in opening order.
    pub leases: Vec<LeaseId>,
    pub priority: u64,
    pub on_book: bool,
    pub links: Links,
    pub updated_at: TimeMs,
}

impl Resting for Block {
    fn links(&self) -> Links {
        self.links
    }
    fn links_mut(&mut self) -> &mut Links {
        &mut self.links
    }
}

/// A running lease.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Lease {
    pub id: LeaseId,
    pub order_id: OrderId,
    pub buyer: u32,
    pub supplier: u32,
    pub pool: u16,
    pub block_serial: u64,
    pub gpus: u32,
    pub price: PriceMicros,
    pub status: LeaseStatus,
    pub started_at: TimeMs,
    pub ends_at: TimeMs,
    pub notice_ends_at: Option<TimeMs>,
    pub preempted_at: Option<TimeMs>,
    pub emergency: bool,
    pub nodes: Vec<NodeGpus>,
}

/// An account: its limits, kill switch and what its resting bids commit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Account {
    pub name: Name,
    pub limits: Option<AccountLimits>,
    pub killed: bool,
    pub open_orders: u32,
    pub open_notional: u128,
}

/// One order book.
#[derive(Clone, Debug)]
pub(crate) struct Pool {
    pub name: Name,
    pub config: PoolConfig,
    pub bids: Ladder,
    pub asks: Ladder,
    pub last_price: Option<PriceMicros>,
    pub halted: bool,
    pub leased_gpus: u64,
    pub reclaiming_gpus: u64,
    /// A batch pool's next uncross, when one is armed.
    pub auction_at: Option<TimeMs>,
}

impl Pool {
    pub(crate) fn level_of(&self, price: PriceMicros) -> u32 {
        ((price.0 - self.config.price_min.0) / self.config.tick.0) as u32
    }

    fn price_of(&self, level: u32) -> PriceMicros {
        PriceMicros(self.config.price_min.0 + level as u64 * self.config.tick.0)
    }

    fn check_price(&self, price: PriceMicros) -> Result<(), Rejection> {
        if !price.0.is_multiple_of(self.config.tick.0) {
            return Err(Rejection::PriceNotOnTick);
        }
        if price < self.config.price_min || price > self.config.price_max {
            return Err(Rejection::PriceOutOfBand);
        }
        Ok(())
    }

    fn is_batch(&self) -> bool {
        matches!(self.config.auction, AuctionMode::Batch { .. })
    }
}

/// Something due at a future time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Timer {
    LeaseEnds { lease: LeaseId },
    NoticeEnds { lease: LeaseId },
    BidExpires { order: OrderId },
    BlockOpens { serial: u64 },
    BlockCloses { serial: u64 },
    Auction { pool: u16 },
    ForgetClientOrderId { account: u32, key: Name },
}

/// A timer in the queue: ordered by due time, then by when it was scheduled.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Scheduled {
    pub at: TimeMs,
    pub seq: u64,
    pub timer: Timer,
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A book level touched by the current command, with its totals before the first touch.
#[derive(Clone, Copy, Debug)]
struct Touched {
    pool: u16,
    side: Side,
    level: u32,
    before: (u64, u32),
}

/// The deterministic marketplace core. See the crate documentation.
#[derive(Clone, Debug)]
pub struct Engine {
    pub(crate) now: TimeMs,
    pub(crate) next_id: u64,
    pub(crate) next_priority: u64,
    pub(crate) next_timer: u64,
    pub(crate) default_limits: AccountLimits,
    pub(crate) pools: Vec<Pool>,
    pub(crate) pool_index: FxHashMap<Name, u16>,
    pub(crate) accounts: Vec<Account>,
    pub(crate) account_index: FxHashMap<Name, u32>,
    pub(crate) bids: Slab<Bid>,
    pub(crate) bid_index: FxHashMap<OrderId, u32>,
    /// `(account, client_order_id)` to the bid it created and when.
    pub(crate) client_order_ids: FxHashMap<(u32, Name), (OrderId, TimeMs)>,
    /// The key of each remembered bid that carried one, for its view.
    pub(crate) client_order_id_of: FxHashMap<OrderId, Name>,
    pub(crate) blocks: Slab<Block>,
    /// Per supplier, its block ids: looked up by `&str` without building a key.
    pub(crate) block_index: FxHashMap<u32, FxHashMap<Name, u32>>,
    pub(crate) block_by_serial: FxHashMap<u64, u32>,
    pub(crate) leases: FxHashMap<LeaseId, Lease>,
    /// Due timers, earliest first; ties in scheduling order.
    pub(crate) timers: BinaryHeap<Reverse<Scheduled>>,
    touched: Vec<Touched>,
    fills: Vec<(u32, u32)>,
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new()
    }
}

/// How a batch candidate price ranks: GPUs, imbalance, distance to the last trade, price.
type AuctionScore = (u64, Reverse<u64>, Reverse<u64>, Reverse<u32>);

/// How an execution is priced.
#[derive(Clone, Copy)]
enum Pricing {
    /// Each fill at the price of whichever side rested first.
    Maker,
    /// Every fill at one clearing price (batch uncross).
    Uniform(PriceMicros),
}

impl Engine {
    /// An empty engine at time zero with the default account limits.
    pub fn new() -> Engine {
        Engine {
            now: TimeMs(0),
            next_id: 1,
            next_priority: 1,
            next_timer: 1,
            default_limits: AccountLimits::default(),
            pools: Vec::new(),
            pool_index: FxHashMap::default(),
            accounts: Vec::new(),
            account_index: FxHashMap::default(),
            bids: Slab::new(),
            bid_index: FxHashMap::default(),
            client_order_ids: FxHashMap::default(),
            client_order_id_of: FxHashMap::default(),
            blocks: Slab::new(),
            block_index: FxHashMap::default(),
            block_by_serial: FxHashMap::default(),
            leases: FxHashMap::default(),
            timers: BinaryHeap::new(),
            touched: Vec::new(),
            fills: Vec::new(),
        }
    }

    /// The engine's time: the latest command's time (it never goes backwards).
    pub fn now(&self) -> TimeMs {
        self.now
    }

    /// When the next timer is due, so the sequencer knows when to send a `Tick`.
    pub fn next_timer_at(&self) -> Option<TimeMs> {
        self.timers.peek().map(|Reverse(scheduled)| scheduled.at)
    }

    /// Applies one command stamped at `at`: first fires every timer due by then, in order,
    /// then the command. Appends what happened to `out`.
    pub fn apply(&mut self, at: TimeMs, command: &Command, out: &mut Vec<Event>) {
        self.advance_to(at, out);
        match command {
            Command::ConfigurePool(config) => self.configure_pool(config, out),
            Command::PlaceBid(bid) => self.place_bid(bid, out),
            Command::AmendBid(amend) => self.amend_bid(amend, out),
            Command::CancelBid { account, order_id } => self.cancel_bid(account, *order_id, out),
            Command::ReleaseCapacity(release) => self.release_capacity(release, out),
            Command::UpdateCapacity(update) => self.update_capacity(update, out),
            Command::ReclaimCapacity(reclaim) => self.reclaim_capacity(reclaim, out),
            Command::ForecastReclaim {
                supplier,
                block_id,
                reclaim_at,
            } => self.forecast_reclaim(supplier, block_id, *reclaim_at, out),
            Command::ReleaseLease { account, lease_id } => {
                self.release_lease(account, *lease_id, out)
            }
            Command::Tick => {}
            Command::SetKillSwitch { target, engaged } => {
                self.set_kill_switch(target, *engaged, out)
            }
            Command::SetAccountLimits { account, limits } => {
                let key = self.intern_account(account);
                self.accounts[key as usize].limits = Some(*limits);
                out.push(Event::AccountLimitsChanged {
                    account: self.accounts[key as usize].name.clone(),
                    limits: *limits,
                });
            }
        }
        self.flush_touched(out);
    }

    // ----- time -------------------------------------------------------------------------------

    fn advance_to(&mut self, at: TimeMs, out: &mut Vec<Event>) {
        while let Some(Reverse(next)) = self.timers.peek() {
            let due = next.at;
            if due > at {
                break;
            }
            let Some(Reverse(Scheduled { timer, .. })) = self.timers.pop() else {
                break;
            };
            if due > self.now {
                self.now = due;
            }
            self.fire(timer, out);
            self.flush_touched(out);
        }
        if at > self.now {
            self.now = at;
        }
    }

    fn schedule(&mut self, at: TimeMs, timer: Timer) {
        self.timers.push(Reverse(Scheduled {
            at,
            seq: self.next_timer,
            timer,
        }));
        self.next_timer += 1;
    }

    fn fire(&mut self, timer: Timer, out: &mut Vec<Event>) {
        match timer {
            Timer::LeaseEnds { lease } => {
                let due = self.leases.get(&lease).map(|l| l.ends_at);
                if due == Some(self.now) {
                    self.end_lease(lease, LeaseStatus::Completed, out);
                }
            }
            Timer::NoticeEnds { lease } => {
                let due = self.leases.get(&lease).and_then(|l| l.notice_ends_at);
                if due == Some(self.now) {
                    self.end_lease(lease, LeaseStatus::Preempted, out);
                }
            }
            Timer::BidExpires { order } => {
                if let Some(&key) = self.bid_index.get(&order) {
                    let bid = &self.bids[key as usize];
                    if bid.status == OrderStatus::Open && bid.expires_at == self.now.0 {
                        self.finish_bid(key, OrderStatus::Expired, None, out);
                    }
                }
            }
            Timer::BlockOpens { serial } => {
                if let Some(&key) = self.block_by_serial.get(&serial) {
                    if self.blocks[key as usize].status == BlockStatus::Pending {
                        self.blocks[key as usize].status = BlockStatus::Open;
                        self.blocks[key as usize].updated_at = self.now;
                        self.rest_block(key);
                        out.push(Event::BlockChanged {
                            block: self.block_view(key),
                        });
                        let pool = self.blocks[key as usize].pool;
                        self.supply_changed(pool, out);
                    }
                }
            }
            Timer::BlockCloses { serial } => {
                if let Some(&key) = self.block_by_serial.get(&serial) {
                    if self.blocks[key as usize].available_until == self.now
                        && self.blocks[key as usize].status != BlockStatus::Closed
                    {
                        self.unrest_block(key);
                        let block = &mut self.blocks[key as usize];
                        block.status = BlockStatus::Closed;
                        block.updated_at = self.now;
                        out.push(Event::BlockChanged {
                            block: self.block_view(key),
                        });
                        self.forget_block_if_done(key);
                    }
                }
            }
            Timer::Auction { pool } => {
                if self.pools[pool as usize].auction_at == Some(self.now) {
                    self.pools[pool as usize].auction_at = None;
                    self.uncross(pool, out);
                }
            }
            Timer::ForgetClientOrderId { account, key } => {
                let entry = (account, key);
                if let Some((order, placed_at)) = self.client_order_ids.get(&entry).copied() {
                    if placed_at.0 + CLIENT_ORDER_ID_TTL_MS <= self.now.0 {
                        self.client_order_ids.remove(&entry);
                        if !self.bid_index.contains_key(&order) {
                            self.client_order_id_of.remove(&order);
                        }
                    }
                }
            }
        }
    }

    // ----- pools, accounts, kill switches ----------------------------------------------------

    fn configure_pool(&mut self, config: &PoolConfig, out: &mut Vec<Event>) {
        let valid = config.price_levels().is_some_and(|n| n <= PRICE_LEVELS_MAX)
            && !config.gpu.is_empty()
            && !config.region.is_empty()
            && config.id == format!("{}.{}", config.gpu, config.region)
            && config.gpus_per_order_max > 0
            && config.duration_min_s > 0
            && config.duration_min_s <= config.duration_max_s
            && !matches!(config.auction, AuctionMode::Batch { interval_ms: 0 });
        if !valid {
            return reject(out, Rejection::PoolConfigInvalid);
        }
        let levels = config.price_levels().unwrap_or(0) as usize;
        if let Some(&key) = self.pool_index.get(config.id.as_str()) {
            let pool = &self.pools[key as usize];
            let ladder_moves = pool.config.tick != config.tick
                || pool.config.price_min != config.price_min
                || pool.config.price_max != config.price_max;
            // Not only what rests now: a pending block, a block whose leased GPUs come back and
            // a filled persistent bid would all rest later at a price of the old grid.
            let in_use = self.bids.iter().any(|(_, bid)| bid.pool == key)
                || self
                    .blocks
                    .iter()
                    .any(|(_, block)| block.pool == key && block.status != BlockStatus::Closed);
            if ladder_moves && in_use {
                return reject(out, Rejection::PoolNotEmpty);
            }
            let pool = &mut self.pools[key as usize];
            if ladder_moves {
                pool.bids = Ladder::new(levels);
                pool.asks = Ladder::new(levels);
            }
            pool.config = config.clone();
            let name = pool.name.clone();
            out.push(Event::PoolConfigured { pool: name });
            self.supply_changed(key, out);
        } else {
            let name: Name = config.id.as_str().into();
            let key = self.pools.len() as u16;
            self.pools.push(Pool {
                name: name.clone(),
                config: config.clone(),
                bids: Ladder::new(levels),
                asks: Ladder::new(levels),
                last_price: None,
                halted: false,
                leased_gpus: 0,
                reclaiming_gpus: 0,
                auction_at: None,
            });
            self.pool_index.insert(name.clone(), key);
            out.push(Event::PoolConfigured { pool: name });
        }
    }

    fn intern_account(&mut self, name: &str) -> u32 {
        if let Some(&key) = self.account_index.get(name) {
            return key;
        }
        let key = self.accounts.len() as u32;
        let name: Name = name.into();
        self.accounts.push(Account {
            name: name.clone(),
            limits: None,
            killed: false,
            open_orders: 0,
            open_notional: 0,
        });
        self.account_index.insert(name, key);
        key
    }

    fn limits_of(&self, account: u32) -> AccountLimits {
        self.accounts[account as usize]
            .limits
            .unwrap_or(self.default_limits)
    }

    fn set_kill_switch(&mut self, target: &KillTarget, engaged: bool, out: &mut Vec<Event>) {
        let (kind, id, cancel): (&'static str, Name, Vec<OrderId>) = match target {
            KillTarget::Account(name) => {
                let key = self.intern_account(name);
                self.accounts[key as usize].killed = engaged;
                let cancel = self.sorted_bid_ids(|bid| bid.account == key);
                ("account", self.accounts[key as usize].name.clone(), cancel)
            }
            KillTarget::Pool(name) => {
                let Some(&key) = self.pool_index.get(name.as_str()) else {
                    return reject(out, Rejection::UnknownPool);
                };
                self.pools[key as usize].halted = engaged;
                let cancel = self.sorted_bid_ids(|bid| bid.pool == key);
                ("pool", self.pools[key as usize].name.clone(), cancel)
            }
        };
        out.push(Event::KillSwitchChanged { kind, id, engaged });
        if engaged {
            for order in cancel {
                let key = self.bid_index[&order];
                if !self.bids[key as usize].status.is_terminal() {
                    self.finish_bid(
                        key,
                        OrderStatus::Cancelled,
                        Some(CancelReason::KillSwitch),
                        out,
                    );
                }
            }
        } else if let KillTarget::Pool(name) = target {
            let key = self.pool_index[name.as_str()];
            self.supply_changed(key, out);
        }
    }

    fn sorted_bid_ids(&self, keep: impl Fn(&Bid) -> bool) -> Vec<OrderId> {
        let mut ids: Vec<OrderId> = self
            .bids
            .iter()
            .filter(|(_, bid)| keep(bid))
            .map(|(_, bid)| bid.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    // ----- bids -------------------------------------------------------------------------------

    fn place_bid(&mut self, cmd: &PlaceBid, out: &mut Vec<Event>) {
        let Some(&pool_key) = self.pool_index.get(cmd.pool.as_str()) else {
            return reject(out, Rejection::UnknownPool);
        };
        // Accounts are created by their first accepted command, so a refusal changes nothing.
        let known = self.account_index.get(cmd.account.as_str()).copied();
        if let (Some(account), Some(key)) = (known, &cmd.client_order_id) {
            if let Some((order_id, _)) = self.client_order_ids.get(&(account, key.as_str().into()))
            {
                out.push(Event::DuplicateClientOrderId {
                    order_id: *order_id,
                });
                return;
            }
        }
        let pool = &self.pools[pool_key as usize];
        if pool.halted || known.is_some_and(|a| self.accounts[a as usize].killed) {
            return reject(out, Rejection::KillSwitch);
        }
        if let Err(reason) = check_bid_shape(pool, cmd, self.now) {
            return reject(out, reason);
        }
        let min_gpus = cmd.min_gpus.unwrap_or(cmd.gpus);
        let max_duration_s = cmd.max_duration_s.unwrap_or(cmd.duration_s);
        let notional = notional_of(cmd.price, cmd.gpus, cmd.duration_s);
        let (limits, open_orders, open_notional) = match known {
            Some(a) => {
                let holder = &self.accounts[a as usize];
                (self.limits_of(a), holder.open_orders, holder.open_notional)
            }
            None => (self.default_limits, 0, 0),
        };
        if open_orders >= limits.orders_open_max {
            return reject(out, Rejection::LimitOrdersOpen);
        }
        if open_notional + notional > limits.open_notional_max_micros as u128 {
            return reject(out, Rejection::LimitNotional);
        }
        let account = self.intern_account(&cmd.account);

        let id = OrderId(self.take_id());
        let bid = Bid {
            id,
            price: cmd.price,
            priority: 0,
            created_at: self.now,
            updated_at: self.now,
            expires_at: cmd.expires_at.map_or(i64::MIN, |t| t.0),
            account,
            gpus: cmd.gpus,
            remaining: cmd.gpus,
            min_gpus,
            duration_s: cmd.duration_s,
            max_duration_s,
            active_leases: 0,
            links: Links::default(),
            pool: pool_key,
            tif: cmd.tif,
            status: OrderStatus::Open,
            cancel_reason: None,
            persistent: cmd.persistent,
            has_client_order_id: cmd.client_order_id.is_some(),
        };
        let key = self.bids.insert(bid) as u32;
        self.bid_index.insert(id, key);
        if let Some(client_key) = &cmd.client_order_id {
            let client_key: Name = client_key.as_str().into();
            self.client_order_ids
                .insert((account, client_key.clone()), (id, self.now));
            self.client_order_id_of.insert(id, client_key.clone());
            self.schedule(
                TimeMs(self.now.0 + CLIENT_ORDER_ID_TTL_MS),
                Timer::ForgetClientOrderId {
                    account,
                    key: client_key,
                },
            );
        }
        if let Some(expires_at) = cmd.expires_at {
            self.schedule(expires_at, Timer::BidExpires { order: id });
        }
        self.rest_bid(key);
        out.push(Event::BidAccepted {
            order: self.order_view(key),
        });
        let pool = &self.pools[pool_key as usize];
        if pool.is_batch() {
            self.arm_auction(pool_key);
            return;
        }
        self.match_or_cancel_remainder(key, out);
    }

    /// Matches an Open bid of a continuous pool; whatever of an IOC or FOK bid stays is
    /// cancelled, so neither ever rests (also when a persistent one reopens).
    fn match_or_cancel_remainder(&mut self, key: u32, out: &mut Vec<Event>) {
        if self.match_bid(key, out) {
            return;
        }
        let reason = match self.bids[key as usize].tif {
            TimeInForce::Ioc => CancelReason::IocRemainder,
            TimeInForce::Fok => CancelReason::FokNotFillable,
            TimeInForce::Gtc | TimeInForce::Gtd => return,
        };
        self.finish_bid(key, OrderStatus::Cancelled, Some(reason), out);
    }

    fn owned_bid(&mut self, account: &str, order: OrderId) -> Result<u32, Rejection> {
        let key = *self.bid_index.get(&order).ok_or(Rejection::UnknownOrder)?;
        let owner = self.bids[key as usize].account;
        if self.account_index.get(account) != Some(&owner) {
            return Err(Rejection::NotYourOrder);
        }
        Ok(key)
    }

    fn amend_bid(&mut self, cmd: &AmendBid, out: &mut Vec<Event>) {
        let key = match self.owned_bid(&cmd.account, cmd.order_id) {
            Ok(key) => key,
            Err(reason) => return reject(out, reason),
        };
        let bid = &self.bids[key as usize];
        if bid.status != OrderStatus::Open {
            return reject(out, Rejection::OrderNotOpen);
        }
        let pool_key = bid.pool;
        let pool = &self.pools[pool_key as usize];
        if pool.halted || self.accounts[bid.account as usize].killed {
            return reject(out, Rejection::KillSwitch);
        }
        let new_price = cmd.price.unwrap_or(bid.price);
        let new_gpus = cmd.gpus.unwrap_or(bid.gpus);
        if new_price == bid.price && new_gpus == bid.gpus {
            return reject(out, Rejection::NothingToChange);
        }
        if let Err(reason) = pool.check_price(new_price) {
            return reject(out, reason);
        }
        let filled = bid.gpus - bid.remaining;
        if new_gpus == 0 {
            return reject(out, Rejection::GpusMustNotBeZero);
        }
        if new_gpus > pool.config.gpus_per_order_max {
            return reject(out, Rejection::GpusOverMax);
        }
        if new_gpus <= filled {
            return reject(out, Rejection::OrderNotOpen);
        }
        let new_remaining = new_gpus - filled;
        let old_notional = notional_of(bid.price, bid.remaining, bid.duration_s);
        let new_notional = notional_of(new_price, new_remaining, bid.duration_s);
        let account = bid.account;
        let limits = self.limits_of(account);
        if new_notional > old_notional
            && self.accounts[account as usize].open_notional - old_notional + new_notional
                > limits.open_notional_max_micros as u128
        {
            return reject(out, Rejection::LimitNotional);
        }
        let keeps_priority = new_price == bid.price && new_gpus < bid.gpus;
        if keeps_priority {
            let level = pool.level_of(bid.price);
            let old_remaining = bid.remaining;
            self.touch(pool_key, Side::Bid, level);
            let pool = &mut self.pools[pool_key as usize];
            pool.bids
                .resize(level, old_remaining as u64, new_remaining as u64);
            let account = &mut self.accounts[account as usize];
            account.open_notional = account.open_notional - old_notional + new_notional;
            let bid = &mut self.bids[key as usize];
            bid.gpus = new_gpus;
            bid.remaining = new_remaining;
            bid.min_gpus = bid.min_gpus.min(new_gpus);
        } else {
            self.unrest_bid(key);
            let bid = &mut self.bids[key as usize];
            bid.price = new_price;
            bid.gpus = new_gpus;
            bid.remaining = new_remaining;
            bid.min_gpus = bid.min_gpus.min(new_gpus);
            self.rest_bid(key);
        }
        self.bids[key as usize].updated_at = self.now;
        if self.pools[pool_key as usize].is_batch() {
            out.push(Event::OrderChanged {
                order: self.order_view(key),
            });
            self.arm_auction(pool_key);
            return;
        }
        if !self.match_bid(key, out) {
            out.push(Event::OrderChanged {
                order: self.order_view(key),
            });
        }
    }

    fn cancel_bid(&mut self, account: &str, order: OrderId, out: &mut Vec<Event>) {
        let key = match self.owned_bid(account, order) {
            Ok(key) => key,
            Err(reason) => return reject(out, reason),
        };
        if self.bids[key as usize].status.is_terminal() {
            return reject(out, Rejection::OrderNotOpen);
        }
        self.finish_bid(
            key,
            OrderStatus::Cancelled,
            Some(CancelReason::ByOwner),
            out,
        );
    }

    /// Puts an Open bid at the back of its price level, with a fresh time priority.
    fn rest_bid(&mut self, key: u32) {
        let priority = self.take_priority();
        let bid = &mut self.bids[key as usize];
        bid.priority = priority;
        let (pool_key, price, remaining, account) =
            (bid.pool, bid.price, bid.remaining, bid.account);
        let notional = notional_of(price, remaining, bid.duration_s);
        let level = self.pools[pool_key as usize].level_of(price);
        self.touch(pool_key, Side::Bid, level);
        self.pools[pool_key as usize]
            .bids
            .push_back(&mut self.bids, key, level, remaining as u64);
        let holder = &mut self.accounts[account as usize];
        holder.open_orders += 1;
        holder.open_notional += notional;
    }

    /// Takes an Open bid off its level.
    fn unrest_bid(&mut self, key: u32) {
        let bid = &self.bids[key as usize];
        let (pool_key, price, remaining, account) =
            (bid.pool, bid.price, bid.remaining, bid.account);
        let notional = notional_of(price, remaining, bid.duration_s);
        let level = self.pools[pool_key as usize].level_of(price);
        self.touch(pool_key, Side::Bid, level);
        self.pools[pool_key as usize]
            .bids
            .unlink(&mut self.bids, key, level, remaining as u64);
        let holder = &mut self.accounts[account as usize];
        holder.open_orders -= 1;
        holder.open_notional -= notional;
    }

    /// Ends an Open (or persistent Filled) bid: off the book, final event, and forgotten
    /// unless a persistent bid still has leases running.
    fn finish_bid(
        &mut self,
        key: u32,
        status: OrderStatus,
        reason: Option<CancelReason>,
        out: &mut Vec<Event>,
    ) {
        if self.bids[key as usize].status == OrderStatus::Open {
            self.unrest_bid(key);
        }
        let bid = &mut self.bids[key as usize];
        bid.status = status;
        bid.cancel_reason = reason;
        bid.updated_at = self.now;
        out.push(Event::OrderChanged {
            order: self.order_view(key),
        });
        self.forget_bid_if_done(key);
    }

    fn forget_bid_if_done(&mut self, key: u32) {
        let bid = &self.bids[key as usize];
        let done = match bid.status {
            OrderStatus::Open => false,
            OrderStatus::Filled => !bid.persistent || bid.active_leases == 0,
            OrderStatus::Cancelled | OrderStatus::Expired => true,
        };
        if done {
            let bid = self.bids.remove(key as usize);
            self.bid_index.remove(&bid.id);
            // The key stays while its idempotency window runs, so a retry still finds it.
            if let Some(client_key) = bid
                .has_client_order_id
                .then(|| self.client_order_id_of.get(&bid.id))
                .flatten()
            {
                let remembered = self
                    .client_order_ids
                    .get(&(bid.account, client_key.clone()))
                    .is_some_and(|(order, _)| *order == bid.id);
                if !remembered {
                    self.client_order_id_of.remove(&bid.id);
                }
            }
        }
    }

    /// Tries to execute a resting continuous-pool bid against eligible asks. Returns whether
    /// the bid left the book (filled).
    fn match_bid(&mut self, key: u32, out: &mut Vec<Event>) -> bool {
        let bid = &self.bids[key as usize];
        let pool = &self.pools[bid.pool as usize];
        if pool.halted {
            return false;
        }
        let needed = match bid.tif {
            TimeInForce::Fok => bid.remaining,
            _ => bid.min_gpus.min(bid.remaining),
        };
        let id = bid.id;
        let mut fills = std::mem::take(&mut self.fills);
        let got = self.collect_fills(key, &mut fills);
        let executed = got >= needed && got > 0;
        if executed {
            self.execute(key, &fills, Pricing::Maker, out);
        }
        self.fills = fills;
        executed
            && self
                .bid_index
                .get(&id)
                .is_none_or(|&key| self.bids[key as usize].status != OrderStatus::Open)
    }

    /// Walks the ask side in price-time order, taking eligible GPUs up to the bid's remaining.
    fn collect_fills(&self, key: u32, fills: &mut Vec<(u32, u32)>) -> u32 {
        fills.clear();
        let bid = &self.bids[key as usize];
        let pool = &self.pools[bid.pool as usize];
        let limit_level = pool.level_of(bid.price);
        let shortest_until = self.now.plus_s(bid.duration_s as u64);
        let mut want = bid.remaining;
        let mut level = pool.asks.lowest();
        while let Some(at) = level {
            if at > limit_level || want == 0 {
                break;
            }
            let mut cursor = pool.asks.head(at);
            while cursor != NIL && want > 0 {
                let block = &self.blocks[cursor as usize];
                if block.available_until >= shortest_until {
                    let take = block.unsold.min(want);
                    fills.push((cursor, take));
                    want -= take;
                }
                cursor = block.links.next;
            }
            level = pool.asks.lowest_at_or_above(at + 1);
        }
        bid.remaining - want
    }

    /// Executes fills of one bid: a trade and a lease per block used.
    fn execute(&mut self, key: u32, fills: &[(u32, u32)], pricing: Pricing, out: &mut Vec<Event>) {
        let pool_key = self.bids[key as usize].pool;
        let total: u32 = fills.iter().map(|(_, gpus)| gpus).sum();
        let mut touched_blocks: Vec<u32> = Vec::new();
        for &(block_key, gpus) in fills {
            let bid = &self.bids[key as usize];
            let block = &self.blocks[block_key as usize];
            let (price, maker_side) = match pricing {
                Pricing::Uniform(price) => (
                    price,
                    if bid.priority < block.priority {
                        Side::Bid
                    } else {
                        Side::Ask
                    },
                ),
                Pricing::Maker if bid.priority < block.priority => (bid.price, Side::Bid),
                Pricing::Maker => (block.reserve_price, Side::Ask),
            };
            let ends_at = self
                .now
                .plus_s(bid.max_duration_s as u64)
                .min(block.available_until);
            let (order_id, buyer) = (bid.id, bid.account);
            let trade_id = TradeId(self.take_id());
            let lease_id = LeaseId(self.take_id());

            self.take_from_book(block_key, gpus);
            let nodes = assign_nodes(&mut self.blocks[block_key as usize].nodes, gpus);
            let block = &mut self.blocks[block_key as usize];
            block.leased += gpus;
            block.leases.push(lease_id);
            block.updated_at = self.now;
            let lease = Lease {
                id: lease_id,
                order_id,
                buyer,
                supplier: block.supplier,
                pool: pool_key,
                block_serial: block.serial,
                gpus,
                price,
                status: LeaseStatus::Active,
                started_at: self.now,
                ends_at,
                notice_ends_at: None,
                preempted_at: None,
                emergency: false,
                nodes,
            };
            let pool = &mut self.pools[pool_key as usize];
            pool.leased_gpus += gpus as u64;
            pool.last_price = Some(price);
            self.leases.insert(lease_id, lease);
            self.schedule(ends_at, Timer::LeaseEnds { lease: lease_id });
            self.bids[key as usize].active_leases += 1;
            out.push(Event::Traded {
                trade: TradeView {
                    id: trade_id,
                    pool: self.pools[pool_key as usize].name.clone(),
                    price,
                    gpus,
                    order_id,
                    lease_id,
                    buyer: self.accounts[buyer as usize].name.clone(),
                    supplier: self.accounts[self.blocks[block_key as usize].supplier as usize]
                        .name
                        .clone(),
                    block_id: self.blocks[block_key as usize].block_id.clone(),
                    maker_side,
                    at: self.now,
                },
            });
            out.push(Event::LeaseOpened {
                lease: self.lease_view(&self.leases[&lease_id]),
            });
            if !touched_blocks.contains(&block_key) {
                touched_blocks.push(block_key);
            }
        }
        for block_key in touched_blocks {
            out.push(Event::BlockChanged {
                block: self.block_view(block_key),
            });
        }
        // The bid: fewer GPUs resting, or off the book when done.
        let bid = &self.bids[key as usize];
        let (pool_key, price, remaining, account, duration_s) = (
            bid.pool,
            bid.price,
            bid.remaining,
            bid.account,
            bid.duration_s,
        );
        let level = self.pools[pool_key as usize].level_of(price);
        if total == remaining {
            self.unrest_bid(key);
            let bid = &mut self.bids[key as usize];
            bid.remaining = 0;
            bid.status = OrderStatus::Filled;
            bid.updated_at = self.now;
            out.push(Event::OrderChanged {
                order: self.order_view(key),
            });
            self.forget_bid_if_done(key);
        } else {
            self.touch(pool_key, Side::Bid, level);
            self.pools[pool_key as usize].bids.resize(
                level,
                remaining as u64,
                (remaining - total) as u64,
            );
            let holder = &mut self.accounts[account as usize];
            holder.open_notional -= notional_of(price, remaining, duration_s)
                - notional_of(price, remaining - total, duration_s);
            let bid = &mut self.bids[key as usize];
            bid.remaining -= total;
            bid.updated_at = self.now;
            out.push(Event::OrderChanged {
                order: self.order_view(key),
            });
        }
    }

    /// After supply grew in a continuous pool, looks at resting bids again in priority order.
    fn supply_changed(&mut self, pool_key: u16, out: &mut Vec<Event>) {
        let pool = &self.pools[pool_key as usize];
        if pool.is_batch() {
            self.arm_auction(pool_key);
            return;
        }
        if pool.halted {
            return;
        }
        let Some(best_ask) = pool.asks.lowest() else {
            return;
        };
        let mut level = pool.bids.highest();
        while let Some(at) = level {
            if at < best_ask {
                break;
            }
            let mut cursor = self.pools[pool_key as usize].bids.head(at);
            while cursor != NIL {
                let next = self.bids[cursor as usize].links.next;
                self.match_bid(cursor, out);
                cursor = next;
            }
            let pool = &self.pools[pool_key as usize];
            if pool.asks.lowest().is_none() {
                break;
            }
            level = if at == 0 {
                None
            } else {
                pool.bids.highest_at_or_below(at - 1)
            };
        }
    }

    // ----- capacity blocks -------------------------------------------------------------------

    fn release_capacity(&mut self, cmd: &ReleaseCapacity, out: &mut Vec<Event>) {
        let Some(&pool_key) = self.pool_index.get(cmd.pool.as_str()) else {
            return reject(out, Rejection::UnknownPool);
        };
        let known = self.account_index.get(cmd.supplier.as_str()).copied();
        let pool = &self.pools[pool_key as usize];
        if pool.halted || known.is_some_and(|s| self.accounts[s as usize].killed) {
            return reject(out, Rejection::KillSwitch);
        }
        let block_id: Name = cmd.block_id.as_str().into();
        if known.is_some_and(|s| {
            self.block_index
                .get(&s)
                .is_some_and(|blocks| blocks.contains_key(cmd.block_id.as_str()))
        }) {
            return reject(out, Rejection::BlockIdTaken);
        }
        if cmd.gpus == 0 {
            return reject(out, Rejection::GpusMustNotBeZero);
        }
        if cmd.gpus > pool.config.gpus_per_order_max {
            return reject(out, Rejection::GpusOverMax);
        }
        if let Err(reason) = pool.check_price(cmd.reserve_price) {
            return reject(out, reason);
        }
        let available_from = cmd.available_from.unwrap_or(self.now).max(self.now);
        if cmd.available_until < available_from.plus_s(pool.config.duration_min_s as u64) {
            return reject(out, Rejection::WindowInvalid);
        }
        if !cmd.nodes.is_empty()
            && (cmd.nodes.len() > NODES_PER_BLOCK_MAX
                || cmd.nodes.iter().any(|n| n.gpus == 0)
                || repeats_a_node(&cmd.nodes)
                || cmd.nodes.iter().map(|n| n.gpus as u64).sum::<u64>() != cmd.gpus as u64)
        {
            return reject(out, Rejection::NodesDoNotMatchGpus);
        }
        let supplier = self.intern_account(&cmd.supplier);
        let serial = self.take_id();
        let open_now = available_from <= self.now;
        let key = self.blocks.insert(Block {
            serial,
            supplier,
            pool: pool_key,
            block_id: block_id.clone(),
            status: if open_now {
                BlockStatus::Open
            } else {
                BlockStatus::Pending
            },
            gpus: cmd.gpus,
            unsold: cmd.gpus,
            leased: 0,
            reclaimed: 0,
            reclaim_pending: 0,
            reserve_price: cmd.reserve_price,
            available_from,
            available_until: cmd.available_until,
            revenue: 0,
            forecast_at: None,
            nodes: cmd
                .nodes
                .iter()
                .map(|n| NodeState {
                    node: n.node.clone(),
                    gpus: n.gpus,
                    free: n.gpus,
                })
                .collect(),
            leases: Vec::new(),
            priority: 0,
            on_book: false,
            links: Links::default(),
            updated_at: self.now,
        }) as u32;
        self.block_index
            .entry(supplier)
            .or_default()
            .insert(block_id, key);
        self.block_by_serial.insert(serial, key);
        self.schedule(cmd.available_until, Timer::BlockCloses { serial });
        if open_now {
            self.rest_block(key);
        } else {
            self.schedule(available_from, Timer::BlockOpens { serial });
        }
        out.push(Event::BlockChanged {
            block: self.block_view(key),
        });
        if open_now {
            self.supply_changed(pool_key, out);
        }
    }

    fn owned_block(&self, supplier: &str, block_id: &str) -> Result<u32, Rejection> {
        let supplier = *self
            .account_index
            .get(supplier)
            .ok_or(Rejection::UnknownBlock)?;
        self.block_index
            .get(&supplier)
            .and_then(|blocks| blocks.get(block_id))
            .copied()
            .ok_or(Rejection::UnknownBlock)
    }

    fn update_capacity(&mut self, cmd: &UpdateCapacity, out: &mut Vec<Event>) {
        let key = match self.owned_block(&cmd.supplier, &cmd.block_id) {
            Ok(key) => key,
            Err(reason) => return reject(out, reason),
        };
        let block = &self.blocks[key as usize];
        if block.status == BlockStatus::Closed {
            return reject(out, Rejection::WindowInvalid);
        }
        let pool_key = block.pool;
        let pool = &self.pools[pool_key as usize];
        // As for an amend, naming the current values changes nothing.
        let new_price = cmd.reserve_price.filter(|p| *p != block.reserve_price);
        let new_until = cmd.available_until.filter(|t| *t != block.available_until);
        if new_price.is_none() && new_until.is_none() {
            return reject(out, Rejection::NothingToChange);
        }
        if let Some(price) = cmd.reserve_price {
            if let Err(reason) = pool.check_price(price) {
                return reject(out, reason);
            }
        }
        if let Some(until) = cmd.available_until {
            if until < block.available_until {
                return reject(out, Rejection::WindowCannotShrink);
            }
        }
        let serial = block.serial;
        let repriced = cmd.reserve_price.is_some_and(|p| p != block.reserve_price);
        let was_on_book = block.on_book;
        if repriced && was_on_book {
            self.unrest_block(key);
        }
        let block = &mut self.blocks[key as usize];
        if let Some(price) = cmd.reserve_price {
            block.reserve_price = price;
        }
        let extended = cmd
            .available_until
            .filter(|until| *until > block.available_until);
        if let Some(until) = extended {
            block.available_until = until;
        }
        block.updated_at = self.now;
        if repriced && was_on_book {
            self.rest_block(key);
        }
        if let Some(until) = extended {
            self.schedule(until, Timer::BlockCloses { serial });
        }
        out.push(Event::BlockChanged {
            block: self.block_view(key),
        });
        if self.blocks[key as usize].status == BlockStatus::Open {
            self.supply_changed(pool_key, out);
        }
    }

    /// Puts an Open block's unsold GPUs on the ask side with a fresh time priority.
    fn rest_block(&mut self, key: u32) {
        let priority = self.take_priority();
        let block = &mut self.blocks[key as usize];
        block.priority = priority;
        if block.unsold == 0 || block.status != BlockStatus::Open {
            return;
        }
        block.on_book = true;
        let (pool_key, price, unsold) = (block.pool, block.reserve_price, block.unsold);
        let level = self.pools[pool_key as usize].level_of(price);
        self.touch(pool_key, Side::Ask, level);
        self.pools[pool_key as usize]
            .asks
            .push_back(&mut self.blocks, key, level, unsold as u64);
    }

    fn unrest_block(&mut self, key: u32) {
        let block = &mut self.blocks[key as usize];
        if !block.on_book {
            return;
        }
        block.on_book = false;
        let (pool_key, price, unsold) = (block.pool, block.reserve_price, block.unsold);
        let level = self.pools[pool_key as usize].level_of(price);
        self.touch(pool_key, Side::Ask, level);
        self.pools[pool_key as usize]
            .asks
            .unlink(&mut self.blocks, key, level, unsold as u64);
    }

    /// Takes GPUs of a block's unsold stock (sold or reclaimed), keeping the book in step.
    fn take_from_book(&mut self, key: u32, gpus: u32) {
        let block = &self.blocks[key as usize];
        debug_assert!(
            block.unsold >= gpus,
            "taking more GPUs than the block has unsold"
        );
        if block.on_book {
            if block.unsold == gpus {
                self.unrest_block(key);
            } else {
                let (pool_key, price, unsold) = (block.pool, block.reserve_price, block.unsold);
                let level = self.pools[pool_key as usize].level_of(price);
                self.touch(pool_key, Side::Ask, level);
                self.pools[pool_key as usize].asks.resize(
                    level,
                    unsold as u64,
                    (unsold - gpus) as u64,
                );
            }
        }
        self.blocks[key as usize].unsold -= gpus;
    }

    /// Returns GPUs to a block's unsold stock; back on the book if its window is open.
    fn return_to_book(&mut self, key: u32, gpus: u32) {
        if gpus == 0 {
            return;
        }
        let block = &self.blocks[key as usize];
        if block.on_book {
            let (pool_key, price, unsold) = (block.pool, block.reserve_price, block.unsold);
            let level = self.pools[pool_key as usize].level_of(price);
            self.touch(pool_key, Side::Ask, level);
            self.pools[pool_key as usize]
                .asks
                .resize(level, unsold as u64, (unsold + gpus) as u64);
            self.blocks[key as usize].unsold += gpus;
        } else {
            self.blocks[key as usize].unsold += gpus;
            // Returned GPUs join the back of the queue, like any new supply.
            self.rest_block(key);
        }
    }

    fn reclaim_capacity(&mut self, cmd: &ReclaimCapacity, out: &mut Vec<Event>) {
        let key = match self.owned_block(&cmd.supplier, &cmd.block_id) {
            Ok(key) => key,
            Err(reason) => return reject(out, reason),
        };
        let block = &self.blocks[key as usize];
        let pool = &self.pools[block.pool as usize];
        if cmd.gpus == 0 {
            return reject(out, Rejection::GpusMustNotBeZero);
        }
        let notice_s = cmd.notice_s.unwrap_or(pool.config.notice_s);
        // An emergency is a notice shorter than the pool's promise; the flag only allows one.
        let emergency = notice_s < pool.config.notice_s;
        if emergency && !cmd.emergency {
            return reject(out, Rejection::NoticeTooShort);
        }
        let active_leased: u32 = block
            .leases
            .iter()
            .map(|id| &self.leases[id])
            .filter(|lease| lease.status == LeaseStatus::Active)
            .map(|lease| lease.gpus)
            .sum();
        if cmd.gpus > block.unsold + active_leased {
            return reject(out, Rejection::ReclaimOverBlock);
        }
        let pool_key = block.pool;
        let from_book = cmd.gpus.min(block.unsold);
        self.take_from_book(key, from_book);
        release_free_nodes(&mut self.blocks[key as usize].nodes, from_book);
        self.blocks[key as usize].reclaimed += from_book;

        // Then whole leases: lowest price first, newest first.
        let mut candidates: Vec<(PriceMicros, Reverse<TimeMs>, Reverse<LeaseId>)> = self.blocks
            [key as usize]
            .leases
            .iter()
            .map(|id| &self.leases[id])
            .filter(|lease| lease.status == LeaseStatus::Active)
            .map(|lease| (lease.price, Reverse(lease.started_at), Reverse(lease.id)))
            .collect();
        candidates.sort_unstable();
        let still_needed = cmd.gpus - from_book;
        let notice_ends_at = self.now.plus_s(notice_s as u64);
        let mut covered = 0;
        let mut preempted = Vec::new();
        for (_, _, Reverse(lease_id)) in candidates {
            if covered >= still_needed {
                break;
            }
            let lease = self
                .leases
                .get_mut(&lease_id)
                .expect("block lists its leases");
            lease.status = LeaseStatus::Preempting;
            lease.notice_ends_at = Some(notice_ends_at);
            lease.preempted_at = Some(self.now);
            lease.emergency = emergency;
            covered += lease.gpus;
            self.pools[pool_key as usize].reclaiming_gpus += lease.gpus as u64;
            preempted.push(lease_id);
        }
        let block = &mut self.blocks[key as usize];
        block.reclaim_pending += still_needed;
        block.updated_at = self.now;
        out.push(Event::ReclaimAccepted {
            supplier: self.accounts[block.supplier as usize].name.clone(),
            block_id: block.block_id.clone(),
            gpus: cmd.gpus,
            gpus_from_book: from_book,
            leases_preempted: preempted.len() as u32,
            notice_ends_at,
            emergency,
        });
        for lease_id in preempted {
            self.schedule(notice_ends_at, Timer::NoticeEnds { lease: lease_id });
            out.push(Event::LeaseChanged {
                lease: self.lease_view(&self.leases[&lease_id]),
            });
        }
        out.push(Event::BlockChanged {
            block: self.block_view(key),
        });
    }

    fn forecast_reclaim(
        &mut self,
        supplier: &str,
        block_id: &str,
        reclaim_at: TimeMs,
        out: &mut Vec<Event>,
    ) {
        let key = match self.owned_block(supplier, block_id) {
            Ok(key) => key,
            Err(reason) => return reject(out, reason),
        };
        if reclaim_at < self.now {
            return reject(out, Rejection::ReclaimAtInPast);
        }
        let block = &mut self.blocks[key as usize];
        block.forecast_at = Some(reclaim_at);
        block.updated_at = self.now;
        let mut warned: Vec<LeaseId> = block.leases.clone();
        warned.sort_unstable();
        for lease_id in warned {
            let lease = &self.leases[&lease_id];
            if lease.status == LeaseStatus::Active {
                out.push(Event::ReclaimForecast {
                    lease_id,
                    buyer: self.accounts[lease.buyer as usize].name.clone(),
                    reclaim_at,
                });
            }
        }
        out.push(Event::BlockChanged {
            block: self.block_view(key),
        });
    }

    fn forget_block_if_done(&mut self, key: u32) {
        let block = &self.blocks[key as usize];
        if block.status == BlockStatus::Closed && block.leases.is_empty() {
            let block = self.blocks.remove(key as usize);
            if let Some(blocks) = self.block_index.get_mut(&block.supplier) {
                blocks.remove(&block.block_id);
            }
            self.block_by_serial.remove(&block.serial);
        }
    }

    // ----- leases -----------------------------------------------------------------------------

    fn release_lease(&mut self, account: &str, lease_id: LeaseId, out: &mut Vec<Event>) {
        let Some(lease) = self.leases.get(&lease_id) else {
            return reject(out, Rejection::UnknownLease);
        };
        if self.account_index.get(account) != Some(&lease.buyer) {
            return reject(out, Rejection::NotYourLease);
        }
        self.end_lease(lease_id, LeaseStatus::Released, out);
    }

    /// Ends a running lease: final cost, GPUs back to the supplier or the book, the bid told.
    fn end_lease(&mut self, lease_id: LeaseId, status: LeaseStatus, out: &mut Vec<Event>) {
        let mut lease = self
            .leases
            .remove(&lease_id)
            .expect("ending a running lease");
        let was_preempting = lease.status == LeaseStatus::Preempting;
        lease.status = status;
        let ended_at = self.now;
        let pool_key = lease.pool;
        let free_window_s = self.pools[pool_key as usize]
            .config
            .free_if_preempted_within_s;
        let free = status == LeaseStatus::Preempted
            && lease
                .preempted_at
                .is_some_and(|at| at.0 - lease.started_at.0 < free_window_s as i64 * 1000);
        let cost = if free {
            0
        } else {
            cost_micros(
                lease.price,
                lease.gpus,
                elapsed_s(lease.started_at, ended_at),
            )
        };
        let block_key = self.block_by_serial[&lease.block_serial];
        let block = &mut self.blocks[block_key as usize];
        block.leased -= lease.gpus;
        block.leases.retain(|id| *id != lease_id);
        block.revenue += cost;
        block.updated_at = self.now;
        let to_supplier = if was_preempting {
            lease.gpus.min(block.reclaim_pending)
        } else {
            0
        };
        block.reclaim_pending -= to_supplier;
        block.reclaimed += to_supplier;
        free_nodes(&mut block.nodes, &lease.nodes);
        release_free_nodes(&mut block.nodes, to_supplier);
        let back = lease.gpus - to_supplier;
        let block_open = block.status == BlockStatus::Open;
        let pool = &mut self.pools[pool_key as usize];
        pool.leased_gpus -= lease.gpus as u64;
        if was_preempting {
            pool.reclaiming_gpus -= lease.gpus as u64;
        }
        if block_open {
            self.return_to_book(block_key, back);
        } else {
            self.blocks[block_key as usize].unsold += back;
        }
        out.push(Event::LeaseChanged {
            lease: self.lease_view_ended(&lease, ended_at, cost),
        });
        out.push(Event::BlockChanged {
            block: self.block_view(block_key),
        });
        self.forget_block_if_done(block_key);

        if let Some(&bid_key) = self.bid_index.get(&lease.order_id) {
            let bid = &mut self.bids[bid_key as usize];
            bid.active_leases -= 1;
            let reopens =
                status == LeaseStatus::Preempted && bid.persistent && !bid.status.is_terminal();
            let past_its_date = bid.tif == TimeInForce::Gtd && bid.expires_at <= self.now.0;
            if reopens && past_its_date {
                // A GTD bid does not bid again after its date (no timer would ever expire it).
                self.finish_bid(bid_key, OrderStatus::Expired, None, out);
            } else if reopens {
                // A persistent bid asks again for the GPUs it lost.
                if bid.status == OrderStatus::Open {
                    self.unrest_bid(bid_key);
                }
                let bid = &mut self.bids[bid_key as usize];
                bid.remaining += lease.gpus;
                bid.status = OrderStatus::Open;
                bid.updated_at = self.now;
                self.rest_bid(bid_key);
                out.push(Event::OrderChanged {
                    order: self.order_view(bid_key),
                });
                if self.pools[pool_key as usize].is_batch() {
                    self.arm_auction(pool_key);
                } else {
                    self.match_or_cancel_remainder(bid_key, out);
                }
            } else {
                self.forget_bid_if_done(bid_key);
            }
        }
        if back > 0 && block_open {
            self.supply_changed(pool_key, out);
        }
    }

    // ----- batch auctions ---------------------------------------------------------------------

    fn arm_auction(&mut self, pool_key: u16) {
        let pool = &self.pools[pool_key as usize];
        let AuctionMode::Batch { interval_ms } = pool.config.auction else {
            return;
        };
        if pool.auction_at.is_some() {
            return;
        }
        let interval = interval_ms as i64;
        let at = TimeMs((self.now.0.div_euclid(interval) + 1) * interval);
        self.pools[pool_key as usize].auction_at = Some(at);
        self.schedule(at, Timer::Auction { pool: pool_key });
    }

    /// Uncrosses a batch pool at the single price that executes the most GPUs.
    fn uncross(&mut self, pool_key: u16, out: &mut Vec<Event>) {
        let pool = &self.pools[pool_key as usize];
        if pool.halted {
            return;
        }
        if let (Some(best_bid), Some(best_ask)) = (pool.bids.highest(), pool.asks.lowest()) {
            if best_bid >= best_ask {
                let candidates: Vec<u32> = (best_ask..=best_bid)
                    .filter(|&level| pool.bids.level(level).1 > 0 || pool.asks.level(level).1 > 0)
                    .take(AUCTION_CANDIDATE_PRICES_MAX)
                    .collect();
                let last = pool.last_price;
                // Most GPUs, then the smallest imbalance, then closest to the last trade, then
                // the lowest price.
                let mut best: Option<AuctionScore> = None;
                for level in candidates {
                    let price = self.pools[pool_key as usize].price_of(level);
                    let (volume, _) = self.allocate(pool_key, level, None);
                    if volume == 0 {
                        continue;
                    }
                    let imbalance = self.imbalance(pool_key, level);
                    let distance = last.map_or(0, |l| l.0.abs_diff(price.0));
                    let score = (
                        volume,
                        Reverse(imbalance),
                        Reverse(distance),
                        Reverse(level),
                    );
                    if best.is_none_or(|b| score > b) {
                        best = Some(score);
                    }
                }
                if let Some((_, _, _, Reverse(level))) = best {
                    let price = self.pools[pool_key as usize].price_of(level);
                    let (volume, _) = self.allocate(pool_key, level, Some(out));
                    out.push(Event::AuctionCleared {
                        pool: self.pools[pool_key as usize].name.clone(),
                        price,
                        gpus: volume,
                    });
                }
            }
        }
        // IOC and FOK bids live for one uncross only.
        let leftovers = self.sorted_bid_ids(|bid| {
            bid.pool == pool_key
                && bid.status == OrderStatus::Open
                && matches!(bid.tif, TimeInForce::Ioc | TimeInForce::Fok)
        });
        for order in leftovers {
            let key = self.bid_index[&order];
            let reason = if self.bids[key as usize].tif == TimeInForce::Fok {
                CancelReason::FokNotFillable
            } else {
                CancelReason::IocRemainder
            };
            self.finish_bid(key, OrderStatus::Cancelled, Some(reason), out);
        }
    }

    /// `|demand - supply|` at a level: all bids at or above it against all asks at or below.
    fn imbalance(&self, pool_key: u16, level: u32) -> u64 {
        let pool = &self.pools[pool_key as usize];
        let mut demand = 0u64;
        let mut cursor = pool.bids.highest();
        while let Some(at) = cursor {
            if at < level {
                break;
            }
            demand += pool.bids.level(at).0;
            cursor = if at == 0 {
                None
            } else {
                pool.bids.highest_at_or_below(at - 1)
            };
        }
        let mut supply = 0u64;
        let mut cursor = pool.asks.lowest();
        while let Some(at) = cursor {
            if at > level {
                break;
            }
            supply += pool.asks.level(at).0;
            cursor = pool.asks.lowest_at_or_above(at + 1);
        }
        demand.abs_diff(supply)
    }

    /// The greedy uniform-price allocation at `level`: bids at or above it in priority order,
    /// each taking eligible asks at or below it in priority order, at least its minimum or
    /// nothing. With `out`, executes it at that price. Returns the GPUs allocated.
    fn allocate(
        &mut self,
        pool_key: u16,
        level: u32,
        mut out: Option<&mut Vec<Event>>,
    ) -> (u64, u32) {
        let pool = &self.pools[pool_key as usize];
        let price = pool.price_of(level);
        // Asks eligible by price, in priority order, with their GPUs still available.
        let mut asks: Vec<(u32, u32, TimeMs)> = Vec::new();
        let mut at = pool.asks.lowest();
        while let Some(l) = at {
            if l > level {
                break;
            }
            let mut cursor = pool.asks.head(l);
            while cursor != NIL {
                let block = &self.blocks[cursor as usize];
                asks.push((cursor, block.unsold, block.available_until));
                cursor = block.links.next;
            }
            at = pool.asks.lowest_at_or_above(l + 1);
        }
        let mut bids: Vec<u32> = Vec::new();
        let mut at = pool.bids.highest();
        while let Some(l) = at {
            if l < level {
                break;
            }
            let mut cursor = pool.bids.head(l);
            while cursor != NIL {
                bids.push(cursor);
                cursor = self.bids[cursor as usize].links.next;
            }
            at = if l == 0 {
                None
            } else {
                pool.bids.highest_at_or_below(l - 1)
            };
        }
        let mut volume = 0u64;
        let mut executions = 0u32;
        let mut fills: Vec<(u32, u32)> = Vec::new();
        for bid_key in bids {
            let bid = &self.bids[bid_key as usize];
            let shortest_until = self.now.plus_s(bid.duration_s as u64);
            let needed = match bid.tif {
                TimeInForce::Fok => bid.remaining,
                _ => bid.min_gpus.min(bid.remaining),
            };
            let mut want = bid.remaining;
            fills.clear();
            for (index, (_, available, until)) in asks.iter().enumerate() {
                if want == 0 {
                    break;
                }
                if *available > 0 && *until >= shortest_until {
                    let take = (*available).min(want);
                    fills.push((index as u32, take));
                    want -= take;
                }
            }
            let got = bid.remaining - want;
            if got == 0 || got < needed {
                continue;
            }
            for &(index, take) in &fills {
                asks[index as usize].1 -= take;
            }
            volume += got as u64;
            executions += 1;
            if let Some(out) = out.as_deref_mut() {
                let block_fills: Vec<(u32, u32)> = fills
                    .iter()
                    .map(|&(index, take)| (asks[index as usize].0, take))
                    .collect();
                self.execute(bid_key, &block_fills, Pricing::Uniform(price), out);
            }
        }
        (volume, executions)
    }

    // ----- book-change bookkeeping -----------------------------------------------------------

    fn touch(&mut self, pool: u16, side: Side, level: u32) {
        // Newest first: a command usually touches the same level again right away.
        if self
            .touched
            .iter()
            .rev()
            .any(|t| t.pool == pool && t.side == side && t.level == level)
        {
            return;
        }
        let ladder = match side {
            Side::Bid => &self.pools[pool as usize].bids,
            Side::Ask => &self.pools[pool as usize].asks,
        };
        let before = ladder.level(level);
        self.touched.push(Touched {
            pool,
            side,
            level,
            before,
        });
    }

    /// Emits one `BookLevelChanged` per level whose totals moved during the command.
    fn flush_touched(&mut self, out: &mut Vec<Event>) {
        for touched in self.touched.drain(..) {
            let pool = &self.pools[touched.pool as usize];
            let ladder = match touched.side {
                Side::Bid => &pool.bids,
                Side::Ask => &pool.asks,
            };
            let now = ladder.level(touched.level);
            if now != touched.before {
                out.push(Event::BookLevelChanged {
                    pool: pool.name.clone(),
                    side: touched.side,
                    price: pool.price_of(touched.level),
                    gpus: now.0,
                    orders: now.1,
                });
            }
        }
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn take_priority(&mut self) -> u64 {
        let priority = self.next_priority;
        self.next_priority += 1;
        priority
    }

    // ----- queries ----------------------------------------------------------------------------

    /// Every pool's live summary, in configuration order.
    pub fn pools(&self) -> Vec<PoolSummary> {
        (0..self.pools.len())
            .map(|key| self.pool_summary(key as u16))
            .collect()
    }

    /// One pool's live summary.
    pub fn pool(&self, id: &str) -> Option<PoolSummary> {
        self.pool_index.get(id).map(|&key| self.pool_summary(key))
    }

    fn pool_summary(&self, key: u16) -> PoolSummary {
        let pool = &self.pools[key as usize];
        PoolSummary {
            config: pool.config.clone(),
            best_bid: pool.bids.highest().map(|l| pool.price_of(l)),
            best_ask: pool.asks.lowest().map(|l| pool.price_of(l)),
            last_price: pool.last_price,
            idle_gpus: pool.asks.gpus_total(),
            leased_gpus: pool.leased_gpus,
            reclaiming_gpus: pool.reclaiming_gpus,
            halted: pool.halted,
        }
    }

    /// Aggregated levels of both sides, best first, at most `levels` each.
    pub fn depth(&self, pool: &str, levels: usize) -> Option<Depth> {
        let pool = &self.pools[*self.pool_index.get(pool)? as usize];
        let mut depth = Depth::default();
        let mut at = pool.bids.highest();
        while let Some(l) = at {
            if depth.bids.len() == levels {
                break;
            }
            let (gpus, orders) = pool.bids.level(l);
            depth.bids.push(Level {
                price: pool.price_of(l),
                gpus,
                orders,
            });
            at = if l == 0 {
                None
            } else {
                pool.bids.highest_at_or_below(l - 1)
            };
        }
        let mut at = pool.asks.lowest();
        while let Some(l) = at {
            if depth.asks.len() == levels {
                break;
            }
            let (gpus, orders) = pool.asks.level(l);
            depth.asks.push(Level {
                price: pool.price_of(l),
                gpus,
                orders,
            });
            at = pool.asks.lowest_at_or_above(l + 1);
        }
        Some(depth)
    }

    /// What a bid for `gpus` lasting `duration_s` would lease now, without placing it.
    pub fn quote(&self, pool: &str, gpus: u32, duration_s: u32) -> Option<Quote> {
        let pool = &self.pools[*self.pool_index.get(pool)? as usize];
        let shortest_until = self.now.plus_s(duration_s as u64);
        let mut quote = Quote::default();
        let mut paid: u128 = 0;
        let mut at = pool.asks.lowest();
        while let Some(l) = at {
            if quote.fillable_gpus == gpus {
                break;
            }
            let mut cursor = pool.asks.head(l);
            while cursor != NIL && quote.fillable_gpus < gpus {
                let block = &self.blocks[cursor as usize];
                if block.available_until >= shortest_until {
                    let take = block.unsold.min(gpus - quote.fillable_gpus);
                    quote.fillable_gpus += take;
                    quote.worst_price = Some(block.reserve_price);
                    paid += block.reserve_price.0 as u128 * take as u128;
                    quote.total_cost_micros +=
                        cost_micros(block.reserve_price, take, duration_s as u64);
                }
                cursor = block.links.next;
            }
            at = pool.asks.lowest_at_or_above(l + 1);
        }
        if quote.fillable_gpus > 0 {
            quote.average_price = Some(PriceMicros((paid / quote.fillable_gpus as u128) as u64));
        }
        Some(quote)
    }

    /// A live bid: open, or persistent and filled with leases still running.
    pub fn order(&self, id: OrderId) -> Option<OrderView> {
        self.bid_index.get(&id).map(|&key| self.order_view(key))
    }

    /// An account's live bids, by id.
    pub fn orders_of(&self, account: &str) -> Vec<OrderView> {
        let Some(&account) = self.account_index.get(account) else {
            return Vec::new();
        };
        let mut keys: Vec<(OrderId, u32)> = self
            .bids
            .iter()
            .filter(|(_, bid)| bid.account == account)
            .map(|(key, bid)| (bid.id, key as u32))
            .collect();
        keys.sort_unstable();
        keys.into_iter()
            .map(|(_, key)| self.order_view(key))
            .collect()
    }

    /// A running lease.
    pub fn lease(&self, id: LeaseId) -> Option<LeaseView> {
        self.leases.get(&id).map(|lease| self.lease_view(lease))
    }

    /// An account's running leases, by id.
    pub fn leases_of(&self, account: &str) -> Vec<LeaseView> {
        let Some(&account) = self.account_index.get(account) else {
            return Vec::new();
        };
        let mut leases: Vec<&Lease> = self
            .leases
            .values()
            .filter(|lease| lease.buyer == account)
            .collect();
        leases.sort_unstable_by_key(|lease| lease.id);
        leases.into_iter().map(|l| self.lease_view(l)).collect()
    }

    /// A supplier's blocks still known (pending, open, or closed with leases running), by id.
    pub fn blocks_of(&self, supplier: &str) -> Vec<BlockView> {
        let Some(&supplier) = self.account_index.get(supplier) else {
            return Vec::new();
        };
        let mut keys: Vec<(u64, u32)> = self
            .blocks
            .iter()
            .filter(|(_, block)| block.supplier == supplier)
            .map(|(key, block)| (block.serial, key as u32))
            .collect();
        keys.sort_unstable();
        keys.into_iter()
            .map(|(_, key)| self.block_view(key))
            .collect()
    }

    /// One of a supplier's blocks.
    pub fn block(&self, supplier: &str, block_id: &str) -> Option<BlockView> {
        self.owned_block(supplier, block_id)
            .ok()
            .map(|key| self.block_view(key))
    }

    /// An account's pre-trade limits (its own, or the defaults).
    pub fn account_limits(&self, account: &str) -> AccountLimits {
        self.account_index
            .get(account)
            .map_or(self.default_limits, |&key| self.limits_of(key))
    }

    pub(crate) fn order_view(&self, key: u32) -> OrderView {
        let bid = &self.bids[key as usize];
        OrderView {
            id: bid.id,
            account: self.accounts[bid.account as usize].name.clone(),
            pool: self.pools[bid.pool as usize].name.clone(),
            price: bid.price,
            gpus: bid.gpus,
            remaining_gpus: bid.remaining,
            filled_gpus: bid.gpus - bid.remaining,
            min_gpus: bid.min_gpus,
            duration_s: bid.duration_s,
            max_duration_s: bid.max_duration_s,
            tif: bid.tif,
            expires_at: (bid.expires_at != i64::MIN).then_some(TimeMs(bid.expires_at)),
            persistent: bid.persistent,
            client_order_id: if bid.has_client_order_id {
                self.client_order_id_of.get(&bid.id).cloned()
            } else {
                None
            },
            status: bid.status,
            cancel_reason: bid.cancel_reason,
            created_at: bid.created_at,
            updated_at: bid.updated_at,
        }
    }

    fn lease_view(&self, lease: &Lease) -> LeaseView {
        let accrued = cost_micros(
            lease.price,
            lease.gpus,
            elapsed_s(lease.started_at, self.now),
        );
        self.lease_view_with(lease, None, accrued)
    }

    fn lease_view_ended(&self, lease: &Lease, ended_at: TimeMs, cost: Micros) -> LeaseView {
        self.lease_view_with(lease, Some(ended_at), cost)
    }

    fn lease_view_with(&self, lease: &Lease, ended_at: Option<TimeMs>, cost: Micros) -> LeaseView {
        let block_id = self
            .block_by_serial
            .get(&lease.block_serial)
            .map(|&key| self.blocks[key as usize].block_id.clone())
            .unwrap_or_else(|| Name::from(""));
        LeaseView {
            id: lease.id,
            order_id: lease.order_id,
            buyer: self.accounts[lease.buyer as usize].name.clone(),
            supplier: self.accounts[lease.supplier as usize].name.clone(),
            pool: self.pools[lease.pool as usize].name.clone(),
            block_id,
            gpus: lease.gpus,
            price: lease.price,
            status: lease.status,
            started_at: lease.started_at,
            ends_at: lease.ends_at,
            notice_ends_at: lease.notice_ends_at,
            preempted_at: lease.preempted_at,
            emergency: lease.emergency,
            ended_at,
            cost_micros: cost,
            nodes: lease.nodes.clone(),
        }
    }

    pub(crate) fn block_view(&self, key: u32) -> BlockView {
        let block = &self.blocks[key as usize];
        BlockView {
            supplier: self.accounts[block.supplier as usize].name.clone(),
            block_id: block.block_id.clone(),
            pool: self.pools[block.pool as usize].name.clone(),
            status: block.status,
            gpus: block.gpus,
            gpus_sold: block.leased,
            gpus_unsold: block.unsold,
            gpus_reclaimed: block.reclaimed,
            gpus_reclaiming: block.reclaim_pending,
            reserve_price: block.reserve_price,
            available_from: block.available_from,
            available_until: block.available_until,
            revenue_micros: block.revenue,
            reclaim_forecast_at: block.forecast_at,
            nodes: block
                .nodes
                .iter()
                .map(|n| NodeGpus {
                    node: n.node.clone(),
                    gpus: n.gpus,
                })
                .collect(),
            updated_at: block.updated_at,
        }
    }
}

fn reject(out: &mut Vec<Event>, reason: Rejection) {
    out.push(Event::Rejected { reason });
}

/// What a resting bid commits: price * GPUs * duration, in micro-dollars.
fn notional_of(price: PriceMicros, gpus: u32, duration_s: u32) -> u128 {
    price.0 as u128 * gpus as u128 * duration_s as u128 / 3600
}

fn elapsed_s(from: TimeMs, to: TimeMs) -> u64 {
    (to.0 - from.0).max(0) as u64 / 1000
}

fn check_bid_shape(pool: &Pool, cmd: &PlaceBid, now: TimeMs) -> Result<(), Rejection> {
    if cmd.gpus == 0 {
        return Err(Rejection::GpusMustNotBeZero);
    }
    if cmd.gpus > pool.config.gpus_per_order_max {
        return Err(Rejection::GpusOverMax);
    }
    if let Some(min) = cmd.min_gpus {
        if min == 0 || min > cmd.gpus {
            return Err(Rejection::MinGpusInvalid);
        }
    }
    pool.check_price(cmd.price)?;
    if cmd.duration_s < pool.config.duration_min_s {
        return Err(Rejection::DurationTooShort);
    }
    let max_duration_s = cmd.max_duration_s.unwrap_or(cmd.duration_s);
    if max_duration_s < cmd.duration_s {
        return Err(Rejection::MaxDurationBelowDuration);
    }
    if max_duration_s > pool.config.duration_max_s {
        return Err(Rejection::DurationTooLong);
    }
    let gtd = cmd.tif == TimeInForce::Gtd;
    match cmd.expires_at {
        Some(at) if gtd && at > now => {}
        None if !gtd => {}
        _ => return Err(Rejection::ExpiresAtInvalid),
    }
    Ok(())
}

/// Whether a node is listed twice: a lease's GPUs go back to their node by name, so names
/// must be unique within a block.
fn repeats_a_node(nodes: &[NodeGpus]) -> bool {
    let mut seen = rustc_hash::FxHashSet::default();
    nodes.iter().any(|n| !seen.insert(&n.node))
}

/// Assigns `gpus` from the block's free node GPUs, first node first.
fn assign_nodes(nodes: &mut [NodeState], mut gpus: u32) -> Vec<NodeGpus> {
    let mut assigned = Vec::new();
    for node in nodes.iter_mut() {
        if gpus == 0 {
            break;
        }
        let take = node.free.min(gpus);
        if take > 0 {
            node.free -= take;
            gpus -= take;
            assigned.push(NodeGpus {
                node: node.node.clone(),
                gpus: take,
            });
        }
    }
    assigned
}

/// Gives a lease's node GPUs back to the block.
fn free_nodes(nodes: &mut [NodeState], lease_nodes: &[NodeGpus]) {
    for held in lease_nodes {
        if let Some(node) = nodes.iter_mut().find(|n| n.node == held.node) {
            node.free += held.gpus;
        }
    }
}

/// Takes reclaimed GPUs out of the free node GPUs, last node first.
fn release_free_nodes(nodes: &mut [NodeState], mut gpus: u32) {
    for node in nodes.iter_mut().rev() {
        if gpus == 0 {
            break;
        }
        let take = node.free.min(gpus);
        node.free -= take;
        node.gpus -= take;
        gpus -= take;
    }
}
