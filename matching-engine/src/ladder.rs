//! A dense price ladder: one slot per tick of a pool's price band, each slot a FIFO of resting
//! entries kept as an intrusive doubly linked list through the entries' own `Links`.
//!
//! GPU-hour prices lie in a bounded band (a few thousand ticks), so an array indexed by
//! `(price - price_min) / tick` beats a tree: insert, cancel and level lookup are O(1), and a
//! bitset of occupied levels finds the next best level with a few word scans.
//!
//! Invariants: a slot's `gpus` and `orders` are the sums over the entries linked from `head`;
//! a slot's bit is set exactly when `orders > 0`.

use crate::keys::{LevelKey, SlabKey};
use crate::types::Side;
use serde::{Deserialize, Serialize};
use slab::Slab;

/// The neighbours of an entry within its price level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Links<K> {
    pub prev: K,
    pub next: K,
}

impl<K: SlabKey> Default for Links<K> {
    fn default() -> Self {
        Links {
            prev: K::NIL,
            next: K::NIL,
        }
    }
}

/// Something that can rest in a ladder.
pub(crate) trait Resting<K> {
    fn links(&self) -> Links<K>;
    fn links_mut(&mut self) -> &mut Links<K>;
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Slot<K> {
    head: K,
    tail: K,
    gpus: u64,
    orders: u32,
}

impl<K: SlabKey> Slot<K> {
    const EMPTY: Slot<K> = Slot {
        head: K::NIL,
        tail: K::NIL,
        gpus: 0,
        orders: 0,
    };
}

/// One side of one pool's book.
#[derive(Clone, Debug)]
pub(crate) struct Ladder<K> {
    /// Which way is best: down from the highest level for bids, up from the lowest for asks.
    side: Side,
    slots: Vec<Slot<K>>,
    occupied: Vec<u64>,
    gpus_total: u64,
    /// The highest and lowest occupied levels (`NIL` when empty), kept so the best price is
    /// O(1) on every command instead of a scan from the far end of the band.
    high: Option<LevelKey>,
    low: Option<LevelKey>,
}

impl<K: SlabKey> Ladder<K> {
    pub fn new(side: Side, levels: usize) -> Ladder<K> {
        Ladder {
            side,
            slots: vec![Slot::EMPTY; levels],
            occupied: vec![0; levels.div_ceil(64)],
            gpus_total: 0,
            high: None,
            low: None,
        }
    }

    /// GPUs resting on this side.
    pub fn gpus_total(&self) -> u64 {
        self.gpus_total
    }

    /// `(gpus, orders)` at a level.
    pub fn level(&self, level: LevelKey) -> (u64, u32) {
        let slot = &self.slots[level.index()];
        (slot.gpus, slot.orders)
    }

    /// The first entry of a level, or `NIL`.
    pub fn head(&self, level: LevelKey) -> K {
        self.slots[level.index()].head
    }

