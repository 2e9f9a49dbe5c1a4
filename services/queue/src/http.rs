//! The task queue's REST API: `/api/tasks…`, and the routing of `/ws/tasks` (see [`crate::ws`]).
//!
//! Each route is a door onto [`ops::handle`]: it turns the path's task id into the request's
//! `task_id`, a query into the request's fields, and the answer into a response. Writes
//! answer with the sequence of the event they appended, which a client passes as `min_seq` to
//! read its own write.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use vibehq_api::auth::Identity;
use vibehq_api::body::{MAX_BODY, too_large, unprocessable};
use vibehq_api::error::{ApiError, ErrorBody};
use vibehq_api::params::Params;
use vibehq_api::tables::RowsPage;

use crate::bodies;
use crate::ops::{self, Op, QueueState, Written};
use crate::queue::{Claim, FailOutcome, Submitted};

/// The queue's routes.
pub fn router(state: QueueState) -> axum::Router {
    axum::Router::new()
        .route("/api/tasks", post(submit).get(list))
        .route("/api/tasks/claim", post(claim_next))
        .route("/api/tasks/{task_id}", get(get_task))
        .route("/api/tasks/{task_id}/claim", post(claim_task))
        .route("/api/tasks/{task_id}/start", post(start))
        .route("/api/tasks/{task_id}/heartbeat", post(heartbeat))
        .route("/api/tasks/{task_id}/progress", post(progress))
        .route("/api/tasks/{task_id}/complete", post(complete))
        .route("/api/tasks/{task_id}/fail", post(fail))
        .route("/api/tasks/{task_id}/cancel", post(cancel))
        .route("/api/tasks/{task_id}/history", get(history))
        .route("/api/tasks/{task_id}/why", get(why))
        .route("/api/queues", get(queues))
        .route("/api/queues/throughput", get(throughput))
        .route("/api/queues/pause", post(pause))
        .route("/api/queues/resume", post(resume))
        .route("/api/queues/pauses", get(pauses))
        .route("/api/tasks/{task_id}/retry", post(retry))
        .route("/api/schedules", post(create_schedule).get(list_schedules))
        .route(
            "/api/schedules/{schedule_id}",
            get(get_schedule).delete(delete_schedule),
        )
        .route("/api/schedules/{schedule_id}/pause", post(pause_schedule))
        .route("/api/schedules/{schedule_id}/resume", post(resume_schedule))
        .route(
            "/api/schedules/{schedule_id}/trigger",
            post(trigger_schedule),
        )
        .route("/api/keys", get(list_keys))
        .route("/api/workers", post(register_worker).get(list_workers))
        .route("/api/keys/{*key}", get(get_key).put(set_key))
        .route("/ws/tasks", get(crate::ws::tasks))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Reads a REST body as JSON: axum's rejections (too large, unreadable) become errors naming
/// `body`.
fn json(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::invalid("body", rejection.body_text())
        }
    })?;
    vibehq_api::body::json(&bytes)
}

/// The request of a task's route: its body with the path's task id as `task_id` (which the
/// body itself may not carry: in REST it belongs in the path).
fn with_task(task_id: String, body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let mut value = json(body)?;
    let Value::Object(map) = &mut value else {
        return Err(ApiError::invalid("body", "the body must be a JSON object"));
    };
    if map.contains_key("task_id") {
        return Err(unprocessable(
            "task_id",
            "the task id belongs in the path, not the body",
        ));
    }
    map.insert("task_id".into(), Value::String(task_id));
    Ok(value)
}

/// A query's parameters as a request's fields.
fn query(params: HashMap<String, String>) -> Value {
    Value::Object(
        params
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    )
}

async fn answer(
    state: &QueueState,
    identity: &Identity,
    op: Op,
    input: Value,
) -> Result<Response, ApiError> {
    let answer = ops::handle(state, identity, op, input).await?;
    Ok(match answer.value {
        Value::Null => answer.status.into_response(),
        value => (answer.status, Json(value)).into_response(),
    })
}

