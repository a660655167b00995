//! The handoff (DESIGN sections 11 and 12): a buyer's default ssh keys, the supplier's `ready`
//! and `failed` for a lease on its block, lease tokens for model gateways, and the lease key's
//! JWKS.
//!
//! A lease is the buyer's and its supplier's only: anyone else asking about it gets 404
//! `unknown_lease`, exactly as for a lease that does not exist.

use super::caller::{Buyer, Supplier};
use super::{parse_id, rejection};
use crate::error::ApiError;
use crate::lease_token::{new_token_id, LeaseTokenClaims};
use crate::limits::LEASE_TOKEN_TTL_MAX;
use crate::state::AppState;
use crate::timestamp::Rfc3339Time;
use crate::validate;
use crate::wire::rest::LeaseJson;
use actix_web::{web, HttpResponse};
use matching_engine::{
    AccessStatus, Command, Endpoint, Event, LeaseId, LeaseReady, LeaseView, Offering, Rejection,
    TimeMs,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

/// What setting default keys can be refused for.
pub const SSH_KEYS_ERRORS: &[ApiError] = &[ApiError::InvalidSshKey(String::new())];

/// What a `ready` can be refused for.
pub const READY_ERRORS: &[ApiError] = &[
    ApiError::NotFound("unknown_lease"),
    ApiError::Rejected(Rejection::EndpointsInvalid),
];

/// What a `failed` can be refused for.
pub const FAILED_ERRORS: &[ApiError] = &[
    ApiError::NotFound("unknown_lease"),
    ApiError::Rejected(Rejection::LeaseNotProvisioning),
];

/// What minting a lease token can be refused for.
pub const TOKEN_ERRORS: &[ApiError] = &[
    ApiError::NotFound("unknown_lease"),
    ApiError::LeaseNotReady,
    ApiError::NotAModelLease,
];

/// `PUT /v1/account/ssh-keys`, and its answer.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC5k3K7KDeQvz2YfHkn5XCT+dAunPX0yMg638MMYjOo9 alice@laptop"]}))]
pub struct SshKeysBody {
    /// OpenSSH public keys (`ssh-ed25519`, `ecdsa-sha2-nistp256`, or `ssh-rsa` of at least
    /// 2048 bits), at most 8; an empty list clears them.
    #[schema(max_items = 8)]
    keys: Vec<String>,
}

/// `POST /v1/capacity/{block_id}/leases/{lease_id}/ready`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"endpoints": [{"node": "rack12-n3", "host": "10.1.12.3", "port": 22, "user": "ubuntu"}]}))]
pub struct ReadyBody {
    /// Bare-metal pools: how to reach each node.
    #[schema(max_items = 256)]
    endpoints: Option<Vec<Endpoint>>,
    /// Model pools: the inference gateway's base URL.
    #[schema(max_length = 2048, example = "https://gateway.example/v1")]
    endpoint: Option<String>,
}

/// `POST /v1/capacity/{block_id}/leases/{lease_id}/failed`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "node rack12-n3 failed its GPU health check"}))]
pub struct FailedBody {
    /// Why, for the buyer: 1..=256 bytes of text.
    #[schema(min_length = 1, max_length = 256)]
    reason: String,
}

/// One lease.
#[derive(Serialize, ToSchema)]
struct LeaseOnly {
    lease: LeaseJson,
}

/// A lease token for the model gateway.
#[derive(Serialize, ToSchema)]
struct LeaseToken {
    /// A JWT (EdDSA) for `Authorization: Bearer` at the lease's `endpoint`; verify it with
    /// `/.well-known/jwks.json`.
    token: String,
    /// When it expires: never after the lease's end (or its notice's end).
    expires_at: Rfc3339Time,
}

/// The buyer's default ssh keys, given to the leases of bids that carry none.
#[utoipa::path(
    get,
    path = "/v1/account/ssh-keys",
    operation_id = "get_ssh_keys",
    tag = "account",
    responses((status = 200, description = "The caller's default ssh public keys", body = SshKeysBody)),
)]
pub async fn get_ssh_keys(
    state: web::Data<AppState>,
    buyer: Buyer,
) -> Result<HttpResponse, ApiError> {
    let account = buyer.0.account.clone();
    let keys = state
        .sequencer
        .read(move |v| v.engine.ssh_keys_of(&account))
        .await?;
    Ok(HttpResponse::Ok().json(SshKeysBody {
        keys: keys.to_vec(),
    }))
}

