//! The orchestration context: what orchestration code calls to schedule durable work.
//!
//! Every call that schedules something (an activity, a timer, a sub-orchestration, an event sent
//! to another instance) is matched, in call order, against the scheduling events recorded in
//! history. A match returns the recorded event's id, whose completion the returned future waits
//! for; a call beyond the recorded ones becomes a new history event plus an [`Action`] for the
//! runtime. A call that differs from the record is a nondeterminism failure naming both.
//!
//! Futures returned here are ready only when the replay core has delivered their completion. They
//! store their waker, so combinators such as [`when_all`] repoll only the children that changed.
//! Waits for external events are not history events: raised events are matched to waits by name,
//! first come first served, and buffered when nobody waits yet.
//!
//! The context performs no I/O and reads no clock: "now" is the time of the current turn,
//! recorded in history.

use std::{
    cell::RefCell,
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    fmt,
    future::Future,
    pin::Pin,
    rc::Rc,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::{Duration, SystemTime},
};

use serde::{Serialize, de::DeserializeOwned};

pub use futures_util::future::{
    Either, join_all as when_all, select, try_join_all as try_when_all,
};

use crate::{
    entity::{EntityId, EntityRequest, Operation},
    executor::Action,
    history::{
        EntityCaller, EventKind, Failure, HistoryEvent, Json, LockOwner, Message, ParentInstance,
        TimestampMs,
    },
    registry::{Activity, Event, Orchestration, decode, encode},
};

/// What a scheduling call asked for, compared with history on replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scheduled {
    Activity {
        name: String,
    },
    Timer,
    SubOrchestration {
        name: String,
        instance_id: String,
    },
    EventSent {
        instance_id: String,
        name: String,
    },
    EntitySignal {
        entity_id: String,
        operation: String,
    },
    EntityCall {
        entity_id: String,
        operation: String,
    },
    Lock {
        entity_ids: Vec<String>,
    },
    Unlock {
        section: u32,
    },
}

impl Scheduled {
    /// The scheduling record a history event represents, if it is one.
    pub(crate) fn from_event(kind: &EventKind) -> Option<Scheduled> {
        Some(match kind {
            EventKind::TaskScheduled { name, .. } => Scheduled::Activity { name: name.clone() },
            EventKind::TimerCreated { .. } => Scheduled::Timer,
            EventKind::SubOrchestrationInstanceCreated {
                name, instance_id, ..
            } => Scheduled::SubOrchestration {
                name: name.clone(),
                instance_id: instance_id.clone(),
            },
            EventKind::EventSent {
                instance_id, name, ..
            } => Scheduled::EventSent {
                instance_id: instance_id.clone(),
                name: name.clone(),
            },
            EventKind::EntitySignalled {
                entity_id,
                operation,
                ..
            } => Scheduled::EntitySignal {
                entity_id: entity_id.clone(),
                operation: operation.clone(),
            },
            EventKind::EntityCalled {
                entity_id,
                operation,
                ..
            } => Scheduled::EntityCall {
                entity_id: entity_id.clone(),
                operation: operation.clone(),
            },
            EventKind::EntityLockRequested { entity_ids } => Scheduled::Lock {
                entity_ids: entity_ids.clone(),
            },
            EventKind::EntityLocksReleased { scheduled_id } => Scheduled::Unlock {
                section: *scheduled_id,
            },
            _ => return None,
        })
    }
}

impl fmt::Display for Scheduled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scheduled::Activity { name } => write!(f, "activity {name:?}"),
            Scheduled::Timer => write!(f, "a timer"),
            Scheduled::SubOrchestration { name, instance_id } => {
                write!(f, "sub-orchestration {name:?} ({instance_id})")
            }
            Scheduled::EventSent { instance_id, name } => {
                write!(f, "event {name:?} sent to {instance_id}")
            }
            Scheduled::EntitySignal {
                entity_id,
                operation,
            } => write!(f, "signal {operation:?} to {entity_id}"),
            Scheduled::EntityCall {
                entity_id,
                operation,
            } => write!(f, "call {operation:?} on {entity_id}"),
            Scheduled::Lock { entity_ids } => write!(f, "a lock on {}", entity_ids.join(", ")),
            Scheduled::Unlock { section } => write!(f, "the release of section {section}"),
        }
    }
}

