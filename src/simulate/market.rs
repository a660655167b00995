//! One run: the scenario's supply and demand through `Engine::apply`, in simulated time, under
//! one mechanism.
//!
//! Three sources of commands are merged in time order: the schedulers' plan, the jobs'
//! arrivals, and what buyers decide along the way (bids again, cancels, early releases).
//! Before each command every engine timer due by then is fired with a `Tick` at its own due
//! time, so every event is observed at the moment it happens (lease ends, notice ends, window
//! closes, batch uncrosses). At a moment, timers come first, then the schedulers, then
//! arrivals, then buyers' reactions.
//!
//! The run ends at the horizon: buyers release every lease still running, so every lease
//! has ended and its `cost_micros` is final (revenue is accrued up to the horizon, as the
//! owner's report counts running leases up to now); nothing after the horizon is counted.

use super::buyers::{release_command, BuyerAction, Buyers, JobState};
use super::demand::Job;
use super::ledger::Ledger;
use super::mechanism::{pool_config, MarketSetup};
use super::pricing::{BlockIndex, ReferencePrices, SupplierPricing};
use super::scenario::Scenario;
use super::supply::{SupplyAction, SupplyPlan};
use matching_engine::{
    Command, Engine, Event, NodeGpus, ReclaimCapacity, ReleaseCapacity, TimeMs, UpdateCapacity,
};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

/// Everything every mechanism of a run shares: the scenario, its supply and its demand.
pub struct World<'a> {
    /// The scenario.
    pub scenario: &'a Scenario,
    /// The schedulers' plan.
    pub supply: &'a SupplyPlan,
    /// The startups' jobs, in arrival order.
    pub jobs: &'a [Job],
    /// When supply starts.
    pub start: TimeMs,
    /// When the run ends.
    pub horizon: TimeMs,
}

/// What one run produced.
pub struct RunOutcome {
    /// The market it ran.
    pub setup: MarketSetup,
    /// Its books.
    pub ledger: Ledger,
    /// Where each job ended up.
    pub jobs: Vec<JobState>,
    /// Commands the engine refused, by reason (a correct run refuses none).
    pub rejections: BTreeMap<String, u64>,
    /// Commands applied.
    pub commands: u64,
}

/// The supplier account of a pool's scheduler.
pub fn supplier_of(pool_id: &str) -> String {
    format!("scheduler.{pool_id}")
}

/// Drives the engine through one run.
struct Driver<'w, 'b> {
    world: &'w World<'w>,
    engine: Engine,
    events: Vec<Event>,
    ledger: Ledger,
    buyers: Buyers<'b>,
    /// Buyers' later actions: (time, sequence) -> action.
    later: BinaryHeap<Reverse<(TimeMs, u64, usize)>>,
    later_actions: Vec<Option<BuyerAction>>,
    now_queue: VecDeque<BuyerAction>,
    rejections: BTreeMap<String, u64>,
    commands: u64,
    pool_ids: Vec<String>,
    pricing: SupplierPricing,
    reference: ReferencePrices,
    blocks: BlockIndex,
}

/// Runs the world under one market.
pub fn run_market(world: &World<'_>, setup: &MarketSetup) -> RunOutcome {
    let scenario = world.scenario;
    let pool_ids: Vec<String> = scenario.pools.iter().map(|p| p.id()).collect();
    let mut driver = Driver {
        world,
        engine: Engine::new(),
        events: Vec::new(),
        ledger: Ledger::new(&pool_ids, world.start, world.horizon),
        buyers: Buyers::new(world.jobs, scenario, setup),
        later: BinaryHeap::new(),
        later_actions: Vec::new(),
        now_queue: VecDeque::new(),
        rejections: BTreeMap::new(),
        commands: 0,
        pricing: SupplierPricing::new(scenario, setup),
        reference: ReferencePrices::new(scenario),
        blocks: BlockIndex::new(&pool_ids, &world.supply.blocks),
        pool_ids,
    };
    let first = world
        .jobs
        .first()
        .map_or(world.start, |job| job.arrives_at.min(world.start));
    for pool in &scenario.pools {
        let config = pool_config(scenario, pool, setup.auction);
        driver.apply(first, &Command::ConfigurePool(config));
    }
    driver.run();
    RunOutcome {
        setup: setup.clone(),
        ledger: driver.ledger,
        jobs: driver.buyers.states,
        rejections: driver.rejections,
        commands: driver.commands,
    }
}

