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
use crate::error::{ApiError, ErrorCode};
use actix_web::http::{header, Method};
use actix_web::ResponseError;
use std::collections::{BTreeMap, BTreeSet};
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{HttpMethod, Operation, PathItem, PathsBuilder};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Ref, RefOr,
};
use utoipa::ToSchema;

/// The error body, as a schema.
type ErrorBody = crate::error::ErrorBody<'static>;

/// One endpoint: its handler, who may call it, what it can fail with, and its OpenAPI
/// operation. Path, method, parameters, bodies and success responses are read from the
/// handler's `#[utoipa::path]`, so the route actix serves and the documented one are the
/// same text.
pub struct Endpoint {
    /// The path pattern of the handler's `#[utoipa::path]`.
    pub path: fn() -> String,
    /// Its HTTP methods.
    pub methods: fn() -> Vec<HttpMethod>,
    /// Its documented operation.
    pub operation: fn() -> Operation,
    /// Adds the schemas the operation refers to.
    pub schemas: fn(&mut Vec<(String, RefOr<Schema>)>),
    /// The tags of the handler's `#[utoipa::path]` (`tag = ...`), which `Path::operation`
    /// leaves out (utoipa's `OpenApi` derive adds them; the route table does it here).
    pub tags: fn() -> Vec<&'static str>,
    /// The actix route to the handler.
    pub route: fn() -> actix_web::Route,
    /// The role a bearer token must carry; `None` when the endpoint is public.
    pub role: Option<Role>,
    /// The errors the endpoint can answer, in groups.
    pub errors: &'static [&'static [ApiError]],
}

impl Endpoint {
    /// The path pattern, `{name}` for a segment (actix and OpenAPI write patterns alike).
    pub fn path(&self) -> String {
        (self.path)()
    }

    /// The HTTP methods it is served at (one per handler here).
    pub fn methods(&self) -> Vec<Method> {
        (self.methods)()
            .into_iter()
            .map(|m| match m {
                HttpMethod::Get => Method::GET,
                HttpMethod::Post => Method::POST,
                HttpMethod::Put => Method::PUT,
                HttpMethod::Patch => Method::PATCH,
                HttpMethod::Delete => Method::DELETE,
                HttpMethod::Head => Method::HEAD,
                HttpMethod::Options => Method::OPTIONS,
                HttpMethod::Trace => Method::TRACE,
            })
            .collect()
    }

    /// The HTTP methods, as the document names them.
    pub fn documented_methods(&self) -> Vec<HttpMethod> {
        (self.methods)()
    }

    /// The documented operation, as written on the handler, with its tags.
    pub fn operation(&self) -> Operation {
        let mut operation = (self.operation)();
        let tags = (self.tags)();
        if operation.tags.is_none() && !tags.is_empty() {
            operation.tags = Some(tags.into_iter().map(str::to_owned).collect());
        }
        operation
    }

    /// Adds the schemas the operation refers to.
    pub fn schemas(&self, into: &mut Vec<(String, RefOr<Schema>)>) {
        (self.schemas)(into)
    }

    /// The error cases, flattened.
    pub fn error_cases(&self) -> impl Iterator<Item = &'static ApiError> {
        self.errors.iter().flat_map(|group| group.iter())
    }
}

/// The name of the bearer-token security scheme in the document.
pub const BEARER: &str = "bearer";

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

/// OpenAPI links: the id in a response of `from` (at these statuses, under `value`, a runtime
/// expression `$response.body#/...`) fills path parameter `parameter` of each operation in `to`.
struct LinkSpec {
    from: &'static str,
    statuses: &'static [&'static str],
    value: &'static str,
    parameter: &'static str,
    to: &'static [&'static str],
}

