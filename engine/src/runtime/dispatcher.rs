//! The orchestration dispatcher: fetches messages and due timers, runs one turn per instance,
//! hands each result to the writer.
//!
//! **Leases.** Every fetched message comes with this runtime's lease on its instance. The
//! dispatcher remembers the lease it holds per instance (`held`) and commits each turn under its
//! fence; a cached executor is only trusted within one tenure, so a new fence (the instance was
//! free, or another runtime had it) drops the cache and whatever was queued locally for it. A
//! commit refused with [`OpError::LeaseLost`] drops the same, and hands activity results it
//! was holding to the store. Fetches continue after a cursor; once per half lease the dispatcher
//! sweeps from the start, so messages skipped because another runtime held their instance are
//! found again once that lease has run out.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    panic::AssertUnwindSafe,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::sync::{mpsc, oneshot};

use super::{
    Shared, WriteOutcome, activities::ActivityResult, eager::EagerItem, health::Alive,
    journal::TurnJournal, writer::commit_batch,
};
use crate::{
    entity::{EntityId, OperationRequest, RecentOperation, remember},
    executor::{Action, Executor, TurnResult, failing_turn, panic_message},
    history::{Failure, Message, RuntimeStatus, TimestampMs},
    lock::EntityScheduler,
    store::{
        EntityCommit, Lease, MessageRef, NewInstance, OpError, QueuedMessage, Store, StoreError,
        TurnCommit, WriteOp,
    },
};

/// Executors kept between turns, evicting the least recently stored when full.
///
/// Every turn takes its executor out and puts it back after the commit, so "least recently
/// stored" is "least recently run". Eviction only costs a reload and replay later.
struct ExecutorCache {
    capacity: usize,
    entries: HashMap<String, (u64, Executor)>,
    /// (id, stamp) in storing order; stale pairs (re-stored or removed ids) are skipped.
    order: VecDeque<(String, u64)>,
    stamp: u64,
}

impl ExecutorCache {
    fn new(capacity: usize) -> Self {
        ExecutorCache {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
            stamp: 0,
        }
    }

    fn remove(&mut self, id: &str) -> Option<Executor> {
        self.entries.remove(id).map(|(_, e)| e)
    }

    fn insert(&mut self, id: String, executor: Executor) {
        self.stamp += 1;
        self.order.push_back((id.clone(), self.stamp));
        self.entries.insert(id, (self.stamp, executor));
        while self.entries.len() > self.capacity {
            let Some((old, stamp)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&old).is_some_and(|(s, _)| *s == stamp) {
                self.entries.remove(&old);
            }
        }
        // Keep the order list proportional to the cache, not to the number of turns run.
        if self.order.len() > 2 * self.capacity.max(self.entries.len()) {
            let entries = &self.entries;
            self.order
                .retain(|(id, stamp)| entries.get(id).is_some_and(|(s, _)| s == stamp));
        }
    }
}

/// Where a turn's executor comes from.
// Lives on the stack for one turn; boxing the executor would cost an allocation per turn.
#[allow(clippy::large_enum_variant)]
enum Loaded {
    /// Cached from an earlier turn, or built for an ended execution.
    Executor(Executor),
    /// A new instance: nothing to replay.
    Fresh,
    /// A stored history to replay.
    History(Vec<crate::history::HistoryEvent>),
    /// The instance does not exist (purged).
    Gone,
}

/// The commit of one turn's result.
fn turn_commit(
    id: &str,
    fence: u64,
    previous_status: RuntimeStatus,
    history_start: u32,
    result: TurnResult,
    consumed: Vec<MessageRef>,
    now_ms: TimestampMs,
) -> TurnCommit {
    TurnCommit {
        instance_id: id.to_owned(),
        fence,
        previous_status,
        history_start,
        new_events: result.new_events,
        status: result.status,
        output: result.output,
        failure: result.failure,
        custom_status: result.custom_status,
        waiting: result
            .waiting
            .first()
            .map(|w| (w.name.clone(), w.since_ms, w.deadline_ms)),
        consumed,
        actions: result.actions,
        now_ms,
    }
}

/// How a turn's commit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Committed {
    Yes,
    /// The store failed; nothing was written, the messages are still stored.
    Failed,
    /// Refused: this runtime no longer holds the instance.
    LeaseLost,
    /// Refused: the start it followed was (the id is another instance's).
    Refused,
}

impl Committed {
    fn of(outcome: &super::WriteOutcome, instance_id: &str) -> Committed {
        match outcome {
            Ok(Err(OpError::LeaseLost(_))) => Committed::LeaseLost,
            Ok(Err(OpError::Conflict(_))) => Committed::Refused,
            Ok(_) => Committed::Yes,
            Err(e) => {
                // The committer logs the failure itself, once per streak.
                tracing::debug!(instance = %instance_id, error = %e, "committing a turn failed");
                Committed::Failed
            }
        }
    }
}

/// A turn run in this round, to be committed.
struct RoundTurn {
    instance_id: String,
    op: WriteOp,
    executor: Option<Executor>,
    consumed: Vec<QueuedMessage>,
    /// Eager activities whose rows this commit writes: forgotten if it fails.
    eager: Vec<(i64, u32)>,
    /// The instance's start, when this is its first turn run here: it commits first, in the
    /// same transaction, and its outcome goes to the client.
    start: Option<(NewInstance, oneshot::Sender<WriteOutcome>)>,
}

impl RoundTurn {
    /// Appends the turn's ops to `ops` (its start first, if it is an instance's first turn run
    /// here); returns what to report back, and where the start's outcome goes.
    fn split(self, ops: &mut Vec<WriteOp>) -> (TurnDone, Option<oneshot::Sender<WriteOutcome>>) {
        let reply = self.start.map(|(new, reply)| {
            ops.push(WriteOp::StartRun(new));
            reply
        });
        ops.push(self.op);
        let done = TurnDone {
            instance_id: self.instance_id,
            executor: self.executor,
            consumed: self.consumed,
            eager: self.eager,
            committed: Committed::Failed,
        };
        (done, reply)
    }
}

