//! One WebSocket connection: writes its queue to the socket, reads and answers its requests,
//! pings it, and closes it when the hub cuts it off or it goes silent.

use super::hub::{ClientId, Kick};
use super::protocol::{self, Channel, ClientOp, Frame};
use super::{ConnectionSlot, WsState};
use crate::auth::Principal;
use crate::limits::{
    WS_CLIENT_MESSAGE_BYTES_MAX, WS_CLIENT_OPS_BURST, WS_CLIENT_OPS_PER_S,
    WS_CLIENT_QUEUE_MESSAGES_MAX, WS_CLIENT_SILENCE_MAX, WS_PING_INTERVAL, WS_SUBSCRIPTIONS_MAX,
};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, Closed, Session};
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

/// How long a closing handshake may take before the connection is simply dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// A token bucket for the client's requests.
struct OpsBucket {
    tokens: f64,
    updated: Instant,
}

impl OpsBucket {
    fn new() -> OpsBucket {
        OpsBucket {
            tokens: f64::from(WS_CLIENT_OPS_BURST),
            updated: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill =
            now.duration_since(self.updated).as_secs_f64() * f64::from(WS_CLIENT_OPS_PER_S);
        self.tokens = (self.tokens + refill).min(f64::from(WS_CLIENT_OPS_BURST));
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Connection {
    client: ClientId,
    state: WsState,
    principal: Option<Principal>,
    channels: HashSet<Channel>,
    ops: OpsBucket,
}

/// Runs the connection until either side ends it.
pub(super) async fn run(
    state: WsState,
    principal: Option<Principal>,
    mut ws: Session,
    incoming: actix_ws::MessageStream,
    slot: ConnectionSlot,
) {
    let _slot = slot;
    let (queue_tx, mut queue) = mpsc::channel::<Frame>(WS_CLIENT_QUEUE_MESSAGES_MAX);
    let (client, mut kicked) = state.hub.join(queue_tx).await;
    let mut incoming = incoming
        .max_frame_size(WS_CLIENT_MESSAGE_BYTES_MAX)
        .aggregate_continuations()
        .max_continuation_size(WS_CLIENT_MESSAGE_BYTES_MAX);
    if let Some(principal) = &principal {
        state
            .hub
            .authenticated(client, principal.account.clone())
            .await;
    }
    let mut conn = Connection {
        client,
        state,
        principal,
        channels: HashSet::new(),
        ops: OpsBucket::new(),
    };
    let mut ping = tokio::time::interval_at(Instant::now() + WS_PING_INTERVAL, WS_PING_INTERVAL);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();

    let close: Option<CloseReason> = loop {
        tokio::select! {
            biased;
            kick = &mut kicked => break kick.ok().map(kick_reason),
            frame = queue.recv() => {
                let Some(frame) = frame else { break None };
                // Writing waits for the socket; the hub may cut a stuck client off meanwhile.
                tokio::select! {
                    biased;
                    kick = &mut kicked => break kick.ok().map(kick_reason),
                    sent = ws.text(&*frame) => if sent.is_err() { break None },
                }
            }
            message = incoming.recv() => {
                last_heard = Instant::now();
                match message {
                    Some(Ok(AggregatedMessage::Text(text))) => {
                        if conn.handle(&text, &mut ws).await.is_err() {
                            break None;
                        }
                    }
                    Some(Ok(AggregatedMessage::Binary(_))) => {
                        let reply = protocol::error("invalid_message", "send JSON text messages", None);
                        if ws.text(&*reply).await.is_err() {
                            break None;
                        }
                    }
                    Some(Ok(AggregatedMessage::Ping(payload))) => {
                        if ws.pong(&payload).await.is_err() {
                            break None;
                        }
                    }
                    Some(Ok(AggregatedMessage::Pong(_))) => {}
                    Some(Ok(AggregatedMessage::Close(_))) => break Some(CloseCode::Normal.into()),
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "WebSocket protocol error");
                        break Some(CloseReason {
                            code: CloseCode::Protocol,
                            description: Some("protocol_error".to_owned()),
                        });
                    }
                    None => break None,
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > WS_CLIENT_SILENCE_MAX {
                    break Some(CloseReason {
                        code: CloseCode::Away,
                        description: Some("silent_too_long".to_owned()),
                    });
                }
                if ws.ping(b"").await.is_err() {
                    break None;
                }
            }
        }
    };
    conn.state.hub.leave(client).await;
    let _ = tokio::time::timeout(CLOSE_WAIT, ws.close(close)).await;
}

fn kick_reason(kick: Kick) -> CloseReason {
    CloseReason {
        code: CloseCode::Policy,
        description: Some(kick.reason().to_owned()),
    }
}

impl Connection {
    /// Answers one client request.
    async fn handle(&mut self, text: &str, ws: &mut Session) -> Result<(), Closed> {
        if !self.ops.take() {
            let reply = protocol::error(
                "rate_limited",
                &format!("at most {WS_CLIENT_OPS_PER_S} requests a second"),
                None,
            );
            return ws.text(&*reply).await;
        }
        let op = match serde_json::from_str::<ClientOp>(text) {
            Ok(op) => op,
            Err(e) => {
                let reply = protocol::error("invalid_message", &e.to_string(), None);
                return ws.text(&*reply).await;
            }
        };
        match op {
            ClientOp::Ping => ws.text(&*protocol::pong()).await,
            ClientOp::Auth { token } => self.authenticate(&token, ws).await,
            ClientOp::Subscribe { channels } => self.subscribe(channels, ws).await,
            ClientOp::Unsubscribe { channels } => {
                let mut leaving = Vec::new();
                for name in channels {
                    match Channel::parse(&name) {
                        Some(channel) if self.channels.remove(&channel) => leaving.push(channel),
                        _ => {
                            let reply =
                                protocol::error("not_subscribed", "not subscribed", Some(&name));
                            ws.text(&*reply).await?;
                        }
                    }
                }
                if !leaving.is_empty() {
                    self.state.hub.unsubscribe(self.client, leaving).await;
                }
                Ok(())
            }
        }
    }

    async fn authenticate(&mut self, token: &str, ws: &mut Session) -> Result<(), Closed> {
        let principal = match self.state.verifier.verify(token) {
            Ok(principal) => principal,
            Err(_) => {
                let reply =
                    protocol::error("unauthorized", "a valid bearer token is required", None);
                return ws.text(&*reply).await;
            }
        };
        if let Some(current) = &self.principal {
            if current.account != principal.account {
                // Private subscriptions belong to the first account; no switching mid-stream.
                let reply = protocol::error(
                    "already_authenticated",
                    "this connection is authenticated as another account",
                    None,
                );
                return ws.text(&*reply).await;
            }
        }
        let reply = protocol::authenticated(&principal.account, principal.role);
        self.state
            .hub
            .authenticated(self.client, principal.account.clone())
            .await;
        self.principal = Some(principal);
        ws.text(&*reply).await
    }

    async fn subscribe(&mut self, names: Vec<String>, ws: &mut Session) -> Result<(), Closed> {
        let mut joining = Vec::new();
        for name in names {
            let refusal = match Channel::parse(&name) {
                None => Some(("unknown_channel", "no such channel")),
                Some(channel) if channel.is_private() && self.principal.is_none() => Some((
                    "unauthorized",
                    "private channels need a token: send {\"op\":\"auth\",\"token\":...} first",
                )),
                Some(channel)
                    if channel
                        .pool()
                        .is_some_and(|pool| !self.state.hub.feed.has_pool(pool)) =>
                {
                    Some(("unknown_pool", "no such pool"))
                }
                Some(channel)
                    if !self.channels.contains(&channel)
                        && self.channels.len() >= WS_SUBSCRIPTIONS_MAX =>
                {
                    Some((
                        "too_many_subscriptions",
                        "too many subscriptions on one connection",
                    ))
                }
                Some(channel) => {
                    self.channels.insert(channel.clone());
                    joining.push(channel);
                    None
                }
            };
            if let Some((code, message)) = refusal {
                ws.text(&*protocol::error(code, message, Some(&name)))
                    .await?;
            }
        }
        if !joining.is_empty() {
            self.state.hub.subscribe(self.client, joining).await;
        }
        Ok(())
    }
}
