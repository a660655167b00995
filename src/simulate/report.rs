//! The report: each mechanism's figures, the table printed for people, and the one summary
//! line printed last for scripts.

use super::buyers::JobState;
use super::demand::Job;
use super::ledger::HourFigures;
use super::market::RunOutcome;
use super::mechanism::{Mechanism, Pricing};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// GPU-milliseconds in a GPU-hour.
const GPU_MS_PER_GPU_HOUR: f64 = 3_600_000.0;

/// Everything one `simulate` run found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The seed of every random draw.
    pub seed: u64,
    /// Simulated days.
    pub days: f64,
    /// The scenario's description.
    pub scenario: String,
    /// The supply and demand every mechanism faced.
    pub market: MarketFigures,
    /// The upper bound on value served that efficiency is measured against, USD: the
    /// window-aware bound (see `bound`).
    pub value_bound_usd: f64,
    /// The plain fractional relaxation, USD (at least `value_bound_usd`).
    pub value_bound_fractional_usd: f64,
    /// One entry per mechanism, in [`Mechanism::ALL`] order.
    pub mechanisms: Vec<MechanismReport>,
    /// The figures of the summary line.
    pub summary: Summary,
}

/// The supply and demand of the run, before any market.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MarketFigures {
    /// Pools.
    pub pools: Vec<String>,
    /// GPU-hours the schedulers released (from release to window end or reclaim).
    pub idle_gpu_hours: f64,
    /// Startup jobs.
    pub jobs: u64,
    /// GPU-hours the jobs want in all.
    pub demand_gpu_hours: f64,
    /// GPU-hours wanted by jobs valuing them at least at the `posted` price.
    pub demand_at_posted_gpu_hours: f64,
}

/// One mechanism's figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MechanismReport {
    /// Which mechanism.
    pub mechanism: Mechanism,
    /// Per pool: the reserve (`continuous`, `batch`; its floor under a market-following
    /// policy) or the posted price, USD per GPU-hour.
    pub prices_usd: BTreeMap<String, f64>,
    /// GPU-hours offered: open blocks' sold plus unsold GPUs over time (DESIGN 13).
    pub offered_gpu_hours: f64,
    /// GPU-hours leased.
    pub sold_gpu_hours: f64,
    /// GPU-hours offered and not leased.
    pub unsold_gpu_hours: f64,
    /// Sold as a share of offered, percent.
    pub sold_pct: f64,
    /// Sum of the ended leases' `cost_micros`.
    pub revenue_micros: u64,
    /// The same, USD.
    pub revenue_usd: f64,
    /// Revenue per offered GPU-hour, USD.
    pub revenue_per_offered_gpu_hour_usd: f64,
    /// Lease prices weighted by their GPU-hours, USD per GPU-hour.
    pub average_price_usd: f64,
    /// GPU-hours of useful work: leased time that did not end in lost work (a rigid job's
    /// preempted lease) or beyond a job's need.
    pub useful_gpu_hours: f64,
    /// Value of the useful work the jobs got, at their valuations, USD.
    pub value_served_usd: f64,
    /// Value served minus what the buyers paid, USD.
    pub buyer_surplus_usd: f64,
    /// Value served as a share of the (window-aware) upper bound, percent.
    pub efficiency_pct: f64,
    /// Value served as a share of the plain fractional bound, percent.
    pub efficiency_fractional_pct: f64,
    /// Leases opened.
    pub leases: u64,
    /// Reclaims the schedulers made.
    pub reclaims: u64,
    /// Leases given preemption notice.
    pub preemptions: u64,
    /// Share of those given at least the notice they were promised, percent (100 when none).
    pub notices_honoured_pct: f64,
    /// Reclaims that gave less notice than promised.
    pub emergency_reclaims: u64,
    /// Jobs that got at least one lease.
    pub jobs_served: u64,
    /// Median time from a job's arrival to its first lease, minutes (jobs served only).
    pub median_time_to_fill_min: Option<f64>,
    /// Commands the engine refused, by reason (none in a correct run).
    pub rejections: BTreeMap<String, u64>,
    /// Hour by hour, all pools together.
    pub hourly: Vec<HourFigures>,
}

/// The summary line's figures: the better of `continuous` and `batch` against the rest.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// `continuous` or `batch`, whichever earned more (`continuous` on a tie).
    pub mechanism: Mechanism,
    /// Its sold share, percent.
    pub sold_pct: f64,
    /// Its revenue over `posted`'s (0 when `posted` earned nothing).
    pub revenue_vs_posted: f64,
    /// Its revenue over `best_posted`'s (0 when `best_posted` earned nothing).
    pub revenue_vs_best_posted: f64,
    /// Its efficiency, percent.
    pub efficiency_pct: f64,
    /// Its notices honoured, percent.
    pub notices_honoured_pct: f64,
}

