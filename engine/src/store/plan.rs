//! The commit rules: what a batch of [`WriteOp`]s does, decided once for every store.
//!
//! [`plan`] turns a batch into a [`Plan`]: each op's outcome (refused, and why), the ordered
//! [`Step`]s that carry out the accepted ones, the change to the per-status counts and what the
//! batch wakes up. It is the only place that knows which state accepts which message, how a
//! batch sees the changes of its own earlier ops (the status and history overlay), what starting
//! an instance over a finished one replaces, what continue-as-new and rewind rewrite, and that a
//! sub-orchestration that cannot start fails back to its parent. A store only reads what the
//! planner asks for ([`PlanReads`], inside the commit's transaction) and executes the steps; it
//! may batch them (the SQLite store writes each kind of row with one statement per chunk) as long
//! as it keeps the order rules documented on [`Step`].

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap, HashSet},
    future::Future,
};

use crate::{
    executor::Action,
    history::{
        EventKind, Failure, HistoryEvent, Message, ParentInstance, RuntimeStatus, TimestampMs,
    },
    rewind::plan_rewind,
    store::{
        Accept, CommitEffects, EntityCommit, Holder, LeaseRecord, MessageRef, NewInstance, OpError,
        StoreError, TurnCommit, WriteOp,
    },
};

/// The lease `holder` gets on work whose current lease is `current`, or `None` while another
/// holder's lease runs. Free or expired work goes to the asker until `now_ms + lease_ms`. The
/// fence stays when the asker held the work last (nobody else touched it since, so what the
/// holder remembers of it is still true) and is `new_fence()` otherwise.
pub fn acquire(
    current: Option<&LeaseRecord>,
    holder: &Holder,
    now_ms: TimestampMs,
    lease_ms: i64,
    new_fence: impl FnOnce() -> u64,
) -> Option<LeaseRecord> {
    let expires_at = now_ms.saturating_add(lease_ms.max(1));
    match current {
        Some(lease) if lease.holder == *holder => Some(LeaseRecord {
            holder: holder.clone(),
            fence: lease.fence,
            expires_at: expires_at.max(lease.expires_at),
        }),
        Some(lease) if lease.expires_at > now_ms => None,
        _ => Some(LeaseRecord {
            holder: holder.clone(),
            fence: new_fence(),
            expires_at,
        }),
    }
}

/// Whether a commit by `holder`, naming `fence`, at `now_ms` still holds the lease `current`:
/// the same holder, the same fence, not expired.
pub fn holds(
    current: Option<&LeaseRecord>,
    holder: &Holder,
    fence: u64,
    now_ms: TimestampMs,
) -> bool {
    current.is_some_and(|l| l.holder == *holder && l.fence == fence && l.expires_at > now_ms)
}

/// What the planner reads from the store, as of the start of the batch.
pub trait PlanReads: Send {
    /// The stored status of each of `ids` that exists.
    fn statuses(
        &mut self,
        ids: &[&str],
    ) -> impl Future<Output = Result<HashMap<String, RuntimeStatus>, StoreError>> + Send;
    /// The stored history of the current execution.
    fn history(
        &mut self,
        instance_id: &str,
    ) -> impl Future<Output = Result<Vec<HistoryEvent>, StoreError>> + Send;
    /// The current leases on `instance_ids` (absent: never leased, or released).
    fn instance_leases(
        &mut self,
        instance_ids: &[&str],
    ) -> impl Future<Output = Result<HashMap<String, LeaseRecord>, StoreError>> + Send;
    /// The current leases on activities `ids`.
    fn activity_leases(
        &mut self,
        ids: &[i64],
    ) -> impl Future<Output = Result<HashMap<i64, LeaseRecord>, StoreError>> + Send;
    /// The stored version and tags of an instance, if it exists.
    fn identity(
        &mut self,
        instance_id: &str,
    ) -> impl Future<Output = Result<Option<Identity>, StoreError>> + Send;
}

/// What an instance was started as, beyond its name and input: kept when a rewind starts a
/// failed child again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub version: String,
    pub tags: BTreeMap<String, String>,
}

