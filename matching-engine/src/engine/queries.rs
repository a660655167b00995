//! Read-only queries (the server's views) and the event views built from state.
//!
//! Every list answers in a canonical order (by id or serial), never in slab or hash-map order.

use super::auction::ExtraBid;
use super::leases::elapsed_s;
use super::{Engine, Lease};
use crate::event::{BlockView, Depth, LeaseView, Level, OrderView, PoolSummary, PoolUsage, Quote};
use crate::keys::{BidKey, BlockKey, LevelKey, PoolKey, SlabKey};
use crate::types::{
    cost_micros, AccountLimits, LeaseId, Micros, Name, NodeGpus, OrderId, PriceMicros, TimeMs,
};

impl Engine {
    /// Every pool's live summary, in configuration order.
    pub fn pools(&self) -> Vec<PoolSummary> {
        (0..self.pools.len())
            .map(|key| self.pool_summary(PoolKey(key as u16)))
            .collect()
    }

    /// One pool's live summary.
    pub fn pool(&self, id: &str) -> Option<PoolSummary> {
        self.pool_index.get(id).map(|&key| self.pool_summary(key))
    }

    fn pool_summary(&self, key: PoolKey) -> PoolSummary {
        let pool = &self.pools[key];
        PoolSummary {
            config: pool.config.clone(),
            best_bid: pool.bids.best().map(|l| pool.price_of(l)),
            best_ask: pool.asks.best().map(|l| pool.price_of(l)),
            last_price: pool.last_price,
            idle_gpus: pool.asks.gpus_total(),
            leased_gpus: pool.leased_gpus,
            reclaiming_gpus: pool.reclaiming_gpus,
            halted: pool.halted,
            emergency_reclaims: pool.emergency_reclaims,
        }
    }

    /// Aggregated levels of both sides, best first, at most `levels` each.
    pub fn depth(&self, pool: &str, levels: usize) -> Option<Depth> {
        let pool = &self.pools[*self.pool_index.get(pool)?];
        let mut depth = Depth::default();
        let level = |at: LevelKey, (gpus, orders): (u64, u32)| Level {
            price: pool.price_of(at),
            gpus,
            orders,
        };
        depth.bids = (pool.bids.levels_best_first())
            .take(levels)
            .map(|at| level(at, pool.bids.level(at)))
            .collect();
        depth.asks = (pool.asks.levels_best_first())
            .take(levels)
            .map(|at| level(at, pool.asks.level(at)))
            .collect();
        Some(depth)
    }

