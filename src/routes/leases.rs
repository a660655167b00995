//! Leases: list, read, release early. Role `buyer`; another buyer's lease is 404.

use super::caller::Buyer;
use super::owned;
use super::{parse_id, rejection, LeaseListQuery};
use crate::error::ApiError;
use crate::state::AppState;
use crate::wire::rest::LeaseJson;
use actix_web::{web, HttpResponse};
use matching_engine::{Command, LeaseId, LeaseView};
use serde::Serialize;
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
    let (leases, next_before) =
        owned::page::<LeaseView, _>(&state, &buyer.0.account, &query).await?;
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
    let lease: LeaseView = owned::find(&state, &buyer.0.account, LeaseId(id)).await?;
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
    let lease: LeaseView = owned::after(&state, events, &buyer.0.account, id).await?;
    Ok(HttpResponse::Ok().json(LeaseOnly {
        lease: LeaseJson::from(&lease),
    }))
}
