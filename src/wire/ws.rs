//! The WebSocket wire format (DESIGN section 7): what clients send, what the server sends.
//!
//! Every server message is a JSON object with `type` and, for channel traffic, `channel`.
//! Prices are USD decimal strings, ids are strings, times RFC 3339 UTC, like the REST API.
//! Messages are serialized once per publish and shared by every subscriber.

use super::rest::{BlockJson, LeaseJson, OrderJson};
use crate::feed::{BookDelta, BookSnapshot, CapacityFigures, LevelChange, PrivateEvent};
use crate::money::Usd;
use crate::timestamp::Rfc3339Time;
use bytestring::ByteString;
use matching_engine::{LeaseView, Level, Name, PriceMicros, Side, TradeView};
use serde::{Deserialize, Serialize};

/// A channel a client can subscribe to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    /// `book:{pool}`: snapshot, then deltas.
    Book(Name),
    /// `trades:{pool}`: recent trades, then new ones.
    Trades(Name),
    /// `capacity`: idle, leased and reclaiming GPUs per pool.
    Capacity,
    /// `orders` (private): the account's bids and fills.
    Orders,
    /// `leases` (private): the account's leases: opened, reclaim warning, notice, ended.
    Leases,
    /// `blocks` (private): the supplier's capacity blocks.
    Blocks,
}

impl Channel {
    /// Parses `book:h100-sxm.us-east`, `trades:...`, `capacity`, `orders`, `leases`, `blocks`.
    pub fn parse(name: &str) -> Option<Channel> {
        match name.split_once(':') {
            Some(("book", pool)) if !pool.is_empty() => Some(Channel::Book(Name::from(pool))),
            Some(("trades", pool)) if !pool.is_empty() => Some(Channel::Trades(Name::from(pool))),
            Some(_) => None,
            None => match name {
                "capacity" => Some(Channel::Capacity),
                "orders" => Some(Channel::Orders),
                "leases" => Some(Channel::Leases),
                "blocks" => Some(Channel::Blocks),
                _ => None,
            },
        }
    }

    /// The channel's wire name.
    pub fn name(&self) -> String {
        match self {
            Channel::Book(pool) => format!("book:{pool}"),
            Channel::Trades(pool) => format!("trades:{pool}"),
            Channel::Capacity => "capacity".to_owned(),
            Channel::Orders => "orders".to_owned(),
            Channel::Leases => "leases".to_owned(),
            Channel::Blocks => "blocks".to_owned(),
        }
    }

    /// Whether only an authenticated account may subscribe (and sees only its own events).
    pub fn is_private(&self) -> bool {
        matches!(self, Channel::Orders | Channel::Leases | Channel::Blocks)
    }

    /// The pool a public channel is about.
    pub fn pool(&self) -> Option<&Name> {
        match self {
            Channel::Book(pool) | Channel::Trades(pool) => Some(pool),
            _ => None,
        }
    }
}

/// A client's request.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientOp {
    /// Authenticate for the private channels.
    Auth {
        /// A bearer token (JWT), as for REST.
        token: String,
    },
    /// Subscribe; subscribing again to `book:*` is how a client heals a gap (a new snapshot).
    Subscribe {
        /// Channel names.
        channels: Vec<String>,
    },
    /// Stop a subscription.
    Unsubscribe {
        /// Channel names.
        channels: Vec<String>,
    },
    /// Application-level ping (browsers cannot send WebSocket pings); answered with `pong`.
    Ping,
}

/// A message, serialized once and shared by every client it goes to: a reference-counted
/// string that actix-ws takes as it is, so a frame sent to 2,000 clients is never copied
/// before it is written into each socket.
pub type Frame = ByteString;

fn frame(value: &impl Serialize) -> Frame {
    // Serializing these plain structs cannot fail: no maps with non-string keys, no floats.
    ByteString::from(serde_json::to_string(value).expect("a wire message serializes"))
}

#[derive(Serialize)]
struct LevelJson {
    price: Usd,
    gpus: u64,
    orders: u32,
}

