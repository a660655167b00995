//! The bus: live capacity signals in, market data and lease events out (DESIGN section 8).
//!
//! Two implementations behind one trait, [`Bus`]: Redis ([`redis::RedisBus`], when `REDIS_URL`
//! is set) and an in-process one ([`memory::MemoryBus`], otherwise). Both keep the same keys,
//! all under a prefix (`OFFPEAK_REDIS_PREFIX`, default `offpeak`):
//!
//! | key | kind | what |
//! |---|---|---|
//! | `{prefix}:capacity` | stream, group `offpeak` | signals in: release, update, reclaim, forecast |
//! | `{prefix}:capacity:results` | capped stream | one entry per signal settled: applied, refused or dead |
//! | `{prefix}:capacity:dead` | capped stream | signals that can never be applied, with the reason and the original fields |
//! | `{prefix}:md:{pool}` | pub/sub | book deltas and trades, the WebSocket's JSON |
//! | `{prefix}:lease-events` | capped stream | lease opened, reclaim warning, notice, ended |
//! | `{prefix}:capacity:{pool}` | hash | idle, leased and reclaiming GPUs, best bid/ask, last price |
//!
//! Three tasks run the bus: the [`consumer`] (signals in, exactly once), the market-data
//! [`publisher`] and the lease-events publisher. None of them is on the path of a REST request:
//! when Redis is down, trading goes on, the tasks retry with backoff, and `/readyz` says the bus
//! is degraded.
//!
//! Exactly once, in short: a signal's entry id is recorded in the same database transaction as
//! the command it became ([`crate::sequencer::SequencerHandle::submit_signal`]); the entry is
//! acknowledged only after that commit, in one atomic step with its result (and, for a poison
//! entry, its dead letter); a redelivered entry whose id is recorded is acknowledged without
//! being applied again.

pub mod consumer;
pub mod memory;
pub mod publisher;
pub mod redis;
pub mod signal;

use crate::config::BusSettings;
use crate::journal::EntryId;
use crate::metrics::{Reading, ReadingKind, Readings};
use crate::sequencer::SequencerHandle;
use crate::store::Store;
use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The consumer group every offpeak process reads the capacity stream with.
pub const CONSUMER_GROUP: &str = "offpeak";

/// A stream entry's fields, in order, as raw bytes (a producer may send anything).
pub type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// One entry of the capacity stream, as delivered to this consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignalEntry {
    /// The entry id, exactly as the stream gave it.
    pub id: String,
    /// Its fields; `None` when the entry was deleted while it was pending.
    pub fields: Option<Fields>,
    /// How many times the group delivered it (1 on the first read).
    pub deliveries: u64,
}

/// How one signal ended, written to the results stream (and the dead letters) when it is
/// acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// The capacity stream entry.
    pub id: String,
    /// The fields of its `{prefix}:capacity:results` entry.
    pub result: Vec<(String, String)>,
    /// For a poison entry, the fields of its `{prefix}:capacity:dead` entry.
    pub dead_letter: Option<Vec<(String, String)>>,
}

/// A lease event, ready for the lease-events stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseEventEntry {
    /// `<journal seq>-<index of the event within its command>`: the same event always gets the
    /// same id, so a publish that is repeated after a lost reply adds nothing.
    pub id: EntryId,
    /// Its fields.
    pub fields: Vec<(String, String)>,
}

/// What the market-data publisher sends after a batch of changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MarketUpdate {
    /// Pub/sub messages: channel key and JSON text.
    pub messages: Vec<(String, Arc<str>)>,
    /// Hash key and its fields, set in full.
    pub hashes: Vec<(String, Vec<(String, String)>)>,
}

/// Why a bus operation failed: always something to retry later (the connection dropped, the
/// server is down or answered an error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bus unavailable: {0}")]
pub struct BusError(pub String);

