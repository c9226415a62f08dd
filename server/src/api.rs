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
//! | GET | `/api/v1/openapi.json` | – | viewer (this table as OpenAPI 3.1, from [`ApiDoc`]) |
//! | GET | `/api/v1/export/instances?format=csv\|json&<list filters>` | – | viewer (streamed, see `export`) |
//! | GET | `/api/v1/entities?name=&key=&transient=&locked=&cursor=` | – | viewer |
//! | GET | `/api/v1/entities/{id}` | – | viewer |
//! | POST | `/api/v1/entities/{id}/signal` | `{"operation", "input"?, "request_id"?}` | operator |
//! | POST | `/api/v1/entities/{id}/purge` | `{"reason"}` | admin |
//! | POST | `/api/v1/entities/{id}/release-lock` | `{"reason", "force"?}` | admin |
//! | POST | `/api/v1/entities/clean-storage` | `{"reason"}` | admin |
//! | GET | `/api/v1/resilience` | – | viewer |
//! | POST | `/api/v1/resilience/breakers/{name}/{force-open,force-close,reset}` | `{"reason"}` | operator |
//! | POST | `/api/v1/resilience/samples/flaky` | `{"failure_percent"}` | operator |
//!
//! A start refused by load levelling (the intake is full) answers 429 with `Retry-After`.

use app::{
    audit::ssr::{Action, guarded_as},
    error::AppError,
    models::InstanceList,
    routes::{
        detail::{InstanceAction, InstanceDetail},
        entities::{EntityAction, EntityDetail, EntityFilter, EntityList},
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
        .route("/api/v1/openapi.json", get(openapi_json))
        .route("/api/v1/export/instances", get(crate::export::instances))
        .route("/api/v1/entities", get(list_entities))
        .route("/api/v1/entities/clean-storage", post(clean_entities))
        .route("/api/v1/entities/{id}", get(entity))
        .route("/api/v1/entities/{id}/{action}", post(act_on_entity))
        .route("/api/v1/resilience", get(resilience))
        .route(
            "/api/v1/resilience/breakers/{name}/{action}",
            post(act_on_breaker),
        )
        .route("/api/v1/resilience/samples/flaky", post(set_flaky))
        .route(
            "/api/v1/{*rest}",
            axum::routing::any(|| async { ApiError::not_found("no such API route") }),
        )
}

/// The body of every API error (documentation of what [`ApiError`] writes).
#[derive(utoipa::ToSchema)]
#[expect(dead_code, reason = "only its schema is used")]
pub(crate) struct ErrorBody {
    /// A stable kind: `invalid`, `not_found`, `forbidden`, `conflict`, `too_large`, …
    error: String,
    /// What happened, for people.
    message: String,
}

/// The OpenAPI 3.1 document of `/api/v1`, generated from the handlers' annotations and the
/// shapes they return (served at `/api/v1/openapi.json`).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Switchyard API",
        description = "The dashboard's control surface for scripts. Authenticate with a session \
            cookie or `Authorization: Bearer sy_…` (an API token); mutations check the role and are \
            audited. Payloads (inputs, outputs, states, event details) are JSON values."
    ),
    paths(
        list, start, detail, act, raise, counts, crate::export::instances,
        list_entities, entity, act_on_entity, clean_entities,
        resilience, act_on_breaker, set_flaky, openapi_json
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// Declares the bearer-token scheme the document's `security` names.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token from the dashboard's API tokens page"))
                    .build(),
            ),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = serde_json::Value)))]
async fn openapi_json() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| {
        use utoipa::OpenApi;
        ApiDoc::openapi().to_json().unwrap_or_default()
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        doc.clone(),
    )
        .into_response()
}

/// An API failure as JSON.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    /// For a 429: the `Retry-After` header, in seconds.
    retry_after_secs: Option<u64>,
}

