//! The capacity stream consumer: each entry becomes an engine command, applied exactly once.
//!
//! A session (one per connection to the bus) first drains this consumer's own pending entries
//! (read before a crash or a lost connection, never acknowledged), then claims entries left
//! idle by dead consumers (`XAUTOCLAIM`), then reads new entries (`XREADGROUP ... BLOCK`),
//! claiming again every [`SIGNALS_CLAIM_EVERY`]. Any bus error ends the session; the next one
//! starts after a backoff and drains the pending entries again, so an entry read just before
//! the connection dropped is not lost.
//!
//! A window of entries is handled in order:
//! 1. Each entry is parsed into a command; one that cannot be (or was delivered more than
//!    [`SIGNAL_DELIVERIES_MAX`] times without being applied: it keeps failing) is poison.
//! 2. The commands are queued to the sequencer one after another with their entry ids
//!    ([`SequencerHandle::queue_signal`]), so they land in as few batches as possible and in
//!    stream order; each is durable, with its id recorded in the same transaction, before its
//!    answer arrives. The sequencer refuses an id it already recorded (`AlreadyApplied`): its
//!    recorded outcome is read back from the store instead.
//! 3. The window is settled in one atomic step per entry ([`Bus::settle`]): acknowledge, and
//!    only if that was the first acknowledgement, append the result and any dead letter.
//!
//! Entries whose command could not be committed (the database is down, the queue full) are
//! kept, in order, and queued again after a backoff: they are not acknowledged, so a crash in
//! the meantime leaves them pending for the next start.

use super::signal::{self, is_poison_code, SignalSummary};
use super::{Backoff, Bus, BusError, BusStatus, BusTask, Fields, Settlement, SignalEntry};
use crate::config::BusSettings;
use crate::journal::EntryId;
use crate::limits::{
    BUS_RETRY_MAX, BUS_RETRY_MIN, SIGNALS_CLAIM_EVERY, SIGNALS_READ_BLOCK, SIGNALS_READ_COUNT_MAX,
    SIGNAL_DELIVERIES_MAX,
};
use crate::sequencer::{PendingWrite, SequencerHandle, SubmitError};
use crate::store::{AppliedSignal, Store};
use crate::timestamp::{format_rfc3339, now_ms};
use matching_engine::{Command, Event};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Who this consumer is and when it takes over others' entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerSettings {
    /// The consumer's name in the group: stable across restarts, so a restarted server finds
    /// its own pending entries.
    pub consumer: String,
    /// How long an entry must sit unacknowledged with another consumer before it is claimed.
    pub claim_idle: Duration,
    /// This node leads a cluster, and only the leader consumes: an entry pending with another
    /// consumer belongs to an old leader (fenced now), and is claimed however recent.
    pub sole_consumer: bool,
}

impl From<&BusSettings> for ConsumerSettings {
    fn from(settings: &BusSettings) -> Self {
        ConsumerSettings {
            consumer: settings.consumer.clone(),
            claim_idle: settings.claim_idle,
            sole_consumer: false,
        }
    }
}

/// Why a session ended.
enum End {
    /// Asked to stop, or the sequencer stopped: the consumer ends.
    Stop,
    /// The bus failed: retry after a backoff.
    Bus(BusError),
}

impl From<BusError> for End {
    fn from(e: BusError) -> Self {
        End::Bus(e)
    }
}

/// Work for one entry of a window.
struct Work {
    entry: SignalEntry,
    summary: SignalSummary,
    step: Step,
}

enum Step {
    /// Poison before reaching the engine.
    Dead {
        reason: &'static str,
        detail: String,
    },
    /// To apply.
    Apply { id: EntryId, command: Command },
    /// Over the delivery limit: dead unless the store says it was applied.
    Suspect { id: EntryId },
}

/// A final outcome, ready to settle.
struct Outcome {
    status: &'static str,
    reason: String,
    detail: String,
    seq: Option<u64>,
    redelivered: bool,
}

