//! `offpeak simulate` (DESIGN section 13): a seeded scenario run straight through the
//! matching engine in simulated time, once per mechanism on identical supply and demand, and
//! what each mechanism earned, sold and served. The market-design reasoning and its numbers
//! are in `docs/market-design.md`.
//!
//! The flow: a [`Scenario`] (a JSON file, or the built-in `scenarios/default.json`) and a
//! seed give the schedulers' [`SupplyPlan`] (releases and reclaims, [`supply`]) and the
//! startups' [`Job`]s ([`demand`]), both drawn before any market runs. Each mechanism
//! ([`Mechanism`], [`mechanism`]) then replays them through its own `Engine` with the same
//! `Engine::apply` production uses ([`market`]): buyers react to their bids and leases
//! ([`buyers`]), schedulers price what they release ([`pricing`]), and the books are kept from
//! the engine's events alone ([`ledger`]). `best_posted` is found by a search over posted
//! prices ([`search`]). The value served is set against an upper bound computed from the same
//! scenario ([`bound`]); [`report`] renders the table and the summary line, [`chart`] the SVG.
//!
//! No server, no database, no clock, no sleeping, no provisioners (pools use
//! `Handoff::None`: a lease is ready and billed from its start). The same seed gives the same
//! report, byte for byte: every draw comes from seeded ChaCha streams (one per pool and
//! purpose), nothing iterates a hash map into the output, and runs in parallel threads only
//! ever return their results in a fixed order.

pub mod bound;
pub mod buyers;
pub mod chart;
pub mod curves;
pub mod demand;
pub mod ledger;
pub mod market;
pub mod mechanism;
pub mod pricing;
pub mod report;
pub mod scenario;
pub mod search;
pub mod supply;

#[cfg(test)]
mod tests;

pub use chart::write_chart;
pub use demand::{draw_jobs, Job};
pub use mechanism::{MarketSetup, Mechanism};
pub use report::{render_table, summary_line, MechanismReport, Report, Summary};
pub use scenario::{Scenario, ScenarioError};
pub use supply::{plan_supply, SupplyAction, SupplyPlan};

use bound::{BoundKind, BoundShape};
use curves::HOUR_MS;
use market::{RunOutcome, World};
use matching_engine::TimeMs;
use report::{mechanism_report, summarize, Bounds, MarketFigures};
use std::path::PathBuf;

/// What `offpeak simulate` was asked for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimulateOptions {
    /// Seed of every random draw.
    pub seed: u64,
    /// Simulated days; `None` takes the scenario's.
    pub days: Option<f64>,
    /// A scenario file; `None` runs the built-in default week.
    pub scenario: Option<PathBuf>,
    /// Print the report as JSON instead of the table.
    pub json: bool,
    /// Draw utilisation and revenue over time to this SVG file.
    pub chart: Option<PathBuf>,
}

/// Runs every mechanism on the scenario and reports.
pub fn run(options: &SimulateOptions) -> anyhow::Result<Report> {
    let mut scenario = match &options.scenario {
        Some(path) => Scenario::load(path)?,
        None => Scenario::default_week(),
    };
    if let Some(days) = options.days {
        scenario.days = days;
        scenario.validate()?;
    }
    Ok(simulate(&scenario, options.seed))
}

/// Runs `run` and renders what the command prints: the table with the summary line last, or
/// with `json` the JSON report alone (the summary is in it); writes the chart when asked.
pub fn execute(options: &SimulateOptions) -> anyhow::Result<String> {
    let report = run(options)?;
    if let Some(path) = &options.chart {
        write_chart(&report, path)?;
    }
    let mut out = if options.json {
        serde_json::to_string_pretty(&report)?
    } else {
        let mut table = render_table(&report);
        table.push_str(&summary_line(&report));
        table
    };
    out.push('\n');
    Ok(out)
}

/// The run's time span: supply from `start_at_ms`, for `days`.
pub fn time_span(scenario: &Scenario) -> (TimeMs, TimeMs) {
    let start = TimeMs(scenario.start_at_ms);
    let horizon = TimeMs(start.0 + (scenario.days * 24.0 * HOUR_MS as f64).round() as i64);
    (start, horizon)
}

/// Runs every mechanism on an already loaded scenario.
pub fn simulate(scenario: &Scenario, seed: u64) -> Report {
    let (start, horizon) = time_span(scenario);
    let supply = plan_supply(scenario, seed, start, horizon);
    let jobs = draw_jobs(scenario, seed, start, horizon);
    let world = World {
        scenario,
        supply: &supply,
        jobs: &jobs,
        start,
        horizon,
    };
    let pool_ids: Vec<String> = scenario.pools.iter().map(|p| p.id()).collect();
    let bound_of = |kind| -> u64 {
        let shape = BoundShape {
            kind,
            notice_s: scenario.market.notice_s,
            start,
            horizon,
        };
        (0..scenario.pools.len())
            .map(|pool| bound::value_bound_micros(&supply, &jobs, pool, &shape))
            .sum()
    };
    let bounds = Bounds {
        window_aware_micros: bound_of(BoundKind::WindowAware),
        fractional_micros: bound_of(BoundKind::Fractional),
    };

    let fixed: Vec<MarketSetup> = [
        Mechanism::Continuous,
        Mechanism::Batch,
        Mechanism::Posted,
        Mechanism::None,
    ]
    .iter()
    .map(|&m| MarketSetup::of(m, scenario))
    .collect();
    let mut outcomes: Vec<RunOutcome> = search::run_all(&world, &fixed);
    outcomes.push(search::best_posted(&world));
    let mut mechanisms: Vec<MechanismReport> = outcomes
        .iter()
        .map(|o| mechanism_report(o, &jobs, &pool_ids, &bounds))
        .collect();
    mechanisms.sort_by_key(|m| m.mechanism);

    let posted = MarketSetup::of(Mechanism::Posted, scenario);
    let gpu_hours = |job: &Job| job.work_gpu_ms() as f64 / HOUR_MS as f64;
    let market = MarketFigures {
        pools: pool_ids.clone(),
        idle_gpu_hours: (0..pool_ids.len())
            .map(|p| supply.idle_gpu_ms(p, start, horizon) as f64 / HOUR_MS as f64)
            .sum(),
        jobs: jobs.len() as u64,
        demand_gpu_hours: jobs.iter().map(gpu_hours).sum(),
        demand_at_posted_gpu_hours: jobs
            .iter()
            .filter(|job| job.value_micros >= posted.reserve_of(job.pool).0)
            .map(gpu_hours)
            .sum(),
    };
    Report {
        seed,
        days: scenario.days,
        scenario: scenario.description.clone(),
        market,
        value_bound_usd: bounds.window_aware_micros as f64 / 1e6,
        value_bound_fractional_usd: bounds.fractional_micros as f64 / 1e6,
        summary: summarize(&mechanisms),
        mechanisms,
    }
}
