//! Supply: each pool's internal load and what its scheduler does about it, computed once per
//! scenario and seed, before any market runs, so every mechanism sees exactly the same
//! releases and reclaims at the same moments.
//!
//! The load is the forecastable cycle ([`forecast_load_share`]) plus an Ornstein-Uhlenbeck
//! noise and Poisson bursts the scheduler cannot forecast. Every `step_s` the scheduler:
//!
//! 1. gets back the nodes whose block window ended (no command: the window closing is the
//!    engine's timer, and no lease outlives its block's window);
//! 2. if the actual load needs more nodes than it kept (or, with `reclaim_into_headroom`, as
//!    soon as it eats into the headroom), reclaims released nodes, those whose window ends
//!    first, with the pool's notice (an emergency reclaim, with no notice, only
//!    when the scenario asks for a share of them);
//! 3. if more nodes are idle than released plus the headroom (`headroom_share` of the nodes,
//!    never released), releases idle nodes one per capacity block, each
//!    with a window that ends when its forecast needs that node back: the first moment the
//!    forecast idle count (less the headroom) no longer exceeds the nodes released before it
//!    and still out then, capped at `window_max_h`; a node forecast idle for less than
//!    `window_min_s` is kept. So the released nodes never outnumber the forecast idle ones.
//!
//! Windows end when the forecast load reaches the headroom, so reclaims happen only when the
//! load beats the forecast by more than the headroom;
//! the rest of the time capacity returns at window ends, which preempts nobody.

use super::curves::{exponential, forecast_load_share, standard_normal, LocalTime};
use super::scenario::{PoolScenario, Scenario};
use matching_engine::TimeMs;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What a scheduler does at a moment.
#[derive(Clone, Debug, PartialEq)]
pub enum SupplyAction {
    /// Release one node as a capacity block, open now, until `until`.
    Release {
        /// Index of the block in [`SupplyPlan::blocks`].
        block: usize,
    },
    /// Take a released block back whole.
    Reclaim {
        /// Index of the block in [`SupplyPlan::blocks`].
        block: usize,
        /// Without notice (counted by the engine as an emergency reclaim).
        emergency: bool,
    },
}

/// One scheduler action, stamped.
#[derive(Clone, Debug, PartialEq)]
pub struct TimedSupply {
    /// When.
    pub at: TimeMs,
    /// Which pool (index into the scenario's pools).
    pub pool: usize,
    /// What.
    pub action: SupplyAction,
}

/// One released node: a capacity block of one node.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedBlock {
    /// Pool index.
    pub pool: usize,
    /// The supplier's block id (unique per pool's scheduler).
    pub block_id: String,
    /// The node's name.
    pub node: String,
    /// GPUs (the node's).
    pub gpus: u32,
    /// When it is released (its window opens then).
    pub released_at: TimeMs,
    /// When its window ends.
    pub until: TimeMs,
    /// When the scheduler takes it back early, if it does.
    pub reclaimed_at: Option<TimeMs>,
    /// Whether that reclaim gives no notice.
    pub emergency: bool,
}

impl PlannedBlock {
    /// When the scheduler stops offering it: its window end, or its reclaim.
    pub fn offered_until(&self) -> TimeMs {
        self.reclaimed_at
            .map_or(self.until, |at| at.min(self.until))
    }
}

/// The schedulers' whole plan for a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SupplyPlan {
    /// Every block, in release order.
    pub blocks: Vec<PlannedBlock>,
    /// Every action, in time order (pools in scenario order within a moment).
    pub actions: Vec<TimedSupply>,
}

impl SupplyPlan {
    /// GPU-milliseconds the schedulers offer in `[from, to)`: each block from its release to
    /// its window end or reclaim.
    pub fn idle_gpu_ms(&self, pool: usize, from: TimeMs, to: TimeMs) -> u128 {
        self.blocks
            .iter()
            .filter(|b| b.pool == pool)
            .map(|b| {
                let start = b.released_at.max(from);
                let end = b.offered_until().min(to);
                (end.0 - start.0).max(0) as u128 * b.gpus as u128
            })
            .sum()
    }
}

