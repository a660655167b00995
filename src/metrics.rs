//! The server's metrics for `GET /metrics`, in the Prometheus text format (version 0.0.4).
//!
//! One [`prometheus_client`] registry per server (tests run many servers in one process, so
//! nothing is global). The sequencer reports each committed batch once ([`Metrics::batch_committed`]):
//! its commands, rejections by reason, accepted bids and trades per pool, and the commit's
//! latency and size go into counters and histograms. Per-pool GPU gauges are read from the
//! committed engine at scrape time ([`Metrics::set_pools`]), so they are exact, never drift, and
//! cost nothing between scrapes.
//!
//! Notice delivery latency runs from the commit of the batch that gave the notice to the moment
//! the notice is handed to a consumer: the WebSocket feed (the hub fans it out from there) or
//! the bus's lease-events stream. The sequencer remembers when each recent batch committed
//! ([`COMMITS_REMEMBERED_MAX`] of them); a notice whose batch is older than that is not timed.
//!
//! Series that another module keeps in its own atomics (the WebSocket hub's connections, the
//! bus's status and signal counts) are read from it at scrape time through [`Readings`], so
//! `/metrics` is one encoding of one registry and this module knows neither the hub nor the bus.

use crate::journal::CommittedBatch;
use crate::limits::COMMITS_REMEMBERED_MAX;
use matching_engine::{Event, LeaseStatus, PoolSummary};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// `{pool="h100-sxm.us-east"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: String,
}

/// `{reason="price_not_on_tick"}`: an engine rejection's code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// `{code="invalid_body"}`: an API error's code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

/// `{to="ws"}`: where a notice was handed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabel {
    to: &'static str,
}

/// Where a preemption notice is handed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoticeSink {
    /// The WebSocket feed, from which the hub writes it to the buyer's sessions.
    WebSocket,
    /// The bus's lease-events stream (Redis `XADD`, or the in-process bus).
    Bus,
}

impl NoticeSink {
    fn label(self) -> &'static str {
        match self {
            NoticeSink::WebSocket => "ws",
            NoticeSink::Bus => "bus",
        }
    }
}

/// When the batch of sequence numbers `first..=last` committed.
#[derive(Clone, Copy, Debug)]
struct CommitTime {
    first: u64,
    last: u64,
    at: Instant,
}

/// Whether a [`Reading`] goes up and down or only up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadingKind {
    /// A value now (`# TYPE ... gauge`).
    Gauge,
    /// A count since start (`# TYPE ..._total counter`, the `_total` added).
    Counter,
}

/// One series that another module keeps in its own atomics, read at scrape time.
#[derive(Clone, Copy, Debug)]
pub struct Reading {
    /// The name after `offpeak_`; a counter's without its `_total`.
    pub name: &'static str,
    /// One sentence of help, without its full stop (as every registered series' help).
    pub help: &'static str,
    /// Gauge or counter.
    pub kind: ReadingKind,
    /// The value now.
    pub value: u64,
}

/// What keeps series of its own for `/metrics` (the hub's stats, the bus's status): read
/// once per scrape, in the order given.
pub trait Readings: std::fmt::Debug + Send + Sync + 'static {
    /// Every series, with its value now.
    fn readings(&self) -> Vec<Reading>;
}

/// A [`Readings`] as a registry collector.
#[derive(Debug)]
struct ReadAtScrape(Arc<dyn Readings>);

