//! The journal's vocabulary: what one committed command is ([`CommandRecord`]), what one
//! committed batch is ([`CommittedBatch`]), the capacity signal id a command may come from
//! ([`EntryId`]), and the text codes of the engine's enums that the store writes ([`codes`]).
//!
//! A leaf: it knows the engine's types and nothing else of the server, so the store, the
//! sequencer, the feed, the bus and the metrics can all speak of a committed batch without
//! knowing each other.

pub mod codes;

use matching_engine::{Command, Event, LeaseId, Name, PoolUsage, TimeMs};
use std::fmt;
use std::str::FromStr;

/// One applied command and what it did.
#[derive(Debug)]
pub struct CommandRecord {
    /// Its sequence number.
    pub seq: u64,
    /// The time it was applied at.
    pub at: TimeMs,
    /// The command.
    pub command: Command,
    /// The capacity signal (stream entry id) it came from, if it came from one.
    pub signal: Option<EntryId>,
    /// Its events, in order (timer events that fired before it come first).
    pub events: Vec<Event>,
}

impl CommandRecord {
    /// The lease this command reported ready, if it is a supplier's `ready`: its one
    /// `LeaseChanged` is the lease becoming ready (lease event `ready`), not a notice.
    pub fn readied_lease(&self) -> Option<LeaseId> {
        match &self.command {
            Command::LeaseReady(ready) => Some(ready.lease_id),
            _ => None,
        }
    }
}

/// A batch of commands, committed to the store in one transaction.
#[derive(Debug)]
pub struct CommittedBatch {
    /// The commands in sequence order.
    pub records: Vec<CommandRecord>,
    /// What each pool offered and leased since the previous batch, by the engine's clock.
    pub usage: Vec<UsageDelta>,
}

/// One pool's usage over one batch (DESIGN section 13), credited to the minute the batch's
/// last command was applied in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageDelta {
    /// The pool.
    pub pool: Name,
    /// The minute (its first millisecond) the usage is credited to.
    pub minute: TimeMs,
    /// GPU-milliseconds offered (unsold in open windows, or leased).
    pub offered_gpu_ms: u64,
    /// GPU-milliseconds leased.
    pub leased_gpu_ms: u64,
}

/// The usage between two readings of [`matching_engine::Engine::usage`], credited to the
/// minute of `at`; pools without any are left out.
pub fn usage_between(before: &[PoolUsage], after: &[PoolUsage], at: TimeMs) -> Vec<UsageDelta> {
    let minute = TimeMs(at.0 - at.0.rem_euclid(60_000));
    after
        .iter()
        .filter_map(|now| {
            let then = before.iter().find(|b| b.pool == now.pool);
            let (offered0, leased0) = then.map_or((0, 0), |b| (b.offered_gpu_ms, b.leased_gpu_ms));
            let delta = UsageDelta {
                pool: now.pool.clone(),
                minute,
                offered_gpu_ms: now.offered_gpu_ms.saturating_sub(offered0),
                leased_gpu_ms: now.leased_gpu_ms.saturating_sub(leased0),
            };
            (delta.offered_gpu_ms > 0 || delta.leased_gpu_ms > 0).then_some(delta)
        })
        .collect()
}

impl CommittedBatch {
    /// The last sequence number in the batch.
    pub fn last_seq(&self) -> u64 {
        self.records.last().map_or(0, |r| r.seq)
    }
}

/// A stream entry id, `<ms>-<seq>`, ordered as Redis orders them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    /// The milliseconds part.
    pub ms: u64,
    /// The sequence part.
    pub seq: u64,
}

impl EntryId {
    /// The id `ms-seq`.
    pub const fn new(ms: u64, seq: u64) -> EntryId {
        EntryId { ms, seq }
    }

    /// Whether both parts fit in a signed 64-bit integer (the database stores them as bigint).
    pub fn fits_i64(self) -> bool {
        i64::try_from(self.ms).is_ok() && i64::try_from(self.seq).is_ok()
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// A text that is not a stream entry id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a stream entry id like 1700000000000-0")]
pub struct BadEntryId(pub String);

impl FromStr for EntryId {
    type Err = BadEntryId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadEntryId(text.to_owned());
        let (ms, seq) = text.split_once('-').unwrap_or((text, "0"));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(bad());
        }
        Ok(EntryId {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_parse_and_order_like_redis() {
        let a: EntryId = "1700000000000-0".parse().unwrap();
        let b: EntryId = "1700000000000-12".parse().unwrap();
        let c: EntryId = "1700000000001-1".parse().unwrap();
        assert!(a < b && b < c);
        assert_eq!(b.to_string(), "1700000000000-12");
        assert_eq!("5".parse::<EntryId>().unwrap(), EntryId::new(5, 0));
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "a-1",
            "1-2-3",
            "1 -2",
            "99999999999999999999-0",
        ] {
            assert!(bad.parse::<EntryId>().is_err(), "{bad:?}");
        }
        assert!(!EntryId::new(u64::MAX, 0).fits_i64());
        assert!(EntryId::new(i64::MAX as u64, 1).fits_i64());
    }
}
