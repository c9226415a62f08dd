//! The runtime: one writer that group-commits, an orchestration dispatcher, activity workers.
//!
//! - **Writer** (a tokio task): receives [`WriteOp`]s from everyone, takes all that are queued
//!   (up to `max_batch_ops`) and commits them in one transaction. While one commit waits for its
//!   fsync, the next batch gathers, so throughput rises with load at one fsync per batch.
//! - **Orchestration dispatcher** (its own thread; orchestration futures are not `Send`): fetches
//!   messages after a cursor and due timers, groups them by instance, runs one turn per instance
//!   with [`Executor`] (kept in a cache between turns, so a turn does not replay its whole history),
//!   and hands each result to the writer. An instance has at most one turn in flight; messages
//!   that arrive meanwhile wait for the next turn.
//! - **Activity workers**: fetch activities after a cursor and run them with bounded concurrency;
//!   each result goes to the dispatcher in memory, and the turn that consumes it deletes the
//!   activity row in the same commit (one commit per step instead of two). A crash before that
//!   commit leaves the row, so the activity runs again: at least once.
//!
//! Everyone is woken in-process when the writer commits work for them; timers are waited for
//! until the earliest is due. There is no poll interval.
//!
//! **Isolation.** A panic in orchestration code fails that instance (`Panicked`), one in an
//! activity fails that call; a panic in the engine while it runs a turn quarantines the instance
//! (failed without running its code again); a turn or an activity that kills the whole process is
//! named by the [journals](crate::journal) and quarantined at the start after it has done so
//! `quarantine_after` times (activities that were running at a crash first run again one at a
//! time, so the next crash names one). Once an execution has
//! ended, messages to it are dropped without replaying its code. A failed commit (a full disk)
//! is retried with backoff; while writes fail, and if any of the runtime's tasks has died,
//! [`Runtime::health`] says so. Shutdown stops fetching, lets turns and
//! activities in flight finish (up to a grace period), then drains the writer. Anything not
//! committed is fetched again on the next start.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    panic::AssertUnwindSafe,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::FutureExt;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};

use crate::{
    history::{Failure, Message, RuntimeStatus, TimestampMs},
    journal::{ActivityJournal, TurnJournal},
    registry::{ActivityContext, Registry},
    replay::{Executor, failing_turn, panic_message},
    store::{
        ActivityItem, CommitEffects, MessageRef, OpError, QueuedMessage, Store, StoreError,
        TurnCommit, WriteOp,
    },
};

/// A source of the current time. The runtime stamps turns with it; the replay core never reads it.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> TimestampMs;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> TimestampMs {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as TimestampMs)
            .unwrap_or(0)
    }
}

/// Tuning knobs, with documented defaults.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Messages fetched per dispatcher round. Default 2,000.
    pub fetch_batch: u32,
    /// Activities run at once. Default 64.
    pub activity_concurrency: usize,
    /// Most write ops in one transaction. Default 4,000.
    pub max_batch_ops: usize,
    /// Executors kept in memory between turns (least recently run evicted first). Default
    /// 100,000.
    pub cache_capacity: usize,
    /// How long shutdown waits for work in flight. Default 10 s.
    pub shutdown_grace: Duration,
    /// Largest accepted input, output or event payload in bytes. Default 256 KiB.
    pub max_payload_bytes: usize,
    /// The [turn journal](crate::journal)'s file, which lets a start recognise a turn that
    /// crashed the process. Default `None`: no journal, no crash-loop quarantine.
    pub turn_journal: Option<PathBuf>,
    /// How many starts in a row must find the same instance's turn in the journal before that
    /// instance is failed as `Quarantined` without running its code. Default 2.
    pub quarantine_after: u32,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            fetch_batch: 2_000,
            activity_concurrency: 64,
            max_batch_ops: 4_000,
            cache_capacity: 100_000,
            shutdown_grace: Duration::from_secs(10),
            max_payload_bytes: 256 * 1024,
            turn_journal: None,
            quarantine_after: 2,
        }
    }
}

