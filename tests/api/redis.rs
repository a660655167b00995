//! Capacity signals over the bus (issue 4): releases and reclaims written to the capacity
//! stream, market data and lease events read back, exactly once through crashes, poison and
//! killed connections.
//!
//! Every behaviour that does not need Redis itself runs twice, `redis::<test>` against the real
//! Redis at `OFFPEAK_TEST_REDIS` (default `redis://127.0.0.1:6379`) and `memory::<test>`
//! against the in-process bus, through the same [`Signals`] driver: what a scheduler does with
//! `redis-cli XADD`, what a follower does with `XRANGE` and `SUBSCRIBE`. Each test has its own
//! key prefix, so tests run side by side on one Redis.

use crate::helpers::{eventually, rfc3339_in, TestApp, POOL};
use offpeak::bus::memory::MemoryBus;
use offpeak::bus::{Keys, CONSUMER_GROUP};
use offpeak::journal::EntryId;
use redis::aio::MultiplexedConnection;
use redis::Value;
use reqwest::StatusCode;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a signal may take to show up anywhere (it takes milliseconds).
const WITHIN: Duration = Duration::from_secs(20);

/// The consumer name every test server uses (one group per prefix, so no clash).
const CONSUMER: &str = "server-1";

fn redis_url() -> String {
    std::env::var("OFFPEAK_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A stream entry as text.
type Entry = (String, HashMap<String, String>);

struct RedisSide {
    client: redis::Client,
    conn: MultiplexedConnection,
}

enum Side {
    Redis(Box<RedisSide>),
    Memory(Arc<MemoryBus>),
}

/// The bus as a scheduler and a follower see it.
pub struct Signals {
    keys: Keys,
    side: Side,
}

fn text(value: &Value) -> String {
    match value {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        other => format!("{other:?}"),
    }
}

fn entries(value: &Value) -> Vec<Entry> {
    let Value::Array(list) = value else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|entry| {
            let Value::Array(parts) = entry else {
                return None;
            };
            let id = text(parts.first()?);
            let fields = match parts.get(1)? {
                Value::Array(flat) => flat
                    .chunks(2)
                    .map(|pair| (text(&pair[0]), text(&pair[1])))
                    .collect(),
                _ => HashMap::new(),
            };
            Some((id, fields))
        })
        .collect()
}

impl Signals {
    /// Real Redis, under a prefix of its own.
    pub async fn redis() -> Signals {
        let client = redis::Client::open(redis_url()).expect("OFFPEAK_TEST_REDIS");
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to Redis at {}: {e}", redis_url()));
        Signals {
            keys: Keys::new(&format!("t{:016x}", rand::random::<u64>())),
            side: Side::Redis(Box::new(RedisSide { client, conn })),
        }
    }

    /// The in-process bus, under a prefix of its own (held here, so the servers share it).
    pub fn memory() -> Signals {
        let prefix = format!("t{:016x}", rand::random::<u64>());
        Signals {
            side: Side::Memory(MemoryBus::named(&prefix)),
            keys: Keys::new(&prefix),
        }
    }

    fn is_redis(&self) -> bool {
        matches!(self.side, Side::Redis(_))
    }

    /// The environment a server on this bus gets.
    pub fn configure(&self, env: &mut HashMap<String, String>) {
        if self.is_redis() {
            env.insert("REDIS_URL".into(), redis_url());
        }
        env.insert("OFFPEAK_REDIS_PREFIX".into(), self.keys.prefix().to_owned());
        env.insert("OFFPEAK_REDIS_CONSUMER".into(), CONSUMER.into());
    }

    /// A server on a fresh database, on this bus.
    pub async fn spawn(&self) -> TestApp {
        TestApp::spawn_with(|env| self.configure(env)).await
    }

    async fn query(&self, command: &mut redis::Cmd) -> Value {
        let Side::Redis(redis) = &self.side else {
            unreachable!("a Redis command on the in-process bus");
        };
        command
            .query_async(&mut redis.conn.clone())
            .await
            .unwrap_or_else(|e| panic!("{command:?}: {e}"))
    }

    /// `XADD {prefix}:capacity * fields...`.
    pub async fn add(&self, fields: &[(&str, &str)]) -> String {
        match &self.side {
            Side::Memory(bus) => bus.add(&self.keys.capacity(), fields).to_string(),
            Side::Redis(_) => {
                let mut command = redis::cmd("XADD");
                command.arg(self.keys.capacity()).arg("*");
                for (name, value) in fields {
                    command.arg(*name).arg(*value);
                }
                text(&self.query(&mut command).await)
            }
        }
    }

    /// `XRANGE key - +`.
    pub async fn range(&self, key: &str) -> Vec<Entry> {
        match &self.side {
            Side::Memory(bus) => bus
                .range(key)
                .into_iter()
                .map(|(id, fields)| (id.to_string(), fields.into_iter().collect()))
                .collect(),
            Side::Redis(_) => entries(
                &self
                    .query(redis::cmd("XRANGE").arg(key).arg("-").arg("+"))
                    .await,
            ),
        }
    }

    /// The results stream.
    pub async fn results(&self) -> Vec<Entry> {
        self.range(&self.keys.results()).await
    }

    /// The dead letters.
    pub async fn dead(&self) -> Vec<Entry> {
        self.range(&self.keys.dead()).await
    }

    /// The lease-events stream.
    pub async fn lease_events(&self) -> Vec<Entry> {
        self.range(&self.keys.lease_events()).await
    }

    /// `HGETALL {prefix}:capacity:{pool}`.
    pub async fn capacity(&self, pool: &str) -> HashMap<String, String> {
        let key = self.keys.capacity_hash(pool);
        match &self.side {
            Side::Memory(bus) => bus.hash(&key),
            Side::Redis(_) => match self.query(redis::cmd("HGETALL").arg(&key)).await {
                Value::Array(flat) => flat
                    .chunks(2)
                    .map(|pair| (text(&pair[0]), text(&pair[1])))
                    .collect(),
                Value::Map(pairs) => pairs.iter().map(|(k, v)| (text(k), text(v))).collect(),
                _ => HashMap::new(),
            },
        }
    }

    /// `SUBSCRIBE {prefix}:md:{pool}`: the messages, as they come.
    pub async fn subscribe(&self, pool: &str) -> mpsc::UnboundedReceiver<String> {
        let channel = self.keys.market(pool);
        let (tx, rx) = mpsc::unbounded_channel();
        match &self.side {
            Side::Memory(bus) => {
                let mut messages = bus.subscribe(&channel);
                tokio::spawn(async move {
                    while let Ok(message) = messages.recv().await {
                        if tx.send(message.to_string()).is_err() {
                            return;
                        }
                    }
                });
            }
            Side::Redis(redis) => {
                let mut pubsub = redis
                    .client
                    .get_async_pubsub()
                    .await
                    .expect("pub/sub connection");
                pubsub.subscribe(&channel).await.expect("SUBSCRIBE");
                tokio::spawn(async move {
                    use futures_util::StreamExt;
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        let payload: String = message.get_payload().unwrap_or_default();
                        if tx.send(payload).is_err() {
                            return;
                        }
                    }
                });
            }
        }
        rx
    }

    /// `XGROUP CREATE {prefix}:capacity offpeak 0 MKSTREAM` (before any server made it).
    pub async fn create_group(&self) {
        match &self.side {
            Side::Memory(bus) => {
                use offpeak::bus::Bus;
                bus.create_group().await.expect("group");
            }
            Side::Redis(_) => {
                self.query(
                    redis::cmd("XGROUP")
                        .arg("CREATE")
                        .arg(self.keys.capacity())
                        .arg(CONSUMER_GROUP)
                        .arg("0")
                        .arg("MKSTREAM"),
                )
                .await;
            }
        }
    }

    /// `XREADGROUP GROUP offpeak <consumer> COUNT n STREAMS {prefix}:capacity >`: what a
    /// consumer does right before it dies.
    pub async fn read_as(&self, consumer: &str, count: usize) -> Vec<String> {
        match &self.side {
            Side::Memory(bus) => bus
                .read_as(consumer, count)
                .into_iter()
                .map(|id| id.to_string())
                .collect(),
            Side::Redis(_) => {
                let reply = self
                    .query(
                        redis::cmd("XREADGROUP")
                            .arg("GROUP")
                            .arg(CONSUMER_GROUP)
                            .arg(consumer)
                            .arg("COUNT")
                            .arg(count)
                            .arg("STREAMS")
                            .arg(self.keys.capacity())
                            .arg(">"),
                    )
                    .await;
                let Value::Array(streams) = reply else {
                    return Vec::new();
                };
                let Some(Value::Array(stream)) = streams.first() else {
                    return Vec::new();
                };
                entries(&stream[1]).into_iter().map(|(id, _)| id).collect()
            }
        }
    }

    /// `XGROUP SETID {prefix}:capacity offpeak 0`: every entry is delivered again.
    pub async fn rewind(&self) {
        match &self.side {
            Side::Memory(bus) => bus.rewind_group(EntryId::default()),
            Side::Redis(_) => {
                self.query(
                    redis::cmd("XGROUP")
                        .arg("SETID")
                        .arg(self.keys.capacity())
                        .arg(CONSUMER_GROUP)
                        .arg("0"),
                )
                .await;
            }
        }
    }

    /// Entries delivered and not acknowledged.
    pub async fn pending(&self) -> usize {
        match &self.side {
            Side::Memory(bus) => bus.pending_count(),
            Side::Redis(_) => {
                let reply = self
                    .query(
                        redis::cmd("XPENDING")
                            .arg(self.keys.capacity())
                            .arg(CONSUMER_GROUP),
                    )
                    .await;
                match reply {
                    Value::Array(parts) => text(&parts[0]).parse().unwrap_or(0),
                    _ => 0,
                }
            }
        }
    }

    /// Kills this prefix's server connections (`CLIENT KILL ID` of each client named
    /// `offpeak:{prefix}`); returns how many.
    pub async fn kill_server_connections(&self) -> usize {
        let list = text(&self.query(redis::cmd("CLIENT").arg("LIST")).await);
        let marker = format!(" name=offpeak:{} ", self.keys.prefix());
        let ids: Vec<String> = list
            .lines()
            .filter(|line| line.contains(&marker))
            .filter_map(|line| {
                line.split(' ')
                    .find_map(|kv| kv.strip_prefix("id=").map(str::to_owned))
            })
            .collect();
        for id in &ids {
            self.query(redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id))
                .await;
        }
        ids.len()
    }

    /// The result of one signal, once it is settled.
    pub async fn result_of(&self, signal: &str) -> HashMap<String, String> {
        eventually(WITHIN, &format!("the result of {signal}"), || async {
            self.results()
                .await
                .into_iter()
                .find(|(_, f)| f.get("signal_id").map(String::as_str) == Some(signal))
                .map(|(_, f)| f)
        })
        .await
    }
}

