//! `/v1/ws`: book snapshots and deltas against REST `/book`, gap detection and healing,
//! private channel isolation, and a slow client dropped while others keep up.

use crate::helpers::{rfc3339_in, token, TestApp, POOL};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single expected message may take.
const WAIT: Duration = Duration::from_secs(10);

struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    async fn connect(app: &TestApp, bearer: Option<&str>) -> Result<WsClient, tungstenite::Error> {
        let mut request = format!("ws://127.0.0.1:{}/v1/ws", app.port)
            .into_client_request()
            .expect("request");
        if let Some(bearer) = bearer {
            request.headers_mut().insert(
                "authorization",
                format!("Bearer {bearer}").parse().expect("header"),
            );
        }
        let (stream, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(WsClient { stream })
    }

    /// The client's own TCP port.
    fn local_port(&self) -> u16 {
        match self.stream.get_ref() {
            MaybeTlsStream::Plain(tcp) => tcp.local_addr().expect("local address").port(),
            _ => unreachable!("the tests speak plain ws://"),
        }
    }

    /// A client whose socket buffers almost nothing and who never reads unless told to.
    async fn connect_tiny_buffer(app: &TestApp) -> WsClient {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let tcp = socket
            .connect(format!("127.0.0.1:{}", app.port).parse().expect("address"))
            .await
            .expect("tcp connect");
        let url = format!("ws://127.0.0.1:{}/v1/ws", app.port);
        let (stream, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp))
            .await
            .expect("handshake");
        WsClient { stream }
    }

    async fn send(&mut self, message: Value) {
        self.stream
            .send(Message::text(message.to_string()))
            .await
            .expect("send");
    }

    async fn subscribe(&mut self, channels: &[&str]) {
        self.send(json!({"op": "subscribe", "channels": channels}))
            .await;
    }

    /// The next JSON message, or `None` if none came within `within` (or the socket closed).
    async fn next(&mut self, within: Duration) -> Option<Value> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.stream.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    return Some(serde_json::from_str(&text).expect("JSON message"))
                }
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(_))) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Skips messages until one satisfies `wanted`.
    async fn until(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(message) if wanted(&message) => return message,
                Some(_) => continue,
                None => panic!("no message {what} within {WAIT:?}"),
            }
        }
    }

    /// Every message that arrives until the connection is quiet for `quiet`.
    async fn drain(&mut self, quiet: Duration) -> Vec<Value> {
        let mut messages = Vec::new();
        while let Some(message) = self.next(quiet).await {
            messages.push(message);
        }
        messages
    }
}

/// Price in micro-dollars to `(gpus, orders)`.
type Levels = BTreeMap<u64, (u64, u64)>;

/// `"2.15"` as micro-dollars.
fn micros(price: &str) -> u64 {
    let (whole, fraction) = price.split_once('.').unwrap_or((price, ""));
    let fraction = format!("{fraction:0<6}");
    whole.parse::<u64>().expect("whole dollars") * 1_000_000
        + fraction.parse::<u64>().expect("fraction")
}

/// A book kept from a snapshot and deltas by the rules a client follows.
#[derive(Debug, Default, PartialEq)]
struct LocalBook {
    seq: u64,
    bids: Levels,
    asks: Levels,
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Applied,
    AlreadyHad,
    Gap,
}

fn levels(list: &Value) -> Levels {
    list.as_array()
        .expect("levels")
        .iter()
        .map(|l| {
            (
                micros(l["price"].as_str().expect("price string")),
                (
                    l["gpus"].as_u64().expect("gpus"),
                    l["orders"].as_u64().expect("orders"),
                ),
            )
        })
        .collect()
}

impl LocalBook {
    fn from_snapshot(message: &Value) -> LocalBook {
        assert_eq!(message["type"], "snapshot", "{message}");
        LocalBook {
            seq: message["seq"].as_u64().expect("seq"),
            bids: levels(&message["bids"]),
            asks: levels(&message["asks"]),
        }
    }

