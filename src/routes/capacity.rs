//! Capacity blocks: release, list, read, update, reclaim, forecast. Role `supplier`.
//!
//! Block ids are chosen by the supplier and scoped to it: another supplier's block of the same
//! id is simply a different block, and is never visible.

use super::json::BlockJson;
use super::{check_name, rejection, ListQuery};
use crate::auth::Supplier;
use crate::error::ApiError;
use crate::limits::{BLOCK_ID_BYTES_MAX, NODE_NAME_BYTES_MAX, POOL_ID_BYTES_MAX};
use crate::money::ApiPrice;
use crate::state::AppState;
use crate::store::{codes, ListFilter};
use crate::timestamp::Rfc3339Time;
use actix_web::{web, HttpResponse};
use matching_engine::limits::NODES_PER_BLOCK_MAX;
use matching_engine::{
    BlockView, Command, Event, NodeGpus, ReclaimCapacity, Rejection, ReleaseCapacity,
    UpdateCapacity,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One machine of a block.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeBody {
    node: String,
    gpus: u32,
}

/// `POST /v1/capacity`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBody {
    block_id: String,
    pool: String,
    gpus: u32,
    reserve_price: ApiPrice,
    available_from: Option<Rfc3339Time>,
    available_until: Rfc3339Time,
    #[serde(default)]
    nodes: Vec<NodeBody>,
}

/// `PATCH /v1/capacity/{block_id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    reserve_price: Option<ApiPrice>,
    available_until: Option<Rfc3339Time>,
}

/// `POST /v1/capacity/{block_id}/reclaim`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReclaimBody {
    gpus: u32,
    notice_s: Option<u32>,
    emergency: Option<bool>,
}

/// `POST /v1/capacity/{block_id}/forecast`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecastBody {
    reclaim_at: Rfc3339Time,
}

#[derive(Serialize)]
struct BlockReleased {
    block: BlockJson,
    leases_opened: usize,
}

#[derive(Serialize)]
struct BlockOnly {
    block: BlockJson,
}

#[derive(Serialize)]
struct ReclaimJson {
    gpus: u32,
    gpus_from_book: u32,
    leases_preempted: u32,
    notice_ends_at: Rfc3339Time,
    emergency: bool,
}

#[derive(Serialize)]
struct BlockReclaimed {
    block: BlockJson,
    reclaim: ReclaimJson,
}

#[derive(Serialize)]
struct BlockForecast {
    block: BlockJson,
    leases_warned: usize,
}

#[derive(Serialize)]
struct BlockPage {
    blocks: Vec<BlockJson>,
    next_after: Option<String>,
}

/// A block id from a path; one that could never have been released names nothing.
fn block_id_of(path: &str) -> Result<String, ApiError> {
    check_name(path, BLOCK_ID_BYTES_MAX, "block_id")
        .map_err(|_| ApiError::NotFound("unknown_block"))?;
    Ok(path.to_owned())
}

/// The latest view of the supplier's block among a command's events.
fn block_in(events: &[Event], supplier: &str, block_id: &str) -> Option<BlockView> {
    events.iter().rev().find_map(|e| match e {
        Event::BlockChanged { block }
            if &*block.supplier == supplier && &*block.block_id == block_id =>
        {
            Some(block.clone())
        }
        _ => None,
    })
}

/// One of `supplier`'s blocks: live from the engine, else from history.
async fn find_block(
    state: &AppState,
    supplier: &Arc<str>,
    block_id: &str,
) -> Result<BlockView, ApiError> {
    let (owner, id) = (supplier.clone(), block_id.to_owned());
    let live = state
        .sequencer
        .read(move |v| v.engine.block(&owner, &id))
        .await?;
    match live {
        Some(block) => Ok(block),
        None => state
            .store
            .block(supplier, block_id)
            .await?
            .ok_or(ApiError::NotFound("unknown_block")),
    }
}

