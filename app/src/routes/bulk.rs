//! Bulk actions on the instance list (admins): terminate, suspend, resume or purge every instance
//! the list's current filter matches. The server counts first (a dry run: how many match, how many
//! the action applies to), the user gives a reason and, for the destructive actions, types the
//! confirmation the page asks for; the server then starts the job and the page shows its
//! progress. Starting the job is one audit entry. The job is the engine's system orchestration
//! `switchyard.Bulk` (`engine::system`): durable by the engine's own guarantees, its progress in
//! its custom status, so it survives a restart and an interrupted job resumes by itself.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{error::AppError, models::url_component, routes::instances::InstanceFilter};

/// The actions and the limit are the engine's (`engine_core::bulk`), in the browser too.
pub use engine_core::bulk::{BulkAction, MAX_BULK};

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
    /// The job's instance id (a system instance).
    pub job: String,
    pub total: u64,
    pub done: u64,
    /// The action no longer applied (changed meanwhile).
    pub skipped: u64,
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
) -> Result<String, AppError> {
    ssr::run(filter, action, reason, confirmation).await
}

/// A bulk job's progress. Needs the admin role.
#[server(prefix = "/api/fn", endpoint = "bulk/progress")]
pub async fn bulk_job_status(job: String) -> Result<BulkProgress, AppError> {
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
            let job = job.clone();
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
                            <progress aria-label="Bulk job progress" max=p.total.max(1) value=p.done + p.failed></progress>
                            {format!(" {} of {} done, {} failed{}{}", p.done, p.total, p.failed,
                                if p.skipped > 0 { format!(", {} skipped", p.skipped) } else { String::new() },
                                if p.finished { " — finished" } else { "" })}
                            // The job is a (system) instance: its history and status are there.
                            " · " <a data-testid="bulk-job" href=format!("/instances/{}", url_component(&p.job))>
                                "job " <code>{p.job.clone()}</code>
                            </a>
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
    //! Starting and following bulk jobs. A job is the engine's system orchestration
    //! `switchyard.Bulk`, started with the filter's query; nothing here runs it or stores it.

    use engine::{
        Orchestration, StartOptions,
        system::{Bulk, BulkJob},
    };

    use super::{BulkAction, BulkPreview, BulkProgress, MAX_BULK};
    use crate::{
        audit::ssr::{Action, guarded, required_reason},
        context::engine,
        error::AppError,
        routes::instances::{InstanceFilter, ssr::query},
        session::{Role, ssr::current_user},
    };

    /// Counts what the action would touch.
    pub async fn preview(
        filter: InstanceFilter,
        action: BulkAction,
    ) -> Result<(BulkPreview, engine::store::InstanceQuery), AppError> {
        let engine = engine()?;
        let mut q = query(InstanceFilter {
            cursor: None,
            ..filter
        })?;
        let job_query = q.clone();
        q.page_size = 500;
        let (mut matching, mut eligible) = (0u64, 0u64);
        loop {
            let page = engine.query(&q).await?;
            for r in page.instances {
                matching += 1;
                eligible += u64::from(action.applies_to(r.status));
            }
            match page.next_cursor {
                Some(cursor) if matching <= MAX_BULK => q.cursor = Some(cursor),
                _ => break,
            }
        }
        Ok((BulkPreview { matching, eligible }, job_query))
    }

    pub async fn run(
        filter: InstanceFilter,
        action: BulkAction,
        reason: String,
        confirmation: String,
    ) -> Result<String, AppError> {
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
            let (preview, job_query) = preview(filter, action).await?;
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
            let job = BulkJob {
                action,
                query: job_query,
                reason,
                limit: MAX_BULK,
                expected: preview.eligible,
            };
            let actor = current_user().map(|u| u.name).unwrap_or_default();
            let options = StartOptions {
                tags: [
                    ("actor".to_owned(), actor),
                    ("action".to_owned(), action.label().to_owned()),
                ]
                .into(),
                ..StartOptions::default()
            };
            Ok(engine()?.start_bulk(job, options).await?)
        })
        .await
    }

    /// Reports, once per start, the jobs the old bulk runner left unfinished when the upgrade
    /// retired it (`retired_bulk_jobs`): they were not carried on, and the log says so.
    pub async fn report_retired(db: &engine::Database) -> Result<(), engine::DbError> {
        type Row = (i64, String, String, String, i64, i64);
        const SQL: &str = "SELECT id, action, actor, target, total, done FROM retired_bulk_jobs \
                           ORDER BY id LIMIT 100";
        let rows: Vec<Row> =
            engine::with_pool!(db, pool => sqlx::query_as(SQL).fetch_all(pool).await?);
        for (id, action, actor, target, total, done) in rows {
            tracing::error!(
                job = id,
                action,
                actor,
                target,
                done,
                total,
                "a bulk job was cut off by the upgrade to engine-run bulk jobs and was not \
                 finished; run it again from the instance list"
            );
        }
        Ok(())
    }

    /// A job's progress, from its instance's custom status (its output once finished).
    pub async fn progress(job: String) -> Result<BulkProgress, AppError> {
        let record = engine()?.get(&job).await?;
        if record.name != Bulk::NAME {
            return Err(AppError::NotFound(format!("bulk job {job}")));
        }
        let stored = record.output.as_deref().or(record.custom_status.as_deref());
        let progress: engine::system::BulkProgress = stored
            .map(serde_json::from_str)
            .transpose()
            .map_err(|_| AppError::Unavailable)?
            .unwrap_or_default();
        let ended = record.status.is_terminal();
        let mut errors = progress.errors;
        if let Some(failure) = record.failure.filter(|_| ended) {
            errors.push(format!("the job stopped: {failure}"));
        }
        let total = match progress.expected {
            0 => progress.done + progress.failed,
            n => n,
        };
        Ok(BulkProgress {
            job,
            total,
            done: progress.done,
            skipped: progress.skipped,
            failed: progress.failed,
            finished: ended,
            errors,
        })
    }
}
