//! Time: the timer queue, and firing what is due before each command.
//!
//! Every future effect is a [`Timer`] in one queue ordered by `(due time, scheduling
//! sequence)` (a heap for the current minute, buckets by the minute after it: see
//! `timer_queue`), so timers due at the same moment fire in the order they were scheduled. A
//! timer is never cancelled: when it fires it checks that what it was scheduled for is still
//! current (the lease still ends at this time, the bid is still Open, ...) and otherwise does
//! nothing. The engine's clock never goes backwards.

use super::handoff::PROVISION_TIMEOUT_REASON;
use super::Engine;
use crate::event::Event;
use crate::keys::{AccountKey, PoolKey};
use crate::limits::CLIENT_ORDER_ID_TTL_MS;
use crate::types::{
    AccessStatus, BlockStatus, LeaseId, LeaseStatus, Name, OrderId, OrderStatus, TimeMs,
};
use serde::{Deserialize, Serialize};

/// Something due at a future time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Timer {
    LeaseEnds { lease: LeaseId },
    NoticeEnds { lease: LeaseId },
    BidExpires { order: OrderId },
    BlockOpens { serial: u64 },
    BlockCloses { serial: u64 },
    Auction { pool: PoolKey },
    ForgetClientOrderId { account: AccountKey, key: Name },
    ProvisionTimeout { lease: LeaseId },
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

impl Engine {
    pub(super) fn advance_to(&mut self, at: TimeMs, out: &mut Vec<Event>) {
        self.timers.advance_to(at);
        while let Some(Scheduled { at: due, timer, .. }) = self.timers.pop_due(at) {
            if due > self.now {
                self.accrue_usage(due);
                self.now = due;
            }
            self.fire(timer, out);
            self.flush_touched(out);
        }
        if at > self.now {
            self.accrue_usage(at);
            self.now = at;
        }
    }

    /// Adds what each pool offered and leased from `usage_at` to `to`: the state has not
    /// changed in between (every change happens at `now`, and time only moves here).
    fn accrue_usage(&mut self, to: TimeMs) {
        let elapsed_ms = (to.0 - self.usage_at.0).max(0) as u64;
        self.usage_at = to;
        if elapsed_ms == 0 {
            return;
        }
        for pool in &mut self.pools {
            let offered = pool.asks.gpus_total() + pool.leased_gpus;
            pool.offered_gpu_ms = pool
                .offered_gpu_ms
                .saturating_add(offered.saturating_mul(elapsed_ms));
            pool.leased_gpu_ms = pool
                .leased_gpu_ms
                .saturating_add(pool.leased_gpus.saturating_mul(elapsed_ms));
        }
    }

    pub(super) fn schedule(&mut self, at: TimeMs, timer: Timer) {
        self.timers.push(Scheduled {
            at,
            seq: self.next_timer,
            timer,
        });
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
                    let bid = &self.bids[key];
                    if bid.status == OrderStatus::Open && bid.expires_at == self.now.0 {
                        self.finish_bid(key, OrderStatus::Expired, None, out);
                    }
                }
            }
            Timer::BlockOpens { serial } => {
                if let Some(&key) = self.block_by_serial.get(&serial) {
                    if self.blocks[key].status == BlockStatus::Pending {
                        self.blocks[key].status = BlockStatus::Open;
                        self.blocks[key].updated_at = self.now;
                        self.rest_block(key);
                        out.push(Event::BlockChanged {
                            block: self.block_view(key),
                        });
                        let pool = self.blocks[key].pool;
                        self.supply_changed(pool, out);
                    }
                }
            }
            Timer::BlockCloses { serial } => {
                if let Some(&key) = self.block_by_serial.get(&serial) {
                    if self.blocks[key].available_until == self.now
                        && self.blocks[key].status != BlockStatus::Closed
                    {
                        self.unrest_block(key);
                        let block = &mut self.blocks[key];
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
                if self.pools[pool].auction_at == Some(self.now) {
                    self.pools[pool].auction_at = None;
                    self.uncross(pool, out);
                }
            }
            Timer::ProvisionTimeout { lease } => {
                let provisioning = self
                    .leases
                    .get(&lease)
                    .is_some_and(|l| l.access.status == AccessStatus::Provisioning);
                if provisioning {
                    self.fail_lease(lease, PROVISION_TIMEOUT_REASON, out);
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
}
