//! The JSON shapes of orders, leases, blocks and pools, built from the engine's views.
//!
//! Money is a USD decimal string, time is RFC 3339, ids are strings, durations are `*_s`.
//! A lease shown to its buyer does not name the supplier; trades shown publicly name no one.

use super::codes;
use crate::money::Usd;
use crate::timestamp::Rfc3339Time;
use matching_engine::{
    Access, AccessStatus, AuctionMode, BlockView, Endpoint, Handoff, LeaseView, NodeGpus, Offering,
    OrderView, PoolConfig, PoolSummary, PriceMicros,
};
use serde::Serialize;
use utoipa::ToSchema;

/// An order as its owner sees it.
#[derive(Serialize, ToSchema)]
pub struct OrderJson {
    /// The order id (digits, as a string).
    #[schema(example = "42")]
    id: String,
    pool: String,
    price: Usd,
    gpus: u32,
    remaining_gpus: u32,
    filled_gpus: u32,
    min_gpus: u32,
    duration_s: u32,
    max_duration_s: u32,
    #[schema(value_type = matching_engine::TimeInForce)]
    tif: &'static str,
    expires_at: Option<Rfc3339Time>,
    persistent: bool,
    client_order_id: Option<String>,
    #[schema(value_type = matching_engine::OrderStatus)]
    status: &'static str,
    #[schema(value_type = Option<matching_engine::CancelReason>)]
    cancel_reason: Option<&'static str>,
    created_at: Rfc3339Time,
    updated_at: Rfc3339Time,
}

impl From<&OrderView> for OrderJson {
    fn from(o: &OrderView) -> Self {
        OrderJson {
            id: o.id.to_string(),
            pool: o.pool.to_string(),
            price: o.price.into(),
            gpus: o.gpus,
            remaining_gpus: o.remaining_gpus,
            filled_gpus: o.filled_gpus,
            min_gpus: o.min_gpus,
            duration_s: o.duration_s,
            max_duration_s: o.max_duration_s,
            tif: codes::tif(o.tif),
            expires_at: o.expires_at.map(Rfc3339Time),
            persistent: o.persistent,
            client_order_id: o.client_order_id.as_deref().map(str::to_owned),
            status: codes::order_status(o.status),
            cancel_reason: o.cancel_reason.map(codes::cancel_reason),
            created_at: o.created_at.into(),
            updated_at: o.updated_at.into(),
        }
    }
}

/// A lease as its buyer sees it.
#[derive(Serialize, ToSchema)]
pub struct LeaseJson {
    id: String,
    order_id: String,
    pool: String,
    block_id: String,
    gpus: u32,
    price: Usd,
    #[schema(value_type = matching_engine::LeaseStatus)]
    status: &'static str,
    started_at: Rfc3339Time,
    ends_at: Rfc3339Time,
    notice_ends_at: Option<Rfc3339Time>,
    preempted_at: Option<Rfc3339Time>,
    emergency: bool,
    /// The notice promised when the lease opened (the pool's `notice_s` then); a reclaim
    /// without an explicit notice gives at least this, and lowering the pool's never shortens it.
    notice_s: u32,
    ended_at: Option<Rfc3339Time>,
    cost: Usd,
    nodes: Vec<NodeGpus>,
    /// The handoff: how to reach the GPUs once the supplier has them ready.
    access: AccessJson,
    /// The buyer's ssh public keys installed on the machines (bare metal).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ssh_public_keys: Vec<String>,
}

/// A lease's access (DESIGN section 11): billing runs from `ready_at`.
#[derive(Serialize, ToSchema)]
pub struct AccessJson {
    #[schema(value_type = AccessStatus)]
    status: &'static str,
    /// When the supplier reported the lease ready; cost and the free first hour count from here.
    ready_at: Option<Rfc3339Time>,
    /// Bare metal: how to reach each node (ssh).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    endpoints: Vec<Endpoint>,
    /// Model pools: the inference gateway's base URL (call it with a lease token).
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    /// Why the lease failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl From<&Access> for AccessJson {
    fn from(a: &Access) -> Self {
        AccessJson {
            status: codes::access_status(a.status),
            ready_at: a.ready_at.map(Rfc3339Time),
            endpoints: a.endpoints.clone(),
            endpoint: a.endpoint.as_deref().map(str::to_owned),
            reason: a.reason.as_deref().map(str::to_owned),
        }
    }
}

impl From<&LeaseView> for LeaseJson {
    fn from(l: &LeaseView) -> Self {
        LeaseJson {
            id: l.id.to_string(),
            order_id: l.order_id.to_string(),
            pool: l.pool.to_string(),
            block_id: l.block_id.to_string(),
            gpus: l.gpus,
            price: l.price.into(),
            status: codes::lease_status(l.status),
            started_at: l.started_at.into(),
            ends_at: l.ends_at.into(),
            notice_ends_at: l.notice_ends_at.map(Rfc3339Time),
            preempted_at: l.preempted_at.map(Rfc3339Time),
            emergency: l.emergency,
            notice_s: l.notice_s,
            ended_at: l.ended_at.map(Rfc3339Time),
            cost: Usd(l.cost_micros),
            nodes: l.nodes.clone(),
            access: AccessJson::from(&l.access),
            ssh_public_keys: l.ssh_public_keys.as_deref().unwrap_or_default().to_vec(),
        }
    }
}

