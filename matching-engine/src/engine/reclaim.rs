//! Reclaims and reclaim forecasts: a supplier taking GPUs of a block back.
//!
//! Unsold GPUs leave first; then whole active leases, lowest price first, then newest, get
//! notice. GPUs of a preempting lease go back to the supplier, when its notice ends, up to
//! what the block's reclaims still need (`reclaim_pending`).

use super::blocks::NodeState;
use super::timers::Timer;
use super::{reject, Engine};
use crate::command::ReclaimCapacity;
use crate::event::Event;
use crate::types::{LeaseId, LeaseStatus, PriceMicros, Rejection, TimeMs};
use std::cmp::Reverse;

impl Engine {
    pub(super) fn reclaim_capacity(&mut self, cmd: &ReclaimCapacity, out: &mut Vec<Event>) {
        let key = match self.owned_block(&cmd.supplier, &cmd.block_id) {
            Ok(key) => key,
            Err(reason) => return reject(out, reason),
        };
        let block = &self.blocks[key];
        let pool = &self.pools[block.pool];
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
        release_free_nodes(&mut self.blocks[key].nodes, from_book);
        self.blocks[key].reclaimed += from_book;

        // Then whole leases: lowest price first, newest first.
        let mut candidates: Vec<(PriceMicros, Reverse<TimeMs>, Reverse<LeaseId>)> = self.blocks
            [key]
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
            self.pools[pool_key].reclaiming_gpus += lease.gpus as u64;
            preempted.push(lease_id);
        }
        let block = &mut self.blocks[key];
        block.reclaim_pending += still_needed;
        block.updated_at = self.now;
        out.push(Event::ReclaimAccepted {
            supplier: self.accounts[block.supplier].name.clone(),
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

    pub(super) fn forecast_reclaim(
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
        let block = &mut self.blocks[key];
        block.forecast_at = Some(reclaim_at);
        block.updated_at = self.now;
        let mut warned: Vec<LeaseId> = block.leases.clone();
        warned.sort_unstable();
        for lease_id in warned {
            let lease = &self.leases[&lease_id];
            if lease.status == LeaseStatus::Active {
                out.push(Event::ReclaimForecast {
                    lease_id,
                    buyer: self.accounts[lease.buyer].name.clone(),
                    reclaim_at,
                });
            }
        }
        out.push(Event::BlockChanged {
            block: self.block_view(key),
        });
    }
}

/// Takes reclaimed GPUs out of the free node GPUs, last node first.
pub(super) fn release_free_nodes(nodes: &mut [NodeState], mut gpus: u32) {
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