/// How the ids an operation answers with feed the operations on that resource: what a client
/// (or a stateful API fuzzer) does next with a new order, lease or block.
static LINKS: &[LinkSpec] = &[
    LinkSpec {
        from: "place_order",
        statuses: &["201", "200"],
        value: "$response.body#/order/id",
        parameter: "id",
        to: &["get_order", "amend_order", "cancel_order"],
    },
    LinkSpec {
        from: "place_order",
        statuses: &["201", "200"],
        value: "$response.body#/leases/0/id",
        parameter: "id",
        to: &["get_lease", "release_lease"],
    },
    LinkSpec {
        from: "amend_order",
        statuses: &["200"],
        value: "$response.body#/leases/0/id",
        parameter: "id",
        to: &["get_lease", "release_lease"],
    },
    LinkSpec {
        from: "list_orders",
        statuses: &["200"],
        value: "$response.body#/orders/0/id",
        parameter: "id",
        to: &["get_order", "amend_order", "cancel_order"],
    },
    LinkSpec {
        from: "list_leases",
        statuses: &["200"],
        value: "$response.body#/leases/0/id",
        parameter: "id",
        to: &["get_lease", "release_lease"],
    },
    LinkSpec {
        from: "get_lease",
        statuses: &["200"],
        value: "$response.body#/lease/order_id",
        parameter: "id",
        to: &["get_order"],
    },
    LinkSpec {
        from: "release_capacity",
        statuses: &["201"],
        value: "$response.body#/block/block_id",
        parameter: "block_id",
        to: &[
            "get_capacity",
            "update_capacity",
            "reclaim_capacity",
            "forecast_reclaim",
        ],
    },
    LinkSpec {
        from: "list_capacity",
        statuses: &["200"],
        value: "$response.body#/blocks/0/block_id",
        parameter: "block_id",
        to: &[
            "get_capacity",
            "update_capacity",
            "reclaim_capacity",
            "forecast_reclaim",
        ],
    },
    LinkSpec {
        from: "list_pools",
        statuses: &["200"],
        value: "$response.body#/pools/0/id",
        parameter: "pool",
        to: &["get_pool", "get_book"],
    },
    LinkSpec {
        from: "configure_pool",
        statuses: &["200"],
        value: "$response.body#/pool/id",
        parameter: "pool",
        to: &["get_pool"],
    },
];

/// A link's name: its target operation in UpperCamelCase (`get_order` -> `GetOrder`).
fn link_name(operation_id: &str) -> String {
    operation_id
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or(String::new(), |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// Adds the [`LINKS`] of this operation to its documented responses.
fn links(operation: &mut Operation) {
    let Some(id) = operation.operation_id.clone() else {
        return;
    };
    for spec in LINKS.iter().filter(|l| l.from == id) {
        for status in spec.statuses {
            let Some(RefOr::T(response)) = operation.responses.responses.get_mut(*status) else {
                continue;
            };
            for to in spec.to {
                response.links.insert(
                    link_name(to),
                    LinkBuilder::new()
                        .operation_id(*to)
                        .parameter(spec.parameter, spec.value)
                        .build()
                        .into(),
                );
            }
        }
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

/// The document of these endpoints (the route table) and the page's files.
pub fn build(endpoints: &[Endpoint]) -> OpenApi {
    let mut paths = PathsBuilder::new();
    let mut schemas: Vec<(String, RefOr<Schema>)> = Vec::new();
    for endpoint in endpoints {
        let mut operation = endpoint.operation();
        error_responses(endpoint, &mut operation);
        security(endpoint, &mut operation);
        links(&mut operation);
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
            tag(
                "leases",
                "Leases and their lease tokens (role buyer); the lease key's JWKS (public)",
            ),
            tag(
                "account",
                "The buyer's default ssh public keys (role buyer)",
            ),
            tag(
                "capacity",
                "Capacity blocks and their leases' handoff (role supplier)",
            ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_link_joins_operations_that_exist_by_a_path_parameter() {
        let document = serde_json::to_value(build(crate::routes::ENDPOINTS)).unwrap();
        let operations: Vec<&serde_json::Value> = document["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .collect();
        let find = |id: &str| {
            operations
                .iter()
                .find(|op| op["operationId"] == id)
                .unwrap_or_else(|| panic!("no operation {id}"))
        };
        for spec in LINKS {
            let from = find(spec.from);
            for status in spec.statuses {
                assert!(
                    from["responses"][*status].is_object(),
                    "{} {status}",
                    spec.from
                );
            }
            for to in spec.to {
                let takes = find(to)["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["name"] == spec.parameter && p["in"] == "path");
                assert!(takes, "{to} has no path parameter {}", spec.parameter);
            }
        }
    }

    #[test]
    fn every_operation_id_is_unique() {
        let document = serde_json::to_value(build(crate::routes::ENDPOINTS)).unwrap();
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
