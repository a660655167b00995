//! The startups as agents: what each job bids, and how it reacts to its bids and leases.
//!
//! The behaviour is the same in every mechanism, except for the price:
//!
//! - price: in `batch` a job bids its valuation less `bid_shading`, on the tick (in a
//!   uniform-price auction a small buyer's bid barely moves the price it pays, so bidding the
//!   valuation is the natural strategy). In `continuous`, where a resting bid pays its own
//!   price, a job either does the same (`valuation`) or walks up (`walk_up`): it starts at
//!   the pool's public reference price (its valuation, if lower) and raises its bid in equal
//!   steps to reach its valuation at its latest start. In `posted` it bids the posted price
//!   when its valuation reaches it and stays away otherwise; in `none` nobody bids.
//! - a rigid job bids once, when it arrives: all its GPUs at once (all-or-none), for its whole
//!   duration, good till the latest start that still meets its deadline. A preempted lease's
//!   work is lost; a persistent bid asks again for those GPUs (the engine does that).
//! - a checkpointing (tolerant) job bids for as many GPUs as it may still use, at least one
//!   node's worth per execution, for leases from `tolerant_chunk_s` up to the work it has
//!   left; it releases a lease once its work is done (or at its deadline), and when a lease
//!   ends with work left and no bid of its own open, it bids again for the rest.
//!
//! The value a job gets is its valuation times the GPU-time of useful work: completed (or,
//! at the horizon, released) leases of a rigid job, every lease of a checkpointing one, never
//! more than the job's GPUs times its duration.

use super::demand::Job;
use super::mechanism::{micros_on_tick, MarketSetup, Pricing, TICK_MICROS};
use super::scenario::{ContinuousBidding, Scenario};
use matching_engine::{
    AmendBid, Command, Event, LeaseId, LeaseStatus, OrderId, OrderStatus, PlaceBid, PriceMicros,
    TimeInForce, TimeMs,
};
use std::collections::HashMap;

/// A lease a job holds.
#[derive(Clone, Copy, Debug)]
struct Held {
    lease: LeaseId,
    gpus: u32,
    started_at: TimeMs,
    /// Tolerant jobs: the GPU-time of work planned on it.
    committed_gpu_ms: i64,
}

/// Where one job stands.
#[derive(Clone, Debug, Default)]
pub struct JobState {
    open_order: Option<OrderId>,
    /// The open bid's price.
    bid_price: PriceMicros,
    /// Walking bids: the price the walk started from, and the current walk (a new bid
    /// starts a new one, so an old walk's steps are ignored).
    walk_from: Option<PriceMicros>,
    walk: u32,
    held: Vec<Held>,
    /// Tolerant jobs: GPU-time of work neither done nor planned on a lease.
    work_left_gpu_ms: i64,
    bids_placed: u32,
    /// When its first lease opened.
    pub first_fill_at: Option<TimeMs>,
    /// GPU-time of useful work it got.
    pub useful_gpu_ms: i64,
    /// What its leases cost it.
    pub paid_micros: u64,
}

/// Something a buyer does.
#[derive(Clone, Debug, PartialEq)]
pub enum BuyerAction {
    /// A job bids (now).
    Bid {
        /// The job.
        job: usize,
    },
    /// A job cancels its open bid (now).
    Cancel {
        /// The job.
        job: usize,
        /// The bid.
        order: OrderId,
    },
    /// A job raises its walking bid (at the given time, if that walk is still on).
    Walk {
        /// The job.
        job: usize,
        /// Which walk.
        walk: u32,
    },
    /// A job ends one of its leases (at the given time, if it still runs then).
    Release {
        /// The job.
        job: usize,
        /// The lease.
        lease: LeaseId,
    },
}

/// Every job of a run, as agents.
pub struct Buyers<'a> {
    jobs: &'a [Job],
    scenario: &'a Scenario,
    setup: &'a MarketSetup,
    /// Per job.
    pub states: Vec<JobState>,
    order_job: HashMap<OrderId, usize>,
    lease_job: HashMap<LeaseId, usize>,
    touched: Vec<usize>,
}

