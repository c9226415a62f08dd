//! History events, the messages that drive an orchestration, runtime statuses and failures.
//!
//! An orchestration instance is its history: an append-only list of [`HistoryEvent`]s following
//! the Durable Task Framework's event kinds. [`Message`]s are what arrives from outside a turn
//! (an activity result, a fired timer, a raised event, a management request); the replay core turns
//! each consumed message into one history event. Payloads are JSON text, so the engine never needs
//! the user's types to store or move them.
//!
//! This module is plain data: no I/O, no clock, no behaviour beyond (de)serialisation helpers.

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};

/// A JSON document as text (an input, an output, an event payload).
pub type Json = String;

/// Milliseconds since the Unix epoch. Time enters the engine only as data.
pub type TimestampMs = i64;

/// Why something failed: a type, a message and optionally the failure that caused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub error_type: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Box<Failure>>,
    /// For a refusal that says when to come back (an open circuit breaker, a limiter): the
    /// earliest sensible retry, in milliseconds from the failure. A
    /// [`RetryPolicy`](crate::context::RetryPolicy) waits at least this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl Failure {
    /// A failure of the given type with a message and no cause.
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> Failure {
        Failure {
            error_type: error_type.into(),
            message: message.into(),
            cause: None,
            retry_after_ms: None,
        }
    }

    /// A refusal to retry no earlier than `retry_after_ms` from now.
    pub fn refused(
        error_type: impl Into<String>,
        message: impl Into<String>,
        retry_after_ms: u64,
    ) -> Failure {
        Failure {
            retry_after_ms: Some(retry_after_ms),
            ..Failure::new(error_type, message)
        }
    }

    /// The same failure wrapped by another that explains the context it happened in.
    pub fn caused(self, error_type: impl Into<String>, message: impl Into<String>) -> Failure {
        Failure {
            error_type: error_type.into(),
            message: message.into(),
            cause: Some(Box::new(self)),
            retry_after_ms: None,
        }
    }

    /// The innermost failure of the chain.
    pub fn root_cause(&self) -> &Failure {
        let mut f = self;
        while let Some(cause) = &f.cause {
            f = cause;
        }
        f
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error_type, self.message)?;
        if let Some(cause) = &self.cause {
            write!(f, " (caused by {cause})")?;
        }
        Ok(())
    }
}

/// Any error converts into a failure, keeping its source chain as causes. (`Failure` itself is not
/// a `std::error::Error`, which is what makes this blanket conversion possible, as with `anyhow`.)
impl<E: std::error::Error> From<E> for Failure {
    fn from(err: E) -> Failure {
        fn convert(err: &dyn std::error::Error) -> Failure {
            Failure {
                error_type: "Error".into(),
                message: err.to_string(),
                cause: err.source().map(|s| Box::new(convert(s))),
                retry_after_ms: None,
            }
        }
        convert(&err)
    }
}

/// Where a sub-orchestration reports back to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentInstance {
    pub instance_id: String,
    /// The parent's `SubOrchestrationInstanceCreated` event id.
    pub scheduled_id: u32,
}

/// One entry of an orchestration's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// Position in the history, from 0. Completion events refer to scheduling events by it.
    pub id: u32,
    pub timestamp_ms: TimestampMs,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The Durable Task Framework's history event kinds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum EventKind {
    ExecutionStarted {
        name: String,
        #[serde(default)]
        version: String,
        input: Json,
        #[serde(default)]
        tags: BTreeMap<String, String>,
        #[serde(default)]
        parent: Option<ParentInstance>,
        /// How many times this instance has continued as new before this execution.
        #[serde(default)]
        generation: u32,
    },
    ExecutionCompleted {
        output: Json,
    },
    ExecutionFailed {
        failure: Failure,
    },
    ExecutionTerminated {
        reason: String,
    },
    TaskScheduled {
        name: String,
        input: Json,
    },
    TaskCompleted {
        scheduled_id: u32,
        result: Json,
    },
    TaskFailed {
        scheduled_id: u32,
        failure: Failure,
    },
    TimerCreated {
        fire_at_ms: TimestampMs,
    },
    TimerFired {
        timer_id: u32,
    },
    EventRaised {
        name: String,
        input: Json,
    },
    EventSent {
        instance_id: String,
        name: String,
        input: Json,
    },
    /// A signal to an entity (one-way), for later when `at` is set.
    EntitySignalled {
        entity_id: String,
        operation: String,
        input: Json,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<TimestampMs>,
    },
    /// A call to an entity; its response completes this event's id.
    EntityCalled {
        entity_id: String,
        operation: String,
        input: Json,
    },
    EntityCallCompleted {
        scheduled_id: u32,
        result: Json,
    },
    EntityCallFailed {
        scheduled_id: u32,
        failure: Failure,
    },
    /// A critical section asked for: the locks on `entity_ids` (sorted, distinct), taken one
    /// entity at a time in that order (entities.md rule 14). Its grant completes this event's id.
    EntityLockRequested {
        entity_ids: Vec<String>,
    },
    /// Every lock of section `scheduled_id` is held; `epochs[i]` is `entity_ids[i]`'s grant.
    EntityLockGranted {
        scheduled_id: u32,
        epochs: Vec<u64>,
    },
    /// The section `scheduled_id` was left: its entities were told to unlock.
    EntityLocksReleased {
        scheduled_id: u32,
    },
    SubOrchestrationInstanceCreated {
        name: String,
        instance_id: String,
        input: Json,
    },
    SubOrchestrationInstanceCompleted {
        scheduled_id: u32,
        result: Json,
    },
    SubOrchestrationInstanceFailed {
        scheduled_id: u32,
        failure: Failure,
    },
    ContinueAsNew {
        input: Json,
    },
    ExecutionSuspended {
        reason: String,
    },
    ExecutionResumed {
        reason: String,
    },
    ExecutionRewound {
        reason: String,
        /// Scheduled ids whose failure this rewind undoes; replay treats them as still open.
        #[serde(default)]
        rewound: Vec<u32>,
    },
    OrchestratorStarted,
    OrchestratorCompleted,
}

