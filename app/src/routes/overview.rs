//! The overview page: instance counts per status, what needs attention (approvals, runaways,
//! intake, open breakers), and the last five minutes' throughput and latency percentiles, kept
//! current by the live feed.

use leptos::prelude::*;
use leptos_meta::Title;

use crate::{
    components::chart::{Line, LineChart},
    error::AppError,
    live::{LiveSignal, LiveSnapshot, current_figures},
    models::{STATUSES, StatusCount},
};

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
    // The bucket a reader points at in each chart, kept across the pushed updates.
    let hover = (RwSignal::new(None), RwSignal::new(None));
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
                Ok(Some(s)) => view! { <Figures snapshot=s hover /> }.into_any(),
                Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
            })}
        </Suspense>
    }
}

/// Tiles per status, attention items, and the charts.
#[component]
fn Figures(
    snapshot: LiveSnapshot,
    hover: (RwSignal<Option<usize>>, RwSignal<Option<usize>>),
) -> impl IntoView {
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
        let buckets = t.latency_p50_ms.len();
        lines.push(Line {
            label: "failed (all names)".into(),
            values: (0..buckets)
                .map(|i| per_second(t.series.iter().map(|s| s.failed[i]).sum()))
                .collect(),
            class: "series-failed".into(),
        });
    }
    let percentile = |label: &str, values: &Vec<Option<f64>>, class: &str| Line {
        label: label.into(),
        values: values.clone(),
        class: class.into(),
    };
    let latency = vec![
        percentile("p50", &t.latency_p50_ms, "series-0"),
        percentile("p95", &t.latency_p95_ms, "series-2"),
        percentile("p99", &t.latency_p99_ms, "series-failed"),
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
            <p class="hint" data-testid="finished-total">
                {if total == 1 { "1 instance finished".to_owned() } else { format!("{total} instances finished") }}
                " in the window"
            </p>
            <div class="charts">
                <LineChart title="Throughput: instances finished per second" unit="/s" lines
                    start_ms=t.start bucket_ms=t.bucket_ms hover=hover.0 testid="throughput-chart" />
                <LineChart title="Start-to-finish latency percentiles" unit="ms" lines=latency
                    start_ms=t.start bucket_ms=t.bucket_ms hover=hover.1 testid="latency-chart" />
            </div>
        </section>
    }
}
