//! One WebSocket connection: writes its queue to the socket, reads and answers its requests,
//! pings it, and closes it when the hub cuts it off or it goes silent.

use super::hub::{client_queue, ClientId, Kick, Outgoing, QueueSender};
use super::socket::ClientSocket;
use super::{ConnectionSlot, WsState};
use crate::auth::Principal;
use crate::limits::{
    WS_ABORT_AFTER_CLOSE, WS_CLIENT_MESSAGE_BYTES_MAX, WS_CLIENT_OPS_BURST, WS_CLIENT_OPS_PER_S,
    WS_CLIENT_SILENCE_MAX, WS_PING_INTERVAL, WS_SUBSCRIPTIONS_MAX,
};
use crate::wire::ws::{self as protocol, Channel, ClientOp, Frame};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, Session};
use std::collections::HashSet;
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};

/// The close reason of a client that sent nothing (not even a pong) for too long.
const SILENT_TOO_LONG: &str = "silent_too_long";

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
    /// The client's queue, for answers to its requests.
    replies: QueueSender,
}

/// Runs the connection until either side ends it.
///
/// Two halves run concurrently in this one task: the writer moves the client's queue to the
/// socket (and is the only one that waits on it), the reader answers the client's requests
/// and queues the answers. A client that stops reading therefore still has its requests
/// handled, and whatever they produce piles up in its bounded queue, where the hub sees it.
pub(super) async fn run(
    state: WsState,
    principal: Option<Principal>,
    mut ws: Session,
    incoming: actix_ws::MessageStream,
    slot: ConnectionSlot,
    socket: Option<ClientSocket>,
) {
    let _slot = slot;
    let (queue_tx, mut queue) = client_queue();
    let (client, mut kicked) = state.hub.join(queue_tx.clone()).await;
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
    let hub = state.hub.clone();
    let mut conn = Connection {
        client,
        state,
        principal,
        channels: HashSet::new(),
        ops: OpsBucket::new(),
        replies: queue_tx,
    };

    let writer = async {
        while let Some(frame) = queue.recv().await {
            let sent = match frame {
                Outgoing::Text(text) => ws.text(text).await,
                Outgoing::Ping => ws.ping(b"").await,
                Outgoing::Pong(payload) => ws.pong(&payload).await,
            };
            if sent.is_err() {
                return None;
            }
        }
        None
    };
    let reader = async {
        let mut ping =
            tokio::time::interval_at(Instant::now() + WS_PING_INTERVAL, WS_PING_INTERVAL);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        loop {
            tokio::select! {
                message = incoming.recv() => {
                    last_heard = Instant::now();
                    match message {
                        Some(Ok(AggregatedMessage::Text(text))) => conn.handle(&text).await,
                        Some(Ok(AggregatedMessage::Binary(_))) => {
                            conn.reply(protocol::error("invalid_message", "send JSON text messages", None));
                        }
                        Some(Ok(AggregatedMessage::Ping(payload))) => {
                            let _ = conn.replies.try_send_outgoing(Outgoing::Pong(payload));
                        }
                        Some(Ok(AggregatedMessage::Pong(_))) => {}
                        Some(Ok(AggregatedMessage::Close(_))) => return Some(CloseCode::Normal.into()),
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "WebSocket protocol error");
                            return Some(CloseReason {
                                code: CloseCode::Protocol,
                                description: Some("protocol_error".to_owned()),
                            });
                        }
                        None => return None,
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > WS_CLIENT_SILENCE_MAX {
                        return Some(CloseReason {
                            code: CloseCode::Away,
                            description: Some(SILENT_TOO_LONG.to_owned()),
                        });
                    }
                    let _ = conn.replies.try_send_outgoing(Outgoing::Ping);
                }
            }
        }
    };
    let close: Option<CloseReason> = tokio::select! {
        biased;
        kick = &mut kicked => kick.ok().map(kick_reason),
        close = writer => close,
        close = reader => close,
    };
    hub.leave(client).await;
    // A session the server ends for the client's fault (too slow, silent, a protocol error)
    // may have a client that never reads the close frame: its connection is reset a bound later.
    let client_at_fault = close.as_ref().is_some_and(|reason| {
        matches!(reason.code, CloseCode::Policy | CloseCode::Protocol)
            || reason.description.as_deref() == Some(SILENT_TOO_LONG)
    });
    let _ = tokio::time::timeout(CLOSE_WAIT, ws.close(close)).await;
    if let (true, Some(socket)) = (client_at_fault, socket) {
        tokio::time::sleep(WS_ABORT_AFTER_CLOSE).await;
        socket.abort();
    }
}

fn kick_reason(kick: Kick) -> CloseReason {
    let code = match kick {
        Kick::ShuttingDown => CloseCode::Away,
        Kick::SlowConsumer | Kick::PrivateEventsLost => CloseCode::Policy,
    };
    CloseReason {
        code,
        description: Some(kick.reason().to_owned()),
    }
}

impl Connection {
    /// Queues an answer; a client too slow to have room for it would not read it anyway.
    fn reply(&self, frame: Frame) {
        let _ = self.replies.try_send(frame);
    }

    /// Answers one client request.
    async fn handle(&mut self, text: &str) {
        if !self.ops.take() {
            self.reply(protocol::error(
                "rate_limited",
                &format!("at most {WS_CLIENT_OPS_PER_S} requests a second"),
                None,
            ));
            return;
        }
        let op = match serde_json::from_str::<ClientOp>(text) {
            Ok(op) => op,
            Err(e) => {
                self.reply(protocol::error("invalid_message", &e.to_string(), None));
                return;
            }
        };
        match op {
            ClientOp::Ping => self.reply(protocol::pong()),
            ClientOp::Auth { token } => self.authenticate(&token).await,
            ClientOp::Subscribe { channels } => self.subscribe(channels).await,
            ClientOp::Unsubscribe { channels } => {
                let mut leaving = Vec::new();
                for name in channels {
                    match Channel::parse(&name) {
                        Some(channel) if self.channels.remove(&channel) => leaving.push(channel),
                        _ => self.reply(protocol::error(
                            "not_subscribed",
                            "not subscribed",
                            Some(&name),
                        )),
                    }
                }
                if !leaving.is_empty() {
                    self.state.hub.unsubscribe(self.client, leaving).await;
                }
            }
        }
    }

    async fn authenticate(&mut self, token: &str) {
        let principal = match self.state.verifier.verify(token) {
            Ok(principal) => principal,
            Err(_) => {
                self.reply(protocol::error(
                    "unauthorized",
                    "a valid bearer token is required",
                    None,
                ));
                return;
            }
        };
        if let Some(current) = &self.principal {
            if current.account != principal.account {
                // Private subscriptions belong to the first account; no switching mid-stream.
                self.reply(protocol::error(
                    "already_authenticated",
                    "this connection is authenticated as another account",
                    None,
                ));
                return;
            }
        }
        self.state
            .hub
            .authenticated(self.client, principal.account.clone())
            .await;
        self.reply(protocol::authenticated(&principal.account, principal.role));
        self.principal = Some(principal);
    }

    async fn subscribe(&mut self, names: Vec<String>) {
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
                self.reply(protocol::error(code, message, Some(&name)));
            }
        }
        if !joining.is_empty() {
            self.state.hub.subscribe(self.client, joining).await;
        }
    }
}