impl Collector for ReadAtScrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for reading in self.0.readings() {
            // A registered series' help gets its full stop from the registry; these are alike.
            let help = format!("{}.", reading.help);
            match reading.kind {
                ReadingKind::Gauge => {
                    let gauge = ConstGauge::new(reading.value.min(i64::MAX as u64) as i64);
                    gauge.encode(encoder.encode_descriptor(
                        reading.name,
                        &help,
                        None,
                        gauge.metric_type(),
                    )?)?;
                }
                ReadingKind::Counter => {
                    let counter = ConstCounter::new(reading.value);
                    counter.encode(encoder.encode_descriptor(
                        reading.name,
                        &help,
                        None,
                        counter.metric_type(),
                    )?)?;
                }
            }
        }
        Ok(())
    }
}

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Locked only to add a [`Readings`] at start and to encode a scrape.
    registry: Mutex<Registry>,
    commands: Counter,
    rejections: Family<ReasonLabel, Counter>,
    orders: Family<PoolLabel, Counter>,
    trades: Family<PoolLabel, Counter>,
    traded_gpus: Family<PoolLabel, Counter>,
    notices: Family<PoolLabel, Counter>,
    emergency_reclaims: Family<PoolLabel, Counter>,
    revenue_micros: Family<PoolLabel, Counter>,
    offered_gpu_seconds: Family<PoolLabel, Counter<f64, AtomicU64>>,
    leased_gpu_seconds: Family<PoolLabel, Counter<f64, AtomicU64>>,
    batches: Counter,
    journal_commit_seconds: Histogram,
    journal_batch_commands: Histogram,
    notice_delivery_seconds: Family<SinkLabel, Histogram>,
    api_errors: Family<CodeLabel, Counter>,
    batch_failures: Counter,
    writes_refused: Counter,
    recoveries: Counter,
    snapshots: Counter,
    snapshot_seq: Gauge,
    seq: Gauge,
    writable: Gauge,
    role: Gauge,
    epoch: Gauge,
    replication_lag: Gauge,
    followed_commands: Counter,
    idle_gpus: Family<PoolLabel, Gauge>,
    leased_gpus: Family<PoolLabel, Gauge>,
    reclaiming_gpus: Family<PoolLabel, Gauge>,
    resting_bids: Family<PoolLabel, Gauge>,
    /// The newest batches' commit times, oldest first, for notice delivery latency.
    commits: Mutex<VecDeque<CommitTime>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// 100 µs to ~3.3 s by doubling: a commit is a WAL fsync or one PostgreSQL round trip, and a