/// The outcome of one write op, as its sender sees it.
pub(crate) type WriteOutcome = Result<Result<(), OpError>, Arc<StoreError>>;

struct WriteRequest {
    op: WriteOp,
    reply: oneshot::Sender<WriteOutcome>,
}

/// State shared by the runtime's parts and the client.
pub(crate) struct Shared<S> {
    pub store: S,
    pub registry: Registry,
    pub clock: Arc<dyn Clock>,
    pub options: RuntimeOptions,
    writer: mpsc::UnboundedSender<WriteRequest>,
    orchestrations: Notify,
    activities: Notify,
    stopping: AtomicBool,
    /// Completion waiters by instance id.
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
    /// Instances whose history was replaced since the dispatcher last looked.
    resets: Mutex<Vec<String>>,
    /// Activity results on their way to the dispatcher (see `MessageRef::Activity`).
    results: mpsc::UnboundedSender<QueuedMessage>,
    results_rx: Mutex<Option<mpsc::UnboundedReceiver<QueuedMessage>>>,
    pub(crate) stats: Counters,
    pub(crate) health: HealthState,
}

/// Liveness of the runtime's tasks and whether writes succeed.
#[derive(Debug, Default)]
pub(crate) struct HealthState {
    dispatcher: Arc<AtomicBool>,
    writer: Arc<AtomicBool>,
    activities: Arc<AtomicBool>,
    /// When writes started failing (runtime clock, ms); 0 while they succeed.
    failing_since: AtomicI64,
    last_error: Mutex<Option<String>>,
}

/// Clears a task's liveness flag (set when the runtime starts) when the task ends, by returning
/// or by panicking.
struct Alive(Arc<AtomicBool>);

impl Alive {
    fn new(flag: &Arc<AtomicBool>) -> Alive {
        Alive(flag.clone())
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Whether the runtime can do its work, for a readiness probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Every task runs and the last write succeeded.
    pub ready: bool,
    /// What is wrong, one sentence each (empty when ready).
    pub problems: Vec<String>,
}

impl HealthState {
    pub(crate) fn report(&self) -> Health {
        let mut problems = Vec::new();
        for (flag, what) in [
            (&self.dispatcher, "the orchestration dispatcher has stopped"),
            (&self.writer, "the commit writer has stopped"),
            (&self.activities, "the activity workers have stopped"),
        ] {
            if !flag.load(Ordering::SeqCst) {
                problems.push(what.to_owned());
            }
        }
        if self.failing_since.load(Ordering::SeqCst) != 0 {
            let error = self.last_error.lock().expect("health lock").clone();
            problems.push(format!(
                "writes to the store fail: {}",
                error.unwrap_or_default()
            ));
        }
        Health {
            ready: problems.is_empty(),
            problems,
        }
    }

    /// Records a failed write; true if it starts a streak of failures.
    fn write_failed(&self, error: &StoreError, now_ms: TimestampMs) -> bool {
        *self.last_error.lock().expect("health lock") = Some(error.to_string());
        self.failing_since
            .compare_exchange(0, now_ms.max(1), Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Records a successful write; true if it ends a streak of failures.
    fn write_succeeded(&self) -> bool {
        self.failing_since.swap(0, Ordering::SeqCst) != 0
    }

    fn failing(&self) -> bool {
        self.failing_since.load(Ordering::SeqCst) != 0
    }
}

/// Monotonic counters of what the runtime has done.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    commits: AtomicU64,
    ops: AtomicU64,
    turns: AtomicU64,
    activities: AtomicU64,
    dispatcher_rounds: AtomicU64,
    commit_micros: AtomicU64,
}

/// A snapshot of the runtime's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RuntimeStats {
    /// Transactions committed by the writer.
    pub commits: u64,
    /// Write ops in those transactions (ops / commits is the group-commit factor).
    pub ops: u64,
    /// Orchestration turns run.
    pub turns: u64,
    /// Activities run.
    pub activities: u64,
    /// Dispatcher fetch rounds.
    pub dispatcher_rounds: u64,
    /// Time spent inside store commits, in microseconds.
    pub commit_micros: u64,
}

impl<S: Store> Shared<S> {
    /// Sends one op to the writer and waits for its commit.
    pub(crate) async fn write(&self, op: WriteOp) -> WriteOutcome {
        let (reply, rx) = oneshot::channel();
        if self.writer.send(WriteRequest { op, reply }).is_err() {
            return Err(Arc::new(StoreError::Corrupt(
                "the runtime has shut down".into(),
            )));
        }
        rx.await
            .unwrap_or_else(|_| Err(Arc::new(StoreError::Corrupt("the writer stopped".into()))))
    }