struct Consumer {
    bus: Arc<dyn Bus>,
    status: Arc<BusStatus>,
    sequencer: SequencerHandle,
    store: Arc<dyn Store>,
    settings: ConsumerSettings,
    stop: watch::Receiver<bool>,
    retry: Backoff,
}

/// Runs the consumer until `stop` turns true or the sequencer stops.
pub async fn run(
    bus: Arc<dyn Bus>,
    status: Arc<BusStatus>,
    sequencer: SequencerHandle,
    store: Arc<dyn Store>,
    settings: ConsumerSettings,
    stop: watch::Receiver<bool>,
) {
    let mut consumer = Consumer {
        bus,
        status,
        sequencer,
        store,
        settings,
        stop,
        retry: Backoff::new(BUS_RETRY_MIN, BUS_RETRY_MAX),
    };
    let mut reconnect = Backoff::new(BUS_RETRY_MIN, BUS_RETRY_MAX);
    tracing::info!(
        bus = consumer.bus.kind(),
        stream = %consumer.bus.keys().capacity(),
        consumer = %consumer.settings.consumer,
        "capacity signal consumer started"
    );
    loop {
        match consumer.session(&mut reconnect).await {
            End::Stop => break,
            End::Bus(e) => {
                consumer.status.set(BusTask::Consumer, false);
                let wait = reconnect.next_wait();
                tracing::warn!(error = %e, retry_ms = wait.as_millis() as u64, "signal consumer lost the bus; retrying");
                if consumer.sleep_or_stop(wait).await {
                    break;
                }
            }
        }
    }
    consumer.status.set(BusTask::Consumer, false);
    tracing::info!("capacity signal consumer stopped");
}