/// The operations offpeak needs from the bus. Each call is one round trip (or one atomic step)
/// on Redis; the in-process bus does the same under a lock.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// `redis` or `memory`, for `/readyz` and logs.
    fn kind(&self) -> &'static str;

    /// The key names under this bus's prefix.
    fn keys(&self) -> &Keys;

    /// Creates the consumer group on the capacity stream (and the stream) if missing; a new
    /// group starts before the first entry, so entries written before offpeak's first start are
    /// applied too.
    async fn create_group(&self) -> Result<(), BusError>;

    /// Up to `count` entries already delivered to `consumer` and not acknowledged, with ids
    /// after `after` (XREADGROUP with an id, then XPENDING for the delivery counts).
    async fn read_own_pending(
        &self,
        consumer: &str,
        after: EntryId,
        count: usize,
    ) -> Result<Vec<SignalEntry>, BusError>;

    /// Takes up to `count` entries idle for at least `min_idle` from any consumer, starting
    /// at `cursor` (XAUTOCLAIM); returns the next cursor (`0-0` once the scan is done).
    async fn claim_idle(
        &self,
        consumer: &str,
        min_idle: Duration,
        cursor: EntryId,
        count: usize,
    ) -> Result<(EntryId, Vec<SignalEntry>), BusError>;

    /// Up to `count` new entries for `consumer`, waiting at most `block` for the first.
    async fn read_new(
        &self,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<SignalEntry>, BusError>;

    /// Acknowledges each entry and, only if that acknowledgement was the first, appends its
    /// result and dead letter, atomically per entry: a settlement repeated after a lost reply
    /// writes nothing twice. Returns how many entries this call acknowledged.
    async fn settle(&self, settlements: &[Settlement]) -> Result<usize, BusError>;

    /// Publishes market data: the messages, then the hashes.
    async fn publish_market(&self, update: &MarketUpdate) -> Result<(), BusError>;

    /// Appends lease events in order; an event whose id is not after the stream's last id is
    /// skipped (it was appended before).
    async fn append_lease_events(&self, events: &[LeaseEventEntry]) -> Result<(), BusError>;

    /// The id of the newest lease event in the stream, if any.
    async fn last_lease_event(&self) -> Result<Option<EntryId>, BusError>;

    /// The in-process bus behind this trait object, if it is one (tests drive it directly).
    fn as_memory(&self) -> Option<&memory::MemoryBus> {
        None
    }
}

