//! Capacity blocks: releasing and updating them, and keeping their unsold GPUs on the ask
//! ladder.
//!
//! Invariants: `gpus_sold + gpus_unsold + gpus_reclaimed == gpus`; a block is on the ask ladder
//! (`on_book`) exactly while it is Open with unsold GPUs, at the level of its reserve price with
//! those GPUs. A block is forgotten once it is Closed and no lease of it runs.

use super::timers::Timer;
use super::{reject, Engine};
use crate::command::{ReleaseCapacity, UpdateCapacity};
use crate::event::Event;
use crate::keys::{AccountKey, BlockKey, PoolKey, SlabKey};
use crate::ladder::{Links, Resting};
use crate::limits::NODES_PER_BLOCK_MAX;
use crate::types::{
    BlockStatus, LeaseId, Micros, Name, NodeGpus, PriceMicros, Rejection, Side, TimeMs,
};
use serde::{Deserialize, Serialize};

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
    pub supplier: AccountKey,
    pub pool: PoolKey,
    pub block_id: Name,
    pub status: BlockStatus,
    pub gpus: u32,
    pub unsold: u32,
    pub leased: u32,
    pub reclaimed: u32,
    /// Of the reclaimed GPUs, those of leases that failed to provision (absent from older
    /// snapshots: none).
    #[serde(default)]
    pub failed: u32,
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
    pub links: Links<BlockKey>,
    pub updated_at: TimeMs,
}

impl Block {
    /// The last reclaim forecast while it is still ahead: a lease opened on the block now
    /// is warned of it, and quotes that would use the block show it.
    pub(super) fn reclaim_expected_at(&self, now: TimeMs) -> Option<TimeMs> {
        self.forecast_at.filter(|at| *at >= now)
    }
}

impl Resting<BlockKey> for Block {
    fn links(&self) -> Links<BlockKey> {
        self.links
    }
    fn links_mut(&mut self) -> &mut Links<BlockKey> {
        &mut self.links
    }
}

impl Engine {
    pub(super) fn release_capacity(&mut self, cmd: &ReleaseCapacity, out: &mut Vec<Event>) {
        let Some(&pool_key) = self.pool_index.get(cmd.pool.as_str()) else {
            return reject(out, Rejection::UnknownPool);
        };
        let known = self.account_index.get(cmd.supplier.as_str()).copied();
        let pool = &self.pools[pool_key];
        if pool.halted || known.is_some_and(|s| self.accounts[s].killed) {
            return reject(out, Rejection::KillSwitch);
        }
        if known.is_some_and(|s| {
            self.block_index
                .get(&self.blocks, s, &cmd.block_id)
                .is_some()
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
        let key = BlockKey::from_index(
            self.blocks.insert(Block {
                serial,
                supplier,
                pool: pool_key,
                block_id: cmd.block_id.as_str().into(),
                status: if open_now {
                    BlockStatus::Open
                } else {
                    BlockStatus::Pending
                },
                gpus: cmd.gpus,
                unsold: cmd.gpus,
                leased: 0,
                reclaimed: 0,
                failed: 0,
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
            }),
        );
        self.block_index.insert(&self.blocks, key);
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

    pub(super) fn owned_block(
        &self,
        supplier: &str,
        block_id: &str,
    ) -> Result<BlockKey, Rejection> {
        let supplier = *self
            .account_index
            .get(supplier)
            .ok_or(Rejection::UnknownBlock)?;
        self.block_index
            .get(&self.blocks, supplier, block_id)
            .ok_or(Rejection::UnknownBlock)
    }

    pub(super) fn update_capacity(&mut self, cmd: &UpdateCapacity, out: &mut Vec<Event>) {
        let key = match self.owned_block(&cmd.supplier, &cmd.block_id) {
            Ok(key) => key,
            Err(reason) => return reject(out, reason),
        };
        let block = &self.blocks[key];
        if block.status == BlockStatus::Closed {
            return reject(out, Rejection::BlockClosed);
        }
        let pool_key = block.pool;
        let pool = &self.pools[pool_key];
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
        let block = &mut self.blocks[key];
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
        if self.blocks[key].status == BlockStatus::Open {
            self.supply_changed(pool_key, out);
        }
    }

    /// Puts an Open block's unsold GPUs on the ask side with a fresh time priority.
    pub(super) fn rest_block(&mut self, key: BlockKey) {
        let priority = self.take_priority();
        let block = &mut self.blocks[key];
        block.priority = priority;
        if block.unsold == 0 || block.status != BlockStatus::Open {
            return;
        }
        block.on_book = true;
        let (pool_key, price, unsold) = (block.pool, block.reserve_price, block.unsold);
        let level = self.pools[pool_key].level_of(price);
        self.touch(pool_key, Side::Ask, level);
        self.pools[pool_key]
            .asks
            .push_back(&mut self.blocks, key, level, unsold as u64);
    }

    pub(super) fn unrest_block(&mut self, key: BlockKey) {
        let block = &mut self.blocks[key];
        if !block.on_book {
            return;
        }
        block.on_book = false;
        let (pool_key, price, unsold) = (block.pool, block.reserve_price, block.unsold);
        let level = self.pools[pool_key].level_of(price);
        self.touch(pool_key, Side::Ask, level);
        self.pools[pool_key]
            .asks
            .unlink(&mut self.blocks, key, level, unsold as u64);
    }

    /// Takes GPUs of a block's unsold stock (sold or reclaimed), keeping the book in step.
    pub(super) fn take_from_book(&mut self, key: BlockKey, gpus: u32) {
        let block = &self.blocks[key];
        debug_assert!(
            block.unsold >= gpus,
            "taking more GPUs than the block has unsold"
        );
        if block.on_book {
            if block.unsold == gpus {
                self.unrest_block(key);
            } else {
                let (pool_key, price, unsold) = (block.pool, block.reserve_price, block.unsold);
                let level = self.pools[pool_key].level_of(price);
                self.touch(pool_key, Side::Ask, level);
                self.pools[pool_key]
                    .asks
                    .resize(level, unsold as u64, (unsold - gpus) as u64);
            }
        }
        self.blocks[key].unsold -= gpus;
    }

    /// Returns GPUs to a block's unsold stock; back on the book if its window is open.
    pub(super) fn return_to_book(&mut self, key: BlockKey, gpus: u32) {
        if gpus == 0 {
            return;
        }
        let block = &self.blocks[key];
        if block.on_book {
            let (pool_key, price, unsold) = (block.pool, block.reserve_price, block.unsold);
            let level = self.pools[pool_key].level_of(price);
            self.touch(pool_key, Side::Ask, level);
            self.pools[pool_key]
                .asks
                .resize(level, unsold as u64, (unsold + gpus) as u64);
            self.blocks[key].unsold += gpus;
        } else {
            self.blocks[key].unsold += gpus;
            // Returned GPUs join the back of the queue, like any new supply.
            self.rest_block(key);
        }
    }

    pub(super) fn forget_block_if_done(&mut self, key: BlockKey) {
        let block = &self.blocks[key];
        if block.status == BlockStatus::Closed && block.leases.is_empty() {
            let block = self.blocks.remove(key.index());
            self.block_index.remove(&block, key);
            self.block_by_serial.remove(&block.serial);
        }
    }
}

/// Whether a node is listed twice: a lease's GPUs go back to their node by name, so names
/// must be unique within a block.
pub(super) fn repeats_a_node(nodes: &[NodeGpus]) -> bool {
    let mut seen = rustc_hash::FxHashSet::default();
    nodes.iter().any(|n| !seen.insert(&n.node))
}
