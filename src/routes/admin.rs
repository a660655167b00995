//! Administration: pool settings, kill switches, account limits, and the engine's state hash
//! (for checking that a restart or a replay rebuilt exactly the same state). Role `admin`.

use super::caller::Admin;
use super::rejection;
use crate::auth::is_valid_account_id;
use crate::error::ApiError;
use crate::money::{ApiPrice, Usd};
use crate::pool_spec::PoolSpec;
use crate::state::AppState;
use crate::timestamp::Rfc3339Time;
use crate::validate;
use crate::wire::rest::PoolJson;
use actix_web::{web, HttpResponse};
use matching_engine::{AccountLimits, Command, KillTarget, Rejection};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What configuring a pool can be refused for.
pub const CONFIGURE_POOL_ERRORS: &[ApiError] = &[
    ApiError::Rejected(Rejection::PoolConfigInvalid),
    ApiError::Rejected(Rejection::PoolNotEmpty),
];

/// What a kill switch can be refused for.
pub const KILL_SWITCH_ERRORS: &[ApiError] = &[ApiError::Rejected(Rejection::UnknownPool)];

/// What setting limits can be refused for: an account id that cannot be one.
pub const ACCOUNT_LIMITS_ERRORS: &[ApiError] = &[ApiError::NotFound("not_found")];

/// The committed state's hash.
#[derive(Serialize, ToSchema)]
struct StateHash {
    /// The journal sequence number it reflects.
    seq: u64,
    /// 16 hex digits.
    state_hash: String,
    /// The engine's clock.
    engine_now: Rfc3339Time,
}

/// `GET /v1/admin/state-hash`: the committed state's hash and the seq it reflects.
#[utoipa::path(
    get,
    path = "/v1/admin/state-hash",
    operation_id = "get_state_hash",
    tag = "admin",
    responses((status = 200, description = "The hash of the committed engine state", body = StateHash)),
)]
pub async fn state_hash(
    state: web::Data<AppState>,
    _admin: Admin,
) -> Result<HttpResponse, ApiError> {
    let (seq, hash, now) = state
        .sequencer
        .read(|v| (v.seq, v.engine.state_hash(), v.engine.now()))
        .await?;
    Ok(HttpResponse::Ok().json(StateHash {
        seq,
        state_hash: format!("{hash:016x}"),
        engine_now: now.into(),
    }))
}

/// The configured pool.
#[derive(Serialize, ToSchema)]
#[schema(as = AdminPoolOnly)]
struct PoolOnly {
    pool: PoolJson,
}

/// `PUT /v1/admin/pools/{pool}`: creates a pool or changes its settings.
#[utoipa::path(
    put,
    path = "/v1/admin/pools/{pool}",
    operation_id = "configure_pool",
    tag = "admin",
    params(("pool" = String, Path, description = "Pool id, `<gpu>.<region>`; must match the body's gpu and region", pattern = r"^[a-z0-9][a-z0-9.-]{0,31}\.[a-z0-9-]{1,31}$", example = "h100-sxm.us-east")),
    request_body = PoolSpec,
    responses((status = 200, description = "The pool as configured", body = PoolOnly)),
)]
pub async fn configure_pool(
    state: web::Data<AppState>,
    _admin: Admin,
    path: web::Path<String>,
    body: web::Json<PoolSpec>,
) -> Result<HttpResponse, ApiError> {
    let config = body.to_config().map_err(ApiError::InvalidBody)?;
    if *path != config.id {
        return Err(ApiError::InvalidBody(format!(
            "the path names pool {:?} but gpu and region make {:?}",
            path.as_str(),
            config.id
        )));
    }
    let id = config.id.clone();
    let committed = state
        .sequencer
        .submit(Command::ConfigurePool(config))
        .await?;
    if let Some(reason) = rejection(committed.events()) {
        return Err(reason.into());
    }
    let summary = state
        .sequencer
        .read(move |v| v.engine.pool(&id))
        .await?
        .ok_or_else(|| ApiError::Internal("a configured pool is missing".into()))?;
    Ok(HttpResponse::Ok().json(PoolOnly {
        pool: PoolJson::from(&summary),
    }))
}

