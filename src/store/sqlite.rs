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

mod batch;

use super::rows::{
    self, applied_signal_of, bigint_or_max, block_of, i64_of, id_cursor, journal_entry_of,
    lease_event_of, lease_minute_ended_of, lease_minute_started_of, lease_of, limit_of, order_of,
    public_trade_of, signal_id_of, snapshot_of, usage_of, BLOCK_COLUMNS, LEASE_COLUMNS,
    ORDER_COLUMNS, SELECT_LEASE_EVENTS,
};
use super::{
    AppliedSignal, BatchRows, JournalEntry, LeaseEventRecord, ListFilter, MarketHistory, Store,
    StoreError, StoredSnapshot,
};
use crate::journal::{EntryId, UsageDelta};
use crate::limits::{
    DB_READ_TIMEOUT, DB_WRITE_TIMEOUT, SQLITE_BUSY_TIMEOUT, SQLITE_READ_CONNECTIONS_MAX,
};
use crate::timestamp::now_ms;
use async_trait::async_trait;
use matching_engine::{BlockView, LeaseId, LeaseView, OrderId, OrderView, TimeMs};
use rusqlite::types::ValueRef;
use rusqlite::{
    params, Connection, OpenFlags, OptionalExtension, Params, Row, TransactionBehavior,
};
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
    (
        3,
        "lease_notice",
        include_str!("../../migrations/sqlite/0003_lease_notice.sql"),
    ),
    (
        4,
        "handoff",
        include_str!("../../migrations/sqlite/0004_handoff.sql"),
    ),
    (
        5,
        "pool_usage",
        include_str!("../../migrations/sqlite/0005_pool_usage.sql"),
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

    /// Every row `sql` returns for `params`, on a read connection, through `map`.
    async fn read_all<T: Send + 'static>(
        &self,
        what: &'static str,
        sql: String,
        params: impl Params + Send + 'static,
        map: fn(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        self.read(what, move |conn| query_all(conn, &sql, params, map))
            .await
    }

    /// The row `sql` returns for `params`, if any, on a read connection, through `map`.
    async fn read_one<T: Send + 'static>(
        &self,
        what: &'static str,
        sql: String,
        params: impl Params + Send + 'static,
        map: fn(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        self.read(what, move |conn| {
            conn.prepare_cached(&sql)?
                .query_row(params, |row| Ok(map(row)))
                .optional()?
                .transpose()
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

fn get<T: rusqlite::types::FromSql>(row: &Row<'_>, column: &str) -> Result<T, StoreError> {
    row.get(column)
        .map_err(|e| StoreError::Corrupt(format!("column {column}: {e}")))
}

fn get_ref<'a>(row: &'a Row<'_>, column: &str) -> Result<ValueRef<'a>, StoreError> {
    row.get_ref(column)
        .map_err(|e| StoreError::Corrupt(format!("column {column}: {e}")))
}

fn text_of<'a>(value: ValueRef<'a>, column: &str) -> Result<Option<&'a str>, StoreError> {
    value
        .as_str_or_null()
        .map_err(|e| StoreError::Corrupt(format!("column {column}: {e}")))
}

impl rows::Row for Row<'_> {
    fn i64(&self, column: &str) -> Result<i64, StoreError> {
        get(self, column)
    }

    fn opt_i64(&self, column: &str) -> Result<Option<i64>, StoreError> {
        get(self, column)
    }

    fn int(&self, column: &str) -> Result<i64, StoreError> {
        get(self, column)
    }

    fn text(&self, column: &str) -> Result<&str, StoreError> {
        text_of(get_ref(self, column)?, column)?
            .ok_or_else(|| StoreError::Corrupt(format!("column {column}: NULL")))
    }

    fn opt_text(&self, column: &str) -> Result<Option<&str>, StoreError> {
        text_of(get_ref(self, column)?, column)
    }

    fn bool(&self, column: &str) -> Result<bool, StoreError> {
        match get::<i64>(self, column)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(StoreError::Corrupt(format!(
                "column {column}: {other} is not a boolean"
            ))),
        }
    }

    fn time(&self, column: &str) -> Result<TimeMs, StoreError> {
        Ok(TimeMs(get(self, column)?))
    }

    fn opt_time(&self, column: &str) -> Result<Option<TimeMs>, StoreError> {
        Ok(get::<Option<i64>>(self, column)?.map(TimeMs))
    }

    fn bytes(&self, column: &str) -> Result<Vec<u8>, StoreError> {
        get(self, column)
    }
}

