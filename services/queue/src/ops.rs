//! Every queue command and query as a request: parsed, checked and answered once, for the
//! REST routes ([`crate::http`]) and the RPC service ([`crate::rpc`]) alike.
//!
//! A request is one JSON value; the task it is about is its `task_id` field (REST takes it
//! from the path and puts it there). Fields are read by hand so every error names its field,
//! and unknown fields are refused ([`vibehq_api::body`]). The answer is a status and a JSON
//! value: REST sends both, RPC sends the value (`null` for "no content") and turns a refusal's
//! status into its error code. So an input is refused the same way, with the same words,
//! whichever door it came in by.
//!
//! Every request acts as someone ([`Identity`]: a REST token's workers, an RPC subject's worker,
//! or an operator), and a field that names who acts — `worker_name` of a claim or a result,
//! `submitted_by` of a submission — must be one the caller may act as (403 naming the field
//! otherwise); left out, it is the caller's own worker. Cancelling is an operator's.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::StatusCode;
use serde::Serialize;
use serde_json::Value;
use vibehq_api::auth::Identity;
use vibehq_api::body::{Body, unprocessable};
use vibehq_api::error::ApiError;
use vibehq_api::tables::{get_row, list_rows};
use vibehq_events::limit;
use vibehq_events::pause::Scope;
use vibehq_events::recurring::{
    Created, MISFIRE_GRACE_SECONDS, Misfire, Overlap, Template, Timing,
};
use vibehq_events::subject::validate_id;
use vibehq_events::task::OnDependencyFailure;
use vibehq_events::task::lane::MAX_PRIORITY;
use vibehq_events::time_zone::is_time_zone;
use vibehq_events::{Actor, MAX_BATCH};
use vibehq_projector::query::Table;
use vibehq_projector::{Handle, Reader};

use crate::dependencies::MAX_DEPENDENCIES;
use crate::queue::NewTask;
use crate::{Error, Queue};

/// Longest progress message a report may carry, in characters: a status line, not a log.
pub const MAX_PROGRESS_MESSAGE: usize = 1024;

/// Longest a claim request may wait for work.
pub const MAX_CLAIM_WAIT: Duration = Duration::from_secs(30);

/// [`MAX_CLAIM_WAIT`] in milliseconds, as `wait_ms` takes it.
pub const MAX_CLAIM_WAIT_MS: i64 = 30_000;

/// Longest error a failure may report, in characters.
pub const MAX_ERROR: usize = 64 * 1024;

/// What the queue's doors share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct QueueState {
    pub queue: Queue,
    pub reader: Reader,
    pub projector: Handle,
}

/// The operations, by their RPC names (`vibehq.rpc.tasks.<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// One task (an object) → `Submitted`; REST's `POST /api/tasks` with an object.
    SubmitTask,
    /// Up to 1,000 tasks (an array), all or nothing → `[Submitted]`; REST's `POST /api/tasks`
    /// with an array.
    SubmitTasks,
    /// List filters → a page of `container_tasks` rows.
    GetTasks,
    /// `task_id` (and `min_seq`) → the task's row.
    GetTask,
    /// `worker_name`, `container_name`, `wait_ms` → the next `Claim`, or nothing.
    ClaimTask,
    /// `task_id`, `worker_name`, `container_name` → that task's `Claim`.
    ClaimTaskById,
    /// `task_id`, the claimer, `attempt`? → `Written`.
    StartTask,
    /// `task_id`, the claimer, `attempt`? → nothing: the lease is extended.
    HeartbeatTask,
    /// `task_id`, the claimer, `attempt`?, `percent`?, `message`? → `Written`; extends the
    /// lease too.
    ReportProgress,
    /// `task_id`, the claimer, `attempt`?, `output`? → `Written`.
    CompleteTask,
    /// `task_id`, the claimer, `attempt`?, `error`, `retry`? → `FailOutcome`.
    FailTask,
    /// `task_id`, `reason`?, `cancelled_by`? → `Written`.
    CancelTask,
    /// `task_id` → the task's timeline from the stream (`[history::Entry]`).
    GetTaskHistory,
    /// `task_id` → why it is still pending (`why::Why`).
    WhyPending,
    /// `task_id` (a failed or cancelled task), `new_task_id`?, `submitted_by`? → `Submitted`.
    RetryTask,
    /// `scope` (`all`, `worker:<name>`), `reason`?, `paused_by`? → `pauses::PauseState`.
    PauseQueue,
    /// `scope`, `resumed_by`? → `pauses::PauseState`.
    ResumeQueue,
    /// List filters → a page of `container_task_pauses` rows.
    GetPauses,
    /// `schedule_id`?, `cron` + `time_zone`? or `every_seconds`, `task` (a submission's
    /// fields), `overlap`?, `misfire`? → `schedules::Changed`.
    CreateSchedule,
    /// List filters → a page of `container_task_schedules` rows.
    GetSchedules,
    /// `schedule_id` → its row and its latest firings.
    GetSchedule,
    /// `schedule_id` → `schedules::Changed`.
    PauseSchedule,
    /// `schedule_id` → `schedules::Changed`.
    ResumeSchedule,
    /// `schedule_id` → `schedules::Changed`.
    DeleteSchedule,
    /// `schedule_id` → the firing (`recurring::Fired`), its task submitted now.
    TriggerSchedule,
    /// `key`, `concurrency`?, `rate`? (`max`, `per_seconds`), `changed_by`? → `keys::KeyView`.
    SetKeyLimits,
    /// `key` → `keys::KeyView`: its limits, holders and waiting line.
    GetKey,
    /// List filters → a page of `container_task_keys` rows (the declared keys).
    GetKeys,
    /// `worker_name` (the worker, as itself), `language`?, `commands`? → `Registered`.
    RegisterWorker,
    /// List filters → a page of `container_workers` rows.
    GetWorkers,
}