/// Where the next command comes from.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Next {
    Supply(usize),
    Reprice,
    Arrival(usize),
    Later,
}

impl Driver<'_, '_> {
    fn run(&mut self) {
        let world = self.world;
        let (mut next_supply, mut next_job) = (0, 0);
        let reprice_every_ms = world.scenario.scheduler.step_s as i64 * 1000;
        let mut next_reprice = self.pricing.follows_market().then_some(world.start);
        loop {
            let mut next: Option<(TimeMs, Next)> = None;
            let mut consider = |at: TimeMs, source: Next| {
                if next.is_none_or(|(t, s)| (at, source) < (t, s)) {
                    next = Some((at, source));
                }
            };
            if let Some(action) = world.supply.actions.get(next_supply) {
                consider(action.at, Next::Supply(next_supply));
            }
            if let Some(at) = next_reprice {
                consider(at, Next::Reprice);
            }
            if let Some(job) = world.jobs.get(next_job) {
                consider(job.arrives_at, Next::Arrival(next_job));
            }
            if let Some(Reverse((at, _, _))) = self.later.peek() {
                consider(*at, Next::Later);
            }
            let next_at = next.map_or(world.horizon, |(at, _)| at.min(world.horizon));
            if let Some(timer_at) = self.engine.next_timer_at() {
                if timer_at <= next_at {
                    self.apply(timer_at, &Command::Tick);
                    continue;
                }
            }
            let Some((at, source)) = next else { break };
            if at >= world.horizon {
                break;
            }
            match source {
                Next::Supply(index) => {
                    next_supply += 1;
                    self.supply(index);
                }
                Next::Reprice => {
                    next_reprice = Some(TimeMs(at.0 + reprice_every_ms));
                    self.reprice(at);
                }
                Next::Arrival(job) => {
                    next_job += 1;
                    self.bid(at, job);
                }
                Next::Later => {
                    let Reverse((at, _, slot)) = self.later.pop().expect("peeked");
                    let action = self.later_actions[slot].take().expect("taken once");
                    self.act(at, action);
                }
            }
            self.drain_now();
        }
        // The horizon: every lease still running ends now.
        let horizon = world.horizon;
        for (job, lease) in self.buyers.running_leases() {
            self.apply(horizon, &release_command(&world.jobs[job], lease));
        }
        self.ledger.advance(horizon);
    }

    fn supply(&mut self, index: usize) {
        let timed = &self.world.supply.actions[index];
        let block = match timed.action {
            SupplyAction::Release { block } | SupplyAction::Reclaim { block, .. } => block,
        };
        let planned = &self.world.supply.blocks[block];
        let supplier = supplier_of(&self.pool_ids[planned.pool]);
        let command = match timed.action {
            SupplyAction::Release { .. } => Command::ReleaseCapacity(ReleaseCapacity {
                supplier,
                block_id: planned.block_id.clone(),
                pool: self.pool_ids[planned.pool].clone(),
                gpus: planned.gpus,
                reserve_price: {
                    let reference = self.reference.at(planned.pool, timed.at);
                    self.pricing
                        .release(block, planned.pool, timed.at, reference)
                },
                available_from: None,
                available_until: planned.until,
                nodes: vec![NodeGpus {
                    node: planned.node.as_str().into(),
                    gpus: planned.gpus,
                }],
            }),
            SupplyAction::Reclaim { emergency, .. } => Command::ReclaimCapacity(ReclaimCapacity {
                supplier,
                block_id: planned.block_id.clone(),
                gpus: planned.gpus,
                notice_s: emergency.then_some(0),
                emergency,
            }),
        };
        self.apply(timed.at, &command);
    }

