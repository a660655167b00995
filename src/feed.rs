//! The market-data feed: the committed market as subscribers see it, and what changed since
//! they were last told.
//!
//! [`follow`] is a task that receives every committed batch from the sequencer's broadcast and
//! applies its events here; [`Feed::reset`] copies the engine's committed state in (at start,
//! and whenever the follower may have missed a batch). Updating this copy takes a short lock
//! and wakes the WebSocket hub ([`crate::ws`]); nothing here ever waits on a client, and the
//! sequencer never waits on this task, so no subscriber can slow the engine.
//!
//! Invariants:
//! - Each pool's book here equals the engine's committed book as of the last batch applied:
//!   it is seeded from the engine and then changed only by committed `BookLevelChanged`
//!   events, which carry post-change level totals (so applying one twice is harmless).
//! - A book's `seq` is the journal sequence number of the last command that changed it. The
//!   journal numbers commands 1, 2, 3... with no gap, so the follower knows it missed a batch
//!   when the next one does not start right after the last it applied (a lagging receiver, or
//!   a batch whose commit outcome was unknown and that recovery found committed); it then
//!   resets from the engine. The same seq is what REST `/book` reports.
//! - The changes not yet sent to subscribers are kept per level, latest total wins, so a delta
//!   `(prev_seq, seq]` gives the right book when applied to a book at any seq in between.
//! - Everything waiting for the hub is bounded (see [`crate::limits`]); past a bound the
//!   subscribers are sent a snapshot (or, for private events, disconnected) instead of a
//!   partial stream.

use crate::journal::CommittedBatch;
use crate::limits::{
    FEED_PRIVATE_PENDING_MAX, FEED_RESET_RETRY_MIN, FEED_TRADES_PENDING_MAX,
    FEED_TRADES_RECENT_MAX, WS_SNAPSHOT_LEVELS_MAX,
};
use crate::sequencer::SequencerHandle;
use crate::timestamp::now_ms;
use matching_engine::{
    BlockView, Engine, Event, LeaseId, LeaseStatus, LeaseView, Level, Name, OrderView, PriceMicros,
    Side, TimeMs, TradeView,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{broadcast, Notify};

/// The market as published, shared by the sequencer (writer) and the hub and REST (readers).
pub struct Feed {
    market: Mutex<Market>,
    /// Whether any WebSocket client listens on a private channel (the hub says so): when none
    /// does, private events are not copied at all (under order entry with no one listening,
    /// copying each order's was 3.5% of the server's CPU). True until the hub first says.
    private_listeners: AtomicBool,
    /// Woken after each publish; the hub sends what changed.
    changed: Notify,
}

/// One pool's published state.
#[derive(Debug, Default)]
pub(crate) struct PoolFeed {
    /// Price (micros) to `(gpus, orders)`, bids.
    bids: BTreeMap<u64, (u64, u32)>,
    /// Price (micros) to `(gpus, orders)`, asks.
    asks: BTreeMap<u64, (u64, u32)>,
    /// Sum of the ask GPUs: the pool's idle capacity.
    ask_gpus_total: u64,
    /// The journal seq of the last command that changed the book.
    pub(crate) seq: u64,
    /// The seq subscribers were last sent a delta up to.
    pub(crate) sent_seq: u64,
    /// Levels changed since `sent_seq`: `(side, price)` to `(gpus, orders)` now.
    pending: BTreeMap<(Side, u64), (u64, u32)>,
    /// When the book last changed (the committing batch's time).
    pub(crate) changed_at: TimeMs,
    /// When the oldest change not yet sent was made.
    pending_since: Option<TimeMs>,
    /// The latest trades, oldest first, for a new subscriber's snapshot.
    recent_trades: VecDeque<TradeView>,
    /// Trades not sent yet.
    pending_trades: Vec<TradeView>,
    /// More trades happened than `pending_trades` may hold: send a trades snapshot instead.
    pub(crate) trades_overflowed: bool,
    /// GPUs in running leases, and of those under notice.
    leased_gpus: u64,
    reclaiming_gpus: u64,
    last_price: Option<PriceMicros>,
    /// The capacity figures changed since they were last sent.
    capacity_changed: bool,
}

/// A pool's capacity figures for the `capacity` channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapacityFigures {
    /// The pool.
    pub pool: Name,
    /// Unsold GPUs resting on the book (open windows).
    pub idle_gpus: u64,
    /// GPUs in running leases, including those under notice.
    pub leased_gpus: u64,
    /// GPUs under preemption notice.
    pub reclaiming_gpus: u64,
    /// Highest bid.
    pub best_bid: Option<PriceMicros>,
    /// Lowest ask.
    pub best_ask: Option<PriceMicros>,
    /// Last trade price.
    pub last_price: Option<PriceMicros>,
}

