//! The audit log: every mutating action, who took it, when, on what, why, and how it ended.
//!
//! Server functions never call the engine's mutating verbs directly: they go through
//! [`ssr::guarded`], which checks the role, runs the action and records the outcome, so a refusal
//! (wrong role) and a failure are on the record as well as a success.

use serde::{Deserialize, Serialize};

/// One audit record, as the audit page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    pub actor: String,
    pub role: String,
    pub action: String,
    pub target: String,
    pub reason: String,
    /// `ok`, `refused: …` or `failed: …`.
    pub outcome: String,
}

/// Which audit records to list; every field narrows the result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    /// Instance ids (or other targets) starting with this.
    pub target_prefix: Option<String>,
    /// Only entries older than this id (the page's cursor).
    pub before: Option<i64>,
}

#[cfg(feature = "ssr")]
pub mod ssr {
    //! Writing and reading the audit table.

    use std::future::Future;

    use engine::{Database, DbError};

    use super::{AuditEntry, AuditFilter};
    use crate::{
        context::{database, now_ms},
        error::AppError,
        session::{CurrentUser, Role, ssr::require},
    };

    /// Longest reason accepted, in bytes.
    pub const MAX_REASON: usize = 1_000;
    /// Most characters stored per audit field: actor, action, target, outcome. Whatever a caller
    /// sends (a refused start with a 2 MB name, an 8 KB id), a record stays small.
    pub const MAX_FIELD: usize = 300;

    /// `text` cut to `max` characters, marked with `…` when cut.
    pub fn bounded(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
        match text.char_indices().nth(max) {
            None => text.into(),
            Some((end, _)) => format!("{}…", &text[..end]).into(),
        }
    }

    /// What is being done, for the record.
    #[derive(Debug, Clone)]
    pub struct Action<'a> {
        pub name: &'a str,
        pub target: &'a str,
        pub reason: &'a str,
    }

    /// Checks that the user has `needed`, runs `work`, and records the outcome either way. The
    /// action's own error is returned unchanged (with its HTTP status set). For server functions:
    /// the database and the user come from the request's context.
    pub async fn guarded<T, F>(needed: Role, action: Action<'_>, work: F) -> Result<T, AppError>
    where
        F: Future<Output = Result<T, AppError>>,
    {
        let db = database()?;
        if let Err(refusal) = require(needed) {
            if let Some(user) = crate::session::ssr::current_user() {
                write(&db, &user, &action, &format!("refused: {refusal}")).await;
            }
            return Err(refusal);
        }
        let user = crate::session::ssr::current_user().ok_or(AppError::Unavailable)?;
        guarded_as(&db, &user, needed, action, work)
            .await
            .map_err(AppError::with_status)
    }

    /// [`guarded`] with the database and the user given: for callers outside a server function
    /// (the JSON API). Returns `Forbidden` when the role is too low, recorded as refused.
    pub async fn guarded_as<T, F>(
        db: &Database,
        user: &CurrentUser,
        needed: Role,
        action: Action<'_>,
        work: F,
    ) -> Result<T, AppError>
    where
        F: Future<Output = Result<T, AppError>>,
    {
        if user.role < needed {
            let refusal = AppError::Forbidden(format!(
                "this action needs the {} role; you are {}",
                needed.label(),
                user.role.label()
            ));
            write(db, user, &action, &format!("refused: {refusal}")).await;
            return Err(refusal);
        }
        let result = work.await;
        let outcome = match &result {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("failed: {e}"),
        };
        write(db, user, &action, &outcome).await;
        result
    }

    /// A required reason, trimmed, or a validation error.
    pub fn required_reason(reason: &str) -> Result<&str, AppError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(AppError::Validation("a reason is required".into()));
        }
        if reason.len() > MAX_REASON {
            return Err(AppError::Validation(format!(
                "the reason is longer than {MAX_REASON} bytes"
            )));
        }
        Ok(reason)
    }

    async fn write(db: &Database, user: &CurrentUser, action: &Action<'_>, outcome: &str) {
        if let Err(e) = insert(db, user, action, outcome).await {
            // The action itself has happened (or been refused); the response must say so
            // truthfully, so a failed audit write is logged loudly rather than returned.
            tracing::error!(error = %e, action = action.name, target = action.target, "could not write the audit record");
        }
    }

    async fn insert(
        db: &Database,
        user: &CurrentUser,
        action: &Action<'_>,
        outcome: &str,
    ) -> Result<(), DbError> {
        const SQL: &str = "INSERT INTO audit_log (at_ms, actor, role, action, target, reason, outcome) \
                           VALUES ($1, $2, $3, $4, $5, $6, $7)";
        let reason = bounded(action.reason, MAX_REASON);
        engine::with_pool!(db, pool => {
            sqlx::query(SQL)
                .bind(now_ms())
                .bind(bounded(&user.name, MAX_FIELD).as_ref())
                .bind(user.role.label())
                .bind(bounded(action.name, MAX_FIELD).as_ref())
                .bind(bounded(action.target, MAX_FIELD).as_ref())
                .bind(reason.as_ref())
                .bind(bounded(outcome, MAX_REASON).as_ref())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Newest first, at most `limit` entries matching `filter`.
    pub async fn list(
        db: &Database,
        filter: &AuditFilter,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, DbError> {
        // Optional filters as `($n IS NULL OR …)`, so one statement serves every combination.
        const SQL: &str = "SELECT id, at_ms, actor, role, action, target, reason, outcome FROM audit_log \
             WHERE ($1 IS NULL OR actor = $1) AND ($2 IS NULL OR action = $2) \
             AND ($3 IS NULL OR substr(target, 1, length($3)) = $3) AND ($4 IS NULL OR id < $4) \
             ORDER BY id DESC LIMIT $5";
        type Row = (i64, i64, String, String, String, String, String, String);
        let rows: Vec<Row> = engine::with_pool!(db, pool => {
            sqlx::query_as(SQL)
                .bind(filter.actor.as_deref())
                .bind(filter.action.as_deref())
                .bind(filter.target_prefix.as_deref())
                .bind(filter.before)
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(
                |(id, at, actor, role, action, target, reason, outcome)| AuditEntry {
                    id,
                    at,
                    actor,
                    role,
                    action,
                    target,
                    reason,
                    outcome,
                },
            )
            .collect())
    }
}