impl Op {
    /// Every operation.
    pub const ALL: [Op; 30] = [
        Op::SubmitTask,
        Op::SubmitTasks,
        Op::GetTasks,
        Op::GetTask,
        Op::ClaimTask,
        Op::ClaimTaskById,
        Op::StartTask,
        Op::HeartbeatTask,
        Op::ReportProgress,
        Op::CompleteTask,
        Op::FailTask,
        Op::CancelTask,
        Op::GetTaskHistory,
        Op::WhyPending,
        Op::RetryTask,
        Op::PauseQueue,
        Op::ResumeQueue,
        Op::GetPauses,
        Op::CreateSchedule,
        Op::GetSchedules,
        Op::GetSchedule,
        Op::PauseSchedule,
        Op::ResumeSchedule,
        Op::DeleteSchedule,
        Op::TriggerSchedule,
        Op::SetKeyLimits,
        Op::GetKey,
        Op::GetKeys,
        Op::RegisterWorker,
        Op::GetWorkers,
    ];

    /// The operation's name, e.g. `submitTask`.
    pub fn name(self) -> &'static str {
        match self {
            Op::SubmitTask => "submitTask",
            Op::SubmitTasks => "submitTasks",
            Op::GetTasks => "getTasks",
            Op::GetTask => "getTask",
            Op::ClaimTask => "claimTask",
            Op::ClaimTaskById => "claimTaskById",
            Op::StartTask => "startTask",
            Op::HeartbeatTask => "heartbeatTask",
            Op::ReportProgress => "reportProgress",
            Op::CompleteTask => "completeTask",
            Op::FailTask => "failTask",
            Op::CancelTask => "cancelTask",
            Op::GetTaskHistory => "getTaskHistory",
            Op::WhyPending => "whyPending",
            Op::RetryTask => "retryTask",
            Op::PauseQueue => "pauseQueue",
            Op::ResumeQueue => "resumeQueue",
            Op::GetPauses => "getPauses",
            Op::CreateSchedule => "createSchedule",
            Op::GetSchedules => "getSchedules",
            Op::GetSchedule => "getSchedule",
            Op::PauseSchedule => "pauseSchedule",
            Op::ResumeSchedule => "resumeSchedule",
            Op::DeleteSchedule => "deleteSchedule",
            Op::TriggerSchedule => "triggerSchedule",
            Op::SetKeyLimits => "setKeyLimits",
            Op::GetKey => "getKey",
            Op::GetKeys => "getKeys",
            Op::RegisterWorker => "registerWorker",
            Op::GetWorkers => "getWorkers",
        }
    }

    /// The field naming what the operation is about (REST's path parameter), if it is about
    /// one task or one schedule.
    pub fn key(self) -> Option<&'static str> {
        match self {
            Op::SubmitTask
            | Op::SubmitTasks
            | Op::GetTasks
            | Op::ClaimTask
            | Op::PauseQueue
            | Op::ResumeQueue
            | Op::GetPauses
            | Op::CreateSchedule
            | Op::GetSchedules
            | Op::GetKeys
            | Op::RegisterWorker
            | Op::GetWorkers => None,
            Op::SetKeyLimits | Op::GetKey => Some("key"),
            Op::GetSchedule
            | Op::PauseSchedule
            | Op::ResumeSchedule
            | Op::DeleteSchedule
            | Op::TriggerSchedule => Some("schedule_id"),
            _ => Some("task_id"),
        }
    }

    /// Whether the operation is about one task (`task_id`, REST's path).
    pub fn has_task(self) -> bool {
        self.key() == Some("task_id")
    }
}

/// An answer: the HTTP status, and the JSON (REST's body, RPC's reply; `Null` for none).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: StatusCode,
    pub value: Value,
}

impl Answer {
    fn ok(value: &impl Serialize) -> Result<Self, ApiError> {
        Self::with(StatusCode::OK, value)
    }

    fn with(status: StatusCode, value: &impl Serialize) -> Result<Self, ApiError> {
        let value = serde_json::to_value(value).map_err(|error| {
            tracing::error!(%error, "cannot encode an answer");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the answer could not be encoded",
                None,
            )
        })?;
        Ok(Self { status, value })
    }

    fn none() -> Self {
        Self {
            status: StatusCode::NO_CONTENT,
            value: Value::Null,
        }
    }
}

/// A write's answer: the event's stream sequence.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Written {
    pub task_id: String,
    /// Pass as `min_seq` to read this write back.
    pub sequence: u64,
}

/// Answers one request, made by `identity`, and times it for `/metrics`.
pub async fn handle(
    state: &QueueState,
    identity: &Identity,
    op: Op,
    input: Value,
) -> Result<Answer, ApiError> {
    let started = std::time::Instant::now();
    let answer = answer(state, identity, op, input).await;
    let status = match &answer {
        Ok(answer) => answer.status,
        Err(error) => error.status,
    };
    vibehq_metrics::metrics()
        .queue_operations
        .get_or_create(&vibehq_metrics::OpLabels {
            op: op.name().to_owned(),
            outcome: vibehq_metrics::status_class(status.as_u16()),
        })
        .observe(started.elapsed().as_secs_f64());
    answer
}

