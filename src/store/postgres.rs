//! The PostgreSQL store: tokio-postgres through two deadpool pools.
//!
//! The write pool is used only by the sequencer (batches, snapshots, replay), so its
//! connections live on the sequencer's runtime; the read pool serves request handlers. A batch
//! is one transaction of a few statements, each inserting or upserting all of the batch's rows
//! of one table at once through `UNNEST` of array parameters, so its cost grows with bytes, not
//! round trips. Connection errors (refused, reset, admin shutdown, timeouts) are
//! [`StoreError::Unavailable`]; deadpool's fast recycling drops closed connections, so the
//! store recovers by itself once PostgreSQL answers again.

mod batch;

pub use batch::JOURNAL_CHANNEL;

use super::rows::{
    self, applied_signal_of, bigint_or_max, block_of, i64_of, id_cursor, journal_entry_of,
    lease_event_of, lease_minute_ended_of, lease_minute_started_of, lease_of, limit_of, order_of,
    public_trade_of, signal_id_of, snapshot_of, usage_of, BLOCK_COLUMNS, LEASE_COLUMNS,
    ORDER_COLUMNS, SELECT_LEASE_EVENTS,
};
use super::{
    AppliedSignal, BatchRows, BatchStage, CommitLink, JournalEntry, LeaseEventRecord, ListFilter,
    MarketHistory, Store, StoreError, StoredSnapshot,
};
use crate::journal::{EntryId, UsageDelta};
use crate::limits::{
    DB_CONNECT_TIMEOUT, DB_IDLE_IN_TRANSACTION_MAX, DB_READ_CONNECTIONS_MAX, DB_READ_TIMEOUT,
    DB_WRITE_CONNECTIONS_MAX, DB_WRITE_TIMEOUT, SNAPSHOTS_KEPT,
};
use crate::timestamp::{from_datetime, to_datetime};
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::future::join_all;
use matching_engine::{BlockView, LeaseId, LeaseView, OrderId, OrderView, TimeMs};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row, Statement};

/// Numbered migrations, applied in order at start; each runs once, in its own transaction.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "applied_signals",
        include_str!("../../migrations/postgres/0002_applied_signals.sql"),
    ),
    (
        3,
        "lease_notice",
        include_str!("../../migrations/postgres/0003_lease_notice.sql"),
    ),
    (
        4,
        "handoff",
        include_str!("../../migrations/postgres/0004_handoff.sql"),
    ),
    (
        5,
        "pool_usage",
        include_str!("../../migrations/postgres/0005_pool_usage.sql"),
    ),
    (
        6,
        "cluster",
        include_str!("../../migrations/postgres/0006_cluster.sql"),
    ),
];

/// Serializes concurrent migrators (two servers starting on one database).
const MIGRATION_LOCK_KEY: i64 = 0x6f66_6670_6561_6b01;

/// The PostgreSQL store.
pub struct PgStore {
    config: tokio_postgres::Config,
    /// The batch connections not in use: as many as batches were ever in flight at once.
    batch_idle: std::sync::Mutex<Vec<BatchConnection>>,
    write_pool: Pool,
    read_pool: Pool,
}

fn pool(config: &tokio_postgres::Config, size: usize) -> Result<Pool, StoreError> {
    let manager = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(DB_CONNECT_TIMEOUT))
        .create_timeout(Some(DB_CONNECT_TIMEOUT))
        .recycle_timeout(Some(DB_CONNECT_TIMEOUT))
        .build()
        .map_err(|e| StoreError::Query(format!("building the connection pool: {e}")))
}

