//! Storage behind engine-owned traits.
//!
//! [`Store`] is the hot path the runtime uses: fetch work in index order (messages after a
//! cursor, due timers, activities after a cursor), load a history, and commit a batch of
//! [`WriteOp`]s in one transaction (group commit). [`StoreAdmin`] is what the management client
//! needs: instance lookups, filtered queries, counts per status, purge.
//!
//! Every op in a batch either takes effect entirely or not at all, and a batch is atomic as a
//! whole. An op that is refused for a business reason (a running instance id reused, an instance
//! in the wrong state, a lease lost) gets its own [`OpError`] while the rest of the batch commits.
//! What each op does is decided by the shared commit rules in [`plan`]; a store executes them.
//!
//! **Leases.** Several runtimes may share a store and compete for work. Fetching work leases it
//! to the fetching [`Holder`]: a message or timer leases its instance, an activity itself. A
//! lease carries a fencing value that changes whenever the work changes hands, and an expiry; a
//! fetch skips work leased to another holder until that lease has expired, and a commit of a
//! turn whose lease is not current (expired, or taken over) is refused with
//! [`OpError::LeaseLost`], never half-applied. A crashed holder's work is fetchable again once
//! its leases run out. The rules live in [`plan`] ([`plan::acquire`], [`plan::holds`]).

pub mod conformance;
pub mod plan;
pub mod postgres;
pub mod sqlite;

use std::{collections::BTreeMap, future::Future};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::{
    executor::Action,
    history::{Failure, HistoryEvent, Json, Message, RuntimeStatus, TimestampMs},
    resilience::{
        Nanos,
        gcra::{Decision, Gcra},
    },
};

/// Where a fetched message lives, so the commit that consumes it can delete it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageRef {
    Queue(i64),
    Timer(i64),
    /// An activity's result, handed to the dispatcher in memory: the turn that consumes it
    /// deletes the activity row, so the result and the next turn share one commit. Until then
    /// the row stays, and a crash makes the activity run again.
    Activity(i64),
    /// An eager activity's result (see the runtime's `eager` module): it was never stored, so
    /// consuming it deletes nothing. The token is the runtime's own.
    Eager(i64),
    /// The start of an instance the runtime runs at once ([`WriteOp::StartRun`]): never
    /// stored either.
    Local,
}

impl MessageRef {
    /// Whether a commit that consumes this message deletes a stored row.
    pub fn is_stored(&self) -> bool {
        !matches!(self, MessageRef::Eager(_) | MessageRef::Local)
    }
}

/// One runtime's identity on a store: the owner of the leases it takes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Holder(pub String);

impl Holder {
    /// A holder name unique to this process and call: `<pid>-<start time>-<counter>`.
    pub fn unique() -> Holder {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Holder(format!("{}-{started}-{n}", std::process::id()))
    }
}

/// A lease as its holder sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Changes whenever the leased work changes hands; a commit names the one it fetched with.
    pub fence: u64,
    pub expires_at: TimestampMs,
}

/// A lease as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub holder: Holder,
    pub fence: u64,
    pub expires_at: TimestampMs,
}

impl LeaseRecord {
    /// The lease as its holder sees it.
    pub fn lease(&self) -> Lease {
        Lease {
            fence: self.fence,
            expires_at: self.expires_at,
        }
    }
}

/// A message waiting for an orchestration turn.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    pub at: MessageRef,
    pub instance_id: String,
    pub message: Message,
    /// The fetcher's lease on the instance.
    pub lease: Lease,
}

/// An activity waiting to run.
#[derive(Debug, Clone)]
pub struct ActivityItem {
    pub id: i64,
    pub instance_id: String,
    pub scheduled_id: u32,
    pub name: String,
    pub input: Json,
    /// The fetcher's lease on the activity.
    pub lease: Lease,
}

/// What one fetch after a cursor returned.
#[derive(Debug, Clone)]
pub struct Fetched<T> {
    pub items: Vec<T>,
    /// The highest id the fetch looked at, returned or skipped (leased to another holder): the
    /// next fetch continues after it. `after` itself when nothing was looked at.
    pub scanned_to: i64,
    /// Whether the fetch stopped at its limit, so more may follow.
    pub full: bool,
}

