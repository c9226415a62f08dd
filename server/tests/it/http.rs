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
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    app(AppState::new(db, Path::new("target/site"), addr))
}

pub async fn send(router: &Router, method: &str, path: &str) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn probes_answer() {
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
async fn overview_is_server_rendered_with_the_stored_value() {
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
    assert!(
        html.contains(r#"data-testid="counter-value">0</output>"#),
        "{html}"
    );
    // The button is rendered disabled; only hydration enables it.
    assert!(html.contains("disabled"), "{html}");

    for expected in ["1", "2"] {
        let (status, body) = send(&router, "POST", "/api/fn/counter/increment").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, expected));
    }
    assert_eq!(
        send(&router, "POST", "/api/fn/counter/get").await,
        (StatusCode::OK, "2".into())
    );
    let (_, html) = send(&router, "GET", "/").await;
    assert!(
        html.contains(r#"data-testid="counter-value">2</output>"#),
        "{html}"
    );
}

async fn post_with(router: &Router, path: &str, headers: &[(&str, &str)]) -> StatusCode {
    let mut request = Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/x-www-form-urlencoded");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    response.status()
}

#[tokio::test]
async fn mutating_requests_from_another_site_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let db = sqlite(tmp.path()).await;
    db.migrate().await.unwrap();
    let router = router(db);
    let path = "/api/fn/counter/increment";
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
            post_with(&router, path, headers).await,
            StatusCode::FORBIDDEN,
            "{headers:?}"
        );
    }
    // Nothing changed.
    assert_eq!(send(&router, "POST", "/api/fn/counter/get").await.1, "0");
    let same_origin = [
        ("host", "127.0.0.1:3000"),
        ("origin", "http://127.0.0.1:3000"),
        ("sec-fetch-site", "same-origin"),
    ];
    assert_eq!(post_with(&router, path, &same_origin).await, StatusCode::OK);
    assert_eq!(send(&router, "POST", "/api/fn/counter/get").await.1, "1");
}

#[tokio::test]
async fn unknown_page_is_404() {
    let tmp = tempfile::tempdir().unwrap();
    let db = sqlite(tmp.path()).await;
    db.migrate().await.unwrap();
    let (status, html) = send(&router(db), "GET", "/definitely/not/here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("Page not found"), "{html}");
}