impl Consumer {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps; true if asked to stop meanwhile.
    async fn sleep_or_stop(&mut self, wait: Duration) -> bool {
        if self.stopping() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => self.stopping(),
            _ = self.stop.changed() => true,
        }
    }

    async fn session(&mut self, reconnect: &mut Backoff) -> End {
        match self.session_inner(reconnect).await {
            Ok(()) => End::Stop,
            Err(end) => end,
        }
    }

    async fn session_inner(&mut self, reconnect: &mut Backoff) -> Result<(), End> {
        self.bus.create_group().await?;
        self.status.set(BusTask::Consumer, true);
        reconnect.reset();
        // Entries this consumer read and never acknowledged: a crash, a lost connection.
        let mut after = EntryId::default();
        loop {
            let entries = self
                .bus
                .read_own_pending(&self.settings.consumer, after, SIGNALS_READ_COUNT_MAX)
                .await?;
            let Some(last) = entries.last().and_then(|e| e.id.parse::<EntryId>().ok()) else {
                break;
            };
            if last <= after {
                break;
            }
            after = last;
            tracing::info!(entries = entries.len(), "re-reading own pending signals");
            self.handle(entries).await?;
        }
        self.claim_pass().await?;
        let mut last_claim = Instant::now();
        loop {
            if self.stopping() {
                return Ok(());
            }
            let entries = tokio::select! {
                read = self.bus.read_new(&self.settings.consumer, SIGNALS_READ_COUNT_MAX, SIGNALS_READ_BLOCK) => read?,
                // A read cancelled here may have been delivered: it stays pending, for the
                // next start to drain.
                _ = self.stop.changed() => return Ok(()),
            };
            if !entries.is_empty() {
                self.handle(entries).await?;
            }
            if last_claim.elapsed() >= SIGNALS_CLAIM_EVERY {
                self.claim_pass().await?;
                last_claim = Instant::now();
            }
        }
    }

    /// Takes over entries other consumers left idle for longer than `claim_idle` (any, for the
    /// sole consumer).
    async fn claim_pass(&mut self) -> Result<(), End> {
        let min_idle = if self.settings.sole_consumer {
            Duration::ZERO
        } else {
            self.settings.claim_idle
        };
        let mut cursor = EntryId::default();
        loop {
            let (next, entries) = self
                .bus
                .claim_idle(
                    &self.settings.consumer,
                    min_idle,
                    cursor,
                    SIGNALS_READ_COUNT_MAX,
                )
                .await?;
            if !entries.is_empty() {
                tracing::info!(
                    entries = entries.len(),
                    "claimed idle signals of another consumer"
                );
                self.handle(entries).await?;
            }
            if next == EntryId::default() || next <= cursor {
                return Ok(());
            }
            cursor = next;
        }
    }

    fn classify(entry: SignalEntry) -> Work {
        let summary = entry
            .fields
            .as_ref()
            .map(signal::summary)
            .unwrap_or_default();
        let id = match entry.id.parse::<EntryId>() {
            Ok(id) if id.fits_i64() => id,
            _ => {
                return Work {
                    step: Step::Dead {
                        reason: "malformed",
                        detail: format!("entry id {} is out of range", entry.id),
                    },
                    entry,
                    summary,
                }
            }
        };
        let step = if entry.deliveries > SIGNAL_DELIVERIES_MAX {
            Step::Suspect { id }
        } else {
            match &entry.fields {
                None => Step::Dead {
                    reason: "entry_deleted",
                    detail: "the entry was deleted from the stream before it was applied".into(),
                },
                Some(fields) => match signal::parse(fields) {
                    Ok(command) => Step::Apply { id, command },
                    Err(poison) => Step::Dead {
                        reason: poison.reason,
                        detail: poison.detail,
                    },
                },
            }
        };
        Work {
            entry,
            summary,
            step,
        }
    }

    /// Applies and settles one window of entries, in order; returns once every entry is
    /// settled (or when asked to stop, leaving the rest pending).
    async fn handle(&mut self, entries: Vec<SignalEntry>) -> Result<(), End> {
        let mut todo: Vec<Work> = entries.into_iter().map(Consumer::classify).collect();
        self.retry.reset();
        loop {
            let (settlements, left) = self.attempt(todo).await?;
            if !settlements.is_empty() {
                self.bus.settle(&settlements).await?;
            }
            if left.is_empty() {
                return Ok(());
            }
            let wait = self.retry.next_wait();
            tracing::warn!(
                entries = left.len(),
                retry_ms = wait.as_millis() as u64,
                "signals could not be committed yet; retrying"
            );
            if self.sleep_or_stop(wait).await {
                return Err(End::Stop);
            }
            todo = left;
        }
    }

    /// One pass over a window: the settlements of the entries that reached an outcome, and the
    /// entries to try again.
    async fn attempt(&mut self, todo: Vec<Work>) -> Result<(Vec<Settlement>, Vec<Work>), End> {
        // Queue every command first, in order, then collect the answers.
        let mut queued: Vec<Option<Result<PendingWrite, SubmitError>>> =
            Vec::with_capacity(todo.len());
        let mut refused = false;
        for work in &todo {
            match &work.step {
                Step::Apply { id, command } if !refused => {
                    let pending = self.sequencer.queue_signal(command.clone(), *id).await;
                    // Once one is refused, later ones wait too: they must not overtake it.
                    refused = pending.is_err();
                    queued.push(Some(pending));
                }
                Step::Apply { .. } => queued.push(Some(Err(SubmitError::Unavailable))),
                _ => queued.push(None),
            }
        }
        let mut answers = Vec::with_capacity(todo.len());
        for pending in queued {
            answers.push(match pending {
                Some(Ok(pending)) => Some(pending.committed().await),
                Some(Err(e)) => Some(Err(e)),
                None => None,
            });
        }
        // Entries applied before (redelivered) or suspected of failing: read their records.
        let lookups: Vec<EntryId> = todo
            .iter()
            .zip(&answers)
            .filter_map(|(work, answer)| match (&work.step, answer) {
                (Step::Apply { id, .. }, Some(Err(SubmitError::AlreadyApplied))) => Some(*id),
                (Step::Suspect { id }, _) => Some(*id),
                _ => None,
            })
            .collect();
        let records: Option<Vec<AppliedSignal>> = if lookups.is_empty() {
            Some(Vec::new())
        } else {
            match self.store.applied_signals(&lookups).await {
                Ok(records) => Some(records),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read applied signals; will retry");
                    None
                }
            }
        };
        let mut settlements = Vec::new();
        let mut left = Vec::new();
        let mut committed_after_a_retry = false;
        for (work, answer) in todo.into_iter().zip(answers) {
            let outcome = match (&work.step, answer) {
                (Step::Dead { reason, detail }, _) => Some(Outcome {
                    status: "dead",
                    reason: (*reason).to_owned(),
                    detail: detail.clone(),
                    seq: None,
                    redelivered: false,
                }),
                (Step::Apply { .. }, Some(Ok(committed))) => {
                    committed_after_a_retry |= !left.is_empty();
                    let record = committed.record();
                    Some(outcome_of(
                        rejection_code(&record.events),
                        Some(record.seq),
                        false,
                    ))
                }
                (Step::Apply { id, .. }, Some(Err(SubmitError::AlreadyApplied)))
                | (Step::Suspect { id }, _) => match &records {
                    None => None,
                    Some(records) => match records.iter().find(|r| r.id == *id) {
                        Some(record) => Some(outcome_of(
                            record.rejection.clone(),
                            Some(record.seq),
                            true,
                        )),
                        None if matches!(work.step, Step::Suspect { .. }) => Some(Outcome {
                            status: "dead",
                            reason: "delivered_too_often".into(),
                            detail: format!(
                                "delivered {} times without being applied (more than {SIGNAL_DELIVERIES_MAX})",
                                work.entry.deliveries
                            ),
                            seq: None,
                            redelivered: true,
                        }),
                        None => {
                            tracing::error!(signal = %id, "the sequencer knows this signal as applied but the store has no record of it; settling it as applied");
                            Some(outcome_of(None, None, true))
                        }
                    },
                },
                (Step::Apply { .. }, Some(Err(SubmitError::Stopped))) => return Err(End::Stop),
                (Step::Apply { .. }, _) => None,
            };
            match outcome {
                Some(outcome) => {
                    self.status
                        .count_settled(outcome.status, outcome.redelivered);
                    settlements.push(settlement(&work, &outcome));
                }
                None => left.push(work),
            }
        }
        if committed_after_a_retry {
            // Only possible if the database came back between two commands of one window.
            tracing::warn!("a signal committed after an earlier one of its window failed: those two are applied out of stream order");
        }
        Ok((settlements, left))
    }
}

