//! Public market data: pools, book, trades, candles, stats, quote. No token needed.
//!
//! Book, pools and quotes read the committed engine state; trades, candles and stats come from
//! the in-memory market data fed by committed batches. None of them touches the database, so
//! they keep answering while it is down.

use crate::error::ApiError;
use crate::limits::{
    BOOK_DEPTH_DEFAULT, BOOK_DEPTH_MAX, CANDLES_LIMIT_DEFAULT, CANDLES_LIMIT_MAX, STATS_WINDOW_MAX,
    STATS_WINDOW_MIN, TRADES_LIMIT_DEFAULT, TRADES_LIMIT_MAX,
};
use crate::money::Usd;
use crate::state::AppState;
use crate::timestamp::{now_ms, Rfc3339Time};
use crate::validate;
use crate::wire::codes;
use crate::wire::rest::{per_million_tokens, PoolJson};
use actix_web::{web, HttpResponse};
use matching_engine::{Level, PoolConfig, PoolSummary, Rejection};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A pool that does not exist (or a name too long to be one).
pub const UNKNOWN_POOL: &[ApiError] = &[ApiError::Rejected(Rejection::UnknownPool)];

/// A quote's own refusals.
pub const QUOTE_ERRORS: &[ApiError] = &[
    ApiError::Rejected(Rejection::UnknownPool),
    ApiError::Rejected(Rejection::GpusMustNotBeZero),
    ApiError::Rejected(Rejection::MinGpusInvalid),
];

/// Every pool.
#[derive(Serialize, ToSchema)]
struct PoolList {
    pools: Vec<PoolJson>,
}

/// One pool.
#[derive(Serialize, ToSchema)]
struct PoolOnly {
    pool: PoolJson,
}

/// `GET /v1/pools`: every pool's settings and live summary.
#[utoipa::path(
    get,
    path = "/v1/pools",
    operation_id = "list_pools",
    tag = "market",
    responses((status = 200, description = "Every pool, by id", body = PoolList)),
)]
pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut pools = state.sequencer.read(|v| v.engine.pools()).await?;
    pools.sort_by(|a, b| a.config.id.cmp(&b.config.id));
    Ok(HttpResponse::Ok().json(PoolList {
        pools: pools.iter().map(PoolJson::from).collect(),
    }))
}

async fn pool_summary(state: &AppState, pool: &str) -> Result<PoolSummary, ApiError> {
    validate::pool(pool)?;
    let id = pool.to_owned();
    state
        .sequencer
        .read(move |v| v.engine.pool(&id))
        .await?
        .ok_or(Rejection::UnknownPool.into())
}

/// `GET /v1/pools/{pool}`: one pool's settings and live summary.
#[utoipa::path(
    get,
    path = "/v1/pools/{pool}",
    operation_id = "get_pool",
    tag = "market",
    params(("pool" = String, Path, description = "Pool id, `<gpu>.<region>`", example = "h100-sxm.us-east")),
    responses((status = 200, description = "The pool", body = PoolOnly)),
)]
pub async fn one(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let summary = pool_summary(&state, &path).await?;
    Ok(HttpResponse::Ok().json(PoolOnly {
        pool: PoolJson::from(&summary),
    }))
}

/// `?depth=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BookQuery {
    /// Price levels per side, 1..=100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    depth: Option<usize>,
}

/// One aggregated price level.
#[derive(Serialize, ToSchema)]
struct LevelJson {
    price: Usd,
    /// GPUs resting at this price.
    gpus: u64,
    /// Bids or blocks resting at this price.
    orders: u32,
    /// Model pools: the level's price per million tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    price_per_million_tokens: Option<Usd>,
}

impl LevelJson {
    fn of(l: &Level, pool: &PoolConfig) -> Self {
        LevelJson {
            price: l.price.into(),
            gpus: l.gpus,
            orders: l.orders,
            price_per_million_tokens: per_million_tokens(pool, l.price),
        }
    }
}

/// A pool's book.
#[derive(Serialize, ToSchema)]
struct BookJson {
    pool: String,
    /// The journal sequence number the book reflects (the WebSocket feed's `seq`).
    seq: u64,
    /// Best (highest) first.
    bids: Vec<LevelJson>,
    /// Best (lowest) first.
    asks: Vec<LevelJson>,
}

