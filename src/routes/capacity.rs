//! Capacity blocks: release, list, read, update, reclaim, forecast. Role `supplier`.
//!
//! Block ids are chosen by the supplier and scoped to it: another supplier's block of the same
//! id is simply a different block, and is never visible.

use super::caller::Supplier;
use super::owned;
use super::{rejection, BlockListQuery};
use crate::error::ApiError;
use crate::money::ApiPrice;
use crate::state::AppState;
use crate::timestamp::Rfc3339Time;
use crate::validate;
use crate::wire::rest::BlockJson;
use actix_web::{web, HttpResponse};
use matching_engine::{
    BlockStatus, BlockView, Command, Event, NodeGpus, ReclaimCapacity, Rejection, ReleaseCapacity,
    UpdateCapacity,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

/// A block this supplier never released (or an id that could not be one).
pub const UNKNOWN_BLOCK: &[ApiError] = &[ApiError::NotFound("unknown_block")];

/// What releasing a block can be refused for.
pub const RELEASE_ERRORS: &[ApiError] = &[
    ApiError::Rejected(Rejection::UnknownPool),
    ApiError::Rejected(Rejection::BlockIdTaken),
    ApiError::Rejected(Rejection::GpusMustNotBeZero),
    ApiError::Rejected(Rejection::GpusOverMax),
    ApiError::Rejected(Rejection::PriceNotOnTick),
    ApiError::Rejected(Rejection::PriceOutOfBand),
    ApiError::Rejected(Rejection::WindowInvalid),
    ApiError::Rejected(Rejection::NodesDoNotMatchGpus),
    ApiError::Rejected(Rejection::KillSwitch),
];

/// What updating a block can be refused for.
pub const UPDATE_ERRORS: &[ApiError] = &[
    ApiError::Rejected(Rejection::UnknownBlock),
    ApiError::Rejected(Rejection::BlockClosed),
    ApiError::Rejected(Rejection::PriceNotOnTick),
    ApiError::Rejected(Rejection::PriceOutOfBand),
    ApiError::Rejected(Rejection::WindowCannotShrink),
    ApiError::Rejected(Rejection::NothingToChange),
];

/// What a reclaim can be refused for.
pub const RECLAIM_ERRORS: &[ApiError] = &[
    ApiError::Rejected(Rejection::UnknownBlock),
    ApiError::Rejected(Rejection::GpusMustNotBeZero),
    ApiError::Rejected(Rejection::ReclaimOverBlock),
    ApiError::Rejected(Rejection::NoticeTooShort),
];

/// What a forecast can be refused for.
pub const FORECAST_ERRORS: &[ApiError] = &[
    ApiError::Rejected(Rejection::UnknownBlock),
    ApiError::Rejected(Rejection::ReclaimAtInPast),
];

/// One machine of a block.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeBody {
    /// The node's name, `[A-Za-z0-9._:-]`.
    #[schema(
        pattern = r"^[A-Za-z0-9._:-]+$",
        min_length = 1,
        max_length = 64,
        example = "rack12-n3"
    )]
    node: String,
    /// GPUs on that node.
    #[schema(minimum = 1, maximum = 1000000)]
    gpus: u32,
}

/// `POST /v1/capacity`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"block_id": "rack12-night", "pool": "h100-sxm.us-east", "gpus": 8, "reserve_price": "1.50", "available_until": "2099-01-01T00:00:00Z"}))]
pub struct ReleaseBody {
    /// The supplier's own id for the block, `[A-Za-z0-9._:-]`.
    #[schema(
        pattern = r"^[A-Za-z0-9._:-]+$",
        min_length = 1,
        max_length = 64,
        example = "rack12-night"
    )]
    block_id: String,
    /// The pool, `<gpu>.<region>`.
    #[schema(
        pattern = r"^[a-z0-9][a-z0-9.-]{0,31}\.[a-z0-9-]{1,31}$",
        max_length = 64,
        example = "h100-sxm.us-east"
    )]
    pool: String,
    /// GPUs released, at most the pool's `gpus_per_order_max`.
    #[schema(minimum = 1, maximum = 1000000)]
    gpus: u32,
    /// The least it sells for, per GPU-hour.
    reserve_price: ApiPrice,
    /// When the window opens (default now).
    available_from: Option<Rfc3339Time>,
    /// When the window closes: no lease runs past it.
    available_until: Rfc3339Time,
    /// The machines, whose GPUs add up to `gpus` (optional).
    #[serde(default)]
    #[schema(max_items = 1024)]
    nodes: Vec<NodeBody>,
}

