//! The engine against the naive reference model (`model.rs`) on long seeded random command
//! sequences, biased to edge values.
//!
//! After every command: the engine's events must equal the model's exactly; every observable
//! view (pool summaries, full depth, each account's orders, leases and blocks, quotes, limits,
//! default ssh keys, the next timer) must equal the model's; `Engine::assert_invariants` holds;
//! and so do the invariants seen through the views: no Open bid of a running continuous pool
//! could execute now, and per block `sold + unsold + reclaimed == gpus` with `failed <=
//! reclaimed`, its running leases add up to `sold` and none outlives its window, and a running
//! lease is provisioning (costing nothing) or ready (with `ready_at`), never carrying keys in a
//! model pool. Every few hundred commands the engine is swapped for one restored from its
//! snapshot's JSON, and the comparison goes on.
//!
//! The pools of a seed include both handoff kinds and a model pool, with provisioning timeouts
//! short enough to fire; the commands include the supplier's `ready` (mostly fitting, sometimes
//! from the wrong supplier, about the wrong block or naming a node the lease does not hold) and
//! `failed`, default ssh keys and bids with keys.
//!
//! Environment:
//! - `OFFPEAK_PROPTEST_SEED`: the base seed (decimal or `0x` hex); seed `k` of a run is
//!   `base + k`. A failure prints its seed and step and the command line that reruns it alone.
//! - `OFFPEAK_PROPTEST_COMMANDS`: commands in all (default 600,000; 120,000 in a debug
//!   build), split into seeds of `OFFPEAK_PROPTEST_STEPS` commands (default 5,000), run on
//!   all cores. Raise it for a longer hunt: 10,000,000 takes about two minutes on two cores.
//!
//! Rerun one failing seed alone (the failure prints this line):
//! `OFFPEAK_PROPTEST_SEED=<seed> OFFPEAK_PROPTEST_COMMANDS=<steps> OFFPEAK_PROPTEST_STEPS=<steps>
//! cargo test -p matching-engine --release --test property`

mod model;

use matching_engine::{
    AccessStatus, Command, Engine, Event, LeaseStatus, Offering, OrderId, OrderStatus, TimeMs,
};
use model::random::{Commands, ACCOUNTS, UNKNOWN_POOL};
use model::Model;
use std::collections::{BTreeMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

const DEFAULT_SEED: u64 = 0x0FF_9EA4;
/// Release builds (CI runs `cargo test --release`) take about 6 s on two idle cores; debug
/// builds are about ten times slower, but check the engine's `debug_assert!`s as they go.
const DEFAULT_COMMANDS: u64 = if cfg!(debug_assertions) {
    120_000
} else {
    600_000
};
const DEFAULT_STEPS_PER_SEED: u64 = 5_000;
/// Commands shown before the failing one.
const HISTORY_LEN: usize = 12;
/// How often a run swaps its engine for one restored from its snapshot (through JSON).
const RESTORE_EVERY: u64 = 499;

fn env_u64(key: &str) -> Option<u64> {
    let text = std::env::var(key).ok()?;
    let text = text.trim().replace('_', "");
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{key}={text} is not a number")))
}

#[test]
fn engine_matches_the_reference_model_on_random_commands() {
    let base_seed = env_u64("OFFPEAK_PROPTEST_SEED").unwrap_or(DEFAULT_SEED);
    let total = env_u64("OFFPEAK_PROPTEST_COMMANDS").unwrap_or(DEFAULT_COMMANDS);
    let steps = env_u64("OFFPEAK_PROPTEST_STEPS")
        .unwrap_or(DEFAULT_STEPS_PER_SEED)
        .clamp(1, total.max(1));
    let seeds = total.div_ceil(steps);
    println!(
        "property: base seed {base_seed:#x}, {seeds} seeds x {steps} commands \
         (OFFPEAK_PROPTEST_SEED / OFFPEAK_PROPTEST_COMMANDS / OFFPEAK_PROPTEST_STEPS)"
    );
    let started = std::time::Instant::now();

    let next_seed = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let coverage: Mutex<Coverage> = Mutex::new(Coverage::default());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..threads.min(seeds as usize) {
            scope.spawn(|| loop {
                let k = next_seed.fetch_add(1, Ordering::Relaxed);
                if k >= seeds || failed.load(Ordering::Relaxed) {
                    return;
                }
                let seed = base_seed.wrapping_add(k);
                match run_seed(seed, steps) {
                    Ok(seen) => coverage.lock().expect("coverage").merge(seen),
                    Err(failure) => {
                        failed.store(true, Ordering::Relaxed);
                        failures.lock().expect("failures").push(failure);
                    }
                }
            });
        }
    });
    if let Some(failure) = failures.into_inner().expect("failures").into_iter().next() {
        panic!("{failure}");
    }
    let coverage = coverage.into_inner().expect("coverage");
    println!(
        "property: {} commands, {} events in {:.1?}",
        seeds * steps,
        coverage.events,
        started.elapsed()
    );
    coverage.print();
    if total >= DEFAULT_COMMANDS {
        coverage.assert_reaches_the_edges();
    }
}

