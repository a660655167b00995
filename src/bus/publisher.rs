//! The publishers: market data and lease events out, after each commit.
//!
//! Market data ([`run_market`]) follows the committed batches through a [`Feed`] of its own,
//! the same code that feeds the WebSocket, and sends what changed as the WebSocket's JSON:
//! book deltas (`{"type":"delta","channel":"book:{pool}","prev_seq","seq",...}`) and trades on
//! `{prefix}:md:{pool}`, and each pool's figures into the hash `{prefix}:capacity:{pool}`.
//! Changes that pile up while a publish is in flight go out together in the next one; the
//! messages of a publish that failed go out first in the next (up to
//! [`MARKET_UNSENT_MESSAGES_MAX`]). Pub/sub keeps nothing for a subscriber that was away: it
//! sees a delta whose `prev_seq` is past its own seq, and takes a snapshot from REST (`GET
//! /v1/pools/{pool}/book`, same seq), exactly as on the WebSocket. After an outage every pool's
//! hash is written again in full.
//!
//! Lease events ([`run_lease_events`]) are read from the store's `lease_events` table, which
//! the sequencer writes in each batch's transaction: the stream is an outbox of that table.
//! Each event's stream id is `<journal seq>-<its row id>`, the same every time, so the stream's
//! newest id says exactly how far it got: after a Redis outage, a lagging broadcast or an
//! offpeak restart, the publisher carries on from there and nothing is lost or doubled. A
//! committed batch with lease events wakes it; it also looks every [`LEASE_EVENTS_POLL_EVERY`].

use super::{Backoff, Bus, BusStatus, BusTask, LeaseEventEntry, MarketUpdate};
use crate::feed::{self, Changes, Feed};
use crate::journal::{CommittedBatch, EntryId};
use crate::limits::{
    BUS_RETRY_MAX, BUS_RETRY_MIN, LEASE_EVENTS_POLL_EVERY, LEASE_EVENTS_READ_CHUNK,
    MARKET_UNSENT_MESSAGES_MAX,
};
use crate::metrics::{Metrics, NoticeSink};
use crate::sequencer::SequencerHandle;
use crate::store::{LeaseEventRecord, Store};
use crate::timestamp::{format_rfc3339, now_ms};
use crate::wire;
use matching_engine::Event;
use std::sync::Arc;
use tokio::sync::broadcast;

/// The pub/sub messages and hashes for one round of feed changes.
pub fn market_update(
    bus: &dyn Bus,
    feed: &Feed,
    changes: &Changes,
    all_capacity: bool,
) -> MarketUpdate {
    let keys = bus.keys();
    let mut update = MarketUpdate::default();
    for (pool, delta) in &changes.books {
        update.messages.push((
            keys.market(pool),
            Arc::from(&*wire::ws::book_delta(pool, delta)),
        ));
    }
    for (pool, trades) in &changes.trades {
        let message = match trades {
            Some(trades) => wire::ws::trades(pool, "trades", trades),
            // Trades were lost to the pending bound: the latest ones, as a snapshot.
            None => wire::ws::trades(
                pool,
                "snapshot",
                &feed.recent_trades(pool).unwrap_or_default(),
            ),
        };
        update
            .messages
            .push((keys.market(pool), Arc::from(&*message)));
    }
    let figures = if all_capacity {
        feed.capacity()
    } else {
        changes.capacity.clone()
    };
    let updated_at = format_rfc3339(now_ms());
    for figures in &figures {
        update.hashes.push((
            keys.capacity_hash(&figures.pool),
            wire::redis::capacity_hash_fields(figures, &updated_at),
        ));
    }
    update
}

/// Publishes book deltas, trades and capacity until the task is aborted.
pub async fn run_market(bus: Arc<dyn Bus>, status: Arc<BusStatus>, sequencer: SequencerHandle) {
    let feed = Arc::new(Feed::new());
    let follower = tokio::spawn(feed::follow(feed.clone(), sequencer, |_| {}));
    let mut backoff = Backoff::new(BUS_RETRY_MIN, BUS_RETRY_MAX);
    // Everything once at start, and again after each outage.
    let mut all_capacity = true;
    let mut wait_for_changes = true;
    // Messages of a publish that failed, sent first next time (a short blip loses nothing).
    let mut unsent: Vec<(String, Arc<str>)> = Vec::new();
    loop {
        if wait_for_changes {
            feed.changed().await;
        }
        if follower.is_finished() {
            return;
        }
        let changes = feed.take_changes();
        let mut update = market_update(&*bus, &feed, &changes, all_capacity);
        if !unsent.is_empty() {
            unsent.append(&mut update.messages);
            update.messages = std::mem::take(&mut unsent);
        }
        match bus.publish_market(&update).await {
            Ok(()) => {
                status.set(BusTask::Publisher, true);
                backoff.reset();
                all_capacity = false;
                wait_for_changes = true;
            }
            Err(e) => {
                // Kept for the next attempt, the oldest dropped past the bound: subscribers
                // see the seq gap then. Some may have gone out before the failure and go out
                // again: a subscriber skips a delta whose seq it has, a trade whose id it has.
                unsent = update.messages;
                if unsent.len() > MARKET_UNSENT_MESSAGES_MAX {
                    unsent.drain(..unsent.len() - MARKET_UNSENT_MESSAGES_MAX);
                }
                status.set(BusTask::Publisher, false);
                all_capacity = true;
                let wait = backoff.next_wait();
                tracing::warn!(error = %e, retry_ms = wait.as_millis() as u64, "market data not published; retrying");
                tokio::time::sleep(wait).await;
                // The next round runs even if nothing else changes: the hashes are owed.
                wait_for_changes = false;
            }
        }
    }
}