/// A capacity block as its supplier sees it.
#[derive(Serialize, ToSchema)]
pub struct BlockJson {
    block_id: String,
    pool: String,
    #[schema(value_type = matching_engine::BlockStatus)]
    status: &'static str,
    gpus: u32,
    gpus_sold: u32,
    gpus_unsold: u32,
    gpus_reclaimed: u32,
    /// Of the reclaimed GPUs, those of leases that failed to provision: they left the block
    /// and are sold again only once released again.
    gpus_failed: u32,
    gpus_reclaiming: u32,
    reserve_price: Usd,
    available_from: Rfc3339Time,
    available_until: Rfc3339Time,
    revenue: Usd,
    reclaim_forecast_at: Option<Rfc3339Time>,
    /// The last forecast while its time is still ahead; leases opened meanwhile are warned.
    reclaim_expected_at: Option<Rfc3339Time>,
    nodes: Vec<NodeGpus>,
    updated_at: Rfc3339Time,
}

impl From<&BlockView> for BlockJson {
    fn from(b: &BlockView) -> Self {
        BlockJson {
            block_id: b.block_id.to_string(),
            pool: b.pool.to_string(),
            status: codes::block_status(b.status),
            gpus: b.gpus,
            gpus_sold: b.gpus_sold,
            gpus_unsold: b.gpus_unsold,
            gpus_reclaimed: b.gpus_reclaimed,
            gpus_failed: b.gpus_failed,
            gpus_reclaiming: b.gpus_reclaiming,
            reserve_price: b.reserve_price.into(),
            available_from: b.available_from.into(),
            available_until: b.available_until.into(),
            revenue: Usd(b.revenue_micros),
            reclaim_forecast_at: b.reclaim_forecast_at.map(Rfc3339Time),
            reclaim_expected_at: b.reclaim_expected_at.map(Rfc3339Time),
            nodes: b.nodes.clone(),
            updated_at: b.updated_at.into(),
        }
    }
}

/// A pool's settings and live summary.
#[derive(Serialize, ToSchema)]
pub struct PoolJson {
    id: String,
    gpu: String,
    region: String,
    tick: Usd,
    price_min: Usd,
    price_max: Usd,
    gpus_per_order_max: u32,
    duration_min_s: u32,
    duration_max_s: u32,
    notice_s: u32,
    free_if_preempted_within_s: u32,
    auction: AuctionMode,
    /// `bare_metal` (machines over ssh) or `model` (GPUs of a model deployment, DESIGN §12).
    offering: Offering,
    /// Model pools: the model served.
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    /// Model pools: tokens per second guaranteed per GPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    tokens_per_s_per_gpu: Option<u32>,
    /// Model pools: `best_ask` per million tokens (absent without an ask).
    #[serde(skip_serializing_if = "Option::is_none")]
    price_per_million_tokens: Option<Usd>,
    /// `required`: leases are billed from the supplier's `ready`; `none`: from their start.
    handoff: Handoff,
    /// A lease not ready this many seconds after it opened fails, costing nothing.
    provision_timeout_s: u32,
    best_bid: Option<Usd>,
    best_ask: Option<Usd>,
    last_price: Option<Usd>,
    idle_gpus: u64,
    leased_gpus: u64,
    reclaiming_gpus: u64,
    halted: bool,
}

impl From<&PoolSummary> for PoolJson {
    fn from(p: &PoolSummary) -> Self {
        let c = &p.config;
        PoolJson {
            id: c.id.clone(),
            gpu: c.gpu.clone(),
            region: c.region.clone(),
            tick: c.tick.into(),
            price_min: c.price_min.into(),
            price_max: c.price_max.into(),
            gpus_per_order_max: c.gpus_per_order_max,
            duration_min_s: c.duration_min_s,
            duration_max_s: c.duration_max_s,
            notice_s: c.notice_s,
            free_if_preempted_within_s: c.free_if_preempted_within_s,
            auction: c.auction,
            offering: c.offering,
            model: c.model.clone(),
            tokens_per_s_per_gpu: (c.offering == Offering::Model).then_some(c.tokens_per_s_per_gpu),
            price_per_million_tokens: p.best_ask.and_then(|price| per_million_tokens(c, price)),
            handoff: c.handoff,
            provision_timeout_s: c.provision_timeout_s,
            best_bid: p.best_bid.map(Usd::from),
            best_ask: p.best_ask.map(Usd::from),
            last_price: p.last_price.map(Usd::from),
            idle_gpus: p.idle_gpus,
            leased_gpus: p.leased_gpus,
            reclaiming_gpus: p.reclaiming_gpus,
            halted: p.halted,
        }
    }
}

/// A model pool's price per million tokens for a price per GPU-hour (DESIGN section 12);
/// `None` for bare-metal pools.
pub fn per_million_tokens(pool: &PoolConfig, price: PriceMicros) -> Option<Usd> {
    pool.price_per_million_tokens(price).map(Usd)
}