impl From<&Level> for LevelJson {
    fn from(level: &Level) -> Self {
        LevelJson {
            price: level.price.into(),
            gpus: level.gpus,
            orders: level.orders,
        }
    }
}

#[derive(Serialize)]
struct ChangeJson {
    side: Side,
    price: Usd,
    gpus: u64,
    orders: u32,
}

impl From<&LevelChange> for ChangeJson {
    fn from(change: &LevelChange) -> Self {
        ChangeJson {
            side: change.side,
            price: change.price.into(),
            gpus: change.gpus,
            orders: change.orders,
        }
    }
}

/// `{"type":"snapshot","channel":"book:p","seq","at","bids":[...],"asks":[...]}`.
pub fn book_snapshot(pool: &str, book: &BookSnapshot) -> Frame {
    #[derive(Serialize)]
    struct Msg {
        r#type: &'static str,
        channel: String,
        seq: u64,
        at: Rfc3339Time,
        bids: Vec<LevelJson>,
        asks: Vec<LevelJson>,
        /// Levels past the snapshot's depth were left out (deltas still cover them).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
    }
    frame(&Msg {
        r#type: "snapshot",
        channel: format!("book:{pool}"),
        seq: book.seq,
        at: book.at.into(),
        bids: book.bids.iter().map(LevelJson::from).collect(),
        asks: book.asks.iter().map(LevelJson::from).collect(),
        truncated: book.bids.len() == crate::limits::WS_SNAPSHOT_LEVELS_MAX
            || book.asks.len() == crate::limits::WS_SNAPSHOT_LEVELS_MAX,
    })
}

/// `{"type":"delta","channel":"book:p","prev_seq","seq","at","first_at","changes":[...]}`:
/// `at` is when the book last changed, `first_at` when the oldest change in it was made.
pub fn book_delta(pool: &str, delta: &BookDelta) -> Frame {
    #[derive(Serialize)]
    struct Msg {
        r#type: &'static str,
        channel: String,
        prev_seq: u64,
        seq: u64,
        at: Rfc3339Time,
        first_at: Rfc3339Time,
        changes: Vec<ChangeJson>,
    }
    frame(&Msg {
        r#type: "delta",
        channel: format!("book:{pool}"),
        prev_seq: delta.prev_seq,
        seq: delta.seq,
        at: delta.at.into(),
        first_at: delta.first_at.into(),
        changes: delta.changes.iter().map(ChangeJson::from).collect(),
    })
}

/// A trade on the public feed: no account names, no block or order ids.
#[derive(Serialize)]
struct PublicTradeJson {
    id: String,
    price: Usd,
    gpus: u32,
    /// Which side was resting: `ask` means a bid lifted supply (a buy).
    maker_side: Side,
    at: Rfc3339Time,
}

impl From<&TradeView> for PublicTradeJson {
    fn from(trade: &TradeView) -> Self {
        PublicTradeJson {
            id: trade.id.to_string(),
            price: trade.price.into(),
            gpus: trade.gpus,
            maker_side: trade.maker_side,
            at: trade.at.into(),
        }
    }
}

/// `{"type":"snapshot"|"trades","channel":"trades:p","trades":[oldest..newest]}`.
pub fn trades(pool: &str, kind: &'static str, trades: &[TradeView]) -> Frame {
    #[derive(Serialize)]
    struct Msg {
        r#type: &'static str,
        channel: String,
        trades: Vec<PublicTradeJson>,
    }
    frame(&Msg {
        r#type: kind,
        channel: format!("trades:{pool}"),
        trades: trades.iter().map(PublicTradeJson::from).collect(),
    })
}

#[derive(Serialize)]
struct CapacityJson<'a> {
    pool: &'a str,
    idle_gpus: u64,
    leased_gpus: u64,
    reclaiming_gpus: u64,
    best_bid: Option<Usd>,
    best_ask: Option<Usd>,
    last_price: Option<Usd>,
}

