//! `GET /v1/ws`: the upgrade to the live feed ([`crate::ws`] runs the sessions).

use crate::state::AppState;
use crate::ws;
use actix_web::{web, HttpRequest, HttpResponse};

pub use crate::ws::CONNECT_ERRORS;

/// Upgrades to a WebSocket, unless the connection limit is reached or a given token is bad.
///
/// Public channels: `book:{pool}`, `trades:{pool}`, `capacity`. Private channels (`orders`,
/// `leases`, `blocks`) need a token, in the upgrade's `Authorization` header or in a first
/// `{"op": "auth", "token": "..."}` message. Messages are JSON text frames (DESIGN section 7).
#[utoipa::path(
    get,
    path = "/v1/ws",
    operation_id = "websocket",
    tag = "feed",
    security((), ("bearer" = [])),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket upgrade request (a plain-text answer from the handshake)"),
    ),
)]
pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    app: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    ws::accept(req, body, app.ws.clone(), app.verifier.clone()).await
}
