//! `GET /openapi.json`: the OpenAPI 3.1 document of everything the server serves, generated
//! from the code.
//!
//! Paths, methods, parameters, request bodies and success responses come from each handler's
//! `#[utoipa::path]`; schemas from `#[derive(ToSchema)]` on the JSON types; roles and error
//! answers from the route table ([`crate::routes::ENDPOINTS`]), which is also what actix
//! registers. An error answer is documented per status, with the codes the endpoint can return
//! under it (`x-error-codes`), and each status comes from the one mapping in [`crate::error`],
//! so the document cannot claim a status the server would not send for that code.

use crate::auth::Role;
use crate::error::ApiError;
use crate::routes::{Endpoint, ENDPOINTS};
use actix_web::http::header;
use actix_web::{HttpResponse, ResponseError};
use matching_engine::Rejection;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{HttpMethod, Operation, PathItem, PathsBuilder};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Ref, RefOr,
};
use utoipa::{PartialSchema, ToSchema};

/// The error body, as a schema.
type ErrorBody = crate::error::ErrorBody<'static>;

/// The name of the bearer-token security scheme in the document.
pub const BEARER: &str = "bearer";

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
        | ApiError::BodyTooLarge
        | ApiError::UnsupportedMediaType
        | ApiError::Unauthorized
        | ApiError::Forbidden
        | ApiError::NotFound(_)
        | ApiError::MethodNotAllowed
        | ApiError::RateLimited { .. }
        | ApiError::Unavailable
        | ApiError::Overloaded
        | ApiError::StoreUnavailable
        | ApiError::Internal(_) => {}
    };
    vec![
        ApiError::InvalidBody(String::new()),
        ApiError::InvalidQuery(String::new()),
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

/// The error responses of an endpoint: one per status, listing its codes.
fn error_responses(endpoint: &Endpoint, operation: &mut Operation) {
    let mut by_status: BTreeMap<u16, BTreeSet<&'static str>> = BTreeMap::new();
    for error in endpoint.error_cases() {
        by_status
            .entry(error.status_code().as_u16())
            .or_default()
            .insert(error.code());
    }
    for (status, codes) in by_status {
        let listed = codes
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut response = ResponseBuilder::new()
            .description(format!("Error; `error.code` is one of {listed}"))
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                    .build(),
            )
            .extensions(Some(
                ExtensionsBuilder::new()
                    .add("x-error-codes", serde_json::json!(codes))
                    .build(),
            ));
        let header_of = |description: &str| {
            HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .description(Some(description))
                .build()
        };
        match status {
            401 => {
                response = response.header(header::WWW_AUTHENTICATE.as_str(), header_of("`Bearer`"))
            }
            429 | 503 => {
                response = response.header(
                    header::RETRY_AFTER.as_str(),
                    header_of("Seconds to wait before retrying"),
                )
            }
            _ => {}
        }
        operation
            .responses
            .responses
            .insert(status.to_string(), response.build().into());
    }
}

/// The security requirement of an endpoint: its role, noted as the requirement's role list.
fn security(endpoint: &Endpoint, operation: &mut Operation) {
    if operation.security.is_some() {
        return; // Written on the handler (the WebSocket's optional token).
    }
    match endpoint.role {
        Some(role) => {
            let role = role_name(role);
            operation.security = Some(vec![SecurityRequirement::new(BEARER, [role])]);
            let note = format!("Role: `{role}` (bearer JWT).");
            operation.description = Some(match operation.description.take() {
                Some(text) => format!("{text}\n\n{note}"),
                None => note,
            });
        }
        // Public: an empty requirement list overrides nothing and reads as "no token needed".
        None => operation.security = Some(Vec::new()),
    }
}

/// A role as tokens spell it.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Buyer => "buyer",
        Role::Supplier => "supplier",
        Role::Viewer => "viewer",
        Role::Admin => "admin",
    }
}