/// What the runtime needs to resume an instance.
#[derive(Debug, Clone)]
pub struct LoadedInstance {
    pub status: RuntimeStatus,
    pub history: Vec<HistoryEvent>,
}

/// An entity as stored: its last committed state and its backlog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityRecord {
    /// `@name@key`.
    pub entity_id: String,
    pub name: String,
    pub key: String,
    /// `None`: it has no state (a transient entity: locked, or with messages waiting), or the
    /// query asked for rows without state.
    pub state: Option<Json>,
    /// When a batch last changed it.
    pub last_modified: TimestampMs,
    /// Messages queued for it: due now, scheduled for later, and waiting behind its lock.
    pub backlog: u64,
    /// The instance holding its lock (entities.md rules 14 to 18).
    pub locked_by: Option<String>,
    /// Its last operations, oldest first.
    pub recent: Vec<crate::entity::RecentOperation>,
}

/// An entity batch's outcome, ready to persist (see `engine_core::entity`).
#[derive(Debug, Clone)]
pub struct EntityCommit {
    /// `@name@key`, checked.
    pub entity_id: String,
    /// The fence of the lease the operations were fetched under.
    pub fence: u64,
    /// The state after the batch; `None`: it has none (the row goes unless `scheduler` is set).
    pub state: Option<Json>,
    /// The lock and the messages waiting behind it ([`crate::lock::EntityScheduler`], as JSON);
    /// `None` when it is idle.
    pub scheduler: Option<Json>,
    /// The lock's holder and the number of messages waiting, as the scheduler says.
    pub locked_by: Option<String>,
    pub deferred: u64,
    /// Its last operations ([`crate::entity::RecentOperation`]s, as JSON).
    pub recent: Option<Json>,
    pub consumed: Vec<MessageRef>,
    /// Signals the batch's successful operations sent.
    pub signals: Vec<crate::entity::OutgoingSignal>,
    /// Orchestrations they started.
    pub starts: Vec<NewInstance>,
    /// Messages to instances and entities: answers to calls (`Message::EntityResponse`), lock
    /// grants and forwards.
    pub sends: Vec<(String, Message)>,
    pub now_ms: TimestampMs,
}

/// An entity as its batch loads it: state and scheduler, as stored (JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredEntity {
    pub state: Option<Json>,
    pub scheduler: Option<Json>,
    pub recent: Option<Json>,
}

/// The stored summary of one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub instance_id: String,
    pub name: String,
    pub version: String,
    pub status: RuntimeStatus,
    pub input: Option<Json>,
    pub output: Option<Json>,
    pub custom_status: Option<Json>,
    pub failure: Option<Failure>,
    pub tags: BTreeMap<String, String>,
    pub parent_instance_id: Option<String>,
    pub generation: u32,
    pub history_len: u32,
    pub created_at: TimestampMs,
    /// When the status or custom status last changed (not every turn: see the SQLite store).
    pub updated_at: TimestampMs,
    pub completed_at: Option<TimestampMs>,
    pub scheduled_start_at: Option<TimestampMs>,
    pub waiting_event: Option<String>,
    pub waiting_since: Option<TimestampMs>,
    pub waiting_deadline: Option<TimestampMs>,
}

/// A request to create (or re-create) an instance.
#[derive(Debug, Clone)]
pub struct NewInstance {
    pub instance_id: String,
    pub name: String,
    pub version: String,
    pub input: Json,
    pub tags: BTreeMap<String, String>,
    pub parent: Option<crate::history::ParentInstance>,
    pub scheduled_start_at: Option<TimestampMs>,
    pub now_ms: TimestampMs,
}

impl NewInstance {
    /// The message that starts the instance's first execution.
    pub fn start_message(&self) -> Message {
        Message::Start {
            name: self.name.clone(),
            version: self.version.clone(),
            input: self.input.clone(),
            tags: self.tags.clone(),
            parent: self.parent.clone(),
            generation: 0,
        }
    }
}