impl ApiError {
    fn not_found(message: &str) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            kind: "not_found",
            message: message.to_owned(),
            retry_after_secs: None,
        }
    }

    pub(crate) fn invalid(message: String) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid",
            message,
            retry_after_secs: None,
        }
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        let kind = match &e {
            AppError::Validation(_) => "invalid",
            AppError::NotFound(_) => "not_found",
            AppError::Conflict(_) => "conflict",
            AppError::Forbidden(_) => "forbidden",
            AppError::Overloaded { .. } => "overloaded",
            AppError::Unavailable | AppError::Transport(_) => "unavailable",
        };
        ApiError {
            status: e.status_code(),
            kind,
            message: e.to_string(),
            retry_after_secs: e.retry_after_secs(),
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
        let mut response = (
            self.status,
            Json(json!({ "error": self.kind, "message": self.message })),
        )
            .into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
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

/// Lists instances: one page, newest first by default.
#[utoipa::path(get, path = "/api/v1/instances", tag = "instances",
    params(ListParams),
    responses((status = 200, description = "A page of instances", body = InstanceList), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "No session or token"), (status = 403, description = "The role does not allow it", body = ErrorBody)))]
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartBody {
    name: String,
    #[serde(default)]
    input: Value,
    instance_id: Option<String>,
    /// UTC, `YYYY-MM-DD HH:MM`.
    start_at: Option<String>,
}

/// Starts an orchestration (operator). A full intake answers 429 with `Retry-After`.
#[utoipa::path(post, path = "/api/v1/instances", tag = "instances", request_body = StartBody,
    responses((status = 201, description = "Started", body = serde_json::Value),
        (status = 409, description = "The id is in use", body = ErrorBody),
        (status = 429, description = "The start intake is full", body = ErrorBody), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "No session or token"), (status = 403, description = "The role does not allow it", body = ErrorBody)))]
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
            Some(user.name.clone()),
        ),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(json!({ "instance_id": id }))))
}

/// One instance with its history and timeline; payloads are JSON values.
#[utoipa::path(get, path = "/api/v1/instances/{id}", tag = "instances",
    params(("id" = String, Path, description = "Instance id")),
    responses((status = 200, description = "The instance", body = InstanceDetail),
        (status = 404, description = "No such instance", body = ErrorBody), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "No session or token"), (status = 403, description = "The role does not allow it", body = ErrorBody)))]
async fn detail(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<InstanceDetail>> {
    let detail = app::routes::detail::ssr::get_with(engine(&state)?, id).await?;
    Ok(Json(detail))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReasonBody {
    reason: String,
}

/// terminate, suspend, resume (operator); rewind, restart, purge (admin). A reason is required.
#[utoipa::path(post, path = "/api/v1/instances/{id}/{action}", tag = "instances",
    params(("id" = String, Path, description = "Instance id"),
        ("action" = String, Path, description = "terminate, suspend, resume, rewind, restart or purge")),
    request_body = ReasonBody,
    responses((status = 200, description = "Done; `instance_id` is the instance to show next (null after a purge)", body = serde_json::Value),
        (status = 404, description = "No such instance or action", body = ErrorBody),
        (status = 409, description = "Not allowed in the instance's state", body = ErrorBody), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "No session or token"), (status = 403, description = "The role does not allow it", body = ErrorBody)))]
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RaiseBody {
    #[serde(default)]
    payload: Value,
    reason: String,
}

/// Raises an event on an instance (operator).
#[utoipa::path(post, path = "/api/v1/instances/{id}/events/{name}", tag = "instances",
    params(("id" = String, Path, description = "Instance id"), ("name" = String, Path, description = "Event name")),
    request_body = RaiseBody,
    responses((status = 200, description = "Raised", body = serde_json::Value),
        (status = 404, description = "No such instance", body = ErrorBody), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "No session or token"), (status = 403, description = "The role does not allow it", body = ErrorBody)))]
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

