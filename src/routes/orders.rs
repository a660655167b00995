//! Bids: place (idempotent by `client_order_id`), list, read, amend, cancel. Role `buyer`.
//!
//! Another account's order is answered exactly like a missing one (404 `unknown_order`).

use super::caller::Buyer;
use super::owned::{self, Owned};
use super::{parse_id, rejection, OrderListQuery};
use crate::error::ApiError;
use crate::money::ApiPrice;
use crate::state::AppState;
use crate::timestamp::Rfc3339Time;
use crate::validate;
use crate::wire::rest::{LeaseJson, OrderJson};
use actix_web::{web, HttpResponse};
use matching_engine::{
    AmendBid, Command, Event, OrderId, OrderView, PlaceBid, Rejection, TimeInForce,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An order that does not exist or is another account's.
pub const UNKNOWN_ORDER: &[ApiError] = &[ApiError::NotFound("unknown_order")];

/// What placing a bid can be refused for.
pub const PLACE_ERRORS: &[ApiError] = &[
    ApiError::Rejected(Rejection::UnknownPool),
    ApiError::Rejected(Rejection::PriceNotOnTick),
    ApiError::Rejected(Rejection::PriceOutOfBand),
    ApiError::Rejected(Rejection::GpusMustNotBeZero),
    ApiError::Rejected(Rejection::GpusOverMax),
    ApiError::Rejected(Rejection::MinGpusInvalid),
    ApiError::Rejected(Rejection::DurationTooShort),
    ApiError::Rejected(Rejection::DurationTooLong),
    ApiError::Rejected(Rejection::MaxDurationBelowDuration),
    ApiError::Rejected(Rejection::ExpiresAtInvalid),
    ApiError::Rejected(Rejection::KillSwitch),
    ApiError::Rejected(Rejection::LimitOrdersOpen),
    ApiError::Rejected(Rejection::LimitNotional),
    ApiError::InvalidSshKey(String::new()),
];

/// What amending a bid can be refused for.
pub const AMEND_ERRORS: &[ApiError] = &[
    ApiError::Rejected(Rejection::UnknownOrder),
    ApiError::Rejected(Rejection::OrderNotOpen),
    ApiError::Rejected(Rejection::PriceNotOnTick),
    ApiError::Rejected(Rejection::PriceOutOfBand),
    ApiError::Rejected(Rejection::GpusMustNotBeZero),
    ApiError::Rejected(Rejection::GpusOverMax),
    ApiError::Rejected(Rejection::GpusNotAboveFilled),
    ApiError::Rejected(Rejection::KillSwitch),
    ApiError::Rejected(Rejection::LimitNotional),
    ApiError::Rejected(Rejection::NothingToChange),
];

/// What cancelling a bid can be refused for.
pub const CANCEL_ERRORS: &[ApiError] = &[
    ApiError::Rejected(Rejection::UnknownOrder),
    ApiError::Rejected(Rejection::OrderNotOpen),
];

/// `POST /v1/orders`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"pool": "h100-sxm.us-east", "gpus": 2, "price": "2.50", "duration_s": 3600}))]
pub struct PlaceOrderBody {
    /// The pool, `<gpu>.<region>`.
    #[schema(
        pattern = r"^[a-z0-9][a-z0-9.-]{0,31}\.[a-z0-9-]{1,31}$",
        max_length = 64,
        example = "h100-sxm.us-east"
    )]
    pool: String,
    /// GPUs wanted, at most the pool's `gpus_per_order_max`.
    #[schema(minimum = 1, maximum = 1000000)]
    gpus: u32,
    /// The most this bid pays per GPU-hour.
    price: ApiPrice,
    /// Lease length needed, in seconds, within the pool's `duration_min_s..=duration_max_s`.
    #[schema(minimum = 1)]
    duration_s: u32,
    /// The longest lease accepted (default `duration_s`).
    #[schema(minimum = 1)]
    max_duration_s: Option<u32>,
    /// The fewest GPUs accepted in one fill (default `gpus`), at most `gpus`.
    #[schema(minimum = 1, maximum = 1000000)]
    min_gpus: Option<u32>,
    /// Default `gtc`.
    tif: Option<TimeInForce>,
    /// Required for `gtd`, refused otherwise.
    expires_at: Option<Rfc3339Time>,
    /// Re-bid for the lost GPUs when a lease is preempted.
    persistent: Option<bool>,
    /// Idempotency key: a second bid with the same key returns the first (200). Printable
    /// ASCII (no space), 1..=64 characters.
    #[schema(pattern = r"^[!-~]{1,64}$", min_length = 1, max_length = 64)]
    client_order_id: Option<String>,
    /// OpenSSH public keys for the leases' machines (`ssh-ed25519`, `ecdsa-sha2-nistp256`, or
    /// `ssh-rsa` of at least 2048 bits); absent means the account's default keys
    /// (`PUT /v1/account/ssh-keys`). Ignored by model pools.
    #[schema(max_items = 8, example = json!(["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC5k3K7KDeQvz2YfHkn5XCT+dAunPX0yMg638MMYjOo9 alice@laptop"]))]
    ssh_public_keys: Option<Vec<String>>,
}