/// `PATCH /v1/capacity/{block_id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    /// A new reserve price.
    reserve_price: Option<ApiPrice>,
    /// A later window end (never earlier).
    available_until: Option<Rfc3339Time>,
}

/// `POST /v1/capacity/{block_id}/reclaim`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReclaimBody {
    /// GPUs taken back: unsold ones first, then whole leases with notice.
    #[schema(minimum = 1, maximum = 1000000)]
    gpus: u32,
    /// Notice given to the leases (default and minimum: the pool's `notice_s`).
    notice_s: Option<u32>,
    /// Allow a notice shorter than the pool promises.
    emergency: Option<bool>,
}

/// `POST /v1/capacity/{block_id}/forecast`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForecastBody {
    /// When the supplier expects to reclaim.
    reclaim_at: Rfc3339Time,
}

/// A released block.
#[derive(Serialize, ToSchema)]
struct BlockReleased {
    block: BlockJson,
    /// Leases the block opened at once (against resting bids).
    leases_opened: usize,
}

/// One block.
#[derive(Serialize, ToSchema)]
struct BlockOnly {
    block: BlockJson,
}

/// What a reclaim did.
#[derive(Serialize, ToSchema)]
struct ReclaimJson {
    gpus: u32,
    /// Of those, taken unsold off the book at once.
    gpus_from_book: u32,
    /// Leases given notice.
    leases_preempted: u32,
    notice_ends_at: Rfc3339Time,
    emergency: bool,
}

/// A block after a reclaim.
#[derive(Serialize, ToSchema)]
struct BlockReclaimed {
    block: BlockJson,
    reclaim: ReclaimJson,
}

/// A block after a forecast.
#[derive(Serialize, ToSchema)]
struct BlockForecast {
    block: BlockJson,
    /// Leases whose buyers were warned.
    leases_warned: usize,
}

/// A page of blocks, by block id.
#[derive(Serialize, ToSchema)]
struct BlockPage {
    blocks: Vec<BlockJson>,
    /// Pass as `after` for the next page; absent on the last.
    next_after: Option<String>,
}

/// A block id from a path; one that could never have been released names nothing.
fn block_id_of(path: &str) -> Result<String, ApiError> {
    validate::block_id(path)
        .map(str::to_owned)
        .map_err(|_| ApiError::NotFound("unknown_block"))
}

/// The engine forgets a block once its window has ended and its last lease with it, so it
/// answers `unknown_block` for it; a block still on record as closed is `block_closed`.
async fn closed_if_on_record(
    state: &AppState,
    reason: Rejection,
    supplier: &Arc<str>,
    block_id: &str,
) -> ApiError {
    if reason != Rejection::UnknownBlock {
        return reason.into();
    }
    match state.store.block(supplier, block_id).await {
        Ok(Some(block)) if block.status == BlockStatus::Closed => Rejection::BlockClosed.into(),
        Ok(_) => reason.into(),
        Err(err) => err.into(),
    }
}

