//! The REST API (DESIGN section 6): one module per resource, and the route table.
//!
//! Handlers parse and check input at the boundary (unknown fields refused, names bounded),
//! turn it into an engine [`Command`](matching_engine::Command), submit it to the sequencer,
//! and answer from the command's own events once the batch is committed. Reads of live state
//! go through the sequencer (committed state only); history comes from the store.

pub mod admin;
pub mod caller;
pub mod capacity;
pub mod docs;
pub mod handoff;
pub mod health;
pub mod leases;
pub mod orders;
pub mod owned;
pub mod pools;
pub mod report;
pub mod websocket;

use crate::auth::Role;
use crate::error::{self, ApiError};
use crate::limits::{
    BLOCK_ID_BYTES_MAX, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX, REQUEST_BODY_BYTES_MAX,
};
pub use crate::openapi::Endpoint;
use actix_web::web;
use matching_engine::{Event, Rejection};
use serde::Deserialize;

/// An [`Endpoint`] of a handler annotated with `#[utoipa::path]`: `endpoint!(list in pools,
/// public, [READ])` or `endpoint!(place in orders, Buyer, [TOKEN, BODY, ...])`.
macro_rules! endpoint {
    ($handler:ident in $($module:ident)::+, public, [$($errors:expr),* $(,)?]) => {
        endpoint!(@build $handler in $($module)::+, None, [$($errors),*])
    };
    ($handler:ident in $($module:ident)::+, $role:ident, [$($errors:expr),* $(,)?]) => {
        endpoint!(@build $handler in $($module)::+, Some(Role::$role), [$($errors),*])
    };
    (@build $handler:ident in $($module:ident)::+, $role:expr, [$($errors:expr),*]) => {
        pastey::paste! {
            Endpoint {
                path: <$($module::)+ [<__path_ $handler>] as utoipa::Path>::path,
                methods: <$($module::)+ [<__path_ $handler>] as utoipa::Path>::methods,
                operation: <$($module::)+ [<__path_ $handler>] as utoipa::Path>::operation,
                schemas: <$($module::)+ [<__path_ $handler>] as utoipa::__dev::SchemaReferences>::schemas,
                tags: <$($module::)+ [<__path_ $handler>] as utoipa::__dev::Tags<'static>>::tags,
                route: || web::route().to($($module::)+ $handler),
                role: $role,
                errors: &[$($errors),*],
            }
        }
    };
}

/// Any endpoint: a bug or an unexpected failure.
pub const INTERNAL: &[ApiError] = &[ApiError::Internal(String::new())];
/// Endpoints that read the engine through the sequencer: it is overloaded or stopping.
pub const ENGINE_READ: &[ApiError] = &[ApiError::Overloaded, ApiError::Unavailable];
/// Endpoints that read history from the database.
pub const STORE_READ: &[ApiError] = &[ApiError::StoreUnavailable];
/// Endpoints behind a role: no valid token, the wrong role, the account's rate limit.
pub const TOKEN: &[ApiError] = &[
    ApiError::Unauthorized,
    ApiError::Forbidden,
    ApiError::RateLimited { retry_after_s: 1 },
];
/// Endpoints that take a JSON body.
pub const BODY: &[ApiError] = &[
    ApiError::InvalidBody(String::new()),
    ApiError::BodyTooLarge,
    ApiError::UnsupportedMediaType,
];
/// Endpoints that take a query string.
pub const QUERY: &[ApiError] = &[ApiError::InvalidQuery(String::new())];
/// Endpoints that write: the commit was not confirmed, no leader takes writes (a takeover), or
/// the queue is full.
pub const WRITE: &[ApiError] = &[
    ApiError::Unavailable,
    ApiError::NoLeader,
    ApiError::Overloaded,
];

