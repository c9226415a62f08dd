//! The SQLite store's hot path: one synchronous connection that fetches, loads and commits.
//!
//! The connection is `rusqlite`'s, and its calls run on the calling thread: the runtime's writer
//! and dispatcher threads, so a commit costs no thread hand-off beyond the one that brought the
//! batch to the writer (sqlx's driver sends every call to a worker thread and back). A batch is
//! planned by the shared commit rules ([`plan`]) and written with a handful of multi-row
//! statements whatever its size: history rows, instance updates (`WITH … UPDATE … FROM`), new
//! activities, timers and messages are each one statement per chunk, and their few shapes stay
//! prepared. Dequeues walk an index in order (`id > cursor`, `fire_at <= now`), so their cost
//! does not grow with the backlog.

use std::{collections::HashSet, path::Path, time::Duration};

use futures_util::FutureExt;
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, TransactionBehavior, params, params_from_iter,
};

use super::{
    flatten, json,
    leases::Leases,
    parse,
    sql::{Arg, Statement},
    status_of,
};
use crate::{
    history::{HistoryEvent, RuntimeStatus, TimestampMs},
    resilience::{
        Nanos,
        gcra::{Decision, Gcra},
    },
    store::{
        ActivityItem, CommitEffects, EntityCommit, Fetched, Holder, LeaseRecord, LoadedInstance,
        MessageRef, NewInstance, OpError, PublishedState, QueuedMessage, StoreError, StoredEntity,
        TurnCommit, WriteOp,
        plan::{self, Identity, Plan, PlanReads, Step},
    },
};

/// Rows per multi-row statement; keeps each under SQLite's bound-parameter limit.
const CHUNK: usize = 400;
/// Page cache of the hot connection, in KiB (SQLite's negative `cache_size`).
const HOT_CACHE_KIB: i64 = 128 * 1024;
/// WAL size, in pages, that triggers a checkpoint (80 MiB at 4 KiB pages).
const WAL_CHECKPOINT_PAGES: i64 = 20_000;
/// Prepared statements kept: every statement shape a commit uses, for each row count seen.
const STATEMENT_CACHE: usize = 256;

/// The hot connection and the lease table, which is read and changed only while the connection
/// is held, so leases change atomically with the fetches and commits that take or end them.
pub(super) struct Hot {
    conn: Connection,
    pub(super) leases: Leases,
}

impl std::fmt::Debug for Hot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hot")
            .field("leases", &self.leases)
            .finish_non_exhaustive()
    }
}

/// Opens a hot connection on the database file at `path` with `synchronous` (SQLite's number:
/// 2 is FULL) as the pool's connections have it. The file is in WAL mode already (the pool set
/// it, and it persists in the file).
pub(super) fn open(path: &Path, synchronous: i64) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // Checkpoint after this many WAL pages instead of SQLite's 1,000. The hot set of pages
    // (queue heads, recently active instances) is rewritten by nearly every commit; a longer
    // interval lets one checkpoint copy each such page once instead of every few commits.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {synchronous}; PRAGMA cache_size = -{HOT_CACHE_KIB}; \
         PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES};"
    ))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

impl Hot {
    pub(super) fn new(conn: Connection) -> Hot {
        Hot {
            conn,
            leases: Leases::default(),
        }
    }

    /// Replaces the connection after a failed transaction, so no state a failure left behind
    /// (a `COMMIT` that failed on a full disk) reaches the next commit. If reopening fails too,
    /// the old connection stays and the next commit tries again.
    pub(super) fn reopen(&mut self, path: &Path, synchronous: i64) {
        match open(path, synchronous) {
            Ok(fresh) => {
                self.conn = fresh;
                tracing::info!("replaced the engine's database connection after a failed write");
            }
            Err(e) => tracing::warn!(error = %e, "cannot reopen the engine's database connection"),
        }
    }