/// `POST /v1/admin/kill-switch`: exactly one of `account` or `pool`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KillSwitchBody {
    /// An account to stop (its bids are cancelled, new ones refused).
    #[schema(
        pattern = r"^[A-Za-z0-9._:@-]{1,128}$",
        min_length = 1,
        max_length = 128
    )]
    account: Option<String>,
    /// A pool to halt.
    #[schema(
        pattern = r"^[a-z0-9][a-z0-9.-]{0,31}\.[a-z0-9-]{1,31}$",
        max_length = 64
    )]
    pool: Option<String>,
    /// Engage (true) or lift (false).
    engaged: bool,
}

/// A kill switch's new state.
#[derive(Serialize, ToSchema)]
struct KillSwitchJson {
    /// `account` or `pool`.
    kind: &'static str,
    id: String,
    engaged: bool,
}

/// Engages or lifts an account's or a pool's kill switch.
#[utoipa::path(
    post,
    path = "/v1/admin/kill-switch",
    operation_id = "set_kill_switch",
    tag = "admin",
    request_body = KillSwitchBody,
    responses((status = 200, description = "The switch as set", body = KillSwitchJson)),
)]
pub async fn kill_switch(
    state: web::Data<AppState>,
    _admin: Admin,
    body: web::Json<KillSwitchBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let (target, kind, id) = match (body.account, body.pool) {
        (Some(account), None) => {
            if !is_valid_account_id(&account) {
                return Err(ApiError::InvalidBody(
                    "account is not a valid account id".into(),
                ));
            }
            (KillTarget::Account(account.clone()), "account", account)
        }
        (None, Some(pool)) => {
            validate::pool(&pool)?;
            (KillTarget::Pool(pool.clone()), "pool", pool)
        }
        _ => {
            return Err(ApiError::InvalidBody(
                "give exactly one of account or pool".into(),
            ))
        }
    };
    let committed = state
        .sequencer
        .submit(Command::SetKillSwitch {
            target,
            engaged: body.engaged,
        })
        .await?;
    if let Some(reason) = rejection(committed.events()) {
        return Err(reason.into());
    }
    Ok(HttpResponse::Ok().json(KillSwitchJson {
        kind,
        id,
        engaged: body.engaged,
    }))
}

/// `PUT /v1/admin/accounts/{account}/limits`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsBody {
    /// Most resting bids.
    orders_open_max: u32,
    /// Most USD per hour committed by resting bids (price x GPUs).
    open_notional_max: ApiPrice,
}

/// An account's limits as set.
#[derive(Serialize, ToSchema)]
struct LimitsJson {
    account: String,
    orders_open_max: u32,
    open_notional_max: Usd,
}

/// Sets an account's pre-trade limits.
#[utoipa::path(
    put,
    path = "/v1/admin/accounts/{account}/limits",
    operation_id = "set_account_limits",
    tag = "admin",
    params(("account" = String, Path, description = "The account id (a token's `sub`)", pattern = r"^[A-Za-z0-9._:@-]{1,128}$", example = "acme-buyer")),
    request_body = LimitsBody,
    responses((status = 200, description = "The limits as set", body = LimitsJson)),
)]
pub async fn account_limits(
    state: web::Data<AppState>,
    _admin: Admin,
    path: web::Path<String>,
    body: web::Json<LimitsBody>,
) -> Result<HttpResponse, ApiError> {
    let account = path.into_inner();
    if !is_valid_account_id(&account) {
        return Err(ApiError::NotFound("not_found"));
    }
    let limits = AccountLimits {
        orders_open_max: body.orders_open_max,
        open_notional_max_micros: body.open_notional_max.0 .0,
    };
    let committed = state
        .sequencer
        .submit(Command::SetAccountLimits {
            account: account.clone(),
            limits,
        })
        .await?;
    if let Some(reason) = rejection(committed.events()) {
        return Err(reason.into());
    }
    Ok(HttpResponse::Ok().json(LimitsJson {
        account,
        orders_open_max: limits.orders_open_max,
        open_notional_max: Usd(limits.open_notional_max_micros),
    }))
}
