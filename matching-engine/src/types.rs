//! Units, identifiers and pool settings: the vocabulary every command, event and view speaks.
//!
//! Money is integer micro-dollars per GPU-hour, time is integer milliseconds since the Unix
//! epoch (given to the engine, never read from a clock), quantities are whole GPUs.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Micro-dollars per GPU-hour (1 USD = 1_000_000).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct PriceMicros(pub u64);

/// Milliseconds since the Unix epoch, as stamped by the sequencer.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct TimeMs(pub i64);

impl TimeMs {
    /// This time moved forward by whole seconds (saturating: far-future windows never wrap).
    pub fn plus_s(self, seconds: u64) -> TimeMs {
        TimeMs(self.0.saturating_add((seconds as i64).saturating_mul(1000)))
    }
}

/// Whole micro-dollars owed or earned.
pub type Micros = u64;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// A bid's id, assigned by the engine from its id sequence.
    OrderId
);
id_type!(
    /// A lease's id, assigned by the engine from its id sequence.
    LeaseId
);
id_type!(
    /// A trade's id, assigned by the engine from its id sequence.
    TradeId
);

/// A shared, cheaply cloned name (account, pool, block or node id).
pub type Name = Arc<str>;

/// OpenSSH public keys, shared by an account, its bids and their leases.
pub type SshKeys = Arc<[String]>;

/// Which side of the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Demand: buyers' bids.
    Bid,
    /// Supply: the unsold GPUs of capacity blocks at their reserve price.
    Ask,
}

/// Time in force of a bid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TimeInForce {
    /// Good till cancelled: rests until filled or cancelled.
    #[default]
    Gtc,
    /// Immediate or cancel: takes what it can now (at least `min_gpus`), cancels the rest.
    Ioc,
    /// Fill or kill: all of `gpus` now, or nothing.
    Fok,
    /// Good till date: rests until `expires_at`.
    Gtd,
}

/// How a pool clears.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum AuctionMode {
    /// Price-time priority, every command matched as it arrives.
    #[default]
    Continuous,
    /// Orders collect; every `interval_ms` the pool uncrosses at one uniform price.
    Batch {
        /// Milliseconds between uncrosses.
        #[cfg_attr(feature = "openapi", schema(minimum = 1))]
        interval_ms: u64,
    },
}

/// One pool's settings (DESIGN section 3).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PoolConfig {
    /// `<gpu>.<region>`, e.g. `h100-sxm.us-east`.
    pub id: String,
    /// GPU model, e.g. `h100-sxm`.
    pub gpu: String,
    /// Region, e.g. `us-east`.
    pub region: String,
    /// Price grid: every price is a whole multiple of the tick.
    pub tick: PriceMicros,
    /// Lowest price accepted (a multiple of `tick`).
    pub price_min: PriceMicros,
    /// Highest price accepted (a multiple of `tick`).
    pub price_max: PriceMicros,
    /// The most GPUs one bid or one capacity block may carry.
    pub gpus_per_order_max: u32,
    /// The shortest lease a bid may ask for.
    pub duration_min_s: u32,
    /// The longest lease a bid may ask for (`max_duration_s`).
    pub duration_max_s: u32,
    /// Guaranteed preemption notice.
    pub notice_s: u32,
    /// A lease preempted within this many seconds of its start costs nothing.
    pub free_if_preempted_within_s: u32,
    /// Continuous or batch clearing.
    pub auction: AuctionMode,
    /// What the pool sells: bare machines or GPUs of a managed model deployment.
    #[serde(default)]
    pub offering: Offering,
    /// Model pools: the model served, e.g. `llama-3.1-70b-instruct`.
    #[serde(default)]
    pub model: Option<String>,
    /// Model pools: the tokens per second the supplier guarantees per GPU (0 for bare metal).
    #[serde(default)]
    pub tokens_per_s_per_gpu: u32,
    /// Whether a lease waits for its supplier's `ready` before it is billed.
    /// Journals from before the handoff existed configure pools without it: they replay as
    /// `none`, which is how their leases ran.
    #[serde(default = "Handoff::before_handoff_existed")]
    pub handoff: Handoff,
    /// A lease not ready this many seconds after it opened fails.
    #[serde(default = "default_provision_timeout_s")]
    pub provision_timeout_s: u32,
}

/// The provisioning timeout of pools configured without one.
pub const PROVISION_TIMEOUT_S_DEFAULT: u32 = 600;
/// The longest provisioning timeout a pool may set (a day).
pub const PROVISION_TIMEOUT_S_MAX: u32 = 86_400;

fn default_provision_timeout_s() -> u32 {
    PROVISION_TIMEOUT_S_DEFAULT
}

