//! The books of one run, kept from the engine's events alone: offered and sold GPU-time from
//! the blocks' views, revenue from the leases' final costs, preemptions and their notices.
//!
//! Offered GPU-time is the DESIGN's (section 13): the sold plus unsold GPUs of every open
//! block, integrated over time. It is integrated twice over, by pool in total and by hour
//! for the chart; sold time is also added up from the leases themselves, and revenue from
//! both the leases' `cost_micros` and the blocks' `revenue_micros`, so the books can be
//! checked against each other.

use super::curves::HOUR_MS;
use matching_engine::{BlockStatus, Event, LeaseStatus, TimeMs};
use serde::Serialize;
use std::collections::HashMap;

/// One hour of the run, all pools together.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HourFigures {
    /// GPU-hours offered in the hour.
    pub offered_gpu_hours: f64,
    /// GPU-hours leased in the hour.
    pub sold_gpu_hours: f64,
    /// Revenue earned in the hour, USD: each ended lease's cost spread evenly over its life.
    pub revenue_usd: f64,
}

/// One pool's books.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoolBooks {
    /// GPUs sold in open blocks right now.
    open_sold: u64,
    /// GPUs unsold in open blocks right now.
    open_unsold: u64,
    /// Offered GPU-milliseconds: open blocks' sold plus unsold GPUs over time.
    pub offered_gpu_ms: u128,
    /// Sold GPU-milliseconds from the blocks' views.
    pub sold_gpu_ms: u128,
    /// Sold GPU-milliseconds from the ended leases.
    pub leased_gpu_ms: u128,
    /// Sum of the ended leases' `cost_micros`.
    pub revenue_micros: u64,
    /// Sum of price times GPU-milliseconds of the ended leases (for the average price).
    pub price_gpu_ms: u128,
    /// Leases opened.
    pub leases: u64,
    /// Leases given notice.
    pub preemptions: u64,
    /// Of those, given at least the notice they were promised.
    pub notices_honoured: u64,
    /// Reclaims accepted.
    pub reclaims: u64,
    /// Reclaims accepted as emergencies.
    pub emergency_reclaims: u64,
}

/// What the ledger knows of one block.
#[derive(Clone, Copy, Debug, Default)]
struct BlockState {
    open: bool,
    sold: u64,
    unsold: u64,
    revenue_micros: u64,
}

/// The books of one run.
pub struct Ledger {
    start: TimeMs,
    horizon: TimeMs,
    last_at: TimeMs,
    pool_index: HashMap<String, usize>,
    /// Per pool.
    pub pools: Vec<PoolBooks>,
    /// Per hour from the start.
    pub hours: Vec<HourFigures>,
    blocks: HashMap<(usize, String), BlockState>,
}

impl Ledger {
    /// Empty books for pools named `pool_ids`, over `[start, horizon)`.
    pub fn new(pool_ids: &[String], start: TimeMs, horizon: TimeMs) -> Ledger {
        let hours = ((horizon.0 - start.0) + HOUR_MS - 1) / HOUR_MS;
        Ledger {
            start,
            horizon,
            last_at: start,
            pool_index: pool_ids
                .iter()
                .enumerate()
                .map(|(i, id)| (id.clone(), i))
                .collect(),
            pools: vec![PoolBooks::default(); pool_ids.len()],
            hours: vec![HourFigures::default(); hours.max(0) as usize],
            blocks: HashMap::new(),
        }
    }

    /// Integrates the open blocks' GPUs up to `now` (never past the horizon).
    pub fn advance(&mut self, now: TimeMs) {
        let now = now.min(self.horizon);
        if now <= self.last_at {
            return;
        }
        let (from, to) = (self.last_at, now);
        for pool in &mut self.pools {
            let span = (to.0 - from.0) as u128;
            pool.offered_gpu_ms += span * (pool.open_sold + pool.open_unsold) as u128;
            pool.sold_gpu_ms += span * pool.open_sold as u128;
        }
        let (sold, offered) = self.pools.iter().fold((0u64, 0u64), |(s, o), p| {
            (s + p.open_sold, o + p.open_sold + p.open_unsold)
        });
        self.spread(from, to, |hour, ms| {
            hour.offered_gpu_hours += offered as f64 * ms / HOUR_MS as f64;
            hour.sold_gpu_hours += sold as f64 * ms / HOUR_MS as f64;
        });
        self.last_at = now;
    }

