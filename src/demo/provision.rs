//! The schedulers' provisioners (DESIGN section 11): each learns of a lease on its blocks from
//! the committed batches, as a real provisioner reads `opened` from the lease events, and after
//! a few simulated minutes reports it ready with one ssh endpoint per node (or, in a model
//! pool, its inference gateway's URL); now and then a node fails its health check and the
//! lease is reported failed instead.

use super::{Outcome, Simulation};
use crate::limits::{DEMO_PROVISION_FAILURE_RATE, DEMO_PROVISION_MIN, DEMO_PROVISION_SIM_S};
use matching_engine::{
    AccessStatus, Command, Endpoint, Event, LeaseReady, LeaseView, Offering, PoolConfig,
};
use rand::Rng;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// A lease a demo provisioner is setting up.
pub(super) struct Provisioning {
    due: Instant,
    fails: bool,
    lease: LeaseView,
}

impl Simulation {
    /// The schedulers' provisioners: take note of new leases on their blocks, and hand over
    /// (or fail) those whose time has come. False when the sequencer has stopped.
    pub(super) async fn provision(&mut self, mut budget: usize) -> bool {
        loop {
            match self.batches.try_recv() {
                Ok(batch) => {
                    for record in &batch.records {
                        for event in &record.events {
                            if let Event::LeaseOpened { lease } = event {
                                self.note_lease(lease);
                            }
                        }
                    }
                }
                // Missed batches only mean leases that will time out, as with a real outage.
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
        let now = Instant::now();
        while budget > 0 {
            let Some(at) = self.provisioning.iter().position(|p| p.due <= now) else {
                break;
            };
            let job = self.provisioning.swap_remove(at);
            budget -= 1;
            let Some(command) = self
                .schedulers
                .iter()
                .find(|s| s.pool.id == *job.lease.pool)
                .map(|s| handover(&job, &s.pool))
            else {
                continue;
            };
            if matches!(self.submit(command).await, Outcome::Stopped) {
                return false;
            }
        }
        true
    }

    /// A lease opened on one of the schedulers' blocks: schedule its handover.
    fn note_lease(&mut self, lease: &LeaseView) {
        let ours = self
            .schedulers
            .iter()
            .any(|s| *s.account == *lease.supplier);
        if !ours || lease.access.status != AccessStatus::Provisioning {
            return;
        }
        let simulated_s = self.rng.random_range(DEMO_PROVISION_SIM_S);
        let wait =
            Duration::from_secs_f64(simulated_s / self.options.speed).max(DEMO_PROVISION_MIN);
        self.provisioning.push(Provisioning {
            due: Instant::now() + wait,
            fails: self.rng.random_bool(DEMO_PROVISION_FAILURE_RATE),
            lease: lease.clone(),
        });
    }
}

/// What a demo provisioner reports for a lease: `ready` with plausible endpoints, or failed.
fn handover(job: &Provisioning, pool: &PoolConfig) -> Command {
    let lease = &job.lease;
    if job.fails {
        return Command::LeaseFailed {
            supplier: lease.supplier.to_string(),
            block_id: lease.block_id.to_string(),
            lease_id: lease.id,
            reason: "a node failed its GPU health check".to_owned(),
        };
    }
    let (endpoints, endpoint) = match pool.offering {
        Offering::Model => {
            let model = pool.model.as_deref().unwrap_or("model");
            let url = format!(
                "https://{model}.{}.gateway.offpeak-demo.internal/v1",
                pool.region
            );
            (Vec::new(), Some(url))
        }
        Offering::BareMetal if lease.nodes.is_empty() => {
            let host = format!("lease-{}.{}.offpeak-demo.internal", lease.id, pool.region);
            (vec![ssh_endpoint(None, host)], None)
        }
        Offering::BareMetal => {
            let endpoints = lease
                .nodes
                .iter()
                .map(|n| {
                    let host = format!("{}.{}.offpeak-demo.internal", n.node, pool.region);
                    ssh_endpoint(Some(n.node.clone()), host)
                })
                .collect();
            (endpoints, None)
        }
    };
    Command::LeaseReady(LeaseReady {
        supplier: lease.supplier.to_string(),
        block_id: lease.block_id.to_string(),
        lease_id: lease.id,
        endpoints,
        endpoint,
    })
}

fn ssh_endpoint(node: Option<matching_engine::Name>, host: String) -> Endpoint {
    Endpoint {
        node,
        host: host.into(),
        port: 22,
        user: "ubuntu".into(),
    }
}
