//! The index of known blocks by `(supplier, block id)`: one hash table of slab keys.
//!
//! The names live in the blocks themselves: an entry is a 4-byte slab key, found by a hash of
//! the supplier's key and the block id, and confirmed by comparing with the block it names.
//! Looking a block up hashes the id once, allocates nothing, and probes one small table (it
//! was a map per supplier of `Arc<str>` keys: two probes, and a table four times the size).

use super::Block;
use crate::keys::{AccountKey, BlockKey};
use hashbrown::HashTable;
use rustc_hash::FxHasher;
use slab::Slab;
use std::hash::{Hash, Hasher};

/// Every block in the slab, by supplier and block id.
#[derive(Clone, Debug, Default)]
pub(crate) struct BlockIndex {
    table: HashTable<BlockKey>,
}

fn hash_of(supplier: AccountKey, block_id: &str) -> u64 {
    let mut hasher = FxHasher::default();
    supplier.hash(&mut hasher);
    block_id.hash(&mut hasher);
    hasher.finish()
}

fn hash_of_block(block: &Block) -> u64 {
    hash_of(block.supplier, &block.block_id)
}

impl BlockIndex {
    /// The supplier's block with this id.
    pub(crate) fn get(
        &self,
        blocks: &Slab<Block>,
        supplier: AccountKey,
        block_id: &str,
    ) -> Option<BlockKey> {
        self.table
            .find(hash_of(supplier, block_id), |&key| {
                let block = &blocks[key];
                block.supplier == supplier && *block.block_id == *block_id
            })
            .copied()
    }

    /// Indexes a block already in the slab, under an id its supplier does not use yet.
    pub(crate) fn insert(&mut self, blocks: &Slab<Block>, key: BlockKey) {
        let hash = hash_of_block(&blocks[key]);
        self.table
            .insert_unique(hash, key, |&other| hash_of_block(&blocks[other]));
    }

    /// Forgets a block (already out of the slab) that was indexed under `key`.
    pub(crate) fn remove(&mut self, block: &Block, key: BlockKey) {
        if let Ok(entry) = self
            .table
            .find_entry(hash_of_block(block), |&other| other == key)
        {
            entry.remove();
        }
    }

    /// How many blocks are indexed.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Every indexed slab key, in no particular order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = BlockKey> + '_ {
        self.table.iter().copied()
    }
}
