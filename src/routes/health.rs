//! Liveness, readiness and metrics. Public.

use crate::bus::BusTask;
use crate::cluster::leadership::NodeRow;
use crate::error::ApiError;
use crate::limits::FOLLOW_READY_LAG_MAX;
use crate::sequencer::Role;
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
    /// `accepting` (this node commits), `forwarded` (a standby: writes go to the leader) or
    /// `refused`.
    writes: &'static str,
    /// The last committed journal sequence number this node applied.
    seq: u64,
    bus: BusReadiness,
    /// `leader` (the single process is its own) or `standby`.
    #[schema(example = "leader")]
    role: &'static str,
    /// The leader's node id, if one is live.
    leader: Option<String>,
    /// The leadership epoch (0 for the single-process store).
    epoch: u64,
    /// Commands in the journal this node has not applied yet.
    lag: u64,
}

/// The bus's tasks.
#[derive(Serialize, ToSchema)]
struct BusReadiness {
    /// `redis` or `memory`.
    kind: &'static str,
    /// `up`, `degraded`, or `standby` (only the leader runs the bus's tasks).
    status: &'static str,
    /// `up`, `down` or `standby`, each.
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
        (status = 200, description = "The database answers and writes are accepted (the leader), or this standby has caught up with the journal", body = Readiness),
        (status = 503, description = "The database is down, writes are refused, or this standby is behind (reads of live state still work)", body = Readiness),
    ),
)]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let database_up = state.store.ping().await.is_ok();
    let writable = state.sequencer.writable();
    let position = state.cluster.position(&state.sequencer);
    let standby = position.role == Role::Standby;
    // A standby forwards writes while it knows a live leader other than itself.
    let forwarding = state
        .cluster
        .leader()
        .is_some_and(|leader| leader.node_id != state.cluster.node.node_id);
    // A standby serves reads and forwards writes: ready once it has caught up and knows a
    // leader to forward to.
    let ready = database_up
        && if standby {
            forwarding && position.lag <= FOLLOW_READY_LAG_MAX
        } else {
            writable
        };
    let bus = &state.bus.status;
    let up = |task| match (standby, bus.is_up(task)) {
        (true, _) => "standby",
        (false, true) => "up",
        (false, false) => "down",
    };
    // Only the leader runs the bus's tasks.
    let bus_up = standby || bus.all_up();
    let body = Readiness {
        status: match (ready, bus_up) {
            (true, true) => "ready",
            (true, false) => "degraded",
            (false, _) => "not_ready",
        },
        database: if database_up { "up" } else { "down" },
        writes: match (standby, writable) {
            (true, _) if forwarding => "forwarded",
            (false, true) => "accepting",
            _ => "refused",
        },
        seq: position.seq,
        bus: BusReadiness {
            kind: state.bus.bus.kind(),
            status: match (standby, bus_up) {
                (true, _) => "standby",
                (false, true) => "up",
                (false, false) => "degraded",
            },
            consumer: up(BusTask::Consumer),
            publisher: up(BusTask::Publisher),
            lease_events: up(BusTask::LeaseEvents),
        },
        role: position.role.as_str(),
        leader: position.leader,
        epoch: position.epoch,
        lag: position.lag,
    };
    if ready {
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
    let position = state.cluster.position(&state.sequencer);
    state
        .metrics
        .set_cluster(position.role.leads(), position.epoch, position.lag);
    HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(state.metrics.render())
}

/// A node of `GET /v1/cluster`.
#[derive(Serialize, ToSchema)]
struct ClusterView {
    /// The current leadership epoch (0 for the single-process store).
    epoch: u64,
    /// The live leader's node id (`null` during a takeover).
    leader: Option<String>,
    /// The nodes whose heartbeat is recent.
    nodes: Vec<NodeRow>,
}

#[utoipa::path(
    get,
    path = "/v1/cluster",
    operation_id = "get_cluster",
    tag = "operations",
    responses(
        (status = 200, description = "The leader, its epoch, and every node seen recently with its role, seq and lag behind the most advanced", body = ClusterView),
    ),
)]
/// `GET /v1/cluster`: the leadership and the nodes, as the database records them.
pub async fn cluster(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let Some(leadership) = &state.cluster.leadership else {
        // The single process: its own leader.
        let seq = state.sequencer.last_seq();
        let node = &state.cluster.node;
        return Ok(HttpResponse::Ok().json(ClusterView {
            epoch: 0,
            leader: Some(node.node_id.clone()),
            nodes: vec![NodeRow {
                node_id: node.node_id.clone(),
                role: "leader".into(),
                epoch: 0,
                seq,
                lag: 0,
                advertise_url: node.advertise_url.clone(),
            }],
        }));
    };
    let rows = leadership.cluster().await.map_err(|e| {
        tracing::warn!(error = %e, "GET /v1/cluster: the database did not answer");
        ApiError::StoreUnavailable
    })?;
    Ok(HttpResponse::Ok().json(ClusterView {
        epoch: rows.epoch,
        leader: rows.leader.map(|leader| leader.node_id),
        nodes: rows.nodes,
    }))
}
