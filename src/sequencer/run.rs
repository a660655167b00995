//! The sequencer task: starting it, and its loop.
//!
//! The loop waits on, in turn: a stop request, the write queue (every waiting write, up to
//! [`BATCH_COMMANDS_MAX`], becomes one batch, applied and sent to the store while up to
//! [`Tuning::commit_pipeline`] batches are in flight), the
//! outcome of the oldest batch in flight, the read queue, the leadership task's requests
//! (promote, step down: after the pipeline drained), on a standby the journal's notifications
//! and the follow poll, the next `Tick` (after `idle_tick` without a write, or when the
//! engine's next timer is due), a due snapshot, and a recovery in progress (the single-process
//! store). After each turn it takes up to [`READS_PER_TURN_MAX`] more reads and answers them
//! once no batch is in flight (no batch is applied while reads wait), so reads see committed
//! state only, and writes cannot starve them. On stop it commits what is in flight and still
//! queued, answers the reads, hands leadership over (a leader of several), and leaves a final
//! snapshot.

use super::commit::InFlight;
use super::core::{SequencerCore, SystemClock};
use super::handle::{
    Control, ReadFn, ReadView, Role, SequencerHandle, SequencerStatus, WriteRequest,
};
use super::pools::{pool_commands, PoolsSetup};
use super::recovery::{load_state, recovery, RecoveryFuture};
use super::Sequencer;
use crate::limits::{
    BATCH_COMMANDS_MAX, CONTROL_QUEUE_CAPACITY, EVENT_BROADCAST_BATCHES_MAX, FOLLOW_POLL_INTERVAL,
    MARKET_HISTORY_MS, READS_PER_TURN_MAX, READ_QUEUE_CAPACITY, RECOVERY_RETRY_MAX,
    RECOVERY_RETRY_MIN, SNAPSHOT_EVERY_COMMANDS, TRADES_KEPT_PER_POOL_MAX, WRITE_QUEUE_CAPACITY,
};
use crate::market_data::MarketData;
use crate::metrics::Metrics;
use crate::store::{BatchStage, Store};
use crate::timestamp::now_ms;
use anyhow::{bail, Context};
use matching_engine::{Command, TimeMs};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// The running sequencer task; stop it after the HTTP server has stopped.
pub struct SequencerTask {
    stop: oneshot::Sender<HandOver>,
    join: JoinHandle<()>,
}

/// What a stopping leader runs once its last batch committed, before its final snapshot:
/// giving leadership up, so a standby takes over at once.
pub type HandOver = Pin<Box<dyn Future<Output = ()> + Send>>;

impl SequencerTask {
    /// Drains what is queued, commits it, writes a final snapshot, and waits for the task.
    pub async fn stop(self) {
        self.stop_then(Box::pin(async {})).await
    }

    /// Like [`SequencerTask::stop`], running `hand_over` after the last commit and before
    /// the final snapshot.
    pub async fn stop_then(self, hand_over: HandOver) {
        let _ = self.stop.send(hand_over);
        if let Err(e) = self.join.await {
            tracing::error!(error = %e, "the sequencer task failed");
        }
    }
}

/// What the sequencer task listens to.
struct Inbox {
    writes: mpsc::Receiver<WriteRequest>,
    reads: mpsc::Receiver<ReadFn>,
    /// The leadership task's requests.
    control: mpsc::Receiver<Control>,
    /// The newest seq announced by the journal's notifications (a store shared by several
    /// processes only).
    journal_head: Option<watch::Receiver<u64>>,
}

/// The sequencer's clocks and commit pipeline (settings, so tests can shorten them).
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    /// An idle sequencer journals a `Tick` after this long.
    pub idle_tick: Duration,
    /// A snapshot is taken at least this often while anything happens.
    pub snapshot_every: Duration,
    /// Batches whose commits may be in flight at once (1: one batch at a time).
    pub commit_pipeline: usize,
}