    /// Messages or timers (`(id, instance_id, body)` rows of `sql` with `args`), each leased to
    /// `holder` with its instance; those whose instance another holder has are left out.
    fn leased_messages(
        &mut self,
        sql: &str,
        args: impl rusqlite::Params,
        at: fn(i64) -> MessageRef,
        holder: &Holder,
        now_ms: TimestampMs,
        lease_ms: i64,
    ) -> Result<(Vec<QueuedMessage>, Option<i64>, usize), StoreError> {
        let mut statement = self.conn.prepare_cached(sql)?;
        let mut rows = statement.query(args)?;
        self.leases.prune(now_ms);
        let (mut messages, mut last, mut seen) = (Vec::new(), None, 0);
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let instance_id: String = row.get(1)?;
            (last, seen) = (Some(id), seen + 1);
            let Some(lease) = self.leases.instance(&instance_id, holder, now_ms, lease_ms) else {
                continue;
            };
            messages.push(QueuedMessage {
                at: at(id),
                instance_id,
                message: parse(text(row, 2)?, "queued message")?,
                lease,
            });
        }
        Ok((messages, last, seen))
    }

    pub(super) fn fetch_messages(
        &mut self,
        holder: &Holder,
        after: i64,
        now_ms: TimestampMs,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Fetched<QueuedMessage>, StoreError> {
        let (items, last, seen) = self.leased_messages(
            "SELECT id, instance_id, body FROM messages WHERE id > ? ORDER BY id LIMIT ?",
            params![after, limit],
            MessageRef::Queue,
            holder,
            now_ms,
            lease_ms,
        )?;
        Ok(Fetched {
            items,
            scanned_to: last.unwrap_or(after),
            full: seen == limit as usize,
        })
    }

    pub(super) fn fetch_due_timers(
        &mut self,
        holder: &Holder,
        now_ms: TimestampMs,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<QueuedMessage>, StoreError> {
        let (timers, _, _) = self.leased_messages(
            "SELECT id, instance_id, body FROM timers WHERE fire_at <= ? \
             ORDER BY fire_at, id LIMIT ?",
            params![now_ms, limit],
            MessageRef::Timer,
            holder,
            now_ms,
            lease_ms,
        )?;
        Ok(timers)
    }

    pub(super) fn fetch_activities(
        &mut self,
        holder: &Holder,
        after: i64,
        now_ms: TimestampMs,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Fetched<ActivityItem>, StoreError> {
        let mut statement = self.conn.prepare_cached(
            "SELECT id, instance_id, scheduled_id, name, input FROM activities \
             WHERE id > ? ORDER BY id LIMIT ?",
        )?;
        let rows = statement
            .query_map(params![after, limit], ActivityRow::read)?
            .collect::<Result<Vec<_>, _>>()?;
        self.leases.prune(now_ms);
        Ok(Fetched {
            scanned_to: rows.last().map_or(after, |r| r.id),
            full: rows.len() == limit as usize,
            items: rows
                .into_iter()
                .filter_map(|row| row.leased(&mut self.leases, holder, now_ms, lease_ms))
                .collect(),
        })
    }

    pub(super) fn load_entity(
        &mut self,
        entity_id: &str,
    ) -> Result<Option<StoredEntity>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT state, scheduler, recent FROM entities WHERE entity_id = ?")?
            .query_row([entity_id], |r| {
                Ok(StoredEntity {
                    state: r.get(0)?,
                    scheduler: r.get(1)?,
                    recent: r.get(2)?,
                })
            })
            .optional()?)
    }

    pub(super) fn load(&mut self, instance_id: &str) -> Result<Option<LoadedInstance>, StoreError> {
        let status: Option<String> = self
            .conn
            .prepare_cached("SELECT status FROM instances WHERE instance_id = ?")?
            .query_row([instance_id], |r| r.get(0))
            .optional()?;
        let Some(status) = status else {
            return Ok(None);
        };
        Ok(Some(LoadedInstance {
            status: status_of(&status)?,
            history: history(&self.conn, instance_id)?,
        }))
    }

    /// [`ResilienceStore::take_budget`](crate::store::ResilienceStore::take_budget): the
    /// stored TAT read and rewritten in one `IMMEDIATE` transaction.
    pub(super) fn take_budget(
        &mut self,
        name: &str,
        gcra: Gcra,
        cells: u32,
        now: Nanos,
        now_ms: TimestampMs,
    ) -> Result<Decision, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let stored: Option<i64> = tx
            .query_row(
                "SELECT tat FROM limiter_budgets WHERE name = ?1",
                [name],
                |row| row.get(0),
            )
            .optional()?;
        let mut tat = stored.map_or(0, |t| t.max(0) as u64);
        let decision = gcra.check(&mut tat, now, cells);
        if let Decision::Allowed { .. } = decision
            && cells > 0
        {
            tx.execute(
                "INSERT INTO limiter_budgets (name, tat, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (name) DO UPDATE SET tat = excluded.tat, updated_at = excluded.updated_at",
                rusqlite::params![name, i64::try_from(tat).unwrap_or(i64::MAX), now_ms],
            )?;
        }
        tx.commit()?;
        Ok(decision)
    }

    /// [`ResilienceStore::publish`](crate::store::ResilienceStore::publish).
    pub(super) fn publish(&mut self, state: &PublishedState) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO resilience_state (process, published_at, snapshot) VALUES (?1, ?2, ?3) \
             ON CONFLICT (process) DO UPDATE SET published_at = excluded.published_at, \
             snapshot = excluded.snapshot",
            rusqlite::params![state.process, state.published_at, state.snapshot],
        )?;
        Ok(())
    }

    /// Rewrites one row in place in a transaction of its own: a real page write that changes
    /// nothing, to learn whether writes succeed again.
    pub(super) fn probe_write(&mut self) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE status_counts SET count = count WHERE status = 'Pending'",
            [],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Commits one batch: plans it with the shared rules, then executes the plan in one
    /// `IMMEDIATE` transaction (which takes the write lock up front, waiting up to the busy
    /// timeout if another connection, such as the dashboard's audit log, is writing).
    ///
    /// The planner's reads run before the transaction begins. They and the writes still see one
    /// state: every write to the engine's tables goes through this connection while it is held
    /// (one process per file; other connections write only the dashboard's own tables).
    pub(super) fn commit(
        &mut self,
        holder: &Holder,
        now_ms: TimestampMs,
        lease_ms: i64,
        ops: &[WriteOp],
    ) -> Result<(Vec<Result<(), OpError>>, CommitEffects), StoreError> {
        let mut reads = Reads {
            conn: &mut self.conn,
            leases: &self.leases,
        };
        // The reads answer at once: the plan never waits.
        let plan = plan::plan(holder, now_ms, ops, &mut reads)
            .now_or_never()
            .expect("the SQLite store's plan reads do not suspend")?;
        let statements = statements(&plan);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut scheduled = Vec::new();
        for statement in &statements {
            run(statement, &tx, &mut scheduled)?;
        }
        tx.commit()?;
        self.leases.settle(&plan);
        let mut effects = plan.effects;
        // Hand the new activities to the committer, leased: its workers need not fetch them.
        let count = scheduled.len();
        effects.handed_over = scheduled
            .into_iter()
            .filter_map(|row| row.leased(&mut self.leases, holder, now_ms, lease_ms))
            .collect();
        effects.activities = effects.handed_over.len() < count;
        Ok((plan.outcomes, effects))
    }
}

