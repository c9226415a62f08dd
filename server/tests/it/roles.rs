//! The role matrix: every mutating server function, called by a viewer, an operator and an
//! admin (and without a session), through the real router with OIDC sessions stored in the
//! database. Allowed calls reach the action (and are audited as such); refused ones get 403
//! before anything changes. Also CSRF with a valid admin session.

use std::{collections::HashMap, net::SocketAddr, path::Path, sync::Arc};

use app::session::Role;
use axum::{
    Router,
    body::{Body, to_bytes},
    http::{Request, StatusCode},
};
use engine::{Database, Runtime, RuntimeOptions, SqliteStore};
use server::{
    AppState,
    auth::{Auth, Oidc, SessionUser, USER},
    config::{OidcSettings, RoleMap},
};
use tower::ServiceExt;
use tower_sessions::{
    SessionStore,
    session::{Id, Record},
};

pub struct Fixture {
    pub router: Router,
    pub db: Database,
    pub sessions: HashMap<Role, String>,
    pub engine: app::EngineClient,
    _runtime: Runtime<SqliteStore>,
    _dir: tempfile::TempDir,
}

/// A server in OIDC mode (the provider is never contacted: sessions are written directly to the
/// store, as the login would) with the engine and samples, and one session per role.
pub async fn fixture() -> Fixture {
    fixture_with(RuntimeOptions::default()).await
}

/// [`fixture`] with the runtime's options given.
pub async fn fixture_with(options: RuntimeOptions) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = crate::http::sqlite(dir.path()).await;
    db.migrate().await.unwrap();
    let Database::Sqlite(pool) = &db else {
        unreachable!()
    };
    let store = SqliteStore::new(pool.clone()).await.unwrap();
    let runtime = Runtime::start(store, engine::samples::registry(), options);
    let settings = OidcSettings {
        issuer: "http://127.0.0.1:9".into(),
        client_id: "switchyard".into(),
        client_secret: None,
        redirect_url: openidconnect::RedirectUrl::new("http://127.0.0.1:3000/auth/callback".into())
            .unwrap(),
        scopes: vec!["openid".into()],
        role_claim: "groups".into(),
        roles: RoleMap::default(),
    };
    let auth = Auth::Oidc(Arc::new(Oidc::new(settings).unwrap()));
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let state = AppState::new(
        db.clone(),
        Some(runtime.client()),
        auth,
        &site_root(dir.path()),
        addr,
    );
    let sessions_store = tower_sessions_sqlx_store::SqliteStore::new(pool.clone());
    let mut sessions = HashMap::new();
    for role in [Role::Viewer, Role::Operator, Role::Admin] {
        let user = SessionUser {
            subject: role.label().into(),
            name: format!("{}-user", role.label()),
            role,
            id_token: String::new(),
        };
        let mut record = Record {
            id: Id::default(),
            data: HashMap::from([(USER.to_owned(), serde_json::to_value(&user).unwrap())]),
            expiry_date: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        };
        sessions_store.create(&mut record).await.unwrap();
        sessions.insert(role, record.id.to_string());
    }
    Fixture {
        router: server::app(state),
        db,
        sessions,
        engine: runtime.client(),
        _runtime: runtime,
        _dir: dir,
    }
}

/// The bundle folder [`site_root`] writes (`cargo xtask build` names it after the content's hash).
pub const BUILD_ID: &str = "0123456789abcdef";

/// A site root under `dir` shaped like the one `cargo xtask build` writes: the bundle in its
/// folder, named in `build.txt`, the stylesheet also under its plain name, and the favicon.
pub fn site_root(dir: &Path) -> std::path::PathBuf {
    let site = dir.join("site");
    let bundle = site.join("pkg").join(BUILD_ID);
    std::fs::create_dir_all(&bundle).unwrap();
    for ext in ["js", "wasm", "css"] {
        // Large and repetitive enough that compression shows.
        let body = format!("/* app.{ext} */\n").repeat(500);
        std::fs::write(bundle.join(format!("app.{ext}")), &body).unwrap();
        if ext == "wasm" {
            // What `cargo xtask build` precompresses; the marker shows which copy was sent.
            std::fs::write(bundle.join("app.wasm.br"), "precompressed br").unwrap();
        }
        if ext == "css" {
            std::fs::write(site.join("pkg").join("app.css"), &body).unwrap();
        }
    }
    std::fs::write(site.join("build.txt"), format!("{BUILD_ID}\n")).unwrap();
    std::fs::write(
        site.join("favicon.svg"),
        "<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
    )
    .unwrap();
    site
}

