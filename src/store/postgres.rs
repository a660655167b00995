//! The PostgreSQL store: tokio-postgres through two deadpool pools.
//!
//! The write pool is used only by the sequencer (batches, snapshots, replay), so its
//! connections live on the sequencer's runtime; the read pool serves request handlers. A batch
//! is one transaction of a few statements, each inserting or upserting all of the batch's rows
//! of one table at once through `UNNEST` of array parameters, so its cost grows with bytes, not
//! round trips. Connection errors (refused, reset, admin shutdown, timeouts) are
//! [`StoreError::Unavailable`]; deadpool's fast recycling drops closed connections, so the
//! store recovers by itself once PostgreSQL answers again.

use super::rows::{
    self, applied_signal_of, bigint_or_max, block_of, i64_of, id_cursor, journal_entry_of,
    lease_event_of, lease_minute_ended_of, lease_minute_started_of, lease_of, limit_of, order_of,
    public_trade_of, signal_id_of, snapshot_of, Value, BLOCK_COLUMNS, LEASE_COLUMNS, ORDER_COLUMNS,
    SELECT_LEASE_EVENTS,
};
use super::{
    AppliedSignal, BatchRows, JournalEntry, LeaseEventRecord, ListFilter, MarketHistory, Store,
    StoreError, StoredSnapshot,
};
use crate::journal::EntryId;
use crate::limits::{
    DB_CONNECT_TIMEOUT, DB_READ_CONNECTIONS_MAX, DB_READ_TIMEOUT, DB_WRITE_CONNECTIONS_MAX,
    DB_WRITE_TIMEOUT, SNAPSHOTS_KEPT,
};
use crate::timestamp::{from_datetime, to_datetime};
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::future::join_all;
use matching_engine::{BlockView, LeaseId, LeaseView, OrderId, OrderView, TimeMs};
use std::borrow::Cow;
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
];

/// Serializes concurrent migrators (two servers starting on one database).
const MIGRATION_LOCK_KEY: i64 = 0x6f66_6670_6561_6b01;

/// The PostgreSQL store.
pub struct PgStore {
    config: tokio_postgres::Config,
    batch: tokio::sync::Mutex<Option<BatchConnection>>,
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
    /// A store for this URL; connections are opened on first use.
    pub fn new(url: &str) -> Result<PgStore, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Query(format!("DATABASE_URL is not a PostgreSQL URL: {e}")))?;
        config.connect_timeout(DB_CONNECT_TIMEOUT);
        config.application_name("offpeak");
        Ok(PgStore {
            batch: tokio::sync::Mutex::new(None),
            write_pool: pool(&config, DB_WRITE_CONNECTIONS_MAX)?,
            read_pool: pool(&config, DB_READ_CONNECTIONS_MAX)?,
            config,
        })
    }
}