impl<'a> Buyers<'a> {
    /// The jobs of a run, none arrived yet.
    pub fn new(jobs: &'a [Job], scenario: &'a Scenario, setup: &'a MarketSetup) -> Buyers<'a> {
        let states = jobs
            .iter()
            .map(|job| JobState {
                work_left_gpu_ms: job.work_gpu_ms(),
                ..JobState::default()
            })
            .collect();
        Buyers {
            jobs,
            scenario,
            setup,
            states,
            order_job: HashMap::new(),
            lease_job: HashMap::new(),
            touched: Vec::new(),
        }
    }

    /// The price job `job` bids now, given its pool's reference price; `None` when it stays
    /// away.
    fn price(&self, job: usize, now: TimeMs, reference: PriceMicros) -> Option<PriceMicros> {
        let spec = &self.jobs[job];
        match &self.setup.pricing {
            Pricing::Bids { walk_up: false, .. } => {
                let shading = self.scenario.startups.bid_shading;
                Some(micros_on_tick(
                    (spec.value_micros as f64 * (1.0 - shading)) as u64,
                ))
            }
            Pricing::Bids { walk_up: true, .. } => {
                let value = micros_on_tick(spec.value_micros);
                let from = self.states[job].walk_from.unwrap_or(reference.min(value));
                let latest = self.latest_start(job);
                let span = (latest.0 - spec.arrives_at.0).max(1) as f64;
                let progress = ((now.0 - spec.arrives_at.0) as f64 / span).clamp(0.0, 1.0);
                let walked = from.0 as f64 + (value.0 as f64 - from.0 as f64) * progress;
                Some(micros_on_tick(walked as u64).min(value).max(from))
            }
            Pricing::Posted { price } => {
                let posted = price[spec.pool];
                (spec.value_micros >= posted.0).then_some(posted)
            }
            Pricing::NoBuyers => None,
        }
    }

    /// The latest moment a job's bid can still start a useful lease.
    fn latest_start(&self, job: usize) -> TimeMs {
        let spec = &self.jobs[job];
        let shortest_s = if spec.tolerant {
            self.scenario.startups.tolerant_chunk_s.min(spec.duration_s)
        } else {
            spec.duration_s
        };
        TimeMs(spec.deadline.0 - shortest_s as i64 * 1000)
    }

    /// The bid job `job` would place now, if any, given its pool's reference price.
    pub fn bid(&self, job: usize, now: TimeMs, reference: PriceMicros) -> Option<PlaceBid> {
        let spec = &self.jobs[job];
        let state = &self.states[job];
        if state.open_order.is_some() {
            return None;
        }
        let price = self.price(job, now, reference)?;
        let pool = self.scenario.pools[spec.pool].id();
        let to_deadline_ms = spec.deadline.0 - now.0;
        if !spec.tolerant {
            // Rigid: one bid, whole, when it arrives.
            let duration_ms = spec.duration_s as i64 * 1000;
            if state.bids_placed > 0 || to_deadline_ms <= duration_ms {
                return None;
            }
            return Some(PlaceBid {
                account: spec.account.clone(),
                pool,
                gpus: spec.gpus,
                min_gpus: None,
                price,
                duration_s: spec.duration_s,
                max_duration_s: None,
                tif: TimeInForce::Gtd,
                expires_at: Some(TimeMs(spec.deadline.0 - duration_ms)),
                persistent: spec.persistent,
                client_order_id: None,
                ssh_public_keys: Vec::new(),
            });
        }
        let held: u32 = state.held.iter().map(|h| h.gpus).sum();
        let free = spec.gpus.saturating_sub(held);
        let work = state.work_left_gpu_ms;
        let chunk_ms = self.scenario.startups.tolerant_chunk_s.min(spec.duration_s) as i64 * 1000;
        let duration_ms = chunk_ms.min(to_deadline_ms) / 1000 * 1000;
        if free == 0 || work <= 0 || duration_ms < 60_000 || duration_ms >= to_deadline_ms {
            return None;
        }
        let gpus = (div_ceil(work, duration_ms) as u32).clamp(1, free);
        let max_ms = div_ceil(work, gpus as i64).clamp(duration_ms, to_deadline_ms);
        let node_gpus = self.scenario.pools[spec.pool].gpus_per_node;
        Some(PlaceBid {
            account: spec.account.clone(),
            pool,
            gpus,
            min_gpus: Some(gpus.min(node_gpus)),
            price,
            duration_s: (duration_ms / 1000) as u32,
            max_duration_s: Some((max_ms / 1000) as u32),
            tif: TimeInForce::Gtd,
            expires_at: Some(TimeMs(spec.deadline.0 - duration_ms)),
            persistent: spec.persistent,
            client_order_id: None,
            ssh_public_keys: Vec::new(),
        })
    }

    /// Records that job `job` placed `bid`, accepted as `order`; returns the first step of
    /// its walk, when its bids walk up.
    pub fn placed(
        &mut self,
        job: usize,
        order: OrderId,
        bid: &PlaceBid,
        now: TimeMs,
    ) -> Option<(TimeMs, BuyerAction)> {
        self.order_job.insert(order, job);
        let state = &mut self.states[job];
        state.bids_placed += 1;
        state.open_order = Some(order);
        state.bid_price = bid.price;
        state.walk_from.get_or_insert(bid.price);
        state.walk += 1;
        let walk = state.walk;
        self.next_walk(job, walk, now)
    }

    /// The next step of a walk, if bids walk up.
    fn next_walk(&self, job: usize, walk: u32, now: TimeMs) -> Option<(TimeMs, BuyerAction)> {
        let ContinuousBidding::WalkUp { amend_every_min } =
            self.scenario.startups.continuous_bidding
        else {
            return None;
        };
        matches!(self.setup.pricing, Pricing::Bids { walk_up: true, .. }).then(|| {
            let at = TimeMs(now.0 + (amend_every_min * 60_000.0) as i64);
            (at, BuyerAction::Walk { job, walk })
        })
    }

    /// A step of a walk: the raise to make now, if the walk is still on and the price moved,
    /// and the next step.
    pub fn walk(
        &mut self,
        job: usize,
        walk: u32,
        now: TimeMs,
        reference: PriceMicros,
    ) -> (Option<AmendBid>, Option<(TimeMs, BuyerAction)>) {
        let state = &self.states[job];
        let Some(order) = state.open_order.filter(|_| state.walk == walk) else {
            return (None, None);
        };
        let amend = self
            .price(job, now, reference)
            .filter(|&price| price > state.bid_price)
            .map(|price| AmendBid {
                account: self.jobs[job].account.clone(),
                order_id: order,
                price: Some(price),
                gpus: None,
            });
        if let Some(amend) = &amend {
            self.states[job].bid_price = amend.price.expect("a raise");
        }
        (amend, self.next_walk(job, walk, now))
    }

    /// The market this run's buyers face.
    pub fn setup(&self) -> &MarketSetup {
        self.setup
    }

    /// The job's open bid, if it has one.
    pub fn open_order(&self, job: usize) -> Option<OrderId> {
        self.states[job].open_order
    }

    /// Whether `lease` of `job` still runs.
    pub fn holds(&self, job: usize, lease: LeaseId) -> bool {
        self.states[job].held.iter().any(|h| h.lease == lease)
    }

    /// Every lease still running, for the end of the run.
    pub fn running_leases(&self) -> Vec<(usize, LeaseId)> {
        let mut running = Vec::new();
        for (job, state) in self.states.iter().enumerate() {
            running.extend(state.held.iter().map(|h| (job, h.lease)));
        }
        running
    }

    /// Whether a job would bid now (its price aside: the reference only moves a walk's start).
    fn wants_to_bid(&self, job: usize, now: TimeMs) -> bool {
        self.bid(job, now, PriceMicros(TICK_MICROS)).is_some()
    }

    /// Updates the jobs from the events of one command (all at `now`); returns what they do
    /// about it: actions now, and releases at a later time.
    pub fn observe(&mut self, now: TimeMs, events: &[Event]) -> Vec<(TimeMs, BuyerAction)> {
        let mut actions = Vec::new();
        for event in events {
            match event {
                Event::OrderChanged { order } => {
                    let Some(&job) = self.order_job.get(&order.id) else {
                        continue;
                    };
                    let state = &mut self.states[job];
                    if order.status == OrderStatus::Open {
                        state.open_order = Some(order.id);
                    } else if state.open_order == Some(order.id) {
                        state.open_order = None;
                    }
                    if order.status.is_terminal() {
                        self.order_job.remove(&order.id);
                    }
                    self.touched.push(job);
                }
                Event::LeaseOpened { lease } => {
                    let Some(&job) = self.order_job.get(&lease.order_id) else {
                        continue;
                    };
                    self.lease_job.insert(lease.id, job);
                    let spec = &self.jobs[job];
                    let state = &mut self.states[job];
                    state.first_fill_at.get_or_insert(now);
                    let mut committed_gpu_ms = 0;
                    if spec.tolerant {
                        let planned_ms = lease.ends_at.0 - now.0;
                        let useful_ms = planned_ms
                            .min(div_ceil(state.work_left_gpu_ms.max(0), lease.gpus as i64))
                            .min(spec.deadline.0 - now.0)
                            .max(0);
                        committed_gpu_ms = useful_ms * lease.gpus as i64;
                        state.work_left_gpu_ms = (state.work_left_gpu_ms - committed_gpu_ms).max(0);
                        if useful_ms < planned_ms {
                            actions.push((
                                TimeMs(now.0 + useful_ms),
                                BuyerAction::Release {
                                    job,
                                    lease: lease.id,
                                },
                            ));
                        }
                    }
                    state.held.push(Held {
                        lease: lease.id,
                        gpus: lease.gpus,
                        started_at: lease.started_at,
                        committed_gpu_ms,
                    });
                    self.touched.push(job);
                }
                Event::LeaseChanged { lease } if lease.status.is_ended() => {
                    let Some(job) = self.lease_job.remove(&lease.id) else {
                        continue;
                    };
                    let spec = &self.jobs[job];
                    let state = &mut self.states[job];
                    let Some(index) = state.held.iter().position(|h| h.lease == lease.id) else {
                        continue;
                    };
                    let held = state.held.swap_remove(index);
                    let ended_at = lease.ended_at.unwrap_or(now);
                    let ran_gpu_ms = (ended_at.0 - held.started_at.0).max(0) * held.gpus as i64;
                    let useful = spec.tolerant
                        || matches!(lease.status, LeaseStatus::Completed | LeaseStatus::Released);
                    if useful {
                        state.useful_gpu_ms += ran_gpu_ms;
                    }
                    if spec.tolerant {
                        state.work_left_gpu_ms += (held.committed_gpu_ms - ran_gpu_ms).max(0);
                    }
                    state.paid_micros += lease.cost_micros;
                    self.touched.push(job);
                }
                _ => {}
            }
        }
        self.touched.sort_unstable();
        self.touched.dedup();
        for job in std::mem::take(&mut self.touched) {
            let state = &self.states[job];
            if self.jobs[job].tolerant && state.work_left_gpu_ms <= 0 {
                if let Some(order) = state.open_order {
                    actions.push((now, BuyerAction::Cancel { job, order }));
                }
            } else if self.wants_to_bid(job, now) {
                actions.push((now, BuyerAction::Bid { job }));
            }
        }
        actions
    }
}

/// Release command of a job's lease.
pub fn release_command(job: &Job, lease: LeaseId) -> Command {
    Command::ReleaseLease {
        account: job.account.clone(),
        lease_id: lease,
    }
}

fn div_ceil(a: i64, b: i64) -> i64 {
    (a + b - 1) / b
}
