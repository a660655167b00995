//! Durable storage behind one trait: the command journal, snapshots, and the rows (orders,
//! leases, trades, blocks, lease events) that each committed batch produced.
//!
//! The sequencer is the only writer. A batch is written in one transaction: its journal rows
//! and the upserts derived from its events, so the journal and the tables never disagree.
//! Request handlers read history (finished orders and leases) through the same trait.
//! PostgreSQL lives in [`postgres`], the embedded SQLite default in [`sqlite`]; both pass the
//! same conformance suite (`tests/api/store_conformance.rs`).

mod pipeline;
pub mod postgres;
mod rows;
pub mod sqlite;

pub use pipeline::{BatchStage, CommitLink};

use crate::error::ApiError;
use crate::journal::{CommittedBatch, EntryId, UsageDelta};
use async_trait::async_trait;
use matching_engine::{
    BlockView, Event, LeaseId, LeaseStatus, LeaseView, Name, OrderId, OrderView, PriceMicros, Side,
    TimeMs, TradeView,
};
use std::collections::HashMap;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database did not answer (connection refused or lost, timeout): retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A query failed for another reason (a bug, a constraint).
    #[error("database query failed: {0}")]
    Query(String),
    /// Another node took leadership: this batch's epoch is no longer current (nothing of it
    /// was written).
    #[error("fenced: {0}")]
    Fenced(String),
    /// Stored data could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// One journaled command.
#[derive(Clone, Debug)]
pub struct JournalEntry {
    /// Its sequence number (1, 2, 3...: no gaps).
    pub seq: u64,
    /// The time the sequencer stamped on it.
    pub at: TimeMs,
    /// The command, as JSON.
    pub command_json: String,
}

/// A serialized engine snapshot taken after command `seq`.
#[derive(Clone, Debug)]
pub struct StoredSnapshot {
    /// The last command included.
    pub seq: u64,
    /// The engine's `state_hash()` at that point, to check a restore.
    pub state_hash: u64,
    /// The encoded `Snapshot`.
    pub state: Vec<u8>,
}

/// A lease's lifecycle event, for the audit trail and the lease-events feed.
#[derive(Clone, Debug)]
pub struct LeaseEventRow {
    /// The command that caused it.
    pub seq: u64,
    /// The lease.
    pub lease_id: LeaseId,
    /// Its buyer.
    pub buyer: Name,
    /// `opened`, `ready`, `forecast`, `notice`, `preempted`, `completed`, `released`, `failed`.
    pub kind: &'static str,
    /// When.
    pub at: TimeMs,
    /// For `forecast`: the expected reclaim time; for `notice`: when the notice ends.
    pub detail_at: Option<TimeMs>,
}

/// A capacity signal recorded as applied, in the transaction of the batch that applied it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedSignal {
    /// The capacity stream entry id.
    pub id: EntryId,
    /// The journal seq of the command it became.
    pub seq: u64,
    /// The engine's refusal code, if it refused the command.
    pub rejection: Option<String>,
}

/// A lease event as stored, with its lease as it is now (for the lease-events stream).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseEventRecord {
    /// The command that caused it.
    pub seq: u64,
    /// Its row id: increasing in commit order within and across commands.
    pub row_id: u64,
    /// The lease.
    pub lease_id: LeaseId,
    /// Its buyer.
    pub buyer: Name,
    /// `opened`, `forecast`, `notice`, `preempted`, `completed`, `released`, `changed`.
    pub kind: String,
    /// When.
    pub at: TimeMs,
    /// For `forecast`: the expected reclaim time; for `notice`: when the notice ends.
    pub detail_at: Option<TimeMs>,
    /// The lease's row now (`None` if it is missing).
    pub lease: Option<LeaseView>,
}

/// Everything one batch writes, in one transaction.
#[derive(Debug, Default)]
pub struct BatchRows {
    /// The commands.
    pub journal: Vec<JournalEntry>,
    /// Orders, latest view per id.
    pub orders: Vec<OrderView>,
    /// Leases, latest view per id.
    pub leases: Vec<LeaseView>,
    /// Trades (insert only).
    pub trades: Vec<TradeView>,
    /// Blocks, latest view per (supplier, block id).
    pub blocks: Vec<BlockView>,
    /// Lease lifecycle events.
    pub lease_events: Vec<LeaseEventRow>,
    /// Capacity signals the batch applied (their entry ids, recorded with their commands).
    pub applied_signals: Vec<AppliedSignal>,
    /// What each pool offered and leased over the batch, added to its minute's row.
    pub usage: Vec<UsageDelta>,
    /// The leadership epoch the batch was applied under: PostgreSQL commits it only while
    /// that epoch is current (DESIGN section 10); `None` for the single-process SQLite store.
    pub fence_epoch: Option<u64>,
}

