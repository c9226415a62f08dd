//! The runtime: one writer that group-commits, an orchestration dispatcher, activity workers.
//!
//! - **Writer** (its own thread, where a store such as SQLite does its I/O): receives [`WriteOp`]s from everyone, takes all that are queued
//!   (up to `max_batch_ops`) and commits them in one transaction. While one commit waits for its
//!   fsync, the next batch gathers, so throughput rises with load at one fsync per batch.
//! - **Orchestration dispatcher** (its own thread; orchestration futures are not `Send`): fetches
//!   messages after a cursor and due timers, each leased to this runtime, groups them by
//!   instance, runs one turn per instance with [`Executor`](crate::executor::Executor) (kept in a cache between turns while
//!   the lease's tenure lasts, so a turn does not replay its whole history), and hands each
//!   result to the writer under the lease's fence. An instance has at most one turn in flight;
//!   messages that arrive meanwhile wait for the next turn.
//! - **Activity workers**: run activities with bounded concurrency: the ones this runtime's
//!   commits scheduled arrive from the commit, leased; others are fetched after a cursor. Each
//!   result goes to the dispatcher in memory, and the turn that consumes it deletes the activity
//!   row in the same commit (one commit per step instead of two). A crash before that commit
//!   leaves the row, so the activity runs again: at least once.
//!
//! Everyone is woken in-process when a commit adds work for them (another runtime's commits on
//! the same store too, through [`Store::watch_work`]); timers are waited for on the [`Clock`]
//! until the earliest is due. There is no poll interval.
//!
//! **Isolation.** A panic in orchestration code fails that instance (`Panicked`), one in an
//! activity fails that call; a panic in the engine while it runs a turn quarantines the instance
//! (failed without running its code again); a turn or an activity that kills the whole process is
//! named by the [journals](journal) and quarantined at the start after it has done so
//! `quarantine_after` times (activities that were running at a crash first run again one at a
//! time, so the next crash names one). Once an execution has
//! ended, messages to it are dropped without replaying its code. A failed commit (a full disk)
//! is retried with backoff; while writes fail, and if any of the runtime's tasks has died,
//! [`Runtime::health`] says so. Shutdown stops fetching, lets turns and
//! activities in flight finish (up to a grace period), then drains the writer. Anything not
//! committed is fetched again on the next start.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use tokio::sync::{Notify, mpsc, oneshot};

use crate::{
    registry::Registry,
    store::{
        ActivityItem, CommitEffects, Holder, NewInstance, OpError, Store, StoreError, WriteOp,
    },
};

use activities::{ActivityResult, run_activities};
use dispatcher::run_dispatcher;
use health::{Counters, HealthState};
use journal::Journals;
use writer::run_writer;

mod activities;
mod clock;
mod dispatcher;
mod eager;
mod health;
pub mod journal;
mod publish;
pub mod resilience;
mod writer;

pub use clock::{Clock, ManualClock, SystemClock, Wake};
pub use health::{Health, HistogramSnapshot, RuntimeStats};

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
    /// How long a fetch leases its work (an instance, an activity) to this runtime. Another
    /// runtime on the same store takes the work over only after the lease has run out without
    /// being renewed; running activities are renewed every third of it. Default 30 s.
    pub lease: Duration,
    /// How long a turn's commit may wait for the [eager activities](eager) it started, so that
    /// their results share its commit. `None` runs every activity only after its schedule is
    /// committed. Default 20 ms.
    pub eager_window: Option<Duration>,
    /// Refuse starts (with a retry-after; the HTTP API answers 429) while this many instances
    /// are live: pending, running or suspended. Load levelling's bounded intake. Default `None`:
    /// unbounded.
    pub max_live_instances: Option<u64>,
    /// This process's name on the store's published state. Default: host name and process id.
    pub process_name: Option<String>,
    /// How often the runtime publishes its limiters', breakers' and intake's state to the store
    /// (and refreshes its live-instance count). Default 1 s.
    pub publish_interval: Duration,
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
            lease: Duration::from_secs(30),
            eager_window: Some(Duration::from_millis(20)),
            max_live_instances: None,
            process_name: None,
            publish_interval: Duration::from_secs(1),
        }
    }
}

/// The outcome of one write op, as its sender sees it.
pub(crate) type WriteOutcome = Result<Result<(), OpError>, Arc<StoreError>>;

/// The outcomes of a request's ops, in order.
pub(crate) type BatchOutcome = Result<Vec<Result<(), OpError>>, Arc<StoreError>>;

