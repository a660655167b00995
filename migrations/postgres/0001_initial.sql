-- offpeak's first schema: the command journal, snapshots, and the rows each batch produces.
-- Applied once, in one transaction, by the server at start (see src/store/postgres.rs).

-- Every command the sequencer accepted, in order. Replaying it from a snapshot rebuilds the
-- engine exactly. Never pruned: it is also the audit log and the fallback when a snapshot
-- cannot be restored.
CREATE TABLE journal (
    seq      bigint PRIMARY KEY,
    at_ms    bigint NOT NULL,
    command  json   NOT NULL
);

-- Engine snapshots; the newest one bounds the replay at start.
CREATE TABLE snapshots (
    seq         bigint PRIMARY KEY,
    state_hash  bigint NOT NULL,
    state       bytea  NOT NULL,
    taken_at    timestamptz NOT NULL DEFAULT now()
);

-- Bids, one row per order, updated as it moves.
CREATE TABLE orders (
    id               bigint PRIMARY KEY,
    account          text    NOT NULL,
    pool             text    NOT NULL,
    price_micros     bigint  NOT NULL,
    gpus             integer NOT NULL,
    remaining_gpus   integer NOT NULL,
    filled_gpus      integer NOT NULL,
    min_gpus         integer NOT NULL,
    duration_s       integer NOT NULL,
    max_duration_s   integer NOT NULL,
    tif              text    NOT NULL,
    expires_at       timestamptz,
    persistent       boolean NOT NULL,
    client_order_id  text,
    status           text    NOT NULL,
    cancel_reason    text,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX orders_account_id ON orders (account, id DESC);

-- One row per lease, updated as its status moves (DESIGN section 9: the columns other tools
-- read are id .. cost_micros; the rest follow).
CREATE TABLE leases (
    id              text    PRIMARY KEY,
    order_id        text    NOT NULL,
    buyer           text    NOT NULL,
    pool            text    NOT NULL,
    block_id        text    NOT NULL,
    gpus            integer NOT NULL,
    price_micros    bigint  NOT NULL,
    status          text    NOT NULL,
    started_at      timestamptz NOT NULL,
    ends_at         timestamptz NOT NULL,
    notice_ends_at  timestamptz,
    ended_at        timestamptz,
    cost_micros     bigint  NOT NULL,
    lease_no        bigint  NOT NULL UNIQUE,
    supplier        text    NOT NULL,
    preempted_at    timestamptz,
    emergency       boolean NOT NULL,
    nodes           jsonb   NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX leases_buyer_no ON leases (buyer, lease_no DESC);
CREATE INDEX leases_order_id ON leases (order_id);
CREATE INDEX leases_started_at ON leases (started_at);
CREATE INDEX leases_ended_at ON leases (ended_at) WHERE ended_at IS NOT NULL;

-- Executions; insert only.
CREATE TABLE trades (
    id            bigint  PRIMARY KEY,
    pool          text    NOT NULL,
    price_micros  bigint  NOT NULL,
    gpus          integer NOT NULL,
    order_id      bigint  NOT NULL,
    lease_id      bigint  NOT NULL,
    buyer         text    NOT NULL,
    supplier      text    NOT NULL,
    block_id      text    NOT NULL,
    maker_side    text    NOT NULL,
    at            timestamptz NOT NULL
);
CREATE INDEX trades_pool_id ON trades (pool, id DESC);
CREATE INDEX trades_at ON trades (at);

-- Capacity blocks, one row per (supplier, block id), updated as they sell and are reclaimed.
CREATE TABLE blocks (
    supplier              text    NOT NULL,
    block_id              text    NOT NULL,
    pool                  text    NOT NULL,
    status                text    NOT NULL,
    gpus                  integer NOT NULL,
    gpus_sold             integer NOT NULL,
    gpus_unsold           integer NOT NULL,
    gpus_reclaimed        integer NOT NULL,
    gpus_reclaiming       integer NOT NULL,
    reserve_price_micros  bigint  NOT NULL,
    available_from        timestamptz NOT NULL,
    available_until       timestamptz NOT NULL,
    revenue_micros        bigint  NOT NULL,
    reclaim_forecast_at   timestamptz,
    nodes                 jsonb   NOT NULL,
    updated_at            timestamptz NOT NULL,
    PRIMARY KEY (supplier, block_id)
);

-- Lease lifecycle: opened, forecast, notice, preempted, completed, released.
CREATE TABLE lease_events (
    id         bigserial PRIMARY KEY,
    seq        bigint  NOT NULL,
    lease_id   text    NOT NULL,
    buyer      text    NOT NULL,
    kind       text    NOT NULL,
    at         timestamptz NOT NULL,
    detail_at  timestamptz
);
CREATE INDEX lease_events_lease ON lease_events (lease_id, id);