/// Submits one task (an object) or up to 1,000 all or nothing (an array).
#[utoipa::path(post, path = "/api/tasks", tag = "tasks",
    request_body(content = bodies::SubmitBody, description = "One task, or an array of up to 1,000 (stored all or nothing). A task: `task_type` and `command` (required), `parameters` (object), `priority` (0-9, higher first), `worker_name`/`container_name` (target; null = any), `max_attempts` (1-100, default 3), `idempotency_key`, `submitted_by`"),
    responses(
        (status = 201, body = bodies::SubmitAnswer, description = "Created (for an array: an array of Submitted, in order)"),
        (status = 200, body = bodies::SubmitAnswer, description = "The idempotency key matched an existing task (for an array: every one did)"),
        (status = 400, body = ErrorBody), (status = 409, body = ErrorBody, description = "The idempotency key was used for a different task"),
        (status = 404, body = ErrorBody, description = "A task named in `depends_on` was never submitted"),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
    ))]
pub async fn submit(
    State(state): State<QueueState>,
    identity: Identity,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let input = json(body)?;
    let op = if input.is_array() {
        Op::SubmitTasks
    } else {
        Op::SubmitTask
    };
    answer(&state, &identity, op, input).await
}

/// Lists tasks from the projection.
#[utoipa::path(get, path = "/api/tasks", tag = "tasks",
    responses((status = 200, body = RowsPage)))]
pub async fn list(
    State(state): State<QueueState>,
    identity: Identity,
    Params(params): Params,
) -> Result<Response, ApiError> {
    answer(&state, &identity, Op::GetTasks, query(params)).await
}

/// One task from the projection.
#[utoipa::path(get, path = "/api/tasks/{task_id}", tag = "tasks",
    params(("task_id" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
pub async fn get_task(
    State(state): State<QueueState>,
    identity: Identity,
    Path(task_id): Path<String>,
    Params(params): Params,
) -> Result<Response, ApiError> {
    let mut input = query(params);
    if let Value::Object(map) = &mut input {
        map.insert("task_id".into(), Value::String(task_id));
    }
    answer(&state, &identity, Op::GetTask, input).await
}

/// Claims the next task the container may take (highest priority first).
#[utoipa::path(post, path = "/api/tasks/claim", tag = "tasks",
    request_body(content = bodies::ClaimBody, description = "`worker_name` (required), `container_name`, `wait_ms` (0-30000: wait this long for work), `max` (1-256: claim up to this many at once; the answer is then an array)"),
    responses((status = 200, body = bodies::ClaimAnswer, description = "The claimed task; given `max`, an array of up to `max`, perhaps empty"), (status = 204, description = "No work (without `max`)"), (status = 422, body = ErrorBody)))]
pub async fn claim_next(
    State(state): State<QueueState>,
    identity: Identity,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    answer(&state, &identity, Op::ClaimTask, json(body)?).await
}

/// Claims one specific pending task.
#[utoipa::path(post, path = "/api/tasks/{task_id}/claim", tag = "tasks",
    params(("task_id" = String, Path)),
    request_body(content = bodies::ClaimTaskBody, description = "`worker_name` (required), `container_name`"),
    responses((status = 200, body = Claim), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn claim_task(
    State(state): State<QueueState>,
    identity: Identity,
    Path(task_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    answer(
        &state,
        &identity,
        Op::ClaimTaskById,
        with_task(task_id, body)?,
    )
    .await
}

/// Marks a claimed task as running.
#[utoipa::path(post, path = "/api/tasks/{task_id}/start", tag = "tasks",
    params(("task_id" = String, Path)),
    request_body(content = bodies::AttemptBody, description = "`worker_name` (required), `container_name`, `attempt` (optional: the claim's)"),
    responses((status = 404, body = ErrorBody, description = "No task has this id"), (status = 200, body = Written), (status = 409, body = ErrorBody)))]
pub async fn start(
    State(state): State<QueueState>,
    identity: Identity,
    Path(task_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    answer(&state, &identity, Op::StartTask, with_task(task_id, body)?).await
}

/// Extends a claim's lease.
#[utoipa::path(post, path = "/api/tasks/{task_id}/heartbeat", tag = "tasks",
    params(("task_id" = String, Path)),
    request_body(content = bodies::AttemptBody, description = "`worker_name` (required), `container_name`, `attempt` (optional)"),
    responses((status = 404, body = ErrorBody, description = "No task has this id"), (status = 204), (status = 409, body = ErrorBody, description = "The claim no longer holds the task: stop working on it")))]
