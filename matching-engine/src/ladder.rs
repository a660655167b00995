//! A dense price ladder: one slot per tick of a pool's price band, each slot a FIFO of resting
//! entries kept as an intrusive doubly linked list through the entries' own `Links`.
//!
//! GPU-hour prices lie in a bounded band (a few thousand ticks), so an array indexed by
//! `(price - price_min) / tick` beats a tree: insert, cancel and level lookup are O(1), and a
//! bitset of occupied levels finds the next best level with a few word scans.
//!
//! Invariants: a slot's `gpus` and `orders` are the sums over the entries linked from `head`;
//! a slot's bit is set exactly when `orders > 0`.

use serde::{Deserialize, Serialize};
use slab::Slab;

/// "No entry" in a link or a slot's head/tail.
pub(crate) const NIL: u32 = u32::MAX;

/// The neighbours of an entry within its price level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Links {
    pub prev: u32,
    pub next: u32,
}

impl Default for Links {
    fn default() -> Self {
        Links {
            prev: NIL,
            next: NIL,
        }
    }
}

/// Something that can rest in a ladder.
pub(crate) trait Resting {
    fn links(&self) -> Links;
    fn links_mut(&mut self) -> &mut Links;
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Slot {
    head: u32,
    tail: u32,
    gpus: u64,
    orders: u32,
}

const EMPTY_SLOT: Slot = Slot {
    head: NIL,
    tail: NIL,
    gpus: 0,
    orders: 0,
};

/// One side of one pool's book.
#[derive(Clone, Debug)]
pub(crate) struct Ladder {
    slots: Vec<Slot>,
    occupied: Vec<u64>,
    gpus_total: u64,
    /// The highest and lowest occupied levels (`NIL` when empty), kept so the best price is
    /// O(1) on every command instead of a scan from the far end of the band.
    high: u32,
    low: u32,
}

impl Ladder {
    pub fn new(levels: usize) -> Ladder {
        Ladder {
            slots: vec![EMPTY_SLOT; levels],
            occupied: vec![0; levels.div_ceil(64)],
            gpus_total: 0,
            high: NIL,
            low: NIL,
        }
    }

    /// GPUs resting on this side.
    pub fn gpus_total(&self) -> u64 {
        self.gpus_total
    }

    /// `(gpus, orders)` at a level.
    pub fn level(&self, level: u32) -> (u64, u32) {
        let slot = &self.slots[level as usize];
        (slot.gpus, slot.orders)
    }

    /// The first entry of a level, or `NIL`.
    pub fn head(&self, level: u32) -> u32 {
        self.slots[level as usize].head
    }

    /// Appends an entry at the back of its level's queue.
    pub fn push_back<T: Resting>(&mut self, slab: &mut Slab<T>, key: u32, level: u32, gpus: u64) {
        let slot = &mut self.slots[level as usize];
        let tail = slot.tail;
        *slab[key as usize].links_mut() = Links {
            prev: tail,
            next: NIL,
        };
        if tail == NIL {
            slot.head = key;
        } else {
            slab[tail as usize].links_mut().next = key;
        }
        slot.tail = key;
        slot.gpus += gpus;
        slot.orders += 1;
        self.gpus_total += gpus;
        self.occupied[level as usize / 64] |= 1 << (level % 64);
        if self.high == NIL || level > self.high {
            self.high = level;
        }
        if self.low == NIL || level < self.low {
            self.low = level;
        }
    }

    /// Removes an entry holding `gpus` from its level.
    pub fn unlink<T: Resting>(&mut self, slab: &mut Slab<T>, key: u32, level: u32, gpus: u64) {
        let links = slab[key as usize].links();
        let slot = &mut self.slots[level as usize];
        if links.prev == NIL {
            slot.head = links.next;
        } else {
            slab[links.prev as usize].links_mut().next = links.next;
        }
        if links.next == NIL {
            slot.tail = links.prev;
        } else {
            slab[links.next as usize].links_mut().prev = links.prev;
        }
        *slab[key as usize].links_mut() = Links::default();
        debug_assert!(
            slot.gpus >= gpus && slot.orders > 0,
            "ladder level underflow"
        );
        slot.gpus -= gpus;
        slot.orders -= 1;
        self.gpus_total -= gpus;
        if slot.orders == 0 {
            debug_assert_eq!(slot.gpus, 0, "an empty level holds GPUs");
            self.occupied[level as usize / 64] &= !(1 << (level % 64));
            if level == self.high {
                self.high = level
                    .checked_sub(1)
                    .and_then(|below| self.highest_at_or_below(below))
                    .unwrap_or(NIL);
            }
            if level == self.low {
                self.low = self.lowest_at_or_above(level + 1).unwrap_or(NIL);
            }
        }
    }

