//! The router driven in-process: probes, server-rendered pages, server functions and 404s.

use std::{net::SocketAddr, path::Path};

use axum::{
    Router,
    body::{Body, to_bytes},
    http::{Request, StatusCode},
};
use engine::{Database, DatabaseUrl, db::ConnectOptions};
use server::{AppState, app};
use tower::ServiceExt;

pub async fn sqlite(dir: &Path) -> Database {
    let url: DatabaseUrl = format!("sqlite://{}/it.db", dir.display()).parse().unwrap();
    Database::connect(&url, &ConnectOptions::default())
        .await
        .unwrap()
}

pub fn router(db: Database) -> Router {
    router_with(db, None)
}

fn router_with(db: Database, engine: Option<app::EngineClient>) -> Router {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    app(AppState::new(
        db,
        engine,
        server::auth::Auth::Local,
        Path::new("target/site"),
        addr,
    ))
}

pub async fn send(router: &Router, method: &str, path: &str) -> (StatusCode, String) {
    send_form(router, method, path, "").await
}

pub async fn send_form(
    router: &Router,
    method: &str,
    path: &str,
    form: &str,
) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(form.to_owned()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn probes_answer() {
    let _serial = crate::RENDER_LOCK.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let db = sqlite(tmp.path()).await;
    db.migrate().await.unwrap();
    let router = router(db);
    assert_eq!(
        send(&router, "GET", "/healthz").await,
        (StatusCode::OK, "ok".into())
    );
    let (status, body) = send(&router, "GET", "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, r#"{"status":"ready"}"#);
}

#[tokio::test]
async fn readyz_is_503_until_migrations_are_applied() {
    let _serial = crate::RENDER_LOCK.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let db = sqlite(tmp.path()).await;
    let router = router(db.clone());
    let (status, body) = send(&router, "GET", "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("unavailable"), "{body}");
    db.migrate().await.unwrap();
    assert_eq!(send(&router, "GET", "/readyz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn overview_is_server_rendered_and_says_when_the_engine_is_absent() {
    let _serial = crate::RENDER_LOCK.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let db = sqlite(tmp.path()).await;
    db.migrate().await.unwrap();
    let router = router(db);

    let (status, html) = send(&router, "GET", "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("<title>Overview · Switchyard</title>"),
        "{html}"
    );
    // Without an engine the figures say so instead of failing the page.
    assert!(
        html.contains(r#"data-testid="engine-unavailable""#),
        "{html}"
    );
    // The header is rendered not hydrated; only the browser's bundle flips it.
    assert!(html.contains(r#"data-hydrated="false""#), "{html}");
}

async fn post_with(
    router: &Router,
    path: &str,
    body: &'static str,
    headers: &[(&str, &str)],
) -> StatusCode {
    let mut request = Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/x-www-form-urlencoded");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    response.status()
}

#[tokio::test]
async fn mutating_requests_from_another_site_are_refused() {
    let _serial = crate::RENDER_LOCK.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let db = sqlite(tmp.path()).await;
    db.migrate().await.unwrap();
    let router = router(db);
    let path = "/api/fn/tokens/create";
    let form = "name=csrf-check&role=Viewer&days=1";
    let forged = [
        vec![
            ("host", "127.0.0.1:3000"),
            ("origin", "http://evil.example"),
        ],
        vec![("sec-fetch-site", "cross-site")],
        vec![("host", "127.0.0.1:3000"), ("origin", "null")],
    ];
    for headers in &forged {
        assert_eq!(
            post_with(&router, path, form, headers).await,
            StatusCode::FORBIDDEN,
            "{headers:?}"
        );
    }
    // Nothing changed.
    let tokens = || async { send(&router, "POST", "/api/fn/tokens/list").await.1 };
    assert!(!tokens().await.contains("csrf-check"));
    let same_origin = [
        ("host", "127.0.0.1:3000"),
        ("origin", "http://127.0.0.1:3000"),
        ("sec-fetch-site", "same-origin"),
    ];
    assert_eq!(
        post_with(&router, path, form, &same_origin).await,
        StatusCode::OK
    );
    assert!(tokens().await.contains("csrf-check"));
}

#[tokio::test]
async fn unknown_page_is_404() {
    let _serial = crate::RENDER_LOCK.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let db = sqlite(tmp.path()).await;
    db.migrate().await.unwrap();
    let (status, html) = send(&router(db), "GET", "/definitely/not/here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("Page not found"), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_counts_and_the_instance_list_come_from_the_engine() {
    let _serial = crate::RENDER_LOCK.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let db = sqlite(tmp.path()).await;
    db.migrate().await.unwrap();
    let Database::Sqlite(pool) = &db else {
        unreachable!()
    };
    let store = engine::SqliteStore::new(pool.clone()).await.unwrap();
    let runtime = engine::Runtime::start(
        store,
        engine::samples::registry(),
        engine::RuntimeOptions::default(),
    );
    let client = runtime.client();
    let id = client
        .start::<engine::samples::HelloSequence>(
            &vec!["Ada".to_owned()],
            engine::StartOptions {
                instance_id: Some("hello-ada".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    client
        .wait_for_completion(&id, std::time::Duration::from_secs(20))
        .await
        .unwrap();
    let router = router_with(db, Some(client.clone()));

    let (status, html) = send(&router, "GET", "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(r#"data-testid="count-Completed""#), "{html}");
    // The Completed tile counts one (text nodes carry hydration markers: `1<!>`).
    let tile = &html[html.find(r#"data-testid="count-Completed""#).unwrap()..];
    assert!(
        tile.starts_with(r#"data-testid="count-Completed"><span class="tile-count">1<"#),
        "{html}"
    );

    let (status, html) = send(&router, "GET", "/instances?status=Completed").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("<code>hello-ada<"), "{html}");
    assert!(html.contains("HelloSequence"), "{html}");
    let (_, html) = send(&router, "GET", "/instances?status=Failed").await;
    assert!(html.contains(r#"data-testid="no-instances""#), "{html}");

    // A bad filter is a clear 400 from the server function, and a message on the page.
    let (status, body) = send_form(
        &router,
        "POST",
        "/api/fn/instances/list",
        "filter%5Bstatus%5D=Sleeping",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("unknown status"), "{body}");
    let (status, html) = send(&router, "GET", "/instances?status=Sleeping").await;
    assert!(status.is_success() || status.is_client_error(), "{status}");
    assert!(html.contains("unknown status"), "{html}");

    // Starting through the server function: validated, and a clear 400 when the input is bad.
    let (status, id) = send_form(
        &router,
        "POST",
        "/api/fn/instances/start",
        "name=HelloSequence&input=%5B%22Grace%22%5D&instance_id=hello-grace",
    )
    .await;
    assert_eq!((status, id.as_str()), (StatusCode::OK, r#""hello-grace""#));
    for (form, expected) in [
        ("name=HelloSequence&input=%7Bnope", "not valid JSON"),
        ("name=NoSuchThing&input=1", "no orchestration named"),
        (
            "name=HelloSequence&input=%5B%5D&instance_id=hello-grace",
            "still running",
        ),
    ] {
        let (status, body) = send_form(&router, "POST", "/api/fn/instances/start", form).await;
        // A conflict only happens while hello-grace runs; once it finished, reuse is allowed.
        if expected == "still running" && status == StatusCode::OK {
            continue;
        }
        assert_eq!(status, StatusCode::BAD_REQUEST, "{form}: {body}");
        assert!(body.contains(expected), "{form}: {body}");
    }

    // Deciding an approval: unknown instance is 404, a finished one is a clear 400.
    let (status, body) = send_form(
        &router,
        "POST",
        "/api/fn/approvals/decide",
        "instance_id=nobody&approved=true&comment=ok",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = send_form(
        &router,
        "POST",
        "/api/fn/approvals/decide",
        "instance_id=hello-ada&approved=true&comment=late",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("already finished"), "{body}");

    // The detail page, also for an id that needs percent-encoding in the URL.
    let odd = client
        .start::<engine::samples::HumanInteraction>(
            &engine::samples::ApprovalRequest {
                request: "r".into(),
                timeout: std::time::Duration::from_secs(600),
            },
            engine::StartOptions {
                instance_id: Some("team a/approval 1".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (status, html) = send(&router, "GET", "/instances/hello-ada").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains(r#"data-testid="detail-status" class="status status-completed">Completed<"#),
        "{html}"
    );
    assert!(html.contains("ExecutionCompleted"), "{html}");
    assert!(html.contains("Hello, Ada!"), "{html}");
    let (_, html) = send(&router, "GET", "/instances/team%20a%2Fapproval%201").await;
    assert!(html.contains("<code>team a/approval 1<"), "{html}");
    let (_, html) = send(&router, "GET", "/instances/nobody").await;
    assert!(html.contains(r#"data-testid="detail-error""#), "{html}");

    // Actions: a reason is required; finished instances refuse; unknown ones are 404.
    let act = |id: &str, action: &str, reason: &str| {
        format!(
            "instance_id={}&action={action}&reason={}",
            app::models::url_component(id),
            app::models::url_component(reason)
        )
    };
    let (status, body) = send_form(
        &router,
        "POST",
        "/api/fn/instances/act",
        &act(&odd, "Terminate", " "),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("a reason is required"), "{body}");
    let (status, body) = send_form(
        &router,
        "POST",
        "/api/fn/instances/act",
        &act("hello-ada", "Terminate", "x"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = send_form(
        &router,
        "POST",
        "/api/fn/instances/act",
        &act("nobody", "Suspend", "x"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = send_form(
        &router,
        "POST",
        "/api/fn/instances/act",
        &act(&odd, "Terminate", "test"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let done = client
        .wait_for_completion(&odd, std::time::Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(done.status, engine::RuntimeStatus::Terminated);
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_4xx_never_a_500() {
    let _serial = crate::RENDER_LOCK.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let db = sqlite(tmp.path()).await;
    db.migrate().await.unwrap();
    let Database::Sqlite(pool) = &db else {
        unreachable!()
    };
    let store = engine::SqliteStore::new(pool.clone()).await.unwrap();
    let runtime = engine::Runtime::start(
        store,
        engine::samples::registry(),
        engine::RuntimeOptions::default(),
    );
    let router = router_with(db, Some(runtime.client()));
    let huge = format!("%22{}%22", "x".repeat(300 * 1024));
    let cases: Vec<(&str, String, StatusCode, &str)> = vec![
        (
            "/api/fn/instances/start",
            "name=HelloN&input=%5B1%2C".into(),
            StatusCode::BAD_REQUEST,
            "not valid JSON",
        ),
        (
            "/api/fn/instances/start",
            "name=NoSuchThing&input=null".into(),
            StatusCode::BAD_REQUEST,
            "NoSuchThing",
        ),
        (
            "/api/fn/instances/start",
            format!("name=HelloN&input={huge}"),
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            "/api/fn/instances/start",
            "input=null".into(),
            StatusCode::BAD_REQUEST,
            "arguments are not valid",
        ),
        (
            "/api/fn/instances/act",
            "instance_id=nope&action=Terminate&reason=".into(),
            StatusCode::BAD_REQUEST,
            "reason is required",
        ),
        (
            "/api/fn/instances/act",
            "instance_id=nope&action=Terminate&reason=x".into(),
            StatusCode::NOT_FOUND,
            "nope",
        ),
        (
            "/api/fn/instances/act",
            "instance_id=nope&action=Explode&reason=x".into(),
            StatusCode::BAD_REQUEST,
            "arguments are not valid",
        ),
        (
            "/api/fn/instances/raise",
            "instance_id=nope&name=Go&payload=%7B&reason=x".into(),
            StatusCode::BAD_REQUEST,
            "not valid JSON",
        ),
        (
            "/api/fn/instances/list",
            "filter%5Bfrom%5D=yesterday".into(),
            StatusCode::BAD_REQUEST,
            "YYYY-MM-DD",
        ),
        (
            "/api/fn/instances/list",
            "filter%5Bsort%5D=size".into(),
            StatusCode::BAD_REQUEST,
            "created or updated",
        ),
        (
            "/api/fn/instances/list",
            "filter%5Btag%5D=novalue".into(),
            StatusCode::BAD_REQUEST,
            "key=value",
        ),
        (
            "/api/fn/instances/list",
            "filter%5Bfrom%5D=2026-02-01&filter%5Bto%5D=2026-01-01".into(),
            StatusCode::BAD_REQUEST,
            "after",
        ),
        (
            "/api/fn/instances/list",
            "filter%5Bcursor%5D=garbage".into(),
            StatusCode::BAD_REQUEST,
            "cursor",
        ),
        (
            "/api/fn/runaways",
            "history=abc".into(),
            StatusCode::BAD_REQUEST,
            "arguments are not valid",
        ),
        (
            "/api/fn/audit/list",
            "filter%5Bbefore%5D=-1".into(),
            StatusCode::BAD_REQUEST,
            "positive",
        ),
        (
            "/api/fn/instances/get",
            "instance_id=missing".into(),
            StatusCode::NOT_FOUND,
            "missing",
        ),
    ];
    for (path, form, expected, needle) in cases {
        let (status, body) = send_form(&router, "POST", path, &form).await;
        let shown: String = form.chars().take(80).collect();
        assert_eq!(status, expected, "{path} {shown}: {body}");
        assert!(body.contains(needle), "{path} {shown}: {body}");
    }
    // Pages show the message instead of failing.
    let (status, html) = send(&router, "GET", "/instances?from=yesterday").await;
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(html.contains("YYYY-MM-DD"), "{html}");
    let (_, html) = send(&router, "GET", "/runaways?history=abc").await;
    assert!(html.contains("history must be a whole number"), "{html}");
    // No filter at all is the unfiltered list, not a missing argument (what a hydrated page
    // sends for `/instances`).
    for path in ["/api/fn/instances/list", "/api/fn/audit/list"] {
        let (status, body) = send_form(&router, "POST", path, "").await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    runtime.shutdown().await;
}
