//! The hub: one task that owns every WebSocket client's subscriptions and fans the feed out.
//!
//! Being the only sender into each client's queue, the hub orders a channel's snapshot before
//! its deltas without any locking between them. It never waits on a client: it `try_send`s into
//! the client's bounded queue. A full queue coalesces the client (its book, trades and capacity
//! channels skip updates and are owed a fresh snapshot, latest state wins); a client that stays
//! coalesced for [`WS_CLIENT_LAG_MAX`], or that would lose a private event, is dropped.

use crate::feed::{Changes, Feed};
use crate::limits::{
    FEED_PUBLISH_INTERVAL, WS_CLIENT_LAG_MAX, WS_CLIENT_QUEUE_BYTES_MAX,
    WS_CLIENT_QUEUE_MESSAGES_MAX, WS_HUB_COMMANDS_MAX,
};
use crate::metrics::{Reading, ReadingKind, Readings};
use crate::wire::ws::{self as protocol, Channel, Frame};
use actix_web::web::Bytes;
use matching_engine::Name;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::{Instant, MissedTickBehavior};

/// A connection's id, unique for the hub's life.
pub type ClientId = u64;

/// A client's bounded send queue: at most [`WS_CLIENT_QUEUE_MESSAGES_MAX`] frames and
/// [`WS_CLIENT_QUEUE_BYTES_MAX`] bytes wait for its socket.
pub fn client_queue() -> (QueueSender, QueueReceiver) {
    let (frames, receiver) = mpsc::channel(WS_CLIENT_QUEUE_MESSAGES_MAX);
    let bytes = Arc::new(Semaphore::new(WS_CLIENT_QUEUE_BYTES_MAX));
    (
        QueueSender {
            frames,
            bytes: bytes.clone(),
        },
        QueueReceiver {
            frames: receiver,
            bytes,
        },
    )
}

/// What waits in a client's queue for its socket.
pub enum Outgoing {
    /// A JSON message.
    Text(Frame),
    /// A WebSocket ping (heartbeat).
    Ping,
    /// The answer to the client's ping.
    Pong(Bytes),
}

impl Outgoing {
    /// What it costs of the byte budget (a frame larger than the budget costs all of it).
    fn cost(&self) -> u32 {
        let bytes = match self {
            Outgoing::Text(frame) => frame.len(),
            Outgoing::Ping => 0,
            Outgoing::Pong(payload) => payload.len(),
        };
        // Framing overhead, so that even empty frames count.
        (bytes + 8).min(WS_CLIENT_QUEUE_BYTES_MAX) as u32
    }
}

/// The sending end of a client queue: the hub's, and the session's for its own answers.
#[derive(Clone)]
pub struct QueueSender {
    frames: mpsc::Sender<Outgoing>,
    bytes: Arc<Semaphore>,
}

/// The session's end of a client queue.
pub struct QueueReceiver {
    frames: mpsc::Receiver<Outgoing>,
    bytes: Arc<Semaphore>,
}

/// Why a frame was not queued.
#[derive(Debug)]
pub enum TrySend {
    /// The queue is at its bound.
    Full,
    /// The session is gone.
    Closed,
}

impl QueueSender {
    /// Queues a JSON message without waiting.
    pub fn try_send(&self, frame: Frame) -> Result<(), TrySend> {
        self.try_send_outgoing(Outgoing::Text(frame))
    }

    /// Queues any frame without waiting.
    pub fn try_send_outgoing(&self, frame: Outgoing) -> Result<(), TrySend> {
        let slot = self.frames.try_reserve().map_err(|e| match e {
            mpsc::error::TrySendError::Full(()) => TrySend::Full,
            mpsc::error::TrySendError::Closed(()) => TrySend::Closed,
        })?;
        let bytes = self
            .bytes
            .try_acquire_many(frame.cost())
            .map_err(|_| TrySend::Full)?;
        // The session gives the bytes back when it takes the frame out.
        bytes.forget();
        slot.send(frame);
        Ok(())
    }

    /// Whether the queue has drained enough to be worth building snapshots for.
    fn has_room(&self) -> bool {
        self.frames.capacity() > 0
            && self.bytes.available_permits() >= WS_CLIENT_QUEUE_BYTES_MAX / 2
    }
}

impl QueueReceiver {
    /// The next frame; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Outgoing> {
        let frame = self.frames.recv().await?;
        self.bytes.add_permits(frame.cost() as usize);
        Some(frame)
    }
}

