//! Which capacity signals were applied: the sequencer's memory of the newest ones.
//!
//! Every applied signal's entry id is in the database (`applied_signals`, written in the same
//! transaction as its command); this keeps the newest [`APPLIED_SIGNALS_CACHED_MAX`] of them
//! in memory so the sequencer can tell a redelivery without a query. Redeliveries come from the
//! pending list (entries read but not acknowledged: seconds to minutes of signals), so they are
//! almost always recent.
//!
//! Invariant: every applied id at or above the window's low end is in `ids`. Loading takes the
//! newest ids from the database, and eviction only ever drops the smallest, so an id at or
//! above the low end that is not in the set was never applied. An id below the low end may or
//! may not have been: [`Seen::Unknown`], and the sequencer asks the database.

use crate::journal::EntryId;
use crate::limits::APPLIED_SIGNALS_CACHED_MAX;
use std::collections::BTreeSet;

/// What the memory says about a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// It was applied.
    Applied,
    /// It was not.
    New,
    /// Older than the window: only the database knows.
    Unknown,
}

/// The newest applied signal ids.
#[derive(Clone, Debug, Default)]
pub struct AppliedSignals {
    ids: BTreeSet<EntryId>,
    /// Ids below this may have been applied and evicted; `None`: nothing was ever evicted or
    /// left out, the set holds every applied id.
    low: Option<EntryId>,
    capacity: usize,
}

impl AppliedSignals {
    /// From the newest applied ids in the database (`complete`: there are no others).
    pub fn from_newest(newest: Vec<EntryId>, complete: bool) -> AppliedSignals {
        AppliedSignals::with_capacity(newest, complete, APPLIED_SIGNALS_CACHED_MAX)
    }

    /// Like [`AppliedSignals::from_newest`], holding at most `capacity` ids.
    pub fn with_capacity(newest: Vec<EntryId>, complete: bool, capacity: usize) -> AppliedSignals {
        let mut set = AppliedSignals {
            ids: newest.into_iter().collect(),
            low: None,
            capacity: capacity.max(1),
        };
        if !complete {
            set.low = Some(set.ids.first().copied().unwrap_or_default());
        }
        set.evict();
        set
    }

    fn evict(&mut self) {
        while self.ids.len() > self.capacity {
            self.ids.pop_first();
            self.low = self.ids.first().copied();
        }
    }

    /// Whether `id` was applied, as far as memory knows.
    pub fn seen(&self, id: EntryId) -> Seen {
        if self.ids.contains(&id) {
            Seen::Applied
        } else if self.low.is_some_and(|low| id < low) {
            Seen::Unknown
        } else {
            Seen::New
        }
    }

    /// Records a committed signal.
    pub fn insert(&mut self, id: EntryId) {
        // An old id below the window stays out: inserting it would lower the window's low end
        // past ids that were evicted.
        if self.low.is_some_and(|low| id < low) {
            return;
        }
        self.ids.insert(id);
        self.evict();
    }

    /// Ids held in memory.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64) -> EntryId {
        EntryId::new(ms, 0)
    }

    #[test]
    fn a_complete_set_knows_every_id() {
        let set = AppliedSignals::with_capacity(vec![id(5), id(9)], true, 10);
        assert_eq!(set.seen(id(5)), Seen::Applied);
        assert_eq!(set.seen(id(1)), Seen::New);
        assert_eq!(set.seen(id(7)), Seen::New);
    }

    #[test]
    fn eviction_keeps_the_newest_and_leaves_older_ids_to_the_database() {
        let mut set = AppliedSignals::with_capacity(vec![], true, 3);
        for ms in [10, 20, 30, 40] {
            set.insert(id(ms));
        }
        assert_eq!(set.len(), 3);
        assert_eq!(set.seen(id(10)), Seen::Unknown, "evicted: ask the database");
        assert_eq!(set.seen(id(15)), Seen::Unknown);
        assert_eq!(set.seen(id(20)), Seen::Applied);
        assert_eq!(
            set.seen(id(25)),
            Seen::New,
            "above the low end and absent: new"
        );
        // An old id applied late is not cached, and does not widen the window.
        set.insert(id(5));
        assert_eq!(set.seen(id(5)), Seen::Unknown);
        assert_eq!(set.seen(id(15)), Seen::Unknown);
    }

    #[test]
    fn a_partial_load_starts_with_its_oldest_as_the_low_end() {
        let set = AppliedSignals::with_capacity(vec![id(100), id(90)], false, 10);
        assert_eq!(set.seen(id(80)), Seen::Unknown);
        assert_eq!(set.seen(id(95)), Seen::New);
        let empty = AppliedSignals::with_capacity(vec![], false, 10);
        assert_eq!(empty.seen(id(0)), Seen::New);
        assert_eq!(empty.seen(id(1)), Seen::New);
    }
}
