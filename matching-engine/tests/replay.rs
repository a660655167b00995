//! Replay: the engine rebuilt from a snapshot (through its JSON form, as the server stores it)
//! behaves exactly like the engine that never stopped, and a journal replayed from the start
//! gives the same events and the same `state_hash`.
//!
//! The journals are the property test's seeded random commands (`model.rs`), so they carry
//! everything a real journal does: resting bids of every kind, pending and closed blocks,
//! leases under notice, armed auctions, timers due at the very moment of the cut.
//! `OFFPEAK_PROPTEST_SEED` moves the seeds here too.

mod model;

use matching_engine::{Command, Engine, Event, Snapshot, TimeMs};
use model::random::Commands;
use model::Model;

const DEFAULT_SEED: u64 = 0x5EED_4E91;
const SEEDS: u64 = 12;
const STEPS: usize = 4_000;
/// A snapshot is taken and restored every this many commands...
const CUT_EVERY: usize = 97;
/// ...and the restored engine must then match the original for this many commands.
const REPLAY_WINDOW: usize = 400;

fn base_seed() -> u64 {
    std::env::var("OFFPEAK_PROPTEST_SEED")
        .ok()
        .map(|text| {
            let text = text.trim().replace('_', "");
            match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            }
            .unwrap_or_else(|_| panic!("OFFPEAK_PROPTEST_SEED={text} is not a number"))
        })
        .unwrap_or(DEFAULT_SEED)
}

/// A seeded journal of `steps` commands with the times the sequencer stamped on them.
fn journal(seed: u64, steps: usize) -> Vec<(TimeMs, Command)> {
    let mut model = Model::new();
    let mut commands = Commands::new(seed);
    (0..steps)
        .map(|_| {
            let (at, command) = commands.next(&model);
            model.apply(at, &command);
            (at, command)
        })
        .collect()
}

/// What the server does with a snapshot: JSON text in a table, read back later.
fn through_json(snapshot: &Snapshot) -> Snapshot {
    let text = serde_json::to_string(snapshot).expect("a snapshot serializes");
    let back: Snapshot = serde_json::from_str(&text).expect("a snapshot deserializes");
    assert_eq!(&back, snapshot, "the JSON round trip lost something");
    back
}

fn apply(engine: &mut Engine, (at, command): &(TimeMs, Command)) -> Vec<Event> {
    let mut events = Vec::new();
    engine.apply(*at, command, &mut events);
    engine.assert_invariants();
    events
}

#[test]
fn restored_snapshots_replay_the_rest_with_the_same_events_and_state_hash() {
    let base = base_seed();
    for seed in base..base + SEEDS {
        let journal = journal(seed, STEPS);
        let midway = STEPS / 2 + (seed % 97) as usize;
        let mut original = Engine::new();
        // Engines restored so far: the step they were restored at, and the last step they
        // are compared for (the one restored midway goes on to the end).
        let mut restored: Vec<(usize, usize, Engine)> = Vec::new();
        for (step, entry) in journal.iter().enumerate() {
            if step % CUT_EVERY == 3 || step == midway || step == STEPS - 1 {
                let snapshot = through_json(&original.snapshot());
                let engine = Engine::restore(snapshot.clone());
                assert_eq!(
                    engine.snapshot(),
                    snapshot,
                    "seed={seed} step={step}: restore does not give back the snapshot"
                );
                assert_eq!(
                    engine.state_hash(),
                    original.state_hash(),
                    "seed={seed} step={step}: a restored engine has another state hash"
                );
                let until = if step == midway {
                    STEPS
                } else {
                    step + REPLAY_WINDOW
                };
                restored.push((step, until, engine));
            }
            let expected = apply(&mut original, entry);
            let hash = original.state_hash();
            restored.retain(|(_, until, _)| step < *until);
            for (cut, _, engine) in &mut restored {
                let events = apply(engine, entry);
                assert_eq!(
                    events, expected,
                    "seed={seed} step={step}: the engine restored at step {cut} emitted other \
                     events for {entry:?}"
                );
                assert_eq!(
                    engine.state_hash(),
                    hash,
                    "seed={seed} step={step}: the engine restored at step {cut} has another \
                     state hash after {entry:?}"
                );
            }
        }
        assert!(
            restored.iter().any(|(cut, _, _)| *cut == midway),
            "seed={seed}: the engine restored midway did not reach the end"
        );
    }
}

#[test]
fn replaying_a_journal_from_the_start_gives_the_same_events_and_state_hash() {
    let base = base_seed();
    for seed in base..base + SEEDS {
        let journal = journal(seed, STEPS);
        let mut first = Engine::new();
        let first_events: Vec<Vec<Event>> = journal.iter().map(|e| apply(&mut first, e)).collect();
        let mut replayed = Engine::new();
        for (step, entry) in journal.iter().enumerate() {
            assert_eq!(
                apply(&mut replayed, entry),
                first_events[step],
                "seed={seed} step={step}: the replay emitted other events for {entry:?}"
            );
        }
        assert_eq!(replayed.state_hash(), first.state_hash(), "seed={seed}");
        assert_eq!(replayed.snapshot(), first.snapshot(), "seed={seed}");
    }
}

/// Equal hashes above would prove nothing if the hash ignored the state.
#[test]
fn state_hash_follows_the_state() {
    let journal = journal(base_seed(), STEPS);
    let mut engine = Engine::new();
    let mut changes = 0;
    let mut hash = engine.state_hash();
    for entry in &journal {
        let events = apply(&mut engine, entry);
        let next = engine.state_hash();
        if next != hash {
            changes += 1;
        }
        // A command that changed nothing observable may still move time, but one that traded
        // or rested something must move the hash.
        let changed_book = events.iter().any(|e| {
            matches!(
                e,
                Event::Traded { .. } | Event::BookLevelChanged { .. } | Event::BlockChanged { .. }
            )
        });
        assert!(
            !changed_book || next != hash,
            "the state hash did not move after {entry:?}: {events:?}"
        );
        hash = next;
    }
    assert!(
        changes > STEPS / 2,
        "the state hash moved only {changes} times in {STEPS} commands"
    );
    let other = journal_end_hash(base_seed() + 1);
    assert_ne!(
        hash, other,
        "two different journals ended with the same hash"
    );
}

fn journal_end_hash(seed: u64) -> u64 {
    let mut engine = Engine::new();
    for entry in journal(seed, STEPS) {
        apply(&mut engine, &entry);
    }
    engine.state_hash()
}
