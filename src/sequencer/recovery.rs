//! Recovery: the committed state rebuilt from the store, at start and after an outage.
//!
//! The newest snapshot is restored and checked against its stored state hash (one that does
//! not match is skipped and the whole journal replayed: the journal is complete, the snapshot
//! only a shortcut), then the journal after it is replayed through the same `Engine::apply`.
//! The journal must run 1, 2, 3... without a gap; a gap is an error, never skipped. After an
//! outage the sequencer retries with a growing wait until the database answers, then takes
//! over what it holds: the batch whose commit failed is in the state if and only if it is in
//! the journal.

use super::applied::AppliedSignals;
use super::core::Restored;
use super::handle::Role;
use super::snapshot::decode_snapshot;
use super::Sequencer;
use crate::limits::{
    APPLIED_SIGNALS_CACHED_MAX, MARKET_HISTORY_MS, REPLAY_CHUNKS_AHEAD, REPLAY_CHUNK_COMMANDS,
    TRADES_KEPT_PER_POOL_MAX,
};
use crate::store::Store;
use crate::timestamp::now_ms;
use anyhow::{bail, Context};
use matching_engine::{Command, Engine, TimeMs};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Restores the newest usable snapshot and replays the journal after it.
pub(super) async fn load_state(store: Arc<dyn Store>) -> anyhow::Result<Restored> {
    let snapshot = store
        .latest_snapshot()
        .await
        .context("loading the snapshot")?;
    let (mut engine, mut seq) = match snapshot {
        Some(stored) => match decode_snapshot(&stored.state) {
            Ok(snapshot) => {
                let engine = Engine::restore(snapshot);
                if engine.state_hash() == stored.state_hash {
                    (engine, stored.seq)
                } else {
                    // The journal is complete, so a snapshot that does not restore to the
                    // state it was taken from is skipped rather than trusted.
                    tracing::error!(
                        seq = stored.seq,
                        "snapshot restores to a different state hash; replaying the whole journal"
                    );
                    (Engine::new(), 0)
                }
            }
            Err(e) => {
                tracing::error!(seq = stored.seq, error = %e, "unusable snapshot; replaying the whole journal");
                (Engine::new(), 0)
            }
        },
        None => (Engine::new(), 0),
    };
    let mut scratch = Vec::new();
    let mut replayed = 0u64;
    let mut chunks = read_ahead(store.clone(), seq);
    while let Some(chunk) = chunks.recv().await {
        for (entry_seq, at, command) in chunk? {
            if entry_seq != seq + 1 {
                bail!("the journal jumps from seq {seq} to {entry_seq}");
            }
            engine.apply(at, &command, &mut scratch);
            scratch.clear();
            seq = entry_seq;
            replayed += 1;
        }
    }
    let newest = store
        .applied_signals_newest(APPLIED_SIGNALS_CACHED_MAX)
        .await
        .context("loading applied signals")?;
    let complete = newest.len() < APPLIED_SIGNALS_CACHED_MAX;
    Ok(Restored {
        engine,
        seq,
        replayed,
        signals: AppliedSignals::from_newest(newest, complete),
    })
}

/// One chunk of the journal, decoded: seq, time and command.
type DecodedChunk = anyhow::Result<Vec<(u64, TimeMs, Command)>>;

/// Reads and decodes the journal after `after_seq` on a task of its own, in chunks of
/// [`REPLAY_CHUNK_COMMANDS`], at most [`REPLAY_CHUNKS_AHEAD`] ahead of the replay (bounded
/// memory): the replay applies one chunk while the next is read and decoded. The channel ends
/// after the journal's last chunk, or after an error.
fn read_ahead(store: Arc<dyn Store>, after_seq: u64) -> mpsc::Receiver<DecodedChunk> {
    let (chunks, receiver) = mpsc::channel(REPLAY_CHUNKS_AHEAD);
    tokio::spawn(async move {
        let mut seq = after_seq;
        loop {
            let read = store
                .journal_after(seq, REPLAY_CHUNK_COMMANDS)
                .await
                .context("reading the journal");
            let decoded: DecodedChunk = read.and_then(|entries| {
                entries
                    .into_iter()
                    .map(|entry| {
                        let command: Command = serde_json::from_str(&entry.command_json)
                            .with_context(|| format!("decoding journal command {}", entry.seq))?;
                        Ok((entry.seq, entry.at, command))
                    })
                    .collect()
            });
            let last = match &decoded {
                Ok(entries) => entries.last().map(|(seq, _, _)| *seq),
                Err(_) => None,
            };
            // The replay stopped (an error of its own), or this was the end or an error.
            if chunks.send(decoded).await.is_err() {
                return;
            }
            match last {
                Some(last) => seq = last,
                None => return,
            }
        }
    });
    receiver
}

/// A reload from the store in progress.
pub(super) type RecoveryFuture = Pin<Box<dyn Future<Output = anyhow::Result<Restored>> + Send>>;

/// Waits `wait`, then reloads the state if the database answers.
pub(super) fn recovery(store: Arc<dyn Store>, wait: Duration) -> RecoveryFuture {
    Box::pin(async move {
        tokio::time::sleep(wait).await;
        store.ping().await.context("pinging the database")?;
        load_state(store).await
    })
}

impl Sequencer {
    /// Whether a failed commit is healed by reloading the state from the store: only in the
    /// single process, while it refuses writes. A node of several steps down instead and
    /// follows the journal until the leadership task promotes it again; a reload finishing
    /// after that would replace the state under the batches it has in flight since.
    pub(super) fn reloads_after_failure(&self) -> bool {
        self.role == Role::Single && !self.writable
    }

    /// Takes over the state reloaded from the store and accepts writes again.
    pub(super) async fn resume(&mut self, restored: Restored) {
        tracing::info!(
            seq = restored.seq,
            previous_seq = self.core.seq(),
            "database is back; state rebuilt from snapshot and journal, accepting writes"
        );
        self.core.resume(restored);
        self.writable = true;
        self.last_write = Instant::now();
        self.metrics.recovered();
        match self
            .store
            .market_history(
                TimeMs(now_ms().0 - MARKET_HISTORY_MS),
                TRADES_KEPT_PER_POOL_MAX,
            )
            .await
        {
            Ok(history) => self.market.warm(history),
            Err(e) => tracing::warn!(error = %e, "could not reload market history after recovery"),
        }
        self.publish_status();
    }
}
