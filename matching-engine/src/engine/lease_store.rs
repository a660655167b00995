//! The running leases: a slab of leases, and a small map from lease id to slab entry.
//!
//! A lease is about 200 bytes. Held in the map itself, every insert landed in a random bucket
//! of a table of every running lease, and every growth of that table moved them all. Here the
//! map's entries are 16 bytes (the table a twelfth of the size, so mostly in cache), and a
//! lease is written once, into the slot the last ended lease freed or at the end of the slab.

use super::Lease;
use crate::types::LeaseId;
use rustc_hash::FxHashMap;
use slab::Slab;
use std::ops::Index;

/// Running leases by id.
#[derive(Clone, Debug, Default)]
pub(crate) struct Leases {
    slab: Slab<Lease>,
    by_id: FxHashMap<LeaseId, u32>,
}

impl Leases {
    /// A running lease.
    pub(crate) fn get(&self, id: &LeaseId) -> Option<&Lease> {
        self.by_id.get(id).map(|&key| &self.slab[key as usize])
    }

    /// A running lease, to change it.
    pub(crate) fn get_mut(&mut self, id: &LeaseId) -> Option<&mut Lease> {
        self.by_id.get(id).map(|&key| &mut self.slab[key as usize])
    }

    /// Adds a lease under a new id.
    pub(crate) fn insert(&mut self, id: LeaseId, lease: Lease) {
        debug_assert!(
            !self.by_id.contains_key(&id),
            "lease {id} is already running"
        );
        let key = u32::try_from(self.slab.insert(lease)).expect("lease keys fit in u32");
        self.by_id.insert(id, key);
    }

    /// Takes a lease out.
    pub(crate) fn remove(&mut self, id: &LeaseId) -> Option<Lease> {
        self.by_id
            .remove(id)
            .map(|key| self.slab.remove(key as usize))
    }

    /// Every running lease, in no particular order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &Lease> {
        self.slab.iter().map(|(_, lease)| lease)
    }

    /// Every running lease with the id it is indexed under, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&LeaseId, &Lease)> {
        self.by_id
            .iter()
            .map(|(id, &key)| (id, &self.slab[key as usize]))
    }

    /// How many leases run.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }
}

impl Index<&LeaseId> for Leases {
    type Output = Lease;

    fn index(&self, id: &LeaseId) -> &Lease {
        self.get(id).expect("a running lease")
    }
}