async fn answer(
    state: &QueueState,
    identity: &Identity,
    op: Op,
    input: Value,
) -> Result<Answer, ApiError> {
    let queue = &state.queue;
    if op == Op::SubmitTasks {
        let submitted = queue.submit_each(new_tasks(input, identity)?).await?;
        let status = if submitted.iter().any(|s| s.created) {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        return Answer::with(status, &submitted);
    }
    let mut body = Body::from_value(input)?;
    if op.key() == Some("schedule_id") || op == Op::CreateSchedule || op == Op::GetSchedules {
        return schedule_answer(state, identity, op, body).await;
    }
    if matches!(op, Op::SetKeyLimits | Op::GetKey | Op::GetKeys) {
        return key_answer(state, identity, op, body).await;
    }
    if matches!(op, Op::RegisterWorker | Op::GetWorkers) {
        return worker_answer(state, identity, op, body).await;
    }
    let task_id = if op.has_task() {
        Some(take_key(&mut body, "task_id")?)
    } else {
        None
    };
    let task_id = task_id.unwrap_or_default();
    let written = |sequence| Written {
        task_id: task_id.clone(),
        sequence,
    };
    match op {
        Op::SubmitTasks
        | Op::CreateSchedule
        | Op::GetSchedules
        | Op::GetSchedule
        | Op::PauseSchedule
        | Op::ResumeSchedule
        | Op::DeleteSchedule
        | Op::TriggerSchedule
        | Op::SetKeyLimits
        | Op::GetKey
        | Op::GetKeys
        | Op::RegisterWorker
        | Op::GetWorkers => unreachable!("answered above"),
        Op::SubmitTask => {
            let (by, new) = new_task(&body, "", identity)?;
            let submitted = queue.submit(&by, new).await?;
            let status = if submitted.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Answer::with(status, &submitted)
        }
        Op::GetTasks => {
            let params = list_params(&body, LIST_FILTERS)?;
            Answer::ok(&list_rows(&state.reader, &state.projector, tasks_table(), params).await?)
        }
        Op::GetTask => {
            let params = list_params(&body, &["min_seq"])?;
            let row = get_row(
                &state.reader,
                &state.projector,
                tasks_table(),
                &task_id,
                params,
            )
            .await?
            .ok_or_else(|| ApiError::not_found("task_id", format!("no task {task_id}")))?;
            Answer::ok(&row)
        }
        Op::ClaimTask => {
            body.only(&["worker_name", "container_name", "wait_ms", "max"])?;
            let claimer = actor(&body, identity)?;
            let wait = Duration::from_millis(
                body.integer("wait_ms", 0..=MAX_CLAIM_WAIT_MS)?.unwrap_or(0) as u64,
            );
            match body.integer("max", 1..=256)? {
                None => match queue.claim(&claimer, wait).await? {
                    Some(claim) => Answer::ok(&claim),
                    None => Ok(Answer::none()),
                },
                Some(max) => Answer::ok(&queue.claim_many(&claimer, max as usize, wait).await?),
            }
        }
        Op::ClaimTaskById => {
            body.only(&["worker_name", "container_name"])?;
            Answer::ok(&queue.claim_task(&task_id, &actor(&body, identity)?).await?)
        }
        Op::StartTask => {
            body.only(&["worker_name", "container_name", "attempt"])?;
            let sequence = queue
                .start(&task_id, attempt(&body)?, &actor(&body, identity)?)
                .await?;
            Answer::ok(&written(sequence))
        }
        Op::HeartbeatTask => {
            body.only(&["worker_name", "container_name", "attempt"])?;
            queue
                .heartbeat(&task_id, attempt(&body)?, &actor(&body, identity)?)
                .await?;
            Ok(Answer::none())
        }
        Op::ReportProgress => {
            body.only(&[
                "worker_name",
                "container_name",
                "attempt",
                "percent",
                "message",
            ])?;
            let percent = body.number("percent", 0.0..=100.0)?;
            let message = body.string("message")?;
            if message
                .as_ref()
                .is_some_and(|m| m.chars().count() > MAX_PROGRESS_MESSAGE)
            {
                return Err(unprocessable(
                    "message",
                    format!("a progress message is at most {MAX_PROGRESS_MESSAGE} characters"),
                ));
            }
            if percent.is_none() && message.is_none() {
                return Err(unprocessable(
                    "percent",
                    "a progress report needs a percent (0-100), a message, or both",
                ));
            }
            let (claimer, attempt) = (actor(&body, identity)?, attempt(&body)?);
            let sequence = queue
                .progress(&task_id, attempt, &claimer, percent, message)
                .await
                .map_err(|e| stale_field(e, attempt))?;
            Answer::ok(&written(sequence))
        }
        Op::CompleteTask => {
            body.only(&["worker_name", "container_name", "attempt", "output"])?;
            let (claimer, attempt) = (actor(&body, identity)?, attempt(&body)?);
            let sequence = queue
                .complete(&task_id, attempt, &claimer, body.string("output")?)
                .await
                .map_err(|e| stale_field(e, attempt))?;
            Answer::ok(&written(sequence))
        }
        Op::FailTask => {
            body.only(&["worker_name", "container_name", "attempt", "error", "retry"])?;
            let error = body.required_string("error", MAX_ERROR)?;
            let (claimer, attempt) = (actor(&body, identity)?, attempt(&body)?);
            let retry = body.boolean("retry")?.unwrap_or(true);
            let outcome = queue
                .fail(&task_id, attempt, &claimer, error, retry)
                .await
                .map_err(|e| stale_field(e, attempt))?;
            Answer::ok(&outcome)
        }
        Op::GetTaskHistory => {
            body.only(&[])?;
            Answer::ok(&queue.history(&task_id).await?)
        }
        Op::WhyPending => {
            body.only(&[])?;
            Answer::ok(&queue.why(&state.reader, &task_id).await?)
        }
        Op::RetryTask => {
            body.only(&["new_task_id", "submitted_by"])?;
            identity.require_admin("retry a task")?;
            let by = Actor::worker(identity.acting_as(&body, "submitted_by", Some("api"))?);
            let new_id = match body.string("new_task_id")? {
                Some(id) => {
                    validate_id(&id).map_err(|e| unprocessable("new_task_id", e.to_string()))?;
                    Some(id)
                }
                None => None,
            };
            let submitted = queue.retry(&task_id, &by, new_id).await?;
            let status = if submitted.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Answer::with(status, &submitted)
        }
        Op::PauseQueue | Op::ResumeQueue => {
            let pausing = op == Op::PauseQueue;
            let by_field = if pausing { "paused_by" } else { "resumed_by" };
            if pausing {
                body.only(&["scope", "reason", by_field])?;
            } else {
                body.only(&["scope", by_field])?;
            }
            identity.require_admin("pause or resume work")?;
            let scope = body.string("scope")?.ok_or_else(|| {
                unprocessable("scope", "scope is required: all, or worker:<name>")
            })?;
            let scope = Scope::parse(&scope).map_err(|e| unprocessable("scope", e.to_string()))?;
            let by = Actor::worker(identity.acting_as(&body, by_field, Some("api"))?);
            let state = if pausing {
                queue.pause(&scope, &by, body.string("reason")?).await?
            } else {
                queue.resume(&scope, &by).await?
            };
            Answer::ok(&state)
        }
        Op::GetPauses => {
            let params = list_params(&body, PAUSE_FILTERS)?;
            Answer::ok(&list_rows(&state.reader, &state.projector, pauses_table(), params).await?)
        }
        Op::CancelTask => {
            body.only(&["reason", "cancelled_by"])?;
            identity.require_admin("cancel a task")?;
            let by = Actor::worker(identity.acting_as(&body, "cancelled_by", Some("api"))?);
            let sequence = queue.cancel(&task_id, &by, body.string("reason")?).await?;
            Answer::ok(&written(sequence))
        }
    }
}

/// The filters `getTasks` (and `GET /api/tasks`) takes.
pub const LIST_FILTERS: &[&str] = &[
    "status",
    "worker_name",
    "container_name",
    "task_type",
    "assigned_to",
    "idempotency_key",
    "priority",
    "retry_of",
    "since",
    "until",
    "order",
    "limit",
    "cursor",
    "min_seq",
];

/// The projection table behind the task queries.
pub(crate) fn tasks_table() -> &'static Table {
    Table::named("container_tasks")
        .unwrap_or_else(|| unreachable!("the schema has container_tasks"))
}

