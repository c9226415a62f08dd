//! The approvals inbox: instances waiting for an `Approval` event, what each asks for (its input's
//! `request`, else its input), how long it has waited and a countdown to when its timeout
//! escalates (ticking with the live feed's clock). Approving or rejecting (with a comment) raises
//! the event; the instance then moves on by itself.

use leptos::prelude::*;
use leptos_meta::Title;
use serde::{Deserialize, Serialize};

use crate::{
    error::AppError,
    models::{format_span, format_utc},
    session::{Role, can},
};

/// One waiting approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingApproval {
    pub instance_id: String,
    pub name: String,
    pub waiting_since: i64,
    pub deadline: Option<i64>,
    /// The instance's input (JSON text; a value on the wire).
    #[serde(with = "crate::json::text_opt", default)]
    pub input: Option<String>,
    /// The server's clock when this was read (ms), for the countdown until the live feed ticks.
    pub as_of: i64,
    /// Who started the instance (its [`STARTED_BY_TAG`](crate::models::STARTED_BY_TAG)); `None`
    /// when an orchestration or the engine started it.
    #[serde(default)]
    pub started_by: Option<String>,
}

impl PendingApproval {
    /// What is asked for, in a line: the input's `request` when it has one, else the input.
    pub fn summary(&self) -> String {
        let Some(input) = &self.input else {
            return "(no input)".to_owned();
        };
        let request = serde_json::from_str::<serde_json::Value>(input)
            .ok()
            .and_then(|v| v.get("request").and_then(|r| r.as_str()).map(str::to_owned));
        request.unwrap_or_else(|| crate::json::preview(input, 160))
    }
}

/// Instances waiting for an approval, oldest first.
#[server(prefix = "/api/fn", endpoint = "approvals/pending")]
pub async fn pending_approvals() -> Result<Vec<PendingApproval>, AppError> {
    ssr::pending().await.map_err(AppError::with_status)
}

/// Approves or rejects one instance with a comment. Needs the operator role.
#[server(prefix = "/api/fn", endpoint = "approvals/decide")]
pub async fn decide(instance_id: String, approved: bool, comment: String) -> Result<(), AppError> {
    use crate::audit::ssr::{Action, guarded};
    let audit = Action {
        name: if approved { "approve" } else { "reject" },
        target: &instance_id,
        reason: &comment,
    };
    guarded(
        crate::session::Role::Operator,
        audit,
        ssr::decide(instance_id.clone(), approved, comment.clone()),
    )
    .await
}

/// The approvals page.
#[component]
pub fn Approvals() -> impl IntoView {
    let decide = ServerAction::<Decide>::new();
    // Refetched when the pushed figures change: new approvals appear and decided ones leave
    // without a reload.
    let pushed = crate::live::pushed(|s| (s.waiting_approvals, s.counts.clone()));
    let pending = Resource::new(
        move || (decide.version().get(), pushed()),
        |_| pending_approvals(),
    );
    view! {
        <Title text="Approvals" />
        <h1>"Approvals"</h1>
        {move || decide.value().get().and_then(Result::err).map(|e| view! {
            <p class="error" role="alert" data-testid="decide-error">{e.to_string()}</p>
        })}
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || pending.get().map(|result| match result {
                Ok(list) if list.is_empty() => view! {
                    <p class="notice" data-testid="no-approvals">"Nothing is waiting for an approval."</p>
                }.into_any(),
                Ok(list) => view! {
                    <ul class="inbox" data-testid="approvals">
                        {list.into_iter().map(|a| view! { <ApprovalItem approval=a decide /> }).collect_view()}
                    </ul>
                }.into_any(),
                Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
            })}
        </Suspense>
    }
}

