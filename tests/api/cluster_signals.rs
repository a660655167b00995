//! Exactly once for the Redis streams across takeovers (issue 11): three real `offpeak serve`
//! processes on one PostgreSQL and one Redis prefix, each its own consumer name in the group,
//! while a scheduler writes a steady stream of capacity signals and buyers lease through every
//! node. The leader is killed (-9) twice and frozen past its TTL once, mid-stream. Each new
//! leader claims what the old one left pending (another consumer's entries), and a signal's
//! entry id is recorded in its command's transaction, so afterwards every signal has exactly
//! one result and one command, every block exists once, the lease-events stream is the
//! `lease_events` table exactly (nothing doubled, nothing missing), and the nodes agree.

use crate::cluster::{
    assert_journal_has_no_gap, call, client, converged, start_cluster, wait_leader, wait_standby,
    Load, Node, RedisPrefix, TTL_MS,
};
use crate::helpers::{eventually, rfc3339_in, token, TestDb, POOL};
use offpeak::bus::{Keys, CONSUMER_GROUP};
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamPendingCountReply, StreamPendingReply, StreamRangeReply};
use reqwest::StatusCode;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Blocks the scheduler releases over the test, one signal each.
const BLOCKS: usize = 300;

/// GPUs per released block: a few leases each, so reclaims also hit leases.
const BLOCK_GPUS: u32 = 4;

/// Pause between two signals: the stream runs through all three faults.
const SIGNAL_EVERY: Duration = Duration::from_millis(35);

/// Signals sent back to back right before a kill, so the leader likely has a window read and
/// not yet acknowledged when it dies: entries the next leader must claim from its consumer.
const BURST: usize = 30;

/// The whole test, from the first node's start to the last check.
const TEST_WITHIN: Duration = Duration::from_secs(60);

/// The scheduler's supplier account.
const SUPPLIER: &str = "dc1";

/// A point in the plan the scheduler does not pass before the test inflicted its fault.
#[derive(Clone, Copy, Debug)]
struct Gate {
    /// The index of the first signal sent after the fault.
    at: usize,
    /// Whether the [`BURST`] signals before it go back to back.
    burst: bool,
}

/// One capacity signal of the plan, and what it should do to its block.
#[derive(Clone, Debug)]
struct Planned {
    kind: &'static str,
    block_id: String,
}

/// Releases of every block; every tenth block later reclaims one GPU, every fifteenth
/// raises its reserve price. A reclaim or update always follows its release in the stream.
fn plan() -> Vec<Planned> {
    let mut plan = Vec::new();
    for i in 0..BLOCKS {
        let planned = |kind, block: usize| Planned {
            kind,
            block_id: format!("sig-b{block}"),
        };
        plan.push(planned("release", i));
        if i % 10 == 5 {
            plan.push(planned("reclaim", i - 5));
        }
        if i % 15 == 7 {
            plan.push(planned("update", i - 7));
        }
    }
    plan
}

/// The stream fields of a planned signal.
fn fields(planned: &Planned, until: &str) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("type", planned.kind.to_owned()),
        ("supplier", SUPPLIER.to_owned()),
        ("block_id", planned.block_id.clone()),
    ];
    match planned.kind {
        "release" => fields.extend([
            ("pool", POOL.to_owned()),
            ("gpus", BLOCK_GPUS.to_string()),
            ("reserve_price", "1.00".to_owned()),
            ("available_until", until.to_owned()),
        ]),
        "reclaim" => fields.push(("gpus", "1".to_owned())),
        "update" => fields.push(("reserve_price", "1.10".to_owned())),
        other => unreachable!("no such signal in the plan: {other}"),
    }
    fields
}

async fn redis_conn() -> MultiplexedConnection {
    let url = crate::cluster::redis_url();
    redis::Client::open(url.as_str())
        .expect("OFFPEAK_TEST_REDIS")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to Redis at {url}: {e}"))
}

/// `XRANGE key - +`.
async fn range(conn: &mut MultiplexedConnection, key: &str) -> Vec<StreamId> {
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .unwrap_or_else(|e| panic!("XRANGE {key}: {e}"));
    reply.ids
}

/// A text field of a stream entry, empty if it has none.
fn field(entry: &StreamId, name: &str) -> String {
    entry.get::<String>(name).unwrap_or_default()
}

