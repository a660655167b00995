//! `offpeak-load orders`: durable acknowledgements per second of order entry, against a running
//! server on this machine, and the same concurrency on `GET /healthz` as the HTTP ceiling.
//!
//! `--concurrency` buyers, one account each (so the per-account rate limit is shared by as few
//! requests as possible), each on a loop of its own: place a GTC bid that rests below every ask,
//! then cancel it; every `--take-every`-th place is instead an IOC bid above the asks, which
//! trades against the blocks a supplier releases every `--release-every-ms`. Every request waits
//! for its answer before the next (closed loop): a 2xx answer is a durable acknowledgement by the
//! server's contract (the batch it was in is committed to the journal). Only 2xx answers are
//! counted and timed; 4xx/5xx and transport errors are counted apart and reported.
//!
//! Then the same number of loops call `GET /healthz` for `--healthz-s`: the ceiling of the HTTP
//! stack (and of this generator) on this machine, with no database and no sequencer involved.
//!
//! Only 127.0.0.1 is accepted, and the run is bounded by warm-up + duration + healthz time
//! (every request has a timeout).
//!
//! Last line: `offpeak-load orders: acks_per_s=<int> p50_ms=<x.y> p99_ms=<x.y>
//! vs_healthz=<ratio>`.

use crate::http1::{Answer, Connection};
use crate::target::{cpu_time, listening_pid, Target};
use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Options of the scenario.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The server, e.g. `http://127.0.0.1:8080`.
    #[arg(long)]
    pub url: String,
    /// The server's HS256 secret (`OFFPEAK_JWT_SECRET`), to mint the accounts' tokens.
    #[arg(long)]
    pub secret: String,
    /// Concurrent buyers (one account and one request in flight each); the same number of
    /// loops then call `/healthz`.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Measured seconds of order entry (after the warm-up).
    #[arg(long, default_value_t = 20)]
    pub duration_s: u64,
    /// Unmeasured seconds of order entry before the measurement.
    #[arg(long, default_value_t = 2)]
    pub warmup_s: u64,
    /// Measured seconds of `GET /healthz` (after a one-second warm-up).
    #[arg(long, default_value_t = 10)]
    pub healthz_s: u64,
    /// The pool the bids and blocks are in.
    #[arg(long, default_value = "h100-sxm.us-east")]
    pub pool: String,
    /// Every n-th place of a buyer is an IOC bid that takes from the supplier's blocks
    /// (0: never).
    #[arg(long, default_value_t = 10)]
    pub take_every: u64,
    /// The supplier releases a block this often (0: never).
    #[arg(long, default_value_t = 100)]
    pub release_every_ms: u64,
    /// GPUs per released block.
    #[arg(long, default_value_t = 16)]
    pub block_gpus: u32,
    /// Per-request timeout, seconds.
    #[arg(long, default_value_t = 10)]
    pub timeout_s: u64,
    /// The server's pid, for its CPU time (default: the process listening on the URL's port).
    #[arg(long)]
    pub server_pid: Option<u32>,
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
    /// 2xx answers to writes per second of the measured window.
    pub acks_per_s: f64,
    /// Median latency of the acknowledged writes, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency of the acknowledged writes, milliseconds.
    pub p99_ms: f64,
    /// 2xx answers of `/healthz` per second at the same concurrency.
    pub healthz_per_s: f64,
    /// `acks_per_s / healthz_per_s`.
    pub vs_healthz: f64,
}

/// Resting bids: $1.00 to $1.49, below every ask, so they rest until cancelled.
const REST_BASE_CENTS: u64 = 100;
const REST_SPREAD_CENTS: u64 = 50;
/// The supplier's reserve price, and the takers' limit above it.
const RESERVE_PRICE: &str = "2.00";
const TAKE_PRICE: &str = "3.00";
/// The lease length bids ask for.
const DURATION_S: u32 = 3600;

