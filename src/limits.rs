//! Every bound the server enforces, with the reason beside it.
//!
//! Queues, buffers, bodies, counts and timeouts all live here so that a reader can see, in one
//! place, how much memory and time one request, one account or one batch may take.

use std::time::Duration;

/// Commands the sequencer applies and commits in one database transaction. Large enough that a
/// busy second fits in a few batches (group commit amortizes the fsync), small enough that one
/// batch's transaction stays a few milliseconds and its replies are not held back for long.
pub const BATCH_COMMANDS_MAX: usize = 4_096;

/// Batches in the commit pipeline at once, by default (`OFFPEAK_COMMIT_PIPELINE`): one
/// committing and one whose statements run meanwhile (its COMMIT waits for the first's). 1 is
/// a batch at a time. More would mostly wait behind them, and every batch in flight holds back
/// the reads (which see committed state only).
pub const COMMIT_PIPELINE_DEFAULT: usize = 2;

/// The most batches `OFFPEAK_COMMIT_PIPELINE` may put in flight (each holds a connection).
pub const COMMIT_PIPELINE_MAX: usize = 4;

/// Write requests waiting for the sequencer. When it is full, handlers wait up to
/// [`SUBMIT_WAIT_MAX`] and then answer 503: back-pressure instead of unbounded memory.
pub const WRITE_QUEUE_CAPACITY: usize = 16_384;

/// Read requests (engine queries) waiting for the sequencer; answered between batches.
pub const READ_QUEUE_CAPACITY: usize = 4_096;

/// Reads answered after one batch before the sequencer looks at writes again, so a flood of
/// reads cannot starve writes (and the other way round: every batch is followed by reads).
pub const READS_PER_TURN_MAX: usize = 1_024;

/// How long a handler waits for room in the write queue before answering 503 `overloaded`.
pub const SUBMIT_WAIT_MAX: Duration = Duration::from_secs(5);

/// Committed batches buffered for event subscribers (WebSocket, Redis). A subscriber that falls
/// further behind misses batches and must resynchronize from a snapshot.
pub const EVENT_BROADCAST_BATCHES_MAX: usize = 1_024;

/// Commit times of the newest batches kept for `/metrics`' notice delivery latency (24 bytes
/// each). As many as the event broadcast buffers: a notice handed over later than that came
/// through a resynchronization, whose delay is not a delivery latency.
pub const COMMITS_REMEMBERED_MAX: usize = EVENT_BROADCAST_BATCHES_MAX;

/// Largest request body. The biggest legitimate body is a capacity block listing its nodes
/// (at most 1,024 nodes of ~50 bytes each).
pub const REQUEST_BODY_BYTES_MAX: usize = 64 * 1024;

/// Largest bearer token accepted; real tokens are a few hundred bytes.
pub const TOKEN_BYTES_MAX: usize = 8 * 1024;

/// Verified bearer tokens remembered, so a client's next request with the same token is not
/// decoded and checked again. At ~300 bytes a token, about 1.2 MB (at most 32 MB, of tokens
/// at [`TOKEN_BYTES_MAX`], and only tokens signed with the deployment's key get in).
pub const VERIFIED_TOKENS_CACHED_MAX: usize = 4096;

/// Clock skew tolerated on `exp`/`nbf`, in seconds: small, because tokens are short-lived.
pub const JWT_LEEWAY_S: u64 = 5;

/// Shortest HS256 secret accepted: RFC 7518 section 3.2 asks for a key of at least 256 bits.
pub const JWT_SECRET_BYTES_MIN: usize = 32;

/// Longest token lifetime `offpeak token` mints: long-lived bearer tokens are a liability.
pub const TOKEN_TTL_MAX: Duration = Duration::from_secs(366 * 24 * 3600);

/// Longest account id (`sub`) accepted: ids are stored and indexed in every row.
pub const ACCOUNT_ID_BYTES_MAX: usize = 128;

/// Longest `client_order_id`: an idempotency key, not a payload.
pub const CLIENT_ORDER_ID_BYTES_MAX: usize = 64;

/// Longest capacity `block_id` chosen by a supplier.
pub const BLOCK_ID_BYTES_MAX: usize = 64;

/// Longest pool id (`<gpu>.<region>`).
pub const POOL_ID_BYTES_MAX: usize = 64;

/// Most GPUs one bid, block or reclaim may name, and so the largest `gpus_per_order_max` a
/// pool may be given: a million GPUs is more than any one cluster, and it keeps every sum of
/// GPUs in a pool far from `u32::MAX` (the release build panics on overflow). The OpenAPI
/// document states it as the `maximum` of every `gpus` field.
pub const GPUS_PER_ORDER_MAX: u32 = 1_000_000;

