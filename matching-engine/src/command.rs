//! Commands: everything that can change the engine's state. The sequencer journals them and
//! replays them; each is applied at the time the sequencer stamped on it.

use crate::types::{
    AccountLimits, Endpoint, LeaseId, NodeGpus, OrderId, PoolConfig, PriceMicros, TimeInForce,
    TimeMs,
};
use serde::{Deserialize, Serialize};

/// One state change, as journaled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Create a pool, or change a pool's settings.
    ConfigurePool(PoolConfig),
    /// A buyer places a bid.
    PlaceBid(PlaceBid),
    /// A buyer changes a resting bid's price and/or GPUs.
    AmendBid(AmendBid),
    /// A buyer cancels a resting (or persistent) bid.
    CancelBid {
        /// The bid's owner.
        account: String,
        /// The bid.
        order_id: OrderId,
    },
    /// A supplier releases a capacity block.
    ReleaseCapacity(ReleaseCapacity),
    /// A supplier changes a block's reserve price or extends its window.
    UpdateCapacity(UpdateCapacity),
    /// A supplier takes GPUs of a block back, with notice.
    ReclaimCapacity(ReclaimCapacity),
    /// A supplier warns a block's buyers of a coming reclaim.
    ForecastReclaim {
        /// The block's supplier.
        supplier: String,
        /// The supplier's block id.
        block_id: String,
        /// When the reclaim is expected.
        reclaim_at: TimeMs,
    },
    /// A lease's supplier hands access over: the lease is ready and billed from now.
    LeaseReady(LeaseReady),
    /// A lease's supplier could not provision it: it ends `failed`, costing nothing.
    LeaseFailed {
        /// The block's supplier.
        supplier: String,
        /// The supplier's block id.
        block_id: String,
        /// The lease.
        lease_id: LeaseId,
        /// Why, for the buyer.
        reason: String,
    },
    /// Sets an account's default ssh public keys (already checked by the server).
    SetSshKeys {
        /// The buyer.
        account: String,
        /// OpenSSH public keys, normalised.
        keys: Vec<String>,
    },
    /// A buyer ends a lease early.
    ReleaseLease {
        /// The lease's buyer.
        account: String,
        /// The lease.
        lease_id: LeaseId,
    },
    /// Moves time forward: expiries, notice ends, lease ends and batch uncrosses happen.
    Tick,
    /// Engages or lifts a kill switch.
    SetKillSwitch {
        /// An account or a pool.
        target: KillTarget,
        /// `true` cancels resting bids and refuses new ones; `false` lifts it.
        engaged: bool,
    },
    /// Sets an account's pre-trade limits.
    SetAccountLimits {
        /// The account.
        account: String,
        /// Its new limits.
        limits: AccountLimits,
    },
}

/// What a kill switch applies to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum KillTarget {
    /// One account: its bids are cancelled and it may place no new bid or block.
    Account(String),
    /// One pool: its bids are cancelled, nothing trades, no new bid or block.
    Pool(String),
}

/// A buyer's bid (DESIGN section 4, "Demand").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceBid {
    /// The buyer.
    pub account: String,
    /// The pool to bid in.
    pub pool: String,
    /// GPUs wanted.
    pub gpus: u32,
    /// The least GPUs one execution may give; `None` means all of `gpus` (all-or-none).
    pub min_gpus: Option<u32>,
    /// Limit price per GPU-hour.
    pub price: PriceMicros,
    /// The lease length the bid needs: only blocks open at least this long are eligible.
    pub duration_s: u32,
    /// The longest lease wanted; `None` means `duration_s`.
    pub max_duration_s: Option<u32>,
    /// Time in force.
    pub tif: TimeInForce,
    /// For `gtd`: when the bid expires.
    pub expires_at: Option<TimeMs>,
    /// When a lease from it is preempted, bid again for those GPUs.
    pub persistent: bool,
    /// Idempotency key: the same key from the same account returns the first result.
    pub client_order_id: Option<String>,
    /// OpenSSH public keys for the leases' machines (already checked by the server); none
    /// means the account's default keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_public_keys: Vec<String>,
}

/// A supplier's report that a lease is usable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseReady {
    /// The block's supplier.
    pub supplier: String,
    /// The supplier's block id; empty when not named (a capacity signal may leave it out).
    pub block_id: String,
    /// The lease.
    pub lease_id: LeaseId,
    /// Bare metal: how to reach each node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
    /// Model pools: the inference gateway's base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// A change to a resting bid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmendBid {
    /// The bid's owner.
    pub account: String,
    /// The bid.
    pub order_id: OrderId,
    /// New limit price; a change loses time priority.
    pub price: Option<PriceMicros>,
    /// New total GPUs (filled + remaining); a decrease keeps time priority, an increase loses it.
    pub gpus: Option<u32>,
}

/// A supplier's capacity block (DESIGN section 4, "Supply").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseCapacity {
    /// The supplier.
    pub supplier: String,
    /// The supplier's own id for the block, unique per supplier.
    pub block_id: String,
    /// The pool it is sold in.
    pub pool: String,
    /// GPUs released.
    pub gpus: u32,
    /// The lowest price per GPU-hour the supplier accepts.
    pub reserve_price: PriceMicros,
    /// When the window opens; `None` means now.
    pub available_from: Option<TimeMs>,
    /// When the window closes; no lease outlives it.
    pub available_until: TimeMs,
    /// Optional machines the GPUs sit on; their GPUs must add up to `gpus`.
    pub nodes: Vec<NodeGpus>,
}

/// A change to a block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateCapacity {
    /// The supplier.
    pub supplier: String,
    /// The block.
    pub block_id: String,
    /// New reserve price; a change loses time priority.
    pub reserve_price: Option<PriceMicros>,
    /// A later window end.
    pub available_until: Option<TimeMs>,
}

/// A supplier taking GPUs back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReclaimCapacity {
    /// The supplier.
    pub supplier: String,
    /// The block.
    pub block_id: String,
    /// GPUs wanted back.
    pub gpus: u32,
    /// Notice for the preempted buyers; `None` means the pool's `notice_s`.
    pub notice_s: Option<u32>,
    /// Allows a notice shorter than the pool's promise; recorded and counted.
    pub emergency: bool,
}