/// Replaces the buyer's default ssh keys (journaled: they are public keys, never logged).
#[utoipa::path(
    put,
    path = "/v1/account/ssh-keys",
    operation_id = "set_ssh_keys",
    tag = "account",
    request_body = SshKeysBody,
    responses((status = 200, description = "The keys as stored (normalised)", body = SshKeysBody)),
)]
pub async fn put_ssh_keys(
    state: web::Data<AppState>,
    buyer: Buyer,
    body: web::Json<SshKeysBody>,
) -> Result<HttpResponse, ApiError> {
    let keys = crate::ssh_keys::parse_ssh_public_keys(&body.keys)?;
    let committed = state
        .sequencer
        .submit(Command::SetSshKeys {
            account: buyer.account().to_owned(),
            keys: keys.clone(),
        })
        .await?;
    if let Some(reason) = rejection(committed.events()) {
        return Err(reason.into());
    }
    Ok(HttpResponse::Ok().json(SshKeysBody { keys }))
}

/// The lease after a supplier's command: as its events left it, else live (a second `ready`
/// changes nothing and says nothing). Only the block's own supplier sees it.
async fn supplied_lease(
    state: &AppState,
    events: &[Event],
    supplier: &Arc<str>,
    id: LeaseId,
) -> Result<LeaseView, ApiError> {
    let changed = events.iter().find_map(|e| match e {
        Event::LeaseChanged { lease } if lease.id == id && lease.supplier == *supplier => {
            Some(LeaseView::clone(lease))
        }
        _ => None,
    });
    if let Some(lease) = changed {
        return Ok(lease);
    }
    let who = supplier.clone();
    state
        .sequencer
        .read(move |v| v.engine.lease(id).filter(|l| l.supplier == who))
        .await?
        .ok_or(ApiError::NotFound("unknown_lease"))
}

/// Submits a supplier's `ready` or `failed` and answers with the lease as it left it.
async fn answer_supplied(
    state: &AppState,
    supplier: &Supplier,
    command: Command,
    lease_id: LeaseId,
) -> Result<HttpResponse, ApiError> {
    let committed = state.sequencer.submit(command).await?;
    let events = committed.events();
    if let Some(reason) = rejection(events) {
        return Err(reason.into());
    }
    let lease = supplied_lease(state, events, &supplier.0.account, lease_id).await?;
    Ok(HttpResponse::Ok().json(LeaseOnly {
        lease: LeaseJson::from(&lease),
    }))
}

/// The path's block id and lease id; ones that cannot be ids name no lease.
fn lease_path(path: &(String, String)) -> Result<(String, LeaseId), ApiError> {
    let block_id = validate::block_id(&path.0).map_err(|_| ApiError::NotFound("unknown_lease"))?;
    let id = parse_id(&path.1).ok_or(ApiError::NotFound("unknown_lease"))?;
    Ok((block_id.to_owned(), LeaseId(id)))
}

/// The supplier hands a lease's access over: the lease is ready, and billed, from now.
/// A second `ready` changes nothing.
#[utoipa::path(
    post,
    path = "/v1/capacity/{block_id}/leases/{lease_id}/ready",
    operation_id = "lease_ready",
    tag = "capacity",
    params(
        ("block_id" = String, Path, description = "The supplier's block id", pattern = r"^[A-Za-z0-9._:-]{1,64}$", example = "rack12-night"),
        ("lease_id" = String, Path, description = "Lease id (digits)", pattern = r"^[0-9]{1,19}$", example = "7"),
    ),
    request_body = ReadyBody,
    responses((status = 200, description = "The lease, ready", body = LeaseOnly)),
)]
pub async fn ready(
    state: web::Data<AppState>,
    supplier: Supplier,
    path: web::Path<(String, String)>,
    body: web::Json<ReadyBody>,
) -> Result<HttpResponse, ApiError> {
    let (block_id, lease_id) = lease_path(&path)?;
    let body = body.into_inner();
    let endpoints = body.endpoints.unwrap_or_default();
    validate::endpoints(&endpoints)?;
    if let Some(url) = &body.endpoint {
        validate::endpoint_url(url)?;
    }
    let command = Command::LeaseReady(LeaseReady {
        supplier: supplier.account().to_owned(),
        block_id,
        lease_id,
        endpoints,
        endpoint: body.endpoint,
    });
    answer_supplied(&state, &supplier, command, lease_id).await
}

