//! `offpeak-load failover`: leader takeovers of a cluster (several `offpeak serve` on one
//! PostgreSQL) under a steady stream of orders, and an audit that no acknowledged order was lost
//! or placed twice.
//!
//! The nodes are either started here (`--spawn N --binary PATH --database-url URL`: each with its
//! own data directory and port, its log kept in `<tmp>/offpeak-failover-<run>/node-<i>/`), or
//! already running (`--urls`, with `--pids` or the pid listening on each URL's port). Each round
//! removes the leader, by SIGKILL (then the node is started again, so N stay up) or by SIGSTOP
//! until another node has taken over and at least the leader TTL has passed (then SIGCONT: the
//! old leader must come back as a standby). Nodes given by `--urls` are only ever paused.
//!
//! Meanwhile `--buyers` buyers (one account each) place orders round-robin across every node,
//! each with a unique `client_order_id`, and a supplier releases blocks that some bids lease. A
//! 503 (any code), a 429 or a transport error is retried with the same body, so the same
//! `client_order_id`, on the next node, until it is acknowledged (201 placed, 200 placed before);
//! any other answer is a non-retryable error. The takeover time of a round runs from the signal
//! to the first `/readyz` 200 of another node that says it is the leader at a higher epoch.
//!
//! Then the writers stop and the leader is asked for every buyer's orders: an acknowledged order
//! it does not hold is lost; a `client_order_id` it holds under two order ids is doubled. Every
//! node must report the same state hash at the same journal seq.
//!
//! Only loopback URLs are accepted. The run ends (and the nodes it started are killed, a paused
//! one resumed) on success, on error and on Ctrl-C.
//!
//! Last line: `offpeak-load failover: takeover_p99_ms=<x> acked=<n> lost=<n> doubled=<n>
//! non_retryable_errors=<n>`.

use crate::target::{listening_pid, Target};
use anyhow::{bail, ensure, Context};
use futures_util::future::join_all;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;

/// Options of the scenario.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// Nodes already running, comma-separated (`http://127.0.0.1:8081,...`); they are paused
    /// with SIGSTOP, never killed.
    #[arg(long, value_delimiter = ',')]
    pub urls: Vec<String>,
    /// The pids of `--urls`, in the same order (default: the process listening on each port).
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// Start this many nodes instead of `--urls` (needs `--binary` and `--database-url`).
    #[arg(long)]
    pub spawn: Option<usize>,
    /// The `offpeak` binary the spawned nodes run (`PATH serve`).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// The spawned nodes' `DATABASE_URL`: a fresh database the caller created.
    #[arg(long)]
    pub database_url: Option<String>,
    /// The spawned nodes' `REDIS_URL` (default: none, the in-process bus).
    #[arg(long)]
    pub redis_url: Option<String>,
    /// The nodes' HS256 secret (`OFFPEAK_JWT_SECRET`), to mint the accounts' tokens.
    #[arg(long)]
    pub secret: String,
    /// Leader takeovers to cause and time.
    #[arg(long, default_value_t = 10)]
    pub takeovers: usize,
    /// The spawned nodes' `OFFPEAK_LEADER_TTL_MS`, and the least a leader stays paused.
    #[arg(long, default_value_t = 3000)]
    pub leader_ttl_ms: u64,
    /// How the leader is removed (default: alternate when spawning, stop with `--urls`).
    #[arg(long, value_enum)]
    pub signal: Option<Removal>,
    /// Concurrent buyers, one account each.
    #[arg(long, default_value_t = 6)]
    pub buyers: usize,
    /// Each buyer places at most one order this often.
    #[arg(long, default_value_t = 20)]
    pub order_every_ms: u64,
    /// Every n-th order of a buyer is an IOC bid above the reserve, which leases (0: never).
    #[arg(long, default_value_t = 10)]
    pub take_every: u64,
    /// Every n-th order of a buyer rests on the book for a minute (GTD; 0: never); the others
    /// are IOC bids below every ask, which expire at once.
    #[arg(long, default_value_t = 10)]
    pub rest_every: u64,
    /// GPUs per block the supplier releases.
    #[arg(long, default_value_t = 16)]
    pub block_gpus: u32,
    /// The supplier releases a block this often (0: never).
    #[arg(long, default_value_t = 1000)]
    pub release_every_ms: u64,
    /// Between rounds, writes must go on for this long with every node ready.
    #[arg(long, default_value_t = 2)]
    pub settle_s: u64,
    /// Per-request timeout of the writes (a paused node answers nothing).
    #[arg(long, default_value_t = 2000)]
    pub request_timeout_ms: u64,
    /// A write still unacknowledged after this long is given up (and reported).
    #[arg(long, default_value_t = 45)]
    pub give_up_s: u64,
    /// A round with no takeover after this long counts this long and the run goes on.
    #[arg(long, default_value_t = 60)]
    pub takeover_timeout_s: u64,
    /// How long every node may take to be ready (at start, between rounds, at the end).
    #[arg(long, default_value_t = 90)]
    pub ready_timeout_s: u64,
    /// The pool the bids and blocks are in.
    #[arg(long, default_value = "h100-sxm.us-east")]
    pub pool: String,
    /// `iss` of the minted tokens.
    #[arg(long, default_value = "offpeak")]
    pub issuer: String,
    /// `aud` of the minted tokens.
    #[arg(long, default_value = "offpeak")]
    pub audience: String,
}

/// How a round removes the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Removal {
    /// SIGKILL and SIGSTOP by turns (spawned nodes only).
    Alternate,
    /// SIGKILL, then the node is started again (spawned nodes only).
    Kill,
    /// SIGSTOP past the takeover and the TTL, then SIGCONT.
    Stop,
}

/// What the run measured.
#[derive(Debug)]
pub struct Summary {
    /// Median takeover time, milliseconds.
    pub takeover_p50_ms: f64,
    /// 99th percentile (nearest rank) takeover time, milliseconds.
    pub takeover_p99_ms: f64,
    /// Orders acknowledged (201, or 200 for a repeat).
    pub acked: u64,
    /// Acknowledged orders the leader does not hold at the end.
    pub lost: u64,
    /// `client_order_id`s the leader holds under more than one order.
    pub doubled: u64,
    /// Writes answered with anything but 2xx, 503 or 429.
    pub non_retryable_errors: u64,
    /// Whether every node ended on the same state hash at the same seq.
    pub same_state: bool,
}