pub async fn heartbeat(
    State(state): State<QueueState>,
    identity: Identity,
    Path(task_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    answer(
        &state,
        &identity,
        Op::HeartbeatTask,
        with_task(task_id, body)?,
    )
    .await
}

/// Reports how far a running task got; extends its lease like a heartbeat.
#[utoipa::path(post, path = "/api/tasks/{task_id}/progress", tag = "tasks",
    params(("task_id" = String, Path)),
    request_body(content = bodies::ProgressBody, description = "`worker_name` (required), `container_name`, `attempt` (optional), `percent` (0-100) and/or `message` (up to 1024 bytes)"),
    responses((status = 404, body = ErrorBody, description = "No task has this id"), (status = 200, body = Written), (status = 409, body = ErrorBody, description = "The claim no longer holds the task, or it is not running"), (status = 422, body = ErrorBody)))]
pub async fn progress(
    State(state): State<QueueState>,
    identity: Identity,
    Path(task_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    answer(
        &state,
        &identity,
        Op::ReportProgress,
        with_task(task_id, body)?,
    )
    .await
}

/// Completes a claimed task.
#[utoipa::path(post, path = "/api/tasks/{task_id}/complete", tag = "tasks",
    params(("task_id" = String, Path)),
    request_body(content = bodies::CompleteBody, description = "`worker_name` (required), `container_name`, `attempt` (optional: without it, the claim the caller holds now), `output`"),
    responses((status = 404, body = ErrorBody, description = "No task has this id"), (status = 200, body = Written), (status = 409, body = ErrorBody, description = "The caller does not hold the task; the result was recorded as refused")))]
pub async fn complete(
    State(state): State<QueueState>,
    identity: Identity,
    Path(task_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    answer(
        &state,
        &identity,
        Op::CompleteTask,
        with_task(task_id, body)?,
    )
    .await
}

/// Reports a failed attempt; retried with backoff while attempts remain.
#[utoipa::path(post, path = "/api/tasks/{task_id}/fail", tag = "tasks",
    params(("task_id" = String, Path)),
    request_body(content = bodies::FailBody, description = "`worker_name` (required), `container_name`, `attempt` (optional), `error` (required), `retry` (default true)"),
    responses((status = 404, body = ErrorBody, description = "No task has this id"), (status = 200, body = FailOutcome), (status = 409, body = ErrorBody)))]
pub async fn fail(
    State(state): State<QueueState>,
    identity: Identity,
    Path(task_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    answer(&state, &identity, Op::FailTask, with_task(task_id, body)?).await
}

/// Cancels a task that has not ended.
#[utoipa::path(post, path = "/api/tasks/{task_id}/cancel", tag = "tasks",
    params(("task_id" = String, Path)),
    request_body(content = bodies::CancelBody, description = "`reason`, `cancelled_by`"),
    responses((status = 404, body = ErrorBody, description = "No task has this id"), (status = 200, body = Written), (status = 403, body = ErrorBody, description = "Only an operator may cancel"), (status = 409, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<QueueState>,
    identity: Identity,
    Path(task_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    answer(&state, &identity, Op::CancelTask, with_task(task_id, body)?).await
}

/// A task's timeline, from the stream: every event stored under it, oldest first, with the
/// status it moved the task to or why the lifecycle refused it.
#[utoipa::path(get, path = "/api/tasks/{task_id}/history", tag = "tasks",
    params(("task_id" = String, Path)),
    responses((status = 200, body = Vec<crate::history::Entry>), (status = 404, body = ErrorBody)))]
pub async fn history(
    State(state): State<QueueState>,
    identity: Identity,
    Path(task_id): Path<String>,
) -> Result<Response, ApiError> {
    let input = serde_json::json!({ "task_id": task_id });
    answer(&state, &identity, Op::GetTaskHistory, input).await
}

/// Why a task is still pending: every reason, each with its evidence (its backoff, its lane
/// on the server, what waits ahead of it). A task that is not pending has no reasons.
#[utoipa::path(get, path = "/api/tasks/{task_id}/why", tag = "tasks",
    params(("task_id" = String, Path)),
    responses((status = 200, body = crate::why::Why), (status = 404, body = ErrorBody)))]