/// The engine's refusal code among a command's events.
fn rejection_code(events: &[Event]) -> Option<String> {
    events.iter().find_map(|e| match e {
        Event::Rejected { reason } => Some(reason.as_str().to_owned()),
        _ => None,
    })
}

fn outcome_of(rejection: Option<String>, seq: Option<u64>, redelivered: bool) -> Outcome {
    match rejection {
        None => Outcome {
            status: "applied",
            reason: String::new(),
            detail: String::new(),
            seq,
            redelivered,
        },
        Some(code) => {
            let poison = is_poison_code(&code);
            Outcome {
                status: if poison { "dead" } else { "refused" },
                detail: if poison {
                    format!("the engine refused it: {code}; it can never be applied as written")
                } else {
                    String::new()
                },
                reason: code,
                seq,
                redelivered,
            }
        }
    }
}

/// The original fields as a JSON object (invalid UTF-8 replaced), for the dead letter.
fn fields_json(fields: Option<&Fields>) -> String {
    let mut map = serde_json::Map::new();
    for (name, value) in fields.map(Vec::as_slice).unwrap_or(&[]) {
        map.insert(
            String::from_utf8_lossy(name).into_owned(),
            serde_json::Value::String(String::from_utf8_lossy(value).into_owned()),
        );
    }
    serde_json::Value::Object(map).to_string()
}

