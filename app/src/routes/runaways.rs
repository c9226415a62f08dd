//! Suspected runaways: live instances past a threshold of history length, continue-as-new
//! generations or age (each adjustable in the URL: `/runaways?history=500&generations=100&age_h=24`),
//! worst first, each with a one-click recursive terminate (operator role; recorded in the audit
//! log with a fixed reason).

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;
use serde::{Deserialize, Serialize};

use crate::{
    error::AppError,
    models::{format_utc, url_component},
    routes::detail::{ActOnInstance, InstanceAction},
    session::{Role, can},
};

/// Default thresholds: any one flags an instance.
pub const DEFAULT_HISTORY: u32 = 1_000;
pub const DEFAULT_GENERATIONS: u32 = 100;
pub const DEFAULT_AGE_HOURS: u32 = 24;
/// The reason recorded for a terminate from this page.
pub const RUNAWAY_REASON: &str = "runaway: terminated from the runaway list";

/// One flagged instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runaway {
    pub instance_id: String,
    pub name: String,
    pub status: String,
    pub generation: u32,
    pub history_len: u32,
    pub created_at: i64,
    /// Which thresholds it is past, in words.
    pub why: Vec<String>,
}

/// Live instances past any threshold, worst first (at most 200).
#[server(prefix = "/api/fn", endpoint = "runaways")]
pub async fn suspected_runaways(
    history: Option<u32>,
    generations: Option<u32>,
    age_h: Option<u32>,
) -> Result<Vec<Runaway>, AppError> {
    ssr::list(
        history.unwrap_or(DEFAULT_HISTORY),
        generations.unwrap_or(DEFAULT_GENERATIONS),
        age_h.unwrap_or(DEFAULT_AGE_HOURS),
    )
    .await
    .map_err(AppError::with_status)
}

/// A threshold from the URL; `Err` names the parameter when it is not a whole number.
fn threshold(value: Option<String>, name: &str) -> Result<Option<u32>, String> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| format!("{name} must be a whole number, not {v:?}")),
    }
}

/// The runaway page.
#[component]
pub fn Runaways() -> impl IntoView {
    let query = use_query_map();
    let act = ServerAction::<ActOnInstance>::new();
    let params = move || {
        query.with(|q| {
            Ok::<_, String>((
                threshold(q.get("history"), "history")?,
                threshold(q.get("generations"), "generations")?,
                threshold(q.get("age_h"), "age_h")?,
            ))
        })
    };
    // Refetched when the pushed figures change, so the list follows without a reload.
    let pushed = crate::live::pushed(|s| (s.runaways, s.counts.clone()));
    let list = Resource::new(
        move || (params(), act.version().get(), pushed()),
        |(params, _, _)| async move {
            match params {
                Ok((h, g, a)) => suspected_runaways(h, g, a).await,
                Err(problem) => Err(AppError::Validation(problem)),
            }
        },
    );
    let shown = move |key: &str, default: u32| {
        query.with(|q| q.get(key).unwrap_or_else(|| default.to_string()))
    };
    view! {
        <Title text="Runaways" />
        <h1>"Suspected runaways"</h1>
        <form method="get" action="/runaways" class="filters-form" data-testid="runaway-thresholds">
            <label>"History events ≥ "<input type="number" min="0" name="history" value=move || shown("history", DEFAULT_HISTORY) /></label>
            <label>"Generations ≥ "<input type="number" min="0" name="generations" value=move || shown("generations", DEFAULT_GENERATIONS) /></label>
            <label>"Age ≥ (hours) "<input type="number" min="0" name="age_h" value=move || shown("age_h", DEFAULT_AGE_HOURS) /></label>
            <button type="submit" class="secondary">"Apply"</button>
        </form>
        {move || act.value().get().and_then(Result::err).map(|e| view! {
            <p class="error" role="alert" data-testid="runaway-error">{e.to_string()}</p>
        })}
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || list.get().map(|result| match result {
                Ok(rows) if rows.is_empty() => view! {
                    <p class="notice" data-testid="no-runaways">"No live instance is past these thresholds."</p>
                }.into_any(),
                Ok(rows) => view! {
                    <table class="instances" data-testid="runaways">
                        <thead><tr>
                            <th scope="col">"Instance"</th><th scope="col">"Orchestration"</th><th scope="col">"Status"</th>
                            <th scope="col">"Generation"</th><th scope="col">"History"</th><th scope="col">"Created (UTC)"</th>
                            <th scope="col">"Why"</th><th scope="col"><span class="visually-hidden">"Action"</span></th>
                        </tr></thead>
                        <tbody>
                            {rows.into_iter().map(|r| view! { <RunawayRow r act /> }).collect_view()}
                        </tbody>
                    </table>
                }.into_any(),
                Err(e) => view! { <p class="error" role="alert" data-testid="runaway-error">{e.to_string()}</p> }.into_any(),
            })}
        </Suspense>
    }
}