    /// The entries of a level, in time order, with their keys.
    pub fn entries<'a, T: Resting<K>>(
        &self,
        level: LevelKey,
        slab: &'a Slab<T>,
    ) -> impl Iterator<Item = (K, &'a T)> + 'a
    where
        K: 'a,
    {
        let mut cursor = self.head(level);
        std::iter::from_fn(move || {
            if cursor == K::NIL {
                return None;
            }
            let key = cursor;
            let entry = &slab[key.index()];
            cursor = entry.links().next;
            Some((key, entry))
        })
    }

    /// Appends an entry at the back of its level's queue.
    pub fn push_back<T: Resting<K>>(
        &mut self,
        slab: &mut Slab<T>,
        key: K,
        level: LevelKey,
        gpus: u64,
    ) {
        let slot = &mut self.slots[level.index()];
        let tail = slot.tail;
        *slab[key.index()].links_mut() = Links {
            prev: tail,
            next: K::NIL,
        };
        if tail == K::NIL {
            slot.head = key;
        } else {
            slab[tail.index()].links_mut().next = key;
        }
        slot.tail = key;
        slot.gpus += gpus;
        slot.orders += 1;
        self.gpus_total += gpus;
        self.occupied[level.index() / 64] |= 1 << (level.0 % 64);
        if self.high.is_none_or(|high| level > high) {
            self.high = Some(level);
        }
        if self.low.is_none_or(|low| level < low) {
            self.low = Some(level);
        }
    }

    /// Removes an entry holding `gpus` from its level.
    pub fn unlink<T: Resting<K>>(
        &mut self,
        slab: &mut Slab<T>,
        key: K,
        level: LevelKey,
        gpus: u64,
    ) {
        let links = slab[key.index()].links();
        let slot = &mut self.slots[level.index()];
        if links.prev == K::NIL {
            slot.head = links.next;
        } else {
            slab[links.prev.index()].links_mut().next = links.next;
        }
        if links.next == K::NIL {
            slot.tail = links.prev;
        } else {
            slab[links.next.index()].links_mut().prev = links.prev;
        }
        *slab[key.index()].links_mut() = Links::default();
        debug_assert!(
            slot.gpus >= gpus && slot.orders > 0,
            "ladder level underflow"
        );
        slot.gpus -= gpus;
        slot.orders -= 1;
        self.gpus_total -= gpus;
        if slot.orders == 0 {
            debug_assert_eq!(slot.gpus, 0, "an empty level holds GPUs");
            self.occupied[level.index() / 64] &= !(1 << (level.0 % 64));
            if Some(level) == self.high {
                self.high = level
                    .0
                    .checked_sub(1)
                    .and_then(|below| self.highest_at_or_below(LevelKey(below)));
            }
            if Some(level) == self.low {
                self.low = self.lowest_at_or_above(LevelKey(level.0 + 1));
            }
        }
    }

    /// Changes the GPUs an entry holds, in place (time priority kept).
    pub fn resize(&mut self, level: LevelKey, from_gpus: u64, to_gpus: u64) {
        let slot = &mut self.slots[level.index()];
        slot.gpus = slot.gpus - from_gpus + to_gpus;
        self.gpus_total = self.gpus_total - from_gpus + to_gpus;
    }

    /// The best occupied level: the highest bid, the lowest ask.
    pub fn best(&self) -> Option<LevelKey> {
        match self.side {
            Side::Bid => self.high,
            Side::Ask => self.low,
        }
    }

    /// The next occupied level after `level`, away from the best: the next lower bid level,
    /// the next higher ask level. `level` itself need not be occupied (any more), so a walk
    /// that changes the book as it goes can call this with the level it just left.
    pub fn next_worse(&self, level: LevelKey) -> Option<LevelKey> {
        match self.side {
            Side::Bid => level
                .0
                .checked_sub(1)
                .and_then(|below| self.highest_at_or_below(LevelKey(below))),
            Side::Ask => self.lowest_at_or_above(LevelKey(level.0 + 1)),
        }
    }

    /// Whether `level` is as good as `limit` or better for this side: at or above it for
    /// bids, at or below it for asks. A bid at `limit` reaches down to asks at or below it.
    pub fn reaches(&self, level: LevelKey, limit: LevelKey) -> bool {
        match self.side {
            Side::Bid => level >= limit,
            Side::Ask => level <= limit,
        }
    }

    /// The occupied levels, best first: the one walk of a side in price priority. A walk that
    /// changes the book as it goes cannot hold this borrow; it steps with [`Ladder::best`] and
    /// [`Ladder::next_worse`] itself.
    pub fn levels_best_first(&self) -> impl Iterator<Item = LevelKey> + '_ {
        std::iter::successors(self.best(), |&level| self.next_worse(level))
    }

