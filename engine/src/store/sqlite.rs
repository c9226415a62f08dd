//! The SQLite store: the embedded default.
//!
//! One process per file, enforced: [`SqliteStore::new`] takes an exclusive OS lock on
//! `<database>.lock`, and a second process on the same file is refused ([`StoreError::InUse`]).
//! Each runtime sends its mutations through [`Store::commit`] from a single writer task, and the
//! hot connection serialises everything else, so transactions never contend (no `SQLITE_BUSY`
//! storms). A batch is planned by the shared commit rules ([`plan`]) and written with a handful of
//! multi-row statements whatever its size: history rows, instance updates (`WITH … UPDATE …
//! FROM`), new activities, timers and messages are each one statement per chunk. Dequeues walk an
//! index in order (`id > cursor`, `fire_at <= now`), so their cost does not grow with the backlog.
//!
//! Leases live in the store's memory, shared by every runtime on it: with one process per file,
//! every holder lives in this process, so the table is complete, and it is checked and changed
//! under the hot connection's lock, atomically with fetches and commits. Nothing about leases is
//! written to disk, which keeps fetches free of writes; after a crash every lease is gone, which
//! is what an expired lease means, so everything uncommitted is fetched again at once:
//! at-least-once for activities, exactly-once for committed orchestration turns.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex as SyncMutex},
};

use sqlx::{
    ConnectOptions, Connection, QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool,
    sqlite::SqliteRow,
};
use tokio::sync::Mutex;

use crate::{
    history::{HistoryEvent, RuntimeStatus, TimestampMs},
    store::{
        ActivityItem, CommitEffects, CompletionBucket, Fetched, Holder, InstancePage,
        InstanceQuery, InstanceRecord, Lease, LeaseRecord, LoadedInstance, MessageRef, NewInstance,
        OpError, QueuedMessage, RunawayLimits, SortBy, Store, StoreAdmin, StoreError, TurnCommit,
        WorkWaker, WriteOp,
        plan::{self, Identity, Plan, PlanReads, Step},
    },
};

/// Rows per multi-row statement; keeps each under SQLite's bound-parameter limit.
const CHUNK: usize = 400;

/// The SQLite implementation of [`Store`] and [`StoreAdmin`].
///
/// The hot path (fetches, loads, commits) runs on one dedicated connection. In WAL mode a
/// connection that begins a transaction after another connection committed drops its whole page
/// cache; as the only writer, the hot connection's cache stays warm, which removes most of the
/// page reads a turn would otherwise cost. Administration reads use the pool.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    hot: Arc<Mutex<SqliteConnection>>,
    /// Every lease on this file's work (see the module documentation). Locked only briefly,
    /// while the hot connection is held, never across an await.
    leases: Arc<SyncMutex<Leases>>,
    /// Runtimes to wake when another holder commits work.
    wakers: Arc<Wakers>,
    /// The exclusive lock on `<database>.lock`, held while any clone of the store lives.
    _lock: Option<Arc<std::fs::File>>,
}

/// The wakers of the runtimes on this store, by holder.
#[derive(Default)]
struct Wakers(SyncMutex<Vec<(Holder, WorkWaker)>>);

impl std::fmt::Debug for Wakers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let holders = self.0.lock().map(|w| w.len()).unwrap_or(0);
        f.debug_struct("Wakers").field("holders", &holders).finish()
    }
}

/// The lease table.
#[derive(Debug, Default)]
struct Leases {
    instances: HashMap<String, LeaseRecord>,
    activities: HashMap<i64, LeaseRecord>,
    /// The last fence handed out: fences only grow, so one counter serves all work.
    fence: u64,
    /// Entries after the last pruning; the next prune waits until the table has doubled.
    pruned_at: usize,
}

impl Leases {
    /// Takes or renews the lease on an instance for `holder`, or `None` while another holder's
    /// lease runs.
    fn instance(
        &mut self,
        instance_id: &str,
        holder: &Holder,
        now_ms: TimestampMs,
        lease_ms: i64,
    ) -> Option<Lease> {
        let current = self.instances.get(instance_id);
        let lease = Self::take(&mut self.fence, current, holder, now_ms, lease_ms)?;
        let seen = lease.lease();
        // Keys are copied only for instances not leased before.
        match self.instances.get_mut(instance_id) {
            Some(slot) => *slot = lease,
            None => {
                self.instances.insert(instance_id.to_owned(), lease);
            }
        }
        Some(seen)
    }

    fn activity(
        &mut self,
        id: i64,
        holder: &Holder,
        now_ms: TimestampMs,
        lease_ms: i64,
    ) -> Option<Lease> {
        let current = self.activities.get(&id);
        let lease = Self::take(&mut self.fence, current, holder, now_ms, lease_ms)?;
        let seen = lease.lease();
        self.activities.insert(id, lease);
        Some(seen)
    }

    /// The lease `holder` gets on work leased as `current` ([`plan::acquire`]), with a fresh
    /// fence from the table's counter when it changes hands.
    fn take(
        fence: &mut u64,
        current: Option<&LeaseRecord>,
        holder: &Holder,
        now_ms: TimestampMs,
        lease_ms: i64,
    ) -> Option<LeaseRecord> {
        plan::acquire(current, holder, now_ms, lease_ms, || {
            *fence += 1;
            *fence
        })
    }