pub async fn why(
    State(state): State<QueueState>,
    identity: Identity,
    Path(task_id): Path<String>,
) -> Result<Response, ApiError> {
    let input = serde_json::json!({ "task_id": task_id });
    answer(&state, &identity, Op::WhyPending, input).await
}

/// Retries a dead task (failed or cancelled) as a new task with the same work, linked by
/// `retry_of` (operators only).
#[utoipa::path(post, path = "/api/tasks/{task_id}/retry", tag = "tasks",
    params(("task_id" = String, Path)),
    request_body(content = bodies::RetryBody, description = "`new_task_id` (optional: makes sending the retry again safe), `submitted_by`"),
    responses(
        (status = 201, body = Submitted), (status = 200, body = Submitted, description = "new_task_id was already this retry"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The task has not failed or been cancelled"),
    ))]
pub async fn retry(
    State(state): State<QueueState>,
    identity: Identity,
    Path(task_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    answer(&state, &identity, Op::RetryTask, with_task(task_id, body)?).await
}

/// The work waiting in each lane (priority × target): pending tasks and the age of the
/// oldest, tasks held by claims, and what the lane's consumer has yet to hand out.
#[utoipa::path(get, path = "/api/queues", tag = "tasks",
    responses((status = 200, body = Vec<crate::stats::LaneLoad>)))]
pub async fn queues(
    State(state): State<QueueState>,
    Params(params): Params,
) -> Result<Response, ApiError> {
    if let Some(unknown) = params.keys().next() {
        return Err(ApiError::invalid(
            unknown.clone(),
            format!("unknown query parameter {unknown:?}: /api/queues takes none"),
        ));
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let lanes = crate::stats::lanes(&state.reader, state.queue.log(), now)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(lanes).into_response())
}

/// Tasks submitted, completed and failed per minute, with the p50 and p95 time from
/// submission to completion, for the last `minutes` (1-1440, default 60), oldest first.
#[utoipa::path(get, path = "/api/queues/throughput", tag = "tasks",
    params(("minutes" = Option<u32>, Query, minimum = 1, maximum = 1440, description = "1-1440, default 60")),
    responses((status = 200, body = Vec<crate::stats::Minute>), (status = 400, body = ErrorBody)))]
pub async fn throughput(
    State(state): State<QueueState>,
    Params(params): Params,
) -> Result<Response, ApiError> {
    let mut minutes = 60;
    for (name, value) in &params {
        match name.as_str() {
            "minutes" => {
                minutes = value
                    .parse::<u32>()
                    .ok()
                    .filter(|m| (1..=1440).contains(m))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "minutes",
                            "minutes must be a whole number from 1 to 1440",
                        )
                    })?;
            }
            other => {
                return Err(ApiError::invalid(
                    other.to_owned(),
                    format!("unknown query parameter {other:?}; this route takes minutes"),
                ));
            }
        }
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let series = crate::stats::throughput(&state.reader, minutes, now)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(series).into_response())
}

/// Pauses a scope of work (operators only): `all`, or `worker:<name>` (the work targeted at
/// that worker and its containers). No claimer is handed its tasks until it is resumed; they
/// stay pending in their lanes.
#[utoipa::path(post, path = "/api/queues/pause", tag = "tasks",
    request_body(content = bodies::PauseBody, description = "`scope` (`all` or `worker:<name>`), `reason`, `paused_by`"),
    responses((status = 200, body = crate::pauses::PauseState), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody, description = "It is paused already"), (status = 422, body = ErrorBody)))]
pub async fn pause(
    State(state): State<QueueState>,
    identity: Identity,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    answer(&state, &identity, Op::PauseQueue, json(body)?).await
}

/// Resumes a paused scope (operators only); lanes another paused scope covers stay paused.
#[utoipa::path(post, path = "/api/queues/resume", tag = "tasks",
    request_body(content = bodies::ResumeBody, description = "`scope`, `resumed_by`"),
    responses((status = 200, body = crate::pauses::PauseState), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody, description = "It is not paused"), (status = 422, body = ErrorBody)))]
pub async fn resume(
    State(state): State<QueueState>,
    identity: Identity,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    answer(&state, &identity, Op::ResumeQueue, json(body)?).await
}