/// Every endpoint the server serves besides the page's static files ([`crate::web`]): the
/// one route table, registered by [`configure`] and documented by [`crate::openapi`].
pub static ENDPOINTS: &[Endpoint] = &[
    endpoint!(healthz in health, public, []),
    endpoint!(readyz in health, public, []),
    endpoint!(cluster in health, public, [STORE_READ, INTERNAL]),
    endpoint!(metrics in health, public, []),
    endpoint!(document in docs, public, []),
    endpoint!(list in pools, public, [ENGINE_READ, INTERNAL]),
    endpoint!(one in pools, public, [pools::UNKNOWN_POOL, ENGINE_READ, INTERNAL]),
    endpoint!(book in pools, public, [QUERY, pools::UNKNOWN_POOL, ENGINE_READ, INTERNAL]),
    endpoint!(trades in pools, public, [QUERY, pools::UNKNOWN_POOL, ENGINE_READ, INTERNAL]),
    endpoint!(candles in pools, public, [QUERY, pools::UNKNOWN_POOL, ENGINE_READ, INTERNAL]),
    endpoint!(stats in pools, public, [QUERY, pools::UNKNOWN_POOL, ENGINE_READ, INTERNAL]),
    endpoint!(quote in pools, public, [QUERY, pools::QUOTE_ERRORS, ENGINE_READ, INTERNAL]),
    endpoint!(
        place in orders,
        Buyer,
        [TOKEN, BODY, orders::PLACE_ERRORS, WRITE, STORE_READ, INTERNAL]
    ),
    endpoint!(list in orders, Buyer, [TOKEN, QUERY, ENGINE_READ, STORE_READ, INTERNAL]),
    endpoint!(
        one in orders,
        Buyer,
        [TOKEN, orders::UNKNOWN_ORDER, ENGINE_READ, STORE_READ, INTERNAL]
    ),
    endpoint!(
        amend in orders,
        Buyer,
        [TOKEN, BODY, orders::AMEND_ERRORS, WRITE, STORE_READ, INTERNAL]
    ),
    endpoint!(cancel in orders, Buyer, [TOKEN, orders::CANCEL_ERRORS, WRITE, STORE_READ, INTERNAL]),
    endpoint!(list in leases, Buyer, [TOKEN, QUERY, ENGINE_READ, STORE_READ, INTERNAL]),
    endpoint!(
        one in leases,
        Buyer,
        [TOKEN, leases::UNKNOWN_LEASE, ENGINE_READ, STORE_READ, INTERNAL]
    ),
    endpoint!(
        release in leases,
        Buyer,
        [TOKEN, leases::UNKNOWN_LEASE, WRITE, STORE_READ, INTERNAL]
    ),
    endpoint!(
        release in capacity,
        Supplier,
        [TOKEN, BODY, capacity::RELEASE_ERRORS, WRITE, STORE_READ, INTERNAL]
    ),
    endpoint!(list in capacity, Supplier, [TOKEN, QUERY, ENGINE_READ, STORE_READ, INTERNAL]),
    endpoint!(
        one in capacity,
        Supplier,
        [TOKEN, capacity::UNKNOWN_BLOCK, ENGINE_READ, STORE_READ, INTERNAL]
    ),
    endpoint!(
        update in capacity,
        Supplier,
        [TOKEN, BODY, capacity::UPDATE_ERRORS, WRITE, STORE_READ, INTERNAL]
    ),
    endpoint!(
        reclaim in capacity,
        Supplier,
        [TOKEN, BODY, capacity::RECLAIM_ERRORS, WRITE, STORE_READ, INTERNAL]
    ),
    endpoint!(
        forecast in capacity,
        Supplier,
        [TOKEN, BODY, capacity::FORECAST_ERRORS, WRITE, STORE_READ, INTERNAL]
    ),
    endpoint!(
        ready in handoff,
        Supplier,
        [TOKEN, BODY, handoff::READY_ERRORS, WRITE, ENGINE_READ, INTERNAL]
    ),
    endpoint!(
        failed in handoff,
        Supplier,
        [TOKEN, BODY, handoff::FAILED_ERRORS, WRITE, ENGINE_READ, INTERNAL]
    ),
    endpoint!(
        token in handoff,
        Buyer,
        [TOKEN, handoff::TOKEN_ERRORS, ENGINE_READ, STORE_READ, INTERNAL]
    ),
    endpoint!(get_ssh_keys in handoff, Buyer, [TOKEN, ENGINE_READ, INTERNAL]),
    endpoint!(
        put_ssh_keys in handoff,
        Buyer,
        [TOKEN, BODY, handoff::SSH_KEYS_ERRORS, WRITE, INTERNAL]
    ),
    endpoint!(jwks in handoff, public, []),
    endpoint!(connect in websocket, public, [websocket::CONNECT_ERRORS]),
    endpoint!(state_hash in admin, Admin, [TOKEN, ENGINE_READ, INTERNAL]),
    endpoint!(
        report in report,
        Admin,
        [TOKEN, QUERY, report::REPORT_ERRORS, ENGINE_READ, STORE_READ, INTERNAL]
    ),
    endpoint!(
        configure_pool in admin,
        Admin,
        [TOKEN, BODY, admin::CONFIGURE_POOL_ERRORS, WRITE, ENGINE_READ, INTERNAL]
    ),
    endpoint!(
        kill_switch in admin,
        Admin,
        [TOKEN, BODY, admin::KILL_SWITCH_ERRORS, WRITE, INTERNAL]
    ),
    endpoint!(
        account_limits in admin,
        Admin,
        [TOKEN, BODY, admin::ACCOUNT_LIMITS_ERRORS, WRITE, INTERNAL]
    ),
];

