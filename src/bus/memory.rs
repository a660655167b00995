//! The in-process bus, used when `REDIS_URL` is unset: Redis's streams, consumer group,
//! pub/sub and hashes, as far as offpeak uses them, in one process's memory.
//!
//! Buses are kept by prefix ([`MemoryBus::named`]) for as long as someone holds one, so a
//! second server in the same process (a restart in a test) finds the same streams, pending
//! entries and all, as it would find them in Redis. Its client-side methods (`add`, `range`,
//! `hash`, `subscribe`, `read_as`, `rewind_group`) are what a producer or a follower would do
//! with `redis-cli`; the tests drive it through them.
//!
//! Every capped stream is trimmed exactly to its limit (Redis's `MAXLEN ~` trims roughly).

use super::{
    Bus, BusError, EntryId, Fields, Keys, LeaseEventEntry, MarketUpdate, Settlement, SignalEntry,
    CONSUMER_GROUP,
};
use crate::limits::{
    LEASE_EVENTS_STREAM_LEN_MAX, MEMORY_BUS_CHANNEL_MESSAGES_MAX, SIGNAL_DEAD_STREAM_LEN_MAX,
    SIGNAL_RESULTS_STREAM_LEN_MAX,
};
use crate::timestamp::now_ms;
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, Notify};

/// One entry delivered and not yet acknowledged.
#[derive(Clone, Debug)]
struct Pending {
    consumer: String,
    delivered_at: Instant,
    deliveries: u64,
}

/// A consumer group's state.
#[derive(Debug, Default)]
struct Group {
    last_delivered: EntryId,
    pending: BTreeMap<EntryId, Pending>,
}

#[derive(Debug, Default)]
struct Stream {
    entries: BTreeMap<EntryId, Fields>,
    last_id: EntryId,
    groups: HashMap<String, Group>,
}

impl Stream {
    /// Appends with a generated id, like `XADD key * ...`.
    fn add(&mut self, fields: Fields, max_len: Option<usize>) -> EntryId {
        let now = now_ms().0.max(0) as u64;
        let id = if now > self.last_id.ms {
            EntryId::new(now, 0)
        } else {
            EntryId::new(self.last_id.ms, self.last_id.seq + 1)
        };
        self.insert(id, fields, max_len);
        id
    }

    fn insert(&mut self, id: EntryId, fields: Fields, max_len: Option<usize>) {
        self.entries.insert(id, fields);
        self.last_id = id;
        if let Some(max) = max_len {
            while self.entries.len() > max {
                self.entries.pop_first();
            }
        }
    }
}

#[derive(Debug, Default)]
struct State {
    streams: HashMap<String, Stream>,
    hashes: HashMap<String, Vec<(String, String)>>,
    channels: HashMap<String, broadcast::Sender<Arc<str>>>,
}

/// The in-process bus.
pub struct MemoryBus {
    keys: Keys,
    state: Mutex<State>,
    /// Woken when an entry is added to any stream, for blocked readers.
    added: Notify,
}

fn registry() -> &'static Mutex<HashMap<String, Weak<MemoryBus>>> {
    static BUSES: std::sync::OnceLock<Mutex<HashMap<String, Weak<MemoryBus>>>> =
        std::sync::OnceLock::new();
    BUSES.get_or_init(|| Mutex::new(HashMap::new()))
}

fn bytes(fields: &[(String, String)]) -> Fields {
    fields
        .iter()
        .map(|(k, v)| (k.clone().into_bytes(), v.clone().into_bytes()))
        .collect()
}

