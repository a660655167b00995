//! `offpeak-load ws-fanout`: many WebSocket viewers of one pool's book while the book changes
//! at a fixed rate, against a running server.
//!
//! The viewers connect and subscribe to `book:{pool}` first. Then buyers place and cancel bids
//! at random prices below any supply (each request is one book change) at `--changes-per-s`,
//! through the REST API like real clients. After a warm-up, every delta a viewer receives is a
//! lag sample: the time it arrived minus its `first_at` (when the oldest change in it was
//! made), so the feed's merging of changes counts against it. Viewers follow the seq rules
//! (a gap is counted and healed by subscribing again); a viewer whose connection the server
//! closes is counted as dropped. The server's CPU is read from `/proc` for the measured window.
//!
//! Last line: `offpeak-load ws-fanout: clients=<int> lag_p99_ms=<x.y> dropped=<int>
//! server_cpu_pct=<int>` (percent of one core).

use crate::target::{self, Target};
use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

/// Options of the scenario.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The server, e.g. `http://127.0.0.1:8080`.
    #[arg(long)]
    pub url: String,
    /// The server's HS256 secret (`OFFPEAK_JWT_SECRET`), to mint the buyers' tokens.
    #[arg(long)]
    pub secret: String,
    /// The pool whose book the viewers watch and the buyers change.
    #[arg(long, default_value = "h100-sxm.us-east")]
    pub pool: String,
    /// WebSocket viewers.
    #[arg(long, default_value_t = 2000)]
    pub clients: usize,
    /// Book changes per second (each a bid placed or cancelled).
    #[arg(long, default_value_t = 1000)]
    pub changes_per_s: u32,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 30)]
    pub duration_s: u64,
    /// Unmeasured seconds of load before the measurement.
    #[arg(long, default_value_t = 5)]
    pub warmup_s: u64,
    /// Buyer accounts the changes are spread over (each stays under the per-account rate limit).
    #[arg(long, default_value_t = 16)]
    pub buyers: usize,
    /// The server's process id; found from the URL's port when not given.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// `iss` of the minted tokens.
    #[arg(long, default_value = "offpeak")]
    pub issuer: String,
    /// `aud` of the minted tokens.
    #[arg(long, default_value = "offpeak")]
    pub audience: String,
    /// Seed of the random prices.
    #[arg(long, default_value_t = 20_260_105)]
    pub seed: u64,
}

/// Bids each buyer keeps open before it starts cancelling its oldest.
const OPEN_BIDS_PER_BUYER: usize = 25;
/// Requests in flight at once from the change driver.
const DRIVER_IN_FLIGHT_MAX: usize = 256;
/// Viewers connecting at once.
const CONNECTING_MAX: usize = 100;
/// How long all viewers may take to connect and get their first snapshot.
const CONNECT_WAIT: Duration = Duration::from_secs(120);

/// What the run measured.
#[derive(Debug)]
pub struct Summary {
    /// Viewers subscribed when the measurement started.
    pub clients: usize,
    /// 99th percentile of the delta lag, milliseconds.
    pub lag_p99_ms: f64,
    /// Viewers whose connection the server closed during the run.
    pub dropped: u64,
    /// Server CPU during the measured window, percent of one core.
    pub server_cpu_pct: u64,
}

struct Shared {
    measuring: AtomicBool,
    subscribed: AtomicUsize,
    dropped: AtomicU64,
    deltas: AtomicU64,
    snapshots: AtomicU64,
    gaps: AtomicU64,
    /// Lag samples in microseconds, sharded so that viewers seldom wait for each other (and
    /// 2,000 viewers do not each carry a histogram).
    lags_us: Vec<Mutex<Histogram<u64>>>,
}

/// Lag histogram shards.
const LAG_SHARDS: usize = 32;

fn histogram() -> Histogram<u64> {
    // Up to 10 minutes in microseconds, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

/// The fields of a server message a viewer looks at. They all come before `changes`, `bids`
/// and `asks`, so a viewer parses only the message's head (see [`head`]).
#[derive(Deserialize)]
struct Msg<'a> {
    #[serde(borrow, rename = "type")]
    kind: &'a str,
    seq: Option<u64>,
    prev_seq: Option<u64>,
    #[serde(borrow)]
    first_at: Option<&'a str>,
}