/// Releases a capacity block; its unsold GPUs rest on the ask side while its window is open.
#[utoipa::path(
    post,
    path = "/v1/capacity",
    operation_id = "release_capacity",
    tag = "capacity",
    request_body = ReleaseBody,
    responses((status = 201, description = "Released; the leases it opened at once", body = BlockReleased)),
)]
pub async fn release(
    state: web::Data<AppState>,
    supplier: Supplier,
    body: web::Json<ReleaseBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    validate::block_id(&body.block_id)?;
    validate::pool(&body.pool)?;
    validate::nodes(body.nodes.iter().map(|n| n.node.as_str()))?;
    let account = supplier.0.account.clone();
    let block_id = body.block_id.clone();
    let committed = state
        .sequencer
        .submit(Command::ReleaseCapacity(ReleaseCapacity {
            supplier: account.to_string(),
            block_id: body.block_id,
            pool: body.pool,
            gpus: body.gpus,
            reserve_price: body.reserve_price.0,
            available_from: body.available_from.map(|t| t.0),
            available_until: body.available_until.0,
            nodes: body
                .nodes
                .into_iter()
                .map(|n| NodeGpus {
                    node: n.node.into(),
                    gpus: n.gpus,
                })
                .collect(),
        }))
        .await?;
    let events = committed.events();
    if let Some(reason) = rejection(events) {
        return Err(reason.into());
    }
    let block: BlockView = owned::after(&state, events, &account, block_id.clone()).await?;
    let leases_opened = events
        .iter()
        .filter(|e| matches!(e, Event::LeaseOpened { lease } if lease.supplier == account && *lease.block_id == *block_id))
        .count();
    Ok(HttpResponse::Created().json(BlockReleased {
        block: BlockJson::from(&block),
        leases_opened,
    }))
}

/// Lists the caller's blocks by block id; `pending` and `open` come from live state.
#[utoipa::path(
    get,
    path = "/v1/capacity",
    operation_id = "list_capacity",
    tag = "capacity",
    params(super::BlockListQuery),
    responses((status = 200, description = "The caller's blocks: sold, unsold, reclaiming GPUs, revenue", body = BlockPage)),
)]
pub async fn list(
    state: web::Data<AppState>,
    supplier: Supplier,
    query: web::Query<BlockListQuery>,
) -> Result<HttpResponse, ApiError> {
    let (blocks, next_after) =
        owned::page::<BlockView, _>(&state, &supplier.0.account, &query).await?;
    Ok(HttpResponse::Ok().json(BlockPage {
        blocks: blocks.iter().map(BlockJson::from).collect(),
        next_after,
    }))
}

/// One of the caller's blocks.
#[utoipa::path(
    get,
    path = "/v1/capacity/{block_id}",
    operation_id = "get_capacity",
    tag = "capacity",
    params(("block_id" = String, Path, description = "The supplier's block id", pattern = r"^[A-Za-z0-9._:-]{1,64}$", example = "rack12-night")),
    responses((status = 200, description = "The block", body = BlockOnly)),
)]
pub async fn one(
    state: web::Data<AppState>,
    supplier: Supplier,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let block_id = block_id_of(&path)?;
    let block: BlockView = owned::find(&state, &supplier.0.account, block_id).await?;
    Ok(HttpResponse::Ok().json(BlockOnly {
        block: BlockJson::from(&block),
    }))
}

/// Changes a block's reserve price or extends its window.
#[utoipa::path(
    patch,
    path = "/v1/capacity/{block_id}",
    operation_id = "update_capacity",
    tag = "capacity",
    params(("block_id" = String, Path, description = "The supplier's block id", pattern = r"^[A-Za-z0-9._:-]{1,64}$", example = "rack12-night")),
    request_body = UpdateBody,
    responses((status = 200, description = "The block after the change", body = BlockOnly)),
)]
pub async fn update(
    state: web::Data<AppState>,
    supplier: Supplier,
    path: web::Path<String>,
    body: web::Json<UpdateBody>,
) -> Result<HttpResponse, ApiError> {
    let block_id = block_id_of(&path)?;
    let account = supplier.0.account.clone();
    let committed = state
        .sequencer
        .submit(Command::UpdateCapacity(UpdateCapacity {
            supplier: account.to_string(),
            block_id: block_id.clone(),
            reserve_price: body.reserve_price.map(|p| p.0),
            available_until: body.available_until.map(|t| t.0),
        }))
        .await?;
    let events = committed.events();
    if let Some(reason) = rejection(events) {
        return Err(closed_if_on_record(&state, reason, &account, &block_id).await);
    }
    let block: BlockView = owned::after(&state, events, &account, block_id.clone()).await?;
    Ok(HttpResponse::Ok().json(BlockOnly {
        block: BlockJson::from(&block),
    }))
}