/// One change to stored rows. Steps apply in order; a store may gather consecutive steps into
/// multi-row statements provided that:
/// - [`DeleteInstance`](Step::DeleteInstance), [`ContinueAsNew`](Step::ContinueAsNew) and
///   [`Reopen`](Step::Reopen) see every earlier step applied;
/// - [`EndExecution`](Step::EndExecution) removes the timers and activities scheduled by earlier
///   steps and none scheduled by later ones (a rewind later in the batch schedules activities for
///   an execution that failed earlier in it).
#[derive(Debug, Clone)]
pub enum Step<'a> {
    /// Inserts a `Pending` instance row (its `Start` message is a separate step).
    CreateInstance(Cow<'a, NewInstance>),
    /// Appends events to an instance's history; `events[0].id` is the first sequence number.
    AppendHistory {
        instance_id: Cow<'a, str>,
        events: Cow<'a, [HistoryEvent]>,
    },
    /// Updates an instance row after its turn: status, output, failure, custom status, history
    /// length, waiting fields; `completed_at` when terminal.
    UpdateInstance(&'a TurnCommit),
    /// Queues a message for an instance.
    Enqueue {
        instance_id: Cow<'a, str>,
        message: Cow<'a, Message>,
    },
    /// Queues a message that becomes visible at `fire_at_ms` (a timer, a scheduled start).
    ScheduleTimer {
        instance_id: Cow<'a, str>,
        fire_at_ms: TimestampMs,
        message: Cow<'a, Message>,
    },
    /// Schedules an activity.
    ScheduleActivity {
        instance_id: Cow<'a, str>,
        scheduled_id: u32,
        name: Cow<'a, str>,
        input: Cow<'a, str>,
    },
    /// Deletes a consumed queue message, fired timer or finished activity.
    Consume(MessageRef),
    /// Deletes an instance and everything that belongs to it.
    DeleteInstance(Cow<'a, str>),
    /// The execution ended: its open timers and activities go.
    EndExecution(Cow<'a, str>),
    /// Continue-as-new: the history is emptied and the row becomes `Pending` with the next
    /// execution's input and generation; output, failure and waiting fields are cleared.
    ContinueAsNew {
        instance_id: Cow<'a, str>,
        input: &'a str,
        generation: u32,
        now_ms: TimestampMs,
    },
    /// Rewind: the row becomes `Running` again with `history_len` events; output, failure and
    /// completion time are cleared.
    Reopen {
        instance_id: Cow<'a, str>,
        history_len: u32,
        now_ms: TimestampMs,
    },
    /// Writes an entity's row after a batch; the row goes when it has neither state nor
    /// scheduler (rule 13).
    SetEntity(&'a EntityCommit),
}

/// What a batch does.
#[derive(Debug, Default)]
pub struct Plan<'a> {
    /// One per op, in op order.
    pub outcomes: Vec<Result<(), OpError>>,
    pub steps: Vec<Step<'a>>,
    /// Change of the number of instances per status.
    pub counts: BTreeMap<RuntimeStatus, i64>,
    pub effects: CommitEffects,
}

/// A batch's view of one instance's history: the stored one (unless replaced in this batch) plus
/// what this batch appended.
#[derive(Default)]
struct HistoryOverlay<'a> {
    replaced: bool,
    appended: Vec<&'a HistoryEvent>,
}

struct Planner<'a, 'r, R> {
    reads: &'r mut R,
    holder: &'r Holder,
    now_ms: TimestampMs,
    leases: HashMap<String, LeaseRecord>,
    activity_leases: HashMap<i64, LeaseRecord>,
    plan: Plan<'a>,
    /// Statuses as this batch sees them (`None`: absent). Keys borrow from the ops.
    statuses: HashMap<Cow<'a, str>, Option<RuntimeStatus>>,
    /// Instances whose [`WriteOp::StartRun`] was refused: the turn after it is too.
    refused_starts: HashSet<&'a str>,
    /// Histories as this batch changed them; kept only when a rewind in the batch reads one.
    histories: HashMap<Cow<'a, str>, HistoryOverlay<'a>>,
    tracks_history: bool,
}

/// Plans a batch that `holder` commits at `now_ms`. Reads go through `reads`; nothing is
/// written.
pub async fn plan<'a, R: PlanReads>(
    holder: &Holder,
    now_ms: TimestampMs,
    ops: &'a [WriteOp],
    reads: &mut R,
) -> Result<Plan<'a>, StoreError> {
    let named = named_instances(ops);
    let stored = reads.statuses(&named).await?;
    let (leased, activities) = leased_work(ops);
    let leases = if leased.is_empty() {
        HashMap::new()
    } else {
        reads.instance_leases(&leased).await?
    };
    let activity_leases = if activities.is_empty() {
        HashMap::new()
    } else {
        reads.activity_leases(&activities).await?
    };
    let statuses = named
        .iter()
        .map(|id| (Cow::Borrowed(*id), stored.get(*id).copied()))
        .collect();
    let tracks_history = ops.iter().any(|op| matches!(op, WriteOp::Rewind { .. }));
    let mut planner = Planner {
        reads,
        holder,
        now_ms,
        leases,
        activity_leases,
        plan: Plan {
            outcomes: Vec::with_capacity(ops.len()),
            steps: Vec::with_capacity(ops.len() * 4),
            ..Plan::default()
        },
        statuses,
        histories: HashMap::new(),
        tracks_history,
        refused_starts: HashSet::new(),
    };
    for op in ops {
        let outcome = planner.op(op).await?;
        planner.plan.outcomes.push(outcome);
    }
    let mut plan = planner.plan;
    plan.counts.retain(|_, delta| *delta != 0);
    for step in &plan.steps {
        match step {
            Step::Enqueue { .. } => plan.effects.messages = true,
            Step::ScheduleTimer { fire_at_ms, .. } => {
                plan.effects.timers = true;
                let earliest = plan.effects.earliest_timer.get_or_insert(*fire_at_ms);
                *earliest = (*earliest).min(*fire_at_ms);
            }
            Step::ScheduleActivity { .. } => plan.effects.activities = true,
            _ => {}
        }
    }
    Ok(plan)
}

