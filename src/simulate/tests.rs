//! Tests of the simulator on a small day (two pools of 24 nodes), fast in a debug build.

use super::bound::{value_bound_micros, BoundKind, BoundShape};
use super::curves::HOUR_MS;
use super::demand::Job;
use super::market::{run_market, World};
use super::mechanism::{MarketSetup, Mechanism};
use super::scenario::{ReservePolicy, Scenario};
use super::supply::{PlannedBlock, SupplyPlan};
use super::*;
use matching_engine::TimeMs;

/// One day of two small pools, with a coarse price search: the default scenario's shape.
fn small_day() -> Scenario {
    let mut scenario = Scenario::default_week();
    scenario.days = 1.0;
    scenario.pools.truncate(2);
    for pool in &mut scenario.pools {
        let scale = 24.0 / pool.nodes as f64;
        pool.nodes = 24;
        pool.jobs_per_hour_peak *= scale;
    }
    let search = &mut scenario.market.best_posted_search;
    search.coarse_step_share = 0.1;
    search.fine_step_share = 0.05;
    scenario.validate().expect("a valid test scenario");
    scenario
}

/// Every fixed mechanism's run on the small day, with the world it ran in.
fn runs(scenario: &Scenario, seed: u64) -> (SupplyPlan, Vec<Job>, Vec<market::RunOutcome>) {
    let (start, horizon) = time_span(scenario);
    let supply = plan_supply(scenario, seed, start, horizon);
    let jobs = draw_jobs(scenario, seed, start, horizon);
    let outcomes = {
        let world = World {
            scenario,
            supply: &supply,
            jobs: &jobs,
            start,
            horizon,
        };
        let mut setups: Vec<MarketSetup> = Mechanism::ALL
            .iter()
            .filter(|&&m| m != Mechanism::BestPosted)
            .map(|&m| MarketSetup::of(m, scenario))
            .collect();
        let posted = MarketSetup::of(Mechanism::Posted, scenario);
        if let mechanism::Pricing::Posted { price } = posted.pricing {
            let cheaper = price
                .iter()
                .map(|p| mechanism::micros_on_tick(p.0 / 2))
                .collect();
            setups.push(MarketSetup::posted_at(Mechanism::BestPosted, cheaper));
        }
        setups.iter().map(|s| run_market(&world, s)).collect()
    };
    (supply, jobs, outcomes)
}

#[test]
fn the_same_seed_gives_byte_identical_json_and_table() {
    let scenario = small_day();
    let first = simulate(&scenario, 7);
    let second = simulate(&scenario, 7);
    let json = |r: &Report| serde_json::to_string(r).expect("serializes");
    assert_eq!(json(&first), json(&second));
    assert_eq!(render_table(&first), render_table(&second));
    assert_eq!(summary_line(&first), summary_line(&second));
    let other = simulate(&scenario, 8);
    assert_ne!(json(&first), json(&other), "the seed must matter");
}

#[test]
fn every_mechanisms_books_balance() {
    let scenario = small_day();
    let (start, horizon) = time_span(&scenario);
    let notice_ms = scenario.market.notice_s as u128 * 1000;
    let (supply, _, outcomes) = runs(&scenario, 3);
    for outcome in &outcomes {
        let name = outcome.setup.mechanism;
        assert!(
            outcome.rejections.is_empty(),
            "{name}: refused {:?}",
            outcome.rejections
        );
        let block_revenue = outcome.ledger.block_revenue_micros();
        for (pool, books) in outcome.ledger.pools.iter().enumerate() {
            // Sold time seen on the blocks is the leases' time; revenue is their cost.
            assert_eq!(books.sold_gpu_ms, books.leased_gpu_ms, "{name} pool {pool}");
            assert_eq!(
                books.revenue_micros, block_revenue[pool],
                "{name} pool {pool}"
            );
            assert!(
                books.sold_gpu_ms <= books.offered_gpu_ms,
                "{name} pool {pool}"
            );
            // Offered is what the schedulers released, plus at most the notice of each
            // reclaimed block while its leases ran out.
            let released = supply.idle_gpu_ms(pool, start, horizon);
            let tails: u128 = supply
                .blocks
                .iter()
                .filter(|b| b.pool == pool && b.reclaimed_at.is_some())
                .map(|b| b.gpus as u128 * notice_ms)
                .sum();
            assert!(books.offered_gpu_ms >= released, "{name} pool {pool}");
            assert!(
                books.offered_gpu_ms <= released + tails,
                "{name} pool {pool}"
            );
        }
        let sold: u128 = outcome.ledger.pools.iter().map(|p| p.sold_gpu_ms).sum();
        let hourly_sold: f64 = outcome.ledger.hours.iter().map(|h| h.sold_gpu_hours).sum();
        assert!((hourly_sold - sold as f64 / HOUR_MS as f64).abs() < 1e-6 * (1.0 + hourly_sold));
    }
    // And in the report: sold plus unsold is offered, revenue the leases' costs.
    let report = simulate(&scenario, 3);
    for m in &report.mechanisms {
        let total = m.sold_gpu_hours + m.unsold_gpu_hours;
        assert!((total - m.offered_gpu_hours).abs() < 1e-9 * (1.0 + total));
        assert!(m.sold_gpu_hours <= m.offered_gpu_hours);
        assert!((m.revenue_usd - m.revenue_micros as f64 / 1e6).abs() < 1e-9);
    }
}