/// Mutable replay state shared by the context and the executor. Single-threaded by design.
#[derive(Default)]
pub(crate) struct State {
    pub now_ms: TimestampMs,
    pub replaying: bool,
    /// Scheduling events from history not yet matched by a call, in order.
    pub recorded: VecDeque<(u32, Scheduled)>,
    pub next_event_id: u32,
    pub new_events: Vec<HistoryEvent>,
    pub actions: Vec<Action>,
    /// Scheduled ids whose completion has not been delivered yet.
    pub open: HashSet<u32>,
    /// Open sub-orchestrations: scheduled id → child instance id (for recursive terminate).
    pub children: BTreeMap<u32, String>,
    /// Open timers: id → fire time (for the approvals inbox deadline).
    pub timers: BTreeMap<u32, TimestampMs>,
    results: HashMap<u32, Result<Json, Failure>>,
    wakers: HashMap<u32, Waker>,
    /// Pending event waits by wait id (ascending = arrival order): (name, waiting since).
    waits: BTreeMap<u64, (String, TimestampMs)>,
    delivered: HashMap<u64, Json>,
    wait_wakers: HashMap<u64, Waker>,
    next_wait: u64,
    /// Raised events nobody waited for yet, per name, in arrival order.
    pub buffered: BTreeMap<String, VecDeque<Json>>,
    pub custom_status: Option<Json>,
    pub custom_status_changed: bool,
    pub continue_as_new: Option<Json>,
    pub nondeterminism: Option<Failure>,
    /// The critical section the code is in (asked for or granted), if any.
    pub section: Option<Section>,
    guid_counter: u64,
}

/// An open critical section (entities.md rule 16).
#[derive(Debug, Clone)]
pub(crate) struct Section {
    /// The `EntityLockRequested` event's id.
    pub id: u32,
    /// Sorted, distinct.
    pub entity_ids: Vec<String>,
    /// Each entity's grant epoch, once every lock is held.
    pub epochs: Option<Vec<u64>>,
    /// Pending calls to locked entities: scheduled id → entity (one per entity).
    pub calls: BTreeMap<u32, String>,
}

/// A violation of the locking rules: the call it comes from fails with it (rule 16).
fn violation(rule: &str) -> Failure {
    Failure::new("LockingRulesViolation", rule)
}

impl State {
    fn flag_nondeterminism(&mut self, message: String) {
        if self.nondeterminism.is_none() {
            self.nondeterminism = Some(Failure::new("NonDeterminism", message));
        }
    }

    /// Appends a new history event stamped with this turn's time and returns its id.
    pub(crate) fn push_event(&mut self, kind: EventKind) -> u32 {
        let id = self.next_event_id;
        self.next_event_id += 1;
        self.new_events.push(HistoryEvent {
            id,
            timestamp_ms: self.now_ms,
            kind,
        });
        id
    }

    /// Matches a scheduling call against history or records it as new; returns its event id.
    fn schedule(
        &mut self,
        what: Scheduled,
        event: EventKind,
        action: impl FnOnce(u32) -> Action,
    ) -> u32 {
        self.schedule_many(what, event, |id| vec![action(id)])
    }

    /// [`State::schedule`] for a call that sends several messages at once.
    fn schedule_many(
        &mut self,
        what: Scheduled,
        event: EventKind,
        actions: impl FnOnce(u32) -> Vec<Action>,
    ) -> u32 {
        if let Some((id, recorded)) = self.recorded.pop_front() {
            if recorded != what {
                self.flag_nondeterminism(format!(
                    "history event {id} recorded {recorded} but the code now schedules {what}"
                ));
            }
            return id;
        }
        if self.replaying {
            self.flag_nondeterminism(format!(
                "the code schedules {what} which history does not record at this point"
            ));
        }
        let id = self.push_event(event);
        let actions = actions(id);
        self.actions.extend(actions);
        id
    }

    /// Delivers a completion; returns false if nothing was waiting for it (a duplicate).
    pub(crate) fn complete(&mut self, id: u32, result: Result<Json, Failure>) -> bool {
        if !self.open.remove(&id) {
            return false;
        }
        self.timers.remove(&id);
        self.children.remove(&id);
        if let Some(section) = &mut self.section {
            section.calls.remove(&id);
        }
        self.results.insert(id, result);
        if let Some(waker) = self.wakers.remove(&id) {
            waker.wake();
        }
        true
    }

    /// Delivers a raised event to the oldest wait for its name, or buffers it.
    pub(crate) fn raise(&mut self, name: &str, input: Json) {
        let wait = self
            .waits
            .iter()
            .find(|(_, (n, _))| n == name)
            .map(|(id, _)| *id);
        match wait {
            Some(id) => {
                self.waits.remove(&id);
                self.delivered.insert(id, input);
                if let Some(waker) = self.wait_wakers.remove(&id) {
                    waker.wake();
                }
            }
            None => self
                .buffered
                .entry(name.to_owned())
                .or_default()
                .push_back(input),
        }
    }

    /// Event waits still open: (name, since).
    pub(crate) fn open_waits(&self) -> Vec<(String, TimestampMs)> {
        self.waits.values().cloned().collect()
    }
}

