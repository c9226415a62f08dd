//! One instance: its summary, input and output, failure, custom status, history and a timeline of
//! its activities, timers and sub-orchestrations; and the actions on it, each with a reason:
//! terminate, suspend, resume and raise event (operators), rewind, restart and purge (admins).
//! Controls the user's role does not allow are not shown; the server checks again regardless.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_params_map;
use serde::{Deserialize, Serialize};

use crate::{
    error::AppError,
    json::{pretty, preview},
    models::{format_duration, format_utc},
    session::{Role, can},
};

/// What the detail page shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct InstanceDetail {
    pub instance_id: String,
    pub name: String,
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// JSON text here; a JSON value on the wire (see [`crate::json`]).
    #[serde(with = "crate::json::text_opt", default)]
    #[cfg_attr(feature = "ssr", schema(value_type = Option<serde_json::Value>))]
    pub input: Option<String>,
    #[serde(with = "crate::json::text_opt", default)]
    #[cfg_attr(feature = "ssr", schema(value_type = Option<serde_json::Value>))]
    pub output: Option<String>,
    #[serde(with = "crate::json::text_opt", default)]
    #[cfg_attr(feature = "ssr", schema(value_type = Option<serde_json::Value>))]
    pub custom_status: Option<String>,
    pub failure: Option<String>,
    /// The failure and its causes, outermost first (empty unless it failed).
    #[serde(default)]
    pub failure_chain: Vec<FailureCause>,
    pub history: Vec<HistoryRow>,
    /// Activities, timers and sub-orchestrations, in the order they were scheduled.
    pub timeline: Vec<Span>,
}

/// One link of a failure's cause chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct FailureCause {
    pub error_type: String,
    pub message: String,
}

/// A failure and its causes, outermost first.
pub fn cause_chain(failure: &engine_core::history::Failure) -> Vec<FailureCause> {
    std::iter::successors(Some(failure), |f| f.cause.as_deref())
        .map(|f| FailureCause {
            error_type: f.error_type.clone(),
            message: f.message.clone(),
        })
        .collect()
}

/// One bar of the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Span {
    /// `activity`, `timer` or `sub-orchestration`.
    pub kind: String,
    /// Activity or orchestration name; for a timer, its scheduled id.
    pub label: String,
    pub start: i64,
    /// Absent while the span is still open.
    pub end: Option<i64>,
    /// `open`, `completed`, `failed`, or `abandoned` (still awaited when the execution ended).
    pub outcome: String,
}

/// One history event, flattened for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct HistoryRow {
    pub id: u32,
    pub timestamp: i64,
    pub kind: String,
    /// The event's fields as one JSON document (payloads embedded, not as text), without the
    /// kind and id; `None` when it has none.
    #[serde(with = "crate::json::text_opt", default)]
    #[cfg_attr(feature = "ssr", schema(value_type = Option<serde_json::Value>))]
    pub details: Option<String>,
}

/// An action on one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceAction {
    Terminate,
    Suspend,
    Resume,
    Rewind,
    Restart,
    Purge,
}

impl InstanceAction {
    /// The least role that may take the action.
    pub fn needs(self) -> Role {
        match self {
            InstanceAction::Terminate | InstanceAction::Suspend | InstanceAction::Resume => {
                Role::Operator
            }
            InstanceAction::Rewind | InstanceAction::Restart | InstanceAction::Purge => Role::Admin,
        }
    }

    /// The name in the audit log.
    pub fn audit_name(self) -> &'static str {
        match self {
            InstanceAction::Terminate => "terminate",
            InstanceAction::Suspend => "suspend",
            InstanceAction::Resume => "resume",
            InstanceAction::Rewind => "rewind",
            InstanceAction::Restart => "restart",
            InstanceAction::Purge => "purge",
        }
    }
}

/// The instance, with its history.
#[server(prefix = "/api/fn", endpoint = "instances/get")]
pub async fn get_instance(instance_id: String) -> Result<InstanceDetail, AppError> {
    ssr::get(instance_id).await.map_err(AppError::with_status)
}

