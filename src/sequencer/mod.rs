//! The sequencer: the one task that owns the engine, and the only writer to the store.
//!
//! Requests arrive over two bounded channels: writes (a [`Command`] and a reply slot) and reads
//! (a closure run against the engine). The sequencer takes every waiting write, up to
//! [`BATCH_COMMANDS_MAX`], stamps each with the next sequence number and the wall-clock time
//! (never earlier than the engine's clock, so engine time is monotonic), applies them, and
//! writes the batch (journal rows and the rows its events produced) in one transaction. Only
//! after the commit are the writers answered and the batch published to subscribers. Reads
//! run between batches, so they only ever see committed state.
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
//!   memory, [`AppliedSignals`], or else in the store) is refused with
//!   [`SubmitError::AlreadyApplied`] without being applied or journaled. The journal holds only
//!   applied commands, so a replay applies each signal once too.
//! - Time moves only through journaled commands: an idle server journals a `Tick` every
//!   `idle_tick` (`OFFPEAK_IDLE_TICK_MS`), and one is sent when the engine's next timer is due.

mod applied;

use crate::error::ApiError;
use crate::journal::{CommandRecord, CommittedBatch, EntryId};
use crate::limits::{
    APPLIED_SIGNALS_CACHED_MAX, BATCH_COMMANDS_MAX, EVENT_BROADCAST_BATCHES_MAX, MARKET_HISTORY_MS,
    READS_PER_TURN_MAX, READ_QUEUE_CAPACITY, RECOVERY_RETRY_MAX, RECOVERY_RETRY_MIN,
    REPLAY_CHUNK_COMMANDS, SNAPSHOT_EVERY_COMMANDS, SUBMIT_WAIT_MAX, TRADES_KEPT_PER_POOL_MAX,
    WRITE_QUEUE_CAPACITY,
};
use crate::market_data::MarketData;
use crate::metrics::Metrics;
use crate::store::{BatchRows, Store, StoredSnapshot};
use crate::timestamp::now_ms;
use anyhow::{bail, Context};
use applied::{AppliedSignals, Seen};
use matching_engine::{Command, Engine, Event, PoolConfig, Snapshot, TimeMs};
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

/// A write's acknowledgement: its command is durable.
#[derive(Clone, Debug)]
pub struct Committed {
    batch: Arc<CommittedBatch>,
    index: usize,
}

impl Committed {
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
}

impl From<SubmitError> for ApiError {
    /// A write not acknowledged is a retryable 503 (overloaded, or writes paused).
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Overloaded => ApiError::Overloaded,
            SubmitError::Unavailable | SubmitError::Stopped => ApiError::Unavailable,
            // Only capacity signals are refused as already applied; REST never sends one.
            SubmitError::AlreadyApplied => {
                ApiError::Internal("a REST write was refused as an already applied signal".into())
            }
        }
    }
}

type Reply = oneshot::Sender<Result<Committed, SubmitError>>;

struct WriteRequest {
    command: Command,
    signal: Option<EntryId>,
    reply: Option<Reply>,
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

type ReadFn = Box<dyn FnOnce(&ReadView<'_>) + Send>;

/// Shared status, readable without a round trip to the sequencer.
#[derive(Debug, Default)]
pub struct SequencerStatus {
    writable: AtomicBool,
    last_seq: AtomicU64,
}

/// The handle request handlers use to talk to the sequencer.
#[derive(Clone)]
pub struct SequencerHandle {
    writes: mpsc::Sender<WriteRequest>,
    reads: mpsc::Sender<ReadFn>,
    events: broadcast::Sender<Arc<CommittedBatch>>,
    status: Arc<SequencerStatus>,
}

impl SequencerHandle {
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
            return Err(SubmitError::Unavailable);
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

/// The running sequencer task; stop it after the HTTP server has stopped.
pub struct SequencerTask {
    stop: oneshot::Sender<()>,
    join: JoinHandle<()>,
}

impl SequencerTask {
    /// Drains what is queued, commits it, writes a final snapshot, and waits for the task.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        if let Err(e) = self.join.await {
            tracing::error!(error = %e, "the sequencer task failed");
        }
    }
}

/// The sequencer's clocks (settings, so tests can shorten them).
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// An idle sequencer journals a `Tick` after this long.
    pub idle_tick: Duration,
    /// A snapshot is taken at least this often while anything happens.
    pub snapshot_every: Duration,
}

