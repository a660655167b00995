//! A write sent to a standby is forwarded to the leader and answered as the leader answers,
//! so clients and load balancers may use any node (DESIGN section 10).
//!
//! Only writes under `/v1/` are forwarded (reads, the WebSocket and the operations endpoints
//! are answered by every node from its own engine). A forwarded request carries
//! [`FORWARDED_HEADER`]; a node that receives one and is not the leader answers it itself
//! (503 `no_leader`) rather than forwarding again, so a request crosses at most one hop. With
//! no live leader known, or one that does not answer, the write gets 503 `no_leader` with
//! `Retry-After`: it was not applied by this node, and the leader that did not answer either
//! did not get it or fails it (retry with the same `client_order_id`).

use super::Cluster;
use crate::error::ApiError;
use crate::limits::REQUEST_BODY_BYTES_MAX;
use crate::sequencer::{Role, SequencerHandle};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::HttpResponse;
use futures_util::StreamExt;

/// Marks a request a standby forwarded (its value: the standby's node id).
pub const FORWARDED_HEADER: &str = "x-offpeak-forwarded-by";

/// Headers that describe one hop, not the message: never copied across.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "host",
    "content-length",
];

/// Where a request goes instead of this node's handlers.
pub enum Forward {
    /// To the leader at this URL.
    Leader(String),
    /// Nowhere: no live leader is known.
    NoLeader,
}

/// Whether this request is a write that this node (a standby) must send to the leader.
pub fn route(
    cluster: &Cluster,
    sequencer: &SequencerHandle,
    request: &ServiceRequest,
) -> Option<Forward> {
    cluster.leadership.as_ref()?;
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) || !request.path().starts_with("/v1/")
        || request.headers().contains_key(FORWARDED_HEADER)
        || sequencer.role() != Role::Standby
    {
        return None;
    }
    Some(match cluster.leader() {
        Some(leader) if leader.node_id != cluster.node.node_id => {
            Forward::Leader(leader.advertise_url)
        }
        _ => Forward::NoLeader,
    })
}

/// Sends `request` to the leader and answers with its answer.
pub async fn forward(cluster: &Cluster, request: ServiceRequest, to: Forward) -> ServiceResponse {
    let (http_request, mut payload) = request.into_parts();
    let Forward::Leader(leader_url) = to else {
        return ServiceResponse::from_err(ApiError::NoLeader, http_request);
    };
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        match chunk {
            Ok(chunk) if body.len() + chunk.len() <= REQUEST_BODY_BYTES_MAX => {
                body.extend_from_slice(&chunk)
            }
            Ok(_) => return ServiceResponse::from_err(ApiError::BodyTooLarge, http_request),
            Err(e) => {
                return ServiceResponse::from_err(
                    ApiError::InvalidBody(format!("the body could not be read: {e}")),
                    http_request,
                )
            }
        }
    }
    let url = format!(
        "{leader_url}{}",
        http_request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
    );
    let Ok(method) = reqwest::Method::from_bytes(http_request.method().as_str().as_bytes()) else {
        return ServiceResponse::from_err(ApiError::MethodNotAllowed, http_request);
    };
    let mut outgoing = cluster.http.request(method, &url).body(body);
    for (name, value) in http_request.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            outgoing = outgoing.header(name.as_str(), value.as_bytes());
        }
    }
    outgoing = outgoing.header(FORWARDED_HEADER, cluster.node.node_id.as_str());
    let answer = match outgoing.send().await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::debug!(error = %e, %url, "the leader did not answer a forwarded write");
            return ServiceResponse::from_err(ApiError::NoLeader, http_request);
        }
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = HttpResponse::build(status);
    for (name, value) in answer.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            response.append_header((name.as_str(), value.as_bytes()));
        }
    }
    match answer.bytes().await {
        Ok(bytes) => ServiceResponse::new(http_request, response.body(bytes.to_vec())),
        Err(e) => {
            tracing::debug!(error = %e, %url, "the leader's answer to a forwarded write was cut");
            ServiceResponse::from_err(ApiError::Unavailable, http_request)
        }
    }
}