/// A stale claim names the field the caller got wrong: its attempt when it named one, its
/// identity when it did not.
fn stale_field(error: Error, attempt: Option<u32>) -> ApiError {
    match error {
        Error::StaleClaim { reason, .. } => ApiError::new(
            StatusCode::CONFLICT,
            "stale_claim",
            reason,
            Some(
                if attempt.is_some() {
                    "attempt"
                } else {
                    "worker_name"
                }
                .into(),
            ),
        ),
        other => other.into(),
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        match error {
            Error::NotFound(id) => ApiError::not_found("task_id", format!("no task {id}")),
            // Well formed, but naming a task that does not exist: as a path's unknown id is.
            error @ Error::UnknownDependency(_) => {
                ApiError::not_found("depends_on", error.to_string())
            }
            Error::PauseRefused(reason) => ApiError::new(
                StatusCode::CONFLICT,
                "not_allowed",
                reason,
                Some("scope".into()),
            ),
            Error::ScheduleNotFound(id) => {
                ApiError::not_found("schedule_id", format!("no schedule {id}"))
            }
            error @ Error::ScheduleExists(_) => ApiError::new(
                StatusCode::CONFLICT,
                "schedule_exists",
                error.to_string(),
                Some("schedule_id".into()),
            ),
            Error::ScheduleRefused(refused) => ApiError::new(
                StatusCode::CONFLICT,
                "not_allowed",
                refused.to_string(),
                None,
            ),
            Error::Unarmable(unarmable) => unprocessable(unarmable.field, unarmable.reason),
            Error::Refused { refusal, .. } => ApiError::new(
                StatusCode::CONFLICT,
                "not_allowed",
                refusal.to_string(),
                None,
            ),
            Error::StaleClaim { reason, .. } => ApiError::new(
                StatusCode::CONFLICT,
                "stale_claim",
                reason,
                Some("attempt".into()),
            ),
            Error::Conflict { reason, .. } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", reason, None)
            }
            error @ Error::NotAvailable(_) => ApiError::new(
                StatusCode::CONFLICT,
                "not_available",
                error.to_string(),
                None,
            ),
            error @ Error::KeyReused { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                error.to_string(),
                Some("idempotency_key".into()),
            ),
            error @ Error::NotDead { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "not_dead",
                error.to_string(),
                Some("task_id".into()),
            ),
            Error::IdReused(task_id) => ApiError::new(
                StatusCode::CONFLICT,
                "task_id_reused",
                format!("task id {task_id} was used for a different task"),
                Some("task_id".into()),
            ),
            error @ Error::TooMany { .. } => unprocessable("body", error.to_string()),
            Error::Log(vibehq_events::Error::NotConnected) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_stored",
                "NATS is unreachable, so nothing was stored; send the request again once /health \
                 answers 200",
                None,
            ),
            Error::Log(vibehq_events::Error::NoStream { subject }) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_stored",
                format!(
                    "no stream took {subject} (a cluster electing a stream leader, or streams not \
                     created yet), so nothing was stored; send the request again shortly"
                ),
                None,
            ),
            Error::Log(vibehq_events::Error::Timeout { subject }) => {
                let task_id = vibehq_events::Subject::parse(&subject).map(|s| s.id().to_owned());
                let mut error = outcome_unknown(
                    "NATS did not confirm the write in time: it may or may not be stored. Sending \
                     the same request again is safe (a submission: with this task_id, or its \
                     idempotency_key); a result already stored is then refused with 409",
                );
                error.detail.task_id = task_id;
                error
            }
            Error::OutcomeUnknown { task_ids } => {
                let mut error = outcome_unknown(
                    "NATS did not confirm the bulk submission in time: it may or may not be \
                     stored. Send it again with each task's task_id set to these, in order (a \
                     task with an idempotency_key keeps it instead): it is stored at most once",
                );
                error.detail.task_ids = Some(task_ids);
                error
            }
            Error::Log(vibehq_events::Error::InvalidSubject(e)) => {
                unprocessable("task_id", e.to_string())
            }
            other => {
                tracing::error!(error = %other, "queue command failed");
                ApiError::unavailable(other.to_string())
            }
        }
    }
}

fn outcome_unknown(message: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "outcome_unknown",
        message,
        None,
    )
}

/// The acting worker (`worker_name`, see [`Identity::acting_as`]) and container.
fn actor(body: &Body, identity: &Identity) -> Result<Actor, ApiError> {
    let worker = identity.acting_as(body, "worker_name", None)?;
    Ok(Actor::new(worker, body.name("container_name")?))
}

/// The attempt a result or heartbeat names, if it names one: without it, the attempt the
/// claimer holds now.
fn attempt(body: &Body) -> Result<Option<u32>, ApiError> {
    Ok(body
        .integer("attempt", 1..=i64::from(u32::MAX))?
        .map(|a| a as u32))
}

/// Removes and checks `task_id`. Missing is 422; an id no task can have is 404, as it is in a
/// REST path.
/// The id the request is about (`task_id` or `schedule_id`), taken out of its body.
fn take_key(body: &mut Body, field: &str) -> Result<String, ApiError> {
    let id = body
        .string(field)?
        .ok_or_else(|| unprocessable(field, format!("{field} is required")))?;
    body.0.remove(field);
    validate_id(&id).map_err(|e| ApiError::not_found(field, e.to_string()))?;
    Ok(id)
}

/// The fields of a submission.
const SUBMISSION: &[&str] = &[
    "task_type",
    "command",
    "parameters",
    "priority",
    "worker_name",
    "container_name",
    "max_attempts",
    "idempotency_key",
    "task_id",
    "submitted_by",
    "run_at",
    "delay_ms",
    "depends_on",
    "on_dependency_failure",
    "concurrency_key",
];

