//! Leadership in PostgreSQL (DESIGN section 10): one `leadership` row with a fencing epoch,
//! each node's heartbeat in `cluster_nodes`, and the notifications that wake standbys.
//!
//! Time is the database's (`now()`), never a node's clock, so nodes whose clocks disagree
//! still agree on whether a leadership has expired. Taking leadership increments the epoch;
//! every batch commit checks its epoch in its own transaction (`offpeak_fence`), so an old
//! leader can never commit again once a new epoch is written.

use super::{LeaderInfo, NodeIdentity};
use crate::limits::{CLUSTER_NODE_SEEN_TTLS, DB_CONNECT_TIMEOUT};
use crate::store::StoreError;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde::Serialize;
use std::future::Future;
use std::time::Duration;
use tokio_postgres::NoTls;
use utoipa::ToSchema;

/// The channel a leader that gives leadership up (or a new one) notifies.
pub const LEADER_CHANNEL: &str = "offpeak_leader";

/// Connections for leadership, heartbeats and `GET /v1/cluster` (a few small queries a second).
const LEADERSHIP_CONNECTIONS_MAX: usize = 2;

/// A node as its last heartbeat described it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct NodeRow {
    /// Its id (`OFFPEAK_NODE_ID`).
    #[schema(example = "node-a")]
    pub node_id: String,
    /// `leader` or `standby`.
    #[schema(example = "standby")]
    pub role: String,
    /// The epoch it last knew.
    pub epoch: u64,
    /// The last seq it applied.
    pub seq: u64,
    /// Seqs behind the newest heartbeat's (filled in by the reader).
    pub lag: u64,
    /// How the other nodes reach it.
    #[schema(example = "http://10.0.0.2:8080")]
    pub advertise_url: String,
}

/// The leadership row and the nodes, as `GET /v1/cluster` answers.
pub struct ClusterRows {
    /// The current epoch and its holder, if its leadership has not expired.
    pub epoch: u64,
    /// The live leader.
    pub leader: Option<LeaderInfo>,
    /// Nodes seen recently.
    pub nodes: Vec<NodeRow>,
}

/// Leadership operations on the shared PostgreSQL database.
pub struct Leadership {
    pool: Pool,
    config: tokio_postgres::Config,
    node: NodeIdentity,
    ttl: Duration,
}

