//! The demo market (`offpeak serve --demo`): simulated suppliers and buyers, so a fresh server
//! has a living book, trades and preemptions at once.
//!
//! Suppliers are internal schedulers, one per pool, each owning a cluster of 8-GPU nodes. Their
//! own load follows a daily curve (idle at night, busy in the afternoon) with autocorrelated
//! noise. They keep the cluster's idle nodes released as capacity blocks, priced higher as
//! capacity gets scarce, and when their own load rises they take whole blocks back (oldest
//! first, the pool's notice), which preempts the leases on them. Now and then a scheduler warns
//! a block's buyers first with a reclaim forecast.
//!
//! The load curve, the arrival curve and the buyers' sizes, durations and valuations are those
//! of `offpeak simulate`'s default scenario (`src/simulate/`), so the simulator explains the
//! market the page shows.
//!
//! Buyers are startups with their own valuation of a GPU-hour. They arrive at a rate that also
//! follows the day, and bid for the scenario's sizes (1 to 64 GPUs) and durations: mostly
//! good-till-cancelled all-or-none bids, some partial, immediate-or-cancel, fill-or-kill or persistent. Bids left
//! unfilled for a while are cancelled; some leases are released early.
//!
//! Provisioners (DESIGN section 11, `provision.rs`): each scheduler hands its leases over,
//! and now and then fails one.
//!
//! Everything goes through [`SequencerHandle::submit`] as engine commands, exactly like the
//! REST handlers, so it is journaled, committed, published and shown on the page like real
//! traffic. State is read through [`SequencerHandle::read`], like `GET /v1/capacity`.
//!
//! Time: the simulated clock runs `speed` times faster than the wall clock (`--speed 1440`
//! is a day a minute) and drives the curves. Leases and windows live in engine time (the wall
//! clock), so simulated durations are divided by `speed` and then kept within the pool's
//! limits. Randomness comes from one seeded ChaCha generator (`--seed`); the timing of the
//! wall clock still varies between runs.

use crate::journal::CommittedBatch;
use crate::limits::{
    DEMO_BIDS_PER_S, DEMO_BID_AGE_MAX, DEMO_BLOCK_GPUS_MAX, DEMO_COMMANDS_PER_STEP_MAX, DEMO_STEP,
};
use crate::sequencer::{SequencerHandle, SubmitError};
use crate::simulate::curves::{arrival_rate_per_hour, forecast_load_share, lognormal, LocalTime};
use crate::simulate::Scenario;
use crate::timestamp::now_ms;
use matching_engine::{
    BlockStatus, Command, Event, LeaseStatus, NodeGpus, OrderId, PlaceBid, PoolConfig, PriceMicros,
    ReclaimCapacity, ReleaseCapacity, TimeInForce, TimeMs,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

mod provision;

use provision::Provisioning;

/// GPUs per simulated machine: blocks are whole nodes.
const NODE_GPUS: u32 = 8;

/// Simulated buyers.
const STARTUPS: &[&str] = &[
    "acme-ai",
    "globex-labs",
    "initech-ml",
    "hooli-research",
    "piedpiper",
    "vandelay-vision",
    "wonka-gen",
    "tyrell-bio",
    "cyberdyne",
    "soylent-llm",
    "umbrella-rl",
    "stark-sim",
];

/// Demo settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DemoOptions {
    /// Seed of the random generator.
    pub seed: u64,
    /// Simulated seconds per wall-clock second (1440: a day a minute).
    pub speed: f64,
    /// Simulated hour of day (0..24) the demo starts at.
    pub start_hour: f64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            seed: 42,
            speed: 720.0,
            // Before dawn: most capacity is idle, so the book fills at once and the morning
            // ramp brings reclaims within the first simulated hours.
            start_hour: 4.0,
        }
    }
}

/// Why demo options were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DemoOptionsError {
    /// `speed` is not a positive, finite number within bounds.
    #[error("--speed must be a number between 1 and 1000000")]
    Speed,
    /// `start_hour` is outside 0..24.
    #[error("the start hour must be between 0 and 24")]
    StartHour,
}

