//! A set of live orders that supports uniform random picks, for generators that must name an
//! order still resting.

use rand::Rng;
use std::collections::HashMap;

/// Keys with a value each; insert, update, remove and random pick in O(1).
#[derive(Default)]
pub struct LiveSet<V> {
    keys: Vec<u64>,
    slots: HashMap<u64, (usize, V)>,
}

impl<V> LiveSet<V> {
    /// How many are live.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether none is live.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Inserts or replaces.
    pub fn upsert(&mut self, key: u64, value: V) {
        match self.slots.get_mut(&key) {
            Some(slot) => slot.1 = value,
            None => {
                self.slots.insert(key, (self.keys.len(), value));
                self.keys.push(key);
            }
        }
    }

    /// The value of a live key.
    pub fn get_mut(&mut self, key: u64) -> Option<&mut V> {
        self.slots.get_mut(&key).map(|slot| &mut slot.1)
    }

    /// Removes a key if live.
    pub fn remove(&mut self, key: u64) -> Option<V> {
        let (index, value) = self.slots.remove(&key)?;
        self.keys.swap_remove(index);
        if let Some(moved) = self.keys.get(index) {
            self.slots.get_mut(moved).expect("live key").0 = index;
        }
        Some(value)
    }

    /// A uniformly random live key and its value.
    pub fn pick(&self, rng: &mut impl Rng) -> Option<(u64, &V)> {
        if self.keys.is_empty() {
            return None;
        }
        let key = self.keys[rng.gen_range(0..self.keys.len())];
        Some((key, &self.slots[&key].1))
    }
}
