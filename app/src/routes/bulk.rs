//! Bulk actions on the instance list (admins): terminate, suspend, resume or purge every instance
//! the list's current filter matches. The server counts first (a dry run: how many match, how many
//! the action applies to), the user gives a reason and, for the destructive actions, types the
//! confirmation the page asks for; the server then runs the job in the background and the page
//! shows its progress. Starting the job is one audit entry; the job and each instance's outcome
//! are kept in the database, so progress survives a restart and an interrupted job resumes.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{error::AppError, routes::instances::InstanceFilter};

/// Most instances one bulk job may touch; narrow the filter for more.
pub const MAX_BULK: u64 = 10_000;

/// What a bulk job does to each instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BulkAction {
    Terminate,
    Suspend,
    Resume,
    Purge,
}

impl BulkAction {
    pub const ALL: [BulkAction; 4] = [
        BulkAction::Terminate,
        BulkAction::Suspend,
        BulkAction::Resume,
        BulkAction::Purge,
    ];

    pub fn label(self) -> &'static str {
        match self {
            BulkAction::Terminate => "terminate",
            BulkAction::Suspend => "suspend",
            BulkAction::Resume => "resume",
            BulkAction::Purge => "purge",
        }
    }

    /// "can be …" in the dry run's answer.
    pub fn past(self) -> &'static str {
        match self {
            BulkAction::Terminate => "terminated",
            BulkAction::Suspend => "suspended",
            BulkAction::Resume => "resumed",
            BulkAction::Purge => "purged",
        }
    }

    /// Terminate and purge cannot be undone: they need a typed confirmation.
    pub fn destructive(self) -> bool {
        matches!(self, BulkAction::Terminate | BulkAction::Purge)
    }

    /// The text the user must type to confirm a destructive action on `eligible` instances.
    pub fn confirmation(self, eligible: u64) -> String {
        format!("{} {eligible}", self.label())
    }

    fn parse(text: &str) -> Option<BulkAction> {
        BulkAction::ALL.into_iter().find(|a| a.label() == text)
    }
}

/// The dry run's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkPreview {
    /// Instances the filter matches (up to [`MAX_BULK`] + 1).
    pub matching: u64,
    /// Of those, the ones in a state the action applies to.
    pub eligible: u64,
}

/// A job's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkProgress {
    pub job: u64,
    pub action: BulkAction,
    pub total: u64,
    pub done: u64,
    pub failed: u64,
    pub finished: bool,
    /// The first few failures, for the user to look at.
    pub errors: Vec<String>,
}

/// Counts what `action` on `filter` would touch. Needs the admin role.
#[server(prefix = "/api/fn", endpoint = "bulk/preview")]
pub async fn dry_run_bulk(
    #[server(default)] filter: InstanceFilter,
    action: BulkAction,
) -> Result<BulkPreview, AppError> {
    crate::session::ssr::require(crate::session::Role::Admin)?;
    ssr::preview(filter, action)
        .await
        .map(|(preview, _)| preview)
        .map_err(AppError::with_status)
}

/// Starts `action` on every eligible instance `filter` matches; returns the job id. Needs the
/// admin role, a reason, and for terminate and purge the typed confirmation.
#[server(prefix = "/api/fn", endpoint = "bulk/run")]
pub async fn start_bulk(
    #[server(default)] filter: InstanceFilter,
    action: BulkAction,
    reason: String,
    confirmation: String,
) -> Result<u64, AppError> {
    ssr::run(filter, action, reason, confirmation).await
}

/// A bulk job's progress. Needs the admin role.
#[server(prefix = "/api/fn", endpoint = "bulk/progress")]
pub async fn bulk_job_status(job: u64) -> Result<BulkProgress, AppError> {
    crate::session::ssr::require(crate::session::Role::Admin)?;
    ssr::progress(job).await.map_err(AppError::with_status)
}

