//! Eager activities: an activity starts as soon as the turn that schedules it has run, before
//! that turn is committed, and a result that comes back quickly is committed together with the
//! turn that scheduled it and the turn that consumes it.
//!
//! A hello-3 orchestration would otherwise commit five times (its start, and a turn per step:
//! each turn's commit must land before its activity runs); with eager activities that finish
//! within [`RuntimeOptions::eager_window`](super::RuntimeOptions) it commits once: a start due
//! now runs its first turn in the dispatcher before it is stored
//! ([`WriteOp::StartRun`](crate::store::WriteOp::StartRun)), and the start, its turns and its
//! results commit together. The guarantees do not change: a crash before the commit loses only work
//! that is done again after the restart (the turns replay, the activities run again: activities
//! run at least once, as always), and nothing another instance or a client can see happens
//! before the commit that records it.
//!
//! The dispatcher keeps the turns of an instance whose eager activities run in a *chain*,
//! uncommitted. The chain is committed, as one turn, when no eager activity of it is left
//! running, when the instance ends or continues as new, or when the window has passed. Those
//! still running then get their rows in that commit like any scheduled activity, and the rows
//! come back to them here ([`Eager::attach`]) instead of going to the workers: each runs once,
//! and its result is delivered under its row's lease.
//!
//! Only a store that serves one process ([`Store::in_memory_handover`](crate::store::Store))
//! runs activities eagerly. A start that finds crash suspects in the journals turns eager
//! activities off for the life of the process, so a crash loop is named by the journals exactly
//! as without them.

use std::collections::HashMap;

use crate::{history::Failure, store::ActivityItem};

/// An eager activity on its way to the workers.
#[derive(Debug)]
pub(crate) struct EagerItem {
    pub token: i64,
    pub instance_id: String,
    pub scheduled_id: u32,
    pub name: String,
    pub input: String,
}

/// Where an eager activity stands.
#[derive(Debug)]
enum Slot {
    /// Running, its schedule uncommitted.
    Running,
    /// Running while the commit that gives it a row is under way.
    Committing,
    /// Finished while that commit was under way.
    Done(Result<String, Failure>),
    /// Running, with the row (leased to this runtime) its schedule's commit gave it.
    Row(ActivityItem),
}

/// What happens to an eager activity's outcome.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Its schedule is uncommitted: the result goes to the dispatcher, for the chain.
    Chain,
    /// It has a row: the result is delivered as any activity's, under the row's lease.
    Row(ActivityItem),
    /// Kept until its row comes back from the commit under way, or no longer wanted (its chain
    /// was dropped: the turns replay and schedule the activity again).
    Held,
}

/// The eager activities of one runtime, by token.
#[derive(Debug, Default)]
pub(crate) struct Eager {
    slots: HashMap<i64, Slot>,
    /// Tokens whose schedule is being committed, by instance and scheduled id: the rows the
    /// commit returns are theirs.
    committing: HashMap<(String, u32), i64>,
    next: i64,
}

impl Eager {
    /// Registers an eager activity about to start; returns its token.
    pub(crate) fn start(&mut self) -> i64 {
        self.next += 1;
        self.slots.insert(self.next, Slot::Running);
        self.next
    }

    /// Records that the activity `token` finished with `result`, and says where the result
    /// goes. Called with the registry locked, so a result sent to the dispatcher is on its way
    /// before [`Eager::prepare`] can look.
    pub(crate) fn finish(&mut self, token: i64, result: &Result<String, Failure>) -> Outcome {
        match self.slots.remove(&token) {
            Some(Slot::Running) => Outcome::Chain,
            Some(Slot::Committing) => {
                self.slots.insert(token, Slot::Done(result.clone()));
                Outcome::Held
            }
            Some(Slot::Row(item)) => Outcome::Row(item),
            Some(done @ Slot::Done(_)) => {
                self.slots.insert(token, done);
                Outcome::Held
            }
            None => Outcome::Held,
        }
    }

    /// Prepares the commit of a chain whose eager activities `running` (token, scheduled id)
    /// still run: each will take the row the commit gives it. `None` if one of them has
    /// finished meanwhile: its result is on its way to the dispatcher, and the chain should
    /// consume it first.
    pub(crate) fn prepare(&mut self, instance_id: &str, running: &[(i64, u32)]) -> Option<()> {
        if running
            .iter()
            .any(|(token, _)| !matches!(self.slots.get(token), Some(Slot::Running)))
        {
            return None;
        }
        for (token, scheduled_id) in running {
            self.slots.insert(*token, Slot::Committing);
            self.committing
                .insert((instance_id.to_owned(), *scheduled_id), *token);
        }
        Some(())
    }

