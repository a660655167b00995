//! Every bound the engine enforces, with the reason beside it.

/// Price levels per side of one pool: the ladder is a dense array, so its size is bounded
/// (1,000,000 levels is $10,000 at a $0.01 tick, 24 MB per side).
pub const PRICE_LEVELS_MAX: u64 = 1_000_000;

/// Nodes one block may list: bare-metal blocks are racks, not data centres.
pub const NODES_PER_BLOCK_MAX: usize = 1_024;

/// How long a `client_order_id` is remembered: retries come within seconds, a day is generous
/// and keeps the idempotency map bounded by a day of orders.
pub const CLIENT_ORDER_ID_TTL_MS: i64 = 24 * 3600 * 1000;

/// Candidate prices one batch uncross evaluates; the rest of a wide crossed range is ignored
/// (each candidate costs a pass over the crossed orders).
pub const AUCTION_CANDIDATE_PRICES_MAX: usize = 512;