    /// The occupied levels from the best through `limit` (inclusive), best first.
    pub fn levels_through(&self, limit: LevelKey) -> impl Iterator<Item = LevelKey> + '_ {
        self.levels_best_first()
            .take_while(move |&level| self.reaches(level, limit))
    }

    /// Panics unless the ladder's own bookkeeping is consistent: each level's bit is set
    /// exactly when it holds entries; its list runs from `head` to `tail` with matching back
    /// links and `orders` entries; the best levels kept are the occupied extremes;
    /// `gpus_total` is the sum of the levels' GPUs. `what` names the ladder in the message.
    /// O(levels + entries): for tests and [`crate::Engine::assert_invariants`].
    pub fn assert_consistent<T: Resting<K>>(&self, slab: &Slab<T>, what: &str) {
        let mut gpus_total = 0u64;
        let (mut high, mut low) = (None, None);
        for (index, slot) in self.slots.iter().enumerate() {
            let level = LevelKey(index as u32);
            let bit = self.occupied[index / 64] & (1 << (index % 64)) != 0;
            assert_eq!(
                bit,
                slot.orders > 0,
                "{what}: level {index} has {} orders but its occupied bit is {bit}",
                slot.orders
            );
            if slot.orders > 0 {
                high = Some(level);
                low = low.or(Some(level));
            }
            let (mut count, mut previous, mut cursor) = (0u32, K::NIL, slot.head);
            while cursor != K::NIL {
                assert!(
                    slab.contains(cursor.index()),
                    "{what}: level {index} links to {cursor:?}, which is not in the slab"
                );
                let links = slab[cursor.index()].links();
                assert_eq!(
                    links.prev, previous,
                    "{what}: level {index}: {cursor:?} links back to {:?}, not {previous:?}",
                    links.prev
                );
                count += 1;
                assert!(
                    count <= slot.orders,
                    "{what}: level {index} lists more entries than its {} orders",
                    slot.orders
                );
                previous = cursor;
                cursor = links.next;
            }
            assert_eq!(
                (count, previous),
                (slot.orders, slot.tail),
                "{what}: level {index} lists {count} entries ending at {previous:?}, \
                 its totals say {} ending at {:?}",
                slot.orders,
                slot.tail
            );
            if slot.orders == 0 {
                assert_eq!(slot.gpus, 0, "{what}: empty level {index} holds GPUs");
            }
            gpus_total += slot.gpus;
        }
        assert_eq!(
            (self.high, self.low),
            (high, low),
            "{what}: kept highest/lowest levels are not the occupied extremes"
        );
        assert_eq!(
            self.gpus_total, gpus_total,
            "{what}: gpus_total is not the sum of its levels"
        );
    }

    /// The highest occupied level at or below `level`.
    fn highest_at_or_below(&self, level: LevelKey) -> Option<LevelKey> {
        let mut word = level.index() / 64;
        let bit = level.0 % 64;
        let mask = if bit == 63 {
            u64::MAX
        } else {
            (1u64 << (bit + 1)) - 1
        };
        let mut bits = self.occupied.get(word)? & mask;
        loop {
            if bits != 0 {
                return Some(LevelKey(word as u32 * 64 + 63 - bits.leading_zeros()));
            }
            if word == 0 {
                return None;
            }
            word -= 1;
            bits = self.occupied[word];
        }
    }

    /// The lowest occupied level at or above `level`.
    fn lowest_at_or_above(&self, level: LevelKey) -> Option<LevelKey> {
        let mut word = level.index() / 64;
        let mut bits = self.occupied.get(word)? & (u64::MAX << (level.0 % 64));
        loop {
            if bits != 0 {
                return Some(LevelKey(word as u32 * 64 + bits.trailing_zeros()));
            }
            word += 1;
            bits = *self.occupied.get(word)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::BidKey;

    #[derive(Default)]
    struct Entry {
        links: Links<BidKey>,
    }

    impl Resting<BidKey> for Entry {
        fn links(&self) -> Links<BidKey> {
            self.links
        }
        fn links_mut(&mut self) -> &mut Links<BidKey> {
            &mut self.links
        }
    }

    fn insert(slab: &mut Slab<Entry>) -> BidKey {
        BidKey::from_index(slab.insert(Entry::default()))
    }

    #[test]
    fn occupied_levels_are_found_across_words() {
        let mut slab = Slab::new();
        let mut ladder = Ladder::new(Side::Bid, 300);
        let a = insert(&mut slab);
        let b = insert(&mut slab);
        ladder.push_back(&mut slab, a, LevelKey(3), 5);
        ladder.push_back(&mut slab, b, LevelKey(200), 7);
        assert_eq!(ladder.best(), Some(LevelKey(200)));
        assert_eq!(ladder.lowest_at_or_above(LevelKey(0)), Some(LevelKey(3)));
        assert_eq!(ladder.highest_at_or_below(LevelKey(199)), Some(LevelKey(3)));
        assert_eq!(ladder.lowest_at_or_above(LevelKey(4)), Some(LevelKey(200)));
        assert_eq!(ladder.lowest_at_or_above(LevelKey(201)), None);
        ladder.unlink(&mut slab, b, LevelKey(200), 7);
        assert_eq!(ladder.best(), Some(LevelKey(3)));
        assert_eq!(ladder.gpus_total(), 5);
    }

    #[test]
    fn best_first_walks_bids_down_and_asks_up_through_a_limit() {
        let mut slab = Slab::new();
        let mut bids = Ladder::new(Side::Bid, 300);
        let mut asks = Ladder::new(Side::Ask, 300);
        for level in [3, 70, 200, 64] {
            let key = insert(&mut slab);
            bids.push_back(&mut slab, key, LevelKey(level), 1);
            let key = insert(&mut slab);
            asks.push_back(&mut slab, key, LevelKey(level), 1);
        }
        let levels = |walk: &mut dyn Iterator<Item = LevelKey>| -> Vec<u32> {
            walk.map(|level| level.0).collect()
        };
        assert_eq!(levels(&mut bids.levels_best_first()), vec![200, 70, 64, 3]);
        assert_eq!(levels(&mut asks.levels_best_first()), vec![3, 64, 70, 200]);
        assert_eq!(
            levels(&mut bids.levels_through(LevelKey(64))),
            vec![200, 70, 64]
        );
        assert_eq!(levels(&mut asks.levels_through(LevelKey(64))), vec![3, 64]);
        assert_eq!(bids.next_worse(LevelKey(0)), None);
        assert_eq!(asks.next_worse(LevelKey(299)), None);
    }

    #[test]
    fn a_level_keeps_arrival_order_through_unlinks() {
        let mut slab = Slab::new();
        let mut ladder = Ladder::new(Side::Ask, 10);
        let keys: Vec<BidKey> = (0..4).map(|_| insert(&mut slab)).collect();
        for key in &keys {
            ladder.push_back(&mut slab, *key, LevelKey(5), 1);
        }
        ladder.unlink(&mut slab, keys[1], LevelKey(5), 1);
        let seen: Vec<BidKey> = ladder
            .entries(LevelKey(5), &slab)
            .map(|(key, _)| key)
            .collect();
        assert_eq!(seen, vec![keys[0], keys[2], keys[3]]);
        assert_eq!(ladder.level(LevelKey(5)), (3, 3));
    }
}
