//! Cluster mode (issue 11): several real `offpeak serve` processes on one PostgreSQL, one
//! leader and hot standbys. The leader is killed (-9), frozen (SIGSTOP past its TTL), stopped
//! (SIGTERM) and cut off from PostgreSQL (a network namespace behind a proxy that can be cut).
//! After each, a standby leads at a higher epoch, no acknowledged write is lost or placed twice,
//! the journal has no gap, and every node ends on the same state hash at the same seq. The
//! embedded SQLite store stays single-process.
//!
//! Every node runs with `OFFPEAK_LEADER_TTL_MS=1000`, so a takeover takes about a second;
//! the SIGTERM test keeps the default 3 s, so that a handover cannot pass for an expiry.
//! `TEST_LOG=1` prints every node's log as it comes, each line prefixed by its node id; without
//! it, a failing test prints the tail of each node's log.

use crate::helpers::{code, eventually, rfc3339_in, token, TestDb, POOL, SECRET};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

/// The leader TTL every node runs with: short, so a takeover takes about a second.
pub(crate) const TTL_MS: u64 = 1000;

/// How many of a node's last log lines are kept, to print when a test fails.
const LOG_TAIL_LINES_MAX: usize = 400;

/// How many of them a failing test prints per node.
const LOG_TAIL_PRINTED_MAX: usize = 80;

/// How long a node may take from spawn to logging its address (a debug build, two cores).
const START_WITHIN: Duration = Duration::from_secs(30);

/// How long a takeover may take: the TTL plus a replay, with a wide margin for a busy machine.
const TAKEOVER_WITHIN: Duration = Duration::from_secs(15);

/// How long nodes may take to reach the same seq and state hash once writes stop.
const CONVERGE_WITHIN: Duration = Duration::from_secs(15);

/// How long one order may be retried (503s, refused connections) before the test gives up.
const ORDER_RETRY_WITHIN: Duration = Duration::from_secs(20);