/// Runs one seed; `Err` carries the whole failure report.
fn run_seed(seed: u64, steps: u64) -> Result<Coverage, String> {
    let mut engine = Engine::new();
    let mut model = Model::new();
    let mut commands = Commands::new(seed);
    let mut coverage = Coverage::default();
    let mut history: VecDeque<(u64, TimeMs, Command)> = VecDeque::new();
    for step in 0..steps {
        let (at, command) = commands.next(&model);
        let fail = |what: String, history: &VecDeque<(u64, TimeMs, Command)>| {
            let mut report = format!(
                "engine and model disagree: seed={seed} step={step}\n\
                 command at {at:?}: {command:?}\n{what}\n\nrecent commands:\n"
            );
            for (step, at, command) in history {
                report += &format!("  step {step} at {at:?}: {command:?}\n");
            }
            report += &format!(
                "\nrerun this seed alone: OFFPEAK_PROPTEST_SEED={seed} \
                 OFFPEAK_PROPTEST_COMMANDS={steps} OFFPEAK_PROPTEST_STEPS={steps} \
                 cargo test -p matching-engine --release --test property"
            );
            report
        };

        let expected = catch_unwind(AssertUnwindSafe(|| model.apply(at, &command)))
            .map_err(|panic| fail(format!("the model panicked: {}", message(&panic)), &history))?;
        let mut actual = Vec::new();
        catch_unwind(AssertUnwindSafe(|| engine.apply(at, &command, &mut actual))).map_err(
            |panic| {
                fail(
                    format!("the engine panicked: {}", message(&panic)),
                    &history,
                )
            },
        )?;
        if actual != expected {
            return Err(fail(diff_events(&actual, &expected), &history));
        }
        catch_unwind(AssertUnwindSafe(|| engine.assert_invariants())).map_err(|panic| {
            fail(
                format!("an engine invariant broke: {}", message(&panic)),
                &history,
            )
        })?;
        compare_views(&engine, &model, step).map_err(|what| fail(what, &history))?;
        check_invariants(&engine, &model).map_err(|what| fail(what, &history))?;
        if step % RESTORE_EVERY == RESTORE_EVERY - 1 {
            // Carry on with the engine rebuilt from its snapshot, as the server does after a
            // restart: whatever the snapshot loses shows up against the model from here on.
            let text = serde_json::to_string(&engine.snapshot()).expect("snapshot to JSON");
            let snapshot = serde_json::from_str(&text).expect("snapshot from JSON");
            let restored = Engine::restore(snapshot);
            if restored.state_hash() != engine.state_hash() {
                return Err(fail(
                    "a restored snapshot has another state hash".into(),
                    &history,
                ));
            }
            engine = restored;
        }
        coverage.record(&command, &actual);

        history.push_back((step, at, command));
        if history.len() > HISTORY_LEN {
            history.pop_front();
        }
    }
    Ok(coverage)
}

fn message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