/// A book as of one seq, best levels first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BookSnapshot {
    /// The book's seq: deltas with `prev_seq <= seq < their seq` apply on top of it.
    pub seq: u64,
    /// When the book last changed.
    pub at: TimeMs,
    /// Bids, highest first.
    pub bids: Vec<Level>,
    /// Asks, lowest first.
    pub asks: Vec<Level>,
}

/// One level's new totals in a delta.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelChange {
    /// Side.
    pub side: Side,
    /// Price.
    pub price: PriceMicros,
    /// GPUs now (0: the level is gone).
    pub gpus: u64,
    /// Orders now.
    pub orders: u32,
}

/// A pool's book changes from `prev_seq` (exclusive) to `seq` (inclusive), latest totals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BookDelta {
    /// The seq the delta starts after.
    pub prev_seq: u64,
    /// The seq the book is at after it.
    pub seq: u64,
    /// When the book last changed.
    pub at: TimeMs,
    /// When the oldest change in the delta was made (how long it waited is the feed's lag).
    pub first_at: TimeMs,
    /// The levels that changed, bids then asks, each by price.
    pub changes: Vec<LevelChange>,
}

/// An event for one account's private channels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrivateEvent {
    /// A bid was accepted or changed (`orders`).
    Order {
        /// `bid_accepted` or `order_changed`.
        event: &'static str,
        /// The bid now.
        order: OrderView,
    },
    /// A bid of the account traded (`orders`).
    Fill(TradeView),
    /// A lease opened or moved (`leases`).
    Lease {
        /// `lease_opened`, `lease_ready`, `lease_failed` or `lease_changed`.
        event: &'static str,
        /// The lease now.
        lease: LeaseView,
    },
    /// The supplier expects to reclaim the lease's block (`leases`).
    ReclaimForecast {
        /// The lease warned.
        lease_id: matching_engine::LeaseId,
        /// When the reclaim is expected.
        reclaim_at: TimeMs,
    },
    /// One of the supplier's blocks changed (`blocks`).
    Block(BlockView),
    /// A lease on one of the supplier's blocks opened (with its nodes and the buyer's keys),
    /// became ready or failed (`blocks`).
    SuppliedLease {
        /// `lease_opened`, `lease_ready` or `lease_failed`.
        event: &'static str,
        /// The lease now.
        lease: LeaseView,
    },
}

/// What changed since the hub last took it, for every pool.
#[derive(Debug, Default)]
pub struct Changes {
    /// Per pool with book changes: its delta.
    pub books: Vec<(Name, BookDelta)>,
    /// Per pool with trades: the new trades (or, after an overflow, `None`: send a snapshot).
    pub trades: Vec<(Name, Option<Vec<TradeView>>)>,
    /// Pools whose capacity figures changed.
    pub capacity: Vec<CapacityFigures>,
    /// Private events in commit order, each with its account.
    pub private: Vec<(Name, PrivateEvent)>,
    /// More private events happened than the feed may hold: some were lost.
    pub private_overflowed: bool,
}

