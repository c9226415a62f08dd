//! The SQLite store: the embedded default.
//!
//! One process per file, enforced: [`SqliteStore::new`] takes an exclusive OS lock on
//! `<database>.lock`, and a second process on the same file is refused ([`StoreError::InUse`]).
//! The engine's hot path (fetches, loads, commits) runs on one synchronous connection
//! ([`hot`]) that the runtime's writer and dispatcher threads use directly, one at a time, so
//! transactions never contend (no `SQLITE_BUSY` storms); administration reads use the sqlx pool.
//!
//! Leases live in the store's memory ([`leases`]), shared by every runtime on it: with one
//! process per file, every holder lives in this process, so the table is complete. Nothing about
//! leases is written to disk, which keeps fetches free of writes; after a crash every lease is
//! gone, which is what an expired lease means, so everything uncommitted is fetched again at
//! once: at-least-once for activities, exactly-once for committed orchestration turns.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex as SyncMutex},
};

use futures_util::future::BoxFuture;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use tokio::sync::Mutex;

use crate::{
    history::{HistoryEvent, RuntimeStatus, TimestampMs},
    resilience::{
        Nanos,
        gcra::{Decision, Gcra},
    },
    store::{
        ActivityItem, CommitEffects, CompletionBucket, EntityPage, EntityQuery, EntityRecord,
        Fetched, Holder, InstancePage, InstanceQuery, InstanceRecord, LATENCY_BOUNDS_MS,
        LoadedInstance, OpError, PublishedState, QueuedMessage, ResilienceStore, RunawayLimits,
        Store, StoreAdmin, StoreError, StoredEntity, WorkWaker, WriteOp, check_published,
    },
};

mod hot;
mod leases;
mod read;
mod sql;

use hot::Hot;

/// The SQLite implementation of [`Store`] and [`StoreAdmin`].
///
/// The hot path runs on one dedicated connection. In WAL mode a connection that begins a
/// transaction after another connection committed drops its whole page cache; as the only
/// writer, the hot connection's cache stays warm, which removes most of the page reads a turn
/// would otherwise cost. Its calls do their I/O on the calling thread (the runtime calls them
/// from its own writer and dispatcher threads); callers wait for it asynchronously.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    hot: Arc<Mutex<Hot>>,
    /// The database file and its `synchronous` setting, to reopen the hot connection.
    path: Arc<PathBuf>,
    synchronous: i64,
    /// Read-only connections for instance reads.
    readers: read::Readers,
    /// Runtimes to wake when another holder commits work.
    wakers: Arc<Wakers>,
    /// The exclusive lock on `<database>.lock`, held while any clone of the store lives.
    _lock: Arc<std::fs::File>,
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

/// Takes the exclusive lock that makes one process the only user of a database file: its
/// leases, turn journal and in-memory hand-overs assume nobody else runs the same work. The lock
/// is an OS file lock on `<database>.lock` (not on the database, whose own locks SQLite manages),
/// so it ends with the process however the process ends.
fn lock_database(path: &std::path::Path) -> Result<Arc<std::fs::File>, StoreError> {
    let lock = crate::journal::with_suffix(path, ".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(|e| StoreError::Corrupt(format!("cannot open {}: {e}", lock.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(Arc::new(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse {
            path: path.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Corrupt(format!(
            "cannot lock {}: {e}",
            lock.display()
        ))),
    }
}

impl SqliteStore {
    /// A store over a migrated pool's database file; opens its hot connection.
    ///
    /// Fails with [`StoreError::InUse`] while another process (or another store in this one)
    /// holds the database file.
    pub async fn new(pool: SqlitePool) -> Result<SqliteStore, StoreError> {
        let path = pool.connect_options().get_filename().to_owned();
        if path.as_os_str().is_empty() || path.as_os_str() == ":memory:" {
            return Err(StoreError::Corrupt(
                "the SQLite store needs a database file, not an in-memory database".into(),
            ));
        }
        let lock = lock_database(&path)?;
        // The hot connection writes as durably as the pool's connections were told to.
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&pool)
            .await?;
        let conn = hot::open(&path, synchronous)?;
        Ok(SqliteStore {
            pool,
            hot: Arc::new(Mutex::new(Hot::new(conn))),
            readers: read::Readers::new(&path),
            path: Arc::new(path),
            synchronous,
            wakers: Arc::default(),
            _lock: lock,
        })
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("engine types always serialise")
}

fn parse<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
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

impl Store for SqliteStore {
    fn in_memory_handover(&self) -> bool {
        // One process per file: every runtime on this store lives in this process.
        true
    }

    async fn lease_new(
        &self,
        holder: &Holder,
        instance_id: &str,
        now_ms: TimestampMs,
        lease_ms: i64,
    ) -> Option<crate::store::Lease> {
        self.hot
            .lock()
            .await
            .leases
            .instance(instance_id, holder, now_ms, lease_ms)
    }