/// Longest node name in a block's node list.
pub const NODE_NAME_BYTES_MAX: usize = 64;

/// Longest endpoint host in a `ready` (a DNS name's limit).
pub const ENDPOINT_HOST_BYTES_MAX: usize = 253;

/// Longest login user in a `ready` endpoint (the usual Unix user name limit).
pub const ENDPOINT_USER_BYTES_MAX: usize = 32;

/// Longest model gateway URL in a `ready`.
pub const ENDPOINT_URL_BYTES_MAX: usize = 2048;

/// Longest life of a lease token: a gateway's client asks for a new one within the hour (and
/// never past the lease's end), so a leaked token is short-lived.
pub const LEASE_TOKEN_TTL_MAX: Duration = Duration::from_secs(3600);

/// The longest window `GET /v1/admin/report` covers (its leases are read into memory).
pub const REPORT_WINDOW_MAX: Duration = Duration::from_secs(31 * 24 * 3600);

/// The most buckets one report has (per pool).
pub const REPORT_BUCKETS_MAX: i64 = 2_000;

/// The most leases one report reads; a window with more must be narrowed.
pub const REPORT_LEASES_MAX: usize = 1_000_000;

/// Longest reason a provisioner gives for a failed lease.
pub const FAILURE_REASON_BYTES_MAX: usize = 256;

/// Decimals a price may carry: prices are integer micro-dollars.
pub const PRICE_DECIMALS_MAX: usize = 6;

/// Default and largest number of price levels per side in `GET /v1/pools/{pool}/book`.
pub const BOOK_DEPTH_DEFAULT: usize = 20;
/// See [`BOOK_DEPTH_DEFAULT`]; DESIGN section 6 caps depth at 100.
pub const BOOK_DEPTH_MAX: usize = 100;

/// Default and largest page of recent trades.
pub const TRADES_LIMIT_DEFAULT: usize = 100;
/// See [`TRADES_LIMIT_DEFAULT`].
pub const TRADES_LIMIT_MAX: usize = 1_000;

/// Default and largest number of candles returned.
pub const CANDLES_LIMIT_DEFAULT: usize = 100;
/// See [`CANDLES_LIMIT_DEFAULT`].
pub const CANDLES_LIMIT_MAX: usize = 1_000;

/// Default and largest page of orders, leases or blocks in a list.
pub const LIST_LIMIT_DEFAULT: usize = 100;
/// See [`LIST_LIMIT_DEFAULT`].
pub const LIST_LIMIT_MAX: usize = 1_000;

/// Trades kept in memory per pool for `trades` and `stats` (about 5 MB per pool).
pub const TRADES_KEPT_PER_POOL_MAX: usize = 100_000;

/// History kept in memory for candles and stats: one-minute buckets for a week per pool.
pub const MARKET_HISTORY_MS: i64 = 7 * 24 * 3600 * 1000;

/// Widest stats window (the history kept) and the narrowest (one bucket).
pub const STATS_WINDOW_MAX: Duration = Duration::from_secs(7 * 24 * 3600);
/// See [`STATS_WINDOW_MAX`].
pub const STATS_WINDOW_MIN: Duration = Duration::from_secs(60);

/// Commands between two snapshots: bounds both the replay at start and the commands kept in
/// memory to roll back to the committed state when a commit fails.
pub const SNAPSHOT_EVERY_COMMANDS: u64 = 250_000;

/// Default for `OFFPEAK_SNAPSHOT_EVERY_MS`: a snapshot is also taken this often when anything
/// happened, so a quiet server restarts fast.
pub const SNAPSHOT_EVERY_DEFAULT: Duration = Duration::from_secs(60);

/// Snapshots kept in the store; older ones are deleted when a new one is written (the journal
/// is kept whole, so any state can still be rebuilt; snapshots only shorten the replay).
pub const SNAPSHOTS_KEPT: i64 = 2;

/// Journal rows read per query during replay, so a long journal is streamed, not loaded whole.
pub const REPLAY_CHUNK_COMMANDS: usize = 10_000;

/// Journal chunks read and decoded ahead of the replay (each up to [`REPLAY_CHUNK_COMMANDS`]):
/// reading the next overlaps applying this one, and memory stays bounded.
pub const REPLAY_CHUNKS_AHEAD: usize = 2;

