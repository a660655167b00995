//! Liveness, readiness and metrics. Public.

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
}

/// `GET /readyz`: 200 when the database answers and writes are accepted, 503 otherwise
/// (reads of live state still work while it says 503).
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let database_up = state.store.ping().await.is_ok();
    let writable = state.sequencer.writable();
    let body = Readiness {
        status: if database_up && writable {
            "ready"
        } else {
            "not_ready"
        },
        database: if database_up { "up" } else { "down" },
        writes: if writable { "accepting" } else { "refused" },
        seq: state.sequencer.last_seq(),
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
        .body(state.metrics.render())
}
