//! [`Engine::assert_invariants`]: every invariant the engine keeps between commands, checked
//! on its internal state (the property test checks the same market against a model through
//! the public views; this looks at what the views cannot see: indexes, ladders, links).
//!
//! It is O(state), and for the book-crossing check O(resting bids × asks), so it is for tests
//! and debugging, never for the hot path. It panics on the first broken invariant with a
//! message naming the entry.

use super::bids::notional_of;
use super::Engine;
use crate::keys::{AccountKey, BlockKey, PoolKey, SlabKey};
use crate::types::{AccessStatus, BlockStatus, LeaseStatus, OrderStatus};
use rustc_hash::FxHashMap;

impl Engine {
    /// Panics, with a message naming what broke, unless the engine is in a consistent state.
    ///
    /// What holds after every [`Engine::apply`]:
    ///
    /// - **Book not crossed for what could trade.** In a continuous pool whose kill switch is
    ///   off, no resting bid could execute now: the GPUs of blocks resting at or below its
    ///   price whose window lasts its duration (`available_until >= now + duration_s`),
    ///   counted in price-time order up to its remaining GPUs, are zero or fewer than its
    ///   minimum (`remaining` for FOK, `min(min_gpus, remaining)` otherwise). So the best bid
    ///   may legitimately be at or above the best ask when those asks close too soon or hold
    ///   fewer GPUs than the bid's minimum. A batch pool is crossed between uncrosses by
    ///   design, and a halted pool may be crossed by a persistent bid that reopened while it
    ///   was halted (the lift re-matches it); neither is checked.
    /// - **Ladders.** Each level's list, totals and occupied bit agree (see
    ///   `Ladder::assert_consistent`); a level's GPUs and order count are the sums over the
    ///   entries linked from it. The bid ladder holds exactly the pool's Open bids, each at the
    ///   level of its price with its remaining GPUs; the ask ladder holds exactly the pool's
    ///   blocks with `on_book`, each at the level of its reserve price with its unsold GPUs,
    ///   and `on_book` holds exactly for Open blocks with unsold GPUs.
    /// - **GPU conservation per block.** `gpus_sold + gpus_unsold + gpus_reclaimed == gpus`;
    ///   `gpus_sold` is the sum of its running leases' GPUs; the GPUs still to reclaim
    ///   (`reclaim_pending`) are at most those of its leases under notice. With nodes: the
    ///   nodes hold `gpus - gpus_reclaimed`, their free GPUs are its unsold GPUs, and each
    ///   lease holds its GPUs on nodes. A Closed block is kept only while a lease of it runs.
    /// - **Leases inside their block's window.** `available_from <= started_at <= ends_at <=
    ///   available_until`; a lease has a notice end exactly while it is preempting; each
    ///   pool's `leased_gpus` and `reclaiming_gpus` are the sums over its running leases.
    /// - **Accounts.** `open_orders` and `open_notional` are the count and the notional sum of
    ///   the account's Open bids; a live bid's `active_leases` is the count of its running
    ///   leases.
    /// - **Indexes.** Every entry of `pool_index`, `account_index`, `bid_index`,
    ///   `block_index`, `block_by_serial` and `leases` names a live entry that names it back,
    ///   and every live bid, block and lease is indexed; a bid remembered with a client order
    ///   id has its key; ids and priorities are below the counters that hand them out.
    pub fn assert_invariants(&self) {
        self.assert_indexes();
        self.assert_ladders();
        self.assert_blocks_and_leases();
        self.assert_accounts();
        self.assert_book_not_crossed();
    }

