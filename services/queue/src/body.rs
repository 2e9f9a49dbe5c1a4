//! Request bodies: parsing and validation shared by the REST routes and the RPC service.
//!
//! REST (`/api/tasks…`) and RPC (`vibehq.rpc.tasks.*`) accept the same JSON objects, so they
//! are checked by the same code here: an input is refused the same way, with the same field
//! named, whichever door it came in by. Bodies are read by hand from JSON objects so every error
//! names its field, and unknown fields are refused rather than ignored. Errors are
//! [`ApiError`]s: HTTP answers with them as they are; RPC turns their status into the service
//! error's code and their JSON body into its description.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Map, Value};
use vibehq_api::error::ApiError;
use vibehq_events::subject::validate_id;
use vibehq_events::work::MAX_PRIORITY;

use crate::queue::{Actor, NewTask};

/// Largest request body accepted (413 beyond).
pub const MAX_BODY: usize = 256 * 1024;

/// Longest a claim request may wait for work.
pub(crate) const MAX_CLAIM_WAIT: Duration = Duration::from_secs(30);

/// A JSON object body, with errors naming what is wrong.
#[derive(Debug, Default)]
pub(crate) struct Body(pub(crate) Map<String, Value>);

impl Body {
    /// Parses a body: empty means `{}`; anything but a JSON object is refused (400, `body`),
    /// and so is anything over [`MAX_BODY`] (413, `body`).
    pub(crate) fn from_json(bytes: &[u8]) -> Result<Self, ApiError> {
        if bytes.len() > MAX_BODY {
            return Err(too_large());
        }
        if bytes.is_empty() {
            return Ok(Self::default());
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(Self(map)),
            Ok(_) => Err(ApiError::invalid("body", "the body must be a JSON object")),
            Err(e) => Err(ApiError::invalid(
                "body",
                format!("the body is not valid JSON: {e}"),
            )),
        }
    }

    /// Refuses (422) the first field not in `allowed`.
    pub(crate) fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(unknown) => Err(unprocessable(
                unknown,
                format!("unknown field {unknown:?}; allowed: {}", allowed.join(", ")),
            )),
            None => Ok(()),
        }
    }

    pub(crate) fn string(&self, field: &str) -> Result<Option<String>, ApiError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(unprocessable(field, format!("{field} must be a string"))),
        }
    }

    pub(crate) fn required_string(&self, field: &str, max: usize) -> Result<String, ApiError> {
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

    /// A worker, container or other name: one subject token.
    pub(crate) fn name(&self, field: &str) -> Result<Option<String>, ApiError> {
        match self.string(field)? {
            Some(name) => {
                validate_id(&name).map_err(|e| unprocessable(field, e.to_string()))?;
                Ok(Some(name))
            }
            None => Ok(None),
        }
    }

    pub(crate) fn integer(
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

    pub(crate) fn boolean(&self, field: &str) -> Result<Option<bool>, ApiError> {
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
    pub(crate) fn actor(&self) -> Result<Actor, ApiError> {
        let worker = self
            .name("worker_name")?
            .ok_or_else(|| unprocessable("worker_name", "worker_name is required"))?;
        Ok(Actor::new(worker, self.name("container_name")?))
    }

    /// The attempt a result or heartbeat names (required).
    pub(crate) fn attempt(&self) -> Result<u32, ApiError> {
        let attempt = self
            .integer("attempt", 1..=i64::from(u32::MAX))?
            .ok_or_else(|| unprocessable("attempt", "attempt is required (from the claim)"))?;
        Ok(attempt as u32)
    }

    /// Removes and checks `task_id`, for callers that carry it in the body rather than the
    /// path (RPC). Missing is 422; an id no task can have is 404, as it is in a REST path.
    pub(crate) fn take_task_id(&mut self) -> Result<String, ApiError> {
        let task_id = self
            .string("task_id")?
            .ok_or_else(|| unprocessable("task_id", "task_id is required"))?;
        self.0.remove("task_id");
        task_path(&task_id)?;
        Ok(task_id)
    }
}

/// Checks a task id from a path (or an RPC body): an id that cannot be a subject token names no
/// task (404).
pub(crate) fn task_path(task_id: &str) -> Result<(), ApiError> {
    validate_id(task_id).map_err(|e| ApiError::not_found("task_id", e.to_string()))
}

/// A 422 naming `field`.
pub(crate) fn unprocessable(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        message,
        Some(field.to_owned()),
    )
}

/// The 413 for a body over [`MAX_BODY`].
pub(crate) fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the body is larger than {MAX_BODY} bytes"),
        Some("body".into()),
    )
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
    let claimer = body.actor()?;
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
        attempt: body.attempt()?,
        claimer: body.actor()?,
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
        attempt: body.attempt()?,
        claimer: body.actor()?,
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
    fn a_body_that_is_not_an_object_or_too_large_is_refused_as_the_body() {
        let error = Body::from_json(b"[1]").expect_err("refused");
        assert_eq!(field(error), (400, Some("body".into())));
        let error = Body::from_json(&vec![b' '; MAX_BODY + 1]).expect_err("refused");
        assert_eq!(field(error), (413, Some("body".into())));
        assert!(Body::from_json(b"").expect("empty is {}").0.is_empty());
    }

    #[test]
    fn a_task_id_in_the_body_is_required_and_must_be_an_id() {
        let error = body(json!({})).take_task_id().expect_err("missing");
        assert_eq!(field(error), (422, Some("task_id".into())));
        let error = body(json!({"task_id": "a.b"}))
            .take_task_id()
            .expect_err("not an id");
        assert_eq!(field(error), (404, Some("task_id".into())));
        let mut with_id = body(json!({"task_id": "t1", "attempt": 1}));
        assert_eq!(with_id.take_task_id().expect("ok"), "t1");
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
