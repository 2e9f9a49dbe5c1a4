//! The task queue's REST API: `/api/tasks…`.
//!
//! Bodies are parsed by hand from JSON objects so every error names its field; unknown fields
//! are refused. Writes answer with the sequence of the event they appended, which a client
//! passes as `min_seq` to read its own write.

use std::time::Duration;

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
use vibehq_api::tables::{RowsPage, parse_filter, wait_for};
use vibehq_events::subject::validate_id;
use vibehq_events::work::MAX_PRIORITY;
use vibehq_projector::query::{self, Table};
use vibehq_projector::{Handle, Reader};

use crate::queue::{Actor, Claim, FailOutcome, NewTask, Submitted};
use crate::{Error, Queue};

/// Largest request body accepted (413 beyond).
pub const MAX_BODY: usize = 256 * 1024;

/// Longest a claim request may wait for work.
const MAX_CLAIM_WAIT: Duration = Duration::from_secs(30);

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
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

fn tasks_table() -> &'static Table {
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

/// A JSON object body, with errors naming what is wrong.
struct Body(Map<String, Value>);

impl Body {
    fn parse(body: Result<Bytes, BytesRejection>) -> Result<Self, ApiError> {
        let bytes = body.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("the body is larger than {MAX_BODY} bytes"),
                    Some("body".into()),
                )
            } else {
                ApiError::invalid("body", rejection.body_text())
            }
        })?;
        if bytes.is_empty() {
            return Ok(Self(Map::new()));
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(Self(map)),
            Ok(_) => Err(ApiError::invalid("body", "the body must be a JSON object")),
            Err(e) => Err(ApiError::invalid(
                "body",
                format!("the body is not valid JSON: {e}"),
            )),
        }
    }

    fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(unknown) => Err(unprocessable(
                unknown,
                format!("unknown field {unknown:?}; allowed: {}", allowed.join(", ")),
            )),
            None => Ok(()),
        }
    }

    fn string(&self, field: &str) -> Result<Option<String>, ApiError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(unprocessable(field, format!("{field} must be a string"))),
        }
    }

    fn required_string(&self, field: &str, max: usize) -> Result<String, ApiError> {
        let value = self
            .string(field)?
            .ok_or_else(|| unprocessable(field, format!("{field} is required")))?;
        if value.trim().is_empty() || value.len() > max {
            return Err(unprocessable(
                field,
                format!("{field} must be 1-{max} characters"),
            ));
        }
        Ok(value)
    }

    fn name(&self, field: &str) -> Result<Option<String>, ApiError> {
        match self.string(field)? {
            Some(name) => {
                validate_id(&name).map_err(|e| unprocessable(field, e.to_string()))?;
                Ok(Some(name))
            }
            None => Ok(None),
        }
    }

    fn integer(
        &self,
        field: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<Option<i64>, ApiError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) if range.contains(&i) => Ok(Some(i)),
                _ => Err(unprocessable(
                    field,
                    format!(
                        "{field} must be an integer from {} to {}",
                        range.start(),
                        range.end()
                    ),
                )),
            },
            Some(_) => Err(unprocessable(field, format!("{field} must be an integer"))),
        }
    }

    fn boolean(&self, field: &str) -> Result<Option<bool>, ApiError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(unprocessable(
                field,
                format!("{field} must be true or false"),
            )),
        }
    }

    /// The acting worker and container (`worker_name` required).
    fn actor(&self) -> Result<Actor, ApiError> {
        let worker = self
            .name("worker_name")?
            .ok_or_else(|| unprocessable("worker_name", "worker_name is required"))?;
        Ok(Actor::new(worker, self.name("container_name")?))
    }

    fn attempt(&self) -> Result<u32, ApiError> {
        let attempt = self
            .integer("attempt", 1..=i64::from(u32::MAX))?
            .ok_or_else(|| unprocessable("attempt", "attempt is required (from the claim)"))?;
        Ok(attempt as u32)
    }
}

fn unprocessable(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        message,
        Some(field.to_owned()),
    )
}