impl EventKind {
    /// The kind's name as it appears in stored JSON and in the dashboard.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::ExecutionStarted { .. } => "ExecutionStarted",
            EventKind::ExecutionCompleted { .. } => "ExecutionCompleted",
            EventKind::ExecutionFailed { .. } => "ExecutionFailed",
            EventKind::ExecutionTerminated { .. } => "ExecutionTerminated",
            EventKind::TaskScheduled { .. } => "TaskScheduled",
            EventKind::TaskCompleted { .. } => "TaskCompleted",
            EventKind::TaskFailed { .. } => "TaskFailed",
            EventKind::TimerCreated { .. } => "TimerCreated",
            EventKind::TimerFired { .. } => "TimerFired",
            EventKind::EventRaised { .. } => "EventRaised",
            EventKind::EventSent { .. } => "EventSent",
            EventKind::EntitySignalled { .. } => "EntitySignalled",
            EventKind::EntityCalled { .. } => "EntityCalled",
            EventKind::EntityCallCompleted { .. } => "EntityCallCompleted",
            EventKind::EntityCallFailed { .. } => "EntityCallFailed",
            EventKind::EntityLockRequested { .. } => "EntityLockRequested",
            EventKind::EntityLockGranted { .. } => "EntityLockGranted",
            EventKind::EntityLocksReleased { .. } => "EntityLocksReleased",
            EventKind::SubOrchestrationInstanceCreated { .. } => "SubOrchestrationInstanceCreated",
            EventKind::SubOrchestrationInstanceCompleted { .. } => {
                "SubOrchestrationInstanceCompleted"
            }
            EventKind::SubOrchestrationInstanceFailed { .. } => "SubOrchestrationInstanceFailed",
            EventKind::ContinueAsNew { .. } => "ContinueAsNew",
            EventKind::ExecutionSuspended { .. } => "ExecutionSuspended",
            EventKind::ExecutionResumed { .. } => "ExecutionResumed",
            EventKind::ExecutionRewound { .. } => "ExecutionRewound",
            EventKind::OrchestratorStarted => "OrchestratorStarted",
            EventKind::OrchestratorCompleted => "OrchestratorCompleted",
        }
    }
}

/// What arrives at an instance from outside a turn. Each consumed message becomes one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Message {
    /// Begin an execution (a new instance, a continue-as-new or a restart).
    Start {
        name: String,
        #[serde(default)]
        version: String,
        input: Json,
        #[serde(default)]
        tags: BTreeMap<String, String>,
        #[serde(default)]
        parent: Option<ParentInstance>,
        #[serde(default)]
        generation: u32,
    },
    TaskCompleted {
        scheduled_id: u32,
        result: Json,
    },
    TaskFailed {
        scheduled_id: u32,
        failure: Failure,
    },
    TimerFired {
        timer_id: u32,
    },
    EventRaised {
        name: String,
        input: Json,
    },
    SubOrchestrationCompleted {
        scheduled_id: u32,
        result: Json,
    },
    SubOrchestrationFailed {
        scheduled_id: u32,
        failure: Failure,
    },
    Terminate {
        reason: String,
        /// Also terminate running sub-orchestrations.
        #[serde(default)]
        recursive: bool,
    },
    Suspend {
        reason: String,
    },
    Resume {
        reason: String,
    },
    /// An operation for an entity. A signal has no caller; a call's result goes back to its
    /// caller as [`Message::EntityResponse`].
    EntityOperation {
        operation: String,
        input: Json,
        #[serde(default)]
        caller: Option<EntityCaller>,
        /// A client's id for this signal: a second signal with the same id to the same entity
        /// is dropped (entities.md rule 5; within the entity's last [`crate::lock::SEEN_REQUESTS`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
    /// An entity's answer to a call.
    EntityResponse {
        scheduled_id: u32,
        result: Result<Json, Failure>,
    },
    /// A lock request on its way along `entity_ids` (sorted): for `entity_ids[position]`, which
    /// grants it when it is free, appends its epoch and forwards it to the next (rule 14).
    EntityLock {
        owner: LockOwner,
        entity_ids: Vec<String>,
        position: u32,
        #[serde(default)]
        epochs: Vec<u64>,
    },
    /// To the orchestration: every lock of its section `owner.section` is held.
    EntityLockGranted {
        owner: LockOwner,
        entity_ids: Vec<String>,
        epochs: Vec<u64>,
    },
    /// To an entity: `owner` leaves its section. Ignored unless `owner` holds the lock (rule 15).
    EntityUnlock {
        owner: LockOwner,
    },
    /// To an entity, from an operator: release the lock `holder` holds, whoever it is, and bump
    /// the epoch so the old holder's later calls fail with `LockLost` (rule 18). Ignored when
    /// `holder` no longer holds it.
    EntityForceUnlock {
        holder: LockOwner,
        reason: String,
    },
    /// To an entity, from an operator: remove it at once if it is still unlocked with nothing
    /// queued behind it (the purge verb); ignored otherwise.
    EntityPurge {
        reason: String,
    },
}