/// Why the hub cut a client off: sent to its session, which closes the socket with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kick {
    /// Its queue stayed full for longer than the limit.
    SlowConsumer,
    /// A private event could not be delivered (queue full or the feed overflowed).
    PrivateEventsLost,
    /// The server is shutting down; the client should reconnect (to it or another).
    ShuttingDown,
}

impl Kick {
    /// The close reason sent to the client.
    pub fn reason(self) -> &'static str {
        match self {
            Kick::SlowConsumer => "slow_consumer",
            Kick::PrivateEventsLost => "private_events_lost",
            Kick::ShuttingDown => "server_shutting_down",
        }
    }
}

/// What sessions ask of the hub.
enum Command {
    Join {
        client: ClientId,
        queue: QueueSender,
        kick: oneshot::Sender<Kick>,
    },
    Authenticated {
        client: ClientId,
        account: Name,
    },
    Subscribe {
        client: ClientId,
        channels: Vec<Channel>,
    },
    Unsubscribe {
        client: ClientId,
        channels: Vec<Channel>,
    },
    Leave {
        client: ClientId,
    },
    CloseAll,
}

/// Counters for `/metrics` and the load test.
#[derive(Debug, Default)]
pub struct HubStats {
    /// Open connections (sessions between upgrade and close).
    pub connections: AtomicUsize,
    /// Clients dropped for being too slow or losing private events, since start.
    pub clients_dropped: AtomicU64,
    /// Times a client's queue was full and it was coalesced, since start.
    pub clients_coalesced: AtomicU64,
}

impl Readings for HubStats {
    fn readings(&self) -> Vec<Reading> {
        vec![
            Reading {
                name: "ws_connections",
                help: "Open WebSocket connections",
                kind: ReadingKind::Gauge,
                value: self.connections.load(Ordering::Relaxed) as u64,
            },
            Reading {
                name: "ws_clients_dropped",
                help: "WebSocket clients dropped for being too slow or losing private events",
                kind: ReadingKind::Counter,
                value: self.clients_dropped.load(Ordering::Relaxed),
            },
            Reading {
                name: "ws_clients_coalesced",
                help: "Times a WebSocket client's queue was full and its updates were coalesced",
                kind: ReadingKind::Counter,
                value: self.clients_coalesced.load(Ordering::Relaxed),
            },
        ]
    }
}

/// The sessions' handle on the hub.
#[derive(Clone)]
pub struct Hub {
    commands: mpsc::Sender<Command>,
    next_client: Arc<AtomicU64>,
    /// Shared counters.
    pub stats: Arc<HubStats>,
    /// The feed the hub publishes (sessions read pool names from it).
    pub feed: Arc<Feed>,
}

impl Hub {
    /// Starts the hub task on the current tokio runtime; it ends when every handle is gone,
    /// and the returned receiver resolves then.
    pub fn start(feed: Arc<Feed>) -> (Hub, oneshot::Receiver<()>) {
        let (ended, hub_ended) = oneshot::channel();
        let (commands, receiver) = mpsc::channel(WS_HUB_COMMANDS_MAX);
        let stats = Arc::new(HubStats::default());
        let task = HubTask {
            feed: feed.clone(),
            clients: HashMap::new(),
            private_listeners: 0,
            stats: stats.clone(),
        };
        tokio::spawn(async move {
            task.run(receiver).await;
            let _ = ended.send(());
        });
        let hub = Hub {
            commands,
            next_client: Arc::new(AtomicU64::new(1)),
            stats,
            feed,
        };
        (hub, hub_ended)
    }

    /// Registers a client and its queue; the hub sends it `Kick` if it cuts it off.
    pub async fn join(&self, queue: QueueSender) -> (ClientId, oneshot::Receiver<Kick>) {
        let client = self.next_client.fetch_add(1, Ordering::Relaxed);
        let (kick, kicked) = oneshot::channel();
        self.send(Command::Join {
            client,
            queue,
            kick,
        })
        .await;
        (client, kicked)
    }

    /// Records the account whose private events the client may receive.
    pub async fn authenticated(&self, client: ClientId, account: Name) {
        self.send(Command::Authenticated { client, account }).await
    }

    /// Subscribes; each channel's snapshot (or `subscribed`) comes before its updates.
    pub async fn subscribe(&self, client: ClientId, channels: Vec<Channel>) {
        self.send(Command::Subscribe { client, channels }).await
    }