/// Instances per status (the maintained counts).
#[utoipa::path(get, path = "/api/v1/counts", tag = "instances",
    responses((status = 200, description = "Status name to count", body = std::collections::BTreeMap<String, i64>), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "No session or token"), (status = 403, description = "The role does not allow it", body = ErrorBody)))]
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct EntityListParams {
    name: Option<String>,
    key: Option<String>,
    #[serde(default)]
    transient: bool,
    #[serde(default)]
    locked: bool,
    cursor: Option<String>,
}

/// Lists entities by type and key prefix, with a total.
#[utoipa::path(get, path = "/api/v1/entities", tag = "entities",
    params(EntityListParams),
    responses((status = 200, description = "A page of entities", body = EntityList), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "No session or token"), (status = 403, description = "The role does not allow it", body = ErrorBody)))]
async fn list_entities(
    State(state): State<AppState>,
    query: Result<Query<EntityListParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<EntityList>> {
    let Query(p) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let filter = EntityFilter {
        name: p.name,
        key_prefix: p.key,
        transient: p.transient,
        locked: p.locked,
        cursor: p.cursor,
    };
    let list = app::routes::entities::ssr::list_with(engine(&state)?, filter).await?;
    Ok(Json(list))
}

/// One entity: state (a JSON value), backlog, lock holder, recent operations.
#[utoipa::path(get, path = "/api/v1/entities/{id}", tag = "entities",
    params(("id" = String, Path, description = "Entity id, `@name@key`")),
    responses((status = 200, description = "The entity", body = EntityDetail),
        (status = 404, description = "No such entity", body = ErrorBody), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "No session or token"), (status = 403, description = "The role does not allow it", body = ErrorBody)))]
async fn entity(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<EntityDetail>> {
    let detail = app::routes::entities::ssr::get_with(engine(&state)?, &id).await?;
    Ok(Json(detail))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EntityBody {
    /// For `signal`.
    operation: Option<String>,
    #[serde(default)]
    input: Value,
    /// For `signal`: a retried signal with the same id applies once.
    request_id: Option<String>,
    /// For `purge` and `release-lock`.
    #[serde(default)]
    reason: String,
    #[serde(default)]
    force: bool,
}

/// signal (operator); purge, release-lock (admin, with a reason).
#[utoipa::path(post, path = "/api/v1/entities/{id}/{action}", tag = "entities",
    params(("id" = String, Path, description = "Entity id, `@name@key`"),
        ("action" = String, Path, description = "signal, purge or release-lock")),
    request_body = EntityBody,
    responses((status = 200, description = "Done", body = serde_json::Value),
        (status = 404, description = "No such entity or action", body = ErrorBody),
        (status = 413, description = "The input is too large", body = ErrorBody), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "No session or token"), (status = 403, description = "The role does not allow it", body = ErrorBody)))]
async fn act_on_entity(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path((id, action)): Path<(String, String)>,
    body: Result<Json<EntityBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    use app::routes::entities::ssr;
    let action = match action.as_str() {
        "signal" => EntityAction::Signal,
        "purge" => EntityAction::Purge,
        "release-lock" => EntityAction::ReleaseLock,
        other => {
            return Err(ApiError::not_found(&format!(
                "unknown entity action {other:?}; use signal, purge or release-lock"
            )));
        }
    };
    let Json(body) = body?;
    let engine = engine(&state)?;
    if action == EntityAction::Signal {
        let operation = body
            .operation
            .ok_or_else(|| ApiError::invalid("a signal needs an operation".into()))?;
        let target = format!("{id} {operation}");
        let audit = Action {
            name: action.audit_name(),
            target: &target,
            reason: &body.reason,
        };
        let input = body.input.to_string();
        guarded_as(
            &state.db,
            &user,
            action.needs(),
            audit,
            ssr::signal_with(engine, &id, &operation, &input, body.request_id.as_deref()),
        )
        .await?;
        return Ok(Json(json!({ "signalled": id, "operation": operation })));
    }
    let audit = Action {
        name: action.audit_name(),
        target: &id,
        reason: &body.reason,
    };
    // A script names the entity in the path: that is its confirmation.
    let message = guarded_as(
        &state.db,
        &user,
        action.needs(),
        audit,
        ssr::admin_with(engine, &id, action, &body.reason, &id, body.force),
    )
    .await?;
    Ok(Json(json!({ "entity_id": id, "message": message })))
}