/// Which pools to make sure exist at start.
#[derive(Clone, Debug)]
pub enum PoolsSetup {
    /// Exactly these settings (journaled as `ConfigurePool` where the engine differs).
    File(Vec<PoolConfig>),
    /// The default pools, on a fresh journal only.
    Defaults,
}

/// The default pools: H100 and A100 in two regions.
pub fn default_pools() -> Vec<PoolConfig> {
    let mut pools = Vec::new();
    for gpu in ["h100-sxm", "a100-80gb"] {
        for region in ["us-east", "eu-west"] {
            pools.push(PoolConfig::with_defaults(gpu, region));
        }
    }
    pools
}

/// Encodes a snapshot for storage.
pub fn encode_snapshot(snapshot: &Snapshot) -> anyhow::Result<Vec<u8>> {
    serde_json::to_vec(snapshot).context("encoding the engine snapshot")
}

/// Decodes a stored snapshot.
pub fn decode_snapshot(bytes: &[u8]) -> anyhow::Result<Snapshot> {
    serde_json::from_slice(bytes).context("decoding the engine snapshot")
}

/// Engine state rebuilt from the store.
struct Loaded {
    engine: Engine,
    seq: u64,
    replayed: u64,
    signals: AppliedSignals,
}

/// Restores the newest usable snapshot and replays the journal after it.
async fn load_state(store: &dyn Store) -> anyhow::Result<Loaded> {
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
    loop {
        let chunk = store
            .journal_after(seq, REPLAY_CHUNK_COMMANDS)
            .await
            .context("reading the journal")?;
        if chunk.is_empty() {
            break;
        }
        for entry in chunk {
            if entry.seq != seq + 1 {
                bail!("the journal jumps from seq {seq} to {}", entry.seq);
            }
            let command: Command = serde_json::from_str(&entry.command_json)
                .with_context(|| format!("decoding journal command {}", entry.seq))?;
            engine.apply(entry.at, &command, &mut scratch);
            scratch.clear();
            seq = entry.seq;
            replayed += 1;
        }
    }
    let newest = store
        .applied_signals_newest(APPLIED_SIGNALS_CACHED_MAX)
        .await
        .context("loading applied signals")?;
    let complete = newest.len() < APPLIED_SIGNALS_CACHED_MAX;
    Ok(Loaded {
        engine,
        seq,
        replayed,
        signals: AppliedSignals::from_newest(newest, complete),
    })
}

type RecoveryFuture = Pin<Box<dyn Future<Output = anyhow::Result<Loaded>> + Send>>;

fn recovery(store: Arc<dyn Store>, wait: Duration) -> RecoveryFuture {
    Box::pin(async move {
        tokio::time::sleep(wait).await;
        store.ping().await.context("pinging the database")?;
        load_state(&*store).await
    })
}

struct Sequencer {
    engine: Engine,
    store: Arc<dyn Store>,
    seq: u64,
    writable: bool,
    /// Encoded snapshot of the committed state at `base_seq`.
    base: Arc<Snapshot>,
    base_seq: u64,
    /// Commands committed after `base_seq`, to rebuild the committed state without the store.
    tail: Vec<(TimeMs, Command)>,
    /// The newest applied capacity signals, to refuse a redelivered one.
    signals: AppliedSignals,
    /// Commands other than ticks since the last snapshot (ticks alone do not warrant one).
    significant_since_snapshot: u64,
    last_snapshot: Instant,
    snapshot_write: Option<JoinHandle<()>>,
    last_write: Instant,
    /// The time of the last `Tick` applied: a timer not after it was due then, so it must
    /// have fired; waiting for it again would spin.
    last_tick_at: TimeMs,
    idle_tick: Duration,
    snapshot_every: Duration,
    events: broadcast::Sender<Arc<CommittedBatch>>,
    status: Arc<SequencerStatus>,
    market: Arc<MarketData>,
    metrics: Arc<Metrics>,
}

