//! The same HTTP path against PostgreSQL. Needs a server: `cargo xtask test` starts one and sets
//! `SWITCHYARD_TEST_POSTGRES_URL`, then runs these ignored tests explicitly. A plain `cargo test`
//! lists them as ignored rather than pretending they passed.

use axum::http::StatusCode;
use engine::{Database, DatabaseUrl, db::ConnectOptions, db::Readiness};

use crate::http::{router, send};

async fn postgres() -> Database {
    let url = std::env::var("SWITCHYARD_TEST_POSTGRES_URL").expect(
        "SWITCHYARD_TEST_POSTGRES_URL is not set: run `cargo xtask test`, which starts PostgreSQL",
    );
    let url: DatabaseUrl = url.parse().unwrap();
    Database::connect(&url, &ConnectOptions::default())
        .await
        .unwrap()
}

#[tokio::test]
#[ignore = "needs PostgreSQL; `cargo xtask test` provides it"]
async fn postgres_migrates_and_serves_pages_and_server_functions() {
    let db = postgres().await;
    db.migrate().await.unwrap();
    assert_eq!(db.readiness().await, Readiness::Ready);
    let router = router(db);
    assert_eq!(send(&router, "GET", "/readyz").await.0, StatusCode::OK);
    // A server function that writes (an API token) and one that reads it back.
    let (status, created) = crate::http::send_form(
        &router,
        "POST",
        "/api/fn/tokens/create",
        "name=postgres-check&role=Viewer&days=1",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let (status, listed) = send(&router, "POST", "/api/fn/tokens/list").await;
    assert_eq!(status, StatusCode::OK);
    assert!(listed.contains("postgres-check"), "{listed}");
    let (status, html) = send(&router, "GET", "/tokens").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("postgres-check"), "{html}");
}