/// The bulk panel under the instance list's filters.
#[component]
pub fn BulkPanel(filter: Signal<InstanceFilter>) -> impl IntoView {
    let (action, set_action) = signal(BulkAction::Terminate);
    let (reason, set_reason) = signal(String::new());
    let (typed, set_typed) = signal(String::new());
    let preview = Action::new(move |(filter, action): &(InstanceFilter, BulkAction)| {
        dry_run_bulk(filter.clone(), *action)
    });
    let run = Action::new(
        move |(filter, action, reason, typed): &(InstanceFilter, BulkAction, String, String)| {
            start_bulk(filter.clone(), *action, reason.clone(), typed.clone())
        },
    );
    let (progress, set_progress) = signal(None::<Result<BulkProgress, AppError>>);
    // Follows the started job until it finishes.
    Effect::new(move |_| {
        let Some(Ok(job)) = run.value().get() else {
            return;
        };
        let handle = StoredValue::new(None::<IntervalHandle>);
        let tick = move || {
            leptos::task::spawn_local(async move {
                let p = bulk_job_status(job).await;
                let finished = p.as_ref().map_or(true, |p| p.finished);
                set_progress.set(Some(p));
                if finished && let Some(h) = handle.get_value() {
                    h.clear();
                }
            });
        };
        tick();
        if let Ok(h) = set_interval_with_handle(tick, std::time::Duration::from_millis(400)) {
            handle.set_value(Some(h));
        }
    });
    let eligible = move || {
        preview
            .value()
            .get()
            .and_then(Result::ok)
            .map(|p| p.eligible)
    };
    let needed = move || {
        let a = action.get();
        a.destructive()
            .then(|| a.confirmation(eligible().unwrap_or(0)))
    };
    let ready = move || {
        eligible().is_some_and(|n| n > 0)
            && !reason.with(|r| r.trim().is_empty())
            && needed().is_none_or(|n| typed.with(|t| t.trim() == n))
            && !run.pending().get()
    };
    view! {
        <details class="card bulk" data-testid="bulk">
            <summary>"Bulk action on every instance this filter matches"</summary>
            <div class="form">
                <label for="bulk-action">"Action"</label>
                <select id="bulk-action" data-testid="bulk-action"
                    on:change=move |ev| {
                        if let Some(a) = BulkAction::parse(&event_target_value(&ev)) {
                            set_action.set(a);
                            preview.value().set(None);
                        }
                    }>
                    {BulkAction::ALL.into_iter().map(|a| view! { <option value=a.label()>{a.label()}</option> }).collect_view()}
                </select>
                <button type="button" class="secondary" data-testid="bulk-preview"
                    on:click=move |_| { preview.dispatch((filter.get(), action.get())); }>"Count (dry run)"</button>
                {move || preview.value().get().map(|r| match r {
                    Ok(p) => view! {
                        <p data-testid="bulk-count">
                            {p.matching} " instances match; " <strong>{p.eligible}</strong> " can be " {action.get().past()} "."
                            {(p.matching > MAX_BULK).then_some(" More than the limit: narrow the filter.")}
                        </p>
                    }.into_any(),
                    Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                })}
                <label for="bulk-reason">"Reason (required)"</label>
                <input id="bulk-reason" type="text" maxlength="1000" data-testid="bulk-reason"
                    prop:value=reason on:input=move |ev| set_reason.set(event_target_value(&ev)) />
                {move || needed().map(|n| view! {
                    <label for="bulk-confirm">"Type " <code>{n}</code> " to confirm"</label>
                    <input id="bulk-confirm" type="text" data-testid="bulk-confirm"
                        prop:value=typed on:input=move |ev| set_typed.set(event_target_value(&ev)) />
                })}
                <button type="button" class="danger" data-testid="bulk-run" disabled=move || !ready()
                    on:click=move |_| { run.dispatch((filter.get(), action.get(), reason.get(), typed.get())); }>
                    "Run"
                </button>
                {move || run.value().get().and_then(Result::err).map(|e| view! {
                    <p class="error" role="alert" data-testid="bulk-error">{e.to_string()}</p>
                })}
                {move || progress.get().map(|p| match p {
                    Ok(p) => view! {
                        <p role="status" data-testid="bulk-progress" data-finished=p.finished.to_string()>
                            <progress max=p.total.max(1) value=p.done + p.failed></progress>
                            {format!(" {} of {} done, {} failed{}", p.done, p.total, p.failed, if p.finished { " — finished" } else { "" })}
                        </p>
                        {(!p.errors.is_empty()).then(|| view! {
                            <ul class="error">{p.errors.into_iter().map(|e| view! { <li>{e}</li> }).collect_view()}</ul>
                        })}
                    }.into_any(),
                    Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                })}
            </div>
        </details>
    }
}

#[cfg(feature = "ssr")]
pub mod ssr {
    //! The bulk job runner. A job and the instances it covers are written to the database
    //! before it starts (`bulk_jobs`, `bulk_job_items`); each instance's outcome is recorded as
    //! it is done, so progress survives a restart and [`resume`] finishes the jobs a stopped
    //! server left unfinished. An instance whose change committed just before a crash, but whose
    //! outcome did not, is tried again and reported with the engine's answer (e.g. already
    //! terminated).

    use engine::{Database, DbError, RuntimeStatus};

    use super::{BulkAction, BulkPreview, BulkProgress, MAX_BULK};
    use crate::{
        EngineClient,
        audit::ssr::{Action, guarded, required_reason},
        context::{database, engine, now_ms},
        error::AppError,
        routes::instances::{InstanceFilter, ssr::query},
        session::{Role, ssr::current_user},
    };

