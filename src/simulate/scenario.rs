//! Scenario files: the fleet, its internal load, the schedulers' release policy, the startups'
//! demand and the market's rules, as one documented JSON document.
//!
//! Every field is required (`deny_unknown_fields`, no silent defaults), so a scenario file says
//! everything the run depends on; `scenarios/default.json` is the reference and is built into
//! the binary ([`Scenario::default_week`]). Shares are fractions (0.25 = 25%), prices are USD
//! per GPU-hour, times of day are local hours (0-24) of the pool's region.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// The default scenario, built in so `offpeak simulate` needs no file.
const DEFAULT_SCENARIO_JSON: &str = include_str!("../../scenarios/default.json");

/// A market scenario: supply, demand and the rules every mechanism runs under.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Free text: what this scenario represents.
    pub description: String,
    /// Simulated time zero, in milliseconds since the Unix epoch. Taken to be a Monday 00:00
    /// UTC (the weekly cycle counts days from it); the default is 2025-01-06T00:00:00Z.
    pub start_at_ms: i64,
    /// Length of the run in days when `--days` is not given.
    pub days: f64,
    /// Rules of the market, common to every mechanism.
    pub market: MarketRules,
    /// The internal workloads' load curve, the same shape in every pool (in local time).
    pub internal_load: InternalLoad,
    /// How each pool's internal scheduler releases and reclaims idle nodes.
    pub scheduler: SchedulerPolicy,
    /// The startups: how their jobs arrive, what they are worth, how they bid.
    pub startups: StartupDemand,
    /// The pools (one order book each).
    pub pools: Vec<PoolScenario>,
}

/// Market rules: pool settings, the mechanisms' parameters and the suppliers' reserve policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketRules {
    /// The pools' guaranteed preemption notice, seconds (DESIGN default 120, as EC2 Spot).
    pub notice_s: u32,
    /// A lease preempted within this many seconds of its start costs nothing (DESIGN 3600).
    pub free_if_preempted_within_s: u32,
    /// `batch`: milliseconds between uncrosses of the frequent batch auction.
    pub batch_interval_ms: u64,
    /// `posted`: the posted spot price is `(1 - posted_discount) * on_demand_usd`.
    pub posted_discount: f64,
    /// The pool's public reference price is the GPU-weighted average price of its trades over
    /// the last this many hours (before its first trade: the posted price). Market-following
    /// reserves and walking bids start from it.
    pub reference_lookback_h: f64,
    /// `best_posted`: the grid of posted prices searched, as shares of on-demand.
    pub best_posted_search: PostedSearch,
    /// The suppliers' reserve price in `continuous` and `batch` (in `posted` the reserve is the
    /// posted price).
    pub reserve: ReservePolicy,
}

/// The hindsight search for the best fixed price: a coarse grid, then a fine one around the
/// best coarse point, each pool on its own (pools share no buyers, so their revenues add up).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostedSearch {
    /// Lowest price tried, as a share of on-demand.
    pub from_share: f64,
    /// Highest price tried, as a share of on-demand.
    pub to_share: f64,
    /// Step of the coarse grid.
    pub coarse_step_share: f64,
    /// Step of the fine grid, tried within one coarse step either side of the best.
    pub fine_step_share: f64,
}

/// How a scheduler prices the idle nodes it releases in `continuous` and `batch`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum ReservePolicy {
    /// A fixed share of the pool's on-demand price (e.g. the power and wear a GPU-hour costs).
    Fixed {
        /// Reserve as a share of on-demand.
        share_of_on_demand: f64,
    },
    /// Follow the market: ask the pool's reference price (`reference_lookback_h`), and lower
    /// the premium over the floor by half every `half_life_min` while GPUs stay unsold (see
    /// `pricing`).
    Market {
        /// The lowest ask, as a share of on-demand (the cost of running the GPU).
        floor_share_of_on_demand: f64,
        /// Minutes for an unsold ask's premium over the floor to halve.
        half_life_min: f64,
    },
}