    fn assert_indexes(&self) {
        assert_eq!(self.pool_index.len(), self.pools.len(), "pool_index size");
        for (name, &key) in &self.pool_index {
            assert_eq!(&self.pools[key].name, name, "pool_index: {name} -> {key:?}");
        }
        assert_eq!(
            self.account_index.len(),
            self.accounts.len(),
            "account_index size"
        );
        for (name, &key) in &self.account_index {
            assert_eq!(
                &self.accounts[key].name, name,
                "account_index: {name} -> {key:?}"
            );
        }
        assert_eq!(self.bid_index.len(), self.bids.len(), "bid_index size");
        for id in self.bid_ssh_keys.keys() {
            assert!(
                self.bid_index.contains_key(id),
                "bid_ssh_keys: order {id} is not a live bid"
            );
        }
        for (id, &key) in &self.bid_index {
            assert!(
                self.bids.contains(key.index()),
                "bid_index: order {id} -> {key:?}, not in the slab"
            );
            assert_eq!(self.bids[key].id, *id, "bid_index: order {id} -> {key:?}");
        }
        for (_, bid) in &self.bids {
            assert!(
                bid.id.0 < self.next_id,
                "order {} not below next_id",
                bid.id
            );
            assert!(
                bid.priority < self.next_priority,
                "order {}: priority not below next_priority",
                bid.id
            );
            assert!(
                !bid.has_client_order_id || self.client_order_id_of.contains_key(&bid.id),
                "order {}: carries a client order id that is not remembered",
                bid.id
            );
            assert!(
                bid.pool.0 < self.pools.len() as u16 && bid.account.0 < self.accounts.len() as u32,
                "order {}: unknown pool or account key",
                bid.id
            );
        }
        assert_eq!(
            self.block_index.len(),
            self.blocks.len(),
            "block_index size"
        );
        for key in self.block_index.keys() {
            assert!(
                self.blocks.contains(key.index()),
                "block_index: {key:?}, not in the slab"
            );
        }
        for (index, block) in &self.blocks {
            let found = self
                .block_index
                .get(&self.blocks, block.supplier, &block.block_id);
            assert_eq!(
                found,
                Some(BlockKey::from_index(index)),
                "block_index: {:?}/{} is not found at its slab entry",
                block.supplier,
                block.block_id
            );
        }
        assert_eq!(
            self.block_by_serial.len(),
            self.blocks.len(),
            "block_by_serial size"
        );
        for (&serial, &key) in &self.block_by_serial {
            assert!(
                self.blocks.contains(key.index()) && self.blocks[key].serial == serial,
                "block_by_serial: {serial} -> {key:?}"
            );
            assert!(
                serial < self.next_id,
                "block serial {serial} not below next_id"
            );
        }
        assert_eq!(
            self.leases.len(),
            self.leases.values().count(),
            "leases: the id index and the slab differ in size"
        );
        for (id, lease) in self.leases.iter() {
            assert_eq!(lease.id, *id, "leases: {id} holds lease {}", lease.id);
            assert!(id.0 < self.next_id, "lease {id} not below next_id");
            let block = self
                .block_by_serial
                .get(&lease.block_serial)
                .map(|&key| &self.blocks[key]);
            assert!(
                block.is_some_and(|block| block.leases.contains(id)),
                "lease {id}: its block (serial {}) is gone or does not list it",
                lease.block_serial
            );
        }
        for (_, block) in &self.blocks {
            for id in &block.leases {
                assert!(
                    self.leases
                        .get(id)
                        .is_some_and(|lease| lease.block_serial == block.serial),
                    "block {}: lists lease {id}, which is not one of its running leases",
                    block.block_id
                );
            }
        }
    }