/// Every scope ever paused, with whether it is paused now (`status`: paused, resumed).
#[utoipa::path(get, path = "/api/queues/pauses", tag = "tasks",
    responses((status = 200, body = RowsPage)))]
pub async fn pauses(
    State(state): State<QueueState>,
    identity: Identity,
    Params(params): Params,
) -> Result<Response, ApiError> {
    answer(&state, &identity, Op::GetPauses, query(params)).await
}

/// Creates a recurring schedule (operators only): a cron expression in a time zone, or an
/// interval, that submits `task` at each time.
#[utoipa::path(post, path = "/api/schedules", tag = "schedules",
    request_body(content = bodies::ScheduleBody, description = "`schedule_id` (optional, at most 88 characters), `cron` (`0 9 * * *`, six fields with seconds, or `@daily` …) with `time_zone` (IANA; default UTC), or `every_seconds`; `task`: a submission's fields (`task_type`, `command`, `parameters`, `priority`, `worker_name`, `container_name`, `max_attempts`); `overlap`: `skip` (default: no firing while the last run has not ended) or `allow`; `misfire`: `run_once` (default: a firing missed while vibehq was down runs once when it is back) or `skip`; `created_by`"),
    responses(
        (status = 201, body = crate::schedules::Changed), (status = 200, body = crate::schedules::Changed, description = "The same schedule existed"),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody, description = "Another schedule has this id"),
        (status = 422, body = ErrorBody, description = "A field is wrong (the server's verdict on cron and time_zone included)"),
    ))]
pub async fn create_schedule(
    State(state): State<QueueState>,
    identity: Identity,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    answer(&state, &identity, Op::CreateSchedule, json(body)?).await
}

/// Lists schedules from the projection.
#[utoipa::path(get, path = "/api/schedules", tag = "schedules",
    responses((status = 200, body = RowsPage)))]
pub async fn list_schedules(
    State(state): State<QueueState>,
    identity: Identity,
    Params(params): Params,
) -> Result<Response, ApiError> {
    answer(&state, &identity, Op::GetSchedules, query(params)).await
}

/// One schedule, with its 20 latest firings (`recent_firings`).
#[utoipa::path(get, path = "/api/schedules/{schedule_id}", tag = "schedules",
    params(("schedule_id" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody, description = "No schedule has this id, or it was deleted")))]
pub async fn get_schedule(
    State(state): State<QueueState>,
    identity: Identity,
    Path(schedule_id): Path<String>,
    Params(params): Params,
) -> Result<Response, ApiError> {
    let input = with_schedule(schedule_id, query(params));
    answer(&state, &identity, Op::GetSchedule, input).await
}

/// Pauses a schedule: it fires no more until resumed (operators only).
#[utoipa::path(post, path = "/api/schedules/{schedule_id}/pause", tag = "schedules",
    params(("schedule_id" = String, Path)),
    request_body(content = Option<bodies::ScheduleChangeBody>, description = "Optional: `changed_by`, the operator name to record"),
    responses((status = 200, body = crate::schedules::Changed), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "It is not active")))]
pub async fn pause_schedule(
    State(state): State<QueueState>,
    identity: Identity,
    Path(schedule_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let input = with_schedule(schedule_id, json_or_empty(body)?);
    answer(&state, &identity, Op::PauseSchedule, input).await
}

/// Resumes a paused schedule from its next time (operators only).
#[utoipa::path(post, path = "/api/schedules/{schedule_id}/resume", tag = "schedules",
    params(("schedule_id" = String, Path)),
    request_body(content = Option<bodies::ScheduleChangeBody>, description = "Optional: `changed_by`, the operator name to record"),
    responses((status = 200, body = crate::schedules::Changed), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "It is not paused")))]
pub async fn resume_schedule(
    State(state): State<QueueState>,
    identity: Identity,
    Path(schedule_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let input = with_schedule(schedule_id, json_or_empty(body)?);
    answer(&state, &identity, Op::ResumeSchedule, input).await
}

/// Deletes a schedule; its firings stay in the table (operators only).
#[utoipa::path(delete, path = "/api/schedules/{schedule_id}", tag = "schedules",
    params(("schedule_id" = String, Path)),
    responses((status = 200, body = crate::schedules::Changed), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "It was deleted before")))]