    /// The schedulers move the asks of their unsold GPUs (market-following reserves only).
    fn reprice(&mut self, at: TimeMs) {
        for pool in 0..self.pool_ids.len() {
            let reference = self.reference.at(pool, at);
            for (block, reserve) in self.pricing.reprice(pool, at, reference) {
                let planned = &self.world.supply.blocks[block];
                let command = Command::UpdateCapacity(UpdateCapacity {
                    supplier: supplier_of(&self.pool_ids[pool]),
                    block_id: planned.block_id.clone(),
                    reserve_price: Some(reserve),
                    available_until: None,
                });
                self.apply(at, &command);
            }
        }
    }

    /// A job bids now, if it still wants to.
    fn bid(&mut self, at: TimeMs, job: usize) {
        let now = at.max(self.engine.now());
        let reference = self.reference.at(self.world.jobs[job].pool, now);
        if let Some(bid) = self.buyers.bid(job, now, reference) {
            self.apply(now, &Command::PlaceBid(bid.clone()));
            let accepted = self.events.iter().find_map(|event| match event {
                Event::BidAccepted { order } => Some(order.id),
                _ => None,
            });
            if let Some(order) = accepted {
                if let Some((at, step)) = self.buyers.placed(job, order, &bid, now) {
                    self.later(at, step);
                }
                // The bid may have filled at once: book its events with the job known.
                let events = std::mem::take(&mut self.events);
                self.observe_buyers(now, &events);
                self.events = events;
            }
        }
    }

    fn act(&mut self, at: TimeMs, action: BuyerAction) {
        let now = at.max(self.engine.now());
        match action {
            BuyerAction::Bid { job } => self.bid(now, job),
            BuyerAction::Cancel { job, order } => {
                if self.buyers.open_order(job) == Some(order) {
                    let account = self.world.jobs[job].account.clone();
                    self.apply(
                        now,
                        &Command::CancelBid {
                            account,
                            order_id: order,
                        },
                    );
                }
            }
            BuyerAction::Walk { job, walk } => {
                let reference = self.reference.at(self.world.jobs[job].pool, now);
                let (amend, next) = self.buyers.walk(job, walk, now, reference);
                if let Some(amend) = amend {
                    self.apply(now, &Command::AmendBid(amend));
                }
                if let Some((at, step)) = next {
                    self.later(at, step);
                }
            }
            BuyerAction::Release { job, lease } => {
                if self.buyers.holds(job, lease) {
                    self.apply(now, &release_command(&self.world.jobs[job], lease));
                }
            }
        }
    }

    /// Schedules a buyer's action for later.
    fn later(&mut self, at: TimeMs, action: BuyerAction) {
        let slot = self.later_actions.len();
        self.later_actions.push(Some(action));
        self.later.push(Reverse((at, slot as u64, slot)));
    }

    fn drain_now(&mut self) {
        while let Some(action) = self.now_queue.pop_front() {
            self.act(self.engine.now(), action);
        }
    }

    /// Applies one command and books its events. A bid's own events are given to the buyers
    /// by [`Driver::bid`], once the bid's job is known.
    fn apply(&mut self, at: TimeMs, command: &Command) {
        self.events.clear();
        self.engine.apply(at, command, &mut self.events);
        self.commands += 1;
        let now = self.engine.now();
        for event in &self.events {
            if let Event::Rejected { reason } = event {
                *self.rejections.entry(reason.to_string()).or_default() += 1;
            }
        }
        self.ledger.observe(now, &self.events);
        let blocks = &self.blocks;
        self.pricing
            .observe(now, &self.events, |pool, block| blocks.find(pool, block));
        self.reference
            .observe(now, &self.events, |pool| blocks.pool(pool));
        if !matches!(command, Command::PlaceBid(_)) {
            let events = std::mem::take(&mut self.events);
            self.observe_buyers(now, &events);
            self.events = events;
        }
    }

    fn observe_buyers(&mut self, now: TimeMs, events: &[Event]) {
        for (at, action) in self.buyers.observe(now, events) {
            if at <= now {
                self.now_queue.push_back(action);
            } else {
                self.later(at, action);
            }
        }
    }
}