/// The key names, all under one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`.
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}:capacity`: signals in.
    pub fn capacity(&self) -> String {
        format!("{}:capacity", self.prefix)
    }

    /// `{prefix}:capacity:results`: one entry per settled signal.
    pub fn results(&self) -> String {
        format!("{}:capacity:results", self.prefix)
    }

    /// `{prefix}:capacity:dead`: signals that can never be applied.
    pub fn dead(&self) -> String {
        format!("{}:capacity:dead", self.prefix)
    }

    /// `{prefix}:md:{pool}`: book deltas and trades.
    pub fn market(&self, pool: &str) -> String {
        format!("{}:md:{pool}", self.prefix)
    }

    /// `{prefix}:lease-events`.
    pub fn lease_events(&self) -> String {
        format!("{}:lease-events", self.prefix)
    }

    /// `{prefix}:capacity:{pool}`: the pool's live capacity hash. Pool ids contain a dot
    /// (`<gpu>.<region>`), so they never collide with `results` or `dead`.
    pub fn capacity_hash(&self, pool: &str) -> String {
        format!("{}:capacity:{pool}", self.prefix)
    }
}

/// What each bus task last saw, for `/readyz` and `/metrics`. Plain atomics, no locks.
#[derive(Debug, Default)]
pub struct BusStatus {
    consumer_up: AtomicBool,
    publisher_up: AtomicBool,
    lease_events_up: AtomicBool,
    signals_applied: AtomicU64,
    signals_refused: AtomicU64,
    signals_dead: AtomicU64,
    signals_redelivered: AtomicU64,
    reconnects: AtomicU64,
}

/// Which bus task a status change is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusTask {
    /// The capacity stream consumer.
    Consumer,
    /// The market-data publisher.
    Publisher,
    /// The lease-events publisher.
    LeaseEvents,
}

impl BusStatus {
    fn flag(&self, task: BusTask) -> &AtomicBool {
        match task {
            BusTask::Consumer => &self.consumer_up,
            BusTask::Publisher => &self.publisher_up,
            BusTask::LeaseEvents => &self.lease_events_up,
        }
    }

    /// Records that `task` reached the bus (`true`) or lost it (`false`).
    pub fn set(&self, task: BusTask, up: bool) {
        let was = self.flag(task).swap(up, Ordering::AcqRel);
        if was && !up {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether `task` is connected.
    pub fn is_up(&self, task: BusTask) -> bool {
        self.flag(task).load(Ordering::Acquire)
    }

    /// Whether every task is connected.
    pub fn all_up(&self) -> bool {
        [BusTask::Consumer, BusTask::Publisher, BusTask::LeaseEvents]
            .into_iter()
            .all(|t| self.is_up(t))
    }

    /// Counts a settled signal by its status (`applied`, `refused`, `dead`).
    pub fn count_settled(&self, status: &str, redelivered: bool) {
        let counter = match status {
            "applied" => &self.signals_applied,
            "refused" => &self.signals_refused,
            _ => &self.signals_dead,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if redelivered {
            self.signals_redelivered.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `(applied, refused, dead, redelivered, reconnects)` since start.
    pub fn counts(&self) -> (u64, u64, u64, u64, u64) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        (
            get(&self.signals_applied),
            get(&self.signals_refused),
            get(&self.signals_dead),
            get(&self.signals_redelivered),
            get(&self.reconnects),
        )
    }
}

impl Readings for BusStatus {
    fn readings(&self) -> Vec<Reading> {
        let (applied, refused, dead, redelivered, reconnects) = self.counts();
        let counter = |name, help, value| Reading {
            name,
            help,
            kind: ReadingKind::Counter,
            value,
        };
        vec![
            Reading {
                name: "bus_up",
                help: "1 when every bus task (consumer, publishers) reaches the bus",
                kind: ReadingKind::Gauge,
                value: u64::from(self.all_up()),
            },
            counter("signals_applied", "Capacity signals applied", applied),
            counter(
                "signals_refused",
                "Capacity signals the engine refused for the market's state at the time",
                refused,
            ),
            counter(
                "signals_dead",
                "Capacity signals sent to the dead letters",
                dead,
            ),
            counter(
                "signals_redelivered",
                "Signals delivered again after being applied (acknowledged, not applied twice)",
                redelivered,
            ),
            counter(
                "bus_disconnects",
                "Times a bus task lost its connection",
                reconnects,
            ),
        ]
    }
}

/// The bus and its status, as the rest of the server sees them.
#[derive(Clone)]
pub struct BusHandle {
    /// The bus.
    pub bus: Arc<dyn Bus>,
    /// What its tasks last saw.
    pub status: Arc<BusStatus>,
}

/// The running bus tasks; stop them before the sequencer.
pub struct BusTasks {
    stop: watch::Sender<bool>,
    consumer: JoinHandle<()>,
    publishers: Vec<JoinHandle<()>>,
}

impl BusTasks {
    /// Stops reading signals (the window in flight is committed and acknowledged first) and
    /// the publishers, and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.consumer.await {
            tracing::error!(error = %e, "the signal consumer task failed");
        }
        for publisher in self.publishers {
            publisher.abort();
            let _ = publisher.await;
        }
    }
}

/// The bus these settings ask for: Redis when a URL is set, the in-process bus otherwise.
pub fn connect(settings: &BusSettings) -> anyhow::Result<BusHandle> {
    let bus: Arc<dyn Bus> = match &settings.redis_url {
        Some(url) => Arc::new(redis::RedisBus::new(url.expose(), &settings.prefix)?),
        None => memory::MemoryBus::named(&settings.prefix),
    };
    Ok(BusHandle {
        bus,
        status: Arc::new(BusStatus::default()),
    })
}

/// Starts the consumer and both publishers on the current runtime; the lease-events publisher
/// times the notices it appends in `metrics`. `sole_consumer`: this node leads a cluster, and
/// claims at once whatever an old leader left pending.
pub fn start(
    handle: &BusHandle,
    settings: &BusSettings,
    sequencer: SequencerHandle,
    store: Arc<dyn Store>,
    metrics: Arc<crate::metrics::Metrics>,
    sole_consumer: bool,
) -> BusTasks {
    let (stop, stopped) = watch::channel(false);
    let consumer = tokio::spawn(consumer::run(
        handle.bus.clone(),
        handle.status.clone(),
        sequencer.clone(),
        store.clone(),
        consumer::ConsumerSettings {
            sole_consumer,
            ..consumer::ConsumerSettings::from(settings)
        },
        stopped,
    ));
    let publishers = vec![
        tokio::spawn(publisher::run_market(
            handle.bus.clone(),
            handle.status.clone(),
            sequencer.clone(),
        )),
        tokio::spawn(publisher::run_lease_events(
            handle.bus.clone(),
            handle.status.clone(),
            sequencer,
            store,
            metrics,
        )),
    ];
    BusTasks {
        stop,
        consumer,
        publishers,
    }
}

/// Doubling waits between retries, from `min` up to `max`.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at `min`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            next: min,
            min,
            max,
        }
    }

    /// The wait before the next retry; doubles the one after it.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// Back to `min` after a success.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_live_under_the_prefix() {
        let keys = Keys::new("t1");
        assert_eq!(keys.capacity(), "t1:capacity");
        assert_eq!(keys.dead(), "t1:capacity:dead");
        assert_eq!(keys.results(), "t1:capacity:results");
        assert_eq!(keys.market("h100.x"), "t1:md:h100.x");
        assert_eq!(keys.lease_events(), "t1:lease-events");
        assert_eq!(keys.capacity_hash("h100.x"), "t1:capacity:h100.x");
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let waits: Vec<u64> = (0..4).map(|_| b.next_wait().as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_millis(100));
    }
}