#[derive(Debug, Default)]
struct Market {
    /// Pools in configuration order.
    pools: Vec<(Name, PoolFeed)>,
    index: HashMap<Name, usize>,
    private: Vec<(Name, PrivateEvent)>,
    private_overflowed: bool,
    /// Whether the batch being published keeps private events (someone listens).
    private_wanted: bool,
}

impl Market {
    fn pool_mut(&mut self, pool: &Name) -> &mut PoolFeed {
        let at = match self.index.get(pool) {
            Some(&at) => at,
            None => {
                // A pool configured after the reset: it starts empty, like the engine's.
                self.pools.push((pool.clone(), PoolFeed::default()));
                self.index.insert(pool.clone(), self.pools.len() - 1);
                self.pools.len() - 1
            }
        };
        &mut self.pools[at].1
    }

    /// Keeps a private event for `account`; `event` makes it only when someone listens.
    fn push_private(&mut self, account: &Name, event: impl FnOnce() -> PrivateEvent) {
        if !self.private_wanted {
            return;
        }
        if self.private.len() >= FEED_PRIVATE_PENDING_MAX {
            self.private_overflowed = true;
            return;
        }
        self.private.push((account.clone(), event()));
    }
}

impl PoolFeed {
    fn levels(&mut self, side: Side) -> &mut BTreeMap<u64, (u64, u32)> {
        match side {
            Side::Bid => &mut self.bids,
            Side::Ask => &mut self.asks,
        }
    }

    /// Sets a level's totals; returns whether anything changed.
    fn set_level(&mut self, side: Side, price: u64, gpus: u64, orders: u32) -> bool {
        let levels = self.levels(side);
        let before = if gpus == 0 {
            levels.remove(&price)
        } else {
            levels.insert(price, (gpus, orders))
        };
        if before == Some((gpus, orders)) || (before.is_none() && gpus == 0) {
            return false;
        }
        if side == Side::Ask {
            let before_gpus = before.map_or(0, |(g, _)| g);
            self.ask_gpus_total = self.ask_gpus_total - before_gpus + gpus;
        }
        self.pending.insert((side, price), (gpus, orders));
        self.capacity_changed = true;
        true
    }

    fn best_bid(&self) -> Option<PriceMicros> {
        self.bids.keys().next_back().copied().map(PriceMicros)
    }

    fn best_ask(&self) -> Option<PriceMicros> {
        self.asks.keys().next().copied().map(PriceMicros)
    }

    fn capacity(&self, pool: &Name) -> CapacityFigures {
        CapacityFigures {
            pool: pool.clone(),
            idle_gpus: self.ask_gpus_total,
            leased_gpus: self.leased_gpus,
            reclaiming_gpus: self.reclaiming_gpus,
            best_bid: self.best_bid(),
            best_ask: self.best_ask(),
            last_price: self.last_price,
        }
    }

    fn snapshot(&self, levels_max: usize) -> BookSnapshot {
        let level = |(&price, &(gpus, orders)): (&u64, &(u64, u32))| Level {
            price: PriceMicros(price),
            gpus,
            orders,
        };
        BookSnapshot {
            seq: self.seq,
            at: self.changed_at,
            bids: self.bids.iter().rev().take(levels_max).map(level).collect(),
            asks: self.asks.iter().take(levels_max).map(level).collect(),
        }
    }

    fn push_trade(&mut self, trade: &TradeView) {
        if self.recent_trades.len() == FEED_TRADES_RECENT_MAX {
            self.recent_trades.pop_front();
        }
        self.recent_trades.push_back(trade.clone());
        if self.pending_trades.len() < FEED_TRADES_PENDING_MAX {
            self.pending_trades.push(trade.clone());
        } else {
            self.trades_overflowed = true;
        }
        self.last_price = Some(trade.price);
        self.capacity_changed = true;
    }
}

impl Default for Feed {
    fn default() -> Self {
        Feed::new()
    }
}

impl Feed {
    /// An empty feed; [`Feed::reset`] seeds it from the engine.
    pub fn new() -> Feed {
        Feed {
            market: Mutex::new(Market::default()),
            private_listeners: AtomicBool::new(true),
            changed: Notify::new(),
        }
    }