fn task_path(task_id: &str) -> Result<(), ApiError> {
    validate_id(task_id).map_err(|e| ApiError::not_found("task_id", e.to_string()))
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
    let body = Body::parse(body)?;
    body.only(&[
        "task_type",
        "command",
        "parameters",
        "priority",
        "worker_name",
        "container_name",
        "max_attempts",
        "idempotency_key",
        "submitted_by",
    ])?;
    let task_type = body.required_string("task_type", 128)?;
    let command = body.required_string("command", 128)?;
    if !command
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-.:/".contains(c))
    {
        return Err(unprocessable(
            "command",
            "command must be the name of a command a worker allows (letters, digits, _ - . : /), not a shell line; pass arguments in parameters",
        ));
    }
    let parameters = match body.0.get("parameters") {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => Some(map.clone()),
        Some(_) => {
            return Err(unprocessable(
                "parameters",
                "parameters must be a JSON object",
            ));
        }
    };
    let worker_name = body.name("worker_name")?;
    let container_name = body.name("container_name")?;
    if container_name.is_some() && worker_name.is_none() {
        return Err(unprocessable(
            "container_name",
            "container_name needs worker_name: container names are only unique within a worker",
        ));
    }
    let new = NewTask {
        task_type,
        command,
        parameters,
        priority: body.integer("priority", 0..=MAX_PRIORITY)?.unwrap_or(0),
        worker_name,
        container_name,
        max_attempts: body.integer("max_attempts", 1..=100)?.unwrap_or(3) as u32,
        idempotency_key: match body.string("idempotency_key")? {
            Some(k) if k.is_empty() || k.len() > 200 => {
                return Err(unprocessable(
                    "idempotency_key",
                    "idempotency_key must be 1-200 characters",
                ));
            }
            key => key,
        },
    };
    let by = Actor::new(
        body.name("submitted_by")?.unwrap_or_else(|| "api".into()),
        None,
    );
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
    Query(params): Query<std::collections::HashMap<String, String>>,
) -> Result<Json<RowsPage>, ApiError> {
    let table = tasks_table();
    let (filter, min_seq) = parse_filter(table, params)?;
    wait_for(&state.projector, table, min_seq).await?;
    let page = state
        .reader
        .read(move |conn| query::list(conn, table, &filter))
        .await?;
    Ok(Json(page.into()))
}

/// One task from the projection.
#[utoipa::path(get, path = "/api/tasks/{task_id}", tag = "tasks",
    params(("task_id" = String, Path), ("min_seq" = Option<u64>, Query)),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
pub async fn get_task(
    State(state): State<QueueState>,
    Path(task_id): Path<String>,
    Query(params): Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Map<String, Value>>, ApiError> {
    task_path(&task_id)?;
    let table = tasks_table();
    let mut min_seq = None;
    for (name, value) in params {
        match name.as_str() {
            "min_seq" => {
                min_seq = Some(value.parse::<u64>().map_err(|_| {
                    ApiError::invalid("min_seq", "min_seq must be a non-negative integer")
                })?)
            }
            other => {
                return Err(ApiError::invalid(
                    other,
                    format!("{other:?} is not a parameter of this endpoint"),
                ));
            }
        }
    }
    wait_for(&state.projector, table, min_seq).await?;
    let id = task_id.clone();
    let row = state
        .reader
        .read(move |conn| query::get(conn, table, &id))
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
    let body = Body::parse(body)?;
    body.only(&["worker_name", "container_name", "wait_ms"])?;
    let claimer = body.actor()?;
    let wait = Duration::from_millis(
        body.integer("wait_ms", 0..=MAX_CLAIM_WAIT.as_millis() as i64)?
            .unwrap_or(0) as u64,
    );
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
    let body = Body::parse(body)?;
    body.only(&["worker_name", "container_name"])?;
    Ok(Json(
        state.queue.claim_task(&task_id, &body.actor()?).await?,
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
    let body = Body::parse(body)?;
    body.only(&["worker_name", "container_name", "attempt"])?;
    let sequence = state
        .queue
        .start(&task_id, body.attempt()?, &body.actor()?)
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
    let body = Body::parse(body)?;
    body.only(&["worker_name", "container_name", "attempt"])?;
    state
        .queue
        .heartbeat(&task_id, body.attempt()?, &body.actor()?)
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
    let body = Body::parse(body)?;
    body.only(&["worker_name", "container_name", "attempt", "output"])?;
    let sequence = state
        .queue
        .complete(
            &task_id,
            body.attempt()?,
            &body.actor()?,
            body.string("output")?,
        )
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
    let body = Body::parse(body)?;
    body.only(&["worker_name", "container_name", "attempt", "error", "retry"])?;
    let error = body.required_string("error", 64 * 1024)?;
    let outcome = state
        .queue
        .fail(
            &task_id,
            body.attempt()?,
            &body.actor()?,
            error,
            body.boolean("retry")?.unwrap_or(true),
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
    let body = Body::parse(body)?;
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
        submit, list, get_task, claim_next, claim_task, start, heartbeat, complete, fail, cancel
    ),
    components(schemas(Submitted, Claim, FailOutcome, Written))
)]
pub struct QueueDoc;
