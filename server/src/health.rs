//! Liveness and readiness probes for process supervisors and load balancers.
//!
//! `/healthz` answers 200 while the process serves HTTP. `/readyz` answers 200 only when the
//! database responds, its schema is at the version this binary expects and the engine can do its
//! work (its tasks run and its writes succeed: not while the disk is full), otherwise 503 with
//! the reason in the JSON body.

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use engine::db::Readiness;
use serde_json::json;

use crate::state::AppState;

/// Routes for the probes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    match state.db.readiness().await {
        Readiness::Ready => match state.engine.as_ref().map(|e| e.health()) {
            Some(health) if !health.ready => {
                tracing::warn!(problems = ?health.problems, "readiness: the engine cannot work");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({
                        "status": "unavailable",
                        "reason": health.problems.join("; "),
                    })),
                )
            }
            _ => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        },
        Readiness::Unreachable(reason) => {
            tracing::warn!(%reason, "readiness: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "reason": "database unreachable" })),
            )
        }
        Readiness::MigrationsPending { applied, expected } => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "unavailable",
                "reason": format!("schema at {applied}, expected {expected}"),
            })),
        ),
    }
}
