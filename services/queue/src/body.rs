//! Request bodies: parsing and validation shared by the REST routes and the RPC service.
//!
//! REST (`/api/tasks…`) and RPC (`vibehq.rpc.tasks.*`) accept the same JSON objects, so they
//! are checked by the same code here: an input is refused the same way, with the same field
//! named, whichever door it came in by. Bodies are read by hand from JSON objects so every error
//! names its field, and unknown fields are refused rather than ignored: the generic parser
//! ([`Body`], [`unprocessable`], [`too_large`], [`MAX_BODY`]) is [`vibehq_api::body`], shared with
//! other services; what is here is the tasks' own fields. Errors are [`ApiError`]s: HTTP answers
//! with them as they are; RPC turns their status into the service error's code and their JSON
//! body into its description.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
pub use vibehq_api::body::MAX_BODY;
pub(crate) use vibehq_api::body::{Body, too_large, unprocessable};
use vibehq_api::error::ApiError;
use vibehq_events::subject::validate_id;
use vibehq_events::work::MAX_PRIORITY;

use crate::queue::{Actor, NewTask};

/// Longest a claim request may wait for work.
pub(crate) const MAX_CLAIM_WAIT: Duration = Duration::from_secs(30);

/// The acting worker and container (`worker_name` required).
pub(crate) fn actor(body: &Body) -> Result<Actor, ApiError> {
    let worker = body
        .name("worker_name")?
        .ok_or_else(|| unprocessable("worker_name", "worker_name is required"))?;
    Ok(Actor::new(worker, body.name("container_name")?))
}

/// The attempt a result or heartbeat names (required).
pub(crate) fn attempt(body: &Body) -> Result<u32, ApiError> {
    let attempt = body
        .integer("attempt", 1..=i64::from(u32::MAX))?
        .ok_or_else(|| unprocessable("attempt", "attempt is required (from the claim)"))?;
    Ok(attempt as u32)
}

/// Removes and checks `task_id`, for callers that carry it in the body rather than the path
/// (RPC). Missing is 422; an id no task can have is 404, as it is in a REST path.
pub(crate) fn take_task_id(body: &mut Body) -> Result<String, ApiError> {
    let task_id = body
        .string("task_id")?
        .ok_or_else(|| unprocessable("task_id", "task_id is required"))?;
    body.0.remove("task_id");
    task_path(&task_id)?;
    Ok(task_id)
}

/// Checks a task id from a path (or an RPC body): an id that cannot be a subject token names no
/// task (404).
pub(crate) fn task_path(task_id: &str) -> Result<(), ApiError> {
    validate_id(task_id).map_err(|e| ApiError::not_found("task_id", e.to_string()))
}

/// A submission: who submits (`submitted_by`, default `api`) and the task.
///
/// `task_type` and `command` are required; `command` is a name a worker allows, never a shell
/// line; `container_name` needs `worker_name` (container names are unique only within a
/// worker); `priority` is 0-9, `max_attempts` 1-100 (default 3).
pub(crate) fn new_task(body: &Body) -> Result<(Actor, NewTask), ApiError> {
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
    Ok((by, new))
}

/// A claim of the next task: the claimer (`worker_name` required, `container_name`) and how
/// long to wait for work (`wait_ms`, 0-30000, default 0).
pub(crate) fn claim_next(body: &Body) -> Result<(Actor, Duration), ApiError> {
    body.only(&["worker_name", "container_name", "wait_ms"])?;
    let claimer = actor(body)?;
    let wait = Duration::from_millis(
        body.integer("wait_ms", 0..=MAX_CLAIM_WAIT.as_millis() as i64)?
            .unwrap_or(0) as u64,
    );
    Ok((claimer, wait))
}

/// A completion: the claim's attempt, the claimer, and an optional `output`.
#[derive(Debug)]
pub(crate) struct Completion {
    pub(crate) attempt: u32,
    pub(crate) claimer: Actor,
    pub(crate) output: Option<String>,
}

/// Reads a completion body (`worker_name`, `container_name`, `attempt`, `output`).
pub(crate) fn completion(body: &Body) -> Result<Completion, ApiError> {
    body.only(&["worker_name", "container_name", "attempt", "output"])?;
    Ok(Completion {
        attempt: attempt(body)?,
        claimer: actor(body)?,
        output: body.string("output")?,
    })
}

