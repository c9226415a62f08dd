//! The replay core: a pure, synchronous state machine from (history, new messages) to (new
//! events, actions).
//!
//! [`Executor`] rebuilds an orchestration by replaying its history, then runs one turn at a time:
//! [`Executor::turn`] takes the turn's time and the messages waiting for the instance and returns a
//! [`TurnResult`] — the events to append, the [`Action`]s for the runtime to carry out after the
//! commit, which messages were consumed, and the resulting status. It performs no I/O and reads no
//! clock; the runtime persists the result atomically and may keep the executor in a cache so the
//! next turn does not replay from the start.
//!
//! Completions are delivered one at a time, in history order, and the orchestration is polled
//! after each, so a race (`when_any`, `select`) resolves the same way on every replay. The
//! orchestration future is polled with a no-op waker; the futures inside it keep their own wakers,
//! so combinators repoll only what changed.
//!
//! State machine of an execution (the status after each turn):
//!
//! | from | on | to |
//! |---|---|---|
//! | Pending | `Start` | Running (or Completed/Failed if it finishes in its first turn) |
//! | Running | orchestration returns Ok / Err | Completed / Failed |
//! | Running | `continue_as_new` | ContinuedAsNew (runtime starts the next execution) |
//! | Running, Suspended | `Terminate` | Terminated |
//! | Running | `Suspend` | Suspended (other messages stay queued) |
//! | Suspended | `Resume` | Running |
//! | any | replayed code differs from history | Failed (`NonDeterminism`) |
//! | terminal | any message | unchanged; the message is consumed and dropped |

use std::{
    any::Any,
    cell::RefCell,
    collections::VecDeque,
    panic::AssertUnwindSafe,
    rc::Rc,
    task::{Context, Poll, Waker},
};

use crate::{
    context::{ExecutionInfo, OrchestrationContext, Scheduled, State},
    history::{
        EventKind, Failure, HistoryEvent, Json, LockOwner, Message, RuntimeStatus, TimestampMs,
    },
    registry::{OrchestrationFuture, Registry},
    rewind::superseded_by_rewinds,
};

/// A side effect a turn asks the runtime to perform once the turn is committed.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    ScheduleActivity {
        scheduled_id: u32,
        name: String,
        input: Json,
    },
    CreateTimer {
        timer_id: u32,
        fire_at_ms: TimestampMs,
    },
    StartSubOrchestration {
        scheduled_id: u32,
        instance_id: String,
        start: Message,
    },
    /// Deliver a message to another instance (an event, a child's result to its parent, a
    /// terminate to a child).
    SendMessage {
        instance_id: String,
        message: Message,
    },
    /// Deliver a message no earlier than `at` (a scheduled entity signal).
    SendMessageAt {
        instance_id: String,
        message: Message,
        at: TimestampMs,
    },
    /// Replace this instance's history with a new execution that begins with `start`, followed by
    /// the `carry_over` messages (events raised but not yet consumed).
    ContinueAsNew {
        start: Message,
        carry_over: Vec<Message>,
    },
}

/// An open wait for an external event, for the approvals inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventWaitInfo {
    pub name: String,
    pub since_ms: TimestampMs,
    /// The earliest open timer, which a `select` with a timeout would race against.
    pub deadline_ms: Option<TimestampMs>,
}

/// The outcome of one turn.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnResult {
    pub new_events: Vec<HistoryEvent>,
    pub actions: Vec<Action>,
    /// Indexes into the turn's messages that were consumed (the rest stay queued: messages that
    /// arrive while suspended).
    pub consumed: Vec<usize>,
    pub status: RuntimeStatus,
    pub output: Option<Json>,
    pub failure: Option<Failure>,
    /// Set when the custom status changed in this turn.
    pub custom_status: Option<Json>,
    pub waiting: Vec<EventWaitInfo>,
}

/// An orchestration instance in memory: replay state plus the live orchestration future.
pub struct Executor {
    registry: Registry,
    instance_id: String,
    state: Rc<RefCell<State>>,
    future: Option<OrchestrationFuture>,
    info: Option<Rc<ExecutionInfo>>,
    status: RuntimeStatus,
    output: Option<Json>,
    failure: Option<Failure>,
    /// What the code returned during replay when history does not record the end yet, or a
    /// nondeterminism failure found during replay: emitted by the next turn.
    replay_outcome: Option<Result<Json, Failure>>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("instance_id", &self.instance_id)
            .field("status", &self.status)
            .field("history_len", &self.history_len())
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// An executor for `instance_id` with an empty history.
    pub fn new(registry: Registry, instance_id: &str) -> Executor {
        let state = State::default();
        Executor {
            registry,
            instance_id: instance_id.to_owned(),
            state: Rc::new(RefCell::new(state)),
            future: None,
            info: None,
            status: RuntimeStatus::Pending,
            output: None,
            failure: None,
            replay_outcome: None,
        }
    }