/// Default for `OFFPEAK_IDLE_TICK_MS`: with no command for this long, the sequencer journals a
/// `Tick` so the engine's clock (used by quotes and eligibility) stays within a second of the
/// wall clock. Due timers (expiries, notice ends) get their own tick, whatever this is.
pub const IDLE_TICK_INTERVAL_DEFAULT: Duration = Duration::from_secs(1);

/// Longest a batch's transaction may take before it is treated as failed (outcome unknown).
pub const DB_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a read query may take before the request gets 503.
pub const DB_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest a new database connection may take to open.
pub const DB_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Connections for the sequencer's writes (batches and snapshots run one at a time each).
pub const DB_WRITE_CONNECTIONS_MAX: usize = 2;

/// Connections for request handlers' reads of history (orders, leases, blocks no longer live).
pub const DB_READ_CONNECTIONS_MAX: usize = 8;
/// Read-only SQLite connections for request handlers' history reads; WAL lets them read while
/// the one write connection commits. Few: the embedded backend is for one machine.
pub const SQLITE_READ_CONNECTIONS_MAX: usize = 4;

/// How long a SQLite statement waits for a lock held by another connection (a checkpoint, a
/// second process on the same file) before it fails as unavailable.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
// ----- demo market (`demo`) -------------------------------------------------------------------

/// How often the demo's simulated schedulers and buyers act: fast enough that the page moves
/// continuously, slow enough that the demo is a few commands a second, not a load test.
pub const DEMO_STEP: Duration = Duration::from_millis(100);

/// Mean bids per wall-clock second across all simulated buyers (scaled by the time of day).
pub const DEMO_BIDS_PER_S: f64 = 4.0;

/// Commands the demo submits in one step at most, whatever the simulated load asks for.
pub const DEMO_COMMANDS_PER_STEP_MAX: usize = 12;

/// Largest block a simulated scheduler releases at once (it releases several to reach its
/// idle capacity, so reclaims take back some blocks and not all).
pub const DEMO_BLOCK_GPUS_MAX: u32 = 64;

/// How long a simulated buyer leaves an unfilled bid resting before cancelling it.
pub const DEMO_BID_AGE_MAX: Duration = Duration::from_secs(90);

/// How long (simulated seconds) a demo provisioner takes to hand a lease over.
pub const DEMO_PROVISION_SIM_S: std::ops::Range<f64> = 20.0..180.0;

/// The shortest real wait before a demo lease is ready, so the page shows it provisioning.
pub const DEMO_PROVISION_MIN: Duration = Duration::from_millis(300);

/// Share of demo leases whose provisioning fails.
pub const DEMO_PROVISION_FAILURE_RATE: f64 = 0.03;

/// First and last wait between attempts to rebuild from the database after a failed commit
/// (doubling in between): quick recovery from a blip, no hammering of a database that is down.
pub const RECOVERY_RETRY_MIN: Duration = Duration::from_millis(200);
/// See [`RECOVERY_RETRY_MIN`].
pub const RECOVERY_RETRY_MAX: Duration = Duration::from_secs(5);

/// `Retry-After` sent with 503 while writes are refused.
pub const UNAVAILABLE_RETRY_AFTER_S: u64 = 1;

/// Default sustained requests per second per account, and the burst above it. An order entry
/// gateway, not a bulk API: generous for a trading client, bounded for a runaway one.
pub const RATE_LIMIT_PER_S_DEFAULT: u32 = 200;
/// See [`RATE_LIMIT_PER_S_DEFAULT`].
pub const RATE_LIMIT_BURST_DEFAULT: u32 = 400;

/// Accounts whose token buckets are tracked at once; idle (full) buckets are evicted first.
pub const RATE_LIMIT_ACCOUNTS_MAX: usize = 100_000;

/// Time the HTTP server gives in-flight requests to finish on shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

// ----- market-data feed and WebSocket (`feed`, `ws`) ------------------------------------------

/// Open WebSocket connections at once. Each costs a task, two small queues and socket buffers
/// (~100 KB with kernel buffers); 10,000 stays well inside the process's memory and file limits.
pub const WS_CONNECTIONS_MAX: usize = 10_000;

/// Channels one connection may subscribe to: every pool's book and trades plus the rest.
pub const WS_SUBSCRIPTIONS_MAX: usize = 64;