fn release<'a>(
    block_id: &'a str,
    gpus: &'a str,
    price: &'a str,
    until: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("type", "release"),
        ("supplier", "dc1"),
        ("block_id", block_id),
        ("pool", POOL),
        ("gpus", gpus),
        ("reserve_price", price),
        ("available_until", until),
    ]
}

/// The ask GPUs resting at `price` on the REST book.
async fn ask_gpus(app: &TestApp, price: &str) -> u64 {
    let (status, book) = app.get(&format!("/v1/pools/{POOL}/book"), None).await;
    assert_eq!(status, StatusCode::OK, "{book}");
    book["asks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|level| level["price"] == price)
        .map(|level| level["gpus"].as_u64().unwrap_or(0))
        .sum()
}

async fn lease(app: &TestApp, buyer: &str, id: &str) -> Json {
    let (status, body) = app.get(&format!("/v1/leases/{id}"), Some(buyer)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["lease"].clone()
}

fn ms(rfc3339: &str) -> i64 {
    let at = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339:?}: {e}"));
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Declares each shared behaviour once per bus.
macro_rules! on_both_buses {
    ($($name:ident),* $(,)?) => {
        mod redis_bus {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Signals::redis().await).await;
                }
            )*
        }
        mod memory_bus {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Signals::memory()).await;
                }
            )*
        }
    };
}

