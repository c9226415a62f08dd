//! The SQLite store's lease table, in memory: with one process per file every holder lives in
//! this process, so the table is complete. It is read and changed only under the hot
//! connection's lock, atomically with fetches and commits.

use std::collections::HashMap;

use crate::{
    history::TimestampMs,
    store::{
        Holder, Lease, LeaseRecord, MessageRef,
        plan::{self, Plan, Step},
    },
};

/// The lease table.
#[derive(Debug, Default)]
pub(super) struct Leases {
    pub(super) instances: HashMap<String, LeaseRecord>,
    pub(super) activities: HashMap<i64, LeaseRecord>,
    /// The last fence handed out: fences only grow, so one counter serves all work.
    fence: u64,
    /// Entries after the last pruning; the next prune waits until the table has doubled.
    pruned_at: usize,
}

impl Leases {
    /// Takes or renews the lease on an instance for `holder`, or `None` while another holder's
    /// lease runs.
    pub(super) fn instance(
        &mut self,
        instance_id: &str,
        holder: &Holder,
        now_ms: TimestampMs,
        lease_ms: i64,
    ) -> Option<Lease> {
        let current = self.instances.get(instance_id);
        let lease = Self::take(&mut self.fence, current, holder, now_ms, lease_ms)?;
        let seen = lease.lease();
        // Keys are copied only for instances not leased before.
        match self.instances.get_mut(instance_id) {
            Some(slot) => *slot = lease,
            None => {
                self.instances.insert(instance_id.to_owned(), lease);
            }
        }
        Some(seen)
    }

    pub(super) fn activity(
        &mut self,
        id: i64,
        holder: &Holder,
        now_ms: TimestampMs,
        lease_ms: i64,
    ) -> Option<Lease> {
        let current = self.activities.get(&id);
        let lease = Self::take(&mut self.fence, current, holder, now_ms, lease_ms)?;
        let seen = lease.lease();
        self.activities.insert(id, lease);
        Some(seen)
    }

    /// The lease `holder` gets on work leased as `current` ([`plan::acquire`]), with a fresh
    /// fence from the table's counter when it changes hands.
    fn take(
        fence: &mut u64,
        current: Option<&LeaseRecord>,
        holder: &Holder,
        now_ms: TimestampMs,
        lease_ms: i64,
    ) -> Option<LeaseRecord> {
        plan::acquire(current, holder, now_ms, lease_ms, || {
            *fence += 1;
            *fence
        })
    }

    /// Drops expired leases once the table has doubled since the last pruning, so it stays
    /// proportional to the work in flight.
    pub(super) fn prune(&mut self, now_ms: TimestampMs) {
        let len = self.instances.len() + self.activities.len();
        if len < 4_096 || len < 2 * self.pruned_at {
            return;
        }
        self.instances.retain(|_, l| l.expires_at > now_ms);
        self.activities.retain(|_, l| l.expires_at > now_ms);
        self.pruned_at = self.instances.len() + self.activities.len();
    }

    /// Forgets leases on work a committed plan finished: consumed activities, ended or deleted
    /// instances.
    pub(super) fn settle(&mut self, plan: &Plan<'_>) {
        for step in &plan.steps {
            match step {
                Step::Consume(MessageRef::Activity(id)) => {
                    self.activities.remove(id);
                }
                Step::DeleteInstance(id) => {
                    self.instances.remove(id.as_ref());
                }
                _ => {}
            }
        }
        for id in &plan.effects.finished {
            self.instances.remove(id);
        }
    }
}

impl Leases {
    /// Extends `holder`'s unexpired leases on activities `ids` to `now_ms + lease_ms`; returns
    /// the ids whose lease `holder` no longer holds.
    pub(super) fn renew_activities(
        &mut self,
        holder: &Holder,
        ids: &[i64],
        now_ms: TimestampMs,
        lease_ms: i64,
    ) -> Vec<i64> {
        ids.iter()
            .copied()
            .filter(|id| match self.activities.get_mut(id) {
                Some(lease) if lease.holder == *holder && lease.expires_at > now_ms => {
                    lease.expires_at = lease.expires_at.max(now_ms.saturating_add(lease_ms));
                    false
                }
                _ => true,
            })
            .collect()
    }
}
