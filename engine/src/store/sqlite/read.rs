//! The SQLite store's instance reads: one instance, pages of instances, the waiting and runaway
//! lists. They run on read-only rusqlite connections kept for reuse: a lookup by id runs on the
//! calling thread (it takes microseconds, less than a hop to a driver thread would), a list on
//! the blocking pool.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params, params_from_iter};

use super::{parse, sql::Statement, status_of};
use crate::store::{
    EntityPage, EntityQuery, EntityRecord, InstancePage, InstanceQuery, InstanceRecord,
    RunawayLimits, SortBy, StoreError,
};

/// Idle connections kept; more are opened when reads overlap, and closed after.
const IDLE: usize = 4;

const RECORD_COLUMNS: &str = "instance_id, name, version, status, input, output, custom_status, \
     failure, tags, parent_instance_id, generation, history_len, created_at, updated_at, \
     completed_at, scheduled_start_at, waiting_event, waiting_since, waiting_deadline";

/// Read-only connections to the database file.
#[derive(Debug, Clone)]
pub(super) struct Readers {
    path: Arc<PathBuf>,
    idle: Arc<Mutex<Vec<ReadConnection>>>,
}

/// A read-only connection (a newtype: rusqlite's connection is not `Debug`).
struct ReadConnection(Connection);

impl std::fmt::Debug for ReadConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadConnection")
    }
}

impl Readers {
    pub(super) fn new(path: &Path) -> Readers {
        Readers {
            path: Arc::new(path.to_owned()),
            idle: Arc::default(),
        }
    }

    /// Runs `read` on an idle connection (or a new one).
    fn with<T>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = self.idle.lock().expect("readers lock").pop();
        let conn = match idle {
            Some(conn) => conn,
            None => ReadConnection(open(&self.path)?),
        };
        let read = read(&conn.0);
        if read.is_ok() {
            let mut idle = self.idle.lock().expect("readers lock");
            if idle.len() < IDLE {
                idle.push(conn);
            }
        }
        read
    }

    /// Runs `read` on the blocking pool, off the async workers.
    async fn off_thread<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = self.clone();
        tokio::task::spawn_blocking(move || readers.with(read))
            .await
            .map_err(|e| StoreError::Corrupt(format!("a read stopped: {e}")))?
    }

    pub(super) fn get(&self, instance_id: &str) -> Result<Option<InstanceRecord>, StoreError> {
        self.with(|conn| {
            conn.prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM instances WHERE instance_id = ?"
            ))?
            .query_row([instance_id], record)
            .optional()?
            .transpose()
        })
    }

    pub(super) fn get_entity(&self, entity_id: &str) -> Result<Option<EntityRecord>, StoreError> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {} FROM entities e WHERE entity_id = ?",
                    entity_columns(true)
                ))?
                .query_row([entity_id], entity)
                .optional()?)
        })
    }

    pub(super) async fn query_entities(
        &self,
        query: &EntityQuery,
    ) -> Result<EntityPage, StoreError> {
        let query = query.clone();
        self.off_thread(move |conn| entity_page(conn, &query)).await
    }

    pub(super) async fn query(&self, query: &InstanceQuery) -> Result<InstancePage, StoreError> {
        let query = query.clone();
        self.off_thread(move |conn| page(conn, &query)).await
    }

    pub(super) async fn waiting_for_event(
        &self,
        name: &str,
        limit: u32,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        let name = name.to_owned();
        self.off_thread(move |conn| {
            records(
                conn,
                &format!(
                    "SELECT {RECORD_COLUMNS} FROM instances WHERE waiting_event = ? \
                     ORDER BY waiting_since LIMIT ?"
                ),
                params![name, limit],
            )
        })
        .await
    }

    pub(super) async fn suspected_runaways(
        &self,
        limits: &RunawayLimits,
        limit: u32,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        let (history_len, generations, created_before) = (
            limits.history_len,
            limits.generations,
            limits.created_before,
        );
        self.off_thread(move |conn| {
            records(
                conn,
                &format!(
                    "SELECT {RECORD_COLUMNS} FROM instances \
                     WHERE status IN ('Pending', 'Running', 'Suspended') \
                     AND (history_len >= ? OR generation >= ? OR created_at <= ?) \
                     ORDER BY history_len DESC, generation DESC, created_at LIMIT ?"
                ),
                params![history_len, generations, created_before, limit],
            )
        })
        .await
    }
}