/// notice's way to its consumers is a few of those at most.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Metrics {
    /// Every series, registered and at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("offpeak");
        let commands = Counter::default();
        let rejections = Family::<ReasonLabel, Counter>::default();
        let orders = Family::<PoolLabel, Counter>::default();
        let trades = Family::<PoolLabel, Counter>::default();
        let traded_gpus = Family::<PoolLabel, Counter>::default();
        let notices = Family::<PoolLabel, Counter>::default();
        let emergency_reclaims = Family::<PoolLabel, Counter>::default();
        let revenue_micros = Family::<PoolLabel, Counter>::default();
        let offered_gpu_seconds = Family::<PoolLabel, Counter<f64, AtomicU64>>::default();
        let leased_gpu_seconds = Family::<PoolLabel, Counter<f64, AtomicU64>>::default();
        let batches = Counter::default();
        let journal_commit_seconds = latency_histogram();
        // 1 to 4096 commands by doubling: BATCH_COMMANDS_MAX is the top.
        let journal_batch_commands = Histogram::new(exponential_buckets(1.0, 2.0, 13));
        let notice_delivery_seconds = Family::<SinkLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let api_errors = Family::<CodeLabel, Counter>::default();
        let batch_failures = Counter::default();
        let writes_refused = Counter::default();
        let recoveries = Counter::default();
        let snapshots = Counter::default();
        let snapshot_seq = Gauge::default();
        let seq = Gauge::default();
        let writable = Gauge::default();
        let role = Gauge::default();
        let epoch = Gauge::default();
        let replication_lag = Gauge::default();
        let followed_commands = Counter::default();
        let idle_gpus = Family::<PoolLabel, Gauge>::default();
        let leased_gpus = Family::<PoolLabel, Gauge>::default();
        let reclaiming_gpus = Family::<PoolLabel, Gauge>::default();
        let resting_bids = Family::<PoolLabel, Gauge>::default();

        let r = &mut registry;
        r.register(
            "commands",
            "Commands committed (including ticks)",
            commands.clone(),
        );
        r.register(
            "rejections",
            "Committed commands the engine rejected, by reason",
            rejections.clone(),
        );
        r.register("orders", "Bids accepted, by pool", orders.clone());
        r.register("trades", "Executions, by pool", trades.clone());
        r.register("traded_gpus", "GPUs executed, by pool", traded_gpus.clone());
        r.register(
            "notices",
            "Leases given preemption notice, by pool",
            notices.clone(),
        );
        r.register(
            "emergency_reclaims",
            "Reclaims accepted with a notice shorter than promised (emergency), by pool",
            emergency_reclaims.clone(),
        );
        r.register(
            "revenue_micros",
            "Money earned by ended leases (their final cost), in micro-dollars, by pool",
            revenue_micros.clone(),
        );
        r.register(
            "offered_gpu_seconds",
            "GPU-seconds offered (unsold in open windows, or leased), by the engine's clock, by pool",
            offered_gpu_seconds.clone(),
        );
        r.register(
            "leased_gpu_seconds",
            "GPU-seconds in running leases, by the engine's clock, by pool",
            leased_gpu_seconds.clone(),
        );
        r.register("batches", "Batches committed", batches.clone());
        r.register(
            "journal_commit_seconds",
            "Time to commit one batch to the store (journal rows and their effects, one transaction)",
            journal_commit_seconds.clone(),
        );
        r.register(
            "journal_batch_commands",
            "Commands per committed batch",
            journal_batch_commands.clone(),
        );
        r.register(
            "notice_delivery_seconds",
            "From the commit of a reclaim to its notice being handed to the WebSocket feed (to=ws) or the bus's lease-events stream (to=bus)",
            notice_delivery_seconds.clone(),
        );
        r.register(
            "api_errors",
            "API requests answered with an error, by error code",
            api_errors.clone(),
        );
        r.register(
            "batch_failures",
            "Batches whose commit failed",
            batch_failures.clone(),
        );
        r.register(
            "writes_refused",
            "Writes answered 503 while the database was unavailable",
            writes_refused.clone(),
        );
        r.register(
            "recoveries",
            "Rebuilds from snapshot and journal after a failed commit",
            recoveries.clone(),
        );
        r.register("snapshots", "Engine snapshots taken", snapshots.clone());
        r.register(
            "snapshot_seq",
            "Sequence number of the newest snapshot",
            snapshot_seq.clone(),
        );
        r.register("seq", "Last committed sequence number", seq.clone());
        r.register(
            "writes_available",
            "1 when writes are accepted, 0 while the database is unavailable",
            writable.clone(),
        );
        r.register(
            "pool_idle_gpus",
            "Unsold GPUs in open capacity windows, by pool",
            idle_gpus.clone(),
        );
        r.register(
            "pool_leased_gpus",
            "GPUs in running leases (including those under notice), by pool",
            leased_gpus.clone(),
        );
        r.register(
            "pool_reclaiming_gpus",
            "GPUs of leases under preemption notice, by pool",
            reclaiming_gpus.clone(),
        );
        r.register(
            "pool_resting_bids",
            "Bids resting on the book, by pool",
            resting_bids.clone(),
        );
        r.register(
            "role",
            "1 on the node that commits (the leader, or the single process), 0 on a standby",
            role.clone(),
        );
        r.register(
            "epoch",
            "The leadership epoch this node last knew (0 for the single-process store)",
            epoch.clone(),
        );
        r.register(
            "replication_lag_seqs",
            "Commands in the journal this node has not applied yet (0 on the leader)",
            replication_lag.clone(),
        );
        r.register(
            "followed_commands",
            "Commands a standby applied from the leader's journal",
            followed_commands.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            commands,
            rejections,
            orders,
            trades,
            traded_gpus,
            notices,
            emergency_reclaims,
            revenue_micros,
            offered_gpu_seconds,
            leased_gpu_seconds,
            batches,
            journal_commit_seconds,
            journal_batch_commands,
            notice_delivery_seconds,
            api_errors,
            batch_failures,
            writes_refused,
            recoveries,
            snapshots,
            snapshot_seq,
            seq,
            writable,
            role,
            epoch,
            replication_lag,
            followed_commands,
            idle_gpus,
            leased_gpus,
            reclaiming_gpus,
            resting_bids,
            commits: Mutex::new(VecDeque::with_capacity(COMMITS_REMEMBERED_MAX)),
        }
    }

    /// A batch committed in `took`: counts its commands, rejections, bids, trades, notices and
    /// emergency reclaims, and remembers when it committed.
    pub fn batch_committed(&self, batch: &CommittedBatch, took: Duration) {
        let (Some(first), Some(last)) = (batch.records.first(), batch.records.last()) else {
            return;
        };
        self.remember_commit(CommitTime {
            first: first.seq,
            last: last.seq,
            at: Instant::now(),
        });
        let commands = batch.records.len() as u64;
        self.commands.inc_by(commands);
        self.batches.inc();
        self.journal_commit_seconds.observe(took.as_secs_f64());
        self.journal_batch_commands.observe(commands as f64);
        self.market_outcomes(batch);
    }

    /// A standby applied a batch of the leader's journal: the market's series count it as
    /// the leader's do (the same history), the commit series do not.
    pub fn batch_followed(&self, batch: &CommittedBatch) {
        self.followed_commands.inc_by(batch.records.len() as u64);
        self.market_outcomes(batch);
    }

    /// The market's counters (rejections, bids, trades, notices, reclaims, revenue, usage).
    fn market_outcomes(&self, batch: &CommittedBatch) {
        // Tallied per batch first: one family lookup per pool or reason, not one per event.
        let mut rejections: HashMap<&'static str, u64> = HashMap::new();
        let mut pools: HashMap<&str, [u64; 6]> = HashMap::new();
        for event in batch.records.iter().flat_map(|r| &r.events) {
            match event {
                Event::Rejected { reason } => *rejections.entry(reason.as_str()).or_default() += 1,
                Event::BidAccepted { order } => pools.entry(&order.pool).or_default()[0] += 1,
                Event::Traded { trade } => {
                    let tally = pools.entry(&trade.pool).or_default();
                    tally[1] += 1;
                    tally[2] += u64::from(trade.gpus);
                }
                Event::LeaseChanged { lease } if lease.status == LeaseStatus::Preempting => {
                    pools.entry(&lease.pool).or_default()[3] += 1
                }
                Event::ReclaimAccepted {
                    pool,
                    emergency: true,
                    ..
                } => pools.entry(pool).or_default()[4] += 1,
                Event::LeaseChanged { lease } if lease.status.is_ended() => {
                    pools.entry(&lease.pool).or_default()[5] += lease.cost_micros
                }
                _ => {}
            }
        }
        for usage in &batch.usage {
            let label = PoolLabel {
                pool: usage.pool.to_string(),
            };
            let seconds = |gpu_ms: u64| gpu_ms as f64 / 1000.0;
            self.offered_gpu_seconds
                .get_or_create(&label)
                .inc_by(seconds(usage.offered_gpu_ms));
            self.leased_gpu_seconds
                .get_or_create(&label)
                .inc_by(seconds(usage.leased_gpu_ms));
        }
        for (reason, n) in rejections {
            self.rejections
                .get_or_create(&ReasonLabel { reason })
                .inc_by(n);
        }
        for (pool, [orders, trades, gpus, notices, emergencies, revenue]) in pools {
            let label = PoolLabel {
                pool: pool.to_owned(),
            };
            for (family, n) in [
                (&self.orders, orders),
                (&self.trades, trades),
                (&self.traded_gpus, gpus),
                (&self.notices, notices),
                (&self.emergency_reclaims, emergencies),
                (&self.revenue_micros, revenue),
            ] {
                if n > 0 {
                    family.get_or_create(&label).inc_by(n);
                }
            }
        }
    }

    fn remember_commit(&self, commit: CommitTime) {
        let mut commits = self.commits.lock().unwrap_or_else(|e| e.into_inner());
        if commits.len() == COMMITS_REMEMBERED_MAX {
            commits.pop_front();
        }
        commits.push_back(commit);
    }

    /// When the command of sequence number `seq` committed, if it was recently.
    fn committed_at(&self, seq: u64) -> Option<Instant> {
        let commits = self.commits.lock().unwrap_or_else(|e| e.into_inner());
        // Sorted by seq: batches commit in order.
        let at = commits.partition_point(|c| c.last < seq);
        commits.get(at).filter(|c| c.first <= seq).map(|c| c.at)
    }

    /// The notice given by command `seq` was handed to `sink` just now.
    pub fn notice_handed(&self, sink: NoticeSink, seq: u64) {
        if let Some(at) = self.committed_at(seq) {
            self.notice_delivery_seconds
                .get_or_create(&SinkLabel { to: sink.label() })
                .observe(at.elapsed().as_secs_f64());
        }
    }

    /// The notices of a committed batch were handed to `sink` just now.
    pub fn notices_handed(&self, sink: NoticeSink, batch: &CommittedBatch) {
        for record in &batch.records {
            let notices = record
                .events
                .iter()
                .filter(|e| {
                    matches!(e, Event::LeaseChanged { lease } if lease.status == LeaseStatus::Preempting)
                })
                .count();
            for _ in 0..notices {
                self.notice_handed(sink, record.seq);
            }
        }
    }

    /// A request was answered with the API error `code`.
    pub fn api_error(&self, code: &'static str) {
        self.api_errors.get_or_create(&CodeLabel { code }).inc();
    }

    /// A batch whose commit failed.
    pub fn batch_failed(&self) {
        self.batch_failures.inc();
    }

    /// Writes answered 503 because writes were refused.
    pub fn writes_refused(&self, n: u64) {
        self.writes_refused.inc_by(n);
    }

    /// The sequencer rebuilt from the store and resumed writes.
    pub fn recovered(&self) {
        self.recoveries.inc();
    }

    /// A snapshot was taken at `seq`.
    pub fn snapshot_taken(&self, seq: u64) {
        self.snapshots.inc();
        self.snapshot_seq.set(seq as i64);
    }

    /// The sequencer's last committed seq and write availability.
    pub fn set_sequencer(&self, seq: u64, writable: bool) {
        self.seq.set(seq as i64);
        self.writable.set(i64::from(writable));
    }

    /// This node's place in the cluster: whether it commits, the epoch, and how far behind
    /// the journal it is.
    pub fn set_cluster(&self, leads: bool, epoch: u64, lag: u64) {
        self.role.set(i64::from(leads));
        self.epoch.set(epoch.min(i64::MAX as u64) as i64);
        self.replication_lag.set(lag.min(i64::MAX as u64) as i64);
    }

    /// The pools' committed capacity and resting bids, read at scrape time.
    pub fn set_pools(&self, pools: &[(PoolSummary, u64)]) {
        for (pool, resting_bids) in pools {
            let label = PoolLabel {
                pool: pool.config.id.clone(),
            };
            let gauge = |n: u64| n.min(i64::MAX as u64) as i64;
            self.idle_gpus
                .get_or_create(&label)
                .set(gauge(pool.idle_gpus));
            self.leased_gpus
                .get_or_create(&label)
                .set(gauge(pool.leased_gpus));
            self.reclaiming_gpus
                .get_or_create(&label)
                .set(gauge(pool.reclaiming_gpus));
            self.resting_bids
                .get_or_create(&label)
                .set(gauge(*resting_bids));
        }
    }

    /// Adds `source`'s series to every scrape, after those registered before it.
    pub fn read_at_scrape(&self, source: Arc<dyn Readings>) {
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .register_collector(Box::new(ReadAtScrape(source)));
    }

    /// The Prometheus text exposition of these metrics.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::CommandRecord;
    use matching_engine::{Command, Rejection, TimeMs};

    fn batch(first_seq: u64, events: Vec<Vec<Event>>) -> CommittedBatch {
        CommittedBatch {
            records: events
                .into_iter()
                .enumerate()
                .map(|(i, events)| CommandRecord {
                    seq: first_seq + i as u64,
                    at: TimeMs(0),
                    command: Command::Tick,
                    signal: None,
                    events,
                })
                .collect(),
            usage: Vec::new(),
        }
    }

    #[test]
    fn a_batch_counts_commands_rejections_by_reason_and_its_commit() {
        let metrics = Metrics::new();
        let rejected = |reason| vec![Event::Rejected { reason }];
        metrics.batch_committed(
            &batch(
                1,
                vec![
                    rejected(Rejection::PriceNotOnTick),
                    rejected(Rejection::PriceNotOnTick),
                    rejected(Rejection::UnknownPool),
                    vec![],
                ],
            ),
            Duration::from_millis(3),
        );
        let text = metrics.render();
        assert!(text.contains("offpeak_commands_total 4\n"), "{text}");
        assert!(
            text.contains("offpeak_rejections_total{reason=\"price_not_on_tick\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("offpeak_rejections_total{reason=\"unknown_pool\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("offpeak_journal_commit_seconds_count 1\n"),
            "{text}"
        );
        assert!(
            text.contains("offpeak_journal_batch_commands_sum 4.0\n"),
            "{text}"
        );
        // 3 ms falls in the 0.0032 s bucket, not in 0.0016.
        assert!(
            text.contains("offpeak_journal_commit_seconds_bucket{le=\"0.0016\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("offpeak_journal_commit_seconds_bucket{le=\"0.0032\"} 1\n"),
            "{text}"
        );
    }

    #[derive(Debug)]
    struct Fixed;

    impl Readings for Fixed {
        fn readings(&self) -> Vec<Reading> {
            vec![
                Reading {
                    name: "things",
                    help: "Things now",
                    kind: ReadingKind::Gauge,
                    value: 2,
                },
                Reading {
                    name: "stuff",
                    help: "Stuff so far",
                    kind: ReadingKind::Counter,
                    value: 3,
                },
            ]
        }
    }

    #[test]
    fn readings_are_encoded_at_scrape_like_registered_series() {
        let metrics = Metrics::new();
        metrics.read_at_scrape(Arc::new(Fixed));
        let text = metrics.render();
        assert!(
            text.contains(
                "# HELP offpeak_things Things now.\n# TYPE offpeak_things gauge\noffpeak_things 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("# HELP offpeak_stuff_total Stuff so far.\n# TYPE offpeak_stuff_total counter\noffpeak_stuff_total 3\n"),
            "{text}"
        );
    }

    #[test]
    fn emergency_reclaims_are_counted_per_pool_from_committed_events() {
        let metrics = Metrics::new();
        let reclaim = |pool: &str, emergency| Event::ReclaimAccepted {
            pool: pool.into(),
            supplier: "sched".into(),
            block_id: "b".into(),
            gpus: 1,
            gpus_from_book: 1,
            leases_preempted: 0,
            notice_ends_at: TimeMs(0),
            emergency,
        };
        metrics.batch_committed(
            &batch(
                1,
                vec![
                    vec![reclaim("p", true)],
                    vec![reclaim("p", false)],
                    vec![reclaim("q", true)],
                    vec![reclaim("p", true)],
                ],
            ),
            Duration::ZERO,
        );
        let text = metrics.render();
        assert!(
            text.contains("offpeak_emergency_reclaims_total{pool=\"p\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("offpeak_emergency_reclaims_total{pool=\"q\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn a_notice_is_timed_from_its_batchs_commit_and_only_while_remembered() {
        let metrics = Metrics::new();
        metrics.batch_committed(&batch(10, vec![vec![], vec![], vec![]]), Duration::ZERO);
        assert!(metrics.committed_at(9).is_none());
        assert!(metrics.committed_at(11).is_some());
        assert!(metrics.committed_at(13).is_none());
        metrics.notice_handed(NoticeSink::Bus, 12);
        metrics.notice_handed(NoticeSink::Bus, 99);
        let text = metrics.render();
        assert!(
            text.contains("offpeak_notice_delivery_seconds_count{to=\"bus\"} 1\n"),
            "{text}"
        );
        for n in 0..COMMITS_REMEMBERED_MAX as u64 {
            metrics.batch_committed(&batch(100 + n, vec![vec![]]), Duration::ZERO);
        }
        assert!(metrics.committed_at(11).is_none(), "forgotten");
        assert!(metrics.committed_at(100).is_some());
    }
}