    /// An executor for an instance whose execution has ended (`status` is terminal): its code is
    /// not replayed, and every message a turn gives it is consumed and dropped.
    pub fn finished(
        registry: Registry,
        instance_id: &str,
        status: RuntimeStatus,
        history_len: u32,
    ) -> Executor {
        let mut executor = Executor::new(registry, instance_id);
        executor.state.borrow_mut().next_event_id = history_len;
        executor.status = status;
        executor
    }

    /// Rebuilds an executor from a stored history.
    pub fn replay(registry: Registry, instance_id: &str, history: &[HistoryEvent]) -> Executor {
        let mut executor = Executor::new(registry, instance_id);
        {
            let mut s = executor.state.borrow_mut();
            s.replaying = true;
            s.recorded = history
                .iter()
                .filter_map(|e| Scheduled::from_event(&e.kind).map(|what| (e.id, what)))
                .collect::<VecDeque<_>>();
            s.next_event_id = history.len() as u32;
        }
        let superseded = superseded_by_rewinds(history);
        for (position, event) in history.iter().enumerate() {
            executor.state.borrow_mut().now_ms = event.timestamp_ms.max(executor.now());
            if !superseded.contains(&position) {
                executor.apply(event);
            }
        }
        let leftover = {
            let mut s = executor.state.borrow_mut();
            s.replaying = false;
            // Anything produced while replaying is already in history (or is superseded by a
            // nondeterminism failure); ids continue after the stored events.
            s.new_events.clear();
            s.actions.clear();
            s.next_event_id = history.len() as u32;
            s.recorded.front().cloned()
        };
        if executor.status == RuntimeStatus::Running
            && let Some((id, what)) = leftover
        {
            executor.replay_outcome = Some(Err(Failure::new(
                "NonDeterminism",
                format!("history event {id} recorded {what} but the code no longer schedules it"),
            )));
        }
        executor
    }

    fn now(&self) -> TimestampMs {
        self.state.borrow().now_ms
    }

    /// Number of events in the history this executor represents (committed or not).
    pub fn history_len(&self) -> u32 {
        self.state.borrow().next_event_id
    }

    /// The status after the last applied event.
    pub fn status(&self) -> RuntimeStatus {
        self.status
    }

