//! The leadership task: a standby takes leadership when it is free, a leader renews it about
//! [`LEADER_RENEWALS_PER_TTL`] times per TTL, and each node records a heartbeat as often.
//!
//! A standby that wins an epoch asks its sequencer to catch up and lead
//! ([`SequencerHandle::promote`]), then starts the bus's tasks (the consumer claims what the
//! old leader left pending). A leader that finds its epoch replaced, or cannot renew for a
//! whole TTL, steps down and stops the bus's tasks; so does one whose sequencer stepped down
//! by itself (a fenced or failed commit). Stopping the task does not give leadership up: the
//! sequencer does that once its last batch committed ([`Leadership::release`]).

use super::{Cluster, LeaderInfo, Leadership};
use crate::bus::BusTasks;
use crate::limits::{LEADER_RENEWALS_PER_TTL, STARTUP_LEADER_PROBE_TIMEOUT, STARTUP_RETRY_WAIT};
use crate::sequencer::{Role, SequencerHandle};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// Starts the bus's tasks when this node starts leading (`true`: the sole consumer, which
/// claims every signal another consumer left pending).
pub type BusStarter = Box<dyn Fn(bool) -> BusTasks + Send + Sync>;

/// The running leadership task.
pub struct LeadershipTask {
    stop: watch::Sender<bool>,
    join: JoinHandle<()>,
}

impl LeadershipTask {
    /// Stops renewing and heartbeating, and stops the bus's tasks if they run.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.join.await {
            tracing::error!(error = %e, "the leadership task failed");
        }
    }
}

struct Leading {
    epoch: u64,
    renewed: Instant,
    bus: BusTasks,
}

/// Starts the task. Before it returns, the node either leads (it was alone, or the leader it
/// found died and its leadership expired: at most two TTLs) or has found a live leader that
/// answers, so a node is what it will be when it starts serving.
pub async fn start(
    cluster: Arc<Cluster>,
    leadership: Arc<Leadership>,
    sequencer: SequencerHandle,
    start_bus: BusStarter,
    leader_changed: Arc<Notify>,
) -> LeadershipTask {
    let (stop, mut stopped) = watch::channel(false);
    let mut state = State {
        cluster,
        leadership,
        sequencer,
        start_bus,
        leading: None,
    };
    // A node alone, or restarted after its leader died, leads before it starts serving;
    // with a live leader that answers, it starts as a standby at once.
    let deadline = Instant::now() + state.cluster.ttl * 2 + STARTUP_LEADER_PROBE_TIMEOUT;
    loop {
        state.turn().await;
        if state.leading.is_some() || Instant::now() >= deadline {
            break;
        }
        if let Some(leader) = state.cluster.leader() {
            if leader.node_id != state.cluster.node.node_id && state.answers(&leader).await {
                break;
            }
        }
        tokio::time::sleep(STARTUP_RETRY_WAIT).await;
    }
    let join = tokio::spawn(async move {
        let period = state.cluster.ttl / LEADER_RENEWALS_PER_TTL;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = leader_changed.notified() => {}
                _ = stopped.changed() => break,
            }
            state.turn().await;
        }
        if let Some(leading) = state.leading.take() {
            leading.bus.stop().await;
        }
    });
    LeadershipTask { stop, join }
}

struct State {
    cluster: Arc<Cluster>,
    leadership: Arc<Leadership>,
    sequencer: SequencerHandle,
    start_bus: BusStarter,
    leading: Option<Leading>,
}

impl State {
    /// Whether `leader` answers `/healthz` (a killed or paused one does not).
    async fn answers(&self, leader: &LeaderInfo) -> bool {
        let url = format!("{}/healthz", leader.advertise_url);
        let probe = self.cluster.http.get(url).send();
        matches!(
            tokio::time::timeout(STARTUP_LEADER_PROBE_TIMEOUT, probe).await,
            Ok(Ok(response)) if response.status().is_success()
        )
    }

    async fn turn(&mut self) {
        // The sequencer may have stepped down by itself: a fenced or failed commit.
        if self.leading.is_some() && !self.sequencer.role().leads() {
            self.stop_leading("the sequencer stepped down").await;
        }
        match &mut self.leading {
            Some(leading) => match self.leadership.renew(leading.epoch).await {
                Ok(true) => leading.renewed = Instant::now(),
                Ok(false) => self.stop_leading("another node holds leadership now").await,
                Err(e) if leading.renewed.elapsed() >= self.cluster.ttl => {
                    let reason = format!("leadership could not be renewed for a TTL: {e}");
                    self.stop_leading(&reason).await;
                }
                Err(e) => tracing::warn!(error = %e, "could not renew leadership; retrying"),
            },
            None => self.try_to_lead().await,
        }
        self.refresh_view().await;
    }

    async fn try_to_lead(&mut self) {
        let epoch = match self.leadership.try_acquire().await {
            Ok(Some(epoch)) => epoch,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "could not look for a free leadership");
                return;
            }
        };
        let won = Instant::now();
        tracing::info!(epoch, node = %self.cluster.node.node_id, "leadership won; catching up with the journal");
        match self.sequencer.promote(epoch).await {
            Ok(()) => {
                let bus = (self.start_bus)(true);
                self.leading = Some(Leading {
                    epoch,
                    renewed: won,
                    bus,
                });
            }
            Err(e) => {
                tracing::warn!(epoch, error = %format!("{e:#}"), "giving leadership up after a failed takeover");
                if let Err(e) = self.leadership.release(epoch).await {
                    tracing::warn!(error = %e, "could not give leadership up; it expires");
                }
            }
        }
    }

    async fn stop_leading(&mut self, reason: &str) {
        let Some(leading) = self.leading.take() else {
            return;
        };
        tracing::warn!(epoch = leading.epoch, reason, "leadership lost");
        self.sequencer.step_down(reason.to_owned()).await;
        leading.bus.stop().await;
    }

    /// Reads who leads and how far the journal is, and records this node's heartbeat.
    async fn refresh_view(&mut self) {
        match self.leadership.leader().await {
            Ok((_, leader)) => self.cluster.set_leader(leader),
            Err(e) => {
                tracing::debug!(error = %e, "could not read leadership");
                self.cluster.set_leader(None);
            }
        }
        if self.sequencer.role() == Role::Standby {
            if let Ok(head) = self.leadership.journal_head().await {
                self.cluster.journal_reached(head);
            }
        }
        let position = self.cluster.position(&self.sequencer);
        if let Err(e) = self
            .leadership
            .heartbeat(position.role.as_str(), position.epoch, position.seq)
            .await
        {
            tracing::debug!(error = %e, "heartbeat not recorded");
        }
    }
}