/// Takes `action` on an instance, with a reason. Terminate, suspend and resume need the operator
/// role; rewind, restart and purge the admin role. Returns the id of the instance to show next
/// (the new one after a restart), or `None` after a purge.
#[server(prefix = "/api/fn", endpoint = "instances/act")]
pub async fn act_on_instance(
    instance_id: String,
    action: InstanceAction,
    reason: String,
) -> Result<Option<String>, AppError> {
    use crate::audit::ssr::{Action, guarded};
    let audit = Action {
        name: action.audit_name(),
        target: &instance_id,
        reason: &reason,
    };
    guarded(
        action.needs(),
        audit,
        ssr::act(&instance_id, action, &reason),
    )
    .await
}

/// Raises event `name` with a JSON payload on an instance. Needs the operator role.
#[server(prefix = "/api/fn", endpoint = "instances/raise")]
pub async fn raise_event(
    instance_id: String,
    name: String,
    payload: String,
    reason: String,
) -> Result<(), AppError> {
    use crate::audit::ssr::{Action, guarded};
    let target = format!("{instance_id} event {name}");
    let audit = Action {
        name: "raise-event",
        target: &target,
        reason: &reason,
    };
    guarded(
        Role::Operator,
        audit,
        ssr::raise(&instance_id, &name, &payload, &reason),
    )
    .await
}

/// The detail page.
#[component]
pub fn InstanceDetailPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").unwrap_or_default());
    let act = ServerAction::<ActOnInstance>::new();
    let raise = ServerAction::<RaiseEvent>::new();
    let drafts = Drafts::default();
    // Refetched after an action, and whenever the pushed counts change (a status changed
    // somewhere, perhaps here), so the page follows the instance without a reload.
    let counts = crate::live::pushed(|s| s.counts.clone());
    let detail = Resource::new(
        move || (id(), act.version().get(), raise.version().get(), counts()),
        |(id, _, _, _)| get_instance(id),
    );
    // After a purge the instance is gone, and after a restart under a new id it is elsewhere.
    let navigate = leptos_router::hooks::use_navigate();
    Effect::new(move |_| match act.value().get() {
        Some(Ok(None)) => navigate("/instances", Default::default()),
        Some(Ok(Some(next))) if next != id() => navigate(
            &format!("/instances/{}", crate::models::url_component(&next)),
            Default::default(),
        ),
        _ => {}
    });
    view! {
        <Title text=move || format!("Instance {}", id()) />
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || detail.get().map(|result| match result {
                Ok(d) => view! { <Detail detail=d act raise drafts /> }.into_any(),
                Err(e) => view! {
                    <h1>"Instance"</h1>
                    <p class="error" role="alert" data-testid="detail-error">{e.to_string()}</p>
                }.into_any(),
            })}
        </Transition>
    }
}

/// What the user has typed into the page's forms. Kept at page level, so a refetch that
/// re-renders the instance does not wipe it.
#[derive(Debug, Clone, Copy)]
struct Drafts {
    reason: RwSignal<String>,
    event_name: RwSignal<String>,
    payload: RwSignal<String>,
    event_reason: RwSignal<String>,
}

impl Default for Drafts {
    fn default() -> Self {
        Drafts {
            reason: RwSignal::new(String::new()),
            event_name: RwSignal::new(String::new()),
            payload: RwSignal::new("null".to_owned()),
            event_reason: RwSignal::new(String::new()),
        }
    }
}