    /// Instances a job reads from the database at a time.
    const BATCH: i64 = 100;
    /// Failures a job's progress shows.
    const SHOWN_ERRORS: i64 = 5;
    /// Marks a job finished.
    const FINISHED: &str = "UPDATE bulk_jobs SET finished_ms = $1 WHERE id = $2";

    fn eligible(action: BulkAction, status: RuntimeStatus) -> bool {
        match action {
            BulkAction::Terminate => !status.is_terminal(),
            BulkAction::Suspend => status == RuntimeStatus::Running,
            BulkAction::Resume => status == RuntimeStatus::Suspended,
            BulkAction::Purge => status.is_terminal(),
        }
    }

    /// Counts, and collects the eligible ids (up to the limit).
    pub async fn preview(
        filter: InstanceFilter,
        action: BulkAction,
    ) -> Result<(BulkPreview, Vec<String>), AppError> {
        let engine = engine()?;
        let mut q = query(InstanceFilter {
            cursor: None,
            ..filter
        })?;
        q.page_size = 500;
        let (mut matching, mut ids) = (0u64, Vec::new());
        loop {
            let page = engine.query(&q).await?;
            for r in page.instances {
                matching += 1;
                if eligible(action, r.status) {
                    ids.push(r.instance_id);
                }
            }
            match page.next_cursor {
                Some(cursor) if matching <= MAX_BULK => q.cursor = Some(cursor),
                _ => break,
            }
        }
        let preview = BulkPreview {
            matching,
            eligible: ids.len() as u64,
        };
        Ok((preview, ids))
    }

    pub async fn run(
        filter: InstanceFilter,
        action: BulkAction,
        reason: String,
        confirmation: String,
    ) -> Result<u64, AppError> {
        let target = format!(
            "bulk {}",
            InstanceFilter {
                cursor: None,
                ..filter.clone()
            }
            .href()
        );
        let audit = Action {
            name: match action {
                BulkAction::Terminate => "bulk-terminate",
                BulkAction::Suspend => "bulk-suspend",
                BulkAction::Resume => "bulk-resume",
                BulkAction::Purge => "bulk-purge",
            },
            target: &target,
            reason: &reason,
        };
        guarded(Role::Admin, audit, async {
            let reason = required_reason(&reason)?.to_owned();
            let (preview, ids) = preview(filter, action).await?;
            if preview.matching > MAX_BULK {
                return Err(AppError::Validation(format!(
                    "the filter matches more than {MAX_BULK} instances; narrow it"
                )));
            }
            if action.destructive() && confirmation.trim() != action.confirmation(preview.eligible)
            {
                return Err(AppError::Validation(format!(
                    "type \"{}\" to confirm (the count may have changed since the dry run)",
                    action.confirmation(preview.eligible)
                )));
            }
            let db = database()?;
            let actor = current_user().map(|u| u.name).unwrap_or_default();
            let job = create(&db, action, &reason, &actor, &target, &ids).await?;
            tokio::spawn(work(db, engine()?, job, action, reason));
            Ok(job.unsigned_abs())
        })
        .await
    }

    /// Writes the job and its instances in one transaction.
    async fn create(
        db: &Database,
        action: BulkAction,
        reason: &str,
        actor: &str,
        target: &str,
        ids: &[String],
    ) -> Result<i64, DbError> {
        const JOB: &str = "INSERT INTO bulk_jobs (action, reason, actor, target, total, created_ms) \
                           VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";
        let total = i64::try_from(ids.len()).unwrap_or(i64::MAX);
        let job = engine::with_pool!(db, pool => {
            let mut tx = pool.begin().await?;
            let job: i64 = sqlx::query_scalar(JOB)
                .bind(action.label())
                .bind(reason)
                .bind(actor)
                .bind(target)
                .bind(total)
                .bind(now_ms())
                .fetch_one(&mut *tx)
                .await?;
            for chunk in ids.chunks(400) {
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO bulk_job_items (job_id, instance_id) ",
                );
                q.push_values(chunk, |mut row, id| {
                    row.push_bind(job).push_bind(id);
                });
                q.build().execute(&mut *tx).await?;
            }
            if ids.is_empty() {
                sqlx::query(FINISHED)
                    .bind(now_ms())
                    .bind(job)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            job
        });
        Ok(job)
    }