/// Column `i` of `row` as text, borrowed.
fn text<'r>(row: &'r rusqlite::Row<'_>, i: usize) -> Result<&'r str, StoreError> {
    Ok(row.get_ref(i)?.as_str().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })?)
}

/// The history of an instance's current execution.
fn history(conn: &Connection, instance_id: &str) -> Result<Vec<HistoryEvent>, StoreError> {
    let rows = conn
        .prepare_cached("SELECT events FROM history WHERE instance_id = ? ORDER BY seq")?
        .query_map([instance_id], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    flatten(&rows)
}

/// An `(id, instance_id, scheduled_id, name, input)` row of the activities table.
struct ActivityRow {
    id: i64,
    instance_id: String,
    scheduled_id: u32,
    name: String,
    input: String,
}

impl ActivityRow {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<ActivityRow> {
        Ok(ActivityRow {
            id: row.get(0)?,
            instance_id: row.get(1)?,
            scheduled_id: row.get(2)?,
            name: row.get(3)?,
            input: row.get(4)?,
        })
    }

    /// The activity leased to `holder`, or `None` while another holder's lease runs.
    fn leased(
        self,
        leases: &mut Leases,
        holder: &Holder,
        now_ms: TimestampMs,
        lease_ms: i64,
    ) -> Option<ActivityItem> {
        Some(ActivityItem {
            lease: leases.activity(self.id, holder, now_ms, lease_ms)?,
            id: self.id,
            instance_id: self.instance_id,
            scheduled_id: self.scheduled_id,
            name: self.name,
            input: self.input,
        })
    }
}

/// The planner's reads (see [`Hot::commit`]).
struct Reads<'t> {
    conn: &'t mut Connection,
    leases: &'t Leases,
}