/// Internal utilisation as a share of a pool's nodes: a forecastable daily and weekly cycle,
/// plus noise and bursts the scheduler cannot forecast.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalLoad {
    /// Share of nodes busy at the quietest hour of a weekday.
    pub trough_share: f64,
    /// Share of nodes busy at the busiest hour of a weekday.
    pub peak_share: f64,
    /// Local hour of the daily peak.
    pub peak_hour: f64,
    /// Shape of the daily curve: `((1 + cos)/2)^sharpness`; above 1 makes the peak narrower.
    pub sharpness: f64,
    /// On Saturday and Sunday the swing above the trough is scaled by this.
    pub weekend_swing_factor: f64,
    /// Unforecast noise: standard deviation, as a share of nodes.
    pub noise_sd_share: f64,
    /// Unforecast noise: correlation time, hours (an Ornstein-Uhlenbeck process).
    pub noise_correlation_h: f64,
    /// Unforecast bursts of internal work: expected number per day (Poisson).
    pub bursts_per_day: f64,
    /// Mean size of a burst, as a share of nodes (each drawn uniformly from 0.5x to 1.5x).
    pub burst_share_mean: f64,
    /// Mean length of a burst, hours (exponential).
    pub burst_hours_mean: f64,
}

/// A pool's internal scheduler: it releases the nodes its forecast says stay idle, each as a
/// one-node capacity block whose window ends when the forecast needs the node back, and
/// reclaims nodes (with the pool's notice) when the actual load rises above the forecast.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerPolicy {
    /// Seconds between the scheduler's decisions.
    pub step_s: u32,
    /// Share of the pool's nodes never released: the buffer against unforecast load.
    pub headroom_share: f64,
    /// A node forecast to be idle for less than this is not released, seconds.
    pub window_min_s: u32,
    /// The longest window a block is released for, hours (the forecast's reach).
    pub window_max_h: f64,
    /// Share of reclaims made without notice (`emergency`); 0 honours every notice.
    pub emergency_reclaim_share: f64,
    /// `true`: reclaim released nodes as soon as the internal load eats into the headroom
    /// (the headroom then buffers nothing, and every upward wobble of the load preempts
    /// someone). `false`: reclaim only when the internal work needs more nodes than the
    /// scheduler kept, headroom included.
    pub reclaim_into_headroom: bool,
}

/// The startups' jobs: arrivals, sizes, lengths, deadlines, valuations, and how they bid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartupDemand {
    /// Number of startup accounts; each job belongs to one, drawn uniformly.
    pub accounts: u32,
    /// Jobs start arriving this many hours before the first capacity is released, so the
    /// market opens with buyers waiting, as a market that has been running would.
    pub lead_h: f64,
    /// Local hour at which jobs arrive fastest.
    pub arrival_peak_hour: f64,
    /// Arrival rate at the quietest hour, as a share of the peak rate.
    pub arrival_trough_share: f64,
    /// Arrival rate on Saturday and Sunday, as a share of the weekday rate.
    pub arrival_weekend_share: f64,
    /// Job sizes in GPUs, with their relative weights.
    pub sizes: Vec<WeightedSize>,
    /// Job length: lognormal, median in hours.
    pub duration_median_h: f64,
    /// Job length: lognormal sigma (of the natural log).
    pub duration_sigma: f64,
    /// Shortest job, hours.
    pub duration_min_h: f64,
    /// Longest job, hours.
    pub duration_max_h: f64,
    /// Patience: how long after the earliest finish the job may still finish (its deadline is
    /// arrival + duration + patience); lognormal median, hours.
    pub patience_median_h: f64,
    /// Patience: lognormal sigma.
    pub patience_sigma: f64,
    /// Valuation per GPU-hour: lognormal median, as a share of the pool's on-demand price.
    pub value_median_share: f64,
    /// Valuation: lognormal sigma.
    pub value_sigma: f64,
    /// Valuation cap, as a share of on-demand (above it a buyer would rent on-demand instead).
    pub value_max_share: f64,
    /// The shortest lease a checkpointing job accepts, seconds.
    pub tolerant_chunk_s: u32,
    /// Share of jobs whose bids are persistent: the engine bids again for GPUs preempted away.
    pub persistent_share: f64,
    /// How buyers price their bids in the `batch` auction: `value * (1 - bid_shading)`; 0 bids
    /// the valuation (in a uniform-price auction a small buyer gains nothing by bidding less).
    /// In `posted` a buyer whose valuation reaches the posted price bids exactly it.
    pub bid_shading: f64,
    /// How buyers price their bids in the `continuous` book, where a resting bid pays its own
    /// price.
    pub continuous_bidding: ContinuousBidding,
}