    /// Whether any client listens on a private channel now. Said before the client hears
    /// that it is subscribed, so every event committed after that is kept for it.
    pub fn set_private_listeners(&self, any: bool) {
        self.private_listeners.store(any, Ordering::SeqCst);
    }

    /// Whether private events are kept (someone listens, as the hub last said).
    pub fn keeps_private_events(&self) -> bool {
        self.private_listeners.load(Ordering::SeqCst)
    }

    fn lock(&self) -> MutexGuard<'_, Market> {
        // A panic while holding the lock leaves plain data behind, still consistent enough to
        // serve: the next reset repairs it. Never poison the whole feed over it.
        self.market.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the feed equal to the engine's committed state: at start, and after a rebuild
    /// (when batches whose outcome was unknown may have committed without being published).
    /// Levels that differ from what subscribers hold go out as an ordinary delta.
    pub fn reset(&self, engine: &Engine, seq: u64, at: TimeMs) {
        let summaries = engine.pools();
        let mut market = self.lock();
        for summary in summaries {
            let pool: Name = Name::from(summary.config.id.as_str());
            let depth = engine.depth(&pool, usize::MAX).unwrap_or_default();
            let feed = market.pool_mut(&pool);
            let mut seen_bids = BTreeMap::new();
            let mut seen_asks = BTreeMap::new();
            for level in &depth.bids {
                seen_bids.insert(level.price.0, (level.gpus, level.orders));
            }
            for level in &depth.asks {
                seen_asks.insert(level.price.0, (level.gpus, level.orders));
            }
            let gone_bids: Vec<u64> = feed
                .bids
                .keys()
                .filter(|p| !seen_bids.contains_key(p))
                .copied()
                .collect();
            let gone_asks: Vec<u64> = feed
                .asks
                .keys()
                .filter(|p| !seen_asks.contains_key(p))
                .copied()
                .collect();
            let mut changed = false;
            for price in gone_bids {
                changed |= feed.set_level(Side::Bid, price, 0, 0);
            }
            for price in gone_asks {
                changed |= feed.set_level(Side::Ask, price, 0, 0);
            }
            for (price, (gpus, orders)) in seen_bids {
                changed |= feed.set_level(Side::Bid, price, gpus, orders);
            }
            for (price, (gpus, orders)) in seen_asks {
                changed |= feed.set_level(Side::Ask, price, gpus, orders);
            }
            if changed {
                feed.seq = seq;
                feed.pending_since.get_or_insert(at);
            }
            // A book that never changed still gets a real time, not the epoch.
            if changed || feed.changed_at == TimeMs(0) {
                feed.changed_at = at;
            }
            if feed.leased_gpus != summary.leased_gpus
                || feed.reclaiming_gpus != summary.reclaiming_gpus
                || feed.last_price != summary.last_price
            {
                feed.leased_gpus = summary.leased_gpus;
                feed.reclaiming_gpus = summary.reclaiming_gpus;
                feed.last_price = summary.last_price;
                feed.capacity_changed = true;
            }
            debug_assert_eq!(
                feed.ask_gpus_total, summary.idle_gpus,
                "idle GPUs of {pool}"
            );
        }
        drop(market);
        self.changed.notify_one();
    }

    /// Takes in one committed command's events: its journal `seq` and time `at`.
    pub fn publish(&self, seq: u64, at: TimeMs, events: &[Event]) {
        let mut market = self.lock();
        self.publish_locked(&mut market, seq, at, events, None);
        drop(market);
        self.changed.notify_one();
    }

    /// Takes in a committed batch, command by command, under one lock.
    pub fn publish_batch(&self, batch: &CommittedBatch) {
        let mut market = self.lock();
        for record in &batch.records {
            self.publish_locked(
                &mut market,
                record.seq,
                record.at,
                &record.events,
                record.readied_lease(),
            );
        }
        drop(market);
        self.changed.notify_one();
    }