on_both_buses!(
    a_release_rests_as_an_ask_and_a_reclaim_gives_the_buyer_notice,
    an_emergency_reclaim_ends_the_lease_with_its_reason_and_cost,
    a_signal_delivered_twice_changes_the_state_once,
    a_signal_left_pending_by_a_dead_consumer_is_applied_once_by_the_next,
    poison_signals_go_to_the_dead_letters_and_the_consumer_keeps_going,
    a_provisioner_hands_leases_over_through_the_streams_exactly_once,
);

/// The lease events of one lease, in order, as `(event, fields)`.
async fn events_of(signals: &Signals, lease_id: &str) -> Vec<HashMap<String, String>> {
    signals
        .lease_events()
        .await
        .into_iter()
        .map(|(_, fields)| fields)
        .filter(|f| f.get("lease_id").map(String::as_str) == Some(lease_id))
        .collect()
}

/// A provisioner (DESIGN section 11): it reads `opened` (the nodes and the buyer's keys) from
/// the lease events, answers `ready` or `provision_failed` on the capacity stream, and the
/// buyer's lease follows; a redelivered answer changes nothing; a malformed one is dead.
async fn a_provisioner_hands_leases_over_through_the_streams_exactly_once(signals: Signals) {
    let app = signals.spawn().await;
    let until = rfc3339_in(3 * 3600);
    let mut block = release("b1", "8", "1.50", &until);
    block.push((
        "nodes",
        r#"[{"node":"rack1-n1","gpus":4},{"node":"rack1-n2","gpus":4}]"#,
    ));
    let released = signals.add(&block).await;
    assert_eq!(signals.result_of(&released).await["status"], "applied");
    let buyer = app.token("acme", "buyer");
    let key = crate::handoff::ED25519_KEY;
    let mut lease_ids = Vec::new();
    for _ in 0..2 {
        let (status, placed) = app
            .post(
                "/v1/orders",
                Some(&buyer),
                serde_json::json!({"pool": POOL, "gpus": 4, "price": "2.00",
                                   "duration_s": 3600, "ssh_public_keys": [key]}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{placed}");
        lease_ids.push(placed["leases"][0]["id"].as_str().unwrap().to_owned());
    }
    let (ready_id, failed_id) = (&lease_ids[0], &lease_ids[1]);

    let opened = eventually(WITHIN, "the opened lease event", || async {
        events_of(&signals, ready_id)
            .await
            .into_iter()
            .find(|f| f.get("event").map(String::as_str) == Some("opened"))
    })
    .await;
    assert_eq!(opened["supplier"], "dc1");
    assert_eq!(opened["block_id"], "b1");
    let keys: Json = serde_json::from_str(&opened["ssh_public_keys"]).unwrap();
    assert_eq!(keys, serde_json::json!([key]));
    let nodes: Json = serde_json::from_str(&opened["nodes"]).unwrap();
    let node = nodes[0]["node"].as_str().unwrap().to_owned();
    assert_eq!(nodes[0]["gpus"], 4, "{nodes}");

    let endpoints = format!(r#"[{{"node":"{node}","host":"10.1.0.1","port":22,"user":"ubuntu"}}]"#);
    let malformed = signals
        .add(&[
            ("type", "ready"),
            ("supplier", "dc1"),
            ("lease_id", ready_id),
            ("endpoints", "[{\"host\": 7}]"),
        ])
        .await;
    let ready = signals
        .add(&[
            ("type", "ready"),
            ("supplier", "dc1"),
            ("lease_id", ready_id),
            ("endpoints", &endpoints),
        ])
        .await;
    let failed = signals
        .add(&[
            ("type", "provision_failed"),
            ("supplier", "dc1"),
            ("block_id", "b1"),
            ("lease_id", failed_id),
            ("reason", "rack1 PDU tripped"),
        ])
        .await;
    let stranger = signals
        .add(&[
            ("type", "provision_failed"),
            ("supplier", "dc2"),
            ("lease_id", ready_id),
            ("reason", "not mine"),
        ])
        .await;
    assert_eq!(signals.result_of(&ready).await["status"], "applied");
    assert_eq!(signals.result_of(&failed).await["status"], "applied");
    let refused = signals.result_of(&stranger).await;
    assert_eq!(
        (refused["status"].as_str(), refused["reason"].as_str()),
        ("refused", "unknown_lease")
    );
    let dead = eventually(WITHIN, "the malformed ready's dead letter", || async {
        signals
            .dead()
            .await
            .into_iter()
            .find(|(_, f)| f.get("signal_id") == Some(&malformed))
    })
    .await;
    assert_eq!(dead.1["reason"], "malformed");

    let readied = lease(&app, &buyer, ready_id).await;
    assert_eq!(readied["access"]["status"], "ready", "{readied}");
    assert_eq!(readied["access"]["endpoints"][0]["host"], "10.1.0.1");
    let gone = lease(&app, &buyer, failed_id).await;
    assert_eq!(gone["status"], "failed");
    assert_eq!(gone["access"]["reason"], "rack1 PDU tripped");

    let (kinds, ready_event) = eventually(WITHIN, "ready and failed lease events", || async {
        let ready_events = events_of(&signals, ready_id).await;
        let failed_events = events_of(&signals, failed_id).await;
        let kinds: Vec<String> = ready_events
            .iter()
            .chain(&failed_events)
            .map(|f| f["event"].clone())
            .collect();
        let ready_event = ready_events
            .into_iter()
            .find(|f| f.get("event").map(String::as_str) == Some("ready"))?;
        kinds
            .contains(&"failed".to_owned())
            .then_some((kinds, ready_event))
    })
    .await;
    assert_eq!(kinds, ["opened", "ready", "opened", "failed"]);
    let sent: Json = serde_json::from_str(&ready_event["endpoints"]).unwrap();
    assert_eq!(sent[0]["user"], "ubuntu");

    // Every entry delivered again: nothing changes, nothing is published twice.
    let before = app.state_hash().await;
    signals.rewind().await;
    eventually(WITHIN, "the redeliveries to settle", || async {
        (signals.pending().await == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.state_hash().await.0, before.0);
    assert_eq!(events_of(&signals, ready_id).await.len(), 2);
}

async fn a_release_rests_as_an_ask_and_a_reclaim_gives_the_buyer_notice(signals: Signals) {
    let app = signals.spawn().await;
    let mut market = signals.subscribe(POOL).await;
    let until = rfc3339_in(3 * 3600);
    let released = signals.add(&release("b1", "8", "1.50", &until)).await;

    // The ask is on the book, the result says applied, the delta went out on pub/sub.
    eventually(WITHIN, "the released block's ask on the book", || async {
        (ask_gpus(&app, "1.50").await == 8).then_some(())
    })
    .await;
    let result = signals.result_of(&released).await;
    assert_eq!(result["status"], "applied", "{result:?}");
    assert_eq!(result["block_id"], "b1");
    let delta = tokio::time::timeout(WITHIN, async {
        while let Some(message) = market.recv().await {
            let message: Json = serde_json::from_str(&message).expect("JSON on md");
            if message["type"] == "delta"
                && message["changes"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["side"] == "ask" && c["price"] == "1.50"))
            {
                return message;
            }
        }
        panic!("the market-data channel closed");
    })
    .await
    .expect("a book delta on pub/sub");
    // The WebSocket's delta format, word for word.
    assert_eq!(delta["channel"], format!("book:{POOL}"));
    assert!(delta["seq"].as_u64().unwrap() > delta["prev_seq"].as_u64().unwrap());
    let change = &delta["changes"][0];
    assert_eq!(
        (change["gpus"].as_u64(), change["orders"].as_u64()),
        (Some(8), Some(1))
    );
    let capacity = eventually(WITHIN, "the capacity hash", || async {
        let hash = signals.capacity(POOL).await;
        (hash.get("idle_gpus").map(String::as_str) == Some("8")).then_some(hash)
    })
    .await;
    assert_eq!(capacity["best_ask"], "1.50");
    assert_eq!(capacity["leased_gpus"], "0");

    // A buyer leases it; the lease opens on the lease-events stream.
    let buyer = app.token("acme", "buyer");
    let (status, bid) = app.bid(&buyer, 8, "2.00").await;
    assert_eq!(status, StatusCode::CREATED, "{bid}");
    let lease_id = bid["leases"][0]["id"].as_str().expect("a lease").to_owned();
    eventually(WITHIN, "the lease opened on lease-events", || async {
        signals.lease_events().await.into_iter().find(|(_, f)| {
            f.get("event").map(String::as_str) == Some("opened")
                && f.get("lease_id") == Some(&lease_id)
        })
    })
    .await;

    // A forecast warns the buyer; a reclaim gives notice, promised length.
    let reclaim_at = rfc3339_in(600);
    let forecast = signals
        .add(&[
            ("type", "forecast"),
            ("supplier", "dc1"),
            ("block_id", "b1"),
            ("reclaim_at", &reclaim_at),
        ])
        .await;
    assert_eq!(signals.result_of(&forecast).await["status"], "applied");
    let warning = eventually(WITHIN, "the reclaim warning", || async {
        signals.lease_events().await.into_iter().find(|(_, f)| {
            f.get("event").map(String::as_str) == Some("reclaim_warning")
                && f.get("lease_id") == Some(&lease_id)
        })
    })
    .await;
    assert_eq!(ms(&warning.1["reclaim_at"]), ms(&reclaim_at));
    let reclaim = signals
        .add(&[
            ("type", "reclaim"),
            ("supplier", "dc1"),
            ("block_id", "b1"),
            ("gpus", "8"),
        ])
        .await;
    assert_eq!(signals.result_of(&reclaim).await["status"], "applied");
    let notified = eventually(WITHIN, "the lease preempting", || async {
        let lease = lease(&app, &buyer, &lease_id).await;
        (lease["status"] == "preempting").then_some(lease)
    })
    .await;
    let (_, pool) = app.get(&format!("/v1/pools/{POOL}"), None).await;
    let notice_s = pool["notice_s"]
        .as_i64()
        .or_else(|| pool["pool"]["notice_s"].as_i64())
        .expect("the pool's notice_s");
    let notice_ends_at = notified["notice_ends_at"].as_str().expect("notice_ends_at");
    assert_eq!(
        ms(notice_ends_at) - ms(notified["preempted_at"].as_str().expect("preempted_at")),
        notice_s * 1000,
        "the pool's full notice: {notified}"
    );
    let notice = eventually(WITHIN, "the notice on lease-events", || async {
        signals.lease_events().await.into_iter().find(|(_, f)| {
            f.get("event").map(String::as_str) == Some("notice")
                && f.get("lease_id") == Some(&lease_id)
        })
    })
    .await;
    assert_eq!(ms(&notice.1["notice_ends_at"]), ms(notice_ends_at));
    assert_eq!(notice.1["emergency"], "false");
    assert_eq!(notice.1["buyer"], "acme");
    // Lease-event ids are `<journal seq>-<row>`: increasing, one per event.
    let ids: Vec<EntryId> = signals
        .lease_events()
        .await
        .iter()
        .map(|(id, _)| id.parse().expect("an entry id"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(signals.pending().await, 0);
}

async fn an_emergency_reclaim_ends_the_lease_with_its_reason_and_cost(signals: Signals) {
    let app = signals.spawn().await;
    let until = rfc3339_in(3 * 3600);
    let released = signals.add(&release("b2", "4", "2.00", &until)).await;
    assert_eq!(signals.result_of(&released).await["status"], "applied");
    let buyer = app.token("acme", "buyer");
    let (status, bid) = app.bid(&buyer, 4, "2.00").await;
    assert_eq!(status, StatusCode::CREATED, "{bid}");
    let lease_id = bid["leases"][0]["id"].as_str().expect("a lease").to_owned();
    // Shorter than the pool's notice: refused without `emergency`, recorded as refused.
    let short = signals
        .add(&[
            ("type", "reclaim"),
            ("supplier", "dc1"),
            ("block_id", "b2"),
            ("gpus", "4"),
            ("notice_s", "1"),
        ])
        .await;
    let refused = signals.result_of(&short).await;
    assert_eq!(
        (refused["status"].as_str(), refused["reason"].as_str()),
        ("refused", "notice_too_short")
    );
    let emergency = signals
        .add(&[
            ("type", "reclaim"),
            ("supplier", "dc1"),
            ("block_id", "b2"),
            ("gpus", "4"),
            ("notice_s", "1"),
            ("emergency", "true"),
        ])
        .await;
    assert_eq!(signals.result_of(&emergency).await["status"], "applied");
    let ended = eventually(WITHIN, "the lease ended on lease-events", || async {
        signals.lease_events().await.into_iter().find(|(_, f)| {
            f.get("event").map(String::as_str) == Some("ended")
                && f.get("lease_id") == Some(&lease_id)
        })
    })
    .await;
    assert_eq!(ended.1["reason"], "preempted");
    // Preempted within its first hour: free, as on EC2 Spot.
    assert_eq!(ended.1["cost"], "0.00");
    let lease = lease(&app, &buyer, &lease_id).await;
    assert_eq!(lease["status"], "preempted");
    assert_eq!(lease["emergency"], true);
    assert!(
        signals.dead().await.is_empty(),
        "refusals are answers, not poison"
    );
}

async fn a_signal_delivered_twice_changes_the_state_once(signals: Signals) {
    let app = signals.spawn().await;
    let until = rfc3339_in(3 * 3600);
    let first = signals.add(&release("b1", "8", "1.50", &until)).await;
    let reclaim = signals
        .add(&[
            ("type", "reclaim"),
            ("supplier", "dc1"),
            ("block_id", "b1"),
            ("gpus", "3"),
        ])
        .await;
    assert_eq!(signals.result_of(&first).await["status"], "applied");
    assert_eq!(signals.result_of(&reclaim).await["status"], "applied");
    let supplier = app.token("dc1", "supplier");
    let (_, before) = app.get("/v1/capacity/b1", Some(&supplier)).await;
    assert_eq!(before["block"]["gpus_reclaimed"], 3, "{before}");

    // Delivered again, as after a crash between the commit and the acknowledgement: the
    // consumer finds both ids recorded and acknowledges them without applying anything.
    signals.rewind().await;
    eventually(WITHIN, "both signals settled again", || async {
        let results = signals.results().await;
        (results.len() == 4 && signals.pending().await == 0).then_some(())
    })
    .await;
    let results = signals.results().await;
    for (signal, status) in [(&first, "applied"), (&reclaim, "applied")] {
        let mine: Vec<&HashMap<String, String>> = results
            .iter()
            .map(|(_, f)| f)
            .filter(|f| f.get("signal_id") == Some(signal))
            .collect();
        assert_eq!(mine.len(), 2, "{results:?}");
        assert_eq!(mine[0]["seq"], mine[1]["seq"], "the same journal entry");
        assert_eq!(mine[1]["status"], status);
        assert_eq!(mine[1]["redelivered"], "true");
    }
    let (_, after) = app.get("/v1/capacity/b1", Some(&supplier)).await;
    assert_eq!(after["block"], before["block"], "nothing changed");
    assert_eq!(ask_gpus(&app, "1.50").await, 5);
    // One journal entry per signal, one record each.
    let db = app.db().client().await;
    let journaled: i64 = db
        .query_one(
            "SELECT count(*) FROM journal WHERE command->>'type' IN ('release_capacity', 'reclaim_capacity')",
            &[],
        )
        .await
        .expect("journal")
        .get(0);
    assert_eq!(journaled, 2);
    let recorded: i64 = db
        .query_one("SELECT count(*) FROM applied_signals", &[])
        .await
        .expect("applied_signals")
        .get(0);
    assert_eq!(recorded, 2);
}

async fn a_signal_left_pending_by_a_dead_consumer_is_applied_once_by_the_next(signals: Signals) {
    // Before any server: one entry read by this server's own consumer name (it died before
    // committing), one by another consumer that died.
    signals.create_group().await;
    let until = rfc3339_in(3 * 3600);
    let own = signals.add(&release("own", "2", "1.20", &until)).await;
    assert_eq!(
        signals.read_as(CONSUMER, 1).await,
        std::slice::from_ref(&own)
    );
    let other = signals.add(&release("other", "3", "1.30", &until)).await;
    assert_eq!(
        signals.read_as("a-dead-consumer", 1).await,
        std::slice::from_ref(&other)
    );
    assert_eq!(signals.pending().await, 2);

    let app = TestApp::spawn_with(|env| {
        signals.configure(env);
        env.insert("OFFPEAK_REDIS_CLAIM_IDLE_MS".into(), "200".into());
    })
    .await;
    assert_eq!(signals.result_of(&own).await["status"], "applied");
    assert_eq!(signals.result_of(&other).await["status"], "applied");
    eventually(WITHIN, "nothing pending", || async {
        (signals.pending().await == 0).then_some(())
    })
    .await;
    assert_eq!(ask_gpus(&app, "1.20").await, 2);
    assert_eq!(ask_gpus(&app, "1.30").await, 3);

    // A restart: the server dies after reading a reclaim and before committing it; the next
    // server on the same database applies it, once.
    let db = app.stop().await;
    let reclaim = signals
        .add(&[
            ("type", "reclaim"),
            ("supplier", "dc1"),
            ("block_id", "own"),
            ("gpus", "1"),
        ])
        .await;
    assert_eq!(
        signals.read_as(CONSUMER, 10).await,
        std::slice::from_ref(&reclaim)
    );
    let mut env = crate::helpers::base_env(&db.url());
    signals.configure(&mut env);
    let app = TestApp::spawn_on(db, env).await;
    let result = signals.result_of(&reclaim).await;
    assert_eq!(result["status"], "applied", "{result:?}");
    assert_eq!(result["redelivered"], "false");
    assert_eq!(ask_gpus(&app, "1.20").await, 1);
    let supplier = app.token("dc1", "supplier");
    let (_, block) = app.get("/v1/capacity/own", Some(&supplier)).await;
    assert_eq!(block["block"]["gpus_reclaimed"], 1, "{block}");
    assert_eq!(signals.results().await.len(), 3, "one result per signal");
}

async fn poison_signals_go_to_the_dead_letters_and_the_consumer_keeps_going(signals: Signals) {
    let app = signals.spawn().await;
    let until = rfc3339_in(3 * 3600);
    let garbage = signals
        .add(&[("type", "explode"), ("supplier", "dc1"), ("block_id", "x")])
        .await;
    let missing = signals
        .add(&[("type", "reclaim"), ("supplier", "dc1"), ("block_id", "x")])
        .await;
    let mut unknown_pool = release("b9", "8", "1.50", &until);
    unknown_pool[3] = ("pool", "tpu-v5.moon");
    let unknown_pool = signals.add(&unknown_pool).await;
    let off_tick = signals.add(&release("b8", "8", "1.505", &until)).await;
    let not_a_block = signals
        .add(&[
            ("type", "reclaim"),
            ("supplier", "dc1"),
            ("block_id", "nope"),
            ("gpus", "1"),
        ])
        .await;
    let good = signals.add(&release("b1", "8", "1.50", &until)).await;

    assert_eq!(signals.result_of(&good).await["status"], "applied");
    eventually(WITHIN, "the good release on the book", || async {
        (ask_gpus(&app, "1.50").await == 8).then_some(())
    })
    .await;
    let refused = signals.result_of(&not_a_block).await;
    assert_eq!(
        (refused["status"].as_str(), refused["reason"].as_str()),
        ("refused", "unknown_block")
    );
    let dead = eventually(WITHIN, "four dead letters", || async {
        let dead = signals.dead().await;
        (dead.len() == 4).then_some(dead)
    })
    .await;
    let reason_of = |signal: &str| {
        dead.iter()
            .find(|(_, f)| f.get("signal_id").map(String::as_str) == Some(signal))
            .map(|(_, f)| f.clone())
            .unwrap_or_else(|| panic!("no dead letter for {signal}: {dead:?}"))
    };
    assert_eq!(reason_of(&garbage)["reason"], "unknown_type");
    assert_eq!(reason_of(&missing)["reason"], "malformed");
    assert!(
        reason_of(&missing)["detail"].contains("gpus"),
        "{:?}",
        reason_of(&missing)
    );
    assert_eq!(reason_of(&unknown_pool)["reason"], "unknown_pool");
    assert_eq!(reason_of(&off_tick)["reason"], "price_not_on_tick");
    let original: Json =
        serde_json::from_str(&reason_of(&off_tick)["fields"]).expect("fields JSON");
    assert_eq!(
        original["reserve_price"], "1.505",
        "the original fields: {original}"
    );
    assert_eq!(original["block_id"], "b8");
    for signal in [&garbage, &missing, &unknown_pool, &off_tick] {
        assert_eq!(signals.result_of(signal).await["status"], "dead");
    }
    assert_eq!(signals.pending().await, 0, "poison is acknowledged");
}

#[tokio::test]
async fn a_killed_redis_connection_loses_no_signal_and_applies_none_twice() {
    let signals = Signals::redis().await;
    let app = signals.spawn().await;
    let until = rfc3339_in(3 * 3600);
    let mut ids = Vec::new();
    let mut killed = 0;
    for i in 0..120 {
        let block = format!("k{i}");
        ids.push(signals.add(&release(&block, "1", "1.50", &until)).await);
        if i % 30 == 15 {
            killed += signals.kill_server_connections().await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(killed > 0, "the server's connections were found and killed");
    eventually(Duration::from_secs(60), "every signal settled", || async {
        (signals.results().await.len() >= ids.len() && signals.pending().await == 0).then_some(())
    })
    .await;
    let results = signals.results().await;
    assert_eq!(results.len(), ids.len(), "one result per signal");
    for id in &ids {
        let result = results
            .iter()
            .find(|(_, f)| f.get("signal_id") == Some(id))
            .unwrap_or_else(|| panic!("no result for {id}"));
        assert_eq!(result.1["status"], "applied", "{result:?}");
    }
    assert_eq!(ask_gpus(&app, "1.50").await, 120);
    let recorded: i64 = app
        .db()
        .client()
        .await
        .query_one("SELECT count(*) FROM applied_signals", &[])
        .await
        .expect("applied_signals")
        .get(0);
    assert_eq!(recorded, 120);
    // The publishers came back too.
    eventually(WITHIN, "the bus ready again", || async {
        let (_, ready) = app.get("/readyz", None).await;
        (ready["bus"]["status"] == "up").then_some(())
    })
    .await;
    let hash = signals.capacity(POOL).await;
    assert_eq!(hash["idle_gpus"], "120");
}

#[tokio::test]
async fn without_redis_rest_trading_goes_on_and_readyz_says_the_bus_is_degraded() {
    // Nothing listens on port 1.
    let app = TestApp::spawn_with(|env| {
        env.insert("REDIS_URL".into(), "redis://127.0.0.1:1".into());
        env.insert(
            "OFFPEAK_REDIS_PREFIX".into(),
            format!("t{:016x}", rand::random::<u64>()),
        );
    })
    .await;
    let (status, ready) = app.get("/readyz", None).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["bus"]["kind"], "redis");
    assert_eq!(ready["bus"]["consumer"], "down");
    let supplier = app.token("dc1", "supplier");
    let buyer = app.token("acme", "buyer");
    app.release_block(&supplier, "b1", 8, "1.50", 3).await;
    let (status, bid) = app.bid(&buyer, 8, "2.00").await;
    assert_eq!(status, StatusCode::CREATED, "{bid}");
    assert_eq!(bid["leases"].as_array().map(Vec::len), Some(1));
    let (_, metrics) = app.get("/metrics", None).await;
    assert!(
        metrics
            .as_str()
            .is_some_and(|m| m.contains("offpeak_bus_up 0")),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_in_process_bus_is_ready_without_redis() {
    let signals = Signals::memory();
    let app = signals.spawn().await;
    let ready = eventually(WITHIN, "the bus up", || async {
        let (_, ready) = app.get("/readyz", None).await;
        (ready["status"] == "ready").then_some(ready)
    })
    .await;
    assert_eq!(ready["bus"]["kind"], "memory");
}

#[tokio::test]
async fn a_non_utf8_field_is_poison_not_a_panic() {
    let signals = Signals::redis().await;
    let _app = signals.spawn().await;
    let mut command = redis::cmd("XADD");
    command
        .arg(signals.keys.capacity())
        .arg("*")
        .arg("type")
        .arg(&b"rel\xffase"[..])
        .arg("supplier")
        .arg("dc1");
    let id = text(&signals.query(&mut command).await);
    let result = signals.result_of(&id).await;
    assert_eq!(
        (result["status"].as_str(), result["reason"].as_str()),
        ("dead", "malformed")
    );
}
