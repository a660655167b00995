//! Counters and gauges for `GET /metrics`, in the Prometheus text format.
//!
//! Plain atomics: the sequencer and the HTTP workers update them without locks, and a scrape
//! reads a consistent-enough view (each value is exact, the set is not a transaction).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The server's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    commands: AtomicU64,
    rejections: AtomicU64,
    batches: AtomicU64,
    batch_commit_micros: AtomicU64,
    batch_failures: AtomicU64,
    writes_refused: AtomicU64,
    recoveries: AtomicU64,
    snapshots: AtomicU64,
    snapshot_seq: AtomicU64,
    seq: AtomicU64,
    writable: AtomicU64,
}

impl Metrics {
    /// A committed batch of `commands`, `rejections` of them refused by the engine.
    pub fn batch_committed(&self, commands: u64, rejections: u64, took: Duration) {
        self.commands.fetch_add(commands, Ordering::Relaxed);
        self.rejections.fetch_add(rejections, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batch_commit_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// A batch whose commit failed.
    pub fn batch_failed(&self) {
        self.batch_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes answered 503 because writes were refused.
    pub fn writes_refused(&self, n: u64) {
        self.writes_refused.fetch_add(n, Ordering::Relaxed);
    }

    /// The sequencer rebuilt from the store and resumed writes.
    pub fn recovered(&self) {
        self.recoveries.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot was taken at `seq`.
    pub fn snapshot_taken(&self, seq: u64) {
        self.snapshots.fetch_add(1, Ordering::Relaxed);
        self.snapshot_seq.store(seq, Ordering::Relaxed);
    }

    /// The sequencer's last committed seq and write availability.
    pub fn set_sequencer(&self, seq: u64, writable: bool) {
        self.seq.store(seq, Ordering::Relaxed);
        self.writable.store(u64::from(writable), Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        metric(
            "offpeak_commands_total",
            "counter",
            "Commands committed (including ticks).",
            get(&self.commands).to_string(),
        );
        metric(
            "offpeak_rejections_total",
            "counter",
            "Committed commands the engine rejected.",
            get(&self.rejections).to_string(),
        );
        metric(
            "offpeak_batches_total",
            "counter",
            "Batches committed.",
            get(&self.batches).to_string(),
        );
        metric(
            "offpeak_batch_commit_seconds_total",
            "counter",
            "Time spent committing batches.",
            format!("{:.6}", get(&self.batch_commit_micros) as f64 / 1e6),
        );
        metric(
            "offpeak_batch_failures_total",
            "counter",
            "Batches whose commit failed.",
            get(&self.batch_failures).to_string(),
        );
        metric(
            "offpeak_writes_refused_total",
            "counter",
            "Writes answered 503 while the database was unavailable.",
            get(&self.writes_refused).to_string(),
        );
        metric(
            "offpeak_recoveries_total",
            "counter",
            "Rebuilds from snapshot and journal after a failed commit.",
            get(&self.recoveries).to_string(),
        );
        metric(
            "offpeak_snapshots_total",
            "counter",
            "Engine snapshots taken.",
            get(&self.snapshots).to_string(),
        );
        metric(
            "offpeak_snapshot_seq",
            "gauge",
            "Sequence number of the newest snapshot.",
            get(&self.snapshot_seq).to_string(),
        );
        metric(
            "offpeak_seq",
            "gauge",
            "Last committed sequence number.",
            get(&self.seq).to_string(),
        );
        metric(
            "offpeak_writes_available",
            "gauge",
            "1 when writes are accepted, 0 while the database is unavailable.",
            get(&self.writable).to_string(),
        );
        out
    }
}
