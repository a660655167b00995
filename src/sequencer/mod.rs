//! The sequencer: the one task that owns the engine, and the only writer to the store.
//!
//! Requests arrive over two bounded channels: writes (a [`Command`](matching_engine::Command)
//! and a reply slot) and reads (a closure run against the engine). The sequencer takes every
//! waiting write, up to [`BATCH_COMMANDS_MAX`](crate::limits::BATCH_COMMANDS_MAX), stamps each
//! with the next sequence number and the wall-clock time (never earlier than the engine's
//! clock, so engine time is monotonic), applies them, and writes the batch (journal rows and
//! the rows its events produced) in one transaction. The next batch is applied and written
//! while one commits (the commit pipeline, `commit.rs`); each commits only after the one
//! before. Only after its commit are a batch's writers answered and the batch published to
//! subscribers. Reads run only when no batch is in flight, so they only ever see committed
//! state.
//!
//! Invariants:
//! - `seq` numbers in the journal are 1, 2, 3... with no gap; the engine's state is exactly the
//!   replay of the journal up to `seq`.
//! - `base` (a snapshot at `base_seq`) plus `tail` (the commands committed since)
//!   rebuild the committed state without the database. When a commit fails, the engine is
//!   rebuilt from them (dropping the uncommitted batch), writes are refused with 503, reads
//!   keep being served, and the sequencer reloads from the database's snapshot and journal as
//!   soon as it answers (the failed batch may in fact have committed; the journal decides).
//! - A capacity signal ([`SequencerHandle::submit_signal`]) is applied at most once: its entry
//!   id is recorded in the same transaction as its command, and an id already recorded (in
//!   memory, `AppliedSignals`, or else in the store) is refused with
//!   [`SubmitError::AlreadyApplied`] without being applied or journaled. The journal holds only
//!   applied commands, so a replay applies each signal once too.
//! - Time moves only through journaled commands: an idle server journals a `Tick` every
//!   `idle_tick` (`OFFPEAK_IDLE_TICK_MS`), and one is sent when the engine's next timer is due.
//!
//! The files: `core.rs` is all of the above that needs no tokio, no database and no clock (the
//! time is injected), and is unit-tested alone; around it, `run.rs` (start and the loop),
//! `commit.rs` (a batch against the store), `recovery.rs` (reload from snapshot and journal),
//! `snapshot.rs`, `pools.rs` (pools at start), `applied.rs` (the memory of applied signals)
//! and `handle.rs` (what the rest of the server holds).

mod applied;
mod commit;
mod core;
mod follow;
mod handle;
mod pools;
mod recovery;
mod run;
mod snapshot;

pub use handle::{
    Committed, PendingWrite, ReadView, Role, SequencerHandle, SequencerStatus, SubmitError,
};
pub use pools::{default_pools, PoolsSetup};
pub use run::{start, SequencerTask, Tuning};
pub use snapshot::{decode_snapshot, encode_snapshot};

use self::core::{SequencerCore, SystemClock};
use crate::journal::CommittedBatch;
use crate::market_data::MarketData;
use crate::metrics::Metrics;
use crate::store::Store;
use handle::ReadFn;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// The sequencer task's state: the core, and what connects it to the world.
struct Sequencer {
    /// The engine and the batch bookkeeping, stamped with the wall clock.
    core: SequencerCore<SystemClock>,
    store: Arc<dyn Store>,
    /// The single process, the leader under an epoch, or a standby following the journal.
    role: Role,
    /// The pools to make sure exist, whenever this node starts leading.
    pools: PoolsSetup,
    /// False from a failed commit until the state is reloaded from the store.
    writable: bool,
    /// Batches applied whose commits are on their way, oldest first.
    in_flight: VecDeque<commit::InFlight>,
    /// The most batches in flight at once.
    commit_pipeline: usize,
    /// Reads that came while batches were in flight: answered once none is (reads see
    /// committed state only), and until then no batch is applied.
    held_reads: Vec<ReadFn>,
    last_snapshot: Instant,
    /// The background encoding and writing of the last snapshot.
    snapshot_write: Option<JoinHandle<()>>,
    /// When the last batch of writes was applied: an idle `Tick` follows `idle_tick` later.
    last_write: Instant,
    idle_tick: Duration,
    snapshot_every: Duration,
    events: broadcast::Sender<Arc<CommittedBatch>>,
    status: Arc<SequencerStatus>,
    market: Arc<MarketData>,
    metrics: Arc<Metrics>,
}

impl Sequencer {
    /// Makes the current seq and writability visible to handles and to the metrics.
    fn publish_status(&self) {
        self.status
            .set(self.writable, self.core.committed_seq(), self.role);
        self.metrics
            .set_sequencer(self.core.committed_seq(), self.writable);
    }
}