    fn assert_ladders(&self) {
        let mut open_bids: FxHashMap<PoolKey, u32> = FxHashMap::default();
        for (_, bid) in self
            .bids
            .iter()
            .filter(|(_, b)| b.status == OrderStatus::Open)
        {
            *open_bids.entry(bid.pool).or_default() += 1;
        }
        let mut on_book: FxHashMap<PoolKey, u32> = FxHashMap::default();
        for (_, block) in &self.blocks {
            assert_eq!(
                block.on_book,
                block.status == BlockStatus::Open && block.unsold > 0,
                "block {}: on_book is {} while {:?} with {} unsold",
                block.block_id,
                block.on_book,
                block.status,
                block.unsold
            );
            if block.on_book {
                *on_book.entry(block.pool).or_default() += 1;
            }
        }
        for (index, pool) in self.pools.iter().enumerate() {
            let key = PoolKey(index as u16);
            pool.bids
                .assert_consistent(&self.bids, &format!("{} bids", pool.name));
            pool.asks
                .assert_consistent(&self.blocks, &format!("{} asks", pool.name));
            let mut resting = 0;
            for level in pool.bids.levels_best_first() {
                let mut gpus = 0;
                for (bid_key, bid) in pool.bids.entries(level, &self.bids) {
                    assert!(
                        bid.status == OrderStatus::Open
                            && bid.pool == key
                            && pool.level_of(bid.price) == level,
                        "{} bids: level {level:?} holds {bid_key:?}, order {} ({:?}, {:?}, \
                         price {:?})",
                        pool.name,
                        bid.id,
                        bid.status,
                        bid.pool,
                        bid.price
                    );
                    gpus += bid.remaining as u64;
                    resting += 1;
                }
                assert_eq!(
                    pool.bids.level(level).0,
                    gpus,
                    "{} bids: level {level:?} GPUs are not its orders' remaining GPUs",
                    pool.name
                );
            }
            assert_eq!(
                resting,
                open_bids.get(&key).copied().unwrap_or(0),
                "{}: bids resting on the ladder are not the pool's Open bids",
                pool.name
            );
            let mut resting = 0;
            for level in pool.asks.levels_best_first() {
                let mut gpus = 0;
                for (block_key, block) in pool.asks.entries(level, &self.blocks) {
                    assert!(
                        block.on_book
                            && block.pool == key
                            && pool.level_of(block.reserve_price) == level,
                        "{} asks: level {level:?} holds {block_key:?}, block {}",
                        pool.name,
                        block.block_id
                    );
                    gpus += block.unsold as u64;
                    resting += 1;
                }
                assert_eq!(
                    pool.asks.level(level).0,
                    gpus,
                    "{} asks: level {level:?} GPUs are not its blocks' unsold GPUs",
                    pool.name
                );
            }
            assert_eq!(
                resting,
                on_book.get(&key).copied().unwrap_or(0),
                "{}: blocks resting on the ladder are not the pool's blocks on the book",
                pool.name
            );
        }
    }

