//! `GET /metrics`: the server's figures for Prometheus, in the OpenMetrics text format
//! (`prometheus-client`), which Prometheus scrapes as it is.
//!
//! What it shows, all prefixed `switchyard_`:
//! - HTTP: `http_requests_total{method, kind, status}` and `http_request_duration_seconds{kind}`
//!   (time to the response head), recorded by [`record`] for every request. `kind` is a coarse
//!   class of the path (page, fn, api, live, static, auth, probe, metrics), never the path itself,
//!   so ids in URLs do not multiply the series.
//! - Engine (this process's runtime, read per scrape): `orchestration_turns_total`,
//!   `commits_total`, `commit_ops_total`, `activities_total{outcome}`, `entity_batches_total`,
//!   `entity_operations_total`, `commit_duration_seconds`, `activity_duration_seconds`, the
//!   writer's queue (`writes_queued`), `instances{status}` from the maintained counts (queue depth:
//!   Pending and Running), and the start intake (`live_instances`, `starts_refused_total`).
//!
//! **Not public.** The route sits behind the same authentication as the JSON API: a signed-in
//! session, or an API token as `Authorization: Bearer …` (what a Prometheus scrape job sends,
//! with `authorization: { credentials_file: … }`), with at least the viewer role. Without one
//! the answer is 401. (In local mode, which listens on loopback only, every caller is the local
//! administrator, as on every other route.)

use std::time::Instant;

use app::session::CurrentUser;
use axum::{
    Extension, Router,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use engine::{HistogramSnapshot, RuntimeStats};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        MetricType, counter::ConstCounter, counter::Counter, family::Family, gauge::ConstGauge,
        histogram::Histogram,
    },
    registry::Registry,
};

use crate::AppState;

/// The route.
pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(scrape))
}

/// Labels of a counted request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    kind: &'static str,
    status: u16,
}

/// Labels of a timed request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// The HTTP figures, shared by every request (cheap to clone: the families are shared).
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<KindLabels, Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                // 1 ms to about 16 s.
                Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                    0.001, 2.0, 15,
                ))
            }),
        }
    }
}

/// The coarse class of `path` the HTTP figures are labelled with.
fn kind(path: &str) -> &'static str {
    match path {
        "/healthz" | "/readyz" => "probe",
        "/metrics" => "metrics",
        "/api/live" => "live",
        _ if path.starts_with("/api/v1/") => "api",
        _ if path.starts_with("/api/fn/") => "fn",
        _ if path.starts_with("/pkg/") || path.starts_with("/favicon.") => "static",
        _ if path.starts_with("/auth/") => "auth",
        _ => "page",
    }
}

/// Middleware: counts and times every request.
pub async fn record(State(metrics): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let method = match request.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        _ => "other",
    };
    let kind = kind(request.uri().path());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics
        .duration
        .get_or_create(&KindLabels { kind })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            kind,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// What the engine reports at one scrape.
#[derive(Debug)]
struct EngineFigures {
    stats: RuntimeStats,
    statuses: Vec<(String, i64)>,
    live_instances: u64,
    starts_refused: u64,
}

impl Collector for EngineFigures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.stats;
        for (name, help, value) in [
            ("orchestration_turns", "Orchestration turns run.", s.turns),
            ("commits", "Store transactions committed.", s.commits),
            (
                "commit_ops",
                "Write operations in those transactions.",
                s.ops,
            ),
            (
                "entity_batches",
                "Entity batches committed.",
                s.entity_batches,
            ),
            (
                "entity_operations",
                "Entity operations run.",
                s.entity_operations,
            ),
            (
                "starts_refused",
                "Starts refused by the full intake (429).",
                self.starts_refused,
            ),
        ] {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(metric)?;
        }
        let mut activities = encoder.encode_descriptor(
            "activities",
            "Activity runs, by outcome.",
            None,
            MetricType::Counter,
        )?;
        for (outcome, value) in [
            (
                "completed",
                s.activities.saturating_sub(s.activities_failed),
            ),
            ("failed", s.activities_failed),
        ] {
            let labels = [("outcome", outcome)];
            ConstCounter::new(value).encode(activities.encode_family(&labels)?)?;
        }
        let mut instances = encoder.encode_descriptor(
            "instances",
            "Instances by status (the store's maintained counts).",
            None,
            MetricType::Gauge,
        )?;
        for (status, count) in &self.statuses {
            let labels = [("status", status.as_str())];
            ConstGauge::new(*count).encode(instances.encode_family(&labels)?)?;
        }
        for (name, help, value) in [
            (
                "writes_queued",
                "Writes waiting for the next commit.",
                s.writes_queued,
            ),
            (
                "live_instances",
                "Instances not yet ended, as the start intake counts them.",
                self.live_instances,
            ),
        ] {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(metric)?;
        }
        for (name, help, histogram) in [
            (
                "commit_duration_seconds",
                "How long store commits take.",
                &s.commit_latency,
            ),
            (
                "activity_duration_seconds",
                "How long activity runs take.",
                &s.activity_latency,
            ),
        ] {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            encode_histogram(metric, histogram)?;
        }
        Ok(())
    }
}

/// Writes the engine's cumulative histogram as the encoder takes one (a count per bucket, the
/// last one `+Inf`).
fn encode_histogram(
    mut metric: prometheus_client::encoding::MetricEncoder,
    h: &HistogramSnapshot,
) -> Result<(), std::fmt::Error> {
    let mut previous = 0;
    let mut buckets: Vec<(f64, u64)> = h
        .buckets
        .iter()
        .map(|&(bound, cumulative)| {
            let in_bucket = cumulative - previous;
            previous = cumulative;
            (bound, in_bucket)
        })
        .collect();
    buckets.push((f64::INFINITY, h.count - previous));
    metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        h.sum_seconds,
        h.count,
        &buckets,
        None,
    )
}

/// The handler: viewers and above, by session or API token.
async fn scrape(State(state): State<AppState>, user: Option<Extension<CurrentUser>>) -> Response {
    // Every signed-in role (viewer and up) may read them.
    if user.is_none() {
        return (StatusCode::UNAUTHORIZED, "sign in or send an API token").into_response();
    }
    let mut registry = Registry::with_prefix("switchyard");
    registry.register(
        "http_requests",
        "HTTP requests answered, by method, kind of path and status.",
        state.metrics.requests.clone(),
    );
    registry.register(
        "http_request_duration_seconds",
        "Time to the response head, by kind of path.",
        state.metrics.duration.clone(),
    );
    if let Some(engine) = &state.engine {
        let statuses = match engine.status_counts().await {
            Ok(counts) => counts
                .into_iter()
                .map(|(status, count)| (status.to_string(), count))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot read the instance counts");
                Vec::new()
            }
        };
        let intake = engine.resilience().intake;
        registry.register_collector(Box::new(EngineFigures {
            stats: engine.stats(),
            statuses,
            live_instances: intake.live,
            starts_refused: intake.refused,
        }));
    }
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &registry) {
        tracing::error!(error = %e, "metrics: cannot encode");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::kind;

    #[test]
    fn paths_are_labelled_by_kind_not_by_themselves() {
        for (path, expected) in [
            ("/", "page"),
            ("/instances/some-id", "page"),
            ("/api/v1/instances/x", "api"),
            ("/api/fn/instances/start", "fn"),
            ("/api/live", "live"),
            ("/pkg/app.0123456789abcdef.wasm", "static"),
            ("/auth/callback", "auth"),
            ("/readyz", "probe"),
            ("/metrics", "metrics"),
        ] {
            assert_eq!(kind(path), expected, "{path}");
        }
    }
}