/// Registers every endpoint of [`ENDPOINTS`], with the body and query error handlers. A path
/// is one resource, so a method it does not serve gets the JSON 405.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(REQUEST_BODY_BYTES_MAX)
            .error_handler(error::json_error),
    )
    .app_data(web::QueryConfig::default().error_handler(error::query_error))
    .app_data(web::PathConfig::default().error_handler(error::path_error));
    let mut paths: Vec<String> = Vec::new();
    for endpoint in ENDPOINTS {
        let path = endpoint.path();
        if !paths.contains(&path) {
            paths.push(path);
        }
    }
    for path in paths {
        let mut served = resource(&path);
        for endpoint in ENDPOINTS.iter().filter(|e| e.path() == path) {
            for method in endpoint.methods() {
                served = served.route((endpoint.route)().method(method));
            }
        }
        cfg.service(served);
    }
}

/// A resource whose unsupported methods get a JSON 405 like every other error.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

/// The answer to a known path with a method it does not serve.
pub async fn method_not_allowed() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

/// The answer to any path no route matches.
pub async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound("not_found"))
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
    crate::validate::numeric_id(text)
}

/// The shape of a caller-chosen name (`block_id`, node names): `[A-Za-z0-9._:-]`.
pub const NAME_PATTERN: &str = r"^[A-Za-z0-9._:-]+$";

/// The shape of an order or lease id: digits.
pub const ID_PATTERN: &str = r"^[0-9]{1,19}$";

/// What one list endpoint lists: its status filter and the shape of its cursor.
pub trait ListKind {
    /// The cursor, parsed.
    type Cursor;
    /// The `status` filter's values.
    const STATUSES: &'static [&'static str];
    /// What the cursor is, for messages and the document ("an order id").
    const CURSOR_IS: &'static str;
    /// The cursor's pattern and longest length, for the document.
    const CURSOR_PATTERN: &'static str;
    /// See [`ListKind::CURSOR_PATTERN`].
    const CURSOR_BYTES_MAX: usize;
    /// The cursor of this text, or `None` when it cannot be one.
    fn cursor(text: &str) -> Option<Self::Cursor>;
}

/// `GET /v1/orders`: ids below the cursor, newest first.
pub struct OrderList;
/// `GET /v1/leases`: ids below the cursor, newest first.
pub struct LeaseList;
/// `GET /v1/capacity`: block ids after the cursor.
pub struct BlockList;

impl ListKind for OrderList {
    type Cursor = u64;
    const STATUSES: &'static [&'static str] = &["open", "filled", "cancelled", "expired"];
    const CURSOR_IS: &'static str = "an order id";
    const CURSOR_PATTERN: &'static str = ID_PATTERN;
    const CURSOR_BYTES_MAX: usize = 19;
    fn cursor(text: &str) -> Option<u64> {
        parse_id(text)
    }
}