/// The run's upper bounds on value served, micro-dollars.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// The window-aware bound.
    pub window_aware_micros: u64,
    /// The plain fractional relaxation.
    pub fractional_micros: u64,
}

/// Builds a mechanism's figures from its run.
pub fn mechanism_report(
    outcome: &RunOutcome,
    jobs: &[Job],
    pool_ids: &[String],
    bounds: &Bounds,
) -> MechanismReport {
    let pools = &outcome.ledger.pools;
    let offered_ms: u128 = pools.iter().map(|p| p.offered_gpu_ms).sum();
    let sold_ms: u128 = pools.iter().map(|p| p.sold_gpu_ms).sum();
    let revenue_micros: u64 = pools.iter().map(|p| p.revenue_micros).sum();
    let price_gpu_ms: u128 = pools.iter().map(|p| p.price_gpu_ms).sum();
    let leased_ms: u128 = pools.iter().map(|p| p.leased_gpu_ms).sum();
    let preemptions: u64 = pools.iter().map(|p| p.preemptions).sum();
    let honoured: u64 = pools.iter().map(|p| p.notices_honoured).sum();
    let value_micros: u64 = jobs
        .iter()
        .zip(&outcome.jobs)
        .map(|(job, state)| job.value_of(state.useful_gpu_ms))
        .sum();
    let offered_h = offered_ms as f64 / GPU_MS_PER_GPU_HOUR;
    let sold_h = sold_ms as f64 / GPU_MS_PER_GPU_HOUR;
    let revenue_usd = revenue_micros as f64 / 1e6;
    let value_usd = value_micros as f64 / 1e6;
    let prices_usd = pool_ids
        .iter()
        .enumerate()
        .filter_map(|(i, id)| {
            let price = match &outcome.setup.pricing {
                Pricing::Bids { reserve, .. } => reserve[i],
                Pricing::Posted { price } => price[i],
                Pricing::NoBuyers => return None,
            };
            Some((id.clone(), price.0 as f64 / 1e6))
        })
        .collect();
    MechanismReport {
        mechanism: outcome.setup.mechanism,
        prices_usd,
        offered_gpu_hours: offered_h,
        sold_gpu_hours: sold_h,
        unsold_gpu_hours: offered_h - sold_h,
        sold_pct: percent(sold_h, offered_h),
        revenue_micros,
        revenue_usd,
        revenue_per_offered_gpu_hour_usd: ratio(revenue_usd, offered_h),
        average_price_usd: ratio(price_gpu_ms as f64, leased_ms as f64) / 1e6,
        useful_gpu_hours: jobs
            .iter()
            .zip(&outcome.jobs)
            .map(|(job, state)| state.useful_gpu_ms.clamp(0, job.work_gpu_ms()) as f64)
            .sum::<f64>()
            / GPU_MS_PER_GPU_HOUR,
        value_served_usd: value_usd,
        buyer_surplus_usd: value_usd - revenue_usd,
        efficiency_pct: percent(value_micros as f64, bounds.window_aware_micros as f64),
        efficiency_fractional_pct: percent(value_micros as f64, bounds.fractional_micros as f64),
        leases: pools.iter().map(|p| p.leases).sum(),
        reclaims: pools.iter().map(|p| p.reclaims).sum(),
        preemptions,
        notices_honoured_pct: if preemptions == 0 {
            100.0
        } else {
            percent(honoured as f64, preemptions as f64)
        },
        emergency_reclaims: pools.iter().map(|p| p.emergency_reclaims).sum(),
        jobs_served: outcome
            .jobs
            .iter()
            .filter(|s| s.first_fill_at.is_some())
            .count() as u64,
        median_time_to_fill_min: median_fill_minutes(jobs, &outcome.jobs),
        rejections: outcome.rejections.clone(),
        hourly: outcome.ledger.hours.clone(),
    }
}

fn median_fill_minutes(jobs: &[Job], states: &[JobState]) -> Option<f64> {
    let mut waits: Vec<i64> = jobs
        .iter()
        .zip(states)
        .filter_map(|(job, state)| state.first_fill_at.map(|at| at.0 - job.arrives_at.0))
        .collect();
    if waits.is_empty() {
        return None;
    }
    waits.sort_unstable();
    Some(waits[waits.len() / 2] as f64 / 60_000.0)
}

/// `part / whole` in percent, 0 when `whole` is 0.
fn percent(part: f64, whole: f64) -> f64 {
    100.0 * ratio(part, whole)
}

/// `a / b`, 0 when `b` is 0.
pub(crate) fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        a / b
    }
}

impl Report {
    /// A mechanism's figures.
    pub fn of(&self, mechanism: Mechanism) -> &MechanismReport {
        self.mechanisms
            .iter()
            .find(|m| m.mechanism == mechanism)
            .expect("every mechanism runs")
    }
}