impl DemoOptions {
    /// Checks the options.
    pub fn validate(&self) -> Result<(), DemoOptionsError> {
        if !(self.speed.is_finite() && (1.0..=1_000_000.0).contains(&self.speed)) {
            return Err(DemoOptionsError::Speed);
        }
        if !(self.start_hour.is_finite() && (0.0..24.0).contains(&self.start_hour)) {
            return Err(DemoOptionsError::StartHour);
        }
        Ok(())
    }
}

/// What the demo did so far, counted from the events of its own committed commands.
#[derive(Debug, Default)]
pub struct DemoStats {
    /// Bids placed.
    pub bids: AtomicU64,
    /// Trades.
    pub trades: AtomicU64,
    /// Blocks released.
    pub releases: AtomicU64,
    /// Reclaims accepted.
    pub reclaims: AtomicU64,
    /// Leases given preemption notice.
    pub preemptions: AtomicU64,
    /// Commands the engine refused (expected now and then: a bid cancelled after it filled).
    pub rejections: AtomicU64,
}

impl DemoStats {
    fn count(&self, events: &[Event]) {
        for event in events {
            match event {
                Event::Traded { .. } => {
                    self.trades.fetch_add(1, Ordering::Relaxed);
                }
                Event::LeaseChanged { lease } if lease.status == LeaseStatus::Preempting => {
                    self.preemptions.fetch_add(1, Ordering::Relaxed);
                }
                Event::ReclaimAccepted { .. } => {
                    self.reclaims.fetch_add(1, Ordering::Relaxed);
                }
                Event::Rejected { .. } => {
                    self.rejections.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    }
}

/// The running demo.
pub struct Demo {
    stop: watch::Sender<bool>,
    join: JoinHandle<()>,
    stats: Arc<DemoStats>,
}

impl Demo {
    /// Its counters.
    pub fn stats(&self) -> Arc<DemoStats> {
        self.stats.clone()
    }

    /// Stops the simulation and waits for it (its last command is committed or refused).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.join.await {
            tracing::error!(error = %e, "the demo task failed");
        }
    }
}

/// Starts the demo on a running sequencer.
pub fn start(sequencer: SequencerHandle, options: DemoOptions) -> Result<Demo, DemoOptionsError> {
    options.validate()?;
    let (stop, stopped) = watch::channel(false);
    let stats = Arc::new(DemoStats::default());
    let join = tokio::spawn(run(sequencer, options, stats.clone(), stopped));
    Ok(Demo { stop, join, stats })
}

/// The scheduler's own load at a simulated hour of a weekday, before noise: the scenario's
/// internal load curve (`offpeak simulate`'s default scenario), lowest before dawn and highest
/// in the afternoon.
pub fn daily_load(scenario: &Scenario, hour: f64) -> f64 {
    forecast_load_share(
        &scenario.internal_load,
        LocalTime {
            hour,
            weekend: false,
        },
    )
}

/// How many buyers show up at a simulated hour, relative to the peak: the scenario's arrival
/// curve.
fn daily_demand(scenario: &Scenario, hour: f64) -> f64 {
    arrival_rate_per_hour(
        &scenario.startups,
        1.0,
        LocalTime {
            hour,
            weekend: false,
        },
    )
}

/// A bid's GPUs, drawn from the scenario's size mix.
fn draw_gpus(scenario: &Scenario, rng: &mut ChaCha8Rng) -> u32 {
    let sizes = &scenario.startups.sizes;
    let total: f64 = sizes.iter().map(|s| s.weight).sum();
    let mut pick = rng.random_range(0.0..total.max(f64::MIN_POSITIVE));
    for size in sizes {
        if pick < size.weight {
            return size.gpus;
        }
        pick -= size.weight;
    }
    sizes.last().map_or(NODE_GPUS, |s| s.gpus)
}

/// A job's simulated hours, drawn from the scenario's duration distribution.
fn draw_hours(scenario: &Scenario, rng: &mut ChaCha8Rng) -> f64 {
    let demand = &scenario.startups;
    lognormal(rng, demand.duration_median_h, demand.duration_sigma)
        .clamp(demand.duration_min_h, demand.duration_max_h)
}

/// A reference price per GPU-hour for a GPU model and region, in USD.
fn reference_usd(pool: &PoolConfig) -> f64 {
    let model = if pool.gpu.contains("h100") || pool.gpu.contains("h200") {
        2.40
    } else if pool.gpu.contains("a100") {
        1.30
    } else {
        1.00
    };
    let region = if pool.region.starts_with("us") {
        1.0
    } else {
        0.9
    };
    model * region
}

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// `usd` on the pool's tick and inside its band.
fn price_on_tick(pool: &PoolConfig, usd: f64) -> PriceMicros {
    let tick = pool.tick.0.max(1);
    let micros = (usd.max(0.0) * 1_000_000.0) as u64;
    let on_tick = (micros / tick).max(1) * tick;
    PriceMicros(on_tick.clamp(pool.price_min.0, pool.price_max.0))
}

/// A simulated duration in wall-clock seconds, within the pool's limits.
fn real_seconds(pool: &PoolConfig, simulated_s: f64, speed: f64) -> u32 {
    let real = (simulated_s / speed).round() as u64;
    real.clamp(
        u64::from(pool.duration_min_s.max(1)),
        u64::from(pool.duration_max_s.max(pool.duration_min_s.max(1))),
    ) as u32
}

/// One pool's internal scheduler.
struct Scheduler {
    account: String,
    pool: PoolConfig,
    nodes: u32,
    reference_usd: f64,
    /// AR(1) noise on the load.
    noise: f64,
    next_block: u64,
}

struct OpenBid {
    account: &'static str,
    order_id: OrderId,
    cancel_at: Instant,
}

struct Simulation {
    /// The curves and distributions of `offpeak simulate`'s default scenario.
    scenario: Scenario,
    sequencer: SequencerHandle,
    options: DemoOptions,
    rng: ChaCha8Rng,
    stats: Arc<DemoStats>,
    schedulers: Vec<Scheduler>,
    /// Each startup's valuation relative to the reference price.
    valuations: Vec<f64>,
    open_bids: VecDeque<OpenBid>,
    run_id: String,
    started: Instant,
    /// Bids owed by the arrival process (fractional carry-over between steps).
    arrivals: f64,
    /// Committed batches, to see the leases opened on the schedulers' blocks.
    batches: broadcast::Receiver<Arc<CommittedBatch>>,
    /// Leases being provisioned, soonest first.
    provisioning: Vec<Provisioning>,
}

enum Outcome {
    Done(Vec<Event>),
    /// Writes are refused for now (database down, overloaded): try again later.
    Refused,
    /// The sequencer stopped: the demo ends.
    Stopped,
}

impl Simulation {
    fn hour(&self) -> f64 {
        let simulated_s = self.started.elapsed().as_secs_f64() * self.options.speed;
        (self.options.start_hour + simulated_s / 3600.0).rem_euclid(24.0)
    }

