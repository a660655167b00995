//! Batch pools: arming the uncross and clearing the book at one price.
//!
//! A batch pool never matches on arrival: whatever could trade arms one uncross at the next
//! multiple of the pool's interval. The uncross tries every candidate level between the best
//! ask and the best bid and executes the greedy allocation of the best one.

use super::matching::Pricing;
use super::timers::Timer;
use super::Engine;
use crate::event::Event;
use crate::keys::{BidKey, BlockKey, LevelKey, PoolKey};
use crate::limits::AUCTION_CANDIDATE_PRICES_MAX;
use crate::types::{AuctionMode, CancelReason, OrderStatus, PriceMicros, TimeInForce, TimeMs};
use std::cmp::Reverse;

/// How a batch candidate price ranks: GPUs, imbalance, distance to the last trade, price.
pub(super) type AuctionScore = (u64, Reverse<u64>, Reverse<u64>, Reverse<LevelKey>);

impl Engine {
    pub(super) fn arm_auction(&mut self, pool_key: PoolKey) {
        let pool = &self.pools[pool_key];
        let AuctionMode::Batch { interval_ms } = pool.config.auction else {
            return;
        };
        if pool.auction_at.is_some() {
            return;
        }
        let interval = interval_ms as i64;
        let at = TimeMs((self.now.0.div_euclid(interval) + 1) * interval);
        self.pools[pool_key].auction_at = Some(at);
        self.schedule(at, Timer::Auction { pool: pool_key });
    }

    /// Uncrosses a batch pool at the single price that executes the most GPUs.
    pub(super) fn uncross(&mut self, pool_key: PoolKey, out: &mut Vec<Event>) {
        let pool = &self.pools[pool_key];
        if pool.halted {
            return;
        }
        if let (Some(best_bid), Some(best_ask)) = (pool.bids.best(), pool.asks.best()) {
            if best_bid >= best_ask {
                let candidates: Vec<LevelKey> = (best_ask.0..=best_bid.0)
                    .map(LevelKey)
                    .filter(|&level| pool.bids.level(level).1 > 0 || pool.asks.level(level).1 > 0)
                    .take(AUCTION_CANDIDATE_PRICES_MAX)
                    .collect();
                let last = pool.last_price;
                // Most GPUs, then the smallest imbalance, then closest to the last trade, then
                // the lowest price.
                let mut best: Option<AuctionScore> = None;
                for level in candidates {
                    let price = self.pools[pool_key].price_of(level);
                    let (volume, _) = self.allocate(pool_key, level, None);
                    if volume == 0 {
                        continue;
                    }
                    let imbalance = self.imbalance(pool_key, level);
                    let distance = last.map_or(0, |l| l.0.abs_diff(price.0));
                    let score = (
                        volume,
                        Reverse(imbalance),
                        Reverse(distance),
                        Reverse(level),
                    );
                    if best.is_none_or(|b| score > b) {
                        best = Some(score);
                    }
                }
                if let Some((_, _, _, Reverse(level))) = best {
                    let price = self.pools[pool_key].price_of(level);
                    let (volume, _) = self.allocate(pool_key, level, Some(out));
                    out.push(Event::AuctionCleared {
                        pool: self.pools[pool_key].name.clone(),
                        price,
                        gpus: volume,
                    });
                }
            }
        }
        // IOC and FOK bids live for one uncross only.
        let leftovers = self.sorted_bid_ids(|bid| {
            bid.pool == pool_key
                && bid.status == OrderStatus::Open
                && matches!(bid.tif, TimeInForce::Ioc | TimeInForce::Fok)
        });
        for order in leftovers {
            let key = self.bid_index[&order];
            let reason = if self.bids[key].tif == TimeInForce::Fok {
                CancelReason::FokNotFillable
            } else {
                CancelReason::IocRemainder
            };
            self.finish_bid(key, OrderStatus::Cancelled, Some(reason), out);
        }
    }

    /// `|demand - supply|` at a level: all bids at or above it against all asks at or below.
    fn imbalance(&self, pool_key: PoolKey, level: LevelKey) -> u64 {
        self.demand_at(pool_key, level)
            .abs_diff(self.supply_at(pool_key, level))
    }

    /// GPUs of all bids at or above a level.
    fn demand_at(&self, pool_key: PoolKey, level: LevelKey) -> u64 {
        let pool = &self.pools[pool_key];
        (pool.bids.levels_through(level))
            .map(|at| pool.bids.level(at).0)
            .sum()
    }

    /// GPUs of all asks at or below a level.
    fn supply_at(&self, pool_key: PoolKey, level: LevelKey) -> u64 {
        let pool = &self.pools[pool_key];
        (pool.asks.levels_through(level))
            .map(|at| pool.asks.level(at).0)
            .sum()
    }

    /// The greedy uniform-price allocation at `level`: bids at or above it in priority order,
    /// each taking eligible asks at or below it in priority order, at least its minimum or
    /// nothing. With `out`, executes it at that price. Returns the GPUs allocated.
    fn allocate(
        &mut self,
        pool_key: PoolKey,
        level: LevelKey,
        out: Option<&mut Vec<Event>>,
    ) -> (u64, u32) {
        let Some(out) = out else {
            let plan = self.plan_allocation(pool_key, level, None, false);
            return (plan.volume, plan.executions);
        };
        let plan = self.plan_allocation(pool_key, level, None, true);
        let price = self.pools[pool_key].price_of(level);
        for (bid_key, block_fills) in &plan.fills {
            let bid_key = bid_key.expect("only a quote adds a bid of its own");
            self.execute(bid_key, block_fills, Pricing::Uniform(price), out);
        }
        (plan.volume, plan.executions)
    }