/// The summary of a set of mechanism figures.
pub fn summarize(mechanisms: &[MechanismReport]) -> Summary {
    let of = |m: Mechanism| mechanisms.iter().find(|r| r.mechanism == m).expect("ran");
    let (continuous, batch) = (of(Mechanism::Continuous), of(Mechanism::Batch));
    let best = if batch.revenue_micros > continuous.revenue_micros {
        batch
    } else {
        continuous
    };
    Summary {
        mechanism: best.mechanism,
        sold_pct: best.sold_pct,
        revenue_vs_posted: ratio(best.revenue_usd, of(Mechanism::Posted).revenue_usd),
        revenue_vs_best_posted: ratio(best.revenue_usd, of(Mechanism::BestPosted).revenue_usd),
        efficiency_pct: best.efficiency_pct,
        notices_honoured_pct: best.notices_honoured_pct,
    }
}

/// The last line of the output.
pub fn summary_line(report: &Report) -> String {
    let s = &report.summary;
    format!(
        "simulate: mechanism={} sold_pct={:.1} revenue_vs_posted={:.2} revenue_vs_best_posted={:.2} efficiency_pct={:.1} notices_honoured_pct={:.1}",
        s.mechanism,
        s.sold_pct,
        s.revenue_vs_posted,
        s.revenue_vs_best_posted,
        s.efficiency_pct,
        s.notices_honoured_pct
    )
}

/// The table for people: one column per mechanism, one row per figure.
pub fn render_table(report: &Report) -> String {
    let mut out = String::new();
    let m = &report.market;
    let _ = writeln!(
        out,
        "simulate: seed {}, {} days, pools {}",
        report.seed,
        report.days,
        m.pools.join(" ")
    );
    let _ = writeln!(
        out,
        "supply {} idle GPU-h; demand {} jobs, {} GPU-h ({} GPU-h at the posted price)",
        thousands(m.idle_gpu_hours),
        m.jobs,
        thousands(m.demand_gpu_hours),
        thousands(m.demand_at_posted_gpu_hours),
    );
    let _ = writeln!(
        out,
        "value bound ${} (window-aware; fractional relaxation ${})",
        thousands(report.value_bound_usd),
        thousands(report.value_bound_fractional_usd),
    );
    let _ = write!(out, "{:<28}", "");
    for r in &report.mechanisms {
        let _ = write!(out, "{:>13}", r.mechanism.as_str());
    }
    out.push('\n');
    type Cell = fn(&MechanismReport) -> String;
    let rows: [(&str, Cell); 17] = [
        ("offered GPU-h", |r| thousands(r.offered_gpu_hours)),
        ("sold GPU-h", |r| thousands(r.sold_gpu_hours)),
        ("sold %", |r| format!("{:.1}", r.sold_pct)),
        ("revenue $", |r| thousands(r.revenue_usd)),
        ("revenue / offered GPU-h $", |r| {
            format!("{:.3}", r.revenue_per_offered_gpu_hour_usd)
        }),
        ("average price $/GPU-h", |r| {
            format!("{:.3}", r.average_price_usd)
        }),
        ("useful GPU-h", |r| thousands(r.useful_gpu_hours)),
        ("value served $", |r| thousands(r.value_served_usd)),
        ("buyer surplus $", |r| thousands(r.buyer_surplus_usd)),
        ("efficiency %", |r| format!("{:.1}", r.efficiency_pct)),
        ("efficiency vs fractional %", |r| {
            format!("{:.1}", r.efficiency_fractional_pct)
        }),
        ("leases", |r| r.leases.to_string()),
        ("reclaims", |r| r.reclaims.to_string()),
        ("preemptions", |r| r.preemptions.to_string()),
        ("notices honoured %", |r| {
            format!("{:.1}", r.notices_honoured_pct)
        }),
        ("jobs served", |r| r.jobs_served.to_string()),
        ("median time to fill min", |r| {
            r.median_time_to_fill_min
                .map_or("-".to_owned(), |m| format!("{m:.1}"))
        }),
    ];
    for (label, cell) in rows {
        let _ = write!(out, "{label:<28}");
        for r in &report.mechanisms {
            let _ = write!(out, "{:>13}", cell(r));
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "prices $/GPU-h (continuous, batch: the reserve, or its floor when it follows the \
         market; posted: the price):"
    );
    for r in &report.mechanisms {
        if r.prices_usd.is_empty() {
            continue;
        }
        let prices: Vec<String> = r
            .prices_usd
            .iter()
            .map(|(pool, p)| format!("{pool} {p:.2}"))
            .collect();
        let _ = writeln!(out, "  {:<12} {}", r.mechanism.as_str(), prices.join(", "));
    }
    out
}

/// A number with thousands separators and no decimals (money and GPU-hours in tables).
fn thousands(x: f64) -> String {
    let rounded = x.round() as i128;
    let digits = rounded.unsigned_abs().to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if rounded < 0 {
        format!("-{grouped}")
    } else {
        grouped
    }
}
