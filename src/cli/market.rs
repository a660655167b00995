//! Public market data, no token needed: `pools` (every pool with what it sells, its best
//! prices, a model pool's price per million tokens, and its capacity), `book` (one pool's aggregated ladder, asks above bids so the spread sits in the
//! middle), `quote` (what a bid would get now, placing nothing), `trades` (recent, naming no
//! one), `candles` (OHLC and GPU-hours volume) and `stats` (percentiles, volatility, volume and
//! preemption rate over a window).

use super::flags::{duration_text, lease_seconds};
use super::table::{self, Table};
use super::{Answer, CliError, Client};
use clap::Args;
use serde_json::Value;

/// `offpeak book`.
#[derive(Args, Debug)]
pub struct BookArgs {
    /// The pool, e.g. h100-sxm.us-east.
    pub pool: String,
    /// Price levels per side.
    #[arg(long, default_value_t = 10)]
    pub depth: u32,
}

/// `GET /v1/pools`.
pub async fn pools(client: &Client) -> Result<Answer, CliError> {
    Ok((client.get_public(&["v1", "pools"], &[]).await?, show_pools))
}

/// `GET /v1/pools/{pool}/book?depth=`.
pub async fn book(client: &Client, args: BookArgs) -> Result<Answer, CliError> {
    let answer = client
        .get_public(
            &["v1", "pools", &args.pool, "book"],
            &[("depth", args.depth.to_string())],
        )
        .await?;
    Ok((answer, show_book))
}

/// `offpeak quote`.
#[derive(Args, Debug)]
pub struct QuoteArgs {
    /// The pool, e.g. h100-sxm.us-east.
    pub pool: String,
    /// GPUs wanted.
    #[arg(long)]
    pub gpus: u32,
    /// Lease length needed, in hours (e.g. 4 or 0.5).
    #[arg(
        long,
        required_unless_present = "duration_s",
        conflicts_with = "duration_s"
    )]
    pub hours: Option<f64>,
    /// Lease length needed, in seconds.
    #[arg(long)]
    pub duration_s: Option<u32>,
}

/// `offpeak trades`.
#[derive(Args, Debug)]
pub struct TradesArgs {
    /// The pool, e.g. h100-sxm.us-east.
    pub pool: String,
    /// At most this many, newest first.
    #[arg(long)]
    pub limit: Option<u32>,
}

/// `offpeak candles`.
#[derive(Args, Debug)]
pub struct CandlesArgs {
    /// The pool, e.g. h100-sxm.us-east.
    pub pool: String,
    /// Candle length (default 1m).
    #[arg(long, value_parser = ["1m", "5m", "15m", "1h", "4h", "1d"])]
    pub interval: Option<String>,
    /// At most this many intervals, newest last.
    #[arg(long)]
    pub limit: Option<u32>,
}

/// `offpeak stats`.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// The pool, e.g. h100-sxm.us-east.
    pub pool: String,
    /// The window, back from now: 15m, 1h, 24h (default), 7d.
    #[arg(long, value_name = "DURATION", value_parser = duration_text)]
    pub window: Option<String>,
}

/// `GET /v1/pools/{pool}/quote?gpus=&duration_s=`: what a bid would get now; places nothing.
pub async fn quote(client: &Client, args: QuoteArgs) -> Result<Answer, CliError> {
    let duration_s = lease_seconds(args.hours, args.duration_s)?;
    let query = [
        ("gpus", args.gpus.to_string()),
        ("duration_s", duration_s.to_string()),
    ];
    let answer = client
        .get_public(&["v1", "pools", &args.pool, "quote"], &query)
        .await?;
    Ok((answer, show_quote))
}

/// `GET /v1/pools/{pool}/trades?limit=`.
pub async fn trades(client: &Client, args: TradesArgs) -> Result<Answer, CliError> {
    let query: Vec<_> = args
        .limit
        .map(|n| ("limit", n.to_string()))
        .into_iter()
        .collect();
    let answer = client
        .get_public(&["v1", "pools", &args.pool, "trades"], &query)
        .await?;
    Ok((answer, show_trades))
}

/// `GET /v1/pools/{pool}/candles?interval=&limit=`.
pub async fn candles(client: &Client, args: CandlesArgs) -> Result<Answer, CliError> {
    let mut query = Vec::new();
    if let Some(interval) = args.interval {
        query.push(("interval", interval));
    }
    if let Some(limit) = args.limit {
        query.push(("limit", limit.to_string()));
    }
    let answer = client
        .get_public(&["v1", "pools", &args.pool, "candles"], &query)
        .await?;
    Ok((answer, show_candles))
}

/// `GET /v1/pools/{pool}/stats?window=`.
pub async fn stats(client: &Client, args: StatsArgs) -> Result<Answer, CliError> {
    let query: Vec<_> = args.window.map(|w| ("window", w)).into_iter().collect();
    let answer = client
        .get_public(&["v1", "pools", &args.pool, "stats"], &query)
        .await?;
    Ok((answer, show_stats))
}

