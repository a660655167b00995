//! The sequencer's synchronous core: it owns the engine and does everything a batch needs
//! except talk to the world. No tokio, no database, and no clock of its own: the time it
//! stamps comes from an injected [`Clock`] (production passes [`crate::timestamp::now_ms`]).
//!
//! A batch goes: [`SequencerCore::signal_refusals`] (which writes to refuse for their capacity
//! signal), [`SequencerCore::apply_batch`] (stamp, apply, build the records and the store's
//! rows), then [`SequencerCore::commit`] once the shell knows the store took it. Batches may
//! be applied while earlier ones are still committing (the shell's commit pipeline): they are
//! committed in the order they were applied, and [`SequencerCore::roll_back`] drops every
//! batch not yet committed at once.
//!
//! Invariants:
//! - `seq` numbers are 1, 2, 3... with no gap; a rolled-back batch's numbers are used again.
//! - Command times never go backwards, even when the clock does: each is at least the
//!   engine's time.
//! - `base_seq + tail.len()` is the committed seq: `base` (a snapshot at `base_seq`) plus
//!   `tail` (the commands committed since, with their times) rebuild the committed state.
//!   `seq` is at or past it: past it by the batches applied and not yet committed.
//! - A capacity signal's id joins [`AppliedSignals`] only once its batch committed; while its
//!   batch is in flight, the same id is refused as `Unavailable` (asked again later).

use super::applied::{AppliedSignals, Seen};
use super::handle::SubmitError;
use super::snapshot::TakenSnapshot;
use crate::journal::{usage_between, CommandRecord, CommittedBatch, EntryId};
use crate::limits::SNAPSHOT_EVERY_COMMANDS;
use crate::store::{BatchRows, StoreError};
use matching_engine::{Command, Engine, PoolUsage, Snapshot, TimeMs};
use std::collections::HashSet;
use std::sync::Arc;

/// Where the core reads the time it stamps on commands.
pub trait Clock {
    /// The wall-clock time now.
    fn now(&mut self) -> TimeMs;
}

impl<F: FnMut() -> TimeMs> Clock for F {
    fn now(&mut self) -> TimeMs {
        self()
    }
}

/// The production clock: [`crate::timestamp::now_ms`].
pub type SystemClock = fn() -> TimeMs;

/// Committed state rebuilt from the store: what the core starts or resumes from.
pub struct Restored {
    /// The engine at `seq`.
    pub engine: Engine,
    /// The last command in the journal.
    pub seq: u64,
    /// Commands replayed from the journal after the snapshot.
    pub replayed: u64,
    /// The newest applied capacity signals.
    pub signals: AppliedSignals,
}

/// The journal did not continue where this core's state ends.
#[derive(Debug, thiserror::Error)]
#[error("the journal jumps from seq {after} to {found}")]
pub struct JournalGap {
    /// The last seq applied.
    pub after: u64,
    /// The seq found next.
    pub found: u64,
}

/// A batch applied to the engine, not yet known to be durable.
pub struct StagedBatch {
    /// Its records, as subscribers see them once it is committed.
    pub batch: Arc<CommittedBatch>,
    /// The pools' usage after it: the committed usage once it commits.
    usage_after: Vec<PoolUsage>,
}

impl StagedBatch {
    /// The rows the store writes for it, in one transaction.
    pub fn rows(&self) -> Result<BatchRows, StoreError> {
        BatchRows::from_batch(&self.batch)
    }
}

/// The engine, its sequence numbers, and what it takes to undo a batch.
pub struct SequencerCore<C> {
    engine: Engine,
    clock: C,
    /// The last applied command's seq (committed or in flight).
    seq: u64,
    /// A snapshot of the committed state at `base_seq`.
    base: Arc<Snapshot>,
    base_seq: u64,
    /// Commands committed after `base_seq`, to rebuild the committed state without the store.
    tail: Vec<(TimeMs, Command)>,
    /// The newest applied capacity signals, to refuse a redelivered one.
    signals: AppliedSignals,
    /// The signals of the batches applied and not yet committed.
    signals_in_flight: HashSet<EntryId>,
    /// Commands other than ticks since the last snapshot (ticks alone do not warrant one).
    significant_since_snapshot: u64,
    /// The time of the last `Tick` applied: a timer not after it was due then, so it must
    /// have fired; waiting for it again would spin.
    last_tick_at: TimeMs,
    /// The pools' usage in the committed state.
    usage: Vec<PoolUsage>,
    /// The pools' usage after the last applied batch: the next batch carries what it adds.
    usage_applied: Vec<PoolUsage>,
}