    /// `readied`: the lease the command reported ready (its `LeaseChanged` is `lease_ready`).
    fn publish_locked(
        &self,
        market: &mut Market,
        seq: u64,
        at: TimeMs,
        events: &[Event],
        readied: Option<LeaseId>,
    ) {
        market.private_wanted = self.keeps_private_events();
        let mut touched: Vec<usize> = Vec::new();
        for event in events {
            match event {
                // A pool configured after the last reset (a standby that became the leader
                // journals the default pools): subscribers may ask for it at once.
                Event::PoolConfigured { pool } => {
                    market.pool_mut(pool);
                }
                Event::BookLevelChanged {
                    pool,
                    side,
                    price,
                    gpus,
                    orders,
                } => {
                    let feed = market.pool_mut(pool);
                    if feed.set_level(*side, price.0, *gpus, *orders) {
                        let at_index = market.index[pool];
                        if !touched.contains(&at_index) {
                            touched.push(at_index);
                        }
                    }
                }
                Event::Traded { trade } => {
                    market.pool_mut(&trade.pool).push_trade(trade);
                    market.push_private(&trade.buyer, || PrivateEvent::Fill(trade.clone()));
                }
                Event::BidAccepted { order } => {
                    market.push_private(&order.account, || PrivateEvent::Order {
                        event: "bid_accepted",
                        order: order.clone(),
                    })
                }
                Event::OrderChanged { order } => {
                    market.push_private(&order.account, || PrivateEvent::Order {
                        event: "order_changed",
                        order: order.clone(),
                    })
                }
                Event::LeaseOpened { lease } => {
                    let feed = market.pool_mut(&lease.pool);
                    feed.leased_gpus += u64::from(lease.gpus);
                    feed.capacity_changed = true;
                    market.push_private(&lease.buyer, || PrivateEvent::Lease {
                        event: "lease_opened",
                        lease: LeaseView::clone(lease),
                    });
                    // The supplier's provisioner learns the nodes and the buyer's keys.
                    market.push_private(&lease.supplier, || PrivateEvent::SuppliedLease {
                        event: "lease_opened",
                        lease: LeaseView::clone(lease),
                    });
                }
                Event::LeaseChanged { lease } => {
                    let feed = market.pool_mut(&lease.pool);
                    let gpus = u64::from(lease.gpus);
                    // The engine emits LeaseChanged when notice is given (active -> preempting)
                    // and when a lease ends; an ended lease was under notice iff it has one.
                    match lease.status {
                        LeaseStatus::Preempting => feed.reclaiming_gpus += gpus,
                        status if status.is_ended() => {
                            feed.leased_gpus = feed.leased_gpus.saturating_sub(gpus);
                            if lease.notice_ends_at.is_some() {
                                feed.reclaiming_gpus = feed.reclaiming_gpus.saturating_sub(gpus);
                            }
                        }
                        _ => {}
                    }
                    feed.capacity_changed = true;
                    let event = if readied == Some(lease.id) {
                        "lease_ready"
                    } else if lease.status == LeaseStatus::Failed {
                        "lease_failed"
                    } else {
                        "lease_changed"
                    };
                    market.push_private(&lease.buyer, || PrivateEvent::Lease {
                        event,
                        lease: LeaseView::clone(lease),
                    });
                    if event != "lease_changed" {
                        market.push_private(&lease.supplier, || PrivateEvent::SuppliedLease {
                            event,
                            lease: LeaseView::clone(lease),
                        });
                    }
                }
                Event::ReclaimForecast {
                    lease_id,
                    buyer,
                    reclaim_at,
                } => market.push_private(buyer, || PrivateEvent::ReclaimForecast {
                    lease_id: *lease_id,
                    reclaim_at: *reclaim_at,
                }),
                Event::BlockChanged { block } => {
                    market.push_private(&block.supplier, || PrivateEvent::Block(block.clone()))
                }
                _ => {}
            }
        }
        for at_index in touched {
            let feed = &mut market.pools[at_index].1;
            feed.seq = seq;
            feed.changed_at = at;
            feed.pending_since.get_or_insert(at);
        }
    }

