//! A node among several on one database (DESIGN section 10): following the journal as a hot
//! standby, and changing role when the cluster's leadership task says so.
//!
//! A standby applies what the leader committed, read from the store by seq (woken by the
//! journal notifications, and at least every [`FOLLOW_POLL_INTERVAL`]), with the seqs and times
//! it was journaled with, so its engine, its market data and its subscribers see exactly the
//! leader's history. It writes nothing: writes that reach it are refused as `NotLeader` (the
//! HTTP layer forwards them to the leader before they get here).
//!
//! Becoming the leader under a new epoch: once that epoch is in the store, no batch of an older
//! one can commit (each commit checks its epoch in its transaction), so the journal's end is
//! final; the standby reads to it, reloads the applied signals' memory from the store, and
//! then commits under its epoch. Losing leadership (a fenced or failed commit, or a lease that
//! could not be renewed): the uncommitted batch is rolled back and the node follows the
//! journal from its committed seq: the journal decides whether a batch whose outcome was
//! unknown committed.

use super::applied::AppliedSignals;
use super::handle::{Control, Role, WriteRequest};
use super::pools::pool_commands;
use super::Sequencer;
use crate::journal::CommittedBatch;
use crate::limits::{APPLIED_SIGNALS_CACHED_MAX, FOLLOW_CHUNK_COMMANDS};
use anyhow::{bail, Context};
use matching_engine::Command;
use std::sync::Arc;
use std::time::Instant;

impl Sequencer {
    /// Carries out a request of the leadership task.
    pub(super) async fn control(&mut self, control: Control) {
        match control {
            Control::Promote { epoch, reply } => {
                let promoted = self.promote(epoch).await;
                if let Err(e) = &promoted {
                    tracing::warn!(epoch, error = %format!("{e:#}"), "could not take over as leader; staying a standby");
                    self.step_down("the takeover failed");
                }
                let _ = reply.send(promoted);
            }
            Control::StepDown { reason } => self.step_down(&reason),
        }
    }

    async fn promote(&mut self, epoch: u64) -> anyhow::Result<()> {
        if self.role == (Role::Leader { epoch }) {
            return Ok(());
        }
        if self.role == Role::Single {
            bail!("the single-process store has no leadership");
        }
        let started = Instant::now();
        let from_seq = self.core.seq();
        while self.follow_chunk().await? == FOLLOW_CHUNK_COMMANDS {}
        let newest = self
            .store
            .applied_signals_newest(APPLIED_SIGNALS_CACHED_MAX)
            .await
            .context("loading applied signals")?;
        let complete = newest.len() < APPLIED_SIGNALS_CACHED_MAX;
        self.core
            .replace_signals(AppliedSignals::from_newest(newest, complete));
        self.role = Role::Leader { epoch };
        self.writable = true;
        self.last_write = Instant::now();
        self.publish_status();
        tracing::info!(
            epoch,
            seq = self.core.seq(),
            caught_up = self.core.seq() - from_seq,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "leader: taking writes"
        );
        let commands = pool_commands(self.core.engine(), self.core.seq(), &self.pools);
        if !commands.is_empty() {
            let requests = commands.into_iter().map(WriteRequest::unanswered).collect();
            self.process(requests).await;
            if !self.role.leads() {
                bail!("could not journal the pool configuration");
            }
        }
        if self.core.long_since_snapshot() && !self.snapshot_writing() {
            // A long replay this time: make the next start short, without making this one
            // longer (the snapshot is written while the node serves).
            self.snapshot_in_background();
        }
        Ok(())
    }

    /// Stops writing and follows the journal (nothing uncommitted is applied: a batch that
    /// failed was rolled back before).
    pub(super) fn step_down(&mut self, reason: &str) {
        if self.role == Role::Single {
            return;
        }
        if self.role != Role::Standby {
            tracing::warn!(
                reason,
                seq = self.core.seq(),
                "standby: no longer the leader"
            );
        }
        self.role = Role::Standby;
        self.writable = false;
        self.publish_status();
    }

    /// Applies what the leader committed since this node's seq, until the journal's end or
    /// a failed read (retried at the next wake-up).
    pub(super) async fn follow_journal(&mut self) {
        loop {
            match self.follow_chunk().await {
                Ok(FOLLOW_CHUNK_COMMANDS) => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), seq = self.core.seq(), "standby: cannot read the journal; retrying");
                    break;
                }
            }
        }
    }

    /// Reads and applies one chunk of the journal; returns how many commands it held.
    async fn follow_chunk(&mut self) -> anyhow::Result<usize> {
        let entries = self
            .store
            .journal_after(self.core.seq(), FOLLOW_CHUNK_COMMANDS)
            .await
            .context("reading the journal")?;
        let count = entries.len();
        if count == 0 {
            return Ok(0);
        }
        let commands = entries
            .into_iter()
            .map(|entry| {
                let command: Command = serde_json::from_str(&entry.command_json)
                    .with_context(|| format!("decoding journal command {}", entry.seq))?;
                Ok((entry.seq, entry.at, command))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let staged = self.core.apply_journaled(commands)?;
        self.core.commit(&staged);
        self.metrics.batch_followed(&staged.batch);
        self.published(staged.batch);
        // A standby keeps no rollback tail: its state is always the journal's.
        if self.core.snapshot_due(false) {
            let _ = self.core.take_snapshot();
        }
        Ok(count)
    }

    /// Tells the world about a durable batch: market data, the status, then subscribers.
    pub(super) fn published(&mut self, batch: Arc<CommittedBatch>) {
        self.market.apply(&batch);
        self.publish_status();
        // No subscriber is not an error.
        let _ = self.events.send(batch);
    }
}
