//! The engine: pools of bids and capacity blocks, executions into leases, preemption.
//!
//! Layout: bids and blocks live in slabs and rest in each pool's two dense ladders
//! ([`Ladder`]); running leases live in a slab indexed by id (`lease_store`); blocks are found
//! by supplier and id through `block_index`; everything that happens at a future time (lease
//! ends, notice ends, GTD expiries, block windows, batch uncrosses) is a timer in one ordered
//! queue keyed by `(time, insertion sequence)` (`timer_queue`), so timers fire in a
//! deterministic order.
//! Nothing observable depends on slab keys or hash-map iteration order.
//!
//! This file holds the [`Engine`] itself and [`Engine::apply`], which dispatches each command
//! to the file of its concern: `timers`, `pools` (pools, accounts, kill switches), `bids`,
//! `matching` (continuous matching and execution into leases), `blocks`, `reclaim`, `leases`,
//! `auction` (batch pools), `book_changes` (the `BookLevelChanged` bookkeeping), `queries`
//! (read-only views) and `invariants` ([`Engine::assert_invariants`]).
//!
//! Invariants (checked by [`Engine::assert_invariants`], which the property test runs after
//! every command):
//! - a continuous pool's book is never crossed for bids that could trade;
//! - per block, `gpus_sold + gpus_unsold + gpus_reclaimed == gpus`;
//! - an Open bid rests on its pool's bid ladder at its price; a block's unsold GPUs rest on the
//!   ask ladder exactly while its window is open;
//! - no lease ends after its block's window.

mod auction;
mod bids;
mod block_index;
mod blocks;
mod book_changes;
mod handoff;
mod invariants;
mod lease_store;
mod leases;
mod matching;
mod pools;
mod queries;
mod reclaim;
mod timer_queue;
mod timers;

pub(crate) use bids::Bid;
pub(crate) use blocks::Block;
pub(crate) use leases::Lease;
pub(crate) use pools::{Account, Pool};
pub(crate) use timers::Scheduled;

use crate::command::Command;
use crate::event::Event;
use crate::keys::{AccountKey, BidKey, BlockKey, PoolKey};
use crate::types::{AccountLimits, Name, OrderId, Rejection, SshKeys, TimeMs};
use block_index::BlockIndex;
use book_changes::Touched;
use lease_store::Leases;
use rustc_hash::FxHashMap;
use slab::Slab;
use timer_queue::TimerQueue;

/// The deterministic marketplace core. See the crate documentation.
#[derive(Clone, Debug)]
pub struct Engine {
    pub(crate) now: TimeMs,
    pub(crate) next_id: u64,
    pub(crate) next_priority: u64,
    pub(crate) next_timer: u64,
    pub(crate) default_limits: AccountLimits,
    pub(crate) pools: Vec<Pool>,
    pub(crate) pool_index: FxHashMap<Name, PoolKey>,
    pub(crate) accounts: Vec<Account>,
    pub(crate) account_index: FxHashMap<Name, AccountKey>,
    pub(crate) bids: Slab<Bid>,
    pub(crate) bid_index: FxHashMap<OrderId, BidKey>,
    /// `(account, client_order_id)` to the bid it created and when.
    pub(crate) client_order_ids: FxHashMap<(AccountKey, Name), (OrderId, TimeMs)>,
    /// The key of each remembered bid that carried one, for its view.
    pub(crate) client_order_id_of: FxHashMap<OrderId, Name>,
    /// The ssh public keys of each remembered bid that has some, for the leases it opens.
    pub(crate) bid_ssh_keys: FxHashMap<OrderId, SshKeys>,
    pub(crate) blocks: Slab<Block>,
    /// Every block by supplier and block id: looked up by `&str` without building a key.
    pub(crate) block_index: BlockIndex,
    pub(crate) block_by_serial: FxHashMap<u64, BlockKey>,
    pub(crate) leases: Leases,
    /// Queued timers: they fire earliest first, ties in scheduling order.
    pub(crate) timers: TimerQueue,
    /// Up to when the pools' usage integrals are accrued.
    pub(crate) usage_at: TimeMs,
    touched: Vec<Touched>,
    fills: Vec<(BlockKey, u32)>,
    /// The blocks one execution used, in first-use order (kept to spare an allocation).
    fill_blocks: Vec<BlockKey>,
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new()
    }
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
            bid_ssh_keys: FxHashMap::default(),
            blocks: Slab::new(),
            block_index: BlockIndex::default(),
            block_by_serial: FxHashMap::default(),
            leases: Leases::default(),
            timers: TimerQueue::default(),
            usage_at: TimeMs(0),
            touched: Vec::new(),
            fills: Vec::new(),
            fill_blocks: Vec::new(),
        }
    }

    /// The engine's time: the latest command's time (it never goes backwards).
    pub fn now(&self) -> TimeMs {
        self.now
    }

    /// When the next timer is due, so the sequencer knows when to send a `Tick`.
    pub fn next_timer_at(&self) -> Option<TimeMs> {
        self.timers.next_at()
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
            Command::LeaseReady(ready) => self.lease_ready(ready, out),
            Command::LeaseFailed {
                supplier,
                block_id,
                lease_id,
                reason,
            } => self.lease_failed(supplier, block_id, *lease_id, reason, out),
            Command::SetSshKeys { account, keys } => self.set_ssh_keys(account, keys, out),
            Command::ReleaseLease { account, lease_id } => {
                self.release_lease(account, *lease_id, out)
            }
            Command::Tick => {}
            Command::SetKillSwitch { target, engaged } => {
                self.set_kill_switch(target, *engaged, out)
            }
            Command::SetAccountLimits { account, limits } => {
                let key = self.intern_account(account);
                self.accounts[key].limits = Some(*limits);
                out.push(Event::AccountLimitsChanged {
                    account: self.accounts[key].name.clone(),
                    limits: *limits,
                });
            }
        }
        self.flush_touched(out);
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
}

fn reject(out: &mut Vec<Event>, reason: Rejection) {
    out.push(Event::Rejected { reason });
}
