//! The suppliers' reserve prices: fixed, posted, or following the market.
//!
//! With the `market` policy a scheduler asks, for each of its blocks, the pool's reference
//! price ([`ReferencePrices`]: the GPU-weighted average price of the pool's trades over the
//! last `reference_lookback_h`, a public figure), never less than its floor; while GPUs of a
//! block stay unsold it halves the premium of its ask over the floor every `half_life_min`,
//! so unwanted capacity still sells at the floor eventually. GPUs that come back to the book (a lease ended) start again at
//! the reference. Asks are moved with `UpdateCapacity` at the scheduler's steps, and only
//! when they change by at least `REPRICE_STEP_MIN_SHARE` (each move loses time priority).
//!
//! The quantities released and reclaimed never depend on the market: only prices do.

use super::mechanism::{micros_on_tick, usd_on_tick, MarketSetup, Pricing};
use super::scenario::{ReservePolicy, Scenario};
use matching_engine::{BlockStatus, Event, PriceMicros, TimeMs};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// An ask is moved only when its new price differs by at least this share: fewer commands,
/// and a block keeps its place in the queue through small moves.
pub const REPRICE_STEP_MIN_SHARE: f64 = 0.02;

/// Each pool's public reference price: the GPU-weighted average price of its trades over the
/// last `reference_lookback_h` hours; before its first trade (and while it has none in the
/// window) the last one known, starting at the posted price.
pub struct ReferencePrices {
    lookback_ms: i64,
    /// Per pool: recent trades (time, price, GPUs).
    trades: Vec<VecDeque<(TimeMs, u64, u64)>>,
    /// Per pool: sum of price times GPUs, and GPUs, of those trades.
    sums: Vec<(u128, u64)>,
    current: Vec<PriceMicros>,
}

impl ReferencePrices {
    /// Reference prices starting at each pool's posted price.
    pub fn new(scenario: &Scenario) -> ReferencePrices {
        let share = 1.0 - scenario.market.posted_discount;
        let pools = scenario.pools.len();
        ReferencePrices {
            lookback_ms: (scenario.market.reference_lookback_h * 3_600_000.0) as i64,
            trades: vec![VecDeque::new(); pools],
            sums: vec![(0, 0); pools],
            current: scenario
                .pools
                .iter()
                .map(|p| usd_on_tick(share * p.on_demand_usd))
                .collect(),
        }
    }

    /// Records the trades among one command's events.
    pub fn observe(
        &mut self,
        now: TimeMs,
        events: &[Event],
        pool_of: impl Fn(&str) -> Option<usize>,
    ) {
        for event in events {
            if let Event::Traded { trade } = event {
                if let Some(pool) = pool_of(&trade.pool) {
                    self.trades[pool].push_back((now, trade.price.0, trade.gpus as u64));
                    self.sums[pool].0 += trade.price.0 as u128 * trade.gpus as u128;
                    self.sums[pool].1 += trade.gpus as u64;
                }
            }
        }
    }

    /// The pool's reference price now.
    pub fn at(&mut self, pool: usize, now: TimeMs) -> PriceMicros {
        let trades = &mut self.trades[pool];
        while let Some(&(at, price, gpus)) = trades.front() {
            if at.0 > now.0 - self.lookback_ms {
                break;
            }
            trades.pop_front();
            self.sums[pool].0 -= price as u128 * gpus as u128;
            self.sums[pool].1 -= gpus;
        }
        let (weighted, gpus) = self.sums[pool];
        if gpus > 0 {
            self.current[pool] = micros_on_tick((weighted / gpus as u128) as u64);
        }
        self.current[pool]
    }
}

/// What a scheduler knows of one of its open blocks.
#[derive(Clone, Copy, Debug)]
struct Ask {
    pool: usize,
    reserve: PriceMicros,
    /// Since when some of its GPUs are unsold, while they are.
    unsold_since: Option<TimeMs>,
}

/// Every scheduler's asks in one run.
pub struct SupplierPricing {
    /// Per pool: the fixed reserve, or the market policy's floor.
    floor: Vec<PriceMicros>,
    /// Market policy: milliseconds for an unsold ask's premium to halve.
    half_life_ms: Option<f64>,
    /// Open blocks by the scheduler's block index.
    asks: BTreeMap<usize, Ask>,
}