    /// Restarts every job a previous run of the server left unfinished; returns how many.
    pub async fn resume(db: Database, engine: EngineClient) -> Result<usize, DbError> {
        const SQL: &str =
            "SELECT id, action, reason FROM bulk_jobs WHERE finished_ms IS NULL ORDER BY id";
        let jobs: Vec<(i64, String, String)> =
            engine::with_pool!(&db, pool => sqlx::query_as(SQL).fetch_all(pool).await?);
        let mut resumed = 0;
        for (job, action, reason) in jobs {
            let Some(action) = BulkAction::parse(&action) else {
                tracing::error!(job, action, "unknown bulk action; the job is left as it is");
                continue;
            };
            tracing::info!(
                job,
                action = action.label(),
                "resuming an unfinished bulk job"
            );
            tokio::spawn(work(db.clone(), engine.clone(), job, action, reason));
            resumed += 1;
        }
        Ok(resumed)
    }

    /// Does the job's remaining instances, recording each outcome, then marks it finished.
    async fn work(
        db: Database,
        engine: EngineClient,
        job: i64,
        action: BulkAction,
        reason: String,
    ) {
        if let Err(e) = work_through(&db, &engine, job, action, &reason).await {
            // The job stays unfinished in the database; the next start resumes it.
            tracing::error!(job, error = %e, "bulk job stopped; it resumes when the server restarts");
        }
    }

    async fn work_through(
        db: &Database,
        engine: &EngineClient,
        job: i64,
        action: BulkAction,
        reason: &str,
    ) -> Result<(), DbError> {
        const NEXT: &str = "SELECT instance_id FROM bulk_job_items \
                            WHERE job_id = $1 AND outcome IS NULL ORDER BY instance_id LIMIT $2";
        const DONE: &str =
            "UPDATE bulk_job_items SET outcome = $1 WHERE job_id = $2 AND instance_id = $3";
        loop {
            let ids: Vec<String> = engine::with_pool!(db, pool => {
                sqlx::query_scalar(NEXT).bind(job).bind(BATCH).fetch_all(pool).await?
            });
            if ids.is_empty() {
                break;
            }
            for id in ids {
                let result = match action {
                    BulkAction::Terminate => engine.terminate(&id, reason, true).await,
                    BulkAction::Suspend => engine.suspend(&id, reason).await,
                    BulkAction::Resume => engine.resume(&id, reason).await,
                    BulkAction::Purge => engine.purge(&id, true).await.map(drop),
                };
                let outcome = match result {
                    Ok(()) => "ok".to_owned(),
                    Err(e) => e.to_string(),
                };
                engine::with_pool!(db, pool => {
                    sqlx::query(DONE).bind(&outcome).bind(job).bind(&id).execute(pool).await?;
                });
            }
        }
        engine::with_pool!(db, pool => {
            sqlx::query(FINISHED).bind(now_ms()).bind(job).execute(pool).await?;
        });
        tracing::info!(job, action = action.label(), "bulk job finished");
        Ok(())
    }

    type ProgressRow = (String, i64, bool, i64, i64);

    async fn read_progress(
        db: &Database,
        id: i64,
    ) -> Result<(Option<ProgressRow>, Vec<(String, String)>), DbError> {
        const JOB: &str = "SELECT action, total, finished_ms IS NOT NULL, \
             (SELECT COUNT(*) FROM bulk_job_items i WHERE i.job_id = j.id AND i.outcome = 'ok'), \
             (SELECT COUNT(*) FROM bulk_job_items i WHERE i.job_id = j.id AND i.outcome <> 'ok') \
             FROM bulk_jobs j WHERE j.id = $1";
        const ERRORS: &str = "SELECT instance_id, outcome FROM bulk_job_items \
             WHERE job_id = $1 AND outcome <> 'ok' ORDER BY instance_id LIMIT $2";
        Ok(engine::with_pool!(db, pool => (
            sqlx::query_as(JOB).bind(id).fetch_optional(pool).await?,
            sqlx::query_as(ERRORS)
                .bind(id)
                .bind(SHOWN_ERRORS)
                .fetch_all(pool)
                .await?,
        )))
    }

    /// A job's progress, from the database.
    pub async fn progress(job: u64) -> Result<BulkProgress, AppError> {
        let db = database()?;
        let id = i64::try_from(job).map_err(|_| AppError::NotFound(format!("bulk job {job}")))?;
        let (row, errors) = read_progress(&db, id).await?;
        let (action, total, finished, done, failed) =
            row.ok_or_else(|| AppError::NotFound(format!("bulk job {job}")))?;
        let action = BulkAction::parse(&action).ok_or(AppError::Unavailable)?;
        Ok(BulkProgress {
            job,
            action,
            total: total.unsigned_abs(),
            done: done.unsigned_abs(),
            failed: failed.unsigned_abs(),
            finished,
            errors: errors
                .into_iter()
                .map(|(id, outcome)| format!("{id}: {outcome}"))
                .collect(),
        })
    }
}