    /// Unsubscribes.
    pub async fn unsubscribe(&self, client: ClientId, channels: Vec<Channel>) {
        self.send(Command::Unsubscribe { client, channels }).await
    }

    /// Forgets a client.
    pub async fn leave(&self, client: ClientId) {
        self.send(Command::Leave { client }).await
    }

    /// Closes every connection (going away), so that a graceful shutdown need not wait for
    /// long-lived WebSocket connections to end by themselves.
    pub async fn close_all(&self) {
        self.send(Command::CloseAll).await
    }

    async fn send(&self, command: Command) {
        // The hub only stops when every handle is dropped, so this cannot fail while we hold
        // one; if it ever did, the session simply gets no more messages and times out.
        let _ = self.commands.send(command).await;
    }
}

struct Client {
    queue: QueueSender,
    kick: Option<oneshot::Sender<Kick>>,
    account: Option<Name>,
    channels: HashSet<Channel>,
    /// Channels whose next message must be a snapshot: new subscriptions, and those that
    /// skipped updates while the queue was full.
    owed: Vec<Channel>,
    /// Since when the queue has been too full to take what the client is owed.
    lagging_since: Option<Instant>,
    /// The hub cut it off (counted as dropped when it is removed).
    kicked: bool,
}

enum Delivery {
    Sent,
    /// The queue is full; the channel is now owed a snapshot.
    Coalesced,
    /// The session is gone or was kicked.
    Gone,
}

impl Client {
    fn is_owed(&self, channel: &Channel) -> bool {
        self.owed.contains(channel)
    }

    fn owe(&mut self, channel: Channel, now: Instant) {
        if !self.owed.contains(&channel) {
            self.owed.push(channel);
        }
        self.lagging_since.get_or_insert(now);
    }

    fn kick(&mut self, why: Kick) {
        if let Some(kick) = self.kick.take() {
            let _ = kick.send(why);
            // A shutdown is not the client's fault: only the others count as drops.
            self.kicked = why != Kick::ShuttingDown;
        }
    }

    /// Sends an update of `channel`, unless it is owed a snapshot anyway.
    fn deliver(&mut self, channel: &Channel, frame: &Frame, now: Instant) -> Delivery {
        if self.kick.is_none() {
            return Delivery::Gone;
        }
        if self.is_owed(channel) {
            return Delivery::Coalesced;
        }
        match self.queue.try_send(frame.clone()) {
            Ok(()) => Delivery::Sent,
            Err(TrySend::Full) => {
                if channel.is_private() {
                    self.kick(Kick::PrivateEventsLost);
                    return Delivery::Gone;
                }
                if self.lagging_since.is_none() {
                    tracing::debug!(channel = %channel.name(), "WebSocket client queue full; coalescing");
                }
                self.owe(channel.clone(), now);
                Delivery::Coalesced
            }
            Err(TrySend::Closed) => {
                self.kick = None;
                Delivery::Gone
            }
        }
    }
}

struct HubTask {
    feed: Arc<Feed>,
    clients: HashMap<ClientId, Client>,
    /// How many clients listen on a private channel: the feed keeps private events only while
    /// some do. Counted as clients change, not by walking them all on every command.
    private_listeners: usize,
    stats: Arc<HubStats>,
}