#[component]
fn Detail(
    detail: InstanceDetail,
    act: ServerAction<ActOnInstance>,
    raise: ServerAction<RaiseEvent>,
    drafts: Drafts,
) -> impl IntoView {
    let field = |label: &'static str, value: Option<String>, testid: &'static str| {
        value.map(|v| view! { <dt>{label}</dt><dd><pre data-testid=testid>{v}</pre></dd> })
    };
    let status = detail.status.clone();
    let id = detail.instance_id.clone();
    view! {
        <h1>"Instance " <code>{detail.instance_id.clone()}</code></h1>
        <section class="card">
            <dl class="summary">
                <dt>"Orchestration"</dt><dd>{detail.name}</dd>
                <dt>"Status"</dt>
                <dd><span class=format!("status status-{}", detail.status.to_lowercase()) data-testid="detail-status">{detail.status.clone()}</span></dd>
                <dt>"Created (UTC)"</dt><dd>{format_utc(detail.created_at)}</dd>
                <dt>"Last change (UTC)"</dt><dd>{format_utc(detail.updated_at)}</dd>
                {field("Custom status", detail.custom_status.as_deref().map(pretty), "detail-custom-status")}
                {field("Input", detail.input.as_deref().map(pretty), "detail-input")}
                {field("Output", detail.output.as_deref().map(pretty), "detail-output")}
                {(!detail.failure_chain.is_empty()).then(|| view! {
                    <dt>"Failure"</dt>
                    <dd>
                        <ol class="cause-chain" data-testid="detail-failure">
                            {detail.failure_chain.into_iter().enumerate().map(|(i, c)| view! {
                                <li>
                                    {(i > 0).then_some(view! { <span class="caused-by">"caused by "</span> })}
                                    <strong>{c.error_type}</strong>": "{c.message}
                                </li>
                            }).collect_view()}
                        </ol>
                    </dd>
                })}
            </dl>
        </section>
        <Actions instance_id=id.clone() status=status.clone() act reason=drafts.reason />
        {move || (can(Role::Operator) && is_live(&status)).then(|| view! { <RaiseForm instance_id=id.clone() raise drafts /> })}
        <Timeline spans=detail.timeline />
        <section class="card" aria-labelledby="history-title">
            <h2 id="history-title">"History"</h2>
            <table class="instances" data-testid="history">
                <thead><tr><th scope="col">"#"</th><th scope="col">"Time (UTC)"</th><th scope="col">"Event"</th><th scope="col">"Details"</th></tr></thead>
                <tbody>
                    {detail.history.into_iter().map(|h| view! {
                        <tr data-testid="history-row">
                            <td>{h.id}</td>
                            <td class="nowrap">{format_utc(h.timestamp)}</td>
                            <td>{h.kind}</td>
                            <td>{h.details.map(details_cell)}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        </section>
    }
}

/// Whether an instance with this status can still change.
fn is_live(status: &str) -> bool {
    !matches!(status, "Completed" | "Failed" | "Terminated" | "Canceled")
}

/// A history event's details: short ones inline, longer ones as a one-line preview that opens
/// to the indented document.
fn details_cell(text: String) -> AnyView {
    if text.chars().count() <= PREVIEW_CHARS {
        view! { <code class="details">{text}</code> }.into_any()
    } else {
        view! {
            <details class="details">
                <summary><code>{preview(&text, PREVIEW_CHARS)}</code></summary>
                <pre>{pretty(&text)}</pre>
            </details>
        }
        .into_any()
    }
}

/// How much of a history event's details shows before it is opened.
const PREVIEW_CHARS: usize = 100;

/// The actions this instance's status and the user's role allow, with one shared reason field.
#[component]
fn Actions(
    instance_id: String,
    status: String,
    act: ServerAction<ActOnInstance>,
    reason: RwSignal<String>,
) -> impl IntoView {
    let set_reason = reason.write_only();
    let live = is_live(&status);
    let suspended = status == "Suspended";
    let failed = status == "Failed";
    let allowed = move |action: InstanceAction| {
        let by_state = match action {
            InstanceAction::Terminate => live,
            InstanceAction::Suspend => live && !suspended,
            InstanceAction::Resume => suspended,
            InstanceAction::Rewind => failed,
            InstanceAction::Restart => true,
            InstanceAction::Purge => !live,
        };
        by_state && can(action.needs())
    };
    let button = move |action: InstanceAction, label: &'static str, class: &'static str| {
        let id = instance_id.clone();
        allowed(action).then(|| {
            let confirm_purge = action == InstanceAction::Purge;
            view! {
                <button type="button" class=class data-testid=action.audit_name()
                    disabled=move || reason.with(|r| r.trim().is_empty()) || act.pending().get()
                    on:click=move |_| {
                        if confirm_purge && !confirm("Purge this instance and its history? This cannot be undone.") {
                            return;
                        }
                        act.dispatch(ActOnInstance { instance_id: id.clone(), action, reason: reason.get() });
                    }>{label}</button>
            }
        })
    };
    let any = move || {
        [
            InstanceAction::Terminate,
            InstanceAction::Suspend,
            InstanceAction::Resume,
            InstanceAction::Rewind,
            InstanceAction::Restart,
            InstanceAction::Purge,
        ]
        .into_iter()
        .any(allowed)
    };
    view! {
        <Show when=any>
            <section class="card" aria-labelledby="actions-title" data-testid="actions">
                <h2 id="actions-title">"Actions"</h2>
                <div class="form">
                    <label for="action-reason">"Reason (required, recorded in the audit log)"</label>
                    <input id="action-reason" type="text" data-testid="action-reason" maxlength="1000"
                        aria-describedby="action-reason-hint"
                        prop:value=reason on:input=move |ev| set_reason.set(event_target_value(&ev)) />
                    <p class="hint" id="action-reason-hint" data-testid="action-reason-hint">
                        {move || if reason.with(|r| r.trim().is_empty()) {
                            "Type a reason to enable the actions."
                        } else {
                            "The reason goes with the action into the audit log."
                        }}
                    </p>
                </div>
                <div class="actions">
                    {button(InstanceAction::Terminate, "Terminate", "danger")}
                    {button(InstanceAction::Suspend, "Suspend", "secondary")}
                    {button(InstanceAction::Resume, "Resume", "secondary")}
                    {button(InstanceAction::Rewind, "Rewind", "secondary")}
                    {button(InstanceAction::Restart, "Restart", "secondary")}
                    {button(InstanceAction::Purge, "Purge", "danger")}
                </div>
                {move || act.value().get().and_then(Result::err).map(|e| view! {
                    <p class="error" role="alert" data-testid="action-error">{e.to_string()}</p>
                })}
            </section>
        </Show>
    }
}

/// Asks the browser to confirm; always yes while rendering on the server.
fn confirm(message: &str) -> bool {
    #[cfg(feature = "hydrate")]
    {
        window().confirm_with_message(message).unwrap_or(false)
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = message;
        true
    }
}

/// Raise an event with a JSON payload.
#[component]
fn RaiseForm(
    instance_id: String,
    raise: ServerAction<RaiseEvent>,
    drafts: Drafts,
) -> impl IntoView {
    let (name, set_name) = drafts.event_name.split();
    let (payload, set_payload) = drafts.payload.split();
    let (reason, set_reason) = drafts.event_reason.split();
    let problem = move || payload.with(|p| crate::routes::start::json_problem(p));
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if problem().is_none() {
            raise.dispatch(RaiseEvent {
                instance_id: instance_id.clone(),
                name: name.get(),
                payload: payload.get(),
                reason: reason.get(),
            });
        }
    };
    view! {
        <section class="card" aria-labelledby="raise-title" data-testid="raise">
            <h2 id="raise-title">"Raise event"</h2>
            <form on:submit=submit class="form">
                <label for="raise-name">"Event name"</label>
                <input id="raise-name" type="text" required data-testid="raise-name"
                    prop:value=name on:input=move |ev| set_name.set(event_target_value(&ev)) />
                <label for="raise-payload">"Payload (JSON)"</label>
                <textarea id="raise-payload" rows="3" data-testid="raise-payload"
                    prop:value=payload on:input=move |ev| set_payload.set(event_target_value(&ev)) />
                {move || problem().map(|p| view! { <p class="error" role="alert">{p}</p> })}
                <label for="raise-reason">"Reason (required)"</label>
                <input id="raise-reason" type="text" required maxlength="1000" data-testid="raise-reason"
                    prop:value=reason on:input=move |ev| set_reason.set(event_target_value(&ev)) />
                <button type="submit" data-testid="raise-submit"
                    disabled=move || problem().is_some() || raise.pending().get()>"Raise"</button>
                {move || raise.value().get().map(|r| match r {
                    Ok(()) => view! { <p class="notice" role="status" data-testid="raise-done">"Event raised."</p> }.into_any(),
                    Err(e) => view! { <p class="error" role="alert" data-testid="raise-error">{e.to_string()}</p> }.into_any(),
                })}
            </form>
        </section>
    }
}

/// A Gantt chart of the instance's activities, timers and sub-orchestrations: one bar per span,
/// placed on a shared time axis from the first span's start to the last end.
#[component]
fn Timeline(spans: Vec<Span>) -> impl IntoView {
    if spans.is_empty() {
        return view! {
            <section class="card" aria-labelledby="timeline-title">
                <h2 id="timeline-title">"Timeline"</h2>
                <p class="notice">"No activities, timers or sub-orchestrations yet."</p>
            </section>
        }
        .into_any();
    }
    let origin = spans.iter().map(|s| s.start).min().unwrap_or(0);
    let last = spans
        .iter()
        .map(|s| s.end.unwrap_or(s.start))
        .max()
        .unwrap_or(origin);
    let total = (last - origin).max(1) as f64;
    view! {
        <section class="card" aria-labelledby="timeline-title">
            <h2 id="timeline-title">"Timeline"</h2>
            <p class="hint">{format!(
                "{} span{} over {}",
                spans.len(),
                if spans.len() == 1 { "" } else { "s" },
                format_duration(last - origin)
            )}</p>
            <ol class="gantt" data-testid="timeline">
                {spans.into_iter().map(|s| {
                    let left = (s.start - origin) as f64 / total * 100.0;
                    let width = ((s.end.unwrap_or(last) - s.start) as f64 / total * 100.0).max(0.5);
                    let took = match (s.end, s.outcome.as_str()) {
                        (None, _) => "still open".to_owned(),
                        (Some(_), "abandoned") => "not awaited: the execution ended".to_owned(),
                        (Some(end), _) => format_duration(end - s.start),
                    };
                    let title = format!("{} {} · {} · {}", s.kind, s.label, s.outcome, took);
                    view! {
                        <li data-testid="span">
                            <span class="gantt-label">{format!("{} {}", s.kind, s.label)}</span>
                            <span class="gantt-track">
                                <span class=format!("gantt-bar gantt-{}", s.outcome)
                                    style=format!("left:{left:.2}%;width:{width:.2}%") title=title.clone()></span>
                            </span>
                            <span class="gantt-took">{took}</span>
                        </li>
                    }
                }).collect_view()}
            </ol>
        </section>
    }
    .into_any()
}

#[cfg(feature = "ssr")]
pub mod ssr {
    //! Server side of the detail page.

    use std::collections::HashMap;

    use engine::history::{EventKind, HistoryEvent};

    use super::{HistoryRow, InstanceAction, InstanceDetail, Span};
    use crate::{EngineClient, audit::ssr::required_reason, context::engine, error::AppError};

    /// The spans of a history: each scheduling event opens one, its completion or failure closes
    /// it. Timers end when they fire.
    pub fn timeline(history: &[HistoryEvent]) -> Vec<Span> {
        let mut spans: Vec<Span> = Vec::new();
        let mut open: HashMap<u32, usize> = HashMap::new();
        for event in history {
            let opened = match &event.kind {
                EventKind::TaskScheduled { name, .. } => Some(("activity", name.clone())),
                EventKind::TimerCreated { .. } => Some(("timer", format!("#{}", event.id))),
                EventKind::SubOrchestrationInstanceCreated { name, .. } => {
                    Some(("sub-orchestration", name.clone()))
                }
                _ => None,
            };
            if let Some((kind, label)) = opened {
                open.insert(event.id, spans.len());
                spans.push(Span {
                    kind: kind.to_owned(),
                    label,
                    start: event.timestamp_ms,
                    end: None,
                    outcome: "open".to_owned(),
                });
                continue;
            }
            let closed = match &event.kind {
                EventKind::TaskCompleted { scheduled_id, .. }
                | EventKind::SubOrchestrationInstanceCompleted { scheduled_id, .. } => {
                    Some((*scheduled_id, "completed"))
                }
                EventKind::TimerFired { timer_id } => Some((*timer_id, "completed")),
                EventKind::TaskFailed { scheduled_id, .. }
                | EventKind::SubOrchestrationInstanceFailed { scheduled_id, .. } => {
                    Some((*scheduled_id, "failed"))
                }
                _ => None,
            };
            if matches!(
                event.kind,
                EventKind::ExecutionCompleted { .. }
                    | EventKind::ExecutionFailed { .. }
                    | EventKind::ExecutionTerminated { .. }
                    | EventKind::ContinueAsNew { .. }
            ) {
                // The execution is over: what it still waited for is not open any more.
                for (_, index) in open.drain() {
                    spans[index].end = Some(event.timestamp_ms);
                    spans[index].outcome = "abandoned".to_owned();
                }
                continue;
            }
            if let Some(span) = closed.and_then(|(id, outcome)| {
                let index = open.remove(&id)?;
                Some((index, outcome))
            }) {
                let (index, outcome) = span;
                spans[index].end = Some(event.timestamp_ms);
                spans[index].outcome = outcome.to_owned();
            }
        }
        spans
    }

    pub async fn get(instance_id: String) -> Result<InstanceDetail, AppError> {
        get_with(&engine()?, instance_id).await
    }

    /// The fields of history events that hold a payload as JSON text (`engine_core::history::Json`).
    const PAYLOAD_FIELDS: &[&str] = &["input", "output", "result"];

    /// The instance and its history, for display.
    pub async fn get_with(
        engine: &EngineClient,
        instance_id: String,
    ) -> Result<InstanceDetail, AppError> {
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
            failure_chain: record
                .failure
                .as_ref()
                .map(super::cause_chain)
                .unwrap_or_default(),
            failure: record.failure.map(|f| f.to_string()),
            timeline: timeline(&history),
            history: history
                .into_iter()
                .map(|e| {
                    let mut details = serde_json::to_value(&e.kind).unwrap_or_default();
                    if let Some(map) = details.as_object_mut() {
                        map.remove("type");
                    }
                    crate::json::embed_payloads(&mut details, PAYLOAD_FIELDS);
                    HistoryRow {
                        id: e.id,
                        timestamp: e.timestamp_ms,
                        kind: e.kind.name().to_owned(),
                        details: (!details.as_object().is_some_and(|m| m.is_empty()))
                            .then(|| details.to_string()),
                    }
                })
                .collect(),
        })
    }

    pub async fn act(
        instance_id: &str,
        action: InstanceAction,
        reason: &str,
    ) -> Result<Option<String>, AppError> {
        act_with(&engine()?, instance_id, action, reason).await
    }

    /// Takes `action` with a required reason; the instance to show next (`None` after a purge).
    pub async fn act_with(
        engine: &EngineClient,
        instance_id: &str,
        action: InstanceAction,
        reason: &str,
    ) -> Result<Option<String>, AppError> {
        let reason = required_reason(reason)?;
        match action {
            InstanceAction::Terminate => engine.terminate(instance_id, reason, true).await?,
            InstanceAction::Suspend => engine.suspend(instance_id, reason).await?,
            InstanceAction::Resume => engine.resume(instance_id, reason).await?,
            InstanceAction::Rewind => engine.rewind(instance_id, reason).await?,
            InstanceAction::Restart => return Ok(Some(engine.restart(instance_id, None).await?)),
            InstanceAction::Purge => {
                engine.purge(instance_id, true).await?;
                return Ok(None);
            }
        }
        Ok(Some(instance_id.to_owned()))
    }

    pub async fn raise(
        instance_id: &str,
        name: &str,
        payload: &str,
        reason: &str,
    ) -> Result<(), AppError> {
        raise_with(&engine()?, instance_id, name, payload, reason).await
    }

    /// Raises event `name` with a JSON payload (checked first) and a required reason.
    pub async fn raise_with(
        engine: &EngineClient,
        instance_id: &str,
        name: &str,
        payload: &str,
        reason: &str,
    ) -> Result<(), AppError> {
        required_reason(reason)?;
        if let Some(problem) = crate::routes::start::json_problem(payload) {
            return Err(AppError::Validation(format!("event payload is {problem}")));
        }
        engine.raise_event_raw(instance_id, name, payload).await?;
        Ok(())
    }
}