/// How a buyer prices a bid in the continuous book.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum ContinuousBidding {
    /// As in the batch auction: `value * (1 - bid_shading)`.
    Valuation,
    /// Start at the pool's reference price (or the valuation, when lower) and raise the bid
    /// in equal steps, every `amend_every_min`, so that it reaches the valuation at the job's
    /// latest start: a buyer pays what the market asks, and more only as time runs out.
    WalkUp {
        /// Minutes between raises.
        amend_every_min: f64,
    },
}

/// One job size, how often it is drawn, and how often such a job checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedSize {
    /// GPUs.
    pub gpus: u32,
    /// Relative weight.
    pub weight: f64,
    /// Share of jobs of this size that checkpoint (are tolerant): a preempted lease keeps the
    /// work it did, they take leases of any length from `tolerant_chunk_s` up, a node at a
    /// time, and bid again for the work left. The others are rigid: all GPUs at once, for
    /// the whole duration, and a preempted lease's work is lost.
    pub tolerant_share: f64,
}

/// One pool: its fleet, its price and the startup demand it sees.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolScenario {
    /// GPU model, e.g. `h100-sxm`.
    pub gpu: String,
    /// Region, e.g. `us-east`.
    pub region: String,
    /// The region's offset from UTC in hours: its curves run in local time.
    pub utc_offset_h: f64,
    /// The on-demand price of a GPU-hour of this model here, USD: the buyers' outside option.
    pub on_demand_usd: f64,
    /// Nodes in the internal fleet.
    pub nodes: u32,
    /// GPUs per node.
    pub gpus_per_node: u32,
    /// Startup jobs arriving per hour at the daily peak on a weekday.
    pub jobs_per_hour_peak: f64,
}

impl PoolScenario {
    /// The pool id, `<gpu>.<region>`.
    pub fn id(&self) -> String {
        format!("{}.{}", self.gpu, self.region)
    }
}

/// Why a scenario was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScenarioError {
    /// A field is outside its range.
    #[error("scenario field `{field}` must be {rule}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// Two pools share an id.
    #[error("pool `{0}` is listed twice")]
    DuplicatePool(String),
}

