//! Running several markets on one world, in parallel threads, and the hindsight search for
//! the best fixed price (`best_posted`).
//!
//! Pools share no buyers and no supply, so a posted-price run with one price per pool earns,
//! in each pool, exactly what a run with that pool's price alone would. The search uses this:
//! each run of a grid prices every pool at its own point, and each pool keeps its best. First
//! a coarse grid of shares of on-demand, then a fine grid within one coarse step of each
//! pool's best (ties go to the lower price). The best prices are then run once more, as the
//! `best_posted` mechanism. A grid search can miss a narrow peak between its points; the fine
//! step bounds how much that can cost.

use super::market::{run_market, RunOutcome, World};
use super::mechanism::{usd_on_tick, MarketSetup, Mechanism};
use matching_engine::PriceMicros;

/// At most this many runs at once: the machine's cores, and no more than 4 (a run holds its
/// own engine; more threads than cores only adds memory).
const PARALLEL_RUNS_MAX: usize = 4;

/// Runs each setup on the world; outcomes come back in the setups' order.
pub fn run_all(world: &World<'_>, setups: &[MarketSetup]) -> Vec<RunOutcome> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, PARALLEL_RUNS_MAX);
    let mut outcomes: Vec<Option<RunOutcome>> = setups.iter().map(|_| None).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(&mut outcomes);
    std::thread::scope(|scope| {
        for _ in 0..threads.min(setups.len()) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(setup) = setups.get(index) else {
                    break;
                };
                let outcome = run_market(world, setup);
                results.lock().expect("no run panics while holding it")[index] = Some(outcome);
            });
        }
    });
    outcomes
        .into_iter()
        .map(|o| o.expect("every setup ran"))
        .collect()
}

/// The best fixed price per pool, in hindsight, and its run.
pub fn best_posted(world: &World<'_>) -> RunOutcome {
    let scenario = world.scenario;
    let search = &scenario.market.best_posted_search;
    let pools = scenario.pools.len();
    let price_at =
        |pool: usize, share: f64| usd_on_tick(share * scenario.pools[pool].on_demand_usd);

    // Coarse grid: the same share in every pool.
    let coarse: Vec<f64> = grid(search.from_share, search.to_share, search.coarse_step_share);
    let mut best: Vec<(u64, PriceMicros)> = vec![(0, PriceMicros(0)); pools];
    consider(
        world,
        &coarse.iter().map(|&s| vec![s; pools]).collect::<Vec<_>>(),
        &price_at,
        &mut best,
    );
    // Fine grid around each pool's best.
    let offsets = grid(
        -search.coarse_step_share,
        search.coarse_step_share,
        search.fine_step_share,
    );
    let centre: Vec<f64> = (0..pools)
        .map(|p| best[p].1 .0 as f64 / 1e6 / scenario.pools[p].on_demand_usd)
        .collect();
    let fine: Vec<Vec<f64>> = offsets
        .iter()
        .filter(|o| o.abs() > 1e-12)
        .map(|o| {
            centre
                .iter()
                .map(|c| (c + o).max(search.fine_step_share))
                .collect()
        })
        .collect();
    consider(world, &fine, &price_at, &mut best);

    let prices = best.iter().map(|&(_, price)| price).collect();
    run_market(
        world,
        &MarketSetup::posted_at(Mechanism::BestPosted, prices),
    )
}

/// Runs one posted market per row of shares and keeps, per pool, the most revenue.
fn consider(
    world: &World<'_>,
    rows: &[Vec<f64>],
    price_at: &dyn Fn(usize, f64) -> PriceMicros,
    best: &mut [(u64, PriceMicros)],
) {
    let setups: Vec<MarketSetup> = rows
        .iter()
        .map(|shares| {
            let prices = shares
                .iter()
                .enumerate()
                .map(|(pool, &s)| price_at(pool, s))
                .collect();
            MarketSetup::posted_at(Mechanism::BestPosted, prices)
        })
        .collect();
    for (setup, outcome) in setups.iter().zip(run_all(world, &setups)) {
        let super::mechanism::Pricing::Posted { price } = &setup.pricing else {
            unreachable!("posted setups only");
        };
        for (pool, books) in outcome.ledger.pools.iter().enumerate() {
            let candidate = (books.revenue_micros, price[pool]);
            // More revenue wins; on a tie the lower price.
            if candidate.0 > best[pool].0
                || (candidate.0 == best[pool].0
                    && (best[pool].1 .0 == 0 || candidate.1 < best[pool].1))
            {
                best[pool] = candidate;
            }
        }
    }
}

/// `from, from + step, ...` up to `to` (inclusive, within rounding).
fn grid(from: f64, to: f64, step: f64) -> Vec<f64> {
    let count = ((to - from) / step + 1e-9).floor() as usize;
    (0..=count).map(|i| from + i as f64 * step).collect()
}
