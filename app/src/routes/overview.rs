//! The overview page: instance counts per status, and the pipeline check: a value stored in the database, read
//! through a server function during server rendering and changed by a button that only works once
//! the page has hydrated. It proves SSR, hydration, server functions and the database end to end.

use leptos::prelude::*;
use leptos_meta::Title;

use crate::{
    components::chart::{Line, LineChart},
    error::AppError,
    live::{LiveSignal, LiveSnapshot, current_figures},
    models::{STATUSES, StatusCount},
};

/// The counter the pipeline check reads and increments.
pub const PIPELINE_COUNTER: &str = "pipeline-check";

/// Reads the pipeline-check counter (0 before its first increment).
#[server(prefix = "/api/fn", endpoint = "counter/get")]
pub async fn get_counter() -> Result<i64, AppError> {
    let db = crate::context::database()?;
    Ok(ssr::read_counter(&db, PIPELINE_COUNTER).await?)
}

/// Adds one to the pipeline-check counter and returns the new value. Needs the operator role.
#[server(prefix = "/api/fn", endpoint = "counter/increment")]
pub async fn increment_counter() -> Result<i64, AppError> {
    use crate::audit::ssr::{Action, guarded};
    let db = crate::context::database()?;
    let audit = Action {
        name: "increment-counter",
        target: PIPELINE_COUNTER,
        reason: "",
    };
    guarded(crate::session::Role::Operator, audit, async {
        Ok(ssr::increment_counter(&db, PIPELINE_COUNTER).await?)
    })
    .await
}

/// Instance counts per status, as the engine maintains them; `None` when the engine does not run
/// on this server's database backend.
#[server(prefix = "/api/fn", endpoint = "instances/counts")]
pub async fn status_counts() -> Result<Option<Vec<StatusCount>>, AppError> {
    let Some(engine) = leptos::prelude::use_context::<crate::EngineClient>() else {
        return Ok(None);
    };
    let counts = engine
        .status_counts()
        .await
        .map_err(|e| AppError::from(e).with_status())?;
    Ok(Some(
        counts
            .into_iter()
            .map(|(status, count)| StatusCount {
                status: status.to_string(),
                count,
            })
            .collect(),
    ))
}

/// The overview page.
#[component]
pub fn Overview() -> impl IntoView {
    let first = Resource::new(|| (), |_| current_figures());
    let live = use_context::<LiveSignal>();
    // The pushed snapshot once it arrives; until then the one rendered on the server.
    let snapshot = move || match live.and_then(|l| l.get()) {
        Some(pushed) => Some(Ok(Some(pushed))),
        None => first.get(),
    };
    view! {
        <Title text="Overview" />
        <h1>"Overview"</h1>
        <Suspense fallback=|| view! { <p>"…"</p> }>
            {move || snapshot().map(|result| match result {
                Ok(None) => view! {
                    <p class="notice" data-testid="engine-unavailable">
                        "Orchestrations are not available on this database backend yet (the engine runs on SQLite)."
                    </p>
                }
                .into_any(),
                Ok(Some(s)) => view! { <Figures snapshot=s /> }.into_any(),
                Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
            })}
        </Suspense>
        <PipelineCheck />
    }
}