    /// Drops expired leases once the table has doubled since the last pruning, so it stays
    /// proportional to the work in flight.
    fn prune(&mut self, now_ms: TimestampMs) {
        let len = self.instances.len() + self.activities.len();
        if len < 4_096 || len < 2 * self.pruned_at {
            return;
        }
        self.instances.retain(|_, l| l.expires_at > now_ms);
        self.activities.retain(|_, l| l.expires_at > now_ms);
        self.pruned_at = self.instances.len() + self.activities.len();
    }

    /// Forgets leases on work a committed plan finished: consumed activities, ended or deleted
    /// instances.
    fn settle(&mut self, plan: &Plan<'_>) {
        for step in &plan.steps {
            match step {
                Step::Consume(MessageRef::Activity(id)) => {
                    self.activities.remove(id);
                }
                Step::DeleteInstance(id) => {
                    self.instances.remove(id.as_ref());
                }
                _ => {}
            }
        }
        for id in &plan.effects.finished {
            self.instances.remove(id);
        }
    }
}

/// Takes the exclusive lock that makes one process the only user of a database file: its
/// leases, turn journal and in-memory hand-overs assume nobody else runs the same work. The lock
/// is an OS file lock on `<database>.lock` (not on the database, whose own locks SQLite manages),
/// so it ends with the process however the process ends.
fn lock_database(pool: &SqlitePool) -> Result<Option<Arc<std::fs::File>>, StoreError> {
    let path = pool.connect_options().get_filename().to_owned();
    if path.as_os_str().is_empty() || path.as_os_str() == ":memory:" {
        return Ok(None);
    }
    let lock = crate::journal::with_suffix(&path, ".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(|e| StoreError::Corrupt(format!("cannot open {}: {e}", lock.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(Arc::new(file))),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse {
            path: path.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Corrupt(format!(
            "cannot lock {}: {e}",
            lock.display()
        ))),
    }
}

/// Page cache of the hot connection, in KiB (SQLite's negative `cache_size`).
const HOT_CACHE_KIB: i64 = 128 * 1024;
/// WAL size, in pages, that triggers a checkpoint (80 MiB at 4 KiB pages).
const WAL_CHECKPOINT_PAGES: i64 = 20_000;

impl SqliteStore {
    /// A store over a migrated pool; opens its dedicated hot-path connection.
    ///
    /// Fails with [`StoreError::InUse`] while another process (or another store in this one)
    /// holds the database file.
    pub async fn new(pool: SqlitePool) -> Result<SqliteStore, StoreError> {
        let lock = lock_database(&pool)?;
        let hot = Self::connect_hot(&pool).await?;
        Ok(SqliteStore {
            pool,
            hot: Arc::new(Mutex::new(hot)),
            leases: Arc::default(),
            wakers: Arc::default(),
            _lock: lock,
        })
    }

    async fn open_hot(&self) -> Result<SqliteConnection, StoreError> {
        Self::connect_hot(&self.pool).await
    }

    async fn connect_hot(pool: &SqlitePool) -> Result<SqliteConnection, StoreError> {
        let options = (*pool.connect_options()).clone();
        let mut hot = options.connect().await?;
        sqlx::query(&format!("PRAGMA cache_size = -{HOT_CACHE_KIB}"))
            .execute(&mut hot)
            .await?;
        // Checkpoint after this many WAL pages instead of SQLite's 1,000. The hot set of pages
        // (queue heads, recently active instances) is rewritten by nearly every commit; a longer
        // interval lets one checkpoint copy each such page once instead of every few commits.
        sqlx::query(&format!(
            "PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}"
        ))
        .execute(&mut hot)
        .await?;
        Ok(hot)
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("engine types always serialise")
}

fn parse<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// Leases the instances of `(id, instance_id, body)` rows of the messages or timers table to
/// `holder` and returns the messages of those it got.
fn leased_messages(
    leases: &SyncMutex<Leases>,
    rows: &[SqliteRow],
    at: fn(i64) -> MessageRef,
    holder: &Holder,
    now_ms: TimestampMs,
    lease_ms: i64,
) -> Result<Vec<QueuedMessage>, StoreError> {
    let mut leases = leases.lock().expect("lease table");
    leases.prune(now_ms);
    let mut messages = Vec::with_capacity(rows.len());
    for r in rows {
        let instance_id: String = r.get(1);
        let Some(lease) = leases.instance(&instance_id, holder, now_ms, lease_ms) else {
            continue;
        };
        messages.push(QueuedMessage {
            at: at(r.get(0)),
            instance_id,
            message: parse(r.get::<&str, _>(2), "queued message")?,
            lease,
        });
    }
    Ok(messages)
}

/// `(id, <columns>)` rows of `table` with id after `after`, in id order, at most `limit`.
async fn rows_after(
    hot: &mut SqliteConnection,
    table: &str,
    columns: &str,
    after: i64,
    limit: u32,
) -> Result<Vec<SqliteRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT id, {columns} FROM {table} WHERE id > ? ORDER BY id LIMIT ?"
    ))
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(hot)
    .await
}

/// A fetch's answer: what it returned, how far it looked (`rows` are in id order).
fn fetched<T>(items: Vec<T>, rows: &[SqliteRow], after: i64, limit: u32) -> Fetched<T> {
    Fetched {
        items,
        scanned_to: rows.last().map_or(after, |r| r.get(0)),
        full: rows.len() as u32 == limit,
    }
}

