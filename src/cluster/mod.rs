//! Several offpeak processes on one PostgreSQL database (DESIGN section 10): one leader that
//! commits, hot standbys that follow the journal and serve reads, fenced takeover.
//!
//! The parts: [`leadership`] (the `leadership` row and its epoch, heartbeats, in PostgreSQL),
//! [`listener`] (`LISTEN` for journal and leadership notifications), [`task`] (the loop that
//! takes, renews and gives up leadership, and starts or stops the bus's tasks with it), and
//! [`forward`] (a write sent to a standby goes to the leader). The sequencer does the rest:
//! as a standby it applies the journal, as the leader it commits under its epoch
//! ([`crate::sequencer::Role`]). The embedded SQLite store is for one process only: a lock on
//! its data directory ([`DataDirLock`]) keeps a second one out.
//!
//! What holds: only the holder of the current epoch can commit (each batch checks its epoch in
//! its transaction); a standby takes over once the leader has not renewed for the TTL, reads
//! the journal to its end (final, since no older epoch can commit any more) and then commits;
//! an old leader that comes back finds its commits fenced and follows as a standby.

pub mod forward;
pub mod leadership;
pub mod listener;
pub mod task;

use crate::sequencer::{Role, SequencerHandle};
use serde::Serialize;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use utoipa::ToSchema;

pub use leadership::Leadership;

/// How this node is named and reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeIdentity {
    /// `OFFPEAK_NODE_ID`.
    pub node_id: String,
    /// `OFFPEAK_ADVERTISE_URL`.
    pub advertise_url: String,
}

/// The leader as the leadership row names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct LeaderInfo {
    /// Its node id.
    pub node_id: String,
    /// Where to forward writes.
    pub advertise_url: String,
    /// Its epoch.
    pub epoch: u64,
}

/// What every request handler may ask about the cluster: this node, the leader it last saw,
/// and how far the journal has gone.
pub struct Cluster {
    /// This node.
    pub node: NodeIdentity,
    /// `None` with the single-process store.
    pub leadership: Option<Arc<Leadership>>,
    /// The live leader, as last read (refreshed every renewal period and on notifications).
    leader: RwLock<Option<LeaderInfo>>,
    /// The newest seq the journal is known to have.
    journal_head: AtomicU64,
    /// The client writes are forwarded with.
    pub(crate) http: reqwest::Client,
    /// The leader's TTL.
    pub ttl: Duration,
}

impl Cluster {
    /// The cluster view of a node; `leadership` is `None` for the single-process store.
    pub fn new(
        node: NodeIdentity,
        leadership: Option<Arc<Leadership>>,
        ttl: Duration,
    ) -> anyhow::Result<Cluster> {
        let http = reqwest::Client::builder()
            .timeout(crate::limits::FORWARD_TIMEOUT)
            .connect_timeout(crate::limits::DB_CONNECT_TIMEOUT)
            .build()?;
        Ok(Cluster {
            node,
            leadership,
            leader: RwLock::new(None),
            journal_head: AtomicU64::new(0),
            http,
            ttl,
        })
    }

    /// The leader as last seen (`None`: none is live, or not known yet).
    pub fn leader(&self) -> Option<LeaderInfo> {
        self.leader
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub(crate) fn set_leader(&self, leader: Option<LeaderInfo>) {
        *self
            .leader
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = leader;
    }

    /// Records that the journal has reached at least `seq`.
    pub(crate) fn journal_reached(&self, seq: u64) {
        self.journal_head.fetch_max(seq, Ordering::AcqRel);
    }

    /// This node's role, epoch, leader and lag, for `/readyz`, `/metrics` and the heartbeat.
    pub fn position(&self, sequencer: &SequencerHandle) -> Position {
        let role = sequencer.role();
        let seq = sequencer.last_seq();
        let head = self.journal_head.load(Ordering::Acquire).max(seq);
        let leader = self.leader();
        let (leader_id, epoch) = match role {
            Role::Single => (Some(self.node.node_id.clone()), 0),
            Role::Leader { epoch } => (Some(self.node.node_id.clone()), epoch),
            Role::Standby => match &leader {
                Some(leader) => (Some(leader.node_id.clone()), leader.epoch),
                None => (None, sequencer.epoch()),
            },
        };
        Position {
            role,
            leader: leader_id,
            epoch,
            seq,
            lag: if role.leads() { 0 } else { head - seq },
        }
    }
}

/// Where a node stands.
#[derive(Clone, Debug)]
pub struct Position {
    /// Leader, standby or the single process.
    pub role: Role,
    /// The leader's node id, if one is known to be live.
    pub leader: Option<String>,
    /// The current epoch as this node knows it.
    pub epoch: u64,
    /// The last seq this node applied.
    pub seq: u64,
    /// Seqs behind the journal's newest.
    pub lag: u64,
}

/// The embedded store's data directory, held by one process: a second one on the same
/// directory is refused at start.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// The lock file in the data directory.
const LOCK_FILE: &str = "offpeak.lock";

impl DataDirLock {
    /// Locks `data_dir` for this process (released when dropped, or when the process ends).
    pub fn acquire(data_dir: &Path) -> anyhow::Result<DataDirLock> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join(LOCK_FILE);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(DataDirLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "the data directory {} is already in use by another offpeak process; the \
                 embedded SQLite store serves one process only (stop the other one, give this \
                 one its own OFFPEAK_DATA_DIR, or set DATABASE_URL to run several nodes on \
                 PostgreSQL)",
                data_dir.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(anyhow::Error::new(e).context(format!("locking {}", path.display())))
            }
        }
    }
}
