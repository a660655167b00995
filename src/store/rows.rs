//! The row layer both backends share: which columns a read selects, how a stored row becomes
//! an engine view, and which values a batch writes for each view.
//!
//! Reading goes through [`Row`], a column accessor each backend implements for its own row
//! type; the mappers (`order_of`, `lease_of`...) are written once over it. Writing goes the
//! other way: `order_values`, `lease_values`... give a view's parameters as [`Value`]s, in the
//! order of the table's `INSERT` column list, and each backend binds them its own way
//! (PostgreSQL as one array per column, SQLite row by row). The tables are the same in both
//! backends; only the SQL dialect and the connection handling stay in `postgres.rs` and
//! `sqlite.rs`.
//!
//! Numbers are checked both ways: a value that does not fit its column is refused before it is
//! written ([`StoreError::Query`]), and a stored value that does not fit its view (a negative
//! count, an unknown code) is [`StoreError::Corrupt`], never wrapped or guessed.

use super::{
    AppliedSignal, JournalEntry, LeaseEventRecord, LeaseEventRow, LeaseMinute, ListFilter,
    PublicTrade, StoreError, StoredSnapshot,
};
use crate::journal::{codes, EntryId, UsageDelta};
use matching_engine::{
    Access, BlockView, LeaseId, LeaseView, Name, NodeGpus, OrderId, OrderView, PriceMicros,
    SshKeys, TimeMs, TradeView,
};
use std::borrow::Cow;

/// Reads the columns of one stored row, by name, in the store's own terms.
///
/// `integer` columns are PostgreSQL's `int4` (SQLite `INTEGER`), `bigint` ones `int8`; times
/// are `timestamptz` in PostgreSQL and integer milliseconds in SQLite. A missing column or a
/// value of the wrong type is [`StoreError::Corrupt`].
pub trait Row {
    /// A `bigint` column.
    fn i64(&self, column: &str) -> Result<i64, StoreError>;
    /// A nullable `bigint` column.
    fn opt_i64(&self, column: &str) -> Result<Option<i64>, StoreError>;
    /// An `integer` column, widened.
    fn int(&self, column: &str) -> Result<i64, StoreError>;
    /// A `text` column.
    fn text(&self, column: &str) -> Result<&str, StoreError>;
    /// A nullable `text` column.
    fn opt_text(&self, column: &str) -> Result<Option<&str>, StoreError>;
    /// A `boolean` column.
    fn bool(&self, column: &str) -> Result<bool, StoreError>;
    /// A time column.
    fn time(&self, column: &str) -> Result<TimeMs, StoreError>;
    /// A nullable time column.
    fn opt_time(&self, column: &str) -> Result<Option<TimeMs>, StoreError>;
    /// A `bytea` (SQLite `BLOB`) column.
    fn bytes(&self, column: &str) -> Result<Vec<u8>, StoreError>;

    /// A `bigint` column that holds a count, an id or an amount: never negative.
    fn u64(&self, column: &str) -> Result<u64, StoreError> {
        u64_of(self.i64(column)?, column)
    }

    /// An `integer` column that holds GPUs or seconds: never negative.
    fn u32(&self, column: &str) -> Result<u32, StoreError> {
        let value = self.int(column)?;
        u32::try_from(value)
            .map_err(|_| StoreError::Corrupt(format!("{column} {value} is not a u32")))
    }

    /// A `text` column that holds a name.
    fn name(&self, column: &str) -> Result<Name, StoreError> {
        Ok(Name::from(self.text(column)?))
    }

    /// A `text` column that holds one of the codes in [`codes`].
    fn code<T>(&self, column: &str, parse: fn(&str) -> Option<T>) -> Result<T, StoreError> {
        decode(self.text(column)?, parse, column)
    }

    /// A `text` column that holds a number written as text (lease and order ids).
    fn parsed<T: std::str::FromStr>(&self, column: &str) -> Result<T, StoreError> {
        let text = self.text(column)?;
        text.parse()
            .map_err(|_| StoreError::Corrupt(format!("{column} {text:?}")))
    }
}