    /// Calls `add(hour, milliseconds of [from, to) in it)` for every hour `[from, to)` touches.
    fn spread(&mut self, from: TimeMs, to: TimeMs, mut add: impl FnMut(&mut HourFigures, f64)) {
        let (from, to) = (from.max(self.start), to.min(self.horizon));
        let mut at = from.0;
        while at < to.0 {
            let index = ((at - self.start.0) / HOUR_MS) as usize;
            let hour_end = self.start.0 + (index as i64 + 1) * HOUR_MS;
            let end = hour_end.min(to.0);
            if let Some(hour) = self.hours.get_mut(index) {
                add(hour, (end - at) as f64);
            }
            at = end;
        }
    }

    /// Books the events of one command, all of which happened at `now`.
    pub fn observe(&mut self, now: TimeMs, events: &[Event]) {
        self.advance(now);
        for event in events {
            match event {
                Event::BlockChanged { block } => {
                    let Some(&pool) = self.pool_index.get(&*block.pool) else {
                        continue;
                    };
                    let state = self
                        .blocks
                        .entry((pool, block.block_id.to_string()))
                        .or_default();
                    let books = &mut self.pools[pool];
                    if state.open {
                        books.open_sold -= state.sold;
                        books.open_unsold -= state.unsold;
                    }
                    *state = BlockState {
                        open: block.status == BlockStatus::Open,
                        sold: block.gpus_sold as u64,
                        unsold: block.gpus_unsold as u64,
                        revenue_micros: block.revenue_micros,
                    };
                    if state.open {
                        books.open_sold += state.sold;
                        books.open_unsold += state.unsold;
                    }
                }
                Event::LeaseOpened { lease } => {
                    if let Some(&pool) = self.pool_index.get(&*lease.pool) {
                        self.pools[pool].leases += 1;
                    }
                }
                Event::LeaseChanged { lease } => {
                    let Some(&pool) = self.pool_index.get(&*lease.pool) else {
                        continue;
                    };
                    if lease.status == LeaseStatus::Preempting {
                        let books = &mut self.pools[pool];
                        books.preemptions += 1;
                        let given_ms = match (lease.notice_ends_at, lease.preempted_at) {
                            (Some(end), Some(at)) => end.0 - at.0,
                            _ => 0,
                        };
                        if !lease.emergency && given_ms >= lease.notice_s as i64 * 1000 {
                            books.notices_honoured += 1;
                        }
                    } else if lease.status.is_ended() {
                        let ended_at = lease.ended_at.unwrap_or(now);
                        let life_ms = (ended_at.0 - lease.started_at.0).max(0);
                        let books = &mut self.pools[pool];
                        books.revenue_micros += lease.cost_micros;
                        books.leased_gpu_ms += life_ms as u128 * lease.gpus as u128;
                        books.price_gpu_ms +=
                            lease.price.0 as u128 * life_ms as u128 * lease.gpus as u128;
                        if life_ms > 0 {
                            let per_ms = lease.cost_micros as f64 / life_ms as f64 / 1e6;
                            self.spread(lease.started_at, ended_at, |hour, ms| {
                                hour.revenue_usd += per_ms * ms;
                            });
                        }
                    }
                }
                Event::ReclaimAccepted {
                    pool, emergency, ..
                } => {
                    if let Some(&pool) = self.pool_index.get(&**pool) {
                        self.pools[pool].reclaims += 1;
                        self.pools[pool].emergency_reclaims += u64::from(*emergency);
                    }
                }
                _ => {}
            }
        }
    }

    /// The revenue the blocks' views report, per pool (their last `revenue_micros`).
    pub fn block_revenue_micros(&self) -> Vec<u64> {
        let mut revenue = vec![0; self.pools.len()];
        for (&(pool, _), state) in &self.blocks {
            revenue[pool] += state.revenue_micros;
        }
        revenue
    }
}
