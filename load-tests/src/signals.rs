//! `offpeak-load signals`: a scheduler writing capacity signals to the Redis stream at a steady
//! rate while buyers bid, against a running server on this machine.
//!
//! Every tick of `--signals-per-s` the scheduler either reclaims its oldest block (once that
//! block has been out for `--hold-ms`) or releases a new one, so releases and reclaims
//! alternate and the book stays small. Each release rests at a price of its own, so its ask is
//! recognized on `{prefix}:md:{pool}`. Buyers place IOC bids through REST at half the release
//! rate; each takes the cheapest ask, which opens a lease on one of the blocks, so about half of
//! the reclaims preempt a lease and give notice.
//!
//! Measured, from just before the `XADD` to the arrival of what it caused:
//! - signal-to-book: a release until the book delta with its ask level arrives on pub/sub;
//! - reclaim-to-notice: a reclaim of a leased block until the lease's `notice` event arrives
//!   on `{prefix}:lease-events`.
//!
//! Checked: every signal gets exactly one result on `{prefix}:capacity:results`, every release
//! shows on the book, every lease on a reclaimed block gets its notice (else `lost`); no signal
//! is applied twice (two journal seqs for one entry, a release refused as `block_id_taken` or a
//! reclaim as `reclaim_over_block` after its first application, or two notices for one lease:
//! `doubled`). Only 127.0.0.1 is accepted, and the run is bounded by warm-up + duration +
//! drain.
//!
//! Last line: `offpeak-load signals: signal_to_book_p99_ms=<x.y> reclaim_to_notice_p99_ms=<x.y>
//! lost=<int> doubled=<int>`.

use crate::target::Target;
use anyhow::{bail, Context};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use serde_json::json;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Options of the scenario.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The server, e.g. `http://127.0.0.1:8080`.
    #[arg(long)]
    pub url: String,
    /// The server's HS256 secret (`OFFPEAK_JWT_SECRET`), to mint the buyers' tokens.
    #[arg(long)]
    pub secret: String,
    /// The Redis the server uses (`REDIS_URL`).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// The server's key prefix (`OFFPEAK_REDIS_PREFIX`).
    #[arg(long, default_value = "offpeak")]
    pub redis_prefix: String,
    /// The pool the blocks are released in.
    #[arg(long, default_value = "h100-sxm.us-east")]
    pub pool: String,
    /// Signals per second (releases and reclaims together).
    #[arg(long, default_value_t = 100)]
    pub signals_per_s: u32,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 30)]
    pub duration_s: u64,
    /// Unmeasured seconds of load before the measurement.
    #[arg(long, default_value_t = 3)]
    pub warmup_s: u64,
    /// Longest wait, after the load, for the last results, deltas and notices.
    #[arg(long, default_value_t = 15)]
    pub drain_s: u64,
    /// How long a block stays out before the scheduler reclaims it.
    #[arg(long, default_value_t = 1500)]
    pub hold_ms: u64,
    /// GPUs per block (and per bid).
    #[arg(long, default_value_t = 2)]
    pub gpus: u32,
    /// Buyer accounts the bids are spread over.
    #[arg(long, default_value_t = 4)]
    pub buyers: usize,
    /// `iss` of the minted tokens.
    #[arg(long, default_value = "offpeak")]
    pub issuer: String,
    /// `aud` of the minted tokens.
    #[arg(long, default_value = "offpeak")]
    pub audience: String,
}

/// What the run measured.
#[derive(Debug)]
pub struct Summary {
    /// 99th percentile of XADD release until its ask is on the pub/sub book, milliseconds.
    pub signal_to_book_p99_ms: f64,
    /// 99th percentile of XADD reclaim until the lease's notice event, milliseconds.
    pub reclaim_to_notice_p99_ms: f64,
    /// Signals, asks or notices that never arrived.
    pub lost: u64,
    /// Signals applied more than once.
    pub doubled: u64,
}

