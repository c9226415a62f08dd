//! The JSON HTTP API under `/api/v1`: the dashboard's control surface for scripts.
//!
//! Same rules as the dashboard: the authentication middleware has already attached the user
//! (a session cookie, or the local administrator in local mode; requests without one get 401),
//! every mutation checks the role and is audited through `app::audit::ssr::guarded_as`, and the
//! CSRF layer refuses cross-site mutations. Errors are `{"error": kind, "message": text}` with a
//! 4xx status for anything the caller can fix.
//!
//! | method | path | body | role |
//! |---|---|---|---|
//! | GET | `/api/v1/instances?status=&name=&id=&from=&to=&tag=&sort=&order=&cursor=` | – | viewer |
//! | POST | `/api/v1/instances` | `{"name", "input", "instance_id"?, "start_at"?}` | operator |
//! | GET | `/api/v1/instances/{id}` | – | viewer |
//! | POST | `/api/v1/instances/{id}/{terminate,suspend,resume}` | `{"reason"}` | operator |
//! | POST | `/api/v1/instances/{id}/{rewind,restart,purge}` | `{"reason"}` | admin |
//! | POST | `/api/v1/instances/{id}/events/{name}` | `{"payload", "reason"}` | operator |
//! | GET | `/api/v1/counts` | – | viewer |

use app::{
    audit::ssr::{Action, guarded_as},
    error::AppError,
    models::InstanceList,
    routes::{
        detail::{InstanceAction, InstanceDetail},
        instances::InstanceFilter,
    },
    session::{CurrentUser, Role},
};
use axum::{
    Extension, Json, Router,
    extract::{Path, Query, State, rejection::JsonRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;

/// The API routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/instances", get(list).post(start))
        .route("/api/v1/instances/{id}", get(detail))
        .route("/api/v1/instances/{id}/events/{name}", post(raise))
        .route("/api/v1/instances/{id}/{action}", post(act))
        .route("/api/v1/counts", get(counts))
        .route(
            "/api/v1/{*rest}",
            axum::routing::any(|| async { ApiError::not_found("no such API route") }),
        )
}

/// An API failure as JSON.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    fn not_found(message: &str) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            kind: "not_found",
            message: message.to_owned(),
        }
    }

    fn invalid(message: String) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid",
            message,
        }
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        let kind = match &e {
            AppError::Validation(_) => "invalid",
            AppError::NotFound(_) => "not_found",
            AppError::Forbidden(_) => "forbidden",
            AppError::Unavailable | AppError::Transport(_) => "unavailable",
        };
        ApiError {
            status: e.status_code(),
            kind,
            message: e.to_string(),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        ApiError::invalid(format!(
            "the body is not the expected JSON: {}",
            e.body_text()
        ))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "error": self.kind, "message": self.message })),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn engine(state: &AppState) -> ApiResult<&app::EngineClient> {
    state.engine.as_ref().ok_or_else(|| {
        ApiError::from(AppError::Validation(
            "the engine does not run on this database backend yet".into(),
        ))
        .with_status(StatusCode::SERVICE_UNAVAILABLE)
    })
}

impl ApiError {
    fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

#[derive(Debug, Deserialize)]
struct ListParams {
    status: Option<String>,
    name: Option<String>,
    id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    tag: Option<String>,
    sort: Option<String>,
    order: Option<String>,
    cursor: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<InstanceList>> {
    let Query(p) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let filter = InstanceFilter {
        status: p.status,
        name: p.name,
        id_prefix: p.id,
        from: p.from,
        to: p.to,
        tag: p.tag,
        sort: p.sort,
        order: p.order,
        cursor: p.cursor,
    };
    let list = app::routes::instances::ssr::list_with(engine(&state)?, filter).await?;
    Ok(Json(list))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    name: String,
    #[serde(default)]
    input: Value,
    instance_id: Option<String>,
    /// UTC, `YYYY-MM-DD HH:MM`.
    start_at: Option<String>,
}

async fn start(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    body: Result<Json<StartBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(body) = body?;
    let engine = engine(&state)?;
    let target = body.name.clone();
    let audit = Action {
        name: "start",
        target: &target,
        reason: "",
    };
    let id = guarded_as(
        &state.db,
        &user,
        Role::Operator,
        audit,
        app::routes::start::ssr::start_with(
            engine,
            body.name,
            body.input.to_string(),
            body.instance_id,
            body.start_at,
        ),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(json!({ "instance_id": id }))))
}

async fn detail(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<InstanceDetail>> {
    let detail = app::routes::detail::ssr::get_with(engine(&state)?, id).await?;
    Ok(Json(detail))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: String,
}

async fn act(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path((id, action)): Path<(String, String)>,
    body: Result<Json<ReasonBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let action = match action.as_str() {
        "terminate" => InstanceAction::Terminate,
        "suspend" => InstanceAction::Suspend,
        "resume" => InstanceAction::Resume,
        "rewind" => InstanceAction::Rewind,
        "restart" => InstanceAction::Restart,
        "purge" => InstanceAction::Purge,
        other => {
            return Err(ApiError::not_found(&format!(
                "unknown action {other:?}; use terminate, suspend, resume, rewind, restart or purge"
            )));
        }
    };
    let Json(body) = body?;
    let engine = engine(&state)?;
    let audit = Action {
        name: action.audit_name(),
        target: &id,
        reason: &body.reason,
    };
    let next = guarded_as(
        &state.db,
        &user,
        action.needs(),
        audit,
        app::routes::detail::ssr::act_with(engine, &id, action, &body.reason),
    )
    .await?;
    Ok(Json(json!({ "instance_id": next })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RaiseBody {
    #[serde(default)]
    payload: Value,
    reason: String,
}

async fn raise(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path((id, name)): Path<(String, String)>,
    body: Result<Json<RaiseBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(body) = body?;
    let engine = engine(&state)?;
    let target = format!("{id} event {name}");
    let audit = Action {
        name: "raise-event",
        target: &target,
        reason: &body.reason,
    };
    guarded_as(
        &state.db,
        &user,
        Role::Operator,
        audit,
        app::routes::detail::ssr::raise_with(
            engine,
            &id,
            &name,
            &body.payload.to_string(),
            &body.reason,
        ),
    )
    .await?;
    Ok(Json(json!({ "raised": name })))
}

async fn counts(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let counts = engine(&state)?
        .status_counts()
        .await
        .map_err(AppError::from)?;
    let map: serde_json::Map<String, Value> = counts
        .into_iter()
        .map(|(status, n)| (status.to_string(), json!(n)))
        .collect();
    Ok(Json(Value::Object(map)))
}
