//! `LISTEN` on the journal and leadership channels, on a connection of its own.
//!
//! Each committed batch notifies `offpeak_journal` with its last seq (in its transaction, so
//! only committed batches are announced); a leader taking or giving up leadership notifies
//! `offpeak_leader`. The listener turns them into a watch of the journal's newest seq (which
//! wakes a standby's sequencer) and a wake-up of the leadership task. A lost connection is
//! reopened with a growing wait; meanwhile standbys fall back on polling.

use super::leadership::LEADER_CHANNEL;
use super::Cluster;
use crate::bus::Backoff;
use crate::limits::{BUS_RETRY_MAX, BUS_RETRY_MIN};
use crate::store::postgres::JOURNAL_CHANNEL;
use std::sync::Arc;
use tokio::sync::{mpsc, watch, Notify};
use tokio_postgres::{AsyncMessage, NoTls};

/// Listens until `stop` turns true.
pub async fn run(
    cluster: Arc<Cluster>,
    journal_head: watch::Sender<u64>,
    leader_changed: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(leadership) = cluster.leadership.clone() else {
        return;
    };
    let mut retry = Backoff::new(BUS_RETRY_MIN, BUS_RETRY_MAX);
    loop {
        let session = listen(
            &cluster,
            leadership.config(),
            &journal_head,
            &leader_changed,
        );
        let ended = tokio::select! {
            ended = session => ended,
            _ = stop.changed() => return,
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "journal notifications lost; reconnecting");
        }
        let wait = retry.next_wait();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn listen(
    cluster: &Cluster,
    config: &tokio_postgres::Config,
    journal_head: &watch::Sender<u64>,
    leader_changed: &Notify,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (messages_tx, mut messages) = mpsc::unbounded_channel();
    // The connection is driven here: its messages are the notifications.
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(message)) => {
                    if messages_tx.send(message).is_err() {
                        return;
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "notification connection failed");
                    return;
                }
                None => return,
            }
        }
    });
    let listening = client
        .batch_execute(&format!(
            "LISTEN {JOURNAL_CHANNEL}; LISTEN {LEADER_CHANNEL}"
        ))
        .await;
    if let Err(e) = listening {
        driver.abort();
        return Err(e);
    }
    // Anything committed before LISTEN took effect was not announced: look once.
    leader_changed.notify_one();
    journal_head.send_modify(|_| {});
    while let Some(message) = messages.recv().await {
        let AsyncMessage::Notification(notification) = message else {
            continue;
        };
        if notification.channel() == JOURNAL_CHANNEL {
            if let Ok(seq) = notification.payload().parse::<u64>() {
                cluster.journal_reached(seq);
                journal_head.send_if_modified(|head| {
                    let newer = seq > *head;
                    *head = (*head).max(seq);
                    newer
                });
            }
        } else if notification.channel() == LEADER_CHANNEL {
            leader_changed.notify_one();
        }
    }
    drop(client);
    Ok(())
}
