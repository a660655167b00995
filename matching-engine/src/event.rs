//! Events: what a command did. The server persists and publishes them; tests compare them.
//!
//! Views are plain values copied out of the engine's state at the moment of the event, so a
//! consumer never needs to look back into the engine to make sense of one.

use crate::types::{
    Access, AccountLimits, BlockStatus, CancelReason, LeaseId, LeaseStatus, Micros, Name, NodeGpus,
    OrderId, OrderStatus, PriceMicros, Rejection, Side, SshKeys, TimeInForce, TimeMs, TradeId,
};
use serde::{Deserialize, Serialize};

/// One outcome of a command, in the order it happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The command was refused; nothing changed.
    Rejected {
        /// Why.
        reason: Rejection,
    },
    /// A bid with this account's `client_order_id` was placed before; nothing new was created.
    DuplicateClientOrderId {
        /// The bid the key first created.
        order_id: OrderId,
    },
    /// A bid was accepted (before any fill it got at once).
    BidAccepted {
        /// The bid as accepted.
        order: OrderView,
    },
    /// A bid changed: filled, amended, cancelled, expired, reopened.
    OrderChanged {
        /// The bid after the change.
        order: OrderView,
    },
    /// An execution between a bid and one block.
    Traded {
        /// The trade.
        trade: TradeView,
    },
    /// A lease started.
    LeaseOpened {
        /// The lease (boxed: the largest view, and one event in several).
        lease: Box<LeaseView>,
    },
    /// A lease moved: preempting (notice given), preempted, completed or released.
    LeaseChanged {
        /// The lease after the change (boxed, as in `LeaseOpened`).
        lease: Box<LeaseView>,
    },
    /// The supplier expects to reclaim this lease's block at `reclaim_at`.
    ReclaimForecast {
        /// The lease warned.
        lease_id: LeaseId,
        /// Its buyer.
        buyer: Name,
        /// When the reclaim is expected.
        reclaim_at: TimeMs,
    },
    /// A block was released, updated, reclaimed from, opened, closed or sold from.
    BlockChanged {
        /// The block after the change.
        block: BlockView,
    },
    /// A reclaim was accepted.
    ReclaimAccepted {
        /// The block's pool.
        #[serde(default = "empty_name")]
        pool: Name,
        /// The block's supplier.
        supplier: Name,
        /// The block.
        block_id: Name,
        /// GPUs asked back.
        gpus: u32,
        /// Of those, taken unsold off the book at once.
        gpus_from_book: u32,
        /// Leases given notice.
        leases_preempted: u32,
        /// When the last notice this reclaim gave ends (without leases: when the notice it
        /// asked for would end).
        notice_ends_at: TimeMs,
        /// Whether the notice was shorter than the pool's promise or than the promise of a
        /// lease it gave notice to (allowed only with `emergency`).
        emergency: bool,
    },
    /// A price level's new totals (GPUs 0 means the level is gone).
    BookLevelChanged {
        /// The pool.
        pool: Name,
        /// The side.
        side: Side,
        /// The level's price.
        price: PriceMicros,
        /// GPUs resting at the level now.
        gpus: u64,
        /// Bids or blocks resting at the level now.
        orders: u32,
    },
    /// A batch pool uncrossed.
    AuctionCleared {
        /// The pool.
        pool: Name,
        /// The uniform clearing price.
        price: PriceMicros,
        /// GPUs executed.
        gpus: u64,
    },
    /// A pool was created or reconfigured.
    PoolConfigured {
        /// The pool.
        pool: Name,
    },
    /// A kill switch moved.
    KillSwitchChanged {
        /// `account` or `pool`.
        kind: &'static str,
        /// The account or pool id.
        id: Name,
        /// Whether it is now engaged.
        engaged: bool,
    },
    /// An account's default ssh keys changed.
    SshKeysChanged {
        /// The account.
        account: Name,
    },
    /// An account's limits changed.
    AccountLimitsChanged {
        /// The account.
        account: Name,
        /// The new limits.
        limits: AccountLimits,
    },
}

/// A bid as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    /// Id.
    pub id: OrderId,
    /// Owner.
    pub account: Name,
    /// Pool.
    pub pool: Name,
    /// Limit price per GPU-hour.
    pub price: PriceMicros,
    /// GPUs wanted in all (filled + remaining).
    pub gpus: u32,
    /// GPUs still wanted.
    pub remaining_gpus: u32,
    /// GPUs leased so far.
    pub filled_gpus: u32,
    /// The least GPUs one execution may give.
    pub min_gpus: u32,
    /// Lease length needed.
    pub duration_s: u32,
    /// Longest lease wanted.
    pub max_duration_s: u32,
    /// Time in force.
    pub tif: TimeInForce,
    /// GTD expiry.
    pub expires_at: Option<TimeMs>,
    /// Re-bid on preemption.
    pub persistent: bool,
    /// The buyer's idempotency key.
    pub client_order_id: Option<Name>,
    /// Status.
    pub status: OrderStatus,
    /// Why it was cancelled, if it was.
    pub cancel_reason: Option<CancelReason>,
    /// When it was placed.
    pub created_at: TimeMs,
    /// When it last changed.
    pub updated_at: TimeMs,
}

/// An execution between a bid and one block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeView {
    /// Id.
    pub id: TradeId,
    /// Pool.
    pub pool: Name,
    /// Execution price per GPU-hour.
    pub price: PriceMicros,
    /// GPUs.
    pub gpus: u32,
    /// The bid.
    pub order_id: OrderId,
    /// The lease it opened.
    pub lease_id: LeaseId,
    /// The buyer (never shown on public feeds).
    pub buyer: Name,
    /// The supplier (never shown on public feeds).
    pub supplier: Name,
    /// The block.
    pub block_id: Name,
    /// Which side was resting: the bid (a seller's block arrived) or the ask.
    pub maker_side: Side,
    /// When.
    pub at: TimeMs,
}