pub(crate) fn redis_url() -> String {
    std::env::var("OFFPEAK_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// An HTTP client whose requests give up after `timeout` (a frozen node never answers).
pub(crate) fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .expect("reqwest client")
}

/// How a node is started.
#[derive(Clone)]
pub(crate) struct NodeSpec {
    id: String,
    env: Vec<(String, String)>,
    /// Run inside this network namespace (`ip netns exec NS offpeak serve`).
    netns: Option<String>,
    /// The host clients reach it on, when that is not the one it logs (a node on 0.0.0.0).
    reach_host: Option<String>,
    /// A data directory to share (the SQLite test); by default the node gets a fresh one.
    data_dir: Option<PathBuf>,
}

fn common_env() -> Vec<(String, String)> {
    [
        ("OFFPEAK_JWT_SECRET", SECRET),
        ("OFFPEAK_HTTP_WORKERS", "2"),
        ("OFFPEAK_RATE_LIMIT_PER_S", "1000000"),
        ("OFFPEAK_RATE_LIMIT_BURST", "1000000"),
        // No idle ticks: the state hash of a quiet cluster stays put between two reads.
        ("OFFPEAK_IDLE_TICK_MS", "3600000"),
        ("RUST_LOG", "info"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

impl NodeSpec {
    /// Cluster node `node-<i>` on `database_url`, on Redis under `redis_prefix` if given.
    pub(crate) fn cluster(i: usize, database_url: &str, redis_prefix: Option<&str>) -> NodeSpec {
        let id = format!("node-{i}");
        let mut env = common_env();
        env.extend(
            [
                ("DATABASE_URL", database_url.to_owned()),
                ("OFFPEAK_NODE_ID", id.clone()),
                ("OFFPEAK_LEADER_TTL_MS", TTL_MS.to_string()),
                ("OFFPEAK_LISTEN", "127.0.0.1:0".to_owned()),
            ]
            .map(|(k, v)| (k.to_owned(), v)),
        );
        if let Some(prefix) = redis_prefix {
            env.extend(
                [
                    ("REDIS_URL", redis_url()),
                    ("OFFPEAK_REDIS_PREFIX", prefix.to_owned()),
                    ("OFFPEAK_REDIS_CONSUMER", id.clone()),
                ]
                .map(|(k, v)| (k.to_owned(), v)),
            );
        }
        NodeSpec {
            id,
            env,
            netns: None,
            reach_host: None,
            data_dir: None,
        }
    }

    /// A node on the embedded SQLite store in `data_dir` (no `DATABASE_URL`).
    fn embedded(id: &str, data_dir: PathBuf) -> NodeSpec {
        let mut env = common_env();
        env.push(("OFFPEAK_LISTEN".to_owned(), "127.0.0.1:0".to_owned()));
        NodeSpec {
            id: id.to_owned(),
            env,
            netns: None,
            reach_host: None,
            data_dir: Some(data_dir),
        }
    }

    /// Sets (or replaces) one variable.
    fn set(mut self, key: &str, value: &str) -> NodeSpec {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// Spawns `offpeak serve` for `spec`, with a thread that keeps its stderr drained into `log`
/// (echoed with `TEST_LOG`), and a channel that gets the address it logs.
fn spawn_child(
    spec: &NodeSpec,
    data_dir: &std::path::Path,
    log: &Arc<Mutex<VecDeque<String>>>,
) -> (Child, std::thread::JoinHandle<()>, mpsc::Receiver<String>) {
    let mut command = match &spec.netns {
        Some(ns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_offpeak")]);
            command
        }
        None => Command::new(env!("CARGO_BIN_EXE_offpeak")),
    };
    // Only what the test sets: nothing of the caller's OFFPEAK_* or DATABASE_URL leaks in.
    command
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env("OFFPEAK_DATA_DIR", data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", spec.id));
    let stderr = child.stderr.take().expect("stderr");
    let (found, address) = mpsc::channel();
    let (log, id) = (log.clone(), spec.id.clone());
    let echo = std::env::var_os("TEST_LOG").is_some();
    // Keep draining stderr for the child's whole life, or it blocks on a full pipe.
    let drain = std::thread::spawn(move || {
        let mut found = Some(found);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("listening on http://").nth(1) {
                if let Some(found) = found.take() {
                    let address: String = rest
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '\u{1b}')
                        .collect();
                    let _ = found.send(address);
                }
            }
            if echo {
                eprintln!("[{id}] {line}");
            }
            let mut log = log.lock().unwrap();
            if log.len() == LOG_TAIL_LINES_MAX {
                log.pop_front();
            }
            log.push_back(line);
        }
    });
    (child, drain, address)
}

/// A running `offpeak serve` child, killed on drop (SIGKILL ends a stopped process too).
pub(crate) struct Node {
    pub(crate) id: String,
    spec: NodeSpec,
    child: Child,
    /// `http://host:port`, empty until it logged its address.
    pub(crate) address: String,
    data_dir: PathBuf,
    _own_dir: Option<TempDir>,
    log: Arc<Mutex<VecDeque<String>>>,
    drain: Option<std::thread::JoinHandle<()>>,
    address_rx: Option<mpsc::Receiver<String>>,
    exited: Option<ExitStatus>,
}

impl Node {
    /// Spawns the node and waits for it to log its address.
    pub(crate) fn start(spec: NodeSpec) -> Node {
        let mut node = Node::launch(spec);
        node.wait_listening();
        node
    }

    /// Spawns the node without waiting for anything.
    fn launch(spec: NodeSpec) -> Node {
        let (data_dir, own_dir) = match &spec.data_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let dir = tempfile::tempdir().expect("temp dir");
                (dir.path().to_owned(), Some(dir))
            }
        };
        let log = Arc::default();
        let (child, drain, address_rx) = spawn_child(&spec, &data_dir, &log);
        Node {
            id: spec.id.clone(),
            spec,
            child,
            address: String::new(),
            data_dir,
            _own_dir: own_dir,
            log,
            drain: Some(drain),
            address_rx: Some(address_rx),
            exited: None,
        }
    }

    /// Waits for the address the node logs; panics (with its log) if it exits first.
    fn wait_listening(&mut self) {
        let rx = self.address_rx.take().expect("launched");
        let deadline = Instant::now() + START_WITHIN;
        let address = loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(address) => break address,
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(_) => {
                    let status = self.child.try_wait().ok().flatten();
                    panic!(
                        "{} never logged `listening on http://` (exit: {status:?}):\n{}",
                        self.id,
                        self.log_text()
                    );
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
                panic!(
                    "{} exited with {status} before listening:\n{}",
                    self.id,
                    self.log_text()
                );
            }
        };
        let address = match &self.spec.reach_host {
            Some(host) => {
                let port = address.rsplit_once(':').expect("host:port").1;
                format!("{host}:{port}")
            }
            None => address,
        };
        self.address = format!("http://{address}");
    }

    /// Starts the same node again (same id, environment and data directory) after it exited.
    pub(crate) fn restart(&mut self) {
        assert!(self.exited.is_some(), "{} is still running", self.id);
        if let Some(drain) = self.drain.take() {
            let _ = drain.join();
        }
        let (child, drain, address_rx) = spawn_child(&self.spec, &self.data_dir, &self.log);
        (self.child, self.drain, self.address_rx) = (child, Some(drain), Some(address_rx));
        self.exited = None;
        self.wait_listening();
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.id);
    }

    /// SIGKILL: no shutdown, no handover, no final snapshot.
    pub(crate) fn kill_9(&mut self) {
        let _ = self.child.kill();
        self.exited = Some(self.child.wait().expect("wait"));
    }

    /// SIGSTOP: the process freezes where it is (its leadership stops being renewed).
    pub(crate) fn stop(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after [`Node::stop`].
    pub(crate) fn cont(&self) {
        self.signal("CONT");
    }

    /// SIGTERM: a clean shutdown.
    fn term(&self) {
        self.signal("TERM");
    }

    /// Waits for the process to exit, and for its log to be read to the end.
    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {within:?}:\n{}",
                self.id,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        self.exited = Some(status);
        if let Some(drain) = self.drain.take() {
            let _ = drain.join();
        }
        status
    }

    /// The kept tail of the node's log.
    pub(crate) fn log_text(&self) -> String {
        let log = self.log.lock().unwrap();
        log.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// `GET /readyz`: status and body, `None` if the node did not answer.
    async fn readyz(&self, http: &reqwest::Client) -> Option<(StatusCode, Value)> {
        call(http, reqwest::Method::GET, &self.url("/readyz"), None, None).await
    }

    /// `GET /v1/cluster`, `None` if the node did not answer 200.
    async fn cluster(&self, http: &reqwest::Client) -> Option<Value> {
        match call(
            http,
            reqwest::Method::GET,
            &self.url("/v1/cluster"),
            None,
            None,
        )
        .await
        {
            Some((StatusCode::OK, body)) => Some(body),
            _ => None,
        }
    }

    /// `GET /v1/admin/state-hash`: `(seq, state_hash)`, `None` if the node did not answer 200.
    pub(crate) async fn state_hash(&self, http: &reqwest::Client) -> Option<(u64, String)> {
        let admin = token("root", "admin");
        let url = self.url("/v1/admin/state-hash");
        match call(http, reqwest::Method::GET, &url, Some(&admin), None).await {
            Some((StatusCode::OK, body)) => Some((
                body["seq"].as_u64()?,
                body["state_hash"].as_str()?.to_owned(),
            )),
            _ => None,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() && std::env::var_os("TEST_LOG").is_none() {
            let log = self.log.lock().unwrap();
            let skip = log.len().saturating_sub(LOG_TAIL_PRINTED_MAX);
            eprintln!("---- last log lines of {} ----", self.id);
            for line in log.iter().skip(skip) {
                eprintln!("[{}] {line}", self.id);
            }
        }
    }
}

/// Sends a request; `None` on a transport error (refused, reset, timed out).
pub(crate) async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> Option<(StatusCode, Value)> {
    let mut request = http.request(method, url);
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.ok()?;
    let status = response.status();
    let text = response.text().await.ok()?;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Some((status, value))
}

/// A Redis key prefix of the test's own; its keys are deleted (best effort) on drop.
pub(crate) struct RedisPrefix {
    pub(crate) prefix: String,
}

impl RedisPrefix {
    pub(crate) fn new() -> RedisPrefix {
        RedisPrefix {
            prefix: format!("c{:016x}", rand::random::<u64>()),
        }
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let pattern = format!("{}:*", self.prefix);
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(client) = redis::Client::open(redis_url()) else {
                    return;
                };
                let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                    return;
                };
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(&pattern)
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                if !keys.is_empty() {
                    let _: Result<(), _> =
                        redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
                }
            });
        })
        .join();
    }
}