impl PlanReads for Reads<'_> {
    async fn instance_leases(
        &mut self,
        ids: &[&str],
    ) -> Result<std::collections::HashMap<String, LeaseRecord>, StoreError> {
        Ok(ids
            .iter()
            .filter_map(|id| Some(((*id).to_owned(), self.leases.instances.get(*id)?.clone())))
            .collect())
    }

    async fn activity_leases(
        &mut self,
        ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, LeaseRecord>, StoreError> {
        Ok(ids
            .iter()
            .filter_map(|id| Some((*id, self.leases.activities.get(id)?.clone())))
            .collect())
    }

    async fn statuses(
        &mut self,
        ids: &[&str],
    ) -> Result<std::collections::HashMap<String, RuntimeStatus>, StoreError> {
        let mut statuses = std::collections::HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let mut q =
                Statement::new("SELECT instance_id, status FROM instances WHERE instance_id IN ");
            q.list(chunk.iter().copied());
            let mut statement = self.conn.prepare_cached(&q.sql)?;
            let mut rows = statement.query(params_from_iter(&q.args))?;
            while let Some(row) = rows.next()? {
                statuses.insert(row.get(0)?, status_of(text(row, 1)?)?);
            }
        }
        Ok(statuses)
    }

    async fn history(&mut self, instance_id: &str) -> Result<Vec<HistoryEvent>, StoreError> {
        history(self.conn, instance_id)
    }

    async fn identity(&mut self, instance_id: &str) -> Result<Option<Identity>, StoreError> {
        let row = self
            .conn
            .prepare_cached("SELECT version, tags FROM instances WHERE instance_id = ?")?
            .query_row([instance_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .optional()?;
        row.map(|(version, tags)| {
            Ok(Identity {
                version,
                tags: parse(&tags, "tags")?,
            })
        })
        .transpose()
    }
}

/// Runs the statement in `tx`, adding the activity rows it returns to `scheduled`.
fn run(
    statement: &Statement<'_>,
    tx: &Connection,
    scheduled: &mut Vec<ActivityRow>,
) -> rusqlite::Result<()> {
    let mut prepared = tx.prepare_cached(&statement.sql)?;
    if statement.returns {
        let rows = prepared.query_map(params_from_iter(&statement.args), ActivityRow::read)?;
        for row in rows {
            scheduled.push(row?);
        }
    } else {
        prepared.execute(params_from_iter(&statement.args))?;
    }
    Ok(())
}

/// `DELETE FROM <table> WHERE <column> IN (…)`, in chunks.
fn delete_in<'p, A: Into<Arg<'p>> + Copy>(
    out: &mut Vec<Statement<'p>>,
    table: &str,
    column: &str,
    keys: &[A],
) {
    for chunk in keys.chunks(CHUNK) {
        let mut q = Statement::new(&format!("DELETE FROM {table} WHERE {column} IN "));
        q.list(chunk.iter().copied());
        out.push(q);
    }
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
    /// Entity rows to write (neither state nor scheduler: delete the row), the last per entity.
    entities: Vec<&'p EntityCommit>,
}

impl<'p> Pending<'p> {
    fn consume(&mut self, r: MessageRef) {
        match r {
            MessageRef::Queue(id) => self.delete_messages.push(id),
            MessageRef::Timer(id) => self.delete_timers.push(id),
            MessageRef::Activity(id) => self.delete_activities.push(id),
            // The planner leaves these out: nothing stored to delete.
            MessageRef::Eager(_) | MessageRef::Local => {}
        }
    }

    /// Whether scheduling for `instance_id` must wait for a flush: its end, gathered already,
    /// must not remove what is scheduled after it.
    fn ends(&self, instance_id: &str) -> bool {
        self.ending.contains(instance_id)
    }

    /// Appends the gathered rows as statements, one per kind and chunk.
    fn flush(&mut self, out: &mut Vec<Statement<'p>>) {
        let pending = std::mem::take(self);
        for chunk in pending.new_instances.chunks(CHUNK / 12) {
            let mut q = Statement::new(
                "INSERT INTO instances (instance_id, name, version, status, input, tags, \
                 parent_instance_id, generation, history_len, created_at, updated_at, \
                 scheduled_start_at) ",
            );
            q.values(chunk, |args, n| {
                args.extend::<[Arg<'p>; 12]>([
                    n.instance_id.as_str().into(),
                    n.name.as_str().into(),
                    n.version.as_str().into(),
                    RuntimeStatus::Pending.as_str().into(),
                    n.input.as_str().into(),
                    json(&n.tags).into(),
                    n.parent.as_ref().map(|p| p.instance_id.as_str()).into(),
                    0i64.into(),
                    0i64.into(),
                    n.now_ms.into(),
                    n.now_ms.into(),
                    n.scheduled_start_at.into(),
                ]);
            });
            out.push(q);
        }
        let mut history = pending.history.into_iter().peekable();
        while history.peek().is_some() {
            let mut q = Statement::new("INSERT INTO history (instance_id, seq, events) ");
            q.values(history.by_ref().take(CHUNK), |args, (id, seq, events)| {
                args.extend::<[Arg<'p>; 3]>([id.into(), i64::from(seq).into(), events.into()]);
            });
            out.push(q);
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
                out.push(update_instances(chunk, touch));
            }
        }
        for chunk in pending.activities.chunks(CHUNK / 4) {
            let mut q =
                Statement::new("INSERT INTO activities (instance_id, scheduled_id, name, input) ");
            q.values(chunk, |args, (id, sid, name, input)| {
                args.extend::<[Arg<'p>; 4]>([
                    (*id).into(),
                    i64::from(*sid).into(),
                    (*name).into(),
                    (*input).into(),
                ]);
            });
            // The new rows come back with the commit, for the committer's workers.
            q.push(" RETURNING id, instance_id, scheduled_id, name, input");
            q.returns = true;
            out.push(q);
        }
        let mut timers = pending.timers.into_iter().peekable();
        while timers.peek().is_some() {
            let mut q = Statement::new("INSERT INTO timers (instance_id, fire_at, body) ");
            q.values(timers.by_ref().take(CHUNK), |args, (id, at, body)| {
                args.extend::<[Arg<'p>; 3]>([id.into(), at.into(), body.into()]);
            });
            out.push(q);
        }
        let mut messages = pending.messages.into_iter().peekable();
        while messages.peek().is_some() {
            let mut q = Statement::new("INSERT INTO messages (instance_id, body) ");
            q.values(messages.by_ref().take(CHUNK), |args, (id, body)| {
                args.extend::<[Arg<'p>; 2]>([id.into(), body.into()]);
            });
            out.push(q);
        }
        let (put, gone): (Vec<_>, Vec<_>) = pending
            .entities
            .iter()
            .partition(|e| e.state.is_some() || e.scheduler.is_some());
        for chunk in put.chunks(CHUNK / 9) {
            let mut q = Statement::new(
                "INSERT INTO entities (entity_id, name, key, state, last_modified, scheduler, \
                 locked_by, deferred, recent) ",
            );
            q.values(chunk, |args, e: &&EntityCommit| {
                let id = e.entity_id.as_str();
                let (name, key) = id
                    .strip_prefix('@')
                    .and_then(|rest| rest.split_once('@'))
                    .unwrap_or(("", id));
                args.extend::<[Arg<'p>; 9]>([
                    id.into(),
                    name.into(),
                    key.into(),
                    e.state.as_deref().into(),
                    e.now_ms.into(),
                    e.scheduler.as_deref().into(),
                    e.locked_by.as_deref().into(),
                    (e.deferred as i64).into(),
                    e.recent.as_deref().into(),
                ]);
            });
            q.push(
                " ON CONFLICT (entity_id) DO UPDATE SET state = excluded.state, \
                 last_modified = excluded.last_modified, scheduler = excluded.scheduler, \
                 locked_by = excluded.locked_by, deferred = excluded.deferred, \
                 recent = excluded.recent",
            );
            out.push(q);
        }
        let gone: Vec<&str> = gone.iter().map(|e| e.entity_id.as_str()).collect();
        delete_in(out, "entities", "entity_id", &gone);
        delete_in(out, "messages", "id", &pending.delete_messages);
        delete_in(out, "timers", "id", &pending.delete_timers);
        delete_in(out, "activities", "id", &pending.delete_activities);
        // After the inserts above, so timers a final turn created go too.
        delete_in(out, "timers", "instance_id", &pending.ended);
        delete_in(out, "activities", "instance_id", &pending.ended);
    }
}