/// Longest a task may be delayed: a year.
pub const MAX_DELAY_MS: i64 = 366 * 24 * 3600 * 1000;

/// When a submission asks to run: `run_at` (RFC 3339) or `delay_ms` (from now), not both.
fn run_at(body: &Body) -> Result<Option<time::OffsetDateTime>, ApiError> {
    let at = match body.string("run_at")? {
        Some(text) => Some(
            time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
                .map_err(|_| {
                    unprocessable(
                        "run_at",
                        format!("run_at must be an RFC 3339 time with its offset (2026-12-24T09:00:00Z), not {text:?}"),
                    )
                })?,
        ),
        None => None,
    };
    let delay = body.integer("delay_ms", 0..=MAX_DELAY_MS)?;
    match (at, delay) {
        (Some(_), Some(_)) => Err(unprocessable(
            "delay_ms",
            "give run_at or delay_ms, not both",
        )),
        (Some(at), None) => Ok(Some(at)),
        (None, Some(ms)) => Ok(Some(
            time::OffsetDateTime::now_utc() + time::Duration::milliseconds(ms),
        )),
        (None, None) => Ok(None),
    }
}

/// A submission: who submits (`submitted_by`, default `api`) and the task. Errors name the
/// field prefixed by `at` (`[3].command` in a bulk submission).
///
/// `task_type` and `command` are required; `task_id` (the client's own id, BullMQ's
/// `jobId`) and `idempotency_key` each make sending the same submission again safe; `command` is a name a worker allows, never a shell
/// line; `container_name` needs `worker_name` (container names are unique only within a
/// worker); `priority` is 0-9, `max_attempts` 1-100 (default 3).
fn new_task(body: &Body, at: &str, identity: &Identity) -> Result<(Actor, NewTask), ApiError> {
    let read = || -> Result<(Actor, NewTask), ApiError> {
        body.only(SUBMISSION)?;
        let task_type = body.required_string("task_type", 128)?;
        let command = body.required_string("command", 128)?;
        if !is_command_name(&command) {
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
        let idempotency_key = match body.string("idempotency_key")? {
            Some(k) if k.is_empty() || k.chars().count() > 200 => {
                return Err(unprocessable(
                    "idempotency_key",
                    "idempotency_key must be 1-200 characters",
                ));
            }
            key => key,
        };
        let task_id = match body.string("task_id")? {
            Some(_) if idempotency_key.is_some() => {
                return Err(unprocessable(
                    "task_id",
                    "give task_id or idempotency_key, not both: each makes a resubmission safe",
                ));
            }
            Some(id) => {
                validate_id(&id).map_err(|e| unprocessable("task_id", e.to_string()))?;
                Some(id)
            }
            None => None,
        };
        let run_at = run_at(body)?;
        if run_at.is_some() && !at.is_empty() {
            return Err(unprocessable(
                "run_at",
                "a bulk submission cannot hold delayed tasks yet: submit them one by one",
            ));
        }
        let depends_on = match body.0.get("depends_on") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(ids)) if ids.len() <= MAX_DEPENDENCIES => {
                let mut found = Vec::with_capacity(ids.len());
                for id in ids {
                    let id = id
                        .as_str()
                        .filter(|id| validate_id(id).is_ok())
                        .ok_or_else(|| {
                            unprocessable("depends_on", format!("{id} is not a task id"))
                        })?;
                    found.push(id.to_owned());
                }
                found
            }
            Some(_) => {
                return Err(unprocessable(
                    "depends_on",
                    format!("depends_on is an array of up to {MAX_DEPENDENCIES} task ids"),
                ));
            }
        };
        let on_dependency_failure = match body.string("on_dependency_failure")?.as_deref() {
            None => None,
            Some("cancel") => Some(OnDependencyFailure::Cancel),
            Some("fail") => Some(OnDependencyFailure::Fail),
            Some(other) => {
                return Err(unprocessable(
                    "on_dependency_failure",
                    format!("on_dependency_failure is cancel or fail, not {other:?}"),
                ));
            }
        };
        if on_dependency_failure.is_some() && depends_on.is_empty() {
            return Err(unprocessable(
                "on_dependency_failure",
                "on_dependency_failure needs depends_on",
            ));
        }
        if !depends_on.is_empty() && run_at.is_some() {
            return Err(unprocessable(
                "depends_on",
                "a task waits for its dependencies or for a time, not both yet",
            ));
        }
        if !depends_on.is_empty() && !at.is_empty() {
            return Err(unprocessable(
                "depends_on",
                "a bulk submission cannot hold tasks with dependencies yet: submit them one by one",
            ));
        }
        let concurrency_key = match body.string("concurrency_key")? {
            Some(key) => {
                validate_id(&key).map_err(|e| unprocessable("concurrency_key", e.to_string()))?;
                Some(key)
            }
            None => None,
        };
        if concurrency_key.is_some() && run_at.is_some() {
            return Err(unprocessable(
                "concurrency_key",
                "a task waits for its key or for a time, not both yet",
            ));
        }
        let new = NewTask {
            task_id,
            retry_of: None,
            concurrency_key,
            run_at,
            depends_on,
            on_dependency_failure,
            task_type,
            command,
            parameters,
            priority: body.integer("priority", 0..=MAX_PRIORITY)?.unwrap_or(0),
            worker_name,
            container_name,
            max_attempts: body.integer("max_attempts", 1..=100)?.unwrap_or(3) as u32,
            idempotency_key,
        };
        let by = Actor::worker(identity.acting_as(body, "submitted_by", Some("api"))?);
        Ok((by, new))
    };
    read().map_err(|e| prefixed(at, e))
}

/// A bulk submission: an array of 1 to 1,000 submissions, each with its submitter.
fn new_tasks(input: Value, identity: &Identity) -> Result<Vec<(Actor, NewTask)>, ApiError> {
    let Value::Array(items) = input else {
        return Err(ApiError::invalid(
            "body",
            "a bulk submission is a JSON array of tasks",
        ));
    };
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(unprocessable(
            "body",
            format!("a bulk submission holds 1 to {MAX_BATCH} tasks"),
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let body = Body::from_value(item)
                .map_err(|_| ApiError::invalid(format!("[{i}]"), "each task is a JSON object"))?;
            new_task(&body, &format!("[{i}]."), identity)
        })
        .collect()
}