/// Ops to commit together, in one transaction.
struct WriteRequest {
    ops: Vec<WriteOp>,
    reply: oneshot::Sender<BatchOutcome>,
}

/// State shared by the runtime's parts and the client.
pub(crate) struct Shared<S> {
    pub store: S,
    pub registry: Registry,
    pub clock: Arc<dyn Clock>,
    pub options: RuntimeOptions,
    writer: mpsc::UnboundedSender<WriteRequest>,
    /// Requests sent to the writer and not yet taken into a batch.
    writer_queued: std::sync::atomic::AtomicUsize,
    /// Set while the writer commits a batch.
    writer_busy: AtomicBool,
    orchestrations: Notify,
    activities: Notify,
    stopping: AtomicBool,
    /// Set when a commit queued messages in the store, cleared by the dispatcher's fetch: a
    /// wake-up for an activity result handed over in memory needs no query.
    messages_waiting: AtomicBool,
    /// No stored timer fires before this (`i64::MIN`: unknown, ask the store). Lowered by every
    /// commit that adds a timer; the dispatcher queries timers only once it has come.
    timer_hint: AtomicI64,
    /// Completion waiters by instance id.
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
    /// Instances whose history was replaced since the dispatcher last looked.
    resets: Mutex<Vec<String>>,
    /// Set when a commit scheduled activities that were not handed over, cleared by the
    /// workers' fetch.
    activities_waiting: AtomicBool,
    /// Activities this runtime's commits scheduled, leased to it, on their way to its workers.
    handed: mpsc::UnboundedSender<Vec<ActivityItem>>,
    handed_rx: Mutex<Option<mpsc::UnboundedReceiver<Vec<ActivityItem>>>>,
    /// Eager activities started and not yet delivered (see [`eager`]).
    eager: Mutex<eager::Eager>,
    eager_tx: mpsc::UnboundedSender<eager::EagerItem>,
    eager_rx: Mutex<Option<mpsc::UnboundedReceiver<eager::EagerItem>>>,
    /// [`RuntimeOptions::eager_window`], or `None` when this runtime runs no eager activities:
    /// the store serves several processes, or the journals found crash suspects at the start.
    eager_window: Option<Duration>,
    /// Starts the dispatcher runs at once (see [`Shared::start`]).
    starts: mpsc::UnboundedSender<dispatcher::StartHere>,
    starts_rx: Mutex<Option<mpsc::UnboundedReceiver<dispatcher::StartHere>>>,
    /// Activity results on their way to the dispatcher (see `MessageRef::Activity`).
    results: mpsc::UnboundedSender<ActivityResult>,
    results_rx: Mutex<Option<mpsc::UnboundedReceiver<ActivityResult>>>,
    /// This runtime's name on the store's leases.
    pub(crate) holder: Holder,
    pub(crate) stats: Counters,
    pub(crate) health: HealthState,
    /// The live limiters, breakers, concurrency limits and intake.
    pub(crate) resilience: resilience::Resilience,
}

impl<S: Store> Shared<S> {
    /// The runtime's counters and latencies now.
    pub(crate) fn stats_snapshot(&self) -> RuntimeStats {
        let c = &self.stats;
        RuntimeStats {
            commits: c.commits.load(Ordering::Relaxed),
            ops: c.ops.load(Ordering::Relaxed),
            turns: c.turns.load(Ordering::Relaxed),
            activities: c.activities.load(Ordering::Relaxed),
            dispatcher_rounds: c.dispatcher_rounds.load(Ordering::Relaxed),
            commit_micros: c.commit_micros.load(Ordering::Relaxed),
            entity_batches: c.entity_batches.load(Ordering::Relaxed),
            entity_operations: c.entity_operations.load(Ordering::Relaxed),
            activities_failed: c.activities_failed.load(Ordering::Relaxed),
            writes_queued: self.writer_queued.load(Ordering::Relaxed) as u64,
            commit_latency: c.commit_latency.snapshot(),
            activity_latency: c.activity_latency.snapshot(),
        }
    }

    /// The lease duration in milliseconds.
    pub(crate) fn lease_ms(&self) -> i64 {
        i64::try_from(self.options.lease.as_millis())
            .unwrap_or(i64::MAX)
            .max(1)
    }

    /// Sends one op to the writer and waits for its commit.
    pub(crate) async fn write(&self, op: WriteOp) -> WriteOutcome {
        self.write_all(vec![op])
            .await
            .map(|mut outcomes| outcomes.pop().expect("one outcome per op"))
    }

