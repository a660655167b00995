//! The Redis bus: the `redis` crate's async [`ConnectionManager`] on tokio.
//!
//! Two connections: one for the consumer, whose `XREADGROUP ... BLOCK` holds its connection
//! while it waits, and one shared by the publishers. A connection manager reconnects by itself
//! after an I/O error; the tasks above retry with backoff, so a Redis restart or a killed
//! connection costs a few hundred milliseconds, never a signal.
//!
//! Two steps must be atomic and are Lua scripts: settling a signal (acknowledge it and, only if
//! that acknowledgement was the first, append its result and dead letter), and appending lease
//! events with their fixed ids (skipping those already appended). Repeating either after a lost
//! reply writes nothing twice.
//!
//! Every connection is named `offpeak:{prefix}` (`CLIENT SETNAME`, again after each reconnect),
//! so an operator (or a test) can find this server's connections in `CLIENT LIST`.

use super::{
    Bus, BusError, EntryId, Fields, Keys, LeaseEventEntry, MarketUpdate, Settlement, SignalEntry,
    CONSUMER_GROUP,
};
use crate::limits::{
    LEASE_EVENTS_STREAM_LEN_MAX, REDIS_CONNECT_TIMEOUT, REDIS_RESPONSE_TIMEOUT, SIGNALS_READ_BLOCK,
    SIGNAL_DEAD_STREAM_LEN_MAX, SIGNAL_RESULTS_STREAM_LEN_MAX,
};
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, FromRedisValue, RedisError, RedisResult, Script, ScriptInvocation, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Acknowledges entries; appends the result (and dead letter) only for a first acknowledgement.
/// KEYS: capacity stream, results stream, dead-letter stream.
/// ARGV: group, results MAXLEN, dead MAXLEN, then per entry: id, 2 * result fields, the result
/// fields, 2 * dead fields (0 for none), the dead fields.
const SETTLE_SCRIPT: &str = r#"
local settled = 0
local i = 4
while i <= #ARGV do
  local id = ARGV[i]
  local result_n = tonumber(ARGV[i + 1])
  local result_at = i + 2
  local dead_n = tonumber(ARGV[result_at + result_n])
  local dead_at = result_at + result_n + 1
  if redis.call('XACK', KEYS[1], ARGV[1], id) == 1 then
    if dead_n > 0 then
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, dead_at, dead_at + dead_n - 1))
    end
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, result_at, result_at + result_n - 1))
    settled = settled + 1
  end
  i = dead_at + dead_n
end
return settled
"#;

/// Appends lease events with their own ids; one already appended (an id not after the stream's
/// top) is skipped. KEYS: the lease-events stream. ARGV: MAXLEN, then per event: id, 2 * fields,
/// the fields.
const APPEND_SCRIPT: &str = r#"
local added = 0
local i = 2
while i <= #ARGV do
  local n = tonumber(ARGV[i + 1])
  local reply = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], ARGV[i], unpack(ARGV, i + 2, i + 1 + n))
  if type(reply) == 'table' and reply.err then
    if not string.find(reply.err, 'equal or smaller', 1, true) then
      return redis.error_reply(reply.err)
    end
  else
    added = added + 1
  end
  i = i + 2 + n
end
return added
"#;

/// A managed connection that names itself before its first command and again after each
/// error: the manager reconnects after an error, and a new connection has no name.
struct Named {
    manager: ConnectionManager,
    named: AtomicBool,
}

impl Named {
    fn new(manager: ConnectionManager) -> Named {
        Named {
            manager,
            named: AtomicBool::new(false),
        }
    }

    async fn get(&self, name: &str) -> Result<ConnectionManager, BusError> {
        let mut conn = self.manager.clone();
        if !self.named.load(Ordering::Acquire) {
            let named: RedisResult<()> = redis::cmd("CLIENT")
                .arg("SETNAME")
                .arg(name)
                .query_async(&mut conn)
                .await;
            match named {
                // A server that refuses the command (an ACL, a managed service) still serves
                // the rest: the name is only a convenience.
                Err(e) if e.code().is_some() => {
                    tracing::warn!(error = %e, "Redis refused CLIENT SETNAME; connections stay unnamed");
                }
                other => self.check(other)?,
            }
            self.named.store(true, Ordering::Release);
        }
        Ok(conn)
    }

    fn check<T>(&self, result: RedisResult<T>) -> Result<T, BusError> {
        result.map_err(|e| {
            self.named.store(false, Ordering::Release);
            bus_error(e)
        })
    }
}

