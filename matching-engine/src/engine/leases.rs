//! Leases: ending them (completed, released by the buyer, or preempted), their cost, where
//! their GPUs go, and the persistent bid that asks again for GPUs it lost.
//!
//! Invariants: a running lease is in `leases` and in its block's `leases` list; its GPUs count
//! in its block's `gpus_sold` and its pool's `leased_gpus`; it never ends after its block's
//! window.

use super::blocks::NodeState;
use super::reclaim::release_free_nodes;
use super::{reject, Engine};
use crate::event::Event;
use crate::keys::{AccountKey, PoolKey};
use crate::types::{
    cost_micros, Access, AccessStatus, BlockStatus, LeaseId, LeaseStatus, Micros, NodeGpus,
    OrderId, OrderStatus, PriceMicros, Rejection, SshKeys, TimeInForce, TimeMs,
};
use serde::{Deserialize, Serialize};

/// A running lease.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Lease {
    pub id: LeaseId,
    pub order_id: OrderId,
    pub buyer: AccountKey,
    pub supplier: AccountKey,
    pub pool: PoolKey,
    pub block_serial: u64,
    pub gpus: u32,
    pub price: PriceMicros,
    pub status: LeaseStatus,
    pub started_at: TimeMs,
    pub ends_at: TimeMs,
    pub notice_ends_at: Option<TimeMs>,
    pub preempted_at: Option<TimeMs>,
    pub emergency: bool,
    /// The notice promised at opening (the pool's `notice_s` then); a later change of the
    /// pool's settings never shortens it. Snapshots from before it was recorded restore 0,
    /// which leaves the pool's current notice in charge, as it was then.
    #[serde(default)]
    pub notice_s: u32,
    pub nodes: Vec<NodeGpus>,
    /// The handoff (DESIGN section 11). Leases from before it existed restore as ready and
    /// billed from their start, as they ran.
    #[serde(default = "Access::before_handoff_existed")]
    pub access: Access,
    /// The buyer's keys, for the supplier's provisioner.
    #[serde(default)]
    pub ssh_public_keys: Option<SshKeys>,
}

impl Lease {
    /// Since when the lease is billed: from `ready_at` (or, for a lease from before the
    /// handoff existed, from its start); `None` while it is not usable.
    pub(crate) fn billed_since(&self) -> Option<TimeMs> {
        match self.access.status {
            AccessStatus::Ready => Some(self.access.ready_at.unwrap_or(self.started_at)),
            AccessStatus::Provisioning | AccessStatus::Failed => None,
        }
    }

    /// What the lease costs if it ends at `ended_at`: nothing before it is ready, nothing
    /// when preempted within the pool's free window of becoming ready.
    pub(crate) fn cost_at(&self, ended_at: TimeMs, free_window_s: u32) -> Micros {
        let Some(since) = self.billed_since() else {
            return 0;
        };
        let free = self.status == LeaseStatus::Preempted
            && self
                .preempted_at
                .is_some_and(|at| at.0 - since.0 < free_window_s as i64 * 1000);
        if free {
            0
        } else {
            cost_micros(self.price, self.gpus, elapsed_s(since, ended_at))
        }
    }
}

impl Engine {
    pub(super) fn release_lease(&mut self, account: &str, lease_id: LeaseId, out: &mut Vec<Event>) {
        let Some(lease) = self.leases.get(&lease_id) else {
            return reject(out, Rejection::UnknownLease);
        };
        if *self.accounts[lease.buyer].name != *account {
            return reject(out, Rejection::NotYourLease);
        }
        self.end_lease(lease_id, LeaseStatus::Released, out);
    }

    /// Ends a running lease: final cost, GPUs back to the supplier or the book, the bid told.
    pub(super) fn end_lease(
        &mut self,
        lease_id: LeaseId,
        status: LeaseStatus,
        out: &mut Vec<Event>,
    ) {
        let mut lease = self
            .leases
            .remove(&lease_id)
            .expect("ending a running lease");
        let was_preempting = lease.status == LeaseStatus::Preempting;
        lease.status = status;
        let failed = status == LeaseStatus::Failed;
        if failed {
            lease.access.status = AccessStatus::Failed;
        }
        let ended_at = self.now;
        let pool_key = lease.pool;
        let cost = lease.cost_at(
            ended_at,
            self.pools[pool_key].config.free_if_preempted_within_s,
        );
        let block_key = self.block_by_serial[&lease.block_serial];
        let block = &mut self.blocks[block_key];
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
        let back = if failed {
            // A failed lease's GPUs leave the block: suspect until the supplier releases
            // them again. They count as reclaimed (back with the supplier), and as failed.
            block.reclaimed += lease.gpus;
            block.failed += lease.gpus;
            drop_lease_nodes(&mut block.nodes, &lease.nodes);
            0
        } else {
            block.reclaimed += to_supplier;
            free_nodes(&mut block.nodes, &lease.nodes);
            release_free_nodes(&mut block.nodes, to_supplier);
            lease.gpus - to_supplier
        };
        let block_open = block.status == BlockStatus::Open;
        let pool = &mut self.pools[pool_key];
        pool.leased_gpus -= lease.gpus as u64;
        if was_preempting {
            pool.reclaiming_gpus -= lease.gpus as u64;
        }
        if block_open {
            self.return_to_book(block_key, back);
        } else {
            self.blocks[block_key].unsold += back;
        }
        out.push(Event::LeaseChanged {
            lease: Box::new(self.lease_view_ended(&lease, ended_at, cost)),
        });
        out.push(Event::BlockChanged {
            block: self.block_view(block_key),
        });
        self.forget_block_if_done(block_key);

        if let Some(&bid_key) = self.bid_index.get(&lease.order_id) {
            let bid = &mut self.bids[bid_key];
            bid.active_leases -= 1;
            let lost = matches!(status, LeaseStatus::Preempted | LeaseStatus::Failed);
            let reopens = lost && bid.persistent && !bid.status.is_terminal();
            let past_its_date = bid.tif == TimeInForce::Gtd && bid.expires_at <= self.now.0;
            if reopens && past_its_date {
                // A GTD bid does not bid again after its date (no timer would ever expire it).
                self.finish_bid(bid_key, OrderStatus::Expired, None, out);
            } else if reopens {
                // A persistent bid asks again for the GPUs it lost.
                if bid.status == OrderStatus::Open {
                    self.unrest_bid(bid_key);
                }
                let bid = &mut self.bids[bid_key];
                bid.remaining += lease.gpus;
                bid.status = OrderStatus::Open;
                bid.updated_at = self.now;
                self.rest_bid(bid_key);
                out.push(Event::OrderChanged {
                    order: self.order_view(bid_key),
                });
                if self.pools[pool_key].is_batch() {
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
}

pub(super) fn elapsed_s(from: TimeMs, to: TimeMs) -> u64 {
    (to.0 - from.0).max(0) as u64 / 1000
}

/// A failed lease's node GPUs leave the block with it.
fn drop_lease_nodes(nodes: &mut [NodeState], lease_nodes: &[NodeGpus]) {
    for held in lease_nodes {
        if let Some(node) = nodes.iter_mut().find(|n| n.node == held.node) {
            node.gpus -= held.gpus;
        }
    }
}

/// Gives a lease's node GPUs back to the block.
pub(super) fn free_nodes(nodes: &mut [NodeState], lease_nodes: &[NodeGpus]) {
    for held in lease_nodes {
        if let Some(node) = nodes.iter_mut().find(|n| n.node == held.node) {
            node.free += held.gpus;
        }
    }
}