    /// Runs one turn at time `now_ms` over `messages` (in arrival order).
    pub fn turn(&mut self, now_ms: TimestampMs, messages: &[Message]) -> TurnResult {
        {
            let mut s = self.state.borrow_mut();
            s.replaying = false;
            // Time never goes backwards within an instance, even if clocks do.
            s.now_ms = now_ms.max(s.now_ms);
            s.custom_status_changed = false;
        }
        self.state
            .borrow_mut()
            .push_event(EventKind::OrchestratorStarted);
        let mut consumed = Vec::with_capacity(messages.len());
        let mut changed = false;

        if let Some(outcome) = self.replay_outcome.take()
            && matches!(self.status, RuntimeStatus::Running | RuntimeStatus::Failed)
        {
            self.finish(outcome);
            changed = true;
        }

        // A new execution starts before anything else in the batch is looked at, so events that
        // were queued ahead of the start reach their waits.
        let order: Vec<usize> = match messages
            .iter()
            .position(|m| matches!(m, Message::Start { .. }))
        {
            Some(start) if self.status == RuntimeStatus::Pending => std::iter::once(start)
                .chain((0..messages.len()).filter(|i| *i != start))
                .collect(),
            _ => (0..messages.len()).collect(),
        };

        // Messages skipped while suspended get a second pass if a Resume in this same turn ends
        // the suspension, so nothing waits for a turn that may never come.
        let mut skipped = Vec::new();
        let mut queue: VecDeque<usize> = order.into();
        let mut second_pass = false;
        while let Some(index) = queue.pop_front() {
            let message = &messages[index];
            if let Some(unlocks) = self.stale_grant(message) {
                // Locks granted to a section this execution no longer waits for: given back.
                consumed.push(index);
                self.state.borrow_mut().actions.extend(unlocks);
                continue;
            }
            if self.status == RuntimeStatus::ContinuedAsNew
                && matches!(message, Message::EventRaised { .. })
            {
                continue; // stays queued for the next execution
            }
            if self.status.is_terminal() || self.status == RuntimeStatus::ContinuedAsNew {
                consumed.push(index); // dropped: nothing happens to a finished execution
                continue;
            }
            if self.status == RuntimeStatus::Suspended
                && !matches!(message, Message::Resume { .. } | Message::Terminate { .. })
            {
                skipped.push(index); // stays queued until resume
                continue;
            }
            if self.status == RuntimeStatus::Pending && !matches!(message, Message::Start { .. }) {
                if matches!(message, Message::Terminate { .. }) {
                    // Terminating an instance that never started.
                } else if matches!(message, Message::EventRaised { .. }) {
                    // Kept for the wait that will come once the instance starts.
                    continue;
                } else {
                    consumed.push(index);
                    continue;
                }
            }
            consumed.push(index);
            if let Some(kind) = self.event_for(message) {
                let id = self.state.borrow_mut().push_event(kind);
                let event = self.state.borrow().new_events.last().cloned();
                if let Some(event) = event {
                    debug_assert_eq!(event.id, id);
                    self.apply(&event);
                }
                if let Message::Terminate {
                    recursive: true,
                    reason,
                } = message
                {
                    self.terminate_children(reason);
                }
                changed = true;
            }
            if queue.is_empty()
                && !second_pass
                && !skipped.is_empty()
                && self.status == RuntimeStatus::Running
            {
                second_pass = true;
                queue.extend(skipped.drain(..));
            }
        }
        consumed.sort_unstable();
        self.release_at_end();

        let mut s = self.state.borrow_mut();
        if !changed && s.new_events.len() == 1 && !s.custom_status_changed {
            // Nothing happened (e.g. everything waits for a resume): write nothing.
            s.new_events.clear();
            s.next_event_id -= 1;
        } else {
            s.push_event(EventKind::OrchestratorCompleted);
        }
        let deadline = s.timers.values().min().copied();
        let waiting =
            if self.status == RuntimeStatus::Running || self.status == RuntimeStatus::Suspended {
                s.open_waits()
                    .into_iter()
                    .map(|(name, since_ms)| EventWaitInfo {
                        name,
                        since_ms,
                        deadline_ms: deadline,
                    })
                    .collect()
            } else {
                Vec::new()
            };
        let custom_status = s
            .custom_status_changed
            .then(|| s.custom_status.clone())
            .flatten();
        TurnResult {
            new_events: std::mem::take(&mut s.new_events),
            actions: std::mem::take(&mut s.actions),
            consumed,
            status: self.status,
            output: self.output.clone(),
            failure: self.failure.clone(),
            custom_status,
            waiting,
        }
    }

    /// For a lock grant this execution does not wait for (it ended, continued as new, or left
    /// that section), the unlocks that give the locks back.
    fn stale_grant(&self, message: &Message) -> Option<Vec<Action>> {
        let Message::EntityLockGranted {
            owner, entity_ids, ..
        } = message
        else {
            return None;
        };
        let s = self.state.borrow();
        let awaited = !self.status.is_terminal()
            && self.status != RuntimeStatus::ContinuedAsNew
            && self.info.as_ref().map(|i| i.generation) == Some(owner.generation)
            && s.section
                .as_ref()
                .is_some_and(|x| x.id == owner.section && x.epochs.is_none());
        (!awaited).then(|| unlock_actions(owner, entity_ids))
    }

    /// When the execution has ended (or continued as new) inside a critical section, its locks
    /// go (entities.md rule 17).
    fn release_at_end(&mut self) {
        if !(self.status.is_terminal() || self.status == RuntimeStatus::ContinuedAsNew) {
            return;
        }
        let Some(info) = self.info.clone() else {
            return;
        };
        let mut s = self.state.borrow_mut();
        if let Some(section) = s.section.take() {
            let owner = LockOwner {
                instance_id: info.instance_id.clone(),
                generation: info.generation,
                section: section.id,
            };
            s.actions
                .extend(unlock_actions(&owner, &section.entity_ids));
        }
    }

