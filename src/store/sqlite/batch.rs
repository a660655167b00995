//! An SQLite batch: each row is one execution of its table's cached `INSERT` (or upsert)
//! statement, inside the caller's transaction. The values come from the shared row layer
//! ([`rows`](super::super::rows)); this file only binds them (times as integer milliseconds,
//! booleans as 0/1) and holds the SQL.

use super::super::rows::{self, Value};
use super::super::{BatchRows, StoreError};
use crate::timestamp::now_ms;
use rusqlite::types::{ToSqlOutput, Value as SqlValue};
use rusqlite::{params_from_iter, ToSql};

impl ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        // Times are integer milliseconds, booleans 0/1, `integer` and `bigint` both INTEGER.
        Ok(match self {
            Value::Int8(v) => ToSqlOutput::Owned(SqlValue::from(*v)),
            Value::Int4(v) => ToSqlOutput::from(*v),
            Value::Text(Some(v)) => ToSqlOutput::from(v.as_ref()),
            Value::Text(None) => ToSqlOutput::Owned(SqlValue::Null),
            Value::Time(v) => ToSqlOutput::Owned(SqlValue::from(v.map(|t| t.0))),
            Value::Bool(v) => ToSqlOutput::from(*v),
        })
    }
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
    supplier, preempted_at, emergency, nodes, notice_s, access, ssh_public_keys, updated_at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
    ?20, ?21, ?22) \
    ON CONFLICT (id) DO UPDATE SET status = excluded.status, ends_at = excluded.ends_at, \
    notice_ends_at = excluded.notice_ends_at, ended_at = excluded.ended_at, \
    cost_micros = excluded.cost_micros, preempted_at = excluded.preempted_at, \
    emergency = excluded.emergency, nodes = excluded.nodes, access = excluded.access, \
    updated_at = excluded.updated_at";

const INSERT_TRADE: &str = "INSERT INTO trades (id, pool, price_micros, gpus, order_id, \
    lease_id, buyer, supplier, block_id, maker_side, at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

const UPSERT_BLOCK: &str = "INSERT INTO blocks (supplier, block_id, pool, status, gpus, \
    gpus_sold, gpus_unsold, gpus_reclaimed, gpus_reclaiming, reserve_price_micros, \
    available_from, available_until, revenue_micros, reclaim_forecast_at, nodes, updated_at, \
    gpus_failed) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
    ON CONFLICT (supplier, block_id) DO UPDATE SET status = excluded.status, \
    gpus = excluded.gpus, gpus_sold = excluded.gpus_sold, gpus_unsold = excluded.gpus_unsold, \
    gpus_reclaimed = excluded.gpus_reclaimed, gpus_reclaiming = excluded.gpus_reclaiming, \
    gpus_failed = excluded.gpus_failed, \
    reserve_price_micros = excluded.reserve_price_micros, \
    available_from = excluded.available_from, available_until = excluded.available_until, \
    revenue_micros = excluded.revenue_micros, reclaim_forecast_at = excluded.reclaim_forecast_at, \
    nodes = excluded.nodes, updated_at = excluded.updated_at";

const UPSERT_USAGE: &str = "INSERT INTO pool_usage (pool, minute, offered_gpu_ms, \
    leased_gpu_ms) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (pool, minute) DO UPDATE SET \
    offered_gpu_ms = offered_gpu_ms + excluded.offered_gpu_ms, \
    leased_gpu_ms = leased_gpu_ms + excluded.leased_gpu_ms";

const INSERT_LEASE_EVENT: &str = "INSERT INTO lease_events (seq, lease_id, buyer, kind, at, \
    detail_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// Writes every row of a batch inside the caller's transaction.
pub(super) fn write_rows(
    tx: &rusqlite::Transaction<'_>,
    rows: &BatchRows,
) -> Result<(), StoreError> {
    execute_each(tx, INSERT_JOURNAL, &rows.journal, rows::journal_values, &[])?;
    execute_each(tx, UPSERT_ORDER, &rows.orders, rows::order_values, &[])?;
    // PostgreSQL stamps `now()`; SQLite has no clock in milliseconds, so it is a parameter.
    let updated_at = Value::Time(Some(now_ms()));
    execute_each(
        tx,
        UPSERT_LEASE,
        &rows.leases,
        rows::lease_values,
        &[updated_at],
    )?;
    execute_each(tx, INSERT_TRADE, &rows.trades, rows::trade_values, &[])?;
    execute_each(tx, UPSERT_BLOCK, &rows.blocks, rows::block_values, &[])?;
    execute_each(
        tx,
        INSERT_LEASE_EVENT,
        &rows.lease_events,
        rows::lease_event_values,
        &[],
    )?;
    execute_each(tx, UPSERT_USAGE, &rows.usage, rows::usage_values, &[])?;
    // No ON CONFLICT: recording an id twice must fail the batch, never apply it twice.
    execute_each(
        tx,
        "INSERT INTO applied_signals (id_ms, id_seq, seq, rejection) VALUES (?1, ?2, ?3, ?4)",
        &rows.applied_signals,
        rows::applied_signal_values,
        &[],
    )?;
    Ok(())
}

/// Runs `sql` once per item with its values, then `extra`.
fn execute_each<'a, T, const N: usize>(
    tx: &rusqlite::Transaction<'_>,
    sql: &str,
    items: &'a [T],
    values: fn(&'a T) -> Result<[Value<'a>; N], StoreError>,
    extra: &[Value<'_>],
) -> Result<(), StoreError> {
    if items.is_empty() {
        return Ok(());
    }
    let mut statement = tx.prepare_cached(sql)?;
    for item in items {
        statement.execute(params_from_iter(values(item)?.iter().chain(extra)))?;
    }
    Ok(())
}