#[test]
fn the_bound_is_never_below_any_mechanisms_value_served() {
    let scenario = small_day();
    let (start, horizon) = time_span(&scenario);
    for seed in [1, 2] {
        let (supply, jobs, outcomes) = runs(&scenario, seed);
        for pool in 0..scenario.pools.len() {
            let shape = |kind| BoundShape {
                kind,
                notice_s: scenario.market.notice_s,
                start,
                horizon,
            };
            let bound = value_bound_micros(&supply, &jobs, pool, &shape(BoundKind::WindowAware));
            let fractional =
                value_bound_micros(&supply, &jobs, pool, &shape(BoundKind::Fractional));
            assert!(bound <= fractional, "seed {seed} pool {pool}");
            for outcome in &outcomes {
                let served: u64 = jobs
                    .iter()
                    .zip(&outcome.jobs)
                    .filter(|(job, _)| job.pool == pool)
                    .map(|(job, state)| job.value_of(state.useful_gpu_ms))
                    .sum();
                assert!(
                    served <= bound,
                    "seed {seed} pool {pool} {}: served {served} > bound {bound}",
                    outcome.setup.mechanism
                );
            }
        }
    }
}

#[test]
fn the_bound_reroutes_earlier_jobs_to_fit_later_ones() {
    // Two one-hour slots of one GPU each. The valuable job may use either slot, the cheap
    // one only the first: the exact bound serves both (15), a greedy without rerouting
    // could give the first slot to the valuable job and serve only it (10).
    let start = TimeMs(0);
    let horizon = TimeMs(2 * HOUR_MS);
    let block = |from: i64, to: i64| PlannedBlock {
        pool: 0,
        block_id: format!("b{from}"),
        node: "n".into(),
        gpus: 1,
        released_at: TimeMs(from),
        until: TimeMs(to),
        reclaimed_at: None,
        emergency: false,
    };
    let supply = SupplyPlan {
        blocks: vec![block(0, HOUR_MS), block(HOUR_MS, 2 * HOUR_MS)],
        actions: Vec::new(),
    };
    let job = |value: u64, deadline: i64| Job {
        pool: 0,
        account: "a".into(),
        arrives_at: TimeMs(0),
        gpus: 1,
        duration_s: 3600,
        deadline: TimeMs(deadline),
        value_micros: value,
        tolerant: true,
        persistent: false,
    };
    let jobs = vec![job(10_000_000, 2 * HOUR_MS), job(5_000_000, HOUR_MS)];
    for kind in [BoundKind::Fractional, BoundKind::WindowAware] {
        let shape = BoundShape {
            kind,
            notice_s: 0,
            start,
            horizon,
        };
        assert_eq!(value_bound_micros(&supply, &jobs, 0, &shape), 15_000_000);
    }
}

#[test]
fn none_sells_nothing() {
    let report = simulate(&small_day(), 5);
    let none = report.of(Mechanism::None);
    assert!(none.offered_gpu_hours > 0.0);
    assert_eq!(none.sold_gpu_hours, 0.0);
    assert_eq!(none.revenue_micros, 0);
    assert_eq!(none.leases, 0);
    assert_eq!(none.value_served_usd, 0.0);
    assert!(none.rejections.is_empty());
}

#[test]
fn notices_are_all_honoured_under_the_default_scheduler_policy() {
    let scenario = small_day();
    assert_eq!(scenario.scheduler.emergency_reclaim_share, 0.0);
    let mut preemptions = 0;
    for seed in [1, 2, 3] {
        let report = simulate(&scenario, seed);
        for m in &report.mechanisms {
            assert_eq!(m.notices_honoured_pct, 100.0, "seed {seed} {}", m.mechanism);
            assert_eq!(m.emergency_reclaims, 0);
            preemptions += m.preemptions;
        }
    }
    assert!(preemptions > 0, "the check must see preemptions");
}

