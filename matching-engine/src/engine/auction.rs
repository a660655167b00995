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
use crate::types::{AuctionMode, CancelReason, OrderStatus, TimeInForce, TimeMs};
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
        let pool = &self.pools[pool_key];
        let demand: u64 = (pool.bids.levels_through(level))
            .map(|at| pool.bids.level(at).0)
            .sum();
        let supply: u64 = (pool.asks.levels_through(level))
            .map(|at| pool.asks.level(at).0)
            .sum();
        demand.abs_diff(supply)
    }

    /// The greedy uniform-price allocation at `level`: bids at or above it in priority order,
    /// each taking eligible asks at or below it in priority order, at least its minimum or
    /// nothing. With `out`, executes it at that price. Returns the GPUs allocated.
    fn allocate(
        &mut self,
        pool_key: PoolKey,
        level: LevelKey,
        mut out: Option<&mut Vec<Event>>,
    ) -> (u64, u32) {
        let pool = &self.pools[pool_key];
        let price = pool.price_of(level);
        // Asks eligible by price, in priority order, with their GPUs still available.
        let mut asks: Vec<(BlockKey, u32, TimeMs)> = (pool.asks.levels_through(level))
            .flat_map(|at| pool.asks.entries(at, &self.blocks))
            .map(|(key, block)| (key, block.unsold, block.available_until))
            .collect();
        let bids: Vec<BidKey> = (pool.bids.levels_through(level))
            .flat_map(|at| pool.bids.entries(at, &self.bids))
            .map(|(key, _)| key)
            .collect();
        let mut volume = 0u64;
        let mut executions = 0u32;
        let mut fills: Vec<(u32, u32)> = Vec::new();
        for bid_key in bids {
            let bid = &self.bids[bid_key];
            let shortest_until = self.now.plus_s(bid.duration_s as u64);
            let needed = bid.gpus_needed();
            let mut want = bid.remaining;
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
            let got = bid.remaining - want;
            if got == 0 || got < needed {
                continue;
            }
            for &(index, take) in &fills {
                asks[index as usize].1 -= take;
            }
            volume += got as u64;
            executions += 1;
            if let Some(out) = out.as_deref_mut() {
                let block_fills: Vec<(BlockKey, u32)> = fills
                    .iter()
                    .map(|&(index, take)| (asks[index as usize].0, take))
                    .collect();
                self.execute(bid_key, &block_fills, Pricing::Uniform(price), out);
            }
        }
        (volume, executions)
    }
}