/// Entries of the capacity stream delivered to some consumer and not acknowledged.
async fn pending(conn: &mut MultiplexedConnection, keys: &Keys) -> usize {
    let reply: StreamPendingReply = redis::cmd("XPENDING")
        .arg(keys.capacity())
        .arg(CONSUMER_GROUP)
        .query_async(conn)
        .await
        .expect("XPENDING");
    reply.count()
}

/// Entries pending with `consumer` (read by it, not acknowledged).
async fn pending_with(conn: &mut MultiplexedConnection, keys: &Keys, consumer: &str) -> usize {
    let reply: StreamPendingCountReply = redis::cmd("XPENDING")
        .arg(keys.capacity())
        .arg(CONSUMER_GROUP)
        .arg("-")
        .arg("+")
        .arg(10_000)
        .arg(consumer)
        .query_async(conn)
        .await
        .expect("XPENDING of a consumer");
    reply.ids.len()
}

/// The scheduler: XADDs the plan in order, one signal every [`SIGNAL_EVERY`] (back to back in
/// a gate's burst). Before the signal at `gates[k]` it waits until fault `k + 1` was
/// inflicted, so the stream flows before, during and after each fault whatever the machine's
/// speed. `sent` counts what it sent; it returns the entry ids.
fn start_scheduler(
    keys: &Keys,
    plan: Vec<Planned>,
    gates: Vec<Gate>,
    faults: watch::Receiver<usize>,
    sent: watch::Sender<usize>,
) -> tokio::task::JoinHandle<Vec<String>> {
    let stream = keys.capacity();
    tokio::spawn(async move {
        let mut faults = faults;
        let mut conn = redis_conn().await;
        let until = rfc3339_in(3 * 3600);
        let mut ids = Vec::with_capacity(plan.len());
        for (n, planned) in plan.iter().enumerate() {
            if let Some(k) = gates.iter().position(|gate| gate.at == n) {
                faults
                    .wait_for(|&inflicted| inflicted > k)
                    .await
                    .expect("the test inflicts each fault");
            }
            let mut command = redis::cmd("XADD");
            command.arg(&stream).arg("*");
            for (name, value) in fields(planned, &until) {
                command.arg(name).arg(value);
            }
            let id: String = command
                .query_async(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("XADD {planned:?}: {e}"));
            ids.push(id);
            sent.send_replace(ids.len());
            let in_burst = gates
                .iter()
                .any(|gate| gate.burst && n + 1 < gate.at && n + 1 + BURST >= gate.at);
            if !in_burst {
                tokio::time::sleep(SIGNAL_EVERY).await;
            }
        }
        ids
    })
}

/// Waits until the scheduler has sent at least `count` signals.
async fn sent_at_least(sent: &mut watch::Receiver<usize>, count: usize) {
    let within = Duration::from_secs(20);
    let reached = tokio::time::timeout(within, sent.wait_for(|&n| n >= count)).await;
    assert!(
        matches!(reached, Ok(Ok(_))),
        "the scheduler did not send {count} signals within {within:?}"
    );
}

/// The index in `nodes` of the ready leader above `epoch` among `candidates`, and its epoch.
async fn new_leader(
    http: &reqwest::Client,
    nodes: &[Node],
    candidates: &[usize],
    epoch: i64,
) -> (usize, i64) {
    let among: Vec<&Node> = candidates.iter().map(|&i| &nodes[i]).collect();
    let (i, epoch) = wait_leader(http, &among, epoch).await;
    (candidates[i], epoch)
}

fn others(than: usize) -> Vec<usize> {
    (0..3).filter(|&i| i != than).collect()
}

