//! offpeak's matching engine: a pure, deterministic state machine that clears idle GPU-hours.
//!
//! Supply is capacity blocks released by internal schedulers; their unsold GPUs rest on the ask
//! side at the block's reserve price. Demand is buyers' bids. Executions open leases, which run
//! until they end, are released, or are preempted by their supplier with guaranteed notice.
//!
//! The engine does no I/O, reads no clock and draws no random numbers: every command comes with
//! the time the sequencer accepted it, and replaying the same commands gives the same events and
//! the same [`Engine::state_hash`]. Business rejections are [`Event::Rejected`] values, never
//! `Err` or panics.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod command;
mod engine;
mod event;
mod keys;
mod ladder;
pub mod limits;
mod snapshot;
mod types;

pub use command::{
    AmendBid, Command, KillTarget, LeaseReady, PlaceBid, ReclaimCapacity, ReleaseCapacity,
    UpdateCapacity,
};
pub use engine::Engine;
pub use event::{
    BlockView, Depth, Event, LeaseView, Level, OrderView, PoolSummary, PoolUsage, Quote, TradeView,
};
pub use snapshot::Snapshot;
pub use types::{
    cost_micros, Access, AccessStatus, AccountLimits, AuctionMode, BlockStatus, CancelReason,
    Endpoint, Handoff, LeaseId, LeaseStatus, Micros, Name, NodeGpus, Offering, OrderId,
    OrderStatus, PoolConfig, PriceMicros, Rejection, Side, SshKeys, TimeInForce, TimeMs, TradeId,
    PROVISION_TIMEOUT_S_DEFAULT, PROVISION_TIMEOUT_S_MAX,
};