fn histogram() -> Histogram<u64> {
    // Up to 10 minutes in microseconds, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

fn local_only(url: &str) -> anyhow::Result<()> {
    crate::failover::local_only("--url", url, false)
}

/// RFC 3339 (UTC, whole seconds) of now + `seconds`.
fn rfc3339_in(seconds: u64) -> String {
    let at = SystemTime::now() + Duration::from_secs(seconds);
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let (h, m, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
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

/// Counts of one phase, shared by its loops.
#[derive(Default)]
struct Counters {
    acks: AtomicU64,
    refused: AtomicU64,
    rate_limited: AtomicU64,
    server_errors: AtomicU64,
    transport_errors: AtomicU64,
    trades_opened: AtomicU64,
}

/// The phase's clock: loops record only while `measuring`, and stop at `stop`.
struct Phase {
    measuring: AtomicBool,
    stop: AtomicBool,
    counters: Counters,
}

impl Phase {
    fn new() -> Arc<Phase> {
        Arc::new(Phase {
            measuring: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            counters: Counters::default(),
        })
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Records one answer; returns the body when it was a 2xx.
    fn answer(
        &self,
        sent: Instant,
        result: anyhow::Result<Answer>,
        latencies: &mut Histogram<u64>,
    ) -> Option<Vec<u8>> {
        let elapsed = sent.elapsed();
        let measuring = self.measuring.load(Ordering::Relaxed);
        let c = &self.counters;
        let Ok(Answer { status, body }) = result else {
            if measuring {
                c.transport_errors.fetch_add(1, Ordering::Relaxed);
            }
            return None;
        };
        let success = (200..300).contains(&status);
        if measuring {
            if success {
                c.acks.fetch_add(1, Ordering::Relaxed);
                let _ = latencies.record((elapsed.as_micros() as u64).max(1));
            } else if status == 429 {
                c.rate_limited.fetch_add(1, Ordering::Relaxed);
            } else if status >= 500 {
                c.server_errors.fetch_add(1, Ordering::Relaxed);
            } else {
                c.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
        success.then_some(body)
    }
}

#[derive(Deserialize)]
struct PlacedOrder {
    order: OrderId,
    #[serde(default)]
    leases: Vec<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct OrderId {
    id: String,
    status: String,
}

/// One buyer: place a resting bid and cancel it, with an IOC take every `take_every` places.
async fn buyer(
    mut connection: Connection,
    token: String,
    pool: String,
    seed: u64,
    take_every: u64,
    phase: Arc<Phase>,
) -> Histogram<u64> {
    let mut latencies = histogram();
    let auth = format!("Bearer {token}");
    let mut n: u64 = 0;
    while !phase.stopped() {
        n += 1;
        let take = take_every > 0 && n.is_multiple_of(take_every);
        let body = if take {
            json!({"pool": pool, "gpus": 1, "min_gpus": 1, "price": TAKE_PRICE,
                   "duration_s": DURATION_S, "tif": "ioc"})
        } else {
            let cents =
                REST_BASE_CENTS + (seed.wrapping_mul(31).wrapping_add(n) % REST_SPREAD_CENTS);
            json!({"pool": pool, "gpus": 1, "price": format!("{}.{:02}", cents / 100, cents % 100),
                   "duration_s": DURATION_S})
        };
        let body = body.to_string();
        let sent = Instant::now();
        let result = connection
            .send("POST", "/v1/orders", Some(&auth), Some(body.as_bytes()))
            .await;
        let Some(bytes) = phase.answer(sent, result, &mut latencies) else {
            continue;
        };
        let Ok(placed) = serde_json::from_slice::<PlacedOrder>(&bytes) else {
            continue;
        };
        if !placed.leases.is_empty() && phase.measuring.load(Ordering::Relaxed) {
            phase
                .counters
                .trades_opened
                .fetch_add(placed.leases.len() as u64, Ordering::Relaxed);
        }
        if placed.order.status != "open" || phase.stopped() {
            continue;
        }
        let path = format!("/v1/orders/{}", placed.order.id);
        let sent = Instant::now();
        let result = connection.send("DELETE", &path, Some(&auth), None).await;
        phase.answer(sent, result, &mut latencies);
    }
    latencies
}

/// The supplier: a block of `gpus` every `every`, open for a day.
async fn supplier(
    mut connection: Connection,
    token: String,
    pool: String,
    (run_id, gpus, every): (String, u32, Duration),
    phase: Arc<Phase>,
) -> Histogram<u64> {
    let mut latencies = histogram();
    let auth = format!("Bearer {token}");
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut n: u64 = 0;
    while !phase.stopped() {
        ticker.tick().await;
        n += 1;
        let body = json!({"block_id": format!("load-{run_id}-{n}"), "pool": pool, "gpus": gpus,
                          "reserve_price": RESERVE_PRICE, "available_until": rfc3339_in(86_400)});
        let body = body.to_string();
        let sent = Instant::now();
        let result = connection
            .send("POST", "/v1/capacity", Some(&auth), Some(body.as_bytes()))
            .await;
        phase.answer(sent, result, &mut latencies);
    }
    latencies
}

/// `GET /healthz` in a closed loop.
async fn healthz(mut connection: Connection, phase: Arc<Phase>) -> Histogram<u64> {
    let mut latencies = histogram();
    while !phase.stopped() {
        let sent = Instant::now();
        let result = connection.send("GET", "/healthz", None, None).await;
        phase.answer(sent, result, &mut latencies);
    }
    latencies
}

/// Runs `phase` for `warmup` unmeasured then `measured`; returns the measured wall time and
/// the server's CPU time over it.
async fn clock(
    phase: &Phase,
    warmup: Duration,
    measured: Duration,
    server_pid: Option<u32>,
) -> (Duration, Option<Duration>) {
    tokio::time::sleep(warmup).await;
    let cpu_before = server_pid.and_then(|pid| cpu_time(pid).ok());
    let start = Instant::now();
    phase.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(measured).await;
    phase.measuring.store(false, Ordering::Relaxed);
    let wall = start.elapsed();
    let cpu_after = server_pid.and_then(|pid| cpu_time(pid).ok());
    phase.stop.store(true, Ordering::Relaxed);
    let cpu = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    (wall, cpu)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn report(name: &str, phase: &Phase, wall: Duration, cpu: Option<Duration>, h: &Histogram<u64>) {
    let c = &phase.counters;
    let acks = c.acks.load(Ordering::Relaxed);
    let cpu_pct = cpu.map_or_else(
        || "?".to_owned(),
        |cpu| format!("{:.0}", cpu.as_secs_f64() / wall.as_secs_f64() * 100.0),
    );
    println!(
        "{name}: {acks} ok in {:.1} s = {:.0}/s; p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms; \
         refused {} rate_limited {} 5xx {} transport {}; server cpu {cpu_pct}%",
        wall.as_secs_f64(),
        acks as f64 / wall.as_secs_f64(),
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
        c.refused.load(Ordering::Relaxed),
        c.rate_limited.load(Ordering::Relaxed),
        c.server_errors.load(Ordering::Relaxed),
        c.transport_errors.load(Ordering::Relaxed),
    );
}

/// Runs the scenario and prints its report; the last line is the machine-readable one.
pub async fn run(args: Args) -> anyhow::Result<Summary> {
    local_only(&args.url)?;
    if args.concurrency == 0 || args.duration_s == 0 || args.healthz_s == 0 {
        bail!("--concurrency, --duration-s and --healthz-s must be positive");
    }
    let target = Target::new(&args.url, &args.secret, &args.issuer, &args.audience)?;
    let timeout = Duration::from_secs(args.timeout_s);
    let http = reqwest::Client::builder().timeout(timeout).build()?;
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
    let server_pid = match args.server_pid {
        Some(pid) => Some(pid),
        None => target.port().ok().and_then(|p| listening_pid(p).ok()),
    };
    let run_id = format!(
        "{:x}",
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() % 0xffff_ffff
    );
    let ttl = Duration::from_secs(args.warmup_s + args.duration_s + args.healthz_s + 600);
    println!(
        "orders: {} buyers (one account each) on {} at {}, take every {} places, a {}-GPU block every {} ms, \
         {} s warm-up, {} s measured; then /healthz {} s; server pid {}",
        args.concurrency,
        args.pool,
        target.http_base,
        args.take_every,
        args.block_gpus,
        args.release_every_ms,
        args.warmup_s,
        args.duration_s,
        args.healthz_s,
        server_pid.map_or_else(|| "?".to_owned(), |p| p.to_string()),
    );

    // Phase 1: order entry.
    let phase = Phase::new();
    let mut loops = Vec::new();
    for n in 0..args.concurrency {
        let token = target.token(&format!("loadbuyer-{run_id}-{n}"), "buyer", ttl)?;
        loops.push(tokio::spawn(buyer(
            Connection::new(&target.http_base, timeout)?,
            token,
            args.pool.clone(),
            n as u64,
            args.take_every,
            phase.clone(),
        )));
    }
    if args.release_every_ms > 0 {
        let token = target.token(&format!("loadsupplier-{run_id}"), "supplier", ttl)?;
        loops.push(tokio::spawn(supplier(
            Connection::new(&target.http_base, timeout)?,
            token,
            args.pool.clone(),
            (
                run_id.clone(),
                args.block_gpus,
                Duration::from_millis(args.release_every_ms),
            ),
            phase.clone(),
        )));
    }
    let (wall, cpu) = clock(
        &phase,
        Duration::from_secs(args.warmup_s),
        Duration::from_secs(args.duration_s),
        server_pid,
    )
    .await;
    let mut orders_h = histogram();
    for handle in loops {
        orders_h.add(handle.await?)?;
    }
    report(
        "orders (place/cancel/take/release)",
        &phase,
        wall,
        cpu,
        &orders_h,
    );
    println!(
        "orders: leases opened by takes {}",
        phase.counters.trades_opened.load(Ordering::Relaxed)
    );
    let acks = phase.counters.acks.load(Ordering::Relaxed);
    let acks_per_s = acks as f64 / wall.as_secs_f64();

    // Phase 2: the HTTP ceiling at the same concurrency.
    let ceiling = Phase::new();
    let mut loops = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        let connection = Connection::new(&target.http_base, timeout)?;
        loops.push(tokio::spawn(healthz(connection, ceiling.clone())));
    }
    let (h_wall, h_cpu) = clock(
        &ceiling,
        Duration::from_secs(1),
        Duration::from_secs(args.healthz_s),
        server_pid,
    )
    .await;
    let mut healthz_h = histogram();
    for handle in loops {
        healthz_h.add(handle.await?)?;
    }
    report("healthz", &ceiling, h_wall, h_cpu, &healthz_h);
    let healthz_per_s = ceiling.counters.acks.load(Ordering::Relaxed) as f64 / h_wall.as_secs_f64();

    let summary = Summary {
        acks_per_s,
        p50_ms: ms(orders_h.value_at_quantile(0.5)),
        p99_ms: ms(orders_h.value_at_quantile(0.99)),
        healthz_per_s,
        vs_healthz: if healthz_per_s > 0.0 {
            acks_per_s / healthz_per_s
        } else {
            0.0
        },
    };
    println!(
        "offpeak-load orders: acks_per_s={} p50_ms={:.1} p99_ms={:.1} vs_healthz={:.2}",
        summary.acks_per_s.round() as u64,
        summary.p50_ms,
        summary.p99_ms,
        summary.vs_healthz
    );
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_targets() {
        assert!(local_only("http://127.0.0.1:8080").is_ok());
        assert!(local_only("http://localhost:8080/").is_ok());
        assert!(local_only("http://10.0.0.1:8080").is_err());
        assert!(local_only("http://example.com").is_err());
    }

    #[test]
    fn parses_a_placed_order() {
        let body = br#"{"order": {"id": "42", "status": "open", "pool": "x"}, "leases": []}"#;
        let placed: PlacedOrder = serde_json::from_slice(body).unwrap();
        assert_eq!(placed.order.id, "42");
        assert_eq!(placed.order.status, "open");
        assert!(placed.leases.is_empty());
    }
}