/// The trader page's files, served at these paths by [`crate::web`].
fn page_paths() -> Vec<(String, PathItem)> {
    crate::web::ASSETS
        .iter()
        .map(|asset| {
            let operation = |summary: &str| {
                let mut operation = Operation::new();
                operation.operation_id = Some(format!(
                    "{}_{}",
                    summary,
                    match asset.path.trim_start_matches('/') {
                        "" => "root",
                        file => file,
                    }
                    .replace('.', "_")
                ));
                operation.summary = Some(format!("{summary} {} (the trader page)", asset.path));
                operation.tags = Some(vec!["page".to_owned()]);
                operation.security = Some(Vec::new());
                operation.responses.responses.insert(
                    "200".to_owned(),
                    ResponseBuilder::new()
                        .description("The embedded file")
                        .content(
                            asset.content_type,
                            ContentBuilder::new()
                                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                                .build(),
                        )
                        .build()
                        .into(),
                );
                operation
            };
            let mut item = PathItem::new(HttpMethod::Get, operation("get"));
            item.merge_operations(PathItem::new(HttpMethod::Head, operation("head")));
            (asset.path.to_owned(), item)
        })
        .collect()
}

/// The document, built from the route table.
pub fn build() -> OpenApi {
    let mut paths = PathsBuilder::new();
    let mut schemas: Vec<(String, RefOr<Schema>)> = Vec::new();
    for endpoint in ENDPOINTS {
        let mut operation = endpoint.operation();
        error_responses(endpoint, &mut operation);
        security(endpoint, &mut operation);
        paths = paths.path(
            endpoint.path(),
            PathItem::from_http_methods(endpoint.documented_methods(), operation),
        );
        endpoint.schemas(&mut schemas);
    }
    for (path, item) in page_paths() {
        paths = paths.path(path, item);
    }
    let mut components = ComponentsBuilder::new()
        .schema_from::<ErrorBody>()
        .schema_from::<ErrorCode>()
        .security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT with claims sub (the account), role (buyer, supplier, viewer or \
                         admin), iss, aud, exp and iat. A missing or bad token is 401, a wrong \
                         role 403. Each operation lists the role it needs.",
                    ))
                    .build(),
            ),
        );
    let mut named: BTreeMap<String, RefOr<Schema>> = BTreeMap::new();
    ErrorBody::schemas(&mut schemas);
    for (name, schema) in schemas {
        named.entry(name).or_insert(schema);
    }
    for (name, schema) in named {
        components = components.schema(name, schema);
    }
    let tag = |name: &str, description: &str| {
        TagBuilder::new()
            .name(name)
            .description(Some(description))
            .build()
    };
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("offpeak")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "A spot market for idle GPU-hours. Prices are USD per GPU-hour as decimal \
                     strings, ids are strings, times are RFC 3339. Every error is \
                     {\"error\": {\"code\", \"message\"}}.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components.build()))
        .tags(Some([
            tag(
                "market",
                "Public market data: pools, book, trades, candles, stats, quotes",
            ),
            tag("orders", "Bids (role buyer)"),
            tag("leases", "Leases (role buyer)"),
            tag("capacity", "Capacity blocks (role supplier)"),
            tag(
                "admin",
                "Pools, kill switches, limits, state hash (role admin)",
            ),
            tag("feed", "The WebSocket feed"),
            tag("operations", "Health, readiness, metrics and this document"),
            tag("page", "The trader page's static files"),
        ]))
        .build()
}

/// The document as JSON, built once: it depends on the code only.
fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| build().to_json().expect("the OpenAPI document serializes"))
}

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "operations",
    responses((
        status = 200,
        description = "The OpenAPI 3.1 document of every endpoint",
        content_type = "application/json",
        body = Object,
    )),
)]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(json())
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

    #[test]
    fn every_operation_id_is_unique() {
        let document = serde_json::to_value(build()).unwrap();
        let mut seen = BTreeSet::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let id = operation["operationId"].as_str().unwrap_or_else(|| {
                    panic!("{method} {path} has no operationId");
                });
                assert!(seen.insert(id.to_owned()), "{id} twice");
            }
        }
    }
}