impl<C: Clock> SequencerCore<C> {
    /// A core over the restored state; what was replayed counts towards the next snapshot.
    pub fn new(restored: Restored, clock: C) -> SequencerCore<C> {
        SequencerCore {
            usage: restored.engine.usage(),
            usage_applied: restored.engine.usage(),
            signals_in_flight: HashSet::new(),
            base: Arc::new(restored.engine.snapshot()),
            base_seq: restored.seq,
            engine: restored.engine,
            clock,
            seq: restored.seq,
            tail: Vec::new(),
            signals: restored.signals,
            significant_since_snapshot: restored.replayed,
            last_tick_at: TimeMs(i64::MIN),
        }
    }

    /// Takes over the state reloaded from the store after an outage (the journal decided
    /// whether the batch whose commit failed is in it).
    pub fn resume(&mut self, restored: Restored) {
        assert_eq!(
            self.seq,
            self.committed_seq(),
            "the state was reloaded under a batch in flight"
        );
        self.base = Arc::new(restored.engine.snapshot());
        self.base_seq = restored.seq;
        self.tail.clear();
        self.engine = restored.engine;
        self.seq = restored.seq;
        self.signals = restored.signals;
        self.signals_in_flight.clear();
        self.usage = self.engine.usage();
        self.usage_applied = self.engine.usage();
    }

    /// The engine (committed state, between batches).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The last applied command's seq (the last committed one when nothing is in flight).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The last committed command's seq.
    pub fn committed_seq(&self) -> u64 {
        self.base_seq + self.tail.len() as u64
    }

    /// The signal ids older than memory's window: only the store knows whether they were
    /// applied, so the shell asks it about these before [`SequencerCore::signal_refusals`].
    pub fn signals_to_look_up(&self, signals: &[Option<EntryId>]) -> Vec<EntryId> {
        signals
            .iter()
            .flatten()
            .copied()
            .filter(|id| self.signals.seen(*id) == Seen::Unknown)
            .collect()
    }

    /// For each write of a batch (given by the signal it came from, if any), why it is refused:
    /// `AlreadyApplied` for a signal applied before, `Unavailable` for one that cannot be
    /// checked now (`recorded`, the store's answer about the ids to look up, is `None`: it did
    /// not answer) and for the second of two writes with the same id (the first may yet fail to
    /// commit: the second asks again later). `None`: apply it.
    pub fn signal_refusals(
        &self,
        signals: &[Option<EntryId>],
        recorded: Option<&HashSet<EntryId>>,
    ) -> Vec<Option<SubmitError>> {
        let mut in_batch = HashSet::new();
        signals
            .iter()
            .map(|signal| {
                let id = (*signal)?;
                if self.signals_in_flight.contains(&id) {
                    return Some(SubmitError::Unavailable);
                }
                let applied = match self.signals.seen(id) {
                    Seen::Applied => Some(true),
                    Seen::New => Some(false),
                    Seen::Unknown => recorded.map(|ids| ids.contains(&id)),
                };
                match applied {
                    Some(true) => Some(SubmitError::AlreadyApplied),
                    Some(false) if !in_batch.insert(id) => Some(SubmitError::Unavailable),
                    Some(false) => None,
                    None => Some(SubmitError::Unavailable),
                }
            })
            .collect()
    }

    /// Stamps each write (a command and the signal it came from) with the next seq and the
    /// clock's time, never earlier than the engine's, and applies it, after any batch still in
    /// flight. The batch is not committed until [`SequencerCore::commit`];
    /// [`SequencerCore::roll_back`] undoes it (with every other batch in flight).
    pub fn apply_batch(
        &mut self,
        writes: impl IntoIterator<Item = (Command, Option<EntryId>)>,
    ) -> StagedBatch {
        let writes = writes.into_iter();
        let mut records = Vec::with_capacity(writes.size_hint().0);
        for (command, signal) in writes {
            let at = TimeMs(self.clock.now().0.max(self.engine.now().0));
            self.seq += 1;
            let mut events = Vec::new();
            self.engine.apply(at, &command, &mut events);
            if matches!(command, Command::Tick) {
                self.last_tick_at = at;
            }
            if let Some(id) = signal {
                self.signals_in_flight.insert(id);
            }
            records.push(CommandRecord {
                seq: self.seq,
                at,
                command,
                signal,
                events,
            });
        }
        self.staged(records)
    }