/// Resting and expiring bids: $1.00 to $1.49, below every ask.
const LOW_BASE_CENTS: u64 = 100;
const LOW_SPREAD_CENTS: u64 = 50;
/// The supplier's reserve price, and the takers' limit above it.
const RESERVE_PRICE: &str = "2.00";
const TAKE_PRICE: &str = "3.00";
/// The lease length bids ask for.
const DURATION_S: u32 = 3600;
/// A resting bid's life: longer than `--give-up-s`, so a retried body never carries an
/// `expires_at` in the past.
const REST_S: i64 = 60;
/// The block windows: a day, far longer than any run.
const WINDOW_S: i64 = 86_400;
/// The largest page `GET /v1/orders` serves (the server's `LIST_LIMIT_MAX`).
const PAGE_MAX: usize = 1000;
/// How often the takeover is looked for (the precision of a takeover time).
const TAKEOVER_POLL: Duration = Duration::from_millis(20);
/// How often readiness and the state hash are polled otherwise.
const READY_POLL: Duration = Duration::from_millis(50);
/// A `/readyz` or state-hash probe: a node that does not answer this fast counts as not ready.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// The pause before a write is retried on the next node.
const RETRY_PAUSE: Duration = Duration::from_millis(25);
/// A node must print its address this fast after it starts.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the nodes may take to agree on a seq at the end (one idle tick a second moves it).
const AGREE_TIMEOUT: Duration = Duration::from_secs(30);
/// What a paused leader is held past its TTL, so its lease has surely expired.
const PAUSE_PAST_TTL: Duration = Duration::from_millis(500);
/// Attempts of an audit read before the run gives up.
const AUDIT_ATTEMPTS: u32 = 5;

/// `binary serve`, with none of the caller's own server settings (`OFFPEAK_*`, `DATABASE_URL`,
/// `REDIS_URL`, `RUST_LOG`) leaking into it: the scenario sets what the server gets.
pub(crate) fn serve_command(binary: &std::path::Path) -> Command {
    let mut command = Command::new(binary);
    command.arg("serve");
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.starts_with("OFFPEAK_")
            || matches!(text.as_ref(), "DATABASE_URL" | "REDIS_URL" | "RUST_LOG")
        {
            command.env_remove(&name);
        }
    }
    command
}

/// The host of a URL, without user info and port ("" for none, e.g. a Unix socket).
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = host_port.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    host_port.split(':').next().unwrap_or(host_port)
}

/// Accepts only this machine's addresses; `socket_ok` also accepts no host (a Unix socket).
pub(crate) fn local_only(what: &str, url: &str, socket_ok: bool) -> anyhow::Result<()> {
    match host_of(url) {
        "127.0.0.1" | "localhost" | "::1" => Ok(()),
        "" if socket_ok => Ok(()),
        other => bail!("{what} must be on this machine (127.0.0.1), not {other:?}"),
    }
}

