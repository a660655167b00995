//! The embedded SQLite store: the default when no `DATABASE_URL` is set.
//!
//! One file, `$OFFPEAK_DATA_DIR/offpeak.sqlite3`, in WAL mode with `synchronous = FULL`: a
//! batch's transaction is on disk (the WAL is fsynced) when `COMMIT` returns, so the
//! sequencer's rule "acknowledge only after commit" holds exactly as with PostgreSQL. The tables
//! and columns are the PostgreSQL ones (migrations under `migrations/sqlite/`), with times as
//! integer milliseconds since the epoch.
//!
//! rusqlite is synchronous, so every call runs on tokio's blocking pool (`spawn_blocking`),
//! never on an async worker. One connection writes (only the sequencer writes, one batch or
//! snapshot at a time, so a mutex around it never contends for long); a few read-only
//! connections serve request handlers' history reads concurrently, which WAL allows while a
//! write is in progress. A call that takes longer than the same limits as PostgreSQL's is
//! reported as [`StoreError::Unavailable`] (its outcome unknown: the journal decides on
//! recovery, as with PostgreSQL).

use super::{
    AppliedSignal, BatchRows, JournalEntry, LeaseEventRecord, LeaseMinute, ListFilter,
    MarketHistory, PublicTrade, Store, StoreError, StoredSnapshot,
};
use crate::journal::codes;
use crate::journal::EntryId;
use crate::limits::{
    DB_READ_TIMEOUT, DB_WRITE_TIMEOUT, SQLITE_BUSY_TIMEOUT, SQLITE_READ_CONNECTIONS_MAX,
};
use crate::timestamp::now_ms;
use async_trait::async_trait;
use matching_engine::{
    BlockView, LeaseId, LeaseView, Name, NodeGpus, OrderId, OrderView, PriceMicros, TimeMs,
};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The database file's name inside the data directory.
pub const DATABASE_FILE: &str = "offpeak.sqlite3";

/// Numbered migrations, applied in order at start; each runs once, in one transaction.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "applied_signals",
        include_str!("../../migrations/sqlite/0002_applied_signals.sql"),
    ),
];

/// The SQLite store.
pub struct SqliteStore {
    path: PathBuf,
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: AtomicUsize,
}

