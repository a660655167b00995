//! `GET /v1/ws`: the live market feed and each account's private events (DESIGN section 7).
//!
//! Public channels: `book:{pool}` (a snapshot with `seq`, then deltas `{prev_seq, seq,
//! changes}`), `trades:{pool}` (no account names) and `capacity` (idle, leased, reclaiming GPUs
//! per pool). Private channels, for the token's account only: `orders` (bids and fills),
//! `leases` (opened, reclaim warning, notice, ended) and `blocks` (a supplier's blocks). The token
//! comes in the `Authorization` header of the upgrade or in a first `{"op":"auth","token":..}`.
//!
//! A book's `seq` is the journal sequence number of the last command that changed it (the same
//! `seq` REST `/book` reports). A client applies a delta when `prev_seq <= its seq < seq`,
//! skips it when `seq <= its seq`, and has missed one when `prev_seq > its seq`: it then
//! subscribes to the channel again and gets a new snapshot.
//!
//! Flow: [`crate::feed::follow`] keeps the [`Feed`] equal to the committed engine; the
//! [`hub::Hub`] task fans changes out into each client's bounded queue; a session task per
//! connection writes its queue to the socket and reads the client's requests.

pub mod hub;
mod session;
pub mod socket;

pub use hub::{Hub, HubStats};

use crate::auth::Verifier;
use crate::error::ApiError;
use crate::feed::Feed;
use crate::journal::CommittedBatch;
use crate::limits::WS_CONNECTIONS_MAX;
use crate::metrics::{Metrics, NoticeSink};
use crate::sequencer::SequencerHandle;
use actix_web::{web, HttpRequest, HttpResponse};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Starts the feed follower and the hub on the current runtime. Both end once every handle
/// of the hub is dropped (the server has stopped and its sessions are gone). Each preemption
/// notice handed to the feed is timed in `metrics`.
pub fn start(sequencer: SequencerHandle, metrics: Arc<Metrics>) -> Hub {
    let feed = Arc::new(Feed::new());
    let (hub, hub_ended) = Hub::start(feed.clone());
    let published =
        move |batch: &CommittedBatch| metrics.notices_handed(NoticeSink::WebSocket, batch);
    tokio::spawn(async move {
        tokio::select! {
            _ = crate::feed::follow(feed, sequencer, published) => {}
            _ = hub_ended => {}
        }
    });
    hub
}

/// What one session needs: the hub and the token verifier.
#[derive(Clone)]
struct WsState {
    hub: Hub,
    verifier: Arc<Verifier>,
}

/// What the upgrade can be refused for: a bad token in the header, or too many connections.
pub const CONNECT_ERRORS: &[ApiError] = &[ApiError::Unauthorized, ApiError::Overloaded];

/// Upgrades `req` to a WebSocket session fed by `hub`, unless the connection limit is reached
/// or a token given in the `Authorization` header is bad (`verifier` checks it).
pub async fn accept(
    req: HttpRequest,
    body: web::Payload,
    hub: Hub,
    verifier: Arc<Verifier>,
) -> Result<HttpResponse, actix_web::Error> {
    let state = WsState { hub, verifier };
    // A token in the header must be valid; without one only public channels are open until
    // the client sends `auth`.
    let principal = match req.headers().get(actix_web::http::header::AUTHORIZATION) {
        Some(_) => Some(state.verifier.verify_request(&req)?),
        None => None,
    };
    let slot = ConnectionSlot::take(&state.hub)
        .ok_or(ApiError::Overloaded)
        .inspect_err(|_| {
            tracing::warn!(
                max = WS_CONNECTIONS_MAX,
                "WebSocket refused: too many connections"
            )
        })?;
    let (response, ws, incoming) = actix_ws::handle(&req, body)?;
    let socket = req.conn_data::<socket::ClientSocket>().cloned();
    actix_web::rt::spawn(session::run(state, principal, ws, incoming, slot, socket));
    Ok(response)
}

/// One of the [`WS_CONNECTIONS_MAX`] connection slots, given back when dropped.
struct ConnectionSlot {
    stats: Arc<HubStats>,
}

impl ConnectionSlot {
    fn take(hub: &Hub) -> Option<ConnectionSlot> {
        let stats = hub.stats.clone();
        let before = stats.connections.fetch_add(1, Ordering::AcqRel);
        let slot = ConnectionSlot { stats };
        (before < WS_CONNECTIONS_MAX).then_some(slot)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.stats.connections.fetch_sub(1, Ordering::AcqRel);
    }
}