/// Leases the activity of an `(id, instance_id, scheduled_id, name, input)` row to `holder`
/// and returns it, or `None` while another holder's lease runs.
fn leased_activity(
    leases: &mut Leases,
    row: &SqliteRow,
    holder: &Holder,
    now_ms: TimestampMs,
    lease_ms: i64,
) -> Option<ActivityItem> {
    let id: i64 = row.get(0);
    Some(ActivityItem {
        lease: leases.activity(id, holder, now_ms, lease_ms)?,
        id,
        instance_id: row.get(1),
        scheduled_id: row.get::<i64, _>(2) as u32,
        name: row.get(3),
        input: row.get(4),
    })
}

/// Concatenates history rows (one JSON array of events per turn) into one history.
fn flatten(rows: &[String]) -> Result<Vec<HistoryEvent>, StoreError> {
    let mut history = Vec::with_capacity(rows.len() * 4);
    for row in rows {
        history.extend(parse::<Vec<HistoryEvent>>(row, "history events")?);
    }
    Ok(history)
}

fn status_of(text: &str) -> Result<RuntimeStatus, StoreError> {
    text.parse().map_err(StoreError::Corrupt)
}

/// Rows a run of plan steps writes, gathered so each kind is one statement per chunk. It borrows
/// from the plan, so nothing is copied on the way to the statements.
#[derive(Default)]
struct Pending<'p> {
    new_instances: Vec<&'p NewInstance>,
    /// (instance id, first sequence number, JSON array of events): one row per turn.
    history: Vec<(&'p str, u32, String)>,
    updates: Vec<&'p TurnCommit>,
    activities: Vec<(&'p str, u32, &'p str, &'p str)>,
    timers: Vec<(&'p str, TimestampMs, String)>,
    messages: Vec<(&'p str, String)>,
    delete_messages: Vec<i64>,
    delete_timers: Vec<i64>,
    delete_activities: Vec<i64>,
    /// Instances whose execution ended: their open timers and activities are deleted after the
    /// inserts above.
    ended: Vec<&'p str>,
    /// The same, for lookups.
    ending: HashSet<&'p str>,
}

/// A commit's writes. A small commit (the common case at low load) becomes one multi-statement
/// script: the whole plan reaches SQLite in one call (sqlx binds each statement's parameters in
/// order) instead of one round trip to the connection's thread per statement, and its few
/// shapes stay prepared. A large one runs statement by statement, so its full-chunk statements,
/// which recur, stay prepared one by one.
struct Script<'p> {
    statements: Vec<QueryBuilder<'p, Sqlite>>,
    combined: bool,
}

/// Plans with at most this many steps are written as one script.
const SCRIPT_STEPS: usize = 48;

impl<'p> Script<'p> {
    fn new(combined: bool) -> Self {
        Script {
            statements: Vec::new(),
            combined,
        }
    }

    /// Starts the next statement.
    fn next(&mut self) -> &mut QueryBuilder<'p, Sqlite> {
        match self.statements.last_mut() {
            Some(_) if self.combined => {
                let script = self.statements.last_mut().expect("just matched");
                script.push(";\n");
            }
            _ => self.statements.push(QueryBuilder::new("")),
        }
        self.statements.last_mut().expect("one statement at least")
    }

    /// `DELETE FROM <table> WHERE <column> IN (…)`, in chunks.
    fn delete_in<T>(&mut self, table: &str, column: &str, keys: &[T])
    where
        T: sqlx::Encode<'p, Sqlite> + sqlx::Type<Sqlite> + Clone + Send + 'p,
    {
        for chunk in keys.chunks(CHUNK) {
            let q = self.next();
            q.push(format!("DELETE FROM {table} WHERE {column} IN ("));
            let mut list = q.separated(", ");
            for key in chunk {
                list.push_bind(key.clone());
            }
            q.push(")");
        }
    }

    /// Runs the statements; returns the rows they return (the new activities).
    async fn run(self, conn: &mut SqliteConnection) -> Result<Vec<SqliteRow>, sqlx::Error> {
        let mut rows = Vec::new();
        for mut statement in self.statements {
            rows.extend(statement.build().fetch_all(&mut *conn).await?);
        }
        Ok(rows)
    }
}

impl<'p> Pending<'p> {
    fn consume(&mut self, r: MessageRef) {
        match r {
            MessageRef::Queue(id) => self.delete_messages.push(id),
            MessageRef::Timer(id) => self.delete_timers.push(id),
            MessageRef::Activity(id) => self.delete_activities.push(id),
        }
    }

    /// Whether scheduling for `instance_id` must wait for a flush: its end, gathered already,
    /// must not remove what is scheduled after it.
    fn ends(&self, instance_id: &str) -> bool {
        self.ending.contains(instance_id)
    }

    /// Appends the gathered rows to the script, one statement per kind and chunk.
    fn flush(&mut self, script: &mut Script<'p>) {
        let pending = std::mem::take(self);
        for chunk in pending.new_instances.chunks(CHUNK / 12) {
            let q = script.next();
            q.push(
                "INSERT INTO instances (instance_id, name, version, status, input, tags, \
                 parent_instance_id, generation, history_len, created_at, updated_at, \
                 scheduled_start_at) ",
            );
            q.push_values(chunk, |mut b, n| {
                b.push_bind(n.instance_id.as_str())
                    .push_bind(n.name.as_str())
                    .push_bind(n.version.as_str())
                    .push_bind(RuntimeStatus::Pending.as_str())
                    .push_bind(n.input.as_str())
                    .push_bind(json(&n.tags))
                    .push_bind(n.parent.as_ref().map(|p| p.instance_id.as_str()))
                    .push_bind(0i64)
                    .push_bind(0i64)
                    .push_bind(n.now_ms)
                    .push_bind(n.now_ms)
                    .push_bind(n.scheduled_start_at);
            });
        }
        let mut history = pending.history.into_iter().peekable();
        while history.peek().is_some() {
            let q = script.next();
            q.push("INSERT INTO history (instance_id, seq, events) ");
            q.push_values(history.by_ref().take(CHUNK), |mut b, (id, seq, events)| {
                b.push_bind(id).push_bind(i64::from(seq)).push_bind(events);
            });
        }
        // `updated_at` (indexed, for sorting) moves only when something visible changes: the
        // status or the custom status. Turns that just make progress leave it, and its index,
        // alone; that is most turns, and it saves about 15% of commit time.
        let (touched, progress): (Vec<&TurnCommit>, Vec<&TurnCommit>) = pending
            .updates
            .iter()
            .partition(|t| t.status != t.previous_status || t.custom_status.is_some());
        for (rows, touch) in [(touched, true), (progress, false)] {
            for chunk in rows.chunks(CHUNK / 12) {
                update_instances(script, chunk, touch);
            }
        }
        for chunk in pending.activities.chunks(CHUNK / 4) {
            let q = script.next();
            q.push("INSERT INTO activities (instance_id, scheduled_id, name, input) ");
            q.push_values(chunk, |mut b, (id, sid, name, input)| {
                b.push_bind(*id)
                    .push_bind(i64::from(*sid))
                    .push_bind(*name)
                    .push_bind(*input);
            });
            // The new rows come back with the commit, for the committer's workers.
            q.push(" RETURNING id, instance_id, scheduled_id, name, input");
        }
        let mut timers = pending.timers.into_iter().peekable();
        while timers.peek().is_some() {
            let q = script.next();
            q.push("INSERT INTO timers (instance_id, fire_at, body) ");
            q.push_values(timers.by_ref().take(CHUNK), |mut b, (id, at, body)| {
                b.push_bind(id).push_bind(at).push_bind(body);
            });
        }
        let mut messages = pending.messages.into_iter().peekable();
        while messages.peek().is_some() {
            let q = script.next();
            q.push("INSERT INTO messages (instance_id, body) ");
            q.push_values(messages.by_ref().take(CHUNK), |mut b, (id, body)| {
                b.push_bind(id).push_bind(body);
            });
        }
        script.delete_in("messages", "id", &pending.delete_messages);
        script.delete_in("timers", "id", &pending.delete_timers);
        script.delete_in("activities", "id", &pending.delete_activities);
        // After the inserts above, so timers a final turn created go too.
        script.delete_in("timers", "instance_id", &pending.ended);
        script.delete_in("activities", "instance_id", &pending.ended);
    }
}

/// One multi-row update of instance rows after their turns.
fn update_instances<'p>(script: &mut Script<'p>, turns: &[&'p TurnCommit], touch: bool) {
    let q = script.next();
    q.push(
        "WITH v(id, status, output, failure, custom_status, history_len, updated_at, \
         completed_at, waiting_event, waiting_since, waiting_deadline) AS (",
    );
    q.push_values(turns, |mut b, t| {
        let (we, ws, wd) = match &t.waiting {
            Some((name, since, deadline)) => (Some(name.as_str()), Some(*since), *deadline),
            None => (None, None, None),
        };
        b.push_bind(t.instance_id.as_str())
            .push_bind(t.status.as_str())
            .push_bind(t.output.as_deref())
            .push_bind(t.failure.as_ref().map(json))
            .push_bind(t.custom_status.as_deref())
            .push_bind(i64::from(t.history_start) + t.new_events.len() as i64)
            .push_bind(t.now_ms)
            .push_bind(t.status.is_terminal().then_some(t.now_ms))
            .push_bind(we)
            .push_bind(ws)
            .push_bind(wd);
    });
    q.push(
        ") UPDATE instances SET status = v.status, output = v.output, failure = v.failure, \
         custom_status = COALESCE(v.custom_status, instances.custom_status), \
         history_len = v.history_len, completed_at = v.completed_at, \
         waiting_event = v.waiting_event, waiting_since = v.waiting_since, \
         waiting_deadline = v.waiting_deadline",
    );
    if touch {
        q.push(", updated_at = v.updated_at");
    }
    q.push(" FROM v WHERE instances.instance_id = v.id");
}

/// The planner's reads, inside the commit's transaction.
/// The planner's reads, on the hot connection before the commit's transaction begins. They and
/// the writes still see one state: every write to the engine's tables goes through the hot
/// connection while its lock is held (one process per file; other connections write only the
/// dashboard's own tables), and the lock is held from these reads to the commit. Reading
/// outside the transaction lets the whole write, `BEGIN` to `COMMIT`, be one script.
struct TxReads<'t> {
    conn: &'t mut SqliteConnection,
    leases: &'t SyncMutex<Leases>,
}