async fn block_after(
    state: &AppState,
    events: &[Event],
    supplier: &Arc<str>,
    block_id: &str,
) -> Result<BlockView, ApiError> {
    match block_in(events, supplier, block_id) {
        Some(block) => Ok(block),
        None => find_block(state, supplier, block_id).await,
    }
}

/// Releases a capacity block; its unsold GPUs rest on the ask side while its window is open.
pub async fn release(
    state: web::Data<AppState>,
    supplier: Supplier,
    body: web::Json<ReleaseBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    check_name(&body.block_id, BLOCK_ID_BYTES_MAX, "block_id")?;
    if body.pool.len() > POOL_ID_BYTES_MAX {
        return Err(ApiError::Rejected(Rejection::UnknownPool));
    }
    if body.nodes.len() > NODES_PER_BLOCK_MAX {
        return Err(ApiError::InvalidBody(format!(
            "a block lists at most {NODES_PER_BLOCK_MAX} nodes"
        )));
    }
    for node in &body.nodes {
        check_name(&node.node, NODE_NAME_BYTES_MAX, "nodes[].node")?;
    }
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
    let block = block_after(&state, events, &account, &block_id).await?;
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
pub async fn list(
    state: web::Data<AppState>,
    supplier: Supplier,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit()?;
    let status = match query.status.as_deref() {
        None => None,
        Some(code) => Some(codes::parse_block_status(code).ok_or_else(|| {
            ApiError::InvalidQuery("status must be pending, open or closed".into())
        })?),
    };
    let after = query.before.clone();
    let account = supplier.0.account.clone();
    let owner = account.clone();
    let blocks: Vec<BlockView> = match status {
        Some(
            wanted @ (matching_engine::BlockStatus::Pending | matching_engine::BlockStatus::Open),
        ) => {
            let mut live = state
                .sequencer
                .read(move |v| v.engine.blocks_of(&owner))
                .await?;
            live.retain(|b| {
                b.status == wanted && after.as_deref().is_none_or(|a| &*b.block_id > a)
            });
            live.sort_unstable_by(|a, b| a.block_id.cmp(&b.block_id));
            live.truncate(limit);
            live
        }
        _ => {
            let filter = ListFilter {
                status: status.map(|s| codes::block_status(s).to_owned()),
                cursor: after,
                limit,
            };
            let mut stored = state.store.blocks(&account, &filter).await?;
            let live = state
                .sequencer
                .read(move |v| v.engine.blocks_of(&owner))
                .await?;
            for block in &mut stored {
                if let Some(fresh) = live.iter().find(|b| b.block_id == block.block_id) {
                    *block = fresh.clone();
                }
            }
            stored
        }
    };
    let next_after = (blocks.len() == limit)
        .then(|| blocks.last().map(|b| b.block_id.to_string()))
        .flatten();
    Ok(HttpResponse::Ok().json(BlockPage {
        blocks: blocks.iter().map(BlockJson::from).collect(),
        next_after,
    }))
}

/// One of the caller's blocks.
pub async fn one(
    state: web::Data<AppState>,
    supplier: Supplier,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let block_id = block_id_of(&path)?;
    let block = find_block(&state, &supplier.0.account, &block_id).await?;
    Ok(HttpResponse::Ok().json(BlockOnly {
        block: BlockJson::from(&block),
    }))
}

/// Changes a block's reserve price or extends its window.
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
        return Err(reason.into());
    }
    let block = block_after(&state, events, &account, &block_id).await?;
    Ok(HttpResponse::Ok().json(BlockOnly {
        block: BlockJson::from(&block),
    }))
}

/// Takes GPUs of a block back: unsold first, then whole leases with notice.
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
    let block = block_after(&state, events, &account, &block_id).await?;
    Ok(HttpResponse::Ok().json(BlockReclaimed {
        block: BlockJson::from(&block),
        reclaim,
    }))
}

/// Warns the block's buyers of a coming reclaim.
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
    let block = block_after(&state, events, &account, &block_id).await?;
    Ok(HttpResponse::Ok().json(BlockForecast {
        block: BlockJson::from(&block),
        leases_warned,
    }))
}
