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
async fn postgres_migrates_and_serves_the_counter() {
    let db = postgres().await;
    db.migrate().await.unwrap();
    assert_eq!(db.readiness().await, Readiness::Ready);
    let router = router(db);
    assert_eq!(send(&router, "GET", "/readyz").await.0, StatusCode::OK);
    let (_, before) = send(&router, "POST", "/api/fn/counter/get").await;
    let before: i64 = before.parse().unwrap();
    let (status, after) = send(&router, "POST", "/api/fn/counter/increment").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(after.parse::<i64>().unwrap(), before + 1);
    let (_, html) = send(&router, "GET", "/").await;
    assert!(
        html.contains(&format!(
            r#"data-testid="counter-value">{}</output>"#,
            before + 1
        )),
        "{html}"
    );
}