/// The Redis bus.
pub struct RedisBus {
    keys: Keys,
    /// `offpeak:{prefix}`, the connections' name.
    name: String,
    consumer: Named,
    publisher: Named,
    settle: Script,
    append: Script,
}

fn bus_error(e: RedisError) -> BusError {
    BusError(e.to_string())
}

fn shape(what: &str) -> BusError {
    BusError(format!("unexpected reply to {what}"))
}

impl RedisBus {
    /// A bus on `url` under `prefix`; connects lazily, so a Redis that is down does not stop
    /// the server from starting.
    pub fn new(url: &str, prefix: &str) -> anyhow::Result<RedisBus> {
        let client = Client::open(url).map_err(|e| anyhow::anyhow!("REDIS_URL: {e}"))?;
        let config = |response: Duration| {
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(REDIS_CONNECT_TIMEOUT))
                .set_response_timeout(Some(response))
                // Our tasks retry with their own backoff; the manager only needs to try once.
                .set_number_of_retries(1)
        };
        let consumer = ConnectionManager::new_lazy_with_config(
            client.clone(),
            config(SIGNALS_READ_BLOCK + REDIS_RESPONSE_TIMEOUT),
        )
        .map_err(|e| anyhow::anyhow!("configuring the Redis consumer connection: {e}"))?;
        let publisher =
            ConnectionManager::new_lazy_with_config(client, config(REDIS_RESPONSE_TIMEOUT))
                .map_err(|e| anyhow::anyhow!("configuring the Redis publisher connection: {e}"))?;
        Ok(RedisBus {
            keys: Keys::new(prefix),
            name: format!("offpeak:{prefix}"),
            consumer: Named::new(consumer),
            publisher: Named::new(publisher),
            settle: Script::new(SETTLE_SCRIPT),
            append: Script::new(APPEND_SCRIPT),
        })
    }

    /// Runs a command on one of the connections.
    async fn query<T: FromRedisValue>(
        &self,
        on: &Named,
        command: &redis::Cmd,
    ) -> Result<T, BusError> {
        let mut conn = on.get(&self.name).await?;
        on.check(command.query_async(&mut conn).await)
    }

    /// Runs a script on one of the connections.
    async fn invoke<T: FromRedisValue>(
        &self,
        on: &Named,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, BusError> {
        let mut conn = on.get(&self.name).await?;
        on.check(invocation.invoke_async(&mut conn).await)
    }

    /// Delivery counts of `consumer`'s pending entries between `first` and `last`.
    async fn deliveries(
        &self,
        consumer: &str,
        first: &str,
        last: &str,
        count: usize,
    ) -> Result<Vec<(String, u64)>, BusError> {
        let reply: Value = self
            .query(
                &self.consumer,
                redis::cmd("XPENDING")
                    .arg(self.keys.capacity())
                    .arg(CONSUMER_GROUP)
                    .arg(first)
                    .arg(last)
                    .arg(count)
                    .arg(consumer),
            )
            .await?;
        let Value::Array(rows) = reply else {
            return Err(shape("XPENDING"));
        };
        rows.into_iter()
            .map(|row| match row {
                Value::Array(cells) if cells.len() == 4 => {
                    let id = text(&cells[0]).ok_or_else(|| shape("XPENDING"))?;
                    let n = int(&cells[3]).ok_or_else(|| shape("XPENDING"))?;
                    Ok((id, n))
                }
                _ => Err(shape("XPENDING")),
            })
            .collect()
    }

    /// Fills in the delivery counts of entries just read from the pending list.
    async fn with_deliveries(
        &self,
        consumer: &str,
        mut entries: Vec<SignalEntry>,
    ) -> Result<Vec<SignalEntry>, BusError> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(entries);
        };
        let counts = self
            .deliveries(consumer, &first.id.clone(), &last.id.clone(), entries.len())
            .await?;
        for entry in &mut entries {
            if let Some((_, n)) = counts.iter().find(|(id, _)| *id == entry.id) {
                entry.deliveries = *n;
            }
        }
        Ok(entries)
    }
}