fn diff_events(actual: &[Event], expected: &[Event]) -> String {
    let first = actual
        .iter()
        .zip(expected)
        .position(|(a, e)| a != e)
        .unwrap_or(actual.len().min(expected.len()));
    let mut report = format!(
        "events differ at index {first} (engine emitted {}, model {})\n",
        actual.len(),
        expected.len()
    );
    report += "engine:\n";
    for (index, event) in actual.iter().enumerate() {
        report += &format!(
            "  {}{index}: {event:?}\n",
            if index == first { ">" } else { " " }
        );
    }
    report += "model:\n";
    for (index, event) in expected.iter().enumerate() {
        report += &format!(
            "  {}{index}: {event:?}\n",
            if index == first { ">" } else { " " }
        );
    }
    report
}

fn same<T: PartialEq + std::fmt::Debug>(what: &str, engine: T, model: T) -> Result<(), String> {
    if engine == model {
        Ok(())
    } else {
        Err(format!(
            "{what} differ\nengine: {engine:#?}\nmodel:  {model:#?}"
        ))
    }
}

/// Every query the server uses, engine against model.
fn compare_views(engine: &Engine, model: &Model, step: u64) -> Result<(), String> {
    same("clocks", engine.now(), model.now())?;
    same("next timers", engine.next_timer_at(), model.next_timer_at())?;
    let pools = model.pools();
    same("pool summaries", engine.pools(), pools.clone())?;
    for pool in model
        .pool_ids()
        .iter()
        .map(String::as_str)
        .chain([UNKNOWN_POOL])
    {
        same(
            &format!("depths of {pool}"),
            engine.depth(pool, usize::MAX),
            model.depth(pool, usize::MAX),
        )?;
        same(
            &format!("top-2 depths of {pool}"),
            engine.depth(pool, 2),
            model.depth(pool, 2),
        )?;
    }
    for summary in &pools {
        let config = &summary.config;
        // A few sizes and durations, varied by step so every edge comes up.
        let gpus = [0, 1, 3, config.gpus_per_order_max][step as usize % 4];
        let duration_s = [config.duration_min_s, 3_600, 1][step as usize % 3];
        let min_gpus = [gpus, 1, gpus / 2][step as usize % 3];
        same(
            &format!(
                "quotes of {} for {gpus} GPUs (min {min_gpus}) x {duration_s}s",
                config.id
            ),
            engine.quote(&config.id, gpus, min_gpus, duration_s),
            model.quote(&config.id, gpus, min_gpus, duration_s),
        )?;
    }
    for account in ACCOUNTS {
        same(
            &format!("orders of {account}"),
            engine.orders_of(account),
            model.orders_of(account),
        )?;
        same(
            &format!("leases of {account}"),
            engine.leases_of(account),
            model.leases_of(account),
        )?;
        same(
            &format!("blocks of {account}"),
            engine.blocks_of(account),
            model.blocks_of(account),
        )?;
        same(
            &format!("limits of {account}"),
            engine.account_limits(account),
            model.account_limits(account),
        )?;
        same(
            &format!("default ssh keys of {account}"),
            engine.ssh_keys_of(account).to_vec(),
            model.ssh_keys_of(account),
        )?;
    }
    // The latest ids, whatever they turned out to be: orders, blocks, trades or leases.
    for id in model.next_id().saturating_sub(6)..model.next_id() + 1 {
        same(
            &format!("order {id}"),
            engine.order(OrderId(id)),
            model.order(OrderId(id)),
        )?;
        same(
            &format!("lease {id}"),
            engine.lease(matching_engine::LeaseId(id)),
            model.lease_view_of(matching_engine::LeaseId(id)),
        )?;
    }
    Ok(())
}