#[cfg(all(test, feature = "ssr"))]
mod tests {
    use engine::history::{EventKind, HistoryEvent};

    use super::ssr::timeline;

    #[test]
    fn a_failure_lists_its_causes_outermost_first() {
        let mut outer = engine_core::history::Failure::new("ActivityFailed", "charge failed");
        let mut middle = engine_core::history::Failure::new("Timeout", "the bank did not answer");
        middle.cause = Some(Box::new(engine_core::history::Failure::new("Io", "reset")));
        outer.cause = Some(Box::new(middle));
        let chain = super::cause_chain(&outer);
        let types: Vec<&str> = chain.iter().map(|c| c.error_type.as_str()).collect();
        assert_eq!(types, ["ActivityFailed", "Timeout", "Io"]);
        assert_eq!(chain[1].message, "the bank did not answer");
    }

    fn event(id: u32, at: i64, kind: EventKind) -> HistoryEvent {
        HistoryEvent {
            id,
            timestamp_ms: at,
            kind,
        }
    }

    #[test]
    fn spans_open_on_scheduling_and_close_on_their_completion() {
        let history = vec![
            event(0, 0, EventKind::OrchestratorStarted),
            event(
                1,
                10,
                EventKind::TaskScheduled {
                    name: "A".into(),
                    input: "1".into(),
                },
            ),
            event(
                2,
                10,
                EventKind::TaskScheduled {
                    name: "B".into(),
                    input: "2".into(),
                },
            ),
            event(3, 12, EventKind::TimerCreated { fire_at_ms: 50 }),
            event(
                4,
                30,
                EventKind::TaskFailed {
                    scheduled_id: 2,
                    failure: engine::Failure::new("Boom", "boom"),
                },
            ),
            event(
                5,
                40,
                EventKind::TaskCompleted {
                    scheduled_id: 1,
                    result: "3".into(),
                },
            ),
            event(6, 55, EventKind::TimerFired { timer_id: 3 }),
            event(
                7,
                60,
                EventKind::TaskScheduled {
                    name: "C".into(),
                    input: "4".into(),
                },
            ),
        ];
        let spans = timeline(&history);
        let summary: Vec<_> = spans
            .iter()
            .map(|s| {
                (
                    s.kind.as_str(),
                    s.label.as_str(),
                    s.start,
                    s.end,
                    s.outcome.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("activity", "A", 10, Some(40), "completed"),
                ("activity", "B", 10, Some(30), "failed"),
                ("timer", "#3", 12, Some(55), "completed"),
                ("activity", "C", 60, None, "open"),
            ]
        );
    }

    #[test]
    fn what_an_ended_execution_still_awaited_is_abandoned_not_open() {
        let history = vec![
            event(0, 0, EventKind::TimerCreated { fire_at_ms: 1_000 }),
            event(
                1,
                5,
                EventKind::ExecutionTerminated {
                    reason: "stop".into(),
                },
            ),
        ];
        let spans = timeline(&history);
        assert_eq!(spans.len(), 1);
        assert_eq!(
            (spans[0].end, spans[0].outcome.as_str()),
            (Some(5), "abandoned")
        );
    }
}
