//! A PostgreSQL batch as a few statements: each inserts or upserts all of the batch's rows of
//! one table at once, through `UNNEST` of one array parameter per column, so a batch costs one
//! round trip whatever its size. The values come from the shared row layer
//! ([`rows`](super::super::rows)); this file only lays them out as arrays and holds the SQL.

use super::super::rows::{self, i64_of, Value};
use super::super::{BatchRows, StoreError};
use crate::timestamp::to_datetime;
use std::borrow::Cow;
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;

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
    supplier, preempted_at, emergency, nodes, notice_s, access, ssh_public_keys, updated_at) \
    SELECT u.id, u.order_id, u.buyer, u.pool, u.block_id, u.gpus, u.price_micros, u.status, \
    u.started_at, u.ends_at, u.notice_ends_at, u.ended_at, u.cost_micros, u.lease_no, \
    u.supplier, u.preempted_at, u.emergency, u.nodes::jsonb, u.notice_s, u.access, \
    u.ssh_public_keys, now() \
    FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int4[], \
    $7::int8[], $8::text[], $9::timestamptz[], $10::timestamptz[], $11::timestamptz[], \
    $12::timestamptz[], $13::int8[], $14::int8[], $15::text[], $16::timestamptz[], $17::bool[], \
    $18::text[], $19::int4[], $20::text[], $21::text[]) AS u(id, order_id, buyer, pool, \
    block_id, gpus, price_micros, status, started_at, ends_at, notice_ends_at, ended_at, \
    cost_micros, lease_no, supplier, preempted_at, emergency, nodes, notice_s, access, \
    ssh_public_keys) \
    ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, ends_at = EXCLUDED.ends_at, \
    notice_ends_at = EXCLUDED.notice_ends_at, ended_at = EXCLUDED.ended_at, \
    cost_micros = EXCLUDED.cost_micros, preempted_at = EXCLUDED.preempted_at, \
    emergency = EXCLUDED.emergency, nodes = EXCLUDED.nodes, access = EXCLUDED.access, \
    updated_at = now()";

const INSERT_TRADES: &str = "INSERT INTO trades (id, pool, price_micros, gpus, order_id, \
    lease_id, buyer, supplier, block_id, maker_side, at) \
    SELECT * FROM UNNEST($1::int8[], $2::text[], $3::int8[], $4::int4[], $5::int8[], $6::int8[], \
    $7::text[], $8::text[], $9::text[], $10::text[], $11::timestamptz[])";

const UPSERT_BLOCKS: &str = "INSERT INTO blocks (supplier, block_id, pool, status, gpus, \
    gpus_sold, gpus_unsold, gpus_reclaimed, gpus_reclaiming, reserve_price_micros, \
    available_from, available_until, revenue_micros, reclaim_forecast_at, nodes, updated_at, \
    gpus_failed) \
    SELECT u.supplier, u.block_id, u.pool, u.status, u.gpus, u.gpus_sold, u.gpus_unsold, \
    u.gpus_reclaimed, u.gpus_reclaiming, u.reserve_price_micros, u.available_from, \
    u.available_until, u.revenue_micros, u.reclaim_forecast_at, u.nodes::jsonb, u.updated_at, \
    u.gpus_failed \
    FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int4[], $6::int4[], \
    $7::int4[], $8::int4[], $9::int4[], $10::int8[], $11::timestamptz[], $12::timestamptz[], \
    $13::int8[], $14::timestamptz[], $15::text[], $16::timestamptz[], $17::int4[]) \
    AS u(supplier, block_id, pool, status, gpus, gpus_sold, gpus_unsold, gpus_reclaimed, \
    gpus_reclaiming, reserve_price_micros, available_from, available_until, revenue_micros, \
    reclaim_forecast_at, nodes, updated_at, gpus_failed) \
    ON CONFLICT (supplier, block_id) DO UPDATE SET status = EXCLUDED.status, \
    gpus = EXCLUDED.gpus, gpus_sold = EXCLUDED.gpus_sold, gpus_unsold = EXCLUDED.gpus_unsold, \
    gpus_reclaimed = EXCLUDED.gpus_reclaimed, gpus_reclaiming = EXCLUDED.gpus_reclaiming, \
    gpus_failed = EXCLUDED.gpus_failed, \
    reserve_price_micros = EXCLUDED.reserve_price_micros, \
    available_from = EXCLUDED.available_from, available_until = EXCLUDED.available_until, \
    revenue_micros = EXCLUDED.revenue_micros, reclaim_forecast_at = EXCLUDED.reclaim_forecast_at, \
    nodes = EXCLUDED.nodes, updated_at = EXCLUDED.updated_at";

const UPSERT_USAGE: &str = "INSERT INTO pool_usage (pool, minute, offered_gpu_ms, \
    leased_gpu_ms) SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int8[]) \
    ON CONFLICT (pool, minute) DO UPDATE SET \
    offered_gpu_ms = pool_usage.offered_gpu_ms + EXCLUDED.offered_gpu_ms, \
    leased_gpu_ms = pool_usage.leased_gpu_ms + EXCLUDED.leased_gpu_ms";

const INSERT_LEASE_EVENTS: &str = "INSERT INTO lease_events (seq, lease_id, buyer, kind, at, \
    detail_at) SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], \
    $5::timestamptz[], $6::timestamptz[])";

const INSERT_APPLIED_SIGNALS: &str = "INSERT INTO applied_signals (id_ms, id_seq, seq, \
    rejection) SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::text[])";

/// First in a fenced batch: fails the transaction unless its epoch is current (migration 0006).
const FENCE: &str = "SELECT offpeak_fence($1::int8)";

/// Last in a batch: wakes the standbys (delivered at commit, and only if it commits).
const NOTIFY_JOURNAL: &str = "SELECT pg_notify('offpeak_journal', $1::text)";

/// The channel standbys `LISTEN` on; the payload is the batch's last seq.
pub const JOURNAL_CHANNEL: &str = "offpeak_journal";

/// One statement of a batch and its (array) parameters.
pub(super) struct Write<'a> {
    pub(super) sql: &'static str,
    pub(super) params: Vec<Box<dyn ToSql + Sync + Send + 'a>>,
}

/// The statements of one batch, with their parameters: one per table that has rows.
pub(super) fn batch_writes(rows: &BatchRows) -> Result<Vec<Write<'_>>, StoreError> {
    let mut writes = Vec::new();
    if let Some(epoch) = rows.fence_epoch {
        writes.push(Write {
            sql: FENCE,
            params: vec![Box::new(i64_of(epoch, "epoch")?)],
        });
    }
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
    add_write(&mut writes, UPSERT_USAGE, &rows.usage, rows::usage_values)?;
    // No ON CONFLICT: recording an id twice must fail the batch, never apply it twice.
    add_write(
        &mut writes,
        INSERT_APPLIED_SIGNALS,
        &rows.applied_signals,
        rows::applied_signal_values,
    )?;
    if let Some(last) = rows.journal.last() {
        writes.push(Write {
            sql: NOTIFY_JOURNAL,
            params: vec![Box::new(last.seq.to_string())],
        });
    }
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