/// Tiles per status, attention items, and the charts.
#[component]
fn Figures(snapshot: LiveSnapshot) -> impl IntoView {
    let by_name = |name: &str| {
        snapshot
            .counts
            .iter()
            .find(|c| c.status == name)
            .map_or(0, |c| c.count)
    };
    let tiles = STATUSES
        .iter()
        .map(|s| {
            view! {
                <li>
                    <a href=format!("/instances?status={s}") data-testid=format!("count-{s}")>
                        <span class="tile-count">{by_name(s)}</span>
                        <span class="tile-label">{*s}</span>
                    </a>
                </li>
            }
        })
        .collect_view();
    let t = &snapshot.throughput;
    let per_second = |v: u64| Some(v as f64 * 1000.0 / t.bucket_ms as f64);
    let mut lines: Vec<Line> = t
        .series
        .iter()
        .enumerate()
        .map(|(i, s)| Line {
            label: format!("{} completed", s.name),
            values: s.completed.iter().map(|v| per_second(*v)).collect(),
            class: format!("series-{}", i % 6),
        })
        .collect();
    if t.series.iter().any(|s| s.failed.iter().any(|v| *v > 0)) {
        let buckets = t.mean_latency_ms.len();
        lines.push(Line {
            label: "failed (all names)".into(),
            values: (0..buckets)
                .map(|i| per_second(t.series.iter().map(|s| s.failed[i]).sum()))
                .collect(),
            class: "series-failed".into(),
        });
    }
    let latency = vec![
        Line {
            label: "mean".into(),
            values: t.mean_latency_ms.clone(),
            class: "series-0".into(),
        },
        Line {
            label: "max".into(),
            values: t
                .max_latency_ms
                .iter()
                .map(|v| v.map(|v| v as f64))
                .collect(),
            class: "series-failed".into(),
        },
    ];
    let total = t.total();
    // Load levelling's intake and the breakers refusing calls, summed over the processes.
    let intake = snapshot
        .resilience
        .iter()
        .fold((0u64, 0u64, None), |(live, refused, max), p| {
            (
                live.max(p.intake.live),
                refused + p.intake.refused,
                p.intake.max.or(max),
            )
        });
    let open_breakers = snapshot
        .resilience
        .iter()
        .flat_map(|p| &p.breakers)
        .filter(|b| b.status.rejects())
        .count();
    let intake_text = match intake.2 {
        Some(max) => format!(
            "Intake: {} of {max} live instances; {} starts refused",
            intake.0, intake.1
        ),
        None => format!("Intake: {} live instances (unbounded)", intake.0),
    };
    view! {
        <section class="card" aria-labelledby="counts-title" data-testid="status-counts">
            <h2 id="counts-title">"Instances by status"</h2>
            <ul class="tiles">{tiles}</ul>
            <p class="attention">
                <a href="/approvals" data-testid="waiting-approvals">{snapshot.waiting_approvals} " waiting for approval"</a>
                " · "
                <a href="/runaways" data-testid="suspected-runaways">{snapshot.runaways} " suspected runaways"</a>
            </p>
            <p class="attention">
                <a href="/resilience" data-testid="intake-pressure">{intake_text}</a>
                " · "
                <a href="/resilience" data-testid="open-breakers">{open_breakers} " circuit breakers open"</a>
            </p>
        </section>
        <section class="card" aria-labelledby="charts-title">
            <h2 id="charts-title">"Last 5 minutes"</h2>
            <p class="hint" data-testid="finished-total">{total} " instances finished in the window"</p>
            <div class="charts">
                <LineChart title="Throughput (instances finished per second)" unit="/s" lines testid="throughput-chart" />
                <LineChart title="Start-to-finish latency" unit="ms" lines=latency testid="latency-chart" />
            </div>
        </section>
    }
}

/// A stored value and a button that increments it; the button is enabled by hydration.
#[component]
fn PipelineCheck() -> impl IntoView {
    let increment = ServerAction::<IncrementCounter>::new();
    let value = Resource::new(move || increment.version().get(), |_| get_counter());
    // Effects never run during server rendering, so this flips only in a hydrated page.
    let (hydrated, set_hydrated) = signal(false);
    Effect::new(move |_| set_hydrated.set(true));

    let shown = move || {
        value.get().map(|result| match result {
            Ok(v) => view! { <output data-testid="counter-value">{v}</output> }.into_any(),
            Err(e) => view! { <span class="error" role="alert">{e.to_string()}</span> }.into_any(),
        })
    };
    let action_error = move || {
        increment
            .value()
            .get()
            .and_then(Result::err)
            .map(|e| view! { <p class="error" role="alert">{e.to_string()}</p> })
    };

    view! {
        <section class="card" data-testid="pipeline-check" aria-labelledby="pipeline-check-title">
            <h2 id="pipeline-check-title">"Pipeline check"</h2>
            <p>
                "This number is stored in the database. The button works once the page has hydrated."
            </p>
            <p class="counter">
                "Stored value: "
                <Suspense fallback=|| view! { <span>"…"</span> }>{shown}</Suspense>
            </p>
            // Operators only (the server function checks it too): a viewer sees the value.
            <Suspense fallback=|| ()>
                {move || crate::session::can(crate::session::Role::Operator).then(|| view! {
                    <button
                        type="button"
                        data-testid="increment"
                        data-hydrated=move || hydrated.get().to_string()
                        disabled=move || !hydrated.get() || increment.pending().get()
                        on:click=move |_| {
                            increment.dispatch(IncrementCounter {});
                        }
                    >
                        "Increment"
                    </button>
                })}
            </Suspense>
            {action_error}
        </section>
    }
}

#[cfg(feature = "ssr")]
mod ssr {
    //! Server-only helpers for the overview page's server functions.

    use engine::{Database, DbError};

    pub async fn read_counter(db: &Database, name: &str) -> Result<i64, DbError> {
        const SQL: &str = "SELECT value FROM counters WHERE name = $1";
        let value: Option<i64> = engine::with_pool!(db, pool => {
            sqlx::query_scalar(SQL).bind(name).fetch_optional(pool).await?
        });
        Ok(value.unwrap_or(0))
    }

    pub async fn increment_counter(db: &Database, name: &str) -> Result<i64, DbError> {
        // One statement, so concurrent increments never lose an update on either backend.
        const SQL: &str = "INSERT INTO counters (name, value) VALUES ($1, 1) \
                           ON CONFLICT (name) DO UPDATE SET value = counters.value + 1 \
                           RETURNING value";
        Ok(engine::with_pool!(db, pool => {
            sqlx::query_scalar(SQL).bind(name).fetch_one(pool).await?
        }))
    }
}