/// One multi-row update of instance rows after their turns.
fn update_instances<'p>(turns: &[&'p TurnCommit], touch: bool) -> Statement<'p> {
    let mut q = Statement::new(
        "WITH v(id, status, output, failure, custom_status, history_len, updated_at, \
         completed_at, waiting_event, waiting_since, waiting_deadline) AS (",
    );
    q.values(turns, |args, t| {
        let (we, ws, wd) = match &t.waiting {
            Some((name, since, deadline)) => (Some(name.as_str()), Some(*since), *deadline),
            None => (None, None, None),
        };
        args.extend::<[Arg<'p>; 11]>([
            t.instance_id.as_str().into(),
            t.status.as_str().into(),
            t.output.as_deref().into(),
            t.failure.as_ref().map(json).into(),
            t.custom_status.as_deref().into(),
            (i64::from(t.history_start) + t.new_events.len() as i64).into(),
            t.now_ms.into(),
            t.status.is_terminal().then_some(t.now_ms).into(),
            we.into(),
            ws.into(),
            wd.into(),
        ]);
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
    q
}

/// The statements that execute a plan's steps, gathering runs of row inserts, updates and
/// deletes into multi-row statements; the steps that rewrite an instance follow everything
/// before them.
fn statements<'p>(plan: &'p Plan<'p>) -> Vec<Statement<'p>> {
    let mut out = Vec::new();
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
                    pending.flush(&mut out);
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
                    pending.flush(&mut out);
                }
                pending
                    .activities
                    .push((instance_id, *scheduled_id, name, input));
            }
            Step::Consume(r) => pending.consume(*r),
            Step::SetEntity(batch) => {
                pending.entities.retain(|e| e.entity_id != batch.entity_id);
                pending.entities.push(batch);
            }
            Step::EndExecution(instance_id) => {
                pending.ended.push(instance_id);
                pending.ending.insert(instance_id);
            }
            Step::DeleteInstance(instance_id) => {
                pending.flush(&mut out);
                for table in ["history", "messages", "timers", "activities", "instances"] {
                    let mut q =
                        Statement::new(&format!("DELETE FROM {table} WHERE instance_id = "));
                    q.bind(instance_id.as_ref());
                    out.push(q);
                }
            }
            Step::ContinueAsNew {
                instance_id,
                input,
                generation,
                now_ms,
            } => {
                pending.flush(&mut out);
                let mut q = Statement::new("DELETE FROM history WHERE instance_id = ");
                q.bind(instance_id.as_ref());
                out.push(q);
                let mut q = Statement::new(
                    "UPDATE instances SET status = 'Pending', output = NULL, failure = NULL, \
                     history_len = 0, waiting_event = NULL, waiting_since = NULL, \
                     waiting_deadline = NULL, input = ",
                );
                q.bind(*input)
                    .push(", generation = ")
                    .bind(i64::from(*generation))
                    .push(", updated_at = ")
                    .bind(*now_ms)
                    .push(" WHERE instance_id = ")
                    .bind(instance_id.as_ref());
                out.push(q);
            }
            Step::Reopen {
                instance_id,
                history_len,
                now_ms,
            } => {
                pending.flush(&mut out);
                let mut q = Statement::new(
                    "UPDATE instances SET status = 'Running', failure = NULL, output = NULL, \
                     completed_at = NULL, history_len = ",
                );
                q.bind(i64::from(*history_len))
                    .push(", updated_at = ")
                    .bind(*now_ms)
                    .push(" WHERE instance_id = ")
                    .bind(instance_id.as_ref());
                out.push(q);
            }
        }
    }
    pending.flush(&mut out);
    if !plan.counts.is_empty() {
        // One statement for every status whose count changed.
        let mut q = Statement::new("UPDATE status_counts SET count = count + CASE status");
        for (status, delta) in &plan.counts {
            q.push(" WHEN ")
                .bind(status.as_str())
                .push(" THEN ")
                .bind(*delta);
        }
        q.push(" ELSE 0 END WHERE status IN ")
            .list(plan.counts.keys().map(|s| s.as_str()));
        out.push(q);
    }
    out
}
