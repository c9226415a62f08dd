//! One instance: its summary, input and output, failure, custom status and history; and the
//! operator actions terminate, suspend and resume, each with a reason.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_params_map;
use serde::{Deserialize, Serialize};

use crate::{error::AppError, models::format_utc};

/// What the detail page shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceDetail {
    pub instance_id: String,
    pub name: String,
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub input: Option<String>,
    pub output: Option<String>,
    pub custom_status: Option<String>,
    pub failure: Option<String>,
    pub history: Vec<HistoryRow>,
}

/// One history event, flattened for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRow {
    pub id: u32,
    pub timestamp: i64,
    pub kind: String,
    /// The event's fields as JSON, without the kind and id.
    pub details: String,
}

/// An operator action on one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceAction {
    Terminate,
    Suspend,
    Resume,
}

/// The instance, with its history.
#[server(prefix = "/api/fn", endpoint = "instances/get")]
pub async fn get_instance(instance_id: String) -> Result<InstanceDetail, AppError> {
    ssr::get(instance_id).await.map_err(AppError::with_status)
}

/// Terminates, suspends or resumes an instance. Needs the operator role and a reason.
#[server(prefix = "/api/fn", endpoint = "instances/act")]
pub async fn act_on_instance(
    instance_id: String,
    action: InstanceAction,
    reason: String,
) -> Result<(), AppError> {
    crate::session::ssr::require(crate::session::Role::Operator)?;
    ssr::act(instance_id, action, reason)
        .await
        .map_err(AppError::with_status)
}

/// The detail page.
#[component]
pub fn InstanceDetailPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").unwrap_or_default());
    let act = ServerAction::<ActOnInstance>::new();
    let detail = Resource::new(
        move || (id(), act.version().get()),
        |(id, _)| get_instance(id),
    );
    view! {
        <Title text=move || format!("Instance {}", id()) />
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || detail.get().map(|result| match result {
                Ok(d) => view! { <Detail detail=d act /> }.into_any(),
                Err(e) => view! {
                    <h1>"Instance"</h1>
                    <p class="error" role="alert" data-testid="detail-error">{e.to_string()}</p>
                }.into_any(),
            })}
        </Suspense>
    }
}