/// IMMEDIATE takes the write lock up front (waiting up to the busy timeout if another
/// connection, such as the dashboard's audit log, is writing). A deferred transaction would read
/// first and then fail to upgrade with `SQLITE_BUSY_SNAPSHOT`, without waiting.
const BEGIN: &str = "BEGIN IMMEDIATE";

impl PlanReads for TxReads<'_> {
    async fn instance_leases(
        &mut self,
        ids: &[&str],
    ) -> Result<HashMap<String, LeaseRecord>, StoreError> {
        let leases = self.leases.lock().expect("lease table");
        Ok(ids
            .iter()
            .filter_map(|id| Some(((*id).to_owned(), leases.instances.get(*id)?.clone())))
            .collect())
    }

    async fn activity_leases(
        &mut self,
        ids: &[i64],
    ) -> Result<HashMap<i64, LeaseRecord>, StoreError> {
        let leases = self.leases.lock().expect("lease table");
        Ok(ids
            .iter()
            .filter_map(|id| Some((*id, leases.activities.get(id)?.clone())))
            .collect())
    }

    async fn statuses(
        &mut self,
        ids: &[&str],
    ) -> Result<HashMap<String, RuntimeStatus>, StoreError> {
        let mut statuses = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT instance_id, status FROM instances WHERE instance_id IN (",
            );
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            q.push(")");
            for row in q.build().fetch_all(&mut *self.conn).await? {
                statuses.insert(row.get(0), status_of(row.get::<&str, _>(1))?);
            }
        }
        Ok(statuses)
    }

    async fn history(&mut self, instance_id: &str) -> Result<Vec<HistoryEvent>, StoreError> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT events FROM history WHERE instance_id = ? ORDER BY seq")
                .bind(instance_id)
                .fetch_all(&mut *self.conn)
                .await?;
        flatten(&rows)
    }

    async fn identity(&mut self, instance_id: &str) -> Result<Option<Identity>, StoreError> {
        let row = sqlx::query("SELECT version, tags FROM instances WHERE instance_id = ?")
            .bind(instance_id)
            .fetch_optional(&mut *self.conn)
            .await?;
        row.map(|r| {
            Ok(Identity {
                version: r.get(0),
                tags: parse(r.get::<&str, _>(1), "tags")?,
            })
        })
        .transpose()
    }
}