impl Scenario {
    /// The default scenario: a week of four pools (H100 and A100, two regions).
    pub fn default_week() -> Scenario {
        Scenario::parse(DEFAULT_SCENARIO_JSON).expect("the built-in scenario is valid")
    }

    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Scenario> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the scenario {}", path.display()))?;
        Scenario::parse(&text).with_context(|| format!("in the scenario {}", path.display()))
    }

    /// Parses and checks a scenario document.
    pub fn parse(text: &str) -> anyhow::Result<Scenario> {
        let scenario: Scenario = serde_json::from_str(text)?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Checks every range the simulation relies on.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let check = |ok: bool, field: &'static str, rule: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(ScenarioError::OutOfRange { field, rule })
            }
        };
        let share = |x: f64| (0.0..=1.0).contains(&x);
        let positive = |x: f64| x.is_finite() && x > 0.0;
        check(self.start_at_ms >= 0, "start_at_ms", "at or after 1970")?;
        check(
            positive(self.days) && self.days <= 60.0,
            "days",
            "in (0, 60]",
        )?;
        let m = &self.market;
        check(m.notice_s <= 86_400, "market.notice_s", "at most a day")?;
        check(
            m.batch_interval_ms >= 1,
            "market.batch_interval_ms",
            "at least 1",
        )?;
        check(
            m.posted_discount >= 0.0 && m.posted_discount < 1.0,
            "market.posted_discount",
            "in [0, 1)",
        )?;
        check(
            positive(m.reference_lookback_h) && m.reference_lookback_h <= 24.0 * 7.0,
            "market.reference_lookback_h",
            "in (0, 168]",
        )?;
        let s = &m.best_posted_search;
        check(
            positive(s.from_share) && s.from_share < s.to_share && s.to_share <= 1.0,
            "market.best_posted_search",
            "0 < from_share < to_share <= 1",
        )?;
        check(
            positive(s.coarse_step_share) && positive(s.fine_step_share),
            "market.best_posted_search steps",
            "positive",
        )?;
        check(
            (s.to_share - s.from_share) / s.coarse_step_share <= 200.0
                && s.coarse_step_share / s.fine_step_share <= 100.0,
            "market.best_posted_search steps",
            "at most 200 coarse and 2x100 fine prices",
        )?;
        match m.reserve {
            ReservePolicy::Fixed { share_of_on_demand } => check(
                positive(share_of_on_demand) && share_of_on_demand <= 1.0,
                "market.reserve.share_of_on_demand",
                "in (0, 1]",
            )?,
            ReservePolicy::Market {
                floor_share_of_on_demand,
                half_life_min,
            } => {
                check(
                    positive(floor_share_of_on_demand) && floor_share_of_on_demand <= 1.0,
                    "market.reserve.floor_share_of_on_demand",
                    "in (0, 1]",
                )?;
                check(
                    positive(half_life_min) && half_life_min <= 24.0 * 60.0,
                    "market.reserve.half_life_min",
                    "in (0, 1440]",
                )?;
            }
        }
        let l = &self.internal_load;
        check(
            share(l.trough_share) && share(l.peak_share) && l.trough_share <= l.peak_share,
            "internal_load.trough_share/peak_share",
            "shares with trough <= peak",
        )?;
        check(
            (0.0..24.0).contains(&l.peak_hour),
            "internal_load.peak_hour",
            "in [0, 24)",
        )?;
        check(positive(l.sharpness), "internal_load.sharpness", "positive")?;
        check(
            share(l.weekend_swing_factor),
            "internal_load.weekend_swing_factor",
            "a share",
        )?;
        check(
            share(l.noise_sd_share),
            "internal_load.noise_sd_share",
            "a share",
        )?;
        check(
            positive(l.noise_correlation_h),
            "internal_load.noise_correlation_h",
            "positive",
        )?;
        check(
            l.bursts_per_day >= 0.0 && l.bursts_per_day <= 100.0,
            "internal_load.bursts_per_day",
            "in [0, 100]",
        )?;
        check(
            share(l.burst_share_mean),
            "internal_load.burst_share_mean",
            "a share",
        )?;
        check(
            positive(l.burst_hours_mean),
            "internal_load.burst_hours_mean",
            "positive",
        )?;
        let p = &self.scheduler;
        check(
            (60..=3600).contains(&p.step_s),
            "scheduler.step_s",
            "in [60, 3600]",
        )?;
        check(
            share(p.headroom_share),
            "scheduler.headroom_share",
            "a share",
        )?;
        check(
            positive(p.window_max_h) && p.window_max_h <= 24.0 * 30.0,
            "scheduler.window_max_h",
            "in (0, 720]",
        )?;
        check(
            p.window_min_s >= 60 && (p.window_min_s as f64) < p.window_max_h * 3600.0,
            "scheduler.window_min_s",
            "at least 60 and below window_max_h",
        )?;
        check(
            share(p.emergency_reclaim_share),
            "scheduler.emergency_reclaim_share",
            "a share",
        )?;
        let d = &self.startups;
        check(
            (1..=10_000).contains(&d.accounts),
            "startups.accounts",
            "in [1, 10000]",
        )?;
        check(
            d.lead_h >= 0.0 && d.lead_h <= 72.0,
            "startups.lead_h",
            "in [0, 72]",
        )?;
        check(
            (0.0..24.0).contains(&d.arrival_peak_hour),
            "startups.arrival_peak_hour",
            "in [0, 24)",
        )?;
        check(
            share(d.arrival_trough_share),
            "startups.arrival_trough_share",
            "a share",
        )?;
        check(
            share(d.arrival_weekend_share),
            "startups.arrival_weekend_share",
            "a share",
        )?;
        check(
            !d.sizes.is_empty()
                && d.sizes.iter().all(|s| {
                    s.gpus >= 1
                        && s.weight >= 0.0
                        && s.weight.is_finite()
                        && share(s.tolerant_share)
                })
                && d.sizes.iter().any(|s| s.weight > 0.0),
            "startups.sizes",
            "non-empty, GPUs at least 1, weights non-negative and not all zero, shares in [0, 1]",
        )?;
        check(
            positive(d.duration_min_h)
                && d.duration_min_h * 3600.0 >= 60.0
                && d.duration_min_h <= d.duration_median_h
                && d.duration_median_h <= d.duration_max_h
                && d.duration_max_h <= 24.0 * 30.0,
            "startups.duration_*",
            "1 minute <= min <= median <= max <= 30 days",
        )?;
        check(
            d.duration_sigma >= 0.0,
            "startups.duration_sigma",
            "non-negative",
        )?;
        check(
            positive(d.patience_median_h),
            "startups.patience_median_h",
            "positive",
        )?;
        check(
            d.patience_sigma >= 0.0,
            "startups.patience_sigma",
            "non-negative",
        )?;
        check(
            positive(d.value_median_share)
                && d.value_median_share <= d.value_max_share
                && d.value_max_share <= 1.0,
            "startups.value_median_share/value_max_share",
            "0 < median <= max <= 1",
        )?;
        check(d.value_sigma >= 0.0, "startups.value_sigma", "non-negative")?;
        check(
            d.tolerant_chunk_s >= 60,
            "startups.tolerant_chunk_s",
            "at least 60",
        )?;
        check(
            share(d.persistent_share),
            "startups.persistent_share",
            "a share",
        )?;
        check(
            d.bid_shading >= 0.0 && d.bid_shading < 1.0,
            "startups.bid_shading",
            "in [0, 1)",
        )?;
        if let ContinuousBidding::WalkUp { amend_every_min } = d.continuous_bidding {
            check(
                (1.0..=24.0 * 60.0).contains(&amend_every_min),
                "startups.continuous_bidding.amend_every_min",
                "in [1, 1440]",
            )?;
        }
        check(
            !self.pools.is_empty() && self.pools.len() <= 64,
            "pools",
            "1 to 64 pools",
        )?;
        let mut ids: Vec<String> = Vec::new();
        for pool in &self.pools {
            check(
                !pool.gpu.is_empty() && !pool.region.is_empty(),
                "pools[].gpu/region",
                "non-empty",
            )?;
            check(
                pool.utc_offset_h.abs() <= 14.0,
                "pools[].utc_offset_h",
                "in [-14, 14]",
            )?;
            check(
                positive(pool.on_demand_usd) && pool.on_demand_usd <= 100.0,
                "pools[].on_demand_usd",
                "in (0, 100]",
            )?;
            check(
                (1..=10_000).contains(&pool.nodes),
                "pools[].nodes",
                "in [1, 10000]",
            )?;
            check(
                (1..=64).contains(&pool.gpus_per_node),
                "pools[].gpus_per_node",
                "in [1, 64]",
            )?;
            check(
                pool.jobs_per_hour_peak >= 0.0 && pool.jobs_per_hour_peak <= 10_000.0,
                "pools[].jobs_per_hour_peak",
                "in [0, 10000]",
            )?;
            let id = pool.id();
            if ids.contains(&id) {
                return Err(ScenarioError::DuplicatePool(id));
            }
            ids.push(id);
        }
        Ok(())
    }
}