    fn apply(&mut self, delta: &Value) -> Outcome {
        assert_eq!(delta["type"], "delta", "{delta}");
        let (prev, seq) = (
            delta["prev_seq"].as_u64().expect("prev_seq"),
            delta["seq"].as_u64().expect("seq"),
        );
        assert!(prev < seq, "a delta moves the seq forward: {delta}");
        if seq <= self.seq {
            return Outcome::AlreadyHad;
        }
        if prev > self.seq {
            return Outcome::Gap;
        }
        for change in delta["changes"].as_array().expect("changes") {
            let side = match change["side"].as_str() {
                Some("bid") => &mut self.bids,
                Some("ask") => &mut self.asks,
                other => panic!("side {other:?}"),
            };
            let price = micros(change["price"].as_str().expect("price"));
            let gpus = change["gpus"].as_u64().expect("gpus");
            if gpus == 0 {
                side.remove(&price);
            } else {
                side.insert(price, (gpus, change["orders"].as_u64().expect("orders")));
            }
        }
        self.seq = seq;
        Outcome::Applied
    }

    /// The best `depth` levels of each side, as REST `/book?depth=` shows them.
    fn top(&self, depth: usize) -> (Levels, Levels) {
        let bids = self.bids.iter().rev().take(depth).map(|(p, l)| (*p, *l));
        let asks = self.asks.iter().take(depth).map(|(p, l)| (*p, *l));
        (bids.collect(), asks.collect())
    }

    /// Applies every book message; panics on a gap.
    fn apply_all(&mut self, messages: &[Value], channel: &str) {
        for message in messages.iter().filter(|m| m["channel"] == channel) {
            match message["type"].as_str() {
                Some("delta") => assert_ne!(self.apply(message), Outcome::Gap, "{message}"),
                Some("snapshot") => *self = LocalBook::from_snapshot(message),
                _ => {}
            }
        }
    }
}

