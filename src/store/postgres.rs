//! The PostgreSQL store: tokio-postgres through two deadpool pools.
//!
//! The write pool is used only by the sequencer (batches, snapshots, replay), so its
//! connections live on the sequencer's runtime; the read pool serves request handlers. A batch
//! is one transaction of a few statements, each inserting or upserting all of the batch's rows
//! of one table at once through `UNNEST` of array parameters, so its cost grows with bytes, not
//! round trips. Connection errors (refused, reset, admin shutdown, timeouts) are
//! [`StoreError::Unavailable`]; deadpool's fast recycling drops closed connections, so the
//! store recovers by itself once PostgreSQL answers again.

use super::{
    AppliedSignal, BatchRows, JournalEntry, LeaseEventRecord, LeaseMinute, ListFilter,
    MarketHistory, PublicTrade, Store, StoreError, StoredSnapshot,
};
use crate::journal::codes;
use crate::journal::EntryId;
use crate::limits::{
    DB_CONNECT_TIMEOUT, DB_READ_CONNECTIONS_MAX, DB_READ_TIMEOUT, DB_WRITE_CONNECTIONS_MAX,
    DB_WRITE_TIMEOUT, SNAPSHOTS_KEPT,
};
use crate::timestamp::{from_datetime, to_datetime};
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::future::join_all;
use matching_engine::{
    BlockView, LeaseId, LeaseView, Name, NodeGpus, OrderId, OrderView, PriceMicros, TimeMs, TradeId,
};
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

fn i64_of(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Query(format!("{what} {value} exceeds bigint")))
}

fn u64_of(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value} is negative")))
}

fn u32_of(value: i32, what: &str) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value} is negative")))
}

fn i32_of(value: u32, what: &str) -> Result<i32, StoreError> {
    i32::try_from(value).map_err(|_| StoreError::Query(format!("{what} {value} exceeds integer")))
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    column: &str,
) -> Result<T, StoreError> {
    row.try_get(column)
        .map_err(|e| StoreError::Corrupt(format!("column {column}: {e}")))
}

fn time_of(row: &Row, column: &str) -> Result<TimeMs, StoreError> {
    Ok(from_datetime(get::<OffsetDateTime>(row, column)?))
}

fn opt_time_of(row: &Row, column: &str) -> Result<Option<TimeMs>, StoreError> {
    Ok(get::<Option<OffsetDateTime>>(row, column)?.map(from_datetime))
}

fn name_of(row: &Row, column: &str) -> Result<Name, StoreError> {
    Ok(Name::from(get::<&str>(row, column)?))
}

fn nodes_json(nodes: &[NodeGpus]) -> Result<String, StoreError> {
    serde_json::to_string(nodes).map_err(|e| StoreError::Query(format!("encoding nodes: {e}")))
}

fn nodes_of(row: &Row) -> Result<Vec<NodeGpus>, StoreError> {
    serde_json::from_str(get::<&str>(row, "nodes")?)
        .map_err(|e| StoreError::Corrupt(format!("nodes: {e}")))
}

fn decode<T>(value: &str, parse: fn(&str) -> Option<T>, what: &str) -> Result<T, StoreError> {
    parse(value).ok_or_else(|| StoreError::Corrupt(format!("{what} {value:?}")))
}

const ORDER_COLUMNS: &str = "id, account, pool, price_micros, gpus, remaining_gpus, filled_gpus, \
    min_gpus, duration_s, max_duration_s, tif, expires_at, persistent, client_order_id, status, \
    cancel_reason, created_at, updated_at";

