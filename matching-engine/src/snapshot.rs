//! Snapshots: the engine's whole state as a canonical, serializable value.
//!
//! Canonical means independent of slab keys and hash-map order: entries are listed by id, and
//! ladder links are dropped (restore rebuilds each level by replaying time priority). So two
//! engines in the same logical state have equal snapshots and equal [`Engine::state_hash`].

use crate::engine::{Account, Bid, Block, Engine, Lease, Pool, Scheduled};
use crate::keys::{AccountKey, BidKey, BlockKey, PoolKey, SlabKey};
use crate::ladder::{Ladder, Links};
use crate::types::{AccountLimits, Name, OrderId, PoolConfig, PriceMicros, Side, SshKeys, TimeMs};
use serde::{Deserialize, Serialize};
use std::hash::{Hash, Hasher};

/// The engine's state, for `snapshot()` / `restore()` and the server's snapshot table.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Snapshot {
    now: TimeMs,
    next_id: u64,
    next_priority: u64,
    next_timer: u64,
    default_limits: AccountLimits,
    pools: Vec<PoolState>,
    accounts: Vec<Account>,
    bids: Vec<Bid>,
    blocks: Vec<Block>,
    leases: Vec<Lease>,
    timers: Vec<Scheduled>,
    client_order_ids: Vec<(AccountKey, Name, OrderId, TimeMs)>,
    client_order_id_of: Vec<(OrderId, Name)>,
    /// Absent from snapshots taken before keys existed: none.
    #[serde(default)]
    bid_ssh_keys: Vec<(OrderId, SshKeys)>,
    /// Up to when usage is accrued; absent from older snapshots: from `now` on.
    #[serde(default)]
    usage_at: Option<TimeMs>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct PoolState {
    config: PoolConfig,
    last_price: Option<PriceMicros>,
    halted: bool,
    leased_gpus: u64,
    reclaiming_gpus: u64,
    auction_at: Option<TimeMs>,
    /// Absent from snapshots taken before it was counted: they restore 0.
    #[serde(default)]
    emergency_reclaims: u64,
    /// Absent from snapshots taken before usage was counted: they restore 0.
    #[serde(default)]
    offered_gpu_ms: u64,
    /// See `offered_gpu_ms`.
    #[serde(default)]
    leased_gpu_ms: u64,
}

impl Engine {
    /// The whole state as a canonical value.
    pub fn snapshot(&self) -> Snapshot {
        let mut bids: Vec<Bid> = self
            .bids
            .iter()
            .map(|(_, bid)| Bid {
                links: Links::default(),
                ..bid.clone()
            })
            .collect();
        bids.sort_unstable_by_key(|bid| bid.id);
        let mut blocks: Vec<Block> = self
            .blocks
            .iter()
            .map(|(_, block)| Block {
                links: Links::default(),
                ..block.clone()
            })
            .collect();
        blocks.sort_unstable_by_key(|block| block.serial);
        let mut leases: Vec<Lease> = self.leases.values().cloned().collect();
        leases.sort_unstable_by_key(|lease| lease.id);
        let mut client_order_ids: Vec<(AccountKey, Name, OrderId, TimeMs)> = self
            .client_order_ids
            .iter()
            .map(|((account, key), (order, at))| (*account, key.clone(), *order, *at))
            .collect();
        client_order_ids.sort_unstable();
        let mut client_order_id_of: Vec<(OrderId, Name)> = self
            .client_order_id_of
            .iter()
            .map(|(order, key)| (*order, key.clone()))
            .collect();
        client_order_id_of.sort_unstable();
        let mut bid_ssh_keys: Vec<(OrderId, SshKeys)> = self
            .bid_ssh_keys
            .iter()
            .map(|(order, keys)| (*order, keys.clone()))
            .collect();
        bid_ssh_keys.sort_unstable();
        Snapshot {
            now: self.now,
            next_id: self.next_id,
            next_priority: self.next_priority,
            next_timer: self.next_timer,
            default_limits: self.default_limits,
            pools: self
                .pools
                .iter()
                .map(|pool| PoolState {
                    config: pool.config.clone(),
                    last_price: pool.last_price,
                    halted: pool.halted,
                    leased_gpus: pool.leased_gpus,
                    reclaiming_gpus: pool.reclaiming_gpus,
                    auction_at: pool.auction_at,
                    emergency_reclaims: pool.emergency_reclaims,
                    offered_gpu_ms: pool.offered_gpu_ms,
                    leased_gpu_ms: pool.leased_gpu_ms,
                })
                .collect(),
            accounts: self.accounts.clone(),
            bids,
            blocks,
            leases,
            timers: {
                let mut timers: Vec<Scheduled> = self.timers.iter().cloned().collect();
                timers.sort_unstable();
                timers
            },
            client_order_ids,
            client_order_id_of,
            bid_ssh_keys,
            usage_at: Some(self.usage_at),
        }
    }