/// What `/readyz` says about a node's place in the cluster.
#[derive(Debug, Clone)]
pub(crate) struct Role {
    pub(crate) ready: bool,
    pub(crate) role: String,
    pub(crate) leader: Option<String>,
    pub(crate) epoch: i64,
}

pub(crate) async fn role(http: &reqwest::Client, node: &Node) -> Option<Role> {
    let (status, body) = node.readyz(http).await?;
    Some(Role {
        ready: status == StatusCode::OK,
        role: body["role"].as_str()?.to_owned(),
        leader: body["leader"].as_str().map(str::to_owned),
        epoch: body["epoch"].as_i64()?,
    })
}

/// Waits until one of `nodes` is a ready leader at an epoch above `above_epoch`: its index in
/// `nodes` and its epoch.
pub(crate) async fn wait_leader(
    http: &reqwest::Client,
    nodes: &[&Node],
    above_epoch: i64,
) -> (usize, i64) {
    let names: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    eventually(
        TAKEOVER_WITHIN,
        &format!("a leader above epoch {above_epoch} among {names:?}"),
        || async {
            for (i, node) in nodes.iter().enumerate() {
                if let Some(r) = role(http, node).await {
                    if r.ready && r.role == "leader" && r.epoch > above_epoch {
                        return Some((i, r.epoch));
                    }
                }
            }
            None
        },
    )
    .await
}

