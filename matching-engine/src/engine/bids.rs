//! Bids: placing, amending and cancelling them, resting them on the bid ladder, forgetting
//! them.
//!
//! Invariants: a bid is on its pool's bid ladder, at the level of its price with its remaining
//! GPUs, exactly while it is Open; its account's `open_orders` and `open_notional` count it
//! exactly then. A bid stays in the slab (and `bid_index`) while it is Open, or filled and
//! persistent with leases running; otherwise it is forgotten.

use super::timers::Timer;
use super::{reject, Engine, Pool};
use crate::command::{AmendBid, PlaceBid};
use crate::event::Event;
use crate::keys::{AccountKey, BidKey, PoolKey, SlabKey};
use crate::ladder::{Links, Resting};
use crate::limits::CLIENT_ORDER_ID_TTL_MS;
use crate::types::{
    CancelReason, Name, Offering, OrderId, OrderStatus, PriceMicros, Rejection, Side, SshKeys,
    TimeInForce, TimeMs,
};
use serde::{Deserialize, Serialize};

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
    pub account: AccountKey,
    pub gpus: u32,
    pub remaining: u32,
    pub min_gpus: u32,
    pub duration_s: u32,
    pub max_duration_s: u32,
    pub active_leases: u32,
    pub links: Links<BidKey>,
    pub pool: PoolKey,
    pub tif: TimeInForce,
    pub status: OrderStatus,
    pub cancel_reason: Option<CancelReason>,
    pub persistent: bool,
    /// Whether `client_order_id_of` holds a key for it (spares a map lookup per view).
    pub has_client_order_id: bool,
}

impl Bid {
    /// The fewest GPUs an execution must give this bid: all it still wants for FOK,
    /// otherwise its minimum (or what remains, when that is less).
    pub(super) fn gpus_needed(&self) -> u32 {
        match self.tif {
            TimeInForce::Fok => self.remaining,
            _ => self.min_gpus.min(self.remaining),
        }
    }
}

impl Resting<BidKey> for Bid {
    fn links(&self) -> Links<BidKey> {
        self.links
    }
    fn links_mut(&mut self) -> &mut Links<BidKey> {
        &mut self.links
    }
}