/// Every instance whose status an op of the batch needs, sorted and deduplicated, so a store
/// reads them with one query.
fn named_instances(ops: &[WriteOp]) -> Vec<&str> {
    let mut ids: Vec<&str> = Vec::new();
    for op in ops {
        match op {
            WriteOp::Start(new) | WriteOp::StartRun(new) => ids.push(&new.instance_id),
            WriteOp::EntityBatch(batch) => {
                ids.extend(batch.starts.iter().map(|new| new.instance_id.as_str()))
            }
            WriteOp::Signal { .. } => {}
            WriteOp::Deliver { instance_id, .. }
            | WriteOp::Purge { instance_id }
            | WriteOp::Rewind { instance_id, .. } => ids.push(instance_id),
            WriteOp::Turn(turn) => ids.extend(turn.actions.iter().filter_map(|a| match a {
                Action::StartSubOrchestration { instance_id, .. } => Some(instance_id.as_str()),
                _ => None,
            })),
            WriteOp::Discard { .. } | WriteOp::Complete { .. } => {}
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The instances and activities whose leases the batch's ops must hold.
fn leased_work(ops: &[WriteOp]) -> (Vec<&str>, Vec<i64>) {
    let mut instances = Vec::new();
    let mut activities = Vec::new();
    for op in ops {
        match op {
            WriteOp::Turn(turn) => instances.push(turn.instance_id.as_str()),
            WriteOp::EntityBatch(batch) => instances.push(batch.entity_id.as_str()),
            WriteOp::Discard { instance_id, .. } => instances.push(instance_id.as_str()),
            WriteOp::Complete { activity_id, .. } => activities.push(*activity_id),
            _ => {}
        }
    }
    instances.sort_unstable();
    instances.dedup();
    (instances, activities)
}

/// Whether a management message may be delivered to an instance in `status`.
pub fn accepts(accept: Accept, status: RuntimeStatus) -> bool {
    match accept {
        Accept::Live => !status.is_terminal(),
        Accept::Running => matches!(status, RuntimeStatus::Running | RuntimeStatus::Pending),
        Accept::Suspended => status == RuntimeStatus::Suspended,
    }
}

/// The verb a management message stands for, in refusals.
fn action_name(message: &Message) -> &'static str {
    match message {
        Message::EventRaised { .. } => "raise event",
        Message::Terminate { .. } => "terminate",
        Message::Suspend { .. } => "suspend",
        Message::Resume { .. } => "resume",
        _ => "deliver",
    }
}

impl<'a, R: PlanReads> Planner<'a, '_, R> {
    async fn op(&mut self, op: &'a WriteOp) -> Result<Result<(), OpError>, StoreError> {
        Ok(match op {
            WriteOp::Turn(turn) => {
                if self.refused_starts.contains(turn.instance_id.as_str()) {
                    // The start it follows was refused: the id is another instance's.
                    return Ok(Err(OpError::Conflict(turn.instance_id.clone())));
                }
                if !holds(
                    self.leases.get(&turn.instance_id),
                    self.holder,
                    turn.fence,
                    self.now_ms,
                ) {
                    return Ok(Err(OpError::LeaseLost(turn.instance_id.clone())));
                }
                self.turn(turn).await?;
                Ok(())
            }
            WriteOp::Discard {
                instance_id,
                fence,
                consumed,
            } => {
                if !holds(
                    self.leases.get(instance_id),
                    self.holder,
                    *fence,
                    self.now_ms,
                ) {
                    return Ok(Err(OpError::LeaseLost(instance_id.clone())));
                }
                self.plan.steps.extend(
                    consumed
                        .iter()
                        .copied()
                        .filter(MessageRef::is_stored)
                        .map(Step::Consume),
                );
                Ok(())
            }
            WriteOp::Complete {
                activity_id,
                fence,
                instance_id,
                message,
            } => {
                if !holds(
                    self.activity_leases.get(activity_id),
                    self.holder,
                    *fence,
                    self.now_ms,
                ) {
                    return Ok(Err(OpError::LeaseLost(format!("activity {activity_id}"))));
                }
                self.plan
                    .steps
                    .push(Step::Consume(MessageRef::Activity(*activity_id)));
                self.enqueue(Cow::Borrowed(instance_id), Cow::Borrowed(message));
                Ok(())
            }
            WriteOp::Start(new) => self.start(Cow::Borrowed(new), true).await?,
            WriteOp::Signal {
                entity_id,
                message,
                at,
            } => {
                self.signal(Cow::Borrowed(entity_id), message.clone(), *at);
                Ok(())
            }
            WriteOp::EntityBatch(batch) => {
                if !holds(
                    self.leases.get(&batch.entity_id),
                    self.holder,
                    batch.fence,
                    self.now_ms,
                ) {
                    return Ok(Err(OpError::LeaseLost(batch.entity_id.clone())));
                }
                self.entity_batch(batch).await?;
                Ok(())
            }
            WriteOp::StartRun(new) => {
                let started = self.start(Cow::Borrowed(new), false).await?;
                if started.is_err() {
                    self.refused_starts.insert(new.instance_id.as_str());
                }
                started
            }
            WriteOp::Deliver {
                instance_id,
                message,
                accept,
            } => match self.status(instance_id).await? {
                None => Err(OpError::NotFound(instance_id.clone())),
                Some(status) if !accepts(*accept, status) => Err(OpError::WrongState {
                    instance_id: instance_id.clone(),
                    status,
                    action: action_name(message),
                }),
                Some(_) => {
                    self.enqueue(Cow::Borrowed(instance_id), Cow::Borrowed(message));
                    Ok(())
                }
            },
            WriteOp::Purge { instance_id } => match self.status(instance_id).await? {
                None => Err(OpError::NotFound(instance_id.clone())),
                Some(status) if !status.is_terminal() => Err(OpError::WrongState {
                    instance_id: instance_id.clone(),
                    status,
                    action: "purge",
                }),
                Some(status) => {
                    self.delete(Cow::Borrowed(instance_id));
                    self.count(Some(status), None);
                    self.statuses.insert(Cow::Borrowed(instance_id), None);
                    Ok(())
                }
            },
            WriteOp::Rewind {
                instance_id,
                reason,
                now_ms,
            } => match self.status(instance_id).await? {
                None => Err(OpError::NotFound(instance_id.clone())),
                Some(status) if status != RuntimeStatus::Failed => Err(OpError::WrongState {
                    instance_id: instance_id.clone(),
                    status,
                    action: "rewind",
                }),
                Some(_) => {
                    self.rewind(instance_id, reason, *now_ms).await?;
                    Ok(())
                }
            },
        })
    }

    /// Queues an operation for an entity, or schedules it for `at` (rule 6: never before).
    fn signal(&mut self, entity_id: Cow<'a, str>, message: Message, at: Option<TimestampMs>) {
        match at.filter(|at| *at > self.now_ms) {
            Some(fire_at_ms) => self.plan.steps.push(Step::ScheduleTimer {
                instance_id: entity_id,
                fire_at_ms,
                message: Cow::Owned(message),
            }),
            None => self.enqueue(entity_id, Cow::Owned(message)),
        }
    }

    /// An entity batch: its consumed messages go, its state is written, its signals are queued
    /// and its starts are started (refused ones are dropped: nothing goes back to an entity).
    async fn entity_batch(&mut self, batch: &'a EntityCommit) -> Result<(), StoreError> {
        self.plan.steps.extend(
            batch
                .consumed
                .iter()
                .copied()
                .filter(MessageRef::is_stored)
                .map(Step::Consume),
        );
        self.plan.steps.push(Step::SetEntity(batch));
        for signal in &batch.signals {
            self.signal(
                Cow::Owned(signal.target.to_string()),
                Message::EntityOperation {
                    operation: signal.request.operation.clone(),
                    input: signal.request.input.clone(),
                    caller: None,
                    request_id: None,
                },
                signal.at,
            );
        }
        for (instance_id, message) in &batch.sends {
            self.enqueue(Cow::Borrowed(instance_id), Cow::Borrowed(message));
        }
        for new in &batch.starts {
            if let Err(e) = self.start(Cow::Borrowed(new), true).await? {
                tracing::debug!(entity = %batch.entity_id, error = %e, "an entity's start was refused");
            }
        }
        Ok(())
    }

    /// An instance's status as this batch sees it.
    async fn status(&mut self, instance_id: &str) -> Result<Option<RuntimeStatus>, StoreError> {
        if let Some(status) = self.statuses.get(instance_id) {
            return Ok(*status);
        }
        let stored = self.reads.statuses(&[instance_id]).await?;
        let status = stored.get(instance_id).copied();
        self.statuses
            .insert(Cow::Owned(instance_id.to_owned()), status);
        Ok(status)
    }

    fn count(&mut self, from: Option<RuntimeStatus>, to: Option<RuntimeStatus>) {
        if from == to {
            return;
        }
        if let Some(from) = from {
            *self.plan.counts.entry(from).or_default() -= 1;
        }
        if let Some(to) = to {
            *self.plan.counts.entry(to).or_default() += 1;
        }
    }

    fn enqueue(&mut self, instance_id: Cow<'a, str>, message: Cow<'a, Message>) {
        self.plan.steps.push(Step::Enqueue {
            instance_id,
            message,
        });
    }

    /// Deletes an instance (purge, or an id reused after it finished).
    fn delete(&mut self, instance_id: Cow<'a, str>) {
        self.plan.effects.reset.push(instance_id.to_string());
        self.replace_history(instance_id.clone());
        self.plan.steps.push(Step::DeleteInstance(instance_id));
    }

    /// Starts an instance; `queue` false when its first turn follows in the batch
    /// ([`WriteOp::StartRun`]) instead of a queued Start message.
    async fn start(
        &mut self,
        new: Cow<'a, NewInstance>,
        queue: bool,
    ) -> Result<Result<(), OpError>, StoreError> {
        if new.instance_id.starts_with('@') {
            // A sub-orchestration or an entity's start: refused like a taken id.
            return Ok(Err(OpError::EntityAddress(new.instance_id.clone())));
        }
        let existing = self.status(&new.instance_id).await?;
        let instance_id: Cow<'a, str> = match &new {
            Cow::Borrowed(b) => Cow::Borrowed(b.instance_id.as_str()),
            Cow::Owned(o) => Cow::Owned(o.instance_id.clone()),
        };
        if let Some(status) = existing {
            if !status.is_terminal() {
                return Ok(Err(OpError::Conflict(new.instance_id.clone())));
            }
            // Reusing a finished instance's id replaces its history.
            self.delete(instance_id.clone());
        }
        self.count(existing, Some(RuntimeStatus::Pending));
        self.statuses
            .insert(instance_id.clone(), Some(RuntimeStatus::Pending));
        let start = Cow::Owned(new.start_message());
        let scheduled = new.scheduled_start_at.filter(|at| *at > new.now_ms);
        self.plan.steps.push(Step::CreateInstance(new));
        if !queue {
            return Ok(Ok(()));
        }
        match scheduled {
            Some(fire_at_ms) => self.plan.steps.push(Step::ScheduleTimer {
                instance_id,
                fire_at_ms,
                message: start,
            }),
            None => self.enqueue(instance_id, start),
        }
        Ok(Ok(()))
    }

    async fn turn(&mut self, turn: &'a TurnCommit) -> Result<(), StoreError> {
        let id = Cow::Borrowed(turn.instance_id.as_str());
        self.plan.steps.extend(
            turn.consumed
                .iter()
                .copied()
                .filter(MessageRef::is_stored)
                .map(Step::Consume),
        );
        let mut continued = None;
        for action in &turn.actions {
            match action {
                Action::ScheduleActivity {
                    scheduled_id,
                    name,
                    input,
                } => self.plan.steps.push(Step::ScheduleActivity {
                    instance_id: id.clone(),
                    scheduled_id: *scheduled_id,
                    name: Cow::Borrowed(name),
                    input: Cow::Borrowed(input),
                }),
                Action::CreateTimer {
                    timer_id,
                    fire_at_ms,
                } => self.plan.steps.push(Step::ScheduleTimer {
                    instance_id: id.clone(),
                    fire_at_ms: *fire_at_ms,
                    message: Cow::Owned(Message::TimerFired {
                        timer_id: *timer_id,
                    }),
                }),
                Action::SendMessage {
                    instance_id,
                    message,
                } => self.enqueue(Cow::Borrowed(instance_id), Cow::Borrowed(message)),
                Action::SendMessageAt {
                    instance_id,
                    message,
                    at,
                } => self.signal(Cow::Borrowed(instance_id), message.clone(), Some(*at)),
                Action::StartSubOrchestration {
                    scheduled_id,
                    instance_id,
                    start:
                        Message::Start {
                            name,
                            version,
                            input,
                            tags,
                            parent,
                            ..
                        },
                } => {
                    let new = NewInstance {
                        instance_id: instance_id.clone(),
                        name: name.clone(),
                        version: version.clone(),
                        input: input.clone(),
                        tags: tags.clone(),
                        parent: parent.clone(),
                        scheduled_start_at: None,
                        now_ms: turn.now_ms,
                    };
                    if let Err(e) = self.start(Cow::Owned(new), true).await? {
                        self.enqueue(
                            id.clone(),
                            Cow::Owned(Message::SubOrchestrationFailed {
                                scheduled_id: *scheduled_id,
                                failure: Failure::new("StartFailed", e.to_string()),
                            }),
                        );
                    }
                }
                Action::ContinueAsNew { start, carry_over } => {
                    continued = Some((start, carry_over))
                }
                Action::StartSubOrchestration { .. } => {}
            }
        }
        match continued {
            Some((
                start @ Message::Start {
                    input, generation, ..
                },
                carry_over,
            )) => {
                // The next execution begins with an empty history; the last turn's events are
                // not kept.
                self.end(&turn.instance_id);
                self.replace_history(id.clone());
                self.plan.steps.push(Step::ContinueAsNew {
                    instance_id: id.clone(),
                    input,
                    generation: *generation,
                    now_ms: turn.now_ms,
                });
                self.enqueue(id.clone(), Cow::Borrowed(start));
                for message in carry_over {
                    self.enqueue(id.clone(), Cow::Borrowed(message));
                }
                self.count(Some(turn.previous_status), Some(RuntimeStatus::Pending));
                self.statuses
                    .insert(id.clone(), Some(RuntimeStatus::Pending));
                self.plan.effects.reset.push(turn.instance_id.clone());
            }
            _ => {
                if !turn.new_events.is_empty() {
                    if self.tracks_history {
                        self.histories
                            .entry(id.clone())
                            .or_default()
                            .appended
                            .extend(turn.new_events.iter());
                    }
                    self.plan.steps.push(Step::AppendHistory {
                        instance_id: id.clone(),
                        events: Cow::Borrowed(&turn.new_events),
                    });
                }
                self.plan.steps.push(Step::UpdateInstance(turn));
                self.count(Some(turn.previous_status), Some(turn.status));
                self.statuses.insert(id.clone(), Some(turn.status));
                if turn.status.is_terminal() {
                    self.end(&turn.instance_id);
                    self.plan.effects.finished.push(turn.instance_id.clone());
                }
            }
        }
        Ok(())
    }

    fn end(&mut self, instance_id: &'a str) {
        self.plan
            .steps
            .push(Step::EndExecution(Cow::Borrowed(instance_id)));
    }

    /// Marks an instance's history as replaced in this batch (deleted, or continued as new).
    fn replace_history(&mut self, instance_id: Cow<'a, str>) {
        if self.tracks_history {
            self.histories
                .insert(instance_id, HistoryOverlay::replaced());
        }
    }

    /// The current execution's history as this batch sees it.
    async fn history(&mut self, instance_id: &str) -> Result<Vec<HistoryEvent>, StoreError> {
        let overlay = self.histories.get(instance_id);
        let mut history = match overlay {
            Some(o) if o.replaced => Vec::new(),
            _ => self.reads.history(instance_id).await?,
        };
        if let Some(o) = self.histories.get(instance_id) {
            history.extend(o.appended.iter().map(|e| (*e).clone()));
        }
        Ok(history)
    }

    /// Re-runs the failed steps of a failed execution.
    async fn rewind(
        &mut self,
        instance_id: &'a str,
        reason: &str,
        now_ms: TimestampMs,
    ) -> Result<(), StoreError> {
        let id = Cow::Borrowed(instance_id);
        let history = self.history(instance_id).await?;
        let rewind = plan_rewind(&history);
        let seq = history.len() as u32;
        let event = HistoryEvent {
            id: seq,
            timestamp_ms: now_ms,
            kind: EventKind::ExecutionRewound {
                reason: reason.to_owned(),
                rewound: rewind.rewound.clone(),
            },
        };
        self.plan.steps.push(Step::AppendHistory {
            instance_id: id.clone(),
            events: Cow::Owned(vec![event]),
        });
        for (scheduled_id, name, input) in rewind.activities {
            self.plan.steps.push(Step::ScheduleActivity {
                instance_id: id.clone(),
                scheduled_id,
                name: Cow::Owned(name),
                input: Cow::Owned(input),
            });
        }
        for (scheduled_id, child_id, name, input) in rewind.children {
            // The child starts again as it was started: same version and tags.
            let Identity { version, tags } =
                self.reads.identity(&child_id).await?.unwrap_or_default();
            let new = NewInstance {
                instance_id: child_id,
                name,
                version,
                input,
                tags,
                parent: Some(ParentInstance {
                    instance_id: instance_id.to_owned(),
                    scheduled_id,
                }),
                scheduled_start_at: None,
                now_ms,
            };
            // A child that is somehow still live is left alone; its result will arrive.
            let _ = self.start(Cow::Owned(new), true).await?;
        }
        // A turn replays the code; a failure that came from the code itself is then recorded
        // again.
        self.enqueue(
            id.clone(),
            Cow::Owned(Message::Resume {
                reason: "rewind".into(),
            }),
        );
        self.plan.steps.push(Step::Reopen {
            instance_id: id,
            history_len: seq + 1,
            now_ms,
        });
        self.count(Some(RuntimeStatus::Failed), Some(RuntimeStatus::Running));
        self.statuses
            .insert(Cow::Borrowed(instance_id), Some(RuntimeStatus::Running));
        self.plan.effects.reset.push(instance_id.to_owned());
        Ok(())
    }
}