fn order_of(row: &Row) -> Result<OrderView, StoreError> {
    Ok(OrderView {
        id: OrderId(u64_of(get(row, "id")?, "order id")?),
        account: name_of(row, "account")?,
        pool: name_of(row, "pool")?,
        price: PriceMicros(u64_of(get(row, "price_micros")?, "price")?),
        gpus: u32_of(get(row, "gpus")?, "gpus")?,
        remaining_gpus: u32_of(get(row, "remaining_gpus")?, "remaining_gpus")?,
        filled_gpus: u32_of(get(row, "filled_gpus")?, "filled_gpus")?,
        min_gpus: u32_of(get(row, "min_gpus")?, "min_gpus")?,
        duration_s: u32_of(get(row, "duration_s")?, "duration_s")?,
        max_duration_s: u32_of(get(row, "max_duration_s")?, "max_duration_s")?,
        tif: decode(get(row, "tif")?, codes::parse_tif, "tif")?,
        expires_at: opt_time_of(row, "expires_at")?,
        persistent: get(row, "persistent")?,
        client_order_id: get::<Option<&str>>(row, "client_order_id")?.map(Name::from),
        status: decode(
            get(row, "status")?,
            codes::parse_order_status,
            "order status",
        )?,
        cancel_reason: match get::<Option<&str>>(row, "cancel_reason")? {
            Some(code) => Some(decode(code, codes::parse_cancel_reason, "cancel reason")?),
            None => None,
        },
        created_at: time_of(row, "created_at")?,
        updated_at: time_of(row, "updated_at")?,
    })
}

const LEASE_COLUMNS: &str = "lease_no, order_id, buyer, supplier, pool, block_id, gpus, \
    price_micros, status, started_at, ends_at, notice_ends_at, preempted_at, emergency, \
    ended_at, cost_micros, nodes::text AS nodes";

fn lease_of(row: &Row) -> Result<LeaseView, StoreError> {
    let order_id: &str = get(row, "order_id")?;
    Ok(LeaseView {
        id: LeaseId(u64_of(get(row, "lease_no")?, "lease id")?),
        order_id: OrderId(
            order_id
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("order_id {order_id:?}")))?,
        ),
        buyer: name_of(row, "buyer")?,
        supplier: name_of(row, "supplier")?,
        pool: name_of(row, "pool")?,
        block_id: name_of(row, "block_id")?,
        gpus: u32_of(get(row, "gpus")?, "gpus")?,
        price: PriceMicros(u64_of(get(row, "price_micros")?, "price")?),
        status: decode(
            get(row, "status")?,
            codes::parse_lease_status,
            "lease status",
        )?,
        started_at: time_of(row, "started_at")?,
        ends_at: time_of(row, "ends_at")?,
        notice_ends_at: opt_time_of(row, "notice_ends_at")?,
        preempted_at: opt_time_of(row, "preempted_at")?,
        emergency: get(row, "emergency")?,
        // No column yet: a stored lease reads as having promised nothing beyond the pool.
        notice_s: 0,
        ended_at: opt_time_of(row, "ended_at")?,
        cost_micros: u64_of(get(row, "cost_micros")?, "cost")?,
        nodes: nodes_of(row)?,
    })
}

const BLOCK_COLUMNS: &str = "supplier, block_id, pool, status, gpus, gpus_sold, gpus_unsold, \
    gpus_reclaimed, gpus_reclaiming, reserve_price_micros, available_from, available_until, \
    revenue_micros, reclaim_forecast_at, nodes::text AS nodes, updated_at";