impl Engine {
    pub(super) fn place_bid(&mut self, cmd: &PlaceBid, out: &mut Vec<Event>) {
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
        let pool = &self.pools[pool_key];
        if pool.halted || known.is_some_and(|a| self.accounts[a].killed) {
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
                let holder = &self.accounts[a];
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
        let key = BidKey::from_index(self.bids.insert(bid));
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
        // Machines take the bid's keys, or else the account's defaults as they are now; a
        // model pool's gateway takes lease tokens, never keys.
        if self.pools[pool_key].config.offering == Offering::BareMetal {
            let keys = if cmd.ssh_public_keys.is_empty() {
                self.accounts[account].ssh_keys.clone()
            } else {
                SshKeys::from(cmd.ssh_public_keys.clone())
            };
            if !keys.is_empty() {
                self.bid_ssh_keys.insert(id, keys);
            }
        }
        self.rest_bid(key);
        out.push(Event::BidAccepted {
            order: self.order_view(key),
        });
        let pool = &self.pools[pool_key];
        if pool.is_batch() {
            self.arm_auction(pool_key);
            return;
        }
        self.match_or_cancel_remainder(key, out);
    }

    /// Matches an Open bid of a continuous pool; whatever of an IOC or FOK bid stays is
    /// cancelled, so neither ever rests (also when a persistent one reopens).
    pub(super) fn match_or_cancel_remainder(&mut self, key: BidKey, out: &mut Vec<Event>) {
        if self.match_bid(key, out) {
            return;
        }
        let reason = match self.bids[key].tif {
            TimeInForce::Ioc => CancelReason::IocRemainder,
            TimeInForce::Fok => CancelReason::FokNotFillable,
            TimeInForce::Gtc | TimeInForce::Gtd => return,
        };
        self.finish_bid(key, OrderStatus::Cancelled, Some(reason), out);
    }

    fn owned_bid(&mut self, account: &str, order: OrderId) -> Result<BidKey, Rejection> {
        let key = *self.bid_index.get(&order).ok_or(Rejection::UnknownOrder)?;
        // Names are unique, so comparing the owner's name spares hashing the account's.
        if *self.accounts[self.bids[key].account].name != *account {
            return Err(Rejection::NotYourOrder);
        }
        Ok(key)
    }

    pub(super) fn amend_bid(&mut self, cmd: &AmendBid, out: &mut Vec<Event>) {
        let key = match self.owned_bid(&cmd.account, cmd.order_id) {
            Ok(key) => key,
            Err(reason) => return reject(out, reason),
        };
        let bid = &self.bids[key];
        if bid.status != OrderStatus::Open {
            return reject(out, Rejection::OrderNotOpen);
        }
        let pool_key = bid.pool;
        let pool = &self.pools[pool_key];
        if pool.halted || self.accounts[bid.account].killed {
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
            return reject(out, Rejection::GpusNotAboveFilled);
        }
        let new_remaining = new_gpus - filled;
        let old_notional = notional_of(bid.price, bid.remaining, bid.duration_s);
        let new_notional = notional_of(new_price, new_remaining, bid.duration_s);
        let account = bid.account;
        let limits = self.limits_of(account);
        if new_notional > old_notional
            && self.accounts[account].open_notional - old_notional + new_notional
                > limits.open_notional_max_micros as u128
        {
            return reject(out, Rejection::LimitNotional);
        }
        let keeps_priority = new_price == bid.price && new_gpus < bid.gpus;
        if keeps_priority {
            let level = pool.level_of(bid.price);
            let old_remaining = bid.remaining;
            self.touch(pool_key, Side::Bid, level);
            let pool = &mut self.pools[pool_key];
            pool.bids
                .resize(level, old_remaining as u64, new_remaining as u64);
            let account = &mut self.accounts[account];
            account.open_notional = account.open_notional - old_notional + new_notional;
            let bid = &mut self.bids[key];
            bid.gpus = new_gpus;
            bid.remaining = new_remaining;
            bid.min_gpus = bid.min_gpus.min(new_gpus);
        } else {
            self.unrest_bid(key);
            let bid = &mut self.bids[key];
            bid.price = new_price;
            bid.gpus = new_gpus;
            bid.remaining = new_remaining;
            bid.min_gpus = bid.min_gpus.min(new_gpus);
            self.rest_bid(key);
        }
        self.bids[key].updated_at = self.now;
        if self.pools[pool_key].is_batch() {
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

    pub(super) fn cancel_bid(&mut self, account: &str, order: OrderId, out: &mut Vec<Event>) {
        let key = match self.owned_bid(account, order) {
            Ok(key) => key,
            Err(reason) => return reject(out, reason),
        };
        if self.bids[key].status.is_terminal() {
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
    pub(super) fn rest_bid(&mut self, key: BidKey) {
        let priority = self.take_priority();
        let bid = &mut self.bids[key];
        bid.priority = priority;
        let (pool_key, price, remaining, account) =
            (bid.pool, bid.price, bid.remaining, bid.account);
        let notional = notional_of(price, remaining, bid.duration_s);
        let level = self.pools[pool_key].level_of(price);
        self.touch(pool_key, Side::Bid, level);
        self.pools[pool_key]
            .bids
            .push_back(&mut self.bids, key, level, remaining as u64);
        let holder = &mut self.accounts[account];
        holder.open_orders += 1;
        holder.open_notional += notional;
    }

    /// Takes an Open bid off its level.
    pub(super) fn unrest_bid(&mut self, key: BidKey) {
        let bid = &self.bids[key];
        let (pool_key, price, remaining, account) =
            (bid.pool, bid.price, bid.remaining, bid.account);
        let notional = notional_of(price, remaining, bid.duration_s);
        let level = self.pools[pool_key].level_of(price);
        self.touch(pool_key, Side::Bid, level);
        self.pools[pool_key]
            .bids
            .unlink(&mut self.bids, key, level, remaining as u64);
        let holder = &mut self.accounts[account];
        holder.open_orders -= 1;
        holder.open_notional -= notional;
    }

    /// Ends an Open (or persistent Filled) bid: off the book, final event, and forgotten
    /// unless a persistent bid still has leases running.
    pub(super) fn finish_bid(
        &mut self,
        key: BidKey,
        status: OrderStatus,
        reason: Option<CancelReason>,
        out: &mut Vec<Event>,
    ) {
        if self.bids[key].status == OrderStatus::Open {
            self.unrest_bid(key);
        }
        let bid = &mut self.bids[key];
        bid.status = status;
        bid.cancel_reason = reason;
        bid.updated_at = self.now;
        out.push(Event::OrderChanged {
            order: self.order_view(key),
        });
        self.forget_bid_if_done(key);
    }

    pub(super) fn forget_bid_if_done(&mut self, key: BidKey) {
        let bid = &self.bids[key];
        let done = match bid.status {
            OrderStatus::Open => false,
            OrderStatus::Filled => !bid.persistent || bid.active_leases == 0,
            OrderStatus::Cancelled | OrderStatus::Expired => true,
        };
        if done {
            let bid = self.bids.remove(key.index());
            self.bid_index.remove(&bid.id);
            self.bid_ssh_keys.remove(&bid.id);
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
}

/// What a resting bid commits: price * GPUs * duration, in micro-dollars.
pub(super) fn notional_of(price: PriceMicros, gpus: u32, duration_s: u32) -> u128 {
    // The same value either way; a 64-bit division is far cheaper than a 128-bit one (a
    // library call), and every real price fits (price * GPUs * seconds below 2^64).
    match price.0.checked_mul(gpus as u64 * duration_s as u64) {
        Some(product) => (product / 3600) as u128,
        None => price.0 as u128 * gpus as u128 * duration_s as u128 / 3600,
    }
}

pub(super) fn check_bid_shape(pool: &Pool, cmd: &PlaceBid, now: TimeMs) -> Result<(), Rejection> {
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