    /// Resolves once something was published since the last call (or was already pending).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Takes everything not yet sent to subscribers.
    pub fn take_changes(&self) -> Changes {
        let mut market = self.lock();
        let mut changes = Changes::default();
        for (pool, feed) in market.pools.iter_mut() {
            if feed.seq != feed.sent_seq {
                let pending = std::mem::take(&mut feed.pending);
                let delta = BookDelta {
                    prev_seq: feed.sent_seq,
                    seq: feed.seq,
                    at: feed.changed_at,
                    first_at: feed.pending_since.take().unwrap_or(feed.changed_at),
                    changes: pending
                        .into_iter()
                        .map(|((side, price), (gpus, orders))| LevelChange {
                            side,
                            price: PriceMicros(price),
                            gpus,
                            orders,
                        })
                        .collect(),
                };
                feed.sent_seq = feed.seq;
                changes.books.push((pool.clone(), delta));
            }
            if feed.trades_overflowed {
                feed.trades_overflowed = false;
                feed.pending_trades.clear();
                changes.trades.push((pool.clone(), None));
            } else if !feed.pending_trades.is_empty() {
                changes
                    .trades
                    .push((pool.clone(), Some(std::mem::take(&mut feed.pending_trades))));
            }
            if feed.capacity_changed {
                feed.capacity_changed = false;
                changes.capacity.push(feed.capacity(pool));
            }
        }
        changes.private = std::mem::take(&mut market.private);
        changes.private_overflowed = std::mem::replace(&mut market.private_overflowed, false);
        changes
    }

    /// Whether the feed knows this pool.
    pub fn has_pool(&self, pool: &str) -> bool {
        self.lock().index.contains_key(pool)
    }

    /// A pool's book, at most `levels_max` levels a side, with its seq (REST `/book` and
    /// WebSocket snapshots read the same thing, so their seqs agree).
    pub fn book(&self, pool: &str, levels_max: usize) -> Option<BookSnapshot> {
        let market = self.lock();
        let at = *market.index.get(pool)?;
        Some(market.pools[at].1.snapshot(levels_max))
    }

    /// A pool's book for a WebSocket snapshot.
    pub fn book_for_snapshot(&self, pool: &str) -> Option<BookSnapshot> {
        self.book(pool, WS_SNAPSHOT_LEVELS_MAX)
    }

    /// A pool's latest trades, oldest first.
    pub fn recent_trades(&self, pool: &str) -> Option<Vec<TradeView>> {
        let market = self.lock();
        let at = *market.index.get(pool)?;
        Some(market.pools[at].1.recent_trades.iter().cloned().collect())
    }

    /// Every pool's capacity figures, in configuration order.
    pub fn capacity(&self) -> Vec<CapacityFigures> {
        let market = self.lock();
        market.pools.iter().map(|(p, f)| f.capacity(p)).collect()
    }
}