fn block_of(row: &Row) -> Result<BlockView, StoreError> {
    Ok(BlockView {
        supplier: name_of(row, "supplier")?,
        block_id: name_of(row, "block_id")?,
        pool: name_of(row, "pool")?,
        status: decode(
            get(row, "status")?,
            codes::parse_block_status,
            "block status",
        )?,
        gpus: u32_of(get(row, "gpus")?, "gpus")?,
        gpus_sold: u32_of(get(row, "gpus_sold")?, "gpus_sold")?,
        gpus_unsold: u32_of(get(row, "gpus_unsold")?, "gpus_unsold")?,
        gpus_reclaimed: u32_of(get(row, "gpus_reclaimed")?, "gpus_reclaimed")?,
        gpus_reclaiming: u32_of(get(row, "gpus_reclaiming")?, "gpus_reclaiming")?,
        reserve_price: PriceMicros(u64_of(get(row, "reserve_price_micros")?, "reserve price")?),
        available_from: time_of(row, "available_from")?,
        available_until: time_of(row, "available_until")?,
        revenue_micros: u64_of(get(row, "revenue_micros")?, "revenue")?,
        reclaim_forecast_at: opt_time_of(row, "reclaim_forecast_at")?,
        // Computed by the engine for live blocks; a stored (ended) block has none pending.
        reclaim_expected_at: None,
        nodes: nodes_of(row)?,
        updated_at: time_of(row, "updated_at")?,
    })
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

const SELECT_LEASE_EVENTS_AFTER: &str = "SELECT e.id AS row_id, e.seq, e.lease_id AS event_lease, \
    e.buyer AS event_buyer, e.kind, e.at AS event_at, e.detail_at, l.lease_no, l.order_id, \
    l.buyer, l.supplier, l.pool, l.block_id, l.gpus, l.price_micros, l.status, l.started_at, \
    l.ends_at, l.notice_ends_at, l.preempted_at, l.emergency, l.ended_at, l.cost_micros, \
    l.nodes::text AS nodes \
    FROM lease_events e LEFT JOIN leases l ON l.id = e.lease_id \
    WHERE (e.seq, e.id) > ($1, $2) ORDER BY e.seq, e.id LIMIT $3";

fn lease_event_of(row: &Row) -> Result<LeaseEventRecord, StoreError> {
    let lease_id: &str = get(row, "event_lease")?;
    Ok(LeaseEventRecord {
        seq: u64_of(get(row, "seq")?, "seq")?,
        row_id: u64_of(get(row, "row_id")?, "lease event id")?,
        lease_id: LeaseId(
            lease_id
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("lease_id {lease_id:?}")))?,
        ),
        buyer: name_of(row, "event_buyer")?,
        kind: get::<String>(row, "kind")?,
        at: time_of(row, "event_at")?,
        detail_at: opt_time_of(row, "detail_at")?,
        lease: match get::<Option<i64>>(row, "lease_no")? {
            Some(_) => Some(lease_of(row)?),
            None => None,
        },
    })
}

fn dt(at: TimeMs) -> OffsetDateTime {
    to_datetime(at)
}