/// The result of one turn, ready to persist.
#[derive(Debug, Clone)]
pub struct TurnCommit {
    pub instance_id: String,
    /// The fence of the lease the turn's messages were fetched under.
    pub fence: u64,
    pub previous_status: RuntimeStatus,
    /// Sequence number of the first new event (the stored history length before the turn).
    pub history_start: u32,
    pub new_events: Vec<HistoryEvent>,
    pub status: RuntimeStatus,
    pub output: Option<Json>,
    pub failure: Option<Failure>,
    pub custom_status: Option<Json>,
    /// The oldest open event wait: (name, since, deadline).
    pub waiting: Option<(String, TimestampMs, Option<TimestampMs>)>,
    pub consumed: Vec<MessageRef>,
    pub actions: Vec<Action>,
    pub now_ms: TimestampMs,
}

/// Which statuses a management message may be delivered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Any non-terminal status (raise event, terminate).
    Live,
    /// Only Running or Pending (suspend).
    Running,
    /// Only Suspended (resume).
    Suspended,
}

/// One unit of a group commit.
#[derive(Debug, Clone)]
pub enum WriteOp {
    Turn(TurnCommit),
    /// Messages consumed by a turn that recorded nothing (duplicates, a finished instance),
    /// under the lease they were fetched with.
    Discard {
        instance_id: String,
        fence: u64,
        consumed: Vec<MessageRef>,
    },
    /// An activity's outcome, stored as a message for its instance (when it cannot be handed
    /// to the instance's holder in memory); refused unless the activity's lease is current.
    Complete {
        activity_id: i64,
        fence: u64,
        instance_id: String,
        message: Message,
    },
    /// Create an instance; refused with `Conflict` if the id belongs to a live instance.
    Start(NewInstance),
    /// Queue a message for an entity (`@name@key`, checked), now or not before `at`: an
    /// operation ([`Message::EntityOperation`]) or an operator's forced unlock or purge. Never
    /// refused: the first operation brings an entity into being.
    Signal {
        entity_id: String,
        message: Message,
        at: Option<TimestampMs>,
    },
    /// Commit an entity batch under the entity's lease: its state, the messages it consumed,
    /// the signals and starts it sent.
    EntityBatch(EntityCommit),
    /// Create an instance whose first turn the committing runtime has run in memory: its
    /// [`WriteOp::Turn`] follows in the same batch, so no Start message is queued. Refused like
    /// `Start`, and a refusal refuses that turn too. Only a runtime that holds the id's lease
    /// ([`Store::lease_new`]) sends it.
    StartRun(NewInstance),
    /// Deliver a management message if the instance's status allows it.
    Deliver {
        instance_id: String,
        message: Message,
        accept: Accept,
    },
    /// Remove a terminal instance and everything that belongs to it.
    Purge {
        instance_id: String,
    },
    /// Re-run a failed instance from its failed steps.
    Rewind {
        instance_id: String,
        reason: String,
        now_ms: TimestampMs,
    },
}

/// Why one op of a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    #[error("instance {0} not found")]
    NotFound(String),
    #[error("instance {instance_id} is {status}: {action} is not allowed")]
    WrongState {
        instance_id: String,
        status: RuntimeStatus,
        action: &'static str,
    },
    #[error("instance {0} already exists and is not finished")]
    Conflict(String),
    /// The committer's lease on this work expired or passed to another holder: nothing of the
    /// op was applied, and the current holder's work stands.
    #[error("the lease on {0} was lost: it expired or another runtime took it over")]
    LeaseLost(String),
    /// An instance id that starts with `@`: such ids address entities.
    #[error("instance id {0} starts with '@', which addresses an entity (@name@key)")]
    EntityAddress(String),
}

/// A storage failure (the whole batch did not commit).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Database(#[from] sqlx::Error),
    /// An error of the SQLite store's hot connection.
    #[error("storage error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// Another process runs an engine on this database file; an embedded store serves one.
    #[error(
        "the database file {path} is in use by another Switchyard process (one process per SQLite \
         file); stop that one, or use another file"
    )]
    InUse { path: String },
    /// A value the store will not keep (too long, empty).
    #[error("invalid value: {0}")]
    Invalid(String),
}

impl StoreError {
    /// Whether the same operation may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Database(
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
            )
        ) || matches!(self, StoreError::Database(sqlx::Error::Database(e))
            // SQLITE_BUSY and its extended codes (517: BUSY_SNAPSHOT, 261: BUSY_RECOVERY).
            if matches!(e.code().as_deref(), Some("5" | "261" | "517")))
            || matches!(self, StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy)
    }
}

