//! The commit pipeline: batches from the write queue to the store and back to their writers.
//!
//! Writes whose capacity signal was applied before are answered first, without being applied
//! (ids older than the core's memory cost one store query for the whole batch). The rest are
//! applied by the core and handed to the store in one transaction, on a task of their own, so
//! that the next batch is applied and its statements run while this one commits (up to
//! `OFFPEAK_COMMIT_PIPELINE` batches in flight; the store commits them in order, and none
//! after a failed one). The next batch is cut once this one's statements ran: the writes that
//! arrive meanwhile make one batch, not several small ones each paying a transaction.
//! Outcomes are taken in order: only after its commit are a batch's writers answered and the
//! batch published (market data, then subscribers), so no one ever hears of a batch that is
//! not durable. When a commit fails, its writers and those of every later batch get
//! `Unavailable`, the core rolls the engine back to the committed state, and writes are
//! refused until recovery (or, a node of several, it follows the journal).

use super::core::StagedBatch;
use super::handle::{Committed, Reply, Role, SubmitError, WriteRequest};
use super::Sequencer;
use crate::journal::EntryId;
use crate::store::{BatchStage, CommitLink, StoreError};
use std::collections::HashSet;
use std::time::Instant;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A batch applied to the engine whose commit is on its way.
pub(super) struct InFlight {
    staged: StagedBatch,
    replies: Vec<Option<Reply>>,
    started: Instant,
    /// How far its commit has come, for the batch after it.
    stage: watch::Receiver<BatchStage>,
    commit: JoinHandle<Result<(), StoreError>>,
}

impl InFlight {
    /// Whether its statements ran (or its outcome is known): the next batch may be cut.
    pub(super) fn written(&self) -> bool {
        *self.stage.borrow() >= BatchStage::Written
    }

    /// A watch of its stage, to wait for it to be [`InFlight::written`].
    pub(super) fn stage(&self) -> watch::Receiver<BatchStage> {
        self.stage.clone()
    }

    /// The commit's outcome.
    pub(super) async fn outcome(&mut self) -> Result<(), StoreError> {
        match (&mut self.commit).await {
            Ok(result) => result,
            Err(e) => Err(StoreError::Query(format!("the commit task failed: {e}"))),
        }
    }
}

impl Sequencer {
    /// Whether another batch may be applied now: the pipeline has room, the newest batch in
    /// flight has been written (until then the writes arriving meanwhile join the next batch,
    /// which it would not be worth cutting smaller: its statements could not run before then
    /// anyway), and no read or due snapshot waits for the pipeline to drain.
    pub(super) fn can_stage(&self) -> bool {
        self.in_flight.len() < self.commit_pipeline
            && self.in_flight.back().is_none_or(InFlight::written)
            && self.held_reads.is_empty()
            && !self.snapshot_wanted()
    }

    /// Applies one batch and sends it to the store behind the batches in flight (its outcome
    /// comes later, through [`Sequencer::settle_next`]). Refuses it at once when writes are.
    pub(super) async fn stage(&mut self, requests: Vec<WriteRequest>) {
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
            return;
        }
        let requests = self.without_applied_signals(requests).await;
        if requests.is_empty() {
            return;
        }
        self.last_write = Instant::now();
        let (writes, replies): (Vec<_>, Vec<_>) = requests
            .into_iter()
            .map(|request| ((request.command, request.signal), request.reply))
            .unzip();
        let staged = self.core.apply_batch(writes);
        let (link, stage) = CommitLink::after(self.in_flight.back().map(|b| b.stage.clone()));
        let rows = staged.rows().map(|mut rows| {
            rows.fence_epoch = match self.role {
                Role::Leader { epoch } => Some(epoch),
                _ => None,
            };
            rows
        });
        let store = self.store.clone();
        let commit = tokio::spawn(async move { store.write_batch_linked(&rows?, link).await });
        self.in_flight.push_back(InFlight {
            staged,
            replies,
            started: Instant::now(),
            stage,
            commit,
        });
    }

    /// Applies and commits one batch, and waits for every batch in flight; false when a
    /// commit failed (writes are now refused).
    pub(super) async fn process(&mut self, requests: Vec<WriteRequest>) -> bool {
        self.stage(requests).await;
        self.drain().await
    }

    /// Settles every batch in flight; false when a commit failed.
    pub(super) async fn drain(&mut self) -> bool {
        let mut committed = true;
        while let Some(mut next) = self.in_flight.pop_front() {
            let outcome = next.outcome().await;
            committed &= self.settle(next, outcome);
        }
        committed
    }

    /// Answers the oldest batch in flight once its commit's outcome is known (`outcome`, taken
    /// from [`InFlight::outcome`] of the front); false when it failed.
    pub(super) fn settle_next(&mut self, outcome: Result<(), StoreError>) -> bool {
        let next = self
            .in_flight
            .pop_front()
            .expect("an outcome was taken with nothing in flight");
        self.settle(next, outcome)
    }

    fn settle(&mut self, next: InFlight, outcome: Result<(), StoreError>) -> bool {
        let InFlight {
            staged,
            replies,
            started,
            ..
        } = next;
        let batch = staged.batch.clone();
        let Err(e) = outcome else {
            self.core.commit(&staged);
            self.metrics.batch_committed(&batch, started.elapsed());
            for (index, reply) in replies.into_iter().enumerate() {
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(Committed::new(batch.clone(), index)));
                }
            }
            self.published(batch);
            return true;
        };
        let first_seq = batch.records.first().map_or(0, |r| r.seq);
        let commands = batch.records.len();
        self.metrics.batch_failed();
        // No batch after a failed one commits (each waits for the one before): they are all
        // refused, and the engine goes back to the committed state.
        let mut refused: Vec<Reply> = replies.into_iter().flatten().collect();
        for later in self.in_flight.drain(..) {
            later.commit.abort();
            self.metrics.batch_failed();
            refused.extend(later.replies.into_iter().flatten());
        }
        for reply in refused {
            let _ = reply.send(Err(SubmitError::Unavailable));
        }
        self.core.roll_back();
        if self.role != Role::Single {
            // Another node may lead now (fenced), or the outcome is unknown: either way
            // the journal decides, and this node follows it until it leads again.
            tracing::error!(error = %e, first_seq, commands, "batch commit failed; stepping down to standby");
            self.step_down(&format!("a commit failed: {e}"));
        } else {
            tracing::error!(error = %e, first_seq, commands, "batch commit failed; refusing writes until the database is back");
            self.writable = false;
            self.publish_status();
        }
        false
    }

    /// Answers the capacity signals applied before (`AlreadyApplied`) and those that cannot be
    /// checked now (`Unavailable`: the store did not answer, or the id came twice in one
    /// batch or is in a batch still in flight); returns the other requests, in order.
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