/// `value` as a `bigint` parameter; beyond it is refused, not wrapped.
pub fn i64_of(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Query(format!("{what} {value} exceeds bigint")))
}

/// `value` as an `integer` parameter; beyond it is refused, not wrapped.
pub fn i32_of(value: u32, what: &str) -> Result<i32, StoreError> {
    i32::try_from(value).map_err(|_| StoreError::Query(format!("{what} {value} exceeds integer")))
}

/// A stored `bigint` that must not be negative.
pub fn u64_of(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value} is negative")))
}

/// A count or a limit as a `bigint` parameter: one beyond it means "no limit".
pub fn bigint_or_max(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

/// A list's page size as a parameter.
pub fn limit_of(filter: &ListFilter) -> i64 {
    bigint_or_max(filter.limit)
}

/// A list's cursor as an id (orders, leases).
pub fn id_cursor(filter: &ListFilter) -> Option<i64> {
    // A cursor that is not an id names nothing below it: an empty page, not an error.
    filter
        .cursor
        .as_deref()
        .map(|c| c.parse::<i64>().unwrap_or(i64::MIN))
}

fn decode<T>(value: &str, parse: fn(&str) -> Option<T>, what: &str) -> Result<T, StoreError> {
    parse(value).ok_or_else(|| StoreError::Corrupt(format!("{what} {value:?}")))
}

fn nodes_json(nodes: &[NodeGpus]) -> Result<String, StoreError> {
    serde_json::to_string(nodes).map_err(|e| StoreError::Query(format!("encoding nodes: {e}")))
}

fn nodes_of(row: &impl Row) -> Result<Vec<NodeGpus>, StoreError> {
    serde_json::from_str(row.text("nodes")?).map_err(|e| StoreError::Corrupt(format!("nodes: {e}")))
}

fn json_of<T: serde::Serialize + ?Sized>(value: &T, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Query(format!("encoding {what}: {e}")))
}

/// A lease's access; rows from before the handoff existed (NULL) read as ready from the start.
fn access_of(row: &impl Row) -> Result<Access, StoreError> {
    match row.opt_text("access")? {
        Some(json) => serde_json::from_str(json)
            .map_err(|e| StoreError::Corrupt(format!("lease access: {e}"))),
        None => Ok(Access::before_handoff_existed()),
    }
}

fn ssh_keys_of(row: &impl Row) -> Result<Option<SshKeys>, StoreError> {
    match row.opt_text("ssh_public_keys")? {
        Some(json) => serde_json::from_str(json)
            .map_err(|e| StoreError::Corrupt(format!("lease ssh_public_keys: {e}"))),
        None => Ok(None),
    }
}

/// The columns [`order_of`] reads.
pub const ORDER_COLUMNS: &str = "id, account, pool, price_micros, gpus, remaining_gpus, \
    filled_gpus, min_gpus, duration_s, max_duration_s, tif, expires_at, persistent, \
    client_order_id, status, cancel_reason, created_at, updated_at";

/// An order from its row.
pub fn order_of(row: &impl Row) -> Result<OrderView, StoreError> {
    Ok(OrderView {
        id: OrderId(row.u64("id")?),
        account: row.name("account")?,
        pool: row.name("pool")?,
        price: PriceMicros(row.u64("price_micros")?),
        gpus: row.u32("gpus")?,
        remaining_gpus: row.u32("remaining_gpus")?,
        filled_gpus: row.u32("filled_gpus")?,
        min_gpus: row.u32("min_gpus")?,
        duration_s: row.u32("duration_s")?,
        max_duration_s: row.u32("max_duration_s")?,
        tif: row.code("tif", codes::parse_tif)?,
        expires_at: row.opt_time("expires_at")?,
        persistent: row.bool("persistent")?,
        client_order_id: row.opt_text("client_order_id")?.map(Name::from),
        status: row.code("status", codes::parse_order_status)?,
        cancel_reason: match row.opt_text("cancel_reason")? {
            Some(code) => Some(decode(code, codes::parse_cancel_reason, "cancel_reason")?),
            None => None,
        },
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
    })
}

