//! Administration: pool settings, kill switches, account limits, and the engine's state hash
//! (for checking that a restart or a replay rebuilt exactly the same state). Role `admin`.

use super::json::PoolJson;
use super::rejection;
use crate::auth::{is_valid_account_id, Admin};
use crate::error::ApiError;
use crate::limits::POOL_ID_BYTES_MAX;
use crate::money::{ApiPrice, Usd};
use crate::pool_spec::PoolSpec;
use crate::state::AppState;
use crate::timestamp::Rfc3339Time;
use actix_web::{web, HttpResponse};
use matching_engine::{AccountLimits, Command, KillTarget, Rejection};
use serde::{Deserialize, Serialize};

#[derive(Serialize)]
struct StateHash {
    seq: u64,
    state_hash: String,
    engine_now: Rfc3339Time,
}

/// `GET /v1/admin/state-hash`: the committed state's hash and the seq it reflects.
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

#[derive(Serialize)]
struct PoolOnly {
    pool: PoolJson,
}

/// `PUT /v1/admin/pools/{pool}`: creates a pool or changes its settings.
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillSwitchBody {
    account: Option<String>,
    pool: Option<String>,
    engaged: bool,
}

#[derive(Serialize)]
struct KillSwitchJson {
    kind: &'static str,
    id: String,
    engaged: bool,
}

/// Engages or lifts an account's or a pool's kill switch.
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
            if pool.len() > POOL_ID_BYTES_MAX {
                return Err(Rejection::UnknownPool.into());
            }
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsBody {
    orders_open_max: u32,
    open_notional_max: ApiPrice,
}

#[derive(Serialize)]
struct LimitsJson {
    account: String,
    orders_open_max: u32,
    open_notional_max: Usd,
}

/// Sets an account's pre-trade limits.
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
