//! Commit and rollback: one batch from the write queue to the store and back to its writers.
//!
//! Writes whose capacity signal was applied before are answered first, without being applied
//! (ids older than the core's memory cost one store query for the whole batch). The rest are
//! applied by the core and written in one transaction. Only after the commit are the writers
//! answered and the batch published (market data, then subscribers); no one ever hears of a
//! batch that is not durable. When the commit fails, the writers get `Unavailable`, the core
//! rolls the engine back to the committed state, and writes are refused until recovery.

use super::handle::{Committed, Role, SubmitError, WriteRequest};
use super::Sequencer;
use crate::journal::EntryId;
use std::collections::HashSet;
use std::time::Instant;

impl Sequencer {
    /// Applies and commits one batch; false when the commit failed (writes are now refused).
    pub(super) async fn process(&mut self, requests: Vec<WriteRequest>) -> bool {
        if !self.writable {
            self.metrics.writes_refused(requests.len() as u64);
            let refusal = match self.role {
                Role::Standby => SubmitError::NotLeader,
                _ => SubmitError::Unavailable,
            };
            for request in requests {
                if let Some(reply) = request.reply {
                    let _ = reply.send(Err(refusal));
                }
            }
            return true;
        }
        let requests = self.without_applied_signals(requests).await;
        if requests.is_empty() {
            return true;
        }
        self.last_write = Instant::now();
        let (writes, replies): (Vec<_>, Vec<_>) = requests
            .into_iter()
            .map(|request| ((request.command, request.signal), request.reply))
            .unzip();
        let staged = self.core.apply_batch(writes);
        let started = Instant::now();
        let result = match staged.rows() {
            Ok(mut rows) => {
                rows.fence_epoch = match self.role {
                    Role::Leader { epoch } => Some(epoch),
                    _ => None,
                };
                self.store.write_batch(&rows).await
            }
            Err(e) => Err(e),
        };
        let batch = staged.batch.clone();
        match result {
            Ok(()) => {
                self.core.commit(&staged);
                self.metrics.batch_committed(&batch, started.elapsed());
                for (index, reply) in replies.into_iter().enumerate() {
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(Committed::new(batch.clone(), index)));
                    }
                }
                self.published(batch);
                true
            }
            Err(e) if self.role != Role::Single => {
                // Another node may lead now (fenced), or the outcome is unknown: either way
                // the journal decides, and this node follows it until it leads again.
                tracing::error!(error = %e, first_seq = batch.records.first().map_or(0, |r| r.seq), commands = batch.records.len(), "batch commit failed; stepping down to standby");
                self.metrics.batch_failed();
                for reply in replies.into_iter().flatten() {
                    let _ = reply.send(Err(SubmitError::Unavailable));
                }
                self.core.roll_back();
                self.step_down(&format!("a commit failed: {e}"));
                true
            }
            Err(e) => {
                tracing::error!(error = %e, first_seq = batch.records.first().map_or(0, |r| r.seq), commands = batch.records.len(), "batch commit failed; refusing writes until the database is back");
                self.metrics.batch_failed();
                for reply in replies.into_iter().flatten() {
                    let _ = reply.send(Err(SubmitError::Unavailable));
                }
                self.core.roll_back();
                self.writable = false;
                self.publish_status();
                false
            }
        }
    }

    /// Answers the capacity signals applied before (`AlreadyApplied`) and those that cannot be
    /// checked now (`Unavailable`: the store did not answer, or the id came twice in one
    /// batch); returns the other requests, in order.
    async fn without_applied_signals(&mut self, requests: Vec<WriteRequest>) -> Vec<WriteRequest> {
        if requests.iter().all(|r| r.signal.is_none()) {
            return requests;
        }
        let signals: Vec<Option<EntryId>> = requests.iter().map(|r| r.signal).collect();
        // Ids older than the memory's window: one question to the store for the whole batch.
        let unknown = self.core.signals_to_look_up(&signals);
        let recorded: Option<HashSet<EntryId>> = if unknown.is_empty() {
            Some(HashSet::new())
        } else {
            match self.store.applied_signals(&unknown).await {
                Ok(rows) => Some(rows.into_iter().map(|r| r.id).collect()),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot check old signal ids; they wait");
                    None
                }
            }
        };
        let refusals = self.core.signal_refusals(&signals, recorded.as_ref());
        let mut kept = Vec::with_capacity(requests.len());
        for (request, refusal) in requests.into_iter().zip(refusals) {
            match refusal {
                Some(refusal) => {
                    if let Some(reply) = request.reply {
                        let _ = reply.send(Err(refusal));
                    }
                }
                None => kept.push(request),
            }
        }
        kept
    }
}