/// RFC 3339 (UTC, whole seconds) of now + `seconds`.
fn rfc3339_in(seconds: i64) -> String {
    let at = time::OffsetDateTime::now_utc().unix_timestamp() + seconds;
    time::OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The address in a node's `listening on http://ADDR` log line.
pub(crate) fn listening_address(line: &str) -> Option<String> {
    let (_, rest) = line.split_once("listening on http://")?;
    let address: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    (!address.is_empty()).then_some(address)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sends signal `name` (`STOP`, `CONT`, `TERM`) to `pid` through kill(1).
pub(crate) fn send_signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    ensure!(status.success(), "kill -{name} {pid} failed ({status})");
    Ok(())
}

/// The node URLs the writers spread over; a restarted node comes back on a new port.
struct Urls(RwLock<Vec<String>>);

impl Urls {
    fn pick(&self, n: usize) -> String {
        let urls = self.0.read().unwrap_or_else(|e| e.into_inner());
        urls[n % urls.len()].clone()
    }

    fn set(&self, i: usize, url: String) {
        self.0.write().unwrap_or_else(|e| e.into_inner())[i] = url;
    }
}

/// One node of the cluster. Dropping it resumes it if paused and kills it if started here.
struct Node {
    /// Its `OFFPEAK_NODE_ID` (spawned) or a label (given).
    id: String,
    url: String,
    pid: u32,
    /// Set when this run started it.
    child: Option<Child>,
    /// Set while it is SIGSTOPped by this run.
    paused: bool,
}

impl Node {
    /// SIGKILL, and reap it.
    fn kill(&mut self) -> anyhow::Result<()> {
        let child = self
            .child
            .as_mut()
            .context("only nodes this run started are killed")?;
        child.kill().context("killing a node")?;
        child.wait().context("reaping a node")?;
        self.child = None;
        Ok(())
    }

    fn pause(&mut self) -> anyhow::Result<()> {
        // Marked first: if the run stops between the two, the node is resumed all the same.
        self.paused = true;
        send_signal(self.pid, "STOP")
    }

    fn resume(&mut self) -> anyhow::Result<()> {
        send_signal(self.pid, "CONT")?;
        self.paused = false;
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.paused {
            let _ = send_signal(self.pid, "CONT");
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How nodes are started (`--spawn`).
struct Spawner {
    binary: PathBuf,
    database_url: String,
    redis_url: Option<String>,
    secret: String,
    leader_ttl_ms: u64,
    /// Each node's data directory and log are under it.
    dir: PathBuf,
    run_id: String,
}

impl Spawner {
    /// Starts node `i` and waits for the address it listens on.
    async fn start(&self, i: usize) -> anyhow::Result<Node> {
        let id = format!("node-{i}");
        let dir = self.dir.join(&id);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let log = dir.join("stderr.log");
        let mut command = serve_command(&self.binary);
        command
            .env("DATABASE_URL", &self.database_url)
            .env("OFFPEAK_JWT_SECRET", &self.secret)
            .env("OFFPEAK_LISTEN", "127.0.0.1:0")
            .env("OFFPEAK_NODE_ID", &id)
            .env("OFFPEAK_DATA_DIR", dir.join("data"))
            .env("OFFPEAK_RATE_LIMIT_PER_S", "1000000")
            .env("OFFPEAK_RATE_LIMIT_BURST", "1000000")
            .env("OFFPEAK_HTTP_WORKERS", "2")
            .env("OFFPEAK_LEADER_TTL_MS", self.leader_ttl_ms.to_string())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        if let Some(redis_url) = &self.redis_url {
            command
                .env("REDIS_URL", redis_url)
                .env("OFFPEAK_REDIS_PREFIX", format!("failover-{}", self.run_id))
                .env("OFFPEAK_REDIS_CONSUMER", format!("offpeak-{id}"));
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {} serve", self.binary.display()))?;
        let stderr = child.stderr.take().context("the node's stderr")?;
        let (address_tx, address_rx) = oneshot::channel();
        let log_path = log.clone();
        std::thread::spawn(move || drain_stderr(stderr, &log_path, address_tx));
        let mut node = Node {
            id: id.clone(),
            url: String::new(),
            pid: child.id(),
            child: Some(child),
            paused: false,
        };
        match tokio::time::timeout(LISTEN_TIMEOUT, address_rx).await {
            Ok(Ok(address)) => {
                node.url = format!("http://{address}");
                Ok(node)
            }
            Ok(Err(_)) => bail!("{id} exited before listening; see {}", log.display()),
            Err(_) => bail!(
                "{id} did not log `listening on` within {LISTEN_TIMEOUT:?}; see {}",
                log.display()
            ),
        }
    }
}

/// Copies a node's stderr to its log, and sends the address of its `listening on` line.
fn drain_stderr(stderr: ChildStderr, log: &Path, address: oneshot::Sender<String>) {
    let mut file = std::fs::File::create(log).ok();
    let mut address = Some(address);
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        if let Some(file) = file.as_mut() {
            let _ = writeln!(file, "{line}");
        }
        if let Some(found) = listening_address(&line) {
            if let Some(tx) = address.take() {
                let _ = tx.send(found);
            }
        }
    }
}

/// `GET /readyz`, the fields this scenario reads.
#[derive(Debug, Default, Deserialize)]
struct Readiness {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    epoch: Option<u64>,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    lag: Option<u64>,
}

/// A node's answer to `/readyz`: whether it was 200, and what it said.
#[derive(Debug)]
struct Probe {
    ready: bool,
    readiness: Readiness,
}

impl Probe {
    fn leads(&self) -> bool {
        self.ready && self.readiness.role.as_deref() == Some("leader")
    }
}

async fn probe(http: &reqwest::Client, url: &str) -> Option<Probe> {
    let response = http
        .get(format!("{url}/readyz"))
        .timeout(PROBE_TIMEOUT)
        .send()
        .await
        .ok()?;
    let ready = response.status().is_success();
    let readiness = response.json().await.unwrap_or_default();
    Some(Probe { ready, readiness })
}

fn describe(nodes: &[Node], probes: &[Option<Probe>]) -> String {
    nodes
        .iter()
        .zip(probes)
        .map(|(node, p)| match p {
            None => format!("{} no answer", node.id),
            Some(p) => format!(
                "{} {} role={} epoch={} seq={} lag={}",
                node.id,
                if p.ready { "ready" } else { "not-ready" },
                p.readiness.role.as_deref().unwrap_or("?"),
                p.readiness.epoch.map_or("?".into(), |e| e.to_string()),
                p.readiness.seq,
                p.readiness.lag.map_or("?".into(), |l| l.to_string()),
            ),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The nodes under test.
struct Cluster {
    nodes: Vec<Node>,
    urls: Arc<Urls>,
    spawner: Option<Spawner>,
}

/// The leader when every node was ready.
#[derive(Clone, Copy, Debug)]
struct Leader {
    index: usize,
    epoch: u64,
}

impl Cluster {
    /// Starts `n` nodes: the first alone until it is ready (it creates the schema), then the rest.
    async fn spawn(
        spawner: Spawner,
        n: usize,
        http: &reqwest::Client,
        timeout: Duration,
    ) -> anyhow::Result<Cluster> {
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            nodes.push(spawner.start(i).await?);
            if i == 0 {
                let deadline = Instant::now() + timeout;
                while !probe(http, &nodes[0].url).await.is_some_and(|p| p.ready) {
                    ensure!(
                        Instant::now() < deadline,
                        "node-0 not ready within {timeout:?}"
                    );
                    tokio::time::sleep(READY_POLL).await;
                }
            }
        }
        let urls = Arc::new(Urls(RwLock::new(
            nodes.iter().map(|n| n.url.clone()).collect(),
        )));
        Ok(Cluster {
            nodes,
            urls,
            spawner: Some(spawner),
        })
    }

    /// Nodes already running at `urls`, with their pids (or the pids listening on their ports)
    /// and their node ids from `/v1/cluster` where it names their URL.
    async fn attach(
        urls: &[String],
        pids: &[u32],
        http: &reqwest::Client,
    ) -> anyhow::Result<Cluster> {
        let urls: Vec<String> = urls
            .iter()
            .map(|u| u.trim_end_matches('/').to_owned())
            .collect();
        let pids = if pids.is_empty() {
            let mut found = Vec::new();
            for url in &urls {
                let port = Target::new(url, "", "", "")?.port()?;
                found.push(listening_pid(port).with_context(|| format!("the pid of {url}"))?);
            }
            found
        } else {
            ensure!(
                pids.len() == urls.len(),
                "--pids must name one pid per --urls entry"
            );
            pids.to_vec()
        };
        let view = cluster_view(http, &urls[0]).await.unwrap_or(Value::Null);
        let named: HashMap<String, String> = view["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| {
                let url = n["advertise_url"]
                    .as_str()?
                    .trim_end_matches('/')
                    .to_owned();
                Some((url, n["node_id"].as_str()?.to_owned()))
            })
            .collect();
        let nodes = urls
            .iter()
            .zip(pids)
            .map(|(url, pid)| Node {
                id: named.get(url).cloned().unwrap_or_else(|| url.clone()),
                url: url.clone(),
                pid,
                child: None,
                paused: false,
            })
            .collect();
        Ok(Cluster {
            nodes,
            urls: Arc::new(Urls(RwLock::new(urls))),
            spawner: None,
        })
    }

    /// Waits until every node answers `/readyz` 200 and exactly one says it leads.
    async fn all_ready(&self, http: &reqwest::Client, timeout: Duration) -> anyhow::Result<Leader> {
        let deadline = Instant::now() + timeout;
        loop {
            let probes: Vec<Option<Probe>> =
                join_all(self.nodes.iter().map(|n| probe(http, &n.url))).await;
            let all_ready = probes.iter().all(|p| p.as_ref().is_some_and(|p| p.ready));
            if all_ready && probes.iter().flatten().all(|p| p.readiness.role.is_none()) {
                bail!("/readyz names no role: this server has no cluster mode");
            }
            let leaders: Vec<usize> = (0..probes.len())
                .filter(|&i| probes[i].as_ref().is_some_and(Probe::leads))
                .collect();
            if all_ready && leaders.len() == 1 {
                let index = leaders[0];
                let epoch = probes[index]
                    .as_ref()
                    .and_then(|p| p.readiness.epoch)
                    .context("the leader's /readyz has no epoch")?;
                return Ok(Leader { index, epoch });
            }
            if Instant::now() > deadline {
                bail!(
                    "the nodes were not all ready with one leader within {timeout:?}: {}",
                    describe(&self.nodes, &probes)
                );
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// Polls every node but `old` until one leads at an epoch above `epoch`; returns it and the
    /// time since `signalled`, or None after `timeout`.
    async fn takeover(
        &self,
        http: &reqwest::Client,
        old: Leader,
        signalled: Instant,
        timeout: Duration,
    ) -> Option<(usize, u64, Duration)> {
        let others: Vec<usize> = (0..self.nodes.len()).filter(|&i| i != old.index).collect();
        loop {
            let probes = join_all(others.iter().map(|&i| probe(http, &self.nodes[i].url))).await;
            for (&i, p) in others.iter().zip(&probes) {
                if let Some(p) = p {
                    let epoch = p.readiness.epoch.unwrap_or(0);
                    if p.leads() && epoch > old.epoch {
                        return Some((i, epoch, signalled.elapsed()));
                    }
                }
            }
            if signalled.elapsed() > timeout {
                return None;
            }
            tokio::time::sleep(TAKEOVER_POLL).await;
        }
    }

    /// Starts node `i` again (after a SIGKILL), on a new port.
    async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let spawner = self
            .spawner
            .as_ref()
            .context("only spawned nodes restart")?;
        let node = spawner.start(i).await?;
        self.urls.set(i, node.url.clone());
        self.nodes[i] = node;
        Ok(())
    }

    /// Kills the nodes this run started, and removes their directory.
    fn finish(mut self) {
        self.nodes.clear();
        if let Some(spawner) = &self.spawner {
            let _ = std::fs::remove_dir_all(&spawner.dir);
        }
    }
}

async fn cluster_view(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let response = http
        .get(format!("{url}/v1/cluster"))
        .timeout(PROBE_TIMEOUT * 4)
        .send()
        .await
        .with_context(|| format!("GET {url}/v1/cluster: is the node running?"))?;
    ensure!(
        response.status().is_success(),
        "GET {url}/v1/cluster answered {}: this server has no cluster mode",
        response.status()
    );
    Ok(response.json().await?)
}

/// The result of one write, retried until it is acknowledged.
enum Outcome {
    /// 2xx.
    Acked { status: u16, body: Vec<u8> },
    /// Any answer but 2xx, 503 and 429, after `attempts` sends.
    Refused {
        status: u16,
        code: String,
        attempts: u32,
    },
    /// Still unacknowledged after `--give-up-s`.
    GaveUp,
}

/// The writers' shared state and counts.
struct Writers {
    http: reqwest::Client,
    urls: Arc<Urls>,
    stop: AtomicBool,
    give_up: Duration,
    /// Orders acknowledged.
    acked: AtomicU64,
    /// Of them, acknowledged with 200 (placed by an earlier attempt).
    acked_repeat: AtomicU64,
    /// Leases the acknowledged orders got at once.
    leases: AtomicU64,
    /// Blocks released.
    blocks: AtomicU64,
    /// Sends that were retried (503, 429 or transport error).
    retries: AtomicU64,
    /// Of them, 429.
    rate_limited: AtomicU64,
    /// Writes given up.
    gave_up: AtomicU64,
    /// Refusals by `status code`.
    refused: Mutex<BTreeMap<String, u64>>,
}

impl Writers {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn refusal(&self, status: u16, code: &str) {
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        *refused.entry(format!("{status} {code}")).or_default() += 1;
    }

    fn non_retryable(&self) -> u64 {
        let refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        refused.values().sum()
    }

    /// POSTs `body` to `path`, on the next node each time, until it is acknowledged.
    async fn post_until_acked(
        &self,
        next: &mut usize,
        path: &str,
        auth: &str,
        body: &Value,
    ) -> Outcome {
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let base = self.urls.pick(*next);
            *next += 1;
            let result = self
                .http
                .post(format!("{base}{path}"))
                .header("Authorization", auth)
                .json(body)
                .send()
                .await;
            if let Ok(response) = result {
                let status = response.status().as_u16();
                if let Ok(bytes) = response.bytes().await {
                    match status {
                        200..=299 => {
                            return Outcome::Acked {
                                status,
                                body: bytes.to_vec(),
                            }
                        }
                        503 => {}
                        429 => {
                            self.rate_limited.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            return Outcome::Refused {
                                status,
                                code: error_code(&bytes),
                                attempts,
                            }
                        }
                    }
                }
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
            if started.elapsed() > self.give_up {
                return Outcome::GaveUp;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// An acknowledged order.
#[derive(Clone, Debug)]
struct Acked {
    client_order_id: String,
    order_id: String,
}

#[derive(Deserialize)]
struct Placed {
    order: PlacedOrder,
    #[serde(default)]
    leases: Vec<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct PlacedOrder {
    id: String,
}

/// What a buyer's k-th order is: a take, a resting bid or an expiring one.
fn order_body(pool: &str, buyer: u64, k: u64, take_every: u64, rest_every: u64) -> Value {
    if take_every > 0 && k.is_multiple_of(take_every) {
        return json!({"pool": pool, "gpus": 1, "min_gpus": 1, "price": TAKE_PRICE,
                      "duration_s": DURATION_S, "tif": "ioc"});
    }
    let cents = LOW_BASE_CENTS + (buyer.wrapping_mul(31).wrapping_add(k) % LOW_SPREAD_CENTS);
    let price = format!("{}.{:02}", cents / 100, cents % 100);
    if rest_every > 0 && (k + 1).is_multiple_of(rest_every) {
        json!({"pool": pool, "gpus": 1, "price": price, "duration_s": DURATION_S,
               "tif": "gtd", "expires_at": rfc3339_in(REST_S)})
    } else {
        json!({"pool": pool, "gpus": 1, "price": price, "duration_s": DURATION_S, "tif": "ioc"})
    }
}

/// One buyer: an order every `every`, each retried until acknowledged.
async fn buyer(
    w: Arc<Writers>,
    (n, run_id, token): (usize, String, String),
    pool: String,
    (every, take_every, rest_every): (Duration, u64, u64),
) -> Vec<Acked> {
    let auth = format!("Bearer {token}");
    let mut acked = Vec::new();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next = n;
    let mut k: u64 = 0;
    while !w.stopped() {
        ticker.tick().await;
        k += 1;
        let client_order_id = format!("{run_id}-b{n}-{k}");
        let mut body = order_body(&pool, n as u64, k, take_every, rest_every);
        body["client_order_id"] = json!(client_order_id);
        match w
            .post_until_acked(&mut next, "/v1/orders", &auth, &body)
            .await
        {
            Outcome::Acked { status, body } => match serde_json::from_slice::<Placed>(&body) {
                Ok(placed) => {
                    w.acked.fetch_add(1, Ordering::Relaxed);
                    if status == 200 {
                        w.acked_repeat.fetch_add(1, Ordering::Relaxed);
                    }
                    w.leases
                        .fetch_add(placed.leases.len() as u64, Ordering::Relaxed);
                    acked.push(Acked {
                        client_order_id,
                        order_id: placed.order.id,
                    });
                }
                Err(_) => w.refusal(status, "unreadable_acknowledgement"),
            },
            Outcome::Refused { status, code, .. } => w.refusal(status, &code),
            Outcome::GaveUp => {
                w.gave_up.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    acked
}

/// The supplier: a block every `every`, each retried until acknowledged.
async fn supplier(
    w: Arc<Writers>,
    token: String,
    pool: String,
    run_id: String,
    gpus: u32,
    every: Duration,
) {
    let auth = format!("Bearer {token}");
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next = 0;
    let mut n: u64 = 0;
    while !w.stopped() {
        ticker.tick().await;
        n += 1;
        let body = json!({"block_id": format!("failover-{run_id}-{n}"), "pool": pool,
                          "gpus": gpus, "reserve_price": RESERVE_PRICE,
                          "available_until": rfc3339_in(WINDOW_S)});
        match w
            .post_until_acked(&mut next, "/v1/capacity", &auth, &body)
            .await
        {
            Outcome::Acked { .. } => {
                w.blocks.fetch_add(1, Ordering::Relaxed);
            }
            // A retry of a release that an earlier attempt committed.
            Outcome::Refused {
                status: 409,
                code,
                attempts,
            } if code == "block_id_taken" && attempts > 1 => {
                w.blocks.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Refused { status, code, .. } => w.refusal(status, &code),
            Outcome::GaveUp => {
                w.gave_up.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Waits `settle` and then until the writers have had an order acknowledged since the call.
async fn writes_flow(w: &Writers, settle: Duration, timeout: Duration) -> anyhow::Result<()> {
    let before = w.acked.load(Ordering::Relaxed);
    tokio::time::sleep(settle).await;
    let deadline = Instant::now() + timeout;
    while w.acked.load(Ordering::Relaxed) == before {
        ensure!(
            Instant::now() < deadline,
            "no order was acknowledged for {timeout:?} with every node ready"
        );
        tokio::time::sleep(READY_POLL).await;
    }
    Ok(())
}

/// `GET` with a token, retried a few times (the audit runs on a settled cluster); returns the
/// status and body of the first answer that is not a 5xx.
async fn get_with_retries(
    http: &reqwest::Client,
    url: &str,
    auth: &str,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut last = String::new();
    for _ in 0..AUDIT_ATTEMPTS {
        match http.get(url).header("Authorization", auth).send().await {
            Ok(response) if !response.status().is_server_error() => {
                let status = response.status().as_u16();
                return Ok((status, response.bytes().await?.to_vec()));
            }
            Ok(response) => last = format!("answered {}", response.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(READY_POLL * 4).await;
    }
    bail!("GET {url}: {last}")
}

#[derive(Deserialize)]
struct OrderPage {
    orders: Vec<ListedOrder>,
    #[serde(default)]
    next_before: Option<String>,
}

/// An order as `GET /v1/orders` lists it.
#[derive(Clone, Debug, Deserialize)]
struct ListedOrder {
    id: String,
    #[serde(default)]
    client_order_id: Option<String>,
}

/// Every order of the token's account, from `base`.
async fn listed_orders(
    http: &reqwest::Client,
    base: &str,
    auth: &str,
) -> anyhow::Result<Vec<ListedOrder>> {
    let mut all = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let mut url = format!("{base}/v1/orders?limit={PAGE_MAX}");
        if let Some(cursor) = &before {
            url.push_str(&format!("&before={cursor}"));
        }
        let (status, body) = get_with_retries(http, &url, auth).await?;
        ensure!(status == 200, "GET {url} answered {status}");
        let page: OrderPage =
            serde_json::from_slice(&body).with_context(|| format!("reading GET {url}"))?;
        all.extend(page.orders);
        match page.next_before {
            Some(cursor) if before.as_ref() != Some(&cursor) => before = Some(cursor),
            _ => break,
        }
    }
    Ok(all)
}

/// Lost and doubled orders.
#[derive(Debug, Default, PartialEq, Eq)]
struct Audit {
    lost: u64,
    doubled: u64,
}

/// An acknowledged order is lost when the leader holds it neither in the list nor by id; a
/// `client_order_id` is doubled when the leader holds more than one order under it.
fn audit(acked: &[Acked], listed: &[ListedOrder], found_by_id: &HashSet<String>) -> Audit {
    let listed_ids: HashSet<&str> = listed.iter().map(|o| o.id.as_str()).collect();
    let mut by_client_id: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for order in listed {
        if let Some(client_order_id) = &order.client_order_id {
            by_client_id
                .entry(client_order_id)
                .or_default()
                .insert(&order.id);
        }
    }
    let mut lost = 0;
    for a in acked {
        if listed_ids.contains(a.order_id.as_str()) || found_by_id.contains(&a.order_id) {
            by_client_id
                .entry(&a.client_order_id)
                .or_default()
                .insert(&a.order_id);
        } else {
            lost += 1;
        }
    }
    let doubled = by_client_id.values().filter(|ids| ids.len() > 1).count() as u64;
    Audit { lost, doubled }
}

/// One account's audit against the leader at `base`.
async fn audit_account(
    http: &reqwest::Client,
    base: &str,
    auth: &str,
    acked: &[Acked],
) -> anyhow::Result<Audit> {
    let listed = listed_orders(http, base, auth).await?;
    let listed_ids: HashSet<&str> = listed.iter().map(|o| o.id.as_str()).collect();
    let mut found_by_id = HashSet::new();
    for a in acked
        .iter()
        .filter(|a| !listed_ids.contains(a.order_id.as_str()))
    {
        let url = format!("{base}/v1/orders/{}", a.order_id);
        match get_with_retries(http, &url, auth).await? {
            (200, _) => {
                found_by_id.insert(a.order_id.clone());
            }
            (404, _) => {}
            (status, _) => bail!("GET {url} answered {status}"),
        }
    }
    Ok(audit(acked, &listed, &found_by_id))
}

#[derive(Deserialize)]
struct StateHash {
    seq: u64,
    state_hash: String,
}

/// Whether the nodes agree at the end.
#[derive(Debug)]
enum Agreement {
    /// The same hash at the same seq on every node.
    Same { seq: u64, hash: String },
    /// Different hashes at one seq.
    Differ { seq: u64, hashes: Vec<String> },
    /// No seq every node reported within the time allowed; each node's last seq.
    NoCommonSeq { last: Vec<Option<u64>> },
}

/// Samples every node's state hash until they all have reported one seq.
async fn agreement(http: &reqwest::Client, urls: &[String], auth: &str) -> Agreement {
    let mut seen: Vec<HashMap<u64, String>> = vec![HashMap::new(); urls.len()];
    let mut last = vec![None; urls.len()];
    let deadline = Instant::now() + AGREE_TIMEOUT;
    loop {
        let answers = join_all(urls.iter().map(|url| async move {
            let response = http
                .get(format!("{url}/v1/admin/state-hash"))
                .header("Authorization", auth)
                .timeout(PROBE_TIMEOUT)
                .send()
                .await
                .ok()?;
            response.json::<StateHash>().await.ok()
        }))
        .await;
        for (i, answer) in answers.into_iter().enumerate() {
            if let Some(answer) = answer {
                last[i] = Some(answer.seq);
                seen[i].insert(answer.seq, answer.state_hash);
            }
        }
        let common = seen[0]
            .keys()
            .filter(|seq| seen.iter().all(|s| s.contains_key(seq)))
            .max()
            .copied();
        if let Some(seq) = common {
            let hashes: Vec<String> = seen.iter().map(|s| s[&seq].clone()).collect();
            return if hashes.iter().all(|h| *h == hashes[0]) {
                Agreement::Same {
                    seq,
                    hash: hashes[0].clone(),
                }
            } else {
                Agreement::Differ { seq, hashes }
            };
        }
        if Instant::now() > deadline {
            return Agreement::NoCommonSeq { last };
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

/// One round's result.
struct Round {
    removal: Removal,
    from: String,
    epoch: u64,
    /// The new leader, its epoch and the takeover time; None: no takeover in time.
    to: Option<(String, u64, Duration)>,
}

/// Runs the scenario and prints its report; the last line is the machine-readable one. The
/// nodes it started are stopped, and a node it paused resumed, however it ends (Ctrl-C too).
pub async fn run(args: Args) -> anyhow::Result<Summary> {
    tokio::select! {
        result = scenario(args) => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted (the nodes started are killed, a paused one resumed)"),
    }
}

async fn scenario(args: Args) -> anyhow::Result<Summary> {
    ensure!(
        args.takeovers > 0 && args.buyers > 0 && args.order_every_ms > 0,
        "--takeovers, --buyers and --order-every-ms must be positive"
    );
    let run_id = format!(
        "{:x}",
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() % 0xffff_ffff
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(args.request_timeout_ms))
        .connect_timeout(PROBE_TIMEOUT)
        .pool_max_idle_per_host(args.buyers + 4)
        .tcp_nodelay(true)
        .build()?;
    let ready_timeout = Duration::from_secs(args.ready_timeout_s);
    let ttl = Duration::from_millis(args.leader_ttl_ms);

    let (mut cluster, removal) = match (args.spawn, args.urls.is_empty()) {
        (Some(n), true) => {
            ensure!(n >= 2, "--spawn needs at least 2 nodes for a takeover");
            let binary = args.binary.clone().context("--spawn needs --binary")?;
            let database_url = args
                .database_url
                .clone()
                .context("--spawn needs --database-url (a fresh database)")?;
            local_only("--database-url", &database_url, true)?;
            if let Some(redis_url) = &args.redis_url {
                local_only("--redis-url", redis_url, true)?;
            }
            let dir = std::env::temp_dir().join(format!("offpeak-failover-{run_id}"));
            println!(
                "failover: starting {n} nodes of {} (leader TTL {} ms; logs under {})",
                binary.display(),
                args.leader_ttl_ms,
                dir.display()
            );
            let spawner = Spawner {
                binary,
                database_url,
                redis_url: args.redis_url.clone(),
                secret: args.secret.clone(),
                leader_ttl_ms: args.leader_ttl_ms,
                dir,
                run_id: run_id.clone(),
            };
            let cluster = Cluster::spawn(spawner, n, &http, ready_timeout).await?;
            (cluster, args.signal.unwrap_or(Removal::Alternate))
        }
        (None, false) => {
            ensure!(args.urls.len() >= 2, "--urls needs at least 2 nodes");
            for url in &args.urls {
                local_only("--urls", url, false)?;
            }
            let removal = args.signal.unwrap_or(Removal::Stop);
            ensure!(
                removal == Removal::Stop,
                "nodes given by --urls are only paused (--signal stop)"
            );
            (
                Cluster::attach(&args.urls, &args.pids, &http).await?,
                removal,
            )
        }
        _ => bail!("give either --spawn N (with --binary and --database-url) or --urls"),
    };
    for node in &cluster.nodes {
        println!("failover: {} at {} (pid {})", node.id, node.url, node.pid);
    }
    let view = cluster_view(&http, &cluster.nodes[0].url).await?;
    println!("failover: /v1/cluster {view}");
    let mut leader = cluster.all_ready(&http, ready_timeout).await?;

    let first = &cluster.nodes[0].url;
    let pools: Value = http
        .get(format!("{first}/v1/pools"))
        .send()
        .await
        .context("GET /v1/pools")?
        .json()
        .await?;
    ensure!(
        pools["pools"]
            .as_array()
            .is_some_and(|list| list.iter().any(|p| p["id"] == args.pool.as_str())),
        "the cluster has no pool {:?}",
        args.pool
    );

    let target = Target::new(first, &args.secret, &args.issuer, &args.audience)?;
    let token_ttl = Duration::from_secs(24 * 3600);
    let writers = Arc::new(Writers {
        http: http.clone(),
        urls: cluster.urls.clone(),
        stop: AtomicBool::new(false),
        give_up: Duration::from_secs(args.give_up_s),
        acked: AtomicU64::new(0),
        acked_repeat: AtomicU64::new(0),
        leases: AtomicU64::new(0),
        blocks: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        rate_limited: AtomicU64::new(0),
        gave_up: AtomicU64::new(0),
        refused: Mutex::new(BTreeMap::new()),
    });
    let mut buyers = Vec::new();
    let mut buyer_tokens = Vec::new();
    for n in 0..args.buyers {
        let token = target.token(&format!("failover-{run_id}-buyer-{n}"), "buyer", token_ttl)?;
        buyer_tokens.push(token.clone());
        buyers.push(tokio::spawn(buyer(
            writers.clone(),
            (n, run_id.clone(), token),
            args.pool.clone(),
            (
                Duration::from_millis(args.order_every_ms),
                args.take_every,
                args.rest_every,
            ),
        )));
    }
    let supplier_task = (args.release_every_ms > 0)
        .then(|| -> anyhow::Result<_> {
            let token = target.token(
                &format!("failover-{run_id}-supplier"),
                "supplier",
                token_ttl,
            )?;
            Ok(tokio::spawn(supplier(
                writers.clone(),
                token,
                args.pool.clone(),
                run_id.clone(),
                args.block_gpus,
                Duration::from_millis(args.release_every_ms),
            )))
        })
        .transpose()?;
    println!(
        "failover: {} buyers, an order each per {} ms round-robin over {} nodes (a take every {}, \
         a resting bid every {}), a {}-GPU block per {} ms; {} takeovers ({})",
        args.buyers,
        args.order_every_ms,
        cluster.nodes.len(),
        args.take_every,
        args.rest_every,
        args.block_gpus,
        args.release_every_ms,
        args.takeovers,
        match removal {
            Removal::Alternate => "SIGKILL and SIGSTOP by turns",
            Removal::Kill => "SIGKILL",
            Removal::Stop => "SIGSTOP",
        },
    );
    let settle = Duration::from_secs(args.settle_s);
    writes_flow(&writers, settle, ready_timeout).await?;

    let takeover_timeout = Duration::from_secs(args.takeover_timeout_s);
    let mut rounds: Vec<Round> = Vec::new();
    for r in 1..=args.takeovers {
        let how = match removal {
            Removal::Alternate if r % 2 == 1 => Removal::Kill,
            Removal::Alternate => Removal::Stop,
            other => other,
        };
        let old = leader;
        let signalled = Instant::now();
        match how {
            Removal::Kill => cluster.nodes[old.index].kill()?,
            _ => cluster.nodes[old.index].pause()?,
        }
        let to = cluster
            .takeover(&http, old, signalled, takeover_timeout)
            .await;
        match how {
            Removal::Kill => cluster.restart(old.index).await?,
            _ => {
                let held = signalled.elapsed();
                if held < ttl + PAUSE_PAST_TTL {
                    tokio::time::sleep(ttl + PAUSE_PAST_TTL - held).await;
                }
                cluster.nodes[old.index].resume()?;
            }
        }
        let round = Round {
            removal: how,
            from: cluster.nodes[old.index].id.clone(),
            epoch: old.epoch,
            to: to.map(|(i, epoch, took)| (cluster.nodes[i].id.clone(), epoch, took)),
        };
        let signal = if how == Removal::Kill {
            "SIGKILL"
        } else {
            "SIGSTOP"
        };
        match &round.to {
            Some((id, epoch, took)) => println!(
                "failover round {r}/{}: {signal} {} (leader at epoch {}) -> {id} leads at epoch {epoch} after {:.0} ms",
                args.takeovers,
                round.from,
                round.epoch,
                took.as_secs_f64() * 1000.0
            ),
            None => println!(
                "failover round {r}/{}: {signal} {} (leader at epoch {}) -> no takeover within {takeover_timeout:?}",
                args.takeovers, round.from, round.epoch
            ),
        }
        rounds.push(round);
        leader = cluster.all_ready(&http, ready_timeout).await?;
        writes_flow(&writers, settle, ready_timeout).await?;
    }

    // The end: stop the writers (each finishes the write it is on), let the cluster settle.
    writers.stop.store(true, Ordering::Relaxed);
    let mut acked_by_buyer = Vec::new();
    for handle in buyers {
        acked_by_buyer.push(handle.await?);
    }
    if let Some(handle) = supplier_task {
        handle.await?;
    }
    leader = cluster.all_ready(&http, ready_timeout).await?;
    let leader_url = cluster.nodes[leader.index].url.clone();
    let mut total = Audit::default();
    for (acked, token) in acked_by_buyer.iter().zip(&buyer_tokens) {
        let one = audit_account(&http, &leader_url, &format!("Bearer {token}"), acked).await?;
        total.lost += one.lost;
        total.doubled += one.doubled;
    }
    let admin = target.token(&format!("failover-{run_id}-admin"), "admin", token_ttl)?;
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url.clone()).collect();
    let agreed = agreement(&http, &urls, &format!("Bearer {admin}")).await;

    // The report.
    let mut took_ms: Vec<f64> = rounds
        .iter()
        .map(|r| {
            r.to.as_ref()
                .map_or(takeover_timeout, |t| t.2)
                .as_secs_f64()
                * 1000.0
        })
        .collect();
    let per_round: Vec<String> = took_ms.iter().map(|ms| format!("{ms:.0}")).collect();
    took_ms.sort_by(f64::total_cmp);
    let kills = rounds.iter().filter(|r| r.removal == Removal::Kill).count();
    let acked: u64 = acked_by_buyer.iter().map(|a| a.len() as u64).sum();
    println!(
        "failover: takeover ms per round [{}] ({kills} SIGKILL, {} SIGSTOP, {} without takeover); \
         p50 {:.0} p99 {:.0} max {:.0}",
        per_round.join(", "),
        rounds.len() - kills,
        rounds.iter().filter(|r| r.to.is_none()).count(),
        percentile(&took_ms, 0.5),
        percentile(&took_ms, 0.99),
        took_ms.last().copied().unwrap_or(0.0),
    );
    let refused = writers
        .refused
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default();
    println!(
        "failover: orders acked {acked} ({} by a repeat's 200, {} leases at once); blocks {}; \
         retried sends {} ({} of them 429); given up {}; refused {:?}",
        writers.acked_repeat.load(Ordering::Relaxed),
        writers.leases.load(Ordering::Relaxed),
        writers.blocks.load(Ordering::Relaxed),
        writers.retries.load(Ordering::Relaxed),
        writers.rate_limited.load(Ordering::Relaxed),
        writers.gave_up.load(Ordering::Relaxed),
        refused,
    );
    println!(
        "failover: audit on the leader {} ({leader_url}): lost {} doubled {}",
        cluster.nodes[leader.index].id, total.lost, total.doubled
    );
    let same_state = matches!(agreed, Agreement::Same { .. });
    match &agreed {
        Agreement::Same { seq, hash } => println!(
            "failover: every node ({}) has state hash {hash} at seq {seq}",
            urls.len()
        ),
        Agreement::Differ { seq, hashes } => {
            println!("failover: STATE HASHES DIFFER at seq {seq}: {hashes:?}")
        }
        Agreement::NoCommonSeq { last } => println!(
            "failover: the nodes reported no common seq within {AGREE_TIMEOUT:?} (last seqs {last:?})"
        ),
    }
    let summary = Summary {
        takeover_p50_ms: percentile(&took_ms, 0.5),
        takeover_p99_ms: percentile(&took_ms, 0.99),
        acked,
        lost: total.lost,
        doubled: total.doubled,
        non_retryable_errors: writers.non_retryable(),
        same_state,
    };
    cluster.finish();
    println!(
        "offpeak-load failover: takeover_p99_ms={:.0} acked={} lost={} doubled={} non_retryable_errors={}",
        summary.takeover_p99_ms,
        summary.acked,
        summary.lost,
        summary.doubled,
        summary.non_retryable_errors
    );
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_urls() {
        assert!(local_only("x", "http://127.0.0.1:8080", false).is_ok());
        assert!(local_only("x", "http://[::1]:8080/", false).is_ok());
        assert!(local_only("x", "postgres://postgres:pw@localhost/db", true).is_ok());
        assert!(local_only("x", "postgres:///db?host=/run/postgresql", true).is_ok());
        assert!(local_only("x", "postgres:///db", false).is_err());
        assert!(local_only("x", "http://10.0.0.1:8080", false).is_err());
        assert!(local_only("x", "postgres://u@db.example.com/x", true).is_err());
    }

    #[test]
    fn reads_the_address_of_a_listening_line() {
        let plain = "2026-01-01T00:00:00Z  INFO offpeak::startup: listening on http://127.0.0.1:41234 address=127.0.0.1:41234";
        assert_eq!(listening_address(plain).as_deref(), Some("127.0.0.1:41234"));
        let colored =
            "\x1b[32m INFO\x1b[0m listening on http://[::1]:8080\x1b[0m \x1b[3maddress\x1b[0m";
        assert_eq!(listening_address(colored).as_deref(), Some("[::1]:8080"));
        assert_eq!(listening_address("starting"), None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&ten, 0.5), 5.0);
        assert_eq!(percentile(&ten, 0.99), 10.0);
        assert_eq!(percentile(&[], 0.99), 0.0);
    }

    fn acked(client_order_id: &str, order_id: &str) -> Acked {
        Acked {
            client_order_id: client_order_id.into(),
            order_id: order_id.into(),
        }
    }

    fn listed(id: &str, client_order_id: &str) -> ListedOrder {
        ListedOrder {
            id: id.into(),
            client_order_id: Some(client_order_id.into()),
        }
    }

    #[test]
    fn audit_counts_lost_and_doubled_orders() {
        let acks = [
            acked("a", "1"),
            acked("b", "2"),
            acked("c", "3"),
            acked("d", "4"),
        ];
        // "a" listed once; "b" listed under a second id too; "c" found only by id; "d" nowhere;
        // "e" (never acknowledged) placed twice.
        let list = [
            listed("1", "a"),
            listed("2", "b"),
            listed("5", "b"),
            listed("6", "e"),
            listed("7", "e"),
        ];
        let by_id = HashSet::from(["3".to_owned()]);
        assert_eq!(
            audit(&acks, &list, &by_id),
            Audit {
                lost: 1,
                doubled: 2
            }
        );
        // An acknowledged id that differs from the one listed under its client id is doubled.
        let by_id = HashSet::from(["9".to_owned()]);
        assert_eq!(
            audit(&[acked("x", "9")], &[listed("8", "x")], &by_id),
            Audit {
                lost: 0,
                doubled: 1
            }
        );
    }

    #[test]
    fn orders_are_takes_rests_or_expiring_bids() {
        let take = order_body("p.q", 0, 10, 10, 10);
        assert_eq!(take["price"], TAKE_PRICE);
        assert_eq!(take["tif"], "ioc");
        let rest = order_body("p.q", 0, 9, 10, 10);
        assert_eq!(rest["tif"], "gtd");
        assert!(rest["expires_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')));
        let expiring = order_body("p.q", 0, 3, 10, 10);
        assert_eq!(expiring["tif"], "ioc");
        assert_ne!(expiring["price"], TAKE_PRICE);
    }
}
