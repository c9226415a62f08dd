//! The JSON HTTP API: the same control surface as the dashboard, with the same roles, audit and
//! CSRF rules, JSON errors with 4xx statuses.

use app::session::Role;
use axum::{
    body::{Body, to_bytes},
    http::{Request, StatusCode},
};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::roles::{Fixture, fixture, fixture_with};

async fn call(
    f: &Fixture,
    method: &str,
    path: &str,
    role: Option<Role>,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1:3000");
    if let Some(role) = role {
        request = request.header("cookie", format!("switchyard.sid={}", f.sessions[&role]));
    }
    let request = match body {
        Some(b) => request
            .header("content-type", "application/json")
            .body(Body::from(b.to_owned())),
        None => request.body(Body::empty()),
    }
    .unwrap();
    let response = f.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_start_inspect_raise_and_purge_with_roles_enforced() {
    let _serial = crate::RENDER_LOCK.lock().await;
    let f = fixture().await;
    let start = json!({
        "name": "HumanInteraction",
        "input": {"request": "api", "timeout_ms": 600000},
        "instance_id": "api-1"
    })
    .to_string();

    // A viewer reads but cannot start.
    let (status, body) = call(&f, "GET", "/api/v1/instances", Some(Role::Viewer), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["instances"].is_array(), "{body}");
    let (status, body) = call(
        &f,
        "POST",
        "/api/v1/instances",
        Some(Role::Viewer),
        Some(&start),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "forbidden");

    // An operator starts, inspects and raises the approval.
    let (status, body) = call(
        &f,
        "POST",
        "/api/v1/instances",
        Some(Role::Operator),
        Some(&start),
    )
    .await;
    assert_eq!(
        (status, body["instance_id"].clone()),
        (StatusCode::CREATED, json!("api-1")),
        "{body}"
    );
    let mut waiting = false;
    for _ in 0..100 {
        let (_, body) = call(
            &f,
            "GET",
            "/api/v1/instances/api-1",
            Some(Role::Viewer),
            None,
        )
        .await;
        if body["status"] == "Running" && body["history"].as_array().is_some_and(|h| h.len() > 3) {
            waiting = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(waiting, "the instance reached its wait for approval");
    let approve = json!({"payload": {"approved": true, "comment": "via API"}, "reason": "script"})
        .to_string();
    let (status, body) = call(
        &f,
        "POST",
        "/api/v1/instances/api-1/events/Approval",
        Some(Role::Operator),
        Some(&approve),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut completed = false;
    for _ in 0..100 {
        let (_, body) = call(
            &f,
            "GET",
            "/api/v1/instances/api-1",
            Some(Role::Viewer),
            None,
        )
        .await;
        if body["status"] == "Completed" {
            // Payloads are JSON values, not JSON text inside JSON, in history details too.
            assert_eq!(
                body["input"],
                json!({"request": "api", "timeout_ms": 600000}),
                "{body}"
            );
            let raised = body["history"]
                .as_array()
                .and_then(|h| h.iter().find(|e| e["kind"] == "EventRaised"))
                .unwrap_or_else(|| panic!("an EventRaised event: {body}"));
            assert_eq!(
                raised["details"]["input"],
                json!({"approved": true, "comment": "via API"}),
                "{body}"
            );
            assert!(!body["output"].is_string(), "{body}");
            completed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        completed,
        "approved through the API, the instance completed"
    );
    let (status, body) = call(
        &f,
        "GET",
        "/api/v1/instances?status=Completed&name=HumanInteraction",
        Some(Role::Viewer),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["instances"][0]["instance_id"], "api-1", "{body}");
    let (_, body) = call(&f, "GET", "/api/v1/counts", Some(Role::Viewer), None).await;
    assert_eq!(body["Completed"], 1, "{body}");

    // Purge is for admins.
    let reason = json!({"reason": "cleanup"}).to_string();
    let (status, body) = call(
        &f,
        "POST",
        "/api/v1/instances/api-1/purge",
        Some(Role::Operator),
        Some(&reason),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("needs the admin role"),
        "{body}"
    );
    let (status, body) = call(
        &f,
        "POST",
        "/api/v1/instances/api-1/purge",
        Some(Role::Admin),
        Some(&reason),
    )
    .await;
    assert_eq!(
        (status, body["instance_id"].clone()),
        (StatusCode::OK, Value::Null),
        "{body}"
    );
    let (status, body) = call(
        &f,
        "GET",
        "/api/v1/instances/api-1",
        Some(Role::Viewer),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::NOT_FOUND, json!("not_found"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_json_4xx() {
    let _serial = crate::RENDER_LOCK.lock().await;
    let f = fixture().await;
    let admin = Some(Role::Admin);
    let cases = [
        (
            "POST",
            "/api/v1/instances",
            Some("{not json"),
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "POST",
            "/api/v1/instances",
            Some(r#"{"name":"HelloN","inptu":1}"#),
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "POST",
            "/api/v1/instances",
            Some(r#"{"name":"NoSuch","input":1}"#),
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "POST",
            "/api/v1/instances/x/explode",
            Some(r#"{"reason":"r"}"#),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "POST",
            "/api/v1/instances/x/terminate",
            Some(r#"{"reason":" "}"#),
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "POST",
            "/api/v1/instances/x/terminate",
            Some(r#"{"reason":"r"}"#),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "GET",
            "/api/v1/instances?from=yesterday",
            None,
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "GET",
            "/api/v1/instances?status=Sleeping",
            None,
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "GET",
            "/api/v1/nothing/here",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (method, path, body, expected, kind) in cases {
        let (status, reply) = call(&f, method, path, admin, body).await;
        assert_eq!(status, expected, "{method} {path}: {reply}");
        assert_eq!(reply["error"], kind, "{method} {path}: {reply}");
    }
    let (status, _) = call(&f, "GET", "/api/v1/instances", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no session");
    // Cross-site mutation with a valid admin cookie.
    let request = Request::builder()
        .method("POST")
        .uri("/api/v1/instances")
        .header("host", "127.0.0.1:3000")
        .header("origin", "http://evil.example")
        .header(
            "cookie",
            format!("switchyard.sid={}", f.sessions[&Role::Admin]),
        )
        .header("content-type", "application/json")
        .body(Body::from(r#"{"name":"HelloN","input":1}"#))
        .unwrap();
    let response = f.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

/// `GET /api/v1/entities/{id}` once it answers `status` (the entity's batch runs after the
/// signal's commit); its body.
async fn entity_once(f: &Fixture, id: &str, status: StatusCode) -> Value {
    let path = format!("/api/v1/entities/{id}");
    for _ in 0..250 {
        let (got, body) = call(f, "GET", &path, Some(Role::Viewer), None).await;
        if got == status {
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{path} never answered {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_signal_read_and_administer_entities_with_roles_enforced() {
    let _serial = crate::RENDER_LOCK.lock().await;
    let f = fixture().await;
    let signal = json!({"operation": "add", "input": 5}).to_string();
    let path = "/api/v1/entities/@counter@api/signal";
    let (status, body) = call(&f, "POST", path, Some(Role::Viewer), Some(&signal)).await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::FORBIDDEN, json!("forbidden")),
        "{body}"
    );
    let (status, body) = call(&f, "POST", path, Some(Role::Operator), Some(&signal)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let state = entity_once(&f, "@counter@api", StatusCode::OK).await;
    assert_eq!(state["name"], "counter", "{state}");
    assert_eq!(state["state"]["value"], 5, "{state}");
    assert_eq!(state["recent"][0]["operation"], "add", "{state}");
    let (status, body) = call(
        &f,
        "GET",
        "/api/v1/entities?name=Counter&key=a",
        Some(Role::Viewer),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["total"].clone(), body["entities"][0]["key"].clone()),
        (json!(1), json!("api")),
        "{body}"
    );
    // Admin verbs: releasing a lock that is not held is a conflict; purge is for admins.
    let reason = json!({"reason": "cleanup"}).to_string();
    let (status, body) = call(
        &f,
        "POST",
        "/api/v1/entities/@counter@api/release-lock",
        Some(Role::Admin),
        Some(&reason),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::CONFLICT, json!("conflict")),
        "{body}"
    );
    let purge = "/api/v1/entities/@counter@api/purge";
    let (status, _) = call(&f, "POST", purge, Some(Role::Operator), Some(&reason)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = call(&f, "POST", purge, Some(Role::Admin), Some(&reason)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    entity_once(&f, "@counter@api", StatusCode::NOT_FOUND).await;
    let (status, body) = call(
        &f,
        "POST",
        "/api/v1/entities/clean-storage",
        Some(Role::Admin),
        Some(&reason),
    )
    .await;
    assert_eq!(
        (status, body["locks_released"].clone()),
        (StatusCode::OK, json!(0)),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_entity_requests_are_json_4xx() {
    let _serial = crate::RENDER_LOCK.lock().await;
    let f = fixture().await;
    let long_key = "k".repeat(300);
    let big = json!({"operation": "add", "input": "x".repeat(300 * 1024)}).to_string();
    let cases: Vec<(String, String, StatusCode)> = vec![
        // Unknown entity type, empty key, oversized key, unknown operation, wrong input type.
        (
            "/api/v1/entities/@nosuch@a/signal".into(),
            r#"{"operation":"add","input":1}"#.into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/entities/@counter@/signal".into(),
            r#"{"operation":"add","input":1}"#.into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/api/v1/entities/@counter@{long_key}/signal"),
            r#"{"operation":"add","input":1}"#.into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/entities/@counter@a/signal".into(),
            r#"{"operation":"subtract","input":1}"#.into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/entities/@counter@a/signal".into(),
            r#"{"operation":"add","input":"ten"}"#.into(),
            StatusCode::BAD_REQUEST,
        ),
        // Not JSON, no operation, an unknown verb, an oversized payload.
        (
            "/api/v1/entities/@counter@a/signal".into(),
            "{not json".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/entities/@counter@a/signal".into(),
            r#"{"input":1}"#.into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/entities/@counter@a/explode".into(),
            r#"{"reason":"r"}"#.into(),
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/v1/entities/@counter@a/signal".into(),
            big,
            StatusCode::BAD_REQUEST,
        ),
        // Purge without a reason, of an entity that does not exist.
        (
            "/api/v1/entities/@counter@a/purge".into(),
            r#"{"reason":" "}"#.into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/entities/@counter@none/purge".into(),
            r#"{"reason":"r"}"#.into(),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (path, body, expected) in cases {
        let (status, reply) = call(&f, "POST", &path, Some(Role::Admin), Some(&body)).await;
        let shown: String = path.chars().take(60).collect();
        println!("{shown}: {status} {reply}");
        assert!(
            status == expected
                || (expected == StatusCode::BAD_REQUEST && status == StatusCode::PAYLOAD_TOO_LARGE),
            "{shown}: {status} {reply}"
        );
        assert!(reply["message"].is_string(), "{shown}: {reply}");
    }
    for query in ["name=nosuch", "key=a", "name=counter&cursor=bogus"] {
        let path = format!("/api/v1/entities?{query}");
        let (status, reply) = call(&f, "GET", &path, Some(Role::Viewer), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {reply}");
    }
    let (status, _) = call(
        &f,
        "GET",
        "/api/v1/entities/@counter@nobody",
        Some(Role::Viewer),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_read_resilience_and_operators_act_on_breakers_with_a_reason() {
    let _serial = crate::RENDER_LOCK.lock().await;
    let f = fixture().await;
    let (status, body) = call(&f, "GET", "/api/v1/resilience", Some(Role::Viewer), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let breakers = &body["processes"][0]["breakers"];
    assert_eq!(breakers[0]["name"], "flaky-dependency", "{body}");
    assert_eq!(breakers[0]["status"], "closed", "{body}");
    assert_eq!(
        body["processes"][0]["limiters"][0]["name"], "burst-limiter",
        "{body}"
    );
    let path = "/api/v1/resilience/breakers/flaky-dependency/force-open";
    let reason = json!({"reason": "dependency maintenance"}).to_string();
    let (status, body) = call(&f, "POST", path, Some(Role::Viewer), Some(&reason)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = call(&f, "POST", path, Some(Role::Operator), Some(&reason)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["breaker"]["status"], "forced-open", "{body}");
    let last = body["breaker"]["transitions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert!(
        last["cause"]
            .as_str()
            .unwrap()
            .contains("dependency maintenance"),
        "{body}"
    );
    let reset = "/api/v1/resilience/breakers/flaky-dependency/reset";
    let (status, body) = call(&f, "POST", reset, Some(Role::Operator), Some(&reason)).await;
    assert_eq!(
        (status, body["breaker"]["status"].clone()),
        (StatusCode::OK, json!("closed"))
    );
    for (path, body, expected) in [
        (reset, json!({"reason": " "}), StatusCode::BAD_REQUEST),
        (
            "/api/v1/resilience/breakers/nope/reset",
            json!({"reason": "x"}),
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/v1/resilience/breakers/flaky-dependency/explode",
            json!({"reason": "x"}),
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/v1/resilience/samples/flaky",
            json!({"failure_percent": 101}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/resilience/samples/flaky",
            json!({"failure_percent": "lots"}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (status, answer) = call(
            &f,
            "POST",
            path,
            Some(Role::Operator),
            Some(&body.to_string()),
        )
        .await;
        assert_eq!(status, expected, "{path} {body}: {answer}");
        assert!(answer["message"].is_string(), "{answer}");
    }
    let (status, body) = call(
        &f,
        "POST",
        "/api/v1/resilience/samples/flaky",
        Some(Role::Operator),
        Some(r#"{"failure_percent": 10}"#),
    )
    .await;
    assert_eq!(
        (status, body["failure_percent"].clone()),
        (StatusCode::OK, json!(10))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_intake_answers_429_with_retry_after() {
    let _serial = crate::RENDER_LOCK.lock().await;
    let f = fixture_with(engine::RuntimeOptions {
        max_live_instances: Some(2),
        ..engine::RuntimeOptions::default()
    })
    .await;
    let start = json!({
        "name": "HumanInteraction",
        "input": {"request": "intake", "timeout_ms": 600000},
    })
    .to_string();
    for _ in 0..2 {
        let (status, body) = call(
            &f,
            "POST",
            "/api/v1/instances",
            Some(Role::Operator),
            Some(&start),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let request = Request::builder()
        .method("POST")
        .uri("/api/v1/instances")
        .header("host", "127.0.0.1:3000")
        .header(
            "cookie",
            format!("switchyard.sid={}", f.sessions[&Role::Operator]),
        )
        .header("content-type", "application/json")
        .body(Body::from(start))
        .unwrap();
    let response = f.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["error"], "overloaded", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_stream_exactly_what_the_filter_matches_as_csv_and_json() {
    let _serial = crate::RENDER_LOCK.lock().await;
    let f = fixture().await;
    // 1,205 completed hello instances (more than one store page of 1,000) and a few of another
    // orchestration, which the filter leaves out.
    for i in 0..1_205 {
        f.engine
            .start_raw(
                "HelloSequence",
                r#"["x"]"#,
                engine::StartOptions {
                    instance_id: Some(format!("exp-{i:04}")),
                    ..engine::StartOptions::default()
                },
            )
            .await
            .unwrap();
    }
    for i in 0..3 {
        f.engine
            .start_raw(
                "HelloN",
                "1",
                engine::StartOptions {
                    instance_id: Some(format!("other-{i}")),
                    ..engine::StartOptions::default()
                },
            )
            .await
            .unwrap();
    }
    for i in [0, 1_204] {
        f.engine
            .wait_for_completion(&format!("exp-{i:04}"), std::time::Duration::from_secs(60))
            .await
            .unwrap();
    }
    let filter = "name=HelloSequence&id=exp-";
    let (status, body) = call(
        &f,
        "GET",
        &format!("/api/v1/export/instances?format=csv&{filter}"),
        Some(Role::Viewer),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let csv = body.as_str().unwrap();
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines[0],
        "instance_id,name,status,created_at,updated_at,completed_at,duration_ms"
    );
    assert_eq!(lines.len() - 1, 1_205, "every match, across store pages");
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.starts_with("exp-") && l.contains(",HelloSequence,"))
    );
    // The same, compressed on the way (the compression layer reads the stream to its end).
    let request = Request::get(format!("/api/v1/export/instances?format=csv&{filter}"))
        .header("host", "127.0.0.1:3000")
        .header("accept-encoding", "gzip")
        .header(
            "cookie",
            format!("switchyard.sid={}", f.sessions[&Role::Viewer]),
        )
        .body(Body::empty())
        .unwrap();
    let response = f.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let gz = to_bytes(response.into_body(), 1 << 22).await.unwrap();
    let mut unzipped = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut unzipped)
        .unwrap();
    assert_eq!(unzipped, csv, "compressed, the same rows");
    let mut ids: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 1_205, "no row twice");

    let (status, body) = call(
        &f,
        "GET",
        &format!("/api/v1/export/instances?format=json&{filter}&status=Completed"),
        Some(Role::Viewer),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rows = body["instances"].as_array().unwrap();
    let (_, listed) = call(&f, "GET", "/api/v1/counts", Some(Role::Viewer), None).await;
    assert!(rows.len() <= listed["Completed"].as_u64().unwrap() as usize);
    assert!(
        rows.iter()
            .all(|r| r["status"] == "Completed" && r["duration_ms"].is_u64())
    );
    assert_eq!(body["truncated"], false);

    // Bad filters are refused before anything streams; without a session there is nothing.
    let (status, body) = call(
        &f,
        "GET",
        "/api/v1/export/instances?format=xml",
        Some(Role::Viewer),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = call(
        &f,
        "GET",
        "/api/v1/export/instances?status=Sleeping",
        Some(Role::Viewer),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = call(&f, "GET", "/api/v1/export/instances", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_route_is_in_the_openapi_document() {
    let _serial = crate::RENDER_LOCK.lock().await;
    let f = fixture().await;
    let (status, doc) = call(&f, "GET", "/api/v1/openapi.json", Some(Role::Viewer), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: std::collections::BTreeSet<String> =
        doc["paths"].as_object().unwrap().keys().cloned().collect();
    // The router's routes, read from its source: every `.route("/api/v1/…"` but the catch-all.
    let source = include_str!("../../src/api.rs");
    let routed: std::collections::BTreeSet<String> = source
        .split(".route(")
        .skip(1)
        .filter_map(|rest| rest.trim_start().strip_prefix('"')?.split('"').next())
        .filter(|path| path.starts_with("/api/v1/") && !path.contains('*'))
        .map(str::to_owned)
        .collect();
    assert!(routed.len() >= 14, "found the routes: {routed:?}");
    let missing: Vec<_> = routed.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the document: {missing:?}"
    );
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(extra.is_empty(), "documented but not routed: {extra:?}");
}