    /// The history event a message becomes, or `None` if it is dropped (a duplicate completion).
    fn event_for(&self, message: &Message) -> Option<EventKind> {
        let open = |id: &u32| self.state.borrow().open.contains(id);
        Some(match message.clone() {
            start @ Message::Start { .. } => {
                if self.status != RuntimeStatus::Pending {
                    return None;
                }
                return start.started_event();
            }
            Message::TaskCompleted {
                scheduled_id,
                result,
            } if open(&scheduled_id) => EventKind::TaskCompleted {
                scheduled_id,
                result,
            },
            Message::TaskFailed {
                scheduled_id,
                failure,
            } if open(&scheduled_id) => EventKind::TaskFailed {
                scheduled_id,
                failure,
            },
            Message::TimerFired { timer_id } if open(&timer_id) => {
                EventKind::TimerFired { timer_id }
            }
            Message::SubOrchestrationCompleted {
                scheduled_id,
                result,
            } if open(&scheduled_id) => EventKind::SubOrchestrationInstanceCompleted {
                scheduled_id,
                result,
            },
            Message::SubOrchestrationFailed {
                scheduled_id,
                failure,
            } if open(&scheduled_id) => EventKind::SubOrchestrationInstanceFailed {
                scheduled_id,
                failure,
            },
            Message::EntityResponse {
                scheduled_id,
                result,
            } if open(&scheduled_id) => match result {
                Ok(result) => EventKind::EntityCallCompleted {
                    scheduled_id,
                    result,
                },
                Err(failure) => EventKind::EntityCallFailed {
                    scheduled_id,
                    failure,
                },
            },
            Message::EntityLockGranted { owner, epochs, .. } if open(&owner.section) => {
                EventKind::EntityLockGranted {
                    scheduled_id: owner.section,
                    epochs,
                }
            }
            Message::EventRaised { name, input } => EventKind::EventRaised { name, input },
            Message::Terminate { reason, .. } => EventKind::ExecutionTerminated { reason },
            Message::Suspend { reason } if self.status == RuntimeStatus::Running => {
                EventKind::ExecutionSuspended { reason }
            }
            Message::Resume { reason } if self.status == RuntimeStatus::Suspended => {
                EventKind::ExecutionResumed { reason }
            }
            _ => return None,
        })
    }

    /// Applies one event (from history or just created) and polls when it can make progress.
    fn apply(&mut self, event: &HistoryEvent) {
        match &event.kind {
            EventKind::ExecutionStarted {
                name,
                version,
                input,
                tags,
                parent,
                generation,
            } => {
                let info = Rc::new(ExecutionInfo {
                    instance_id: self.instance_id.clone(),
                    name: name.clone(),
                    version: version.clone(),
                    tags: tags.clone(),
                    parent: parent.clone(),
                    generation: *generation,
                });
                self.info = Some(info.clone());
                self.status = RuntimeStatus::Running;
                match self.registry.get_orchestration(name) {
                    Some(entry) => {
                        let ctx = OrchestrationContext {
                            state: self.state.clone(),
                            info,
                        };
                        self.future = Some(entry.start(ctx, input.clone()));
                        self.poll();
                    }
                    None => self.finish(Err(Failure::new(
                        "UnknownOrchestration",
                        format!("no orchestration named {name:?} is registered"),
                    ))),
                }
            }
            EventKind::OrchestratorStarted | EventKind::OrchestratorCompleted => {}
            EventKind::TaskScheduled { .. }
            | EventKind::TimerCreated { .. }
            | EventKind::SubOrchestrationInstanceCreated { .. }
            | EventKind::EventSent { .. }
            | EventKind::EntitySignalled { .. }
            | EventKind::EntityCalled { .. }
            | EventKind::EntityLockRequested { .. }
            | EventKind::EntityLocksReleased { .. } => {
                // Matched against the code's calls through `State::recorded`.
            }
            EventKind::TaskCompleted {
                scheduled_id,
                result,
            }
            | EventKind::SubOrchestrationInstanceCompleted {
                scheduled_id,
                result,
            }
            | EventKind::EntityCallCompleted {
                scheduled_id,
                result,
            } => self.deliver(*scheduled_id, Ok(result.clone())),
            EventKind::TaskFailed {
                scheduled_id,
                failure,
            }
            | EventKind::SubOrchestrationInstanceFailed {
                scheduled_id,
                failure,
            }
            | EventKind::EntityCallFailed {
                scheduled_id,
                failure,
            } => self.deliver(*scheduled_id, Err(failure.clone())),
            EventKind::TimerFired { timer_id } => self.deliver(*timer_id, Ok("null".into())),
            EventKind::EntityLockGranted {
                scheduled_id,
                epochs,
            } => {
                if let Some(section) = &mut self.state.borrow_mut().section
                    && section.id == *scheduled_id
                {
                    section.epochs = Some(epochs.clone());
                }
                self.deliver(*scheduled_id, Ok("null".into()));
            }
            EventKind::EventRaised { name, input } => {
                self.state.borrow_mut().raise(name, input.clone());
                self.poll();
            }
            EventKind::ExecutionSuspended { .. } => self.status = RuntimeStatus::Suspended,
            EventKind::ExecutionResumed { .. } => {
                self.status = RuntimeStatus::Running;
                self.poll();
            }
            EventKind::ExecutionRewound { .. } => {}
            EventKind::ExecutionCompleted { output } => {
                self.status = RuntimeStatus::Completed;
                self.output = Some(output.clone());
                self.future = None;
            }
            EventKind::ExecutionFailed { failure } => {
                self.status = RuntimeStatus::Failed;
                self.failure = Some(failure.clone());
                self.future = None;
            }
            EventKind::ExecutionTerminated { reason } => {
                if !self.state.borrow().replaying {
                    self.notify_parent(Err(Failure::new(
                        "Terminated",
                        format!("terminated: {reason}"),
                    )));
                }
                self.status = RuntimeStatus::Terminated;
                self.output = Some(serde_json::to_string(reason).unwrap_or_default());
                self.future = None;
            }
            EventKind::ContinueAsNew { .. } => {
                self.status = RuntimeStatus::ContinuedAsNew;
                self.future = None;
            }
        }
    }