#[test]
fn emergency_reclaims_count_as_notices_not_honoured() {
    let mut scenario = small_day();
    scenario.scheduler.emergency_reclaim_share = 1.0;
    scenario.scheduler.reclaim_into_headroom = true;
    let report = simulate(&scenario, 1);
    let batch = report.of(Mechanism::Batch);
    assert!(batch.preemptions > 0);
    assert!(batch.emergency_reclaims > 0);
    assert!(batch.notices_honoured_pct < 100.0);
}

#[test]
fn the_shipped_scenario_file_is_the_built_in_one() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/default.json");
    assert_eq!(
        Scenario::load(&path).expect("loads"),
        Scenario::default_week()
    );
    assert!(matches!(
        Scenario::default_week().market.reserve,
        ReservePolicy::Market { .. }
    ));
}

#[test]
fn unknown_or_out_of_range_scenario_fields_are_refused() {
    let mut value = serde_json::to_value(Scenario::default_week()).expect("serializes");
    value["scheduler"]["surprise"] = serde_json::json!(1);
    assert!(Scenario::parse(&value.to_string()).is_err());
    let mut scenario = Scenario::default_week();
    scenario.startups.bid_shading = 1.5;
    assert!(scenario.validate().is_err());
    scenario = Scenario::default_week();
    scenario.pools.push(scenario.pools[0].clone());
    assert!(matches!(
        scenario.validate(),
        Err(ScenarioError::DuplicatePool(_))
    ));
}

#[test]
fn the_summary_line_follows_the_contract() {
    let report = simulate(&small_day(), 2);
    let line = summary_line(&report);
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields[0], "simulate:");
    let keys: Vec<&str> = fields[1..]
        .iter()
        .map(|f| f.split('=').next().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "mechanism",
            "sold_pct",
            "revenue_vs_posted",
            "revenue_vs_best_posted",
            "efficiency_pct",
            "notices_honoured_pct"
        ]
    );
    assert!(fields[1] == "mechanism=continuous" || fields[1] == "mechanism=batch");
    let decimals = |f: &str| f.split('.').nth(1).map_or(0, str::len);
    assert_eq!(decimals(fields[2]), 1);
    assert_eq!(decimals(fields[3]), 2);
    assert_eq!(decimals(fields[4]), 2);
    assert_eq!(decimals(fields[5]), 1);
    assert_eq!(decimals(fields[6]), 1);
    // The summary's mechanism is whichever of continuous and batch earned more.
    let (c, b) = (
        report.of(Mechanism::Continuous),
        report.of(Mechanism::Batch),
    );
    let best = if b.revenue_micros > c.revenue_micros {
        "batch"
    } else {
        "continuous"
    };
    assert_eq!(fields[1], format!("mechanism={best}"));
}

#[test]
fn execute_prints_the_table_then_the_summary_or_the_json_alone() {
    let path =
        std::env::temp_dir().join(format!("offpeak-simulate-test-{}.json", std::process::id()));
    std::fs::write(
        &path,
        serde_json::to_string(&small_day()).expect("serializes"),
    )
    .expect("writes");
    let mut options = SimulateOptions {
        seed: 9,
        days: Some(1.0),
        scenario: Some(path.clone()),
        json: false,
        chart: None,
    };
    let table = execute(&options).expect("runs");
    options.json = true;
    let json = execute(&options).expect("runs");
    let _ = std::fs::remove_file(&path);
    let last = table.lines().last().expect("printed");
    assert!(last.starts_with("simulate: mechanism="));
    let report: serde_json::Value = serde_json::from_str(&json).expect("JSON alone");
    assert_eq!(report["seed"], 9);
    assert_eq!(report["mechanisms"].as_array().map(Vec::len), Some(5));
}

#[test]
fn the_chart_is_an_svg_with_every_mechanism() {
    let report = simulate(&small_day(), 4);
    let path =
        std::env::temp_dir().join(format!("offpeak-simulate-test-{}.svg", std::process::id()));
    write_chart(&report, &path).expect("draws");
    let svg = std::fs::read_to_string(&path).expect("written");
    let _ = std::fs::remove_file(&path);
    assert!(svg.starts_with("<svg"));
    for m in Mechanism::ALL {
        assert!(svg.contains(m.as_str()), "legend names {m}");
    }
}