/// The list filters of a JSON body as the query parameters `GET /api/tasks` takes, so both are
/// checked by the same parser: strings stay strings, integers become their digits.
///
/// A wrong filter is a 400, as a wrong query parameter is: filters are parameters, whichever
/// door they came in by.
pub fn list_params(body: &Body, allowed: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    if let Some(unknown) = body.0.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            unknown.clone(),
            format!(
                "unknown filter {unknown:?}; allowed: {}",
                allowed.join(", ")
            ),
        ));
    }
    let mut params = HashMap::new();
    for (name, value) in &body.0 {
        let text = match value {
            Value::Null => continue,
            Value::String(s) => s.clone(),
            Value::Number(n) if n.is_u64() => n.to_string(),
            _ => {
                return Err(ApiError::invalid(
                    name.clone(),
                    format!("{name} must be a string (or, for numbers, a non-negative integer)"),
                ));
            }
        };
        params.insert(name.clone(), text);
    }
    Ok(params)
}

/// The filters `getKeys` (and `GET /api/keys`) takes.
pub const KEY_FILTERS: &[&str] = &["order", "limit", "cursor", "min_seq"];

/// Longest window a rate limit may have: a day.
pub const MAX_RATE_SECONDS: f64 = 86_400.0;

/// The key operations: declaring limits is an operator's; anyone may read.
async fn key_answer(
    state: &QueueState,
    identity: &Identity,
    op: Op,
    mut body: Body,
) -> Result<Answer, ApiError> {
    if op == Op::GetKeys {
        let params = list_params(&body, KEY_FILTERS)?;
        let table = Table::named("container_task_keys")
            .unwrap_or_else(|| unreachable!("the schema has container_task_keys"));
        return Answer::ok(&list_rows(&state.reader, &state.projector, table, params).await?);
    }
    let key = take_key(&mut body, "key")?;
    if op == Op::GetKey {
        body.only(&[])?;
        return Answer::ok(&crate::keys::KeyView::from(&state.queue.key(&key).await?));
    }
    body.only(&["concurrency", "rate", "changed_by"])?;
    identity.require_admin("set a key's limits")?;
    let concurrency = body.integer("concurrency", 1..=100_000)?.map(|c| c as u32);
    let rate = match body.0.get("rate") {
        None | Some(Value::Null) => None,
        Some(Value::Object(rate)) => {
            let rate = Body(rate.clone());
            rate.only(&["max", "per_seconds"])
                .map_err(|e| prefixed("rate.", e))?;
            let max = rate
                .integer("max", 1..=1_000_000)
                .map_err(|e| prefixed("rate.", e))?
                .ok_or_else(|| unprocessable("rate.max", "rate.max is required"))?;
            let per = match rate.0.get("per_seconds").and_then(Value::as_f64) {
                Some(per) if per > 0.0 && per <= MAX_RATE_SECONDS => per,
                _ => {
                    return Err(unprocessable(
                        "rate.per_seconds",
                        format!(
                            "rate.per_seconds is a number of seconds above 0, at most {MAX_RATE_SECONDS}"
                        ),
                    ));
                }
            };
            Some(limit::Rate {
                max: max as u32,
                per_ms: (per * 1000.0).round().max(1.0) as u64,
            })
        }
        Some(_) => {
            return Err(unprocessable(
                "rate",
                "rate is an object: {\"max\": N, \"per_seconds\": S}",
            ));
        }
    };
    let limits = limit::Limits { concurrency, rate };
    limits
        .validate()
        .map_err(|e| unprocessable(e.field, e.to_string()))?;
    let by = Actor::worker(identity.acting_as(&body, "changed_by", Some("api"))?);
    let key = state.queue.set_key_limits(&key, limits, &by).await?;
    Answer::ok(&crate::keys::KeyView::from(&key))
}

/// Whether `name` can name a command a worker allows: letters, digits, `_ - . : /`; never a
/// shell line.
fn is_command_name(name: &str) -> bool {
    name.chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-.:/".contains(c))
}

/// The filters `getWorkers` (and `GET /api/workers`) takes.
pub const WORKER_FILTERS: &[&str] = &["language", "order", "limit", "cursor", "min_seq"];

/// A registration's answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Registered {
    pub worker_name: String,
    /// Pass as `min_seq` to read it back from `GET /api/workers`.
    pub sequence: u64,
}

/// Registering a worker (as itself: a worker's token registers only its own name) and
/// listing the registered ones.
async fn worker_answer(
    state: &QueueState,
    identity: &Identity,
    op: Op,
    body: Body,
) -> Result<Answer, ApiError> {
    if op == Op::GetWorkers {
        let params = list_params(&body, WORKER_FILTERS)?;
        let table = Table::named("container_workers")
            .unwrap_or_else(|| unreachable!("the schema has container_workers"));
        return Answer::ok(&list_rows(&state.reader, &state.projector, table, params).await?);
    }
    body.only(&["worker_name", "language", "commands"])?;
    let name = identity.acting_as(&body, "worker_name", None)?;
    let language = match body.string("language")? {
        Some(l) if l.is_empty() || l.chars().count() > 32 => {
            return Err(unprocessable("language", "language is 1-32 characters"));
        }
        language => language,
    };
    let commands = match body.0.get("commands") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(names)) if names.len() <= 1000 => names
            .iter()
            .map(|n| {
                n.as_str()
                    .filter(|c| !c.is_empty() && c.len() <= 128 && is_command_name(c))
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        unprocessable(
                            "commands",
                            "commands are command names (letters, digits, _ - . : /)",
                        )
                    })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(unprocessable(
                "commands",
                "commands is an array of up to 1000 command names",
            ));
        }
    };
    let event = Actor::worker(&name).envelope(vibehq_events::fleet::Registered {
        name: name.clone(),
        language,
        commands,
    });
    let appended = state
        .queue
        .log()
        .append(&event, vibehq_events::Expect::Any)
        .await
        .map_err(Error::from)?;
    Answer::with(
        StatusCode::CREATED,
        &Registered {
            worker_name: name,
            sequence: appended.sequence,
        },
    )
}

