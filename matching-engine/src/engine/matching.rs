//! Continuous matching: a bid against the asks, executions into trades and leases, and the
//! second look at resting bids when supply grows.
//!
//! A bid executes all it found or nothing: the GPUs of eligible blocks (open long enough for
//! its duration) at or below its price must reach its minimum. After every command, no bid
//! resting in a continuous, running pool could execute.

use super::bids::notional_of;
use super::blocks::NodeState;
use super::timers::Timer;
use super::{Engine, Lease};
use crate::event::{Event, TradeView};
use crate::keys::{BidKey, BlockKey, PoolKey, SlabKey};
use crate::types::{
    Access, Handoff, LeaseId, LeaseStatus, NodeGpus, OrderStatus, PriceMicros, Side, TradeId,
};

/// How an execution is priced.
#[derive(Clone, Copy)]
pub(super) enum Pricing {
    /// Each fill at the price of whichever side rested first.
    Maker,
    /// Every fill at one clearing price (batch uncross).
    Uniform(PriceMicros),
}

impl Engine {
    /// Tries to execute a resting continuous-pool bid against eligible asks. Returns whether
    /// the bid left the book (filled).
    pub(super) fn match_bid(&mut self, key: BidKey, out: &mut Vec<Event>) -> bool {
        let bid = &self.bids[key];
        let pool = &self.pools[bid.pool];
        if pool.halted {
            return false;
        }
        let needed = bid.gpus_needed();
        let id = bid.id;
        let mut fills = std::mem::take(&mut self.fills);
        let got = self.collect_fills(key, &mut fills);
        let executed = got >= needed && got > 0;
        if executed {
            self.execute(key, &fills, Pricing::Maker, out);
        }
        self.fills = fills;
        executed
            && self
                .bid_index
                .get(&id)
                .is_none_or(|&key| self.bids[key].status != OrderStatus::Open)
    }