impl HistoryOverlay<'_> {
    fn replaced() -> Self {
        HistoryOverlay {
            replaced: true,
            appended: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: TimestampMs = 1_000;

    fn holder() -> Holder {
        Holder("a".into())
    }

    fn lease(holder: &str, fence: u64, expires_at: TimestampMs) -> LeaseRecord {
        LeaseRecord {
            holder: Holder(holder.into()),
            fence,
            expires_at,
        }
    }

    /// Stored state for the planner, in memory.
    #[derive(Default)]
    struct Stored {
        statuses: HashMap<String, RuntimeStatus>,
        histories: HashMap<String, Vec<HistoryEvent>>,
        identities: HashMap<String, Identity>,
        leases: HashMap<String, LeaseRecord>,
    }

    impl PlanReads for Stored {
        async fn statuses(
            &mut self,
            ids: &[&str],
        ) -> Result<HashMap<String, RuntimeStatus>, StoreError> {
            Ok(ids
                .iter()
                .filter_map(|id| Some(((*id).to_owned(), *self.statuses.get(*id)?)))
                .collect())
        }
        async fn history(&mut self, id: &str) -> Result<Vec<HistoryEvent>, StoreError> {
            Ok(self.histories.get(id).cloned().unwrap_or_default())
        }
        async fn identity(&mut self, id: &str) -> Result<Option<Identity>, StoreError> {
            Ok(self.identities.get(id).cloned())
        }
        async fn instance_leases(
            &mut self,
            ids: &[&str],
        ) -> Result<HashMap<String, LeaseRecord>, StoreError> {
            Ok(ids
                .iter()
                .filter_map(|id| Some(((*id).to_owned(), self.leases.get(*id)?.clone())))
                .collect())
        }
        async fn activity_leases(
            &mut self,
            _: &[i64],
        ) -> Result<HashMap<i64, LeaseRecord>, StoreError> {
            Ok(HashMap::new())
        }
    }

    #[test]
    fn leases_go_to_the_asker_when_free_or_expired_and_keep_their_fence_with_their_holder() {
        let a = holder();
        let b = Holder("b".into());
        let mut fences = 0;
        let mut next = || {
            fences += 1;
            fences
        };
        let first = acquire(None, &a, NOW, 30, &mut next).unwrap();
        assert_eq!((first.fence, first.expires_at), (1, NOW + 30));
        assert_eq!(acquire(Some(&first), &b, NOW + 29, 30, &mut next), None);
        let renewed = acquire(Some(&first), &a, NOW + 10, 30, &mut next).unwrap();
        assert_eq!((renewed.fence, renewed.expires_at), (1, NOW + 40));
        let taken = acquire(Some(&renewed), &b, NOW + 40, 30, &mut next).unwrap();
        assert_eq!((taken.holder.0.as_str(), taken.fence), ("b", 2));
        assert!(holds(Some(&taken), &b, 2, NOW + 69));
        assert!(!holds(Some(&taken), &b, 2, NOW + 70), "expired");
        assert!(!holds(Some(&taken), &a, 2, NOW + 41), "another holder");
        assert!(!holds(Some(&taken), &b, 1, NOW + 41), "an old fence");
        assert!(!holds(None, &a, 1, NOW));
    }

    #[test]
    fn a_turn_without_its_lease_is_refused_whole() {
        let mut stored = Stored::default();
        stored.leases.insert("p".into(), lease("b", 2, NOW + 30));
        stored.leases.insert("q".into(), lease("a", 1, NOW - 1));
        let turn = |id: &str, fence| {
            WriteOp::Turn(TurnCommit {
                instance_id: id.into(),
                fence,
                previous_status: RuntimeStatus::Running,
                history_start: 1,
                new_events: vec![event(1, EventKind::OrchestratorStarted)],
                status: RuntimeStatus::Completed,
                output: Some("1".into()),
                failure: None,
                custom_status: None,
                waiting: None,
                consumed: vec![MessageRef::Queue(9)],
                actions: Vec::new(),
                now_ms: NOW,
            })
        };
        let ops = [turn("p", 1), turn("q", 1)];
        let plan = block_on(plan(&holder(), NOW, &ops, &mut stored)).unwrap();
        assert_eq!(
            plan.outcomes,
            [
                Err(OpError::LeaseLost("p".into())),
                Err(OpError::LeaseLost("q".into()))
            ]
        );
        assert!(plan.steps.is_empty(), "{:?}", plan.steps);
        assert!(plan.counts.is_empty());
    }

    #[test]
    fn a_start_run_here_queues_no_start_and_its_refusal_refuses_its_turn() {
        let mut stored = Stored::default();
        stored
            .statuses
            .insert("busy".into(), RuntimeStatus::Running);
        for id in ["new", "busy"] {
            stored.leases.insert(id.into(), lease("a", 1, NOW + 30));
        }
        let start = |id: &str| {
            WriteOp::StartRun(NewInstance {
                instance_id: id.into(),
                name: "Hello".into(),
                version: String::new(),
                input: "null".into(),
                tags: BTreeMap::new(),
                parent: None,
                scheduled_start_at: None,
                now_ms: NOW,
            })
        };
        let turn = |id: &str| {
            WriteOp::Turn(TurnCommit {
                instance_id: id.into(),
                fence: 1,
                previous_status: RuntimeStatus::Pending,
                history_start: 0,
                new_events: vec![event(0, EventKind::OrchestratorStarted)],
                status: RuntimeStatus::Completed,
                output: Some("1".into()),
                failure: None,
                custom_status: None,
                waiting: None,
                consumed: vec![MessageRef::Local],
                actions: Vec::new(),
                now_ms: NOW,
            })
        };
        let ops = [start("new"), turn("new"), start("busy"), turn("busy")];
        let plan = block_on(plan(&holder(), NOW, &ops, &mut stored)).unwrap();
        assert_eq!(
            plan.outcomes,
            [
                Ok(()),
                Ok(()),
                Err(OpError::Conflict("busy".into())),
                Err(OpError::Conflict("busy".into()))
            ]
        );
        assert!(
            !plan
                .steps
                .iter()
                .any(|s| matches!(s, Step::Enqueue { .. } | Step::Consume(_))),
            "no Start queued, nothing stored consumed: {:?}",
            plan.steps
        );
        assert!(
            plan.steps
                .iter()
                .all(|s| !format!("{s:?}").contains("busy")),
            "the running instance is untouched: {:?}",
            plan.steps
        );
        assert_eq!(plan.counts.get(&RuntimeStatus::Completed), Some(&1));
    }

    fn event(id: u32, kind: EventKind) -> HistoryEvent {
        HistoryEvent {
            id,
            timestamp_ms: 1,
            kind,
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        futures_util::FutureExt::now_or_never(f).expect("the in-memory reads never wait")
    }

    /// A parent whose child failed, and so did it.
    fn failed_parent() -> Vec<HistoryEvent> {
        let failure = Failure::new("Boom", "child failed");
        vec![
            event(
                0,
                EventKind::ExecutionStarted {
                    name: "Parent".into(),
                    version: "2".into(),
                    input: "null".into(),
                    tags: BTreeMap::new(),
                    parent: None,
                    generation: 0,
                },
            ),
            event(
                1,
                EventKind::SubOrchestrationInstanceCreated {
                    name: "Child".into(),
                    instance_id: "p:1".into(),
                    input: "7".into(),
                },
            ),
            event(
                2,
                EventKind::SubOrchestrationInstanceFailed {
                    scheduled_id: 1,
                    failure: failure.clone(),
                },
            ),
            event(3, EventKind::ExecutionFailed { failure }),
        ]
    }

    #[test]
    fn rewind_starts_a_failed_child_again_with_its_version_and_tags() {
        let mut stored = Stored::default();
        stored.statuses.insert("p".into(), RuntimeStatus::Failed);
        stored.statuses.insert("p:1".into(), RuntimeStatus::Failed);
        stored.histories.insert("p".into(), failed_parent());
        let identity = Identity {
            version: "3.1".into(),
            tags: BTreeMap::from([("team".to_owned(), "payments".to_owned())]),
        };
        stored.identities.insert("p:1".into(), identity.clone());
        let ops = [WriteOp::Rewind {
            instance_id: "p".into(),
            reason: "fixed".into(),
            now_ms: 10,
        }];
        let plan = block_on(plan(&holder(), NOW, &ops, &mut stored)).unwrap();
        assert_eq!(plan.outcomes, [Ok(())]);
        let child = plan
            .steps
            .iter()
            .find_map(|s| match s {
                Step::CreateInstance(new) => Some(new),
                _ => None,
            })
            .expect("the child starts again");
        assert_eq!(child.instance_id, "p:1");
        assert_eq!(child.input, "7");
        assert_eq!(child.version, identity.version);
        assert_eq!(child.tags, identity.tags);
        assert_eq!(child.parent.as_ref().unwrap().scheduled_id, 1);
        // The finished child's rows are replaced, before it is created again.
        let deleted = plan
            .steps
            .iter()
            .position(|s| matches!(s, Step::DeleteInstance(id) if id == "p:1"));
        let created = plan
            .steps
            .iter()
            .position(|s| matches!(s, Step::CreateInstance(_)));
        assert!(deleted < created, "{:?}", plan.steps);
        assert!(matches!(
            plan.steps.last(),
            Some(Step::Reopen { history_len: 5, .. })
        ));
        // Parent Failed → Running; child Failed → Pending.
        assert_eq!(plan.counts.get(&RuntimeStatus::Failed), Some(&-2));
        assert_eq!(plan.counts.get(&RuntimeStatus::Running), Some(&1));
        assert_eq!(plan.counts.get(&RuntimeStatus::Pending), Some(&1));
    }

    #[test]
    fn a_batch_sees_its_own_earlier_ops() {
        // A turn fails the instance and a rewind follows in the same batch: the rewind sees the
        // turn's status and events, not only what is stored.
        let history = failed_parent();
        let mut stored = Stored::default();
        stored.statuses.insert("p".into(), RuntimeStatus::Running);
        stored.statuses.insert("p:1".into(), RuntimeStatus::Failed);
        stored.histories.insert("p".into(), history[..3].to_vec());
        stored.leases.insert("p".into(), lease("a", 1, NOW + 30));
        let turn = TurnCommit {
            instance_id: "p".into(),
            fence: 1,
            previous_status: RuntimeStatus::Running,
            history_start: 3,
            new_events: history[3..].to_vec(),
            status: RuntimeStatus::Failed,
            output: None,
            failure: Some(Failure::new("Boom", "child failed")),
            custom_status: None,
            waiting: None,
            consumed: vec![MessageRef::Queue(1)],
            actions: Vec::new(),
            now_ms: 5,
        };
        let ops = [
            WriteOp::Deliver {
                instance_id: "p".into(),
                message: Message::Suspend { reason: "x".into() },
                accept: Accept::Running,
            },
            WriteOp::Turn(turn),
            WriteOp::Deliver {
                instance_id: "p".into(),
                message: Message::Suspend { reason: "y".into() },
                accept: Accept::Running,
            },
            WriteOp::Rewind {
                instance_id: "p".into(),
                reason: "again".into(),
                now_ms: 6,
            },
            WriteOp::Start(NewInstance {
                instance_id: "p".into(),
                name: "Parent".into(),
                version: String::new(),
                input: "null".into(),
                tags: BTreeMap::new(),
                parent: None,
                scheduled_start_at: None,
                now_ms: 7,
            }),
            WriteOp::Purge {
                instance_id: "missing".into(),
            },
        ];
        let plan = block_on(plan(&holder(), NOW, &ops, &mut stored)).unwrap();
        assert_eq!(plan.outcomes[0], Ok(()), "suspend while running");
        assert!(
            matches!(
                &plan.outcomes[2],
                Err(OpError::WrongState {
                    status: RuntimeStatus::Failed,
                    action: "suspend",
                    ..
                })
            ),
            "{:?}",
            plan.outcomes[2]
        );
        assert_eq!(plan.outcomes[3], Ok(()), "rewind after the failing turn");
        assert_eq!(
            plan.outcomes[4],
            Err(OpError::Conflict("p".into())),
            "running again"
        );
        assert_eq!(plan.outcomes[5], Err(OpError::NotFound("missing".into())));
        assert!(plan.steps.iter().any(|s| matches!(
            s,
            Step::AppendHistory { events, .. } if events[0].id == 4
        )));
        assert_eq!(plan.effects.finished, ["p"]);
        assert!(plan.effects.messages);
    }

    #[test]
    fn a_sub_orchestration_that_cannot_start_fails_back_to_its_parent() {
        let mut stored = Stored::default();
        stored
            .statuses
            .insert("busy".into(), RuntimeStatus::Running);
        stored.leases.insert("p".into(), lease("a", 1, NOW + 30));
        let turn = TurnCommit {
            instance_id: "p".into(),
            fence: 1,
            previous_status: RuntimeStatus::Running,
            history_start: 1,
            new_events: Vec::new(),
            status: RuntimeStatus::Running,
            output: None,
            failure: None,
            custom_status: None,
            waiting: None,
            consumed: Vec::new(),
            actions: vec![Action::StartSubOrchestration {
                scheduled_id: 4,
                instance_id: "busy".into(),
                start: Message::Start {
                    name: "Child".into(),
                    version: String::new(),
                    input: "null".into(),
                    tags: BTreeMap::new(),
                    parent: None,
                    generation: 0,
                },
            }],
            now_ms: 5,
        };
        let ops = [WriteOp::Turn(turn)];
        let plan = block_on(plan(&holder(), NOW, &ops, &mut stored)).unwrap();
        assert!(plan.steps.iter().any(|s| matches!(
            s,
            Step::Enqueue { instance_id, message } if instance_id == "p"
                && matches!(message.as_ref(), Message::SubOrchestrationFailed { scheduled_id: 4, failure } if failure.error_type == "StartFailed")
        )), "{:?}", plan.steps);
        assert!(
            !plan
                .steps
                .iter()
                .any(|s| matches!(s, Step::CreateInstance(_)))
        );
    }
}