/// The columns [`lease_of`] reads (`nodes` is `jsonb` in PostgreSQL: read as text).
pub const LEASE_COLUMNS: &str = "lease_no, order_id, buyer, supplier, pool, block_id, gpus, \
    price_micros, status, started_at, ends_at, notice_ends_at, preempted_at, emergency, \
    notice_s, ended_at, cost_micros, CAST(nodes AS text) AS nodes, access, ssh_public_keys";

/// A lease from its row.
pub fn lease_of(row: &impl Row) -> Result<LeaseView, StoreError> {
    Ok(LeaseView {
        id: LeaseId(row.u64("lease_no")?),
        order_id: OrderId(row.parsed("order_id")?),
        buyer: row.name("buyer")?,
        supplier: row.name("supplier")?,
        pool: row.name("pool")?,
        block_id: row.name("block_id")?,
        gpus: row.u32("gpus")?,
        price: PriceMicros(row.u64("price_micros")?),
        status: row.code("status", codes::parse_lease_status)?,
        started_at: row.time("started_at")?,
        ends_at: row.time("ends_at")?,
        notice_ends_at: row.opt_time("notice_ends_at")?,
        preempted_at: row.opt_time("preempted_at")?,
        emergency: row.bool("emergency")?,
        notice_s: row.u32("notice_s")?,
        ended_at: row.opt_time("ended_at")?,
        cost_micros: row.u64("cost_micros")?,
        nodes: nodes_of(row)?,
        access: access_of(row)?,
        ssh_public_keys: ssh_keys_of(row)?,
    })
}

/// The columns [`block_of`] reads (`nodes` is `jsonb` in PostgreSQL: read as text).
pub const BLOCK_COLUMNS: &str = "supplier, block_id, pool, status, gpus, gpus_sold, \
    gpus_unsold, gpus_reclaimed, gpus_reclaiming, reserve_price_micros, available_from, \
    available_until, revenue_micros, reclaim_forecast_at, CAST(nodes AS text) AS nodes, \
    updated_at, gpus_failed";

/// A block from its row.
pub fn block_of(row: &impl Row) -> Result<BlockView, StoreError> {
    Ok(BlockView {
        supplier: row.name("supplier")?,
        block_id: row.name("block_id")?,
        pool: row.name("pool")?,
        status: row.code("status", codes::parse_block_status)?,
        gpus: row.u32("gpus")?,
        gpus_sold: row.u32("gpus_sold")?,
        gpus_unsold: row.u32("gpus_unsold")?,
        gpus_reclaimed: row.u32("gpus_reclaimed")?,
        gpus_failed: row.u32("gpus_failed")?,
        gpus_reclaiming: row.u32("gpus_reclaiming")?,
        reserve_price: PriceMicros(row.u64("reserve_price_micros")?),
        available_from: row.time("available_from")?,
        available_until: row.time("available_until")?,
        revenue_micros: row.u64("revenue_micros")?,
        reclaim_forecast_at: row.opt_time("reclaim_forecast_at")?,
        // Computed by the engine from a pending forecast; a block read back from the store is
        // shown as the engine has it when it is live (routes overlay live views on rows).
        reclaim_expected_at: None,
        nodes: nodes_of(row)?,
        updated_at: row.time("updated_at")?,
    })
}