fn db_error(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
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

const INSERT_JOURNAL: &str = "INSERT INTO journal (seq, at_ms, command) \
    SELECT u.seq, u.at_ms, u.command::json FROM UNNEST($1::int8[], $2::int8[], $3::text[]) \
    AS u(seq, at_ms, command)";

const UPSERT_ORDERS: &str = "INSERT INTO orders (id, account, pool, price_micros, gpus, \
    remaining_gpus, filled_gpus, min_gpus, duration_s, max_duration_s, tif, expires_at, \
    persistent, client_order_id, status, cancel_reason, created_at, updated_at) \
    SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::int8[], $5::int4[], $6::int4[], \
    $7::int4[], $8::int4[], $9::int4[], $10::int4[], $11::text[], $12::timestamptz[], \
    $13::bool[], $14::text[], $15::text[], $16::text[], $17::timestamptz[], $18::timestamptz[]) \
    ON CONFLICT (id) DO UPDATE SET price_micros = EXCLUDED.price_micros, gpus = EXCLUDED.gpus, \
    remaining_gpus = EXCLUDED.remaining_gpus, filled_gpus = EXCLUDED.filled_gpus, \
    min_gpus = EXCLUDED.min_gpus, expires_at = EXCLUDED.expires_at, status = EXCLUDED.status, \
    cancel_reason = EXCLUDED.cancel_reason, updated_at = EXCLUDED.updated_at";

const UPSERT_LEASES: &str = "INSERT INTO leases (id, order_id, buyer, pool, block_id, gpus, \
    price_micros, status, started_at, ends_at, notice_ends_at, ended_at, cost_micros, lease_no, \
    supplier, preempted_at, emergency, nodes, updated_at) \
    SELECT u.id, u.order_id, u.buyer, u.pool, u.block_id, u.gpus, u.price_micros, u.status, \
    u.started_at, u.ends_at, u.notice_ends_at, u.ended_at, u.cost_micros, u.lease_no, \
    u.supplier, u.preempted_at, u.emergency, u.nodes::jsonb, now() \
    FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int4[], \
    $7::int8[], $8::text[], $9::timestamptz[], $10::timestamptz[], $11::timestamptz[], \
    $12::timestamptz[], $13::int8[], $14::int8[], $15::text[], $16::timestamptz[], $17::bool[], \
    $18::text[]) AS u(id, order_id, buyer, pool, block_id, gpus, price_micros, status, \
    started_at, ends_at, notice_ends_at, ended_at, cost_micros, lease_no, supplier, \
    preempted_at, emergency, nodes) \
    ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, ends_at = EXCLUDED.ends_at, \
    notice_ends_at = EXCLUDED.notice_ends_at, ended_at = EXCLUDED.ended_at, \
    cost_micros = EXCLUDED.cost_micros, preempted_at = EXCLUDED.preempted_at, \
    emergency = EXCLUDED.emergency, nodes = EXCLUDED.nodes, updated_at = now()";

const INSERT_TRADES: &str = "INSERT INTO trades (id, pool, price_micros, gpus, order_id, \
    lease_id, buyer, supplier, block_id, maker_side, at) \
    SELECT * FROM UNNEST($1::int8[], $2::text[], $3::int8[], $4::int4[], $5::int8[], $6::int8[], \
    $7::text[], $8::text[], $9::text[], $10::text[], $11::timestamptz[])";

const UPSERT_BLOCKS: &str = "INSERT INTO blocks (supplier, block_id, pool, status, gpus, \
    gpus_sold, gpus_unsold, gpus_reclaimed, gpus_reclaiming, reserve_price_micros, \
    available_from, available_until, revenue_micros, reclaim_forecast_at, nodes, updated_at) \
    SELECT u.supplier, u.block_id, u.pool, u.status, u.gpus, u.gpus_sold, u.gpus_unsold, \
    u.gpus_reclaimed, u.gpus_reclaiming, u.reserve_price_micros, u.available_from, \
    u.available_until, u.revenue_micros, u.reclaim_forecast_at, u.nodes::jsonb, u.updated_at \
    FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int4[], $6::int4[], \
    $7::int4[], $8::int4[], $9::int4[], $10::int8[], $11::timestamptz[], $12::timestamptz[], \
    $13::int8[], $14::timestamptz[], $15::text[], $16::timestamptz[]) AS u(supplier, block_id, \
    pool, status, gpus, gpus_sold, gpus_unsold, gpus_reclaimed, gpus_reclaiming, \
    reserve_price_micros, available_from, available_until, revenue_micros, reclaim_forecast_at, \
    nodes, updated_at) \
    ON CONFLICT (supplier, block_id) DO UPDATE SET status = EXCLUDED.status, \
    gpus = EXCLUDED.gpus, gpus_sold = EXCLUDED.gpus_sold, gpus_unsold = EXCLUDED.gpus_unsold, \
    gpus_reclaimed = EXCLUDED.gpus_reclaimed, gpus_reclaiming = EXCLUDED.gpus_reclaiming, \
    reserve_price_micros = EXCLUDED.reserve_price_micros, \
    available_from = EXCLUDED.available_from, available_until = EXCLUDED.available_until, \
    revenue_micros = EXCLUDED.revenue_micros, reclaim_forecast_at = EXCLUDED.reclaim_forecast_at, \
    nodes = EXCLUDED.nodes, updated_at = EXCLUDED.updated_at";

const INSERT_LEASE_EVENTS: &str = "INSERT INTO lease_events (seq, lease_id, buyer, kind, at, \
    detail_at) SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], \
    $5::timestamptz[], $6::timestamptz[])";

const INSERT_APPLIED_SIGNALS: &str = "INSERT INTO applied_signals (id_ms, id_seq, seq, \
    rejection) SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::text[])";

/// One statement of a batch and its (array) parameters.
struct Write<'a> {
    sql: &'static str,
    params: Vec<Box<dyn ToSql + Sync + Send + 'a>>,
}

