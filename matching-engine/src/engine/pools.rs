//! Pools, accounts and kill switches.
//!
//! A pool is one order book with its configuration and its two ladders; reconfiguring a pool
//! may move its price grid only while nothing of it rests or could rest again. Accounts are
//! interned on their first accepted command, so a refused command creates nothing. Engaging a
//! kill switch cancels the target's bids in id order; lifting a pool's switch is a supply
//! change.

use super::{reject, Bid, Engine};
use crate::command::KillTarget;
use crate::event::Event;
use crate::keys::{AccountKey, BidKey, BlockKey, LevelKey, PoolKey};
use crate::ladder::Ladder;
use crate::limits::PRICE_LEVELS_MAX;
use crate::types::{
    AccountLimits, AuctionMode, BlockStatus, CancelReason, Name, OrderId, OrderStatus, PoolConfig,
    PriceMicros, Rejection, Side, SshKeys, TimeMs,
};
use serde::{Deserialize, Serialize};

/// An account: its limits, kill switch and what its resting bids commit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Account {
    pub name: Name,
    pub limits: Option<AccountLimits>,
    pub killed: bool,
    pub open_orders: u32,
    pub open_notional: u128,
    /// Default ssh public keys for its bids (absent from older snapshots: none).
    #[serde(default = "no_ssh_keys")]
    pub ssh_keys: SshKeys,
}

pub(crate) fn no_ssh_keys() -> SshKeys {
    SshKeys::from(Vec::new())
}

/// One order book.
#[derive(Clone, Debug)]
pub(crate) struct Pool {
    pub name: Name,
    pub config: PoolConfig,
    pub bids: Ladder<BidKey>,
    pub asks: Ladder<BlockKey>,
    pub last_price: Option<PriceMicros>,
    pub halted: bool,
    pub leased_gpus: u64,
    pub reclaiming_gpus: u64,
    /// A batch pool's next uncross, when one is armed.
    pub auction_at: Option<TimeMs>,
    /// Emergency reclaims accepted (a notice shorter than promised).
    pub emergency_reclaims: u64,
    /// GPU-milliseconds offered (unsold in open windows, or leased) since the pool was created.
    pub offered_gpu_ms: u64,
    /// GPU-milliseconds in running leases since the pool was created.
    pub leased_gpu_ms: u64,
}

impl Pool {
    pub(crate) fn level_of(&self, price: PriceMicros) -> LevelKey {
        LevelKey(((price.0 - self.config.price_min.0) / self.config.tick.0) as u32)
    }

    pub(super) fn price_of(&self, level: LevelKey) -> PriceMicros {
        PriceMicros(self.config.price_min.0 + level.0 as u64 * self.config.tick.0)
    }

    pub(super) fn check_price(&self, price: PriceMicros) -> Result<(), Rejection> {
        if !price.0.is_multiple_of(self.config.tick.0) {
            return Err(Rejection::PriceNotOnTick);
        }
        if price < self.config.price_min || price > self.config.price_max {
            return Err(Rejection::PriceOutOfBand);
        }
        Ok(())
    }

    /// `(gpus, orders)` at a level of one side.
    pub(super) fn level_totals(&self, side: Side, level: LevelKey) -> (u64, u32) {
        match side {
            Side::Bid => self.bids.level(level),
            Side::Ask => self.asks.level(level),
        }
    }

    pub(super) fn is_batch(&self) -> bool {
        matches!(self.config.auction, AuctionMode::Batch { .. })
    }
}