/// REST `/book` at full depth: its seq and levels.
async fn rest_book(app: &TestApp) -> LocalBook {
    let (status, body) = app
        .get(&format!("/v1/pools/{POOL}/book?depth=100"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    LocalBook {
        seq: body["seq"].as_u64().expect("seq"),
        bids: levels(&body["bids"]),
        asks: levels(&body["asks"]),
    }
}

/// Waits until the client's book, fed by what it receives, equals REST `/book`.
async fn converge(app: &TestApp, client: &mut WsClient, book: &mut LocalBook, channel: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let messages = client.drain(Duration::from_millis(300)).await;
        book.apply_all(&messages, channel);
        let rest = rest_book(app).await;
        if (rest.bids.clone(), rest.asks.clone()) == book.top(100) {
            assert!(
                rest.seq >= book.seq,
                "REST seq {} behind WS seq {}",
                rest.seq,
                book.seq
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the WebSocket book never matched REST:\nws   {book:?}\nrest {rest:?}"
        );
    }
}

async fn release(app: &TestApp, supplier: &str, block: &str, gpus: u32, price: &str) {
    app.release_block(supplier, block, gpus, price, 6).await;
}

async fn bid(app: &TestApp, buyer: &str, gpus: u32, price: &str) -> String {
    let (status, body) = app.bid(buyer, gpus, price).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["order"]["id"].as_str().expect("order id").to_owned()
}

#[tokio::test]
async fn book_snapshot_then_deltas_stay_equal_to_rest_book() {
    let app = TestApp::spawn().await;
    let supplier = token("sched", "supplier");
    let buyer = token("acme", "buyer");
    let channel = format!("book:{POOL}");
    let mut client = WsClient::connect(&app, None).await.expect("connect");
    client.subscribe(&[&channel]).await;
    let snapshot = client
        .until("book snapshot", |m| m["channel"] == channel)
        .await;
    let mut book = LocalBook::from_snapshot(&snapshot);
    assert!(book.bids.is_empty() && book.asks.is_empty(), "{snapshot}");

    // Asks at five prices, bids at seven (two of them cross and trade), then a cancel.
    for (i, price) in ["2.00", "2.10", "2.20", "2.30", "2.40"].iter().enumerate() {
        release(&app, &supplier, &format!("b{i}"), 8, price).await;
    }
    let mut orders = Vec::new();
    for price in ["1.50", "1.60", "1.70", "1.80", "1.90", "2.05", "2.15"] {
        orders.push(bid(&app, &buyer, 4, price).await);
    }
    let (status, body) = app
        .delete(&format!("/v1/orders/{}", orders[2]), Some(&buyer))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    converge(&app, &mut client, &mut book, &channel).await;
    // 2.05 and 2.15 each leased 4 of the 2.00 block's 8; 1.70 was cancelled.
    let bids: Vec<u64> = book.bids.keys().copied().collect();
    let asks: Vec<u64> = book.asks.keys().copied().collect();
    assert_eq!(
        bids,
        [1_500_000, 1_600_000, 1_800_000, 1_900_000],
        "{book:?}"
    );
    assert_eq!(
        asks,
        [2_100_000, 2_200_000, 2_300_000, 2_400_000],
        "{book:?}"
    );

    // A late subscriber's snapshot is the same book at the same seq.
    let mut late = WsClient::connect(&app, None).await.expect("connect");
    late.subscribe(&[&channel]).await;
    let snapshot = late
        .until("book snapshot", |m| m["channel"] == channel)
        .await;
    assert_eq!(LocalBook::from_snapshot(&snapshot), book);
}

#[tokio::test]
async fn a_missed_delta_shows_as_a_seq_gap_and_resubscribing_heals_it() {
    let app = TestApp::spawn().await;
    let supplier = token("sched", "supplier");
    let channel = format!("book:{POOL}");
    let mut client = WsClient::connect(&app, None).await.expect("connect");
    client.subscribe(&[&channel]).await;
    let snapshot = client
        .until("book snapshot", |m| m["channel"] == channel)
        .await;
    let mut book = LocalBook::from_snapshot(&snapshot);

    release(&app, &supplier, "b1", 8, "2.00").await;
    let lost = client
        .until("first delta", |m| {
            m["type"] == "delta" && m["channel"] == channel
        })
        .await;
    // The network "loses" it: this client never applies it.
    release(&app, &supplier, "b2", 8, "2.50").await;
    let next = client
        .until("second delta", |m| {
            m["type"] == "delta" && m["channel"] == channel
        })
        .await;
    assert_eq!(
        next["prev_seq"], lost["seq"],
        "deltas chain by seq: {lost} {next}"
    );
    assert_eq!(
        book.apply(&next),
        Outcome::Gap,
        "the gap is visible: {next}"
    );

    client.subscribe(&[&channel]).await;
    let fresh = client
        .until("new snapshot", |m| {
            m["type"] == "snapshot" && m["channel"] == channel
        })
        .await;
    book = LocalBook::from_snapshot(&fresh);
    assert!(book.seq >= next["seq"].as_u64().unwrap(), "{fresh}");
    let rest = rest_book(&app).await;
    assert_eq!((&book.bids, &book.asks), (&rest.bids, &rest.asks));
    assert_eq!(book.asks.len(), 2, "{book:?}");
}

#[tokio::test]
async fn private_channels_carry_only_the_tokens_own_account() {
    let app = TestApp::spawn().await;
    let supplier = token("sched", "supplier");
    let acme = token("acme", "buyer");
    let globex = token("globex", "buyer");

    // acme authenticates with the upgrade's header, globex with an auth message.
    let mut a = WsClient::connect(&app, Some(&acme)).await.expect("connect");
    a.subscribe(&["orders", "leases"]).await;
    let mut b = WsClient::connect(&app, None).await.expect("connect");
    b.send(json!({"op": "auth", "token": globex})).await;
    let authenticated = b
        .until("auth answer", |m| m["type"] == "authenticated")
        .await;
    assert_eq!(authenticated["account"], "globex");
    b.subscribe(&["orders", "leases"]).await;
    // Someone without a token watches the public trades and is refused the private channels.
    let mut public = WsClient::connect(&app, None).await.expect("connect");
    public
        .subscribe(&["leases", &format!("trades:{POOL}"), "capacity"])
        .await;
    let refused = public.until("refusal", |m| m["type"] == "error").await;
    assert_eq!(refused["code"], "unauthorized", "{refused}");
    assert_eq!(refused["channel"], "leases", "{refused}");
    for client in [&mut a, &mut b] {
        for channel in ["orders", "leases"] {
            client
                .until("subscribed", |m| {
                    m["type"] == "subscribed" && m["channel"] == channel
                })
                .await;
        }
    }

    release(&app, &supplier, "blk", 8, "2.00").await;
    let acme_order = bid(&app, &acme, 4, "2.10").await;
    let globex_order = bid(&app, &globex, 2, "1.50").await;
    let (status, body) = app
        .post(
            "/v1/capacity/blk/reclaim",
            Some(&supplier),
            json!({"gpus": 8, "notice_s": 120}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let of_a = a
        .until("acme's notice", |m| {
            m["channel"] == "leases" && m["event"] == "notice"
        })
        .await;
    let mut seen_a = vec![of_a];
    seen_a.extend(a.drain(Duration::from_millis(500)).await);
    let seen_b = b.drain(Duration::from_millis(800)).await;
    let seen_public = public.drain(Duration::from_millis(300)).await;

    let text_a = serde_json::to_string(&seen_a).unwrap();
    let text_b = serde_json::to_string(&seen_b).unwrap();
    assert!(
        !text_a.contains(&format!("\"id\":\"{globex_order}\"")),
        "{text_a}"
    );
    assert!(!text_a.contains("globex") && !text_b.contains("acme"));
    assert!(
        seen_b
            .iter()
            .any(|m| m["order"]["id"] == globex_order.as_str()),
        "globex sees its own bid: {text_b}"
    );
    assert!(
        seen_b
            .iter()
            .all(|m| m["channel"] == "orders" && m["order"]["id"] == globex_order.as_str()),
        "globex sees nothing else: {text_b}"
    );
    assert!(
        seen_b.iter().all(|m| m["channel"] != "leases"),
        "globex has no lease: {text_b}"
    );
    // acme's own story came through: its fill and lease name its order.
    assert!(
        text_a.contains(&format!("\"order_id\":\"{acme_order}\"")),
        "acme sees its lease and fill: {text_a}"
    );
    // The public capacity feed saw the lease and then its notice: 4 GPUs leased, all 4 of
    // them reclaiming, none idle (the unsold 4 left the book with the reclaim).
    let last_capacity = seen_public
        .iter()
        .filter(|m| m["channel"] == "capacity")
        .flat_map(|m| m["pools"].as_array().cloned().unwrap_or_default())
        .rfind(|p| p["pool"] == POOL)
        .expect("capacity updates for the pool");
    assert_eq!(
        (
            &last_capacity["idle_gpus"],
            &last_capacity["leased_gpus"],
            &last_capacity["reclaiming_gpus"]
        ),
        (&json!(0), &json!(4), &json!(4)),
        "{last_capacity}"
    );
    // The public tape names no one.
    let tape = serde_json::to_string(&seen_public).unwrap();
    assert!(tape.contains("\"trades\""), "{tape}");
    for name in ["acme", "globex", "sched", "blk"] {
        assert!(!tape.contains(name), "{name} in the public tape: {tape}");
    }
}

#[tokio::test]
async fn a_bad_token_is_refused_at_the_upgrade() {
    let app = TestApp::spawn().await;
    match WsClient::connect(&app, Some("not-a-jwt")).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED.as_u16())
        }
        Err(other) => panic!("expected 401, got {other}"),
        Ok(_) => panic!("a bad token was accepted"),
    }
    // And in an auth message it is an error, the connection stays usable for public data.
    let mut client = WsClient::connect(&app, None).await.expect("connect");
    client
        .send(json!({"op": "auth", "token": "not-a-jwt"}))
        .await;
    let refused = client.until("refusal", |m| m["type"] == "error").await;
    assert_eq!(refused["code"], "unauthorized");
    client.subscribe(&["capacity"]).await;
    let capacity = client
        .until("capacity", |m| m["channel"] == "capacity")
        .await;
    assert_eq!(capacity["type"], "snapshot", "{capacity}");
}

/// The server's end of the TCP connection from `client_port` to `server_port`, as `ss` shows it
/// (state and queues), if the kernel still has it.
fn server_side_socket(server_port: u16, client_port: u16) -> Option<String> {
    let filter = format!("( sport = :{server_port} and dport = :{client_port} )");
    let out = std::process::Command::new("ss")
        .args(["-H", "-t", "-n", "-a", &filter])
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!text.is_empty()).then_some(text)
}