/// An error of a nested object's field, named from the outer body (`rate.max`).
fn prefixed(prefix: &str, mut error: ApiError) -> ApiError {
    if let Some(field) = error.detail.field.as_mut() {
        *field = format!("{prefix}{field}");
    }
    error
}

/// The schedule operations: every change is an operator's; anyone may read.
async fn schedule_answer(
    state: &QueueState,
    identity: &Identity,
    op: Op,
    mut body: Body,
) -> Result<Answer, ApiError> {
    let queue = &state.queue;
    if op == Op::GetSchedules {
        let params = list_params(&body, SCHEDULE_FILTERS)?;
        return Answer::ok(
            &list_rows(&state.reader, &state.projector, schedules_table(), params).await?,
        );
    }
    if op == Op::CreateSchedule {
        identity.require_admin("create a schedule")?;
        let (by, new) = new_schedule(&body, identity)?;
        let (changed, created) = queue.create_schedule(&by, new).await?;
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        return Answer::with(status, &changed);
    }
    let schedule_id = take_key(&mut body, "schedule_id")?;
    if op == Op::GetSchedule {
        let params = list_params(&body, &["min_seq"])?;
        let mut row = get_row(
            &state.reader,
            &state.projector,
            schedules_table(),
            &schedule_id,
            params,
        )
        .await?
        .ok_or_else(|| ApiError::not_found("schedule_id", format!("no schedule {schedule_id}")))?;
        if row.get("status").and_then(Value::as_str) == Some("deleted") {
            return Err(ApiError::not_found(
                "schedule_id",
                format!(
                    "schedule {schedule_id} was deleted; GET /api/schedules?status=deleted lists it with its firings' table"
                ),
            ));
        }
        let mut recent = HashMap::new();
        recent.insert("schedule_id".to_owned(), schedule_id.clone());
        recent.insert("order".to_owned(), "desc".to_owned());
        recent.insert("limit".to_owned(), "20".to_owned());
        let firings = list_rows(&state.reader, &state.projector, firings_table(), recent).await?;
        row.insert(
            "recent_firings".into(),
            serde_json::to_value(firings.items).unwrap_or(Value::Null),
        );
        return Answer::ok(&row);
    }
    body.only(&["changed_by"])?;
    identity.require_admin("change a schedule")?;
    let by = Actor::worker(identity.acting_as(&body, "changed_by", Some("api"))?);
    let changed = match op {
        Op::PauseSchedule => queue.pause_schedule(&schedule_id, &by).await?,
        Op::ResumeSchedule => queue.resume_schedule(&schedule_id, &by).await?,
        Op::DeleteSchedule => queue.delete_schedule(&schedule_id, &by).await?,
        Op::TriggerSchedule => return Answer::ok(&queue.trigger_schedule(&schedule_id).await?),
        _ => unreachable!("the schedule operations are answered here"),
    };
    Answer::ok(&changed)
}

/// The filters `getPauses` (and `GET /api/queues/pauses`) takes.
pub const PAUSE_FILTERS: &[&str] = &[
    "status",
    "worker_name",
    "order",
    "limit",
    "cursor",
    "min_seq",
];

fn pauses_table() -> &'static Table {
    Table::named("container_task_pauses")
        .unwrap_or_else(|| unreachable!("the schema has container_task_pauses"))
}

/// The filters `getSchedules` (and `GET /api/schedules`) takes.
pub const SCHEDULE_FILTERS: &[&str] = &[
    "status",
    "worker_name",
    "container_name",
    "task_type",
    "since",
    "until",
    "order",
    "limit",
    "cursor",
    "min_seq",
];

fn schedules_table() -> &'static Table {
    Table::named("container_task_schedules")
        .unwrap_or_else(|| unreachable!("the schema has container_task_schedules"))
}

fn firings_table() -> &'static Table {
    Table::named("container_task_schedule_firings")
        .unwrap_or_else(|| unreachable!("the schema has container_task_schedule_firings"))
}

/// The fields of a schedule.
const SCHEDULE: &[&str] = &[
    "schedule_id",
    "cron",
    "time_zone",
    "every_seconds",
    "task",
    "overlap",
    "misfire",
    "misfire_grace_seconds",
    "created_by",
];

/// Longest id a schedule may have: its manual firings' task ids add 40 characters to it, and
/// a task id is at most 128.
pub const MAX_SCHEDULE_ID: usize = 88;

/// Longest interval a schedule may have: a year (longer is a cron expression's job).
pub const MAX_EVERY_SECONDS: i64 = 366 * 24 * 3600;

