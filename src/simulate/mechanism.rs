//! The mechanisms compared, and how each one sets up the engine's pools, the suppliers'
//! reserve prices and the buyers' bids.

use super::scenario::{ContinuousBidding, PoolScenario, ReservePolicy, Scenario};
use matching_engine::{AuctionMode, Handoff, PoolConfig, PriceMicros};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A way to sell the idle capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// The engine's continuous order book: price-time priority, the resting side's price.
    Continuous,
    /// The engine's frequent batch auction: one uniform price per uncross.
    Batch,
    /// A fixed spot price at a discount to on-demand, first come first served (as AWS Spot).
    Posted,
    /// The fixed price that would have earned most, found in hindsight by search.
    BestPosted,
    /// No market: idle capacity stays idle.
    None,
}

impl Mechanism {
    /// Every mechanism, in report order.
    pub const ALL: [Mechanism; 5] = [
        Mechanism::Continuous,
        Mechanism::Batch,
        Mechanism::Posted,
        Mechanism::BestPosted,
        Mechanism::None,
    ];

    /// Its name in tables, JSON and the summary line.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Continuous => "continuous",
            Mechanism::Batch => "batch",
            Mechanism::Posted => "posted",
            Mechanism::BestPosted => "best_posted",
            Mechanism::None => "none",
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What buyers bid and suppliers ask in one run.
#[derive(Clone, Debug, PartialEq)]
pub enum Pricing {
    /// Buyers bid as the scenario says (valuation, or walking up in `continuous`); each
    /// pool's suppliers ask this reserve (the floor, under a market-following policy).
    Bids {
        /// Reserve per pool.
        reserve: Vec<PriceMicros>,
        /// Whether buyers walk their bids up (the scenario's `continuous_bidding`).
        walk_up: bool,
    },
    /// One price per pool: suppliers ask it, buyers valuing a GPU-hour at least that much bid
    /// exactly it, the others stay away.
    Posted {
        /// Posted price per pool.
        price: Vec<PriceMicros>,
    },
    /// Nobody bids: capacity is released and stays idle.
    NoBuyers,
}

/// One run's market: the mechanism's name, the clearing rule and the pricing.
#[derive(Clone, Debug, PartialEq)]
pub struct MarketSetup {
    /// The mechanism this run measures.
    pub mechanism: Mechanism,
    /// How the pools clear.
    pub auction: AuctionMode,
    /// Bids and asks.
    pub pricing: Pricing,
}

impl MarketSetup {
    /// The setup of a mechanism; `best_posted` needs its prices found first (see
    /// [`MarketSetup::posted_at`]).
    pub fn of(mechanism: Mechanism, scenario: &Scenario) -> MarketSetup {
        let market = &scenario.market;
        let (auction, pricing) = match mechanism {
            Mechanism::Continuous | Mechanism::Batch => {
                let reserve = scenario
                    .pools
                    .iter()
                    .map(|pool| reserve_price(&market.reserve, pool))
                    .collect();
                let batch = mechanism == Mechanism::Batch;
                let auction = if batch {
                    AuctionMode::Batch {
                        interval_ms: market.batch_interval_ms,
                    }
                } else {
                    AuctionMode::Continuous
                };
                let walk_up = !batch
                    && matches!(
                        scenario.startups.continuous_bidding,
                        ContinuousBidding::WalkUp { .. }
                    );
                (auction, Pricing::Bids { reserve, walk_up })
            }
            Mechanism::Posted | Mechanism::BestPosted => {
                let share = 1.0 - market.posted_discount;
                let price = scenario
                    .pools
                    .iter()
                    .map(|pool| usd_on_tick(share * pool.on_demand_usd))
                    .collect();
                (AuctionMode::Continuous, Pricing::Posted { price })
            }
            Mechanism::None => (AuctionMode::Continuous, Pricing::NoBuyers),
        };
        MarketSetup {
            mechanism,
            auction,
            pricing,
        }
    }

    /// A posted-price market at the given price per pool.
    pub fn posted_at(mechanism: Mechanism, price: Vec<PriceMicros>) -> MarketSetup {
        MarketSetup {
            mechanism,
            auction: AuctionMode::Continuous,
            pricing: Pricing::Posted { price },
        }
    }

    /// The reserve a pool's scheduler asks for what it releases.
    pub fn reserve_of(&self, pool: usize) -> PriceMicros {
        match &self.pricing {
            Pricing::Bids { reserve, .. } => reserve[pool],
            Pricing::Posted { price } => price[pool],
            Pricing::NoBuyers => PriceMicros(TICK_MICROS),
        }
    }
}

/// The engine's pool for a scenario pool under a clearing rule. No provisioner runs in the
/// simulation, so leases are ready (and billed) from the moment they open: `Handoff::None`.
pub fn pool_config(scenario: &Scenario, pool: &PoolScenario, auction: AuctionMode) -> PoolConfig {
    PoolConfig {
        auction,
        handoff: Handoff::None,
        notice_s: scenario.market.notice_s,
        free_if_preempted_within_s: scenario.market.free_if_preempted_within_s,
        ..PoolConfig::with_defaults(&pool.gpu, &pool.region)
    }
}

/// The pools' tick: $0.01, as `PoolConfig::with_defaults`.
pub const TICK_MICROS: u64 = 10_000;

/// A USD price rounded down onto the tick, at least one tick.
pub fn usd_on_tick(usd: f64) -> PriceMicros {
    micros_on_tick((usd.max(0.0) * 1e6) as u64)
}

/// Micro-dollars rounded down onto the tick, at least one tick.
pub fn micros_on_tick(micros: u64) -> PriceMicros {
    PriceMicros((micros / TICK_MICROS).max(1) * TICK_MICROS)
}

/// A block's reserve when it is released: the fixed share, or the market policy's floor
/// (the market policy then moves it, see `pricing`).
fn reserve_price(policy: &ReservePolicy, pool: &PoolScenario) -> PriceMicros {
    match *policy {
        ReservePolicy::Fixed { share_of_on_demand } => {
            usd_on_tick(share_of_on_demand * pool.on_demand_usd)
        }
        ReservePolicy::Market {
            floor_share_of_on_demand,
            ..
        } => usd_on_tick(floor_share_of_on_demand * pool.on_demand_usd),
    }
}