/// Every row `sql` returns for `params`, through `map`.
fn query_all<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    map: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    let rows = statement.query_and_then(params, map)?;
    rows.collect()
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
            conn.prepare_cached(
                "SELECT seq, state_hash, state FROM snapshots ORDER BY seq DESC LIMIT 1",
            )?
            .query_row([], |row| Ok(snapshot_of(row)))
            .optional()?
            .transpose()
        })
        .await
    }

    async fn journal_after(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        self.write(DB_WRITE_TIMEOUT * 6, "reading the journal", move |conn| {
            query_all(
                conn,
                "SELECT seq, at_ms, command FROM journal WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                params![i64_of(after_seq, "seq")?, bigint_or_max(limit)],
                |row| journal_entry_of(row),
            )
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
            usage: rows.usage.clone(),
            fence_epoch: None,
        };
        self.write(DB_WRITE_TIMEOUT, "the batch transaction", move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            batch::write_rows(&tx, &rows)?;
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
        self.read_one(
            "reading an order",
            format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1 AND account = ?2"),
            (id, account.to_owned()),
            |row| order_of(row),
        )
        .await
    }

    async fn orders(
        &self,
        account: &str,
        filter: &ListFilter,
    ) -> Result<Vec<OrderView>, StoreError> {
        self.read_all(
            "listing orders",
            format!(
                "SELECT {ORDER_COLUMNS} FROM orders WHERE account = ?1 \
                 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR id < ?3) \
                 ORDER BY id DESC LIMIT ?4"
            ),
            (
                account.to_owned(),
                filter.status.clone(),
                id_cursor(filter),
                limit_of(filter),
            ),
            |row| order_of(row),
        )
        .await
    }

    async fn lease(&self, buyer: &str, id: LeaseId) -> Result<Option<LeaseView>, StoreError> {
        self.read_one(
            "reading a lease",
            format!("SELECT {LEASE_COLUMNS} FROM leases WHERE id = ?1 AND buyer = ?2"),
            (id.to_string(), buyer.to_owned()),
            |row| lease_of(row),
        )
        .await
    }

    async fn leases(&self, buyer: &str, filter: &ListFilter) -> Result<Vec<LeaseView>, StoreError> {
        self.read_all(
            "listing leases",
            format!(
                "SELECT {LEASE_COLUMNS} FROM leases WHERE buyer = ?1 \
                 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR lease_no < ?3) \
                 ORDER BY lease_no DESC LIMIT ?4"
            ),
            (
                buyer.to_owned(),
                filter.status.clone(),
                id_cursor(filter),
                limit_of(filter),
            ),
            |row| lease_of(row),
        )
        .await
    }

    async fn leases_of_order(
        &self,
        buyer: &str,
        order_id: OrderId,
    ) -> Result<Vec<LeaseView>, StoreError> {
        self.read_all(
            "listing an order's leases",
            format!(
                "SELECT {LEASE_COLUMNS} FROM leases WHERE order_id = ?1 AND buyer = ?2 \
                 ORDER BY lease_no"
            ),
            (order_id.to_string(), buyer.to_owned()),
            |row| lease_of(row),
        )
        .await
    }

    async fn block(&self, supplier: &str, block_id: &str) -> Result<Option<BlockView>, StoreError> {
        self.read_one(
            "reading a block",
            format!("SELECT {BLOCK_COLUMNS} FROM blocks WHERE supplier = ?1 AND block_id = ?2"),
            (supplier.to_owned(), block_id.to_owned()),
            |row| block_of(row),
        )
        .await
    }

    async fn blocks(
        &self,
        supplier: &str,
        filter: &ListFilter,
    ) -> Result<Vec<BlockView>, StoreError> {
        // `BINARY` collation: byte order, as PostgreSQL's "C" order for these ASCII ids.
        self.read_all(
            "listing blocks",
            format!(
                "SELECT {BLOCK_COLUMNS} FROM blocks WHERE supplier = ?1 \
                 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR block_id > ?3) \
                 ORDER BY block_id LIMIT ?4"
            ),
            (
                supplier.to_owned(),
                filter.status.clone(),
                filter.cursor.clone(),
                limit_of(filter),
            ),
            |row| block_of(row),
        )
        .await
    }

    async fn applied_signals_newest(&self, limit: usize) -> Result<Vec<EntryId>, StoreError> {
        self.write(DB_WRITE_TIMEOUT * 6, "loading applied signals", move |conn| {
            query_all(
                conn,
                "SELECT id_ms, id_seq FROM applied_signals ORDER BY id_ms DESC, id_seq DESC LIMIT ?1",
                params![bigint_or_max(limit)],
                |row| signal_id_of(row),
            )
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
                    found.push(applied_signal_of(row)?);
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
        let after = (bigint_or_max(after_seq), bigint_or_max(after_row_id));
        self.read_all(
            "reading lease events",
            format!(
                "{SELECT_LEASE_EVENTS} WHERE (e.seq, e.id) > (?1, ?2) \
                 ORDER BY e.seq, e.id LIMIT ?3"
            ),
            (after.0, after.1, bigint_or_max(limit)),
            |row| lease_event_of(row),
        )
        .await
    }

    async fn usage(
        &self,
        from: TimeMs,
        to: TimeMs,
        pool: Option<&str>,
    ) -> Result<Vec<UsageDelta>, StoreError> {
        self.read_all(
            "reading pool usage",
            "SELECT pool, minute, offered_gpu_ms, leased_gpu_ms FROM pool_usage \
             WHERE minute >= ?1 AND minute < ?2 AND (?3 IS NULL OR pool = ?3) \
             ORDER BY pool, minute"
                .to_owned(),
            (from.0, to.0, pool.map(str::to_owned)),
            |row| usage_of(row),
        )
        .await
    }

    async fn leases_between(
        &self,
        from: TimeMs,
        to: TimeMs,
        pool: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LeaseView>, StoreError> {
        self.read_all(
            "reading leases for the report",
            format!(
                "SELECT {LEASE_COLUMNS} FROM leases WHERE started_at < ?2 \
                 AND (ended_at IS NULL OR ended_at > ?1) AND (?3 IS NULL OR pool = ?3) \
                 ORDER BY lease_no LIMIT ?4"
            ),
            (from.0, to.0, pool.map(str::to_owned), bigint_or_max(limit)),
            |row| lease_of(row),
        )
        .await
    }

    async fn market_history(
        &self,
        since: TimeMs,
        trades_per_pool: usize,
    ) -> Result<MarketHistory, StoreError> {
        let per_pool = bigint_or_max(trades_per_pool);
        self.write(
            DB_WRITE_TIMEOUT * 6,
            "loading market history",
            move |conn| {
                let trades = query_all(
                    conn,
                    "SELECT pool, id, price_micros, gpus, maker_side, at FROM ( \
                   SELECT pool, id, price_micros, gpus, maker_side, at, \
                          row_number() OVER (PARTITION BY pool ORDER BY id DESC) AS n \
                   FROM trades WHERE at >= ?1) recent \
                 WHERE n <= ?2 ORDER BY id",
                    params![since.0, per_pool],
                    |row| public_trade_of(row),
                )?;
                // Planned GPU-seconds, rounded to whole seconds like PostgreSQL's
                // `extract(epoch ...)::int8`.
                let mut lease_minutes = query_all(
                    conn,
                    &format!(
                        "SELECT pool, {minute} AS minute, \
                       sum(gpus * ((max(ends_at - started_at, 0) + 500) / 1000)) AS gpu_seconds \
                     FROM leases WHERE started_at >= ?1 GROUP BY 1, 2",
                        minute = minute_of("started_at")
                    ),
                    params![since.0],
                    |row| lease_minute_started_of(row),
                )?;
                lease_minutes.extend(query_all(
                    conn,
                    &format!(
                        "SELECT pool, {minute} AS minute, count(*) AS ended, \
                       sum(status = 'preempted') AS preempted \
                     FROM leases WHERE ended_at >= ?1 GROUP BY 1, 2",
                        minute = minute_of("ended_at")
                    ),
                    params![since.0],
                    |row| lease_minute_ended_of(row),
                )?);
                Ok(MarketHistory {
                    trades,
                    lease_minutes,
                })
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
