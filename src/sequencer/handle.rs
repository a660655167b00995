//! The public face of the sequencer: the handle request handlers clone, and what a write or a
//! read gives back.
//!
//! A handle never touches the engine. Writes and reads travel to the sequencer task over two
//! bounded channels; a write is answered only after its batch is durable ([`Committed`]), and a
//! read runs between batches, so it only ever sees committed state ([`ReadView`]). Waiting for
//! room in a full queue is bounded by [`SUBMIT_WAIT_MAX`], after which the caller is told the
//! sequencer is overloaded rather than kept waiting.

use crate::error::ApiError;
use crate::journal::{CommandRecord, CommittedBatch, EntryId};
use crate::limits::SUBMIT_WAIT_MAX;
use matching_engine::{Command, Engine, Event};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, oneshot};

/// A write's acknowledgement: its command is durable.
#[derive(Clone, Debug)]
pub struct Committed {
    batch: Arc<CommittedBatch>,
    index: usize,
}

impl Committed {
    /// The acknowledgement of the `index`th command of a committed batch.
    pub(super) fn new(batch: Arc<CommittedBatch>, index: usize) -> Committed {
        Committed { batch, index }
    }

    /// The command's record.
    pub fn record(&self) -> &CommandRecord {
        &self.batch.records[self.index]
    }

    /// The command's events.
    pub fn events(&self) -> &[Event] {
        &self.record().events
    }
}

/// Why a write was not acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// Writes are refused until the database is back, or this batch's commit failed.
    #[error("writes are unavailable")]
    Unavailable,
    /// The write queue stayed full.
    #[error("the sequencer is overloaded")]
    Overloaded,
    /// The sequencer has stopped.
    #[error("the sequencer has stopped")]
    Stopped,
    /// This capacity signal was applied before (its effect is durable): nothing was done.
    #[error("the signal was already applied")]
    AlreadyApplied,
    /// This node is a standby: only the leader writes.
    #[error("this node is not the leader")]
    NotLeader,
}

impl From<SubmitError> for ApiError {
    /// A write not acknowledged is a retryable 503 (overloaded, or writes paused).
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Overloaded => ApiError::Overloaded,
            SubmitError::Unavailable | SubmitError::Stopped => ApiError::Unavailable,
            SubmitError::NotLeader => ApiError::NoLeader,
            // Only capacity signals are refused as already applied; REST never sends one.
            SubmitError::AlreadyApplied => {
                ApiError::Internal("a REST write was refused as an already applied signal".into())
            }
        }
    }
}

/// Where a write's outcome is sent.
pub(super) type Reply = oneshot::Sender<Result<Committed, SubmitError>>;

/// A write on its way to the sequencer.
pub(super) struct WriteRequest {
    /// The command to apply.
    pub(super) command: Command,
    /// The capacity signal it came from, if any.
    pub(super) signal: Option<EntryId>,
    /// `None` for the sequencer's own commands (ticks, pool configuration): no one waits.
    pub(super) reply: Option<Reply>,
}

impl WriteRequest {
    /// A command of the sequencer's own, which no one waits for.
    pub(super) fn unanswered(command: Command) -> WriteRequest {
        WriteRequest {
            command,
            signal: None,
            reply: None,
        }
    }
}

/// A queued write: resolves once its command is durable (or refused).
pub struct PendingWrite(oneshot::Receiver<Result<Committed, SubmitError>>);

impl PendingWrite {
    /// Waits for the outcome.
    pub async fn committed(self) -> Result<Committed, SubmitError> {
        self.0.await.unwrap_or(Err(SubmitError::Stopped))
    }
}

/// What a read sees: the committed engine state and the last committed sequence number.
pub struct ReadView<'a> {
    /// The engine.
    pub engine: &'a Engine,
    /// The last committed command's sequence number.
    pub seq: u64,
    /// Whether writes are accepted right now.
    pub writable: bool,
}

/// A read on its way to the sequencer: it answers its requester itself.
pub(super) type ReadFn = Box<dyn FnOnce(&ReadView<'_>) + Send>;

/// What this process is among the processes sharing its store (DESIGN section 10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The only process (the embedded SQLite store): it always writes.
    Single,
    /// The leader: it commits, fenced by its epoch.
    Leader {
        /// The leadership epoch its batches commit under.
        epoch: u64,
    },
    /// A hot standby: it follows the journal and writes nothing.
    Standby,
}

impl Role {
    /// `leader` (the single process is its own leader) or `standby`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Single | Role::Leader { .. } => "leader",
            Role::Standby => "standby",
        }
    }

    /// Whether this process commits writes.
    pub fn leads(self) -> bool {
        !matches!(self, Role::Standby)
    }
}

/// Shared status, readable without a round trip to the sequencer.
#[derive(Debug, Default)]
pub struct SequencerStatus {
    writable: AtomicBool,
    last_seq: AtomicU64,
    /// 0: single, 1: leader, 2: standby.
    role: AtomicU8,
    /// The leader's epoch (the last one this node led under, for a standby).
    epoch: AtomicU64,
}

impl SequencerStatus {
    /// Publishes the sequencer's state (only the sequencer task calls this).
    pub(super) fn set(&self, writable: bool, last_seq: u64, role: Role) {
        let (code, epoch) = match role {
            Role::Single => (0, None),
            Role::Leader { epoch } => (1, Some(epoch)),
            Role::Standby => (2, None),
        };
        self.role.store(code, Ordering::Release);
        if let Some(epoch) = epoch {
            self.epoch.store(epoch, Ordering::Release);
        }
        self.writable.store(writable, Ordering::Release);
        self.last_seq.store(last_seq, Ordering::Release);
    }