impl Engine {
    pub(super) fn configure_pool(&mut self, config: &PoolConfig, out: &mut Vec<Event>) {
        let valid = config.price_levels().is_some_and(|n| n <= PRICE_LEVELS_MAX)
            && !config.gpu.is_empty()
            && !config.region.is_empty()
            && config.id == config.expected_id()
            && config.gpus_per_order_max > 0
            && config.duration_min_s > 0
            && config.duration_min_s <= config.duration_max_s
            && !matches!(config.auction, AuctionMode::Batch { interval_ms: 0 })
            && config.offering_is_valid();
        if !valid {
            return reject(out, Rejection::PoolConfigInvalid);
        }
        let levels = config.price_levels().unwrap_or(0) as usize;
        if let Some(&key) = self.pool_index.get(config.id.as_str()) {
            let pool = &self.pools[key];
            let ladder_moves = pool.config.tick != config.tick
                || pool.config.price_min != config.price_min
                || pool.config.price_max != config.price_max;
            // Not only what rests now: a pending block, a block whose leased GPUs come back and
            // a filled persistent bid would all rest later at a price of the old grid.
            let in_use = self.bids.iter().any(|(_, bid)| bid.pool == key)
                || self
                    .blocks
                    .iter()
                    .any(|(_, block)| block.pool == key && block.status != BlockStatus::Closed);
            // What the pool sells is part of its bids' and leases' terms (keys, endpoints).
            let offering_moves =
                pool.config.offering != config.offering || pool.config.model != config.model;
            if (ladder_moves || offering_moves) && in_use {
                return reject(out, Rejection::PoolNotEmpty);
            }
            let pool = &mut self.pools[key];
            if ladder_moves {
                pool.bids = Ladder::new(Side::Bid, levels);
                pool.asks = Ladder::new(Side::Ask, levels);
            }
            pool.config = config.clone();
            let name = pool.name.clone();
            out.push(Event::PoolConfigured { pool: name });
            self.supply_changed(key, out);
        } else {
            let name: Name = config.id.as_str().into();
            let key = PoolKey(self.pools.len() as u16);
            self.pools.push(Pool {
                name: name.clone(),
                config: config.clone(),
                bids: Ladder::new(Side::Bid, levels),
                asks: Ladder::new(Side::Ask, levels),
                last_price: None,
                halted: false,
                leased_gpus: 0,
                reclaiming_gpus: 0,
                auction_at: None,
                emergency_reclaims: 0,
                offered_gpu_ms: 0,
                leased_gpu_ms: 0,
            });
            self.pool_index.insert(name.clone(), key);
            out.push(Event::PoolConfigured { pool: name });
        }
    }

    pub(super) fn intern_account(&mut self, name: &str) -> AccountKey {
        if let Some(&key) = self.account_index.get(name) {
            return key;
        }
        let key = AccountKey(self.accounts.len() as u32);
        let name: Name = name.into();
        self.accounts.push(Account {
            name: name.clone(),
            limits: None,
            killed: false,
            open_orders: 0,
            open_notional: 0,
            ssh_keys: no_ssh_keys(),
        });
        self.account_index.insert(name, key);
        key
    }

    pub(super) fn limits_of(&self, account: AccountKey) -> AccountLimits {
        self.accounts[account].limits.unwrap_or(self.default_limits)
    }

    pub(super) fn set_kill_switch(
        &mut self,
        target: &KillTarget,
        engaged: bool,
        out: &mut Vec<Event>,
    ) {
        let (kind, id, cancel): (&'static str, Name, Vec<OrderId>) = match target {
            KillTarget::Account(name) => {
                let key = self.intern_account(name);
                self.accounts[key].killed = engaged;
                let cancel = self.sorted_bid_ids(|bid| bid.account == key);
                ("account", self.accounts[key].name.clone(), cancel)
            }
            KillTarget::Pool(name) => {
                let Some(&key) = self.pool_index.get(name.as_str()) else {
                    return reject(out, Rejection::UnknownPool);
                };
                self.pools[key].halted = engaged;
                let cancel = self.sorted_bid_ids(|bid| bid.pool == key);
                ("pool", self.pools[key].name.clone(), cancel)
            }
        };
        out.push(Event::KillSwitchChanged { kind, id, engaged });
        if engaged {
            for order in cancel {
                let key = self.bid_index[&order];
                if !self.bids[key].status.is_terminal() {
                    self.finish_bid(
                        key,
                        OrderStatus::Cancelled,
                        Some(CancelReason::KillSwitch),
                        out,
                    );
                }
            }
        } else if let KillTarget::Pool(name) = target {
            let key = self.pool_index[name.as_str()];
            self.supply_changed(key, out);
        }
    }

    pub(super) fn sorted_bid_ids(&self, keep: impl Fn(&Bid) -> bool) -> Vec<OrderId> {
        let mut ids: Vec<OrderId> = self
            .bids
            .iter()
            .filter(|(_, bid)| keep(bid))
            .map(|(_, bid)| bid.id)
            .collect();
        ids.sort_unstable();
        ids
    }
}