/// Loads the state, configures pools, and starts the sequencer task.
///
/// With `journal_head` (a store shared by several processes: its watch carries the newest seq
/// the journal notifications announced), the sequencer starts as a standby that follows the
/// journal, and configures the pools only once the cluster makes it the leader
/// ([`SequencerHandle::promote`]). Without, it is the single process and writes at once.
pub async fn start(
    store: Arc<dyn Store>,
    pools: PoolsSetup,
    market: Arc<MarketData>,
    metrics: Arc<Metrics>,
    tuning: Tuning,
    journal_head: Option<watch::Receiver<u64>>,
) -> anyhow::Result<(SequencerHandle, SequencerTask)> {
    store.migrate().await.context("applying migrations")?;
    let started = Instant::now();
    let restored = load_state(store.clone()).await?;
    let replayed = restored.replayed;
    tracing::info!(
        seq = restored.seq,
        replayed,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "engine state loaded"
    );
    let history = store
        .market_history(
            TimeMs(now_ms().0 - MARKET_HISTORY_MS),
            TRADES_KEPT_PER_POOL_MAX,
        )
        .await
        .context("loading market history")?;
    market.warm(history);

    let (events, _) = broadcast::channel(EVENT_BROADCAST_BATCHES_MAX);
    let status = Arc::new(SequencerStatus::default());
    let role = match journal_head {
        Some(_) => Role::Standby,
        None => Role::Single,
    };
    let mut sequencer = Sequencer {
        core: SequencerCore::new(restored, now_ms as SystemClock),
        store,
        role,
        pools: pools.clone(),
        writable: role.leads(),
        in_flight: VecDeque::new(),
        held_reads: Vec::new(),
        last_snapshot: Instant::now(),
        snapshot_write: None,
        last_write: Instant::now(),
        idle_tick: tuning.idle_tick,
        snapshot_every: tuning.snapshot_every,
        commit_pipeline: tuning.commit_pipeline.max(1),
        events: events.clone(),
        status: status.clone(),
        market,
        metrics,
    };
    sequencer.publish_status();

    let pool_commands = pool_commands(sequencer.core.engine(), sequencer.core.seq(), &pools);
    if role == Role::Single && !pool_commands.is_empty() {
        let requests = pool_commands
            .into_iter()
            .map(WriteRequest::unanswered)
            .collect();
        if !sequencer.process(requests).await {
            bail!("could not journal the pool configuration");
        }
    }
    if role == Role::Single && replayed >= SNAPSHOT_EVERY_COMMANDS {
        // A long replay this time: make the next start short.
        sequencer.write_snapshot_now().await;
    }

    let (writes_tx, writes_rx) = mpsc::channel(WRITE_QUEUE_CAPACITY);
    let (reads_tx, reads_rx) = mpsc::channel(READ_QUEUE_CAPACITY);
    let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE_CAPACITY);
    let (stop_tx, stop_rx) = oneshot::channel();
    let join = tokio::spawn(sequencer.run(
        Inbox {
            writes: writes_rx,
            reads: reads_rx,
            control: control_rx,
            journal_head,
        },
        stop_rx,
    ));
    Ok((
        SequencerHandle::new(writes_tx, reads_tx, events, status, control_tx),
        SequencerTask {
            stop: stop_tx,
            join,
        },
    ))
}

