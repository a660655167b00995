//! The timer queue: a binary heap for what is due soon, and buckets by the minute for later.
//!
//! A block open until 2036 schedules its `BlockCloses` at release, and every execution
//! schedules its `LeaseEnds` an hour or more ahead. In one heap, each far timer sat among the
//! near ones, so a push sifted through a heap of every block ever released (cache misses at
//! each level) and each pop sifted down through all of them. Here a timer due after the
//! current minute goes into that minute's bucket, an append to a `Vec`; a bucket moves into
//! the heap when the engine's time reaches its minute, before any of its timers can be due.
//! Every timer in a bucket is later than every timer already in the heap, so each of those
//! pushes stops near the bottom of the heap.
//!
//! The order timers fire in is unchanged: the heap orders by `(due time, scheduling
//! sequence)`, and a timer is in the heap before it can be due. What a snapshot lists (every
//! queued timer, sorted) is unchanged too.

use super::timers::Scheduled;
use crate::types::TimeMs;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// Width of a bucket. A bucket's timers move into the heap together: a minute of lease ends
/// is small enough to move at once, and a minute is long enough that a busy market fills few
/// buckets.
const BUCKET_MS: i64 = 60_000;

/// Timers due later than the heap's horizon, all in one minute.
#[derive(Clone, Debug)]
struct Bucket {
    /// The earliest due time in it, for `next_at`.
    earliest: TimeMs,
    timers: Vec<Scheduled>,
}

/// Every queued timer, stale ones included (they fire and do nothing).
#[derive(Clone, Debug)]
pub(crate) struct TimerQueue {
    /// Timers due before `horizon`, earliest first; ties in scheduling order.
    near: BinaryHeap<Reverse<Scheduled>>,
    /// Timers due at or after `horizon`, by minute (`due.div_euclid(BUCKET_MS)`).
    later: BTreeMap<i64, Bucket>,
    /// Start of the first minute whose timers are not in the heap.
    horizon: i64,
}

impl Default for TimerQueue {
    fn default() -> Self {
        TimerQueue {
            near: BinaryHeap::new(),
            later: BTreeMap::new(),
            horizon: i64::MIN,
        }
    }
}

impl TimerQueue {
    /// Queues a timer.
    pub(crate) fn push(&mut self, scheduled: Scheduled) {
        if scheduled.at.0 < self.horizon {
            self.near.push(Reverse(scheduled));
            return;
        }
        let at = scheduled.at;
        let bucket = self
            .later
            .entry(at.0.div_euclid(BUCKET_MS))
            .or_insert_with(|| Bucket {
                earliest: at,
                timers: Vec::new(),
            });
        bucket.earliest = bucket.earliest.min(at);
        bucket.timers.push(scheduled);
    }

    /// Moves into the heap every bucket whose minute has begun by `now`, so that every timer
    /// due by `now` is in the heap.
    pub(crate) fn advance_to(&mut self, now: TimeMs) {
        if now.0 < self.horizon {
            return;
        }
        let minute = now.0.div_euclid(BUCKET_MS);
        while let Some(entry) = self.later.first_entry() {
            if *entry.key() > minute {
                break;
            }
            let bucket = entry.remove();
            self.near.extend(bucket.timers.into_iter().map(Reverse));
        }
        self.horizon = minute.saturating_add(1).saturating_mul(BUCKET_MS);
    }

    /// The earliest timer, if it is due by `at` (the queue must have been advanced to `at`).
    pub(crate) fn pop_due(&mut self, at: TimeMs) -> Option<Scheduled> {
        debug_assert!(
            self.later
                .first_key_value()
                .is_none_or(|(minute, _)| *minute > at.0.div_euclid(BUCKET_MS)),
            "the timer queue was not advanced to {at:?}"
        );
        if self.near.peek().is_some_and(|Reverse(next)| next.at <= at) {
            self.near.pop().map(|Reverse(scheduled)| scheduled)
        } else {
            None
        }
    }

    /// When the earliest timer is due.
    pub(crate) fn next_at(&self) -> Option<TimeMs> {
        let near = self.near.peek().map(|Reverse(scheduled)| scheduled.at);
        let later = self.later.values().next().map(|bucket| bucket.earliest);
        match (near, later) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Every queued timer, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Scheduled> {
        self.near
            .iter()
            .map(|Reverse(scheduled)| scheduled)
            .chain(self.later.values().flat_map(|bucket| bucket.timers.iter()))
    }
}

impl FromIterator<Scheduled> for TimerQueue {
    fn from_iter<I: IntoIterator<Item = Scheduled>>(timers: I) -> Self {
        let mut queue = TimerQueue::default();
        for scheduled in timers {
            queue.push(scheduled);
        }
        queue
    }
}