#[tokio::test]
async fn a_slow_client_is_dropped_while_a_reading_client_keeps_up() {
    let app = TestApp::spawn().await;
    let supplier = token("sched", "supplier");
    let buyer = token("acme", "buyer");
    let channel = format!("book:{POOL}");

    // A deep book (1,000 ask levels) makes every snapshot ~40 KB.
    for chunk in 0..10u32 {
        let releases = (0..100u32).map(|j| {
            let i = chunk * 100 + j;
            let price = format!("{}.{:02}", 3 + i / 100, i % 100);
            let (app, supplier) = (&app, &supplier);
            async move {
                app.post(
                    "/v1/capacity",
                    Some(supplier),
                    json!({"block_id": format!("b{i}"), "pool": POOL, "gpus": 1 + i % 7,
                           "reserve_price": price, "available_until": rfc3339_in(6 * 3600)}),
                )
                .await
            }
        });
        for (status, body) in futures_util::future::join_all(releases).await {
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
    }

    let mut reader = WsClient::connect(&app, None).await.expect("connect");
    reader.subscribe(&[&channel]).await;
    let snapshot = reader
        .until("book snapshot", |m| m["channel"] == channel)
        .await;
    let mut book = LocalBook::from_snapshot(&snapshot);
    let mut slow = WsClient::connect_tiny_buffer(&app).await;
    let slow_port = slow.local_port();
    assert_eq!(app.metric("offpeak_ws_connections").await, 2);

    // The slow client asks for snapshot after snapshot (as fast as its rate limit allows) and
    // reads nothing, while the book keeps changing. The reader must get fresh deltas all along.
    let started = Instant::now();
    let mut longest_silence = Duration::ZERO;
    let mut last_message = Instant::now();
    let mut last_subscribe = Instant::now() - Duration::from_secs(1);
    let mut price_cents = 100u32;
    let mut open_order: Option<String> = None;
    for _ in 0..100 {
        slow.subscribe(&[&channel]).await;
    }
    loop {
        if last_subscribe.elapsed() >= Duration::from_millis(60) {
            slow.subscribe(&[&channel]).await;
            last_subscribe = Instant::now();
        }
        // A bid placed and, a level later, cancelled: the book changes, the open orders do not grow.
        price_cents = if price_cents >= 190 {
            100
        } else {
            price_cents + 1
        };
        let order = bid(
            &app,
            &buyer,
            1,
            &format!("{}.{:02}", price_cents / 100, price_cents % 100),
        )
        .await;
        if let Some(previous) = open_order.replace(order) {
            let (status, body) = app
                .delete(&format!("/v1/orders/{previous}"), Some(&buyer))
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        let messages = reader.drain(Duration::from_millis(20)).await;
        if !messages.is_empty() {
            longest_silence = longest_silence.max(last_message.elapsed());
            last_message = Instant::now();
        }
        book.apply_all(&messages, &channel);
        if app.metric("offpeak_ws_clients_dropped_total").await == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "the slow client was not dropped within 40 s"
        );
    }
    assert!(
        longest_silence < Duration::from_secs(2),
        "the reader waited {longest_silence:?} for an update while the slow client stalled"
    );
    converge(&app, &mut reader, &mut book, &channel).await;
    assert!(app.metric("offpeak_ws_clients_coalesced_total").await >= 1);

    // The slow client never read its close frame: the server resets the connection a bound
    // later, so its socket (and the megabytes stuck in its send queue) is gone from the
    // server's side while the client still holds its own end.
    let gone = timeout(Duration::from_secs(10), async {
        while server_side_socket(app.port, slow_port).is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        gone.is_ok(),
        "the dropped client's socket is still open on the server: {:?}",
        server_side_socket(app.port, slow_port)
    );
    assert_eq!(app.metric("offpeak_ws_connections").await, 1);

    // Reading the slow client now ends in the server's close, not in a stream that goes on.
    let ended = timeout(Duration::from_secs(20), async {
        loop {
            match slow.stream.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.reason.to_string()),
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return None,
            }
        }
    })
    .await;
    let reason = ended.expect("the slow client's connection did not end");
    if let Some(reason) = reason {
        assert_eq!(reason, "slow_consumer");
    }
    // The reader is still connected and served.
    assert_eq!(app.metric("offpeak_ws_connections").await, 1);
}