/// `{"type":"snapshot"|"update","channel":"capacity","pools":[{pool,idle_gpus,...}]}`.
pub fn capacity(kind: &'static str, pools: &[CapacityFigures]) -> Frame {
    #[derive(Serialize)]
    struct Msg<'a> {
        r#type: &'static str,
        channel: &'static str,
        pools: Vec<CapacityJson<'a>>,
    }
    let usd = |p: Option<PriceMicros>| p.map(Usd::from);
    frame(&Msg {
        r#type: kind,
        channel: "capacity",
        pools: pools
            .iter()
            .map(|f| CapacityJson {
                pool: &f.pool,
                idle_gpus: f.idle_gpus,
                leased_gpus: f.leased_gpus,
                reclaiming_gpus: f.reclaiming_gpus,
                best_bid: usd(f.best_bid),
                best_ask: usd(f.best_ask),
                last_price: usd(f.last_price),
            })
            .collect(),
    })
}

/// `{"type":"subscribed","channel":...}`: the start of a private channel's stream.
pub fn subscribed(channel: &Channel) -> Frame {
    #[derive(Serialize)]
    struct Msg {
        r#type: &'static str,
        channel: String,
    }
    frame(&Msg {
        r#type: "subscribed",
        channel: channel.name(),
    })
}

/// `{"type":"unsubscribed","channel":...}`.
pub fn unsubscribed(channel: &Channel) -> Frame {
    #[derive(Serialize)]
    struct Msg {
        r#type: &'static str,
        channel: String,
    }
    frame(&Msg {
        r#type: "unsubscribed",
        channel: channel.name(),
    })
}

/// `{"type":"error","code":...,"message":...}` (and the channel it is about, if any).
pub fn error(code: &str, message: &str, channel: Option<&str>) -> Frame {
    #[derive(Serialize)]
    struct Msg<'a> {
        r#type: &'static str,
        code: &'a str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        channel: Option<&'a str>,
    }
    frame(&Msg {
        r#type: "error",
        code,
        message,
        channel,
    })
}

/// `{"type":"authenticated","account":...,"role":...}`.
pub fn authenticated(account: &str, role: crate::auth::Role) -> Frame {
    #[derive(Serialize)]
    struct Msg<'a> {
        r#type: &'static str,
        account: &'a str,
        role: crate::auth::Role,
    }
    frame(&Msg {
        r#type: "authenticated",
        account,
        role,
    })
}

/// `{"type":"pong"}`.
pub fn pong() -> Frame {
    ByteString::from_static(r#"{"type":"pong"}"#)
}

/// The channel a private event goes to, and its message.
pub fn private(event: &PrivateEvent) -> (Channel, Frame) {
    #[derive(Serialize)]
    struct OrderMsg {
        r#type: &'static str,
        channel: &'static str,
        event: &'static str,
        order: OrderJson,
    }
    #[derive(Serialize)]
    struct FillJson<'a> {
        id: String,
        order_id: String,
        lease_id: String,
        pool: &'a str,
        block_id: &'a str,
        price: Usd,
        gpus: u32,
        at: Rfc3339Time,
    }
    #[derive(Serialize)]
    struct FillMsg<'a> {
        r#type: &'static str,
        channel: &'static str,
        event: &'static str,
        fill: FillJson<'a>,
    }
    #[derive(Serialize)]
    struct LeaseMsg {
        r#type: &'static str,
        channel: &'static str,
        event: &'static str,
        lease: LeaseJson,
    }
    #[derive(Serialize)]
    struct ForecastMsg {
        r#type: &'static str,
        channel: &'static str,
        event: &'static str,
        lease_id: String,
        reclaim_at: Rfc3339Time,
    }
    #[derive(Serialize)]
    struct BlockMsg {
        r#type: &'static str,
        channel: &'static str,
        event: &'static str,
        block: BlockJson,
    }
    match event {
        PrivateEvent::Order { event, order } => (
            Channel::Orders,
            frame(&OrderMsg {
                r#type: "order",
                channel: "orders",
                event,
                order: order.into(),
            }),
        ),
        PrivateEvent::Fill(trade) => (
            Channel::Orders,
            frame(&FillMsg {
                r#type: "fill",
                channel: "orders",
                event: "fill",
                fill: FillJson {
                    id: trade.id.to_string(),
                    order_id: trade.order_id.to_string(),
                    lease_id: trade.lease_id.to_string(),
                    pool: &trade.pool,
                    block_id: &trade.block_id,
                    price: trade.price.into(),
                    gpus: trade.gpus,
                    at: trade.at.into(),
                },
            }),
        ),
        PrivateEvent::Lease { event, lease } => (
            Channel::Leases,
            frame(&LeaseMsg {
                r#type: "lease",
                channel: "leases",
                event: lease_event_name(event, lease),
                lease: lease.into(),
            }),
        ),
        PrivateEvent::ReclaimForecast {
            lease_id,
            reclaim_at,
        } => (
            Channel::Leases,
            frame(&ForecastMsg {
                r#type: "lease",
                channel: "leases",
                event: "reclaim_warning",
                lease_id: lease_id.to_string(),
                reclaim_at: Rfc3339Time(*reclaim_at),
            }),
        ),
        PrivateEvent::SuppliedLease { event, lease } => (
            Channel::Blocks,
            frame(&LeaseMsg {
                r#type: "lease",
                channel: "blocks",
                event,
                lease: lease.into(),
            }),
        ),
        PrivateEvent::Block(block) => (
            Channel::Blocks,
            frame(&BlockMsg {
                r#type: "block",
                channel: "blocks",
                event: "block_changed",
                block: block.into(),
            }),
        ),
    }
}