fn sqlite_error(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::*;
    match &e {
        rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
            // The file is locked by another process, the disk is full or failing, or the file
            // cannot be opened: conditions that may pass, like a lost PostgreSQL connection.
            DatabaseBusy | DatabaseLocked | SystemIoFailure | DiskFull | CannotOpen
            | OutOfMemory | ReadOnly => StoreError::Unavailable(e.to_string()),
            DatabaseCorrupt | NotADatabase => StoreError::Corrupt(e.to_string()),
            _ => StoreError::Query(e.to_string()),
        },
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..) => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Query(e.to_string()),
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        sqlite_error(e)
    }
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(SQLITE_BUSY_TIMEOUT)?;
    // WAL: readers never block the writer nor the other way round. FULL: the WAL is fsynced at
    // every commit, so a committed batch survives a power cut, not only a crash.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Query(format!(
            "SQLite refused WAL mode (journal_mode is {mode})"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Unavailable(format!(
                "creating the data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join(DATABASE_FILE);
        let writer = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&writer)?;
        let mut readers = Vec::with_capacity(SQLITE_READ_CONNECTIONS_MAX);
        for _ in 0..SQLITE_READ_CONNECTIONS_MAX {
            let reader = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            reader.busy_timeout(SQLITE_BUSY_TIMEOUT)?;
            reader.set_prepared_statement_cache_capacity(64);
            readers.push(Mutex::new(reader));
        }
        Ok(SqliteStore {
            path,
            writer: Arc::new(Mutex::new(writer)),
            readers: Arc::new(readers),
            next_reader: AtomicUsize::new(0),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` on the write connection, on the blocking pool, within `limit`.
    async fn write<T: Send + 'static>(
        &self,
        limit: Duration,
        what: &'static str,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let writer = self.writer.clone();
        within(limit, what, move || {
            // A panic while holding the lock poisons it; the connection itself is still
            // consistent (SQLite rolls back an unfinished transaction), so keep using it.
            let mut conn = writer.lock().unwrap_or_else(|p| p.into_inner());
            work(&mut conn)
        })
        .await
    }

    /// Runs `work` on one of the read connections, on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        what: &'static str,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = self.readers.clone();
        let first = self.next_reader.fetch_add(1, Ordering::Relaxed);
        within(DB_READ_TIMEOUT, what, move || {
            // Take a free connection if there is one, else wait for the round-robin pick.
            let n = readers.len();
            for i in 0..n {
                if let Ok(conn) = readers[(first + i) % n].try_lock() {
                    return work(&conn);
                }
            }
            let conn = readers[first % n].lock().unwrap_or_else(|p| p.into_inner());
            work(&conn)
        })
        .await
    }
}

async fn within<T: Send + 'static>(
    limit: Duration,
    what: &'static str,
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, tokio::task::spawn_blocking(work)).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(StoreError::Query(format!("{what} failed: {e}"))),
        Err(_) => Err(StoreError::Unavailable(format!(
            "{what} took longer than {} ms",
            limit.as_millis()
        ))),
    }
}

fn i64_of(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Query(format!("{what} {value} exceeds i64")))
}

fn u64_of(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value} is negative")))
}

fn u32_of(value: i64, what: &str) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value} is not a u32")))
}

fn i32_checked(value: u32, what: &str) -> Result<i64, StoreError> {
    // The PostgreSQL columns are `integer`: keep the same range so both backends accept the
    // same rows.
    i32::try_from(value)
        .map(i64::from)
        .map_err(|_| StoreError::Query(format!("{what} {value} exceeds integer")))
}

fn get<T: rusqlite::types::FromSql>(row: &Row<'_>, column: &str) -> Result<T, StoreError> {
    row.get(column)
        .map_err(|e| StoreError::Corrupt(format!("column {column}: {e}")))
}

fn time_of(row: &Row<'_>, column: &str) -> Result<TimeMs, StoreError> {
    Ok(TimeMs(get(row, column)?))
}

fn opt_time_of(row: &Row<'_>, column: &str) -> Result<Option<TimeMs>, StoreError> {
    Ok(get::<Option<i64>>(row, column)?.map(TimeMs))
}

fn name_of(row: &Row<'_>, column: &str) -> Result<Name, StoreError> {
    Ok(Name::from(get::<String>(row, column)?))
}

fn u64_col(row: &Row<'_>, column: &str) -> Result<u64, StoreError> {
    u64_of(get(row, column)?, column)
}

fn u32_col(row: &Row<'_>, column: &str) -> Result<u32, StoreError> {
    u32_of(get(row, column)?, column)
}

fn bool_col(row: &Row<'_>, column: &str) -> Result<bool, StoreError> {
    match get::<i64>(row, column)? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(StoreError::Corrupt(format!(
            "column {column}: {other} is not a boolean"
        ))),
    }
}

fn nodes_json(nodes: &[NodeGpus]) -> Result<String, StoreError> {
    serde_json::to_string(nodes).map_err(|e| StoreError::Query(format!("encoding nodes: {e}")))
}

fn nodes_of(row: &Row<'_>) -> Result<Vec<NodeGpus>, StoreError> {
    serde_json::from_str(&get::<String>(row, "nodes")?)
        .map_err(|e| StoreError::Corrupt(format!("nodes: {e}")))
}

fn decode<T>(value: &str, parse: fn(&str) -> Option<T>, what: &str) -> Result<T, StoreError> {
    parse(value).ok_or_else(|| StoreError::Corrupt(format!("{what} {value:?}")))
}

const ORDER_COLUMNS: &str = "id, account, pool, price_micros, gpus, remaining_gpus, filled_gpus, \
    min_gpus, duration_s, max_duration_s, tif, expires_at, persistent, client_order_id, status, \
    cancel_reason, created_at, updated_at";

fn order_of(row: &Row<'_>) -> Result<OrderView, StoreError> {
    Ok(OrderView {
        id: OrderId(u64_col(row, "id")?),
        account: name_of(row, "account")?,
        pool: name_of(row, "pool")?,
        price: PriceMicros(u64_col(row, "price_micros")?),
        gpus: u32_col(row, "gpus")?,
        remaining_gpus: u32_col(row, "remaining_gpus")?,
        filled_gpus: u32_col(row, "filled_gpus")?,
        min_gpus: u32_col(row, "min_gpus")?,
        duration_s: u32_col(row, "duration_s")?,
        max_duration_s: u32_col(row, "max_duration_s")?,
        tif: decode(&get::<String>(row, "tif")?, codes::parse_tif, "tif")?,
        expires_at: opt_time_of(row, "expires_at")?,
        persistent: bool_col(row, "persistent")?,
        client_order_id: get::<Option<String>>(row, "client_order_id")?.map(Name::from),
        status: decode(
            &get::<String>(row, "status")?,
            codes::parse_order_status,
            "order status",
        )?,
        cancel_reason: match get::<Option<String>>(row, "cancel_reason")? {
            Some(code) => Some(decode(&code, codes::parse_cancel_reason, "cancel reason")?),
            None => None,
        },
        created_at: time_of(row, "created_at")?,
        updated_at: time_of(row, "updated_at")?,
    })
}

const LEASE_COLUMNS: &str = "lease_no, order_id, buyer, supplier, pool, block_id, gpus, \
    price_micros, status, started_at, ends_at, notice_ends_at, preempted_at, emergency, \
    ended_at, cost_micros, nodes";

fn lease_of(row: &Row<'_>) -> Result<LeaseView, StoreError> {
    let order_id: String = get(row, "order_id")?;
    Ok(LeaseView {
        id: LeaseId(u64_col(row, "lease_no")?),
        order_id: OrderId(
            order_id
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("order_id {order_id:?}")))?,
        ),
        buyer: name_of(row, "buyer")?,
        supplier: name_of(row, "supplier")?,
        pool: name_of(row, "pool")?,
        block_id: name_of(row, "block_id")?,
        gpus: u32_col(row, "gpus")?,
        price: PriceMicros(u64_col(row, "price_micros")?),
        status: decode(
            &get::<String>(row, "status")?,
            codes::parse_lease_status,
            "lease status",
        )?,
        started_at: time_of(row, "started_at")?,
        ends_at: time_of(row, "ends_at")?,
        notice_ends_at: opt_time_of(row, "notice_ends_at")?,
        preempted_at: opt_time_of(row, "preempted_at")?,
        emergency: bool_col(row, "emergency")?,
        // No column yet: a stored lease reads as having promised nothing beyond the pool.
        notice_s: 0,
        ended_at: opt_time_of(row, "ended_at")?,
        cost_micros: u64_col(row, "cost_micros")?,
        nodes: nodes_of(row)?,
    })
}

const BLOCK_COLUMNS: &str = "supplier, block_id, pool, status, gpus, gpus_sold, gpus_unsold, \
    gpus_reclaimed, gpus_reclaiming, reserve_price_micros, available_from, available_until, \
    revenue_micros, reclaim_forecast_at, nodes, updated_at";

fn block_of(row: &Row<'_>) -> Result<BlockView, StoreError> {
    Ok(BlockView {
        supplier: name_of(row, "supplier")?,
        block_id: name_of(row, "block_id")?,
        pool: name_of(row, "pool")?,
        status: decode(
            &get::<String>(row, "status")?,
            codes::parse_block_status,
            "block status",
        )?,
        gpus: u32_col(row, "gpus")?,
        gpus_sold: u32_col(row, "gpus_sold")?,
        gpus_unsold: u32_col(row, "gpus_unsold")?,
        gpus_reclaimed: u32_col(row, "gpus_reclaimed")?,
        gpus_reclaiming: u32_col(row, "gpus_reclaiming")?,
        reserve_price: PriceMicros(u64_col(row, "reserve_price_micros")?),
        available_from: time_of(row, "available_from")?,
        available_until: time_of(row, "available_until")?,
        revenue_micros: u64_col(row, "revenue_micros")?,
        reclaim_forecast_at: opt_time_of(row, "reclaim_forecast_at")?,
        // Computed by the engine for live blocks; a stored (ended) block has none pending.
        reclaim_expected_at: None,
        nodes: nodes_of(row)?,
        updated_at: time_of(row, "updated_at")?,
    })
}

const INSERT_JOURNAL: &str = "INSERT INTO journal (seq, at_ms, command) VALUES (?1, ?2, ?3)";

const UPSERT_ORDER: &str = "INSERT INTO orders (id, account, pool, price_micros, gpus, \
    remaining_gpus, filled_gpus, min_gpus, duration_s, max_duration_s, tif, expires_at, \
    persistent, client_order_id, status, cancel_reason, created_at, updated_at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18) \
    ON CONFLICT (id) DO UPDATE SET price_micros = excluded.price_micros, gpus = excluded.gpus, \
    remaining_gpus = excluded.remaining_gpus, filled_gpus = excluded.filled_gpus, \
    min_gpus = excluded.min_gpus, expires_at = excluded.expires_at, status = excluded.status, \
    cancel_reason = excluded.cancel_reason, updated_at = excluded.updated_at";

const UPSERT_LEASE: &str = "INSERT INTO leases (id, order_id, buyer, pool, block_id, gpus, \
    price_micros, status, started_at, ends_at, notice_ends_at, ended_at, cost_micros, lease_no, \
    supplier, preempted_at, emergency, nodes, updated_at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19) \
    ON CONFLICT (id) DO UPDATE SET status = excluded.status, ends_at = excluded.ends_at, \
    notice_ends_at = excluded.notice_ends_at, ended_at = excluded.ended_at, \
    cost_micros = excluded.cost_micros, preempted_at = excluded.preempted_at, \
    emergency = excluded.emergency, nodes = excluded.nodes, updated_at = excluded.updated_at";

const INSERT_TRADE: &str = "INSERT INTO trades (id, pool, price_micros, gpus, order_id, \
    lease_id, buyer, supplier, block_id, maker_side, at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

const UPSERT_BLOCK: &str = "INSERT INTO blocks (supplier, block_id, pool, status, gpus, \
    gpus_sold, gpus_unsold, gpus_reclaimed, gpus_reclaiming, reserve_price_micros, \
    available_from, available_until, revenue_micros, reclaim_forecast_at, nodes, updated_at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
    ON CONFLICT (supplier, block_id) DO UPDATE SET status = excluded.status, \
    gpus = excluded.gpus, gpus_sold = excluded.gpus_sold, gpus_unsold = excluded.gpus_unsold, \
    gpus_reclaimed = excluded.gpus_reclaimed, gpus_reclaiming = excluded.gpus_reclaiming, \
    reserve_price_micros = excluded.reserve_price_micros, \
    available_from = excluded.available_from, available_until = excluded.available_until, \
    revenue_micros = excluded.revenue_micros, reclaim_forecast_at = excluded.reclaim_forecast_at, \
    nodes = excluded.nodes, updated_at = excluded.updated_at";

const INSERT_LEASE_EVENT: &str = "INSERT INTO lease_events (seq, lease_id, buyer, kind, at, \
    detail_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// Writes every row of a batch inside the caller's transaction.
fn write_rows(tx: &rusqlite::Transaction<'_>, rows: &BatchRows) -> Result<(), StoreError> {
    if !rows.journal.is_empty() {
        let mut statement = tx.prepare_cached(INSERT_JOURNAL)?;
        for entry in &rows.journal {
            statement.execute(params![
                i64_of(entry.seq, "seq")?,
                entry.at.0,
                entry.command_json
            ])?;
        }
    }
    if !rows.orders.is_empty() {
        let mut statement = tx.prepare_cached(UPSERT_ORDER)?;
        for o in &rows.orders {
            statement.execute(params![
                i64_of(o.id.0, "order id")?,
                &*o.account,
                &*o.pool,
                i64_of(o.price.0, "price")?,
                i32_checked(o.gpus, "gpus")?,
                i32_checked(o.remaining_gpus, "remaining_gpus")?,
                i32_checked(o.filled_gpus, "filled_gpus")?,
                i32_checked(o.min_gpus, "min_gpus")?,
                i32_checked(o.duration_s, "duration_s")?,
                i32_checked(o.max_duration_s, "max_duration_s")?,
                codes::tif(o.tif),
                o.expires_at.map(|t| t.0),
                o.persistent,
                o.client_order_id.as_deref(),
                codes::order_status(o.status),
                o.cancel_reason.map(codes::cancel_reason),
                o.created_at.0,
                o.updated_at.0,
            ])?;
        }
    }
    if !rows.leases.is_empty() {
        let updated_at = now_ms().0;
        let mut statement = tx.prepare_cached(UPSERT_LEASE)?;
        for l in &rows.leases {
            statement.execute(params![
                l.id.to_string(),
                l.order_id.to_string(),
                &*l.buyer,
                &*l.pool,
                &*l.block_id,
                i32_checked(l.gpus, "gpus")?,
                i64_of(l.price.0, "price")?,
                codes::lease_status(l.status),
                l.started_at.0,
                l.ends_at.0,
                l.notice_ends_at.map(|t| t.0),
                l.ended_at.map(|t| t.0),
                i64_of(l.cost_micros, "cost")?,
                i64_of(l.id.0, "lease id")?,
                &*l.supplier,
                l.preempted_at.map(|t| t.0),
                l.emergency,
                nodes_json(&l.nodes)?,
                updated_at,
            ])?;
        }
    }
    if !rows.trades.is_empty() {
        let mut statement = tx.prepare_cached(INSERT_TRADE)?;
        for t in &rows.trades {
            statement.execute(params![
                i64_of(t.id.0, "trade id")?,
                &*t.pool,
                i64_of(t.price.0, "price")?,
                i32_checked(t.gpus, "gpus")?,
                i64_of(t.order_id.0, "order id")?,
                i64_of(t.lease_id.0, "lease id")?,
                &*t.buyer,
                &*t.supplier,
                &*t.block_id,
                codes::side(t.maker_side),
                t.at.0,
            ])?;
        }
    }
    if !rows.blocks.is_empty() {
        let mut statement = tx.prepare_cached(UPSERT_BLOCK)?;
        for b in &rows.blocks {
            statement.execute(params![
                &*b.supplier,
                &*b.block_id,
                &*b.pool,
                codes::block_status(b.status),
                i32_checked(b.gpus, "gpus")?,
                i32_checked(b.gpus_sold, "gpus_sold")?,
                i32_checked(b.gpus_unsold, "gpus_unsold")?,
                i32_checked(b.gpus_reclaimed, "gpus_reclaimed")?,
                i32_checked(b.gpus_reclaiming, "gpus_reclaiming")?,
                i64_of(b.reserve_price.0, "reserve price")?,
                b.available_from.0,
                b.available_until.0,
                i64_of(b.revenue_micros, "revenue")?,
                b.reclaim_forecast_at.map(|t| t.0),
                nodes_json(&b.nodes)?,
                b.updated_at.0,
            ])?;
        }
    }
    if !rows.lease_events.is_empty() {
        let mut statement = tx.prepare_cached(INSERT_LEASE_EVENT)?;
        for e in &rows.lease_events {
            statement.execute(params![
                i64_of(e.seq, "seq")?,
                e.lease_id.to_string(),
                &*e.buyer,
                e.kind,
                e.at.0,
                e.detail_at.map(|t| t.0),
            ])?;
        }
    }
    if !rows.applied_signals.is_empty() {
        // No ON CONFLICT: recording an id twice must fail the batch, never apply it twice.
        let mut statement = tx.prepare_cached(
            "INSERT INTO applied_signals (id_ms, id_seq, seq, rejection) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for signal in &rows.applied_signals {
            statement.execute(params![
                i64_of(signal.id.ms, "signal id")?,
                i64_of(signal.id.seq, "signal id")?,
                i64_of(signal.seq, "seq")?,
                signal.rejection.as_deref(),
            ])?;
        }
    }
    Ok(())
}

const SELECT_LEASE_EVENTS_AFTER: &str = "SELECT e.id AS row_id, e.seq, e.lease_id AS event_lease, \
    e.buyer AS event_buyer, e.kind, e.at AS event_at, e.detail_at, l.lease_no, l.order_id, \
    l.buyer, l.supplier, l.pool, l.block_id, l.gpus, l.price_micros, l.status, l.started_at, \
    l.ends_at, l.notice_ends_at, l.preempted_at, l.emergency, l.ended_at, l.cost_micros, l.nodes \
    FROM lease_events e LEFT JOIN leases l ON l.id = e.lease_id \
    WHERE (e.seq, e.id) > (?1, ?2) ORDER BY e.seq, e.id LIMIT ?3";

fn lease_event_of(row: &Row<'_>) -> Result<LeaseEventRecord, StoreError> {
    let lease_id: String = get(row, "event_lease")?;
    Ok(LeaseEventRecord {
        seq: u64_col(row, "seq")?,
        row_id: u64_col(row, "row_id")?,
        lease_id: LeaseId(
            lease_id
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("lease_id {lease_id:?}")))?,
        ),
        buyer: name_of(row, "event_buyer")?,
        kind: get(row, "kind")?,
        at: time_of(row, "event_at")?,
        detail_at: opt_time_of(row, "detail_at")?,
        lease: match get::<Option<i64>>(row, "lease_no")? {
            Some(_) => Some(lease_of(row)?),
            None => None,
        },
    })
}

fn limit_of(filter: &ListFilter) -> i64 {
    i64::try_from(filter.limit).unwrap_or(i64::MAX)
}

fn id_cursor(filter: &ListFilter) -> Option<i64> {
    // A cursor that is not an id names nothing below it: an empty page, not an error.
    filter
        .cursor
        .as_deref()
        .map(|c| c.parse::<i64>().unwrap_or(i64::MIN))
}

/// `floor(column / 60000)` in SQL, for negative times too (SQLite's `/` truncates toward zero).
fn minute_of(column: &str) -> String {
    format!(
        "(CASE WHEN {column} >= 0 THEN {column} / 60000 ELSE -((59999 - {column}) / 60000) END)"
    )
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version     INTEGER PRIMARY KEY,
            name        TEXT    NOT NULL,
            applied_at  INTEGER NOT NULL
        ) STRICT",
    )?;
    let applied: Vec<i64> = {
        let mut statement = tx.prepare("SELECT version FROM schema_migrations ORDER BY version")?;
        let versions = statement
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        versions
    };
    if let Some(unknown) = applied
        .iter()
        .find(|v| !MIGRATIONS.iter().any(|(known, _, _)| known == *v))
    {
        return Err(StoreError::Corrupt(format!(
            "the database has migration {unknown}, which this binary does not know: it is newer than this binary"
        )));
    }
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![version, name, now_ms().0],
        )?;
        tracing::info!(version, name, "applied SQLite migration");
    }
    tx.commit()?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        self.write(DB_WRITE_TIMEOUT * 6, "migrations", migrate)
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read("ping", |conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    async fn latest_snapshot(&self) -> Result<Option<StoredSnapshot>, StoreError> {
        self.write(DB_WRITE_TIMEOUT * 6, "loading the snapshot", |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT seq, state_hash, state FROM snapshots ORDER BY seq DESC LIMIT 1",
            )?;
            let mut rows = statement.query([])?;
            match rows.next()? {
                Some(row) => Ok(Some(StoredSnapshot {
                    seq: u64_col(row, "seq")?,
                    // 64 opaque bits, kept as a two's-complement integer.
                    state_hash: get::<i64>(row, "state_hash")? as u64,
                    state: get(row, "state")?,
                })),
                None => Ok(None),
            }
        })
        .await
    }

    async fn journal_after(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        self.write(DB_WRITE_TIMEOUT * 6, "reading the journal", move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT seq, at_ms, command FROM journal WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let mut rows = statement.query(params![
                i64_of(after_seq, "seq")?,
                i64::try_from(limit).unwrap_or(i64::MAX)
            ])?;
            let mut entries = Vec::new();
            while let Some(row) = rows.next()? {
                entries.push(JournalEntry {
                    seq: u64_col(row, "seq")?,
                    at: time_of(row, "at_ms")?,
                    command_json: get(row, "command")?,
                });
            }
            Ok(entries)
        })
        .await
    }

    async fn write_batch(&self, rows: &BatchRows) -> Result<(), StoreError> {
        // The rows move to the blocking thread; a batch is written once, so the copy is the
        // price of not holding a borrow across the thread boundary.
        let rows = BatchRows {
            journal: rows.journal.clone(),
            orders: rows.orders.clone(),
            leases: rows.leases.clone(),
            trades: rows.trades.clone(),
            blocks: rows.blocks.clone(),
            lease_events: rows.lease_events.clone(),
            applied_signals: rows.applied_signals.clone(),
        };
        self.write(DB_WRITE_TIMEOUT, "the batch transaction", move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            write_rows(&tx, &rows)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn write_snapshot(&self, snapshot: &StoredSnapshot) -> Result<(), StoreError> {
        let snapshot = snapshot.clone();
        self.write(DB_WRITE_TIMEOUT * 6, "writing the snapshot", move |conn| {
            conn.prepare_cached(
                "INSERT INTO snapshots (seq, state_hash, state, taken_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (seq) DO NOTHING",
            )?
            .execute(params![
                i64_of(snapshot.seq, "seq")?,
                snapshot.state_hash as i64,
                snapshot.state,
                now_ms().0
            ])?;
            // Older snapshots only cost space: the journal is kept whole.
            conn.prepare_cached(
                "DELETE FROM snapshots WHERE seq NOT IN \
                 (SELECT seq FROM snapshots ORDER BY seq DESC LIMIT ?1)",
            )?
            .execute(params![crate::limits::SNAPSHOTS_KEPT])?;
            Ok(())
        })
        .await
    }

    async fn order(&self, account: &str, id: OrderId) -> Result<Option<OrderView>, StoreError> {
        let Ok(id) = i64::try_from(id.0) else {
            return Ok(None);
        };
        let account = account.to_owned();
        self.read("reading an order", move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1 AND account = ?2"
            ))?
            .query_row(params![id, account], |row| Ok(order_of(row)))
            .optional()?
            .transpose()
        })
        .await
    }

    async fn orders(
        &self,
        account: &str,
        filter: &ListFilter,
    ) -> Result<Vec<OrderView>, StoreError> {
        let (account, filter) = (account.to_owned(), filter.clone());
        self.read("listing orders", move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {ORDER_COLUMNS} FROM orders WHERE account = ?1 \
                 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR id < ?3) \
                 ORDER BY id DESC LIMIT ?4"
            ))?;
            let mut rows = statement.query(params![
                account,
                filter.status,
                id_cursor(&filter),
                limit_of(&filter)
            ])?;
            let mut orders = Vec::new();
            while let Some(row) = rows.next()? {
                orders.push(order_of(row)?);
            }
            Ok(orders)
        })
        .await
    }

    async fn lease(&self, buyer: &str, id: LeaseId) -> Result<Option<LeaseView>, StoreError> {
        let buyer = buyer.to_owned();
        self.read("reading a lease", move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {LEASE_COLUMNS} FROM leases WHERE id = ?1 AND buyer = ?2"
            ))?
            .query_row(params![id.to_string(), buyer], |row| Ok(lease_of(row)))
            .optional()?
            .transpose()
        })
        .await
    }

    async fn leases(&self, buyer: &str, filter: &ListFilter) -> Result<Vec<LeaseView>, StoreError> {
        let (buyer, filter) = (buyer.to_owned(), filter.clone());
        self.read("listing leases", move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {LEASE_COLUMNS} FROM leases WHERE buyer = ?1 \
                 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR lease_no < ?3) \
                 ORDER BY lease_no DESC LIMIT ?4"
            ))?;
            let mut rows = statement.query(params![
                buyer,
                filter.status,
                id_cursor(&filter),
                limit_of(&filter)
            ])?;
            let mut leases = Vec::new();
            while let Some(row) = rows.next()? {
                leases.push(lease_of(row)?);
            }
            Ok(leases)
        })
        .await
    }

    async fn leases_of_order(
        &self,
        buyer: &str,
        order_id: OrderId,
    ) -> Result<Vec<LeaseView>, StoreError> {
        let buyer = buyer.to_owned();
        self.read("listing an order's leases", move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {LEASE_COLUMNS} FROM leases WHERE order_id = ?1 AND buyer = ?2 \
                 ORDER BY lease_no"
            ))?;
            let mut rows = statement.query(params![order_id.to_string(), buyer])?;
            let mut leases = Vec::new();
            while let Some(row) = rows.next()? {
                leases.push(lease_of(row)?);
            }
            Ok(leases)
        })
        .await
    }

    async fn block(&self, supplier: &str, block_id: &str) -> Result<Option<BlockView>, StoreError> {
        let (supplier, block_id) = (supplier.to_owned(), block_id.to_owned());
        self.read("reading a block", move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {BLOCK_COLUMNS} FROM blocks WHERE supplier = ?1 AND block_id = ?2"
            ))?
            .query_row(params![supplier, block_id], |row| Ok(block_of(row)))
            .optional()?
            .transpose()
        })
        .await
    }

    async fn blocks(
        &self,
        supplier: &str,
        filter: &ListFilter,
    ) -> Result<Vec<BlockView>, StoreError> {
        let (supplier, filter) = (supplier.to_owned(), filter.clone());
        self.read("listing blocks", move |conn| {
            // `BINARY` collation: byte order, as PostgreSQL's "C" order for these ASCII ids.
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {BLOCK_COLUMNS} FROM blocks WHERE supplier = ?1 \
                 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR block_id > ?3) \
                 ORDER BY block_id LIMIT ?4"
            ))?;
            let mut rows = statement.query(params![
                supplier,
                filter.status,
                filter.cursor,
                limit_of(&filter)
            ])?;
            let mut blocks = Vec::new();
            while let Some(row) = rows.next()? {
                blocks.push(block_of(row)?);
            }
            Ok(blocks)
        })
        .await
    }

    async fn applied_signals_newest(&self, limit: usize) -> Result<Vec<EntryId>, StoreError> {
        self.write(DB_WRITE_TIMEOUT * 6, "loading applied signals", move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT id_ms, id_seq FROM applied_signals ORDER BY id_ms DESC, id_seq DESC LIMIT ?1",
            )?;
            let mut rows = statement.query(params![i64::try_from(limit).unwrap_or(i64::MAX)])?;
            let mut ids = Vec::new();
            while let Some(row) = rows.next()? {
                ids.push(EntryId::new(u64_col(row, "id_ms")?, u64_col(row, "id_seq")?));
            }
            Ok(ids)
        })
        .await
    }

    async fn applied_signals(&self, ids: &[EntryId]) -> Result<Vec<AppliedSignal>, StoreError> {
        // An id beyond i64 was never recorded.
        let ids: Vec<EntryId> = ids.iter().copied().filter(|id| id.fits_i64()).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.read("reading applied signals", move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT id_ms, id_seq, seq, rejection FROM applied_signals \
                 WHERE id_ms = ?1 AND id_seq = ?2",
            )?;
            let mut found = Vec::new();
            for id in ids {
                let mut rows = statement.query(params![id.ms as i64, id.seq as i64])?;
                if let Some(row) = rows.next()? {
                    found.push(AppliedSignal {
                        id,
                        seq: u64_col(row, "seq")?,
                        rejection: get(row, "rejection")?,
                    });
                }
            }
            Ok(found)
        })
        .await
    }

    async fn lease_events_after(
        &self,
        after_seq: u64,
        after_row_id: u64,
        limit: usize,
    ) -> Result<Vec<LeaseEventRecord>, StoreError> {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let (after_seq, after_row_id) = (clamp(after_seq), clamp(after_row_id));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read("reading lease events", move |conn| {
            let mut statement = conn.prepare_cached(SELECT_LEASE_EVENTS_AFTER)?;
            let mut rows = statement.query(params![after_seq, after_row_id, limit])?;
            let mut events = Vec::new();
            while let Some(row) = rows.next()? {
                events.push(lease_event_of(row)?);
            }
            Ok(events)
        })
        .await
    }

    async fn market_history(
        &self,
        since: TimeMs,
        trades_per_pool: usize,
    ) -> Result<MarketHistory, StoreError> {
        self.write(
            DB_WRITE_TIMEOUT * 6,
            "loading market history",
            move |conn| {
                let per_pool = i64::try_from(trades_per_pool).unwrap_or(i64::MAX);
                let mut history = MarketHistory::default();
                {
                    let mut statement = conn.prepare_cached(
                        "SELECT pool, id, price_micros, gpus, maker_side, at FROM ( \
                       SELECT pool, id, price_micros, gpus, maker_side, at, \
                              row_number() OVER (PARTITION BY pool ORDER BY id DESC) AS n \
                       FROM trades WHERE at >= ?1) recent \
                     WHERE n <= ?2 ORDER BY id",
                    )?;
                    let mut rows = statement.query(params![since.0, per_pool])?;
                    while let Some(row) = rows.next()? {
                        history.trades.push((
                            get::<String>(row, "pool")?,
                            PublicTrade {
                                id: u64_col(row, "id")?,
                                price: PriceMicros(u64_col(row, "price_micros")?),
                                gpus: u32_col(row, "gpus")?,
                                maker_side: decode(
                                    &get::<String>(row, "maker_side")?,
                                    codes::parse_side,
                                    "side",
                                )?,
                                at: time_of(row, "at")?,
                            },
                        ));
                    }
                }
                {
                    // Planned GPU-seconds, rounded to whole seconds like PostgreSQL's
                    // `extract(epoch ...)::int8`.
                    let mut statement = conn.prepare_cached(&format!(
                        "SELECT pool, {minute} AS minute, \
                       sum(gpus * ((max(ends_at - started_at, 0) + 500) / 1000)) AS gpu_seconds \
                     FROM leases WHERE started_at >= ?1 GROUP BY 1, 2",
                        minute = minute_of("started_at")
                    ))?;
                    let mut rows = statement.query(params![since.0])?;
                    while let Some(row) = rows.next()? {
                        history.lease_minutes.push(LeaseMinute {
                            pool: get(row, "pool")?,
                            minute: get(row, "minute")?,
                            gpu_seconds_started: u64_col(row, "gpu_seconds")?,
                            ended: 0,
                            preempted: 0,
                        });
                    }
                }
                {
                    let mut statement = conn.prepare_cached(&format!(
                        "SELECT pool, {minute} AS minute, count(*) AS ended, \
                       sum(status = 'preempted') AS preempted \
                     FROM leases WHERE ended_at >= ?1 GROUP BY 1, 2",
                        minute = minute_of("ended_at")
                    ))?;
                    let mut rows = statement.query(params![since.0])?;
                    while let Some(row) = rows.next()? {
                        history.lease_minutes.push(LeaseMinute {
                            pool: get(row, "pool")?,
                            minute: get(row, "minute")?,
                            gpu_seconds_started: 0,
                            ended: u64_col(row, "ended")?,
                            preempted: u64_col(row, "preempted")?,
                        });
                    }
                }
                Ok(history)
            },
        )
        .await
    }
}

/// Opens the SQLite store in `data_dir` as a trait object.
pub fn open(data_dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(SqliteStore::open(data_dir)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commits_are_durable_wal_with_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store.migrate().await.unwrap();
        let (mode, sync) = store
            .write(DB_WRITE_TIMEOUT, "pragmas", |conn| {
                let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
                let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
                Ok((mode, sync))
            })
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        // 2 is FULL: the WAL is fsynced at every commit.
        assert_eq!(sync, 2);
        assert_eq!(store.path(), dir.path().join(DATABASE_FILE));
    }

    #[tokio::test]
    async fn a_database_from_a_newer_binary_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store.migrate().await.unwrap();
        store
            .write(DB_WRITE_TIMEOUT, "a future migration", |conn| {
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, 'future', 0)",
                    [],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        let error = store.migrate().await.unwrap_err();
        assert!(matches!(error, StoreError::Corrupt(_)), "{error:?}");
    }

    #[test]
    fn a_data_dir_that_is_a_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        assert!(SqliteStore::open(&file).is_err());
    }
}