/// What a pool sells (DESIGN section 12).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Offering {
    /// Whole machines' GPUs, reached over ssh.
    #[default]
    BareMetal,
    /// GPUs of a managed model deployment, reached through an inference gateway.
    Model,
}

/// How a lease's access is handed over (DESIGN section 11).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Handoff {
    /// The supplier's provisioner reports `ready` (or `failed`); billing starts at `ready`.
    #[default]
    Required,
    /// Access is handed over outside offpeak: a lease is ready, and billed, once it opens.
    None,
}

impl Handoff {
    /// What a journaled pool configuration without the setting meant.
    pub fn before_handoff_existed() -> Handoff {
        Handoff::None
    }
}

impl PoolConfig {
    /// A pool with the DESIGN defaults: tick $0.01, band $0.01-$100.00, 120 s notice, one free hour.
    pub fn with_defaults(gpu: &str, region: &str) -> PoolConfig {
        PoolConfig {
            id: format!("{gpu}.{region}"),
            gpu: gpu.to_owned(),
            region: region.to_owned(),
            tick: PriceMicros(10_000),
            price_min: PriceMicros(10_000),
            price_max: PriceMicros(100_000_000),
            gpus_per_order_max: 4096,
            duration_min_s: 60,
            duration_max_s: 30 * 24 * 3600,
            notice_s: 120,
            free_if_preempted_within_s: 3600,
            auction: AuctionMode::Continuous,
            offering: Offering::BareMetal,
            model: None,
            tokens_per_s_per_gpu: 0,
            handoff: Handoff::Required,
            provision_timeout_s: PROVISION_TIMEOUT_S_DEFAULT,
        }
    }

    /// The id the pool must have: `<gpu>.<region>`, or `<model>.<region>` for a model pool.
    pub fn expected_id(&self) -> String {
        match (self.offering, &self.model) {
            (Offering::Model, Some(model)) => format!("{model}.{}", self.region),
            _ => format!("{}.{}", self.gpu, self.region),
        }
    }

    /// A model pool with the defaults: `<model>.<region>`, running on `gpu`, bought per
    /// GPU-hour like any pool, with `tokens_per_s_per_gpu` guaranteed.
    pub fn model_with_defaults(
        model: &str,
        gpu: &str,
        region: &str,
        tokens_per_s_per_gpu: u32,
    ) -> PoolConfig {
        PoolConfig {
            id: format!("{model}.{region}"),
            offering: Offering::Model,
            model: Some(model.to_owned()),
            tokens_per_s_per_gpu,
            ..PoolConfig::with_defaults(gpu, region)
        }
    }

    /// Whether the offering's settings agree: a model pool names its model and guarantees a
    /// throughput; a bare-metal pool does neither. The provisioning timeout is within bounds.
    pub fn offering_is_valid(&self) -> bool {
        let offering_ok = match self.offering {
            Offering::BareMetal => self.model.is_none() && self.tokens_per_s_per_gpu == 0,
            Offering::Model => {
                self.model.as_deref().is_some_and(|m| !m.is_empty())
                    && self.tokens_per_s_per_gpu > 0
            }
        };
        offering_ok && (1..=PROVISION_TIMEOUT_S_MAX).contains(&self.provision_timeout_s)
    }

    /// A model pool's price per million tokens, in micro-dollars, for a price per GPU-hour:
    /// `price / (tokens_per_s_per_gpu * 3600) * 1_000_000`, rounded down. `None` for bare metal.
    pub fn price_per_million_tokens(&self, price: PriceMicros) -> Option<Micros> {
        if self.offering != Offering::Model || self.tokens_per_s_per_gpu == 0 {
            return None;
        }
        let tokens_per_gpu_hour = self.tokens_per_s_per_gpu as u128 * 3600;
        Some((price.0 as u128 * 1_000_000 / tokens_per_gpu_hour).min(u64::MAX as u128) as u64)
    }

    /// Number of price levels in the band, or `None` when the settings are inconsistent.
    pub fn price_levels(&self) -> Option<u64> {
        let tick = self.tick.0;
        if tick == 0
            || self.price_min.0 == 0
            || self.price_min > self.price_max
            || !self.price_min.0.is_multiple_of(tick)
            || !self.price_max.0.is_multiple_of(tick)
        {
            return None;
        }
        Some((self.price_max.0 - self.price_min.0) / tick + 1)
    }
}

/// Pre-trade limits of one account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AccountLimits {
    /// The most bids the account may have resting at once.
    pub orders_open_max: u32,
    /// The most money the account's resting bids may commit: sum of price * GPUs * duration.
    pub open_notional_max_micros: u64,
}