/// Loads the state, configures pools, and starts the sequencer task.
pub async fn start(
    store: Arc<dyn Store>,
    pools: PoolsSetup,
    market: Arc<MarketData>,
    metrics: Arc<Metrics>,
    timing: Timing,
) -> anyhow::Result<(SequencerHandle, SequencerTask)> {
    store.migrate().await.context("applying migrations")?;
    let started = Instant::now();
    let loaded = load_state(&*store).await?;
    tracing::info!(
        seq = loaded.seq,
        replayed = loaded.replayed,
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
    let base = Arc::new(loaded.engine.snapshot());
    let mut sequencer = Sequencer {
        engine: loaded.engine,
        store,
        seq: loaded.seq,
        writable: true,
        base,
        base_seq: loaded.seq,
        tail: Vec::new(),
        signals: loaded.signals,
        significant_since_snapshot: loaded.replayed,
        last_snapshot: Instant::now(),
        snapshot_write: None,
        last_write: Instant::now(),
        last_tick_at: TimeMs(i64::MIN),
        idle_tick: timing.idle_tick,
        snapshot_every: timing.snapshot_every,
        events: events.clone(),
        status: status.clone(),
        market,
        metrics,
    };
    sequencer.publish_status();

    let pool_commands = sequencer.pool_commands(&pools);
    if !pool_commands.is_empty() {
        let requests = pool_commands
            .into_iter()
            .map(|command| WriteRequest {
                command,
                signal: None,
                reply: None,
            })
            .collect();
        if !sequencer.process(requests).await {
            bail!("could not journal the pool configuration");
        }
    }
    if loaded.replayed >= SNAPSHOT_EVERY_COMMANDS {
        // A long replay this time: make the next start short.
        sequencer.write_snapshot_now().await;
    }

    let (writes_tx, writes_rx) = mpsc::channel(WRITE_QUEUE_CAPACITY);
    let (reads_tx, reads_rx) = mpsc::channel(READ_QUEUE_CAPACITY);
    let (stop_tx, stop_rx) = oneshot::channel();
    let join = tokio::spawn(sequencer.run(writes_rx, reads_rx, stop_rx));
    Ok((
        SequencerHandle {
            writes: writes_tx,
            reads: reads_tx,
            events,
            status,
        },
        SequencerTask {
            stop: stop_tx,
            join,
        },
    ))
}

impl Sequencer {
    fn pool_commands(&self, pools: &PoolsSetup) -> Vec<Command> {
        match pools {
            PoolsSetup::File(list) => list
                .iter()
                .filter(|wanted| {
                    self.engine.pool(&wanted.id).map(|p| p.config).as_ref() != Some(*wanted)
                })
                .cloned()
                .map(Command::ConfigurePool)
                .collect(),
            PoolsSetup::Defaults if self.seq == 0 && self.engine.pools().is_empty() => {
                default_pools()
                    .into_iter()
                    .map(Command::ConfigurePool)
                    .collect()
            }
            PoolsSetup::Defaults => Vec::new(),
        }
    }

    fn publish_status(&self) {
        self.status.writable.store(self.writable, Ordering::Release);
        self.status.last_seq.store(self.seq, Ordering::Release);
        self.metrics.set_sequencer(self.seq, self.writable);
    }

    async fn run(
        mut self,
        mut writes: mpsc::Receiver<WriteRequest>,
        mut reads: mpsc::Receiver<ReadFn>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let mut recovering: Option<RecoveryFuture> = None;
        let mut retry_wait = RECOVERY_RETRY_MIN;
        loop {
            let tick_at = self.next_tick_at();
            // Not while the previous snapshot is still being written: the branch would spin.
            let snapshot_due = self.significant_since_snapshot > 0
                && self
                    .snapshot_write
                    .as_ref()
                    .is_none_or(|write| write.is_finished());
            let snapshot_at =
                tokio::time::Instant::from_std(self.last_snapshot + self.snapshot_every);
            tokio::select! {
                _ = &mut stop => break,
                Some(first) = writes.recv() => {
                    let mut batch = Vec::with_capacity(writes.len().min(BATCH_COMMANDS_MAX) + 1);
                    batch.push(first);
                    while batch.len() < BATCH_COMMANDS_MAX {
                        match writes.try_recv() {
                            Ok(request) => batch.push(request),
                            Err(_) => break,
                        }
                    }
                    if !self.process(batch).await && recovering.is_none() {
                        retry_wait = RECOVERY_RETRY_MIN;
                        recovering = Some(recovery(self.store.clone(), retry_wait));
                    }
                }
                Some(read) = reads.recv() => self.answer(read),
                _ = tokio::time::sleep_until(tick_at), if self.writable => {
                    let tick = WriteRequest { command: Command::Tick, signal: None, reply: None };
                    if !self.process(vec![tick]).await && recovering.is_none() {
                        retry_wait = RECOVERY_RETRY_MIN;
                        recovering = Some(recovery(self.store.clone(), retry_wait));
                    }
                }
                // Wakes an otherwise idle loop for a due snapshot (`maybe_snapshot` below).
                _ = tokio::time::sleep_until(snapshot_at), if snapshot_due && self.writable => {}
                loaded = async { match recovering.as_mut() {
                    Some(future) => future.await,
                    None => std::future::pending().await,
                } }, if recovering.is_some() => {
                    recovering = None;
                    match loaded {
                        Ok(loaded) => self.resume(loaded).await,
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), retry_ms = retry_wait.as_millis() as u64, "database still unavailable");
                            retry_wait = (retry_wait * 2).min(RECOVERY_RETRY_MAX);
                            recovering = Some(recovery(self.store.clone(), retry_wait));
                        }
                    }
                }
                else => break,
            }
            for _ in 0..READS_PER_TURN_MAX {
                match reads.try_recv() {
                    Ok(read) => self.answer(read),
                    Err(_) => break,
                }
            }
            self.maybe_snapshot();
        }
        // Shutdown: the HTTP server has stopped; commit whatever is still queued.
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
        if self.writable && (self.significant_since_snapshot > 0 || !self.tail.is_empty()) {
            self.write_snapshot_now().await;
        }
        tracing::info!(seq = self.seq, "sequencer stopped");
    }

    fn next_tick_at(&self) -> tokio::time::Instant {
        let idle = tokio::time::Instant::from_std(self.last_write + self.idle_tick);
        match self.engine.next_timer_at() {
            Some(timer) if timer > self.last_tick_at => {
                let wait_ms = (timer.0 - now_ms().0).max(0) as u64;
                idle.min(tokio::time::Instant::now() + Duration::from_millis(wait_ms))
            }
            _ => idle,
        }
    }

    fn answer(&self, read: ReadFn) {
        read(&ReadView {
            engine: &self.engine,
            seq: self.seq,
            writable: self.writable,
        });
    }

    /// Applies and commits one batch; false when the commit failed (writes are now refused).
    async fn process(&mut self, requests: Vec<WriteRequest>) -> bool {
        if !self.writable {
            self.metrics.writes_refused(requests.len() as u64);
            for request in requests {
                if let Some(reply) = request.reply {
                    let _ = reply.send(Err(SubmitError::Unavailable));
                }
            }
            return true;
        }
        let requests = self.without_applied_signals(requests).await;
        if requests.is_empty() {
            return true;
        }
        self.last_write = Instant::now();
        let mut records = Vec::with_capacity(requests.len());
        let mut replies = Vec::with_capacity(requests.len());
        for request in requests {
            let at = TimeMs(now_ms().0.max(self.engine.now().0));
            self.seq += 1;
            let mut events = Vec::new();
            self.engine.apply(at, &request.command, &mut events);
            if matches!(request.command, Command::Tick) {
                self.last_tick_at = at;
            }
            records.push(CommandRecord {
                seq: self.seq,
                at,
                command: request.command,
                signal: request.signal,
                events,
            });
            replies.push(request.reply);
        }
        let batch = Arc::new(CommittedBatch { records });
        let started = Instant::now();
        let result = match BatchRows::from_batch(&batch) {
            Ok(rows) => self.store.write_batch(&rows).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                self.metrics.batch_committed(&batch, started.elapsed());
                for (index, reply) in replies.into_iter().enumerate() {
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(Committed {
                            batch: batch.clone(),
                            index,
                        }));
                    }
                }
                for record in &batch.records {
                    if !matches!(record.command, Command::Tick) {
                        self.significant_since_snapshot += 1;
                    }
                    if let Some(id) = record.signal {
                        self.signals.insert(id);
                    }
                    self.tail.push((record.at, record.command.clone()));
                }
                self.market.apply(&batch);
                self.publish_status();
                // No subscriber is not an error.
                let _ = self.events.send(batch);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, first_seq = batch.records.first().map_or(0, |r| r.seq), commands = batch.records.len(), "batch commit failed; refusing writes until the database is back");
                self.metrics.batch_failed();
                for reply in replies.into_iter().flatten() {
                    let _ = reply.send(Err(SubmitError::Unavailable));
                }
                self.roll_back();
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
        // Ids older than the memory's window: one question to the store for the whole batch.
        let unknown: Vec<EntryId> = requests
            .iter()
            .filter_map(|r| r.signal)
            .filter(|id| self.signals.seen(*id) == Seen::Unknown)
            .collect();
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
        let mut in_batch = HashSet::new();
        let mut kept = Vec::with_capacity(requests.len());
        for request in requests {
            let Some(id) = request.signal else {
                kept.push(request);
                continue;
            };
            let applied = match self.signals.seen(id) {
                Seen::Applied => Some(true),
                Seen::New => Some(false),
                Seen::Unknown => recorded.as_ref().map(|ids| ids.contains(&id)),
            };
            let refusal = match applied {
                Some(true) => Some(SubmitError::AlreadyApplied),
                // The first of the two may yet fail to commit: the second asks again later.
                Some(false) if !in_batch.insert(id) => Some(SubmitError::Unavailable),
                Some(false) => None,
                None => Some(SubmitError::Unavailable),
            };
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

    /// Rebuilds the committed state from `base` and `tail`, dropping the uncommitted batch.
    fn roll_back(&mut self) {
        let mut engine = Engine::restore(Snapshot::clone(&self.base));
        let mut scratch = Vec::new();
        for (at, command) in &self.tail {
            engine.apply(*at, command, &mut scratch);
            scratch.clear();
        }
        self.engine = engine;
        self.seq = self.base_seq + self.tail.len() as u64;
    }

    /// Takes over the state reloaded from the store and accepts writes again.
    async fn resume(&mut self, loaded: Loaded) {
        let base = Arc::new(loaded.engine.snapshot());
        tracing::info!(
            seq = loaded.seq,
            previous_seq = self.seq,
            "database is back; state rebuilt from snapshot and journal, accepting writes"
        );
        self.engine = loaded.engine;
        self.seq = loaded.seq;
        self.signals = loaded.signals;
        self.base = base;
        self.base_seq = loaded.seq;
        self.tail.clear();
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

    fn maybe_snapshot(&mut self) {
        if !self.writable
            || self
                .snapshot_write
                .as_ref()
                .is_some_and(|write| !write.is_finished())
        {
            return;
        }
        let due = self.tail.len() as u64 >= SNAPSHOT_EVERY_COMMANDS
            || (self.significant_since_snapshot > 0
                && self.last_snapshot.elapsed() >= self.snapshot_every);
        if !due {
            return;
        }
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

    /// Copies the current (committed) state and makes it the rollback base.
    fn take_snapshot(&mut self) -> TakenSnapshot {
        self.base = Arc::new(self.engine.snapshot());
        self.base_seq = self.seq;
        self.tail.clear();
        self.significant_since_snapshot = 0;
        self.last_snapshot = Instant::now();
        self.metrics.snapshot_taken(self.seq);
        TakenSnapshot {
            seq: self.seq,
            state_hash: self.engine.state_hash(),
            snapshot: self.base.clone(),
        }
    }

    async fn write_snapshot_now(&mut self) {
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

/// A copy of the committed state at `seq`, not yet encoded.
struct TakenSnapshot {
    seq: u64,
    state_hash: u64,
    snapshot: Arc<Snapshot>,
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