/// Lease events with their lease as it is now, for [`lease_event_of`]; each backend adds its
/// `WHERE (e.seq, e.id) > (after) ORDER BY e.seq, e.id LIMIT n`.
pub const SELECT_LEASE_EVENTS: &str = "SELECT e.id AS row_id, e.seq, \
    e.lease_id AS event_lease, e.buyer AS event_buyer, e.kind, e.at AS event_at, e.detail_at, \
    l.lease_no, l.order_id, l.buyer, l.supplier, l.pool, l.block_id, l.gpus, l.price_micros, \
    l.status, l.started_at, l.ends_at, l.notice_ends_at, l.preempted_at, l.emergency, \
    l.notice_s, l.ended_at, l.cost_micros, CAST(l.nodes AS text) AS nodes, l.access, \
    l.ssh_public_keys \
    FROM lease_events e LEFT JOIN leases l ON l.id = e.lease_id";

/// A lease event and its lease from a row of [`SELECT_LEASE_EVENTS`].
pub fn lease_event_of(row: &impl Row) -> Result<LeaseEventRecord, StoreError> {
    Ok(LeaseEventRecord {
        seq: row.u64("seq")?,
        row_id: row.u64("row_id")?,
        lease_id: LeaseId(row.parsed("event_lease")?),
        buyer: row.name("event_buyer")?,
        kind: row.text("kind")?.to_owned(),
        at: row.time("event_at")?,
        detail_at: row.opt_time("detail_at")?,
        lease: match row.opt_i64("lease_no")? {
            Some(_) => Some(lease_of(row)?),
            None => None,
        },
    })
}

/// A journal entry from its row (`seq`, `at_ms`, `command` as text).
pub fn journal_entry_of(row: &impl Row) -> Result<JournalEntry, StoreError> {
    Ok(JournalEntry {
        seq: row.u64("seq")?,
        at: TimeMs(row.i64("at_ms")?),
        command_json: row.text("command")?.to_owned(),
    })
}

/// A snapshot from its row (`seq`, `state_hash`, `state`).
pub fn snapshot_of(row: &impl Row) -> Result<StoredSnapshot, StoreError> {
    Ok(StoredSnapshot {
        seq: row.u64("seq")?,
        // 64 opaque bits, kept as a two's-complement bigint.
        state_hash: row.i64("state_hash")? as u64,
        state: row.bytes("state")?,
    })
}

/// An applied signal's stream entry id from its row (`id_ms`, `id_seq`).
pub fn signal_id_of(row: &impl Row) -> Result<EntryId, StoreError> {
    Ok(EntryId::new(row.u64("id_ms")?, row.u64("id_seq")?))
}

/// An applied signal from its row (`id_ms`, `id_seq`, `seq`, `rejection`).
pub fn applied_signal_of(row: &impl Row) -> Result<AppliedSignal, StoreError> {
    Ok(AppliedSignal {
        id: signal_id_of(row)?,
        seq: row.u64("seq")?,
        rejection: row.opt_text("rejection")?.map(str::to_owned),
    })
}

/// A recent trade and its pool from its row (`pool`, `id`, `price_micros`, `gpus`,
/// `maker_side`, `at`).
pub fn public_trade_of(row: &impl Row) -> Result<(String, PublicTrade), StoreError> {
    Ok((
        row.text("pool")?.to_owned(),
        PublicTrade {
            id: row.u64("id")?,
            price: PriceMicros(row.u64("price_micros")?),
            gpus: row.u32("gpus")?,
            maker_side: row.code("maker_side", codes::parse_side)?,
            at: row.time("at")?,
        },
    ))
}

/// GPU-seconds of leases started in one minute from its row (`pool`, `minute`,
/// `gpu_seconds`).
pub fn lease_minute_started_of(row: &impl Row) -> Result<LeaseMinute, StoreError> {
    Ok(LeaseMinute {
        pool: row.text("pool")?.to_owned(),
        minute: row.i64("minute")?,
        gpu_seconds_started: row.u64("gpu_seconds")?,
        ended: 0,
        preempted: 0,
    })
}

/// Leases ended in one minute from its row (`pool`, `minute`, `ended`, `preempted`).
pub fn lease_minute_ended_of(row: &impl Row) -> Result<LeaseMinute, StoreError> {
    Ok(LeaseMinute {
        pool: row.text("pool")?.to_owned(),
        minute: row.i64("minute")?,
        gpu_seconds_started: 0,
        ended: row.u64("ended")?,
        preempted: row.u64("preempted")?,
    })
}

