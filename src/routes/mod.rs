//! The REST API (DESIGN section 6): one module per resource, and the route table.
//!
//! Handlers parse and check input at the boundary (unknown fields refused, names bounded),
//! turn it into an engine [`Command`](matching_engine::Command), submit it to the sequencer,
//! and answer from the command's own events once the batch is committed. Reads of live state
//! go through the sequencer (committed state only); history comes from the store.

pub mod admin;
pub mod capacity;
pub mod health;
pub mod json;
pub mod leases;
pub mod orders;
pub mod pools;

use crate::error::{self, ApiError};
use crate::limits::{LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX, REQUEST_BODY_BYTES_MAX};
use actix_web::web;
use matching_engine::{Event, Rejection};
use serde::Deserialize;

/// Registers every route of this module, with the body and query error handlers.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(REQUEST_BODY_BYTES_MAX)
            .error_handler(error::json_error),
    )
    .app_data(web::QueryConfig::default().error_handler(error::query_error))
    .app_data(web::PathConfig::default().error_handler(error::path_error))
    .service(resource("/healthz").route(web::get().to(health::healthz)))
    .service(resource("/readyz").route(web::get().to(health::readyz)))
    .service(resource("/metrics").route(web::get().to(health::metrics)))
    .service(resource("/v1/pools").route(web::get().to(pools::list)))
    .service(resource("/v1/pools/{pool}").route(web::get().to(pools::one)))
    .service(resource("/v1/pools/{pool}/book").route(web::get().to(pools::book)))
    .service(resource("/v1/pools/{pool}/trades").route(web::get().to(pools::trades)))
    .service(resource("/v1/pools/{pool}/candles").route(web::get().to(pools::candles)))
    .service(resource("/v1/pools/{pool}/stats").route(web::get().to(pools::stats)))
    .service(resource("/v1/pools/{pool}/quote").route(web::get().to(pools::quote)))
    .service(
        resource("/v1/orders")
            .route(web::post().to(orders::place))
            .route(web::get().to(orders::list)),
    )
    .service(
        resource("/v1/orders/{id}")
            .route(web::get().to(orders::one))
            .route(web::patch().to(orders::amend))
            .route(web::delete().to(orders::cancel)),
    )
    .service(resource("/v1/leases").route(web::get().to(leases::list)))
    .service(resource("/v1/leases/{id}").route(web::get().to(leases::one)))
    .service(resource("/v1/leases/{id}/release").route(web::post().to(leases::release)))
    .service(
        resource("/v1/capacity")
            .route(web::post().to(capacity::release))
            .route(web::get().to(capacity::list)),
    )
    .service(
        resource("/v1/capacity/{block_id}")
            .route(web::get().to(capacity::one))
            .route(web::patch().to(capacity::update)),
    )
    .service(resource("/v1/capacity/{block_id}/reclaim").route(web::post().to(capacity::reclaim)))
    .service(resource("/v1/capacity/{block_id}/forecast").route(web::post().to(capacity::forecast)))
    .service(resource("/v1/admin/state-hash").route(web::get().to(admin::state_hash)))
    .service(resource("/v1/admin/pools/{pool}").route(web::put().to(admin::configure_pool)))
    .service(resource("/v1/admin/kill-switch").route(web::post().to(admin::kill_switch)))
    .service(
        resource("/v1/admin/accounts/{account}/limits").route(web::put().to(admin::account_limits)),
    );
}

/// A resource whose unsupported methods get a JSON 405 like every other error.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

/// The answer to a known path with a method it does not serve.
pub async fn method_not_allowed() -> actix_web::HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::MethodNotAllowed)
}

/// The answer to any path no route matches.
pub async fn not_found() -> actix_web::HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::NotFound("not_found"))
}

/// The engine's refusal of a command, if it refused it.
pub fn rejection(events: &[Event]) -> Option<Rejection> {
    events.iter().find_map(|e| match e {
        Event::Rejected { reason } => Some(*reason),
        _ => None,
    })
}

/// An id from a path; one that does not parse names nothing.
pub fn parse_id(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Checks a caller-chosen name: 1..=max bytes of `[A-Za-z0-9._:-]`.
pub fn check_name(value: &str, max: usize, field: &str) -> Result<(), ApiError> {
    if value.is_empty()
        || value.len() > max
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
    {
        return Err(ApiError::InvalidBody(format!(
            "{field} must be 1..={max} characters of [A-Za-z0-9._:-]"
        )));
    }
    Ok(())
}

/// `?status=&limit=&before=` of the list endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this status.
    pub status: Option<String>,
    /// Page size.
    pub limit: Option<usize>,
    /// Cursor: ids below this one (orders, leases) or block ids after it (capacity).
    #[serde(alias = "after")]
    pub before: Option<String>,
}

impl ListQuery {
    /// The page size, checked.
    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(LIST_LIMIT_DEFAULT),
            Some(n) if (1..=LIST_LIMIT_MAX).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::InvalidQuery(format!(
                "limit must be between 1 and {LIST_LIMIT_MAX}"
            ))),
        }
    }
}