/// The invariants of DESIGN section 4 and the engine's module docs, on the engine's views.
fn check_invariants(engine: &Engine, model: &Model) -> Result<(), String> {
    let crossed = model.fillable_resting_bids();
    if !crossed.is_empty() {
        return Err(format!(
            "the book is crossed: resting bids {crossed:?} could execute now"
        ));
    }
    let leases: Vec<_> = ACCOUNTS
        .iter()
        .flat_map(|account| engine.leases_of(account))
        .collect();
    let pools = engine.pools();
    let model_pools: Vec<&str> = pools
        .iter()
        .filter(|pool| pool.config.offering == Offering::Model)
        .map(|pool| pool.config.id.as_str())
        .collect();
    for account in ACCOUNTS {
        for block in engine.blocks_of(account) {
            let label = format!("block {}/{}", block.supplier, block.block_id);
            if block.gpus_sold + block.gpus_unsold + block.gpus_reclaimed != block.gpus {
                return Err(format!(
                    "{label}: sold + unsold + reclaimed != gpus: {block:#?}"
                ));
            }
            if block.gpus_failed > block.gpus_reclaimed {
                return Err(format!(
                    "{label}: more GPUs failed than reclaimed: {block:#?}"
                ));
            }
            let of_block: Vec<_> = leases
                .iter()
                .filter(|l| l.supplier == block.supplier && l.block_id == block.block_id)
                .collect();
            let running: u32 = of_block.iter().map(|l| l.gpus).sum();
            let under_notice: u32 = of_block
                .iter()
                .filter(|l| l.status == LeaseStatus::Preempting)
                .map(|l| l.gpus)
                .sum();
            if running != block.gpus_sold {
                return Err(format!(
                    "{label}: its running leases hold {running} GPUs, it says {} sold",
                    block.gpus_sold
                ));
            }
            if block.gpus_reclaiming > under_notice {
                return Err(format!(
                    "{label}: {} GPUs reclaiming but only {under_notice} under notice",
                    block.gpus_reclaiming
                ));
            }
            if !block.nodes.is_empty() {
                let on_nodes: u32 = block.nodes.iter().map(|n| n.gpus).sum();
                if on_nodes != block.gpus - block.gpus_reclaimed {
                    return Err(format!(
                        "{label}: its nodes hold {on_nodes} GPUs: {block:#?}"
                    ));
                }
            }
            for lease in of_block {
                if lease.gpus == 0 || lease.gpus > block.gpus {
                    return Err(format!(
                        "lease {}: {} GPUs of {label}",
                        lease.id, lease.gpus
                    ));
                }
                if lease.ends_at > block.available_until {
                    return Err(format!(
                        "lease {} ends at {:?}, after {label} closes at {:?}",
                        lease.id, lease.ends_at, block.available_until
                    ));
                }
                // A running lease is provisioning (not billed) or ready (billed since
                // `ready_at`); a failed one has ended. Model pools never carry keys.
                let access = &lease.access;
                let consistent = match access.status {
                    AccessStatus::Provisioning => {
                        access.ready_at.is_none() && lease.cost_micros == 0
                    }
                    AccessStatus::Ready => access.ready_at.is_some(),
                    AccessStatus::Failed => false,
                };
                let model_pool = model_pools.contains(&&*lease.pool);
                if !consistent
                    || access.reason.is_some()
                    || (model_pool && lease.ssh_public_keys.is_some())
                {
                    return Err(format!("lease {}: running with {lease:#?}", lease.id));
                }
                let on_nodes: u32 = lease.nodes.iter().map(|n| n.gpus).sum();
                let expected = if block.nodes.is_empty() {
                    0
                } else {
                    lease.gpus
                };
                if on_nodes != expected {
                    return Err(format!(
                        "lease {}: {on_nodes} GPUs on nodes, {expected} expected",
                        lease.id
                    ));
                }
            }
        }
    }
    for pool in pools {
        let depth = engine
            .depth(&pool.config.id, usize::MAX)
            .expect("known pool");
        let strictly = |prices: Vec<u64>| prices.windows(2).all(|w| w[0] < w[1]);
        if !strictly(depth.bids.iter().rev().map(|l| l.price.0).collect())
            || !strictly(depth.asks.iter().map(|l| l.price.0).collect())
            || depth
                .bids
                .iter()
                .chain(&depth.asks)
                .any(|l| l.gpus == 0 || l.orders == 0)
        {
            return Err(format!("{}: malformed depth {depth:#?}", pool.config.id));
        }
        let idle: u64 = depth.asks.iter().map(|l| l.gpus).sum();
        let in_pool = leases.iter().filter(|l| *l.pool == *pool.config.id);
        let leased: u64 = in_pool.clone().map(|l| l.gpus as u64).sum();
        let reclaiming: u64 = in_pool
            .filter(|l| l.status == LeaseStatus::Preempting)
            .map(|l| l.gpus as u64)
            .sum();
        if (pool.idle_gpus, pool.leased_gpus, pool.reclaiming_gpus) != (idle, leased, reclaiming) {
            return Err(format!(
                "{}: summary says idle/leased/reclaiming {}/{}/{}, book and leases say \
                 {idle}/{leased}/{reclaiming}",
                pool.config.id, pool.idle_gpus, pool.leased_gpus, pool.reclaiming_gpus
            ));
        }
    }
    Ok(())
}