/// Handle given to orchestration code. Cheap to clone; not `Send` (orchestrations run on one
/// thread, which is part of what makes them deterministic).
#[derive(Clone)]
pub struct OrchestrationContext {
    pub(crate) state: Rc<RefCell<State>>,
    /// Instance id and parent, fixed for the execution.
    pub(crate) info: Rc<ExecutionInfo>,
}

impl fmt::Debug for OrchestrationContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrchestrationContext")
            .field("instance_id", &self.info.instance_id)
            .finish_non_exhaustive()
    }
}

/// Facts about the running execution.
#[derive(Debug, Clone, Default)]
pub(crate) struct ExecutionInfo {
    pub instance_id: String,
    pub name: String,
    pub version: String,
    pub tags: BTreeMap<String, String>,
    pub parent: Option<ParentInstance>,
    pub generation: u32,
}

impl OrchestrationContext {
    /// This instance's id.
    pub fn instance_id(&self) -> &str {
        &self.info.instance_id
    }

    /// How many times this instance has continued as new.
    pub fn generation(&self) -> u32 {
        self.info.generation
    }

    /// The current turn's time: deterministic, the same on every replay.
    pub fn now_ms(&self) -> TimestampMs {
        self.state.borrow().now_ms
    }

    /// [`now_ms`](Self::now_ms) as a `SystemTime`.
    pub fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.now_ms().max(0) as u64)
    }

    /// True while the code is re-executing history; use it to avoid logging the same line twice.
    pub fn is_replaying(&self) -> bool {
        self.state.borrow().replaying
    }

    /// A UUID that is the same on every replay (derived from the instance id and a counter).
    pub fn new_uuid(&self) -> String {
        let n = {
            let mut s = self.state.borrow_mut();
            s.guid_counter += 1;
            s.guid_counter
        };
        let seed = format!("{}/{}/{n}", self.info.instance_id, self.info.generation);
        let hi = fnv1a(seed.as_bytes(), 0xcbf2_9ce4_8422_2325);
        let lo = fnv1a(seed.as_bytes(), 0x8422_2325_cbf2_9ce4);
        // Version 8 (custom), RFC 9562 variant.
        let hi = (hi & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_8000;
        let lo = (lo & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            hi >> 32,
            (hi >> 16) & 0xffff,
            hi & 0xffff,
            lo >> 48,
            lo & 0xffff_ffff_ffff
        )
    }

    /// A number in [0, 1) that is the same on every replay.
    pub fn deterministic_unit(&self) -> f64 {
        let uuid = self.new_uuid();
        let bits = fnv1a(uuid.as_bytes(), 0x1234_5678_9abc_def0);
        (bits >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Sets the custom status shown by queries and the dashboard.
    pub fn set_custom_status<T: Serialize>(&self, status: &T) {
        let json = serde_json::to_string(status).unwrap_or_else(|_| "null".into());
        let mut s = self.state.borrow_mut();
        s.custom_status = Some(json);
        s.custom_status_changed = true;
    }

    fn schedule(
        &self,
        what: Scheduled,
        event: EventKind,
        action: impl FnOnce(u32) -> Action,
    ) -> DurableFuture {
        let mut s = self.state.borrow_mut();
        let id = s.schedule(what, event, action);
        s.open.insert(id);
        DurableFuture {
            state: self.state.clone(),
            id,
        }
    }

    /// Calls activity `A`. Resolves to its output, or to a `TaskFailed` failure whose cause is the
    /// activity's own failure.
    pub fn call_activity<A: Activity>(
        &self,
        input: &A::Input,
    ) -> impl Future<Output = Result<A::Output, Failure>> + 'static + use<A> {
        let encoded = encode(input, &format!("the input of {}", A::NAME));
        let scheduled = encoded.clone().map(|input| {
            self.schedule(
                Scheduled::Activity {
                    name: A::NAME.to_owned(),
                },
                EventKind::TaskScheduled {
                    name: A::NAME.to_owned(),
                    input: input.clone(),
                },
                |scheduled_id| Action::ScheduleActivity {
                    scheduled_id,
                    name: A::NAME.to_owned(),
                    input,
                },
            )
        });
        async move {
            let result = scheduled?.await;
            match result {
                Ok(json) => decode(&json, &format!("the output of {}", A::NAME)),
                Err(failure) => {
                    Err(failure.caused("TaskFailed", format!("activity {} failed", A::NAME)))
                }
            }
        }
    }

    /// Calls activity `A`, retrying failures as `policy` says. The waits between attempts are
    /// durable timers, so retries survive restarts.
    pub fn call_activity_with_retry<A: Activity>(
        &self,
        input: &A::Input,
        policy: &RetryPolicy,
    ) -> impl Future<Output = Result<A::Output, Failure>> + 'static + use<A> {
        let ctx = self.clone();
        let policy = policy.clone();
        let input = encode(input, &format!("the input of {}", A::NAME));
        async move {
            let input: A::Input = decode(&input?, "retry input")?;
            let first_attempt_at = ctx.now_ms();
            let mut attempt = 1;
            loop {
                match ctx.call_activity::<A>(&input).await {
                    Ok(output) => return Ok(output),
                    Err(failure) => {
                        let elapsed =
                            Duration::from_millis((ctx.now_ms() - first_attempt_at).max(0) as u64);
                        let Some(delay) =
                            policy.next_delay(attempt, elapsed, &failure, ctx.deterministic_unit())
                        else {
                            return Err(failure);
                        };
                        ctx.sleep(delay).await;
                        attempt += 1;
                    }
                }
            }
        }
    }

    /// A durable timer that fires at `fire_at_ms` (immediately if that is in the past).
    pub fn create_timer(
        &self,
        fire_at_ms: TimestampMs,
    ) -> impl Future<Output = ()> + 'static + use<> {
        let future = self.schedule(
            Scheduled::Timer,
            EventKind::TimerCreated { fire_at_ms },
            |timer_id| Action::CreateTimer {
                timer_id,
                fire_at_ms,
            },
        );
        self.state.borrow_mut().timers.insert(future.id, fire_at_ms);
        async move {
            let _ = future.await;
        }
    }

    /// A durable timer that fires `duration` after this turn's time.
    pub fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + 'static + use<> {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 2);
        self.create_timer(self.now_ms().saturating_add(millis))
    }

    /// Waits for event `E`. An event raised before the wait began is delivered at once.
    pub fn wait_for_event<E: Event>(
        &self,
    ) -> impl Future<Output = Result<E, Failure>> + 'static + use<E> {
        self.wait_for_event_named::<E>(E::NAME)
    }

    /// Waits for event `E` until `timeout` has passed on a durable timer: `Ok(None)` if it did
    /// not come in time.
    pub fn wait_for_event_timeout<E: Event>(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<E>, Failure>> + 'static + use<E> {
        let event = self.wait_for_event::<E>();
        let timer = self.sleep(timeout);
        async move {
            match select(std::pin::pin!(event), std::pin::pin!(timer)).await {
                Either::Left((event, _)) => event.map(Some),
                Either::Right(((), _)) => Ok(None),
            }
        }
    }

    /// Waits for an external event by a name chosen at run time, decoding its payload as `T`.
    /// Prefer [`wait_for_event`](Self::wait_for_event) with an [`Event`] type.
    pub fn wait_for_event_named<T: DeserializeOwned>(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<T, Failure>> + 'static + use<T> {
        let wait = {
            let mut s = self.state.borrow_mut();
            let id = s.next_wait;
            s.next_wait += 1;
            match s.buffered.get_mut(name).and_then(VecDeque::pop_front) {
                Some(input) => {
                    s.delivered.insert(id, input);
                }
                None => {
                    let since = s.now_ms;
                    s.waits.insert(id, (name.to_owned(), since));
                }
            }
            EventWait {
                state: self.state.clone(),
                id,
                name: name.to_owned(),
                done: false,
            }
        };
        let name = name.to_owned();
        async move {
            let json = wait.await;
            decode(&json, &format!("event {name:?}"))
        }
    }

    /// Starts sub-orchestration `O` and waits for its result. Without an id the child gets
    /// `<parent id>:<event id>`, which is stable across replays.
    pub fn call_sub_orchestration<O: Orchestration>(
        &self,
        input: &O::Input,
        instance_id: Option<&str>,
    ) -> impl Future<Output = Result<O::Output, Failure>> + 'static + use<O> {
        let encoded = encode(input, &format!("the input of {}", O::NAME)).and_then(|input| {
            self.outside_section("start a sub-orchestration")?;
            Ok(input)
        });
        let scheduled = encoded.map(|input| {
            let child_id = match instance_id {
                Some(id) => id.to_owned(),
                None => {
                    // The id the event will get if new; on replay the recorded one is compared.
                    let s = self.state.borrow();
                    let next = s
                        .recorded
                        .front()
                        .map(|(id, _)| *id)
                        .unwrap_or(s.next_event_id);
                    format!("{}:{next}", self.info.instance_id)
                }
            };
            let parent = ParentInstance {
                instance_id: self.info.instance_id.clone(),
                scheduled_id: 0,
            };
            let tags = self.info.tags.clone();
            let future = self.schedule(
                Scheduled::SubOrchestration {
                    name: O::NAME.to_owned(),
                    instance_id: child_id.clone(),
                },
                EventKind::SubOrchestrationInstanceCreated {
                    name: O::NAME.to_owned(),
                    instance_id: child_id.clone(),
                    input: input.clone(),
                },
                |scheduled_id| Action::StartSubOrchestration {
                    scheduled_id,
                    instance_id: child_id.clone(),
                    start: Message::Start {
                        name: O::NAME.to_owned(),
                        version: O::VERSION.to_owned(),
                        input,
                        tags,
                        parent: Some(ParentInstance {
                            scheduled_id,
                            ..parent
                        }),
                        generation: 0,
                    },
                },
            );
            self.state.borrow_mut().children.insert(future.id, child_id);
            future
        });
        async move {
            match scheduled?.await {
                Ok(json) => decode(&json, &format!("the output of {}", O::NAME)),
                Err(failure) => Err(failure.caused(
                    "SubOrchestrationFailed",
                    format!("sub-orchestration {} failed", O::NAME),
                )),
            }
        }
    }

    /// Signals an entity (one-way, recorded as `EntitySignalled`): the operation is queued for
    /// it when this turn commits.
    pub fn signal_entity<O: Operation>(&self, request: EntityRequest<O>) -> Result<(), Failure> {
        self.signal_entity_at(request, None)
    }

    /// Signals an entity for a later time: the operation is queued when this turn commits and
    /// runs no earlier than `at` (entities.md rule 6; `None` or a past time: now). Durable like
    /// a timer; unordered relative to the entity's other messages.
    pub fn signal_entity_at<O: Operation>(
        &self,
        request: EntityRequest<O>,
        at: Option<TimestampMs>,
    ) -> Result<(), Failure> {
        let entity_id = request.key().id().to_string();
        let input = encode(
            request.operation(),
            &format!("the input of operation {}", O::NAME),
        )?;
        if let Some(section) = &self.state.borrow().section
            && section.entity_ids.contains(&entity_id)
        {
            return Err(violation(&format!(
                "inside a critical section an orchestration calls the entities it locked; it may not signal {entity_id}"
            )));
        }
        let future = self.schedule(
            Scheduled::EntitySignal {
                entity_id: entity_id.clone(),
                operation: O::NAME.to_owned(),
            },
            EventKind::EntitySignalled {
                entity_id: entity_id.clone(),
                operation: O::NAME.to_owned(),
                input: input.clone(),
                at,
            },
            |_| {
                let message = Message::EntityOperation {
                    operation: O::NAME.to_owned(),
                    input,
                    caller: None,
                    request_id: None,
                };
                match at {
                    Some(at) => Action::SendMessageAt {
                        instance_id: entity_id,
                        message,
                        at,
                    },
                    None => Action::SendMessage {
                        instance_id: entity_id,
                        message,
                    },
                }
            },
        );
        // Nothing completes a signal.
        self.state.borrow_mut().open.remove(&future.id);
        Ok(())
    }

    /// Calls an entity: the operation is queued for it when this turn commits, runs in its
    /// turn among the entity's other operations, and its result (or failure) comes back. A call
    /// has no timeout (entities.md rule 11).
    pub fn call_entity<O: Operation>(
        &self,
        request: EntityRequest<O>,
    ) -> impl Future<Output = Result<O::Output, Failure>> + 'static + use<O> {
        let entity_id = request.key().id().to_string();
        let caller = self.instance_id().to_owned();
        let encoded = encode(
            request.operation(),
            &format!("the input of operation {}", O::NAME),
        )
        .and_then(|input| Ok((input, self.section_epoch(&entity_id)?)));
        let scheduled = encoded.map(|(input, epoch)| {
            let future = self.schedule(
                Scheduled::EntityCall {
                    entity_id: entity_id.clone(),
                    operation: O::NAME.to_owned(),
                },
                EventKind::EntityCalled {
                    entity_id: entity_id.clone(),
                    operation: O::NAME.to_owned(),
                    input: input.clone(),
                },
                |scheduled_id| Action::SendMessage {
                    instance_id: entity_id.clone(),
                    message: Message::EntityOperation {
                        operation: O::NAME.to_owned(),
                        input,
                        caller: Some(EntityCaller {
                            instance_id: caller,
                            scheduled_id,
                            epoch,
                        }),
                        request_id: None,
                    },
                },
            );
            if epoch.is_some()
                && let Some(section) = &mut self.state.borrow_mut().section
            {
                section.calls.insert(future.id, entity_id.clone());
            }
            future
        });
        async move {
            match scheduled?.await {
                Ok(json) => decode(&json, &format!("the result of operation {}", O::NAME)),
                Err(failure) => Err(failure.caused(
                    "EntityOperationFailed",
                    format!("operation {} on {entity_id} failed", O::NAME),
                )),
            }
        }
    }

    /// Enters a critical section on `entities` (entities.md rules 14 to 17): resolves once every
    /// one is locked for this orchestration. The locks are taken one entity at a time in sorted
    /// order (duplicates dropped), so sections over overlapping sets never deadlock.
    ///
    /// Inside, the orchestration may call the locked entities (one pending call per entity, in
    /// parallel across entities), signal other entities, and run activities, timers and event
    /// waits; it may not lock again, start sub-orchestrations, call an entity it did not lock or
    /// signal one it did: those fail with `LockingRulesViolation`. [`CriticalSection::release`]
    /// leaves the section; so does the end of the execution (completed, failed, terminated or
    /// continued as new), whatever the code did.
    pub fn lock_entities(
        &self,
        entities: &[&EntityId],
    ) -> impl Future<Output = Result<CriticalSection, Failure>> + 'static + use<> {
        let mut entity_ids: Vec<String> = entities.iter().map(|e| e.to_string()).collect();
        entity_ids.sort_unstable();
        entity_ids.dedup();
        let checked = if entity_ids.is_empty() {
            Err(violation("a critical section needs at least one entity"))
        } else {
            self.outside_section("lock again")
        };
        let scheduled = checked.map(|()| {
            let owner = |section| LockOwner {
                instance_id: self.info.instance_id.clone(),
                generation: self.info.generation,
                section,
            };
            let future = self.schedule(
                Scheduled::Lock {
                    entity_ids: entity_ids.clone(),
                },
                EventKind::EntityLockRequested {
                    entity_ids: entity_ids.clone(),
                },
                |section| Action::SendMessage {
                    instance_id: entity_ids[0].clone(),
                    message: Message::EntityLock {
                        owner: owner(section),
                        entity_ids: entity_ids.clone(),
                        position: 0,
                        epochs: Vec::new(),
                    },
                },
            );
            self.state.borrow_mut().section = Some(Section {
                id: future.id,
                entity_ids: entity_ids.clone(),
                epochs: None,
                calls: BTreeMap::new(),
            });
            (owner(future.id), future)
        });
        let state = self.state.clone();
        async move {
            let (owner, granted) = scheduled?;
            granted.await?;
            Ok(CriticalSection {
                state,
                owner,
                entity_ids,
            })
        }
    }

    /// `Ok` outside a critical section; inside, the violation of doing `what` there.
    fn outside_section(&self, what: &str) -> Result<(), Failure> {
        match &self.state.borrow().section {
            None => Ok(()),
            Some(_) => Err(violation(&format!(
                "an orchestration inside a critical section may not {what}"
            ))),
        }
    }

    /// The lock epoch a call to `entity_id` carries: `None` outside a section; inside, the
    /// entity's grant, or the rule the call would break.
    fn section_epoch(&self, entity_id: &str) -> Result<Option<u64>, Failure> {
        let s = self.state.borrow();
        let Some(section) = &s.section else {
            return Ok(None);
        };
        let Some(epochs) = &section.epochs else {
            return Err(violation(
                "an orchestration may not call an entity before its lock request is granted",
            ));
        };
        let Some(position) = section.entity_ids.iter().position(|e| e == entity_id) else {
            return Err(violation(&format!(
                "inside a critical section an orchestration may call only the entities it locked, not {entity_id}"
            )));
        };
        if section.calls.values().any(|e| e == entity_id) {
            return Err(violation(&format!(
                "a call to {entity_id} is pending: one call per locked entity at a time"
            )));
        }
        Ok(epochs.get(position).copied())
    }

    /// Raises event `name` on another instance (one-way, recorded as `EventSent`).
    pub fn raise_event<T: Serialize>(
        &self,
        instance_id: &str,
        name: &str,
        payload: &T,
    ) -> Result<(), Failure> {
        let input = encode(payload, &format!("event {name:?}"))?;
        let future = self.schedule(
            Scheduled::EventSent {
                instance_id: instance_id.to_owned(),
                name: name.to_owned(),
            },
            EventKind::EventSent {
                instance_id: instance_id.to_owned(),
                name: name.to_owned(),
                input: input.clone(),
            },
            |_| Action::SendMessage {
                instance_id: instance_id.to_owned(),
                message: Message::EventRaised {
                    name: name.to_owned(),
                    input,
                },
            },
        );
        // Nothing completes a sent event.
        self.state.borrow_mut().open.remove(&future.id);
        Ok(())
    }

    /// Ends this execution and starts a new one of the same orchestration with `input` and an
    /// empty history. Events raised meanwhile carry over. The returned future never resolves:
    /// `return ctx.continue_as_new(&x).await;`.
    pub fn continue_as_new<I: Serialize, T: 'static>(
        &self,
        input: &I,
    ) -> impl Future<Output = T> + 'static + use<I, T> {
        let json = serde_json::to_string(input).unwrap_or_else(|_| "null".into());
        self.state.borrow_mut().continue_as_new = Some(json);
        std::future::pending()
    }
}