pub async fn delete_schedule(
    State(state): State<QueueState>,
    identity: Identity,
    Path(schedule_id): Path<String>,
) -> Result<Response, ApiError> {
    let input = with_schedule(schedule_id, Value::Object(Default::default()));
    answer(&state, &identity, Op::DeleteSchedule, input).await
}

/// Runs a schedule's task now, whatever its time and overlap policy (operators only).
#[utoipa::path(post, path = "/api/schedules/{schedule_id}/trigger", tag = "schedules",
    params(("schedule_id" = String, Path)),
    request_body(content = Option<bodies::ScheduleChangeBody>, description = "Optional: `changed_by`, the operator name to record"),
    responses((status = 200, body = Object, description = "The firing: `firing_id`, `task_id`, `fired_at`, `trigger`"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn trigger_schedule(
    State(state): State<QueueState>,
    identity: Identity,
    Path(schedule_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let input = with_schedule(schedule_id, json_or_empty(body)?);
    answer(&state, &identity, Op::TriggerSchedule, input).await
}

/// A body that may be left out, or be `null` (`{}` then). Anything else must be JSON: white
/// space alone is not a body left out.
fn json_or_empty(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    match json(body)? {
        Value::Null => Ok(Value::Object(Default::default())),
        value => Ok(value),
    }
}

/// The request of a schedule's route: its fields with the path's id as `schedule_id`.
fn with_schedule(schedule_id: String, mut value: Value) -> Value {
    if let Value::Object(map) = &mut value {
        map.insert("schedule_id".into(), Value::String(schedule_id));
    }
    value
}

/// The request of a key's route: its fields with the path's key as `key`.
fn with_key(key: String, mut value: Value) -> Value {
    if let Value::Object(map) = &mut value {
        map.insert("key".into(), Value::String(key));
    }
    value
}

/// Declares a concurrency key's limits (operators only), replacing earlier ones: at most
/// `concurrency` of its tasks run at once, and at most `rate.max` start per
/// `rate.per_seconds`, across every process. Waiting tasks the new limits allow start now.
/// A key may hold `/` and `:` (`repo:acme/api`), in the path as they are or URL-encoded.
#[utoipa::path(put, path = "/api/keys/{key}", tag = "tasks",
    params(("key" = String, Path)),
    request_body(content = bodies::KeyLimitsBody, description = "`concurrency` (1-100000) and/or `rate`: `{\"max\": N, \"per_seconds\": S}`; `changed_by`"),
    responses((status = 200, body = crate::keys::KeyView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody, description = "The key cannot be a key (it is not an id)"), (status = 422, body = ErrorBody)))]
pub async fn set_key(
    State(state): State<QueueState>,
    identity: Identity,
    Path(key): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    answer(
        &state,
        &identity,
        Op::SetKeyLimits,
        with_key(key, json(body)?),
    )
    .await
}

/// A concurrency key as its events say it is now: its limits, the tasks holding it and the
/// tasks waiting for it in the order it lets them through. A key never declared runs one
/// task at a time.
#[utoipa::path(get, path = "/api/keys/{key}", tag = "tasks",
    params(("key" = String, Path)),
    responses((status = 200, body = crate::keys::KeyView), (status = 404, body = ErrorBody)))]
pub async fn get_key(
    State(state): State<QueueState>,
    identity: Identity,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let input = with_key(key, Value::Object(Default::default()));
    answer(&state, &identity, Op::GetKey, input).await
}

/// The keys whose limits were declared (`container_task_keys`).
#[utoipa::path(get, path = "/api/keys", tag = "tasks",
    responses((status = 200, body = RowsPage)))]
pub async fn list_keys(
    State(state): State<QueueState>,
    identity: Identity,
    Params(params): Params,
) -> Result<Response, ApiError> {
    answer(&state, &identity, Op::GetKeys, query(params)).await
}