/// Runs the scenario and prints its report; the last line is the machine-readable one.
pub async fn run(args: Args) -> anyhow::Result<Summary> {
    let target = Target::new(&args.url, &args.secret, &args.issuer, &args.audience)?;
    let server_pid = match args.server_pid {
        Some(pid) => pid,
        None => target::listening_pid(target.port()?)?,
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(DRIVER_IN_FLIGHT_MAX)
        .timeout(Duration::from_secs(30))
        .build()?;
    let pools: serde_json::Value = http
        .get(format!("{}/v1/pools", target.http_base))
        .send()
        .await
        .context("GET /v1/pools: is the server running?")?
        .json()
        .await?;
    let known = pools["pools"]
        .as_array()
        .is_some_and(|list| list.iter().any(|p| p["id"] == args.pool.as_str()));
    if !known {
        bail!("the server has no pool {:?}", args.pool);
    }
    println!(
        "ws-fanout: {} viewers of book:{} on {} (pid {server_pid}), {} changes/s, {} s warm-up, {} s measured",
        args.clients, args.pool, target.http_base, args.changes_per_s, args.warmup_s, args.duration_s
    );

    let shared = Arc::new(Shared {
        measuring: AtomicBool::new(false),
        subscribed: AtomicUsize::new(0),
        dropped: AtomicU64::new(0),
        deltas: AtomicU64::new(0),
        snapshots: AtomicU64::new(0),
        gaps: AtomicU64::new(0),
        lags_us: (0..LAG_SHARDS).map(|_| Mutex::new(histogram())).collect(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);

    // 1. Viewers.
    let connecting = Arc::new(Semaphore::new(CONNECTING_MAX));
    let mut viewers = Vec::with_capacity(args.clients);
    let started = Instant::now();
    for index in 0..args.clients {
        let (url, channel) = (
            format!("{}/v1/ws", target.ws_base),
            format!("book:{}", args.pool),
        );
        let (shared, stop, connecting) = (shared.clone(), stop_rx.clone(), connecting.clone());
        viewers.push(tokio::spawn(async move {
            viewer(index, url, channel, shared, stop, connecting).await
        }));
    }
    while shared.subscribed.load(Ordering::Relaxed) < args.clients {
        if started.elapsed() > CONNECT_WAIT {
            bail!(
                "only {} of {} viewers subscribed within {CONNECT_WAIT:?}",
                shared.subscribed.load(Ordering::Relaxed),
                args.clients
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "ws-fanout: {} viewers subscribed in {:.1} s",
        args.clients,
        started.elapsed().as_secs_f64()
    );

    // 2. Changes: warm-up, then the measured window.
    let driver_stats = Arc::new(DriverStats::default());
    let driver = tokio::spawn(drive(
        target.clone(),
        http.clone(),
        args.clone(),
        driver_stats.clone(),
        stop_rx.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(args.warmup_s)).await;
    for shard in &shared.lags_us {
        shard.lock().expect("lags").reset();
    }
    let deltas_before = shared.deltas.load(Ordering::Relaxed);
    let changes_before = driver_stats.changes.load(Ordering::Relaxed);
    let cpu_before = target::cpu_time(server_pid)?;
    let measured_from = Instant::now();
    let clients = shared.subscribed.load(Ordering::Relaxed);
    shared.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(args.duration_s)).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let elapsed = measured_from.elapsed();
    let cpu_used = target::cpu_time(server_pid)?.saturating_sub(cpu_before);
    let changes = driver_stats.changes.load(Ordering::Relaxed) - changes_before;
    let deltas = shared.deltas.load(Ordering::Relaxed) - deltas_before;

    // 3. Stop and collect.
    let _ = stop_tx.send(true);
    driver.await??;
    for viewer in viewers {
        viewer.await?;
    }
    let mut lags = histogram();
    for shard in &shared.lags_us {
        lags.add(&*shard.lock().expect("lags"))?;
    }
    let ms = |q: f64| lags.value_at_quantile(q) as f64 / 1000.0;
    let server_cpu_pct = (cpu_used.as_secs_f64() / elapsed.as_secs_f64() * 100.0).round() as u64;
    let dropped = shared.dropped.load(Ordering::Relaxed);
    println!(
        "ws-fanout: changes {:.0}/s achieved ({} failed requests), {} deltas received ({:.1}/s per viewer)",
        changes as f64 / elapsed.as_secs_f64(),
        driver_stats.failed.load(Ordering::Relaxed),
        deltas,
        deltas as f64 / elapsed.as_secs_f64() / clients.max(1) as f64,
    );
    println!(
        "ws-fanout: lag ms p50={:.1} p90={:.1} p99={:.1} p99.9={:.1} max={:.1} ({} samples); gaps healed={} snapshots={}",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        lags.max() as f64 / 1000.0,
        lags.len(),
        shared.gaps.load(Ordering::Relaxed),
        shared.snapshots.load(Ordering::Relaxed),
    );
    if lags.is_empty() {
        bail!("no delta arrived during the measurement: is the book changing?");
    }
    let summary = Summary {
        clients,
        lag_p99_ms: ms(0.99),
        dropped,
        server_cpu_pct,
    };
    println!(
        "offpeak-load ws-fanout: clients={} lag_p99_ms={:.1} dropped={} server_cpu_pct={}",
        summary.clients, summary.lag_p99_ms, summary.dropped, summary.server_cpu_pct
    );
    Ok(summary)
}

/// One viewer: subscribes, follows the seq rules, records lags; ends on stop or when dropped.
async fn viewer(
    index: usize,
    url: String,
    channel: String,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    connecting: Arc<Semaphore>,
) {
    // Held until the first snapshot, so that at most CONNECTING_MAX viewers connect at once.
    let mut permit = Some(connecting.acquire_owned().await.expect("semaphore"));
    let mut socket = None;
    for attempt in 0..5u64 {
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((stream, _)) => {
                socket = Some(stream);
                break;
            }
            Err(e) if attempt == 4 => {
                eprintln!("ws-fanout: a viewer could not connect: {e}");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await,
        }
    }
    let Some(mut socket) = socket else {
        return;
    };
    let subscribe = format!(r#"{{"op":"subscribe","channels":["{channel}"]}}"#);
    if socket.send(Message::text(subscribe.clone())).await.is_err() {
        return;
    }
    let lags = &shared.lags_us[index % LAG_SHARDS];
    let mut seq: Option<u64> = None;
    let mut subscribed = false;
    loop {
        let message = tokio::select! {
            message = socket.next() => message,
            _ = stop.changed() => break,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                if !*stop.borrow() {
                    shared.dropped.fetch_add(1, Ordering::Relaxed);
                }
                break;
            }
            Some(Ok(_)) => continue,
        };
        let head = head(&text);
        let Ok(msg) = serde_json::from_str::<Msg<'_>>(&head) else {
            continue;
        };
        match msg.kind {
            "snapshot" => {
                seq = msg.seq;
                shared.snapshots.fetch_add(1, Ordering::Relaxed);
                if !subscribed {
                    subscribed = true;
                    shared.subscribed.fetch_add(1, Ordering::Relaxed);
                    drop(permit.take());
                }
            }
            "delta" => {
                let (Some(mine), Some(prev), Some(next)) = (seq, msg.prev_seq, msg.seq) else {
                    continue;
                };
                if next <= mine {
                    continue;
                }
                if prev > mine {
                    shared.gaps.fetch_add(1, Ordering::Relaxed);
                    seq = None;
                    if socket.send(Message::text(subscribe.clone())).await.is_err() {
                        break;
                    }
                    continue;
                }
                seq = Some(next);
                shared.deltas.fetch_add(1, Ordering::Relaxed);
                if shared.measuring.load(Ordering::Relaxed) {
                    if let Some(first_at) = msg.first_at.and_then(target::rfc3339_ms) {
                        let lag_us = ((target::now_ms_f64() - first_at) * 1000.0).max(1.0);
                        let _ = lags.lock().expect("lags").record(lag_us as u64);
                    }
                }
            }
            _ => {}
        }
    }
    let _ = socket.close(None).await;
}

/// The message up to its first list (`changes`, `bids`, `asks`, `trades`), closed into an
/// object: the generator then parses a few dozen bytes per delta instead of every change, so
/// its own CPU does not inflate the lag it measures.
fn head(text: &str) -> std::borrow::Cow<'_, str> {
    match text
        .find(",\"changes\":")
        .or_else(|| text.find(",\"bids\":"))
    {
        Some(at) => format!("{}}}", &text[..at]).into(),
        None => text.into(),
    }
}

#[derive(Default)]
struct DriverStats {
    changes: AtomicU64,
    failed: AtomicU64,
}

/// Places and cancels bids at `changes_per_s` until stopped.
async fn drive(
    target: Target,
    http: reqwest::Client,
    args: Args,
    stats: Arc<DriverStats>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let ttl = Duration::from_secs(3600);
    let buyers: Vec<String> = (0..args.buyers.max(1))
        .map(|i| target.token(&format!("load-buyer-{i}"), "buyer", ttl))
        .collect::<anyhow::Result<_>>()?;
    let open: Vec<Arc<Mutex<VecDeque<String>>>> = buyers
        .iter()
        .map(|_| Arc::new(Mutex::new(VecDeque::new())))
        .collect();
    let in_flight = Arc::new(Semaphore::new(DRIVER_IN_FLIGHT_MAX));
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let period = Duration::from_secs_f64(1.0 / f64::from(args.changes_per_s.max(1)));
    let started = tokio::time::Instant::now();
    let mut sent: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        // Catch up to the schedule: one change per `period` since the start.
        let due = (started.elapsed().as_secs_f64() / period.as_secs_f64()) as u64;
        while sent < due {
            sent += 1;
            let who = (sent as usize) % buyers.len();
            let permit = in_flight.clone().acquire_owned().await?;
            let (http, base, token, open, stats, pool) = (
                http.clone(),
                target.http_base.clone(),
                buyers[who].clone(),
                open[who].clone(),
                stats.clone(),
                args.pool.clone(),
            );
            // Bids from $1.00 to $2.99: a few hundred levels, none crossing supply above $3.
            let cents: u32 = rng.gen_range(100..300);
            tokio::spawn(async move {
                let _permit = permit;
                let cancel = {
                    let mut open = open.lock().expect("open bids");
                    if open.len() >= OPEN_BIDS_PER_BUYER {
                        open.pop_front()
                    } else {
                        None
                    }
                };
                let ok = match cancel {
                    Some(id) => http
                        .delete(format!("{base}/v1/orders/{id}"))
                        .bearer_auth(&token)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success()),
                    None => {
                        let body = serde_json::json!({
                            "pool": pool, "gpus": 1 + cents % 8,
                            "price": format!("{}.{:02}", cents / 100, cents % 100),
                            "duration_s": 3600,
                        });
                        match http
                            .post(format!("{base}/v1/orders"))
                            .bearer_auth(&token)
                            .json(&body)
                            .send()
                            .await
                        {
                            Ok(response) if response.status().is_success() => {
                                let placed: serde_json::Value =
                                    response.json().await.unwrap_or_default();
                                if let Some(id) = placed["order"]["id"].as_str() {
                                    open.lock().expect("open bids").push_back(id.to_owned());
                                }
                                true
                            }
                            _ => false,
                        }
                    }
                };
                let counter = if ok { &stats.changes } else { &stats.failed };
                counter.fetch_add(1, Ordering::Relaxed);
            });
        }
    }
    // Let the requests in flight finish.
    let _ = in_flight.acquire_many(DRIVER_IN_FLIGHT_MAX as u32).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_viewer_reads_the_head_of_a_delta_only() {
        let text = r#"{"type":"delta","channel":"book:p","prev_seq":4,"seq":7,"at":"2025-01-02T03:04:05.678Z","first_at":"2025-01-02T03:04:05.600Z","changes":[{"side":"ask","price":"1.25","gpus":0,"orders":0}]}"#;
        let delta = head(text);
        let msg: Msg<'_> = serde_json::from_str(&delta).unwrap();
        assert_eq!(
            (msg.kind, msg.prev_seq, msg.seq),
            ("delta", Some(4), Some(7))
        );
        assert_eq!(msg.first_at, Some("2025-01-02T03:04:05.600Z"));
        let snapshot = r#"{"type":"snapshot","channel":"book:p","seq":9,"at":"2025-01-02T03:04:05.678Z","bids":[],"asks":[]}"#;
        let snapshot = head(snapshot);
        let msg: Msg<'_> = serde_json::from_str(&snapshot).unwrap();
        assert_eq!((msg.kind, msg.seq), ("snapshot", Some(9)));
    }
}