/// The supplier could not provision a lease: it ends `failed`, costs nothing, its GPUs leave
/// the block, and a persistent bid bids again.
#[utoipa::path(
    post,
    path = "/v1/capacity/{block_id}/leases/{lease_id}/failed",
    operation_id = "lease_failed",
    tag = "capacity",
    params(
        ("block_id" = String, Path, description = "The supplier's block id", pattern = r"^[A-Za-z0-9._:-]{1,64}$", example = "rack12-night"),
        ("lease_id" = String, Path, description = "Lease id (digits)", pattern = r"^[0-9]{1,19}$", example = "7"),
    ),
    request_body = FailedBody,
    responses((status = 200, description = "The lease, failed", body = LeaseOnly)),
)]
pub async fn failed(
    state: web::Data<AppState>,
    supplier: Supplier,
    path: web::Path<(String, String)>,
    body: web::Json<FailedBody>,
) -> Result<HttpResponse, ApiError> {
    let (block_id, lease_id) = lease_path(&path)?;
    validate::failure_reason(&body.reason)?;
    let command = Command::LeaseFailed {
        supplier: supplier.account().to_owned(),
        block_id,
        lease_id,
        reason: body.into_inner().reason,
    };
    answer_supplied(&state, &supplier, command, lease_id).await
}

/// Mints a lease token for a ready model lease: the gateway at its `endpoint` verifies it with
/// the JWKS and serves `tokens_per_s`. Not journaled, not logged.
#[utoipa::path(
    post,
    path = "/v1/leases/{id}/token",
    operation_id = "mint_lease_token",
    tag = "leases",
    params(("id" = String, Path, description = "Lease id (digits)", pattern = r"^[0-9]{1,19}$", example = "7")),
    responses((status = 200, description = "A lease token", body = LeaseToken)),
)]
pub async fn token(
    state: web::Data<AppState>,
    buyer: Buyer,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = LeaseId(parse_id(&path).ok_or(ApiError::NotFound("unknown_lease"))?);
    let who = buyer.0.account.clone();
    let live = state
        .sequencer
        .read(move |v| {
            let lease = v.engine.lease(id).filter(|l| l.buyer == who)?;
            let pool = v.engine.pool(&lease.pool)?.config;
            Some((lease, pool))
        })
        .await?;
    let Some((lease, pool)) = live else {
        // An ended lease of the caller's is known, and no longer usable.
        return match state.store.lease(&buyer.0.account, id).await? {
            Some(_) => Err(ApiError::LeaseNotReady),
            None => Err(ApiError::NotFound("unknown_lease")),
        };
    };
    if pool.offering != Offering::Model {
        return Err(ApiError::NotAModelLease);
    }
    if lease.access.status != AccessStatus::Ready {
        return Err(ApiError::LeaseNotReady);
    }
    let now_s = crate::timestamp::now_ms().0.max(0) as u64 / 1000;
    let lease_end = lease
        .notice_ends_at
        .unwrap_or(lease.ends_at)
        .min(lease.ends_at);
    let exp = ((lease_end.0.max(0) as u64) / 1000).min(now_s + LEASE_TOKEN_TTL_MAX.as_secs());
    if exp <= now_s {
        return Err(ApiError::LeaseNotReady);
    }
    let claims = LeaseTokenClaims {
        sub: lease.buyer.to_string(),
        lease: lease.id.0,
        pool: lease.pool.to_string(),
        gpus: lease.gpus,
        tokens_per_s: lease.gpus as u64 * pool.tokens_per_s_per_gpu as u64,
        aud: state.lease_token_audience.to_string(),
        iss: state.lease_token_issuer.to_string(),
        iat: now_s,
        exp,
        jti: new_token_id(),
    };
    let token = state
        .lease_key
        .mint(&claims)
        .map_err(|e| ApiError::Internal(format!("minting a lease token: {e}")))?;
    Ok(HttpResponse::Ok().json(LeaseToken {
        token,
        expires_at: Rfc3339Time(TimeMs(exp as i64 * 1000)),
    }))
}

/// The lease key's public half: gateways verify lease tokens with it (RFC 7517).
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    operation_id = "jwks",
    tag = "leases",
    responses((status = 200, description = "The JSON Web Key Set of the lease token key (Ed25519)", body = Object)),
)]
pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.lease_key.jwks())
}
