//! The task queue's REST API: `/api/tasks…`, and the routing of `/ws/tasks` (see [`crate::ws`]).
//!
//! Bodies are parsed by hand from JSON objects so every error names its field; unknown fields
//! are refused. The parsing and validation live in the crate's `body` module, shared with the
//! RPC service, so both refuse the same input the same way. Writes answer with the sequence of
//! the event they appended, which a client passes as `min_seq` to read its own write.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Map, Value};
use vibehq_api::error::{ApiError, ErrorBody};
use vibehq_api::tables::{RowsPage, get_row, list_rows};
use vibehq_projector::query::{self, Table};
use vibehq_projector::{Handle, Reader};

pub use crate::body::MAX_BODY;
use crate::body::{self, Body, task_path, too_large};
use crate::queue::{Actor, Claim, FailOutcome, Submitted};
use crate::{Error, Queue};

/// What the queue's handlers share.
#[derive(Debug, Clone)]
pub struct QueueState {
    pub queue: Queue,
    pub reader: Reader,
    pub projector: Handle,
}

/// The queue's routes.
pub fn router(state: QueueState) -> axum::Router {
    axum::Router::new()
        .route("/api/tasks", post(submit).get(list))
        .route("/api/tasks/claim", post(claim_next))
        .route("/api/tasks/{task_id}", get(get_task))
        .route("/api/tasks/{task_id}/claim", post(claim_task))
        .route("/api/tasks/{task_id}/start", post(start))
        .route("/api/tasks/{task_id}/heartbeat", post(heartbeat))
        .route("/api/tasks/{task_id}/complete", post(complete))
        .route("/api/tasks/{task_id}/fail", post(fail))
        .route("/api/tasks/{task_id}/cancel", post(cancel))
        .route("/ws/tasks", get(crate::ws::tasks))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// The projection table behind `/api/tasks`.
pub(crate) fn tasks_table() -> &'static Table {
    // The table list is static and contains container_tasks.
    Table::named("container_tasks").unwrap_or(&query::TABLES[0])
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        match error {
            Error::NotFound(id) => ApiError::not_found("task_id", format!("no task {id}")),
            Error::Conflict { reason, .. } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", reason, None)
            }
            Error::StaleClaim { reason, .. } => ApiError::new(
                StatusCode::CONFLICT,
                "stale_claim",
                reason,
                Some("attempt".into()),
            ),
            Error::Log(vibehq_events::Error::InvalidSubject(e)) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                e.to_string(),
                Some("task_id".into()),
            ),
            other => {
                tracing::error!(error = %other, "queue command failed");
                ApiError::unavailable(other.to_string())
            }
        }
    }
}

/// Reads a REST body: axum's rejections (too large, unreadable) become errors naming `body`.
fn parse(body: Result<Bytes, BytesRejection>) -> Result<Body, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::invalid("body", rejection.body_text())
        }
    })?;
    Body::from_json(&bytes)
}

/// A write's answer: the event's stream sequence.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Written {
    pub task_id: String,
    /// Pass as `min_seq` to read this write back.
    pub sequence: u64,
}

/// Submits a task.
#[utoipa::path(post, path = "/api/tasks", tag = "tasks",
    request_body(content = Object, description = "`task_type` and `command` (required), `parameters` (object), `priority` (0-9, higher first), `worker_name`/`container_name` (target; null = any), `max_attempts` (1-100, default 3), `idempotency_key`, `submitted_by`"),
    responses(
        (status = 201, body = Submitted, description = "Created"),
        (status = 200, body = Submitted, description = "The idempotency key matched an existing task"),
        (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
    ))]
pub async fn submit(
    State(state): State<QueueState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (by, new) = body::new_task(&parse(body)?)?;
    let submitted = state.queue.submit(&by, new).await?;
    let status = if submitted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(submitted)).into_response())
}

