//! The Redis capacity-signal parser (`offpeak::bus::signal`) on arbitrary field lists.
//!
//! An input is the entry's fields, one per line as `name=value` (bytes, not necessarily
//! UTF-8; a line without `=` is a name with an empty value), so seeds are readable and
//! libFuzzer's mutations keep the shape. `parse` and `summary` must never panic; a parsed
//! command must carry names the REST API would accept, and applying it to an engine (as the
//! consumer does) must keep the engine's invariants.

#![no_main]

use libfuzzer_sys::fuzz_target;
use matching_engine::{Command, Engine, Event, PoolConfig, TimeMs};
use offpeak::bus::signal::{is_poison, parse, summary};
use offpeak::bus::Fields;
use offpeak::limits::SIGNAL_BYTES_MAX;
use offpeak::validate;

/// 2030-01-01T00:00:00Z: the seeds' windows are around it.
const NOW_MS: i64 = 1_893_456_000_000;

fn fields(data: &[u8]) -> Fields {
    data.split(|&b| b == b'\n')
        .map(|line| match line.iter().position(|&b| b == b'=') {
            Some(at) => (line[..at].to_vec(), line[at + 1..].to_vec()),
            None => (line.to_vec(), Vec::new()),
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    // The consumer reads entries of any size; the parser bounds them itself.
    if data.len() > 4 * SIGNAL_BYTES_MAX {
        return;
    }
    let fields = fields(data);
    let _ = summary(&fields);
    let command = match parse(&fields) {
        Ok(command) => command,
        Err(poison) => {
            assert!(!poison.reason.is_empty());
            return;
        }
    };
    let (supplier, block_id) = match &command {
        Command::ReleaseCapacity(r) => (&r.supplier, &r.block_id),
        Command::UpdateCapacity(u) => (&u.supplier, &u.block_id),
        Command::ReclaimCapacity(r) => (&r.supplier, &r.block_id),
        Command::ForecastReclaim {
            supplier, block_id, ..
        } => (supplier, block_id),
        Command::LeaseReady(ready) => (&ready.supplier, &ready.block_id),
        Command::LeaseFailed {
            supplier, block_id, ..
        } => (supplier, block_id),
        other => panic!("a signal parsed into {other:?}"),
    };
    assert!(validate::supplier(supplier).is_ok(), "{command:?}");
    // A provisioner's answer may leave the block out: the lease id names the lease.
    let block_optional = matches!(
        command,
        Command::LeaseReady(_) | Command::LeaseFailed { .. }
    );
    assert!(
        (block_optional && block_id.is_empty()) || validate::block_id(block_id).is_ok(),
        "{command:?}"
    );
    // As the consumer does: the command goes to the engine, and a refusal is judged.
    let mut engine = Engine::new();
    let mut events = Vec::new();
    let pool = PoolConfig::with_defaults("h100-sxm", "us-east");
    engine.apply(TimeMs(NOW_MS), &Command::ConfigurePool(pool), &mut events);
    events.clear();
    engine.apply(TimeMs(NOW_MS), &command, &mut events);
    engine.assert_invariants();
    for event in &events {
        if let Event::Rejected { reason } = event {
            let _ = is_poison(*reason);
        }
    }
});
