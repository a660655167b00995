//! Reclaims and reclaim forecasts: a supplier taking GPUs of a block back.
//!
//! Unsold GPUs leave first; then whole active leases, lowest price first, then newest, get
//! notice: the reclaim's explicit `notice_s`, or else each lease's due, the larger of the
//! pool's notice now and the lease's own promise (recorded when it opened). An explicit notice
//! below the pool's or a hit lease's promise is an emergency, refused without the flag, and
//! counted per pool. GPUs of a preempting lease go back to the supplier, when its notice ends, up to
//! what the block's reclaims still need (`reclaim_pending`).

use super::blocks::NodeState;
use super::timers::Timer;
use super::{reject, Engine};
use crate::command::ReclaimCapacity;
use crate::event::Event;
use crate::types::{LeaseId, LeaseStatus, PriceMicros, Rejection, TimeMs};
use std::cmp::Reverse;

/// A lease a reclaim may hit, in preemption order: price, newest start, highest id; then its
/// GPUs and the notice it is owed.
type Candidate = (PriceMicros, Reverse<TimeMs>, Reverse<LeaseId>, u32, u32);

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
        let pool_notice_s = pool.config.notice_s;
        // An explicit notice below the pool's promise is an emergency; the flag only allows it.
        if cmd.notice_s.is_some_and(|n| n < pool_notice_s) && !cmd.emergency {
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
        let still_needed = cmd.gpus - from_book;

        // Whole leases: lowest price first, newest first, until the rest is covered. Each is
        // owed the larger of the pool's notice now and its own promise.
        let mut candidates: Vec<Candidate> = block
            .leases
            .iter()
            .map(|id| &self.leases[id])
            .filter(|lease| lease.status == LeaseStatus::Active)
            .map(|lease| {
                let owed_s = pool_notice_s.max(lease.notice_s);
                (
                    lease.price,
                    Reverse(lease.started_at),
                    Reverse(lease.id),
                    lease.gpus,
                    owed_s,
                )
            })
            .collect();
        candidates.sort_unstable();
        let mut covered = 0;
        let mut hit: Vec<(LeaseId, u32)> = Vec::new();
        for (_, _, Reverse(lease_id), gpus, owed_s) in candidates {
            if covered >= still_needed {
                break;
            }
            covered += gpus;
            hit.push((lease_id, owed_s));
        }
        // An explicit notice below a hit lease's own promise is an emergency too.
        let emergency = cmd
            .notice_s
            .is_some_and(|n| n < pool_notice_s || hit.iter().any(|&(_, owed_s)| n < owed_s));
        if emergency && !cmd.emergency {
            return reject(out, Rejection::NoticeTooShort);
        }

        self.take_from_book(key, from_book);
        release_free_nodes(&mut self.blocks[key].nodes, from_book);
        self.blocks[key].reclaimed += from_book;
        let mut last_notice_ends_at = self
            .now
            .plus_s(cmd.notice_s.unwrap_or(pool_notice_s) as u64);
        let mut preempted = Vec::with_capacity(hit.len());
        for (lease_id, owed_s) in hit {
            let notice_s = cmd.notice_s.unwrap_or(owed_s);
            let notice_ends_at = self.now.plus_s(notice_s as u64);
            last_notice_ends_at = last_notice_ends_at.max(notice_ends_at);
            let lease = self
                .leases
                .get_mut(&lease_id)
                .expect("block lists its leases");
            lease.status = LeaseStatus::Preempting;
            lease.notice_ends_at = Some(notice_ends_at);
            lease.preempted_at = Some(self.now);
            lease.emergency = notice_s < owed_s;
            let gpus = lease.gpus;
            self.pools[pool_key].reclaiming_gpus += gpus as u64;
            preempted.push((lease_id, notice_ends_at));
        }
        if emergency {
            self.pools[pool_key].emergency_reclaims += 1;
        }
        let block = &mut self.blocks[key];
        block.reclaim_pending += still_needed;
        block.updated_at = self.now;
        out.push(Event::ReclaimAccepted {
            pool: self.pools[pool_key].name.clone(),
            supplier: self.accounts[block.supplier].name.clone(),
            block_id: block.block_id.clone(),
            gpus: cmd.gpus,
            gpus_from_book: from_book,
            leases_preempted: preempted.len() as u32,
            notice_ends_at: last_notice_ends_at,
            emergency,
        });
        for (lease_id, notice_ends_at) in preempted {
            self.schedule(notice_ends_at, Timer::NoticeEnds { lease: lease_id });
            out.push(Event::LeaseChanged {
                lease: Box::new(self.lease_view(&self.leases[&lease_id])),
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