/// What a committed batch changed, for in-process wake-ups.
#[derive(Debug, Clone, Default)]
pub struct CommitEffects {
    pub messages: bool,
    pub timers: bool,
    pub activities: bool,
    /// The earliest time a timer added by the batch fires.
    pub earliest_timer: Option<TimestampMs>,
    /// Activities the batch scheduled, already leased to the committer: a store that serves one
    /// process ([`Store::in_memory_handover`]) returns them so the committer's workers run them
    /// without fetching; `activities` is then false unless others were scheduled too.
    pub handed_over: Vec<ActivityItem>,
    /// Instances that reached a terminal status.
    pub finished: Vec<String>,
    /// Instances whose history was replaced (continue-as-new, restart, purge): drop caches.
    pub reset: Vec<String>,
}

/// The runtime's hot path.
pub trait Store: Send + Sync + 'static {
    /// Whether activity results may go from the activity worker to the dispatcher of the same
    /// runtime in memory, skipping the queue (see [`MessageRef::Activity`]). Only a store that
    /// serves one process may say so; the runtime still stores a result as a message when it
    /// does not hold the instance's lease.
    fn in_memory_handover(&self) -> bool;
    /// Leases the instance `instance_id`, which need not exist yet, to `holder` (for a start
    /// whose first turn the holder runs before committing it, [`WriteOp::StartRun`]); `None`
    /// while another holder has it, and always from a store that serves several processes.
    fn lease_new(
        &self,
        holder: &Holder,
        instance_id: &str,
        now_ms: TimestampMs,
        lease_ms: i64,
    ) -> impl Future<Output = Option<Lease>> + Send {
        let _ = (holder, instance_id, now_ms, lease_ms);
        async { None }
    }
    /// Queued messages with id greater than `after`, in id order, whose instance is free,
    /// expired or already leased to `holder` (up to `limit` looked at); leases or renews each
    /// returned message's instance to `holder` until `now_ms + lease_ms`.
    fn fetch_messages(
        &self,
        holder: &Holder,
        after: i64,
        now_ms: TimestampMs,
        lease_ms: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Fetched<QueuedMessage>, StoreError>> + Send;
    /// Up to `limit` timers due at `now_ms`, in due order, leased like messages.
    fn fetch_due_timers(
        &self,
        holder: &Holder,
        now_ms: TimestampMs,
        lease_ms: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<QueuedMessage>, StoreError>> + Send;
    /// When the next timer due after `after_ms` fires (due ones are fetched, not waited for).
    fn next_timer_at(
        &self,
        after_ms: TimestampMs,
    ) -> impl Future<Output = Result<Option<TimestampMs>, StoreError>> + Send;
    /// Activities with id greater than `after`, in id order, that are free, expired or leased
    /// to `holder` (up to `limit` looked at); leases each returned one to `holder`.
    fn fetch_activities(
        &self,
        holder: &Holder,
        after: i64,
        now_ms: TimestampMs,
        lease_ms: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Fetched<ActivityItem>, StoreError>> + Send;
    /// Extends `holder`'s leases on running activities to `now_ms + lease_ms`; returns the ids
    /// whose lease was no longer `holder`'s (another runtime may run them now).
    fn renew_activities(
        &self,
        holder: &Holder,
        ids: &[i64],
        now_ms: TimestampMs,
        lease_ms: i64,
    ) -> impl Future<Output = Result<Vec<i64>, StoreError>> + Send;
    /// An entity's committed state and scheduler, or `None` if it has no row.
    fn load_entity(
        &self,
        entity_id: &str,
    ) -> impl Future<Output = Result<Option<StoredEntity>, StoreError>> + Send;
    /// The status and history of an instance, or `None` if it does not exist.
    fn load(
        &self,
        instance_id: &str,
    ) -> impl Future<Output = Result<Option<LoadedInstance>, StoreError>> + Send;
    /// Commits `ops` for `holder` at `now_ms` in one transaction; returns each op's own outcome
    /// and what changed. Leases are checked against `now_ms`; activities handed over in memory
    /// are leased to `holder` for `lease_ms`.
    ///
    /// A failed commit changes nothing and leaves the store usable: the store resets whatever
    /// connection state the failure left behind before it returns.
    fn commit(
        &self,
        holder: &Holder,
        now_ms: TimestampMs,
        lease_ms: i64,
        ops: &[WriteOp],
    ) -> impl Future<Output = Result<(Vec<Result<(), OpError>>, CommitEffects), StoreError>> + Send;
    /// Writes something that changes nothing, to learn whether writes succeed again (after a
    /// full disk, say) while no real work is waiting to be committed.
    fn probe_write(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Asks to be told what another holder's commits change (work added, instances finished
    /// or reset), so a runtime sharing the store wakes for it instead of polling. The waker returns false once
    /// its runtime is gone, and is then forgotten.
    fn watch_work(&self, holder: &Holder, waker: WorkWaker);
}

/// One process's published resilience snapshot, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedState {
    pub process: String,
    pub published_at: TimestampMs,
    /// A [`ResilienceSnapshot`](crate::resilience::view::ResilienceSnapshot) as JSON.
    pub snapshot: String,
}

/// Longest process name a store keeps.
pub const MAX_PROCESS_NAME: usize = 256;
/// Largest snapshot a store keeps, in bytes.
pub const MAX_SNAPSHOT_BYTES: usize = 1024 * 1024;

/// The resilience state a store shares between processes: shared limiters' budgets and the
/// snapshots processes publish. Object-safe (boxed futures), so the runtime's limiters hold it
/// as `Arc<dyn ResilienceStore>` whatever the store.
///
/// The store executes; the rules are the engine's: [`take_budget`](Self::take_budget) runs
/// [`Gcra::check`] on the stored TAT inside one transaction, so two processes' decisions are
/// serialised and none is lost.
pub trait ResilienceStore: Send + Sync + 'static {
    /// Decides `cells` of the shared limiter `name` at `now` (nanoseconds since the epoch) with
    /// `gcra`, against its stored TAT (a limiter never used starts fresh); stores the new TAT
    /// when admitted, and changes nothing otherwise.
    fn take_budget<'a>(
        &'a self,
        name: &'a str,
        gcra: Gcra,
        cells: u32,
        now: Nanos,
    ) -> BoxFuture<'a, Result<Decision, StoreError>>;
    /// Replaces `process`'s published snapshot.
    fn publish<'a>(&'a self, state: &'a PublishedState) -> BoxFuture<'a, Result<(), StoreError>>;
    /// The snapshots published at or after `since`, by process name.
    fn published(
        &self,
        since: TimestampMs,
    ) -> BoxFuture<'_, Result<Vec<PublishedState>, StoreError>>;
}