#[component]
fn RunawayRow(r: Runaway, act: ServerAction<ActOnInstance>) -> impl IntoView {
    let id = r.instance_id.clone();
    let status_class = format!("status status-{}", r.status.to_lowercase());
    view! {
        <tr data-testid="runaway" data-instance=r.instance_id.clone()>
            <td><a href=format!("/instances/{}", url_component(&r.instance_id))><code>{r.instance_id.clone()}</code></a></td>
            <td>{r.name}</td>
            <td><span class=status_class>{r.status}</span></td>
            <td>{r.generation}</td>
            <td>{r.history_len}</td>
            <td>{format_utc(r.created_at)}</td>
            <td>{r.why.join(", ")}</td>
            <td>
                {move || can(Role::Operator).then(|| {
                    let id = id.clone();
                    view! {
                        <button type="button" class="danger" data-testid="terminate-runaway"
                            disabled=move || act.pending().get()
                            on:click=move |_| {
                                act.dispatch(ActOnInstance {
                                    instance_id: id.clone(),
                                    action: InstanceAction::Terminate,
                                    reason: RUNAWAY_REASON.to_owned(),
                                });
                            }>"Terminate (with children)"</button>
                    }
                })}
            </td>
        </tr>
    }
}

/// The default thresholds at `now`.
#[cfg(feature = "ssr")]
pub fn default_limits(now: i64) -> engine::store::RunawayLimits {
    engine::store::RunawayLimits {
        history_len: DEFAULT_HISTORY,
        generations: DEFAULT_GENERATIONS,
        created_before: now - i64::from(DEFAULT_AGE_HOURS) * 3_600_000,
    }
}

#[cfg(feature = "ssr")]
mod ssr {
    //! Server side of the runaway list.

    use engine::store::RunawayLimits;

    use super::Runaway;
    use crate::{
        context::{engine, now_ms},
        error::AppError,
    };

    pub async fn list(
        history: u32,
        generations: u32,
        age_h: u32,
    ) -> Result<Vec<Runaway>, AppError> {
        let age_ms = i64::from(age_h) * 3_600_000;
        let limits = RunawayLimits {
            history_len: history,
            generations,
            created_before: now_ms() - age_ms,
        };
        let records = engine()?.suspected_runaways(&limits, 200).await?;
        Ok(records
            .into_iter()
            .map(|r| {
                let mut why = Vec::new();
                if r.history_len >= history {
                    why.push(format!("{} history events", r.history_len));
                }
                if r.generation >= generations {
                    why.push(format!("{} generations", r.generation));
                }
                if r.created_at <= limits.created_before {
                    why.push(format!("older than {age_h} h"));
                }
                Runaway {
                    instance_id: r.instance_id,
                    name: r.name,
                    status: r.status.to_string(),
                    generation: r.generation,
                    history_len: r.history_len,
                    created_at: r.created_at,
                    why,
                }
            })
            .collect())
    }
}
