//! The API's errors and the one place that maps each of them to an HTTP status.
//!
//! Every error body is `{"error": {"code": "...", "message": "..."}}`. Engine rejections keep
//! the engine's code (`price_not_on_tick`), except that another account's order or lease is
//! indistinguishable from one that does not exist: both are 404 `unknown_order` /
//! `unknown_lease` with the same message, so an id reveals nothing about other tenants.

use crate::limits::UNAVAILABLE_RETRY_AFTER_S;
use crate::validate::Invalid;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use matching_engine::Rejection;
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// Everything a request can fail with.
#[derive(Debug)]
pub enum ApiError {
    /// The engine refused the command.
    Rejected(Rejection),
    /// The body is not valid JSON, has unknown fields, or a field has the wrong type or value.
    InvalidBody(String),
    /// A query string parameter is missing, unknown or out of range.
    InvalidQuery(String),
    /// An ssh public key is malformed, of a refused type or too weak (the message names it).
    InvalidSshKey(String),
    /// The lease is not ready yet: its access has not been handed over.
    LeaseNotReady,
    /// A lease token was asked for a bare-metal lease (they are reached over ssh).
    NotAModelLease,
    /// The body is larger than the named limit.
    BodyTooLarge,
    /// The body is not `application/json`.
    UnsupportedMediaType,
    /// Missing, malformed, expired, badly signed or otherwise unacceptable token.
    Unauthorized,
    /// A valid token whose role may not use this endpoint.
    Forbidden,
    /// No such resource (or not the caller's: the two are never told apart).
    NotFound(&'static str),
    /// The path exists but not with this method.
    MethodNotAllowed,
    /// Too many requests from this account; retry after this many seconds.
    RateLimited {
        /// Seconds until a request will be accepted again.
        retry_after_s: u64,
    },
    /// This write was not acknowledged: its commit failed or its outcome is unknown (the
    /// database did not confirm it, or this node lost leadership meanwhile).
    Unavailable,
    /// No leader is reachable to take writes (a takeover in progress, or no node can reach the
    /// database).
    NoLeader,
    /// The sequencer's queue stayed full: the server is overloaded.
    Overloaded,
    /// A read needed the database and it did not answer.
    StoreUnavailable,
    /// A bug or an unexpected failure; details are logged, not returned.
    Internal(String),
}

/// The body of every error answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

/// What went wrong.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail<'a> {
    /// The stable code clients match on.
    #[schema(value_type = ErrorCode)]
    code: &'a str,
    /// A sentence for people; it may change.
    message: String,
}