    /// The batch of these applied records, with the usage they add to the last applied batch.
    fn staged(&mut self, records: Vec<CommandRecord>) -> StagedBatch {
        let at = records.last().map_or(self.engine.now(), |r| r.at);
        let usage_after = self.engine.usage();
        let usage = usage_between(&self.usage_applied, &usage_after, at);
        self.usage_applied.clone_from(&usage_after);
        StagedBatch {
            usage_after,
            batch: Arc::new(CommittedBatch { records, usage }),
        }
    }

    /// Applies commands another node committed (a standby following the journal), with the
    /// seqs and times they were journaled with; they must follow this core's seq without a
    /// gap. Committed at once by the caller ([`SequencerCore::commit`]): they are durable.
    pub fn apply_journaled(
        &mut self,
        entries: Vec<(u64, TimeMs, Command)>,
    ) -> Result<StagedBatch, JournalGap> {
        assert_eq!(
            self.seq,
            self.committed_seq(),
            "journal entries were applied while a batch was neither committed nor rolled back"
        );
        // Checked before anything is applied: a gap leaves the state as it was.
        for (expected, (seq, _, _)) in (self.seq + 1..).zip(&entries) {
            if *seq != expected {
                return Err(JournalGap {
                    after: expected - 1,
                    found: *seq,
                });
            }
        }
        let mut records = Vec::with_capacity(entries.len());
        for (seq, at, command) in entries {
            self.seq = seq;
            let mut events = Vec::new();
            self.engine.apply(at, &command, &mut events);
            if matches!(command, Command::Tick) {
                self.last_tick_at = at;
            }
            records.push(CommandRecord {
                seq,
                at,
                command,
                signal: None,
                events,
            });
        }
        Ok(self.staged(records))
    }

    /// Forgets the applied signals remembered so far for these (the store's newest), when
    /// this node starts leading after following another leader's journal.
    pub fn replace_signals(&mut self, signals: AppliedSignals) {
        self.signals = signals;
    }

    /// Records that the staged batch is durable: its commands join the tail, its signals are
    /// remembered as applied.
    pub fn commit(&mut self, staged: &StagedBatch) {
        let first = staged
            .batch
            .records
            .first()
            .map_or(self.committed_seq() + 1, |r| r.seq);
        assert_eq!(
            first,
            self.committed_seq() + 1,
            "the committed batch does not follow the committed state"
        );
        for record in &staged.batch.records {
            if !matches!(record.command, Command::Tick) {
                self.significant_since_snapshot += 1;
            }
            if let Some(id) = record.signal {
                self.signals_in_flight.remove(&id);
                self.signals.insert(id);
            }
            self.tail.push((record.at, record.command.clone()));
        }
        self.usage.clone_from(&staged.usage_after);
        assert!(
            self.seq >= self.committed_seq(),
            "a batch committed in part"
        );
    }

    /// Drops every uncommitted batch: rebuilds the committed state from `base` and `tail`.
    pub fn roll_back(&mut self) {
        let mut engine = Engine::restore(Snapshot::clone(&self.base));
        let mut scratch = Vec::new();
        for (at, command) in &self.tail {
            engine.apply(*at, command, &mut scratch);
            scratch.clear();
        }
        self.engine = engine;
        self.seq = self.committed_seq();
        self.signals_in_flight.clear();
        self.usage_applied.clone_from(&self.usage);
    }

    /// When the engine's next timer is due, unless a `Tick` at or after that time was
    /// already applied (it fired then).
    pub fn timer_due_at(&self) -> Option<TimeMs> {
        self.engine
            .next_timer_at()
            .filter(|timer| *timer > self.last_tick_at)
    }

    /// Whether anything other than ticks was committed since the last snapshot.
    pub fn changed_since_snapshot(&self) -> bool {
        self.significant_since_snapshot > 0
    }

