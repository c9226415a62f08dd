//! Critical sections, the entity side: which of an entity's messages run now and which wait
//! behind a lock (`shared/docs/entities.md` rules 14, 15 and 18; rule numbers below are that
//! page's).
//!
//! An entity keeps an [`EntityScheduler`] beside its state: the lock it is under, the last epoch
//! it granted and the messages deferred while locked. [`EntityScheduler::admit`] takes the
//! messages that arrived, in order, after the deferred ones, and decides for each:
//! - unlocked: an operation runs; a lock request is granted (a new epoch) and forwarded to the
//!   section's next entity, or, from the last one, the grant goes to the orchestration;
//! - locked: the holder's calls (those carrying the lock's epoch) run at once, jumping the
//!   queue; everything else waits in arrival order; the holder's unlock (or an operator's forced
//!   unlock) frees the entity and the waiting messages get their turn in the same batch;
//! - a call that claims a lock the entity no longer grants (a forced release, or a lock it never
//!   granted) fails with `LockLost`.
//!
//! The operations it admits run in order through [`crate::entity::EntityEntry::run_batch`]; the
//! lock messages it produces commit with the batch, so a grant, a forward and the state are one
//! atomic step. The orchestration side (asking, calling inside, releasing) is
//! [`crate::context::OrchestrationContext::lock_entities`].

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::{
    entity::OperationRequest,
    history::{EntityCaller, EventKind, Failure, HistoryEvent, LockOwner, Message, TimestampMs},
};

/// Most messages an entity keeps waiting behind a lock. Past it, operations are refused (a call
/// gets `EntityBacklogFull`, a signal is dropped and counted); lock messages always queue.
pub const MAX_DEFERRED: usize = 10_000;

/// How many client request ids an entity remembers to drop repeated signals (rule 5).
pub const SEEN_REQUESTS: usize = 1_000;

/// A granted lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldLock {
    pub owner: LockOwner,
    pub epoch: u64,
    pub since_ms: TimestampMs,
}

/// An entity's lock and the messages waiting behind it; stored with the entity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EntityScheduler {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<HeldLock>,
    /// The last epoch granted or revoked; the next grant gets one more.
    #[serde(default)]
    pub epoch: u64,
    /// Messages waiting for the lock to go, in arrival order.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub deferred: VecDeque<Message>,
    /// The last [`SEEN_REQUESTS`] client request ids, oldest first.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub seen: VecDeque<String>,
}

/// What one batch's messages come to.
#[derive(Debug, Default, PartialEq)]
pub struct Admitted {
    /// The operations to run now, in order, each with its caller (`None`: a signal).
    pub operations: Vec<(OperationRequest, Option<EntityCaller>)>,
    /// Messages to send when the batch commits: lock forwards and grants, `LockLost` and
    /// backlog-full answers.
    pub sends: Vec<(String, Message)>,
    /// Signals dropped because the backlog was full.
    pub dropped: usize,
    /// Signals dropped because their request id was seen before.
    pub repeated: usize,
    /// Set when an operator's purge was accepted: the entity goes once the batch's operations ran.
    pub purge: bool,
}

impl EntityScheduler {
    /// Whether there is nothing to keep: no lock, nothing waiting and no request ids to
    /// remember (the epoch may go: only a lock's holder ever names one, and an unlocked entity
    /// has none).
    pub fn is_idle(&self) -> bool {
        self.lock.is_none() && self.deferred.is_empty() && self.seen.is_empty()
    }

    /// Drops an operation whose request id was seen; remembers the others' ids.
    fn first_time(&mut self, message: &Message) -> bool {
        let Message::EntityOperation {
            request_id: Some(id),
            ..
        } = message
        else {
            return true;
        };
        if self.seen.contains(id) {
            return false;
        }
        if self.seen.len() >= SEEN_REQUESTS {
            self.seen.pop_front();
        }
        self.seen.push_back(id.clone());
        true
    }

    /// The instance holding the lock, if any.
    pub fn holder(&self) -> Option<&str> {
        self.lock.as_ref().map(|l| l.owner.instance_id.as_str())
    }