    /// Starts an instance. With eager activities on, a start due now goes to the dispatcher,
    /// which runs its first turn at once and commits the start with it (and with the turns
    /// after it, while its eager activities come back within the window): one commit for a
    /// quick orchestration. The start is then reported once that commit lands, up to
    /// [`RuntimeOptions::eager_window`] later. Otherwise the start is committed on its own.
    pub(crate) async fn start(&self, new: NewInstance) -> WriteOutcome {
        let now = self.clock.now_ms();
        let due = new.scheduled_start_at.is_none_or(|at| at <= now);
        if self.eager_window.is_none() || !due || new.parent.is_some() {
            return self.write(WriteOp::Start(new)).await;
        }
        let (reply, rx) = oneshot::channel();
        if self
            .starts
            .send(dispatcher::StartHere { new, reply })
            .is_err()
        {
            return Err(Arc::new(StoreError::Corrupt(
                "the runtime has shut down".into(),
            )));
        }
        self.orchestrations.notify_one();
        rx.await.unwrap_or_else(|_| {
            Err(Arc::new(StoreError::Corrupt(
                "the dispatcher stopped".into(),
            )))
        })
    }

    /// Sends ops to the writer, to be committed in one transaction, and waits for the commit.
    pub(crate) async fn write_all(&self, ops: Vec<WriteOp>) -> BatchOutcome {
        let (reply, rx) = oneshot::channel();
        self.writer_queued.fetch_add(1, Ordering::SeqCst);
        if self.writer.send(WriteRequest { ops, reply }).is_err() {
            self.writer_queued.fetch_sub(1, Ordering::SeqCst);
            return Err(Arc::new(StoreError::Corrupt(
                "the runtime has shut down".into(),
            )));
        }
        rx.await
            .unwrap_or_else(|_| Err(Arc::new(StoreError::Corrupt("the writer stopped".into()))))
    }