/// An entity row and its backlog (queued, scheduled and waiting messages), as [`entity`] reads
/// it; `{state}` is `e.state` or `NULL`.
const ENTITY_COLUMNS: &str = "e.entity_id, e.name, e.key, {state}, e.last_modified, \
     (SELECT COUNT(*) FROM messages m WHERE m.instance_id = e.entity_id) \
     + (SELECT COUNT(*) FROM timers t WHERE t.instance_id = e.entity_id) + e.deferred, \
     e.locked_by, e.recent";

/// [`ENTITY_COLUMNS`] with or without the state.
fn entity_columns(with_state: bool) -> String {
    ENTITY_COLUMNS.replace("{state}", if with_state { "e.state" } else { "NULL" })
}

fn entity(r: &rusqlite::Row<'_>) -> rusqlite::Result<EntityRecord> {
    Ok(EntityRecord {
        entity_id: r.get(0)?,
        name: r.get(1)?,
        key: r.get(2)?,
        state: r.get(3)?,
        last_modified: r.get(4)?,
        backlog: r.get(5)?,
        locked_by: r.get(6)?,
        // A list the engine wrote; unreadable means nothing to show, not a failed read.
        recent: r
            .get::<_, Option<String>>(7)?
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default(),
    })
}

/// One page of [`EntityQuery`]'s matches, in (name, key) order along `entities_by_name`, and
/// their count when asked.
fn entity_page(conn: &Connection, query: &EntityQuery) -> Result<EntityPage, StoreError> {
    let page_size = match query.page_size {
        0 => 100,
        n => n.min(1000),
    };
    let filter = |q: &mut Statement<'_>| -> Result<(), StoreError> {
        if let Some(name) = &query.name {
            q.push(" AND e.name = ").bind(name.clone());
            if let Some(prefix) = &query.key_prefix {
                // A range on the index, not LIKE: no escaping.
                q.push(" AND e.key >= ")
                    .bind(prefix.clone())
                    .push(" AND e.key < ")
                    .bind(format!("{prefix}\u{10FFFF}"));
            }
        }
        if let Some(from) = query.modified_from {
            q.push(" AND e.last_modified >= ").bind(from);
        }
        if let Some(to) = query.modified_to {
            q.push(" AND e.last_modified < ").bind(to);
        }
        if !query.include_transient {
            q.push(" AND e.state IS NOT NULL");
        }
        if query.locked_only {
            q.push(" AND e.locked_by IS NOT NULL");
        }
        Ok(())
    };
    let total = if query.count {
        let mut q = Statement::new("SELECT COUNT(*) FROM (SELECT 1 FROM entities e WHERE 1 = 1");
        filter(&mut q)?;
        q.push(" LIMIT ")
            .bind(crate::store::ENTITY_COUNT_CAP as i64 + 1)
            .push(")");
        let total: i64 = conn
            .prepare_cached(&q.sql)?
            .query_row(params_from_iter(&q.args), |r| r.get(0))?;
        Some(total as u64)
    } else {
        None
    };
    let mut q = Statement::new(&format!(
        "SELECT {} FROM entities e WHERE 1 = 1",
        entity_columns(!query.without_state)
    ));
    filter(&mut q)?;
    if let Some(cursor) = &query.cursor {
        let after = crate::entity::EntityId::parse(cursor)
            .map_err(|_| StoreError::Corrupt(format!("invalid cursor {cursor:?}")))?;
        q.push(" AND (e.name, e.key) > (")
            .bind(after.name().to_owned())
            .push(", ")
            .bind(after.key().to_owned())
            .push(")");
    }
    q.push(" ORDER BY e.name, e.key LIMIT ")
        .bind(i64::from(page_size) + 1);
    let mut statement = conn.prepare_cached(&q.sql)?;
    let mut entities = statement
        .query_map(params_from_iter(&q.args), entity)?
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = (entities.len() > page_size as usize).then(|| {
        entities.truncate(page_size as usize);
        entities
            .last()
            .map(|last| last.entity_id.clone())
            .unwrap_or_default()
    });
    Ok(EntityPage {
        entities,
        next_cursor,
        total,
    })
}

fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// An instance row (the [`RECORD_COLUMNS`]); the inner result is a corrupt stored value.
fn record(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<InstanceRecord, StoreError>> {
    let status: String = row.get("status")?;
    let failure: Option<String> = row.get("failure")?;
    let tags: String = row.get("tags")?;
    let (status, failure, tags) = match (
        status_of(&status),
        failure.as_deref().map(|f| parse(f, "failure")).transpose(),
        parse(&tags, "tags"),
    ) {
        (Ok(s), Ok(f), Ok(t)) => (s, f, t),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return Ok(Err(e)),
    };
    Ok(Ok(InstanceRecord {
        instance_id: row.get("instance_id")?,
        name: row.get("name")?,
        version: row.get("version")?,
        status,
        input: row.get("input")?,
        output: row.get("output")?,
        custom_status: row.get("custom_status")?,
        failure,
        tags,
        parent_instance_id: row.get("parent_instance_id")?,
        generation: row.get("generation")?,
        history_len: row.get("history_len")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
        completed_at: row.get("completed_at")?,
        scheduled_start_at: row.get("scheduled_start_at")?,
        waiting_event: row.get("waiting_event")?,
        waiting_since: row.get("waiting_since")?,
        waiting_deadline: row.get("waiting_deadline")?,
    }))
}

fn records(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<InstanceRecord>, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    let rows = statement.query_map(args, record)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row??);
    }
    Ok(out)
}

/// Parses a query cursor: `<sort value>|<instance id>`.
fn parse_cursor(cursor: &str) -> Option<(i64, &str)> {
    let (ts, id) = cursor.split_once('|')?;
    Some((ts.parse().ok()?, id))
}

/// One page of [`InstanceQuery`]'s matches.
fn page(conn: &Connection, query: &InstanceQuery) -> Result<InstancePage, StoreError> {
    let column = match query.sort {
        SortBy::Created => "created_at",
        SortBy::Updated => "updated_at",
    };
    let page_size = query.page_size.clamp(1, 1000);
    let mut q = Statement::new(&format!(
        "SELECT {RECORD_COLUMNS} FROM instances WHERE 1 = 1"
    ));
    if !query.statuses.is_empty() {
        q.push(" AND status IN ")
            .list(query.statuses.iter().map(|s| s.as_str()));
    }
    if let Some(name) = &query.name {
        q.push(" AND name = ").bind(name.as_str());
    }
    if query.hide_system {
        // A range on the name, not LIKE: no escaping of the prefix's `.`.
        q.push(" AND NOT (name >= ")
            .bind(crate::system::SYSTEM_PREFIX)
            .push(" AND name < ")
            .bind(format!("{}\u{10FFFF}", crate::system::SYSTEM_PREFIX))
            .push(")");
    }
    if let Some(from) = query.created_from {
        q.push(" AND created_at >= ").bind(from);
    }
    if let Some(to) = query.created_to {
        q.push(" AND created_at < ").bind(to);
    }
    if let Some(prefix) = &query.id_prefix {
        // Range on the primary key rather than LIKE, so it uses the index and needs no escaping.
        q.push(" AND instance_id >= ")
            .bind(prefix.as_str())
            .push(" AND instance_id < ")
            .bind(format!("{prefix}\u{10FFFF}"));
    }
    for (key, value) in &query.tags {
        q.push(" AND json_extract(tags, ")
            .bind(format!("$.\"{}\"", key.replace('"', "")))
            .push(") = ")
            .bind(value.as_str());
    }
    let (cmp, dir) = if query.descending {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    if let Some(cursor) = &query.cursor {
        let (ts, id) = parse_cursor(cursor)
            .ok_or_else(|| StoreError::Corrupt(format!("invalid cursor {cursor:?}")))?;
        q.push(&format!(" AND ({column}, instance_id) {cmp} ("))
            .bind(ts)
            .push(", ")
            .bind(id)
            .push(")");
    }
    q.push(&format!(
        " ORDER BY {column} {dir}, instance_id {dir} LIMIT "
    ))
    .bind(i64::from(page_size) + 1);
    let mut instances = records(conn, &q.sql, params_from_iter(&q.args))?;
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