/// The seed of one random stream: the run's seed, the pool, and what it draws.
pub fn stream_seed(seed: u64, pool: usize, stream: u64) -> u64 {
    // SplitMix64 of the three, so nearby seeds give unrelated streams.
    let mut z = seed
        .wrapping_add((pool as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The random stream of a pool's internal load.
const STREAM_LOAD: u64 = 1;
/// The random stream of a pool's emergency reclaims (apart, so that asking for some leaves
/// the load, and so the releases and reclaims, as they were).
const STREAM_EMERGENCY: u64 = 3;

/// Plans every pool's releases and reclaims over `[start, horizon)`.
pub fn plan_supply(scenario: &Scenario, seed: u64, start: TimeMs, horizon: TimeMs) -> SupplyPlan {
    let mut plan = SupplyPlan::default();
    for (index, pool) in scenario.pools.iter().enumerate() {
        plan_pool(scenario, pool, index, seed, start, horizon, &mut plan);
    }
    plan.actions.sort_by_key(|action| (action.at, action.pool));
    plan
}

/// A block the scheduler has released and not yet got back.
struct Live {
    block: usize,
    node: u32,
    until_step: usize,
}

fn plan_pool(
    scenario: &Scenario,
    pool: &PoolScenario,
    pool_index: usize,
    seed: u64,
    start: TimeMs,
    horizon: TimeMs,
    plan: &mut SupplyPlan,
) {
    let load = &scenario.internal_load;
    let policy = &scenario.scheduler;
    let mut rng = ChaCha8Rng::seed_from_u64(stream_seed(seed, pool_index, STREAM_LOAD));
    let mut emergencies =
        ChaCha8Rng::seed_from_u64(stream_seed(seed, pool_index, STREAM_EMERGENCY));
    let nodes = pool.nodes as i64;
    let step_ms = policy.step_s as i64 * 1000;
    let steps = ((horizon.0 - start.0) + step_ms - 1) / step_ms;
    let window_max_steps = (policy.window_max_h * 3600.0 / policy.step_s as f64).floor() as usize;
    let window_min_steps = (policy.window_min_s as i64 + step_ms / 1000 - 1) / (step_ms / 1000);
    let headroom = (policy.headroom_share * nodes as f64).ceil() as i64;
    let at_step = |k: usize| TimeMs(start.0 + k as i64 * step_ms);
    let local = |k: usize| LocalTime::of(k as i64 * step_ms, pool.utc_offset_h);

    // The forecast idle count at every step the windows may reach.
    let forecast_idle: Vec<i64> = (0..steps as usize + window_max_steps + 1)
        .map(|k| {
            let busy = (forecast_load_share(load, local(k)) * nodes as f64).ceil() as i64;
            (nodes - busy - headroom).max(0)
        })
        .collect();

    // Unforecast bursts: (start step, end step, share of nodes).
    let per_step_burst_p = load.bursts_per_day * policy.step_s as f64 / 86_400.0;
    let mut bursts: Vec<(usize, usize, f64)> = Vec::new();
    let rho = (-(policy.step_s as f64) / (load.noise_correlation_h * 3600.0)).exp();
    let mut noise = load.noise_sd_share * standard_normal(&mut rng);

    let mut live: Vec<Live> = Vec::new();
    let mut free: Vec<u32> = (0..pool.nodes).rev().collect();
    let mut serial = 0u64;
    for k in 0..steps as usize {
        let now = at_step(k);
        // The load this step: forecast, noise, bursts.
        noise = noise * rho
            + load.noise_sd_share * (1.0 - rho * rho).sqrt() * standard_normal(&mut rng);
        if rng.random::<f64>() < per_step_burst_p {
            let share = load.burst_share_mean * rng.random_range(0.5..1.5);
            let length_s = exponential(&mut rng, load.burst_hours_mean * 3600.0);
            let length_steps = (length_s / policy.step_s as f64).ceil().max(1.0) as usize;
            bursts.push((k, k + length_steps, share));
        }
        bursts.retain(|&(_, end, _)| end > k);
        let burst_share: f64 = bursts.iter().map(|&(_, _, share)| share).sum();
        let share = (forecast_load_share(load, local(k)) + noise + burst_share).clamp(0.0, 1.0);
        let busy = ((share * nodes as f64).ceil() as i64).min(nodes);
        // Internal work takes back released nodes only when it needs more than those kept;
        // new nodes are released only while the headroom stays free.
        let target = (nodes - busy - headroom).max(0) as usize;
        let keep = if policy.reclaim_into_headroom {
            target
        } else {
            (nodes - busy).max(0) as usize
        };

        // 1. Windows that ended give their nodes back.
        live.retain(|l| {
            let ended = l.until_step <= k;
            if ended {
                free.push(l.node);
            }
            !ended
        });
        // 2. Internal work needs released nodes: take back those whose window ends first
        // (newest on a tie).
        if live.len() > keep {
            live.sort_by_key(|l| (l.until_step, std::cmp::Reverse(l.block)));
            for l in live.drain(..live.len() - keep) {
                let emergency = policy.emergency_reclaim_share > 0.0
                    && emergencies.random::<f64>() < policy.emergency_reclaim_share;
                plan.blocks[l.block].reclaimed_at = Some(now);
                plan.blocks[l.block].emergency = emergency;
                plan.actions.push(TimedSupply {
                    at: now,
                    pool: pool_index,
                    action: SupplyAction::Reclaim {
                        block: l.block,
                        emergency,
                    },
                });
                free.push(l.node);
            }
        }
        // 3. Idle nodes beyond those released: release them, deepest in the stack last.
        free.sort_unstable_by(|a, b| b.cmp(a));
        while live.len() < target {
            // The new node may stay out while the forecast idle count exceeds the released
            // nodes still out then: those released before it, until their own windows end.
            let mut ends: Vec<usize> = live.iter().map(|l| l.until_step).collect();
            ends.sort_unstable();
            let mut still_out = ends.len();
            let mut closing = ends.iter().peekable();
            let needed_back = (k + 1..=k + window_max_steps)
                .find(|&j| {
                    while closing.next_if(|&&end| end <= j).is_some() {
                        still_out -= 1;
                    }
                    forecast_idle[j] <= still_out as i64
                })
                .unwrap_or(k + window_max_steps);
            if ((needed_back - k) as i64) < window_min_steps {
                break;
            }
            let Some(node) = free.pop() else { break };
            serial += 1;
            let block = plan.blocks.len();
            plan.blocks.push(PlannedBlock {
                pool: pool_index,
                block_id: format!("n{node:04}-{serial}"),
                node: format!("{}-{}-n{node:04}", pool.gpu, pool.region),
                gpus: pool.gpus_per_node,
                released_at: now,
                until: at_step(needed_back),
                reclaimed_at: None,
                emergency: false,
            });
            plan.actions.push(TimedSupply {
                at: now,
                pool: pool_index,
                action: SupplyAction::Release { block },
            });
            live.push(Live {
                block,
                node,
                until_step: needed_back,
            });
        }
    }
}