impl Default for AccountLimits {
    fn default() -> Self {
        AccountLimits {
            orders_open_max: 1_000,
            // $10M of committed GPU-hours.
            open_notional_max_micros: 10_000_000 * 1_000_000,
        }
    }
}

/// Where a bid stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Resting (possibly partially filled).
    Open,
    /// All GPUs leased. A persistent bid stays known while its leases run, and reopens on preemption.
    Filled,
    /// Cancelled by its owner, by the kill switch, or left unfilled by IOC/FOK.
    Cancelled,
    /// A GTD bid whose `expires_at` passed.
    Expired,
}

impl OrderStatus {
    /// Whether the bid can still trade or reopen.
    pub fn is_terminal(self) -> bool {
        matches!(self, OrderStatus::Cancelled | OrderStatus::Expired)
    }
}

/// Why a bid left the book without filling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// Its owner cancelled it.
    ByOwner,
    /// An IOC bid's unfilled rest.
    IocRemainder,
    /// A FOK bid that could not fill whole.
    FokNotFillable,
    /// The account's or the pool's kill switch.
    KillSwitch,
}

/// A lease's lifecycle (DESIGN section 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LeaseStatus {
    /// Running.
    Active,
    /// Notice given; runs until `notice_ends_at`.
    Preempting,
    /// Taken back by its supplier after the notice.
    Preempted,
    /// Reached `ends_at`.
    Completed,
    /// Ended early by its buyer.
    Released,
    /// Never became usable: its supplier reported it failed, or it was not ready in time.
    /// It costs nothing.
    Failed,
}

impl LeaseStatus {
    /// Whether the lease has ended.
    pub fn is_ended(self) -> bool {
        matches!(
            self,
            LeaseStatus::Preempted
                | LeaseStatus::Completed
                | LeaseStatus::Released
                | LeaseStatus::Failed
        )
    }
}

/// Where a lease's handoff stands (DESIGN section 11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AccessStatus {
    /// Waiting for the supplier's provisioner.
    Provisioning,
    /// Usable: endpoints handed over, billing running.
    Ready,
    /// Never became usable.
    Failed,
}

/// How the buyer reaches one node of a bare-metal lease.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// One of the lease's nodes (absent for leases on blocks without nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub node: Option<Name>,
    /// Host name or address to connect to.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub host: Name,
    /// TCP port (ssh).
    pub port: u16,
    /// User to log in as.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub user: Name,
}

/// A lease's access: the handoff's state and, once ready, how to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Access {
    /// Provisioning, ready or failed.
    pub status: AccessStatus,
    /// When the supplier reported it ready: billing and the free first hour count from here.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub ready_at: Option<TimeMs>,
    /// Bare metal: how to reach each node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
    /// Model pools: the inference gateway's base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub endpoint: Option<Name>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub reason: Option<Name>,
}

impl Access {
    /// A lease waiting for its provisioner.
    pub fn provisioning() -> Access {
        Access {
            status: AccessStatus::Provisioning,
            ready_at: None,
            endpoints: Vec::new(),
            endpoint: None,
            reason: None,
        }
    }

    /// A lease ready from `at` with nothing handed over through offpeak.
    pub fn ready_at(at: TimeMs) -> Access {
        Access {
            status: AccessStatus::Ready,
            ready_at: Some(at),
            ..Access::provisioning()
        }
    }

    /// Leases stored before the handoff existed: ready, billed from their start.
    pub fn before_handoff_existed() -> Access {
        Access {
            status: AccessStatus::Ready,
            ..Access::provisioning()
        }
    }
}

/// Where a capacity block stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BlockStatus {
    /// Released, window not yet open.
    Pending,
    /// Window open: unsold GPUs rest on the ask side.
    Open,
    /// Window over: nothing more can be sold; it is forgotten once its last lease ends.
    Closed,
}

/// GPUs of a block on one machine, for bare-metal assignment.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeGpus {
    /// The node's name, e.g. `rack12-n3`.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub node: Name,
    /// GPUs on that node.
    pub gpus: u32,
}