/// A critical section this orchestration holds: the locks on its entities
/// ([`OrchestrationContext::lock_entities`]).
pub struct CriticalSection {
    state: Rc<RefCell<State>>,
    owner: LockOwner,
    entity_ids: Vec<String>,
}

impl fmt::Debug for CriticalSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CriticalSection")
            .field("owner", &self.owner)
            .field("entity_ids", &self.entity_ids)
            .finish_non_exhaustive()
    }
}

impl CriticalSection {
    /// The locked entities, sorted.
    pub fn entity_ids(&self) -> &[String] {
        &self.entity_ids
    }

    /// Leaves the section: every entity is told to unlock when this turn commits (recorded as
    /// `EntityLocksReleased`). Nothing the section did is undone.
    pub fn release(self) {
        let mut s = self.state.borrow_mut();
        if s.section.as_ref().map(|x| x.id) != Some(self.owner.section) {
            return;
        }
        s.section = None;
        let unlocks = crate::lock::unlocks(&self.owner, &self.entity_ids);
        s.schedule_many(
            Scheduled::Unlock {
                section: self.owner.section,
            },
            EventKind::EntityLocksReleased {
                scheduled_id: self.owner.section,
            },
            |_| {
                unlocks
                    .into_iter()
                    .map(|(instance_id, message)| Action::SendMessage {
                        instance_id,
                        message,
                    })
                    .collect()
            },
        );
    }
}