impl SupplierPricing {
    /// The pricing of a run's market.
    pub fn new(scenario: &Scenario, setup: &MarketSetup) -> SupplierPricing {
        let pools = scenario.pools.len();
        let half_life_ms = match (&setup.pricing, &scenario.market.reserve) {
            (Pricing::Bids { .. }, ReservePolicy::Market { half_life_min, .. }) => {
                Some(half_life_min * 60_000.0)
            }
            _ => None,
        };
        SupplierPricing {
            floor: (0..pools).map(|pool| setup.reserve_of(pool)).collect(),
            half_life_ms,
            asks: BTreeMap::new(),
        }
    }

    /// The reserve of a block released now, given the pool's reference price.
    pub fn release(
        &mut self,
        block: usize,
        pool: usize,
        now: TimeMs,
        reference: PriceMicros,
    ) -> PriceMicros {
        let floor = self.floor[pool];
        let reserve = if self.half_life_ms.is_some() {
            reference.max(floor)
        } else {
            floor
        };
        if self.half_life_ms.is_some() {
            self.asks.insert(
                block,
                Ask {
                    pool,
                    reserve,
                    unsold_since: Some(now),
                },
            );
        }
        reserve
    }

    /// Learns from one command's events which GPUs of its blocks are unsold. `block_of` maps
    /// a pool id and block id to the block's index.
    pub fn observe(
        &mut self,
        now: TimeMs,
        events: &[Event],
        block_of: impl Fn(&str, &str) -> Option<(usize, usize)>,
    ) {
        if self.half_life_ms.is_none() {
            return;
        }
        for event in events {
            let Event::BlockChanged { block } = event else {
                continue;
            };
            let Some((_, index)) = block_of(&block.pool, &block.block_id) else {
                continue;
            };
            if block.status != BlockStatus::Open {
                self.asks.remove(&index);
            } else if let Some(ask) = self.asks.get_mut(&index) {
                ask.reserve = block.reserve_price;
                if block.gpus_unsold == 0 {
                    ask.unsold_since = None;
                } else if ask.unsold_since.is_none() {
                    ask.unsold_since = Some(now);
                }
            }
        }
    }

    /// The asks to move now in `pool`, given its reference price: `(block index, new
    /// reserve)`, in block order.
    pub fn reprice(
        &self,
        pool: usize,
        now: TimeMs,
        reference: PriceMicros,
    ) -> Vec<(usize, PriceMicros)> {
        let Some(half_life_ms) = self.half_life_ms else {
            return Vec::new();
        };
        let floor = self.floor[pool];
        let reference = reference.max(floor);
        let mut moves = Vec::new();
        for (&index, ask) in self.asks.iter().filter(|(_, a)| a.pool == pool) {
            let Some(since) = ask.unsold_since else {
                continue;
            };
            let halvings = (now.0 - since.0) as f64 / half_life_ms;
            let premium = (reference.0 - floor.0) as f64 * 0.5f64.powf(halvings);
            let wanted = micros_on_tick(floor.0 + premium as u64).max(floor);
            let moved = (wanted.0 as f64 - ask.reserve.0 as f64).abs();
            if wanted != ask.reserve && moved >= REPRICE_STEP_MIN_SHARE * ask.reserve.0 as f64 {
                moves.push((index, wanted));
            }
        }
        moves
    }

    /// Whether asks follow the market (and so need repricing steps).
    pub fn follows_market(&self) -> bool {
        self.half_life_ms.is_some()
    }
}

/// Finds a run's blocks by pool id and block id.
pub struct BlockIndex {
    pools: HashMap<String, usize>,
    blocks: Vec<HashMap<String, usize>>,
}

impl BlockIndex {
    /// The index of a run's planned blocks.
    pub fn new(pool_ids: &[String], blocks: &[super::supply::PlannedBlock]) -> BlockIndex {
        let mut by_pool = vec![HashMap::new(); pool_ids.len()];
        for (index, block) in blocks.iter().enumerate() {
            by_pool[block.pool].insert(block.block_id.clone(), index);
        }
        BlockIndex {
            pools: pool_ids
                .iter()
                .enumerate()
                .map(|(i, id)| (id.clone(), i))
                .collect(),
            blocks: by_pool,
        }
    }

    /// The index of a pool.
    pub fn pool(&self, pool: &str) -> Option<usize> {
        self.pools.get(pool).copied()
    }

    /// `(pool index, block index)` of a block.
    pub fn find(&self, pool: &str, block_id: &str) -> Option<(usize, usize)> {
        let &pool = self.pools.get(pool)?;
        self.blocks[pool].get(block_id).map(|&block| (pool, block))
    }
}