    /// Decides what `arrived` (in arrival order) does to entity `entity_id` at `now_ms`, after
    /// the messages already waiting; updates the lock and the waiting list.
    pub fn admit(
        &mut self,
        entity_id: &str,
        arrived: Vec<Message>,
        now_ms: TimestampMs,
    ) -> Admitted {
        let mut out = Admitted::default();
        let mut queue: VecDeque<Message> = std::mem::take(&mut self.deferred);
        for message in arrived {
            if self.first_time(&message) {
                queue.push_back(message);
            } else {
                out.repeated += 1;
            }
        }
        let mut waiting: VecDeque<Message> = VecDeque::new();
        while let Some(message) = queue.pop_front() {
            let freed = match &self.lock {
                Some(lock) => self.while_locked(lock.clone(), message, &mut waiting, &mut out),
                None => {
                    self.while_free(message, &mut out, now_ms);
                    false
                }
            };
            if freed {
                // The waiting messages arrived before the rest: they go first.
                waiting.extend(queue.drain(..));
                queue = std::mem::take(&mut waiting);
            }
        }
        if out.purge && (self.lock.is_some() || !waiting.is_empty()) {
            out.purge = false; // locked again, or work queued behind: not idle, so not purged
        }
        // Past the cap, operations are refused rather than kept; lock messages always stay.
        let mut kept = VecDeque::with_capacity(waiting.len());
        for message in waiting {
            let operations = kept.iter().filter(|m| is_operation(m)).count();
            if operations >= MAX_DEFERRED && is_operation(&message) {
                refuse_full(entity_id, message, &mut out);
            } else {
                kept.push_back(message);
            }
        }
        self.deferred = kept;
        out
    }

    /// One message while `lock` is held; returns whether it freed the entity.
    fn while_locked(
        &mut self,
        lock: HeldLock,
        message: Message,
        waiting: &mut VecDeque<Message>,
        out: &mut Admitted,
    ) -> bool {
        match message {
            Message::EntityOperation {
                operation,
                input,
                caller: Some(caller),
                ..
            } if caller.epoch.is_some() => {
                if caller.epoch == Some(lock.epoch) && caller.instance_id == lock.owner.instance_id
                {
                    out.operations
                        .push((OperationRequest { operation, input }, Some(caller)));
                } else {
                    lock_lost(caller, out);
                }
                false
            }
            Message::EntityUnlock { owner } if owner == lock.owner => {
                self.lock = None;
                true
            }
            // The reason is for the audit log, which the operator's request wrote.
            Message::EntityForceUnlock { holder, .. } if holder == lock.owner => {
                self.lock = None;
                self.epoch += 1;
                true
            }
            // A release from a non-holder is ignored (rule 15), as is a stale forced release.
            Message::EntityUnlock { .. } | Message::EntityForceUnlock { .. } => false,
            other => {
                waiting.push_back(other);
                false
            }
        }
    }

    /// One message while the entity is free.
    fn while_free(&mut self, message: Message, out: &mut Admitted, now_ms: TimestampMs) {
        match message {
            Message::EntityOperation {
                operation,
                input,
                caller,
                ..
            } => match caller {
                Some(caller) if caller.epoch.is_some() => lock_lost(caller, out),
                caller => {
                    out.purge = false; // an operation after a purge brings the entity back
                    out.operations
                        .push((OperationRequest { operation, input }, caller));
                }
            },
            Message::EntityLock {
                owner,
                entity_ids,
                position,
                mut epochs,
            } => {
                self.epoch += 1;
                epochs.push(self.epoch);
                self.lock = Some(HeldLock {
                    owner: owner.clone(),
                    epoch: self.epoch,
                    since_ms: now_ms,
                });
                out.purge = false;
                let next = position as usize + 1;
                match entity_ids.get(next) {
                    Some(target) => out.sends.push((
                        target.clone(),
                        Message::EntityLock {
                            owner,
                            entity_ids: entity_ids.clone(),
                            position: next as u32,
                            epochs,
                        },
                    )),
                    None => out.sends.push((
                        owner.instance_id.clone(),
                        Message::EntityLockGranted {
                            owner,
                            entity_ids,
                            epochs,
                        },
                    )),
                }
            }
            Message::EntityPurge { .. } => out.purge = true,
            // Unlocks of a free entity, and anything that is not for an entity, do nothing.
            _ => {}
        }
    }
}

/// Whether a message is an operation (what the backlog cap counts).
fn is_operation(message: &Message) -> bool {
    matches!(message, Message::EntityOperation { .. })
}

