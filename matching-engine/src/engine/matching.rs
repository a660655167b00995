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
use crate::ladder::NIL;
use crate::types::{
    LeaseId, LeaseStatus, NodeGpus, OrderStatus, PriceMicros, Side, TimeInForce, TradeId,
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
    pub(super) fn match_bid(&mut self, key: u32, out: &mut Vec<Event>) -> bool {
        let bid = &self.bids[key as usize];
        let pool = &self.pools[bid.pool as usize];
        if pool.halted {
            return false;
        }
        let needed = match bid.tif {
            TimeInForce::Fok => bid.remaining,
            _ => bid.min_gpus.min(bid.remaining),
        };
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
                .is_none_or(|&key| self.bids[key as usize].status != OrderStatus::Open)
    }

    /// Walks the ask side in price-time order, taking eligible GPUs up to the bid's remaining.
    fn collect_fills(&self, key: u32, fills: &mut Vec<(u32, u32)>) -> u32 {
        fills.clear();
        let bid = &self.bids[key as usize];
        let pool = &self.pools[bid.pool as usize];
        let limit_level = pool.level_of(bid.price);
        let shortest_until = self.now.plus_s(bid.duration_s as u64);
        let mut want = bid.remaining;
        let mut level = pool.asks.lowest();
        while let Some(at) = level {
            if at > limit_level || want == 0 {
                break;
            }
            let mut cursor = pool.asks.head(at);
            while cursor != NIL && want > 0 {
                let block = &self.blocks[cursor as usize];
                if block.available_until >= shortest_until {
                    let take = block.unsold.min(want);
                    fills.push((cursor, take));
                    want -= take;
                }
                cursor = block.links.next;
            }
            level = pool.asks.lowest_at_or_above(at + 1);
        }
        bid.remaining - want
    }

    /// Executes fills of one bid: a trade and a lease per block used.
    pub(super) fn execute(
        &mut self,
        key: u32,
        fills: &[(u32, u32)],
        pricing: Pricing,
        out: &mut Vec<Event>,
    ) {
        let pool_key = self.bids[key as usize].pool;
        let total: u32 = fills.iter().map(|(_, gpus)| gpus).sum();
        let mut touched_blocks: Vec<u32> = Vec::new();
        for &(block_key, gpus) in fills {
            let bid = &self.bids[key as usize];
            let block = &self.blocks[block_key as usize];
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
            let nodes = assign_nodes(&mut self.blocks[block_key as usize].nodes, gpus);
            let block = &mut self.blocks[block_key as usize];
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
                nodes,
            };
            let pool = &mut self.pools[pool_key as usize];
            pool.leased_gpus += gpus as u64;
            pool.last_price = Some(price);
            self.leases.insert(lease_id, lease);
            self.schedule(ends_at, Timer::LeaseEnds { lease: lease_id });
            self.bids[key as usize].active_leases += 1;
            out.push(Event::Traded {
                trade: TradeView {
                    id: trade_id,
                    pool: self.pools[pool_key as usize].name.clone(),
                    price,
                    gpus,
                    order_id,
                    lease_id,
                    buyer: self.accounts[buyer as usize].name.clone(),
                    supplier: self.accounts[self.blocks[block_key as usize].supplier as usize]
                        .name
                        .clone(),
                    block_id: self.blocks[block_key as usize].block_id.clone(),
                    maker_side,
                    at: self.now,
                },
            });
            out.push(Event::LeaseOpened {
                lease: self.lease_view(&self.leases[&lease_id]),
            });
            if !touched_blocks.contains(&block_key) {
                touched_blocks.push(block_key);
            }
        }
        for block_key in touched_blocks {
            out.push(Event::BlockChanged {
                block: self.block_view(block_key),
            });
        }
        // The bid: fewer GPUs resting, or off the book when done.
        let bid = &self.bids[key as usize];
        let (pool_key, price, remaining, account, duration_s) = (
            bid.pool,
            bid.price,
            bid.remaining,
            bid.account,
            bid.duration_s,
        );
        let level = self.pools[pool_key as usize].level_of(price);
        if total == remaining {
            self.unrest_bid(key);
            let bid = &mut self.bids[key as usize];
            bid.remaining = 0;
            bid.status = OrderStatus::Filled;
            bid.updated_at = self.now;
            out.push(Event::OrderChanged {
                order: self.order_view(key),
            });
            self.forget_bid_if_done(key);
        } else {
            self.touch(pool_key, Side::Bid, level);
            self.pools[pool_key as usize].bids.resize(
                level,
                remaining as u64,
                (remaining - total) as u64,
            );
            let holder = &mut self.accounts[account as usize];
            holder.open_notional -= notional_of(price, remaining, duration_s)
                - notional_of(price, remaining - total, duration_s);
            let bid = &mut self.bids[key as usize];
            bid.remaining -= total;
            bid.updated_at = self.now;
            out.push(Event::OrderChanged {
                order: self.order_view(key),
            });
        }
    }

    /// After supply grew in a continuous pool, looks at resting bids again in priority order.
    pub(super) fn supply_changed(&mut self, pool_key: u16, out: &mut Vec<Event>) {
        let pool = &self.pools[pool_key as usize];
        if pool.is_batch() {
            self.arm_auction(pool_key);
            return;
        }
        if pool.halted {
            return;
        }
        let Some(best_ask) = pool.asks.lowest() else {
            return;
        };
        let mut level = pool.bids.highest();
        while let Some(at) = level {
            if at < best_ask {
                break;
            }
            let mut cursor = self.pools[pool_key as usize].bids.head(at);
            while cursor != NIL {
                let next = self.bids[cursor as usize].links.next;
                self.match_bid(cursor, out);
                cursor = next;
            }
            let pool = &self.pools[pool_key as usize];
            if pool.asks.lowest().is_none() {
                break;
            }
            level = if at == 0 {
                None
            } else {
                pool.bids.highest_at_or_below(at - 1)
            };
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