/// A start sent to the dispatcher, to run at once (see `Dispatcher::start_here`).
pub(crate) struct StartHere {
    pub new: NewInstance,
    pub reply: oneshot::Sender<WriteOutcome>,
}

/// A chain commits after at most this many turns or new events, whatever its activities do.
const MAX_CHAIN_TURNS: usize = 64;
const MAX_CHAIN_EVENTS: usize = 1_024;

/// The uncommitted turns of an instance whose eager activities run (see [`super::eager`]),
/// merged into one commit.
struct Chain {
    commit: TurnCommit,
    /// The messages its turns consumed: stored ones (still stored until the chain commits) and
    /// eager results.
    consumed: Vec<QueuedMessage>,
    /// The executor after the last turn, while the chain waits.
    executor: Option<Executor>,
    /// Eager activities started and not yet consumed: (token, scheduled id).
    running: Vec<(i64, u32)>,
    /// Scheduled ids whose results the chain consumed: their schedules need no row.
    done: HashSet<u32>,
    turns: usize,
    /// When the chain commits at the latest, whatever its activities do (wall time: a
    /// performance bound, not engine time).
    deadline: Option<tokio::time::Instant>,
}

impl Chain {
    fn new(commit: TurnCommit, consumed: Vec<QueuedMessage>) -> Chain {
        Chain {
            commit,
            consumed,
            executor: None,
            running: Vec::new(),
            done: HashSet::new(),
            turns: 1,
            deadline: None,
        }
    }

    /// Appends the next turn: its events follow, its status and output replace the chain's.
    fn extend(&mut self, next: TurnCommit, consumed: Vec<QueuedMessage>) {
        for m in &consumed {
            if let MessageRef::Eager(token) = m.at
                && let Some(i) = self.running.iter().position(|(t, _)| *t == token)
            {
                let (_, scheduled_id) = self.running.swap_remove(i);
                self.done.insert(scheduled_id);
            }
        }
        self.consumed.extend(consumed);
        let c = &mut self.commit;
        c.new_events.extend(next.new_events);
        c.status = next.status;
        c.output = next.output;
        c.failure = next.failure;
        if next.custom_status.is_some() {
            c.custom_status = next.custom_status;
        }
        c.waiting = next.waiting;
        c.consumed.extend(next.consumed);
        c.actions.extend(next.actions);
        c.now_ms = next.now_ms;
        self.turns += 1;
    }

    /// The chain's commit (its turns as one, without the schedules of activities whose results
    /// it consumed: they never need a row), the messages it consumed, and the eager activities
    /// still running, whose rows the commit writes.
    fn into_commit(self) -> (WriteOp, Vec<QueuedMessage>, Vec<(i64, u32)>) {
        let Chain {
            mut commit,
            consumed,
            running,
            done,
            ..
        } = self;
        commit.actions.retain(|a| {
            !matches!(a, Action::ScheduleActivity { scheduled_id, .. } if done.contains(scheduled_id))
        });
        let op = if commit.new_events.is_empty() && commit.actions.is_empty() {
            WriteOp::Discard {
                instance_id: commit.instance_id,
                fence: commit.fence,
                consumed: commit.consumed,
            }
        } else {
            WriteOp::Turn(commit)
        };
        (op, consumed, running)
    }
}

/// A finished turn, reported back to the dispatcher loop.
struct TurnDone {
    instance_id: String,
    executor: Option<Executor>,
    consumed: Vec<QueuedMessage>,
    eager: Vec<(i64, u32)>,
    committed: Committed,
}

pub(crate) fn run_dispatcher<S: Store + Clone>(
    shared: Arc<Shared<S>>,
    runtime: tokio::runtime::Handle,
    journal: Option<TurnJournal>,
    quarantine: HashMap<String, Failure>,
) {
    let _alive = Alive::new(&shared.health.dispatcher);
    // The futures run on this thread (orchestration futures are not `Send`) with the runtime's
    // timers and I/O; the thread sleeps on a futex between wake-ups, not on an event loop of its
    // own.
    let local = tokio::task::LocalSet::new();
    runtime.block_on(local.run_until(Dispatcher::new(shared, journal, quarantine).run()));
}

struct Dispatcher<S: Store> {
    shared: Arc<Shared<S>>,
    cursor: i64,
    pending: HashMap<String, Vec<QueuedMessage>>,
    /// Instances with pending messages and no turn in flight, in arrival order.
    ready: VecDeque<String>,
    /// Membership of `ready`, so queueing an instance is O(1).
    ready_set: HashSet<String>,
    /// Messages a turn left unconsumed (suspended instances), until something new arrives.
    parked: HashMap<String, Vec<QueuedMessage>>,
    in_flight: HashSet<String>,
    /// Queue messages and timers fetched and not yet committed as consumed: a sweep or a timer
    /// fetch returns them again.
    seen: HashSet<MessageRef>,
    /// The lease this runtime holds on each instance it has fetched work for.
    held: HashMap<String, Lease>,
    /// When the next sweep from the start of the queue is due (clock time).
    sweep_at: TimestampMs,
    /// The activity lease fence of each result handed over in memory and not yet committed.
    result_fences: HashMap<i64, u64>,
    cache: ExecutorCache,
    /// Instances whose turns wait for their eager activities, uncommitted.
    chains: HashMap<String, Chain>,
    /// Starts whose first turn runs here before they are stored, by instance id.
    starting: HashMap<String, (NewInstance, oneshot::Sender<WriteOutcome>)>,
    starts: Option<mpsc::UnboundedReceiver<StartHere>>,
    /// Eager activities this round's turns scheduled, sent to the workers when it ends.
    eager_out: Vec<EagerItem>,
    /// Turns run in this round and not yet handed to a committer.
    round: Vec<RoundTurn>,
    done_tx: mpsc::UnboundedSender<TurnDone>,
    done_rx: mpsc::UnboundedReceiver<TurnDone>,
    results: Option<mpsc::UnboundedReceiver<ActivityResult>>,
    journal: Option<TurnJournal>,
    /// Instances to fail without running their code, with the failure to record.
    quarantine: HashMap<String, Failure>,
}

