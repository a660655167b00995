//! Liveness, readiness and metrics. Public.

use crate::bus::BusTask;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde::Serialize;

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

/// `GET /healthz`: the process is up and serving HTTP.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

#[derive(Serialize)]
struct Readiness {
    status: &'static str,
    database: &'static str,
    writes: &'static str,
    seq: u64,
    bus: BusReadiness,
}

#[derive(Serialize)]
struct BusReadiness {
    kind: &'static str,
    status: &'static str,
    consumer: &'static str,
    publisher: &'static str,
    lease_events: &'static str,
}

/// `GET /readyz`: 200 when the database answers and writes are accepted, 503 otherwise
/// (reads of live state still work while it says 503). A bus that is down makes the status
/// `degraded`, still 200: REST trading goes on without Redis, so a load balancer must keep
/// sending requests; `bus` says which of its tasks lost it.
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

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render() + &state.ws.stats.render() + &state.bus.status.render())
}
