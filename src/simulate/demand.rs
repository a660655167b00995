//! Demand: the startups' jobs, drawn once per scenario and seed, before any market runs, so
//! every mechanism faces the same buyers with the same valuations at the same moments.
//!
//! Jobs arrive as a Poisson process whose rate follows the working day and the week (drawn by
//! thinning); each job has a pool, an account, a size, a length, a deadline, a valuation per
//! GPU-hour, and two flags: `tolerant` (checkpoints, so preempted work is kept) and
//! `persistent` (its bids ask again for GPUs preempted away).

use super::curves::{arrival_rate_per_hour, exponential, lognormal, LocalTime, HOUR_MS};
use super::scenario::Scenario;
use super::supply::stream_seed;
use matching_engine::TimeMs;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// The random stream of a pool's startup jobs.
const STREAM_JOBS: u64 = 2;

/// One startup job.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Job {
    /// Pool index.
    pub pool: usize,
    /// The buyer's account.
    pub account: String,
    /// When it arrives (and bids).
    pub arrives_at: TimeMs,
    /// GPUs it runs on at once.
    pub gpus: u32,
    /// How long it runs on them, seconds.
    pub duration_s: u32,
    /// When it must be finished: no work after this is worth anything.
    pub deadline: TimeMs,
    /// What a GPU-hour of its work is worth to it, micro-dollars.
    pub value_micros: u64,
    /// It checkpoints: preempted work is kept, and it takes leases of any length.
    pub tolerant: bool,
    /// Its bids are persistent.
    pub persistent: bool,
}

impl Job {
    /// GPU-milliseconds of work it needs.
    pub fn work_gpu_ms(&self) -> i64 {
        self.gpus as i64 * self.duration_s as i64 * 1000
    }

    /// Its valuation of `gpu_ms` GPU-milliseconds of work, micro-dollars.
    pub fn value_of(&self, gpu_ms: i64) -> u64 {
        let capped = gpu_ms.clamp(0, self.work_gpu_ms()) as u128;
        (self.value_micros as u128 * capped / HOUR_MS as u128) as u64
    }
}

/// Every pool's jobs over `[start - lead, horizon)`, in arrival order.
pub fn draw_jobs(scenario: &Scenario, seed: u64, start: TimeMs, horizon: TimeMs) -> Vec<Job> {
    let demand = &scenario.startups;
    let mut jobs = Vec::new();
    let first = start.0 - (demand.lead_h * HOUR_MS as f64) as i64;
    let total_weight: f64 = demand.sizes.iter().map(|s| s.weight).sum();
    for (pool_index, pool) in scenario.pools.iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(stream_seed(seed, pool_index, STREAM_JOBS));
        let peak = pool.jobs_per_hour_peak;
        if peak <= 0.0 {
            continue;
        }
        let mut at = first as f64;
        loop {
            at += exponential(&mut rng, HOUR_MS as f64 / peak);
            if at >= horizon.0 as f64 {
                break;
            }
            let local = LocalTime::of(at as i64 - start.0, pool.utc_offset_h);
            let accept = arrival_rate_per_hour(demand, peak, local) / peak;
            if rng.random::<f64>() >= accept {
                continue;
            }
            let account = format!("startup-{:03}", rng.random_range(0..demand.accounts));
            let mut pick = rng.random::<f64>() * total_weight;
            let size = demand
                .sizes
                .iter()
                .find(|s| {
                    pick -= s.weight;
                    pick < 0.0
                })
                .unwrap_or(demand.sizes.last().expect("validated non-empty"));
            let gpus = size.gpus;
            let hours = lognormal(&mut rng, demand.duration_median_h, demand.duration_sigma)
                .clamp(demand.duration_min_h, demand.duration_max_h);
            let duration_s = ((hours * 3600.0).round() as u32).max(60);
            let patience_h = lognormal(&mut rng, demand.patience_median_h, demand.patience_sigma);
            let value_share = lognormal(&mut rng, demand.value_median_share, demand.value_sigma)
                .min(demand.value_max_share);
            let value_micros = (value_share * pool.on_demand_usd * 1e6).round().max(1.0) as u64;
            let tolerant = rng.random::<f64>() < size.tolerant_share;
            let persistent = rng.random::<f64>() < demand.persistent_share;
            let arrives_at = TimeMs(at as i64);
            let deadline = TimeMs(
                arrives_at.0 + duration_s as i64 * 1000 + (patience_h * HOUR_MS as f64) as i64,
            );
            jobs.push(Job {
                pool: pool_index,
                account,
                arrives_at,
                gpus,
                duration_s,
                deadline,
                value_micros,
                tolerant,
                persistent,
            });
        }
    }
    jobs.sort_by_key(|job| (job.arrives_at, job.pool));
    jobs
}