impl PgStore {
    /// Every row `sql` returns for `params`, on a read connection, through `map`.
    async fn read_all<T>(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        map: fn(&Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        within(DB_READ_TIMEOUT, what, async {
            let client = self.read_pool.get().await?;
            let statement = client.prepare_cached(sql).await?;
            client
                .query(&statement, params)
                .await?
                .iter()
                .map(map)
                .collect()
        })
        .await
    }

    /// The row `sql` returns for `params`, if any, on a read connection, through `map`.
    async fn read_one<T>(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        map: fn(&Row) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        within(DB_READ_TIMEOUT, what, async {
            let client = self.read_pool.get().await?;
            let statement = client.prepare_cached(sql).await?;
            client
                .query_opt(&statement, params)
                .await?
                .as_ref()
                .map(map)
                .transpose()
        })
        .await
    }

    /// A store for this URL; connections are opened on first use.
    pub fn new(url: &str) -> Result<PgStore, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Query(format!("DATABASE_URL is not a PostgreSQL URL: {e}")))?;
        config.connect_timeout(DB_CONNECT_TIMEOUT);
        config.application_name("offpeak");
        // A leader paused or cut off in the middle of a batch must not hold the fenced
        // leadership row (and so block a takeover) for longer than this.
        config.options(format!(
            "-c idle_in_transaction_session_timeout={}",
            DB_IDLE_IN_TRANSACTION_MAX.as_millis()
        ));
        Ok(PgStore {
            batch_idle: std::sync::Mutex::new(Vec::new()),
            write_pool: pool(&config, DB_WRITE_CONNECTIONS_MAX)?,
            read_pool: pool(&config, DB_READ_CONNECTIONS_MAX)?,
            config,
        })
    }
}

/// What `offpeak_fence` raises when a batch's epoch is not the current one.
const FENCED_SQLSTATE: &str = "OPF01";

fn db_error(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            if code == FENCED_SQLSTATE {
                return StoreError::Fenced(db.message().to_owned());
            }
            // 08: connection exception; 57P: operator intervention (admin shutdown,
            // cannot connect now); 53: insufficient resources.
            if code.starts_with("08") || code.starts_with("57P") || code.starts_with("53") {
                StoreError::Unavailable(e.to_string())
            } else {
                StoreError::Query(e.to_string())
            }
        }
        // I/O errors, a closed connection, a connect timeout.
        None => StoreError::Unavailable(e.to_string()),
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        db_error(e)
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => db_error(e),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

async fn within<T>(
    limit: Duration,
    what: &str,
    work: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, work).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Unavailable(format!(
            "{what} took longer than {} ms",
            limit.as_millis()
        ))),
    }
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    column: &str,
) -> Result<T, StoreError> {
    row.try_get(column)
        .map_err(|e| StoreError::Corrupt(format!("column {column}: {e}")))
}

impl rows::Row for Row {
    fn i64(&self, column: &str) -> Result<i64, StoreError> {
        get(self, column)
    }

    fn opt_i64(&self, column: &str) -> Result<Option<i64>, StoreError> {
        get(self, column)
    }

    fn int(&self, column: &str) -> Result<i64, StoreError> {
        Ok(i64::from(get::<i32>(self, column)?))
    }

    fn text(&self, column: &str) -> Result<&str, StoreError> {
        get(self, column)
    }

    fn opt_text(&self, column: &str) -> Result<Option<&str>, StoreError> {
        get(self, column)
    }

    fn bool(&self, column: &str) -> Result<bool, StoreError> {
        get(self, column)
    }

    fn time(&self, column: &str) -> Result<TimeMs, StoreError> {
        Ok(from_datetime(get(self, column)?))
    }

    fn opt_time(&self, column: &str) -> Result<Option<TimeMs>, StoreError> {
        Ok(get::<Option<OffsetDateTime>>(self, column)?.map(from_datetime))
    }

    fn bytes(&self, column: &str) -> Result<Vec<u8>, StoreError> {
        get(self, column)
    }
}

/// The sequencer's own connection for batches, with its prepared statements. Not pooled: a
/// batch is a hand-made transaction, and a connection whose batch failed or timed out is
/// dropped (closing it rolls the transaction back) instead of being reused in an unknown state.
struct BatchConnection {
    client: tokio_postgres::Client,
    statements: HashMap<&'static str, Statement>,
}

impl PgStore {
    /// An idle batch connection, or a new one (one per batch in flight).
    async fn batch_connection(&self) -> Result<BatchConnection, StoreError> {
        let idle = {
            let mut idle = self
                .batch_idle
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            std::iter::from_fn(|| idle.pop()).find(|c| !c.client.is_closed())
        };
        if let Some(connection) = idle {
            return Ok(connection);
        }
        let (client, driver) = self.config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = driver.await {
                tracing::debug!(error = %e, "batch connection closed");
            }
        });
        Ok(BatchConnection {
            client,
            statements: HashMap::new(),
        })
    }
}