    async fn fetch_messages(
        &self,
        holder: &Holder,
        after: i64,
        now_ms: TimestampMs,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Fetched<QueuedMessage>, StoreError> {
        self.hot
            .lock()
            .await
            .fetch_messages(holder, after, now_ms, lease_ms, limit)
    }

    async fn fetch_due_timers(
        &self,
        holder: &Holder,
        now_ms: TimestampMs,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<QueuedMessage>, StoreError> {
        self.hot
            .lock()
            .await
            .fetch_due_timers(holder, now_ms, lease_ms, limit)
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
        self.hot
            .lock()
            .await
            .fetch_activities(holder, after, now_ms, lease_ms, limit)
    }

    async fn renew_activities(
        &self,
        holder: &Holder,
        ids: &[i64],
        now_ms: TimestampMs,
        lease_ms: i64,
    ) -> Result<Vec<i64>, StoreError> {
        Ok(self
            .hot
            .lock()
            .await
            .leases
            .renew_activities(holder, ids, now_ms, lease_ms))
    }

    async fn load_entity(&self, entity_id: &str) -> Result<Option<StoredEntity>, StoreError> {
        self.hot.lock().await.load_entity(entity_id)
    }

    async fn load(&self, instance_id: &str) -> Result<Option<LoadedInstance>, StoreError> {
        self.hot.lock().await.load(instance_id)
    }

    async fn commit(
        &self,
        holder: &Holder,
        now_ms: TimestampMs,
        lease_ms: i64,
        ops: &[WriteOp],
    ) -> Result<(Vec<Result<(), OpError>>, CommitEffects), StoreError> {
        let mut hot = self.hot.lock().await;
        let committed = hot.commit(holder, now_ms, lease_ms, ops);
        match &committed {
            Err(_) => hot.reopen(&self.path, self.synchronous),
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
        let probed = hot.probe_write();
        if probed.is_err() {
            hot.reopen(&self.path, self.synchronous);
        }
        probed
    }
}

/// Shared limiters and published state go through the hot connection, like every other write
/// to the engine's tables; reads of the published state use the pool.
impl ResilienceStore for SqliteStore {
    fn take_budget<'a>(
        &'a self,
        name: &'a str,
        gcra: Gcra,
        cells: u32,
        now: Nanos,
    ) -> BoxFuture<'a, Result<Decision, StoreError>> {
        Box::pin(async move {
            let now_ms = i64::try_from(now / 1_000_000).unwrap_or(i64::MAX);
            let mut hot = self.hot.lock().await;
            let taken = hot.take_budget(name, gcra, cells, now, now_ms);
            if taken.is_err() {
                hot.reopen(&self.path, self.synchronous);
            }
            taken
        })
    }

    fn publish<'a>(&'a self, state: &'a PublishedState) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            check_published(state)?;
            self.hot.lock().await.publish(state)
        })
    }

    fn published(
        &self,
        since: TimestampMs,
    ) -> BoxFuture<'_, Result<Vec<PublishedState>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT process, published_at, snapshot FROM resilience_state \
                 WHERE published_at >= ? ORDER BY process",
            )
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|row| PublishedState {
                    process: row.get(0),
                    published_at: row.get(1),
                    snapshot: row.get(2),
                })
                .collect())
        })
    }
}

impl StoreAdmin for SqliteStore {
    async fn get_entity(&self, entity_id: &str) -> Result<Option<EntityRecord>, StoreError> {
        self.readers.get_entity(entity_id)
    }

    async fn get(&self, instance_id: &str) -> Result<Option<InstanceRecord>, StoreError> {
        self.readers.get(instance_id)
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
        self.readers.query(query).await
    }

    async fn query_entities(&self, query: &EntityQuery) -> Result<EntityPage, StoreError> {
        self.readers.query_entities(query).await
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
        self.readers.waiting_for_event(name, limit).await
    }

    async fn suspected_runaways(
        &self,
        limits: &RunawayLimits,
        limit: u32,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        self.readers.suspected_runaways(limits, limit).await
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
        use sqlx::Row;
        let bucket_ms = bucket_ms.max(1);
        // One cumulative count per histogram bound (the bounds are constants, not input).
        let le: String = LATENCY_BOUNDS_MS
            .iter()
            .map(|b| format!(", SUM(completed_at - created_at <= {b})"))
            .collect();
        let sql = format!(
            "SELECT (completed_at / ?1) * ?1 AS bucket, name, status, COUNT(*), \
             MAX(completed_at - created_at){le} \
             FROM instances WHERE completed_at >= ?2 \
             GROUP BY bucket, name, status ORDER BY bucket, name, status"
        );
        let rows = sqlx::query(&sql)
            .bind(bucket_ms)
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                let status: String = row.try_get(2)?;
                Ok(CompletionBucket {
                    bucket_start: row.try_get(0)?,
                    name: row.try_get(1)?,
                    status: status
                        .parse()
                        .map_err(|_| StoreError::Corrupt(format!("unknown status {status:?}")))?,
                    count: row.try_get::<i64, _>(3)?.unsigned_abs(),
                    max_latency_ms: row.try_get(4)?,
                    latency_le: (0..LATENCY_BOUNDS_MS.len())
                        .map(|i| row.try_get::<i64, _>(5 + i).map(i64::unsigned_abs))
                        .collect::<Result<_, _>>()?,
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