fn lock_lost(caller: EntityCaller, out: &mut Admitted) {
    out.sends.push((
        caller.instance_id,
        Message::EntityResponse {
            scheduled_id: caller.scheduled_id,
            result: Err(Failure::new(
                "LockLost",
                "the entity no longer grants this section's lock: it was released by an operator",
            )),
        },
    ));
}

fn refuse_full(entity_id: &str, message: Message, out: &mut Admitted) {
    match message {
        Message::EntityOperation {
            caller: Some(caller),
            ..
        } => out.sends.push((
            caller.instance_id,
            Message::EntityResponse {
                scheduled_id: caller.scheduled_id,
                result: Err(Failure::new(
                    "EntityBacklogFull",
                    format!("{entity_id} has {MAX_DEFERRED} operations waiting behind its lock"),
                )),
            },
        )),
        _ => out.dropped += 1,
    }
}

/// The section an execution's history leaves open: its owner and entities (asked for, granted
/// or not). What a turn that ends the execution without running its code must release.
pub fn open_section(
    history: &[HistoryEvent],
    instance_id: &str,
) -> Option<(LockOwner, Vec<String>)> {
    let mut generation = 0;
    let mut open = None;
    for event in history {
        match &event.kind {
            EventKind::ExecutionStarted { generation: g, .. } => generation = *g,
            EventKind::EntityLockRequested { entity_ids } => {
                open = Some((event.id, entity_ids.clone()))
            }
            EventKind::EntityLocksReleased { scheduled_id }
                if open.as_ref().is_some_and(|o| o.0 == *scheduled_id) =>
            {
                open = None
            }
            _ => {}
        }
    }
    open.map(|(section, ids)| {
        (
            LockOwner {
                instance_id: instance_id.to_owned(),
                generation,
                section,
            },
            ids,
        )
    })
}