fn upsert<K: Eq + std::hash::Hash, V>(
    rows: &mut Vec<V>,
    index: &mut HashMap<K, usize>,
    key: K,
    row: V,
) {
    // ON CONFLICT DO UPDATE may touch a row once per statement: keep the latest view only.
    match index.get(&key) {
        Some(&i) => rows[i] = row,
        None => {
            index.insert(key, rows.len());
            rows.push(row);
        }
    }
}

impl BatchRows {
    /// The rows a committed batch produces.
    pub fn from_batch(batch: &CommittedBatch) -> Result<BatchRows, StoreError> {
        let mut rows = BatchRows {
            usage: batch.usage.clone(),
            ..BatchRows::default()
        };
        let mut order_index = HashMap::new();
        let mut lease_index = HashMap::new();
        let mut block_index = HashMap::new();
        for record in &batch.records {
            rows.journal.push(JournalEntry {
                seq: record.seq,
                at: record.at,
                command_json: serde_json::to_string(&record.command)
                    .map_err(|e| StoreError::Corrupt(format!("encoding a command: {e}")))?,
            });
            if let Some(id) = record.signal {
                rows.applied_signals.push(AppliedSignal {
                    id,
                    seq: record.seq,
                    rejection: record.events.iter().find_map(|e| match e {
                        Event::Rejected { reason } => Some(reason.as_str().to_owned()),
                        _ => None,
                    }),
                });
            }
            for event in &record.events {
                match event {
                    Event::BidAccepted { order } | Event::OrderChanged { order } => {
                        upsert(&mut rows.orders, &mut order_index, order.id, order.clone())
                    }
                    Event::Traded { trade } => rows.trades.push(trade.clone()),
                    Event::LeaseOpened { lease } => {
                        rows.lease_events
                            .push(lease_event(record.seq, lease, "opened", None));
                        upsert(
                            &mut rows.leases,
                            &mut lease_index,
                            lease.id,
                            LeaseView::clone(lease),
                        );
                    }
                    Event::LeaseChanged { lease } => {
                        let readied = record.readied_lease() == Some(lease.id);
                        let (kind, detail_at) = match lease.status {
                            _ if readied => ("ready", None),
                            LeaseStatus::Active => ("changed", None),
                            LeaseStatus::Preempting => ("notice", lease.notice_ends_at),
                            LeaseStatus::Preempted => ("preempted", None),
                            LeaseStatus::Completed => ("completed", None),
                            LeaseStatus::Released => ("released", None),
                            LeaseStatus::Failed => ("failed", None),
                        };
                        rows.lease_events
                            .push(lease_event(record.seq, lease, kind, detail_at));
                        upsert(
                            &mut rows.leases,
                            &mut lease_index,
                            lease.id,
                            LeaseView::clone(lease),
                        );
                    }
                    Event::ReclaimForecast {
                        lease_id,
                        buyer,
                        reclaim_at,
                    } => rows.lease_events.push(LeaseEventRow {
                        seq: record.seq,
                        lease_id: *lease_id,
                        buyer: buyer.clone(),
                        kind: "forecast",
                        at: record.at,
                        detail_at: Some(*reclaim_at),
                    }),
                    Event::BlockChanged { block } => upsert(
                        &mut rows.blocks,
                        &mut block_index,
                        (block.supplier.clone(), block.block_id.clone()),
                        block.clone(),
                    ),
                    Event::Rejected { .. }
                    | Event::DuplicateClientOrderId { .. }
                    | Event::ReclaimAccepted { .. }
                    | Event::BookLevelChanged { .. }
                    | Event::AuctionCleared { .. }
                    | Event::PoolConfigured { .. }
                    | Event::KillSwitchChanged { .. }
                    | Event::AccountLimitsChanged { .. }
                    | Event::SshKeysChanged { .. } => {}
                }
            }
        }
        Ok(rows)
    }
}

fn lease_event(
    seq: u64,
    lease: &LeaseView,
    kind: &'static str,
    detail_at: Option<TimeMs>,
) -> LeaseEventRow {
    let at = match kind {
        "opened" => lease.started_at,
        "notice" => lease.preempted_at.unwrap_or(lease.started_at),
        "ready" => lease.access.ready_at.unwrap_or(lease.started_at),
        _ => lease.ended_at.unwrap_or(lease.started_at),
    };
    LeaseEventRow {
        seq,
        lease_id: lease.id,
        buyer: lease.buyer.clone(),
        kind,
        at,
        detail_at,
    }
}

/// A page of a list: optional status filter, ids below a cursor, newest first.
#[derive(Clone, Debug)]
pub struct ListFilter {
    /// Only rows with this status code (`open`, `active`, `closed`...).
    pub status: Option<String>,
    /// Only ids below this one (orders, leases) or block ids after this one (blocks).
    pub cursor: Option<String>,
    /// At most this many rows.
    pub limit: usize,
}

/// A trade as kept for market data (no account names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicTrade {
    /// Trade id.
    pub id: u64,
    /// Price.
    pub price: PriceMicros,
    /// GPUs.
    pub gpus: u32,
    /// Resting side.
    pub maker_side: Side,
    /// When.
    pub at: TimeMs,
}

