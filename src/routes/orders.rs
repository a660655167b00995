//! Bids: place (idempotent by `client_order_id`), list, read, amend, cancel. Role `buyer`.
//!
//! Another account's order is answered exactly like a missing one (404 `unknown_order`).

use super::json::{LeaseJson, OrderJson};
use super::{parse_id, rejection, ListQuery};
use crate::auth::Buyer;
use crate::error::ApiError;
use crate::limits::{CLIENT_ORDER_ID_BYTES_MAX, POOL_ID_BYTES_MAX};
use crate::money::ApiPrice;
use crate::state::AppState;
use crate::store::{codes, ListFilter};
use crate::timestamp::Rfc3339Time;
use actix_web::{web, HttpResponse};
use matching_engine::{
    AmendBid, Command, Event, OrderId, OrderStatus, OrderView, PlaceBid, Rejection, TimeInForce,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// `POST /v1/orders`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderBody {
    pool: String,
    gpus: u32,
    price: ApiPrice,
    duration_s: u32,
    max_duration_s: Option<u32>,
    min_gpus: Option<u32>,
    tif: Option<TimeInForce>,
    expires_at: Option<Rfc3339Time>,
    persistent: Option<bool>,
    client_order_id: Option<String>,
}

/// `PATCH /v1/orders/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmendOrderBody {
    price: Option<ApiPrice>,
    gpus: Option<u32>,
}

#[derive(Serialize)]
struct OrderWithLeases {
    order: OrderJson,
    leases: Vec<LeaseJson>,
}

#[derive(Serialize)]
struct OrderOnly {
    order: OrderJson,
}

#[derive(Serialize)]
struct OrderPage {
    orders: Vec<OrderJson>,
    next_before: Option<String>,
}

fn check_client_order_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty()
        || id.len() > CLIENT_ORDER_ID_BYTES_MAX
        || !id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::InvalidBody(format!(
            "client_order_id must be 1..={CLIENT_ORDER_ID_BYTES_MAX} printable ASCII characters"
        )));
    }
    Ok(())
}

/// The latest view of `id` among a command's events.
fn order_in(events: &[Event], id: OrderId) -> Option<&OrderView> {
    events.iter().rev().find_map(|e| match e {
        Event::BidAccepted { order } | Event::OrderChanged { order } if order.id == id => {
            Some(order)
        }
        _ => None,
    })
}

/// The leases a command opened for `id`.
fn leases_opened(events: &[Event], id: OrderId) -> Vec<LeaseJson> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::LeaseOpened { lease } if lease.order_id == id => Some(LeaseJson::from(lease)),
            _ => None,
        })
        .collect()
}

/// One of `account`'s orders: live from the engine, else from history.
pub async fn find_order(
    state: &AppState,
    account: &Arc<str>,
    id: OrderId,
) -> Result<OrderView, ApiError> {
    let owner = account.clone();
    let live = state
        .sequencer
        .read(move |v| v.engine.order(id).filter(|o| o.account == owner))
        .await?;
    match live {
        Some(order) => Ok(order),
        None => state
            .store
            .order(account, id)
            .await?
            .ok_or(ApiError::NotFound("unknown_order")),
    }
}

/// Places a bid. 201 with the order and the leases it got at once; 200 with the first result
/// when the `client_order_id` was used before.
pub async fn place(
    state: web::Data<AppState>,
    buyer: Buyer,
    body: web::Json<PlaceOrderBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if body.pool.len() > POOL_ID_BYTES_MAX {
        return Err(ApiError::Rejected(Rejection::UnknownPool));
    }
    if let Some(id) = &body.client_order_id {
        check_client_order_id(id)?;
    }
    let account = buyer.0.account.clone();
    let command = Command::PlaceBid(PlaceBid {
        account: account.to_string(),
        pool: body.pool,
        gpus: body.gpus,
        min_gpus: body.min_gpus,
        price: body.price.0,
        duration_s: body.duration_s,
        max_duration_s: body.max_duration_s,
        tif: body.tif.unwrap_or_default(),
        expires_at: body.expires_at.map(|t| t.0),
        persistent: body.persistent.unwrap_or(false),
        client_order_id: body.client_order_id,
    });
    let committed = state.sequencer.submit(command).await?;
    let events = committed.events();
    if let Some(reason) = rejection(events) {
        return Err(reason.into());
    }
    let duplicate = events.iter().find_map(|e| match e {
        Event::DuplicateClientOrderId { order_id } => Some(*order_id),
        _ => None,
    });
    if let Some(id) = duplicate {
        let order = find_order(&state, &account, id).await?;
        let leases = state.store.leases_of_order(&account, id).await?;
        return Ok(HttpResponse::Ok().json(OrderWithLeases {
            order: OrderJson::from(&order),
            leases: leases.iter().map(LeaseJson::from).collect(),
        }));
    }
    let accepted = events.iter().find_map(|e| match e {
        Event::BidAccepted { order } if order.account == account => Some(order.id),
        _ => None,
    });
    let Some(id) = accepted else {
        return Err(ApiError::Internal(
            "the engine neither accepted nor rejected a bid".into(),
        ));
    };
    let order = order_in(events, id)
        .ok_or_else(|| ApiError::Internal("accepted bid has no view".into()))?;
    Ok(HttpResponse::Created().json(OrderWithLeases {
        order: OrderJson::from(order),
        leases: leases_opened(events, id),
    }))
}

