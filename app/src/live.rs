//! Live figures for the overview: counts per status and recent throughput and latency. The
//! server pushes a fresh [`LiveSnapshot`] over server-sent events (`/api/live`, see
//! `server::live`) whenever it changes; the layout subscribes once and shares the latest
//! snapshot with every page through context, so counts, charts and statuses move without a
//! reload and without the browser polling.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{error::AppError, models::StatusCount};

/// The chart window and its resolution.
pub const WINDOW_MS: i64 = 5 * 60 * 1000;
pub const BUCKET_MS: i64 = 10 * 1000;
/// Attention counts (waiting approvals, suspected runaways) stop counting here.
pub const ATTENTION_CAP: u32 = 1_000;

/// Completions per bucket for one orchestration name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub name: String,
    pub completed: Vec<u64>,
    pub failed: Vec<u64>,
}

/// Throughput and latency over the last [`WINDOW_MS`], in [`BUCKET_MS`] buckets, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Start of the first bucket (ms since the epoch).
    pub start: i64,
    pub bucket_ms: i64,
    pub series: Vec<Series>,
    /// Start-to-finish latency percentiles per bucket: median, 95th and 99th (`None`: nothing
    /// finished in it).
    pub latency_p50_ms: Vec<Option<f64>>,
    pub latency_p95_ms: Vec<Option<f64>>,
    pub latency_p99_ms: Vec<Option<f64>>,
}

impl Throughput {
    /// Instances finished in the whole window, all names.
    pub fn total(&self) -> u64 {
        self.series
            .iter()
            .map(|s| s.completed.iter().sum::<u64>() + s.failed.iter().sum::<u64>())
            .sum()
    }
}

/// What the server pushes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveSnapshot {
    pub counts: Vec<StatusCount>,
    pub throughput: Throughput,
    /// Instances waiting for an approval (up to [`ATTENTION_CAP`]).
    pub waiting_approvals: u64,
    /// Live instances past the default runaway thresholds (up to [`ATTENTION_CAP`]).
    pub runaways: u64,
    /// Entity batches committed by this server's runtime: moves whenever an entity changes.
    #[serde(default)]
    pub entity_batches: u64,
    /// Every process's resilience primitives: this server's first, then those published to the
    /// store within the last 10 s.
    #[serde(default)]
    pub resilience: Vec<engine_core::resilience::view::ResilienceSnapshot>,
    /// The flaky sample dependency's failure rate, in percent.
    #[serde(default)]
    pub flaky_failure_percent: u32,
}

/// The latest pushed snapshot (`None` until the first arrives, and always on the server).
pub type LiveSignal = RwSignal<Option<LiveSnapshot>>;

/// A tracked read of part of the pushed snapshot, for a resource's source: the resource is
/// refetched whenever that part changes. `None` before the first push, and on the server.
pub fn pushed<T>(
    pick: impl Fn(&LiveSnapshot) -> T + Copy + Send + Sync + 'static,
) -> impl Fn() -> Option<T> + Copy + Send + Sync + 'static {
    let live = use_context::<LiveSignal>();
    move || live.and_then(|l| l.with(|s| s.as_ref().map(pick)))
}

/// The current snapshot, for the first render; `None` when the engine does not run here.
#[server(prefix = "/api/fn", endpoint = "live/snapshot")]
pub async fn current_figures() -> Result<Option<LiveSnapshot>, AppError> {
    let Ok(engine) = crate::context::engine() else {
        return Ok(None);
    };
    ssr::snapshot(&engine, crate::context::now_ms())
        .await
        .map(Some)
        .map_err(AppError::with_status)
}

/// Subscribes to `/api/live` in the browser and writes each snapshot into `signal`. The browser's
/// `EventSource` reconnects by itself after a dropped connection.
pub fn subscribe(signal: LiveSignal) {
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::{JsCast, closure::Closure};
        Effect::new(move |_| {
            let Ok(source) = web_sys::EventSource::new("/api/live") else {
                return;
            };
            let on_message = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(
                move |event: web_sys::MessageEvent| {
                    if let Some(text) = event.data().as_string()
                        && let Ok(snapshot) = serde_json::from_str::<LiveSnapshot>(&text)
                    {
                        signal.set(Some(snapshot));
                    }
                },
            );
            source.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
            // The page lives as long as the app: keep the handler for the page's lifetime.
            on_message.forget();
        });
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = signal;
}

#[cfg(feature = "ssr")]
pub mod ssr {
    //! Building a snapshot from the engine's figures.

    use std::collections::BTreeMap;

    use engine::RuntimeStatus;

    use super::{ATTENTION_CAP, BUCKET_MS, LiveSnapshot, Series, Throughput, WINDOW_MS};
    use crate::{EngineClient, error::AppError, models::StatusCount};

    /// Counts per status and the throughput window ending at `now`.
    pub async fn snapshot(engine: &EngineClient, now: i64) -> Result<LiveSnapshot, AppError> {
        let counts = engine
            .status_counts()
            .await?
            .into_iter()
            .map(|(status, count)| StatusCount {
                status: status.to_string(),
                count,
            })
            .collect();
        let buckets = (WINDOW_MS / BUCKET_MS) as usize;
        let start = (now / BUCKET_MS + 1) * BUCKET_MS - WINDOW_MS;
        let rows = engine.completion_stats(start, BUCKET_MS).await?;
        let mut series: BTreeMap<String, Series> = BTreeMap::new();
        let mut latency = vec![engine::store::LatencyHistogram::default(); buckets];
        for row in rows {
            let Ok(index) = usize::try_from((row.bucket_start - start) / BUCKET_MS) else {
                continue;
            };
            if index >= buckets {
                continue;
            }
            // Terminated and canceled instances did not finish their work: not throughput.
            if !matches!(row.status, RuntimeStatus::Completed | RuntimeStatus::Failed) {
                continue;
            }
            let entry = series.entry(row.name.clone()).or_insert_with(|| Series {
                name: row.name.clone(),
                completed: vec![0; buckets],
                failed: vec![0; buckets],
            });
            if row.status == RuntimeStatus::Completed {
                entry.completed[index] += row.count;
            } else {
                entry.failed[index] += row.count;
            }
            latency[index].add(&row);
        }
        let waiting_approvals = engine
            .count_waiting_for_event(
                <engine::samples::Approval as engine::Event>::NAME,
                ATTENTION_CAP,
            )
            .await?;
        let limits = crate::routes::runaways::default_limits(now);
        let runaways = engine
            .count_suspected_runaways(&limits, ATTENTION_CAP)
            .await?;
        Ok(LiveSnapshot {
            counts,
            waiting_approvals,
            runaways,
            entity_batches: engine.entity_batches(),
            resilience: crate::routes::resilience::ssr::processes(engine, now).await?,
            flaky_failure_percent: engine::samples::flaky_failure_percent(),
            throughput: Throughput {
                start,
                bucket_ms: BUCKET_MS,
                series: series.into_values().collect(),
                latency_p50_ms: latency.iter().map(|h| h.quantile(0.5)).collect(),
                latency_p95_ms: latency.iter().map(|h| h.quantile(0.95)).collect(),
                latency_p99_ms: latency.iter().map(|h| h.quantile(0.99)).collect(),
            },
        })
    }
}