/// A statement parameter in the store's terms; each backend binds it its own way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    /// A `bigint`.
    Int8(Option<i64>),
    /// An `integer`.
    Int4(i32),
    /// A `text` (JSON columns too: the SQL casts them).
    Text(Option<Cow<'a, str>>),
    /// A time: `timestamptz` in PostgreSQL, milliseconds in SQLite.
    Time(Option<TimeMs>),
    /// A `boolean`.
    Bool(bool),
}

fn int8(value: u64, what: &str) -> Result<Value<'static>, StoreError> {
    Ok(Value::Int8(Some(i64_of(value, what)?)))
}

fn int4(value: u32, what: &str) -> Result<Value<'static>, StoreError> {
    Ok(Value::Int4(i32_of(value, what)?))
}

fn text(value: &str) -> Value<'_> {
    Value::Text(Some(Cow::Borrowed(value)))
}

fn owned(value: String) -> Value<'static> {
    Value::Text(Some(Cow::Owned(value)))
}

fn opt_text(value: Option<&str>) -> Value<'_> {
    Value::Text(value.map(Cow::Borrowed))
}

fn time(value: TimeMs) -> Value<'static> {
    Value::Time(Some(value))
}

/// A journal entry's values: `seq, at_ms, command`.
pub fn journal_values(e: &JournalEntry) -> Result<[Value<'_>; 3], StoreError> {
    Ok([
        int8(e.seq, "seq")?,
        Value::Int8(Some(e.at.0)),
        text(&e.command_json),
    ])
}

/// An order's values: `id, account, pool, price_micros, gpus, remaining_gpus, filled_gpus,
/// min_gpus, duration_s, max_duration_s, tif, expires_at, persistent, client_order_id, status,
/// cancel_reason, created_at, updated_at`.
pub fn order_values(o: &OrderView) -> Result<[Value<'_>; 18], StoreError> {
    Ok([
        int8(o.id.0, "order id")?,
        text(&o.account),
        text(&o.pool),
        int8(o.price.0, "price")?,
        int4(o.gpus, "gpus")?,
        int4(o.remaining_gpus, "remaining_gpus")?,
        int4(o.filled_gpus, "filled_gpus")?,
        int4(o.min_gpus, "min_gpus")?,
        int4(o.duration_s, "duration_s")?,
        int4(o.max_duration_s, "max_duration_s")?,
        text(codes::tif(o.tif)),
        Value::Time(o.expires_at),
        Value::Bool(o.persistent),
        opt_text(o.client_order_id.as_deref()),
        text(codes::order_status(o.status)),
        opt_text(o.cancel_reason.map(codes::cancel_reason)),
        time(o.created_at),
        time(o.updated_at),
    ])
}

/// A lease's values: `id, order_id, buyer, pool, block_id, gpus, price_micros, status,
/// started_at, ends_at, notice_ends_at, ended_at, cost_micros, lease_no, supplier,
/// preempted_at, emergency, nodes, notice_s, access, ssh_public_keys` (each backend stamps
/// `updated_at` itself).
pub fn lease_values(l: &LeaseView) -> Result<[Value<'_>; 21], StoreError> {
    Ok([
        owned(l.id.to_string()),
        owned(l.order_id.to_string()),
        text(&l.buyer),
        text(&l.pool),
        text(&l.block_id),
        int4(l.gpus, "gpus")?,
        int8(l.price.0, "price")?,
        text(codes::lease_status(l.status)),
        time(l.started_at),
        time(l.ends_at),
        Value::Time(l.notice_ends_at),
        Value::Time(l.ended_at),
        int8(l.cost_micros, "cost")?,
        int8(l.id.0, "lease id")?,
        text(&l.supplier),
        Value::Time(l.preempted_at),
        Value::Bool(l.emergency),
        owned(nodes_json(&l.nodes)?),
        int4(l.notice_s, "notice_s")?,
        owned(json_of(&l.access, "lease access")?),
        match &l.ssh_public_keys {
            Some(keys) => owned(json_of(keys, "ssh keys")?),
            None => opt_text(None),
        },
    ])
}