/// Lists tasks from the projection.
#[utoipa::path(get, path = "/api/tasks", tag = "tasks",
    params(
        ("status" = Option<String>, Query, description = "pending, assigned, running, completed, failed or cancelled; `failed` lists the dead letters"),
        ("worker_name" = Option<String>, Query), ("container_name" = Option<String>, Query),
        ("task_type" = Option<String>, Query), ("since" = Option<String>, Query), ("until" = Option<String>, Query),
        ("order" = Option<String>, Query), ("cursor" = Option<i64>, Query), ("limit" = Option<u32>, Query),
        ("min_seq" = Option<u64>, Query, description = "Wait for this tasks-stream sequence first"),
    ),
    responses((status = 200, body = RowsPage), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(state): State<QueueState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<RowsPage>, ApiError> {
    Ok(Json(list_tasks(&state, params).await?))
}

/// Lists tasks from the projection with `GET /api/tasks`'s query parameters (the RPC's
/// `getTasks` passes its body's filters through here too).
pub(crate) async fn list_tasks(
    state: &QueueState,
    params: HashMap<String, String>,
) -> Result<RowsPage, ApiError> {
    list_rows(&state.reader, &state.projector, tasks_table(), params).await
}

/// One task from the projection.
#[utoipa::path(get, path = "/api/tasks/{task_id}", tag = "tasks",
    params(("task_id" = String, Path), ("min_seq" = Option<u64>, Query)),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
pub async fn get_task(
    State(state): State<QueueState>,
    Path(task_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Map<String, Value>>, ApiError> {
    task_path(&task_id)?;
    let row = get_row(
        &state.reader,
        &state.projector,
        tasks_table(),
        &task_id,
        params,
    )
    .await?;
    row.map(Json)
        .ok_or_else(|| ApiError::not_found("task_id", format!("no task {task_id}")))
}

/// Claims the next task the container may take (highest priority first).
#[utoipa::path(post, path = "/api/tasks/claim", tag = "tasks",
    request_body(content = Object, description = "`worker_name` (required), `container_name`, `wait_ms` (0-30000: wait this long for work)"),
    responses((status = 200, body = Claim), (status = 204, description = "No work"), (status = 422, body = ErrorBody)))]
pub async fn claim_next(
    State(state): State<QueueState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (claimer, wait) = body::claim_next(&parse(body)?)?;
    match state.queue.claim(&claimer, wait).await? {
        Some(claim) => Ok(Json(claim).into_response()),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// Claims one specific pending task.
#[utoipa::path(post, path = "/api/tasks/{task_id}/claim", tag = "tasks",
    params(("task_id" = String, Path)),
    request_body(content = Object, description = "`worker_name` (required), `container_name`"),
    responses((status = 200, body = Claim), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn claim_task(
    State(state): State<QueueState>,
    Path(task_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Claim>, ApiError> {
    task_path(&task_id)?;
    let body = parse(body)?;
    body.only(&["worker_name", "container_name"])?;
    Ok(Json(
        state
            .queue
            .claim_task(&task_id, &body::actor(&body)?)
            .await?,
    ))
}

/// Marks a claimed task as running.
#[utoipa::path(post, path = "/api/tasks/{task_id}/start", tag = "tasks",
    params(("task_id" = String, Path)),
    request_body(content = Object, description = "`worker_name`, `container_name`, `attempt`"),
    responses((status = 200, body = Written), (status = 409, body = ErrorBody)))]
pub async fn start(
    State(state): State<QueueState>,
    Path(task_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Written>, ApiError> {
    task_path(&task_id)?;
    let body = parse(body)?;
    body.only(&["worker_name", "container_name", "attempt"])?;
    let sequence = state
        .queue
        .start(&task_id, body::attempt(&body)?, &body::actor(&body)?)
        .await?;
    Ok(Json(Written { task_id, sequence }))
}

/// Extends a claim's lease.
#[utoipa::path(post, path = "/api/tasks/{task_id}/heartbeat", tag = "tasks",
    params(("task_id" = String, Path)),
    request_body(content = Object, description = "`worker_name`, `container_name`, `attempt`"),
    responses((status = 204), (status = 409, body = ErrorBody, description = "The claim no longer holds the task: stop working on it")))]
pub async fn heartbeat(
    State(state): State<QueueState>,
    Path(task_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    task_path(&task_id)?;
    let body = parse(body)?;
    body.only(&["worker_name", "container_name", "attempt"])?;
    state
        .queue
        .heartbeat(&task_id, body::attempt(&body)?, &body::actor(&body)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Completes a claimed task.
#[utoipa::path(post, path = "/api/tasks/{task_id}/complete", tag = "tasks",
    params(("task_id" = String, Path)),
    request_body(content = Object, description = "`worker_name`, `container_name`, `attempt` (from the claim), `output`"),
    responses((status = 200, body = Written), (status = 409, body = ErrorBody, description = "The claim no longer holds the task; the result was recorded as refused")))]
pub async fn complete(
    State(state): State<QueueState>,
    Path(task_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Written>, ApiError> {
    task_path(&task_id)?;
    let done = body::completion(&parse(body)?)?;
    let sequence = state
        .queue
        .complete(&task_id, done.attempt, &done.claimer, done.output)
        .await?;
    Ok(Json(Written { task_id, sequence }))
}

/// Reports a failed attempt; retried with backoff while attempts remain.
#[utoipa::path(post, path = "/api/tasks/{task_id}/fail", tag = "tasks",
    params(("task_id" = String, Path)),
    request_body(content = Object, description = "`worker_name`, `container_name`, `attempt`, `error` (required), `retry` (default true)"),
    responses((status = 200, body = FailOutcome), (status = 409, body = ErrorBody)))]
pub async fn fail(
    State(state): State<QueueState>,
    Path(task_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<FailOutcome>, ApiError> {
    task_path(&task_id)?;
    let failed = body::failure(&parse(body)?)?;
    let outcome = state
        .queue
        .fail(
            &task_id,
            failed.attempt,
            &failed.claimer,
            failed.error,
            failed.retry,
        )
        .await?;
    Ok(Json(outcome))
}

/// Cancels a task that has not ended.
#[utoipa::path(post, path = "/api/tasks/{task_id}/cancel", tag = "tasks",
    params(("task_id" = String, Path)),
    request_body(content = Object, description = "`reason`, `cancelled_by`"),
    responses((status = 200, body = Written), (status = 409, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<QueueState>,
    Path(task_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Written>, ApiError> {
    task_path(&task_id)?;
    let body = parse(body)?;
    body.only(&["reason", "cancelled_by"])?;
    let by = Actor::new(
        body.name("cancelled_by")?.unwrap_or_else(|| "api".into()),
        None,
    );
    let sequence = state
        .queue
        .cancel(&task_id, &by, body.string("reason")?)
        .await?;
    Ok(Json(Written { task_id, sequence }))
}

/// The queue's part of the OpenAPI document.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(
        submit,
        list,
        get_task,
        claim_next,
        claim_task,
        start,
        heartbeat,
        complete,
        fail,
        cancel,
        crate::ws::tasks
    ),
    components(schemas(Submitted, Claim, FailOutcome, Written, crate::ws::FeedEvent))
)]
pub struct QueueDoc;