/// The reason a command was refused. Each reads as a sentence; `as_str` is the API error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    /// The price is not a whole multiple of the pool's tick.
    PriceNotOnTick,
    /// The price is outside the pool's band.
    PriceOutOfBand,
    /// A bid or block of zero GPUs.
    GpusMustNotBeZero,
    /// More GPUs than the pool's `gpus_per_order_max`.
    GpusOverMax,
    /// `min_gpus` is zero or above `gpus`.
    MinGpusInvalid,
    /// `duration_s` below the pool's minimum.
    DurationTooShort,
    /// `max_duration_s` above the pool's maximum.
    DurationTooLong,
    /// `max_duration_s` below `duration_s`.
    MaxDurationBelowDuration,
    /// No such pool.
    UnknownPool,
    /// No such (open or persistent) order.
    UnknownOrder,
    /// The order belongs to another account (the API shows this as not found).
    NotYourOrder,
    /// The order can no longer be amended or cancelled.
    OrderNotOpen,
    /// No such running lease.
    UnknownLease,
    /// The lease belongs to another account (the API shows this as not found).
    NotYourLease,
    /// No such block for this supplier.
    UnknownBlock,
    /// The supplier already used this block id.
    BlockIdTaken,
    /// The block's window is empty, already over, or shorter than the pool's minimum lease.
    WindowInvalid,
    /// A block's window may be extended, never shortened (its leases were promised).
    WindowCannotShrink,
    /// The nodes' GPUs do not add up to the block's GPUs, or a node is empty or listed twice.
    NodesDoNotMatchGpus,
    /// More GPUs reclaimed than the block still holds.
    ReclaimOverBlock,
    /// The account already has `orders_open_max` resting bids.
    LimitOrdersOpen,
    /// The bid would take the account's resting notional over its limit.
    LimitNotional,
    /// The account's or the pool's kill switch is engaged.
    KillSwitch,
    /// A notice shorter than the pool promises, without `emergency`.
    NoticeTooShort,
    /// A GTD bid needs `expires_at` in the future; other kinds must not carry one.
    ExpiresAtInvalid,
    /// A forecast time in the past.
    ReclaimAtInPast,
    /// Pool settings that do not describe a usable price ladder.
    PoolConfigInvalid,
    /// Tick, band or offering changes on a pool that still has bids or blocks that rest, or may
    /// rest again.
    PoolNotEmpty,
    /// Nothing to change in an amend or update.
    NothingToChange,
    /// An amend's new total GPUs are not above the GPUs already filled.
    GpusNotAboveFilled,
    /// The block's window is over: it can no longer be updated.
    BlockClosed,
    /// The lease is no longer provisioning: it was already reported ready.
    LeaseNotProvisioning,
    /// A `ready` whose endpoints do not fit the lease: none for a bare-metal lease, no
    /// `endpoint` for a model lease, or a node the lease does not hold.
    EndpointsInvalid,
}

impl Rejection {
    /// The stable snake_case code the API returns.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::PriceNotOnTick => "price_not_on_tick",
            Rejection::PriceOutOfBand => "price_out_of_band",
            Rejection::GpusMustNotBeZero => "gpus_must_not_be_zero",
            Rejection::GpusOverMax => "gpus_over_max",
            Rejection::MinGpusInvalid => "min_gpus_invalid",
            Rejection::DurationTooShort => "duration_too_short",
            Rejection::DurationTooLong => "duration_too_long",
            Rejection::MaxDurationBelowDuration => "max_duration_below_duration",
            Rejection::UnknownPool => "unknown_pool",
            Rejection::UnknownOrder => "unknown_order",
            Rejection::NotYourOrder => "not_your_order",
            Rejection::OrderNotOpen => "order_not_open",
            Rejection::UnknownLease => "unknown_lease",
            Rejection::NotYourLease => "not_your_lease",
            Rejection::UnknownBlock => "unknown_block",
            Rejection::BlockIdTaken => "block_id_taken",
            Rejection::WindowInvalid => "window_invalid",
            Rejection::WindowCannotShrink => "window_cannot_shrink",
            Rejection::NodesDoNotMatchGpus => "nodes_do_not_match_gpus",
            Rejection::ReclaimOverBlock => "reclaim_over_block",
            Rejection::LimitOrdersOpen => "limit_orders_open",
            Rejection::LimitNotional => "limit_notional",
            Rejection::KillSwitch => "kill_switch",
            Rejection::NoticeTooShort => "notice_too_short",
            Rejection::ExpiresAtInvalid => "expires_at_invalid",
            Rejection::ReclaimAtInPast => "reclaim_at_in_past",
            Rejection::PoolConfigInvalid => "pool_config_invalid",
            Rejection::PoolNotEmpty => "pool_not_empty",
            Rejection::NothingToChange => "nothing_to_change",
            Rejection::GpusNotAboveFilled => "gpus_not_above_filled",
            Rejection::BlockClosed => "block_closed",
            Rejection::LeaseNotProvisioning => "lease_not_provisioning",
            Rejection::EndpointsInvalid => "endpoints_invalid",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Money owed for a lease: `price * gpus * seconds / 3600`, rounded down.
pub fn cost_micros(price: PriceMicros, gpus: u32, seconds: u64) -> Micros {
    let owed = price.0 as u128 * gpus as u128 * seconds as u128 / 3600;
    owed.min(u64::MAX as u128) as u64
}