/// Lists the caller's orders, newest first. `status=open` is served from live state.
pub async fn list(
    state: web::Data<AppState>,
    buyer: Buyer,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit()?;
    let status = match query.status.as_deref() {
        None => None,
        Some(code) => Some(codes::parse_order_status(code).ok_or_else(|| {
            ApiError::InvalidQuery("status must be open, filled, cancelled or expired".into())
        })?),
    };
    let before = match query.before.as_deref() {
        None => None,
        Some(text) => Some(
            parse_id(text)
                .ok_or_else(|| ApiError::InvalidQuery("before must be an order id".into()))?,
        ),
    };
    let account = buyer.0.account.clone();
    let owner = account.clone();
    let orders: Vec<OrderView> = if status == Some(OrderStatus::Open) {
        let mut live = state
            .sequencer
            .read(move |v| v.engine.orders_of(&owner))
            .await?;
        live.retain(|o| o.status == OrderStatus::Open && before.is_none_or(|b| o.id.0 < b));
        live.sort_unstable_by_key(|x| std::cmp::Reverse(x.id));
        live.truncate(limit);
        live
    } else {
        let filter = ListFilter {
            status: status.map(|s| codes::order_status(s).to_owned()),
            cursor: before.map(|b| b.to_string()),
            limit,
        };
        let mut stored = state.store.orders(&account, &filter).await?;
        // Live views are at least as new as the rows just read.
        let live = state
            .sequencer
            .read(move |v| v.engine.orders_of(&owner))
            .await?;
        for order in &mut stored {
            if let Some(fresh) = live.iter().find(|o| o.id == order.id) {
                *order = fresh.clone();
            }
        }
        stored
    };
    let next_before = (orders.len() == limit)
        .then(|| orders.last().map(|o| o.id.to_string()))
        .flatten();
    Ok(HttpResponse::Ok().json(OrderPage {
        orders: orders.iter().map(OrderJson::from).collect(),
        next_before,
    }))
}

/// One of the caller's orders.
pub async fn one(
    state: web::Data<AppState>,
    buyer: Buyer,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path).ok_or(ApiError::NotFound("unknown_order"))?;
    let order = find_order(&state, &buyer.0.account, OrderId(id)).await?;
    Ok(HttpResponse::Ok().json(OrderOnly {
        order: OrderJson::from(&order),
    }))
}

/// Amends a resting bid's price and/or GPUs; may trade at once.
pub async fn amend(
    state: web::Data<AppState>,
    buyer: Buyer,
    path: web::Path<String>,
    body: web::Json<AmendOrderBody>,
) -> Result<HttpResponse, ApiError> {
    let id = OrderId(parse_id(&path).ok_or(ApiError::NotFound("unknown_order"))?);
    let committed = state
        .sequencer
        .submit(Command::AmendBid(AmendBid {
            account: buyer.account().to_owned(),
            order_id: id,
            price: body.price.map(|p| p.0),
            gpus: body.gpus,
        }))
        .await?;
    let events = committed.events();
    if let Some(reason) = rejection(events) {
        return Err(reason.into());
    }
    let order = match order_in(events, id) {
        Some(order) => order.clone(),
        None => find_order(&state, &buyer.0.account, id).await?,
    };
    Ok(HttpResponse::Ok().json(OrderWithLeases {
        order: OrderJson::from(&order),
        leases: leases_opened(events, id),
    }))
}

/// Cancels a bid (a persistent one stops re-bidding; its running leases continue).
pub async fn cancel(
    state: web::Data<AppState>,
    buyer: Buyer,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = OrderId(parse_id(&path).ok_or(ApiError::NotFound("unknown_order"))?);
    let committed = state
        .sequencer
        .submit(Command::CancelBid {
            account: buyer.account().to_owned(),
            order_id: id,
        })
        .await?;
    let events = committed.events();
    if let Some(reason) = rejection(events) {
        return Err(reason.into());
    }
    let order = match order_in(events, id) {
        Some(order) => order.clone(),
        None => find_order(&state, &buyer.0.account, id).await?,
    };
    Ok(HttpResponse::Ok().json(OrderOnly {
        order: OrderJson::from(&order),
    }))
}