    /// Whether a batch committed by its sender right away would not wait behind the writer: the
    /// writer has nothing queued or in hand, and writes succeed (while they fail, the writer's
    /// backoff paces the retries).
    pub(crate) fn writer_idle(&self) -> bool {
        self.writer_queued.load(Ordering::SeqCst) == 0
            && !self.writer_busy.load(Ordering::SeqCst)
            && !self.health.failing()
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

    /// Wakes the dispatcher and the workers for the work a commit added.
    fn wake(&self, effects: &CommitEffects) {
        if effects.messages {
            self.messages_waiting.store(true, Ordering::SeqCst);
        }
        if let Some(at) = effects.earliest_timer {
            self.timer_hint.fetch_min(at, Ordering::SeqCst);
        }
        if effects.messages || effects.timers {
            self.orchestrations.notify_one();
        }
        if effects.activities {
            self.activities_waiting.store(true, Ordering::SeqCst);
            self.activities.notify_one();
        }
    }

    /// Gives the workers the activities this runtime's own commit scheduled (leased to it),
    /// except those already running eagerly, which take their rows.
    fn hand_over(&self, mut items: Vec<ActivityItem>) {
        if items.is_empty() {
            return;
        }
        let done = self.eager.lock().expect("eager lock").attach(&mut items);
        for (item, result) in done {
            // Finished while its row was being committed: delivered under the row's lease.
            self.send_result(activities::ActivityResult {
                at: crate::store::MessageRef::Activity(item.id),
                fence: item.lease.fence,
                instance_id: item.instance_id,
                message: activities::result_message(item.scheduled_id, result),
            });
        }
        if !items.is_empty() && self.handed.send(items).is_ok() {
            self.activities.notify_one();
        }
    }

    /// Hands an activity's result to the dispatcher in memory.
    pub(crate) fn send_result(&self, result: ActivityResult) {
        if self.results.send(result).is_ok() {
            self.orchestrations.notify_one();
        }
    }

    fn apply_effects(&self, effects: &CommitEffects) {
        self.wake(effects);
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
    writer: Option<std::thread::JoinHandle<()>>,
    dispatcher: Option<std::thread::JoinHandle<()>>,
    activities: Option<tokio::task::JoinHandle<()>>,
    publisher: Option<tokio::task::JoinHandle<()>>,
}

impl<S: Store> std::fmt::Debug for Runtime<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl<S: Store + crate::store::StoreAdmin + crate::store::ResilienceStore + Clone> Runtime<S> {
    /// Starts the runtime on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// If the registry's resilience configuration is invalid ([`Registry::check_resilience`]):
    /// an activity names a limiter or breaker that is not registered, or a limiter's figures
    /// are unusable. That is a programming error, found at the first start.
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
        let (handed_tx, handed_rx) = mpsc::unbounded_channel();
        let (eager_tx, eager_rx) = mpsc::unbounded_channel();
        let (starts_tx, starts_rx) = mpsc::unbounded_channel();
        let journals = Journals::open(&options);
        let suspects = !journals.quarantine.is_empty()
            || !journals.activity_suspects.is_empty()
            || journals.turn_suspect;
        if suspects && options.eager_window.is_some() {
            tracing::warn!(
                "the previous process crashed: activities run only after their schedule is committed until the next start, so the journals can name a crash loop"
            );
        }
        let eager_window = options
            .eager_window
            .filter(|_| store.in_memory_handover() && !suspects);
        let resilience = resilience::Resilience::new(
            &registry,
            clock.clone(),
            Some(Arc::new(store.clone())),
            options
                .process_name
                .clone()
                .unwrap_or_else(resilience::default_process_name),
            options.max_live_instances,
        )
        .unwrap_or_else(|e| panic!("invalid resilience configuration: {e}"));
        let shared = Arc::new_cyclic(|weak| Shared {
            store,
            registry: {
                let mut registry = registry;
                crate::system::register(&mut registry, weak.clone());
                registry
            },
            clock,
            options,
            writer: writer_tx,
            writer_queued: std::sync::atomic::AtomicUsize::new(0),
            writer_busy: AtomicBool::new(false),
            orchestrations: Notify::new(),
            activities: Notify::new(),
            stopping: AtomicBool::new(false),
            messages_waiting: AtomicBool::new(true),
            activities_waiting: AtomicBool::new(true),
            handed: handed_tx,
            handed_rx: Mutex::new(Some(handed_rx)),
            timer_hint: AtomicI64::new(i64::MIN),
            waiters: Mutex::new(HashMap::new()),
            resets: Mutex::new(Vec::new()),
            starts: starts_tx,
            starts_rx: Mutex::new(Some(starts_rx)),
            eager: Mutex::new(eager::Eager::default()),
            eager_tx,
            eager_rx: Mutex::new(Some(eager_rx)),
            eager_window,
            results: results_tx,
            results_rx: Mutex::new(Some(results_rx)),
            holder: Holder::unique(),
            stats: Counters::default(),
            health: HealthState::default(),
            resilience,
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
        // Another runtime on the same store wakes this one through the store.
        let weak = Arc::downgrade(&shared);
        shared.store.watch_work(
            &shared.holder,
            Arc::new(move |effects: &CommitEffects| match weak.upgrade() {
                Some(shared) => {
                    // As for its own commits: wake for new work, tell waiters what finished.
                    shared.apply_effects(effects);
                    true
                }
                None => false,
            }),
        );
        let writer_shared = shared.clone();
        let handle = tokio::runtime::Handle::current();
        let writer = std::thread::Builder::new()
            .name("switchyard-writer".into())
            .spawn(move || run_writer(writer_shared, handle, writer_rx))
            .expect("spawn the writer thread");
        let activities = tokio::spawn(run_activities(
            shared.clone(),
            journals.activities,
            journals.activity_suspects,
        ));
        let publisher = tokio::spawn(publish::run_publisher(Arc::downgrade(&shared)));
        let dispatcher_shared = shared.clone();
        let (turns, quarantine) = (journals.turns, journals.quarantine);
        let handle = tokio::runtime::Handle::current();
        let dispatcher = std::thread::Builder::new()
            .name("switchyard-orchestrations".into())
            .spawn(move || run_dispatcher(dispatcher_shared, handle, turns, quarantine))
            .expect("spawn the orchestration dispatcher thread");
        Runtime {
            shared,
            writer: Some(writer),
            dispatcher: Some(dispatcher),
            activities: Some(activities),
            publisher: Some(publisher),
        }
    }
}

impl<S: Store> Runtime<S> {
    /// The state the management client shares with the runtime.
    pub(crate) fn shared(&self) -> &Arc<Shared<S>> {
        &self.shared
    }

    /// Whether the runtime can do its work: all tasks alive and writes succeeding.
    pub fn health(&self) -> Health {
        self.shared.health.report()
    }

    /// What the runtime has done so far.
    pub fn stats(&self) -> RuntimeStats {
        self.shared.stats_snapshot()
    }

    /// Stops fetching new work, waits (up to the grace period) for work in flight, then drains the
    /// writer. Work not committed by then is picked up again by the next start.
    pub async fn shutdown(mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some(publisher) = self.publisher.take() {
            publisher.abort();
        }
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
            let joined = tokio::task::spawn_blocking(move || writer.join());
            let _ = tokio::time::timeout(self.shared.options.shutdown_grace, joined).await;
        }
    }
}