/// The sequencer's own connection for batches, with its prepared statements. Not pooled: a
/// batch is a hand-made transaction, and a connection whose batch failed or timed out is
/// dropped (closing it rolls the transaction back) instead of being reused in an unknown state.
struct BatchConnection {
    client: tokio_postgres::Client,
    statements: HashMap<&'static str, Statement>,
}

/// The statements of one batch, with their parameters: one per table that has rows.
fn batch_writes(rows: &BatchRows) -> Result<Vec<Write<'_>>, StoreError> {
    let mut writes = Vec::new();
    add_write(
        &mut writes,
        INSERT_JOURNAL,
        &rows.journal,
        rows::journal_values,
    )?;
    add_write(&mut writes, UPSERT_ORDERS, &rows.orders, rows::order_values)?;
    add_write(&mut writes, UPSERT_LEASES, &rows.leases, rows::lease_values)?;
    add_write(&mut writes, INSERT_TRADES, &rows.trades, rows::trade_values)?;
    add_write(&mut writes, UPSERT_BLOCKS, &rows.blocks, rows::block_values)?;
    add_write(
        &mut writes,
        INSERT_LEASE_EVENTS,
        &rows.lease_events,
        rows::lease_event_values,
    )?;
    // No ON CONFLICT: recording an id twice must fail the batch, never apply it twice.
    add_write(
        &mut writes,
        INSERT_APPLIED_SIGNALS,
        &rows.applied_signals,
        rows::applied_signal_values,
    )?;
    Ok(writes)
}

/// Adds the statement `sql` with one array parameter per column of `items`, if there are any.
fn add_write<'a, T, const N: usize>(
    writes: &mut Vec<Write<'a>>,
    sql: &'static str,
    items: &'a [T],
    values: fn(&'a T) -> Result<[Value<'a>; N], StoreError>,
) -> Result<(), StoreError> {
    let Some(first) = items.first() else {
        return Ok(());
    };
    let mut columns: Vec<Column<'a>> = values(first)?
        .iter()
        .map(|v| Column::of(v, items.len()))
        .collect();
    for item in items {
        for (column, value) in columns.iter_mut().zip(values(item)?) {
            column.push(value)?;
        }
    }
    writes.push(Write {
        sql,
        params: columns.into_iter().map(Column::into_param).collect(),
    });
    Ok(())
}

/// One column of a batch's rows, as the array an `UNNEST` parameter takes.
enum Column<'a> {
    Int8(Vec<Option<i64>>),
    Int4(Vec<i32>),
    Text(Vec<Option<Cow<'a, str>>>),
    Time(Vec<Option<OffsetDateTime>>),
    Bool(Vec<bool>),
}