fn opt_dt(at: Option<TimeMs>) -> Option<OffsetDateTime> {
    at.map(to_datetime)
}

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
    if !rows.journal.is_empty() {
        let mut seqs = Vec::with_capacity(rows.journal.len());
        let mut ats = Vec::with_capacity(rows.journal.len());
        let mut commands = Vec::with_capacity(rows.journal.len());
        for entry in &rows.journal {
            seqs.push(i64_of(entry.seq, "seq")?);
            ats.push(entry.at.0);
            commands.push(entry.command_json.as_str());
        }
        writes.push(Write {
            sql: INSERT_JOURNAL,
            params: vec![Box::new(seqs), Box::new(ats), Box::new(commands)],
        });
    }
    if !rows.orders.is_empty() {
        let n = rows.orders.len();
        let (mut id, mut account, mut pool, mut price) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut gpus, mut remaining, mut filled, mut min_gpus) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut duration, mut max_duration, mut tif, mut expires_at) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut persistent, mut client_order_id, mut status, mut cancel_reason) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut created_at, mut updated_at) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for o in &rows.orders {
            id.push(i64_of(o.id.0, "order id")?);
            account.push(&*o.account);
            pool.push(&*o.pool);
            price.push(i64_of(o.price.0, "price")?);
            gpus.push(i32_of(o.gpus, "gpus")?);
            remaining.push(i32_of(o.remaining_gpus, "remaining_gpus")?);
            filled.push(i32_of(o.filled_gpus, "filled_gpus")?);
            min_gpus.push(i32_of(o.min_gpus, "min_gpus")?);
            duration.push(i32_of(o.duration_s, "duration_s")?);
            max_duration.push(i32_of(o.max_duration_s, "max_duration_s")?);
            tif.push(codes::tif(o.tif));
            expires_at.push(opt_dt(o.expires_at));
            persistent.push(o.persistent);
            client_order_id.push(o.client_order_id.as_deref());
            status.push(codes::order_status(o.status));
            cancel_reason.push(o.cancel_reason.map(codes::cancel_reason));
            created_at.push(dt(o.created_at));
            updated_at.push(dt(o.updated_at));
        }
        writes.push(Write {
            sql: UPSERT_ORDERS,
            params: vec![
                Box::new(id),
                Box::new(account),
                Box::new(pool),
                Box::new(price),
                Box::new(gpus),
                Box::new(remaining),
                Box::new(filled),
                Box::new(min_gpus),
                Box::new(duration),
                Box::new(max_duration),
                Box::new(tif),
                Box::new(expires_at),
                Box::new(persistent),
                Box::new(client_order_id),
                Box::new(status),
                Box::new(cancel_reason),
                Box::new(created_at),
                Box::new(updated_at),
            ],
        });
    }
    if !rows.leases.is_empty() {
        let n = rows.leases.len();
        let mut id = Vec::with_capacity(n);
        let mut order_id = Vec::with_capacity(n);
        let mut buyer = Vec::with_capacity(n);
        let mut pool = Vec::with_capacity(n);
        let mut block_id = Vec::with_capacity(n);
        let mut gpus = Vec::with_capacity(n);
        let mut price = Vec::with_capacity(n);
        let mut status = Vec::with_capacity(n);
        let mut started_at = Vec::with_capacity(n);
        let mut ends_at = Vec::with_capacity(n);
        let mut notice_ends_at = Vec::with_capacity(n);
        let mut ended_at = Vec::with_capacity(n);
        let mut cost = Vec::with_capacity(n);
        let mut lease_no = Vec::with_capacity(n);
        let mut supplier = Vec::with_capacity(n);
        let mut preempted_at = Vec::with_capacity(n);
        let mut emergency = Vec::with_capacity(n);
        let mut nodes = Vec::with_capacity(n);
        for l in &rows.leases {
            id.push(l.id.to_string());
            order_id.push(l.order_id.to_string());
            buyer.push(&*l.buyer);
            pool.push(&*l.pool);
            block_id.push(&*l.block_id);
            gpus.push(i32_of(l.gpus, "gpus")?);
            price.push(i64_of(l.price.0, "price")?);
            status.push(codes::lease_status(l.status));
            started_at.push(dt(l.started_at));
            ends_at.push(dt(l.ends_at));
            notice_ends_at.push(opt_dt(l.notice_ends_at));
            ended_at.push(opt_dt(l.ended_at));
            cost.push(i64_of(l.cost_micros, "cost")?);
            lease_no.push(i64_of(l.id.0, "lease id")?);
            supplier.push(&*l.supplier);
            preempted_at.push(opt_dt(l.preempted_at));
            emergency.push(l.emergency);
            nodes.push(nodes_json(&l.nodes)?);
        }
        writes.push(Write {
            sql: UPSERT_LEASES,
            params: vec![
                Box::new(id),
                Box::new(order_id),
                Box::new(buyer),
                Box::new(pool),
                Box::new(block_id),
                Box::new(gpus),
                Box::new(price),
                Box::new(status),
                Box::new(started_at),
                Box::new(ends_at),
                Box::new(notice_ends_at),
                Box::new(ended_at),
                Box::new(cost),
                Box::new(lease_no),
                Box::new(supplier),
                Box::new(preempted_at),
                Box::new(emergency),
                Box::new(nodes),
            ],
        });
    }
    if !rows.trades.is_empty() {
        let n = rows.trades.len();
        let mut id = Vec::with_capacity(n);
        let mut pool = Vec::with_capacity(n);
        let mut price = Vec::with_capacity(n);
        let mut gpus = Vec::with_capacity(n);
        let mut order_id = Vec::with_capacity(n);
        let mut lease_id = Vec::with_capacity(n);
        let mut buyer = Vec::with_capacity(n);
        let mut supplier = Vec::with_capacity(n);
        let mut block_id = Vec::with_capacity(n);
        let mut maker_side = Vec::with_capacity(n);
        let mut at = Vec::with_capacity(n);
        for t in &rows.trades {
            id.push(i64_of(t.id.0, "trade id")?);
            pool.push(&*t.pool);
            price.push(i64_of(t.price.0, "price")?);
            gpus.push(i32_of(t.gpus, "gpus")?);
            order_id.push(i64_of(t.order_id.0, "order id")?);
            lease_id.push(i64_of(t.lease_id.0, "lease id")?);
            buyer.push(&*t.buyer);
            supplier.push(&*t.supplier);
            block_id.push(&*t.block_id);
            maker_side.push(codes::side(t.maker_side));
            at.push(dt(t.at));
        }
        writes.push(Write {
            sql: INSERT_TRADES,
            params: vec![
                Box::new(id),
                Box::new(pool),
                Box::new(price),
                Box::new(gpus),
                Box::new(order_id),
                Box::new(lease_id),
                Box::new(buyer),
                Box::new(supplier),
                Box::new(block_id),
                Box::new(maker_side),
                Box::new(at),
            ],
        });
    }
    if !rows.blocks.is_empty() {
        let n = rows.blocks.len();
        let mut supplier = Vec::with_capacity(n);
        let mut block_id = Vec::with_capacity(n);
        let mut pool = Vec::with_capacity(n);
        let mut status = Vec::with_capacity(n);
        let mut gpus = Vec::with_capacity(n);
        let mut sold = Vec::with_capacity(n);
        let mut unsold = Vec::with_capacity(n);
        let mut reclaimed = Vec::with_capacity(n);
        let mut reclaiming = Vec::with_capacity(n);
        let mut reserve = Vec::with_capacity(n);
        let mut from = Vec::with_capacity(n);
        let mut until = Vec::with_capacity(n);
        let mut revenue = Vec::with_capacity(n);
        let mut forecast = Vec::with_capacity(n);
        let mut nodes = Vec::with_capacity(n);
        let mut updated_at = Vec::with_capacity(n);
        for b in &rows.blocks {
            supplier.push(&*b.supplier);
            block_id.push(&*b.block_id);
            pool.push(&*b.pool);
            status.push(codes::block_status(b.status));
            gpus.push(i32_of(b.gpus, "gpus")?);
            sold.push(i32_of(b.gpus_sold, "gpus_sold")?);
            unsold.push(i32_of(b.gpus_unsold, "gpus_unsold")?);
            reclaimed.push(i32_of(b.gpus_reclaimed, "gpus_reclaimed")?);
            reclaiming.push(i32_of(b.gpus_reclaiming, "gpus_reclaiming")?);
            reserve.push(i64_of(b.reserve_price.0, "reserve price")?);
            from.push(dt(b.available_from));
            until.push(dt(b.available_until));
            revenue.push(i64_of(b.revenue_micros, "revenue")?);
            forecast.push(opt_dt(b.reclaim_forecast_at));
            nodes.push(nodes_json(&b.nodes)?);
            updated_at.push(dt(b.updated_at));
        }
        writes.push(Write {
            sql: UPSERT_BLOCKS,
            params: vec![
                Box::new(supplier),
                Box::new(block_id),
                Box::new(pool),
                Box::new(status),
                Box::new(gpus),
                Box::new(sold),
                Box::new(unsold),
                Box::new(reclaimed),
                Box::new(reclaiming),
                Box::new(reserve),
                Box::new(from),
                Box::new(until),
                Box::new(revenue),
                Box::new(forecast),
                Box::new(nodes),
                Box::new(updated_at),
            ],
        });
    }
    if !rows.lease_events.is_empty() {
        let n = rows.lease_events.len();
        let mut seq = Vec::with_capacity(n);
        let mut lease_id = Vec::with_capacity(n);
        let mut buyer = Vec::with_capacity(n);
        let mut kind = Vec::with_capacity(n);
        let mut at = Vec::with_capacity(n);
        let mut detail_at = Vec::with_capacity(n);
        for e in &rows.lease_events {
            seq.push(i64_of(e.seq, "seq")?);
            lease_id.push(e.lease_id.to_string());
            buyer.push(&*e.buyer);
            kind.push(e.kind);
            at.push(dt(e.at));
            detail_at.push(opt_dt(e.detail_at));
        }
        writes.push(Write {
            sql: INSERT_LEASE_EVENTS,
            params: vec![
                Box::new(seq),
                Box::new(lease_id),
                Box::new(buyer),
                Box::new(kind),
                Box::new(at),
                Box::new(detail_at),
            ],
        });
    }
    if !rows.applied_signals.is_empty() {
        let n = rows.applied_signals.len();
        let mut id_ms = Vec::with_capacity(n);
        let mut id_seq = Vec::with_capacity(n);
        let mut seq = Vec::with_capacity(n);
        let mut rejection = Vec::with_capacity(n);
        for signal in &rows.applied_signals {
            id_ms.push(i64_of(signal.id.ms, "signal id")?);
            id_seq.push(i64_of(signal.id.seq, "signal id")?);
            seq.push(i64_of(signal.seq, "seq")?);
            rejection.push(signal.rejection.as_deref());
        }
        // No ON CONFLICT: recording an id twice must fail the batch, never apply it twice.
        writes.push(Write {
            sql: INSERT_APPLIED_SIGNALS,
            params: vec![
                Box::new(id_ms),
                Box::new(id_seq),
                Box::new(seq),
                Box::new(rejection),
            ],
        });
    }
    Ok(writes)
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
            row.map(|row| {
                Ok(StoredSnapshot {
                    seq: u64_of(get(&row, "seq")?, "seq")?,
                    state_hash: get::<i64>(&row, "state_hash")? as u64,
                    state: get(&row, "state")?,
                })
            })
            .transpose()
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
                    &[
                        &i64_of(after_seq, "seq")?,
                        &i64::try_from(limit).unwrap_or(i64::MAX),
                    ],
                )
                .await?;
            rows.iter()
                .map(|row| {
                    Ok(JournalEntry {
                        seq: u64_of(get(row, "seq")?, "seq")?,
                        at: TimeMs(get(row, "at_ms")?),
                        command_json: get(row, "command")?,
                    })
                })
                .collect()
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
                    &[&i64::try_from(limit).unwrap_or(i64::MAX)],
                )
                .await?;
            rows.iter()
                .map(|row| {
                    Ok(EntryId::new(
                        u64_of(get(row, "id_ms")?, "signal id")?,
                        u64_of(get(row, "id_seq")?, "signal id")?,
                    ))
                })
                .collect()
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
            rows.iter()
                .map(|row| {
                    Ok(AppliedSignal {
                        id: EntryId::new(
                            u64_of(get(row, "id_ms")?, "signal id")?,
                            u64_of(get(row, "id_seq")?, "signal id")?,
                        ),
                        seq: u64_of(get(row, "seq")?, "seq")?,
                        rejection: get(row, "rejection")?,
                    })
                })
                .collect()
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
        within(DB_READ_TIMEOUT, "reading lease events", async {
            let client = self.read_pool.get().await?;
            let statement = client.prepare_cached(SELECT_LEASE_EVENTS_AFTER).await?;
            let rows = client
                .query(
                    &statement,
                    &[
                        &clamp(after_seq),
                        &clamp(after_row_id),
                        &i64::try_from(limit).unwrap_or(i64::MAX),
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
            let since = dt(since);
            let per_pool = i64::try_from(trades_per_pool).unwrap_or(i64::MAX);
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
            let mut history = MarketHistory::default();
            for row in &trade_rows {
                history.trades.push((
                    get::<String>(row, "pool")?,
                    PublicTrade {
                        id: TradeId(u64_of(get(row, "id")?, "trade id")?).0,
                        price: PriceMicros(u64_of(get(row, "price_micros")?, "price")?),
                        gpus: u32_of(get(row, "gpus")?, "gpus")?,
                        maker_side: decode(get(row, "maker_side")?, codes::parse_side, "side")?,
                        at: time_of(row, "at")?,
                    },
                ));
            }
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
                history.lease_minutes.push(LeaseMinute {
                    pool: get(row, "pool")?,
                    minute: get(row, "minute")?,
                    gpu_seconds_started: u64_of(get(row, "gpu_seconds")?, "gpu seconds")?,
                    ended: 0,
                    preempted: 0,
                });
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
                history.lease_minutes.push(LeaseMinute {
                    pool: get(row, "pool")?,
                    minute: get(row, "minute")?,
                    gpu_seconds_started: 0,
                    ended: u64_of(get(row, "ended")?, "count")?,
                    preempted: u64_of(get(row, "preempted")?, "count")?,
                });
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