    fn deliver(&mut self, id: u32, result: Result<Json, Failure>) {
        if self.state.borrow_mut().complete(id, result) {
            self.poll();
        }
    }

    /// Polls the orchestration once and records what it did.
    fn poll(&mut self) {
        if self.status != RuntimeStatus::Running {
            return;
        }
        let Some(future) = self.future.as_mut() else {
            return;
        };
        let mut cx = Context::from_waker(Waker::noop());
        // A panic in orchestration code fails this instance, never the dispatcher. The future is
        // dropped (its state is unknown after a panic); the same history replays to the same
        // panic, so replay reaches the same failure.
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx)));
        let replaying = self.state.borrow().replaying;
        let nondeterminism = self.state.borrow_mut().nondeterminism.take();
        let failure = match &polled {
            Err(payload) => Some(Failure::new(
                "Panicked",
                format!("the orchestration panicked: {}", panic_message(&**payload)),
            )),
            Ok(_) => nondeterminism,
        };
        if let Some(failure) = failure {
            self.future = None;
            if replaying {
                self.status = RuntimeStatus::Failed;
                self.replay_outcome = Some(Err(failure));
            } else {
                self.finish(Err(failure));
            }
            return;
        }
        let Ok(polled) = polled else {
            return; // a panic: handled above
        };
        match polled {
            Poll::Ready(result) if replaying => self.replay_outcome = Some(result),
            Poll::Ready(result) => self.finish(result),
            Poll::Pending => {
                let next = self.state.borrow_mut().continue_as_new.take();
                if let Some(input) = next
                    && !replaying
                {
                    self.continue_as_new(input);
                }
            }
        }
    }

    /// Records the end of the execution and tells the parent, if any.
    fn finish(&mut self, result: Result<Json, Failure>) {
        self.future = None;
        let replaying = self.state.borrow().replaying;
        match &result {
            Ok(output) => {
                self.status = RuntimeStatus::Completed;
                self.output = Some(output.clone());
            }
            Err(failure) => {
                self.status = RuntimeStatus::Failed;
                self.failure = Some(failure.clone());
            }
        }
        if replaying {
            // Only reachable for an unknown orchestration: history records the failure next.
            return;
        }
        let kind = match &result {
            Ok(output) => EventKind::ExecutionCompleted {
                output: output.clone(),
            },
            Err(failure) => EventKind::ExecutionFailed {
                failure: failure.clone(),
            },
        };
        self.state.borrow_mut().push_event(kind);
        self.notify_parent(result);
    }

    fn notify_parent(&mut self, result: Result<Json, Failure>) {
        let Some(parent) = self.info.as_ref().and_then(|i| i.parent.clone()) else {
            return;
        };
        let message = match result {
            Ok(result) => Message::SubOrchestrationCompleted {
                scheduled_id: parent.scheduled_id,
                result,
            },
            Err(failure) => Message::SubOrchestrationFailed {
                scheduled_id: parent.scheduled_id,
                failure,
            },
        };
        self.state.borrow_mut().actions.push(Action::SendMessage {
            instance_id: parent.instance_id,
            message,
        });
    }

    fn terminate_children(&mut self, reason: &str) {
        let mut s = self.state.borrow_mut();
        let children: Vec<String> = s.children.values().cloned().collect();
        for child in children {
            s.actions.push(Action::SendMessage {
                instance_id: child,
                message: Message::Terminate {
                    reason: reason.to_owned(),
                    recursive: true,
                },
            });
        }
    }

    fn continue_as_new(&mut self, input: Json) {
        self.future = None;
        self.status = RuntimeStatus::ContinuedAsNew;
        let Some(info) = self.info.clone() else {
            return;
        };
        let mut s = self.state.borrow_mut();
        s.push_event(EventKind::ContinueAsNew {
            input: input.clone(),
        });
        let carry_over = std::mem::take(&mut s.buffered)
            .into_iter()
            .flat_map(|(name, inputs)| {
                inputs.into_iter().map(move |input| Message::EventRaised {
                    name: name.clone(),
                    input,
                })
            })
            .collect();
        s.actions.push(Action::ContinueAsNew {
            start: Message::Start {
                name: info.name.clone(),
                version: info.version.clone(),
                input,
                tags: info.tags.clone(),
                parent: info.parent.clone(),
                generation: info.generation + 1,
            },
            carry_over,
        });
    }
}