/// Messages waiting for one client's socket, and their bytes. When either is reached the
/// client is coalesced: its book, trades and capacity channels skip updates and get a fresh
/// snapshot (latest state wins) once the queue is half empty again. Most frames are shared by
/// every subscriber, so the bytes are an upper bound, not memory per client.
pub const WS_CLIENT_QUEUE_MESSAGES_MAX: usize = 1_024;
/// See [`WS_CLIENT_QUEUE_MESSAGES_MAX`]; a full 1,000-level snapshot is about 100 KB.
pub const WS_CLIENT_QUEUE_BYTES_MAX: usize = 1024 * 1024;

/// How long a client may stay coalesced (its queue full) before it is dropped. A reader that
/// keeps reading catches up within a few publish intervals; one that stopped is cut off.
pub const WS_CLIENT_LAG_MAX: Duration = Duration::from_secs(5);

/// Book deltas, trades and capacity are sent at most this often: a busy book's changes in one
/// interval are merged (latest level totals win), so 2,000 viewers of a book changing 1,000
/// times a second get 20 frames a second each, not 1,000. A quiet book's change goes out at once.
pub const FEED_PUBLISH_INTERVAL: Duration = Duration::from_millis(50);

/// Levels per side in a WebSocket book snapshot; deltas cover every level.
pub const WS_SNAPSHOT_LEVELS_MAX: usize = 1_000;

/// Largest message a client may send (subscribe lists, auth tokens).
pub const WS_CLIENT_MESSAGE_BYTES_MAX: usize = 16 * 1024;

/// Operations (subscribe, auth, ping...) per second one connection may send, and the burst.
pub const WS_CLIENT_OPS_PER_S: u32 = 20;
/// See [`WS_CLIENT_OPS_PER_S`].
pub const WS_CLIENT_OPS_BURST: u32 = 100;

/// Server pings this often; a client that sends nothing (not even a pong) for
/// [`WS_CLIENT_SILENCE_MAX`] is closed, so dead connections do not hold a slot.
pub const WS_PING_INTERVAL: Duration = Duration::from_secs(15);
/// See [`WS_PING_INTERVAL`].
pub const WS_CLIENT_SILENCE_MAX: Duration = Duration::from_secs(45);

/// How long a client the server ends a session for (too slow, silent, a protocol error) has to
/// take the close frame before its connection is reset: a client that never reads would
/// otherwise hold its socket and megabytes of kernel send queue for as long as it likes.
/// It keeps its connection slot until then.
pub const WS_ABORT_AFTER_CLOSE: Duration = Duration::from_secs(2);

/// Subscribe, unsubscribe, join and leave requests waiting for the hub.
pub const WS_HUB_COMMANDS_MAX: usize = 4_096;

/// Recent trades per pool sent in a `trades:{pool}` snapshot.
pub const FEED_TRADES_RECENT_MAX: usize = 100;

/// Trades per pool waiting for the next publish; past it subscribers get a snapshot instead.
pub const FEED_TRADES_PENDING_MAX: usize = 10_000;

/// Private events (orders, fills, leases, blocks) waiting for the next publish. Past it they
/// cannot be delivered in full, so private subscribers are disconnected to resync over REST.
pub const FEED_PRIVATE_PENDING_MAX: usize = 100_000;

/// First wait before the feed retries reading the engine (doubling up to 5 s).
pub const FEED_RESET_RETRY_MIN: Duration = Duration::from_millis(50);

// ----- bus: capacity signals in, market data and lease events out (`bus`) -------------------

/// Capacity stream entries read (and committed) as one window: one `XREADGROUP`, one or a few
/// sequencer batches, one settle script. Large enough to keep up with a burst of signals,
/// small enough that a window's settle script stays well under a millisecond of Redis time.
pub const SIGNALS_READ_COUNT_MAX: usize = 256;

/// How long one `XREADGROUP` waits for a new entry; the consumer looks at its stop signal and
/// claims idle entries between waits.
pub const SIGNALS_READ_BLOCK: Duration = Duration::from_secs(1);

/// Default for `OFFPEAK_REDIS_CLAIM_IDLE_MS`: an entry unacknowledged this long by another
/// consumer is taken over. Far above the time a live consumer holds an entry (milliseconds),
/// so a slow consumer is not raced.
pub const SIGNALS_CLAIM_IDLE_DEFAULT: Duration = Duration::from_secs(30);

/// How often the consumer looks for entries left idle by dead consumers.
pub const SIGNALS_CLAIM_EVERY: Duration = Duration::from_secs(5);

/// Deliveries of one entry without it being applied after which it is poison ("keeps
/// failing": each start that crashed on it delivered it again). High enough that restarts
/// during a database outage do not condemn a good signal.
pub const SIGNAL_DELIVERIES_MAX: u64 = 10;