impl HubTask {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut lag_check = tokio::time::interval(FEED_PUBLISH_INTERVAL);
        lag_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Publishing is throttled: at most once per interval, at once when the book was quiet.
        let mut last_publish = Instant::now() - FEED_PUBLISH_INTERVAL;
        let mut publish_due: Option<Instant> = None;
        let feed = self.feed.clone();
        self.feed.set_private_listeners(false);
        loop {
            let sleep_until = publish_due.unwrap_or_else(|| Instant::now() + WS_CLIENT_LAG_MAX);
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(command) => self.handle(command),
                    None => return,
                },
                _ = tokio::time::sleep_until(sleep_until), if publish_due.is_some() => {
                    publish_due = None;
                    last_publish = Instant::now();
                    let changes = self.feed.take_changes();
                    self.publish(changes);
                }
                _ = feed.changed(), if publish_due.is_none() => {
                    publish_due = Some((last_publish + FEED_PUBLISH_INTERVAL).max(Instant::now()));
                }
                _ = lag_check.tick() => self.settle_all(),
            }
        }
    }

    fn handle(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Join {
                client,
                queue,
                kick,
            } => {
                self.clients.insert(
                    client,
                    Client {
                        queue,
                        kick: Some(kick),
                        account: None,
                        channels: HashSet::new(),
                        owed: Vec::new(),
                        lagging_since: None,
                        kicked: false,
                    },
                );
            }
            Command::Authenticated { client, account } => {
                let listened = self.listens_privately(client);
                if let Some(c) = self.clients.get_mut(&client) {
                    c.account = Some(account);
                }
                self.recount_private_listener(client, listened);
            }
            Command::Subscribe { client, channels } => {
                let listened = self.listens_privately(client);
                if let Some(c) = self.clients.get_mut(&client) {
                    for channel in channels {
                        c.channels.insert(channel.clone());
                        // Subscribing again (gap healing) just owes a fresh snapshot.
                        c.owe(channel, now);
                    }
                }
                // Before `subscribed` goes out: every event committed after it is kept.
                self.recount_private_listener(client, listened);
                self.settle(client, now);
            }
            Command::Unsubscribe { client, channels } => {
                let listened = self.listens_privately(client);
                if let Some(c) = self.clients.get_mut(&client) {
                    for channel in channels {
                        c.channels.remove(&channel);
                        c.owed.retain(|owed| owed != &channel);
                        // Best effort: a client too slow to take it will see its updates stop.
                        let _ = c.queue.try_send(protocol::unsubscribed(&channel));
                    }
                }
                self.recount_private_listener(client, listened);
            }
            Command::Leave { client } => self.remove(client),
            Command::CloseAll => {
                for client in self.clients.values_mut() {
                    client.kick(Kick::ShuttingDown);
                }
                self.clients.clear();
                self.private_listeners = 0;
                self.feed.set_private_listeners(false);
            }
        }
    }

    /// The message that brings a client up to date on one channel.
    fn snapshot(&self, channel: &Channel) -> Frame {
        match channel {
            Channel::Book(pool) => match self.feed.book_for_snapshot(pool) {
                Some(book) => protocol::book_snapshot(pool, &book),
                None => protocol::error("unknown_pool", "no such pool", Some(&channel.name())),
            },
            Channel::Trades(pool) => match self.feed.recent_trades(pool) {
                Some(trades) => protocol::trades(pool, "snapshot", &trades),
                None => protocol::error("unknown_pool", "no such pool", Some(&channel.name())),
            },
            Channel::Capacity => protocol::capacity("snapshot", &self.feed.capacity()),
            Channel::Orders | Channel::Leases | Channel::Blocks => protocol::subscribed(channel),
        }
    }

    /// Sends a client what it is owed, as far as its queue allows; drops it if it has been
    /// lagging too long.
    fn settle(&mut self, client: ClientId, now: Instant) {
        let Some(c) = self.clients.get(&client) else {
            return;
        };
        if c.owed.is_empty() {
            return;
        }
        let owed = c.owed.clone();
        let mut settled = 0;
        for channel in &owed {
            let Some(c) = self.clients.get(&client) else {
                return;
            };
            // No snapshot is built for a queue that is still mostly full.
            if !c.queue.has_room() {
                break;
            }
            match c.queue.try_send(self.snapshot(channel)) {
                Ok(()) => settled += 1,
                Err(_) => break,
            }
        }
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        c.owed.drain(..settled);
        if c.owed.is_empty() {
            c.lagging_since = None;
        } else if c
            .lagging_since
            .is_some_and(|since| now.duration_since(since) > WS_CLIENT_LAG_MAX)
        {
            tracing::info!(
                client,
                lag_ms = WS_CLIENT_LAG_MAX.as_millis() as u64,
                "dropping a WebSocket client that stopped reading"
            );
            c.kick(Kick::SlowConsumer);
            self.remove(client);
        }
    }

    /// Whether this client listens on a private channel.
    fn listens_privately(&self, client: ClientId) -> bool {
        self.clients
            .get(&client)
            .is_some_and(|c| c.account.is_some() && c.channels.iter().any(Channel::is_private))
    }

    /// Counts the client in or out after a change (`listened`: whether it did before), and
    /// tells the feed whether anyone listens on a private channel now.
    fn recount_private_listener(&mut self, client: ClientId, listened: bool) {
        match (listened, self.listens_privately(client)) {
            (false, true) => self.private_listeners += 1,
            (true, false) => self.private_listeners -= 1,
            _ => return,
        }
        self.feed.set_private_listeners(self.private_listeners > 0);
    }

    fn remove(&mut self, client: ClientId) {
        let listened = self.listens_privately(client);
        if let Some(c) = self.clients.remove(&client) {
            self.recount_private_listener(client, listened);
            if c.kicked {
                self.stats.clients_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn settle_all(&mut self) {
        let now = Instant::now();
        let lagging: Vec<ClientId> = self
            .clients
            .iter()
            .filter(|(_, c)| !c.owed.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for client in lagging {
            self.settle(client, now);
        }
    }

    /// Sends everything that changed to the clients subscribed to it.
    fn publish(&mut self, changes: Changes) {
        let now = Instant::now();
        let mut frames: Vec<(Channel, Option<Frame>)> = Vec::new();
        for (pool, delta) in &changes.books {
            frames.push((
                Channel::Book(pool.clone()),
                Some(protocol::book_delta(pool, delta)),
            ));
        }
        for (pool, trades) in &changes.trades {
            let frame = trades
                .as_ref()
                .map(|trades| protocol::trades(pool, "trades", trades));
            // `None`: trades were lost to the pending bound; subscribers get a snapshot.
            frames.push((Channel::Trades(pool.clone()), frame));
        }
        if !changes.capacity.is_empty() {
            frames.push((
                Channel::Capacity,
                Some(protocol::capacity("update", &changes.capacity)),
            ));
        }
        // Only for accounts a client listens for: most orders' events have no one to hear
        // them, and serializing each was a tenth of the server's CPU under order entry.
        let listening: HashSet<&str> = self
            .clients
            .values()
            .filter(|client| client.channels.iter().any(Channel::is_private))
            .filter_map(|client| client.account.as_deref())
            .collect();
        let mut private: HashMap<&str, Vec<(Channel, Frame)>> = HashMap::new();
        for (account, event) in &changes.private {
            if listening.contains(&**account) {
                private
                    .entry(account)
                    .or_default()
                    .push(protocol::private(event));
            }
        }

        let mut gone: Vec<ClientId> = Vec::new();
        let mut coalesced = 0u64;
        for (&id, client) in self.clients.iter_mut() {
            let mut alive = true;
            for (channel, frame) in &frames {
                if !client.channels.contains(channel) {
                    continue;
                }
                match frame {
                    Some(frame) => match client.deliver(channel, frame, now) {
                        Delivery::Sent => {}
                        Delivery::Coalesced => coalesced += 1,
                        Delivery::Gone => alive = false,
                    },
                    None => client.owe(channel.clone(), now),
                }
            }
            if changes.private_overflowed
                && client.channels.iter().any(Channel::is_private)
                && client.account.is_some()
            {
                client.kick(Kick::PrivateEventsLost);
                alive = false;
            }
            if let Some(account) = client.account.as_deref() {
                for (channel, frame) in private.get(account).into_iter().flatten() {
                    if alive && client.channels.contains(channel) {
                        if let Delivery::Gone = client.deliver(channel, frame, now) {
                            alive = false;
                        }
                    }
                }
            }
            if !alive {
                gone.push(id);
            }
        }
        for id in gone {
            self.remove(id);
        }
        self.stats
            .clients_coalesced
            .fetch_add(coalesced, Ordering::Relaxed);
        self.settle_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use matching_engine::{Event, PriceMicros, Side, TimeMs};
    use std::time::Duration;

    /// One batch that sets `levels` bid levels of pool `p` to `gpus` each.
    fn levels(levels: u64, gpus: u64) -> Vec<Event> {
        (1..=levels)
            .map(|i| Event::BookLevelChanged {
                pool: Name::from("p"),
                side: Side::Bid,
                price: PriceMicros(i * 10_000),
                gpus,
                orders: 1,
            })
            .collect()
    }

    /// The next frame's JSON, or `None` when none comes within 200 ms.
    async fn next(queue: &mut QueueReceiver) -> Option<serde_json::Value> {
        match tokio::time::timeout(Duration::from_millis(200), queue.recv()).await {
            Ok(Some(Outgoing::Text(frame))) => Some(serde_json::from_str(&frame).unwrap()),
            _ => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_falls_behind_is_coalesced_then_caught_up_by_a_snapshot() {
        let feed = Arc::new(Feed::new());
        feed.publish(1, TimeMs(1), &levels(1, 1));
        let (hub, _ended) = Hub::start(feed.clone());
        let (queue, mut frames) = client_queue();
        let (client, mut kicked) = hub.join(queue).await;
        hub.subscribe(client, vec![Channel::Book(Name::from("p"))])
            .await;
        let snapshot = next(&mut frames).await.expect("snapshot");
        assert_eq!(
            (&snapshot["type"], &snapshot["seq"]),
            (&"snapshot".into(), &1.into())
        );

        // ~40 KB deltas, 20 a second, and the client reads nothing: the 1 MiB queue fills.
        for seq in 2..=60u64 {
            feed.publish(seq, TimeMs(seq as i64), &levels(1_000, seq));
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        assert!(hub.stats.clients_coalesced.load(Ordering::Relaxed) > 0);
        assert!(
            kicked.try_recv().is_err(),
            "not dropped within the lag bound"
        );

        // It reads again: it gets what was queued, then one snapshot of the latest book.
        let mut last = None;
        while let Some(message) = next(&mut frames).await {
            last = Some(message);
        }
        let last = last.expect("frames");
        assert_eq!(last["type"], "snapshot", "{last}");
        assert_eq!(last["seq"], 60);
        assert_eq!(last["bids"][0]["gpus"], 60, "latest state wins");
        assert!(kicked.try_recv().is_err());
        assert_eq!(hub.stats.clients_dropped.load(Ordering::Relaxed), 0);
    }

    /// Whether the feed keeps private events once the hub handled every command sent so far:
    /// it takes them in order, so once a new probe's subscription is answered, all were.
    async fn keeps_private_events(hub: &Hub, feed: &Feed) -> bool {
        let (queue, mut frames) = client_queue();
        let (probe, _) = hub.join(queue).await;
        hub.subscribe(probe, vec![Channel::Capacity]).await;
        next(&mut frames).await.expect("the probe's answer");
        hub.leave(probe).await;
        feed.keeps_private_events()
    }

    #[tokio::test]
    async fn the_feed_keeps_private_events_exactly_while_a_client_listens_for_them() {
        let feed = Arc::new(Feed::new());
        let (hub, _ended) = Hub::start(feed.clone());
        assert!(!keeps_private_events(&hub, &feed).await, "no client yet");

        let (first_queue, _first_frames) = client_queue();
        let (first, _) = hub.join(first_queue).await;
        hub.authenticated(first, Name::from("acme")).await;
        hub.subscribe(first, vec![Channel::Book(Name::from("p"))])
            .await;
        assert!(
            !keeps_private_events(&hub, &feed).await,
            "a public channel only"
        );
        hub.subscribe(first, vec![Channel::Orders]).await;
        assert!(keeps_private_events(&hub, &feed).await);

        let (second_queue, _second_frames) = client_queue();
        let (second, _) = hub.join(second_queue).await;
        hub.subscribe(second, vec![Channel::Blocks]).await;
        hub.authenticated(second, Name::from("dc1")).await;
        hub.unsubscribe(first, vec![Channel::Orders]).await;
        assert!(
            keeps_private_events(&hub, &feed).await,
            "the second listens once authenticated"
        );
        hub.leave(second).await;
        assert!(!keeps_private_events(&hub, &feed).await, "no one listens");
        hub.subscribe(first, vec![Channel::Leases]).await;
        assert!(keeps_private_events(&hub, &feed).await);
        hub.close_all().await;
        assert!(
            !keeps_private_events(&hub, &feed).await,
            "every client closed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stays_behind_past_the_lag_bound_is_dropped() {
        let feed = Arc::new(Feed::new());
        feed.publish(1, TimeMs(1), &levels(1, 1));
        let (hub, _ended) = Hub::start(feed.clone());
        let (queue, _frames) = client_queue();
        let (client, kicked) = hub.join(queue).await;
        hub.subscribe(client, vec![Channel::Book(Name::from("p"))])
            .await;
        let mut seq = 2;
        let kick = tokio::time::timeout(Duration::from_secs(30), async {
            let mut kicked = kicked;
            loop {
                feed.publish(seq, TimeMs(seq as i64), &levels(1_000, seq));
                seq += 1;
                tokio::select! {
                    kick = &mut kicked => return kick,
                    _ = tokio::time::sleep(Duration::from_millis(60)) => {}
                }
            }
        })
        .await
        .expect("dropped within 30 s");
        assert_eq!(
            kick.expect("a kick, not a closed channel"),
            Kick::SlowConsumer
        );
        assert_eq!(hub.stats.clients_dropped.load(Ordering::Relaxed), 1);
    }
}