/// The lease-events stream's entry for one recorded event: its fields ([`wire::redis`]) under
/// the id `<journal seq>-<row id>`.
pub fn lease_event_entry(record: &LeaseEventRecord) -> LeaseEventEntry {
    LeaseEventEntry {
        id: EntryId::new(record.seq, record.row_id),
        fields: wire::redis::lease_event_fields(record),
    }
}

fn has_lease_events(batch: &CommittedBatch) -> bool {
    batch.records.iter().any(|record| {
        record.events.iter().any(|e| {
            matches!(
                e,
                Event::LeaseOpened { .. }
                    | Event::LeaseChanged { .. }
                    | Event::ReclaimForecast { .. }
            )
        })
    })
}

/// Publishes the store's lease events to the lease-events stream until the sequencer stops;
/// each notice appended is timed in `metrics`.
pub async fn run_lease_events(
    bus: Arc<dyn Bus>,
    status: Arc<BusStatus>,
    sequencer: SequencerHandle,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
) {
    // Subscribe first: a batch committed after this is seen, or read from the store.
    let mut batches = sequencer.subscribe();
    let started_at_seq = sequencer.last_seq();
    let mut backoff = Backoff::new(BUS_RETRY_MIN, BUS_RETRY_MAX);
    let mut cursor = loop {
        match bus.last_lease_event().await {
            Ok(Some(last)) => {
                if last.ms > started_at_seq {
                    tracing::error!(
                        stream = %bus.keys().lease_events(),
                        last = %last,
                        journal_seq = started_at_seq,
                        "the lease-events stream is ahead of this database's journal (another database?): events are published once the journal passes it"
                    );
                }
                break last;
            }
            // A new stream starts with what happens from now on, not with the whole history.
            Ok(None) => break EntryId::new(started_at_seq, u64::MAX),
            Err(e) => {
                status.set(BusTask::LeaseEvents, false);
                let wait = backoff.next_wait();
                tracing::warn!(error = %e, retry_ms = wait.as_millis() as u64, "cannot read the lease-events stream; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    };
    status.set(BusTask::LeaseEvents, true);
    backoff.reset();
    loop {
        // Everything the store has after the cursor, a chunk at a time.
        loop {
            let records = match store
                .lease_events_after(cursor.ms, cursor.seq, LEASE_EVENTS_READ_CHUNK)
                .await
            {
                Ok(records) => records,
                Err(e) => {
                    let wait = backoff.next_wait();
                    tracing::warn!(error = %e, retry_ms = wait.as_millis() as u64, "cannot read lease events from the store; retrying");
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            if records.is_empty() {
                break;
            }
            let entries: Vec<LeaseEventEntry> = records.iter().map(lease_event_entry).collect();
            loop {
                match bus.append_lease_events(&entries).await {
                    Ok(()) => {
                        status.set(BusTask::LeaseEvents, true);
                        backoff.reset();
                        for record in records.iter().filter(|r| r.kind == "notice") {
                            metrics.notice_handed(NoticeSink::Bus, record.seq);
                        }
                        break;
                    }
                    Err(e) => {
                        status.set(BusTask::LeaseEvents, false);
                        let wait = backoff.next_wait();
                        tracing::warn!(error = %e, retry_ms = wait.as_millis() as u64, "lease events not published; retrying");
                        tokio::time::sleep(wait).await;
                    }
                }
            }
            cursor = entries.last().map_or(cursor, |e| e.id);
            if records.len() < LEASE_EVENTS_READ_CHUNK {
                break;
            }
        }
        // Wait for a batch with lease events, a missed batch, or the periodic look.
        let poll = tokio::time::sleep(LEASE_EVENTS_POLL_EVERY);
        tokio::pin!(poll);
        loop {
            tokio::select! {
                batch = batches.recv() => match batch {
                    Ok(batch) if has_lease_events(&batch) => break,
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => {
                        // Stopped: publish what the last batches wrote, then end.
                        if let Ok(records) = store.lease_events_after(cursor.ms, cursor.seq, LEASE_EVENTS_READ_CHUNK).await {
                            let entries: Vec<LeaseEventEntry> = records.iter().map(lease_event_entry).collect();
                            let _ = bus.append_lease_events(&entries).await;
                        }
                        return;
                    }
                },
                _ = &mut poll => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_event_is_identified_by_its_seq_and_row() {
        let record = wire::redis::tests::record("notice");
        let entry = lease_event_entry(&record);
        assert_eq!(entry.id, EntryId::new(42, 7));
        assert_eq!(entry.fields, wire::redis::lease_event_fields(&record));
    }
}