/// A quote; a model pool's also shows its average price per million tokens.
fn show_quote(answer: &Value) {
    let mut headers = vec![
        "POOL",
        "GPUS",
        "DURATION",
        "FILLABLE",
        "AVG_PRICE",
        "WORST_PRICE",
        "TOTAL_COST",
    ];
    let mut row = vec![
        table::text(&answer["pool"]),
        table::text(&answer["gpus"]),
        table::duration(&answer["duration_s"]),
        table::text(&answer["fillable_gpus"]),
        table::text(&answer["average_price"]),
        table::text(&answer["worst_price"]),
        table::text(&answer["total_cost"]),
    ];
    if let Some(per_million) = answer["price_per_million_tokens"].as_str() {
        headers.push("PER 1M TOK");
        row.push(per_million.to_owned());
    }
    let mut t = Table::new(&headers);
    t.row(row);
    t.print();
}

fn show_trades(answer: &Value) {
    let mut t = Table::new(&["ID", "PRICE", "GPUS", "MAKER", "AT"]);
    for trade in answer["trades"].as_array().into_iter().flatten() {
        t.row(vec![
            table::text(&trade["id"]),
            table::text(&trade["price"]),
            table::text(&trade["gpus"]),
            table::text(&trade["maker_side"]),
            table::time(&trade["at"]),
        ]);
    }
    t.print();
    if t.is_empty() {
        println!("(no trades yet)");
    }
}

fn show_candles(answer: &Value) {
    let mut t = Table::new(&[
        "START",
        "OPEN",
        "HIGH",
        "LOW",
        "CLOSE",
        "TRADES",
        "GPUS",
        "GPU_HOURS",
    ]);
    for c in answer["candles"].as_array().into_iter().flatten() {
        t.row(vec![
            table::time(&c["start"]),
            table::text(&c["open"]),
            table::text(&c["high"]),
            table::text(&c["low"]),
            table::text(&c["close"]),
            table::text(&c["trades"]),
            table::text(&c["volume_gpus"]),
            table::text(&c["volume_gpu_hours"]),
        ]);
    }
    t.print();
    if t.is_empty() {
        println!("(no trades yet)");
    }
}

/// Statistics read down a column: fifteen values side by side would not fit a terminal.
fn show_stats(answer: &Value) {
    let mut t = Table::new(&["STAT", "VALUE"]);
    t.row(vec!["pool".into(), table::text(&answer["pool"])]);
    t.row(vec!["window".into(), table::duration(&answer["window_s"])]);
    for field in [
        "trades",
        "volume_gpus",
        "volume_gpu_hours",
        "price_p50",
        "price_p95",
        "price_min",
        "price_max",
        "vwap",
        "last_price",
        "volatility",
        "leases_ended",
        "leases_preempted",
        "preemption_rate",
    ] {
        t.row(vec![field.into(), table::text(&answer[field])]);
    }
    t.print();
}

/// What a pool sells: `bare_metal`, or `model/<model>` for a model deployment's GPUs.
fn offering(pool: &Value) -> String {
    match (pool["offering"].as_str(), pool["model"].as_str()) {
        (Some("model"), Some(model)) => format!("model/{model}"),
        (Some(offering), _) => offering.to_owned(),
        (None, _) => "-".to_owned(),
    }
}

/// A model pool's price per million tokens (`-` without one); empty for bare metal, where it
/// does not apply.
fn per_million_tokens(pool: &Value, value: &Value) -> String {
    if pool["offering"] == "model" {
        table::text(value)
    } else {
        String::new()
    }
}

fn show_pools(answer: &Value) {
    let mut t = Table::new(&[
        "POOL",
        "OFFERING",
        "BID",
        "ASK",
        "PER 1M TOK",
        "LAST",
        "IDLE",
        "LEASED",
        "RECLAIMING",
        "NOTICE",
    ]);
    for p in answer["pools"].as_array().into_iter().flatten() {
        t.row(vec![
            table::text(&p["id"]),
            offering(p),
            table::text(&p["best_bid"]),
            table::text(&p["best_ask"]),
            per_million_tokens(p, &p["price_per_million_tokens"]),
            table::text(&p["last_price"]),
            table::text(&p["idle_gpus"]),
            table::text(&p["leased_gpus"]),
            table::text(&p["reclaiming_gpus"]),
            table::duration(&p["notice_s"]),
        ]);
    }
    t.print();
}

fn show_book(answer: &Value) {
    println!("{}  (seq {})", table::text(&answer["pool"]), answer["seq"]);
    let mut t = Table::new(&["SIDE", "PRICE", "GPUS", "ORDERS"]);
    // Asks from the highest down to the best, then bids from the best down: the spread sits
    // in the middle, as on an exchange ladder.
    let asks: Vec<&Value> = answer["asks"].as_array().into_iter().flatten().collect();
    for level in asks.iter().rev() {
        t.row(vec![
            "ask".into(),
            table::text(&level["price"]),
            table::text(&level["gpus"]),
            table::text(&level["orders"]),
        ]);
    }
    for level in answer["bids"].as_array().into_iter().flatten() {
        t.row(vec![
            "bid".into(),
            table::text(&level["price"]),
            table::text(&level["gpus"]),
            table::text(&level["orders"]),
        ]);
    }
    t.print();
    if t.is_empty() {
        println!("(the book is empty)");
    }
}