/// Per-minute lease counts for market data warm-up.
#[derive(Clone, Debug)]
pub struct LeaseMinute {
    /// Pool.
    pub pool: String,
    /// Minute index (ms / 60,000).
    pub minute: i64,
    /// GPU-seconds of leases started in that minute (planned length).
    pub gpu_seconds_started: u64,
    /// Leases that ended in that minute.
    pub ended: u64,
    /// Of those, preempted.
    pub preempted: u64,
}

/// Recent market history for warming the in-memory market data at start.
#[derive(Clone, Debug, Default)]
pub struct MarketHistory {
    /// Recent trades by pool, oldest first.
    pub trades: Vec<(String, PublicTrade)>,
    /// Lease activity per minute.
    pub lease_minutes: Vec<LeaseMinute>,
}

/// The durable store.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies pending schema migrations.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// Answers if the database is reachable.
    async fn ping(&self) -> Result<(), StoreError>;
    /// The newest snapshot, if any.
    async fn latest_snapshot(&self) -> Result<Option<StoredSnapshot>, StoreError>;
    /// Journal entries after `after_seq`, in order, at most `limit`.
    async fn journal_after(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError>;
    /// Writes one batch atomically.
    async fn write_batch(&self, rows: &BatchRows) -> Result<(), StoreError>;
    /// Writes one batch atomically, in order after the batch `link` follows (still in
    /// flight): it commits only once that one committed, and fails (rolled back) when that one
    /// failed. This default writes it only once the previous batch committed, and reports no
    /// stage before `Committed` (so the sequencer cuts the next batch at this one's commit); a
    /// store that can run a batch's statements while the previous one commits overrides it.
    async fn write_batch_linked(
        &self,
        rows: &BatchRows,
        mut link: CommitLink,
    ) -> Result<(), StoreError> {
        link.previous_reached(BatchStage::Committed).await?;
        self.write_batch(rows).await?;
        link.reached(BatchStage::Committed);
        Ok(())
    }
    /// Stores a snapshot.
    async fn write_snapshot(&self, snapshot: &StoredSnapshot) -> Result<(), StoreError>;
    /// One of `account`'s orders.
    async fn order(&self, account: &str, id: OrderId) -> Result<Option<OrderView>, StoreError>;
    /// `account`'s orders, newest first.
    async fn orders(
        &self,
        account: &str,
        filter: &ListFilter,
    ) -> Result<Vec<OrderView>, StoreError>;
    /// One of `buyer`'s leases.
    async fn lease(&self, buyer: &str, id: LeaseId) -> Result<Option<LeaseView>, StoreError>;
    /// `buyer`'s leases, newest first.
    async fn leases(&self, buyer: &str, filter: &ListFilter) -> Result<Vec<LeaseView>, StoreError>;
    /// The leases one of `buyer`'s orders opened, oldest first.
    async fn leases_of_order(
        &self,
        buyer: &str,
        order_id: OrderId,
    ) -> Result<Vec<LeaseView>, StoreError>;
    /// One of `supplier`'s blocks.
    async fn block(&self, supplier: &str, block_id: &str) -> Result<Option<BlockView>, StoreError>;
    /// `supplier`'s blocks, by block id.
    async fn blocks(
        &self,
        supplier: &str,
        filter: &ListFilter,
    ) -> Result<Vec<BlockView>, StoreError>;
    /// The newest `limit` applied capacity signal ids, newest first.
    async fn applied_signals_newest(&self, limit: usize) -> Result<Vec<EntryId>, StoreError>;
    /// The records of those of `ids` that were applied.
    async fn applied_signals(&self, ids: &[EntryId]) -> Result<Vec<AppliedSignal>, StoreError>;
    /// Lease events after `(after_seq, after_row_id)` in commit order, at most `limit`.
    async fn lease_events_after(
        &self,
        after_seq: u64,
        after_row_id: u64,
        limit: usize,
    ) -> Result<Vec<LeaseEventRecord>, StoreError>;
    /// Every pool's usage minutes in `[from, to)` (all pools, or `pool`), by pool and minute.
    async fn usage(
        &self,
        from: TimeMs,
        to: TimeMs,
        pool: Option<&str>,
    ) -> Result<Vec<UsageDelta>, StoreError>;
    /// Every account's leases that ran at some time in `[from, to)` (all pools, or `pool`),
    /// at most `limit`, by id: the owner's report reads their costs.
    async fn leases_between(
        &self,
        from: TimeMs,
        to: TimeMs,
        pool: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LeaseView>, StoreError>;
    /// Trades and lease activity since `since`, at most `trades_per_pool` trades per pool.
    async fn market_history(
        &self,
        since: TimeMs,
        trades_per_pool: usize,
    ) -> Result<MarketHistory, StoreError>;
}

impl From<StoreError> for ApiError {
    /// A read the database did not answer is a retryable 503; anything else is a bug.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "database read failed");
                ApiError::StoreUnavailable
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}