    /// Registers interest in an instance reaching a terminal status.
    pub(crate) fn watch(&self, instance_id: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .expect("waiters lock")
            .entry(instance_id.to_owned())
            .or_default()
            .push(tx);
        rx
    }

    fn apply_effects(&self, effects: &CommitEffects) {
        if effects.messages || effects.timers {
            self.orchestrations.notify_one();
        }
        if effects.activities {
            self.activities.notify_one();
        }
        if !effects.finished.is_empty() {
            let mut waiters = self.waiters.lock().expect("waiters lock");
            for id in &effects.finished {
                for tx in waiters.remove(id).unwrap_or_default() {
                    let _ = tx.send(());
                }
            }
        }
        if !effects.reset.is_empty() {
            self.resets
                .lock()
                .expect("resets lock")
                .extend(effects.reset.iter().cloned());
        }
    }
}

/// A running engine: writer, dispatchers and workers over one store.
pub struct Runtime<S: Store> {
    shared: Arc<Shared<S>>,
    writer: Option<tokio::task::JoinHandle<()>>,
    dispatcher: Option<std::thread::JoinHandle<()>>,
    activities: Option<tokio::task::JoinHandle<()>>,
}

impl<S: Store> std::fmt::Debug for Runtime<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl<S: Store + crate::store::StoreAdmin + Clone> Runtime<S> {
    /// Starts the runtime on the current tokio runtime.
    pub fn start(store: S, registry: Registry, options: RuntimeOptions) -> Runtime<S> {
        Self::start_with_clock(store, registry, options, Arc::new(SystemClock))
    }

    /// Starts the runtime with a custom clock.
    pub fn start_with_clock(
        store: S,
        registry: Registry,
        options: RuntimeOptions,
        clock: Arc<dyn Clock>,
    ) -> Runtime<S> {
        let (writer_tx, writer_rx) = mpsc::unbounded_channel();
        let (results_tx, results_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            store,
            registry,
            clock,
            options,
            writer: writer_tx,
            orchestrations: Notify::new(),
            activities: Notify::new(),
            stopping: AtomicBool::new(false),
            waiters: Mutex::new(HashMap::new()),
            resets: Mutex::new(Vec::new()),
            results: results_tx,
            results_rx: Mutex::new(Some(results_rx)),
            stats: Counters::default(),
            health: HealthState::default(),
        });
        // Alive from the start, so a probe right after start-up does not see tasks not yet
        // scheduled as stopped; each task's guard clears its flag when the task ends.
        for flag in [
            &shared.health.dispatcher,
            &shared.health.writer,
            &shared.health.activities,
        ] {
            flag.store(true, Ordering::SeqCst);
        }
        let journals = Journals::open(&shared.options);
        let writer = tokio::spawn(run_writer(shared.clone(), writer_rx));
        let activities = tokio::spawn(run_activities(
            shared.clone(),
            journals.activities,
            journals.activity_suspects,
        ));
        let dispatcher_shared = shared.clone();
        let (turns, quarantine) = (journals.turns, journals.quarantine);
        let dispatcher = std::thread::Builder::new()
            .name("switchyard-orchestrations".into())
            .spawn(move || run_dispatcher(dispatcher_shared, turns, quarantine))
            .expect("spawn the orchestration dispatcher thread");
        Runtime {
            shared,
            writer: Some(writer),
            dispatcher: Some(dispatcher),
            activities: Some(activities),
        }
    }