impl<S: Store + Clone> Dispatcher<S> {
    fn new(
        shared: Arc<Shared<S>>,
        journal: Option<TurnJournal>,
        quarantine: HashMap<String, Failure>,
    ) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let results = shared.results_rx.lock().expect("results lock").take();
        let starts = shared.starts_rx.lock().expect("starts lock").take();
        let cache = ExecutorCache::new(shared.options.cache_capacity);
        let sweep_at = shared.clock.now_ms() + shared.lease_ms() / 2;
        Dispatcher {
            shared,
            cursor: 0,
            pending: HashMap::new(),
            ready: VecDeque::new(),
            ready_set: HashSet::new(),
            parked: HashMap::new(),
            in_flight: HashSet::new(),
            seen: HashSet::new(),
            held: HashMap::new(),
            sweep_at,
            result_fences: HashMap::new(),
            cache,
            chains: HashMap::new(),
            eager_out: Vec::new(),
            starting: HashMap::new(),
            starts,
            round: Vec::new(),
            done_tx,
            done_rx,
            results,
            journal,
            quarantine,
        }
    }

    fn enqueue(&mut self, message: QueuedMessage) {
        let id = message.instance_id.clone();
        let list = self.pending.entry(id.clone()).or_default();
        if list.is_empty()
            && let Some(mut parked) = self.parked.remove(&id)
        {
            list.append(&mut parked);
        }
        list.push(message);
        self.mark_ready(id);
    }

    /// Queues an instance for a turn unless it has one in flight or is queued already.
    fn mark_ready(&mut self, id: String) {
        if !self.in_flight.contains(&id) && self.ready_set.insert(id.clone()) {
            self.ready.push_back(id);
        }
    }

    async fn fetch(&mut self) -> Result<bool, StoreError> {
        self.shared
            .stats
            .dispatcher_rounds
            .fetch_add(1, Ordering::Relaxed);
        let limit = self.shared.options.fetch_batch;
        let lease_ms = self.shared.lease_ms();
        let now = self.shared.clock.now_ms();
        let shared = self.shared.clone();
        let sweeping = now >= self.sweep_at;
        if sweeping {
            self.sweep_at = now + lease_ms / 2;
            self.cursor = 0;
            self.forget_lapsed(now);
            shared.timer_hint.store(i64::MIN, Ordering::SeqCst);
        }
        let mut more = false;
        // Only when a commit queued messages (or a sweep looks again): a wake-up for a result
        // handed over in memory costs no query.
        if shared.messages_waiting.swap(false, Ordering::SeqCst) || sweeping {
            let fetched = shared
                .store
                .fetch_messages(&shared.holder, self.cursor, now, lease_ms, limit)
                .await
                .inspect_err(|_| shared.messages_waiting.store(true, Ordering::SeqCst))?;
            if fetched.full {
                shared.messages_waiting.store(true, Ordering::SeqCst);
                more = true;
            }
            self.cursor = self.cursor.max(fetched.scanned_to);
            for m in fetched.items {
                self.take(m);
            }
        }
        if let Some(results) = self.results.as_mut() {
            let mut ready = Vec::new();
            while let Ok(result) = results.try_recv() {
                ready.push(result);
            }
            for result in ready {
                self.take_result(result, now);
            }
        }
        let mut starts = Vec::new();
        if let Some(rx) = self.starts.as_mut() {
            while let Ok(start) = rx.try_recv() {
                starts.push(start);
            }
        }
        for start in starts {
            self.start_here(start, now).await;
        }
        // Timers only once the earliest known one has come.
        if now >= shared.timer_hint.load(Ordering::SeqCst) {
            shared.timer_hint.store(i64::MAX, Ordering::SeqCst);
            let timers = shared
                .store
                .fetch_due_timers(&shared.holder, now, lease_ms, limit)
                .await
                .inspect_err(|_| shared.timer_hint.store(i64::MIN, Ordering::SeqCst))?;
            let due = timers.len() as u32;
            let mut fresh = 0;
            for t in timers {
                fresh += u32::from(!self.seen.contains(&t.at));
                self.take(t);
            }
            more |= fresh == limit;
            if due == limit {
                // More may be due beyond the limit.
                shared.timer_hint.fetch_min(now, Ordering::SeqCst);
            } else {
                let next = shared
                    .store
                    .next_timer_at(now)
                    .await
                    .inspect_err(|_| shared.timer_hint.store(i64::MIN, Ordering::SeqCst))?;
                if let Some(next) = next {
                    shared.timer_hint.fetch_min(next, Ordering::SeqCst);
                }
            }
        }
        Ok(more)
    }

    /// Takes a fetched message (or timer) under the lease it came with.
    fn take(&mut self, message: QueuedMessage) {
        self.hold(&message.instance_id, message.lease);
        if self.seen.insert(message.at) {
            self.enqueue(message);
        }
    }

    /// Records the lease a fetch returned for an instance. A new tenure (a fence this runtime
    /// did not hold) makes everything remembered about the instance suspect.
    fn hold(&mut self, id: &str, lease: Lease) {
        match self.held.get_mut(id) {
            Some(held) if held.fence == lease.fence => {
                held.expires_at = held.expires_at.max(lease.expires_at);
            }
            Some(_) => {
                // Another runtime had the instance in between: messages queued here may have
                // been consumed by it. Forget them; the next fetches return what is left.
                self.held.insert(id.to_owned(), lease);
                self.forget(id);
                self.cursor = 0;
                self.shared.messages_waiting.store(true, Ordering::SeqCst);
            }
            None => {
                self.held.insert(id.to_owned(), lease);
                self.cache.remove(id);
            }
        }
    }

    /// An activity's result from this runtime's workers: queued here if this runtime holds the
    /// instance, stored as a message for whoever does otherwise.
    fn take_result(&mut self, result: ActivityResult, now: TimestampMs) {
        if let MessageRef::Eager(token) = result.at {
            // For the instance's chain; if the chain was dropped, its turns run again and
            // schedule the activity again.
            let wanted = self
                .chains
                .get(&result.instance_id)
                .is_some_and(|chain| chain.running.iter().any(|(t, _)| *t == token));
            if let (true, Some(lease)) = (wanted, self.held.get(&result.instance_id)) {
                let lease = *lease;
                self.enqueue(QueuedMessage {
                    at: result.at,
                    instance_id: result.instance_id,
                    message: result.message,
                    lease,
                });
            }
            return;
        }
        match self.held.get(&result.instance_id) {
            Some(lease) if lease.expires_at > now => {
                let lease = *lease;
                if let MessageRef::Activity(activity_id) = result.at {
                    self.result_fences.insert(activity_id, result.fence);
                }
                self.enqueue(QueuedMessage {
                    at: result.at,
                    instance_id: result.instance_id,
                    message: result.message,
                    lease,
                });
            }
            _ => self.shared.store_result(result),
        }
    }

    /// Drops what is queued here for an instance (its cache too), so the store's copy is
    /// fetched again; activity results, which exist only here, go to the store.
    fn forget(&mut self, id: &str) {
        self.cache.remove(id);
        if let Some(chain) = self.chains.remove(id) {
            for m in self.abandon(id, chain) {
                self.drop_message(m);
            }
        }
        let queued = self.pending.remove(id).into_iter().flatten();
        let parked = self.parked.remove(id).into_iter().flatten();
        for m in queued.chain(parked).collect::<Vec<_>>() {
            self.drop_message(m);
        }
    }

    fn drop_message(&mut self, m: QueuedMessage) {
        match m.at {
            MessageRef::Activity(activity_id) => {
                // Refused if the activity's lease has lapsed meanwhile: then it runs again.
                let fence = self.result_fences.remove(&activity_id).unwrap_or(0);
                self.shared.store_result(ActivityResult {
                    at: m.at,
                    fence,
                    instance_id: m.instance_id,
                    message: m.message,
                });
            }
            // Its chain is dropped with it: the activity runs again.
            MessageRef::Eager(_) => {}
            at => {
                self.seen.remove(&at);
            }
        }
    }

    /// The fence of this runtime's lease on an instance (0, never a fence, if it holds none:
    /// the commit is then refused).
    fn fence(&self, id: &str) -> u64 {
        self.held.get(id).map_or(0, |lease| lease.fence)
    }

    /// Forgets leases that ran out on instances with nothing queued or running here, so the
    /// table stays proportional to the work in hand.
    fn forget_lapsed(&mut self, now: TimestampMs) {
        let (pending, parked, in_flight) = (&self.pending, &self.parked, &self.in_flight);
        let chains = &self.chains;
        self.held.retain(|id, lease| {
            lease.expires_at > now
                || pending.contains_key(id)
                || parked.contains_key(id)
                || in_flight.contains(id)
                || chains.contains_key(id)
        });
    }

    fn apply_resets(&mut self) {
        let resets = std::mem::take(&mut *self.shared.resets.lock().expect("resets lock"));
        for id in resets {
            self.cache.remove(&id);
            if let Some(chain) = self.chains.remove(&id) {
                let consumed = self.abandon(&id, chain);
                self.requeue(consumed);
            }
        }
    }

    /// Drops a chain: its eager activities' results are no longer wanted. Returns the stored
    /// messages its turns consumed (uncommitted: still stored), for the caller to requeue or
    /// drop.
    fn abandon(&mut self, id: &str, chain: Chain) -> Vec<QueuedMessage> {
        self.shared
            .eager
            .lock()
            .expect("eager lock")
            .abandon(id, chain.running);
        chain
            .consumed
            .into_iter()
            .filter(|m| m.at.is_stored())
            .collect()
    }

    /// After a turn: extends the instance's chain with it, starts the activities it scheduled
    /// eagerly, and either keeps the chain waiting for them or commits it.
    fn after_turn(
        &mut self,
        id: String,
        executor: Executor,
        turn: TurnCommit,
        consumed: Vec<QueuedMessage>,
        chain: Option<Chain>,
    ) {
        let from = chain.as_ref().map_or(0, |c| c.commit.actions.len());
        let mut chain = match chain {
            Some(mut chain) => {
                chain.extend(turn, consumed);
                chain
            }
            None => Chain::new(turn, consumed),
        };
        let live = matches!(
            executor.status(),
            RuntimeStatus::Running | RuntimeStatus::Pending
        ) && !self.shared.stopping.load(Ordering::SeqCst);
        if let (Some(window), true) = (self.shared.eager_window, live) {
            let mut started = 0;
            for action in &chain.commit.actions[from..] {
                if let Action::ScheduleActivity {
                    scheduled_id,
                    name,
                    input,
                } = action
                {
                    let token = self.shared.eager.lock().expect("eager lock").start();
                    chain.running.push((token, *scheduled_id));
                    self.eager_out.push(EagerItem {
                        token,
                        instance_id: id.clone(),
                        scheduled_id: *scheduled_id,
                        name: name.clone(),
                        input: input.clone(),
                    });
                    started += 1;
                }
            }
            if started > 0 {
                chain
                    .deadline
                    .get_or_insert_with(|| tokio::time::Instant::now() + window);
            }
        }
        let waits = live
            && !chain.running.is_empty()
            && chain.turns < MAX_CHAIN_TURNS
            && chain.commit.new_events.len() < MAX_CHAIN_EVENTS
            && chain
                .deadline
                .is_some_and(|d| tokio::time::Instant::now() < d);
        if waits {
            chain.executor = Some(executor);
            self.chains.insert(id, chain);
        } else {
            self.commit_chain(id, chain, executor);
        }
    }

    /// Puts a chain's turns into this round's commit, as one turn. Eager activities still
    /// running get their rows in it; if one has just finished, its result is consumed first.
    fn commit_chain(&mut self, id: String, mut chain: Chain, executor: Executor) {
        // Results that reached the instance but were left unconsumed (a suspended instance
        // parks its messages) exist only here: dropped, their activities get rows and run
        // again once the instance takes messages again.
        if let Some(parked) = self.parked.get_mut(&id) {
            let mut dropped = Vec::new();
            parked.retain(|m| match m.at {
                MessageRef::Eager(token) => {
                    dropped.push(token);
                    false
                }
                _ => true,
            });
            chain.running.retain(|(token, _)| !dropped.contains(token));
        }
        if !chain.running.is_empty()
            && self
                .shared
                .eager
                .lock()
                .expect("eager lock")
                .prepare(&id, &chain.running)
                .is_none()
        {
            chain.executor = Some(executor);
            self.chains.insert(id, chain);
            return;
        }
        let (op, consumed, eager) = chain.into_commit();
        self.in_flight.insert(id.clone());
        let start = self.starting.remove(&id);
        self.round.push(RoundTurn {
            instance_id: id,
            op,
            executor: Some(executor),
            consumed,
            eager,
            start,
        });
    }

    /// Commits the chains whose window has passed (all of them when `all`), unless a turn of
    /// theirs is about to run.
    fn commit_due_chains(&mut self, all: bool) {
        let now = tokio::time::Instant::now();
        let due: Vec<String> = self
            .chains
            .iter()
            .filter(|(id, c)| {
                (all || c.deadline.is_none_or(|d| d <= now)) && !self.ready_set.contains(*id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            if let Some(mut chain) = self.chains.remove(&id) {
                match chain.executor.take() {
                    Some(executor) => self.commit_chain(id, chain, executor),
                    None => {
                        let consumed = self.abandon(&id, chain);
                        self.requeue(consumed);
                    }
                }
            }
        }
    }

    async fn run_ready(&mut self) {
        while let Some(id) = self.ready.pop_front() {
            self.ready_set.remove(&id);
            if let Some(messages) = self.pending.remove(&id) {
                self.start_turn(id, messages).await;
            }
        }
        // The eager activities the round's turns scheduled start once no turn runs: a crash
        // while they run is then blamed on them, not on a turn that happened to run beside.
        if !self.eager_out.is_empty() {
            for item in self.eager_out.drain(..) {
                let _ = self.shared.eager_tx.send(item);
            }
            self.shared.activities.notify_one();
        }
    }

    async fn start_turn(&mut self, id: String, mut messages: Vec<QueuedMessage>) {
        if id.starts_with('@') {
            self.entity_turn(id, messages).await;
            return;
        }
        let mut chain = self.chains.remove(&id);
        if let Some(failure) = self.quarantine.get(&id).cloned() {
            if let Some(chain) = chain.take() {
                messages.extend(self.abandon(&id, chain));
            }
            self.start_failing_turn(id, messages, failure).await;
            return;
        }
        let chained = chain.as_mut().and_then(|c| c.executor.take());
        let starts_fresh = messages
            .iter()
            .any(|m| matches!(m.message, Message::Start { .. }));
        let loaded = match chained.or_else(|| self.cache.remove(&id)) {
            Some(e) => Loaded::Executor(e),
            // A queued Start means the history is empty (it is written by the same commit that
            // consumes the Start), so there is nothing to load.
            None if starts_fresh => Loaded::Fresh,
            None => match self.shared.store.load(&id).await {
                // An ended execution only drops what reaches it: no need to run its code.
                Ok(Some(loaded)) if loaded.status.is_terminal() => {
                    Loaded::Executor(Executor::finished(
                        self.shared.registry.clone(),
                        &id,
                        loaded.status,
                        loaded.history.len() as u32,
                    ))
                }
                Ok(Some(loaded))
                    if loaded.status != RuntimeStatus::Pending || !loaded.history.is_empty() =>
                {
                    Loaded::History(loaded.history)
                }
                Ok(Some(_)) => Loaded::Fresh,
                Ok(None) => Loaded::Gone,
                Err(e) => {
                    tracing::warn!(instance = %id, error = %e, "loading an instance failed; will retry");
                    self.requeue(messages);
                    return;
                }
            },
        };
        let now = self.shared.clock.now_ms();
        let registry = self.shared.registry.clone();
        // From here the instance's own code runs (replay and turn): the journal names it, so a
        // crash of the whole process is blamed on it at the next start.
        if let Some(journal) = &self.journal {
            journal.begin(&id);
        }
        let plain: Vec<Message> = messages.iter().map(|m| m.message.clone()).collect();
        let ran = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let executor = match loaded {
                Loaded::Executor(e) => Some(e),
                Loaded::Fresh => Some(Executor::new(registry, &id)),
                Loaded::History(history) => Some(Executor::replay(registry, &id, &history)),
                Loaded::Gone => None,
            };
            executor.map(|mut executor| {
                let previous_status = executor.status();
                let history_start = executor.history_len();
                let result = executor.turn(now, &plain);
                (executor, previous_status, history_start, result)
            })
        }));
        if let Some(journal) = &self.journal {
            journal.clear();
        }
        let ran = match ran {
            Ok(ran) => ran,
            Err(payload) => {
                // Orchestration code's own panics are caught inside the executor; this is a
                // panic in the engine itself. Its state is unknown: fail the instance without
                // running its code again.
                let message = panic_message(&*payload);
                tracing::error!(instance = %id, panic = %message, "the engine panicked during a turn; quarantining the instance");
                self.quarantine.insert(
                    id.clone(),
                    Failure::new(
                        "Quarantined",
                        format!(
                            "the engine panicked while running this instance's turn: {message}"
                        ),
                    ),
                );
                if let Some(chain) = chain.take() {
                    messages.extend(self.abandon(&id, chain));
                }
                self.requeue(messages);
                return;
            }
        };
        let fence = self.fence(&id);
        let (op, executor, consumed) = match ran {
            None => {
                // The instance is gone (purged): drop its messages.
                let consumed = messages.iter().map(|m| m.at).collect();
                let op = WriteOp::Discard {
                    instance_id: id.clone(),
                    fence,
                    consumed,
                };
                (op, None, messages)
            }
            Some((executor, previous_status, history_start, result)) => {
                self.shared.stats.turns.fetch_add(1, Ordering::Relaxed);
                let mut consumed = Vec::with_capacity(result.consumed.len());
                let mut left = Vec::new();
                for (i, m) in messages.into_iter().enumerate() {
                    if result.consumed.contains(&i) {
                        consumed.push(m);
                    } else {
                        left.push(m);
                    }
                }
                if !left.is_empty() {
                    self.parked.entry(id.clone()).or_default().extend(left);
                }
                let refs: Vec<MessageRef> = consumed.iter().map(|m| m.at).collect();
                let turn = turn_commit(
                    &id,
                    fence,
                    previous_status,
                    history_start,
                    result,
                    refs,
                    now,
                );
                self.after_turn(id, executor, turn, consumed, chain);
                return;
            }
        };
        if let Some(chain) = chain {
            // The instance is gone: its chain with it.
            self.abandon(&id, chain);
        }
        self.round_push(id, op, executor, consumed);
    }

    /// Runs the operations queued for an entity as one batch, from its committed state, and
    /// puts the batch's commit in this round: one commit for all of them (entities.md rule 7).
    async fn entity_turn(&mut self, id: String, messages: Vec<QueuedMessage>) {
        let fence = self.fence(&id);
        let now = self.shared.clock.now_ms();
        let consumed: Vec<MessageRef> = messages.iter().map(|m| m.at).collect();
        let shared = self.shared.clone();
        let known = EntityId::parse(&id).ok().and_then(|entity| {
            let entry = shared.registry.get_entity(entity.name())?;
            Some((entity, entry))
        });
        let Some((entity, entry)) = known else {
            tracing::warn!(entity = %id, "dropping operations for an entity type this runtime does not know");
            let op = WriteOp::Discard {
                instance_id: id.clone(),
                fence,
                consumed,
            };
            self.round_push(id, op, None, messages);
            return;
        };
        let stored = match self.shared.store.load_entity(&id).await {
            Ok(stored) => stored.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(entity = %id, error = %e, "loading an entity failed; will retry");
                self.requeue(messages);
                return;
            }
        };
        let mut scheduler: EntityScheduler = match stored
            .scheduler
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
        {
            Ok(scheduler) => scheduler.unwrap_or_default(),
            Err(e) => {
                // Only this entity suffers: it starts unlocked with nothing waiting.
                tracing::error!(entity = %id, error = %e, "an entity's stored lock state is unreadable; it was reset");
                EntityScheduler::default()
            }
        };
        let arrived = messages.iter().map(|m| m.message.clone()).collect();
        let admitted = scheduler.admit(&id, arrived, now);
        if admitted.dropped > 0 {
            tracing::warn!(entity = %id, dropped = admitted.dropped, "signals dropped: too many operations wait behind the entity's lock");
        }
        let (requests, callers): (Vec<OperationRequest>, Vec<_>) =
            admitted.operations.into_iter().unzip();
        if let Some(journal) = &self.journal {
            journal.begin(&id);
        }
        let outcome = entry.run_batch(&entity, stored.state.as_deref(), &requests, now);
        if let Some(journal) = &self.journal {
            journal.clear();
        }
        for (request, result) in requests.iter().zip(&outcome.results) {
            if let Err(failure) = result {
                tracing::info!(entity = %id, operation = %request.operation, error = %failure, "an entity operation failed; its changes were undone");
            }
        }
        let recent_callers: Vec<Option<String>> = callers
            .iter()
            .map(|c| c.as_ref().map(|c| c.instance_id.clone()))
            .collect();
        // A call's result goes back to its caller (rule 9); a signal's only to the log.
        let mut sends = admitted.sends;
        sends.extend(
            callers
                .into_iter()
                .zip(&outcome.results)
                .filter_map(|(caller, result)| {
                    let caller = caller?;
                    Some((
                        caller.instance_id,
                        Message::EntityResponse {
                            scheduled_id: caller.scheduled_id,
                            result: result.clone(),
                        },
                    ))
                }),
        );
        let earlier = stored
            .recent
            .as_deref()
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_default();
        let batch = requests
            .iter()
            .zip(&recent_callers)
            .zip(&outcome.results)
            .map(|((request, caller), result)| RecentOperation {
                operation: request.operation.clone(),
                at: now,
                caller: caller.clone(),
                failed: result.as_ref().err().map(|f| f.error_type.clone()),
            })
            .collect();
        let recent = serde_json::to_string(&remember(earlier, batch)).ok();
        let stats = &self.shared.stats;
        stats.entity_batches.fetch_add(1, Ordering::Relaxed);
        stats
            .entity_operations
            .fetch_add(requests.len() as u64, Ordering::Relaxed);
        let registry = &self.shared.registry;
        let starts = outcome
            .starts
            .into_iter()
            .map(|start| NewInstance {
                instance_id: start
                    .instance_id
                    .unwrap_or_else(|| crate::client::new_instance_id(now)),
                version: registry
                    .get_orchestration(&start.name)
                    .map(|o| o.version.to_owned())
                    .unwrap_or_default(),
                name: start.name,
                input: start.input,
                tags: Default::default(),
                parent: None,
                scheduled_start_at: None,
                now_ms: now,
            })
            .collect();
        let op = WriteOp::EntityBatch(EntityCommit {
            entity_id: id.clone(),
            fence,
            // An accepted purge removes it once the operations before it ran (rule 13).
            state: if admitted.purge { None } else { outcome.state },
            scheduler: (!scheduler.is_idle())
                .then(|| serde_json::to_string(&scheduler).unwrap_or_default()),
            locked_by: scheduler.holder().map(str::to_owned),
            deferred: scheduler.deferred.len() as u64,
            recent,
            consumed,
            signals: outcome.signals,
            starts,
            sends,
            now_ms: now,
        });
        self.round_push(id, op, None, messages);
    }

    /// Fails a quarantined instance without running its code: appends `ExecutionFailed` to its
    /// stored history and consumes everything queued for it.
    async fn start_failing_turn(
        &mut self,
        id: String,
        messages: Vec<QueuedMessage>,
        failure: Failure,
    ) {
        let mut messages = messages;
        if let Some((new, reply)) = self.starting.remove(&id) {
            // Not stored yet: store it plainly; its fetched Start then fails it here.
            messages.retain(|m| m.at.is_stored());
            self.start_plainly(new, reply);
        }
        let loaded = match self.shared.store.load(&id).await {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::warn!(instance = %id, error = %e, "loading an instance failed; will retry");
                self.requeue(messages);
                return;
            }
        };
        let fence = self.fence(&id);
        let refs: Vec<MessageRef> = messages.iter().map(|m| m.at).collect();
        let op = match loaded {
            Some(loaded) if !loaded.status.is_terminal() => {
                let start = messages
                    .iter()
                    .map(|m| &m.message)
                    .find(|m| matches!(m, Message::Start { .. }));
                let now = self.shared.clock.now_ms();
                let result = failing_turn(&id, &loaded.history, start, failure, now);
                WriteOp::Turn(turn_commit(
                    &id,
                    fence,
                    loaded.status,
                    loaded.history.len() as u32,
                    result,
                    refs,
                    now,
                ))
            }
            // Already ended (or gone): nothing to fail, the messages are dropped.
            _ => WriteOp::Discard {
                instance_id: id.clone(),
                fence,
                consumed: refs,
            },
        };
        self.round_push(id, op, None, messages);
    }

    /// Puts a turn's op in this round's commit (no eager rows, no start with it).
    fn round_push(
        &mut self,
        id: String,
        op: WriteOp,
        executor: Option<Executor>,
        consumed: Vec<QueuedMessage>,
    ) {
        self.in_flight.insert(id.clone());
        self.round.push(RoundTurn {
            instance_id: id,
            op,
            executor,
            consumed,
            eager: Vec::new(),
            start: None,
        });
    }

    /// Commits the turns of this round. While the writer has nothing to do, the dispatcher
    /// commits them itself, as one batch: at low load that saves two thread hand-offs per turn.
    /// Otherwise they join the writer's next batch, and the dispatcher runs the next round
    /// while they commit.
    async fn commit_round(&mut self) {
        if self.round.is_empty() {
            return;
        }
        let round = std::mem::take(&mut self.round);
        if !self.shared.writer_idle() {
            for turn in round {
                self.spawn_commit(turn);
            }
            return;
        }
        let mut ops = Vec::with_capacity(round.len());
        let mut turns = Vec::with_capacity(round.len());
        for turn in round {
            let (done, starts) = turn.split(&mut ops);
            turns.push((done, starts, ops.len() - 1));
        }
        let committed = commit_batch(&self.shared, &ops).await;
        for (mut done, start, at) in turns {
            let outcome = |i: usize| match &committed {
                Ok(outcomes) => Ok(outcomes[i].clone()),
                Err(e) => Err(e.clone()),
            };
            if let Some(reply) = start {
                let _ = reply.send(outcome(at - 1));
            }
            done.committed = Committed::of(&outcome(at), &done.instance_id);
            self.finish_turn(done);
        }
    }

    /// Hands a turn's op to the writer; the outcome comes back as a [`TurnDone`].
    fn spawn_commit(&mut self, turn: RoundTurn) {
        let shared = self.shared.clone();
        let done_tx = self.done_tx.clone();
        tokio::task::spawn_local(async move {
            let mut ops = Vec::with_capacity(2);
            let (mut done, start) = turn.split(&mut ops);
            let committed = shared.write_all(ops).await;
            let outcome = |i: usize| match &committed {
                Ok(outcomes) => Ok(outcomes[i].clone()),
                Err(e) => Err(e.clone()),
            };
            let last = committed.as_ref().map_or(0, |o| o.len().saturating_sub(1));
            if let Some(reply) = start {
                let _ = reply.send(outcome(0));
            }
            done.committed = Committed::of(&outcome(last), &done.instance_id);
            let _ = done_tx.send(done);
        });
    }

    /// A start this runtime runs at once: the first turn runs before anything is stored, and
    /// the start commits with it ([`WriteOp::StartRun`]). An id this runtime already works on,
    /// or one another runtime holds, takes the plain start through the writer.
    async fn start_here(&mut self, start: StartHere, now: TimestampMs) {
        let id = start.new.instance_id.clone();
        let busy = self.held.contains_key(&id)
            || self.chains.contains_key(&id)
            || self.in_flight.contains(&id)
            || self.pending.contains_key(&id)
            || self.parked.contains_key(&id)
            || self.starting.contains_key(&id)
            || self.quarantine.contains_key(&id);
        let lease = if busy {
            None
        } else {
            self.shared
                .store
                .lease_new(&self.shared.holder, &id, now, self.shared.lease_ms())
                .await
        };
        let Some(lease) = lease else {
            self.start_plainly(start.new, start.reply);
            return;
        };
        self.held.insert(id.clone(), lease);
        self.cache.remove(&id);
        let message = start.new.start_message();
        self.starting.insert(id.clone(), (start.new, start.reply));
        self.enqueue(QueuedMessage {
            at: MessageRef::Local,
            instance_id: id,
            message,
            lease,
        });
    }

    /// The plain start: stored with its Start message, fetched like any message.
    fn start_plainly(&self, new: NewInstance, reply: oneshot::Sender<WriteOutcome>) {
        let shared = self.shared.clone();
        tokio::task::spawn_local(async move {
            let _ = reply.send(shared.write(WriteOp::Start(new)).await);
        });
    }

    /// Queues messages again for another turn (nothing of theirs was committed).
    fn requeue(&mut self, messages: Vec<QueuedMessage>) {
        for m in messages {
            self.enqueue(m);
        }
    }

    fn finish_turn(&mut self, done: TurnDone) {
        self.in_flight.remove(&done.instance_id);
        self.apply_resets();
        if done.committed != Committed::Yes && !done.eager.is_empty() {
            // No rows were written: the eager activities' results are not wanted (the turns
            // run again and schedule them again).
            self.shared
                .eager
                .lock()
                .expect("eager lock")
                .abandon(&done.instance_id, done.eager.iter().copied());
        }
        match done.committed {
            Committed::Yes => {
                self.quarantine.remove(&done.instance_id);
                for m in &done.consumed {
                    if let MessageRef::Activity(activity_id) = m.at {
                        self.result_fences.remove(&activity_id);
                    } else {
                        self.seen.remove(&m.at);
                    }
                }
                match done.executor {
                    Some(executor) if executor.status().is_terminal() => {
                        // The store releases the lease of an ended instance.
                        self.held.remove(&done.instance_id);
                    }
                    Some(executor) if executor.status() != RuntimeStatus::ContinuedAsNew => {
                        self.cache.insert(done.instance_id.clone(), executor);
                    }
                    _ => {}
                }
            }
            Committed::Failed => {
                // Nothing was written: the messages are still stored; try them again. Eager
                // results exist only here, for turns that run again: dropped.
                self.cache.remove(&done.instance_id);
                self.requeue(
                    done.consumed
                        .into_iter()
                        .filter(|m| m.at.is_stored())
                        .collect(),
                );
            }
            Committed::LeaseLost | Committed::Refused => {
                if done.committed == Committed::LeaseLost {
                    tracing::info!(instance = %done.instance_id, "another runtime took the instance over; its turn here was not committed");
                }
                self.held.remove(&done.instance_id);
                for m in done.consumed {
                    self.drop_message(m);
                }
                self.forget(&done.instance_id);
                return;
            }
        }
        if self.pending.contains_key(&done.instance_id) {
            self.mark_ready(done.instance_id);
        }
    }

    async fn run(mut self) {
        loop {
            let stopping = self.shared.stopping.load(Ordering::SeqCst);
            if stopping {
                // Commit the chains (their eager results first, if on their way), let turns in
                // flight commit, then stop.
                let deadline = tokio::time::Instant::now() + self.shared.options.shutdown_grace;
                while !self.chains.is_empty() && tokio::time::Instant::now() < deadline {
                    let _ = self.fetch().await;
                    self.run_ready().await;
                    self.commit_due_chains(true);
                    self.commit_round().await;
                    while let Ok(done) = self.done_rx.try_recv() {
                        self.finish_turn(done);
                    }
                    if !self.chains.is_empty() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                while !self.in_flight.is_empty() {
                    match tokio::time::timeout_at(deadline, self.done_rx.recv()).await {
                        Ok(Some(done)) => self.finish_turn(done),
                        _ => break,
                    }
                }
                return;
            }
            let shared = self.shared.clone();
            let notified = shared.orchestrations.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let more = match self.fetch().await {
                Ok(more) => more,
                Err(e) => {
                    tracing::warn!(error = %e, "fetching orchestration work failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            self.apply_resets();
            self.run_ready().await;
            self.commit_due_chains(false);
            self.commit_round().await;
            while let Ok(done) = self.done_rx.try_recv() {
                self.finish_turn(done);
            }
            if more || !self.ready.is_empty() {
                tokio::task::yield_now().await;
                continue;
            }
            let now = self.shared.clock.now_ms();
            let next_timer = self.shared.timer_hint.load(Ordering::SeqCst);
            // Wake for the next timer or sweep, and at least once a minute of clock time.
            let wake = next_timer
                .min(self.sweep_at)
                .min(now.saturating_add(60_000));
            // And when the first chain's window passes.
            let chain_due = self.chains.values().filter_map(|c| c.deadline).min();
            let chain_wait = async {
                match chain_due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut notified => {}
                Some(done) = self.done_rx.recv() => self.finish_turn(done),
                () = self.shared.clock.sleep_until(wake) => {}
                () = chain_wait => {}
            }
        }
    }
}