/// Checks what [`ResilienceStore::publish`] may store.
pub(crate) fn check_published(state: &PublishedState) -> Result<(), StoreError> {
    if state.process.is_empty() || state.process.len() > MAX_PROCESS_NAME {
        return Err(StoreError::Invalid(format!(
            "a process name must be 1 to {MAX_PROCESS_NAME} bytes"
        )));
    }
    if state.snapshot.len() > MAX_SNAPSHOT_BYTES {
        return Err(StoreError::Invalid(format!(
            "a resilience snapshot is {} bytes; the limit is {MAX_SNAPSHOT_BYTES}",
            state.snapshot.len()
        )));
    }
    Ok(())
}

/// Called with what another holder's commit changed; returns false to be forgotten.
pub type WorkWaker = std::sync::Arc<dyn Fn(&CommitEffects) -> bool + Send + Sync>;

/// Filters for [`StoreAdmin::query`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceQuery {
    pub statuses: Vec<RuntimeStatus>,
    pub name: Option<String>,
    pub created_from: Option<TimestampMs>,
    pub created_to: Option<TimestampMs>,
    pub id_prefix: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub sort: SortBy,
    pub descending: bool,
    pub page_size: u32,
    /// Opaque cursor from the previous page.
    pub cursor: Option<String>,
    /// Leave out system instances (bulk jobs and other work the engine does for operators).
    #[serde(default)]
    pub hide_system: bool,
}

/// When a live instance looks like a runaway: any one threshold reached flags it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunawayLimits {
    /// History events in the current execution.
    pub history_len: u32,
    /// Continue-as-new generations.
    pub generations: u32,
    /// Created at or before this time.
    pub created_before: TimestampMs,
}