#[async_trait]
impl Store for PgStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        within(DB_WRITE_TIMEOUT * 6, "migrations", async {
            let mut client = self.write_pool.get().await?;
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
                .await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                    version    integer PRIMARY KEY,
                    name       text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )",
            )
            .await?;
            let applied: Vec<i32> = tx
                .query("SELECT version FROM schema_migrations ORDER BY version", &[])
                .await?
                .iter()
                .map(|row| get::<i32>(row, "version"))
                .collect::<Result<_, _>>()?;
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
                tx.batch_execute(sql).await?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    &[version, name],
                )
                .await?;
                tracing::info!(version, name, "applied migration");
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        within(DB_READ_TIMEOUT, "ping", async {
            let client = self.read_pool.get().await?;
            client.simple_query("SELECT 1").await?;
            Ok(())
        })
        .await
    }

    async fn latest_snapshot(&self) -> Result<Option<StoredSnapshot>, StoreError> {
        within(DB_WRITE_TIMEOUT * 6, "loading the snapshot", async {
            let client = self.write_pool.get().await?;
            let row = client
                .query_opt(
                    "SELECT seq, state_hash, state FROM snapshots ORDER BY seq DESC LIMIT 1",
                    &[],
                )
                .await?;
            row.as_ref().map(snapshot_of).transpose()
        })
        .await
    }

    async fn journal_after(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        within(DB_WRITE_TIMEOUT * 6, "reading the journal", async {
            let client = self.write_pool.get().await?;
            let rows = client
                .query(
                    "SELECT seq, at_ms, command::text AS command FROM journal WHERE seq > $1 \
                     ORDER BY seq LIMIT $2",
                    &[&i64_of(after_seq, "seq")?, &bigint_or_max(limit)],
                )
                .await?;
            rows.iter().map(journal_entry_of).collect()
        })
        .await
    }

    async fn write_batch(&self, rows: &BatchRows) -> Result<(), StoreError> {
        self.write_batch_linked(rows, CommitLink::first()).await
    }

    async fn write_batch_linked(
        &self,
        rows: &BatchRows,
        mut link: CommitLink,
    ) -> Result<(), StoreError> {
        let written = within(DB_WRITE_TIMEOUT, "the batch transaction", async {
            let writes = batch::batch_writes(rows)?;
            // Out of the idle list while in use: if this future fails or is dropped (timeout),
            // the connection goes with it and PostgreSQL rolls back whatever was open.
            let mut connection = self.batch_connection().await?;
            for write in &writes {
                if !connection.statements.contains_key(write.sql) {
                    let statement = connection.client.prepare(write.sql).await?;
                    connection.statements.insert(write.sql, statement);
                }
            }
            let params: Vec<Vec<&(dyn ToSql + Sync)>> = writes
                .iter()
                .map(|w| {
                    w.params
                        .iter()
                        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                        .collect()
                })
                .collect();
            let client = &connection.client;
            let statements = &connection.statements;
            let execute_all = || {
                join_all(writes.iter().zip(&params).map(|(write, params)| {
                    client.execute(&statements[write.sql], params.as_slice())
                }))
            };
            // The previous batch's row locks are held once its statements ran: an upsert of
            // one of its rows waits for its commit, then sees it.
            link.previous_reached(BatchStage::Written).await?;
            if link.follows_another() {
                // Its statements run while the previous batch commits; its COMMIT waits for
                // that one's.
                let (begun, executed) = tokio::join!(client.batch_execute("BEGIN"), execute_all());
                begun?;
                for result in executed {
                    result?;
                }
                link.reached(BatchStage::Written);
                link.previous_reached(BatchStage::Committed).await?;
                client.batch_execute("COMMIT").await?;
            } else {
                // One round trip: BEGIN, every statement and COMMIT are sent together (the
                // driver pipelines requests polled together, in order). After a failed
                // statement the transaction is aborted and COMMIT only rolls it back, so every
                // result is checked.
                // The batch after this one is cut once these statements ran (the sequencer
                // waits for it), so `Written` is told as soon as their results are in.
                let (begun, executed, committed) = tokio::join!(
                    client.batch_execute("BEGIN"),
                    async {
                        let executed = execute_all().await;
                        if executed.iter().all(Result::is_ok) {
                            link.reached(BatchStage::Written);
                        }
                        executed
                    },
                    client.batch_execute("COMMIT"),
                );
                begun?;
                for result in executed {
                    result?;
                }
                committed?;
            }
            link.reached(BatchStage::Committed);
            self.batch_idle
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(connection);
            Ok(())
        })
        .await;
        if written.is_err() {
            // The idle batch connections may have died with the one that failed (an outage):
            // the next batch starts on a new one rather than find out by failing too.
            self.batch_idle
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clear();
        }
        written
    }

    async fn write_snapshot(&self, snapshot: &StoredSnapshot) -> Result<(), StoreError> {
        within(DB_WRITE_TIMEOUT * 6, "writing the snapshot", async {
            let mut client = self.write_pool.get().await?;
            let tx = client.transaction().await?;
            tx.execute(
                "INSERT INTO snapshots (seq, state_hash, state) VALUES ($1, $2, $3) \
                 ON CONFLICT (seq) DO NOTHING",
                &[
                    &i64_of(snapshot.seq, "seq")?,
                    // The hash is 64 opaque bits; bigint keeps them (two's complement).
                    &(snapshot.state_hash as i64),
                    &snapshot.state,
                ],
            )
            .await?;
            tx.execute(
                "DELETE FROM snapshots WHERE seq NOT IN \
                 (SELECT seq FROM snapshots ORDER BY seq DESC LIMIT $1)",
                &[&SNAPSHOTS_KEPT],
            )
            .await?;
            tx.commit().await?;
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
            &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 AND account = $2"),
            &[&id, &account],
            order_of,
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
            &format!(
                "SELECT {ORDER_COLUMNS} FROM orders WHERE account = $1 \
                 AND ($2::text IS NULL OR status = $2) AND ($3::int8 IS NULL OR id < $3) \
                 ORDER BY id DESC LIMIT $4"
            ),
            &[
                &account,
                &filter.status,
                &id_cursor(filter),
                &limit_of(filter),
            ],
            order_of,
        )
        .await
    }

    async fn lease(&self, buyer: &str, id: LeaseId) -> Result<Option<LeaseView>, StoreError> {
        self.read_one(
            "reading a lease",
            &format!("SELECT {LEASE_COLUMNS} FROM leases WHERE id = $1 AND buyer = $2"),
            &[&id.to_string(), &buyer],
            lease_of,
        )
        .await
    }

    async fn leases(&self, buyer: &str, filter: &ListFilter) -> Result<Vec<LeaseView>, StoreError> {
        self.read_all(
            "listing leases",
            &format!(
                "SELECT {LEASE_COLUMNS} FROM leases WHERE buyer = $1 \
                 AND ($2::text IS NULL OR status = $2) \
                 AND ($3::int8 IS NULL OR lease_no < $3) ORDER BY lease_no DESC LIMIT $4"
            ),
            &[
                &buyer,
                &filter.status,
                &id_cursor(filter),
                &limit_of(filter),
            ],
            lease_of,
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
            &format!(
                "SELECT {LEASE_COLUMNS} FROM leases WHERE order_id = $1 AND buyer = $2 \
                 ORDER BY lease_no"
            ),
            &[&order_id.to_string(), &buyer],
            lease_of,
        )
        .await
    }

    async fn block(&self, supplier: &str, block_id: &str) -> Result<Option<BlockView>, StoreError> {
        self.read_one(
            "reading a block",
            &format!("SELECT {BLOCK_COLUMNS} FROM blocks WHERE supplier = $1 AND block_id = $2"),
            &[&supplier, &block_id],
            block_of,
        )
        .await
    }

    async fn blocks(
        &self,
        supplier: &str,
        filter: &ListFilter,
    ) -> Result<Vec<BlockView>, StoreError> {
        self.read_all(
            "listing blocks",
            &format!(
                "SELECT {BLOCK_COLUMNS} FROM blocks WHERE supplier = $1 \
                 AND ($2::text IS NULL OR status = $2) \
                 AND ($3::text IS NULL OR block_id > $3) ORDER BY block_id LIMIT $4"
            ),
            &[&supplier, &filter.status, &filter.cursor, &limit_of(filter)],
            block_of,
        )
        .await
    }

    async fn applied_signals_newest(&self, limit: usize) -> Result<Vec<EntryId>, StoreError> {
        within(DB_WRITE_TIMEOUT * 6, "loading applied signals", async {
            let client = self.write_pool.get().await?;
            let rows = client
                .query(
                    "SELECT id_ms, id_seq FROM applied_signals \
                     ORDER BY id_ms DESC, id_seq DESC LIMIT $1",
                    &[&bigint_or_max(limit)],
                )
                .await?;
            rows.iter().map(signal_id_of).collect()
        })
        .await
    }

    async fn applied_signals(&self, ids: &[EntryId]) -> Result<Vec<AppliedSignal>, StoreError> {
        // An id beyond bigint was never recorded.
        let (id_ms, id_seq): (Vec<i64>, Vec<i64>) = ids
            .iter()
            .filter(|id| id.fits_i64())
            .map(|id| (id.ms as i64, id.seq as i64))
            .unzip();
        if id_ms.is_empty() {
            return Ok(Vec::new());
        }
        within(DB_READ_TIMEOUT, "reading applied signals", async {
            let client = self.read_pool.get().await?;
            let rows = client
                .query(
                    "SELECT s.id_ms, s.id_seq, s.seq, s.rejection FROM applied_signals s \
                     JOIN UNNEST($1::int8[], $2::int8[]) AS u(id_ms, id_seq) \
                     ON s.id_ms = u.id_ms AND s.id_seq = u.id_seq",
                    &[&id_ms, &id_seq],
                )
                .await?;
            rows.iter().map(applied_signal_of).collect()
        })
        .await
    }

    async fn lease_events_after(
        &self,
        after_seq: u64,
        after_row_id: u64,
        limit: usize,
    ) -> Result<Vec<LeaseEventRecord>, StoreError> {
        self.read_all(
            "reading lease events",
            &format!(
                "{SELECT_LEASE_EVENTS} WHERE (e.seq, e.id) > ($1, $2) \
                 ORDER BY e.seq, e.id LIMIT $3"
            ),
            &[
                &bigint_or_max(after_seq),
                &bigint_or_max(after_row_id),
                &bigint_or_max(limit),
            ],
            lease_event_of,
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
             WHERE minute >= $1 AND minute < $2 AND ($3::text IS NULL OR pool = $3) \
             ORDER BY pool, minute",
            &[&from.0, &to.0, &pool],
            usage_of,
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
            &format!(
                "SELECT {LEASE_COLUMNS} FROM leases WHERE started_at < $2 \
                 AND (ended_at IS NULL OR ended_at > $1) AND ($3::text IS NULL OR pool = $3) \
                 ORDER BY lease_no LIMIT $4"
            ),
            &[
                &to_datetime(from),
                &to_datetime(to),
                &pool,
                &bigint_or_max(limit),
            ],
            lease_of,
        )
        .await
    }

    async fn market_history(
        &self,
        since: TimeMs,
        trades_per_pool: usize,
    ) -> Result<MarketHistory, StoreError> {
        within(DB_WRITE_TIMEOUT * 6, "loading market history", async {
            let client = self.write_pool.get().await?;
            let since = to_datetime(since);
            let per_pool = bigint_or_max(trades_per_pool);
            let trade_rows = client
                .query(
                    "SELECT pool, id, price_micros, gpus, maker_side, at FROM ( \
                       SELECT pool, id, price_micros, gpus, maker_side, at, \
                              row_number() OVER (PARTITION BY pool ORDER BY id DESC) AS n \
                       FROM trades WHERE at >= $1) recent \
                     WHERE n <= $2 ORDER BY id",
                    &[&since, &per_pool],
                )
                .await?;
            let mut history = MarketHistory {
                trades: trade_rows.iter().map(public_trade_of).collect::<Result<_, _>>()?,
                lease_minutes: Vec::new(),
            };
            let started = client
                .query(
                    "SELECT pool, (floor(extract(epoch FROM started_at) / 60))::int8 AS minute, \
                       sum(gpus::int8 * greatest(extract(epoch FROM ends_at - started_at), 0)::int8)::int8 \
                         AS gpu_seconds \
                     FROM leases WHERE started_at >= $1 GROUP BY 1, 2",
                    &[&since],
                )
                .await?;
            for row in &started {
                history.lease_minutes.push(lease_minute_started_of(row)?);
            }
            let ended = client
                .query(
                    "SELECT pool, (floor(extract(epoch FROM ended_at) / 60))::int8 AS minute, \
                       count(*) AS ended, count(*) FILTER (WHERE status = 'preempted') AS preempted \
                     FROM leases WHERE ended_at >= $1 GROUP BY 1, 2",
                    &[&since],
                )
                .await?;
            for row in &ended {
                history.lease_minutes.push(lease_minute_ended_of(row)?);
            }
            Ok(history)
        })
        .await
    }
}

/// Builds the PostgreSQL store as a trait object.
pub fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(PgStore::new(url)?))
}