    /// The allocation at `level` without executing it, optionally with one more bid (a
    /// quote's) after every resting bid in priority order. With `record`, lists each
    /// execution's fills (`None` for the extra bid) in execution order.
    fn plan_allocation(
        &self,
        pool_key: PoolKey,
        level: LevelKey,
        extra: Option<&ExtraBid>,
        record: bool,
    ) -> Allocation {
        let pool = &self.pools[pool_key];
        // Asks eligible by price, in priority order, with their GPUs still available.
        let mut asks: Vec<(BlockKey, u32, TimeMs)> = (pool.asks.levels_through(level))
            .flat_map(|at| pool.asks.entries(at, &self.blocks))
            .map(|(key, block)| (key, block.unsold, block.available_until))
            .collect();
        // Bids in priority order; the extra bid is at the top of the band, behind the bids
        // already resting there.
        let top = pool.level_of(pool.config.price_max);
        let mut bids: Vec<(Option<BidKey>, u32, u32, u32)> = Vec::new();
        let mut extra_left = extra.map(|e| (None, e.gpus, e.needed, e.duration_s));
        for at in pool.bids.levels_through(level) {
            if at != top {
                bids.extend(extra_left.take());
            }
            bids.extend(
                pool.bids.entries(at, &self.bids).map(|(key, bid)| {
                    (Some(key), bid.remaining, bid.gpus_needed(), bid.duration_s)
                }),
            );
        }
        bids.extend(extra_left);
        let mut plan = Allocation::default();
        let mut fills: Vec<(u32, u32)> = Vec::new();
        for (bid_key, remaining, needed, duration_s) in bids {
            let shortest_until = self.now.plus_s(duration_s as u64);
            let mut want = remaining;
            fills.clear();
            for (index, (_, available, until)) in asks.iter().enumerate() {
                if want == 0 {
                    break;
                }
                if *available > 0 && *until >= shortest_until {
                    let take = (*available).min(want);
                    fills.push((index as u32, take));
                    want -= take;
                }
            }
            let got = remaining - want;
            if got == 0 || got < needed {
                continue;
            }
            for &(index, take) in &fills {
                asks[index as usize].1 -= take;
            }
            plan.volume += got as u64;
            plan.executions += 1;
            if record || (bid_key.is_none() && extra.is_some()) {
                let block_fills: Vec<(BlockKey, u32)> = fills
                    .iter()
                    .map(|&(index, take)| (asks[index as usize].0, take))
                    .collect();
                if bid_key.is_none() {
                    plan.extra_fills = block_fills.clone();
                }
                if record {
                    plan.fills.push((bid_key, block_fills));
                }
            }
        }
        plan
    }

    /// What the next uncross of a batch pool would give one more bid (at the top of the price
    /// band, after every resting bid): its uniform price and its fills. `None` when nothing
    /// would trade for it.
    pub(super) fn plan_uncross_with(
        &self,
        pool_key: PoolKey,
        extra: &ExtraBid,
    ) -> Option<(PriceMicros, Vec<(BlockKey, u32)>)> {
        let pool = &self.pools[pool_key];
        let best_ask = pool.asks.best()?;
        let top = pool.level_of(pool.config.price_max);
        let candidates: Vec<LevelKey> = (best_ask.0..=top.0)
            .map(LevelKey)
            .filter(|&level| {
                level == top || pool.bids.level(level).1 > 0 || pool.asks.level(level).1 > 0
            })
            .take(AUCTION_CANDIDATE_PRICES_MAX)
            .collect();
        let last = pool.last_price;
        let mut best: Option<(AuctionScore, Vec<(BlockKey, u32)>)> = None;
        for level in candidates {
            let price = pool.price_of(level);
            let plan = self.plan_allocation(pool_key, level, Some(extra), false);
            if plan.volume == 0 {
                continue;
            }
            let imbalance = (self.demand_at(pool_key, level) + extra.gpus as u64)
                .abs_diff(self.supply_at(pool_key, level));
            let distance = last.map_or(0, |l| l.0.abs_diff(price.0));
            let score = (
                plan.volume,
                Reverse(imbalance),
                Reverse(distance),
                Reverse(level),
            );
            if best.as_ref().is_none_or(|(b, _)| score > *b) {
                best = Some((score, plan.extra_fills));
            }
        }
        let ((_, _, _, Reverse(level)), fills) = best?;
        (!fills.is_empty()).then(|| (pool.price_of(level), fills))
    }

    /// When a batch pool's next uncross runs: the armed one, or the one a new bid would arm.
    pub(super) fn next_uncross_at(&self, pool_key: PoolKey) -> Option<TimeMs> {
        let pool = &self.pools[pool_key];
        let AuctionMode::Batch { interval_ms } = pool.config.auction else {
            return None;
        };
        let interval = interval_ms as i64;
        Some(
            pool.auction_at
                .unwrap_or(TimeMs((self.now.0.div_euclid(interval) + 1) * interval)),
        )
    }
}

/// A bid that is not on the book: the quote's, added to a planned uncross.
pub(super) struct ExtraBid {
    pub gpus: u32,
    pub needed: u32,
    pub duration_s: u32,
}

/// GPUs taken from each block, in walk order.
type BlockFills = Vec<(BlockKey, u32)>;

/// A planned uniform-price allocation.
#[derive(Default)]
struct Allocation {
    volume: u64,
    executions: u32,
    /// With `record`: each execution's bid (`None` for the extra bid) and fills, in order.
    fills: Vec<(Option<BidKey>, BlockFills)>,
    /// The extra bid's fills, if it executes.
    extra_fills: Vec<(BlockKey, u32)>,
}