impl Sequencer {
    async fn run(mut self, inbox: Inbox, mut stop: oneshot::Receiver<HandOver>) {
        let Inbox {
            mut writes,
            mut reads,
            mut control,
            mut journal_head,
        } = inbox;
        let mut hand_over: Option<HandOver> = None;
        let mut recovering: Option<RecoveryFuture> = None;
        let mut retry_wait = RECOVERY_RETRY_MIN;
        let mut follow_poll = tokio::time::interval(FOLLOW_POLL_INTERVAL);
        follow_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let tick_at = self.next_tick_at();
            // Not while the previous snapshot is still being written: the branch would spin.
            let snapshot_due = self.core.changed_since_snapshot() && !self.snapshot_writing();
            let snapshot_at =
                tokio::time::Instant::from_std(self.last_snapshot + self.snapshot_every);
            let following = self.role == Role::Standby;
            let can_stage = self.can_stage();
            let in_flight = !self.in_flight.is_empty();
            // The newest batch in flight, until its statements ran: the next one is cut then.
            let mut being_written = self
                .in_flight
                .back()
                .filter(|batch| !batch.written())
                .map(InFlight::stage);
            let waiting_for_written = being_written.is_some();
            tokio::select! {
                handing_over = &mut stop => {
                    hand_over = handing_over.ok();
                    break;
                }
                Some(first) = writes.recv(), if can_stage => {
                    let mut batch = Vec::with_capacity(writes.len().min(BATCH_COMMANDS_MAX) + 1);
                    batch.push(first);
                    while batch.len() < BATCH_COMMANDS_MAX {
                        match writes.try_recv() {
                            Ok(request) => batch.push(request),
                            Err(_) => break,
                        }
                    }
                    self.stage(batch).await;
                }
                _ = async { match being_written.as_mut() {
                    Some(stage) => { let _ = stage.wait_for(|stage| *stage >= BatchStage::Written).await; }
                    None => std::future::pending().await,
                } }, if waiting_for_written => {}
                // The oldest batch in flight committed, or failed.
                outcome = async { match self.in_flight.front_mut() {
                    Some(next) => next.outcome().await,
                    None => std::future::pending().await,
                } }, if in_flight => {
                    if !self.settle_next(outcome) && self.reloads_after_failure() && recovering.is_none() {
                        retry_wait = RECOVERY_RETRY_MIN;
                        recovering = Some(recovery(self.store.clone(), retry_wait));
                    }
                }
                Some(read) = reads.recv(), if self.held_reads.len() < READS_PER_TURN_MAX => {
                    self.held_reads.push(read);
                }
                Some(request) = control.recv() => {
                    // A change of role starts from committed state.
                    if !self.drain().await && self.reloads_after_failure() && recovering.is_none() {
                        retry_wait = RECOVERY_RETRY_MIN;
                        recovering = Some(recovery(self.store.clone(), retry_wait));
                    }
                    self.control(request).await;
                }
                // A standby: the journal moved (a notification), or the poll's turn came.
                Ok(()) = async { match journal_head.as_mut() {
                    Some(head) => head.changed().await,
                    None => std::future::pending().await,
                } }, if following => self.follow_journal().await,
                _ = follow_poll.tick(), if following => self.follow_journal().await,
                _ = tokio::time::sleep_until(tick_at), if self.writable && can_stage => {
                    self.stage(vec![WriteRequest::unanswered(Command::Tick)]).await;
                }
                // Wakes an otherwise idle loop for a due snapshot (`maybe_snapshot` below).
                _ = tokio::time::sleep_until(snapshot_at), if snapshot_due && self.writable && !in_flight => {}
                restored = async { match recovering.as_mut() {
                    Some(future) => future.await,
                    None => std::future::pending().await,
                } }, if recovering.is_some() => {
                    recovering = None;
                    match restored {
                        // Only a single process that still refuses writes takes the reloaded
                        // state: one that leads again has batches of its own in flight.
                        Ok(restored) if self.reloads_after_failure() => self.resume(restored).await,
                        Ok(_) => tracing::info!("state reloaded but no longer needed; dropped"),
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), retry_ms = retry_wait.as_millis() as u64, "database still unavailable");
                            retry_wait = (retry_wait * 2).min(RECOVERY_RETRY_MAX);
                            recovering = Some(recovery(self.store.clone(), retry_wait));
                        }
                    }
                }
                else => break,
            }
            self.take_reads(&mut reads);
            self.maybe_snapshot();
        }
        // Shutdown: the HTTP server has stopped; commit whatever is still queued.
        self.drain().await;
        for read in std::mem::take(&mut self.held_reads) {
            self.answer(read);
        }
        writes.close();
        loop {
            let mut batch = Vec::new();
            while batch.len() < BATCH_COMMANDS_MAX {
                match writes.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            self.process(batch).await;
        }
        reads.close();
        while let Ok(read) = reads.try_recv() {
            self.answer(read);
        }
        if let Some(write) = self.snapshot_write.take() {
            let _ = write.await;
        }
        let leading = self.role.leads() && self.writable;
        if let Some(hand_over) = hand_over {
            // The last batch is committed: a standby may take over from here.
            if matches!(self.role, Role::Leader { .. }) {
                hand_over.await;
                self.step_down("stopping");
            }
        }
        if leading && self.core.committed_since_snapshot() {
            self.write_snapshot_now().await;
        }
        tracing::info!(seq = self.core.seq(), "sequencer stopped");
    }

    /// When to journal the next `Tick`: after `idle_tick` without a write, or sooner when the
    /// engine's next timer is due.
    fn next_tick_at(&self) -> tokio::time::Instant {
        let idle = tokio::time::Instant::from_std(self.last_write + self.idle_tick);
        match self.core.timer_due_at() {
            Some(timer) => {
                let wait_ms = (timer.0 - now_ms().0).max(0) as u64;
                idle.min(tokio::time::Instant::now() + Duration::from_millis(wait_ms))
            }
            None => idle,
        }
    }

    /// Takes up to [`READS_PER_TURN_MAX`] waiting reads, and answers them (with those held
    /// before) once no batch is in flight; until then they are held, and hold back the next
    /// batch.
    fn take_reads(&mut self, reads: &mut mpsc::Receiver<ReadFn>) {
        while self.held_reads.len() < READS_PER_TURN_MAX {
            match reads.try_recv() {
                Ok(read) => self.held_reads.push(read),
                Err(_) => break,
            }
        }
        if self.in_flight.is_empty() {
            for read in std::mem::take(&mut self.held_reads) {
                self.answer(read);
            }
        }
    }

    fn answer(&self, read: ReadFn) {
        read(&ReadView {
            engine: self.core.engine(),
            seq: self.core.seq(),
            writable: self.writable,
        });
    }
}