    /// Changes the GPUs an entry holds, in place (time priority kept).
    pub fn resize(&mut self, level: u32, from_gpus: u64, to_gpus: u64) {
        let slot = &mut self.slots[level as usize];
        slot.gpus = slot.gpus - from_gpus + to_gpus;
        self.gpus_total = self.gpus_total - from_gpus + to_gpus;
    }

    /// The highest occupied level at or below `level`.
    pub fn highest_at_or_below(&self, level: u32) -> Option<u32> {
        let mut word = level as usize / 64;
        let bit = level % 64;
        let mask = if bit == 63 {
            u64::MAX
        } else {
            (1u64 << (bit + 1)) - 1
        };
        let mut bits = self.occupied.get(word)? & mask;
        loop {
            if bits != 0 {
                return Some(word as u32 * 64 + 63 - bits.leading_zeros());
            }
            if word == 0 {
                return None;
            }
            word -= 1;
            bits = self.occupied[word];
        }
    }

    /// The lowest occupied level at or above `level`.
    pub fn lowest_at_or_above(&self, level: u32) -> Option<u32> {
        let mut word = level as usize / 64;
        let mut bits = self.occupied.get(word)? & (u64::MAX << (level % 64));
        loop {
            if bits != 0 {
                return Some(word as u32 * 64 + bits.trailing_zeros());
            }
            word += 1;
            bits = *self.occupied.get(word)?;
        }
    }

    /// The highest occupied level.
    pub fn highest(&self) -> Option<u32> {
        (self.high != NIL).then_some(self.high)
    }

    /// The lowest occupied level.
    pub fn lowest(&self) -> Option<u32> {
        (self.low != NIL).then_some(self.low)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Entry {
        links: Links,
    }

    impl Resting for Entry {
        fn links(&self) -> Links {
            self.links
        }
        fn links_mut(&mut self) -> &mut Links {
            &mut self.links
        }
    }

    #[test]
    fn occupied_levels_are_found_across_words() {
        let mut slab = Slab::new();
        let mut ladder = Ladder::new(300);
        let a = slab.insert(Entry::default()) as u32;
        let b = slab.insert(Entry::default()) as u32;
        ladder.push_back(&mut slab, a, 3, 5);
        ladder.push_back(&mut slab, b, 200, 7);
        assert_eq!(ladder.highest(), Some(200));
        assert_eq!(ladder.lowest(), Some(3));
        assert_eq!(ladder.highest_at_or_below(199), Some(3));
        assert_eq!(ladder.lowest_at_or_above(4), Some(200));
        assert_eq!(ladder.lowest_at_or_above(201), None);
        ladder.unlink(&mut slab, a, 3, 5);
        assert_eq!(ladder.lowest(), Some(200));
        assert_eq!(ladder.gpus_total(), 7);
    }

    #[test]
    fn a_level_keeps_arrival_order_through_unlinks() {
        let mut slab = Slab::new();
        let mut ladder = Ladder::new(10);
        let keys: Vec<u32> = (0..4)
            .map(|_| slab.insert(Entry::default()) as u32)
            .collect();
        for key in &keys {
            ladder.push_back(&mut slab, *key, 5, 1);
        }
        ladder.unlink(&mut slab, keys[1], 5, 1);
        let mut seen = vec![];
        let mut cursor = ladder.head(5);
        while cursor != NIL {
            seen.push(cursor);
            cursor = slab[cursor as usize].links.next;
        }
        assert_eq!(seen, vec![keys[0], keys[2], keys[3]]);
        assert_eq!(ladder.level(5), (3, 3));
    }
}
