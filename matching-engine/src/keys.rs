//! Typed keys of the engine's internal storage: a bid or block slab entry, a pool, an account,
//! a ladder level.
//!
//! They are small `Copy` newtypes so that a bid key cannot index the blocks, nor a level be
//! taken for a slab entry. None of them is ever shown outside the engine: views carry ids and
//! names. Snapshots do carry the account and pool keys (and the `NIL` links), so every key
//! serializes as its bare integer (`#[serde(transparent)]`) and hashes as it (a derived `Hash`
//! of a one-field struct hashes the field alone): stored snapshots and `state_hash` are the
//! same as when these were plain integers.

use crate::engine::{Account, Bid, Block, Pool};
use serde::{Deserialize, Serialize};
use slab::Slab;
use std::ops::{Index, IndexMut};

/// A key into a slab whose entries rest in a ladder, with a "no entry" value for list ends.
pub(crate) trait SlabKey: Copy + Eq + std::fmt::Debug {
    /// "No entry": the end of a level's list, or an entry not linked.
    const NIL: Self;
    /// The key of the slab entry at `index`.
    fn from_index(index: usize) -> Self;
    /// The slab index this key names.
    fn index(self) -> usize;
}

macro_rules! slab_key {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub(crate) struct $name(pub u32);

        impl SlabKey for $name {
            const NIL: Self = $name(u32::MAX);
            fn from_index(index: usize) -> Self {
                let key = u32::try_from(index).expect("slab keys fit in u32");
                debug_assert!(key != u32::MAX, "a slab key collides with NIL");
                $name(key)
            }
            fn index(self) -> usize {
                self.0 as usize
            }
        }
    };
}

slab_key!(
    /// A bid's entry in `Engine::bids`.
    BidKey
);
slab_key!(
    /// A block's entry in `Engine::blocks`.
    BlockKey
);

/// A pool's place in `Engine::pools` (configuration order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct PoolKey(pub u16);

/// An account's place in `Engine::accounts` (order of first accepted command).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct AccountKey(pub u32);

/// A price level of a pool's ladder: `(price - price_min) / tick`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct LevelKey(pub u32);

impl LevelKey {
    /// The slot index of this level.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

// Indexing the engine's stores by their typed key (the orphan rule allows these: the key is
// ours). A key of the wrong kind does not compile.
macro_rules! index_by {
    ($store:ty, $key:ty, $value:ty, |$k:ident| $index:expr) => {
        impl Index<$key> for $store {
            type Output = $value;
            fn index(&self, $k: $key) -> &$value {
                &self[$index]
            }
        }
        impl IndexMut<$key> for $store {
            fn index_mut(&mut self, $k: $key) -> &mut $value {
                &mut self[$index]
            }
        }
    };
}

index_by!(Slab<Bid>, BidKey, Bid, |key| key.0 as usize);
index_by!(Slab<Block>, BlockKey, Block, |key| key.0 as usize);
index_by!(Vec<Pool>, PoolKey, Pool, |key| key.0 as usize);
index_by!(Vec<Account>, AccountKey, Account, |key| key.0 as usize);