impl<'a> Column<'a> {
    /// An empty column of `value`'s type, for `n` rows.
    fn of(value: &Value<'_>, n: usize) -> Column<'a> {
        match value {
            Value::Int8(_) => Column::Int8(Vec::with_capacity(n)),
            Value::Int4(_) => Column::Int4(Vec::with_capacity(n)),
            Value::Text(_) => Column::Text(Vec::with_capacity(n)),
            Value::Time(_) => Column::Time(Vec::with_capacity(n)),
            Value::Bool(_) => Column::Bool(Vec::with_capacity(n)),
        }
    }

    fn push(&mut self, value: Value<'a>) -> Result<(), StoreError> {
        match (self, value) {
            (Column::Int8(column), Value::Int8(v)) => column.push(v),
            (Column::Int4(column), Value::Int4(v)) => column.push(v),
            (Column::Text(column), Value::Text(v)) => column.push(v),
            (Column::Time(column), Value::Time(v)) => column.push(v.map(to_datetime)),
            (Column::Bool(column), Value::Bool(v)) => column.push(v),
            (_, value) => {
                return Err(StoreError::Query(format!(
                    "a batch column changed type at {value:?}"
                )))
            }
        }
        Ok(())
    }

    fn into_param(self) -> Box<dyn ToSql + Sync + Send + 'a> {
        match self {
            Column::Int8(column) => Box::new(column),
            Column::Int4(column) => Box::new(column),
            Column::Text(column) => Box::new(column),
            Column::Time(column) => Box::new(column),
            Column::Bool(column) => Box::new(column),
        }
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
        within(DB_WRITE_TIMEOUT, "the batch transaction", async {
            let writes = batch_writes(rows)?;
            let mut slot = self.batch.lock().await;
            // Taken out of the slot: if this future fails or is dropped (timeout), the
            // connection goes with it and PostgreSQL rolls back whatever was open.
            let mut connection = match slot.take() {
                Some(connection) if !connection.client.is_closed() => connection,
                _ => {
                    let (client, driver) = self.config.connect(NoTls).await?;
                    tokio::spawn(async move {
                        if let Err(e) = driver.await {
                            tracing::debug!(error = %e, "batch connection closed");
                        }
                    });
                    BatchConnection {
                        client,
                        statements: HashMap::new(),
                    }
                }
            };
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
            // One round trip: BEGIN, every statement and COMMIT are sent together (the
            // driver pipelines requests polled together, in order). After a failed statement
            // the transaction is aborted and COMMIT only rolls it back, so every result is
            // checked.
            let client = &connection.client;
            let statements = &connection.statements;
            let (begun, executed, committed) = tokio::join!(
                client.batch_execute("BEGIN"),
                join_all(writes.iter().zip(&params).map(|(write, params)| {
                    client.execute(&statements[write.sql], params.as_slice())
                })),
                client.batch_execute("COMMIT"),
            );
            begun?;
            for result in executed {
                result?;
            }
            committed?;
            *slot = Some(connection);
            Ok(())
        })
        .await
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
        within(DB_READ_TIMEOUT, "reading an order", async {
            let client = self.read_pool.get().await?;
            let statement = client
                .prepare_cached(&format!(
                    "SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 AND account = $2"
                ))
                .await?;
            let row = client.query_opt(&statement, &[&id, &account]).await?;
            row.as_ref().map(order_of).transpose()
        })
        .await
    }

    async fn orders(
        &self,
        account: &str,
        filter: &ListFilter,
    ) -> Result<Vec<OrderView>, StoreError> {
        within(DB_READ_TIMEOUT, "listing orders", async {
            let client = self.read_pool.get().await?;
            let statement = client
                .prepare_cached(&format!(
                    "SELECT {ORDER_COLUMNS} FROM orders WHERE account = $1 \
                     AND ($2::text IS NULL OR status = $2) AND ($3::int8 IS NULL OR id < $3) \
                     ORDER BY id DESC LIMIT $4"
                ))
                .await?;
            let rows = client
                .query(
                    &statement,
                    &[
                        &account,
                        &filter.status,
                        &id_cursor(filter),
                        &limit_of(filter),
                    ],
                )
                .await?;
            rows.iter().map(order_of).collect()
        })
        .await
    }