    /// What a bid for `gpus` (at least `min_gpus` in one execution) lasting `duration_s` would
    /// lease now, without placing it: a bid at the top of the pool's band, matched exactly as
    /// matching would (all it finds or nothing below its minimum). In a batch pool, what the
    /// next uncross would give it, every GPU at that uncross's price (`clears_at`).
    pub fn quote(&self, pool: &str, gpus: u32, min_gpus: u32, duration_s: u32) -> Option<Quote> {
        let pool_key = *self.pool_index.get(pool)?;
        let pool = &self.pools[pool_key];
        let needed = min_gpus.clamp(1, gpus.max(1));
        let mut quote = Quote {
            clears_at: self.next_uncross_at(pool_key),
            ..Quote::default()
        };
        if pool.halted || gpus == 0 {
            return Some(quote);
        }
        let (uniform, fills) = if pool.is_batch() {
            let extra = ExtraBid {
                gpus,
                needed,
                duration_s,
            };
            match self.plan_uncross_with(pool_key, &extra) {
                Some((price, fills)) => (Some(price), fills),
                None => return Some(quote),
            }
        } else {
            let shortest_until = self.now.plus_s(duration_s as u64);
            let mut fills = Vec::new();
            let mut want = gpus;
            'levels: for at in pool.asks.levels_best_first() {
                for (key, block) in pool.asks.entries(at, &self.blocks) {
                    if want == 0 {
                        break 'levels;
                    }
                    if block.available_until >= shortest_until {
                        let take = block.unsold.min(want);
                        fills.push((key, take));
                        want -= take;
                    }
                }
            }
            if gpus - want < needed {
                return Some(quote);
            }
            (None, fills)
        };
        let mut paid: u128 = 0;
        for (key, take) in fills {
            let block = &self.blocks[key];
            let price = uniform.unwrap_or(block.reserve_price);
            quote.fillable_gpus += take;
            quote.worst_price = quote.worst_price.max(Some(price));
            paid += price.0 as u128 * take as u128;
            quote.total_cost_micros += cost_micros(price, take, duration_s as u64);
            if let Some(at) = block.reclaim_expected_at(self.now) {
                quote.reclaim_expected_at =
                    Some(quote.reclaim_expected_at.map_or(at, |q| q.min(at)));
            }
        }
        if quote.fillable_gpus > 0 {
            quote.average_price = Some(PriceMicros((paid / quote.fillable_gpus as u128) as u64));
        }
        Some(quote)
    }

    /// A live bid: open, or persistent and filled with leases still running.
    pub fn order(&self, id: OrderId) -> Option<OrderView> {
        self.bid_index.get(&id).map(|&key| self.order_view(key))
    }

    /// An account's live bids, by id.
    pub fn orders_of(&self, account: &str) -> Vec<OrderView> {
        let Some(&account) = self.account_index.get(account) else {
            return Vec::new();
        };
        let mut keys: Vec<(OrderId, BidKey)> = self
            .bids
            .iter()
            .filter(|(_, bid)| bid.account == account)
            .map(|(key, bid)| (bid.id, BidKey::from_index(key)))
            .collect();
        keys.sort_unstable();
        keys.into_iter()
            .map(|(_, key)| self.order_view(key))
            .collect()
    }

    /// A running lease.
    pub fn lease(&self, id: LeaseId) -> Option<LeaseView> {
        self.leases.get(&id).map(|lease| self.lease_view(lease))
    }

    /// An account's running leases, by id.
    pub fn leases_of(&self, account: &str) -> Vec<LeaseView> {
        let Some(&account) = self.account_index.get(account) else {
            return Vec::new();
        };
        let mut leases: Vec<&Lease> = self
            .leases
            .values()
            .filter(|lease| lease.buyer == account)
            .collect();
        leases.sort_unstable_by_key(|lease| lease.id);
        leases.into_iter().map(|l| self.lease_view(l)).collect()
    }

    /// A supplier's blocks still known (pending, open, or closed with leases running), by id.
    pub fn blocks_of(&self, supplier: &str) -> Vec<BlockView> {
        let Some(&supplier) = self.account_index.get(supplier) else {
            return Vec::new();
        };
        let mut keys: Vec<(u64, BlockKey)> = self
            .blocks
            .iter()
            .filter(|(_, block)| block.supplier == supplier)
            .map(|(key, block)| (block.serial, BlockKey::from_index(key)))
            .collect();
        keys.sort_unstable();
        keys.into_iter()
            .map(|(_, key)| self.block_view(key))
            .collect()
    }

    /// One of a supplier's blocks.
    pub fn block(&self, supplier: &str, block_id: &str) -> Option<BlockView> {
        self.owned_block(supplier, block_id)
            .ok()
            .map(|key| self.block_view(key))
    }

    /// Every pool's usage so far (GPU-milliseconds offered and leased), in configuration order.
    pub fn usage(&self) -> Vec<PoolUsage> {
        self.pools
            .iter()
            .map(|pool| PoolUsage {
                pool: pool.name.clone(),
                offered_gpu_ms: pool.offered_gpu_ms,
                leased_gpu_ms: pool.leased_gpu_ms,
            })
            .collect()
    }

    /// An account's pre-trade limits (its own, or the defaults).
    pub fn account_limits(&self, account: &str) -> AccountLimits {
        self.account_index
            .get(account)
            .map_or(self.default_limits, |&key| self.limits_of(key))
    }

    pub(crate) fn order_view(&self, key: BidKey) -> OrderView {
        let bid = &self.bids[key];
        OrderView {
            id: bid.id,
            account: self.accounts[bid.account].name.clone(),
            pool: self.pools[bid.pool].name.clone(),
            price: bid.price,
            gpus: bid.gpus,
            remaining_gpus: bid.remaining,
            filled_gpus: bid.gpus - bid.remaining,
            min_gpus: bid.min_gpus,
            duration_s: bid.duration_s,
            max_duration_s: bid.max_duration_s,
            tif: bid.tif,
            expires_at: (bid.expires_at != i64::MIN).then_some(TimeMs(bid.expires_at)),
            persistent: bid.persistent,
            client_order_id: if bid.has_client_order_id {
                self.client_order_id_of.get(&bid.id).cloned()
            } else {
                None
            },
            status: bid.status,
            cancel_reason: bid.cancel_reason,
            created_at: bid.created_at,
            updated_at: bid.updated_at,
        }
    }

    pub(super) fn lease_view(&self, lease: &Lease) -> LeaseView {
        let accrued = lease.billed_since().map_or(0, |since| {
            cost_micros(lease.price, lease.gpus, elapsed_s(since, self.now))
        });
        self.lease_view_with(lease, None, accrued)
    }

    pub(super) fn lease_view_ended(
        &self,
        lease: &Lease,
        ended_at: TimeMs,
        cost: Micros,
    ) -> LeaseView {
        self.lease_view_with(lease, Some(ended_at), cost)
    }

    fn lease_view_with(&self, lease: &Lease, ended_at: Option<TimeMs>, cost: Micros) -> LeaseView {
        let block_id = self
            .block_by_serial
            .get(&lease.block_serial)
            .map(|&key| self.blocks[key].block_id.clone())
            .unwrap_or_else(|| Name::from(""));
        LeaseView {
            id: lease.id,
            order_id: lease.order_id,
            buyer: self.accounts[lease.buyer].name.clone(),
            supplier: self.accounts[lease.supplier].name.clone(),
            pool: self.pools[lease.pool].name.clone(),
            block_id,
            gpus: lease.gpus,
            price: lease.price,
            status: lease.status,
            started_at: lease.started_at,
            ends_at: lease.ends_at,
            notice_ends_at: lease.notice_ends_at,
            preempted_at: lease.preempted_at,
            emergency: lease.emergency,
            notice_s: lease.notice_s,
            ended_at,
            cost_micros: cost,
            nodes: lease.nodes.clone(),
            access: lease.access.clone(),
            ssh_public_keys: lease.ssh_public_keys.clone(),
        }
    }

    pub(crate) fn block_view(&self, key: BlockKey) -> BlockView {
        let block = &self.blocks[key];
        BlockView {
            supplier: self.accounts[block.supplier].name.clone(),
            block_id: block.block_id.clone(),
            pool: self.pools[block.pool].name.clone(),
            status: block.status,
            gpus: block.gpus,
            gpus_sold: block.leased,
            gpus_unsold: block.unsold,
            gpus_reclaimed: block.reclaimed,
            gpus_failed: block.failed,
            gpus_reclaiming: block.reclaim_pending,
            reserve_price: block.reserve_price,
            available_from: block.available_from,
            available_until: block.available_until,
            revenue_micros: block.revenue,
            reclaim_forecast_at: block.forecast_at,
            reclaim_expected_at: block.reclaim_expected_at(self.now),
            nodes: block
                .nodes
                .iter()
                .map(|n| NodeGpus {
                    node: n.node.clone(),
                    gpus: n.gpus,
                })
                .collect(),
            updated_at: block.updated_at,
        }
    }
}