    /// Walks the ask side in price-time order, taking eligible GPUs up to the bid's remaining.
    pub(super) fn collect_fills(&self, key: BidKey, fills: &mut Vec<(BlockKey, u32)>) -> u32 {
        fills.clear();
        let bid = &self.bids[key];
        let pool = &self.pools[bid.pool];
        let limit_level = pool.level_of(bid.price);
        let shortest_until = self.now.plus_s(bid.duration_s as u64);
        let mut want = bid.remaining;
        'levels: for at in pool.asks.levels_through(limit_level) {
            for (block_key, block) in pool.asks.entries(at, &self.blocks) {
                if want == 0 {
                    break 'levels;
                }
                if block.available_until >= shortest_until {
                    let take = block.unsold.min(want);
                    fills.push((block_key, take));
                    want -= take;
                }
            }
        }
        bid.remaining - want
    }

    /// Executes fills of one bid: a trade and a lease per block used.
    pub(super) fn execute(
        &mut self,
        key: BidKey,
        fills: &[(BlockKey, u32)],
        pricing: Pricing,
        out: &mut Vec<Event>,
    ) {
        let pool_key = self.bids[key].pool;
        let total: u32 = fills.iter().map(|(_, gpus)| gpus).sum();
        let mut touched_blocks = std::mem::take(&mut self.fill_blocks);
        touched_blocks.clear();
        for &(block_key, gpus) in fills {
            let bid = &self.bids[key];
            let block = &self.blocks[block_key];
            let (price, maker_side) = match pricing {
                Pricing::Uniform(price) => (
                    price,
                    if bid.priority < block.priority {
                        Side::Bid
                    } else {
                        Side::Ask
                    },
                ),
                Pricing::Maker if bid.priority < block.priority => (bid.price, Side::Bid),
                Pricing::Maker => (block.reserve_price, Side::Ask),
            };
            let ends_at = self
                .now
                .plus_s(bid.max_duration_s as u64)
                .min(block.available_until);
            let (order_id, buyer) = (bid.id, bid.account);
            let trade_id = TradeId(self.take_id());
            let lease_id = LeaseId(self.take_id());

            self.take_from_book(block_key, gpus);
            let nodes = assign_nodes(&mut self.blocks[block_key].nodes, gpus);
            let block = &mut self.blocks[block_key];
            block.leased += gpus;
            block.leases.push(lease_id);
            block.updated_at = self.now;
            let lease = Lease {
                id: lease_id,
                order_id,
                buyer,
                supplier: block.supplier,
                pool: pool_key,
                block_serial: block.serial,
                gpus,
                price,
                status: LeaseStatus::Active,
                started_at: self.now,
                ends_at,
                notice_ends_at: None,
                preempted_at: None,
                emergency: false,
                notice_s: self.pools[pool_key].config.notice_s,
                nodes,
                access: match self.pools[pool_key].config.handoff {
                    Handoff::Required => Access::provisioning(),
                    Handoff::None => Access::ready_at(self.now),
                },
                ssh_public_keys: self.bid_ssh_keys.get(&order_id).cloned(),
            };
            let pool = &mut self.pools[pool_key];
            pool.leased_gpus += gpus as u64;
            pool.last_price = Some(price);
            self.leases.insert(lease_id, lease);
            self.schedule(ends_at, Timer::LeaseEnds { lease: lease_id });
            let pool_config = &self.pools[pool_key].config;
            if pool_config.handoff == Handoff::Required {
                let timeout_at = self.now.plus_s(pool_config.provision_timeout_s as u64);
                if timeout_at < ends_at {
                    self.schedule(timeout_at, Timer::ProvisionTimeout { lease: lease_id });
                }
            }
            self.bids[key].active_leases += 1;
            out.push(Event::Traded {
                trade: TradeView {
                    id: trade_id,
                    pool: self.pools[pool_key].name.clone(),
                    price,
                    gpus,
                    order_id,
                    lease_id,
                    buyer: self.accounts[buyer].name.clone(),
                    supplier: self.accounts[self.blocks[block_key].supplier].name.clone(),
                    block_id: self.blocks[block_key].block_id.clone(),
                    maker_side,
                    at: self.now,
                },
            });
            out.push(Event::LeaseOpened {
                lease: Box::new(self.lease_view(&self.leases[&lease_id])),
            });
            // A buyer learns of a coming reclaim at once, as the block's running leases did.
            if let Some(reclaim_at) = self.blocks[block_key].reclaim_expected_at(self.now) {
                out.push(Event::ReclaimForecast {
                    lease_id,
                    buyer: self.accounts[buyer].name.clone(),
                    reclaim_at,
                });
            }
            if !touched_blocks.contains(&block_key) {
                touched_blocks.push(block_key);
            }
        }
        for &block_key in &touched_blocks {
            out.push(Event::BlockChanged {
                block: self.block_view(block_key),
            });
        }
        self.fill_blocks = touched_blocks;
        // The bid: fewer GPUs resting, or off the book when done.
        let bid = &self.bids[key];
        let (pool_key, price, remaining, account, duration_s) = (
            bid.pool,
            bid.price,
            bid.remaining,
            bid.account,
            bid.duration_s,
        );
        let level = self.pools[pool_key].level_of(price);
        if total == remaining {
            self.unrest_bid(key);
            let bid = &mut self.bids[key];
            bid.remaining = 0;
            bid.status = OrderStatus::Filled;
            bid.updated_at = self.now;
            out.push(Event::OrderChanged {
                order: self.order_view(key),
            });
            self.forget_bid_if_done(key);
        } else {
            self.touch(pool_key, Side::Bid, level);
            self.pools[pool_key]
                .bids
                .resize(level, remaining as u64, (remaining - total) as u64);
            let holder = &mut self.accounts[account];
            holder.open_notional -= notional_of(price, remaining, duration_s)
                - notional_of(price, remaining - total, duration_s);
            let bid = &mut self.bids[key];
            bid.remaining -= total;
            bid.updated_at = self.now;
            out.push(Event::OrderChanged {
                order: self.order_view(key),
            });
        }
    }

    /// After supply grew in a continuous pool, looks at resting bids again in priority order.
    pub(super) fn supply_changed(&mut self, pool_key: PoolKey, out: &mut Vec<Event>) {
        let pool = &self.pools[pool_key];
        if pool.is_batch() {
            self.arm_auction(pool_key);
            return;
        }
        if pool.halted {
            return;
        }
        let Some(best_ask) = pool.asks.best() else {
            return;
        };
        // Matching changes both ladders, so this walk steps itself (best first, as
        // `levels_through` would) instead of holding the ladder's iterator.
        let mut level = pool.bids.best();
        while let Some(at) = level {
            if !self.pools[pool_key].bids.reaches(at, best_ask) {
                break;
            }
            let mut cursor = self.pools[pool_key].bids.head(at);
            while cursor != BidKey::NIL {
                let next = self.bids[cursor].links.next;
                self.match_bid(cursor, out);
                cursor = next;
            }
            let pool = &self.pools[pool_key];
            if pool.asks.best().is_none() {
                break;
            }
            level = pool.bids.next_worse(at);
        }
    }
}

/// Assigns `gpus` from the block's free node GPUs, first node first.
pub(super) fn assign_nodes(nodes: &mut [NodeState], mut gpus: u32) -> Vec<NodeGpus> {
    let mut assigned = Vec::new();
    for node in nodes.iter_mut() {
        if gpus == 0 {
            break;
        }
        let take = node.free.min(gpus);
        if take > 0 {
            node.free -= take;
            gpus -= take;
            assigned.push(NodeGpus {
                node: node.node.clone(),
                gpus: take,
            });
        }
    }
    assigned
}