    async fn submit(&self, command: Command) -> Outcome {
        match self.sequencer.submit(command).await {
            Ok(committed) => {
                let events = committed.events().to_vec();
                self.stats.count(&events);
                Outcome::Done(events)
            }
            Err(SubmitError::Stopped) => Outcome::Stopped,
            Err(_) => Outcome::Refused,
        }
    }

    /// One step: every scheduler adjusts its released capacity, buyers arrive, old bids go.
    /// False when the sequencer has stopped.
    async fn step(&mut self, dt: Duration) -> bool {
        let hour = self.hour();
        let mut budget = DEMO_COMMANDS_PER_STEP_MAX;
        for index in 0..self.schedulers.len() {
            if budget == 0 {
                break;
            }
            match self.schedule(index, hour).await {
                Some(used) => budget = budget.saturating_sub(used),
                None => return false,
            }
        }
        self.arrivals += DEMO_BIDS_PER_S * daily_demand(&self.scenario, hour) * dt.as_secs_f64();
        while self.arrivals >= 1.0 && budget > 0 {
            self.arrivals -= 1.0;
            budget -= 1;
            if !self.place_bid().await {
                return false;
            }
        }
        // Arrivals the budget could not take are dropped, not queued: the demo never builds
        // a backlog against a slow database.
        self.arrivals = self.arrivals.min(1.0);
        let now = Instant::now();
        while budget > 0 && self.open_bids.front().is_some_and(|b| b.cancel_at <= now) {
            let Some(bid) = self.open_bids.pop_front() else {
                break;
            };
            budget -= 1;
            let cancel = Command::CancelBid {
                account: bid.account.to_owned(),
                order_id: bid.order_id,
            };
            if matches!(self.submit(cancel).await, Outcome::Stopped) {
                return false;
            }
        }
        if budget > 0 && self.rng.random_bool(0.05) && !self.release_a_lease().await {
            return false;
        }
        self.provision(budget).await
    }