/// The buyer-facing name of a lease event: opened, ready (access handed over), failed, notice
/// (preemption notice given), ended.
fn lease_event_name(event: &'static str, lease: &LeaseView) -> &'static str {
    use matching_engine::LeaseStatus::*;
    match (event, lease.status) {
        ("lease_opened", _) => "lease_opened",
        ("lease_ready", _) => "lease_ready",
        (_, Failed) => "lease_failed",
        (_, Preempting) => "notice",
        (_, Preempted | Completed | Released) => "ended",
        _ => "lease_changed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use matching_engine::TimeMs;

    #[test]
    fn channel_names_round_trip() {
        for name in [
            "book:h100-sxm.us-east",
            "trades:a100.eu-west",
            "capacity",
            "orders",
            "leases",
            "blocks",
        ] {
            assert_eq!(Channel::parse(name).unwrap().name(), name);
        }
        for bad in ["book:", "book", "trades", "candles:x", "", "Orders"] {
            assert_eq!(Channel::parse(bad), None, "{bad:?}");
        }
        assert!(Channel::parse("leases").unwrap().is_private());
        assert!(!Channel::parse("capacity").unwrap().is_private());
    }

    #[test]
    fn client_ops_refuse_unknown_fields() {
        assert!(matches!(
            serde_json::from_str::<ClientOp>(r#"{"op":"subscribe","channels":["capacity"]}"#),
            Ok(ClientOp::Subscribe { .. })
        ));
        assert!(serde_json::from_str::<ClientOp>(r#"{"op":"subscribe","chanels":[]}"#).is_err());
        assert!(serde_json::from_str::<ClientOp>(r#"{"op":"fly"}"#).is_err());
    }

    #[test]
    fn a_delta_carries_decimal_prices_and_both_seqs() {
        let delta = BookDelta {
            prev_seq: 4,
            seq: 7,
            at: TimeMs(1_735_787_045_678),
            first_at: TimeMs(1_735_787_045_600),
            changes: vec![LevelChange {
                side: Side::Ask,
                price: PriceMicros(1_250_000),
                gpus: 0,
                orders: 0,
            }],
        };
        let text = book_delta("p", &delta);
        assert_eq!(
            &*text,
            r#"{"type":"delta","channel":"book:p","prev_seq":4,"seq":7,"at":"2025-01-02T03:04:05.678Z","first_at":"2025-01-02T03:04:05.600Z","changes":[{"side":"ask","price":"1.25","gpus":0,"orders":0}]}"#
        );
    }
}