fn settlement(work: &Work, outcome: &Outcome) -> Settlement {
    let at = format_rfc3339(now_ms());
    let seq = outcome.seq.map(|s| s.to_string()).unwrap_or_default();
    let result = vec![
        ("signal_id".to_owned(), work.entry.id.clone()),
        ("status".to_owned(), outcome.status.to_owned()),
        ("reason".to_owned(), outcome.reason.clone()),
        ("seq".to_owned(), seq.clone()),
        ("type".to_owned(), work.summary.kind.clone()),
        ("supplier".to_owned(), work.summary.supplier.clone()),
        ("block_id".to_owned(), work.summary.block_id.clone()),
        ("redelivered".to_owned(), outcome.redelivered.to_string()),
        ("at".to_owned(), at.clone()),
    ];
    let dead_letter = (outcome.status == "dead").then(|| {
        vec![
            ("signal_id".to_owned(), work.entry.id.clone()),
            ("reason".to_owned(), outcome.reason.clone()),
            ("detail".to_owned(), outcome.detail.clone()),
            ("deliveries".to_owned(), work.entry.deliveries.to_string()),
            ("seq".to_owned(), seq),
            ("at".to_owned(), at),
            ("fields".to_owned(), fields_json(work.entry.fields.as_ref())),
        ]
    });
    Settlement {
        id: work.entry.id.clone(),
        result,
        dead_letter,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_split_into_poison_and_ordinary_answers() {
        let poison = outcome_of(Some("unknown_pool".into()), Some(3), false);
        assert_eq!(
            (poison.status, poison.reason.as_str()),
            ("dead", "unknown_pool")
        );
        let refused = outcome_of(Some("unknown_block".into()), Some(4), true);
        assert_eq!(refused.status, "refused");
        assert!(refused.redelivered);
        assert_eq!(outcome_of(None, Some(5), false).status, "applied");
    }

    #[test]
    fn a_dead_letter_carries_the_reason_and_the_original_fields() {
        let entry = SignalEntry {
            id: "7-0".into(),
            fields: Some(vec![
                (b"type".to_vec(), b"reclaim".to_vec()),
                (b"gpus".to_vec(), vec![0xff]),
            ]),
            deliveries: 1,
        };
        let work = Consumer::classify(entry);
        let Step::Dead { reason, detail } = &work.step else {
            panic!("not poison");
        };
        let outcome = Outcome {
            status: "dead",
            reason: (*reason).to_owned(),
            detail: detail.clone(),
            seq: None,
            redelivered: false,
        };
        let settled = settlement(&work, &outcome);
        let dead = settled.dead_letter.expect("a dead letter");
        let get = |name: &str| dead.iter().find(|(k, _)| k == name).unwrap().1.clone();
        assert_eq!(get("reason"), "malformed");
        assert_eq!(get("signal_id"), "7-0");
        let fields: serde_json::Value = serde_json::from_str(&get("fields")).unwrap();
        assert_eq!(fields["type"], "reclaim");
        assert_eq!(fields["gpus"], "\u{fffd}");
        assert!(settled
            .result
            .iter()
            .any(|(k, v)| k == "status" && v == "dead"));
    }

    #[test]
    fn an_entry_delivered_too_often_is_suspect_and_an_absurd_id_is_poison() {
        let fields = Some(vec![(b"type".to_vec(), b"reclaim".to_vec())]);
        let suspect = Consumer::classify(SignalEntry {
            id: "9-0".into(),
            fields: fields.clone(),
            deliveries: SIGNAL_DELIVERIES_MAX + 1,
        });
        assert!(matches!(suspect.step, Step::Suspect { .. }));
        let absurd = Consumer::classify(SignalEntry {
            id: format!("{}-0", u64::MAX),
            fields,
            deliveries: 1,
        });
        assert!(matches!(
            absurd.step,
            Step::Dead {
                reason: "malformed",
                ..
            }
        ));
    }
}
