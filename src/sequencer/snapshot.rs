//! Snapshots: the engine's canonical state, stored with its seq and state hash so a start or a
//! recovery replays only the journal after it.
//!
//! The core decides when one is due and copies the committed state ([`TakenSnapshot`]); the
//! copy becomes the rollback base at once. Encoding a large state takes a while, so it and the
//! write happen off the sequencer, one at a time. A snapshot that fails to be written loses
//! nothing: the journal still holds every command, and the next start just replays more.

use super::Sequencer;
use crate::store::StoredSnapshot;
use anyhow::Context;
use matching_engine::Snapshot;
use std::sync::Arc;
use std::time::Instant;

/// Encodes a snapshot for storage.
pub fn encode_snapshot(snapshot: &Snapshot) -> anyhow::Result<Vec<u8>> {
    serde_json::to_vec(snapshot).context("encoding the engine snapshot")
}

/// Decodes a stored snapshot.
pub fn decode_snapshot(bytes: &[u8]) -> anyhow::Result<Snapshot> {
    serde_json::from_slice(bytes).context("decoding the engine snapshot")
}

/// A copy of the committed state at `seq`, not yet encoded.
pub struct TakenSnapshot {
    /// The last command it includes.
    pub(super) seq: u64,
    /// The engine's state hash at `seq`.
    pub(super) state_hash: u64,
    /// The state.
    pub(super) snapshot: Arc<Snapshot>,
}

impl TakenSnapshot {
    fn encode(self) -> anyhow::Result<StoredSnapshot> {
        Ok(StoredSnapshot {
            seq: self.seq,
            state_hash: self.state_hash,
            state: encode_snapshot(&self.snapshot)?,
        })
    }
}

impl Sequencer {
    /// Whether the previous snapshot is still being encoded or written.
    pub(super) fn snapshot_writing(&self) -> bool {
        self.snapshot_write
            .as_ref()
            .is_some_and(|write| !write.is_finished())
    }

    /// Whether a snapshot is due now and none is being written. Until it is taken (of
    /// committed state, so with no batch in flight), no batch is applied.
    pub(super) fn snapshot_wanted(&self) -> bool {
        self.writable
            && !self.snapshot_writing()
            && self
                .core
                .snapshot_due(self.last_snapshot.elapsed() >= self.snapshot_every)
    }

    /// Starts writing a snapshot in the background when one is due and no batch is in flight.
    pub(super) fn maybe_snapshot(&mut self) {
        if self.in_flight.is_empty() && self.snapshot_wanted() {
            self.snapshot_in_background();
        }
    }

    /// Takes a snapshot now and encodes and writes it in the background.
    pub(super) fn snapshot_in_background(&mut self) {
        let taken = self.take_snapshot();
        let store = self.store.clone();
        // Encoding a large state takes a while: off the sequencer, on a blocking thread.
        self.snapshot_write = Some(tokio::spawn(async move {
            let seq = taken.seq;
            let stored = match tokio::task::spawn_blocking(move || taken.encode()).await {
                Ok(Ok(stored)) => stored,
                Ok(Err(e)) => {
                    return tracing::error!(seq, error = %format!("{e:#}"), "snapshot not encoded")
                }
                Err(e) => return tracing::error!(seq, error = %e, "snapshot encoding panicked"),
            };
            match store.write_snapshot(&stored).await {
                Ok(()) => tracing::debug!(
                    seq = stored.seq,
                    bytes = stored.state.len(),
                    "snapshot written"
                ),
                // The journal still has everything: the next start just replays more.
                Err(e) => tracing::warn!(seq = stored.seq, error = %e, "snapshot not written"),
            }
        }));
    }

    /// Copies the committed state (the new rollback base) and restarts the interval.
    fn take_snapshot(&mut self) -> TakenSnapshot {
        let taken = self.core.take_snapshot();
        self.last_snapshot = Instant::now();
        self.metrics.snapshot_taken(taken.seq);
        taken
    }

    /// Takes a snapshot and writes it before returning (at start and at shutdown).
    pub(super) async fn write_snapshot_now(&mut self) {
        let taken = self.take_snapshot();
        let seq = taken.seq;
        match taken.encode() {
            Ok(stored) => match self.store.write_snapshot(&stored).await {
                Ok(()) => tracing::info!(seq, "snapshot written"),
                Err(e) => tracing::warn!(seq, error = %e, "snapshot not written"),
            },
            Err(e) => tracing::error!(seq, error = %format!("{e:#}"), "snapshot not encoded"),
        }
    }
}