/// Waits until `node` is a ready standby following `leader` at `epoch`.
pub(crate) async fn wait_standby(
    http: &reqwest::Client,
    node: &Node,
    leader: &str,
    epoch: i64,
) -> Role {
    let mut last = None;
    let found = tokio::time::timeout(TAKEOVER_WITHIN, async {
        loop {
            let r = role(http, node).await;
            if let Some(r) = &r {
                if r.ready
                    && r.role == "standby"
                    && r.leader.as_deref() == Some(leader)
                    && r.epoch == epoch
                {
                    return r.clone();
                }
            }
            last = r;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        panic!(
            "{} is not a ready standby of {leader} at epoch {epoch} within {TAKEOVER_WITHIN:?}; \
             last /readyz: {last:?}",
            node.id
        )
    })
}

/// Starts `count` nodes on `db`: node-0 first, which becomes the leader, then the standbys.
/// Returns the nodes and the leader's epoch.
pub(crate) async fn start_cluster(
    http: &reqwest::Client,
    db: &TestDb,
    count: usize,
    redis_prefix: Option<&str>,
) -> (Vec<Node>, i64) {
    start_cluster_with(http, db, count, redis_prefix, |spec| spec).await
}

/// [`start_cluster`], each node's spec changed by `change`.
async fn start_cluster_with(
    http: &reqwest::Client,
    db: &TestDb,
    count: usize,
    redis_prefix: Option<&str>,
    change: impl Fn(NodeSpec) -> NodeSpec,
) -> (Vec<Node>, i64) {
    let first = Node::start(change(NodeSpec::cluster(0, &db.url(), redis_prefix)));
    let (_, epoch) = wait_leader(http, &[&first], 0).await;
    let mut nodes = vec![first];
    for i in 1..count {
        let node = Node::start(change(NodeSpec::cluster(i, &db.url(), redis_prefix)));
        wait_standby(http, &node, "node-0", epoch).await;
        nodes.push(node);
    }
    (nodes, epoch)
}

/// Waits until every node reports the same seq and state hash, and that seq is the journal's
/// last; returns it.
pub(crate) async fn converged(
    http: &reqwest::Client,
    db: &TestDb,
    nodes: &[&Node],
) -> (u64, String) {
    let sql = db.client().await;
    let mut last = (0, Vec::new());
    let found = tokio::time::timeout(CONVERGE_WITHIN, async {
        loop {
            let journal_max: i64 = sql
                .query_one("SELECT coalesce(max(seq), 0) FROM journal", &[])
                .await
                .expect("journal max")
                .get(0);
            let mut hashes = Vec::new();
            for node in nodes {
                hashes.push((node.id.clone(), node.state_hash(http).await));
            }
            if let Some((seq, hash)) = hashes[0].1.clone() {
                let same = hashes
                    .iter()
                    .all(|(_, h)| h.as_ref() == Some(&(seq, hash.clone())));
                if same && seq as i64 == journal_max {
                    return (seq, hash);
                }
            }
            last = (journal_max, hashes);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        panic!(
            "the nodes never reached one seq and state hash at the journal's end \
             (journal max seq, nodes' (seq, hash)): {last:?}"
        )
    })
}

/// The journal's seqs are exactly 1..=max.
pub(crate) async fn assert_journal_has_no_gap(db: &TestDb) -> i64 {
    let row = db
        .client()
        .await
        .query_one(
            "SELECT count(*), coalesce(min(seq), 1), coalesce(max(seq), 0) FROM journal",
            &[],
        )
        .await
        .expect("journal seqs");
    let (count, min, max): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(min, 1, "the journal starts at seq 1");
    assert_eq!(
        count, max,
        "the journal's seqs 1..={max} have a gap ({count} rows)"
    );
    max
}

/// Releases `blocks` big blocks into [`POOL`] through `node` (forwarded if it is a standby).
async fn release_capacity(http: &reqwest::Client, node: &Node, blocks: usize) {
    let supplier = token("dc1", "supplier");
    for i in 0..blocks {
        let body = json!({"block_id": format!("blk-{i}"), "pool": POOL, "gpus": 4096,
                          "reserve_price": "1.00", "available_until": rfc3339_in(3 * 3600)});
        let answer = call(
            http,
            reqwest::Method::POST,
            &node.url("/v1/capacity"),
            Some(&supplier),
            Some(body),
        )
        .await;
        assert!(
            matches!(answer, Some((StatusCode::CREATED, _))),
            "release blk-{i} through {}: {answer:?}",
            node.id
        );
    }
}

/// One order a writer got acknowledged.
#[derive(Clone, Debug)]
pub(crate) struct Ack {
    buyer: String,
    client_order_id: String,
    order_id: String,
    at: Instant,
}

/// The bid a writer places for `client_order_id`: mostly bids that lease at once, some that rest.
fn order_body(client_order_id: &str, n: usize) -> Value {
    let price = if n % 4 == 3 { "0.50" } else { "2.00" };
    json!({"pool": POOL, "gpus": 1, "price": price, "duration_s": 3600,
           "client_order_id": client_order_id})
}

/// Places one order, round-robin over `addresses` from `first`, retrying 503s and transport
/// errors with the same `client_order_id` until it is acknowledged (200 or 201).
async fn place_until_acked(
    http: &reqwest::Client,
    addresses: &[String],
    first: usize,
    buyer: &str,
    client_order_id: &str,
    body: Value,
) -> Ack {
    let auth = token(buyer, "buyer");
    let deadline = Instant::now() + ORDER_RETRY_WITHIN;
    for attempt in 0.. {
        let address = &addresses[(first + attempt) % addresses.len()];
        let url = format!("{address}/v1/orders");
        let answer = call(
            http,
            reqwest::Method::POST,
            &url,
            Some(&auth),
            Some(body.clone()),
        )
        .await;
        match &answer {
            Some((StatusCode::OK | StatusCode::CREATED, body)) => {
                assert_eq!(
                    body["order"]["client_order_id"], client_order_id,
                    "{url}: {body}"
                );
                return Ack {
                    buyer: buyer.to_owned(),
                    client_order_id: client_order_id.to_owned(),
                    order_id: body["order"]["id"].as_str().expect("order id").to_owned(),
                    at: Instant::now(),
                };
            }
            Some((StatusCode::SERVICE_UNAVAILABLE, body)) => {
                assert!(
                    matches!(code(body), "no_leader" | "unavailable"),
                    "a 503 says no_leader or unavailable: {url}: {body}"
                );
            }
            None => {}
            Some((status, body)) => panic!("{client_order_id} at {url}: {status} {body}"),
        }
        assert!(
            Instant::now() < deadline,
            "{client_order_id} never acknowledged within {ORDER_RETRY_WITHIN:?}; last: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unreachable!()
}

/// Writers placing orders round-robin over every node until told to stop.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<Vec<Ack>>>,
}

impl Load {
    /// `writers` writers over `nodes`; client order ids are `<tag>-w<w>-n<n>`.
    pub(crate) fn start(http: &reqwest::Client, nodes: &[Node], writers: usize, tag: &str) -> Load {
        let addresses: Vec<String> = nodes.iter().map(|n| n.address.clone()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..writers)
            .map(|w| {
                let (http, addresses, stop) = (http.clone(), addresses.clone(), stop.clone());
                let tag = tag.to_owned();
                tokio::spawn(async move {
                    let buyer = format!("buyer-{w}");
                    let mut acks = Vec::new();
                    for n in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let id = format!("{tag}-w{w}-n{n}");
                        let body = order_body(&id, n);
                        acks.push(
                            place_until_acked(&http, &addresses, w + n, &buyer, &id, body).await,
                        );
                    }
                    acks
                })
            })
            .collect();
        Load { stop, workers }
    }

    /// Stops the writers (each finishes its current order) and returns every acknowledgement.
    pub(crate) async fn finish(self) -> Vec<Ack> {
        self.stop.store(true, Ordering::Relaxed);
        let mut acks = Vec::new();
        for worker in self.workers {
            acks.extend(worker.await.expect("writer"));
        }
        acks
    }
}

/// Every acknowledged order is on `node` (GET as its buyer), each client order id maps to one
/// order, and the orders table holds exactly one row per acknowledged id of `tag`.
pub(crate) async fn assert_each_ack_once(
    http: &reqwest::Client,
    db: &TestDb,
    node: &Node,
    acks: &[Ack],
) {
    let mut ids = HashSet::new();
    for ack in acks {
        assert!(
            ids.insert(ack.order_id.clone()),
            "order {} acknowledged for two client order ids",
            ack.order_id
        );
        let answer = call(
            http,
            reqwest::Method::GET,
            &node.url(&format!("/v1/orders/{}", ack.order_id)),
            Some(&token(&ack.buyer, "buyer")),
            None,
        )
        .await;
        let Some((StatusCode::OK, body)) = answer else {
            panic!(
                "acknowledged order {} ({}) is not on {}: {answer:?}",
                ack.order_id, ack.client_order_id, node.id
            );
        };
        assert_eq!(
            body["order"]["client_order_id"],
            ack.client_order_id.as_str()
        );
    }
    let sql = db.client().await;
    let twice: i64 = sql
        .query_one(
            "SELECT count(*) FROM (SELECT account, client_order_id FROM orders \
               WHERE client_order_id IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1) t",
            &[],
        )
        .await
        .expect("doubles")
        .get(0);
    assert_eq!(twice, 0, "a client order id was placed twice");
    let acked: HashSet<(String, String)> = acks
        .iter()
        .map(|a| (a.buyer.clone(), a.client_order_id.clone()))
        .collect();
    let rows: HashSet<(String, String)> = sql
        .query(
            "SELECT account, client_order_id FROM orders WHERE client_order_id IS NOT NULL",
            &[],
        )
        .await
        .expect("orders")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let unacked: Vec<_> = rows.difference(&acked).collect();
    assert!(
        unacked.is_empty(),
        "orders no one got an answer for: {unacked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_under_load_loses_and_doubles_no_order() {
    let db = TestDb::create().await;
    let redis = RedisPrefix::new();
    let http = client(Duration::from_secs(3));
    let (mut nodes, epoch) = start_cluster(&http, &db, 3, Some(&redis.prefix)).await;
    let view = eventually(
        Duration::from_secs(10),
        "three nodes in /v1/cluster",
        || async {
            let view = nodes[2].cluster(&http).await?;
            (nodes_by_id(&view).len() == 3).then_some(view)
        },
    )
    .await;
    assert_eq!(view["leader"], "node-0", "{view}");
    assert_eq!(view["epoch"], epoch, "{view}");
    let roles: Vec<(String, Value)> = {
        let mut by_id: Vec<_> = nodes_by_id(&view).into_iter().collect();
        by_id.sort_by(|a, b| a.0.cmp(&b.0));
        by_id
            .into_iter()
            .map(|(id, n)| (id, n["role"].clone()))
            .collect()
    };
    assert_eq!(
        roles,
        [
            ("node-0".to_owned(), json!("leader")),
            ("node-1".to_owned(), json!("standby")),
            ("node-2".to_owned(), json!("standby")),
        ],
        "{view}"
    );
    // Through a standby: forwarded to the leader.
    release_capacity(&http, &nodes[1], 4).await;

    let load = Load::start(&http, &nodes, 6, "k");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed_at = Instant::now();
    nodes[0].kill_9();
    let (i, new_epoch) = wait_leader(&http, &[&nodes[1], &nodes[2]], epoch).await;
    let (leader, took_over_at) = (i + 1, Instant::now());
    eprintln!(
        "kill -9: {} leads at epoch {new_epoch} {:?} after the kill",
        nodes[leader].id,
        killed_at.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let acks = load.finish().await;
    let after = acks.iter().filter(|a| a.at > took_over_at).count();
    assert!(acks.len() > 50, "the load got going: {} acks", acks.len());
    assert!(
        after > 10,
        "writes went on after the takeover: {after} acks"
    );

    // The killed node comes back as a standby of the new leader.
    nodes[0].restart();
    let leader_id = nodes[leader].id.clone();
    wait_standby(&http, &nodes[0], &leader_id, new_epoch).await;

    assert_each_ack_once(&http, &db, &nodes[leader], &acks).await;
    let max = assert_journal_has_no_gap(&db).await;
    let (seq, _) = converged(&http, &db, &[&nodes[0], &nodes[1], &nodes[2]]).await;
    assert_eq!(seq as i64, max);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_frozen_past_its_ttl_is_replaced_and_returns_as_a_standby() {
    let db = TestDb::create().await;
    let http = client(Duration::from_secs(3));
    let (nodes, epoch) = start_cluster(&http, &db, 3, None).await;
    release_capacity(&http, &nodes[0], 1).await;
    let all: Vec<String> = nodes.iter().map(|n| n.address.clone()).collect();
    let mut acks =
        vec![place_until_acked(&http, &all, 2, "acme", "before", order_body("before", 0)).await];

    nodes[0].stop();
    let stopped_at = Instant::now();
    // A write that reaches the frozen leader waits in its accept queue until SIGCONT.
    let to_frozen = {
        let (slow, url) = (client(Duration::from_secs(40)), nodes[0].url("/v1/orders"));
        tokio::spawn(async move {
            call(
                &slow,
                reqwest::Method::POST,
                &url,
                Some(&token("acme", "buyer")),
                Some(order_body("frozen", 0)),
            )
            .await
        })
    };
    let (i, new_epoch) = wait_leader(&http, &[&nodes[1], &nodes[2]], epoch).await;
    let took = stopped_at.elapsed();
    let (leader, standby) = (i + 1, 2 - i);
    let leader_id = nodes[leader].id.clone();
    eprintln!("SIGSTOP: {leader_id} leads at epoch {new_epoch} {took:?} after the stop");
    // The old leader renewed at most about TTL/3 before it froze: no one may lead before then.
    assert!(
        took >= Duration::from_millis(TTL_MS / 2),
        "{leader_id} took over {took:?} after the stop, before the TTL ran out"
    );
    for (n, node) in [(0, leader), (1, standby)] {
        let id = format!("during-{n}");
        let address = [nodes[node].address.clone()];
        acks.push(place_until_acked(&http, &address, 0, "acme", &id, order_body(&id, 0)).await);
    }

    nodes[0].cont();
    let back = wait_standby(&http, &nodes[0], &leader_id, new_epoch).await;
    eprintln!("SIGCONT: node-0 is a standby again: {back:?}");
    // The write it held while frozen: forwarded (and then in the journal) or refused with a
    // retryable 503, and then not committed by anyone.
    let sql = db.client().await;
    let answer = to_frozen.await.expect("request task");
    let shown = answer
        .as_ref()
        .map(|(status, body)| (status.as_u16(), code(body)));
    eprintln!("SIGCONT: the write held by the frozen leader got {shown:?}");
    match answer {
        Some((StatusCode::OK | StatusCode::CREATED, body)) => {
            acks.push(Ack {
                buyer: "acme".into(),
                client_order_id: "frozen".into(),
                order_id: body["order"]["id"].as_str().expect("id").to_owned(),
                at: Instant::now(),
            });
        }
        Some((StatusCode::SERVICE_UNAVAILABLE, body)) => {
            assert!(matches!(code(&body), "no_leader" | "unavailable"), "{body}");
            let n: i64 = sql
                .query_one(
                    "SELECT count(*) FROM orders WHERE client_order_id = 'frozen'",
                    &[],
                )
                .await
                .expect("count")
                .get(0);
            assert_eq!(
                n, 0,
                "a write answered 503 by the deposed leader was committed"
            );
            let address = [nodes[leader].address.clone()];
            let body = order_body("frozen", 0);
            acks.push(place_until_acked(&http, &address, 0, "acme", "frozen", body).await);
        }
        other => panic!("the write held by the frozen leader: {other:?}"),
    }
    // Writes sent to it now are forwarded to the new leader.
    let address = [nodes[0].address.clone()];
    let ack = place_until_acked(&http, &address, 0, "acme", "after", order_body("after", 0)).await;
    acks.push(ack);
    for _ in 0..5 {
        let r = role(&http, &nodes[0]).await.expect("node-0 answers");
        assert_eq!((r.role.as_str(), r.epoch), ("standby", new_epoch), "{r:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    assert_each_ack_once(&http, &db, &nodes[leader], &acks).await;
    let max = assert_journal_has_no_gap(&db).await;
    let (seq, _) = converged(&http, &db, &[&nodes[0], &nodes[1], &nodes[2]]).await;
    assert_eq!(seq as i64, max);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_leadership_to_a_standby_within_about_a_second() {
    let db = TestDb::create().await;
    let http = client(Duration::from_secs(3));
    // The default TTL: an expiry would take 2 to 3 s after the signal (the last renewal was
    // at most TTL/3 before it), so a takeover within 2 s is the handover's, not the TTL's.
    let ttl_ms = 3000;
    let (mut nodes, epoch) = start_cluster_with(&http, &db, 3, None, |spec| {
        spec.set("OFFPEAK_LEADER_TTL_MS", &ttl_ms.to_string())
    })
    .await;
    release_capacity(&http, &nodes[0], 1).await;
    let load = Load::start(&http, &nodes, 2, "t");
    tokio::time::sleep(Duration::from_millis(800)).await;

    nodes[0].term();
    let signalled_at = Instant::now();
    let (i, new_epoch) = eventually(TAKEOVER_WITHIN, "a new leader", || async {
        for (i, node) in nodes[1..].iter().enumerate() {
            if let Some(r) = role(&http, node).await {
                if r.ready && r.role == "leader" && r.epoch > epoch {
                    return Some((i, r.epoch));
                }
            }
        }
        None
    })
    .await;
    let handover = signalled_at.elapsed();
    let leader = i + 1;
    eprintln!(
        "SIGTERM: {} leads at epoch {new_epoch} {handover:?} after the signal",
        nodes[leader].id
    );
    let status = nodes[0].wait_exit(Duration::from_secs(15));
    assert!(status.success(), "the old leader exits cleanly: {status}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acks = load.finish().await;
    assert!(
        handover < Duration::from_secs(2),
        "handover took {handover:?} with a TTL of {ttl_ms} ms: the standby waited for the \
         lease to expire instead of being handed it (the contract: about a second)"
    );

    assert_each_ack_once(&http, &db, &nodes[leader], &acks).await;
    let max = assert_journal_has_no_gap(&db).await;
    let (seq, _) = converged(&http, &db, &[&nodes[1], &nodes[2]]).await;
    assert_eq!(seq as i64, max);
}

/// A WebSocket client of the feed.
struct Feed {
    stream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    node: String,
}

impl Feed {
    async fn subscribe(node: &Node, channel: &str) -> (Feed, Value) {
        let url = format!("{}/v1/ws", node.address.replacen("http://", "ws://", 1));
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("WebSocket connect");
        let mut feed = Feed {
            stream,
            node: node.id.clone(),
        };
        let subscribe = json!({"op": "subscribe", "channels": [channel]});
        feed.stream
            .send(Message::text(subscribe.to_string()))
            .await
            .expect("subscribe");
        let snapshot = feed
            .until("snapshot", |m| {
                m["type"] == "snapshot" && m["channel"] == channel
            })
            .await;
        (feed, snapshot)
    }

    /// The next message satisfying `wanted`, within 10 s; panics naming `what` and what came.
    async fn until(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut skipped = Vec::new();
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next()).await;
            match next {
                Ok(Some(Ok(Message::Text(text)))) => {
                    let message: Value = serde_json::from_str(&text).expect("JSON message");
                    if wanted(&message) {
                        return message;
                    }
                    skipped.push(message);
                }
                Ok(Some(Ok(_))) => {}
                other => panic!(
                    "{}'s feed: no {what} ({other:?}); it sent instead: {skipped:?}",
                    self.node
                ),
            }
        }
    }
}

/// A book delta or snapshot without what may differ between nodes: seqs and levels.
fn book_part(message: &Value) -> Value {
    let mut changes: Vec<String> = message["changes"]
        .as_array()
        .map(|c| c.iter().map(Value::to_string).collect())
        .unwrap_or_default();
    changes.sort();
    json!({"type": message["type"], "seq": message["seq"], "prev_seq": message["prev_seq"],
           "bids": message["bids"], "asks": message["asks"], "changes": changes})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_serves_the_leaders_book_and_feed() {
    let db = TestDb::create().await;
    let redis = RedisPrefix::new();
    let http = client(Duration::from_secs(5));
    let (nodes, _) = start_cluster(&http, &db, 3, Some(&redis.prefix)).await;
    converged(&http, &db, &[&nodes[0], &nodes[1], &nodes[2]]).await;
    let channel = format!("book:{POOL}");
    let (mut on_leader, snapshot_leader) = Feed::subscribe(&nodes[0], &channel).await;
    let (mut on_standby, snapshot_standby) = Feed::subscribe(&nodes[1], &channel).await;
    assert_eq!(book_part(&snapshot_leader), book_part(&snapshot_standby));

    // Each write, sent round-robin to any node, changes the book once; both feeds carry the
    // same delta at the same seq.
    let supplier = token("sched", "supplier");
    let buyer = token("acme", "buyer");
    let release = |block: &str, price: &str| {
        json!({"block_id": block, "pool": POOL, "gpus": 8, "reserve_price": price,
               "available_until": rfc3339_in(6 * 3600)})
    };
    let bid = |price: &str| json!({"pool": POOL, "gpus": 4, "price": price, "duration_s": 3600});
    let writes = [
        ("/v1/capacity", &supplier, release("b1", "2.00")),
        ("/v1/capacity", &supplier, release("b2", "2.20")),
        ("/v1/orders", &buyer, bid("1.50")),
        ("/v1/orders", &buyer, bid("1.60")),
        // Crosses: leases 4 of b1.
        ("/v1/orders", &buyer, bid("2.05")),
    ];
    let mut first_bid = None;
    let mut seqs = Vec::new();
    for (k, (path, bearer, body)) in writes.into_iter().enumerate() {
        let node = &nodes[k % 3];
        let answer = call(
            &http,
            reqwest::Method::POST,
            &node.url(path),
            Some(bearer),
            Some(body),
        )
        .await;
        let Some((StatusCode::CREATED, body)) = answer else {
            panic!("write {k} through {}: {answer:?}", node.id);
        };
        if k == 2 {
            first_bid = body["order"]["id"].as_str().map(str::to_owned);
        }
        let is_delta = |m: &Value| m["type"] == "delta" && m["channel"] == channel;
        let (a, b) = (
            on_leader
                .until(&format!("delta of write {k}"), is_delta)
                .await,
            on_standby
                .until(&format!("delta of write {k}"), is_delta)
                .await,
        );
        assert_eq!(book_part(&a), book_part(&b), "write {k}: {a} vs {b}");
        seqs.push(a["seq"].as_u64().expect("seq"));
    }
    // A cancel through the third node.
    let id = first_bid.expect("first bid id");
    let answer = call(
        &http,
        reqwest::Method::DELETE,
        &nodes[2].url(&format!("/v1/orders/{id}")),
        Some(&buyer),
        None,
    )
    .await;
    assert!(matches!(answer, Some((StatusCode::OK, _))), "{answer:?}");
    let is_delta = |m: &Value| m["type"] == "delta" && m["channel"] == channel;
    let (a, b) = (
        on_leader.until("delta of the cancel", is_delta).await,
        on_standby.until("delta of the cancel", is_delta).await,
    );
    assert_eq!(book_part(&a), book_part(&b), "cancel: {a} vs {b}");
    seqs.push(a["seq"].as_u64().expect("seq"));
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // REST /book is the same everywhere, at the seq of the last delta.
    let path = format!("/v1/pools/{POOL}/book?depth=100");
    let books = eventually(Duration::from_secs(10), "one book on all nodes", || async {
        let mut books = Vec::new();
        for node in &nodes {
            match call(&http, reqwest::Method::GET, &node.url(&path), None, None).await {
                Some((StatusCode::OK, body)) => books.push(book_part(&body)),
                _ => return None,
            }
        }
        books.iter().all(|b| *b == books[0]).then_some(books)
    })
    .await;
    assert_eq!(books[0]["seq"], *seqs.last().expect("seqs"), "{books:?}");
    assert_eq!(
        books[0]["asks"].as_array().map(Vec::len),
        Some(2),
        "{books:?}"
    );
    assert_eq!(
        books[0]["bids"].as_array().map(Vec::len),
        Some(1),
        "{books:?}"
    );
    converged(&http, &db, &[&nodes[0], &nodes[1], &nodes[2]]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_the_same_sqlite_data_dir_exits_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let http = client(Duration::from_secs(5));
    let mut first = Node::start(NodeSpec::embedded("sqlite-1", dir.path().to_owned()));
    let ready = first.readyz(&http).await;
    assert!(
        matches!(ready, Some((StatusCode::OK, _))),
        "first: {ready:?}"
    );

    let started = Instant::now();
    let mut second = Node::launch(NodeSpec::embedded("sqlite-2", dir.path().to_owned()));
    let status = second.wait_exit(Duration::from_secs(10));
    let took = started.elapsed();
    let log = second.log_text();
    assert!(
        !status.success(),
        "the second process exits non-zero: {status}\n{log}"
    );
    assert!(log.contains("already in use"), "its message: {log}");
    assert!(
        took < Duration::from_secs(5),
        "it exits at once, not after {took:?}"
    );
    let ready = first.readyz(&http).await;
    assert!(
        matches!(ready, Some((StatusCode::OK, _))),
        "the first goes on: {ready:?}"
    );

    // The lock dies with its process, even killed: the next one starts on the same directory.
    first.kill_9();
    let third = Node::start(NodeSpec::embedded("sqlite-3", dir.path().to_owned()));
    let ready = third.readyz(&http).await;
    assert!(
        matches!(ready, Some((StatusCode::OK, _))),
        "after a kill -9: {ready:?}"
    );
}

/// A network namespace with a veth pair to the host, deleted on drop.
struct Netns {
    name: String,
    host_link: String,
    /// 10.77.x.1: the host's side.
    host_ip: String,
    /// 10.77.x.2: the namespace's side.
    ns_ip: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Netns {
    /// `offpeak-p<pid>` with `10.77.x.1/30` on the host and `10.77.x.2/30` inside.
    fn create() -> Result<Netns, String> {
        let pid = std::process::id();
        let x = pid % 256;
        let netns = Netns {
            name: format!("offpeak-p{pid}"),
            host_link: format!("opk{pid}h"),
            host_ip: format!("10.77.{x}.1"),
            ns_ip: format!("10.77.{x}.2"),
        };
        ip(&["netns", "add", &netns.name])?;
        // From here on, drop cleans up whatever was made.
        let ns_link = format!("opk{pid}n");
        let (ns, host) = (netns.name.as_str(), netns.host_link.as_str());
        ip(&[
            "link", "add", host, "type", "veth", "peer", "name", &ns_link,
        ])?;
        ip(&["link", "set", &ns_link, "netns", ns])?;
        ip(&["addr", "add", &format!("{}/30", netns.host_ip), "dev", host])?;
        ip(&["link", "set", host, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", ns, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&[
            "addr",
            "add",
            &format!("{}/30", netns.ns_ip),
            "dev",
            &ns_link,
        ])?;
        inside(&["link", "set", &ns_link, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host_link]);
    }
}

/// A TCP proxy to PostgreSQL that can be cut: then it forwards nothing, in either direction,
/// and closes no connection on the client's side (a partition, not a refusal: the client only
/// sees silence), while PostgreSQL's side is closed (as its keepalive would, eventually).
/// Healing drops the held client connections, so the client reconnects.
struct PgProxy {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    held: Arc<Mutex<Vec<TcpStream>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl PgProxy {
    async fn start(bind_ip: &str, upstream: SocketAddr) -> PgProxy {
        let listener = TcpListener::bind((bind_ip, 0)).await.expect("proxy bind");
        let addr = listener.local_addr().expect("proxy address");
        let (cut, _) = watch::channel(false);
        let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let accept = {
            let (cut, held) = (cut.clone(), held.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((mut down, _)) = listener.accept().await else {
                        return;
                    };
                    if *cut.borrow() {
                        held.lock().unwrap().push(down);
                        continue;
                    }
                    let Ok(mut up) = TcpStream::connect(upstream).await else {
                        continue;
                    };
                    let (mut cut_rx, held) = (cut.subscribe(), held.clone());
                    tokio::spawn(async move {
                        let was_cut = tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut down, &mut up) => false,
                            _ = cut_rx.wait_for(|cut| *cut) => true,
                        };
                        if was_cut {
                            drop(up);
                            held.lock().unwrap().push(down);
                        }
                    });
                }
            })
        };
        PgProxy {
            addr,
            cut,
            held,
            accept,
        }
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }

    fn heal(&self) {
        self.cut.send_replace(false);
        self.held.lock().unwrap().clear();
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Where the test's PostgreSQL listens, for the proxy.
fn pg_upstream() -> SocketAddr {
    let admin = crate::helpers::admin_url();
    let host_port = admin
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("127.0.0.1:5432");
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    };
    host_port
        .replace("localhost", "127.0.0.1")
        .parse()
        .expect("PostgreSQL at an IP address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_partitioned_from_postgres_stops_acknowledging_and_rejoins_as_a_standby() {
    let netns = match Netns::create() {
        Ok(netns) => netns,
        Err(why) => {
            eprintln!(
                "SKIPPED a_leader_partitioned_from_postgres_stops_acknowledging_and_rejoins_as_a_standby: \
                 cannot make a network namespace ({why}); run as root (or with CAP_NET_ADMIN and \
                 CAP_SYS_ADMIN) to run it"
            );
            return;
        }
    };
    let db = TestDb::create().await;
    let http = client(Duration::from_secs(3));
    let proxy = PgProxy::start(&netns.host_ip, pg_upstream()).await;
    let proxied_url = {
        let url = db.url();
        let (_, path) = url.rsplit_once('/').expect("database name");
        format!("postgres://postgres@{}/{path}", proxy.addr)
    };
    // The port is the namespace's own, so a fixed one cannot clash with the host's.
    let port = 18080;
    let mut spec = NodeSpec::cluster(0, &proxied_url, None)
        .set("OFFPEAK_LISTEN", &format!("0.0.0.0:{port}"))
        .set(
            "OFFPEAK_ADVERTISE_URL",
            &format!("http://{}:{port}", netns.ns_ip),
        );
    spec.netns = Some(netns.name.clone());
    spec.reach_host = Some(netns.ns_ip.clone());
    let first = Node::start(spec);
    let (_, epoch) = wait_leader(&http, &[&first], 0).await;
    let mut nodes = vec![first];
    for i in 1..3 {
        // On the host's side of the veth: the address they advertise is one the namespaced
        // node can forward to (127.0.0.1 inside the namespace is its own loopback).
        let listen = format!("{}:0", netns.host_ip);
        let node =
            Node::start(NodeSpec::cluster(i, &db.url(), None).set("OFFPEAK_LISTEN", &listen));
        wait_standby(&http, &node, "node-0", epoch).await;
        nodes.push(node);
    }
    // Writes before the cut, through every node (the standbys forward into the namespace).
    release_capacity(&http, &nodes[1], 1).await;
    let all: Vec<String> = nodes.iter().map(|n| n.address.clone()).collect();
    let mut acks = Vec::new();
    for n in 0..6 {
        let id = format!("pre-{n}");
        acks.push(place_until_acked(&http, &all, n, "acme", &id, order_body(&id, n)).await);
    }

    proxy.cut();
    let cut_at = Instant::now();
    // Writes sent straight to the cut-off leader, before and after the takeover. Each must
    // be refused (503) or forwarded to the new leader, never acknowledged by it alone; the
    // client waits long enough to see the answer whatever it is.
    let send_to_cut = |id: &'static str| {
        let (slow, url) = (client(Duration::from_secs(40)), nodes[0].url("/v1/orders"));
        tokio::spawn(async move {
            let answer = call(
                &slow,
                reqwest::Method::POST,
                &url,
                Some(&token("acme", "buyer")),
                Some(order_body(id, 0)),
            )
            .await;
            (id, answer)
        })
    };
    let mut to_cut = vec![send_to_cut("cut-0")];
    tokio::time::sleep(Duration::from_millis(300)).await;
    to_cut.push(send_to_cut("cut-1"));
    let (i, new_epoch) = wait_leader(&http, &[&nodes[1], &nodes[2]], epoch).await;
    let leader = i + 1;
    let leader_id = nodes[leader].id.clone();
    eprintln!(
        "partition: {leader_id} leads at epoch {new_epoch} {:?} after the cut",
        cut_at.elapsed()
    );
    to_cut.push(send_to_cut("cut-2"));
    for n in 0..4 {
        let id = format!("during-{n}");
        acks.push(place_until_acked(&http, &all[1..], n, "acme", &id, order_body(&id, n)).await);
    }
    // Past its TTL the cut-off node must not present itself as a ready leader.
    tokio::time::sleep(Duration::from_millis(TTL_MS)).await;
    if let Some(r) = role(&http, &nodes[0]).await {
        assert!(
            !(r.ready && r.role == "leader"),
            "the cut-off node still says it is a ready leader: {r:?}"
        );
    }
    to_cut.push(send_to_cut("cut-3"));
    tokio::time::sleep(Duration::from_millis(1000)).await;

    proxy.heal();
    let back = wait_standby(&http, &nodes[0], &leader_id, new_epoch).await;
    eprintln!(
        "heal: node-0 is a standby again {:?} after the cut: {back:?}",
        cut_at.elapsed()
    );
    let sql = db.client().await;
    for task in to_cut {
        let (id, answer) = task.await.expect("request task");
        let shown = answer
            .as_ref()
            .map(|(status, body)| (status.as_u16(), code(body)));
        eprintln!("partition: {id}, sent to the cut-off node, got {shown:?}");
        match answer {
            Some((StatusCode::OK | StatusCode::CREATED, body)) => acks.push(Ack {
                buyer: "acme".into(),
                client_order_id: id.into(),
                order_id: body["order"]["id"].as_str().expect("id").to_owned(),
                at: Instant::now(),
            }),
            Some((StatusCode::SERVICE_UNAVAILABLE, body)) => {
                assert!(
                    matches!(code(&body), "no_leader" | "unavailable"),
                    "{id}: {body}"
                );
                let n: i64 = sql
                    .query_one(
                        "SELECT count(*) FROM orders WHERE client_order_id = $1",
                        &[&id],
                    )
                    .await
                    .expect("count")
                    .get(0);
                assert_eq!(
                    n, 0,
                    "{id}, refused with 503 by the cut-off node, was committed"
                );
            }
            other => panic!("{id}, sent to the cut-off node, got no answer: {other:?}"),
        }
    }
    // Healed, it forwards writes to the new leader.
    let ack = place_until_acked(&http, &all[..1], 0, "acme", "after", order_body("after", 0)).await;
    acks.push(ack);

    assert_each_ack_once(&http, &db, &nodes[leader], &acks).await;
    let max = assert_journal_has_no_gap(&db).await;
    let (seq, _) = converged(&http, &db, &[&nodes[0], &nodes[1], &nodes[2]]).await;
    assert_eq!(seq as i64, max);
    drop(nodes);
    drop(proxy);
    drop(netns);
}

/// `GET /v1/cluster`'s nodes by node id.
fn nodes_by_id(view: &Value) -> HashMap<String, Value> {
    view["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| Some((n["node_id"].as_str()?.to_owned(), n.clone())))
        .collect()
}