#[component]
fn Detail(detail: InstanceDetail, act: ServerAction<ActOnInstance>) -> impl IntoView {
    let (reason, set_reason) = signal(String::new());
    let live = !matches!(
        detail.status.as_str(),
        "Completed" | "Failed" | "Terminated" | "Canceled"
    );
    let suspended = detail.status == "Suspended";
    let id = detail.instance_id.clone();
    let run = move |action: InstanceAction| {
        let id = id.clone();
        move |_| {
            act.dispatch(ActOnInstance {
                instance_id: id.clone(),
                action,
                reason: reason.get(),
            });
        }
    };
    let field = |label: &'static str, value: Option<String>, testid: &'static str| {
        value.map(|v| view! { <dt>{label}</dt><dd><pre data-testid=testid>{v}</pre></dd> })
    };
    view! {
        <h1>"Instance " <code>{detail.instance_id.clone()}</code></h1>
        <section class="card">
            <dl class="summary">
                <dt>"Orchestration"</dt><dd>{detail.name}</dd>
                <dt>"Status"</dt>
                <dd><span class=format!("status status-{}", detail.status.to_lowercase()) data-testid="detail-status">{detail.status.clone()}</span></dd>
                <dt>"Created (UTC)"</dt><dd>{format_utc(detail.created_at)}</dd>
                <dt>"Last change (UTC)"</dt><dd>{format_utc(detail.updated_at)}</dd>
                {field("Custom status", detail.custom_status, "detail-custom-status")}
                {field("Input", detail.input, "detail-input")}
                {field("Output", detail.output, "detail-output")}
                {field("Failure", detail.failure, "detail-failure")}
            </dl>
        </section>
        {live.then(|| view! {
            <section class="card" aria-labelledby="actions-title" data-testid="actions">
                <h2 id="actions-title">"Actions"</h2>
                <label for="action-reason">"Reason (required)"</label>
                <input id="action-reason" type="text" data-testid="action-reason"
                    prop:value=reason on:input=move |ev| set_reason.set(event_target_value(&ev)) />
                <div class="actions">
                    <button type="button" class="danger" data-testid="terminate"
                        disabled=move || reason.with(|r| r.trim().is_empty()) || act.pending().get()
                        on:click=run(InstanceAction::Terminate)>"Terminate"</button>
                    {if suspended {
                        view! { <button type="button" class="secondary" data-testid="resume"
                            disabled=move || reason.with(|r| r.trim().is_empty()) || act.pending().get()
                            on:click=run(InstanceAction::Resume)>"Resume"</button> }.into_any()
                    } else {
                        view! { <button type="button" class="secondary" data-testid="suspend"
                            disabled=move || reason.with(|r| r.trim().is_empty()) || act.pending().get()
                            on:click=run(InstanceAction::Suspend)>"Suspend"</button> }.into_any()
                    }}
                </div>
                {move || act.value().get().and_then(Result::err).map(|e| view! {
                    <p class="error" role="alert" data-testid="action-error">{e.to_string()}</p>
                })}
            </section>
        })}
        <section class="card" aria-labelledby="history-title">
            <h2 id="history-title">"History"</h2>
            <table class="instances" data-testid="history">
                <thead><tr><th scope="col">"#"</th><th scope="col">"Time (UTC)"</th><th scope="col">"Event"</th><th scope="col">"Details"</th></tr></thead>
                <tbody>
                    {detail.history.into_iter().map(|h| view! {
                        <tr data-testid="history-row">
                            <td>{h.id}</td>
                            <td>{format_utc(h.timestamp)}</td>
                            <td>{h.kind}</td>
                            <td><code class="details">{h.details}</code></td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        </section>
    }
}

#[cfg(feature = "ssr")]
mod ssr {
    //! Server side of the detail page.

    use super::{HistoryRow, InstanceAction, InstanceDetail};
    use crate::{EngineClient, error::AppError};

    fn engine() -> Result<EngineClient, AppError> {
        leptos::prelude::use_context::<EngineClient>().ok_or(AppError::Unavailable)
    }

    pub async fn get(instance_id: String) -> Result<InstanceDetail, AppError> {
        let engine = engine()?;
        let record = engine.get(&instance_id).await?;
        let history = engine.history(&instance_id).await?;
        Ok(InstanceDetail {
            instance_id: record.instance_id,
            name: record.name,
            status: record.status.to_string(),
            created_at: record.created_at,
            updated_at: record.updated_at,
            input: record.input,
            output: record.output,
            custom_status: record.custom_status,
            failure: record.failure.map(|f| f.to_string()),
            history: history
                .into_iter()
                .map(|e| {
                    let mut details = serde_json::to_value(&e.kind).unwrap_or_default();
                    if let Some(map) = details.as_object_mut() {
                        map.remove("type");
                    }
                    HistoryRow {
                        id: e.id,
                        timestamp: e.timestamp_ms,
                        kind: e.kind.name().to_owned(),
                        details: if details.as_object().is_some_and(|m| m.is_empty()) {
                            String::new()
                        } else {
                            details.to_string()
                        },
                    }
                })
                .collect(),
        })
    }

    pub async fn act(
        instance_id: String,
        action: InstanceAction,
        reason: String,
    ) -> Result<(), AppError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(AppError::Validation("a reason is required".into()));
        }
        if reason.len() > 1_000 {
            return Err(AppError::Validation(
                "the reason is longer than 1,000 bytes".into(),
            ));
        }
        let engine = engine()?;
        match action {
            InstanceAction::Terminate => engine.terminate(&instance_id, reason, true).await?,
            InstanceAction::Suspend => engine.suspend(&instance_id, reason).await?,
            InstanceAction::Resume => engine.resume(&instance_id, reason).await?,
        }
        Ok(())
    }
}
