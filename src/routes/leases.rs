//! Leases: list, read, release early. Role `buyer`; another buyer's lease is 404.

use super::caller::Buyer;
use super::{overlay_live, parse_id, rejection, LeaseListQuery};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::ListFilter;
use crate::wire::codes;
use crate::wire::rest::LeaseJson;
use actix_web::{web, HttpResponse};
use matching_engine::{Command, Event, LeaseId, LeaseStatus, LeaseView};
use serde::Serialize;
use std::sync::Arc;
use utoipa::ToSchema;

/// A lease that does not exist or is another buyer's.
pub const UNKNOWN_LEASE: &[ApiError] = &[ApiError::NotFound("unknown_lease")];

/// One lease.
#[derive(Serialize, ToSchema)]
struct LeaseOnly {
    lease: LeaseJson,
}

/// A page of leases, newest first.
#[derive(Serialize, ToSchema)]
struct LeasePage {
    leases: Vec<LeaseJson>,
    /// Pass as `before` for the next page; absent on the last.
    next_before: Option<String>,
}

/// One of `buyer`'s leases: running ones from the engine (cost accrued so far), ended ones
/// from history.
async fn find_lease(
    state: &AppState,
    buyer: &Arc<str>,
    id: LeaseId,
) -> Result<LeaseView, ApiError> {
    let owner = buyer.clone();
    let live = state
        .sequencer
        .read(move |v| v.engine.lease(id).filter(|l| l.buyer == owner))
        .await?;
    match live {
        Some(lease) => Ok(lease),
        None => state
            .store
            .lease(buyer, id)
            .await?
            .ok_or(ApiError::NotFound("unknown_lease")),
    }
}

/// Lists the caller's leases, newest first; `active` and `preempting` come from live state.
#[utoipa::path(
    get,
    path = "/v1/leases",
    operation_id = "list_leases",
    tag = "leases",
    params(super::LeaseListQuery),
    responses((status = 200, description = "The caller's leases, newest first", body = LeasePage)),
)]
pub async fn list(
    state: web::Data<AppState>,
    buyer: Buyer,
    query: web::Query<LeaseListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit()?;
    let status = match query.status.as_deref() {
        None => None,
        Some(code) => Some(codes::parse_lease_status(code).ok_or_else(|| {
            ApiError::InvalidQuery(
                "status must be active, preempting, preempted, completed or released".into(),
            )
        })?),
    };
    let before = query.cursor()?;
    let account = buyer.0.account.clone();
    let owner = account.clone();
    let leases: Vec<LeaseView> = match status {
        Some(wanted @ (LeaseStatus::Active | LeaseStatus::Preempting)) => {
            let mut live = state
                .sequencer
                .read(move |v| v.engine.leases_of(&owner))
                .await?;
            live.retain(|l| l.status == wanted && before.is_none_or(|b| l.id.0 < b));
            live.sort_unstable_by_key(|x| std::cmp::Reverse(x.id));
            live.truncate(limit);
            live
        }
        _ => {
            let filter = ListFilter {
                status: status.map(|s| codes::lease_status(s).to_owned()),
                cursor: before.map(|b| b.to_string()),
                limit,
            };
            let mut stored = state.store.leases(&account, &filter).await?;
            let live = state
                .sequencer
                .read(move |v| v.engine.leases_of(&owner))
                .await?;
            overlay_live(&mut stored, live, |l| l.id);
            stored
        }
    };
    let next_before = (leases.len() == limit)
        .then(|| leases.last().map(|l| l.id.to_string()))
        .flatten();
    Ok(HttpResponse::Ok().json(LeasePage {
        leases: leases.iter().map(LeaseJson::from).collect(),
        next_before,
    }))
}

/// One of the caller's leases.
#[utoipa::path(
    get,
    path = "/v1/leases/{id}",
    operation_id = "get_lease",
    tag = "leases",
    params(("id" = String, Path, description = "Lease id (digits)", pattern = r"^[0-9]{1,19}$", example = "7")),
    responses((status = 200, description = "The lease (a running one with its cost so far)", body = LeaseOnly)),
)]
pub async fn one(
    state: web::Data<AppState>,
    buyer: Buyer,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path).ok_or(ApiError::NotFound("unknown_lease"))?;
    let lease = find_lease(&state, &buyer.0.account, LeaseId(id)).await?;
    Ok(HttpResponse::Ok().json(LeaseOnly {
        lease: LeaseJson::from(&lease),
    }))
}

/// Ends one of the caller's leases now; the cost stops accruing.
#[utoipa::path(
    post,
    path = "/v1/leases/{id}/release",
    operation_id = "release_lease",
    tag = "leases",
    params(("id" = String, Path, description = "Lease id (digits)", pattern = r"^[0-9]{1,19}$", example = "7")),
    responses((status = 200, description = "The ended lease", body = LeaseOnly)),
)]
pub async fn release(
    state: web::Data<AppState>,
    buyer: Buyer,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = LeaseId(parse_id(&path).ok_or(ApiError::NotFound("unknown_lease"))?);
    let committed = state
        .sequencer
        .submit(Command::ReleaseLease {
            account: buyer.account().to_owned(),
            lease_id: id,
        })
        .await?;
    let events = committed.events();
    if let Some(reason) = rejection(events) {
        return Err(reason.into());
    }
    let released = events.iter().rev().find_map(|e| match e {
        Event::LeaseChanged { lease } if lease.id == id => Some(lease.clone()),
        _ => None,
    });
    let lease = match released {
        Some(lease) => lease,
        None => find_lease(&state, &buyer.0.account, id).await?,
    };
    Ok(HttpResponse::Ok().json(LeaseOnly {
        lease: LeaseJson::from(&lease),
    }))
}