    fn assert_blocks_and_leases(&self) {
        for (_, block) in &self.blocks {
            let name = &block.block_id;
            let total = block
                .leased
                .checked_add(block.unsold)
                .and_then(|sum| sum.checked_add(block.reclaimed));
            assert_eq!(
                total,
                Some(block.gpus),
                "block {name}: sold {} + unsold {} + reclaimed {} != gpus {}",
                block.leased,
                block.unsold,
                block.reclaimed,
                block.gpus
            );
            let leases = block.leases.iter().map(|id| &self.leases[id]);
            let sold: u32 = leases.clone().map(|lease| lease.gpus).sum();
            assert_eq!(
                sold, block.leased,
                "block {name}: running leases hold {sold} GPUs, it counts {} sold",
                block.leased
            );
            let under_notice: u32 = (leases.clone())
                .filter(|lease| lease.status == LeaseStatus::Preempting)
                .map(|lease| lease.gpus)
                .sum();
            assert!(
                block.reclaim_pending <= under_notice,
                "block {name}: {} GPUs to reclaim but only {under_notice} under notice",
                block.reclaim_pending
            );
            assert!(
                block.status != BlockStatus::Closed || !block.leases.is_empty(),
                "block {name}: closed with no lease running, yet still kept"
            );
            if !block.nodes.is_empty() {
                let on_nodes: u32 = block.nodes.iter().map(|node| node.gpus).sum();
                let free: u32 = block.nodes.iter().map(|node| node.free).sum();
                assert_eq!(
                    (on_nodes, free),
                    (block.gpus - block.reclaimed, block.unsold),
                    "block {name}: nodes hold (GPUs, free) not (gpus - reclaimed, unsold)"
                );
            }
            for lease in leases {
                let id = lease.id;
                assert!(
                    block.available_from <= lease.started_at
                        && lease.started_at <= lease.ends_at
                        && lease.ends_at <= block.available_until,
                    "lease {id}: runs {:?}..{:?}, outside block {name}'s window {:?}..{:?}",
                    lease.started_at,
                    lease.ends_at,
                    block.available_from,
                    block.available_until
                );
                assert_eq!(
                    lease.notice_ends_at.is_some(),
                    lease.status == LeaseStatus::Preempting,
                    "lease {id}: notice end {:?} while {:?}",
                    lease.notice_ends_at,
                    lease.status
                );
                assert!(
                    lease.gpus > 0 && lease.pool == block.pool && lease.supplier == block.supplier,
                    "lease {id}: no GPUs, or another pool or supplier than block {name}"
                );
                let on_nodes: u32 = lease.nodes.iter().map(|node| node.gpus).sum();
                let expected = if block.nodes.is_empty() {
                    0
                } else {
                    lease.gpus
                };
                assert_eq!(
                    on_nodes, expected,
                    "lease {id}: GPUs on nodes of block {name}"
                );
                assert!(
                    lease.access.status != AccessStatus::Failed
                        && (lease.access.status == AccessStatus::Ready)
                            == lease.billed_since().is_some(),
                    "lease {id}: running with access {:?}",
                    lease.access
                );
            }
            assert!(
                block.failed <= block.reclaimed,
                "block {name}: {} failed GPUs but only {} reclaimed",
                block.failed,
                block.reclaimed
            );
        }
        let mut per_pool: FxHashMap<PoolKey, (u64, u64)> = FxHashMap::default();
        for lease in self.leases.values() {
            let (leased, reclaiming) = per_pool.entry(lease.pool).or_default();
            *leased += lease.gpus as u64;
            if lease.status == LeaseStatus::Preempting {
                *reclaiming += lease.gpus as u64;
            }
        }
        for (index, pool) in self.pools.iter().enumerate() {
            let sums = per_pool
                .get(&PoolKey(index as u16))
                .copied()
                .unwrap_or_default();
            assert_eq!(
                (pool.leased_gpus, pool.reclaiming_gpus),
                sums,
                "{}: leased/reclaiming GPUs are not the sums over its running leases",
                pool.name
            );
        }
    }

    fn assert_accounts(&self) {
        let mut open: FxHashMap<AccountKey, (u32, u128)> = FxHashMap::default();
        let mut leases_of: FxHashMap<_, u32> = FxHashMap::default();
        for lease in self.leases.values() {
            *leases_of.entry(lease.order_id).or_default() += 1;
        }
        for (_, bid) in &self.bids {
            if bid.status == OrderStatus::Open {
                let (orders, notional) = open.entry(bid.account).or_default();
                *orders += 1;
                *notional += notional_of(bid.price, bid.remaining, bid.duration_s);
            }
            assert_eq!(
                bid.active_leases,
                leases_of.get(&bid.id).copied().unwrap_or(0),
                "order {}: active_leases is not its count of running leases",
                bid.id
            );
        }
        for (index, account) in self.accounts.iter().enumerate() {
            let sums = open
                .get(&AccountKey(index as u32))
                .copied()
                .unwrap_or_default();
            assert_eq!(
                (account.open_orders, account.open_notional),
                sums,
                "account {}: open orders/notional are not those of its Open bids",
                account.name
            );
        }
    }

    fn assert_book_not_crossed(&self) {
        let mut fills: Vec<(BlockKey, u32)> = Vec::new();
        for pool in self.pools.iter().filter(|p| !p.is_batch() && !p.halted) {
            let Some(best_ask) = pool.asks.best() else {
                continue;
            };
            for level in pool.bids.levels_through(best_ask) {
                for (key, bid) in pool.bids.entries(level, &self.bids) {
                    let got = self.collect_fills(key, &mut fills);
                    assert!(
                        got == 0 || got < bid.gpus_needed(),
                        "{}: the book is crossed: resting order {} (price {:?}, needs {}) \
                         could take {got} GPUs now",
                        pool.name,
                        bid.id,
                        bid.price,
                        bid.gpus_needed()
                    );
                }
            }
        }
    }
}
