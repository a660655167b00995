-- offpeak's first SQLite schema: the same tables and columns as migrations/postgres/0001,
-- so tools can read either backend by the same names (DESIGN section 9).
-- Applied once, in one transaction, by the server at start (see src/store/sqlite.rs).
--
-- Types: SQLite has no timestamp type, so every time column holds integer milliseconds since
-- the Unix epoch (UTC), exactly the engine's `TimeMs`: no parsing, no rounding, and `ORDER BY`
-- and range scans work on them directly (`datetime(started_at / 1000, 'unixepoch')` shows one
-- as text). Booleans are 0/1, JSON columns are text. Money is integer micro-dollars.

-- Every command the sequencer accepted, in order (see the PostgreSQL schema for its role).
CREATE TABLE journal (
    seq      INTEGER PRIMARY KEY,
    at_ms    INTEGER NOT NULL,
    command  TEXT    NOT NULL
) STRICT;

-- Engine snapshots; the newest one bounds the replay at start.
CREATE TABLE snapshots (
    seq         INTEGER PRIMARY KEY,
    state_hash  INTEGER NOT NULL,
    state       BLOB    NOT NULL,
    taken_at    INTEGER NOT NULL
) STRICT;

-- Bids, one row per order, updated as it moves.
CREATE TABLE orders (
    id               INTEGER PRIMARY KEY,
    account          TEXT    NOT NULL,
    pool             TEXT    NOT NULL,
    price_micros     INTEGER NOT NULL,
    gpus             INTEGER NOT NULL,
    remaining_gpus   INTEGER NOT NULL,
    filled_gpus      INTEGER NOT NULL,
    min_gpus         INTEGER NOT NULL,
    duration_s       INTEGER NOT NULL,
    max_duration_s   INTEGER NOT NULL,
    tif              TEXT    NOT NULL,
    expires_at       INTEGER,
    persistent       INTEGER NOT NULL,
    client_order_id  TEXT,
    status           TEXT    NOT NULL,
    cancel_reason    TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
) STRICT;
CREATE INDEX orders_account_id ON orders (account, id DESC);

-- One row per lease, updated as its status moves (DESIGN section 9: the columns other tools
-- read are id .. cost_micros; the rest follow).
CREATE TABLE leases (
    id              TEXT    PRIMARY KEY,
    order_id        TEXT    NOT NULL,
    buyer           TEXT    NOT NULL,
    pool            TEXT    NOT NULL,
    block_id        TEXT    NOT NULL,
    gpus            INTEGER NOT NULL,
    price_micros    INTEGER NOT NULL,
    status          TEXT    NOT NULL,
    started_at      INTEGER NOT NULL,
    ends_at         INTEGER NOT NULL,
    notice_ends_at  INTEGER,
    ended_at        INTEGER,
    cost_micros     INTEGER NOT NULL,
    lease_no        INTEGER NOT NULL UNIQUE,
    supplier        TEXT    NOT NULL,
    preempted_at    INTEGER,
    emergency       INTEGER NOT NULL,
    nodes           TEXT    NOT NULL,
    updated_at      INTEGER NOT NULL
) STRICT;
CREATE INDEX leases_buyer_no ON leases (buyer, lease_no DESC);
CREATE INDEX leases_order_id ON leases (order_id);
CREATE INDEX leases_started_at ON leases (started_at);
CREATE INDEX leases_ended_at ON leases (ended_at) WHERE ended_at IS NOT NULL;

-- Executions; insert only.
CREATE TABLE trades (
    id            INTEGER PRIMARY KEY,
    pool          TEXT    NOT NULL,
    price_micros  INTEGER NOT NULL,
    gpus          INTEGER NOT NULL,
    order_id      INTEGER NOT NULL,
    lease_id      INTEGER NOT NULL,
    buyer         TEXT    NOT NULL,
    supplier      TEXT    NOT NULL,
    block_id      TEXT    NOT NULL,
    maker_side    TEXT    NOT NULL,
    at            INTEGER NOT NULL
) STRICT;
CREATE INDEX trades_pool_id ON trades (pool, id DESC);
CREATE INDEX trades_at ON trades (at);

-- Capacity blocks, one row per (supplier, block id), updated as they sell and are reclaimed.
CREATE TABLE blocks (
    supplier              TEXT    NOT NULL,
    block_id              TEXT    NOT NULL,
    pool                  TEXT    NOT NULL,
    status                TEXT    NOT NULL,
    gpus                  INTEGER NOT NULL,
    gpus_sold             INTEGER NOT NULL,
    gpus_unsold           INTEGER NOT NULL,
    gpus_reclaimed        INTEGER NOT NULL,
    gpus_reclaiming       INTEGER NOT NULL,
    reserve_price_micros  INTEGER NOT NULL,
    available_from        INTEGER NOT NULL,
    available_until       INTEGER NOT NULL,
    revenue_micros        INTEGER NOT NULL,
    reclaim_forecast_at   INTEGER,
    nodes                 TEXT    NOT NULL,
    updated_at            INTEGER NOT NULL,
    PRIMARY KEY (supplier, block_id)
) STRICT;

-- Lease lifecycle: opened, forecast, notice, preempted, completed, released.
CREATE TABLE lease_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    seq        INTEGER NOT NULL,
    lease_id   TEXT    NOT NULL,
    buyer      TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    at         INTEGER NOT NULL,
    detail_at  INTEGER
) STRICT;
CREATE INDEX lease_events_lease ON lease_events (lease_id, id);