    async fn lease(&self, buyer: &str, id: LeaseId) -> Result<Option<LeaseView>, StoreError> {
        within(DB_READ_TIMEOUT, "reading a lease", async {
            let client = self.read_pool.get().await?;
            let statement = client
                .prepare_cached(&format!(
                    "SELECT {LEASE_COLUMNS} FROM leases WHERE id = $1 AND buyer = $2"
                ))
                .await?;
            let row = client
                .query_opt(&statement, &[&id.to_string(), &buyer])
                .await?;
            row.as_ref().map(lease_of).transpose()
        })
        .await
    }

    async fn leases(&self, buyer: &str, filter: &ListFilter) -> Result<Vec<LeaseView>, StoreError> {
        within(DB_READ_TIMEOUT, "listing leases", async {
            let client = self.read_pool.get().await?;
            let statement = client
                .prepare_cached(&format!(
                    "SELECT {LEASE_COLUMNS} FROM leases WHERE buyer = $1 \
                     AND ($2::text IS NULL OR status = $2) \
                     AND ($3::int8 IS NULL OR lease_no < $3) ORDER BY lease_no DESC LIMIT $4"
                ))
                .await?;
            let rows = client
                .query(
                    &statement,
                    &[
                        &buyer,
                        &filter.status,
                        &id_cursor(filter),
                        &limit_of(filter),
                    ],
                )
                .await?;
            rows.iter().map(lease_of).collect()
        })
        .await
    }

    async fn leases_of_order(
        &self,
        buyer: &str,
        order_id: OrderId,
    ) -> Result<Vec<LeaseView>, StoreError> {
        within(DB_READ_TIMEOUT, "listing an order's leases", async {
            let client = self.read_pool.get().await?;
            let statement = client
                .prepare_cached(&format!(
                    "SELECT {LEASE_COLUMNS} FROM leases WHERE order_id = $1 AND buyer = $2 \
                     ORDER BY lease_no"
                ))
                .await?;
            let rows = client
                .query(&statement, &[&order_id.to_string(), &buyer])
                .await?;
            rows.iter().map(lease_of).collect()
        })
        .await
    }

    async fn block(&self, supplier: &str, block_id: &str) -> Result<Option<BlockView>, StoreError> {
        within(DB_READ_TIMEOUT, "reading a block", async {
            let client = self.read_pool.get().await?;
            let statement = client
                .prepare_cached(&format!(
                    "SELECT {BLOCK_COLUMNS} FROM blocks WHERE supplier = $1 AND block_id = $2"
                ))
                .await?;
            let row = client
                .query_opt(&statement, &[&supplier, &block_id])
                .await?;
            row.as_ref().map(block_of).transpose()
        })
        .await
    }

    async fn blocks(
        &self,
        supplier: &str,
        filter: &ListFilter,
    ) -> Result<Vec<BlockView>, StoreError> {
        within(DB_READ_TIMEOUT, "listing blocks", async {
            let client = self.read_pool.get().await?;
            let statement = client
                .prepare_cached(&format!(
                    "SELECT {BLOCK_COLUMNS} FROM blocks WHERE supplier = $1 \
                     AND ($2::text IS NULL OR status = $2) \
                     AND ($3::text IS NULL OR block_id > $3) ORDER BY block_id LIMIT $4"
                ))
                .await?;
            let rows = client
                .query(
                    &statement,
                    &[&supplier, &filter.status, &filter.cursor, &limit_of(filter)],
                )
                .await?;
            rows.iter().map(block_of).collect()
        })
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
        within(DB_READ_TIMEOUT, "reading lease events", async {
            let client = self.read_pool.get().await?;
            let statement = client
                .prepare_cached(&format!(
                    "{SELECT_LEASE_EVENTS} WHERE (e.seq, e.id) > ($1, $2) \
                     ORDER BY e.seq, e.id LIMIT $3"
                ))
                .await?;
            let rows = client
                .query(
                    &statement,
                    &[
                        &bigint_or_max(after_seq),
                        &bigint_or_max(after_row_id),
                        &bigint_or_max(limit),
                    ],
                )
                .await?;
            rows.iter().map(lease_event_of).collect()
        })
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