impl MemoryBus {
    /// The process's bus for `prefix`, created if nobody holds one.
    pub fn named(prefix: &str) -> Arc<MemoryBus> {
        let mut buses = registry().lock().unwrap_or_else(|e| e.into_inner());
        buses.retain(|_, bus| bus.strong_count() > 0);
        if let Some(bus) = buses.get(prefix).and_then(Weak::upgrade) {
            return bus;
        }
        let bus = Arc::new(MemoryBus {
            keys: Keys::new(prefix),
            state: Mutex::new(State::default()),
            added: Notify::new(),
        });
        buses.insert(prefix.to_owned(), Arc::downgrade(&bus));
        bus
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain data: a panic elsewhere while holding the lock leaves it usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `XADD key * fields...`: appends to a stream; returns the new id.
    pub fn add(&self, key: &str, fields: &[(&str, &str)]) -> EntryId {
        let fields = fields
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        let id = self
            .lock()
            .streams
            .entry(key.to_owned())
            .or_default()
            .add(fields, None);
        self.added.notify_waiters();
        id
    }

    /// `XRANGE key - +`: every entry of a stream, oldest first, fields as text.
    pub fn range(&self, key: &str) -> Vec<(EntryId, Vec<(String, String)>)> {
        let state = self.lock();
        let Some(stream) = state.streams.get(key) else {
            return Vec::new();
        };
        stream
            .entries
            .iter()
            .map(|(id, fields)| {
                let text = fields
                    .iter()
                    .map(|(k, v)| {
                        (
                            String::from_utf8_lossy(k).into_owned(),
                            String::from_utf8_lossy(v).into_owned(),
                        )
                    })
                    .collect();
                (*id, text)
            })
            .collect()
    }

    /// `HGETALL key`.
    pub fn hash(&self, key: &str) -> HashMap<String, String> {
        self.lock()
            .hashes
            .get(key)
            .map(|fields| fields.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// `SUBSCRIBE channel`: the messages published from now on.
    pub fn subscribe(&self, channel: &str) -> broadcast::Receiver<Arc<str>> {
        self.lock()
            .channels
            .entry(channel.to_owned())
            .or_insert_with(|| broadcast::channel(MEMORY_BUS_CHANNEL_MESSAGES_MAX).0)
            .subscribe()
    }

    /// `XREADGROUP GROUP offpeak <consumer> COUNT n STREAMS {prefix}:capacity >`, as another
    /// consumer would (a test's stand-in for a consumer that then dies).
    pub fn read_as(&self, consumer: &str, count: usize) -> Vec<EntryId> {
        let mut state = self.lock();
        let stream = state.streams.entry(self.keys.capacity()).or_default();
        deliver_new(stream, consumer, count)
            .into_iter()
            .map(|e| e.0)
            .collect()
    }

    /// `XGROUP SETID {prefix}:capacity offpeak <id>`: entries after `id` are delivered again
    /// as new (a test's way to deliver an acknowledged entry twice).
    pub fn rewind_group(&self, id: EntryId) {
        let mut state = self.lock();
        let stream = state.streams.entry(self.keys.capacity()).or_default();
        stream
            .groups
            .entry(CONSUMER_GROUP.to_owned())
            .or_default()
            .last_delivered = id;
        drop(state);
        self.added.notify_waiters();
    }

    /// `XPENDING {prefix}:capacity offpeak`: how many entries are delivered and unacknowledged.
    pub fn pending_count(&self) -> usize {
        self.lock()
            .streams
            .get(&self.keys.capacity())
            .and_then(|s| s.groups.get(CONSUMER_GROUP))
            .map_or(0, |g| g.pending.len())
    }
}

/// Delivers up to `count` new entries to `consumer`; `(id, fields)` of each.
fn deliver_new(stream: &mut Stream, consumer: &str, count: usize) -> Vec<(EntryId, Fields)> {
    let group = stream.groups.entry(CONSUMER_GROUP.to_owned()).or_default();
    let after = group.last_delivered;
    let mut out = Vec::new();
    for (id, fields) in stream
        .entries
        .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
        .take(count)
    {
        out.push((*id, fields.clone()));
    }
    let now = Instant::now();
    for (id, _) in &out {
        group.last_delivered = *id;
        let pending = group.pending.entry(*id).or_insert(Pending {
            consumer: consumer.to_owned(),
            delivered_at: now,
            deliveries: 0,
        });
        // Delivered anew (after a rewind): Redis restarts the count at one.
        pending.consumer = consumer.to_owned();
        pending.delivered_at = now;
        pending.deliveries = 1;
    }
    out
}

#[async_trait]
impl Bus for MemoryBus {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn keys(&self) -> &Keys {
        &self.keys
    }

    async fn create_group(&self) -> Result<(), BusError> {
        let mut state = self.lock();
        let stream = state.streams.entry(self.keys.capacity()).or_default();
        stream.groups.entry(CONSUMER_GROUP.to_owned()).or_default();
        Ok(())
    }

    async fn read_own_pending(
        &self,
        consumer: &str,
        after: EntryId,
        count: usize,
    ) -> Result<Vec<SignalEntry>, BusError> {
        let mut state = self.lock();
        let stream = state.streams.entry(self.keys.capacity()).or_default();
        let Stream {
            entries, groups, ..
        } = stream;
        let group = groups.entry(CONSUMER_GROUP.to_owned()).or_default();
        let now = Instant::now();
        let mut out = Vec::new();
        for (id, pending) in group
            .pending
            .range_mut((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
            .filter(|(_, p)| p.consumer == consumer)
            .take(count)
        {
            // Reading one's own history counts as a delivery, as in Redis.
            pending.deliveries += 1;
            pending.delivered_at = now;
            out.push(SignalEntry {
                id: id.to_string(),
                fields: entries.get(id).cloned(),
                deliveries: pending.deliveries,
            });
        }
        Ok(out)
    }

    async fn claim_idle(
        &self,
        consumer: &str,
        min_idle: Duration,
        cursor: EntryId,
        count: usize,
    ) -> Result<(EntryId, Vec<SignalEntry>), BusError> {
        let mut state = self.lock();
        let stream = state.streams.entry(self.keys.capacity()).or_default();
        let Stream {
            entries, groups, ..
        } = stream;
        let group = groups.entry(CONSUMER_GROUP.to_owned()).or_default();
        let now = Instant::now();
        let mut out = Vec::new();
        let mut deleted = Vec::new();
        let mut next = EntryId::default();
        for (id, pending) in group.pending.range_mut(cursor..) {
            if now.duration_since(pending.delivered_at) < min_idle {
                continue;
            }
            if out.len() == count {
                next = *id;
                break;
            }
            match entries.get(id) {
                Some(fields) => {
                    pending.consumer = consumer.to_owned();
                    pending.delivered_at = now;
                    pending.deliveries += 1;
                    out.push(SignalEntry {
                        id: id.to_string(),
                        fields: Some(fields.clone()),
                        deliveries: pending.deliveries,
                    });
                }
                // Redis 7 drops pending entries whose data is gone while claiming them.
                None => deleted.push(*id),
            }
        }
        for id in deleted {
            group.pending.remove(&id);
        }
        Ok((next, out))
    }

    async fn read_new(
        &self,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<SignalEntry>, BusError> {
        let deadline = tokio::time::Instant::now() + block;
        loop {
            // Register for the wake-up before looking, so an add in between is not missed.
            let added = self.added.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            {
                let mut state = self.lock();
                let stream = state.streams.entry(self.keys.capacity()).or_default();
                let entries = deliver_new(stream, consumer, count);
                if !entries.is_empty() {
                    return Ok(entries
                        .into_iter()
                        .map(|(id, fields)| SignalEntry {
                            id: id.to_string(),
                            fields: Some(fields),
                            deliveries: 1,
                        })
                        .collect());
                }
            }
            if tokio::time::timeout_at(deadline, added).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn settle(&self, settlements: &[Settlement]) -> Result<usize, BusError> {
        let mut state = self.lock();
        let mut settled = 0;
        for settlement in settlements {
            let Ok(id) = settlement.id.parse::<EntryId>() else {
                continue;
            };
            let acked = state
                .streams
                .get_mut(&self.keys.capacity())
                .and_then(|s| s.groups.get_mut(CONSUMER_GROUP))
                .is_some_and(|g| g.pending.remove(&id).is_some());
            if !acked {
                continue;
            }
            settled += 1;
            if let Some(dead) = &settlement.dead_letter {
                state
                    .streams
                    .entry(self.keys.dead())
                    .or_default()
                    .add(bytes(dead), Some(SIGNAL_DEAD_STREAM_LEN_MAX));
            }
            state.streams.entry(self.keys.results()).or_default().add(
                bytes(&settlement.result),
                Some(SIGNAL_RESULTS_STREAM_LEN_MAX),
            );
        }
        drop(state);
        self.added.notify_waiters();
        Ok(settled)
    }

    async fn publish_market(&self, update: &MarketUpdate) -> Result<(), BusError> {
        let mut state = self.lock();
        for (channel, message) in &update.messages {
            if let Some(sender) = state.channels.get(channel) {
                // No subscriber is not an error, as with PUBLISH.
                let _ = sender.send(message.clone());
            }
        }
        for (key, fields) in &update.hashes {
            let hash = state.hashes.entry(key.clone()).or_default();
            for (field, value) in fields {
                match hash.iter_mut().find(|(f, _)| f == field) {
                    Some(slot) => slot.1 = value.clone(),
                    None => hash.push((field.clone(), value.clone())),
                }
            }
        }
        Ok(())
    }

    async fn append_lease_events(&self, events: &[LeaseEventEntry]) -> Result<(), BusError> {
        let mut state = self.lock();
        let stream = state.streams.entry(self.keys.lease_events()).or_default();
        for event in events {
            if event.id <= stream.last_id {
                continue;
            }
            stream.insert(
                event.id,
                bytes(&event.fields),
                Some(LEASE_EVENTS_STREAM_LEN_MAX),
            );
        }
        drop(state);
        self.added.notify_waiters();
        Ok(())
    }

    async fn last_lease_event(&self) -> Result<Option<EntryId>, BusError> {
        Ok(self
            .lock()
            .streams
            .get(&self.keys.lease_events())
            .and_then(|s| s.entries.keys().next_back().copied()))
    }

    fn as_memory(&self) -> Option<&MemoryBus> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix() -> String {
        format!("unit-{:x}", rand::random::<u64>())
    }

    fn settlement(id: EntryId) -> Settlement {
        Settlement {
            id: id.to_string(),
            result: vec![("status".into(), "applied".into())],
            dead_letter: None,
        }
    }

    #[tokio::test]
    async fn a_group_delivers_each_entry_once_and_keeps_it_pending_until_settled() {
        let bus = MemoryBus::named(&prefix());
        bus.create_group().await.unwrap();
        let key = bus.keys().capacity();
        let a = bus.add(&key, &[("type", "reclaim")]);
        let b = bus.add(&key, &[("type", "reclaim")]);
        assert!(a < b);
        let read = bus.read_new("c1", 10, Duration::ZERO).await.unwrap();
        assert_eq!(read.len(), 2);
        assert!(bus
            .read_new("c1", 10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(bus.pending_count(), 2);
        // Own history: counted as another delivery.
        let own = bus
            .read_own_pending("c1", EntryId::default(), 10)
            .await
            .unwrap();
        assert_eq!(own[0].deliveries, 2);
        assert!(bus
            .read_own_pending("c2", EntryId::default(), 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(bus.settle(&[settlement(a)]).await.unwrap(), 1);
        assert_eq!(
            bus.settle(&[settlement(a)]).await.unwrap(),
            0,
            "settled once"
        );
        assert_eq!(bus.range(&bus.keys().results()).len(), 1);
        // Another consumer claims what is idle.
        let (next, claimed) = bus
            .claim_idle("c2", Duration::ZERO, EntryId::default(), 10)
            .await
            .unwrap();
        assert_eq!(next, EntryId::default());
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].id, b.to_string());
        assert_eq!(claimed[0].deliveries, 3);
    }

    #[tokio::test]
    async fn a_blocked_read_wakes_on_add_and_the_bus_outlives_a_server_by_name() {
        let name = prefix();
        let bus = MemoryBus::named(&name);
        bus.create_group().await.unwrap();
        let reader = {
            let bus = bus.clone();
            tokio::spawn(async move { bus.read_new("c", 1, Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let same = MemoryBus::named(&name);
        assert!(Arc::ptr_eq(&bus, &same));
        same.add(&same.keys().capacity(), &[("a", "1")]);
        let read = reader.await.unwrap().unwrap();
        assert_eq!(read.len(), 1);
    }

    #[tokio::test]
    async fn lease_events_with_an_old_id_are_skipped() {
        let bus = MemoryBus::named(&prefix());
        let event = |seq, n| LeaseEventEntry {
            id: EntryId::new(seq, n),
            fields: vec![("event".into(), "opened".into())],
        };
        bus.append_lease_events(&[event(3, 0), event(3, 1)])
            .await
            .unwrap();
        bus.append_lease_events(&[event(3, 1), event(4, 0)])
            .await
            .unwrap();
        let ids: Vec<EntryId> = bus
            .range(&bus.keys().lease_events())
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(
            ids,
            [EntryId::new(3, 0), EntryId::new(3, 1), EntryId::new(4, 0)]
        );
        assert_eq!(
            bus.last_lease_event().await.unwrap(),
            Some(EntryId::new(4, 0))
        );
    }
}