impl ListKind for LeaseList {
    type Cursor = u64;
    const STATUSES: &'static [&'static str] =
        &["active", "preempting", "preempted", "completed", "released"];
    const CURSOR_IS: &'static str = "a lease id";
    const CURSOR_PATTERN: &'static str = ID_PATTERN;
    const CURSOR_BYTES_MAX: usize = 19;
    fn cursor(text: &str) -> Option<u64> {
        parse_id(text)
    }
}

impl ListKind for BlockList {
    type Cursor = String;
    const STATUSES: &'static [&'static str] = &["pending", "open", "closed"];
    const CURSOR_IS: &'static str = "a block id";
    const CURSOR_PATTERN: &'static str = NAME_PATTERN;
    const CURSOR_BYTES_MAX: usize = BLOCK_ID_BYTES_MAX;
    fn cursor(text: &str) -> Option<String> {
        crate::validate::block_id(text).ok().map(str::to_owned)
    }
}

/// `?status=&limit=&before=` (or `after=`) of the list endpoints. The cursor is checked here,
/// in one place, as an id of the listed resource's shape, before anything reaches the store.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery<K> {
    /// Only this status.
    pub status: Option<String>,
    /// Page size.
    pub limit: Option<usize>,
    /// The cursor: the previous page's `next_before` / `next_after`.
    before: Option<String>,
    /// The same cursor under the other name (capacity pages name it `next_after`).
    after: Option<String>,
    #[serde(skip)]
    kind: std::marker::PhantomData<K>,
}

/// The query of `GET /v1/orders`.
pub type OrderListQuery = ListQuery<OrderList>;
/// The query of `GET /v1/leases`.
pub type LeaseListQuery = ListQuery<LeaseList>;
/// The query of `GET /v1/capacity`.
pub type BlockListQuery = ListQuery<BlockList>;

impl<K: ListKind> ListQuery<K> {
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

    /// The cursor (`before` or `after`, not both), checked: anything that cannot be an id of
    /// this resource (a NUL, a letter in an order id, an overlong name) is 400 `invalid_query`.
    /// The cursor's text, once checked to be a cursor of this kind.
    pub fn cursor_text(&self) -> Result<Option<&str>, ApiError> {
        self.cursor()?;
        Ok(self.before.as_deref().or(self.after.as_deref()))
    }

    /// The cursor, parsed: `before` or `after`, not both; 400 when it is not one.
    pub fn cursor(&self) -> Result<Option<K::Cursor>, ApiError> {
        let (name, text) = match (&self.before, &self.after) {
            (None, None) => return Ok(None),
            (Some(text), None) => ("before", text),
            (None, Some(text)) => ("after", text),
            (Some(_), Some(_)) => {
                return Err(ApiError::InvalidQuery(
                    "give before or after, not both (they are the same cursor)".into(),
                ))
            }
        };
        K::cursor(text)
            .map(Some)
            .ok_or_else(|| ApiError::InvalidQuery(format!("{name} must be {}", K::CURSOR_IS)))
    }
}

impl<K: ListKind> utoipa::IntoParams for ListQuery<K> {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::Required;
        let param = |name: &str, description: String, schema: ObjectBuilder| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(description))
                .schema(Some(schema))
                .build()
        };
        let cursor = || {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(K::CURSOR_PATTERN))
                .min_length(Some(1))
                .max_length(Some(K::CURSOR_BYTES_MAX))
        };
        vec![
            param(
                "status",
                "Only this status".to_owned(),
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(K::STATUSES.iter().copied())),
            ),
            param(
                "limit",
                format!("Page size (default {LIST_LIMIT_DEFAULT})"),
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1))
                    .maximum(Some(LIST_LIMIT_MAX)),
            ),
            param(
                "before",
                format!(
                    "Cursor, {}: the previous page's `next_before` / `next_after`. Ids below \
                     it (orders, leases) or block ids after it (capacity)",
                    K::CURSOR_IS
                ),
                cursor(),
            ),
            param(
                "after",
                "The same cursor as `before`, under the name capacity pages use; give one \
                 of the two, not both"
                    .to_owned(),
                cursor(),
            ),
        ]
    }
}
