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
    .route("/healthz", web::get().to(health::healthz))
    .route("/readyz", web::get().to(health::readyz))
    .route("/metrics", web::get().to(health::metrics))
    .route("/v1/pools", web::get().to(pools::list))
    .route("/v1/pools/{pool}", web::get().to(pools::one))
    .route("/v1/pools/{pool}/book", web::get().to(pools::book))
    .route("/v1/pools/{pool}/trades", web::get().to(pools::trades))
    .route("/v1/pools/{pool}/candles", web::get().to(pools::candles))
    .route("/v1/pools/{pool}/stats", web::get().to(pools::stats))
    .route("/v1/pools/{pool}/quote", web::get().to(pools::quote))
    .service(
        web::resource("/v1/orders")
            .route(web::post().to(orders::place))
            .route(web::get().to(orders::list)),
    )
    .service(
        web::resource("/v1/orders/{id}")
            .route(web::get().to(orders::one))
            .route(web::patch().to(orders::amend))
            .route(web::delete().to(orders::cancel)),
    )
    .route("/v1/leases", web::get().to(leases::list))
    .route("/v1/leases/{id}", web::get().to(leases::one))
    .route("/v1/leases/{id}/release", web::post().to(leases::release))
    .service(
        web::resource("/v1/capacity")
            .route(web::post().to(capacity::release))
            .route(web::get().to(capacity::list)),
    )
    .service(
        web::resource("/v1/capacity/{block_id}")
            .route(web::get().to(capacity::one))
            .route(web::patch().to(capacity::update)),
    )
    .route(
        "/v1/capacity/{block_id}/reclaim",
        web::post().to(capacity::reclaim),
    )
    .route(
        "/v1/capacity/{block_id}/forecast",
        web::post().to(capacity::forecast),
    )
    .route("/v1/admin/state-hash", web::get().to(admin::state_hash))
    .route(
        "/v1/admin/pools/{pool}",
        web::put().to(admin::configure_pool),
    )
    .route("/v1/admin/kill-switch", web::post().to(admin::kill_switch))
    .route(
        "/v1/admin/accounts/{account}/limits",
        web::put().to(admin::account_limits),
    );
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