/// `PATCH /v1/orders/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"price": "2.60"}))]
pub struct AmendOrderBody {
    /// A new price (the bid loses time priority if it changes).
    price: Option<ApiPrice>,
    /// The new total GPUs (filled + remaining); it must be above the GPUs already filled
    /// (`gpus_not_above_filled`). A decrease at the same price keeps time priority.
    gpus: Option<u32>,
}

/// An order and the leases a command opened for it.
#[derive(Serialize, ToSchema)]
struct OrderWithLeases {
    order: OrderJson,
    leases: Vec<LeaseJson>,
}

/// One order.
#[derive(Serialize, ToSchema)]
struct OrderOnly {
    order: OrderJson,
}

/// A page of orders, newest first.
#[derive(Serialize, ToSchema)]
struct OrderPage {
    orders: Vec<OrderJson>,
    /// Pass as `before` for the next page; absent on the last.
    next_before: Option<String>,
}

/// The leases a command opened for `id`.
fn leases_opened(events: &[Event], id: OrderId) -> Vec<LeaseJson> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::LeaseOpened { lease } if lease.order_id == id => Some(LeaseJson::from(&**lease)),
            _ => None,
        })
        .collect()
}

/// Places a bid. 201 with the order and the leases it got at once; 200 with the first result
/// when the `client_order_id` was used before.
#[utoipa::path(
    post,
    path = "/v1/orders",
    operation_id = "place_order",
    tag = "orders",
    request_body = PlaceOrderBody,
    responses(
        (status = 201, description = "Placed; the leases it got at once", body = OrderWithLeases),
        (status = 200, description = "This client_order_id was used before: the first bid and its leases", body = OrderWithLeases),
    ),
)]
pub async fn place(
    state: web::Data<AppState>,
    buyer: Buyer,
    body: web::Json<PlaceOrderBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    validate::pool(&body.pool)?;
    if let Some(id) = &body.client_order_id {
        validate::client_order_id(id)?;
    }
    let ssh_public_keys = match &body.ssh_public_keys {
        Some(keys) => crate::ssh_keys::parse_ssh_public_keys(keys)?,
        None => Vec::new(),
    };
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
        ssh_public_keys,
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
        let order: OrderView = owned::find(&state, &account, id).await?;
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
    let order = OrderView::in_events(events, &account, &id)
        .ok_or_else(|| ApiError::Internal("accepted bid has no view".into()))?;
    Ok(HttpResponse::Created().json(OrderWithLeases {
        order: OrderJson::from(order),
        leases: leases_opened(events, id),
    }))
}

/// Lists the caller's orders, newest first. `status=open` is served from live state.
#[utoipa::path(
    get,
    path = "/v1/orders",
    operation_id = "list_orders",
    tag = "orders",
    params(super::OrderListQuery),
    responses((status = 200, description = "The caller's orders, newest first", body = OrderPage)),
)]
pub async fn list(
    state: web::Data<AppState>,
    buyer: Buyer,
    query: web::Query<OrderListQuery>,
) -> Result<HttpResponse, ApiError> {
    let (orders, next_before) =
        owned::page::<OrderView, _>(&state, &buyer.0.account, &query).await?;
    Ok(HttpResponse::Ok().json(OrderPage {
        orders: orders.iter().map(OrderJson::from).collect(),
        next_before,
    }))
}

/// One of the caller's orders.
#[utoipa::path(
    get,
    path = "/v1/orders/{id}",
    operation_id = "get_order",
    tag = "orders",
    params(("id" = String, Path, description = "Order id (digits)", pattern = r"^[0-9]{1,19}$", example = "42")),
    responses((status = 200, description = "The order", body = OrderOnly)),
)]
pub async fn one(
    state: web::Data<AppState>,
    buyer: Buyer,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path).ok_or(ApiError::NotFound("unknown_order"))?;
    let order: OrderView = owned::find(&state, &buyer.0.account, OrderId(id)).await?;
    Ok(HttpResponse::Ok().json(OrderOnly {
        order: OrderJson::from(&order),
    }))
}

/// Amends a resting bid's price and/or GPUs; may trade at once.
#[utoipa::path(
    patch,
    path = "/v1/orders/{id}",
    operation_id = "amend_order",
    tag = "orders",
    params(("id" = String, Path, description = "Order id (digits)", pattern = r"^[0-9]{1,19}$", example = "42")),
    request_body = AmendOrderBody,
    responses((status = 200, description = "The order after the amend, and the leases it opened", body = OrderWithLeases)),
)]
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
    let order: OrderView = owned::after(&state, events, &buyer.0.account, id).await?;
    Ok(HttpResponse::Ok().json(OrderWithLeases {
        order: OrderJson::from(&order),
        leases: leases_opened(events, id),
    }))
}

/// Cancels a bid (a persistent one stops re-bidding; its running leases continue).
#[utoipa::path(
    delete,
    path = "/v1/orders/{id}",
    operation_id = "cancel_order",
    tag = "orders",
    params(("id" = String, Path, description = "Order id (digits)", pattern = r"^[0-9]{1,19}$", example = "42")),
    responses((status = 200, description = "The cancelled order", body = OrderOnly)),
)]
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
    let order: OrderView = owned::after(&state, events, &buyer.0.account, id).await?;
    Ok(HttpResponse::Ok().json(OrderOnly {
        order: OrderJson::from(&order),
    }))
}