    /// The management client for this runtime.
    pub fn client(&self) -> crate::client::Client<S> {
        crate::client::Client::new(self.shared.clone())
    }

    /// Whether the runtime can do its work: all tasks alive and writes succeeding.
    pub fn health(&self) -> Health {
        self.shared.health.report()
    }

    /// What the runtime has done so far.
    pub fn stats(&self) -> RuntimeStats {
        let c = &self.shared.stats;
        RuntimeStats {
            commits: c.commits.load(Ordering::Relaxed),
            ops: c.ops.load(Ordering::Relaxed),
            turns: c.turns.load(Ordering::Relaxed),
            activities: c.activities.load(Ordering::Relaxed),
            dispatcher_rounds: c.dispatcher_rounds.load(Ordering::Relaxed),
            commit_micros: c.commit_micros.load(Ordering::Relaxed),
        }
    }

    /// Stops fetching new work, waits (up to the grace period) for work in flight, then drains the
    /// writer. Work not committed by then is picked up again by the next start.
    pub async fn shutdown(mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.orchestrations.notify_one();
        self.shared.activities.notify_one();
        if let Some(activities) = self.activities.take() {
            let _ = activities.await;
        }
        if let Some(dispatcher) = self.dispatcher.take() {
            let _ = tokio::task::spawn_blocking(move || dispatcher.join()).await;
        }
        if let Some(writer) = self.writer.take() {
            // The writer exits once it sees `stopping` with an empty queue.
            let _ = tokio::time::timeout(self.shared.options.shutdown_grace, writer).await;
        }
    }
}