/// The unlock messages that leave `owner`'s section on `entity_ids`.
pub fn unlocks(owner: &LockOwner, entity_ids: &[String]) -> Vec<(String, Message)> {
    entity_ids
        .iter()
        .map(|id| {
            (
                id.clone(),
                Message::EntityUnlock {
                    owner: owner.clone(),
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(instance: &str, section: u32) -> LockOwner {
        LockOwner {
            instance_id: instance.into(),
            generation: 0,
            section,
        }
    }

    fn op(name: &str) -> Message {
        Message::EntityOperation {
            operation: name.into(),
            input: "null".into(),
            caller: None,
            request_id: None,
        }
    }

    fn call(instance: &str, id: u32, epoch: Option<u64>) -> Message {
        Message::EntityOperation {
            operation: "get".into(),
            input: "null".into(),
            caller: Some(EntityCaller {
                instance_id: instance.into(),
                scheduled_id: id,
                epoch,
            }),
            request_id: None,
        }
    }

    fn lock(instance: &str, ids: &[&str], position: u32, epochs: Vec<u64>) -> Message {
        Message::EntityLock {
            owner: owner(instance, 1),
            entity_ids: ids.iter().map(|s| s.to_string()).collect(),
            position,
            epochs,
        }
    }

    fn names(admitted: &Admitted) -> Vec<&str> {
        admitted
            .operations
            .iter()
            .map(|(r, _)| r.operation.as_str())
            .collect()
    }

    #[test]
    fn a_lock_is_granted_after_the_operations_before_it_and_forwarded_in_order() {
        let mut s = EntityScheduler::default();
        let out = s.admit(
            "@a@1",
            vec![
                op("before"),
                lock("o", &["@a@1", "@a@2"], 0, vec![]),
                op("after"),
            ],
            5,
        );
        assert_eq!(names(&out), ["before"], "rule 15: the later signal waits");
        assert_eq!(s.deferred.len(), 1);
        assert_eq!(s.holder(), Some("o"));
        assert_eq!(
            out.sends,
            [("@a@2".to_string(), lock("o", &["@a@1", "@a@2"], 1, vec![1]))]
        );
        // The last entity replies to the orchestration with every epoch.
        let mut last = EntityScheduler {
            epoch: 6,
            ..Default::default()
        };
        let out = last.admit("@a@2", vec![lock("o", &["@a@1", "@a@2"], 1, vec![1])], 5);
        assert_eq!(
            out.sends,
            [(
                "o".to_string(),
                Message::EntityLockGranted {
                    owner: owner("o", 1),
                    entity_ids: vec!["@a@1".into(), "@a@2".into()],
                    epochs: vec![1, 7],
                }
            )]
        );
    }

    #[test]
    fn the_holders_calls_jump_the_queue_and_an_unlock_lets_the_waiting_run_in_order() {
        let mut s = EntityScheduler::default();
        s.admit("@a@1", vec![lock("o", &["@a@1"], 0, vec![])], 0);
        let out = s.admit(
            "@a@1",
            vec![
                op("w1"),
                lock("p", &["@a@1"], 0, vec![]),
                op("w2"),
                call("o", 4, Some(1)),
            ],
            0,
        );
        assert_eq!(names(&out), ["get"]);
        assert_eq!(s.deferred.len(), 3);
        // A release from a non-holder is ignored.
        let out = s.admit(
            "@a@1",
            vec![Message::EntityUnlock {
                owner: owner("p", 1),
            }],
            0,
        );
        assert!(out.operations.is_empty());
        assert_eq!(s.holder(), Some("o"));
        // The holder leaves: w1 runs, p's lock is granted, w2 waits for p.
        let out = s.admit(
            "@a@1",
            vec![Message::EntityUnlock {
                owner: owner("o", 1),
            }],
            0,
        );
        assert_eq!(names(&out), ["w1"]);
        assert_eq!(s.holder(), Some("p"));
        assert_eq!(s.lock.as_ref().map(|l| l.epoch), Some(2));
        assert_eq!(s.deferred, [op("w2")]);
    }

    #[test]
    fn a_forced_release_bumps_the_epoch_and_the_old_holder_loses_its_lock() {
        let mut s = EntityScheduler::default();
        s.admit("@a@1", vec![lock("o", &["@a@1"], 0, vec![])], 0);
        let out = s.admit(
            "@a@1",
            vec![
                Message::EntityForceUnlock {
                    holder: owner("o", 1),
                    reason: "stuck".into(),
                },
                call("o", 9, Some(1)),
            ],
            0,
        );
        assert!(out.operations.is_empty());
        assert_eq!(s.epoch, 2);
        assert!(s.is_idle());
        let [
            (
                to,
                Message::EntityResponse {
                    scheduled_id: 9,
                    result: Err(failure),
                },
            ),
        ] = &out.sends[..]
        else {
            panic!("expected a LockLost answer, got {:?}", out.sends);
        };
        assert_eq!(
            (to.as_str(), failure.error_type.as_str()),
            ("o", "LockLost")
        );
    }

    #[test]
    fn past_the_cap_calls_are_refused_and_signals_dropped() {
        let mut s = EntityScheduler::default();
        s.admit("@a@1", vec![lock("o", &["@a@1"], 0, vec![])], 0);
        let mut flood: Vec<Message> = (0..MAX_DEFERRED).map(|_| op("w")).collect();
        flood.push(op("one too many"));
        flood.push(call("x", 3, None));
        flood.push(lock("p", &["@a@1"], 0, vec![]));
        let out = s.admit("@a@1", flood, 0);
        assert_eq!(out.dropped, 1);
        assert_eq!(out.sends.len(), 1, "the call is answered EntityBacklogFull");
        assert_eq!(
            s.deferred.len(),
            MAX_DEFERRED + 1,
            "the lock request still queues"
        );
    }

    #[test]
    fn a_repeated_request_id_is_dropped() {
        let mut s = EntityScheduler::default();
        let with_id = |id: &str| Message::EntityOperation {
            operation: "add".into(),
            input: "1".into(),
            caller: None,
            request_id: Some(id.into()),
        };
        let out = s.admit("@a@1", vec![with_id("r1"), with_id("r2"), with_id("r1")], 0);
        assert_eq!((out.operations.len(), out.repeated), (2, 1));
        let out = s.admit("@a@1", vec![with_id("r2"), op("plain"), op("plain")], 0);
        assert_eq!(
            (out.operations.len(), out.repeated),
            (2, 1),
            "plain signals are never deduplicated"
        );
        assert!(!s.is_idle(), "the ids are kept");
    }

    #[test]
    fn a_purge_is_kept_only_when_nothing_follows_it() {
        let mut s = EntityScheduler::default();
        let out = s.admit(
            "@a@1",
            vec![op("x"), Message::EntityPurge { reason: "r".into() }],
            0,
        );
        assert!(out.purge);
        let out = s.admit(
            "@a@1",
            vec![Message::EntityPurge { reason: "r".into() }, op("y")],
            0,
        );
        assert!(!out.purge, "a later operation brings it back");
    }
}