impl Fixture {
    /// A same-site server-function call in `role`'s session.
    pub async fn call(&self, role: Role, path: &str, form: &str) -> (StatusCode, String) {
        post(&self.router, path, form, Some(&self.sessions[&role]), None).await
    }
}

async fn post(
    router: &Router,
    path: &str,
    form: &str,
    session: Option<&str>,
    origin: Option<&str>,
) -> (StatusCode, String) {
    let mut request = Request::builder()
        .method("POST")
        .uri(path)
        .header("host", "127.0.0.1:3000")
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(id) = session {
        request = request.header("cookie", format!("switchyard.sid={id}"));
    }
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::from(form.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The audit outcomes recorded for `action`, oldest first.
async fn audit_outcomes(db: &Database, action: &str) -> Vec<(String, String)> {
    let Database::Sqlite(pool) = db else {
        unreachable!()
    };
    sqlx::query_as("SELECT role, outcome FROM audit_log WHERE action = ? ORDER BY id")
        .bind(action)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// A valid start form (a sample with its input).
const START_FORM: &str = "name=HelloSequence&input=%5B%22Ada%22%5D";

/// One mutating call: its endpoint, its form, the least role allowed, its audit name.
struct Call {
    path: &'static str,
    form: String,
    needs: Role,
    audit: &'static str,
}

fn calls(id: &str) -> Vec<Call> {
    let act = |action: &str| format!("instance_id={id}&action={action}&reason=matrix");
    vec![
        Call {
            path: "/api/fn/instances/start",
            form: START_FORM.into(),
            needs: Role::Operator,
            audit: "start",
        },
        Call {
            path: "/api/fn/instances/act",
            form: act("Suspend"),
            needs: Role::Operator,
            audit: "suspend",
        },
        Call {
            path: "/api/fn/instances/act",
            form: act("Resume"),
            needs: Role::Operator,
            audit: "resume",
        },
        Call {
            path: "/api/fn/instances/raise",
            form: format!("instance_id={id}&name=Ping&payload=1&reason=matrix"),
            needs: Role::Operator,
            audit: "raise-event",
        },
        Call {
            path: "/api/fn/instances/act",
            form: act("Terminate"),
            needs: Role::Operator,
            audit: "terminate",
        },
        Call {
            path: "/api/fn/approvals/decide",
            form: format!("instance_id={id}&approved=true&comment=ok"),
            needs: Role::Operator,
            audit: "approve",
        },
        Call {
            path: "/api/fn/instances/act",
            form: act("Rewind"),
            needs: Role::Admin,
            audit: "rewind",
        },
        Call {
            path: "/api/fn/instances/act",
            form: act("Purge"),
            needs: Role::Admin,
            audit: "purge",
        },
        Call {
            path: "/api/fn/instances/act",
            form: act("Restart"),
            needs: Role::Admin,
            audit: "restart",
        },
        Call {
            path: "/api/fn/bulk/run",
            form: "filter%5Bid_prefix%5D=none-such&action=Terminate&reason=matrix\
                   &confirmation=terminate%200"
                .into(),
            needs: Role::Admin,
            audit: "bulk-terminate",
        },
        Call {
            path: "/api/fn/tokens/create",
            form: "name=matrix&role=Viewer&days=1".into(),
            needs: Role::Admin,
            audit: "create token",
        },
        Call {
            path: "/api/fn/entities/signal",
            form: "entity_id=%40counter%40matrix&operation=add&input=1".into(),
            needs: Role::Operator,
            audit: "signal-entity",
        },
        Call {
            path: "/api/fn/entities/admin",
            form: "entity_id=%40counter%40matrix&action=ReleaseLock&reason=matrix\
                   &confirmation=%40counter%40matrix"
                .into(),
            needs: Role::Admin,
            audit: "release-entity-lock",
        },
        Call {
            path: "/api/fn/entities/admin",
            form: "entity_id=%40counter%40matrix&action=Purge&reason=matrix\
                   &confirmation=%40counter%40matrix"
                .into(),
            needs: Role::Admin,
            audit: "purge-entity",
        },
        Call {
            path: "/api/fn/entities/clean",
            form: "reason=matrix".into(),
            needs: Role::Admin,
            audit: "clean-entity-storage",
        },
        Call {
            path: "/api/fn/resilience/breaker",
            form: "name=flaky-dependency&action=reset&reason=matrix".into(),
            needs: Role::Operator,
            audit: "breaker.reset",
        },
        Call {
            path: "/api/fn/resilience/flaky",
            form: "percent=10".into(),
            needs: Role::Operator,
            audit: "sample.flaky-failure-rate",
        },
        Call {
            path: "/api/fn/tokens/revoke",
            form: "id=0123456789abcdef".into(),
            needs: Role::Admin,
            audit: "revoke token",
        },
    ]
}

#[tokio::test]
async fn every_mutating_call_is_refused_below_its_role_and_reaches_the_action_at_or_above() {
    let _serial = crate::RENDER_LOCK.lock().await;
    let f = fixture().await;
    for role in [Role::Viewer, Role::Operator, Role::Admin] {
        // A live instance per role, so state-dependent actions have something to act on.
        let id = format!("matrix-{}", role.label());
        let start = format!(
            "name=HumanInteraction&input=%7B%22request%22%3A%22x%22%2C%22timeout_ms%22%3A600000%7D&instance_id={id}"
        );
        let admin = f.sessions[&Role::Admin].as_str();
        let (status, body) = post(
            &f.router,
            "/api/fn/instances/start",
            &start,
            Some(admin),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");

        for call in calls(&id) {
            let before = audit_outcomes(&f.db, call.audit).await.len();
            let session = f.sessions[&role].as_str();
            let (status, body) = post(&f.router, call.path, &call.form, Some(session), None).await;
            let outcomes = audit_outcomes(&f.db, call.audit).await;
            let (audited_role, outcome) = outcomes.last().cloned().unwrap_or_default();
            if role >= call.needs {
                assert_ne!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{:?} {} {}: {body}",
                    role,
                    call.path,
                    call.form
                );
                assert_ne!(status, StatusCode::UNAUTHORIZED, "{body}");
                assert!(
                    !outcome.starts_with("refused"),
                    "{:?} {}: {outcome}",
                    role,
                    call.audit
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{:?} {} {}: {body}",
                    role,
                    call.path,
                    call.form
                );
                assert!(
                    body.contains(&format!("needs the {} role", call.needs.label())),
                    "{body}"
                );
                assert!(
                    outcome.starts_with("refused"),
                    "{:?} {}: {outcome}",
                    role,
                    call.audit
                );
            }
            assert_eq!(
                outcomes.len(),
                before + 1,
                "one audit entry per call ({})",
                call.audit
            );
            assert_eq!(audited_role, role.label());
        }
    }
    // What the allowed calls did is real: the operator terminated its instance (so the approval
    // after it came too late), and the admin's was terminated, then purged.
    let Database::Sqlite(pool) = &f.db else {
        unreachable!()
    };
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM instances WHERE instance_id = 'matrix-viewer'")
            .fetch_optional(pool)
            .await
            .unwrap();
    assert_eq!(
        status.as_deref(),
        Some("Running"),
        "nothing a viewer sent changed its instance"
    );
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM instances WHERE instance_id = 'matrix-operator'")
            .fetch_optional(pool)
            .await
            .unwrap();
    assert_eq!(status.as_deref(), Some("Terminated"));
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM instances WHERE instance_id = 'matrix-admin'")
            .fetch_optional(pool)
            .await
            .unwrap();
    assert_eq!(status, None, "the admin's purge removed it");
}

#[tokio::test]
async fn without_a_session_calls_get_401_and_pages_redirect_to_login() {
    let _serial = crate::RENDER_LOCK.lock().await;
    let f = fixture().await;
    for call in calls("nobody") {
        let (status, body) = post(&f.router, call.path, &call.form, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{}: {body}", call.path);
    }
    let (status, _) = post(
        &f.router,
        "/api/fn/instances/list",
        "",
        Some("not-a-session"),
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "an unknown session id is no session"
    );
    let response = f
        .router
        .clone()
        .oneshot(
            Request::builder()
                .uri("/instances?status=Running")
                .header("sec-fetch-mode", "navigate")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        response.headers()["location"],
        "/auth/login?next=%2Finstances%3Fstatus%3DRunning"
    );
    assert_eq!(
        crate::http::send(&f.router, "GET", "/healthz").await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_cross_site_request_is_refused_even_with_an_admin_session() {
    let _serial = crate::RENDER_LOCK.lock().await;
    let f = fixture().await;
    let admin = f.sessions[&Role::Admin].as_str();
    let (status, _) = post(
        &f.router,
        "/api/fn/instances/start",
        START_FORM,
        Some(admin),
        Some("http://evil.example"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        audit_outcomes(&f.db, "start").await.is_empty(),
        "refused before the action"
    );
    let (status, body) = post(
        &f.router,
        "/api/fn/instances/start",
        START_FORM,
        Some(admin),
        Some("http://127.0.0.1:3000"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "same-origin passes: {body}");
}