/// The HTTP status of an engine rejection (part of the one mapping).
fn rejection_status(reason: Rejection) -> StatusCode {
    use Rejection::*;
    match reason {
        UnknownPool | UnknownOrder | NotYourOrder | UnknownLease | NotYourLease | UnknownBlock => {
            StatusCode::NOT_FOUND
        }
        // The account or pool may not trade: a policy refusal, like a wrong role.
        KillSwitch => StatusCode::FORBIDDEN,
        // Conflicts with the current state: retrying after the state changes can succeed.
        LimitOrdersOpen | LimitNotional | OrderNotOpen | BlockIdTaken | WindowCannotShrink
        | ReclaimOverBlock | PoolNotEmpty | BlockClosed | LeaseNotProvisioning => {
            StatusCode::CONFLICT
        }
        // Well-formed requests whose values the market does not accept.
        PriceNotOnTick
        | PriceOutOfBand
        | GpusMustNotBeZero
        | GpusOverMax
        | MinGpusInvalid
        | DurationTooShort
        | DurationTooLong
        | MaxDurationBelowDuration
        | WindowInvalid
        | NodesDoNotMatchGpus
        | NoticeTooShort
        | ExpiresAtInvalid
        | ReclaimAtInPast
        | PoolConfigInvalid
        | NothingToChange
        | GpusNotAboveFilled
        | EndpointsInvalid => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

/// The code and message of an engine rejection; not-yours and unknown read the same.
fn rejection_code_and_message(reason: Rejection) -> (&'static str, String) {
    use Rejection::*;
    match reason {
        UnknownOrder | NotYourOrder => ("unknown_order", "no such order".to_owned()),
        UnknownLease | NotYourLease => ("unknown_lease", "no such lease".to_owned()),
        UnknownBlock => ("unknown_block", "no such capacity block".to_owned()),
        UnknownPool => ("unknown_pool", "no such pool".to_owned()),
        other => (other.as_str(), other.as_str().replace('_', " ")),
    }
}

impl ApiError {
    /// The stable error code clients match on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Rejected(reason) => rejection_code_and_message(*reason).0,
            ApiError::InvalidBody(_) => "invalid_body",
            ApiError::InvalidQuery(_) => "invalid_query",
            ApiError::InvalidSshKey(_) => "invalid_ssh_key",
            ApiError::LeaseNotReady => "lease_not_ready",
            ApiError::NotAModelLease => "not_a_model_lease",
            ApiError::BodyTooLarge => "body_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::NotFound(code) => code,
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable => "unavailable",
            ApiError::NoLeader => "no_leader",
            ApiError::Overloaded => "overloaded",
            ApiError::StoreUnavailable => "store_unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::Rejected(reason) => rejection_code_and_message(*reason).1,
            ApiError::InvalidBody(m) | ApiError::InvalidQuery(m) | ApiError::InvalidSshKey(m) => {
                m.clone()
            }
            ApiError::LeaseNotReady => {
                "the lease is not ready: its supplier has not handed access over yet, or it has \
                 ended"
                    .to_owned()
            }
            ApiError::NotAModelLease => {
                "lease tokens are for model pools; reach a bare-metal lease over ssh".to_owned()
            }
            ApiError::BodyTooLarge => format!(
                "the body is larger than {} bytes",
                crate::limits::REQUEST_BODY_BYTES_MAX
            ),
            ApiError::UnsupportedMediaType => "send Content-Type: application/json".to_owned(),
            ApiError::Unauthorized => "a valid bearer token is required".to_owned(),
            ApiError::Forbidden => "this role may not use this endpoint".to_owned(),
            ApiError::NotFound(code) => match *code {
                "unknown_order" => "no such order".to_owned(),
                "unknown_lease" => "no such lease".to_owned(),
                "unknown_block" => "no such capacity block".to_owned(),
                "unknown_pool" => "no such pool".to_owned(),
                _ => "not found".to_owned(),
            },
            ApiError::MethodNotAllowed => "this path does not serve this method".to_owned(),
            ApiError::RateLimited { retry_after_s } => {
                format!("too many requests; retry in {retry_after_s} s")
            }
            ApiError::Unavailable => {
                "the write was not acknowledged: its commit was not confirmed; retry (with the same \
                 client_order_id)"
                    .to_owned()
            }
            ApiError::NoLeader => {
                "no leader can take writes right now (a takeover is in progress or the database is \
                 unreachable); retry (with the same client_order_id)"
                    .to_owned()
            }
            ApiError::Overloaded => "the server is overloaded; retry".to_owned(),
            ApiError::StoreUnavailable => "the database is not answering; retry".to_owned(),
            ApiError::Internal(_) => "internal error".to_owned(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Internal(detail) => write!(f, "internal: {detail}"),
            other => write!(f, "{}: {}", other.code(), other.message()),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Rejected(reason) => rejection_status(*reason),
            ApiError::InvalidBody(_) | ApiError::InvalidQuery(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidSshKey(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::LeaseNotReady | ApiError::NotAModelLease => StatusCode::CONFLICT,
            ApiError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable
            | ApiError::NoLeader
            | ApiError::Overloaded
            | ApiError::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(detail) = self {
            tracing::error!(%detail, "internal error");
        }
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::RateLimited { retry_after_s } => {
                response.insert_header((header::RETRY_AFTER, retry_after_s.to_string()));
            }
            ApiError::Unavailable
            | ApiError::NoLeader
            | ApiError::Overloaded
            | ApiError::StoreUnavailable => {
                response
                    .insert_header((header::RETRY_AFTER, UNAVAILABLE_RETRY_AFTER_S.to_string()));
            }
            _ => {}
        }
        response.json(ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.message(),
            },
        })
    }
}

impl From<Rejection> for ApiError {
    fn from(reason: Rejection) -> Self {
        ApiError::Rejected(reason)
    }
}

/// A malformed field is the body's fault (`invalid_body`); the rest is the engine's refusal.
impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        match invalid {
            Invalid::Malformed(message) => ApiError::InvalidBody(message),
            Invalid::Rejected(reason) => ApiError::Rejected(reason),
        }
    }
}