/// A lease as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseView {
    /// Id.
    pub id: LeaseId,
    /// The bid it came from.
    pub order_id: OrderId,
    /// The buyer.
    pub buyer: Name,
    /// The block's supplier.
    pub supplier: Name,
    /// Pool.
    pub pool: Name,
    /// Block.
    pub block_id: Name,
    /// GPUs.
    pub gpus: u32,
    /// Price per GPU-hour.
    pub price: PriceMicros,
    /// Status.
    pub status: LeaseStatus,
    /// Start.
    pub started_at: TimeMs,
    /// Planned end: `min(start + max_duration_s, block.available_until)`.
    pub ends_at: TimeMs,
    /// When a preemption notice ends, once given.
    pub notice_ends_at: Option<TimeMs>,
    /// When the notice was given.
    pub preempted_at: Option<TimeMs>,
    /// Whether the notice was an emergency one (shorter than promised).
    pub emergency: bool,
    /// The notice promised when it opened: the pool's `notice_s` at that moment. A reclaim
    /// without an explicit notice gives at least this.
    #[serde(default)]
    pub notice_s: u32,
    /// When it ended.
    pub ended_at: Option<TimeMs>,
    /// Money owed: final once ended, accrued so far otherwise.
    pub cost_micros: Micros,
    /// The GPUs assigned on the block's nodes.
    pub nodes: Vec<NodeGpus>,
    /// The handoff: provisioning, ready (with how to reach it) or failed.
    #[serde(default = "Access::before_handoff_existed")]
    pub access: Access,
    /// The buyer's ssh public keys, for the supplier's provisioner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_public_keys: Option<SshKeys>,
}

/// A capacity block as its supplier sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockView {
    /// The supplier.
    pub supplier: Name,
    /// The supplier's block id.
    pub block_id: Name,
    /// Pool.
    pub pool: Name,
    /// Status.
    pub status: BlockStatus,
    /// GPUs released.
    pub gpus: u32,
    /// GPUs in running leases.
    pub gpus_sold: u32,
    /// GPUs not leased (resting on the book while the window is open).
    pub gpus_unsold: u32,
    /// GPUs taken back by the supplier.
    pub gpus_reclaimed: u32,
    /// Of those, GPUs of leases that failed to provision (they left the block).
    #[serde(default)]
    pub gpus_failed: u32,
    /// GPUs under notice: they return to the supplier when the notice ends.
    pub gpus_reclaiming: u32,
    /// Reserve price.
    pub reserve_price: PriceMicros,
    /// Window start.
    pub available_from: TimeMs,
    /// Window end.
    pub available_until: TimeMs,
    /// Money earned from ended leases.
    pub revenue_micros: Micros,
    /// The last reclaim forecast.
    pub reclaim_forecast_at: Option<TimeMs>,
    /// The last reclaim forecast while it is still ahead (at or after now); `None` once it
    /// has passed.
    #[serde(default)]
    pub reclaim_expected_at: Option<TimeMs>,
    /// Machines and their GPUs.
    pub nodes: Vec<NodeGpus>,
    /// When it last changed.
    pub updated_at: TimeMs,
}

/// One aggregated price level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Level {
    /// Price per GPU-hour.
    pub price: PriceMicros,
    /// GPUs resting.
    pub gpus: u64,
    /// Bids or blocks resting.
    pub orders: u32,
}

/// Both sides of a pool's book, best first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Depth {
    /// Bids, highest price first.
    pub bids: Vec<Level>,
    /// Asks, lowest price first.
    pub asks: Vec<Level>,
}

/// A pool's live summary for `GET /v1/pools` and the capacity feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSummary {
    /// Settings.
    pub config: crate::types::PoolConfig,
    /// Highest bid.
    pub best_bid: Option<PriceMicros>,
    /// Lowest ask.
    pub best_ask: Option<PriceMicros>,
    /// Last trade price.
    pub last_price: Option<PriceMicros>,
    /// Unsold GPUs in open windows.
    pub idle_gpus: u64,
    /// GPUs in running leases (including those under notice).
    pub leased_gpus: u64,
    /// GPUs under notice.
    pub reclaiming_gpus: u64,
    /// Whether the pool's kill switch is engaged.
    pub halted: bool,
    /// Emergency reclaims (a notice shorter than promised) accepted since the pool was created.
    #[serde(default)]
    pub emergency_reclaims: u64,
}

/// What a pool offered and leased since it was created, integrated over the engine's time
/// (DESIGN section 13): `offered` is its unsold GPUs in open windows plus its leased GPUs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolUsage {
    /// The pool.
    pub pool: Name,
    /// GPU-milliseconds offered.
    pub offered_gpu_ms: u64,
    /// GPU-milliseconds in running leases.
    pub leased_gpu_ms: u64,
}

/// What a bid would get now, without placing it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// GPUs a bid could lease now (up to the GPUs asked).
    pub fillable_gpus: u32,
    /// GPU-weighted average price of those GPUs.
    pub average_price: Option<PriceMicros>,
    /// The highest price among them.
    pub worst_price: Option<PriceMicros>,
    /// Cost of leasing them for the duration.
    pub total_cost_micros: Micros,
    /// The earliest pending reclaim forecast of a block the fill would use.
    pub reclaim_expected_at: Option<TimeMs>,
    /// Batch pools: when the uncross this bid would join runs (all GPUs at its one price).
    pub clears_at: Option<TimeMs>,
}

fn empty_name() -> Name {
    Name::from("")
}