/// The messages that release `owner`'s locks on `entity_ids`.
fn unlock_actions(owner: &LockOwner, entity_ids: &[String]) -> Vec<Action> {
    crate::lock::unlocks(owner, entity_ids)
        .into_iter()
        .map(|(instance_id, message)| Action::SendMessage {
            instance_id,
            message,
        })
        .collect()
}

/// The text of a panic's payload (`panic!` with a literal or a formatted message).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

/// The turn that fails an instance without running its code: used when its code cannot be
/// trusted to run (a crash loop, a panic outside the orchestration's own polls). Appends
/// `ExecutionFailed` to `history` and tells the parent, if any; open timers and activities are
/// left to the store, which drops them with the instance's terminal status. An instance that
/// never started (empty history) is started by `start`, its queued `Start` message, first.
pub fn failing_turn(
    instance_id: &str,
    history: &[HistoryEvent],
    start: Option<&Message>,
    failure: Failure,
    now_ms: TimestampMs,
) -> TurnResult {
    let mut next = history.len() as u32;
    let now_ms = history
        .last()
        .map_or(now_ms, |e| e.timestamp_ms.max(now_ms));
    let mut event = |kind| {
        let e = HistoryEvent {
            id: next,
            timestamp_ms: now_ms,
            kind,
        };
        next += 1;
        e
    };
    let mut new_events = vec![event(EventKind::OrchestratorStarted)];
    if let (true, Some(started)) = (history.is_empty(), start.and_then(Message::started_event)) {
        new_events.push(event(started));
    }
    new_events.push(event(EventKind::ExecutionFailed {
        failure: failure.clone(),
    }));
    new_events.push(event(EventKind::OrchestratorCompleted));
    let parent = history
        .iter()
        .chain(&new_events)
        .find_map(|e| match &e.kind {
            EventKind::ExecutionStarted { parent, .. } => parent.clone(),
            _ => None,
        });
    let mut actions: Vec<Action> = parent
        .map(|p| Action::SendMessage {
            instance_id: p.instance_id,
            message: Message::SubOrchestrationFailed {
                scheduled_id: p.scheduled_id,
                failure: failure.clone(),
            },
        })
        .into_iter()
        .collect();
    // Its locks go with it (entities.md rule 18).
    if let Some((owner, entity_ids)) = crate::lock::open_section(history, instance_id) {
        actions.extend(unlock_actions(&owner, &entity_ids));
    }
    TurnResult {
        new_events,
        actions,
        consumed: Vec::new(),
        status: RuntimeStatus::Failed,
        output: None,
        failure: Some(failure),
        custom_status: None,
        waiting: Vec::new(),
    }
}

/// Convenience for tests and tools: replays `history` and runs one turn over `messages`.
pub fn execute_turn(
    registry: &Registry,
    instance_id: &str,
    history: &[HistoryEvent],
    messages: &[Message],
    now_ms: TimestampMs,
) -> TurnResult {
    Executor::replay(registry.clone(), instance_id, history).turn(now_ms, messages)
}