    fn role(&self) -> Role {
        match self.role.load(Ordering::Acquire) {
            0 => Role::Single,
            1 => Role::Leader {
                epoch: self.epoch.load(Ordering::Acquire),
            },
            _ => Role::Standby,
        }
    }
}

/// A request from the cluster's leadership task to the sequencer.
pub(super) enum Control {
    /// Leadership was won under `epoch`: catch up with the journal, then commit under it.
    Promote {
        epoch: u64,
        reply: oneshot::Sender<anyhow::Result<()>>,
    },
    /// Leadership was lost (or cannot be renewed): stop writing, follow the journal.
    StepDown { reason: String },
}

/// The handle request handlers use to talk to the sequencer.
#[derive(Clone)]
pub struct SequencerHandle {
    writes: mpsc::Sender<WriteRequest>,
    reads: mpsc::Sender<ReadFn>,
    events: broadcast::Sender<Arc<CommittedBatch>>,
    status: Arc<SequencerStatus>,
    control: mpsc::Sender<Control>,
}

impl SequencerHandle {
    /// A handle on the sequencer task that receives from these channels.
    pub(super) fn new(
        writes: mpsc::Sender<WriteRequest>,
        reads: mpsc::Sender<ReadFn>,
        events: broadcast::Sender<Arc<CommittedBatch>>,
        status: Arc<SequencerStatus>,
        control: mpsc::Sender<Control>,
    ) -> SequencerHandle {
        SequencerHandle {
            writes,
            reads,
            events,
            status,
            control,
        }
    }

    /// Makes this standby the leader under `epoch` (just won): it catches up with the whole
    /// journal first. An error leaves it a standby.
    pub async fn promote(&self, epoch: u64) -> anyhow::Result<()> {
        let (reply, answer) = oneshot::channel();
        self.control
            .send(Control::Promote { epoch, reply })
            .await
            .map_err(|_| anyhow::anyhow!("the sequencer has stopped"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the sequencer has stopped"))?
    }

    /// Makes the leader a standby (leadership lost or not renewable).
    pub async fn step_down(&self, reason: String) {
        let _ = self.control.send(Control::StepDown { reason }).await;
    }

    /// What this process is right now.
    pub fn role(&self) -> Role {
        self.status.role()
    }

    /// The last epoch this node led under (0 if never).
    pub fn epoch(&self) -> u64 {
        self.status.epoch.load(Ordering::Acquire)
    }

    /// Submits a command; resolves once it is durable (or refused).
    pub async fn submit(&self, command: Command) -> Result<Committed, SubmitError> {
        self.queue(command, None).await?.committed().await
    }

    /// Submits the command a capacity signal became, with the signal's stream entry id: the id
    /// is recorded in the same transaction, and an id recorded before is refused with
    /// [`SubmitError::AlreadyApplied`] (nothing applied, nothing journaled).
    pub async fn submit_signal(
        &self,
        command: Command,
        signal: EntryId,
    ) -> Result<Committed, SubmitError> {
        self.queue_signal(command, signal).await?.committed().await
    }

    /// Queues a signal's command like [`SequencerHandle::submit_signal`] and returns once it is
    /// queued: signals queued one after another are applied in that order, in as few batches
    /// as their arrival allows.
    pub async fn queue_signal(
        &self,
        command: Command,
        signal: EntryId,
    ) -> Result<PendingWrite, SubmitError> {
        self.queue(command, Some(signal)).await
    }

    async fn queue(
        &self,
        command: Command,
        signal: Option<EntryId>,
    ) -> Result<PendingWrite, SubmitError> {
        if !self.writable() {
            return Err(match self.role() {
                Role::Standby => SubmitError::NotLeader,
                _ => SubmitError::Unavailable,
            });
        }
        let (reply, answer) = oneshot::channel();
        let request = WriteRequest {
            command,
            signal,
            reply: Some(reply),
        };
        match tokio::time::timeout(SUBMIT_WAIT_MAX, self.writes.send(request)).await {
            Ok(Ok(())) => Ok(PendingWrite(answer)),
            Ok(Err(_)) => Err(SubmitError::Stopped),
            Err(_) => Err(SubmitError::Overloaded),
        }
    }

    /// Runs `query` against the committed engine state, between batches.
    pub async fn read<R, F>(&self, query: F) -> Result<R, SubmitError>
    where
        R: Send + 'static,
        F: FnOnce(&ReadView<'_>) -> R + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let read: ReadFn = Box::new(move |view| {
            // The requester may have gone away (client disconnected): nothing to do.
            let _ = reply.send(query(view));
        });
        match tokio::time::timeout(SUBMIT_WAIT_MAX, self.reads.send(read)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(SubmitError::Stopped),
            Err(_) => return Err(SubmitError::Overloaded),
        }
        answer.await.map_err(|_| SubmitError::Stopped)
    }

    /// Every committed batch from now on (a lagging receiver misses batches: see `Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<CommittedBatch>> {
        self.events.subscribe()
    }

    /// Whether writes are accepted (false while the database is unavailable).
    pub fn writable(&self) -> bool {
        self.status.writable.load(Ordering::Acquire)
    }

    /// The last committed sequence number.
    pub fn last_seq(&self) -> u64 {
        self.status.last_seq.load(Ordering::Acquire)
    }
}