#[component]
fn ApprovalItem(approval: PendingApproval, decide: ServerAction<Decide>) -> impl IntoView {
    let (comment, set_comment) = signal(String::new());
    let id = approval.instance_id.clone();
    let answer = move |approved: bool| {
        let instance_id = id.clone();
        move |_| {
            decide.dispatch(Decide {
                instance_id: instance_id.clone(),
                approved,
                comment: comment.get(),
            });
        }
    };
    let comment_id = format!("comment-{}", approval.instance_id);
    // The live feed's clock once it ticks (each process publishes once a second), else the
    // server's at the time of reading.
    let as_of = approval.as_of;
    let now = crate::components::time::server_now(as_of);
    let since = approval.waiting_since;
    let deadline = approval.deadline;
    let summary = approval.summary();
    let input = approval.input.as_deref().map(crate::json::pretty);
    let href = format!(
        "/instances/{}",
        crate::models::url_component(&approval.instance_id)
    );
    view! {
        <li class="card" data-testid="approval" data-instance=approval.instance_id.clone()>
            <p class="request" data-testid="approval-request">{summary}</p>
            <dl class="summary">
                <dt>"Instance"</dt>
                <dd><a href=href><code>{approval.instance_id.clone()}</code></a>" · "{approval.name}</dd>
                <dt>"Started by"</dt>
                <dd data-testid="approval-started-by">
                    {approval.started_by.clone().unwrap_or_else(|| "an orchestration or the engine (not a person)".to_owned())}
                </dd>
                <dt>"Waiting"</dt>
                <dd data-testid="approval-waiting" title=format!("since {} UTC", format_utc(since))>
                    {move || format_span(now() - since)}
                </dd>
                <dt>"Escalates"</dt>
                <dd data-testid="approval-deadline" title=deadline.map(|d| format!("at {} UTC", format_utc(d)))>
                    {move || match deadline {
                        None => "never (no timeout)".to_owned(),
                        Some(d) if d > now() => format!("in {}", format_span(d - now())),
                        Some(_) => "now: the timeout has passed".to_owned(),
                    }}
                </dd>
            </dl>
            {input.map(|input| view! {
                <details class="details">
                    <summary>"Full input"</summary>
                    <pre>{input}</pre>
                </details>
            })}
            <Show when=move || can(Role::Operator) fallback=|| view! {
                <p class="notice" data-testid="approval-operator-only">"Approving or rejecting needs the operator role."</p>
            }>
            <label for=comment_id.clone()>"Comment"</label>
            <input id=comment_id.clone() type="text" data-testid="approval-comment"
                prop:value=comment on:input=move |ev| set_comment.set(event_target_value(&ev)) />
            <div class="actions">
                <button type="button" data-testid="approve" disabled=move || decide.pending().get()
                    on:click=answer(true)>"Approve"</button>
                <button type="button" class="secondary" data-testid="reject" disabled=move || decide.pending().get()
                    on:click=answer(false)>"Reject"</button>
            </div>
            </Show>
        </li>
    }
}

#[cfg(feature = "ssr")]
mod ssr {
    //! Server side of the approvals inbox.

    use engine::{Event, samples::Approval};

    use super::PendingApproval;
    use crate::{
        context::{engine, now_ms},
        error::AppError,
    };

    pub async fn pending() -> Result<Vec<PendingApproval>, AppError> {
        let waiting = engine()?.waiting_for_event(Approval::NAME, 200).await?;
        let as_of = now_ms();
        Ok(waiting
            .into_iter()
            .map(|r| PendingApproval {
                instance_id: r.instance_id,
                name: r.name,
                waiting_since: r.waiting_since.unwrap_or(r.created_at),
                deadline: r.waiting_deadline,
                started_by: r.tags.get(crate::models::STARTED_BY_TAG).cloned(),
                input: r.input,
                as_of,
            })
            .collect())
    }

    pub async fn decide(
        instance_id: String,
        approved: bool,
        comment: String,
    ) -> Result<(), AppError> {
        if comment.len() > 2_000 {
            return Err(AppError::Validation(
                "the comment is longer than 2,000 bytes".into(),
            ));
        }
        let answer = Approval { approved, comment };
        engine()?.raise_event(&instance_id, &answer).await?;
        Ok(())
    }
}