/// Finished instances of one name and status in one time bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionBucket {
    /// Start of the bucket.
    pub bucket_start: TimestampMs,
    pub name: String,
    pub status: RuntimeStatus,
    pub count: u64,
    /// The largest `completed_at - created_at`.
    pub max_latency_ms: i64,
    /// How many took at most each of [`LATENCY_BOUNDS_MS`] (cumulative, like a Prometheus
    /// histogram): what percentiles are estimated from.
    pub latency_le: Vec<u64>,
}

/// Upper bounds (ms) of the start-to-finish latency histogram every store counts per bucket.
pub const LATENCY_BOUNDS_MS: [i64; 18] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 300_000,
    3_600_000, 86_400_000,
];

/// Start-to-finish latencies merged over buckets (and names), for percentiles.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyHistogram {
    /// Cumulative counts per [`LATENCY_BOUNDS_MS`].
    le: Vec<u64>,
    count: u64,
    max_ms: i64,
}

impl LatencyHistogram {
    /// Adds one bucket's counts.
    pub fn add(&mut self, bucket: &CompletionBucket) {
        if self.le.len() < bucket.latency_le.len() {
            self.le.resize(bucket.latency_le.len(), 0);
        }
        for (sum, n) in self.le.iter_mut().zip(&bucket.latency_le) {
            *sum += n;
        }
        self.count += bucket.count;
        self.max_ms = self.max_ms.max(bucket.max_latency_ms);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q` quantile (0–1) in ms, interpolated linearly inside the histogram bucket that
    /// holds it, and never above the largest latency seen. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let mut below = 0u64;
        let mut lower = 0.0;
        for (bound, le) in LATENCY_BOUNDS_MS.iter().zip(&self.le) {
            let upper = *bound as f64;
            if *le as f64 >= rank && *le > below {
                let inside = (rank - below as f64) / (*le - below) as f64;
                let estimate = lower + (upper - lower) * inside.clamp(0.0, 1.0);
                return Some(estimate.min(self.max_ms as f64));
            }
            below = *le;
            lower = upper;
        }
        Some(self.max_ms as f64)
    }
}

/// Sort key for queries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortBy {
    #[default]
    Created,
    Updated,
}

/// One page of a query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstancePage {
    pub instances: Vec<InstanceRecord>,
    /// Present when more may follow.
    pub next_cursor: Option<String>,
}

/// Filters for [`StoreAdmin::query_entities`] (entities.md rule 19), in id order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityQuery {
    /// The entity type, exactly (lower case).
    pub name: Option<String>,
    /// Keys starting with this (with `name` only).
    pub key_prefix: Option<String>,
    /// Last modified at or after / before these times.
    pub modified_from: Option<TimestampMs>,
    pub modified_to: Option<TimestampMs>,
    /// At most 1,000; 0 means the default, 100.
    pub page_size: u32,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Leave the state out of the rows (rule 19: included by default).
    #[serde(default)]
    pub without_state: bool,
    /// Also entities without state that are locked or have messages waiting (default no).
    #[serde(default)]
    pub include_transient: bool,
    /// Only locked entities.
    #[serde(default)]
    pub locked_only: bool,
    /// Count the matches (not only this page, up to [`ENTITY_COUNT_CAP`]) into
    /// [`EntityPage::total`].
    #[serde(default)]
    pub count: bool,
}

/// One page of entities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityPage {
    pub entities: Vec<EntityRecord>,
    /// Present when more may follow.
    pub next_cursor: Option<String>,
    /// Every match, when the query asked for the count: exact up to [`ENTITY_COUNT_CAP`];
    /// `ENTITY_COUNT_CAP + 1` means more than that (counting stops there, so a count stays cheap).
    pub total: Option<u64>,
}

/// Where [`EntityPage::total`] stops counting.
pub const ENTITY_COUNT_CAP: u64 = 10_000;

/// Administration: reads and purges for the management client.
pub trait StoreAdmin: Send + Sync + 'static {
    /// An entity with its state and backlog, or `None` if it is absent.
    fn get_entity(
        &self,
        entity_id: &str,
    ) -> impl Future<Output = Result<Option<EntityRecord>, StoreError>> + Send;
    fn get(
        &self,
        instance_id: &str,
    ) -> impl Future<Output = Result<Option<InstanceRecord>, StoreError>> + Send;
    fn history(
        &self,
        instance_id: &str,
    ) -> impl Future<Output = Result<Vec<HistoryEvent>, StoreError>> + Send;
    fn query(
        &self,
        query: &InstanceQuery,
    ) -> impl Future<Output = Result<InstancePage, StoreError>> + Send;
    /// A page of the entities that have state, in id order.
    fn query_entities(
        &self,
        query: &EntityQuery,
    ) -> impl Future<Output = Result<EntityPage, StoreError>> + Send;
    fn status_counts(
        &self,
    ) -> impl Future<Output = Result<BTreeMap<RuntimeStatus, i64>, StoreError>> + Send;
    /// Live instances waiting for event `name`, oldest first.
    fn waiting_for_event(
        &self,
        name: &str,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<InstanceRecord>, StoreError>> + Send;
    /// Live instances (pending, running or suspended) past any of `limits`, worst first (the
    /// longest history, then the most generations, then the oldest), at most `limit` of them.
    fn suspected_runaways(
        &self,
        limits: &RunawayLimits,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<InstanceRecord>, StoreError>> + Send;
    /// How many live instances wait for event `name`, counting no further than `cap`.
    fn count_waiting_for_event(
        &self,
        name: &str,
        cap: u32,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// How many instances [`suspected_runaways`](StoreAdmin::suspected_runaways) would list,
    /// counting no further than `cap`; cheaper than listing them (nothing is read or sorted).
    fn count_suspected_runaways(
        &self,
        limits: &RunawayLimits,
        cap: u32,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Instances that finished at or after `since`, counted per `bucket_ms` time bucket, name
    /// and terminal status, with their start-to-finish latency, oldest bucket first.
    fn completion_stats(
        &self,
        since: TimestampMs,
        bucket_ms: i64,
    ) -> impl Future<Output = Result<Vec<CompletionBucket>, StoreError>> + Send;
    /// Ids of terminal instances created in `[from, to)` with one of `statuses` (all terminal
    /// statuses when empty), for purge by filter.
    fn terminal_ids(
        &self,
        from: TimestampMs,
        to: TimestampMs,
        statuses: &[RuntimeStatus],
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// Ids of the direct children of an instance.
    fn children(
        &self,
        instance_id: &str,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
}

#[cfg(test)]
mod latency_tests {
    use super::{CompletionBucket, LATENCY_BOUNDS_MS, LatencyHistogram};
    use crate::RuntimeStatus;

    /// A bucket of `latencies` (ms), counted the way a store counts them.
    fn bucket(latencies: &[i64]) -> CompletionBucket {
        CompletionBucket {
            bucket_start: 0,
            name: "n".into(),
            status: RuntimeStatus::Completed,
            count: latencies.len() as u64,
            max_latency_ms: latencies.iter().copied().max().unwrap_or(0),
            latency_le: LATENCY_BOUNDS_MS
                .iter()
                .map(|b| latencies.iter().filter(|l| **l <= *b).count() as u64)
                .collect(),
        }
    }

    #[test]
    fn percentiles_interpolate_inside_their_bucket_and_never_pass_the_maximum() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        // 90 fast (3 ms, in the 2–5 bucket) and 10 slow (150 ms, in the 100–200 bucket).
        h.add(&bucket(&[3; 90]));
        h.add(&bucket(&[150; 10]));
        assert_eq!(h.count(), 100);
        let p50 = h.quantile(0.5).unwrap();
        assert!((2.0..=5.0).contains(&p50), "{p50}");
        let p95 = h.quantile(0.95).unwrap();
        assert!((100.0..=150.0).contains(&p95), "{p95}");
        // The top bucket's bound (200) is above anything seen: capped at the maximum.
        assert_eq!(h.quantile(1.0), Some(150.0));
        assert!(h.quantile(0.5) <= h.quantile(0.95) && h.quantile(0.95) <= h.quantile(0.99));
    }

    #[test]
    fn latencies_past_the_last_bound_report_the_maximum() {
        let mut h = LatencyHistogram::default();
        h.add(&bucket(&[100_000_000]));
        assert_eq!(h.quantile(0.5), Some(100_000_000.0));
    }
}
