//! The handoff (DESIGN section 11): a lease opens `provisioning`; its supplier reports it
//! `ready` (with how to reach it) or `failed`; a lease not ready within its pool's
//! `provision_timeout_s` fails. Billing starts at `ready`. A failed lease costs nothing, its
//! GPUs leave the block, and a persistent bid bids again. Also the buyers' default ssh keys.
//!
//! Invariants: a running lease is `provisioning` or `ready` (a failed one has ended); a ready
//! lease has `ready_at` and, in a pool with `handoff: required`, endpoints that fit it.

use super::{reject, Engine};
use crate::command::LeaseReady;
use crate::event::Event;
use crate::keys::AccountKey;
use crate::types::{
    AccessStatus, Endpoint, LeaseId, LeaseStatus, Name, NodeGpus, Offering, Rejection, SshKeys,
};

/// The reason a lease fails when its provisioner stays silent.
pub(crate) const PROVISION_TIMEOUT_REASON: &str = "provision_timeout";

impl Engine {
    /// The lease, when it runs on one of `supplier`'s blocks named `block_id`; an empty
    /// `block_id` matches any of the supplier's blocks (a capacity signal may leave it out).
    fn supplied_lease(&self, supplier: &str, block_id: &str, lease_id: LeaseId) -> Option<()> {
        let supplier: AccountKey = *self.account_index.get(supplier)?;
        let lease = self.leases.get(&lease_id)?;
        let block = &self.blocks[*self.block_by_serial.get(&lease.block_serial)?];
        let block_named = block_id.is_empty() || &*block.block_id == block_id;
        (lease.supplier == supplier && block_named).then_some(())
    }

    pub(super) fn lease_ready(&mut self, ready: &LeaseReady, out: &mut Vec<Event>) {
        if self
            .supplied_lease(&ready.supplier, &ready.block_id, ready.lease_id)
            .is_none()
        {
            return reject(out, Rejection::UnknownLease);
        }
        let lease = &self.leases[&ready.lease_id];
        if lease.access.status == AccessStatus::Ready {
            // A second `ready` (a redelivery, a retry) changes nothing.
            return;
        }
        let offering = self.pools[lease.pool].config.offering;
        let fits = match offering {
            Offering::BareMetal => {
                ready.endpoint.is_none()
                    && !ready.endpoints.is_empty()
                    && ready
                        .endpoints
                        .iter()
                        .all(|e| endpoint_node_fits(e, &lease.nodes))
            }
            Offering::Model => ready.endpoint.is_some() && ready.endpoints.is_empty(),
        };
        if !fits {
            return reject(out, Rejection::EndpointsInvalid);
        }
        let now = self.now;
        let lease = self.leases.get_mut(&ready.lease_id).expect("checked above");
        lease.access.status = AccessStatus::Ready;
        lease.access.ready_at = Some(now);
        lease.access.endpoints = ready.endpoints.clone();
        lease.access.endpoint = ready.endpoint.as_deref().map(Name::from);
        let lease = &self.leases[&ready.lease_id];
        out.push(Event::LeaseChanged {
            lease: Box::new(self.lease_view(lease)),
        });
    }

    pub(super) fn lease_failed(
        &mut self,
        supplier: &str,
        block_id: &str,
        lease_id: LeaseId,
        reason: &str,
        out: &mut Vec<Event>,
    ) {
        if self.supplied_lease(supplier, block_id, lease_id).is_none() {
            return reject(out, Rejection::UnknownLease);
        }
        if self.leases[&lease_id].access.status != AccessStatus::Provisioning {
            return reject(out, Rejection::LeaseNotProvisioning);
        }
        self.fail_lease(lease_id, reason, out);
    }

    /// Ends a provisioning lease `failed`, for `reason`.
    pub(super) fn fail_lease(&mut self, lease_id: LeaseId, reason: &str, out: &mut Vec<Event>) {
        let lease = self
            .leases
            .get_mut(&lease_id)
            .expect("failing a running lease");
        lease.access.reason = Some(Name::from(reason));
        self.end_lease(lease_id, LeaseStatus::Failed, out);
    }

    pub(super) fn set_ssh_keys(&mut self, account: &str, keys: &[String], out: &mut Vec<Event>) {
        let key = self.intern_account(account);
        self.accounts[key].ssh_keys = SshKeys::from(keys.to_vec());
        out.push(Event::SshKeysChanged {
            account: self.accounts[key].name.clone(),
        });
    }

    /// An account's default ssh public keys.
    pub fn ssh_keys_of(&self, account: &str) -> SshKeys {
        self.account_index.get(account).map_or_else(
            || SshKeys::from(Vec::new()),
            |&key| self.accounts[key].ssh_keys.clone(),
        )
    }
}

/// An endpoint's node, when it names one, is one of the lease's nodes.
fn endpoint_node_fits(endpoint: &Endpoint, lease_nodes: &[NodeGpus]) -> bool {
    endpoint
        .node
        .as_ref()
        .is_none_or(|node| lease_nodes.iter().any(|held| held.node == *node))
}
