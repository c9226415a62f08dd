//! Liveness and readiness probes for process supervisors and load balancers.
//!
//! `/healthz` answers 200 while the process serves HTTP. `/readyz` answers 200 only when the
//! database responds and its schema is at the version this binary expects, otherwise 503 with the
//! reason in the JSON body.

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
        Readiness::Ready => (StatusCode::OK, Json(json!({ "status": "ready" }))),
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
