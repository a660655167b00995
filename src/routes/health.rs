//! Liveness, readiness and metrics. Public.

use crate::bus::BusTask;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

/// Liveness.
#[derive(Serialize, ToSchema)]
struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    status: &'static str,
}

/// `GET /healthz`: the process is up and serving HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "operations",
    responses((status = 200, description = "The process is up", body = Health)),
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// Readiness: the database, writes and the bus.
#[derive(Serialize, ToSchema)]
struct Readiness {
    /// `ready`, `degraded` (the bus is down; trading goes on) or `not_ready`.
    #[schema(example = "ready")]
    status: &'static str,
    /// `up` or `down`.
    database: &'static str,
    /// `accepting` or `refused`.
    writes: &'static str,
    /// The last committed journal sequence number.
    seq: u64,
    bus: BusReadiness,
}

/// The bus's tasks.
#[derive(Serialize, ToSchema)]
struct BusReadiness {
    /// `redis` or `memory`.
    kind: &'static str,
    /// `up` or `degraded`.
    status: &'static str,
    /// `up` or `down`, each.
    consumer: &'static str,
    publisher: &'static str,
    lease_events: &'static str,
}

/// `GET /readyz`: 200 when the database answers and writes are accepted, 503 otherwise
/// (reads of live state still work while it says 503). A bus that is down makes the status
/// `degraded`, still 200: REST trading goes on without Redis, so a load balancer must keep
/// sending requests; `bus` says which of its tasks lost it.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "operations",
    responses(
        (status = 200, description = "The database answers and writes are accepted", body = Readiness),
        (status = 503, description = "The database is down or writes are refused (reads of live state still work)", body = Readiness),
    ),
)]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let database_up = state.store.ping().await.is_ok();
    let writable = state.sequencer.writable();
    let bus = &state.bus.status;
    let up = |task| if bus.is_up(task) { "up" } else { "down" };
    let bus_up = bus.all_up();
    let body = Readiness {
        status: match (database_up && writable, bus_up) {
            (true, true) => "ready",
            (true, false) => "degraded",
            (false, _) => "not_ready",
        },
        database: if database_up { "up" } else { "down" },
        writes: if writable { "accepting" } else { "refused" },
        seq: state.sequencer.last_seq(),
        bus: BusReadiness {
            kind: state.bus.bus.kind(),
            status: if bus_up { "up" } else { "degraded" },
            consumer: up(BusTask::Consumer),
            publisher: up(BusTask::Publisher),
            lease_events: up(BusTask::LeaseEvents),
        },
    };
    if database_up && writable {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// `GET /metrics`: Prometheus text format (version 0.0.4).
///
/// Per-pool gauges are read from the committed engine now; if the sequencer cannot answer in
/// time, the scrape still succeeds with the gauges it read last (a scrape must not fail when
/// the server is busiest). The hub's and the bus's series are read from them in the same
/// encoding of the one registry.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    responses((
        status = 200,
        description = "Every series in the Prometheus text exposition format, version 0.0.4",
        content_type = "text/plain; version=0.0.4; charset=utf-8",
        body = String,
    )),
)]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let pools = state
        .sequencer
        .read(|v| {
            v.engine
                .pools()
                .into_iter()
                .map(|pool| {
                    let resting_bids = v
                        .engine
                        .depth(&pool.config.id, usize::MAX)
                        .map_or(0, |d| d.bids.iter().map(|l| u64::from(l.orders)).sum());
                    (pool, resting_bids)
                })
                .collect::<Vec<_>>()
        })
        .await;
    match pools {
        Ok(pools) => state.metrics.set_pools(&pools),
        Err(e) => tracing::debug!(error = %e, "metrics: pool gauges not refreshed"),
    }
    HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(state.metrics.render())
}