async fn run_writer<S: Store>(
    shared: Arc<Shared<S>>,
    mut rx: mpsc::UnboundedReceiver<WriteRequest>,
) {
    let _alive = Alive::new(&shared.health.writer);
    let max = shared.options.max_batch_ops.max(1);
    let mut backoff = Backoff::default();
    loop {
        let first = tokio::select! {
            request = rx.recv() => match request {
                Some(r) => r,
                None => return,
            },
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                if shared.stopping.load(Ordering::SeqCst) && rx.is_empty() {
                    return;
                }
                // Nothing to commit: learn whether writes work again by probing.
                if shared.health.failing() {
                    match shared.store.probe_write().await {
                        Ok(()) => {
                            backoff.reset();
                            if shared.health.write_succeeded() {
                                tracing::info!("writes to the store succeed again");
                            }
                        }
                        Err(e) => {
                            shared.health.write_failed(&e, shared.clock.now_ms());
                            tokio::time::sleep(backoff.next()).await;
                        }
                    }
                }
                continue;
            }
        };
        let mut ops = vec![first.op];
        let mut replies = vec![first.reply];
        while ops.len() < max {
            match rx.try_recv() {
                Ok(r) => {
                    ops.push(r.op);
                    replies.push(r.reply);
                }
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let committed = shared.store.commit(&ops).await;
        shared
            .stats
            .commit_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        match committed {
            Ok((outcomes, effects)) => {
                backoff.reset();
                if shared.health.write_succeeded() {
                    tracing::info!("writes to the store succeed again");
                }
                shared.stats.commits.fetch_add(1, Ordering::Relaxed);
                shared
                    .stats
                    .ops
                    .fetch_add(ops.len() as u64, Ordering::Relaxed);
                shared.apply_effects(&effects);
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                if shared.health.write_failed(&e, shared.clock.now_ms()) {
                    tracing::error!(error = %e, ops = ops.len(), "group commit failed; retrying with backoff until writes succeed");
                } else {
                    tracing::debug!(error = %e, ops = ops.len(), "group commit failed again");
                }
                let e = Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
                // Let the store recover (space freed, a lock released) before the next batch;
                // senders wait meanwhile instead of spinning.
                tokio::time::sleep(backoff.next()).await;
            }
        }
    }
}

/// Exponential backoff between failed writes: 50 ms doubling up to 5 s.
#[derive(Debug, Default)]
struct Backoff(Duration);

impl Backoff {
    fn next(&mut self) -> Duration {
        self.0 = (self.0 * 2).clamp(Duration::from_millis(50), Duration::from_secs(5));
        self.0
    }

    fn reset(&mut self) {
        self.0 = Duration::ZERO;
    }
}

/// Hands an activity's outcome to the dispatcher; the turn that consumes it deletes the row.
fn deliver_result<S: Store>(
    shared: &Shared<S>,
    (id, instance_id, scheduled_id): (i64, String, u32),
    result: Result<String, Failure>,
) {
    let message = match result {
        Ok(result) => Message::TaskCompleted {
            scheduled_id,
            result,
        },
        Err(failure) => Message::TaskFailed {
            scheduled_id,
            failure,
        },
    };
    let result = QueuedMessage {
        at: MessageRef::Activity(id),
        instance_id,
        message,
    };
    if shared.results.send(result).is_ok() {
        shared.orchestrations.notify_one();
    }
}

/// The crash journals a start found (see [`crate::journal`]) and what they say.
#[derive(Default)]
struct Journals {
    turns: Option<TurnJournal>,
    /// Instances to fail without running their code.
    quarantine: HashMap<String, Failure>,
    activities: Option<Arc<ActivityJournal>>,
    /// Activities running when the previous process died, with the starts in a row that found
    /// each running.
    activity_suspects: HashMap<i64, u32>,
}

impl Journals {
    /// Opens the turn journal and, beside it, the activity journal. A crash during a turn is
    /// blamed on that turn: the turn journal names a turn only while its code runs, a short
    /// window, whereas activities beside it may have been merely waiting. Only a crash outside
    /// every turn counts against the activities that were running.
    fn open(options: &RuntimeOptions) -> Journals {
        let Some(path) = options.turn_journal.as_deref() else {
            return Journals::default();
        };
        let mut journals = Journals::default();
        let limit = options.quarantine_after.max(1);
        let mut turn_blamed = false;
        match TurnJournal::open(path) {
            Ok((journal, suspect)) => {
                if let Some(suspect) = suspect {
                    turn_blamed = true;
                    if suspect.crashes >= limit {
                        tracing::error!(
                            instance = %suspect.instance_id,
                            crashes = suspect.crashes,
                            "quarantining an instance whose turn crashed the process"
                        );
                        let failure = Failure::new(
                            "Quarantined",
                            format!(
                                "the process stopped {} times in a row while running this \
                                 instance's turn, so it was failed without running its code \
                                 again; see the server log of those runs",
                                suspect.crashes
                            ),
                        );
                        journals.quarantine.insert(suspect.instance_id, failure);
                    } else {
                        tracing::warn!(
                            instance = %suspect.instance_id,
                            crashes = suspect.crashes,
                            limit,
                            "the previous process stopped during this instance's turn"
                        );
                    }
                }
                journals.turns = Some(journal);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open the turn journal; crash loops will not be recognised");
            }
        }
        let path = crate::journal::with_suffix(path, ".activities");
        let slots = options.activity_concurrency.max(1);
        match ActivityJournal::open(&path, slots, !turn_blamed) {
            Ok((journal, suspects)) => {
                if !suspects.is_empty() {
                    tracing::warn!(activities = ?suspects, "activities were running when the previous process stopped; they run again one at a time");
                }
                journals.activities = Some(journal);
                journals.activity_suspects = suspects;
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open the activity journal; crash loops will not be recognised");
            }
        }
        journals
    }
}

async fn run_activities<S: Store>(
    shared: Arc<Shared<S>>,
    journal: Option<Arc<ActivityJournal>>,
    suspects: HashMap<i64, u32>,
) {
    let _alive = Alive::new(&shared.health.activities);
    let permits = shared.options.activity_concurrency.max(1);
    let semaphore = Arc::new(Semaphore::new(permits));
    let limit = shared.options.quarantine_after.max(1);
    let mut cursor = 0;
    while !shared.stopping.load(Ordering::SeqCst) {
        let notified = shared.activities.notified();
        let items = match shared.store.fetch_activities(cursor, 512).await {
            Ok(items) => items,
            Err(e) => {
                tracing::warn!(error = %e, "fetching activities failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if items.is_empty() {
            notified.await;
            continue;
        }
        for item in items {
            cursor = item.id;
            let crashes = suspects.get(&item.id).copied().unwrap_or(0);
            if crashes >= limit {
                tracing::error!(activity = %item.name, instance = %item.instance_id, crashes, "quarantining an activity that crashed the process");
                let failure = Failure::new(
                    "Quarantined",
                    format!(
                        "the process stopped {crashes} times in a row while activity {} ran, so \
                         it was not run again; see the server log of those runs",
                        item.name
                    ),
                );
                deliver_result(
                    &shared,
                    (item.id, item.instance_id, item.scheduled_id),
                    Err(failure),
                );
                continue;
            }
            // A suspect from the last crash runs alone, so a second crash names it alone.
            let permit = if crashes > 0 {
                semaphore.clone().acquire_many_owned(permits as u32).await
            } else {
                semaphore.clone().acquire_owned().await
            };
            let Ok(permit) = permit else {
                return;
            };
            let slot = journal.as_ref().and_then(|j| j.begin(item.id));
            let ctx = ActivityContext {
                instance_id: item.instance_id.clone(),
                scheduled_id: item.scheduled_id,
            };
            let shared = shared.clone();
            shared.stats.activities.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let ActivityItem {
                    id,
                    instance_id,
                    scheduled_id,
                    name,
                    input,
                } = item;
                let run = shared.registry.run_activity(&name, ctx, input);
                let result = AssertUnwindSafe(run)
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|payload| {
                        Err(Failure::new(
                            "Panicked",
                            format!("activity {name} panicked: {}", panic_message(&*payload)),
                        ))
                    });
                drop(slot);
                // The limit bounds activities running, not results waiting for their commit:
                // releasing here lets many results share one group commit.
                drop(permit);
                deliver_result(&shared, (id, instance_id, scheduled_id), result);
            });
        }
    }
    // Wait for activities in flight to record their results.
    let grace = shared.options.shutdown_grace;
    let _ = tokio::time::timeout(grace, semaphore.acquire_many(permits as u32)).await;
    if let Some(journal) = &journal {
        journal.clear_all();
    }
}

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
    previous_status: RuntimeStatus,
    history_start: u32,
    result: crate::replay::TurnResult,
    consumed: Vec<MessageRef>,
    now_ms: TimestampMs,
) -> TurnCommit {
    TurnCommit {
        instance_id: id.to_owned(),
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

/// A finished turn, reported back to the dispatcher loop.
struct TurnDone {
    instance_id: String,
    executor: Option<Executor>,
    consumed: Vec<QueuedMessage>,
    committed: bool,
}

fn run_dispatcher<S: Store + Clone>(
    shared: Arc<Shared<S>>,
    journal: Option<TurnJournal>,
    quarantine: HashMap<String, Failure>,
) {
    let _alive = Alive::new(&shared.health.dispatcher);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the orchestration dispatcher");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, Dispatcher::new(shared, journal, quarantine).run());
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
    timers_seen: HashSet<i64>,
    cache: ExecutorCache,
    done_tx: mpsc::UnboundedSender<TurnDone>,
    done_rx: mpsc::UnboundedReceiver<TurnDone>,
    results: Option<mpsc::UnboundedReceiver<QueuedMessage>>,
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
        let cache = ExecutorCache::new(shared.options.cache_capacity);
        Dispatcher {
            shared,
            cursor: 0,
            pending: HashMap::new(),
            ready: VecDeque::new(),
            ready_set: HashSet::new(),
            parked: HashMap::new(),
            in_flight: HashSet::new(),
            timers_seen: HashSet::new(),
            cache,
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
        let messages = self.shared.store.fetch_messages(self.cursor, limit).await?;
        let mut more = messages.len() as u32 == limit;
        for m in messages {
            if let MessageRef::Queue(id) = m.at {
                self.cursor = self.cursor.max(id);
            }
            self.enqueue(m);
        }
        if let Some(results) = self.results.as_mut() {
            let mut ready = Vec::new();
            while let Ok(result) = results.try_recv() {
                ready.push(result);
            }
            for result in ready {
                self.enqueue(result);
            }
        }
        let now = self.shared.clock.now_ms();
        let timers = self.shared.store.fetch_due_timers(now, limit).await?;
        let fresh: Vec<_> = timers
            .into_iter()
            .filter(|t| matches!(t.at, MessageRef::Timer(id) if !self.timers_seen.contains(&id)))
            .collect();
        more |= fresh.len() as u32 == limit;
        for t in fresh {
            if let MessageRef::Timer(id) = t.at {
                self.timers_seen.insert(id);
            }
            self.enqueue(t);
        }
        Ok(more)
    }

    fn apply_resets(&mut self) {
        let resets = std::mem::take(&mut *self.shared.resets.lock().expect("resets lock"));
        for id in resets {
            self.cache.remove(&id);
        }
    }

    async fn run_ready(&mut self) {
        while let Some(id) = self.ready.pop_front() {
            self.ready_set.remove(&id);
            if let Some(messages) = self.pending.remove(&id) {
                self.start_turn(id, messages).await;
            }
        }
    }

    async fn start_turn(&mut self, id: String, messages: Vec<QueuedMessage>) {
        if let Some(failure) = self.quarantine.get(&id).cloned() {
            self.start_failing_turn(id, messages, failure).await;
            return;
        }
        let starts_fresh = messages
            .iter()
            .any(|m| matches!(m.message, Message::Start { .. }));
        let loaded = match self.cache.remove(&id) {
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
                    self.requeue(&id, messages);
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
                self.requeue(&id, messages);
                return;
            }
        };
        self.in_flight.insert(id.clone());
        let (op, executor, consumed) = match ran {
            None => {
                // The instance is gone (purged): drop its messages.
                let refs = messages.iter().map(|m| m.at).collect();
                (WriteOp::Discard(refs), None, messages)
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
                let op = if result.new_events.is_empty() && result.actions.is_empty() {
                    WriteOp::Discard(refs)
                } else {
                    WriteOp::Turn(turn_commit(
                        &id,
                        previous_status,
                        history_start,
                        result,
                        refs,
                        now,
                    ))
                };
                (op, Some(executor), consumed)
            }
        };
        self.spawn_commit(id, op, executor, consumed);
    }

    /// Fails a quarantined instance without running its code: appends `ExecutionFailed` to its
    /// stored history and consumes everything queued for it.
    async fn start_failing_turn(
        &mut self,
        id: String,
        messages: Vec<QueuedMessage>,
        failure: Failure,
    ) {
        let loaded = match self.shared.store.load(&id).await {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::warn!(instance = %id, error = %e, "loading an instance failed; will retry");
                self.requeue(&id, messages);
                return;
            }
        };
        self.in_flight.insert(id.clone());
        let refs: Vec<MessageRef> = messages.iter().map(|m| m.at).collect();
        let op = match loaded {
            Some(loaded) if !loaded.status.is_terminal() => {
                let start = messages
                    .iter()
                    .map(|m| &m.message)
                    .find(|m| matches!(m, Message::Start { .. }));
                let now = self.shared.clock.now_ms();
                let result = failing_turn(&loaded.history, start, failure, now);
                WriteOp::Turn(turn_commit(
                    &id,
                    loaded.status,
                    loaded.history.len() as u32,
                    result,
                    refs,
                    now,
                ))
            }
            // Already ended (or gone): nothing to fail, the messages are dropped.
            _ => WriteOp::Discard(refs),
        };
        self.spawn_commit(id, op, None, messages);
    }

    /// Hands a turn's op to the writer; the outcome comes back as a [`TurnDone`].
    fn spawn_commit(
        &mut self,
        id: String,
        op: WriteOp,
        executor: Option<Executor>,
        consumed: Vec<QueuedMessage>,
    ) {
        let shared = self.shared.clone();
        let done = self.done_tx.clone();
        tokio::task::spawn_local(async move {
            let committed = match shared.write(op).await {
                Ok(_) => true,
                Err(e) => {
                    // The writer logs the failure itself, once per streak.
                    tracing::debug!(instance = %id, error = %e, "committing a turn failed");
                    false
                }
            };
            let _ = done.send(TurnDone {
                instance_id: id,
                executor,
                consumed,
                committed,
            });
        });
    }

    fn requeue(&mut self, id: &str, messages: Vec<QueuedMessage>) {
        for m in messages {
            self.enqueue(m);
        }
        let _ = id;
    }

    fn finish_turn(&mut self, done: TurnDone) {
        self.in_flight.remove(&done.instance_id);
        self.apply_resets();
        if done.committed {
            self.quarantine.remove(&done.instance_id);
            for m in &done.consumed {
                if let MessageRef::Timer(t) = m.at {
                    self.timers_seen.remove(&t);
                }
            }
            if let Some(executor) = done.executor
                && !executor.status().is_terminal()
                && executor.status() != RuntimeStatus::ContinuedAsNew
            {
                self.cache.insert(done.instance_id.clone(), executor);
            }
        } else {
            // Nothing was written: the messages are still stored; try them again.
            self.cache.remove(&done.instance_id);
            let id = done.instance_id.clone();
            self.requeue(&id, done.consumed);
        }
        if self.pending.contains_key(&done.instance_id) {
            self.mark_ready(done.instance_id);
        }
    }

    async fn run(mut self) {
        loop {
            let stopping = self.shared.stopping.load(Ordering::SeqCst);
            if stopping {
                // Let turns in flight commit, then stop.
                let deadline = tokio::time::Instant::now() + self.shared.options.shutdown_grace;
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
            while let Ok(done) = self.done_rx.try_recv() {
                self.finish_turn(done);
            }
            if more || !self.ready.is_empty() {
                tokio::task::yield_now().await;
                continue;
            }
            let now = self.shared.clock.now_ms();
            let next_timer = self.shared.store.next_timer_at(now).await.ok().flatten();
            let sleep = match next_timer {
                Some(at) => {
                    let wait = (at - self.shared.clock.now_ms()).clamp(0, 60_000);
                    Duration::from_millis(wait as u64 + 1)
                }
                None => Duration::from_secs(60),
            };
            tokio::select! {
                () = &mut notified => {}
                Some(done) = self.done_rx.recv() => self.finish_turn(done),
                () = tokio::time::sleep(sleep) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_that_dies_makes_the_runtime_not_ready() {
        let health = HealthState::default();
        for flag in [&health.dispatcher, &health.writer, &health.activities] {
            flag.store(true, Ordering::SeqCst);
        }
        assert!(health.report().ready);
        let flag = health.dispatcher.clone();
        let died = std::thread::spawn(move || {
            let _alive = Alive::new(&flag);
            panic!("a bug outside every catch_unwind");
        })
        .join();
        assert!(died.is_err());
        let report = health.report();
        assert!(!report.ready);
        assert_eq!(
            report.problems,
            ["the orchestration dispatcher has stopped"]
        );
        // A failed write makes it not ready too, until a write succeeds.
        health.dispatcher.store(true, Ordering::SeqCst);
        let full = StoreError::Corrupt("database or disk is full".into());
        assert!(health.write_failed(&full, 5));
        assert!(!health.write_failed(&full, 6), "one streak");
        assert!(health.report().problems[0].contains("disk is full"));
        assert!(health.write_succeeded());
        assert!(health.report().ready);
    }
}