/// Removes empty entities and releases orphaned locks (admin).
#[utoipa::path(post, path = "/api/v1/entities/clean-storage", tag = "entities", request_body = ReasonBody,
    responses((status = 200, description = "Done", body = serde_json::Value), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "No session or token"), (status = 403, description = "The role does not allow it", body = ErrorBody)))]
async fn clean_entities(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    body: Result<Json<ReasonBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(body) = body?;
    let engine = engine(&state)?;
    let audit = Action {
        name: EntityAction::CleanStorage.audit_name(),
        target: "entities",
        reason: &body.reason,
    };
    let released = guarded_as(
        &state.db,
        &user,
        EntityAction::CleanStorage.needs(),
        audit,
        app::routes::entities::ssr::clean_with(engine, &body.reason),
    )
    .await?;
    Ok(Json(json!({ "locks_released": released })))
}

/// Every process's limiters, breakers, concurrency limits and intake.
#[utoipa::path(get, path = "/api/v1/resilience", tag = "resilience",
    responses((status = 200, description = "The state now", body = app::routes::resilience::ResilienceOverview), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "No session or token"), (status = 403, description = "The role does not allow it", body = ErrorBody)))]
async fn resilience(
    State(state): State<AppState>,
) -> ApiResult<Json<app::routes::resilience::ResilienceOverview>> {
    let overview =
        app::routes::resilience::ssr::state(engine(&state)?, app::context::now_ms()).await?;
    Ok(Json(overview))
}

/// force-open, force-close or reset a breaker of this server (operator; reason required).
#[utoipa::path(post, path = "/api/v1/resilience/breakers/{name}/{action}", tag = "resilience",
    params(("name" = String, Path, description = "Breaker name"),
        ("action" = String, Path, description = "force-open, force-close or reset")),
    request_body = ReasonBody,
    responses((status = 200, description = "The breaker after the change", body = serde_json::Value),
        (status = 404, description = "No such breaker or action", body = ErrorBody), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "No session or token"), (status = 403, description = "The role does not allow it", body = ErrorBody)))]
async fn act_on_breaker(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path((name, action)): Path<(String, String)>,
    body: Result<Json<ReasonBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let action: engine::resilience::view::BreakerAction = action
        .parse()
        .map_err(|e: String| ApiError::not_found(&e))?;
    let Json(body) = body?;
    let engine = engine(&state)?;
    let audit_name = format!("breaker.{}", action.as_str());
    let audit = Action {
        name: &audit_name,
        target: &name,
        reason: &body.reason,
    };
    let breaker = guarded_as(
        &state.db,
        &user,
        Role::Operator,
        audit,
        app::routes::resilience::ssr::act(engine, &name, action, &body.reason),
    )
    .await?;
    Ok(Json(json!({ "breaker": breaker })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FlakyBody {
    failure_percent: u32,
}

/// Sets the flaky sample dependency's failure rate, 0 to 100 (operator).
#[utoipa::path(post, path = "/api/v1/resilience/samples/flaky", tag = "resilience", request_body = FlakyBody,
    responses((status = 200, description = "The rate now", body = serde_json::Value), (status = 400, description = "Invalid input", body = ErrorBody), (status = 401, description = "No session or token"), (status = 403, description = "The role does not allow it", body = ErrorBody)))]
async fn set_flaky(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    body: Result<Json<FlakyBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(body) = body?;
    engine(&state)?;
    let target = format!("{} %", body.failure_percent);
    let audit = Action {
        name: "sample.flaky-failure-rate",
        target: &target,
        reason: "",
    };
    let percent = guarded_as(
        &state.db,
        &user,
        Role::Operator,
        audit,
        app::routes::resilience::ssr::set_flaky(body.failure_percent),
    )
    .await?;
    Ok(Json(json!({ "failure_percent": percent })))
}
