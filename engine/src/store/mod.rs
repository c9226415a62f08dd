//! Storage behind engine-owned traits.
//!
//! [`Store`] is the hot path the runtime uses: fetch work in index order (messages after a
//! cursor, due timers, activities after a cursor), load a history, and commit a batch of
//! [`WriteOp`]s in one transaction (group commit). [`StoreAdmin`] is what the management client
//! needs: instance lookups, filtered queries, counts per status, purge.
//!
//! Every op in a batch either takes effect entirely or not at all, and a batch is atomic as a
//! whole. An op that is refused for a business reason (a running instance id reused, an instance
//! in the wrong state) gets its own [`OpError`] while the rest of the batch commits.

pub mod plan;
pub mod sqlite;

use std::{collections::BTreeMap, future::Future};

use serde::{Deserialize, Serialize};

use crate::{
    executor::Action,
    history::{Failure, HistoryEvent, Json, Message, RuntimeStatus, TimestampMs},
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
}

/// A message waiting for an orchestration turn.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    pub at: MessageRef,
    pub instance_id: String,
    pub message: Message,
}

/// An activity waiting to run.
#[derive(Debug, Clone)]
pub struct ActivityItem {
    pub id: i64,
    pub instance_id: String,
    pub scheduled_id: u32,
    pub name: String,
    pub input: Json,
}

/// What the runtime needs to resume an instance.
#[derive(Debug, Clone)]
pub struct LoadedInstance {
    pub status: RuntimeStatus,
    pub history: Vec<HistoryEvent>,
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

/// The result of one turn, ready to persist.
#[derive(Debug, Clone)]
pub struct TurnCommit {
    pub instance_id: String,
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
    /// Messages consumed by a turn that recorded nothing (duplicates, a finished instance).
    Discard(Vec<MessageRef>),
    /// Create an instance; refused with `Conflict` if the id belongs to a live instance.
    Start(NewInstance),
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
}

/// A storage failure (the whole batch did not commit).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// Another process runs an engine on this database file; an embedded store serves one.
    #[error(
        "the database file {path} is in use by another Switchyard process (one process per SQLite \
         file); stop that one, or use another file"
    )]
    InUse { path: String },
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
    }
}

/// What a committed batch changed, for in-process wake-ups.
#[derive(Debug, Clone, Default)]
pub struct CommitEffects {
    pub messages: bool,
    pub timers: bool,
    pub activities: bool,
    /// Instances that reached a terminal status.
    pub finished: Vec<String>,
    /// Instances whose history was replaced (continue-as-new, restart, purge): drop caches.
    pub reset: Vec<String>,
}

/// The runtime's hot path.
pub trait Store: Send + Sync + 'static {
    /// Up to `limit` queued messages with id greater than `after`, in id order.
    fn fetch_messages(
        &self,
        after: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<QueuedMessage>, StoreError>> + Send;
    /// Up to `limit` timers due at `now_ms`, in due order.
    fn fetch_due_timers(
        &self,
        now_ms: TimestampMs,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<QueuedMessage>, StoreError>> + Send;
    /// When the next timer due after `after_ms` fires (due ones are fetched, not waited for).
    fn next_timer_at(
        &self,
        after_ms: TimestampMs,
    ) -> impl Future<Output = Result<Option<TimestampMs>, StoreError>> + Send;
    /// Up to `limit` activities with id greater than `after`, in id order.
    fn fetch_activities(
        &self,
        after: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<ActivityItem>, StoreError>> + Send;
    /// The status and history of an instance, or `None` if it does not exist.
    fn load(
        &self,
        instance_id: &str,
    ) -> impl Future<Output = Result<Option<LoadedInstance>, StoreError>> + Send;
    /// Commits `ops` in one transaction; returns each op's own outcome and what changed.
    ///
    /// A failed commit changes nothing and leaves the store usable: the store resets whatever
    /// connection state the failure left behind before it returns.
    fn commit(
        &self,
        ops: &[WriteOp],
    ) -> impl Future<Output = Result<(Vec<Result<(), OpError>>, CommitEffects), StoreError>> + Send;
    /// Writes something that changes nothing, to learn whether writes succeed again (after a
    /// full disk, say) while no real work is waiting to be committed.
    fn probe_write(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

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
    /// Mean and maximum of `completed_at - created_at`.
    pub mean_latency_ms: f64,
    pub max_latency_ms: i64,
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

/// Administration: reads and purges for the management client.
pub trait StoreAdmin: Send + Sync + 'static {
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