/// Registers a worker, as itself (a worker's token registers only its own name): what it is
/// written in and the commands it handles, recorded as `worker.registered` and kept in
/// `container_workers`. Registering again replaces the registration.
#[utoipa::path(post, path = "/api/workers", tag = "tasks",
    request_body(content = bodies::RegisterBody, description = "`worker_name`, `language`, `commands` (command names)"),
    responses((status = 201, body = crate::ops::Registered), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn register_worker(
    State(state): State<QueueState>,
    identity: Identity,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    answer(&state, &identity, Op::RegisterWorker, json(body)?).await
}

/// The registered workers (`container_workers`).
#[utoipa::path(get, path = "/api/workers", tag = "tasks",
    responses((status = 200, body = RowsPage)))]
pub async fn list_workers(
    State(state): State<QueueState>,
    identity: Identity,
    Params(params): Params,
) -> Result<Response, ApiError> {
    answer(&state, &identity, Op::GetWorkers, query(params)).await
}

/// Gives the queue's reads of the projection their tables' parameters, as
/// [`vibehq_api::tables`] reads them, and the answers every read may give (400, 409 and 504:
/// the routes below declare only their own).
struct Reads;

impl utoipa::Modify for Reads {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::path::ParameterIn;
        use vibehq_api::tables::{get_parameters, list_parameters, read_responses};

        let table = |name| {
            vibehq_projector::Table::named(name)
                .unwrap_or_else(|| unreachable!("the schema has {name}"))
        };
        let lists = [
            ("/api/tasks", "container_tasks", ops::LIST_FILTERS),
            (
                "/api/queues/pauses",
                "container_task_pauses",
                ops::PAUSE_FILTERS,
            ),
            (
                "/api/schedules",
                "container_task_schedules",
                ops::SCHEDULE_FILTERS,
            ),
            ("/api/keys", "container_task_keys", ops::KEY_FILTERS),
            ("/api/workers", "container_workers", ops::WORKER_FILTERS),
        ];
        for (path, name, filters) in lists {
            if let Some(read) = doc.paths.paths.get_mut(path).and_then(|i| i.get.as_mut()) {
                let params = list_parameters(table(name), Some(filters));
                read.parameters = Some(params.into_iter().map(RefOr::T).collect());
                read_responses(read);
            }
        }
        for (path, name) in [
            ("/api/tasks/{task_id}", "container_tasks"),
            ("/api/schedules/{schedule_id}", "container_task_schedules"),
        ] {
            if let Some(read) = doc.paths.paths.get_mut(path).and_then(|i| i.get.as_mut()) {
                let mut params: Vec<_> = read
                    .parameters
                    .take()
                    .into_iter()
                    .flatten()
                    .filter(|p| matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Path))
                    .collect();
                params.extend(get_parameters(table(name)).into_iter().map(RefOr::T));
                read.parameters = Some(params);
                read_responses(read);
            }
        }
    }
}

/// The queue's part of the OpenAPI document.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    modifiers(&Reads),
    paths(
        submit,
        list,
        get_task,
        claim_next,
        claim_task,
        start,
        heartbeat,
        progress,
        why,
        complete,
        fail,
        cancel,
        history,
        retry,
        pause,
        resume,
        pauses,
        create_schedule,
        list_schedules,
        get_schedule,
        pause_schedule,
        resume_schedule,
        delete_schedule,
        trigger_schedule,
        set_key,
        get_key,
        list_keys,
        register_worker,
        list_workers,
        crate::ws::tasks
    ),
    components(schemas(
        bodies::SubmitBody,
        bodies::ClaimBody,
        bodies::ClaimTaskBody,
        bodies::AttemptBody,
        bodies::ProgressBody,
        bodies::CompleteBody,
        bodies::FailBody,
        bodies::CancelBody,
        bodies::RetryBody,
        bodies::PauseBody,
        bodies::ResumeBody,
        bodies::ScheduleBody,
        bodies::ScheduleChangeBody,
        bodies::KeyLimitsBody,
        bodies::RegisterBody,
        bodies::ClaimAnswer,
        bodies::SubmitAnswer,
        Submitted,
        Claim,
        FailOutcome,
        Written,
        crate::schedules::Changed,
        crate::pauses::PauseState,
        crate::keys::KeyView,
        crate::keys::RateView,
        crate::ops::Registered,
        crate::ws::FeedEvent,
        crate::history::Entry,
        crate::why::Why,
        crate::why::Reason
    ))
)]
pub struct QueueDoc;
