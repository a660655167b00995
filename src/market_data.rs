//! Public market data kept in memory: recent trades, one-minute buckets, and what candles and
//! stats are computed from.
//!
//! Fed only by committed batches (and warmed from the store at start and after a recovery),
//! so it never shows a trade that is not durable. Bounded: at most
//! [`TRADES_KEPT_PER_POOL_MAX`] trades and [`MARKET_HISTORY_MS`] of minute buckets per pool.
//! Candles and stats older than that are not available (the trades table still has them).

use crate::journal::CommittedBatch;
use crate::limits::{MARKET_HISTORY_MS, TRADES_KEPT_PER_POOL_MAX};
use crate::store::{MarketHistory, PublicTrade};
use matching_engine::{Event, LeaseStatus, PriceMicros, TimeMs};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

const MINUTE_MS: i64 = 60_000;

/// One pool's activity in one minute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MinuteBucket {
    /// First, highest, lowest, last trade price (all set together, or none).
    pub ohlc: Option<[PriceMicros; 4]>,
    /// Trades.
    pub trades: u64,
    /// GPUs traded.
    pub gpus: u64,
    /// GPU-seconds of the leases opened (their planned length).
    pub gpu_seconds: u64,
    /// Leases that ended.
    pub leases_ended: u64,
    /// Of those, preempted.
    pub leases_preempted: u64,
}

impl MinuteBucket {
    fn add_trade(&mut self, price: PriceMicros, gpus: u32) {
        self.ohlc = Some(match self.ohlc {
            None => [price; 4],
            Some([open, high, low, _]) => [open, high.max(price), low.min(price), price],
        });
        self.trades += 1;
        self.gpus += u64::from(gpus);
    }

    fn merge(&mut self, later: &MinuteBucket) {
        self.ohlc = match (self.ohlc, later.ohlc) {
            (None, x) | (x, None) => x,
            (Some([open, high, low, _]), Some([_, h, l, close])) => {
                Some([open, high.max(h), low.min(l), close])
            }
        };
        self.trades += later.trades;
        self.gpus += later.gpus;
        self.gpu_seconds += later.gpu_seconds;
        self.leases_ended += later.leases_ended;
        self.leases_preempted += later.leases_preempted;
    }
}

/// One OHLC candle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candle {
    /// Start of the interval.
    pub start: TimeMs,
    /// The interval's activity.
    pub bucket: MinuteBucket,
}

/// Price and activity statistics over a window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Trades in the window.
    pub trades: u64,
    /// GPUs traded.
    pub volume_gpus: u64,
    /// GPU-seconds leased.
    pub volume_gpu_seconds: u64,
    /// GPU-weighted median price.
    pub price_p50: Option<PriceMicros>,
    /// GPU-weighted 95th percentile price.
    pub price_p95: Option<PriceMicros>,
    /// Lowest price.
    pub price_min: Option<PriceMicros>,
    /// Highest price.
    pub price_max: Option<PriceMicros>,
    /// GPU-weighted average price (rounded down).
    pub vwap: Option<PriceMicros>,
    /// Standard deviation of one-minute log returns of the close.
    pub volatility: Option<f64>,
    /// Leases that ended.
    pub leases_ended: u64,
    /// Of those, preempted by their supplier.
    pub leases_preempted: u64,
}

#[derive(Default)]
struct PoolHistory {
    trades: VecDeque<PublicTrade>,
    minutes: BTreeMap<i64, MinuteBucket>,
}

impl PoolHistory {
    fn push_trade(&mut self, trade: PublicTrade) {
        if self.trades.len() == TRADES_KEPT_PER_POOL_MAX {
            self.trades.pop_front();
        }
        self.trades.push_back(trade);
    }

    fn prune(&mut self, now: TimeMs) {
        let oldest_minute = (now.0 - MARKET_HISTORY_MS).div_euclid(MINUTE_MS);
        while let Some((&minute, _)) = self.minutes.first_key_value() {
            if minute >= oldest_minute {
                break;
            }
            self.minutes.pop_first();
        }
        while self
            .trades
            .front()
            .is_some_and(|t| t.at.0 < now.0 - MARKET_HISTORY_MS)
        {
            self.trades.pop_front();
        }
    }
}

/// All pools' public market data.
#[derive(Default)]
pub struct MarketData {
    pools: Mutex<HashMap<String, PoolHistory>>,
}