fn bytes_of(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

fn text(value: &Value) -> Option<String> {
    bytes_of(value).and_then(|b| String::from_utf8(b).ok())
}

fn int(value: &Value) -> Option<u64> {
    match value {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => text(other)?.parse().ok(),
    }
}

/// `[id, [field, value, ...] | nil]` entries.
fn entries_of(value: &Value) -> Result<Vec<(String, Option<Fields>)>, BusError> {
    let list = match value {
        Value::Array(list) => list,
        Value::Nil => return Ok(Vec::new()),
        _ => return Err(shape("a stream read")),
    };
    list.iter()
        .map(|entry| {
            let Value::Array(parts) = entry else {
                return Err(shape("a stream entry"));
            };
            let id = parts
                .first()
                .and_then(text)
                .ok_or_else(|| shape("a stream entry id"))?;
            let fields = match parts.get(1) {
                Some(Value::Array(flat)) => {
                    let mut fields = Vec::with_capacity(flat.len() / 2);
                    for pair in flat.chunks(2) {
                        let [name, value] = pair else {
                            return Err(shape("stream entry fields"));
                        };
                        fields.push((
                            bytes_of(name).ok_or_else(|| shape("a field name"))?,
                            bytes_of(value).ok_or_else(|| shape("a field value"))?,
                        ));
                    }
                    Some(fields)
                }
                Some(Value::Map(pairs)) => Some(
                    pairs
                        .iter()
                        .map(|(k, v)| {
                            Ok((
                                bytes_of(k).ok_or_else(|| shape("a field name"))?,
                                bytes_of(v).ok_or_else(|| shape("a field value"))?,
                            ))
                        })
                        .collect::<Result<_, BusError>>()?,
                ),
                Some(Value::Nil) | None => None,
                Some(_) => return Err(shape("stream entry fields")),
            };
            Ok((id, fields))
        })
        .collect()
}

/// The entries of the one stream an `XREADGROUP` asked for.
fn read_reply(value: &Value) -> Result<Vec<(String, Option<Fields>)>, BusError> {
    match value {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => match streams.first() {
            None => Ok(Vec::new()),
            Some(Value::Array(stream)) => entries_of(stream.get(1).unwrap_or(&Value::Nil)),
            Some(_) => Err(shape("XREADGROUP")),
        },
        Value::Map(streams) => match streams.first() {
            None => Ok(Vec::new()),
            Some((_, entries)) => entries_of(entries),
        },
        _ => Err(shape("XREADGROUP")),
    }
}

fn signal_entries(raw: Vec<(String, Option<Fields>)>, deliveries: u64) -> Vec<SignalEntry> {
    raw.into_iter()
        .map(|(id, fields)| SignalEntry {
            id,
            fields,
            deliveries,
        })
        .collect()
}

#[async_trait]
impl Bus for RedisBus {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn keys(&self) -> &Keys {
        &self.keys
    }

    async fn create_group(&self) -> Result<(), BusError> {
        let mut conn = self.consumer.get(&self.name).await?;
        let created: Result<Value, RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.keys.capacity())
            .arg(CONSUMER_GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => self.consumer.check(other).map(|_| ()),
        }
    }

    async fn read_own_pending(
        &self,
        consumer: &str,
        after: EntryId,
        count: usize,
    ) -> Result<Vec<SignalEntry>, BusError> {
        let reply: Value = self
            .query(
                &self.consumer,
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(CONSUMER_GROUP)
                    .arg(consumer)
                    .arg("COUNT")
                    .arg(count)
                    .arg("STREAMS")
                    .arg(self.keys.capacity())
                    .arg(after.to_string()),
            )
            .await?;
        let entries = signal_entries(read_reply(&reply)?, 1);
        self.with_deliveries(consumer, entries).await
    }

    async fn claim_idle(
        &self,
        consumer: &str,
        min_idle: Duration,
        cursor: EntryId,
        count: usize,
    ) -> Result<(EntryId, Vec<SignalEntry>), BusError> {
        let reply: Value = self
            .query(
                &self.consumer,
                redis::cmd("XAUTOCLAIM")
                    .arg(self.keys.capacity())
                    .arg(CONSUMER_GROUP)
                    .arg(consumer)
                    .arg(min_idle.as_millis() as u64)
                    .arg(cursor.to_string())
                    .arg("COUNT")
                    .arg(count),
            )
            .await?;
        let Value::Array(parts) = reply else {
            return Err(shape("XAUTOCLAIM"));
        };
        let next: EntryId = parts
            .first()
            .and_then(text)
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| shape("XAUTOCLAIM"))?;
        let entries = signal_entries(entries_of(parts.get(1).unwrap_or(&Value::Nil))?, 1);
        // Entries are now this consumer's; ask for their delivery counts.
        let entries = self.with_deliveries(consumer, entries).await?;
        Ok((next, entries))
    }

    async fn read_new(
        &self,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<SignalEntry>, BusError> {
        let reply: Value = self
            .query(
                &self.consumer,
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(CONSUMER_GROUP)
                    .arg(consumer)
                    .arg("COUNT")
                    .arg(count)
                    .arg("BLOCK")
                    .arg(block.as_millis() as u64)
                    .arg("STREAMS")
                    .arg(self.keys.capacity())
                    .arg(">"),
            )
            .await?;
        Ok(signal_entries(read_reply(&reply)?, 1))
    }

    async fn settle(&self, settlements: &[Settlement]) -> Result<usize, BusError> {
        if settlements.is_empty() {
            return Ok(0);
        }
        let mut invocation = self.settle.prepare_invoke();
        invocation
            .key(self.keys.capacity())
            .key(self.keys.results())
            .key(self.keys.dead())
            .arg(CONSUMER_GROUP)
            .arg(SIGNAL_RESULTS_STREAM_LEN_MAX)
            .arg(SIGNAL_DEAD_STREAM_LEN_MAX);
        for settlement in settlements {
            invocation
                .arg(&settlement.id)
                .arg(settlement.result.len() * 2);
            for (name, value) in &settlement.result {
                invocation.arg(name).arg(value);
            }
            let dead = settlement.dead_letter.as_deref().unwrap_or(&[]);
            invocation.arg(dead.len() * 2);
            for (name, value) in dead {
                invocation.arg(name).arg(value);
            }
        }
        let settled: u64 = self.invoke(&self.consumer, &invocation).await?;
        Ok(settled as usize)
    }

    async fn publish_market(&self, update: &MarketUpdate) -> Result<(), BusError> {
        if update.messages.is_empty() && update.hashes.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (channel, message) in &update.messages {
            pipe.cmd("PUBLISH").arg(channel).arg(&**message).ignore();
        }
        for (key, fields) in &update.hashes {
            let command = pipe.cmd("HSET").arg(key);
            for (name, value) in fields {
                command.arg(name).arg(value);
            }
            command.ignore();
        }
        let mut conn = self.publisher.get(&self.name).await?;
        self.publisher
            .check(pipe.query_async::<()>(&mut conn).await)
    }

    async fn append_lease_events(&self, events: &[LeaseEventEntry]) -> Result<(), BusError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut invocation = self.append.prepare_invoke();
        invocation
            .key(self.keys.lease_events())
            .arg(LEASE_EVENTS_STREAM_LEN_MAX);
        for event in events {
            invocation
                .arg(event.id.to_string())
                .arg(event.fields.len() * 2);
            for (name, value) in &event.fields {
                invocation.arg(name).arg(value);
            }
        }
        self.invoke::<u64>(&self.publisher, &invocation)
            .await
            .map(|_| ())
    }

    async fn last_lease_event(&self) -> Result<Option<EntryId>, BusError> {
        let reply: Value = self
            .query(
                &self.publisher,
                redis::cmd("XREVRANGE")
                    .arg(self.keys.lease_events())
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1),
            )
            .await?;
        let entries = entries_of(&reply)?;
        match entries.first() {
            None => Ok(None),
            Some((id, _)) => id.parse().map(Some).map_err(|_| shape("XREVRANGE")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn reads_resp2_and_resp3_replies_and_deleted_entries() {
        let resp2 = Value::Array(vec![Value::Array(vec![
            bulk("p:capacity"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("type"), bulk("reclaim")]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let entries = read_reply(&resp2).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0].1.as_ref().unwrap()[0],
            (b"type".to_vec(), b"reclaim".to_vec())
        );
        assert_eq!(entries[1], ("2-0".to_owned(), None));
        let resp3 = Value::Map(vec![(
            bulk("p:capacity"),
            Value::Array(vec![Value::Array(vec![
                bulk("3-0"),
                Value::Map(vec![(bulk("a"), bulk("b"))]),
            ])]),
        )]);
        assert_eq!(read_reply(&resp3).unwrap()[0].0, "3-0");
        assert!(read_reply(&Value::Nil).unwrap().is_empty());
        assert!(read_reply(&Value::Int(3)).is_err());
        // An odd number of field items is a malformed reply, not a panic.
        let odd = Value::Array(vec![Value::Array(vec![
            bulk("1-0"),
            Value::Array(vec![bulk("x")]),
        ])]);
        assert!(entries_of(&odd).is_err());
    }
}