    /// Whether a long replay (or a long follow) ran since the last snapshot: a new leader
    /// writes one at once, so the next start is short.
    pub fn long_since_snapshot(&self) -> bool {
        self.significant_since_snapshot >= SNAPSHOT_EVERY_COMMANDS
    }

    /// Whether shutdown should leave a snapshot: anything at all committed since the last.
    pub fn committed_since_snapshot(&self) -> bool {
        self.significant_since_snapshot > 0 || !self.tail.is_empty()
    }

    /// Whether a snapshot is due: [`SNAPSHOT_EVERY_COMMANDS`] commands since the last (they
    /// bound the rollback and the next start's replay), or `interval_passed` (the shell's
    /// snapshot interval) with something other than ticks in them.
    pub fn snapshot_due(&self, interval_passed: bool) -> bool {
        self.tail.len() as u64 >= SNAPSHOT_EVERY_COMMANDS
            || (self.changed_since_snapshot() && interval_passed)
    }

    /// Copies the committed state and makes it the rollback base.
    pub fn take_snapshot(&mut self) -> TakenSnapshot {
        assert_eq!(
            self.seq,
            self.committed_seq(),
            "a snapshot was taken of an uncommitted batch"
        );
        self.base = Arc::new(self.engine.snapshot());
        self.base_seq = self.seq;
        self.tail.clear();
        self.significant_since_snapshot = 0;
        TakenSnapshot {
            seq: self.seq,
            state_hash: self.engine.state_hash(),
            snapshot: self.base.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::BATCH_COMMANDS_MAX;
    use matching_engine::{Event, PlaceBid, PoolConfig, PriceMicros, TimeInForce};
    use std::cell::Cell;
    use std::rc::Rc;

    const T0: i64 = 1_800_000_000_000;
    const POOL: &str = "h100-sxm.us-east";

    /// A clock the test sets by hand.
    fn fake_clock(start: TimeMs) -> (Rc<Cell<TimeMs>>, impl Clock) {
        let time = Rc::new(Cell::new(start));
        let read = time.clone();
        (time, move || read.get())
    }

    fn empty() -> Restored {
        Restored {
            engine: Engine::new(),
            seq: 0,
            replayed: 0,
            signals: AppliedSignals::from_newest(Vec::new(), true),
        }
    }

    /// A core with one pool configured and committed, its clock at `T0`.
    fn core_with_pool() -> (Rc<Cell<TimeMs>>, SequencerCore<impl Clock>) {
        let (time, clock) = fake_clock(TimeMs(T0));
        let mut core = SequencerCore::new(empty(), clock);
        let config = PoolConfig::with_defaults("h100-sxm", "us-east");
        let staged = core.apply_batch([(Command::ConfigurePool(config), None)]);
        assert!(matches!(
            staged.batch.records[0].events[0],
            Event::PoolConfigured { .. }
        ));
        core.commit(&staged);
        (time, core)
    }

    fn bid(account: &str, gpus: u32, dollars: u64) -> Command {
        Command::PlaceBid(PlaceBid {
            account: account.into(),
            pool: POOL.into(),
            gpus,
            min_gpus: None,
            price: PriceMicros(dollars * 1_000_000),
            duration_s: 3600,
            max_duration_s: None,
            tif: TimeInForce::Gtc,
            expires_at: None,
            persistent: false,
            client_order_id: None,
            ssh_public_keys: Vec::new(),
        })
    }

    fn accepted(events: &[Event]) -> bool {
        events
            .iter()
            .any(|e| matches!(e, Event::BidAccepted { .. }))
    }

    /// A write as the core takes it: a command and the signal it came from.
    type Write = (Command, Option<EntryId>);

    /// The kept writes of a batch after signal screening, like the shell does it.
    fn screened(
        core: &SequencerCore<impl Clock>,
        writes: Vec<Write>,
    ) -> (Vec<Write>, Vec<Option<SubmitError>>) {
        let signals: Vec<_> = writes.iter().map(|(_, signal)| *signal).collect();
        assert!(core.signals_to_look_up(&signals).is_empty());
        let refusals = core.signal_refusals(&signals, Some(&HashSet::new()));
        let kept = writes
            .into_iter()
            .zip(&refusals)
            .filter(|(_, refusal)| refusal.is_none())
            .map(|(write, _)| write)
            .collect();
        (kept, refusals)
    }

    #[test]
    fn a_batch_gets_consecutive_seqs_and_monotonic_times_when_the_clock_goes_back() {
        let (time, mut core) = core_with_pool();
        time.set(TimeMs(T0 + 5_000));
        let first = core.apply_batch([(bid("a", 1, 2), None), (bid("b", 2, 3), None)]);
        core.commit(&first);
        // The wall clock steps back (NTP): commands keep the engine's time, not the clock's.
        time.set(TimeMs(T0 + 1_000));
        let second = core.apply_batch([(bid("c", 1, 2), None), (Command::Tick, None)]);
        core.commit(&second);

        let records: Vec<_> = first
            .batch
            .records
            .iter()
            .chain(&second.batch.records)
            .collect();
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [2, 3, 4, 5], "the pool took seq 1");
        assert!(records.iter().all(|r| r.at == TimeMs(T0 + 5_000)));
        assert!(records[..3].iter().all(|r| accepted(&r.events)));
        assert_eq!(core.seq(), 5);
        assert_eq!(core.engine().now(), TimeMs(T0 + 5_000));
        let rows = second.rows().unwrap();
        let journaled: Vec<u64> = rows.journal.iter().map(|j| j.seq).collect();
        assert_eq!(journaled, [4, 5]);

        time.set(TimeMs(T0 + 9_000));
        let third = core.apply_batch([(Command::Tick, None)]);
        assert_eq!(
            third.batch.records[0].at,
            TimeMs(T0 + 9_000),
            "time moves on"
        );
    }

    #[test]
    fn a_signal_id_is_applied_once_within_and_across_batches() {
        let (_time, mut core) = core_with_pool();
        let id = EntryId::new(1_700_000_000_000, 0);
        let other = EntryId::new(1_700_000_000_000, 1);

        let (kept, refusals) = screened(
            &core,
            vec![
                (bid("a", 1, 2), Some(id)),
                (bid("b", 1, 2), Some(id)),
                (bid("c", 1, 2), Some(other)),
                (bid("d", 1, 2), None),
            ],
        );
        // The first may yet fail to commit: the second asks again later.
        assert_eq!(
            refusals,
            [None, Some(SubmitError::Unavailable), None, None],
            "the second of two with one id in a batch waits"
        );
        let staged = core.apply_batch(kept);
        let rows = staged.rows().unwrap();
        assert_eq!(rows.journal.len(), 3, "the refused write is not journaled");
        let recorded: Vec<EntryId> = rows.applied_signals.iter().map(|s| s.id).collect();
        assert_eq!(recorded, [id, other]);
        core.commit(&staged);

        let (kept, refusals) = screened(
            &core,
            vec![(bid("e", 1, 2), Some(id)), (bid("f", 1, 2), Some(other))],
        );
        assert_eq!(
            refusals,
            [
                Some(SubmitError::AlreadyApplied),
                Some(SubmitError::AlreadyApplied)
            ]
        );
        assert!(kept.is_empty(), "nothing to apply, nothing journaled");
        assert_eq!(core.seq(), 4);
    }

    #[test]
    fn a_signal_is_remembered_only_once_its_batch_committed() {
        let (_time, mut core) = core_with_pool();
        let id = EntryId::new(7, 0);
        let staged = core.apply_batch([(bid("a", 1, 2), Some(id))]);
        drop(staged);
        core.roll_back();
        assert_eq!(
            core.signal_refusals(&[Some(id)], Some(&HashSet::new())),
            [None],
            "a rolled-back signal may be applied again"
        );
    }

    #[test]
    fn old_signal_ids_are_refused_when_the_store_cannot_be_asked() {
        let (_time, clock) = fake_clock(TimeMs(T0));
        let old = EntryId::new(5, 0);
        let recent = EntryId::new(50, 0);
        let restored = Restored {
            signals: AppliedSignals::with_capacity(vec![recent], false, 10),
            ..empty()
        };
        let core = SequencerCore::new(restored, clock);
        let signals = [Some(old), Some(recent)];
        assert_eq!(core.signals_to_look_up(&signals), [old]);
        assert_eq!(
            core.signal_refusals(&signals, None),
            [
                Some(SubmitError::Unavailable),
                Some(SubmitError::AlreadyApplied)
            ]
        );
        let in_store = HashSet::from([old]);
        assert_eq!(
            core.signal_refusals(&[Some(old)], Some(&in_store)),
            [Some(SubmitError::AlreadyApplied)]
        );
        assert_eq!(
            core.signal_refusals(&[Some(old)], Some(&HashSet::new())),
            [None]
        );
    }

    #[test]
    fn a_failed_batch_rolls_back_to_the_committed_state_and_its_seqs_are_reused() {
        let (time, mut core) = core_with_pool();
        let committed = core.apply_batch([(bid("a", 4, 2), None)]);
        core.commit(&committed);
        let hash_before = core.engine().state_hash();
        let seq_before = core.seq();

        time.set(TimeMs(T0 + 60_000));
        let failed = core.apply_batch([(bid("b", 2, 3), None), (Command::Tick, None)]);
        assert_eq!(failed.batch.records[0].seq, seq_before + 1);
        assert_ne!(core.engine().state_hash(), hash_before);
        core.roll_back();

        assert_eq!(core.engine().state_hash(), hash_before);
        assert_eq!(core.seq(), seq_before);
        assert_eq!(
            core.engine().now(),
            TimeMs(T0),
            "the engine's time rolls back too"
        );
        let next = core.apply_batch([(bid("c", 1, 2), None)]);
        assert_eq!(
            next.batch.records[0].seq,
            seq_before + 1,
            "the seq is used again"
        );
        core.commit(&next);
        assert_eq!(core.seq(), seq_before + 1);
    }

    #[test]
    fn batches_in_flight_commit_in_order_and_a_failure_rolls_back_every_one_of_them() {
        let (time, mut core) = core_with_pool();
        let hash_committed = core.engine().state_hash();
        let committed_seq = core.seq();
        let signal = EntryId::new(9, 0);

        time.set(TimeMs(T0 + 1_000));
        let first = core.apply_batch([(bid("a", 2, 2), Some(signal))]);
        time.set(TimeMs(T0 + 2_000));
        let (kept, refusals) = screened(
            &core,
            vec![(bid("b", 1, 3), None), (bid("c", 1, 3), Some(signal))],
        );
        assert_eq!(
            refusals,
            [None, Some(SubmitError::Unavailable)],
            "a signal in a batch still in flight waits"
        );
        let second = core.apply_batch(kept);
        assert_eq!(second.batch.records[0].seq, committed_seq + 2);
        assert_eq!(core.committed_seq(), committed_seq, "nothing committed yet");

        core.commit(&first);
        assert_eq!(core.committed_seq(), committed_seq + 1);
        assert_eq!(
            core.signal_refusals(&[Some(signal)], Some(&HashSet::new())),
            [Some(SubmitError::AlreadyApplied)]
        );
        let after_first = {
            let mut replica = SequencerCore::new(empty(), || TimeMs(T0));
            let journaled = |staged: &StagedBatch| {
                staged
                    .batch
                    .records
                    .iter()
                    .map(|r| (r.seq, r.at, r.command.clone()))
                    .collect::<Vec<_>>()
            };
            let mut all = vec![(
                1,
                TimeMs(T0),
                Command::ConfigurePool(PoolConfig::with_defaults("h100-sxm", "us-east")),
            )];
            all.extend(journaled(&first));
            let staged = replica.apply_journaled(all).unwrap();
            replica.commit(&staged);
            replica.engine().state_hash()
        };

        // The second batch's commit fails: the engine goes back to the first's state.
        core.roll_back();
        assert_eq!(core.seq(), committed_seq + 1);
        assert_eq!(core.engine().state_hash(), after_first);
        assert_ne!(core.engine().state_hash(), hash_committed);
        let again = core.apply_batch([(bid("d", 1, 2), None)]);
        assert_eq!(
            again.batch.records[0].seq,
            committed_seq + 2,
            "the rolled-back batch's seq is used again"
        );
        core.commit(&again);
    }

    #[test]
    fn a_rollback_after_a_snapshot_rebuilds_from_the_snapshot_and_the_tail() {
        let (_time, mut core) = core_with_pool();
        let before = core.apply_batch([(bid("a", 1, 2), None)]);
        core.commit(&before);
        let taken = core.take_snapshot();
        assert_eq!(taken.seq, 2);
        let after = core.apply_batch([(bid("b", 1, 3), None)]);
        core.commit(&after);
        let hash_committed = core.engine().state_hash();

        let order_id = after.batch.records[0]
            .events
            .iter()
            .find_map(|e| match e {
                Event::BidAccepted { order } => Some(order.id),
                _ => None,
            })
            .expect("the bid is accepted");
        let cancel = Command::CancelBid {
            account: "b".into(),
            order_id,
        };
        let failed = core.apply_batch([(cancel, None)]);
        assert_ne!(core.engine().state_hash(), hash_committed);
        drop(failed);
        core.roll_back();
        assert_eq!(core.engine().state_hash(), hash_committed);
        assert_eq!(core.seq(), 3);
    }

    #[test]
    fn a_standby_applying_the_journal_reaches_the_leaders_state_and_refuses_a_gap() {
        let (time, mut leader) = core_with_pool();
        for (n, account) in ["a", "b", "c"].iter().enumerate() {
            time.set(TimeMs(T0 + 1_000 * n as i64));
            let staged = leader.apply_batch([(bid(account, 1, 2 + n as u64), None)]);
            leader.commit(&staged);
        }
        let mut follower = SequencerCore::new(empty(), fake_clock(TimeMs(0)).1);
        // The leader's journal: every command with the seq and time it was stamped with.
        let records: Vec<(u64, TimeMs, Command)> = leader
            .tail
            .iter()
            .enumerate()
            .map(|(i, (at, command))| (leader.base_seq + 1 + i as u64, *at, command.clone()))
            .collect();
        assert_eq!(leader.base_seq, 0, "the whole history is in the tail");

        // A gap (seq 2 missing) is refused and changes nothing.
        let gapped = vec![records[0].clone(), records[2].clone()];
        let Err(refused) = follower.apply_journaled(gapped) else {
            panic!("a gap must be refused");
        };
        assert_eq!((refused.after, refused.found), (1, 3));
        assert_eq!(follower.seq(), 0);

        let staged = follower
            .apply_journaled(records.clone())
            .expect("contiguous");
        follower.commit(&staged);
        assert_eq!(follower.seq(), leader.seq());
        assert_eq!(follower.engine().state_hash(), leader.engine().state_hash());
        // The same events as the leader's: the feed carries the same seqs.
        assert_eq!(staged.batch.records.len(), records.len());
        assert!(staged.batch.records.iter().all(|r| r.signal.is_none()));
    }

    #[test]
    fn a_snapshot_is_due_after_snapshot_every_commands_and_not_before() {
        let (_time, clock) = fake_clock(TimeMs(T0));
        let mut core = SequencerCore::new(empty(), clock);
        let mut left = SNAPSHOT_EVERY_COMMANDS - 1;
        while left > 0 {
            let n = left.min(BATCH_COMMANDS_MAX as u64);
            let staged = core.apply_batch((0..n).map(|_| (Command::Tick, None)));
            core.commit(&staged);
            left -= n;
        }
        assert!(!core.snapshot_due(false), "one command short");
        assert!(
            !core.snapshot_due(true),
            "ticks alone do not make the interval's snapshot due"
        );
        assert!(core.committed_since_snapshot());

        let last = core.apply_batch([(Command::Tick, None)]);
        core.commit(&last);
        assert!(core.snapshot_due(false));

        let taken = core.take_snapshot();
        assert_eq!(taken.seq, SNAPSHOT_EVERY_COMMANDS);
        assert_eq!(taken.state_hash, core.engine().state_hash());
        assert!(!core.snapshot_due(true));
        assert!(!core.committed_since_snapshot());
    }

    #[test]
    fn a_snapshot_is_due_on_the_interval_once_something_other_than_ticks_happened() {
        let (_time, mut core) = core_with_pool();
        assert!(core.snapshot_due(true), "the pool configuration counts");
        assert!(!core.snapshot_due(false));
        core.take_snapshot();
        let ticks = core.apply_batch([(Command::Tick, None)]);
        core.commit(&ticks);
        assert!(!core.snapshot_due(true));
        let replayed = Restored {
            replayed: 3,
            ..empty()
        };
        let (_time, clock) = fake_clock(TimeMs(T0));
        let restarted = SequencerCore::new(replayed, clock);
        assert!(
            restarted.snapshot_due(true),
            "a replay at start makes the next start shorter"
        );
    }
}