/// `GET /v1/pools/{pool}/book?depth=20`: aggregated levels, best first, and the `seq` they
/// reflect.
#[utoipa::path(
    get,
    path = "/v1/pools/{pool}/book",
    operation_id = "get_book",
    tag = "market",
    params(("pool" = String, Path, description = "Pool id, `<gpu>.<region>`", example = "h100-sxm.us-east"), BookQuery),
    responses((status = 200, description = "Aggregated levels, best first", body = BookJson)),
)]
pub async fn book(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<BookQuery>,
) -> Result<HttpResponse, ApiError> {
    let depth = query.depth.unwrap_or(BOOK_DEPTH_DEFAULT);
    if !(1..=BOOK_DEPTH_MAX).contains(&depth) {
        return Err(ApiError::InvalidQuery(format!(
            "depth must be between 1 and {BOOK_DEPTH_MAX}"
        )));
    }
    let pool = path.into_inner();
    validate::pool(&pool)?;
    let id = pool.clone();
    let (seq, book) = state
        .sequencer
        .read(move |v| {
            let book = v.engine.depth(&id, depth);
            (v.seq, book.zip(v.engine.pool(&id).map(|p| p.config)))
        })
        .await?;
    let (book, config) = book.ok_or(ApiError::Rejected(Rejection::UnknownPool))?;
    Ok(HttpResponse::Ok().json(BookJson {
        pool,
        seq,
        bids: book
            .bids
            .iter()
            .map(|l| LevelJson::of(l, &config))
            .collect(),
        asks: book
            .asks
            .iter()
            .map(|l| LevelJson::of(l, &config))
            .collect(),
    }))
}

/// `?limit=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TradesQuery {
    /// How many, newest first (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// A public trade: no account is named.
#[derive(Serialize, ToSchema)]
struct TradeJson {
    id: String,
    price: Usd,
    gpus: u32,
    /// Which side was resting.
    #[schema(value_type = matching_engine::Side)]
    maker_side: &'static str,
    at: Rfc3339Time,
}

/// Recent trades.
#[derive(Serialize, ToSchema)]
struct TradesJson {
    pool: String,
    /// Newest first.
    trades: Vec<TradeJson>,
}

/// `GET /v1/pools/{pool}/trades?limit=`: recent trades, newest first, naming no one.
#[utoipa::path(
    get,
    path = "/v1/pools/{pool}/trades",
    operation_id = "list_trades",
    tag = "market",
    params(("pool" = String, Path, description = "Pool id, `<gpu>.<region>`", example = "h100-sxm.us-east"), TradesQuery),
    responses((status = 200, description = "Recent trades, newest first", body = TradesJson)),
)]
pub async fn trades(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<TradesQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(TRADES_LIMIT_DEFAULT);
    if !(1..=TRADES_LIMIT_MAX).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!(
            "limit must be between 1 and {TRADES_LIMIT_MAX}"
        )));
    }
    let summary = pool_summary(&state, &path).await?;
    let trades = state.market.recent_trades(&summary.config.id, limit);
    Ok(HttpResponse::Ok().json(TradesJson {
        pool: summary.config.id,
        trades: trades
            .iter()
            .map(|t| TradeJson {
                id: t.id.to_string(),
                price: t.price.into(),
                gpus: t.gpus,
                maker_side: codes::side(t.maker_side),
                at: t.at.into(),
            })
            .collect(),
    }))
}

/// `?interval=1m&limit=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CandlesQuery {
    /// `1m` (default), `5m`, `15m`, `1h`, `4h` or `1d`.
    #[param(value_type = Option<CandleInterval>, inline)]
    interval: Option<String>,
    /// How many intervals, newest last (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// One interval's OHLC and volume.
#[derive(Serialize, ToSchema)]
struct CandleJson {
    start: Rfc3339Time,
    open: Usd,
    high: Usd,
    low: Usd,
    close: Usd,
    trades: u64,
    volume_gpus: u64,
    volume_gpu_hours: f64,
}

/// Candles of the intervals that had trades, oldest first.
#[derive(Serialize, ToSchema)]
struct CandlesJson {
    pool: String,
    interval: String,
    candles: Vec<CandleJson>,
}

/// GPU-hours with three decimals (a volume, not money).
fn gpu_hours(gpu_seconds: u64) -> f64 {
    (gpu_seconds as f64 / 3.6).round() / 1000.0
}