    /// An engine in exactly the state a snapshot describes.
    pub fn restore(snapshot: Snapshot) -> Engine {
        let mut engine = Engine::new();
        engine.now = snapshot.now;
        engine.next_id = snapshot.next_id;
        engine.next_priority = snapshot.next_priority;
        engine.next_timer = snapshot.next_timer;
        engine.default_limits = snapshot.default_limits;
        for state in snapshot.pools {
            let levels = state.config.price_levels().unwrap_or(1) as usize;
            let name: Name = state.config.id.as_str().into();
            engine
                .pool_index
                .insert(name.clone(), PoolKey(engine.pools.len() as u16));
            engine.pools.push(Pool {
                name,
                config: state.config,
                bids: Ladder::new(Side::Bid, levels),
                asks: Ladder::new(Side::Ask, levels),
                last_price: state.last_price,
                halted: state.halted,
                leased_gpus: state.leased_gpus,
                reclaiming_gpus: state.reclaiming_gpus,
                auction_at: state.auction_at,
                emergency_reclaims: state.emergency_reclaims,
                offered_gpu_ms: state.offered_gpu_ms,
                leased_gpu_ms: state.leased_gpu_ms,
            });
        }
        for (key, account) in snapshot.accounts.into_iter().enumerate() {
            engine
                .account_index
                .insert(account.name.clone(), AccountKey(key as u32));
            engine.accounts.push(account);
        }
        // Re-rest in time priority so every level's queue comes back in the same order.
        let mut bids = snapshot.bids;
        bids.sort_unstable_by_key(|bid| bid.priority);
        for bid in bids {
            let (id, open, pool, price, remaining) = (
                bid.id,
                bid.status == crate::types::OrderStatus::Open,
                bid.pool,
                bid.price,
                bid.remaining,
            );
            let key = BidKey::from_index(engine.bids.insert(bid));
            engine.bid_index.insert(id, key);
            if open {
                let pool = &mut engine.pools[pool];
                let level = pool.level_of(price);
                pool.bids
                    .push_back(&mut engine.bids, key, level, remaining as u64);
            }
        }
        let mut blocks = snapshot.blocks;
        blocks.sort_unstable_by_key(|block| block.priority);
        for block in blocks {
            let (serial, on_book, pool, price, unsold) = (
                block.serial,
                block.on_book,
                block.pool,
                block.reserve_price,
                block.unsold,
            );
            let key = BlockKey::from_index(engine.blocks.insert(block));
            engine.block_index.insert(&engine.blocks, key);
            engine.block_by_serial.insert(serial, key);
            if on_book {
                let pool = &mut engine.pools[pool];
                let level = pool.level_of(price);
                pool.asks
                    .push_back(&mut engine.blocks, key, level, unsold as u64);
            }
        }
        for lease in snapshot.leases {
            engine.leases.insert(lease.id, lease);
        }
        engine.timers = snapshot.timers.into_iter().collect();
        for (account, key, order, at) in snapshot.client_order_ids {
            engine.client_order_ids.insert((account, key), (order, at));
        }
        engine.client_order_id_of = snapshot.client_order_id_of.into_iter().collect();
        engine.bid_ssh_keys = snapshot.bid_ssh_keys.into_iter().collect();
        engine.usage_at = snapshot.usage_at.unwrap_or(snapshot.now);
        engine
    }

    /// A stable 64-bit hash of the whole state (xxh3 over the canonical snapshot): equal for
    /// engines in the same state, whatever path brought them there.
    pub fn state_hash(&self) -> u64 {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        self.snapshot().hash(&mut hasher);
        hasher.finish()
    }
}
