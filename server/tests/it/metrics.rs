//! `/metrics`: not public, parses as Prometheus text with an off-the-shelf parser
//! (`prometheus-parse`), and its counters move after a burst of work.

use std::time::Duration;

use app::session::Role;
use axum::{
    body::{Body, to_bytes},
    http::{Request, StatusCode},
};
use prometheus_parse::{Scrape, Value};
use tower::ServiceExt;

use crate::roles::{Fixture, fixture};

/// Scrapes `/metrics` in `role`'s session (or with none).
async fn scrape(f: &Fixture, role: Option<Role>) -> (StatusCode, String) {
    let mut request = Request::get("/metrics").header("host", "127.0.0.1:3000");
    if let Some(role) = role {
        request = request.header("cookie", format!("switchyard.sid={}", f.sessions[&role]));
    }
    let response = f
        .router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text")
}

/// The value of the sample `metric` with `labels`; 0 when it has not appeared yet.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map_or(0.0, |s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => panic!("{metric} is not a single value"),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_for_signed_in_users_and_move_after_a_burst() {
    let _serial = crate::RENDER_LOCK.lock().await;
    let f = fixture().await;
    let (status, _) = scrape(&f, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "not public");

    let (status, text) = scrape(&f, Some(Role::Viewer)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let before = parse(&text);
    assert!(
        before.samples.len() > 10,
        "parsed {} samples from {text}",
        before.samples.len()
    );
    assert!(
        text.contains("# TYPE switchyard_commit_duration_seconds histogram"),
        "{text}"
    );

    // A burst: twenty hello-3 instances, all completed.
    for i in 0..20 {
        f.engine
            .start_raw(
                "HelloSequence",
                r#"["a","b","c"]"#,
                engine::StartOptions {
                    instance_id: Some(format!("metrics-{i}")),
                    ..engine::StartOptions::default()
                },
            )
            .await
            .unwrap();
    }
    for i in 0..20 {
        f.engine
            .wait_for_completion(&format!("metrics-{i}"), Duration::from_secs(30))
            .await
            .unwrap();
    }

    let (_, text) = scrape(&f, Some(Role::Operator)).await;
    let after = parse(&text);
    let moved = |metric: &str, labels: &[(&str, &str)]| {
        (
            value(&before, metric, labels),
            value(&after, metric, labels),
        )
    };
    let (b, a) = moved("switchyard_orchestration_turns_total", &[]);
    assert!(a >= b + 20.0 * 4.0, "turns {b} -> {a}");
    let (b, a) = moved("switchyard_activities_total", &[("outcome", "completed")]);
    assert!(a >= b + 60.0, "activities {b} -> {a}");
    let (b, a) = moved("switchyard_commits_total", &[]);
    assert!(a > b, "commits {b} -> {a}");
    let (b, a) = moved("switchyard_activity_duration_seconds_count", &[]);
    assert!(a >= b + 60.0, "activity durations {b} -> {a}");
    let (b, a) = moved("switchyard_instances", &[("status", "Completed")]);
    assert!(a >= b + 20.0, "completed instances {b} -> {a}");
    let (b, a) = moved(
        "switchyard_http_requests_total",
        &[("kind", "metrics"), ("status", "200"), ("method", "GET")],
    );
    assert!(a >= b + 1.0, "scrapes counted {b} -> {a}");
    assert!(
        value(
            &after,
            "switchyard_http_requests_total",
            &[("status", "401")]
        ) >= 1.0,
        "the refused scrape is counted"
    );
}