    /// Takes the rows a commit returned that belong to eager activities: those still running
    /// keep theirs for their result; those done meanwhile are returned with their result, to
    /// be delivered now. The rest of `items` are left for the workers.
    pub(crate) fn attach(
        &mut self,
        items: &mut Vec<ActivityItem>,
    ) -> Vec<(ActivityItem, Result<String, Failure>)> {
        if self.committing.is_empty() {
            return Vec::new();
        }
        let mut done = Vec::new();
        items.retain_mut(|item| {
            let key = (std::mem::take(&mut item.instance_id), item.scheduled_id);
            let token = self.committing.remove(&key);
            item.instance_id = key.0;
            let Some(token) = token else {
                return true;
            };
            match self.slots.remove(&token) {
                Some(Slot::Committing) => {
                    self.slots.insert(token, Slot::Row(item.clone()));
                }
                Some(Slot::Done(result)) => done.push((item.clone(), result)),
                _ => {}
            }
            false
        });
        done
    }

    /// Forgets the eager activities of a chain that was dropped or whose commit failed: their
    /// results are not wanted (the turns run again and schedule them again).
    pub(crate) fn abandon(
        &mut self,
        instance_id: &str,
        tokens: impl IntoIterator<Item = (i64, u32)>,
    ) {
        for (token, scheduled_id) in tokens {
            self.slots.remove(&token);
            self.committing
                .remove(&(instance_id.to_owned(), scheduled_id));
        }
    }

    /// Row ids of eager activities running under a row's lease, for renewal.
    pub(crate) fn row_ids(&self) -> Vec<i64> {
        self.slots
            .values()
            .filter_map(|slot| match slot {
                Slot::Row(item) => Some(item.id),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Lease;

    fn row(instance: &str, scheduled_id: u32, id: i64) -> ActivityItem {
        ActivityItem {
            id,
            instance_id: instance.into(),
            scheduled_id,
            name: "A".into(),
            input: "null".into(),
            lease: Lease {
                fence: 1,
                expires_at: 10,
            },
        }
    }

    #[test]
    fn a_result_before_the_commit_goes_to_the_chain() {
        let mut eager = Eager::default();
        let token = eager.start();
        assert!(matches!(
            eager.finish(token, &Ok("1".into())),
            Outcome::Chain
        ));
        assert!(eager.slots.is_empty());
    }

    #[test]
    fn an_activity_still_running_at_the_commit_takes_its_row_and_runs_once() {
        let mut eager = Eager::default();
        let (a, b) = (eager.start(), eager.start());
        eager.prepare("i", &[(a, 1), (b, 2)]).unwrap();
        // `b` finishes while the commit is under way; `a` after it.
        assert!(matches!(eager.finish(b, &Ok("2".into())), Outcome::Held));
        let mut rows = vec![row("i", 1, 10), row("i", 2, 11), row("other", 1, 12)];
        let done = eager.attach(&mut rows);
        assert_eq!(
            rows.len(),
            1,
            "only the other instance's row goes to the workers"
        );
        assert_eq!(rows[0].instance_id, "other");
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].0.id, 11);
        assert_eq!(eager.row_ids(), vec![10]);
        match eager.finish(a, &Ok("1".into())) {
            Outcome::Row(item) => assert_eq!(item.id, 10),
            other => panic!("{other:?}"),
        }
        assert!(eager.slots.is_empty() && eager.committing.is_empty());
    }

    #[test]
    fn a_chain_waits_for_a_result_already_on_its_way() {
        let mut eager = Eager::default();
        let (a, b) = (eager.start(), eager.start());
        assert!(matches!(eager.finish(a, &Ok("1".into())), Outcome::Chain));
        assert!(eager.prepare("i", &[(a, 1), (b, 2)]).is_none());
        // Nothing changed: `b` still goes to the chain.
        assert!(matches!(eager.finish(b, &Ok("2".into())), Outcome::Chain));
    }

    #[test]
    fn an_abandoned_chain_keeps_nothing() {
        let mut eager = Eager::default();
        let a = eager.start();
        eager.prepare("i", &[(a, 1)]).unwrap();
        eager.abandon("i", [(a, 1)]);
        assert!(matches!(eager.finish(a, &Ok("1".into())), Outcome::Held));
        let mut rows = vec![row("i", 1, 10)];
        assert!(eager.attach(&mut rows).is_empty());
        assert_eq!(rows.len(), 1);
        assert!(eager.slots.is_empty());
    }
}