impl MarketData {
    /// Empty market data.
    pub fn new() -> MarketData {
        MarketData::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PoolHistory>> {
        // Derived data: a panic elsewhere mid-update leaves at worst one bucket half-counted.
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces everything with history loaded from the store.
    pub fn warm(&self, history: MarketHistory) {
        let mut pools: HashMap<String, PoolHistory> = HashMap::new();
        for (pool, trade) in history.trades {
            let entry = pools.entry(pool).or_default();
            entry
                .minutes
                .entry(trade.at.0.div_euclid(MINUTE_MS))
                .or_default()
                .add_trade(trade.price, trade.gpus);
            entry.push_trade(trade);
        }
        for minute in history.lease_minutes {
            let bucket = pools
                .entry(minute.pool)
                .or_default()
                .minutes
                .entry(minute.minute)
                .or_default();
            bucket.gpu_seconds += minute.gpu_seconds_started;
            bucket.leases_ended += minute.ended;
            bucket.leases_preempted += minute.preempted;
        }
        *self.lock() = pools;
    }

    /// Adds a committed batch's trades and lease activity.
    pub fn apply(&self, batch: &CommittedBatch) {
        let mut pools = self.lock();
        let mut latest = TimeMs(i64::MIN);
        for record in &batch.records {
            latest = latest.max(record.at);
            for event in &record.events {
                match event {
                    Event::Traded { trade } => {
                        let pool = pools.entry(trade.pool.to_string()).or_default();
                        pool.minutes
                            .entry(trade.at.0.div_euclid(MINUTE_MS))
                            .or_default()
                            .add_trade(trade.price, trade.gpus);
                        pool.push_trade(PublicTrade {
                            id: trade.id.0,
                            price: trade.price,
                            gpus: trade.gpus,
                            maker_side: trade.maker_side,
                            at: trade.at,
                        });
                    }
                    Event::LeaseOpened { lease } => {
                        let seconds = (lease.ends_at.0 - lease.started_at.0).max(0) as u64 / 1000;
                        pools
                            .entry(lease.pool.to_string())
                            .or_default()
                            .minutes
                            .entry(lease.started_at.0.div_euclid(MINUTE_MS))
                            .or_default()
                            .gpu_seconds += u64::from(lease.gpus) * seconds;
                    }
                    Event::LeaseChanged { lease } if lease.status.is_ended() => {
                        let ended_at = lease.ended_at.unwrap_or(record.at);
                        let bucket = pools
                            .entry(lease.pool.to_string())
                            .or_default()
                            .minutes
                            .entry(ended_at.0.div_euclid(MINUTE_MS))
                            .or_default();
                        bucket.leases_ended += 1;
                        if lease.status == LeaseStatus::Preempted {
                            bucket.leases_preempted += 1;
                        }
                    }
                    _ => {}
                }
            }
        }
        if latest.0 != i64::MIN {
            for pool in pools.values_mut() {
                pool.prune(latest);
            }
        }
    }

    /// The most recent trades of a pool, newest first.
    pub fn recent_trades(&self, pool: &str, limit: usize) -> Vec<PublicTrade> {
        self.lock()
            .get(pool)
            .map(|p| p.trades.iter().rev().take(limit).copied().collect())
            .unwrap_or_default()
    }

    /// The last `limit` candles of `interval_ms` that had trades, oldest first.
    pub fn candles(&self, pool: &str, interval_ms: i64, limit: usize) -> Vec<Candle> {
        let pools = self.lock();
        let Some(history) = pools.get(pool) else {
            return Vec::new();
        };
        let mut candles: Vec<Candle> = Vec::new();
        for (&minute, bucket) in &history.minutes {
            let start = TimeMs((minute * MINUTE_MS).div_euclid(interval_ms) * interval_ms);
            match candles.last_mut() {
                Some(last) if last.start == start => last.bucket.merge(bucket),
                _ => candles.push(Candle {
                    start,
                    bucket: *bucket,
                }),
            }
        }
        candles.retain(|c| c.bucket.ohlc.is_some());
        let skip = candles.len().saturating_sub(limit);
        candles.split_off(skip)
    }

    /// Statistics over `[now - window_ms, now]`.
    pub fn stats(&self, pool: &str, now: TimeMs, window_ms: i64) -> Stats {
        let pools = self.lock();
        let Some(history) = pools.get(pool) else {
            return Stats::default();
        };
        let since = now.0 - window_ms;
        let mut stats = Stats::default();
        let mut closes = Vec::new();
        for (_, bucket) in history.minutes.range(since.div_euclid(MINUTE_MS)..) {
            stats.trades += bucket.trades;
            stats.volume_gpus += bucket.gpus;
            stats.volume_gpu_seconds += bucket.gpu_seconds;
            stats.leases_ended += bucket.leases_ended;
            stats.leases_preempted += bucket.leases_preempted;
            if let Some([_, _, _, close]) = bucket.ohlc {
                closes.push(close.0 as f64);
            }
        }
        let mut window: Vec<(PriceMicros, u64)> = history
            .trades
            .iter()
            .filter(|t| t.at.0 >= since && t.at.0 <= now.0)
            .map(|t| (t.price, u64::from(t.gpus)))
            .collect();
        if !window.is_empty() {
            window.sort_unstable();
            let total: u64 = window.iter().map(|(_, g)| g).sum();
            let notional: u128 = window
                .iter()
                .map(|(p, g)| u128::from(p.0) * u128::from(*g))
                .sum();
            let percentile = |q_percent: u64| {
                // The smallest price at which at least q% of the GPUs traded.
                let target = (total * q_percent).div_ceil(100).max(1);
                let mut seen = 0u64;
                for (price, gpus) in &window {
                    seen += gpus;
                    if seen >= target {
                        return Some(*price);
                    }
                }
                window.last().map(|(p, _)| *p)
            };
            stats.price_p50 = percentile(50);
            stats.price_p95 = percentile(95);
            stats.price_min = window.first().map(|(p, _)| *p);
            stats.price_max = window.last().map(|(p, _)| *p);
            if total > 0 {
                stats.vwap = Some(PriceMicros((notional / u128::from(total)) as u64));
            }
        }
        let returns: Vec<f64> = closes
            .windows(2)
            .filter(|w| w[0] > 0.0 && w[1] > 0.0)
            .map(|w| (w[1] / w[0]).ln())
            .collect();
        if returns.len() >= 2 {
            let mean = returns.iter().sum::<f64>() / returns.len() as f64;
            let variance = returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>()
                / (returns.len() - 1) as f64;
            stats.volatility = Some(variance.sqrt());
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use matching_engine::Side;

    fn trade(id: u64, price: u64, gpus: u32, at: i64) -> (String, PublicTrade) {
        (
            "p".to_owned(),
            PublicTrade {
                id,
                price: PriceMicros(price),
                gpus,
                maker_side: Side::Ask,
                at: TimeMs(at),
            },
        )
    }

    #[test]
    fn candles_aggregate_minutes_into_ohlc() {
        let data = MarketData::new();
        let t0 = 1_700_000_000_000 / MINUTE_MS * MINUTE_MS;
        data.warm(MarketHistory {
            trades: vec![
                trade(1, 100, 1, t0),
                trade(2, 300, 2, t0 + 10_000),
                trade(3, 50, 1, t0 + 70_000),
                trade(4, 200, 4, t0 + 400_000),
            ],
            lease_minutes: vec![],
        });
        let five = data.candles("p", 5 * MINUTE_MS, 10);
        assert_eq!(five.len(), 2);
        assert_eq!(
            five[0].bucket.ohlc,
            Some([
                PriceMicros(100),
                PriceMicros(300),
                PriceMicros(50),
                PriceMicros(50)
            ])
        );
        assert_eq!(five[0].bucket.gpus, 4);
        assert_eq!(five[1].bucket.trades, 1);
        assert_eq!(data.candles("p", MINUTE_MS, 1).len(), 1);
    }

    #[test]
    fn stats_weight_percentiles_by_gpus() {
        let data = MarketData::new();
        let t0 = 1_700_000_000_000;
        data.warm(MarketHistory {
            trades: vec![
                trade(1, 100, 9, t0),
                trade(2, 1000, 1, t0 + 1),
                trade(3, 5, 100, t0 - 10 * MINUTE_MS),
            ],
            lease_minutes: vec![],
        });
        let stats = data.stats("p", TimeMs(t0 + 2), 5 * MINUTE_MS);
        assert_eq!(stats.trades, 2);
        assert_eq!(stats.price_p50, Some(PriceMicros(100)));
        assert_eq!(stats.price_p95, Some(PriceMicros(1000)));
        assert_eq!(stats.vwap, Some(PriceMicros(190)));
    }
}