/// The future of a scheduled operation, ready once its completion is delivered.
struct DurableFuture {
    state: Rc<RefCell<State>>,
    id: u32,
}

impl Future for DurableFuture {
    type Output = Result<Json, Failure>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.state.borrow_mut();
        match s.results.remove(&self.id) {
            Some(result) => Poll::Ready(result),
            None => {
                s.wakers.insert(self.id, cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// A wait for an external event. Dropping it unfinished withdraws the wait; an event delivered to
/// it but never observed goes back to the front of the buffer, so no event is lost to a wait that
/// lost a race.
struct EventWait {
    state: Rc<RefCell<State>>,
    id: u64,
    name: String,
    done: bool,
}

impl Future for EventWait {
    type Output = Json;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Json> {
        let id = self.id;
        let delivered = self.state.borrow_mut().delivered.remove(&id);
        match delivered {
            Some(json) => {
                self.done = true;
                Poll::Ready(json)
            }
            None => {
                self.state
                    .borrow_mut()
                    .wait_wakers
                    .insert(id, cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for EventWait {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Ok(mut s) = self.state.try_borrow_mut() else {
            return;
        };
        s.waits.remove(&self.id);
        s.wait_wakers.remove(&self.id);
        if let Some(json) = s.delivered.remove(&self.id) {
            s.buffered
                .entry(self.name.clone())
                .or_default()
                .push_front(json);
        }
    }
}

/// Waits for the first of `futures` to finish; returns its index and output. Ties go to the lowest
/// index, which keeps the choice deterministic on replay.
pub async fn when_any<F: Future>(futures: Vec<F>) -> (usize, F::Output) {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    assert!(!futures.is_empty(), "when_any needs at least one future");
    std::future::poll_fn(move |cx| {
        for (i, f) in futures.iter_mut().enumerate() {
            if let Poll::Ready(out) = f.as_mut().poll(cx) {
                return Poll::Ready((i, out));
            }
        }
        Poll::Pending
    })
    .await
}

/// Decides whether an activity failure is worth retrying.
pub type RetryPredicate = Arc<dyn Fn(&Failure) -> bool + Send + Sync>;

/// Retry policy for activities (DTFx `RetryOptions` plus jitter).
///
/// The delay before attempt n+1 is `first_interval × backoff_coefficient^(n-1)`, capped at
/// `max_interval`, then spread by up to ±`jitter` of itself. Retrying stops after `max_attempts`,
/// when `retry_timeout` has elapsed since the first attempt, or when `retry_if` says no.
#[derive(Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub first_interval: Duration,
    pub backoff_coefficient: f64,
    pub max_interval: Duration,
    pub retry_timeout: Option<Duration>,
    /// Fraction in [0, 1].
    pub jitter: f64,
    retry_if: Option<RetryPredicate>,
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("first_interval", &self.first_interval)
            .field("backoff_coefficient", &self.backoff_coefficient)
            .field("max_interval", &self.max_interval)
            .field("retry_timeout", &self.retry_timeout)
            .field("jitter", &self.jitter)
            .field("retry_if", &self.retry_if.is_some())
            .finish()
    }
}

impl RetryPolicy {
    /// `max_attempts` attempts, `first_interval` apart, doubling, capped at one hour.
    pub fn new(max_attempts: u32, first_interval: Duration) -> RetryPolicy {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            first_interval,
            backoff_coefficient: 2.0,
            max_interval: Duration::from_secs(3600),
            retry_timeout: None,
            jitter: 0.0,
            retry_if: None,
        }
    }

    pub fn backoff_coefficient(mut self, coefficient: f64) -> Self {
        self.backoff_coefficient = coefficient.max(1.0);
        self
    }

    pub fn max_interval(mut self, max: Duration) -> Self {
        self.max_interval = max;
        self
    }

    pub fn retry_timeout(mut self, timeout: Duration) -> Self {
        self.retry_timeout = Some(timeout);
        self
    }

    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction.clamp(0.0, 1.0);
        self
    }

    /// Only failures for which `predicate` returns true are retried.
    pub fn retry_if(
        mut self,
        predicate: impl Fn(&Failure) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.retry_if = Some(Arc::new(predicate));
        self
    }

    /// The wait before the next attempt after `failed_attempts` failures, or `None` to give up.
    /// `unit` in [0, 1) drives the jitter and must be deterministic in orchestrations.
    pub fn next_delay(
        &self,
        failed_attempts: u32,
        elapsed: Duration,
        failure: &Failure,
        unit: f64,
    ) -> Option<Duration> {
        if failed_attempts >= self.max_attempts {
            return None;
        }
        if let Some(predicate) = &self.retry_if {
            // The activity's own failure is the cause of the TaskFailed wrapper.
            let own = failure.cause.as_deref().unwrap_or(failure);
            if !predicate(own) {
                return None;
            }
        }
        let exponent = i32::try_from(failed_attempts.saturating_sub(1)).unwrap_or(i32::MAX);
        let base = self.first_interval.as_secs_f64() * self.backoff_coefficient.powi(exponent);
        let capped = base.min(self.max_interval.as_secs_f64());
        let spread = capped * self.jitter * (2.0 * unit - 1.0);
        let mut delay = Duration::from_secs_f64((capped + spread).max(0.0));
        // A refusal that says when to come back (an open breaker) is not hammered before then.
        let own = failure.cause.as_deref().unwrap_or(failure);
        if let Some(after) = own.retry_after_ms {
            delay = delay.max(Duration::from_millis(after));
        }
        if let Some(timeout) = self.retry_timeout
            && elapsed + delay > timeout
        {
            return None;
        }
        Some(delay)
    }
}

fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut hash = seed;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure() -> Failure {
        Failure::new("Io", "timeout").caused("TaskFailed", "activity x failed")
    }

    #[test]
    fn retry_delays_back_off_and_cap() {
        let policy =
            RetryPolicy::new(5, Duration::from_secs(1)).max_interval(Duration::from_secs(3));
        let delays: Vec<_> = (1..=5)
            .map(|n| policy.next_delay(n, Duration::ZERO, &failure(), 0.5))
            .collect();
        assert_eq!(
            delays,
            vec![
                Some(Duration::from_secs(1)),
                Some(Duration::from_secs(2)),
                Some(Duration::from_secs(3)),
                Some(Duration::from_secs(3)),
                None
            ]
        );
    }

    #[test]
    fn retry_timeout_and_predicate_stop_retries() {
        let policy =
            RetryPolicy::new(10, Duration::from_secs(4)).retry_timeout(Duration::from_secs(5));
        assert!(
            policy
                .next_delay(1, Duration::from_secs(0), &failure(), 0.5)
                .is_some()
        );
        assert!(
            policy
                .next_delay(1, Duration::from_secs(2), &failure(), 0.5)
                .is_none()
        );
        let only_io =
            RetryPolicy::new(3, Duration::from_secs(1)).retry_if(|f| f.error_type == "Io");
        assert!(
            only_io
                .next_delay(1, Duration::ZERO, &failure(), 0.5)
                .is_some()
        );
        let other = Failure::new("Validation", "bad").caused("TaskFailed", "x");
        assert!(only_io.next_delay(1, Duration::ZERO, &other, 0.5).is_none());
    }

    #[test]
    fn a_refusal_with_a_retry_after_is_not_retried_before_it() {
        let policy = RetryPolicy::new(5, Duration::from_secs(1));
        let open = Failure::refused(crate::resilience::CIRCUIT_OPEN, "open", 7_500)
            .caused("TaskFailed", "activity x failed");
        assert_eq!(
            policy.next_delay(1, Duration::ZERO, &open, 0.5),
            Some(Duration::from_millis(7_500))
        );
        // A longer backoff wins; the timeout still applies.
        assert_eq!(
            policy.next_delay(4, Duration::ZERO, &open, 0.5),
            Some(Duration::from_secs(8))
        );
        let bounded = policy.retry_timeout(Duration::from_secs(5));
        assert_eq!(bounded.next_delay(1, Duration::ZERO, &open, 0.5), None);
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let policy = RetryPolicy::new(3, Duration::from_secs(10)).jitter(0.2);
        let low = policy
            .next_delay(1, Duration::ZERO, &failure(), 0.0)
            .unwrap();
        let high = policy
            .next_delay(1, Duration::ZERO, &failure(), 0.999_999)
            .unwrap();
        assert_eq!(low, Duration::from_secs(8));
        assert!(high > Duration::from_millis(11_999) && high <= Duration::from_secs(12));
    }
}