/// `GET /v1/pools/{pool}/candles?interval=1m`: OHLC and volume of intervals that had trades,
/// oldest first.
#[utoipa::path(
    get,
    path = "/v1/pools/{pool}/candles",
    operation_id = "list_candles",
    tag = "market",
    params(("pool" = String, Path, description = "Pool id, `<gpu>.<region>`", example = "h100-sxm.us-east"), CandlesQuery),
    responses((status = 200, description = "OHLC and GPU-hours volume", body = CandlesJson)),
)]
pub async fn candles(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<CandlesQuery>,
) -> Result<HttpResponse, ApiError> {
    let interval = query.interval.clone().unwrap_or_else(|| "1m".to_owned());
    let interval_ms: i64 = match interval.as_str() {
        "1m" => 60_000,
        "5m" => 300_000,
        "15m" => 900_000,
        "1h" => 3_600_000,
        "4h" => 14_400_000,
        "1d" => 86_400_000,
        _ => {
            return Err(ApiError::InvalidQuery(
                "interval must be one of 1m, 5m, 15m, 1h, 4h, 1d".into(),
            ))
        }
    };
    let limit = query.limit.unwrap_or(CANDLES_LIMIT_DEFAULT);
    if !(1..=CANDLES_LIMIT_MAX).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!(
            "limit must be between 1 and {CANDLES_LIMIT_MAX}"
        )));
    }
    let summary = pool_summary(&state, &path).await?;
    let candles = state.market.candles(&summary.config.id, interval_ms, limit);
    Ok(HttpResponse::Ok().json(CandlesJson {
        pool: summary.config.id,
        interval,
        candles: candles
            .iter()
            .filter_map(|c| {
                let [open, high, low, close] = c.bucket.ohlc?;
                Some(CandleJson {
                    start: c.start.into(),
                    open: open.into(),
                    high: high.into(),
                    low: low.into(),
                    close: close.into(),
                    trades: c.bucket.trades,
                    volume_gpus: c.bucket.gpus,
                    volume_gpu_hours: gpu_hours(c.bucket.gpu_seconds),
                })
            })
            .collect(),
    }))
}

/// `?window=24h`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// A duration such as `15m`, `1h`, `24h` (default) or `7d`; any duration from one minute
    /// to seven days is accepted, the listed ones are the usual windows.
    #[param(value_type = Option<StatsWindow>, inline)]
    window: Option<String>,
}

/// The candle intervals (documentation of `interval`).
#[derive(ToSchema)]
#[allow(dead_code)]
enum CandleInterval {
    #[schema(rename = "1m")]
    M1,
    #[schema(rename = "5m")]
    M5,
    #[schema(rename = "15m")]
    M15,
    #[schema(rename = "1h")]
    H1,
    #[schema(rename = "4h")]
    H4,
    #[schema(rename = "1d")]
    D1,
}

/// The usual stats windows (documentation of `window`).
#[derive(ToSchema)]
#[allow(dead_code)]
enum StatsWindow {
    #[schema(rename = "1m")]
    M1,
    #[schema(rename = "15m")]
    M15,
    #[schema(rename = "1h")]
    H1,
    #[schema(rename = "4h")]
    H4,
    #[schema(rename = "24h")]
    H24,
    #[schema(rename = "7d")]
    D7,
}

/// Price, volatility, volume and preemption statistics over a window.
#[derive(Serialize, ToSchema)]
struct StatsJson {
    pool: String,
    window_s: u64,
    trades: u64,
    volume_gpus: u64,
    volume_gpu_hours: f64,
    price_p50: Option<Usd>,
    price_p95: Option<Usd>,
    price_min: Option<Usd>,
    price_max: Option<Usd>,
    vwap: Option<Usd>,
    last_price: Option<Usd>,
    /// Model pools: `vwap` per million tokens (absent without trades in the window).
    #[serde(skip_serializing_if = "Option::is_none")]
    price_per_million_tokens: Option<Usd>,
    volatility: Option<f64>,
    leases_ended: u64,
    leases_preempted: u64,
    preemption_rate: Option<f64>,
    /// Reclaims accepted with a notice shorter than promised, since the pool was created (not
    /// limited to the window).
    emergency_reclaims: u64,
}