/// A trade's values: `id, pool, price_micros, gpus, order_id, lease_id, buyer, supplier,
/// block_id, maker_side, at`.
pub fn trade_values(t: &TradeView) -> Result<[Value<'_>; 11], StoreError> {
    Ok([
        int8(t.id.0, "trade id")?,
        text(&t.pool),
        int8(t.price.0, "price")?,
        int4(t.gpus, "gpus")?,
        int8(t.order_id.0, "order id")?,
        int8(t.lease_id.0, "lease id")?,
        text(&t.buyer),
        text(&t.supplier),
        text(&t.block_id),
        text(codes::side(t.maker_side)),
        time(t.at),
    ])
}

/// A block's values: `supplier, block_id, pool, status, gpus, gpus_sold, gpus_unsold,
/// gpus_reclaimed, gpus_reclaiming, reserve_price_micros, available_from, available_until,
/// revenue_micros, reclaim_forecast_at, nodes, updated_at, gpus_failed`.
pub fn block_values(b: &BlockView) -> Result<[Value<'_>; 17], StoreError> {
    Ok([
        text(&b.supplier),
        text(&b.block_id),
        text(&b.pool),
        text(codes::block_status(b.status)),
        int4(b.gpus, "gpus")?,
        int4(b.gpus_sold, "gpus_sold")?,
        int4(b.gpus_unsold, "gpus_unsold")?,
        int4(b.gpus_reclaimed, "gpus_reclaimed")?,
        int4(b.gpus_reclaiming, "gpus_reclaiming")?,
        int8(b.reserve_price.0, "reserve price")?,
        time(b.available_from),
        time(b.available_until),
        int8(b.revenue_micros, "revenue")?,
        Value::Time(b.reclaim_forecast_at),
        owned(nodes_json(&b.nodes)?),
        time(b.updated_at),
        int4(b.gpus_failed, "gpus_failed")?,
    ])
}

/// A lease event's values: `seq, lease_id, buyer, kind, at, detail_at`.
pub fn lease_event_values(e: &LeaseEventRow) -> Result<[Value<'_>; 6], StoreError> {
    Ok([
        int8(e.seq, "seq")?,
        owned(e.lease_id.to_string()),
        text(&e.buyer),
        text(e.kind),
        time(e.at),
        Value::Time(e.detail_at),
    ])
}

/// A usage minute from `pool, minute, offered_gpu_ms, leased_gpu_ms`.
pub fn usage_of(row: &impl Row) -> Result<UsageDelta, StoreError> {
    Ok(UsageDelta {
        pool: row.name("pool")?,
        minute: TimeMs(row.i64("minute")?),
        offered_gpu_ms: row.u64("offered_gpu_ms")?,
        leased_gpu_ms: row.u64("leased_gpu_ms")?,
    })
}

/// A pool's usage over a batch: `pool, minute (ms), offered_gpu_ms, leased_gpu_ms`.
pub fn usage_values(u: &UsageDelta) -> Result<[Value<'_>; 4], StoreError> {
    Ok([
        text(&u.pool),
        Value::Int8(Some(u.minute.0)),
        int8(u.offered_gpu_ms, "offered GPU-ms")?,
        int8(u.leased_gpu_ms, "leased GPU-ms")?,
    ])
}

/// An applied signal's values: `id_ms, id_seq, seq, rejection`.
pub fn applied_signal_values(s: &AppliedSignal) -> Result<[Value<'_>; 4], StoreError> {
    Ok([
        int8(s.id.ms, "signal id")?,
        int8(s.id.seq, "signal id")?,
        int8(s.seq, "seq")?,
        opt_text(s.rejection.as_deref()),
    ])
}