/// Who called an entity: the orchestration and the `EntityCalled` event its result completes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityCaller {
    pub instance_id: String,
    pub scheduled_id: u32,
    /// Set for a call from inside a critical section: the epoch of the caller's lock on the
    /// entity, which must still be the entity's (rule 18).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// One critical section of one execution: who holds, or asks for, a set of entity locks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LockOwner {
    pub instance_id: String,
    /// The execution (continue-as-new count) the section belongs to.
    pub generation: u32,
    /// The `EntityLockRequested` event's id.
    pub section: u32,
}

/// An instance's runtime status (DTFx names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RuntimeStatus {
    Pending,
    Running,
    Completed,
    ContinuedAsNew,
    Failed,
    Canceled,
    Terminated,
    Suspended,
}

impl RuntimeStatus {
    /// Every status, in display order.
    pub const ALL: [RuntimeStatus; 8] = [
        RuntimeStatus::Pending,
        RuntimeStatus::Running,
        RuntimeStatus::Suspended,
        RuntimeStatus::Completed,
        RuntimeStatus::Failed,
        RuntimeStatus::Terminated,
        RuntimeStatus::Canceled,
        RuntimeStatus::ContinuedAsNew,
    ];

    /// Completed, Failed, Terminated and Canceled: nothing more will happen to the instance.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RuntimeStatus::Completed
                | RuntimeStatus::Failed
                | RuntimeStatus::Terminated
                | RuntimeStatus::Canceled
        )
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeStatus::Pending => "Pending",
            RuntimeStatus::Running => "Running",
            RuntimeStatus::Completed => "Completed",
            RuntimeStatus::ContinuedAsNew => "ContinuedAsNew",
            RuntimeStatus::Failed => "Failed",
            RuntimeStatus::Canceled => "Canceled",
            RuntimeStatus::Terminated => "Terminated",
            RuntimeStatus::Suspended => "Suspended",
        }
    }
}

impl std::str::FromStr for RuntimeStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RuntimeStatus::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown status {s:?}"))
    }
}

impl fmt::Display for RuntimeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Message {
    /// The `ExecutionStarted` event a `Start` message becomes (`None` for other messages).
    pub fn started_event(&self) -> Option<EventKind> {
        let Message::Start {
            name,
            version,
            input,
            tags,
            parent,
            generation,
        } = self.clone()
        else {
            return None;
        };
        Some(EventKind::ExecutionStarted {
            name,
            version,
            input,
            tags,
            parent,
            generation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_json() {
        let event = HistoryEvent {
            id: 3,
            timestamp_ms: 1_700_000_000_000,
            kind: EventKind::TaskFailed {
                scheduled_id: 2,
                failure: Failure::new("Io", "disk full").caused("TaskFailed", "activity failed"),
            },
        };
        let json = serde_json::to_string(&event).unwrap();
        assert!(json.contains(r#""type":"TaskFailed""#), "{json}");
        assert_eq!(serde_json::from_str::<HistoryEvent>(&json).unwrap(), event);
    }

    #[test]
    fn errors_become_failures_with_their_causes() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let failure: Failure = Outer(std::io::Error::other("inner")).into();
        assert_eq!(failure.message, "outer");
        assert_eq!(failure.root_cause().message, "inner");
    }

    #[test]
    fn statuses_parse_case_insensitively() {
        for status in RuntimeStatus::ALL {
            assert_eq!(
                status.as_str().to_lowercase().parse::<RuntimeStatus>(),
                Ok(status)
            );
        }
        assert!("Sleeping".parse::<RuntimeStatus>().is_err());
    }
}