/// `GET /v1/pools/{pool}/stats?window=24h`: price percentiles, volatility, volume, preemptions.
#[utoipa::path(
    get,
    path = "/v1/pools/{pool}/stats",
    operation_id = "get_stats",
    tag = "market",
    params(("pool" = String, Path, description = "Pool id, `<gpu>.<region>`", example = "h100-sxm.us-east"), StatsQuery),
    responses((status = 200, description = "Statistics over the window", body = StatsJson)),
)]
pub async fn stats(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<StatsQuery>,
) -> Result<HttpResponse, ApiError> {
    let text = query.window.as_deref().unwrap_or("24h");
    let window = humantime::parse_duration(text)
        .ok()
        .filter(|w| (STATS_WINDOW_MIN..=STATS_WINDOW_MAX).contains(w))
        .ok_or_else(|| {
            ApiError::InvalidQuery(format!(
                "window must be a duration such as 15m, 1h, 24h or 7d, between {} and {} s",
                STATS_WINDOW_MIN.as_secs(),
                STATS_WINDOW_MAX.as_secs()
            ))
        })?;
    let summary = pool_summary(&state, &path).await?;
    let window_ms = window.as_millis() as i64;
    let stats = state.market.stats(&summary.config.id, now_ms(), window_ms);
    let preemption_rate =
        (stats.leases_ended > 0).then(|| stats.leases_preempted as f64 / stats.leases_ended as f64);
    let price_per_million_tokens = stats
        .vwap
        .and_then(|price| per_million_tokens(&summary.config, price));
    Ok(HttpResponse::Ok().json(StatsJson {
        pool: summary.config.id,
        window_s: window.as_secs(),
        trades: stats.trades,
        volume_gpus: stats.volume_gpus,
        volume_gpu_hours: gpu_hours(stats.volume_gpu_seconds),
        price_p50: stats.price_p50.map(Usd::from),
        price_p95: stats.price_p95.map(Usd::from),
        price_min: stats.price_min.map(Usd::from),
        price_max: stats.price_max.map(Usd::from),
        vwap: stats.vwap.map(Usd::from),
        last_price: summary.last_price.map(Usd::from),
        price_per_million_tokens,
        volatility: stats.volatility,
        leases_ended: stats.leases_ended,
        leases_preempted: stats.leases_preempted,
        preemption_rate,
        emergency_reclaims: summary.emergency_reclaims,
    }))
}

/// `?gpus=8&min_gpus=4&duration_s=14400`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct QuoteQuery {
    /// GPUs wanted.
    #[param(minimum = 1, maximum = 1000000)]
    gpus: u32,
    /// The fewest GPUs accepted in one execution, 1..=`gpus` (default `gpus`: all or none).
    min_gpus: Option<u32>,
    /// Lease length wanted, in seconds.
    #[param(minimum = 1)]
    duration_s: u32,
}

/// What a bid at the top of the pool's band would get now, matched as matching would: all it
/// finds or nothing below `min_gpus`. In a batch pool: what the next uncross would give it
/// with the book as it is now, every GPU at that uncross's one price.
#[derive(Serialize, ToSchema)]
struct QuoteJson {
    pool: String,
    gpus: u32,
    min_gpus: u32,
    duration_s: u32,
    /// GPUs it would lease: 0, or between `min_gpus` and `gpus`.
    fillable_gpus: u32,
    average_price: Option<Usd>,
    /// Model pools: `average_price` per million tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    price_per_million_tokens: Option<Usd>,
    worst_price: Option<Usd>,
    total_cost: Usd,
    /// The earliest pending reclaim forecast of a block the fill would use.
    reclaim_expected_at: Option<Rfc3339Time>,
    /// Batch pools: when the uncross it would join runs.
    clears_at: Option<Rfc3339Time>,
    seq: u64,
}

/// `GET /v1/pools/{pool}/quote?gpus=8&duration_s=14400`: what a bid would get now.
#[utoipa::path(
    get,
    path = "/v1/pools/{pool}/quote",
    operation_id = "get_quote",
    tag = "market",
    params(("pool" = String, Path, description = "Pool id, `<gpu>.<region>`", example = "h100-sxm.us-east"), QuoteQuery),
    responses((status = 200, description = "Fillable GPUs, average and worst price, total cost", body = QuoteJson)),
)]
pub async fn quote(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<QuoteQuery>,
) -> Result<HttpResponse, ApiError> {
    if query.gpus == 0 {
        return Err(Rejection::GpusMustNotBeZero.into());
    }
    let min_gpus = query.min_gpus.unwrap_or(query.gpus);
    if min_gpus == 0 || min_gpus > query.gpus {
        return Err(Rejection::MinGpusInvalid.into());
    }
    let pool = path.into_inner();
    validate::pool(&pool)?;
    let (id, gpus, duration_s) = (pool.clone(), query.gpus, query.duration_s);
    let (seq, quote) = state
        .sequencer
        .read(move |v| {
            let quote = v.engine.quote(&id, gpus, min_gpus, duration_s);
            (v.seq, quote.zip(v.engine.pool(&id).map(|p| p.config)))
        })
        .await?;
    let (quote, config) = quote.ok_or(ApiError::Rejected(Rejection::UnknownPool))?;
    Ok(HttpResponse::Ok().json(QuoteJson {
        pool,
        gpus,
        min_gpus,
        duration_s,
        fillable_gpus: quote.fillable_gpus,
        average_price: quote.average_price.map(Usd::from),
        price_per_million_tokens: quote
            .average_price
            .and_then(|price| per_million_tokens(&config, price)),
        worst_price: quote.worst_price.map(Usd::from),
        total_cost: Usd(quote.total_cost_micros),
        reclaim_expected_at: quote.reclaim_expected_at.map(Rfc3339Time),
        clears_at: quote.clears_at.map(Rfc3339Time),
        seq,
    }))
}