/// Deletes an instance and every row that belongs to it.
fn wipe<'p>(script: &mut Script<'p>, instance_id: &'p str) {
    for table in ["history", "messages", "timers", "activities", "instances"] {
        let q = script.next();
        q.push(format!("DELETE FROM {table} WHERE instance_id = "));
        q.push_bind(instance_id);
    }
}

impl Store for SqliteStore {
    fn in_memory_handover(&self) -> bool {
        // One process per file: every runtime on this store lives in this process.
        true
    }

    async fn fetch_messages(
        &self,
        holder: &Holder,
        after: i64,
        now_ms: TimestampMs,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Fetched<QueuedMessage>, StoreError> {
        let mut hot = self.hot.lock().await;
        let rows = rows_after(&mut hot, "messages", "instance_id, body", after, limit).await?;
        let items = leased_messages(
            &self.leases,
            &rows,
            MessageRef::Queue,
            holder,
            now_ms,
            lease_ms,
        )?;
        drop(hot);
        Ok(fetched(items, &rows, after, limit))
    }

    async fn fetch_due_timers(
        &self,
        holder: &Holder,
        now_ms: TimestampMs,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<QueuedMessage>, StoreError> {
        let mut hot = self.hot.lock().await;
        let rows = sqlx::query(
            "SELECT id, instance_id, body FROM timers WHERE fire_at <= ? ORDER BY fire_at, id LIMIT ?",
        )
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&mut *hot)
        .await?;
        let timers = leased_messages(
            &self.leases,
            &rows,
            MessageRef::Timer,
            holder,
            now_ms,
            lease_ms,
        );
        drop(hot);
        timers
    }

    async fn next_timer_at(
        &self,
        after_ms: TimestampMs,
    ) -> Result<Option<TimestampMs>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT MIN(fire_at) FROM timers WHERE fire_at > ?")
                .bind(after_ms)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn fetch_activities(
        &self,
        holder: &Holder,
        after: i64,
        now_ms: TimestampMs,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Fetched<ActivityItem>, StoreError> {
        let mut hot = self.hot.lock().await;
        let rows = rows_after(
            &mut hot,
            "activities",
            "instance_id, scheduled_id, name, input",
            after,
            limit,
        )
        .await?;
        let mut leases = self.leases.lock().expect("lease table");
        leases.prune(now_ms);
        let items = rows
            .iter()
            .filter_map(|row| leased_activity(&mut leases, row, holder, now_ms, lease_ms))
            .collect();
        drop(leases);
        drop(hot);
        Ok(fetched(items, &rows, after, limit))
    }

    async fn renew_activities(
        &self,
        holder: &Holder,
        ids: &[i64],
        now_ms: TimestampMs,
        lease_ms: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let hot = self.hot.lock().await;
        let mut leases = self.leases.lock().expect("lease table");
        let lost = ids
            .iter()
            .copied()
            .filter(|id| match leases.activities.get_mut(id) {
                Some(lease) if lease.holder == *holder && lease.expires_at > now_ms => {
                    lease.expires_at = lease.expires_at.max(now_ms.saturating_add(lease_ms));
                    false
                }
                _ => true,
            })
            .collect();
        drop(leases);
        drop(hot);
        Ok(lost)
    }

    async fn load(&self, instance_id: &str) -> Result<Option<LoadedInstance>, StoreError> {
        let mut hot = self.hot.lock().await;
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM instances WHERE instance_id = ?")
                .bind(instance_id)
                .fetch_optional(&mut *hot)
                .await?;
        let Some(status) = status else {
            return Ok(None);
        };
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT events FROM history WHERE instance_id = ? ORDER BY seq")
                .bind(instance_id)
                .fetch_all(&mut *hot)
                .await?;
        let history = flatten(&rows)?;
        Ok(Some(LoadedInstance {
            status: status_of(&status)?,
            history,
        }))
    }

    async fn commit(
        &self,
        holder: &Holder,
        now_ms: TimestampMs,
        lease_ms: i64,
        ops: &[WriteOp],
    ) -> Result<(Vec<Result<(), OpError>>, CommitEffects), StoreError> {
        let mut hot = self.hot.lock().await;
        let committed = commit_on(&mut hot, &self.leases, holder, now_ms, lease_ms, ops).await;
        match &committed {
            Err(_) => self.replace_hot(&mut hot).await,
            Ok((_, effects))
                if effects.messages
                    || effects.timers
                    || effects.activities
                    || !effects.finished.is_empty()
                    || !effects.reset.is_empty() =>
            {
                let mut wakers = self.wakers.0.lock().expect("wakers");
                wakers.retain(|(h, wake)| h == holder || wake(effects));
            }
            Ok(_) => {}
        }
        committed
    }

    fn watch_work(&self, holder: &Holder, waker: WorkWaker) {
        let mut wakers = self.wakers.0.lock().expect("wakers");
        wakers.retain(|(h, _)| h != holder);
        wakers.push((holder.clone(), waker));
    }

    async fn probe_write(&self) -> Result<(), StoreError> {
        let mut hot = self.hot.lock().await;
        let probed = async {
            let mut tx = hot.begin_with("BEGIN IMMEDIATE").await?;
            // Rewrites one row in place: a real page write that changes nothing.
            sqlx::query("UPDATE status_counts SET count = count WHERE status = 'Pending'")
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<(), StoreError>(())
        }
        .await;
        if probed.is_err() {
            self.replace_hot(&mut hot).await;
        }
        probed
    }
}

impl SqliteStore {
    /// Replaces the hot connection after a failed transaction. A `COMMIT` that fails (a full
    /// disk: `SQLITE_FULL`) can leave the connection believing a transaction is still open, so
    /// every later `BEGIN` would fail; a fresh connection starts clean. If reconnecting fails
    /// too, the old connection stays and the next commit tries again.
    async fn replace_hot(&self, hot: &mut SqliteConnection) {
        match self.open_hot().await {
            Ok(fresh) => {
                let old = std::mem::replace(hot, fresh);
                drop(old);
                tracing::info!("replaced the engine's database connection after a failed write");
            }
            Err(e) => tracing::warn!(error = %e, "cannot reopen the engine's database connection"),
        }
    }
}

/// Commits one batch on the hot connection: plans it with the shared rules, then executes the
/// plan.
async fn commit_on(
    hot: &mut SqliteConnection,
    leases: &SyncMutex<Leases>,
    holder: &Holder,
    now_ms: TimestampMs,
    lease_ms: i64,
    ops: &[WriteOp],
) -> Result<(Vec<Result<(), OpError>>, CommitEffects), StoreError> {
    // The transaction is plain BEGIN/COMMIT statements in one script, so a commit is one call to
    // the connection's thread (plus one per read the plan needs, see `TxReads`). A failure
    // anywhere leaves it open: the caller then replaces the connection, which rolls it back.
    let mut reads = TxReads { conn: hot, leases };
    let plan = plan::plan(holder, now_ms, ops, &mut reads).await?;
    let mut script = Script::new(plan.steps.len() <= SCRIPT_STEPS);
    script.next().push(BEGIN);
    execute(&mut script, &plan);
    script.next().push("COMMIT");
    let scheduled = script.run(hot).await?;
    let mut leases = leases.lock().expect("lease table");
    leases.settle(&plan);
    let mut effects = plan.effects;
    // Hand the new activities to the committer, leased: its workers need not fetch them.
    effects.handed_over = scheduled
        .iter()
        .filter_map(|row| leased_activity(&mut leases, row, holder, now_ms, lease_ms))
        .collect();
    effects.activities = effects.handed_over.len() < scheduled.len();
    Ok((plan.outcomes, effects))
}

/// Executes a plan's steps as one script, gathering runs of row inserts, updates and deletes
/// into multi-row statements; the steps that rewrite an instance follow everything before them.
fn execute<'p>(script: &mut Script<'p>, plan: &'p Plan<'p>) {
    let mut pending = Pending::default();
    for step in &plan.steps {
        match step {
            Step::CreateInstance(new) => pending.new_instances.push(new),
            Step::AppendHistory {
                instance_id,
                events,
            } => {
                if let Some(first) = events.first() {
                    pending.history.push((instance_id, first.id, json(events)));
                }
            }
            Step::UpdateInstance(turn) => pending.updates.push(turn),
            Step::Enqueue {
                instance_id,
                message,
            } => pending.messages.push((instance_id, json(message))),
            Step::ScheduleTimer {
                instance_id,
                fire_at_ms,
                message,
            } => {
                if pending.ends(instance_id) {
                    pending.flush(script);
                }
                pending
                    .timers
                    .push((instance_id, *fire_at_ms, json(message)));
            }
            Step::ScheduleActivity {
                instance_id,
                scheduled_id,
                name,
                input,
            } => {
                if pending.ends(instance_id) {
                    pending.flush(script);
                }
                pending
                    .activities
                    .push((instance_id, *scheduled_id, name, input));
            }
            Step::Consume(r) => pending.consume(*r),
            Step::EndExecution(instance_id) => {
                pending.ended.push(instance_id);
                pending.ending.insert(instance_id);
            }
            Step::DeleteInstance(instance_id) => {
                pending.flush(script);
                wipe(script, instance_id);
            }
            Step::ContinueAsNew {
                instance_id,
                input,
                generation,
                now_ms,
            } => {
                pending.flush(script);
                let q = script.next();
                q.push("DELETE FROM history WHERE instance_id = ");
                q.push_bind(instance_id.as_ref());
                let q = script.next();
                q.push(
                    "UPDATE instances SET status = 'Pending', output = NULL, failure = NULL,                      history_len = 0, waiting_event = NULL, waiting_since = NULL,                      waiting_deadline = NULL, input = ",
                );
                q.push_bind(*input);
                q.push(", generation = ");
                q.push_bind(i64::from(*generation));
                q.push(", updated_at = ");
                q.push_bind(*now_ms);
                q.push(" WHERE instance_id = ");
                q.push_bind(instance_id.as_ref());
            }
            Step::Reopen {
                instance_id,
                history_len,
                now_ms,
            } => {
                pending.flush(script);
                let q = script.next();
                q.push(
                    "UPDATE instances SET status = 'Running', failure = NULL, output = NULL,                      completed_at = NULL, history_len = ",
                );
                q.push_bind(i64::from(*history_len));
                q.push(", updated_at = ");
                q.push_bind(*now_ms);
                q.push(" WHERE instance_id = ");
                q.push_bind(instance_id.as_ref());
            }
        }
    }
    pending.flush(script);
    if !plan.counts.is_empty() {
        // One statement for every status whose count changed.
        let q = script.next();
        q.push("UPDATE status_counts SET count = count + CASE status");
        for (status, delta) in &plan.counts {
            q.push(" WHEN ");
            q.push_bind(status.as_str());
            q.push(" THEN ");
            q.push_bind(*delta);
        }
        q.push(" ELSE 0 END WHERE status IN (");
        let mut list = q.separated(", ");
        for status in plan.counts.keys() {
            list.push_bind(status.as_str());
        }
        q.push(")");
    }
}

const RECORD_COLUMNS: &str = "instance_id, name, version, status, input, output, custom_status, \
     failure, tags, parent_instance_id, generation, history_len, created_at, updated_at, \
     completed_at, scheduled_start_at, waiting_event, waiting_since, waiting_deadline";

fn record(row: &SqliteRow) -> Result<InstanceRecord, StoreError> {
    let failure: Option<String> = row.get("failure");
    let tags: String = row.get("tags");
    Ok(InstanceRecord {
        instance_id: row.get("instance_id"),
        name: row.get("name"),
        version: row.get("version"),
        status: status_of(row.get::<&str, _>("status"))?,
        input: row.get("input"),
        output: row.get("output"),
        custom_status: row.get("custom_status"),
        failure: failure
            .as_deref()
            .map(|f| parse(f, "failure"))
            .transpose()?,
        tags: parse(&tags, "tags")?,
        parent_instance_id: row.get("parent_instance_id"),
        generation: row.get::<i64, _>("generation") as u32,
        history_len: row.get::<i64, _>("history_len") as u32,
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
        completed_at: row.get("completed_at"),
        scheduled_start_at: row.get("scheduled_start_at"),
        waiting_event: row.get("waiting_event"),
        waiting_since: row.get("waiting_since"),
        waiting_deadline: row.get("waiting_deadline"),
    })
}

/// Parses a query cursor: `<sort value>|<instance id>`.
fn parse_cursor(cursor: &str) -> Option<(i64, &str)> {
    let (ts, id) = cursor.split_once('|')?;
    Some((ts.parse().ok()?, id))
}

impl StoreAdmin for SqliteStore {
    async fn get(&self, instance_id: &str) -> Result<Option<InstanceRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {RECORD_COLUMNS} FROM instances WHERE instance_id = ?"
        ))
        .bind(instance_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(record).transpose()
    }

    async fn history(&self, instance_id: &str) -> Result<Vec<HistoryEvent>, StoreError> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT events FROM history WHERE instance_id = ? ORDER BY seq")
                .bind(instance_id)
                .fetch_all(&self.pool)
                .await?;
        flatten(&rows)
    }

    async fn query(&self, query: &InstanceQuery) -> Result<InstancePage, StoreError> {
        let column = match query.sort {
            SortBy::Created => "created_at",
            SortBy::Updated => "updated_at",
        };
        let page_size = query.page_size.clamp(1, 1000);
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {RECORD_COLUMNS} FROM instances WHERE 1 = 1"
        ));
        if !query.statuses.is_empty() {
            q.push(" AND status IN (");
            let mut list = q.separated(", ");
            for s in &query.statuses {
                list.push_bind(s.as_str());
            }
            q.push(")");
        }
        if let Some(name) = &query.name {
            q.push(" AND name = ").push_bind(name);
        }
        if query.hide_system {
            // A range on the name, not LIKE: no escaping of the prefix's `.`.
            q.push(" AND NOT (name >= ")
                .push_bind(crate::system::SYSTEM_PREFIX)
                .push(" AND name < ")
                .push_bind(format!("{}\u{10FFFF}", crate::system::SYSTEM_PREFIX))
                .push(")");
        }
        if let Some(from) = query.created_from {
            q.push(" AND created_at >= ").push_bind(from);
        }
        if let Some(to) = query.created_to {
            q.push(" AND created_at < ").push_bind(to);
        }
        if let Some(prefix) = &query.id_prefix {
            // Range on the primary key rather than LIKE, so it uses the index and needs no escaping.
            q.push(" AND instance_id >= ").push_bind(prefix.clone());
            q.push(" AND instance_id < ")
                .push_bind(format!("{prefix}\u{10FFFF}"));
        }
        for (key, value) in &query.tags {
            q.push(" AND json_extract(tags, ")
                .push_bind(format!("$.\"{}\"", key.replace('"', "")))
                .push(") = ")
                .push_bind(value.clone());
        }
        let (cmp, dir) = if query.descending {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        if let Some(cursor) = &query.cursor {
            let (ts, id) = parse_cursor(cursor)
                .ok_or_else(|| StoreError::Corrupt(format!("invalid cursor {cursor:?}")))?;
            q.push(format!(" AND ({column}, instance_id) {cmp} ("))
                .push_bind(ts)
                .push(", ")
                .push_bind(id.to_owned())
                .push(")");
        }
        q.push(format!(
            " ORDER BY {column} {dir}, instance_id {dir} LIMIT "
        ))
        .push_bind(i64::from(page_size) + 1);
        let rows = q.build().fetch_all(&self.pool).await?;
        let mut instances = rows.iter().map(record).collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if instances.len() > page_size as usize {
            instances.truncate(page_size as usize);
            instances.last().map(|last| {
                let ts = match query.sort {
                    SortBy::Created => last.created_at,
                    SortBy::Updated => last.updated_at,
                };
                format!("{ts}|{}", last.instance_id)
            })
        } else {
            None
        };
        Ok(InstancePage {
            instances,
            next_cursor,
        })
    }

    async fn status_counts(&self) -> Result<BTreeMap<RuntimeStatus, i64>, StoreError> {
        let rows = sqlx::query("SELECT status, count FROM status_counts")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((status_of(r.get::<&str, _>(0))?, r.get::<i64, _>(1))))
            .collect()
    }

    async fn waiting_for_event(
        &self,
        name: &str,
        limit: u32,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {RECORD_COLUMNS} FROM instances WHERE waiting_event = ? \
             ORDER BY waiting_since LIMIT ?"
        ))
        .bind(name)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record).collect()
    }

    async fn suspected_runaways(
        &self,
        limits: &RunawayLimits,
        limit: u32,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {RECORD_COLUMNS} FROM instances \
             WHERE status IN ('Pending', 'Running', 'Suspended') \
             AND (history_len >= ? OR generation >= ? OR created_at <= ?) \
             ORDER BY history_len DESC, generation DESC, created_at LIMIT ?"
        ))
        .bind(i64::from(limits.history_len))
        .bind(i64::from(limits.generations))
        .bind(limits.created_before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record).collect()
    }

    async fn count_waiting_for_event(&self, name: &str, cap: u32) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT 1 FROM instances WHERE waiting_event = ? LIMIT ?)",
        )
        .bind(name)
        .bind(i64::from(cap))
        .fetch_one(&self.pool)
        .await?;
        Ok(n.unsigned_abs())
    }

    async fn count_suspected_runaways(
        &self,
        limits: &RunawayLimits,
        cap: u32,
    ) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT 1 FROM instances \
             WHERE status IN ('Pending', 'Running', 'Suspended') \
             AND (history_len >= ? OR generation >= ? OR created_at <= ?) LIMIT ?)",
        )
        .bind(i64::from(limits.history_len))
        .bind(i64::from(limits.generations))
        .bind(limits.created_before)
        .bind(i64::from(cap))
        .fetch_one(&self.pool)
        .await?;
        Ok(n.unsigned_abs())
    }

    async fn completion_stats(
        &self,
        since: TimestampMs,
        bucket_ms: i64,
    ) -> Result<Vec<CompletionBucket>, StoreError> {
        let bucket_ms = bucket_ms.max(1);
        let rows: Vec<(i64, String, String, i64, f64, i64)> = sqlx::query_as(
            "SELECT (completed_at / ?1) * ?1 AS bucket, name, status, COUNT(*), \
             AVG(completed_at - created_at), MAX(completed_at - created_at) \
             FROM instances WHERE completed_at >= ?2 \
             GROUP BY bucket, name, status ORDER BY bucket, name, status",
        )
        .bind(bucket_ms)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(bucket_start, name, status, count, mean, max)| {
                Ok(CompletionBucket {
                    bucket_start,
                    name,
                    status: status
                        .parse()
                        .map_err(|_| StoreError::Corrupt(format!("unknown status {status:?}")))?,
                    count: count as u64,
                    mean_latency_ms: mean,
                    max_latency_ms: max,
                })
            })
            .collect()
    }

    async fn terminal_ids(
        &self,
        from: TimestampMs,
        to: TimestampMs,
        statuses: &[RuntimeStatus],
    ) -> Result<Vec<String>, StoreError> {
        let wanted: Vec<RuntimeStatus> = if statuses.is_empty() {
            RuntimeStatus::ALL
                .into_iter()
                .filter(|s| s.is_terminal())
                .collect()
        } else {
            statuses
                .iter()
                .copied()
                .filter(|s| s.is_terminal())
                .collect()
        };
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let mut q =
            QueryBuilder::<Sqlite>::new("SELECT instance_id FROM instances WHERE status IN (");
        let mut list = q.separated(", ");
        for s in &wanted {
            list.push_bind(s.as_str());
        }
        q.push(") AND created_at >= ")
            .push_bind(from)
            .push(" AND created_at < ")
            .push_bind(to);
        Ok(q.build_query_scalar().fetch_all(&self.pool).await?)
    }

    async fn children(&self, instance_id: &str) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT instance_id FROM instances WHERE parent_instance_id = ?")
                .bind(instance_id)
                .fetch_all(&self.pool)
                .await?,
        )
    }
}