/// Fields and bytes one capacity signal may carry: a release listing its nodes is the
/// biggest legitimate one, the same bound as a REST body.
pub const SIGNAL_FIELDS_MAX: usize = 32;
/// See [`SIGNAL_FIELDS_MAX`].
pub const SIGNAL_BYTES_MAX: usize = REQUEST_BODY_BYTES_MAX;

/// Applied signal ids the sequencer keeps in memory to tell a redelivery without a query
/// (about 3 MB); redeliveries of older ones are looked up in the database.
pub const APPLIED_SIGNALS_CACHED_MAX: usize = 100_000;

/// Lengths the capped streams are trimmed to (`MAXLEN ~`): days of history at a busy rate,
/// bounded memory in Redis.
pub const LEASE_EVENTS_STREAM_LEN_MAX: usize = 100_000;
/// See [`LEASE_EVENTS_STREAM_LEN_MAX`].
pub const SIGNAL_RESULTS_STREAM_LEN_MAX: usize = 100_000;
/// See [`LEASE_EVENTS_STREAM_LEN_MAX`]; dead letters are rare, and an operator reads them.
pub const SIGNAL_DEAD_STREAM_LEN_MAX: usize = 100_000;

/// Market-data messages kept for the next attempt while Redis cannot be reached: a few
/// seconds of a busy book; past it the oldest are dropped and subscribers resync by seq.
pub const MARKET_UNSENT_MESSAGES_MAX: usize = 10_000;

/// Lease events read from the store per query when the stream catches up.
pub const LEASE_EVENTS_READ_CHUNK: usize = 1_000;

/// The lease-events publisher looks at the store this often even when no batch woke it.
pub const LEASE_EVENTS_POLL_EVERY: Duration = Duration::from_secs(1);

/// First and last wait between attempts to reach the bus (doubling in between).
pub const BUS_RETRY_MIN: Duration = Duration::from_millis(100);
/// See [`BUS_RETRY_MIN`].
pub const BUS_RETRY_MAX: Duration = Duration::from_secs(5);

/// Longest a Redis connection may take to open, and a reply to arrive (a blocking read gets
/// its block time on top).
pub const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// See [`REDIS_CONNECT_TIMEOUT`].
pub const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Messages the in-process bus buffers per pub/sub subscriber; a slower one misses messages,
/// like a Redis subscriber cut off for its output buffer.
pub const MEMORY_BUS_CHANNEL_MESSAGES_MAX: usize = 4_096;

/// A session of the store idle inside a transaction for this long is ended by PostgreSQL, so a
/// leader paused or cut off in the middle of a batch releases the leadership row it holds
/// (and a takeover waits at most this long for it).
pub const DB_IDLE_IN_TRANSACTION_MAX: Duration = Duration::from_secs(1);

/// Default for `OFFPEAK_LEADER_TTL_MS`: a leader that has not renewed for this long may be
/// replaced.
pub const LEADER_TTL_DEFAULT: Duration = Duration::from_millis(3000);

/// Bounds of `OFFPEAK_LEADER_TTL_MS`.
pub const LEADER_TTL_MIN: Duration = Duration::from_millis(300);
/// See [`LEADER_TTL_MIN`].
pub const LEADER_TTL_MAX: Duration = Duration::from_secs(60);

/// A leader renews this many times per TTL; a standby looks for a free leadership as often.
pub const LEADER_RENEWALS_PER_TTL: u32 = 3;

/// A standby reads the journal at least this often, even when no notification woke it.
pub const FOLLOW_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Journal rows a standby applies per read (one committed batch for its subscribers).
pub const FOLLOW_CHUNK_COMMANDS: usize = 2_000;

/// A standby this many seqs or fewer behind the journal counts as caught up (`/readyz` 200).
pub const FOLLOW_READY_LAG_MAX: u64 = 1_000;

/// Longest a write forwarded from a standby waits for the leader's answer.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(15);

/// Nodes whose heartbeat is older than this many TTLs are left out of `GET /v1/cluster`.
pub const CLUSTER_NODE_SEEN_TTLS: u32 = 5;

/// Requests of the leadership task waiting for the sequencer (a promotion, a step-down).
pub const CONTROL_QUEUE_CAPACITY: usize = 8;

/// At start, how long a node waits for the leader it found to answer `/healthz` (one that
/// does not is dead or paused: the node waits for its leadership to expire and takes it).
pub const STARTUP_LEADER_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// At start, the wait between two looks at a leadership held by a node that does not answer.
pub const STARTUP_RETRY_WAIT: Duration = Duration::from_millis(200);