    /// Brings one scheduler's released capacity towards its idle capacity. Returns the
    /// commands used, or `None` when the sequencer stopped.
    async fn schedule(&mut self, index: usize, hour: f64) -> Option<usize> {
        let (account, pool_id) = {
            let s = &self.schedulers[index];
            (s.account.clone(), s.pool.id.clone())
        };
        let owner = account.clone();
        let blocks = match self
            .sequencer
            .read(move |v| v.engine.blocks_of(&owner))
            .await
        {
            Ok(blocks) => blocks,
            Err(SubmitError::Stopped) => return None,
            Err(_) => return Some(0),
        };
        let mut live: Vec<_> = blocks
            .into_iter()
            .filter(|b| b.status != BlockStatus::Closed && *b.pool == *pool_id)
            .collect();
        // Oldest first: the nodes lent out longest are the first the scheduler wants back.
        live.sort_by_key(|b| b.available_from);
        // GPUs the market holds (under notice included: they come back only when it ends),
        // and those of them not already being taken back.
        let held: u32 = live
            .iter()
            .map(|b| b.gpus.saturating_sub(b.gpus_reclaimed))
            .sum();
        let offered: u32 = live
            .iter()
            .map(|b| {
                b.gpus
                    .saturating_sub(b.gpus_reclaimed)
                    .saturating_sub(b.gpus_reclaiming)
            })
            .sum();

        let noise_step = normal(&mut self.rng);
        let scheduler = &mut self.schedulers[index];
        scheduler.noise = 0.9 * scheduler.noise + 0.04 * noise_step;
        let load = (daily_load(&self.scenario, hour) + scheduler.noise).clamp(0.0, 1.0);
        let cluster_gpus = scheduler.nodes * NODE_GPUS;
        // The scheduler keeps two nodes of headroom for its own bursts.
        let idle_gpus = ((1.0 - load) * f64::from(cluster_gpus)) as u32;
        let target = idle_gpus.saturating_sub(2 * NODE_GPUS) / NODE_GPUS * NODE_GPUS;

        // A node of hysteresis each way, so noise does not release and reclaim in turn.
        if held + NODE_GPUS <= target.saturating_sub(NODE_GPUS) {
            let gpus = (target - held).min(DEMO_BLOCK_GPUS_MAX) / NODE_GPUS * NODE_GPUS;
            if gpus == 0 {
                return Some(0);
            }
            let command = self.release_command(index, gpus, load);
            return match self.submit(command).await {
                Outcome::Stopped => None,
                Outcome::Done(events) => {
                    if events
                        .iter()
                        .any(|e| matches!(e, Event::BlockChanged { .. }))
                    {
                        self.stats.releases.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(1)
                }
                Outcome::Refused => Some(1),
            };
        }
        if offered >= target + 2 * NODE_GPUS {
            // Whole blocks back, oldest first: the scheduler needs those machines.
            let Some(block) = live
                .iter()
                .find(|b| b.gpus > b.gpus_reclaimed + b.gpus_reclaiming)
            else {
                return Some(0);
            };
            let gpus = block.gpus - block.gpus_reclaimed - block.gpus_reclaiming;
            if block.gpus_sold > 0
                && block.reclaim_forecast_at.is_none()
                && self.rng.random_bool(0.2)
            {
                // A heads-up first; the reclaim itself comes at a later step.
                let forecast = Command::ForecastReclaim {
                    supplier: account.clone(),
                    block_id: block.block_id.to_string(),
                    reclaim_at: TimeMs(
                        now_ms().0 + i64::from(self.schedulers[index].pool.notice_s) * 1000,
                    ),
                };
                return match self.submit(forecast).await {
                    Outcome::Stopped => None,
                    _ => Some(1),
                };
            }
            let reclaim = Command::ReclaimCapacity(ReclaimCapacity {
                supplier: account,
                block_id: block.block_id.to_string(),
                gpus,
                notice_s: None,
                emergency: false,
            });
            return match self.submit(reclaim).await {
                Outcome::Stopped => None,
                _ => Some(1),
            };
        }
        Some(0)
    }

    fn release_command(&mut self, index: usize, gpus: u32, load: f64) -> Command {
        let speed = self.options.speed;
        let window_sim_s = self.rng.random_range(4.0..10.0) * 3600.0;
        let price_noise = 1.0 + 0.05 * normal(&mut self.rng);
        let rack = self.rng.random_range(1..40u32);
        let scheduler = &mut self.schedulers[index];
        scheduler.next_block += 1;
        let block_id = format!("{}-{}", self.run_id, scheduler.next_block);
        // Scarcer capacity asks more.
        let reserve = scheduler.reference_usd * (0.55 + 0.35 * load) * price_noise;
        // The window always outlasts the longest bid the demo places, so every block can sell.
        let longest_bid_s = real_seconds(
            &scheduler.pool,
            self.scenario.startups.duration_max_h * 3600.0,
            speed,
        );
        let window_s = real_seconds(&scheduler.pool, window_sim_s, speed)
            .max(longest_bid_s.saturating_mul(2))
            .max(120);
        let nodes = (0..gpus / NODE_GPUS)
            .map(|n| NodeGpus {
                node: format!("rack{rack}-n{}", scheduler.next_block * 8 + u64::from(n)).into(),
                gpus: NODE_GPUS,
            })
            .collect();
        Command::ReleaseCapacity(ReleaseCapacity {
            supplier: scheduler.account.clone(),
            block_id,
            pool: scheduler.pool.id.clone(),
            gpus,
            reserve_price: price_on_tick(&scheduler.pool, reserve),
            available_from: None,
            available_until: TimeMs(now_ms().0 + i64::from(window_s) * 1000),
            nodes,
        })
    }

    /// A startup places a bid. False when the sequencer stopped.
    async fn place_bid(&mut self) -> bool {
        if self.schedulers.is_empty() {
            return true;
        }
        let who = self.rng.random_range(0..STARTUPS.len());
        let account = STARTUPS[who];
        let pool = self.schedulers[self.rng.random_range(0..self.schedulers.len())]
            .pool
            .clone();
        let reference = reference_usd(&pool);
        let price_usd = reference * self.valuations[who] * (0.08 * normal(&mut self.rng)).exp();
        let gpus = draw_gpus(&self.scenario, &mut self.rng).min(pool.gpus_per_order_max.max(1));
        let hours = draw_hours(&self.scenario, &mut self.rng);
        let duration_s = real_seconds(&pool, hours * 3600.0, self.options.speed);
        let roll: f64 = self.rng.random();
        let (tif, min_gpus, persistent) = if roll < 0.10 {
            (TimeInForce::Ioc, Some((gpus / 2).max(1)), false)
        } else if roll < 0.18 {
            (TimeInForce::Fok, None, false)
        } else if roll < 0.33 {
            (TimeInForce::Gtc, None, true)
        } else if roll < 0.55 {
            (TimeInForce::Gtc, Some((gpus / 4).max(1)), false)
        } else {
            (TimeInForce::Gtc, None, false)
        };
        let command = Command::PlaceBid(PlaceBid {
            account: account.to_owned(),
            pool: pool.id.clone(),
            gpus,
            min_gpus,
            price: price_on_tick(&pool, price_usd),
            duration_s,
            max_duration_s: None,
            tif,
            expires_at: None,
            persistent,
            client_order_id: None,
            ssh_public_keys: Vec::new(),
        });
        let events = match self.submit(command).await {
            Outcome::Stopped => return false,
            Outcome::Refused => return true,
            Outcome::Done(events) => events,
        };
        self.stats.bids.fetch_add(1, Ordering::Relaxed);
        let resting = events.iter().rev().find_map(|e| match e {
            Event::BidAccepted { order } | Event::OrderChanged { order }
                if &*order.account == account =>
            {
                Some(order.clone())
            }
            _ => None,
        });
        if let Some(order) = resting {
            if !order.status.is_terminal() || order.persistent {
                // Unfilled bids give up after a while; persistent ones are cancelled later so
                // their re-bids after preemptions can be seen first.
                let age = DEMO_BID_AGE_MAX.mul_f64(if persistent { 3.0 } else { 1.0 });
                self.open_bids.push_back(OpenBid {
                    account,
                    order_id: order.id,
                    cancel_at: Instant::now() + age.mul_f64(self.rng.random_range(0.3..1.0)),
                });
            }
        }
        true
    }

    /// A startup ends one of its running leases early. False when the sequencer stopped.
    async fn release_a_lease(&mut self) -> bool {
        let account = STARTUPS[self.rng.random_range(0..STARTUPS.len())];
        let leases = match self
            .sequencer
            .read(move |v| v.engine.leases_of(account))
            .await
        {
            Ok(leases) => leases,
            Err(SubmitError::Stopped) => return false,
            Err(_) => return true,
        };
        let active: Vec<_> = leases
            .iter()
            .filter(|l| l.status == LeaseStatus::Active)
            .collect();
        if active.is_empty() {
            return true;
        }
        let lease = active[self.rng.random_range(0..active.len())];
        let command = Command::ReleaseLease {
            account: account.to_owned(),
            lease_id: lease.id,
        };
        !matches!(self.submit(command).await, Outcome::Stopped)
    }
}

async fn run(
    sequencer: SequencerHandle,
    options: DemoOptions,
    stats: Arc<DemoStats>,
    mut stopped: watch::Receiver<bool>,
) {
    let pools = match sequencer.read(|v| v.engine.pools()).await {
        Ok(pools) => pools,
        Err(e) => {
            tracing::error!(error = %e, "demo: cannot read the pools");
            return;
        }
    };
    if pools.is_empty() {
        tracing::warn!("demo: there are no pools to trade in");
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut configs: Vec<PoolConfig> = pools.into_iter().map(|p| p.config).collect();
    configs.sort_by(|a, b| a.id.cmp(&b.id));
    let schedulers = configs
        .into_iter()
        .map(|pool| Scheduler {
            account: format!("sched-{}", pool.id.replace('.', "-")),
            nodes: rng.random_range(16..40u32),
            reference_usd: reference_usd(&pool),
            pool,
            noise: 0.0,
            next_block: 0,
        })
        .collect();
    let scenario = Scenario::default_week();
    let value_cap = scenario.startups.value_max_share / scenario.startups.value_median_share;
    let valuations = STARTUPS
        .iter()
        .map(|_| lognormal(&mut rng, 1.0, scenario.startups.value_sigma).min(value_cap))
        .collect();
    let batches = sequencer.subscribe();
    let mut simulation = Simulation {
        scenario,
        batches,
        provisioning: Vec::new(),
        sequencer,
        options,
        rng,
        stats: stats.clone(),
        schedulers,
        valuations,
        open_bids: VecDeque::new(),
        // Block ids must stay unique per supplier across restarts on the same data.
        run_id: format!("d{:x}", now_ms().0),
        started: Instant::now(),
        arrivals: 0.0,
    };
    tracing::info!(
        seed = options.seed,
        speed = options.speed,
        "demo market started: simulated schedulers and startups are trading"
    );
    let mut interval = tokio::time::interval(DEMO_STEP);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_step = Instant::now();
    let mut last_report = Instant::now();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            _ = interval.tick() => {}
        }
        let dt = last_step.elapsed().min(DEMO_STEP * 10);
        last_step = Instant::now();
        if !simulation.step(dt).await {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(30) {
            last_report = Instant::now();
            let hour = simulation.hour();
            tracing::info!(
                simulated_time = %format!("{:02}:{:02}", hour as u32, (hour.fract() * 60.0) as u32),
                bids = stats.bids.load(Ordering::Relaxed),
                trades = stats.trades.load(Ordering::Relaxed),
                preemptions = stats.preemptions.load(Ordering::Relaxed),
                "demo market"
            );
        }
    }
    tracing::info!("demo market stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_is_low_at_night_and_high_in_the_afternoon() {
        let scenario = Scenario::default_week();
        let load = |hour: f64| daily_load(&scenario, hour);
        let (trough, peak) = (
            scenario.internal_load.trough_share,
            scenario.internal_load.peak_share,
        );
        assert!(load(3.0) < trough + 0.02, "{}", load(3.0));
        assert!(load(15.0) > peak - 0.02, "{}", load(15.0));
        assert!(load(10.0) > load(7.0));
        for h in 0..240 {
            assert!((0.0..=1.0).contains(&load(f64::from(h) / 10.0)));
        }
    }

    #[test]
    fn buyers_draw_the_scenarios_sizes_and_durations() {
        let scenario = Scenario::default_week();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..200 {
            let gpus = draw_gpus(&scenario, &mut rng);
            assert!(scenario.startups.sizes.iter().any(|s| s.gpus == gpus));
            let hours = draw_hours(&scenario, &mut rng);
            assert!(
                (scenario.startups.duration_min_h..=scenario.startups.duration_max_h)
                    .contains(&hours)
            );
        }
    }

    #[test]
    fn prices_land_on_the_tick_inside_the_band() {
        let pool = PoolConfig::with_defaults("h100-sxm", "us-east");
        assert_eq!(price_on_tick(&pool, 1.23456), PriceMicros(1_230_000));
        assert_eq!(price_on_tick(&pool, 0.0), pool.price_min);
        assert_eq!(price_on_tick(&pool, 1e12), pool.price_max);
        assert_eq!(price_on_tick(&pool, f64::NAN), pool.price_min);
    }

    #[test]
    fn durations_are_compressed_but_stay_within_the_pool_limits() {
        let pool = PoolConfig::with_defaults("a100-80gb", "eu-west");
        assert_eq!(real_seconds(&pool, 4.0 * 3600.0, 1.0), 4 * 3600);
        assert_eq!(real_seconds(&pool, 4.0 * 3600.0, 60.0), 240);
        assert_eq!(
            real_seconds(&pool, 4.0 * 3600.0, 100_000.0),
            pool.duration_min_s
        );
    }

    #[test]
    fn bad_options_are_refused() {
        let ok = DemoOptions::default();
        assert_eq!(ok.validate(), Ok(()));
        for speed in [0.0, -1.0, f64::NAN, f64::INFINITY, 2e6] {
            let options = DemoOptions { speed, ..ok };
            assert_eq!(options.validate(), Err(DemoOptionsError::Speed));
        }
        let options = DemoOptions {
            start_hour: 24.0,
            ..ok
        };
        assert_eq!(options.validate(), Err(DemoOptionsError::StartHour));
    }
}