/// Maps actix's JSON extractor errors (syntax, unknown fields, size, content type).
pub fn json_error(
    err: actix_web::error::JsonPayloadError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    use actix_web::error::JsonPayloadError;
    let api = match err {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            ApiError::BodyTooLarge
        }
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        JsonPayloadError::Deserialize(e) => ApiError::InvalidBody(e.to_string()),
        other => ApiError::InvalidBody(other.to_string()),
    };
    api.into()
}

/// Maps actix's query string errors.
pub fn query_error(
    err: actix_web::error::QueryPayloadError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::InvalidQuery(err.to_string()).into()
}

/// Maps actix's path errors: an id that does not parse names nothing.
pub fn path_error(
    _err: actix_web::error::PathError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::NotFound("not_found").into()
}

// ----- every code an error answer can carry (the OpenAPI document's `ErrorCode` enum) -----

/// The error code enum of the document: every code an error answer can carry.
pub struct ErrorCode;

impl PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(error_codes()))
            .description(Some(
                "Stable, snake_case; engine rejections keep the engine's code, except that \
                 another account's order or lease reads as unknown_order / unknown_lease",
            ))
            .into()
    }
}

impl ToSchema for ErrorCode {
    fn name() -> std::borrow::Cow<'static, str> {
        "ErrorCode".into()
    }
}

/// Every engine rejection, read from its derived schema (the engine's serde names).
pub fn every_rejection() -> Vec<Rejection> {
    let schema =
        serde_json::to_value(<Rejection as PartialSchema>::schema()).expect("a schema serializes");
    schema["enum"]
        .as_array()
        .expect("Rejection's schema is a string enum")
        .iter()
        .map(|name| serde_json::from_value(name.clone()).expect("each name is a Rejection"))
        .collect()
}

/// One of each error other than engine rejections.
fn other_errors() -> Vec<ApiError> {
    // The match is exhaustive: a new variant fails to compile here until it is listed below.
    let _reminder = |e: &ApiError| match e {
        ApiError::Rejected(_)
        | ApiError::InvalidBody(_)
        | ApiError::InvalidQuery(_)
        | ApiError::InvalidSshKey(_)
        | ApiError::LeaseNotReady
        | ApiError::NotAModelLease
        | ApiError::BodyTooLarge
        | ApiError::UnsupportedMediaType
        | ApiError::Unauthorized
        | ApiError::Forbidden
        | ApiError::NotFound(_)
        | ApiError::MethodNotAllowed
        | ApiError::RateLimited { .. }
        | ApiError::Unavailable
        | ApiError::NoLeader
        | ApiError::Overloaded
        | ApiError::StoreUnavailable
        | ApiError::Internal(_) => {}
    };
    vec![
        ApiError::InvalidBody(String::new()),
        ApiError::InvalidQuery(String::new()),
        ApiError::InvalidSshKey(String::new()),
        ApiError::LeaseNotReady,
        ApiError::NotAModelLease,
        ApiError::BodyTooLarge,
        ApiError::UnsupportedMediaType,
        ApiError::Unauthorized,
        ApiError::Forbidden,
        ApiError::NotFound("not_found"),
        ApiError::NotFound("unknown_order"),
        ApiError::NotFound("unknown_lease"),
        ApiError::NotFound("unknown_block"),
        ApiError::MethodNotAllowed,
        ApiError::RateLimited { retry_after_s: 1 },
        ApiError::Unavailable,
        ApiError::NoLeader,
        ApiError::Overloaded,
        ApiError::StoreUnavailable,
        ApiError::Internal(String::new()),
    ]
}

/// Every code an error answer can carry, sorted.
pub fn error_codes() -> Vec<&'static str> {
    let codes: BTreeSet<&'static str> = other_errors()
        .iter()
        .map(ApiError::code)
        .chain(
            every_rejection()
                .into_iter()
                .map(|r| ApiError::Rejected(r).code()),
        )
        .collect();
    codes.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_cover_every_rejection_and_hide_not_yours() {
        let codes = error_codes();
        assert!(codes.contains(&"price_not_on_tick"));
        assert!(codes.contains(&"unknown_order"));
        assert!(codes.contains(&"rate_limited"));
        assert!(!codes.contains(&"not_your_order"), "shown as unknown_order");
        assert!(every_rejection().contains(&Rejection::NothingToChange));
    }
}