/// What a run exercised: how often each kind of command and event came up.
#[derive(Default)]
struct Coverage {
    events: u64,
    seen: BTreeMap<String, u64>,
}

impl Coverage {
    fn bump(&mut self, key: String) {
        *self.seen.entry(key).or_default() += 1;
    }

    fn record(&mut self, command: &Command, events: &[Event]) {
        let kind = format!("{command:?}");
        let kind = kind.split(['(', ' ', '{']).next().unwrap_or("?");
        self.bump(format!("command {kind}"));
        for event in events {
            self.events += 1;
            let key = match event {
                Event::Rejected { reason } => format!("rejected {}", reason.as_str()),
                Event::OrderChanged { order } => match order.cancel_reason {
                    Some(reason) => format!("order cancelled {reason:?}"),
                    None => format!("order {:?}", order.status),
                },
                Event::LeaseChanged { lease } => format!("lease {:?}", lease.status),
                Event::Traded { trade } => format!("traded, maker {:?}", trade.maker_side),
                Event::ReclaimAccepted {
                    emergency,
                    leases_preempted,
                    ..
                } => format!(
                    "reclaim accepted{}{}",
                    if *emergency { ", emergency" } else { "" },
                    if *leases_preempted > 0 {
                        ", preempting"
                    } else {
                        ""
                    }
                ),
                Event::BlockChanged { block } => format!("block {:?}", block.status),
                _ => {
                    let name = format!("{event:?}");
                    name.split([' ', '{']).next().unwrap_or("?").to_owned()
                }
            };
            self.bump(key);
            match event {
                Event::LeaseChanged { lease } => {
                    if lease.status == LeaseStatus::Preempted && lease.cost_micros == 0 {
                        self.bump("lease preempted free".into());
                    }
                    let ready_after_start = lease
                        .access
                        .ready_at
                        .is_some_and(|ready_at| ready_at > lease.started_at);
                    if lease.status == LeaseStatus::Preempted && ready_after_start {
                        let billed = if lease.cost_micros > 0 {
                            "billed"
                        } else {
                            "free"
                        };
                        self.bump(format!("lease preempted, {billed} from ready"));
                    }
                    if lease.ended_at.is_some() && ready_after_start && lease.cost_micros > 0 {
                        self.bump("lease ended, billed from ready".into());
                    }
                    if lease.ended_at.is_none() && lease.access.status == AccessStatus::Ready {
                        self.bump("lease ready".into());
                        if lease.access.endpoint.is_some() {
                            self.bump("lease ready, model gateway".into());
                        }
                        if lease.access.endpoints.iter().any(|e| e.node.is_some()) {
                            self.bump("lease ready, machines on nodes".into());
                        }
                    }
                    if let Some(reason) = &lease.access.reason {
                        let why = if &**reason == "provision_timeout" {
                            "provision timeout"
                        } else {
                            "reported by its supplier"
                        };
                        self.bump(format!("lease failed, {why}"));
                        if !lease.nodes.is_empty() {
                            self.bump("lease failed on nodes".into());
                        }
                        if lease.preempted_at.is_some() {
                            self.bump("lease failed under notice".into());
                        }
                    }
                }
                Event::LeaseOpened { lease } => {
                    if lease.ssh_public_keys.is_some() {
                        self.bump("lease opened with ssh keys".into());
                    }
                    if lease.access.status == AccessStatus::Ready {
                        self.bump("lease opened ready".into());
                    }
                }
                _ => {}
            }
        }
        // A persistent bid that bids again for the GPUs of a lease that failed.
        let failed_orders: Vec<OrderId> = events
            .iter()
            .filter_map(|e| match e {
                Event::LeaseChanged { lease } if lease.status == LeaseStatus::Failed => {
                    Some(lease.order_id)
                }
                _ => None,
            })
            .collect();
        if events.iter().any(|e| {
            matches!(e, Event::OrderChanged { order }
                if order.status == OrderStatus::Open && failed_orders.contains(&order.id))
        }) {
            self.bump("order reopened after a failure".into());
        }
        if matches!(command, Command::LeaseReady(_)) && events.is_empty() {
            self.bump("ready repeated, nothing changed".into());
        }
    }