/// Takes GPUs of a block back: unsold first, then whole leases with notice.
#[utoipa::path(
    post,
    path = "/v1/capacity/{block_id}/reclaim",
    operation_id = "reclaim_capacity",
    tag = "capacity",
    params(("block_id" = String, Path, description = "The supplier's block id", pattern = r"^[A-Za-z0-9._:-]{1,64}$", example = "rack12-night")),
    request_body = ReclaimBody,
    responses((status = 200, description = "What was taken back and when the notice ends", body = BlockReclaimed)),
)]
pub async fn reclaim(
    state: web::Data<AppState>,
    supplier: Supplier,
    path: web::Path<String>,
    body: web::Json<ReclaimBody>,
) -> Result<HttpResponse, ApiError> {
    let block_id = block_id_of(&path)?;
    let account = supplier.0.account.clone();
    let committed = state
        .sequencer
        .submit(Command::ReclaimCapacity(ReclaimCapacity {
            supplier: account.to_string(),
            block_id: block_id.clone(),
            gpus: body.gpus,
            notice_s: body.notice_s,
            emergency: body.emergency.unwrap_or(false),
        }))
        .await?;
    let events = committed.events();
    if let Some(reason) = rejection(events) {
        return Err(reason.into());
    }
    let reclaim = events.iter().find_map(|e| match e {
        Event::ReclaimAccepted {
            gpus,
            gpus_from_book,
            leases_preempted,
            notice_ends_at,
            emergency,
            ..
        } => Some(ReclaimJson {
            gpus: *gpus,
            gpus_from_book: *gpus_from_book,
            leases_preempted: *leases_preempted,
            notice_ends_at: (*notice_ends_at).into(),
            emergency: *emergency,
        }),
        _ => None,
    });
    let Some(reclaim) = reclaim else {
        return Err(ApiError::Internal(
            "the engine neither accepted nor rejected a reclaim".into(),
        ));
    };
    let block: BlockView = owned::after(&state, events, &account, block_id.clone()).await?;
    Ok(HttpResponse::Ok().json(BlockReclaimed {
        block: BlockJson::from(&block),
        reclaim,
    }))
}

/// Warns the block's buyers of a coming reclaim.
#[utoipa::path(
    post,
    path = "/v1/capacity/{block_id}/forecast",
    operation_id = "forecast_reclaim",
    tag = "capacity",
    params(("block_id" = String, Path, description = "The supplier's block id", pattern = r"^[A-Za-z0-9._:-]{1,64}$", example = "rack12-night")),
    request_body = ForecastBody,
    responses((status = 200, description = "The block and how many leases were warned", body = BlockForecast)),
)]
pub async fn forecast(
    state: web::Data<AppState>,
    supplier: Supplier,
    path: web::Path<String>,
    body: web::Json<ForecastBody>,
) -> Result<HttpResponse, ApiError> {
    let block_id = block_id_of(&path)?;
    let account = supplier.0.account.clone();
    let committed = state
        .sequencer
        .submit(Command::ForecastReclaim {
            supplier: account.to_string(),
            block_id: block_id.clone(),
            reclaim_at: body.reclaim_at.0,
        })
        .await?;
    let events = committed.events();
    if let Some(reason) = rejection(events) {
        return Err(reason.into());
    }
    let leases_warned = events
        .iter()
        .filter(|e| matches!(e, Event::ReclaimForecast { .. }))
        .count();
    let block: BlockView = owned::after(&state, events, &account, block_id.clone()).await?;
    Ok(HttpResponse::Ok().json(BlockForecast {
        block: BlockJson::from(&block),
        leases_warned,
    }))
}