#[tokio::test]
async fn a_graceful_shutdown_closes_websockets_as_going_away_at_once() {
    let app = TestApp::spawn().await;
    let mut client = WsClient::connect(&app, None).await.expect("connect");
    client.subscribe(&["capacity"]).await;
    client
        .until("capacity snapshot", |m| m["channel"] == "capacity")
        .await;
    let started = Instant::now();
    let stopping = tokio::spawn(app.stop());
    let close = timeout(Duration::from_secs(5), async {
        loop {
            match client.stream.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return None,
            }
        }
    })
    .await
    .expect("the server closed the connection within 5 s")
    .expect("with a close frame");
    assert_eq!(
        close.code,
        tungstenite::protocol::frame::coding::CloseCode::Away
    );
    assert_eq!(close.reason.as_str(), "server_shutting_down");
    stopping.await.expect("stop task");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the shutdown waited for the WebSocket: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_handoff_reaches_only_the_buyer_and_its_supplier() {
    let app = TestApp::spawn().await;
    let (buyer, supplier) = (token("acme", "buyer"), token("dc1", "supplier"));
    let mut mine = WsClient::connect(&app, Some(&buyer)).await.expect("buyer");
    mine.subscribe(&["leases"]).await;
    let mut theirs = WsClient::connect(&app, Some(&supplier))
        .await
        .expect("supplier");
    theirs.subscribe(&["blocks"]).await;
    let mut public = WsClient::connect(&app, None).await.expect("viewer");
    public
        .subscribe(&[
            &format!("book:{POOL}"),
            &format!("trades:{POOL}"),
            "capacity",
        ])
        .await;
    for client in [&mut mine, &mut theirs] {
        client
            .until("subscribed", |m| m["type"] == "subscribed")
            .await;
    }
    release(&app, &supplier, "b1", 4, "1.50").await;
    let key = crate::handoff::ED25519_KEY;
    let (status, placed) = app
        .post(
            "/v1/orders",
            Some(&buyer),
            json!({"pool": POOL, "gpus": 4, "price": "2.00", "duration_s": 3600,
                   "ssh_public_keys": [key]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    let id = placed["leases"][0]["id"].as_str().unwrap().to_owned();

    // The supplier's provisioner learns the lease and the buyer's keys on `blocks`.
    let opened = theirs
        .until("the supplier's lease_opened", |m| {
            m["channel"] == "blocks" && m["event"] == "lease_opened"
        })
        .await;
    assert_eq!(opened["lease"]["id"], id.as_str());
    assert_eq!(opened["lease"]["ssh_public_keys"], json!([key]));
    let (status, body) = app
        .post(
            &format!("/v1/capacity/b1/leases/{id}/ready"),
            Some(&supplier),
            json!({"endpoints": [{"host": "10.1.0.1", "port": 22, "user": "ubuntu"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ready = mine
        .until("the buyer's lease_ready", |m| {
            m["channel"] == "leases" && m["event"] == "lease_ready"
        })
        .await;
    assert_eq!(ready["lease"]["access"]["endpoints"][0]["host"], "10.1.0.1");
    theirs
        .until("the supplier's lease_ready", |m| {
            m["channel"] == "blocks" && m["event"] == "lease_ready"
        })
        .await;
    // Nothing of it on any public channel.
    let seen = public.drain(Duration::from_millis(500)).await;
    assert!(!seen.is_empty(), "the public channels carried the trade");
    for message in seen {
        let text = message.to_string();
        assert!(
            !text.contains("10.1.0.1") && !text.contains("ssh-ed25519") && !text.contains("acme"),
            "a public message carries private data: {text}"
        );
    }
}