impl Leadership {
    /// Leadership on this database for `node`, whose leadership lasts `ttl` unless renewed.
    pub fn new(url: &str, node: NodeIdentity, ttl: Duration) -> Result<Leadership, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Query(format!("DATABASE_URL is not a PostgreSQL URL: {e}")))?;
        config.connect_timeout(DB_CONNECT_TIMEOUT);
        config.application_name("offpeak-leadership");
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(LEADERSHIP_CONNECTIONS_MAX)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(DB_CONNECT_TIMEOUT))
            .create_timeout(Some(DB_CONNECT_TIMEOUT))
            .recycle_timeout(Some(DB_CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Query(format!("building the connection pool: {e}")))?;
        Ok(Leadership {
            pool,
            config,
            node,
            ttl,
        })
    }

    /// The connection settings (for the notification listener's own connection).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// Each query may take at most half the TTL: a leader must learn it cannot renew
    /// before its leadership expires.
    async fn bounded<T>(
        &self,
        what: &str,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let limit = self.ttl / 2;
        match tokio::time::timeout(limit, work).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "{what} took longer than {} ms",
                limit.as_millis()
            ))),
        }
    }

    fn ttl_ms(&self) -> i64 {
        self.ttl.as_millis().min(i64::MAX as u128) as i64
    }

    /// Takes leadership if it is free (expired, given up, or held by this node's id before
    /// a restart): returns the new epoch.
    pub async fn try_acquire(&self) -> Result<Option<u64>, StoreError> {
        self.bounded("taking leadership", async {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            // A batch in flight holds the row: wait for its commit only briefly.
            tx.batch_execute("SET LOCAL lock_timeout = '500ms'").await?;
            let row = tx
                .query_opt(
                    "UPDATE leadership SET epoch = epoch + 1, holder = $1, advertise_url = $2, \
                     expires_at = now() + $3::bigint * interval '1 millisecond' \
                     WHERE id = 1 AND (expires_at < now() OR holder = $1) RETURNING epoch",
                    &[&self.node.node_id, &self.node.advertise_url, &self.ttl_ms()],
                )
                .await?;
            if row.is_some() {
                tx.execute("SELECT pg_notify($1, 'acquired')", &[&LEADER_CHANNEL])
                    .await?;
            }
            tx.commit().await?;
            Ok(row.map(|row| row.get::<_, i64>(0) as u64))
        })
        .await
    }

    /// Extends this node's leadership under `epoch`; false if it is no longer this node's.
    pub async fn renew(&self, epoch: u64) -> Result<bool, StoreError> {
        self.bounded("renewing leadership", async {
            let client = self.pool.get().await?;
            let renewed = client
                .execute(
                    "UPDATE leadership SET expires_at = now() + $3::bigint * interval '1 millisecond' \
                     WHERE id = 1 AND epoch = $1 AND holder = $2",
                    &[&(epoch as i64), &self.node.node_id, &self.ttl_ms()],
                )
                .await?;
            Ok(renewed == 1)
        })
        .await
    }

    /// Gives leadership up (a clean stop): the standbys, notified, take over at once.
    pub async fn release(&self, epoch: u64) -> Result<(), StoreError> {
        self.bounded("giving leadership up", async {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            tx.execute(
                "UPDATE leadership SET expires_at = '-infinity' \
                 WHERE id = 1 AND epoch = $1 AND holder = $2",
                &[&(epoch as i64), &self.node.node_id],
            )
            .await?;
            tx.execute("SELECT pg_notify($1, 'released')", &[&LEADER_CHANNEL])
                .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// The current epoch and its leader (`None` when its leadership expired).
    pub async fn leader(&self) -> Result<(u64, Option<LeaderInfo>), StoreError> {
        self.bounded("reading leadership", async {
            let client = self.pool.get().await?;
            let row = client
                .query_one(
                    "SELECT epoch, holder, advertise_url, expires_at > now() AS live \
                     FROM leadership WHERE id = 1",
                    &[],
                )
                .await?;
            let epoch = row.get::<_, i64>("epoch") as u64;
            let holder: Option<String> = row.get("holder");
            let url: Option<String> = row.get("advertise_url");
            let live: bool = row.get("live");
            let leader = match (holder, url, live) {
                (Some(node_id), Some(advertise_url), true) => Some(LeaderInfo {
                    node_id,
                    advertise_url,
                    epoch,
                }),
                _ => None,
            };
            Ok((epoch, leader))
        })
        .await
    }

    /// Records this node's role, epoch and seq (`cluster_nodes`).
    pub async fn heartbeat(&self, role: &str, epoch: u64, seq: u64) -> Result<(), StoreError> {
        self.bounded("the heartbeat", async {
            let client = self.pool.get().await?;
            client
                .execute(
                    "INSERT INTO cluster_nodes (node_id, role, epoch, seq, advertise_url, seen_at) \
                     VALUES ($1, $2, $3, $4, $5, now()) ON CONFLICT (node_id) DO UPDATE SET \
                     role = EXCLUDED.role, epoch = EXCLUDED.epoch, seq = EXCLUDED.seq, \
                     advertise_url = EXCLUDED.advertise_url, seen_at = now()",
                    &[
                        &self.node.node_id,
                        &role,
                        &(epoch as i64),
                        &(seq as i64),
                        &self.node.advertise_url,
                    ],
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// The newest seq in the journal.
    pub async fn journal_head(&self) -> Result<u64, StoreError> {
        self.bounded("reading the journal's head", async {
            let client = self.pool.get().await?;
            let row = client
                .query_opt("SELECT seq FROM journal ORDER BY seq DESC LIMIT 1", &[])
                .await?;
            Ok(row.map_or(0, |row| row.get::<_, i64>(0) as u64))
        })
        .await
    }

    /// The leadership and the nodes seen in the last few TTLs, with their lag behind the
    /// most advanced one.
    pub async fn cluster(&self) -> Result<ClusterRows, StoreError> {
        let (epoch, leader) = self.leader().await?;
        let seen_within_ms = self.ttl_ms() * i64::from(CLUSTER_NODE_SEEN_TTLS);
        let mut nodes = self
            .bounded("reading the nodes", async {
                let client = self.pool.get().await?;
                let rows = client
                    .query(
                        "SELECT node_id, role, epoch, seq, advertise_url FROM cluster_nodes \
                         WHERE seen_at > now() - $1::bigint * interval '1 millisecond' ORDER BY node_id",
                        &[&seen_within_ms],
                    )
                    .await?;
                Ok(rows
                    .iter()
                    .map(|row| NodeRow {
                        node_id: row.get("node_id"),
                        role: row.get("role"),
                        epoch: row.get::<_, i64>("epoch") as u64,
                        seq: row.get::<_, i64>("seq") as u64,
                        lag: 0,
                        advertise_url: row.get("advertise_url"),
                    })
                    .collect::<Vec<_>>())
            })
            .await?;
        let head = nodes.iter().map(|n| n.seq).max().unwrap_or(0);
        for node in &mut nodes {
            node.lag = head - node.seq;
        }
        Ok(ClusterRows {
            epoch,
            leader,
            nodes,
        })
    }
}