/// Starts a killed node again (same consumer name, new port) and waits until it follows
/// `leader` at `epoch`.
async fn rejoin(http: &reqwest::Client, nodes: &mut [Node], i: usize, leader: usize, epoch: i64) {
    tokio::task::block_in_place(|| nodes[i].restart());
    let leader_id = nodes[leader].id.clone();
    wait_standby(http, &nodes[i], &leader_id, epoch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_signals_and_lease_events_are_exactly_once_across_takeovers() {
    let started = Instant::now();
    let db = TestDb::create().await;
    let redis = RedisPrefix::new();
    let keys = Keys::new(&redis.prefix);
    let http = client(Duration::from_secs(3));
    // NodeSpec::cluster gives each node its own consumer name, `node-<i>`.
    let (mut nodes, epoch) = start_cluster(&http, &db, 3, Some(&redis.prefix)).await;

    let plan = plan();
    // A burst before each kill; the freeze comes after a quiet moment instead, when the leader
    // is blocked reading the stream: Redis then hands the next signals to the frozen consumer.
    let gates = vec![
        Gate {
            at: plan.len() / 4,
            burst: true,
        },
        Gate {
            at: plan.len() / 2,
            burst: false,
        },
        Gate {
            at: plan.len() * 3 / 4,
            burst: true,
        },
    ];
    let (faults, faults_rx) = watch::channel(0usize);
    let (sent_tx, mut sent) = watch::channel(0usize);
    let scheduler = start_scheduler(&keys, plan.clone(), gates.clone(), faults_rx, sent_tx);
    let mut conn = redis_conn().await;
    // Entries each faulted leader left pending with its consumer, for the next to claim.
    let mut left_pending = Vec::new();
    let load = Load::start(&http, &nodes, 3, "s");

    // Fault 1: kill -9 of the first leader, mid-stream.
    sent_at_least(&mut sent, gates[0].at).await;
    let at = Instant::now();
    nodes[0].kill_9();
    faults.send_replace(1);
    left_pending.push(pending_with(&mut conn, &keys, &nodes[0].id).await);
    let (leader, epoch) = new_leader(&http, &nodes, &others(0), epoch).await;
    eprintln!(
        "fault 1: kill -9 node-0 after {} signals, {} left pending with it; {} leads at \
         epoch {epoch} after {:?}",
        gates[0].at,
        left_pending[0],
        nodes[leader].id,
        at.elapsed()
    );
    rejoin(&http, &mut nodes, 0, leader, epoch).await;

    // Fault 2: the leader frozen past its TTL, then resumed.
    sent_at_least(&mut sent, gates[1].at).await;
    let frozen = leader;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at = Instant::now();
    nodes[frozen].stop();
    faults.send_replace(2);
    // A read blocked in Redis when it froze is still served: the next signals go to the
    // frozen consumer too. No one may lead before half a TTL (its last renewal was at most
    // a third of a TTL before the freeze), so they are still its own here.
    tokio::time::sleep(Duration::from_millis(TTL_MS * 2 / 5)).await;
    left_pending.push(pending_with(&mut conn, &keys, &nodes[frozen].id).await);
    let (leader, epoch) = new_leader(&http, &nodes, &others(frozen), epoch).await;
    eprintln!(
        "fault 2: SIGSTOP {} after {} signals, {} pending with it; {} leads at epoch {epoch} \
         after {:?}",
        nodes[frozen].id,
        gates[1].at,
        left_pending[1],
        nodes[leader].id,
        at.elapsed()
    );
    let frozen_for = Duration::from_millis(TTL_MS * 5 / 2);
    tokio::time::sleep(frozen_for.saturating_sub(at.elapsed())).await;
    nodes[frozen].cont();
    let leader_id = nodes[leader].id.clone();
    wait_standby(&http, &nodes[frozen], &leader_id, epoch).await;

    // Fault 3: kill -9 of that leader.
    sent_at_least(&mut sent, gates[2].at).await;
    let killed = leader;
    let at = Instant::now();
    nodes[killed].kill_9();
    faults.send_replace(3);
    left_pending.push(pending_with(&mut conn, &keys, &nodes[killed].id).await);
    let (leader, epoch) = new_leader(&http, &nodes, &others(killed), epoch).await;
    eprintln!(
        "fault 3: kill -9 {} after {} signals, {} left pending with it; {} leads at epoch \
         {epoch} after {:?}",
        nodes[killed].id,
        gates[2].at,
        left_pending[2],
        nodes[leader].id,
        at.elapsed()
    );
    rejoin(&http, &mut nodes, killed, leader, epoch).await;

    let ids = scheduler.await.expect("scheduler");
    let acks = load.finish().await;
    assert_eq!(ids.len(), plan.len());
    assert!(
        acks.len() > 50,
        "the buyers got going: {} orders",
        acks.len()
    );
    eprintln!(
        "{} signals sent, {} orders placed, {:?} in",
        ids.len(),
        acks.len(),
        started.elapsed()
    );

    // The faults left entries with a consumer that could not settle them: the claim path ran.
    assert!(
        left_pending.iter().sum::<usize>() > 0,
        "no fault left an entry pending with the faulted leader's consumer ({left_pending:?}): \
         nothing was claimed across consumers"
    );

    // Everything settles: nothing pending in the group, a result for every signal.
    let settle_within = TEST_WITHIN.saturating_sub(started.elapsed() + Duration::from_secs(10));
    let settled_at = Instant::now();
    let mut last = (0, 0);
    let settled = tokio::time::timeout(settle_within, async {
        loop {
            let results = range(&mut conn, &keys.results()).await.len();
            let pending = pending(&mut conn, &keys).await;
            last = (results, pending);
            if results >= ids.len() && pending == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        settled.is_ok(),
        "not settled within {settle_within:?}: (results, pending) = {last:?} for {} signals",
        ids.len()
    );
    eprintln!("settled {:?} after the last signal", settled_at.elapsed());

    // One result per signal, none for anything else, each applied at the seq recorded for it.
    let results = range(&mut conn, &keys.results()).await;
    let mut results_of: HashMap<String, Vec<&StreamId>> = HashMap::new();
    for result in &results {
        results_of
            .entry(field(result, "signal_id"))
            .or_default()
            .push(result);
    }
    let sql = db.client().await;
    let recorded: HashMap<String, i64> = sql
        .query("SELECT id_ms, id_seq, seq FROM applied_signals", &[])
        .await
        .expect("applied_signals")
        .iter()
        .map(|r| {
            let (ms, n, seq): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
            (format!("{ms}-{n}"), seq)
        })
        .collect();
    let mut redelivered = 0;
    for (id, planned) in ids.iter().zip(&plan) {
        let mine = results_of.remove(id).unwrap_or_default();
        let shown: Vec<&HashMap<String, redis::Value>> = mine.iter().map(|r| &r.map).collect();
        assert_eq!(mine.len(), 1, "signal {id} {planned:?}: results {shown:?}");
        let result = mine[0];
        assert_eq!(
            field(result, "status"),
            "applied",
            "signal {id} {planned:?}: {shown:?}"
        );
        assert_eq!(field(result, "block_id"), planned.block_id);
        let seq = recorded
            .get(id)
            .unwrap_or_else(|| panic!("signal {id} {planned:?} is not in applied_signals"));
        assert_eq!(
            field(result, "seq"),
            seq.to_string(),
            "signal {id}: the result's seq is not the recorded one"
        );
        redelivered += usize::from(field(result, "redelivered") == "true");
    }
    assert!(
        results_of.is_empty(),
        "results for signals never sent: {:?}",
        results_of.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        recorded.len(),
        ids.len(),
        "applied_signals: one row per signal"
    );
    let dead = range(&mut conn, &keys.dead()).await;
    assert!(dead.is_empty(), "dead letters: {dead:?}");

    // One command per signal in the journal.
    let mut commands: BTreeMap<(String, String), usize> = BTreeMap::new();
    for row in sql
        .query(
            "SELECT command->>'type', command->>'block_id' FROM journal \
              WHERE command->>'type' IN ('release_capacity', 'reclaim_capacity', 'update_capacity')",
            &[],
        )
        .await
        .expect("journal commands")
    {
        *commands.entry((row.get(0), row.get(1))).or_default() += 1;
    }
    let mut planned_commands: BTreeMap<(String, String), usize> = BTreeMap::new();
    for planned in &plan {
        let kind = format!("{}_capacity", planned.kind);
        *planned_commands
            .entry((kind, planned.block_id.clone()))
            .or_default() += 1;
    }
    assert_eq!(
        commands, planned_commands,
        "the journal's capacity commands are not the signals, once each"
    );

    // Each block once, as the signals left it: in the table and on every node.
    let reclaims = |block: &str| {
        plan.iter()
            .filter(|p| p.kind == "reclaim" && p.block_id == block)
            .count() as i64
    };
    let updated = |block: &str| {
        plan.iter()
            .any(|p| p.kind == "update" && p.block_id == block)
    };
    let rows = sql
        .query(
            "SELECT block_id, gpus, gpus_reclaimed + gpus_reclaiming, reserve_price_micros \
               FROM blocks WHERE supplier = $1",
            &[&SUPPLIER],
        )
        .await
        .expect("blocks");
    assert_eq!(rows.len(), BLOCKS, "blocks in the table");
    for row in &rows {
        let (block, gpus, reclaimed, reserve): (String, i32, i32, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        assert_eq!(gpus as u32, BLOCK_GPUS, "{block}");
        assert_eq!(
            i64::from(reclaimed),
            reclaims(&block),
            "{block}: GPUs reclaimed"
        );
        let price = if updated(&block) {
            1_100_000
        } else {
            1_000_000
        };
        assert_eq!(reserve, price, "{block}: reserve price");
    }
    let (seq, hash) = converged(&http, &db, &[&nodes[0], &nodes[1], &nodes[2]]).await;
    assert_eq!(seq as i64, assert_journal_has_no_gap(&db).await);
    let supplier = token(SUPPLIER, "supplier");
    for node in &nodes {
        let url = node.url("/v1/capacity?limit=1000");
        let answer = call(&http, reqwest::Method::GET, &url, Some(&supplier), None).await;
        let Some((StatusCode::OK, page)) = answer else {
            panic!("GET /v1/capacity on {}: {answer:?}", node.id);
        };
        let blocks = page["blocks"].as_array().expect("blocks");
        let listed: BTreeSet<&str> = blocks
            .iter()
            .filter_map(|b| b["block_id"].as_str())
            .collect();
        assert_eq!(
            (blocks.len(), listed.len()),
            (BLOCKS, BLOCKS),
            "{}: each block listed once",
            node.id
        );
        for block in blocks {
            let id = block["block_id"].as_str().expect("block_id");
            let reclaimed = block["gpus_reclaimed"].as_i64().unwrap_or(-1)
                + block["gpus_reclaiming"].as_i64().unwrap_or(-1);
            assert_eq!(reclaimed, reclaims(id), "{} {id}: {block}", node.id);
        }
    }

    // The lease-events stream is the lease_events table: each row once under `<seq>-<row>`.
    let table: BTreeMap<String, (String, String)> = sql
        .query("SELECT seq, id, lease_id, kind FROM lease_events", &[])
        .await
        .expect("lease_events")
        .iter()
        .map(|r| {
            let (seq, id): (i64, i64) = (r.get(0), r.get(1));
            (format!("{seq}-{id}"), (r.get(2), r.get(3)))
        })
        .collect();
    let events = eventually(
        Duration::from_secs(5),
        "every lease event on the stream",
        || async {
            let events = range(&mut redis_conn().await, &keys.lease_events()).await;
            (events.len() >= table.len()).then_some(events)
        },
    )
    .await;
    let mut opened: BTreeMap<String, usize> = BTreeMap::new();
    let mut seen: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for event in &events {
        let (lease, kind) = (field(event, "lease_id"), field(event, "event"));
        *seen
            .entry((event.id.clone(), lease.clone(), kind.clone()))
            .or_default() += 1;
        if kind == "opened" {
            *opened.entry(lease).or_default() += 1;
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "lease events published twice: {twice:?}");
    let opened_twice: Vec<_> = opened.iter().filter(|(_, &n)| n > 1).collect();
    assert!(
        opened_twice.is_empty(),
        "leases opened twice: {opened_twice:?}"
    );
    let on_stream: BTreeSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let on_table: BTreeSet<&str> = table.keys().map(String::as_str).collect();
    let missing: Vec<_> = on_table.difference(&on_stream).collect();
    let extra: Vec<_> = on_stream.difference(&on_table).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "lease events missing from the stream: {missing:?}; on the stream, not in the table: \
         {extra:?}"
    );
    let leases: Vec<String> = sql
        .query("SELECT id FROM leases", &[])
        .await
        .expect("leases")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!leases.is_empty(), "buyers leased");
    let unpublished: Vec<&String> = leases
        .iter()
        .filter(|id| !opened.contains_key(*id))
        .collect();
    assert!(
        unpublished.is_empty(),
        "leases never published as opened: {unpublished:?}"
    );

    let claimed: usize = nodes
        .iter()
        .map(|n| n.log_text().matches("claimed idle signals").count())
        .sum();
    let took = started.elapsed();
    eprintln!(
        "{} signals, {left_pending:?} left pending by the faults, {redelivered} settled as \
         redelivered, {} lease events ({} leases), {claimed} claims logged, state hash {hash} \
         at seq {seq}, {took:?}",
        ids.len(),
        events.len(),
        leases.len()
    );
    assert!(took < TEST_WITHIN, "the test took {took:?}");
}