/// A reported failure: the claim's attempt, the claimer, the error, and whether to retry.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) attempt: u32,
    pub(crate) claimer: Actor,
    pub(crate) error: String,
    pub(crate) retry: bool,
}

/// Reads a failure body (`worker_name`, `container_name`, `attempt`, `error` required, `retry`
/// default true).
pub(crate) fn failure(body: &Body) -> Result<Failure, ApiError> {
    body.only(&["worker_name", "container_name", "attempt", "error", "retry"])?;
    let error = body.required_string("error", 64 * 1024)?;
    Ok(Failure {
        attempt: attempt(body)?,
        claimer: actor(body)?,
        error,
        retry: body.boolean("retry")?.unwrap_or(true),
    })
}

/// The list filters of a JSON body as the query parameters `GET /api/tasks` takes, so both are
/// checked by the same parser: strings stay strings, integers become their digits.
pub(crate) fn list_params(
    body: &Body,
    allowed: &[&str],
) -> Result<HashMap<String, String>, ApiError> {
    body.only(allowed)?;
    let mut params = HashMap::new();
    for (name, value) in &body.0 {
        let text = match value {
            Value::Null => continue,
            Value::String(s) => s.clone(),
            Value::Number(n) if n.is_u64() => n.to_string(),
            _ => {
                return Err(unprocessable(
                    name,
                    format!("{name} must be a string (or, for numbers, a non-negative integer)"),
                ));
            }
        };
        params.insert(name.clone(), text);
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(value: Value) -> Body {
        Body::from_json(value.to_string().as_bytes()).expect("an object")
    }

    fn field(error: ApiError) -> (u16, Option<String>) {
        (error.status.as_u16(), error.detail.field)
    }

    #[test]
    fn a_minimal_submission_gets_the_defaults() {
        let (by, new) = new_task(&body(json!({"task_type": "t", "command": "c"}))).expect("ok");
        assert_eq!(by, Actor::new("api", None));
        assert_eq!((new.priority, new.max_attempts), (0, 3));
        assert_eq!(new.worker_name, None);
    }

    #[test]
    fn a_submission_error_names_its_field() {
        let cases = [
            (json!({"task_type": "t"}), 422, "command"),
            (json!({"command": "c"}), 422, "task_type"),
            (
                json!({"task_type": "t", "command": "rm -rf /"}),
                422,
                "command",
            ),
            (
                json!({"task_type": "t", "command": "c", "container_name": "c1"}),
                422,
                "container_name",
            ),
            (
                json!({"task_type": "t", "command": "c", "colour": "red"}),
                422,
                "colour",
            ),
        ];
        for (input, status, name) in cases {
            let error = new_task(&body(input.clone())).expect_err("refused");
            assert_eq!(field(error), (status, Some(name.to_owned())), "{input}");
        }
    }

    #[test]
    fn a_task_id_in_the_body_is_required_and_must_be_an_id() {
        let error = take_task_id(&mut body(json!({}))).expect_err("missing");
        assert_eq!(field(error), (422, Some("task_id".into())));
        let error = take_task_id(&mut body(json!({"task_id": "a.b"}))).expect_err("not an id");
        assert_eq!(field(error), (404, Some("task_id".into())));
        let mut with_id = body(json!({"task_id": "t1", "attempt": 1}));
        assert_eq!(take_task_id(&mut with_id).expect("ok"), "t1");
        assert!(with_id.only(&["attempt"]).is_ok(), "task_id was taken out");
    }

    #[test]
    fn list_filters_become_query_parameters() {
        let allowed = ["status", "limit"];
        let params =
            list_params(&body(json!({"status": "failed", "limit": 5})), &allowed).expect("ok");
        assert_eq!(params["status"], "failed");
        assert_eq!(params["limit"], "5");
        let error = list_params(&body(json!({"limit": -1})), &allowed).expect_err("negative");
        assert_eq!(field(error), (422, Some("limit".into())));
        let error = list_params(&body(json!({"colour": "red"})), &allowed).expect_err("unknown");
        assert_eq!(field(error), (422, Some("colour".into())));
    }
}