/// Block prices: each release rests at a price of its own, cycling through this many ticks
/// from $40.00, far above what other load leaves on the book.
const PRICE_BASE_MICROS: u64 = 40_000_000;
const PRICE_TICK_MICROS: u64 = 10_000;
const PRICE_SLOTS: u64 = 5_000;
/// The buyers' limit: above every block price, so a bid takes the cheapest ask.
const BUY_PRICE: &str = "95.00";
/// How long a stream follower's `XREAD` blocks before it looks at the stop flag.
const FOLLOW_BLOCK_MS: u64 = 500;

fn histogram() -> Histogram<u64> {
    // Up to 10 minutes in microseconds, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

/// A signal sent, waiting for what it causes.
struct Sent {
    at: Instant,
    measured: bool,
}

#[derive(Default)]
struct State {
    /// Release prices (micros) waiting for their ask on the book.
    asks_awaited: HashMap<u64, Sent>,
    releases: u64,
    releases_seen: u64,
    /// Signal ids sent, with their kind.
    sent: HashMap<String, &'static str>,
    /// Results by signal id: `(status, seq, reason)` of each.
    results: HashMap<String, Vec<(String, String, String)>>,
    /// Our blocks' leases, from the bid answers.
    lease_of_block: HashMap<String, String>,
    /// Blocks reclaimed, with when.
    reclaimed: HashMap<String, Sent>,
    /// Notice events per lease id.
    notices: HashMap<String, u64>,
    signal_to_book_us: Option<Histogram<u64>>,
    reclaim_to_notice_us: Option<Histogram<u64>>,
    bids: u64,
    bids_failed: u64,
}

struct Shared {
    state: Mutex<State>,
    measuring: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The host of a URL, without user info and port.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = host_port.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    host_port.split(':').next().unwrap_or(host_port)
}

fn local_only(what: &str, url: &str) -> anyhow::Result<()> {
    match host_of(url) {
        "127.0.0.1" | "localhost" | "::1" => Ok(()),
        other => bail!("{what} must be on this machine (127.0.0.1), not {other:?}"),
    }
}

/// `12.34` as micro-dollars.
fn usd_micros(text: &str) -> Option<u64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 6 {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let mut micros: u64 = 0;
    for (i, b) in fraction.bytes().enumerate() {
        if !b.is_ascii_digit() {
            return None;
        }
        micros += u64::from(b - b'0') * 10u64.pow(5 - i as u32);
    }
    whole.checked_mul(1_000_000)?.checked_add(micros)
}

fn format_usd(micros: u64) -> String {
    format!(
        "{}.{:02}",
        micros / 1_000_000,
        (micros % 1_000_000) / 10_000
    )
}

fn rfc3339_in(seconds: u64) -> String {
    let at = SystemTime::now() + Duration::from_secs(seconds);
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let days = (secs / 86_400) as i64;
    let (h, m, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

fn text(value: &Value) -> String {
    match value {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        _ => String::new(),
    }
}

/// The entries of an `XRANGE`/`XREVRANGE` reply: `[[id, [field, value, ...]], ...]`.
fn range_entries(value: &Value) -> Vec<(String, HashMap<String, String>)> {
    let Value::Array(list) = value else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|entry| {
            let Value::Array(parts) = entry else {
                return None;
            };
            let Some(Value::Array(flat)) = parts.get(1) else {
                return None;
            };
            let fields = flat
                .chunks(2)
                .filter(|pair| pair.len() == 2)
                .map(|pair| (text(&pair[0]), text(&pair[1])))
                .collect();
            Some((text(parts.first()?), fields))
        })
        .collect()
}

/// The entries of an `XREAD` reply for one stream: `[[key, entries]]`, or nil.
fn xread_entries(value: &Value) -> Vec<(String, HashMap<String, String>)> {
    match value {
        Value::Array(streams) => match streams.first() {
            Some(Value::Array(stream)) => stream.get(1).map(range_entries).unwrap_or_default(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

async fn connection(client: &redis::Client) -> anyhow::Result<MultiplexedConnection> {
    // Blocking reads need more than the default half-second response timeout.
    let config = AsyncConnectionConfig::new()
        .set_response_timeout(Some(Duration::from_millis(FOLLOW_BLOCK_MS + 5_000)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .context("connecting to Redis")
}

/// The newest id of a stream, or `0-0`.
async fn last_id(conn: &mut MultiplexedConnection, key: &str) -> anyhow::Result<String> {
    let reply: Value = redis::cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    Ok(range_entries(&reply)
        .first()
        .map_or_else(|| "0-0".to_owned(), |(id, _)| id.clone()))
}

/// Follows a stream from `after`, handing each entry to `on_entry`, until `stop`.
async fn follow(
    mut conn: MultiplexedConnection,
    key: String,
    mut after: String,
    stop: watch::Receiver<bool>,
    mut on_entry: impl FnMut(&HashMap<String, String>),
) -> anyhow::Result<()> {
    while !*stop.borrow() {
        let reply: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(FOLLOW_BLOCK_MS)
            .arg("STREAMS")
            .arg(&key)
            .arg(&after)
            .query_async(&mut conn)
            .await
            .with_context(|| format!("XREAD {key}"))?;
        for (id, fields) in xread_entries(&reply) {
            on_entry(&fields);
            after = id;
        }
    }
    Ok(())
}

/// Runs the scenario and prints its report; the last line is the machine-readable one.
pub async fn run(args: Args) -> anyhow::Result<Summary> {
    local_only("--url", &args.url)?;
    local_only("--redis-url", &args.redis_url)?;
    if args.signals_per_s == 0 || args.gpus == 0 || args.buyers == 0 {
        bail!("--signals-per-s, --gpus and --buyers must be positive");
    }
    let target = Target::new(&args.url, &args.secret, &args.issuer, &args.audience)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let pools: serde_json::Value = http
        .get(format!("{}/v1/pools", target.http_base))
        .send()
        .await
        .context("GET /v1/pools: is the server running?")?
        .json()
        .await?;
    if !pools["pools"]
        .as_array()
        .is_some_and(|list| list.iter().any(|p| p["id"] == args.pool.as_str()))
    {
        bail!("the server has no pool {:?}", args.pool);
    }
    let client = redis::Client::open(args.redis_url.as_str()).context("--redis-url")?;
    let prefix = &args.redis_prefix;
    let (capacity_key, results_key, events_key, market_key) = (
        format!("{prefix}:capacity"),
        format!("{prefix}:capacity:results"),
        format!("{prefix}:lease-events"),
        format!("{prefix}:md:{}", args.pool),
    );
    let run_id = format!(
        "{:x}",
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() % 0xffff_ffff
    );
    let supplier = format!("loadsched-{run_id}");
    println!(
        "signals: {} signals/s on {capacity_key} for {} ({}), {} s warm-up, {} s measured, hold {} ms, {} buyers",
        args.signals_per_s, args.pool, target.http_base, args.warmup_s, args.duration_s, args.hold_ms, args.buyers
    );

    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            signal_to_book_us: Some(histogram()),
            reclaim_to_notice_us: Some(histogram()),
            ..State::default()
        }),
        measuring: AtomicBool::new(false),
    });
    let (stop_tx, stop_rx) = watch::channel(false);

    // Followers first, so nothing that happens after the first signal is missed.
    let mut pubsub = client.get_async_pubsub().await.context("Redis pub/sub")?;
    pubsub.subscribe(&market_key).await?;
    let market = {
        let shared = shared.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut messages = pubsub.on_message();
            loop {
                let message = tokio::select! {
                    m = messages.next() => m,
                    _ = stop.changed() => None,
                };
                let Some(message) = message else { return };
                let arrived = Instant::now();
                let Ok(payload) = message.get_payload::<String>() else {
                    continue;
                };
                let Ok(json) = serde_json::from_str::<serde_json::Value>(&payload) else {
                    continue;
                };
                if json["type"] != "delta" {
                    continue;
                }
                let mut state = shared.lock();
                for change in json["changes"].as_array().into_iter().flatten() {
                    if change["side"] != "ask" {
                        continue;
                    }
                    let Some(price) = change["price"].as_str().and_then(usd_micros) else {
                        continue;
                    };
                    if let Some(sent) = state.asks_awaited.remove(&price) {
                        state.releases_seen += 1;
                        if sent.measured {
                            let us = arrived.duration_since(sent.at).as_micros() as u64;
                            if let Some(h) = state.signal_to_book_us.as_mut() {
                                let _ = h.record(us.max(1));
                            }
                        }
                    }
                }
            }
        })
    };
    let mut results_conn = connection(&client).await?;
    let results_after = last_id(&mut results_conn, &results_key).await?;
    let results = {
        let shared = shared.clone();
        tokio::spawn(follow(
            results_conn,
            results_key.clone(),
            results_after,
            stop_rx.clone(),
            move |fields| {
                let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
                shared
                    .lock()
                    .results
                    .entry(get("signal_id"))
                    .or_default()
                    .push((get("status"), get("seq"), get("reason")));
            },
        ))
    };
    let mut events_conn = connection(&client).await?;
    let events_after = last_id(&mut events_conn, &events_key).await?;
    let events = {
        let shared = shared.clone();
        tokio::spawn(follow(
            events_conn,
            events_key.clone(),
            events_after,
            stop_rx.clone(),
            move |fields| {
                if fields.get("event").map(String::as_str) != Some("notice") {
                    return;
                }
                let arrived = Instant::now();
                let (Some(lease), Some(block)) = (fields.get("lease_id"), fields.get("block_id"))
                else {
                    return;
                };
                let mut state = shared.lock();
                *state.notices.entry(lease.clone()).or_default() += 1;
                let sample = match state.reclaimed.get(block) {
                    Some(sent) if sent.measured && state.notices[lease] == 1 => {
                        Some(arrived.duration_since(sent.at).as_micros() as u64)
                    }
                    _ => None,
                };
                if let (Some(us), Some(h)) = (sample, state.reclaim_to_notice_us.as_mut()) {
                    let _ = h.record(us.max(1));
                }
            },
        ))
    };

    // Buyers: IOC bids at half the release rate, each taking the cheapest ask.
    let tokens: Vec<String> = (0..args.buyers)
        .map(|i| {
            target.token(
                &format!("loadbuyer-{run_id}-{i}"),
                "buyer",
                Duration::from_secs(3600),
            )
        })
        .collect::<anyhow::Result<_>>()?;
    let buyers = {
        let (shared, http, target, args, supplier) = (
            shared.clone(),
            http.clone(),
            target.clone(),
            args.clone(),
            supplier.clone(),
        );
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let every = Duration::from_secs_f64(4.0 / f64::from(args.signals_per_s));
            let mut ticks = tokio::time::interval(every);
            let mut n = 0usize;
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stop.changed() => return,
                }
                n += 1;
                let (http, shared, token, url, pool, gpus, supplier) = (
                    http.clone(),
                    shared.clone(),
                    tokens[n % tokens.len()].clone(),
                    format!("{}/v1/orders", target.http_base),
                    args.pool.clone(),
                    args.gpus,
                    supplier.clone(),
                );
                tokio::spawn(async move {
                    let body = json!({"pool": pool, "gpus": gpus, "price": BUY_PRICE, "duration_s": 3600, "tif": "ioc"});
                    let answer = async {
                        let response = http.post(url).bearer_auth(token).json(&body).send().await?;
                        response.json::<serde_json::Value>().await
                    }
                    .await;
                    let mut state = shared.lock();
                    state.bids += 1;
                    match answer {
                        Ok(answer) => {
                            for lease in answer["leases"].as_array().into_iter().flatten() {
                                let (Some(block), Some(id)) =
                                    (lease["block_id"].as_str(), lease["id"].as_str())
                                else {
                                    continue;
                                };
                                if block.starts_with(&format!("{supplier}-")) {
                                    state.lease_of_block.insert(block.to_owned(), id.to_owned());
                                }
                            }
                        }
                        Err(_) => state.bids_failed += 1,
                    }
                });
            }
        })
    };

    // The scheduler.
    let mut conn = connection(&client).await?;
    let hold = Duration::from_millis(args.hold_ms);
    let mut live: VecDeque<(String, Instant)> = VecDeque::new();
    let mut next_block = 0u64;
    let started = Instant::now();
    let warmup = Duration::from_secs(args.warmup_s);
    let load_for = warmup + Duration::from_secs(args.duration_s);
    let mut ticks =
        tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.signals_per_s)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let gpus = args.gpus.to_string();
    let until = rfc3339_in(2 * 3600);
    loop {
        ticks.tick().await;
        let elapsed = started.elapsed();
        let draining = elapsed >= load_for;
        if draining && live.is_empty() {
            break;
        }
        if !shared.measuring.load(Ordering::Relaxed) && elapsed >= warmup {
            shared.measuring.store(true, Ordering::Relaxed);
        }
        let measured = shared.measuring.load(Ordering::Relaxed) && !draining;
        let reclaim_now = draining || live.front().is_some_and(|(_, at)| at.elapsed() >= hold);
        let mut command = redis::cmd("XADD");
        command.arg(&capacity_key).arg("*");
        let kind = if reclaim_now {
            let Some((block, _)) = live.pop_front() else {
                break;
            };
            command
                .arg("type")
                .arg("reclaim")
                .arg("supplier")
                .arg(&supplier)
                .arg("block_id")
                .arg(&block)
                .arg("gpus")
                .arg(&gpus);
            shared.lock().reclaimed.insert(
                block,
                Sent {
                    at: Instant::now(),
                    measured,
                },
            );
            "reclaim"
        } else {
            let price = PRICE_BASE_MICROS + (next_block % PRICE_SLOTS) * PRICE_TICK_MICROS;
            let block = format!("{supplier}-{next_block}");
            next_block += 1;
            command
                .arg("type")
                .arg("release")
                .arg("supplier")
                .arg(&supplier)
                .arg("block_id")
                .arg(&block)
                .arg("pool")
                .arg(&args.pool)
                .arg("gpus")
                .arg(&gpus)
                .arg("reserve_price")
                .arg(format_usd(price))
                .arg("available_until")
                .arg(&until);
            {
                let mut state = shared.lock();
                state.releases += 1;
                state.asks_awaited.insert(
                    price,
                    Sent {
                        at: Instant::now(),
                        measured,
                    },
                );
            }
            live.push_back((block, Instant::now()));
            "release"
        };
        let id: Value = command.query_async(&mut conn).await.context("XADD")?;
        shared.lock().sent.insert(text(&id), kind);
        if elapsed >= load_for + Duration::from_secs(args.drain_s) {
            break;
        }
    }
    // Stop bidding, then wait for the last results, deltas and notices.
    buyers.abort();
    let drain_until = Instant::now() + Duration::from_secs(args.drain_s);
    loop {
        let done = {
            let state = shared.lock();
            let all_results = state.sent.keys().all(|id| state.results.contains_key(id));
            let notices_due = state
                .reclaimed
                .keys()
                .filter_map(|b| state.lease_of_block.get(b))
                .all(|lease| state.notices.contains_key(lease));
            all_results && state.asks_awaited.is_empty() && notices_due
        };
        if done || Instant::now() >= drain_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), market).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), results).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), events).await;

    let state = shared.lock();
    let missing_results = state
        .sent
        .keys()
        .filter(|id| !state.results.contains_key(*id))
        .count() as u64;
    let missing_asks = state.asks_awaited.len() as u64;
    let leases_reclaimed: Vec<&String> = state
        .reclaimed
        .keys()
        .filter_map(|b| state.lease_of_block.get(b))
        .collect();
    let missing_notices = leases_reclaimed
        .iter()
        .filter(|lease| !state.notices.contains_key(**lease))
        .count() as u64;
    let mut statuses: HashMap<String, u64> = HashMap::new();
    let mut doubled = 0u64;
    for (id, results) in &state.results {
        if !state.sent.contains_key(id) {
            continue;
        }
        let seqs: HashSet<&String> = results.iter().map(|(_, seq, _)| seq).collect();
        if seqs.len() > 1 {
            doubled += 1;
        }
        for (status, _, reason) in results {
            let key = if reason.is_empty() {
                status.clone()
            } else {
                format!("{status}:{reason}")
            };
            *statuses.entry(key).or_default() += 1;
            if reason == "block_id_taken" || reason == "reclaim_over_block" {
                doubled += 1;
            }
        }
    }
    doubled += state.notices.values().filter(|n| **n > 1).count() as u64;
    let lost = missing_results + missing_asks + missing_notices;
    let p99 = |h: &Option<Histogram<u64>>| {
        h.as_ref()
            .filter(|h| !h.is_empty())
            .map_or(0.0, |h| h.value_at_quantile(0.99) as f64 / 1000.0)
    };
    let p50 = |h: &Option<Histogram<u64>>| {
        h.as_ref()
            .filter(|h| !h.is_empty())
            .map_or(0.0, |h| h.value_at_quantile(0.50) as f64 / 1000.0)
    };
    let count = |h: &Option<Histogram<u64>>| h.as_ref().map_or(0, |h| h.len());
    let mut statuses: Vec<(String, u64)> = statuses.into_iter().collect();
    statuses.sort();
    println!(
        "signals: sent {} ({} releases, {} reclaims of which {} preempted a lease); {} bids ({} failed)",
        state.sent.len(),
        state.releases,
        state.reclaimed.len(),
        leases_reclaimed.len(),
        state.bids,
        state.bids_failed
    );
    println!("signals: results {statuses:?}");
    println!(
        "signals: signal-to-book p50 {:.1} ms p99 {:.1} ms over {} releases; reclaim-to-notice p50 {:.1} ms p99 {:.1} ms over {} notices",
        p50(&state.signal_to_book_us),
        p99(&state.signal_to_book_us),
        count(&state.signal_to_book_us),
        p50(&state.reclaim_to_notice_us),
        p99(&state.reclaim_to_notice_us),
        count(&state.reclaim_to_notice_us),
    );
    println!(
        "signals: lost {lost} ({missing_results} without a result, {missing_asks} asks never on the book, {missing_notices} notices never sent); doubled {doubled}"
    );
    let summary = Summary {
        signal_to_book_p99_ms: p99(&state.signal_to_book_us),
        reclaim_to_notice_p99_ms: p99(&state.reclaim_to_notice_us),
        lost,
        doubled,
    };
    println!(
        "offpeak-load signals: signal_to_book_p99_ms={:.1} reclaim_to_notice_p99_ms={:.1} lost={} doubled={}",
        summary.signal_to_book_p99_ms, summary.reclaim_to_notice_p99_ms, summary.lost, summary.doubled
    );
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_machine_is_accepted() {
        for ok in [
            "http://127.0.0.1:8080",
            "redis://127.0.0.1:6379/0",
            "redis://:pw@localhost:6379",
            "http://[::1]:8080/",
        ] {
            assert!(local_only("x", ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1:8080",
            "redis://example.com:6379",
            "http://127.0.0.2",
        ] {
            assert!(local_only("x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prices_and_times_round_trip_as_the_server_writes_them() {
        assert_eq!(usd_micros("40.01"), Some(40_010_000));
        assert_eq!(usd_micros("1.5"), Some(1_500_000));
        assert_eq!(format_usd(40_010_000), "40.01");
        assert_eq!(usd_micros(&format_usd(89_990_000)), Some(89_990_000));
        let at = rfc3339_in(0);
        assert_eq!(at.len(), 20);
        assert!(crate::target::rfc3339_ms(&at).is_some(), "{at}");
    }

    #[test]
    fn reads_xread_and_xrevrange_replies() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry = Value::Array(vec![
            bulk("1-0"),
            Value::Array(vec![bulk("event"), bulk("notice")]),
        ]);
        let xread = Value::Array(vec![Value::Array(vec![
            bulk("p:lease-events"),
            Value::Array(vec![entry.clone()]),
        ])]);
        let xrevrange = Value::Array(vec![entry]);
        for entries in [xread_entries(&xread), range_entries(&xrevrange)] {
            assert_eq!(entries.len(), 1);
            assert_eq!(entries[0].0, "1-0");
            assert_eq!(entries[0].1["event"], "notice");
        }
        assert!(xread_entries(&Value::Nil).is_empty());
    }
}
