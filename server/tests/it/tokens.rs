//! API tokens: an administrator creates one in a session, a script uses it as a bearer token on
//! the JSON API with the token's role, and revoked, expired, forged or malformed tokens get 401.

use app::session::Role;
use axum::{
    body::{Body, to_bytes},
    http::{Request, StatusCode, header},
};
use engine::Database;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::roles::{Fixture, fixture};

/// A request with `Authorization: Bearer <token>` and no session.
async fn bearer(
    f: &Fixture,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1:3000")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let response = f.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn create(f: &Fixture, name: &str, role: &str) -> (String, String) {
    let (status, body) = f
        .call(
            Role::Admin,
            "/api/fn/tokens/create",
            &format!("name={name}&role={role}&days=30"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    (
        created["token"]["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    )
}

fn pool(db: &Database) -> &sqlx::SqlitePool {
    let Database::Sqlite(pool) = db else {
        unreachable!()
    };
    pool
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_acts_with_its_tokens_role_until_the_token_is_revoked() {
    let _serial = crate::RENDER_LOCK.lock().await;
    let f = fixture().await;
    let (id, operator) = create(&f, "deploy-bot", "Operator").await;
    let (_, viewer) = create(&f, "reporting", "Viewer").await;
    assert!(operator.starts_with("sy_") && operator.len() == 3 + 16 + 1 + 64);

    // Only the digest is stored.
    let stored: String = sqlx::query_scalar("SELECT secret_sha256 FROM api_tokens WHERE id = ?")
        .bind(&id)
        .fetch_one(pool(&f.db))
        .await
        .unwrap();
    assert_eq!(stored.len(), 64);
    assert!(!operator.contains(&stored) && !stored.contains(&operator[20..]));

    // The operator token starts an instance; the viewer token reads but may not start.
    let start = json!({"name": "HelloSequence", "input": ["bot"], "instance_id": "by-token"});
    let (status, body) = bearer(
        &f,
        "POST",
        "/api/v1/instances",
        &operator,
        Some(start.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = bearer(&f, "GET", "/api/v1/instances/by-token", &viewer, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = bearer(&f, "POST", "/api/v1/instances", &viewer, Some(start)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("needs the operator role"), "{body}");

    // The audit log names the token, and the token's last use is noted.
    let actors: Vec<(String, String)> =
        sqlx::query_as("SELECT actor, outcome FROM audit_log WHERE action = 'start' ORDER BY id")
            .fetch_all(pool(&f.db))
            .await
            .unwrap();
    assert_eq!(
        actors,
        vec![
            (format!("deploy-bot (API token {id})"), "ok".to_owned()),
            (
                actors[1].0.clone(),
                "refused: not allowed: this action needs the operator role; you are viewer"
                    .to_owned()
            ),
        ]
    );
    assert!(actors[1].0.starts_with("reporting (API token "));
    let used: Option<i64> = sqlx::query_scalar("SELECT last_used_ms FROM api_tokens WHERE id = ?")
        .bind(&id)
        .fetch_one(pool(&f.db))
        .await
        .unwrap();
    assert!(used.is_some());

    // The token list shows both, without secrets; operators may not list them.
    let (status, body) = f.call(Role::Admin, "/api/fn/tokens/list", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(!body.contains(&operator[20..]), "no secret in the list");
    assert_eq!(
        f.call(Role::Operator, "/api/fn/tokens/list", "").await.0,
        StatusCode::FORBIDDEN
    );

    // Revoked: refused at once, and revoking again is a 404.
    let (status, body) = f
        .call(Role::Admin, "/api/fn/tokens/revoke", &format!("id={id}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = bearer(&f, "GET", "/api/v1/instances", &operator, None).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::UNAUTHORIZED, "this API token was revoked")
    );
    let (status, _) = f
        .call(Role::Admin, "/api/fn/tokens/revoke", &format!("id={id}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Expired: refused.
    sqlx::query("UPDATE api_tokens SET expires_ms = 1 WHERE revoked_ms IS NULL")
        .execute(pool(&f.db))
        .await
        .unwrap();
    let (status, body) = bearer(&f, "GET", "/api/v1/instances", &viewer, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("expired"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_malformed_and_misplaced_tokens_get_nothing() {
    let _serial = crate::RENDER_LOCK.lock().await;
    let f = fixture().await;
    let (id, real) = create(&f, "ci", "Admin").await;
    let forged = format!("sy_{id}_{}", "0".repeat(64));
    let unknown = format!("sy_{}_{}", "f".repeat(16), &real[20..]);
    for (token, message) in [
        (forged.as_str(), "this API token is unknown or wrong"),
        (unknown.as_str(), "this API token is unknown or wrong"),
        ("sy_short", "must be `Bearer sy_…`"),
        ("", "must be `Bearer sy_…`"),
    ] {
        let (status, body) = bearer(&f, "GET", "/api/v1/instances", token, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token}: {body}");
        assert!(body.contains(message), "{token}: {body}");
    }
    // A bad token is refused even alongside a valid session: the token decides.
    let request = Request::builder()
        .uri("/api/v1/instances")
        .header("host", "127.0.0.1:3000")
        .header(header::AUTHORIZATION, "Basic YWxpY2U6eA==")
        .header(
            "cookie",
            format!("switchyard.sid={}", f.sessions[&Role::Admin]),
        )
        .body(Body::empty())
        .unwrap();
    let response = f.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Tokens are for the API: a page with a token and no session still goes to the login.
    let request = Request::builder()
        .uri("/instances")
        .header("host", "127.0.0.1:3000")
        .header("accept", "text/html")
        .header(header::AUTHORIZATION, format!("Bearer {real}"))
        .body(Body::empty())
        .unwrap();
    let response = f.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    // Bad creation input is a 400 that names the problem, and nothing is stored.
    for (form, problem) in [
        ("name=%20&role=Viewer&days=30", "a token needs a name"),
        (
            "name=x&role=Viewer&days=0",
            "the lifetime must be 1 to 365 days",
        ),
        (
            "name=x&role=Viewer&days=9999",
            "the lifetime must be 1 to 365 days",
        ),
        ("name=x&role=Root&days=30", "arguments are not valid"),
    ] {
        let (status, body) = f.call(Role::Admin, "/api/fn/tokens/create", form).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{form}: {body}");
        assert!(body.contains(problem), "{form}: {body}");
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM api_tokens")
        .fetch_one(pool(&f.db))
        .await
        .unwrap();
    assert_eq!(count, 1);
}