/// Applies every committed batch to the feed, resetting it from the engine whenever a batch
/// may have been missed, and calls `published` with each batch applied. Ends when the
/// sequencer's broadcast closes.
pub async fn follow(
    feed: Arc<Feed>,
    sequencer: SequencerHandle,
    published: impl Fn(&CommittedBatch),
) {
    // Subscribe before reading the engine: every batch after the read's seq is then received.
    let mut batches = sequencer.subscribe();
    let mut applied = reset_from_engine(&feed, &sequencer).await;
    loop {
        match batches.recv().await {
            Ok(batch) => {
                if batch.last_seq() <= applied {
                    continue; // Already in the state the last reset copied.
                }
                let first = batch.records.first().map_or(0, |r| r.seq);
                if first != applied + 1 {
                    tracing::info!(
                        applied,
                        first,
                        "feed missed a batch; resetting from the engine"
                    );
                    applied = reset_from_engine(&feed, &sequencer).await;
                    if batch.last_seq() <= applied {
                        continue;
                    }
                }
                feed.publish_batch(&batch);
                published(&batch);
                applied = batch.last_seq();
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "feed lagged behind the sequencer; resetting from the engine"
                );
                applied = reset_from_engine(&feed, &sequencer).await;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Copies the engine's committed state into the feed; returns the seq it is as of. Retries
/// while the sequencer is too busy to answer (it always answers reads, even without a database).
async fn reset_from_engine(feed: &Arc<Feed>, sequencer: &SequencerHandle) -> u64 {
    let mut wait = FEED_RESET_RETRY_MIN;
    loop {
        let target = feed.clone();
        match sequencer
            .read(move |view| {
                target.reset(view.engine, view.seq, now_ms());
                view.seq
            })
            .await
        {
            Ok(seq) => return seq,
            Err(e) => {
                tracing::warn!(error = %e, "feed could not read the engine; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(pool: &str, side: Side, price: u64, gpus: u64, orders: u32) -> Event {
        Event::BookLevelChanged {
            pool: Name::from(pool),
            side,
            price: PriceMicros(price),
            gpus,
            orders,
        }
    }

    #[test]
    fn seq_grows_once_per_batch_that_changes_a_book() {
        let feed = Feed::new();
        feed.publish(
            1,
            TimeMs(1),
            &[
                level("p", Side::Bid, 100, 8, 1),
                level("p", Side::Bid, 90, 4, 1),
            ],
        );
        feed.publish(2, TimeMs(2), &[level("p", Side::Ask, 120, 16, 2)]);
        // Same totals again: not a change.
        feed.publish(3, TimeMs(3), &[level("p", Side::Ask, 120, 16, 2)]);
        let book = feed.book("p", 10).unwrap();
        assert_eq!(book.seq, 2);
        assert_eq!(book.at, TimeMs(2));
        assert_eq!(
            book.bids.iter().map(|l| l.price.0).collect::<Vec<_>>(),
            [100, 90]
        );
        assert_eq!(book.asks[0].gpus, 16);
    }

    #[test]
    fn a_delta_merges_changes_latest_total_wins_and_applies_over_any_seq_it_covers() {
        let feed = Feed::new();
        feed.publish(1, TimeMs(1), &[level("p", Side::Bid, 100, 8, 1)]);
        let first = feed.take_changes();
        assert_eq!(first.books[0].1.prev_seq, 0);
        assert_eq!(first.books[0].1.seq, 1);
        let at_one = feed.book("p", 100).unwrap();
        feed.publish(2, TimeMs(2), &[level("p", Side::Bid, 100, 3, 1)]);
        let at_two = feed.book("p", 100).unwrap();
        feed.publish(
            3,
            TimeMs(3),
            &[
                level("p", Side::Bid, 100, 0, 0),
                level("p", Side::Bid, 95, 2, 1),
            ],
        );
        let changes = feed.take_changes();
        let delta = &changes.books[0].1;
        assert_eq!((delta.prev_seq, delta.seq), (1, 3));
        assert_eq!(delta.changes.len(), 2, "one entry per level: {delta:?}");
        // Applied to the book at seq 1 or at seq 2, the delta gives the book at seq 3.
        let now = feed.book("p", 100).unwrap();
        for start in [at_one, at_two] {
            let mut bids: BTreeMap<u64, u64> =
                start.bids.iter().map(|l| (l.price.0, l.gpus)).collect();
            for change in &delta.changes {
                if change.gpus == 0 {
                    bids.remove(&change.price.0);
                } else {
                    bids.insert(change.price.0, change.gpus);
                }
            }
            let want: BTreeMap<u64, u64> = now.bids.iter().map(|l| (l.price.0, l.gpus)).collect();
            assert_eq!(bids, want);
        }
        assert!(feed.take_changes().books.is_empty(), "nothing new");
    }

    #[test]
    fn capacity_follows_asks_and_lease_lifecycle() {
        let feed = Feed::new();
        let lease = LeaseView {
            id: matching_engine::LeaseId(7),
            order_id: matching_engine::OrderId(3),
            buyer: Name::from("acme"),
            supplier: Name::from("sched"),
            pool: Name::from("p"),
            block_id: Name::from("b1"),
            gpus: 4,
            price: PriceMicros(100),
            status: LeaseStatus::Active,
            started_at: TimeMs(1),
            ends_at: TimeMs(1000),
            notice_ends_at: None,
            preempted_at: None,
            emergency: false,
            notice_s: 120,
            ended_at: None,
            cost_micros: 0,
            nodes: vec![],
            access: matching_engine::Access::provisioning(),
            ssh_public_keys: None,
        };
        feed.publish(
            1,
            TimeMs(1),
            &[
                level("p", Side::Ask, 100, 12, 1),
                Event::LeaseOpened {
                    lease: Box::new(lease.clone()),
                },
            ],
        );
        let mut preempting = lease.clone();
        preempting.status = LeaseStatus::Preempting;
        preempting.notice_ends_at = Some(TimeMs(500));
        feed.publish(
            2,
            TimeMs(2),
            &[Event::LeaseChanged {
                lease: Box::new(preempting),
            }],
        );
        let figures = &feed.capacity()[0];
        assert_eq!(
            (
                figures.idle_gpus,
                figures.leased_gpus,
                figures.reclaiming_gpus
            ),
            (12, 4, 4)
        );
        let mut ended = lease;
        ended.status = LeaseStatus::Preempted;
        ended.notice_ends_at = Some(TimeMs(500));
        feed.publish(
            3,
            TimeMs(3),
            &[Event::LeaseChanged {
                lease: Box::new(ended),
            }],
        );
        let figures = &feed.capacity()[0];
        assert_eq!((figures.leased_gpus, figures.reclaiming_gpus), (0, 0));
        let changes = feed.take_changes();
        assert_eq!(changes.capacity.len(), 1);
        let accounts: Vec<&str> = changes.private.iter().map(|(a, _)| &**a).collect();
        // The buyer hears of each step; the supplier's provisioner of the opening.
        assert_eq!(accounts, ["acme", "sched", "acme", "acme"]);

        // With no one on a private channel nothing private is kept; the book still moves.
        feed.set_private_listeners(false);
        let forecast = Event::ReclaimForecast {
            lease_id: matching_engine::LeaseId(7),
            buyer: Name::from("acme"),
            reclaim_at: TimeMs(9),
        };
        feed.publish(
            4,
            TimeMs(4),
            &[level("p", Side::Ask, 100, 8, 1), forecast.clone()],
        );
        let changes = feed.take_changes();
        assert!(changes.private.is_empty());
        assert_eq!(changes.books.len(), 1);
        feed.set_private_listeners(true);
        feed.publish(5, TimeMs(5), &[forecast]);
        assert_eq!(feed.take_changes().private.len(), 1);
    }

    #[test]
    fn reset_sends_only_the_difference_as_a_delta() {
        let mut engine = Engine::new();
        let mut out = Vec::new();
        engine.apply(
            TimeMs(0),
            &matching_engine::Command::ConfigurePool(matching_engine::PoolConfig::with_defaults(
                "h100", "x",
            )),
            &mut out,
        );
        let feed = Feed::new();
        feed.reset(&engine, 0, TimeMs(0));
        assert_eq!(
            feed.book("h100.x", 10).unwrap().seq,
            0,
            "empty book: no change"
        );
        // A level the feed holds but the engine does not (an unpublished batch's undoing).
        feed.publish(1, TimeMs(1), &[level("h100.x", Side::Bid, 10_000, 1, 1)]);
        feed.take_changes();
        feed.reset(&engine, 2, TimeMs(2));
        let changes = feed.take_changes();
        let delta = &changes.books[0].1;
        assert_eq!((delta.prev_seq, delta.seq), (1, 2));
        assert_eq!(delta.changes[0].gpus, 0);
        assert!(feed.book("h100.x", 10).unwrap().bids.is_empty());
    }
}