    fn merge(&mut self, other: Coverage) {
        self.events += other.events;
        for (key, count) in other.seen {
            *self.seen.entry(key).or_default() += count;
        }
    }

    fn print(&self) {
        for (key, count) in &self.seen {
            println!("  {count:>9}  {key}");
        }
    }

    /// A generator that stopped reaching an edge would make this test quietly weaker.
    fn assert_reaches_the_edges(&self) {
        let required = [
            "command ConfigurePool",
            "command SetKillSwitch",
            "command SetAccountLimits",
            "traded, maker Bid",
            "traded, maker Ask",
            "AuctionCleared",
            "order Filled",
            "order Expired",
            "order Open",
            "order cancelled ByOwner",
            "order cancelled IocRemainder",
            "order cancelled FokNotFillable",
            "order cancelled KillSwitch",
            "lease Preempting",
            "lease Preempted",
            "lease preempted free",
            "lease Completed",
            "lease Released",
            "reclaim accepted, emergency, preempting",
            "reclaim accepted, preempting",
            "ReclaimForecast",
            "DuplicateClientOrderId",
            "block Pending",
            "block Closed",
            "PoolConfigured",
            "rejected price_not_on_tick",
            "rejected price_out_of_band",
            "rejected gpus_must_not_be_zero",
            "rejected gpus_over_max",
            "rejected min_gpus_invalid",
            "rejected duration_too_short",
            "rejected duration_too_long",
            "rejected max_duration_below_duration",
            "rejected unknown_pool",
            "rejected unknown_order",
            "rejected not_your_order",
            "rejected order_not_open",
            "rejected unknown_lease",
            "rejected not_your_lease",
            "rejected unknown_block",
            "rejected block_id_taken",
            "rejected window_invalid",
            "rejected window_cannot_shrink",
            "rejected nodes_do_not_match_gpus",
            "rejected reclaim_over_block",
            "rejected limit_orders_open",
            "rejected limit_notional",
            "rejected kill_switch",
            "rejected notice_too_short",
            "rejected expires_at_invalid",
            "rejected reclaim_at_in_past",
            "rejected pool_config_invalid",
            "rejected pool_not_empty",
            "rejected nothing_to_change",
            "command LeaseReady",
            "command LeaseFailed",
            "command SetSshKeys",
            "SshKeysChanged",
            "lease Failed",
            "lease ready",
            "lease ready, model gateway",
            "lease ready, machines on nodes",
            "lease opened ready",
            "lease opened with ssh keys",
            "lease failed, provision timeout",
            "lease failed, reported by its supplier",
            "lease failed on nodes",
            "lease failed under notice",
            "lease ended, billed from ready",
            "lease preempted, billed from ready",
            "lease preempted, free from ready",
            "order reopened after a failure",
            "ready repeated, nothing changed",
            "rejected lease_not_provisioning",
            "rejected endpoints_invalid",
        ];
        let missing: Vec<&str> = required
            .into_iter()
            .filter(|key| !self.seen.contains_key(*key))
            .collect();
        assert!(
            missing.is_empty(),
            "the random commands never produced {missing:?}: the generator lost its edge"
        );
    }
}