/// A new schedule: `cron` (5 or 6 fields, or `@daily` …) with `time_zone`, or
/// `every_seconds`; `task`, a submission's fields without its id; `overlap` (`skip`, the
/// default, or `allow`); `misfire` (`run_once`, the default, or `skip`).
fn new_schedule(body: &Body, identity: &Identity) -> Result<(Actor, Created), ApiError> {
    body.only(SCHEDULE)?;
    let schedule_id = match body.string("schedule_id")? {
        Some(id) => {
            if id.chars().count() > MAX_SCHEDULE_ID {
                return Err(unprocessable(
                    "schedule_id",
                    format!("schedule_id is at most {MAX_SCHEDULE_ID} characters"),
                ));
            }
            validate_id(&id).map_err(|e| unprocessable("schedule_id", e.to_string()))?;
            id
        }
        None => uuid::Uuid::now_v7().to_string(),
    };
    let cron = body.string("cron")?;
    let time_zone = body.string("time_zone")?;
    let every = body.integer("every_seconds", 1..=MAX_EVERY_SECONDS)?;
    let timing = match (cron, every) {
        (Some(_), Some(_)) => {
            return Err(unprocessable(
                "every_seconds",
                "give cron or every_seconds, not both",
            ));
        }
        (Some(cron), None) => {
            if cron.trim().is_empty() || cron.chars().count() > 200 {
                return Err(unprocessable("cron", "cron must be 1-200 characters"));
            }
            if let Some(zone) = time_zone.as_deref().filter(|z| !is_time_zone(z)) {
                return Err(unprocessable(
                    "time_zone",
                    format!(
                        "{zone:?} is not an IANA time zone vibehq knows (Europe/Paris, America/New_York, UTC …)"
                    ),
                ));
            }
            Timing::cron(&cron, time_zone)
        }
        (None, Some(seconds)) => {
            if time_zone.is_some() {
                return Err(unprocessable(
                    "time_zone",
                    "time_zone applies to cron schedules; an interval has none",
                ));
            }
            Timing::Every {
                every_seconds: seconds as u64,
            }
        }
        (None, None) => {
            return Err(unprocessable(
                "cron",
                "a schedule needs cron (\"0 9 * * *\", with time_zone) or every_seconds",
            ));
        }
    };
    let task = match body.0.get("task") {
        Some(Value::Object(task)) => Body::from_value(Value::Object(task.clone()))?,
        _ => {
            return Err(unprocessable(
                "task",
                "task is required: the task each firing submits (task_type, command, …)",
            ));
        }
    };
    for field in [
        "task_id",
        "idempotency_key",
        "run_at",
        "delay_ms",
        "submitted_by",
        "depends_on",
        "on_dependency_failure",
        "concurrency_key",
    ] {
        if task.0.contains_key(field) {
            return Err(unprocessable(
                &format!("task.{field}"),
                "a schedule's tasks are named and timed by their firings",
            ));
        }
    }
    let (_, new) = new_task(&task, "task.", identity)?;
    let policy = |field: &str, allowed: &[&str]| -> Result<Option<String>, ApiError> {
        match body.string(field)? {
            Some(value) if !allowed.contains(&value.as_str()) => Err(unprocessable(
                field,
                format!("{field} is one of {}", allowed.join(", ")),
            )),
            value => Ok(value),
        }
    };
    let overlap = match policy("overlap", &["skip", "allow"])?.as_deref() {
        Some("allow") => Overlap::Allow,
        _ => Overlap::Skip,
    };
    let misfire = match policy("misfire", &["run_once", "skip"])?.as_deref() {
        Some("skip") => Misfire::Skip,
        _ => Misfire::RunOnce,
    };
    let by = Actor::worker(identity.acting_as(body, "created_by", Some("api"))?);
    Ok((
        by,
        Created {
            schedule_id,
            timing,
            task: Template {
                task_type: new.task_type,
                command: new.command,
                parameters: new.parameters,
                priority: new.priority,
                worker_name: new.worker_name,
                container_name: new.container_name,
                max_attempts: new.max_attempts,
            },
            overlap,
            misfire,
            misfire_grace_seconds: body
                .integer("misfire_grace_seconds", 1..=MAX_EVERY_SECONDS)?
                .map_or(MISFIRE_GRACE_SECONDS, |s| s as u64),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(value: Value) -> Body {
        Body::from_value(value).expect("an object")
    }

    fn field(error: ApiError) -> (u16, Option<String>) {
        (error.status.as_u16(), error.detail.field)
    }

    #[test]
    fn a_minimal_submission_gets_the_defaults() {
        let (by, new) = new_task(
            &body(json!({"task_type": "t", "command": "c"})),
            "",
            &Identity::Open,
        )
        .expect("ok");
        assert_eq!(by, Actor::worker("api"));
        assert_eq!((new.priority, new.max_attempts), (0, 3));
        assert_eq!(new.worker_name, None);
    }

    #[test]
    fn a_submission_error_names_its_field() {
        let cases = [
            (json!({"task_type": "t"}), "command"),
            (json!({"command": "c"}), "task_type"),
            (json!({"task_type": "t", "command": "rm -rf /"}), "command"),
            (
                json!({"task_type": "t", "command": "c", "container_name": "c1"}),
                "container_name",
            ),
            (
                json!({"task_type": "t", "command": "c", "colour": "red"}),
                "colour",
            ),
            (
                json!({"task_type": "t", "command": "c", "worker_name": "a:b"}),
                "worker_name",
            ),
        ];
        for (input, name) in cases {
            let error = new_task(&body(input.clone()), "", &Identity::Open).expect_err("refused");
            assert_eq!(field(error), (422, Some(name.to_owned())), "{input}");
        }
    }

    #[test]
    fn a_bulk_submission_names_the_task_and_field_at_fault() {
        let tasks = json!([{"task_type": "t", "command": "c"}, {"task_type": "t"}]);
        let error = new_tasks(tasks, &Identity::Open).expect_err("refused");
        assert_eq!(field(error), (422, Some("[1].command".into())));
        let error = new_tasks(json!([]), &Identity::Open).expect_err("empty");
        assert_eq!(field(error), (422, Some("body".into())));
        let many = Value::Array(vec![json!({"task_type": "t", "command": "c"}); 1001]);
        assert_eq!(
            field(new_tasks(many, &Identity::Open).expect_err("too many")),
            (422, Some("body".into()))
        );
        let tasks = new_tasks(
            json!([{"task_type": "t", "command": "c"}, {"task_type": "t", "command": "c", "submitted_by": "bob"}]),
            &Identity::Open,
        )
        .expect("ok");
        let submitters: Vec<_> = tasks
            .iter()
            .map(|(by, _)| by.worker_name.as_str())
            .collect();
        assert_eq!(
            submitters,
            ["api", "bob"],
            "each task has its own submitter"
        );
    }

    #[test]
    fn a_task_id_is_required_and_must_be_an_id() {
        let error = take_key(&mut body(json!({})), "task_id").expect_err("missing");
        assert_eq!(field(error), (422, Some("task_id".into())));
        let error =
            take_key(&mut body(json!({"task_id": "a.b"})), "task_id").expect_err("not an id");
        assert_eq!(field(error), (404, Some("task_id".into())));
        let mut with_id = body(json!({"task_id": "t1", "attempt": 1}));
        assert_eq!(take_key(&mut with_id, "task_id").expect("ok"), "t1");
        assert!(with_id.only(&["attempt"]).is_ok(), "task_id was taken out");
    }

    #[test]
    fn list_filters_become_query_parameters_and_are_refused_as_parameters() {
        let allowed = ["status", "limit"];
        let params =
            list_params(&body(json!({"status": "failed", "limit": 5})), &allowed).expect("ok");
        assert_eq!(params["status"], "failed");
        assert_eq!(params["limit"], "5");
        let error = list_params(&body(json!({"limit": -1})), &allowed).expect_err("negative");
        assert_eq!(field(error), (400, Some("limit".into())));
        let error = list_params(&body(json!({"colour": "red"})), &allowed).expect_err("unknown");
        assert_eq!(field(error), (400, Some("colour".into())));
    }
}
