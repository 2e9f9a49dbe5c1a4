//! The queue's request bodies as the OpenAPI document gives them — each one's fields, their
//! types and ranges, and the rules between fields, as [`crate::ops`] reads them — and the
//! answers whose shape follows the request's (one task or an array).
//!
//! `ops` reads bodies by hand, so each error names its field (see [`vibehq_api::body`]);
//! these schemas say the same in JSON Schema, and CI checks that the two agree by running
//! schemathesis against `/openapi.json` (`tests/it/openapi.rs`).

use serde_json::{Value, json};
use vibehq_api::body_schema;
use vibehq_api::schema::{ID, NAME, NOT_BLANK};
use vibehq_events::task::lane::MAX_PRIORITY;

use crate::dependencies::MAX_DEPENDENCIES;
use crate::ops::{
    MAX_CLAIM_WAIT_MS, MAX_DELAY_MS, MAX_ERROR, MAX_EVERY_SECONDS, MAX_PROGRESS_MESSAGE,
    MAX_RATE_SECONDS, MAX_SCHEDULE_ID,
};

/// A worker or container name, or null (left out).
fn name() -> Value {
    json!({"type": ["string", "null"], "pattern": NAME})
}

/// An id, or null.
fn id() -> Value {
    json!({"type": ["string", "null"], "pattern": ID})
}

/// Free text, or null.
fn text() -> Value {
    json!({"type": ["string", "null"]})
}

/// An optional integer from `min` to `max`.
fn integer(min: i64, max: i64) -> Value {
    json!({"type": ["integer", "null"], "minimum": min, "maximum": max})
}

/// The alternatives of a rule between fields: the first holds when `field` is left out (or
/// null).
fn unless_absent(field: &str, otherwise: Value) -> Value {
    json!({"anyOf": [{"properties": {field: {"type": "null"}}}, otherwise]})
}

/// A command name a worker allows: letters, digits, `_ - . : /`, never a shell line.
const COMMAND: &str = "^[A-Za-z0-9_.:/-]{1,128}$";

/// The fields a task template has: a submission's, without what names or times one task.
fn template_fields() -> serde_json::Map<String, Value> {
    let Value::Object(fields) = json!({
        "task_type": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": NOT_BLANK,
            "description": "What kind of work it is (free text)"},
        "command": {"type": "string", "pattern": COMMAND,
            "description": "The name of a command a worker allows (letters, digits, _ - . : /), not a shell line; arguments go in parameters"},
        "parameters": {"type": ["object", "null"], "description": "The command's arguments"},
        "priority": integer(0, MAX_PRIORITY),
        "worker_name": name(),
        "container_name": name(),
        "max_attempts": integer(1, 100),
    }) else {
        unreachable!("an object literal")
    };
    fields
}

/// `container_name` needs `worker_name`: container names are unique only within a worker.
fn container_needs_worker() -> Value {
    unless_absent(
        "container_name",
        json!({"required": ["worker_name"], "properties": {"worker_name": {"type": "string"}}}),
    )
}

/// One submission's schema: the template's fields and those naming, timing and holding one
/// task; `timed` says whether `run_at`, `delay_ms` and `depends_on` may appear (not in a bulk
/// submission, yet).
fn submission(timed: bool) -> Value {
    let mut fields = template_fields();
    let more = json!({
        "task_id": id(),
        "idempotency_key": {"type": ["string", "null"], "minLength": 1, "maxLength": 200},
        "submitted_by": name(),
        "concurrency_key": id(),
    });
    fields.extend(
        more.as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    let mut rules = vec![
        container_needs_worker(),
        // Each makes sending the same submission again safe: one of them.
        unless_absent(
            "task_id",
            json!({"properties": {"idempotency_key": {"type": "null"}}}),
        ),
    ];
    if timed {
        let timing = json!({
            "run_at": {"type": ["string", "null"], "format": "date-time",
                "description": "When it may run first (RFC 3339 with its offset)"},
            "delay_ms": integer(0, MAX_DELAY_MS),
            "depends_on": {"type": ["array", "null"], "maxItems": MAX_DEPENDENCIES,
                "items": {"type": "string", "pattern": ID},
                "description": "Tasks that must complete first"},
            "on_dependency_failure": {"type": ["string", "null"], "enum": ["cancel", "fail", null]},
        });
        fields.extend(
            timing
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        let untimed =
            json!({"properties": {"run_at": {"type": "null"}, "delay_ms": {"type": "null"}}});
        let no_dependencies =
            json!({"properties": {"depends_on": {"type": ["array", "null"], "maxItems": 0}}});
        rules.extend([
            unless_absent("run_at", json!({"properties": {"delay_ms": {"type": "null"}}})),
            unless_absent(
                "on_dependency_failure",
                json!({"required": ["depends_on"], "properties": {"depends_on": {"type": "array", "minItems": 1}}}),
            ),
            // A task waits for its dependencies, its key, or a time: not for a time as well, yet.
            json!({"anyOf": [no_dependencies, untimed]}),
            unless_absent("concurrency_key", untimed),
        ]);
    }
    let mut all = vec![json!({
        "type": "object",
        "required": ["task_type", "command"],
        "additionalProperties": false,
        "properties": fields,
    })];
    all.extend(rules);
    json!({"allOf": all})
}

/// The submission schemas, for [`SubmitBody`].
fn submit_body() -> Value {
    json!({
        "description": "One task, or an array of 1 to 1,000 stored all or nothing (without run_at, delay_ms or depends_on: submit those one by one)",
        "anyOf": [
            submission(true),
            {"type": "array", "minItems": 1, "maxItems": 1000, "items": submission(false)},
        ]
    })
}

/// A claimer: a worker (a worker's token may leave it out: it acts as itself) and its
/// container.
fn claimer(more: Value) -> Value {
    let mut properties =
        json!({"worker_name": {"type": "string", "pattern": NAME}, "container_name": name()});
    if let (Some(properties), Value::Object(more)) = (properties.as_object_mut(), more) {
        properties.extend(more);
    }
    json!({
        "type": "object",
        "required": ["worker_name"],
        "additionalProperties": false,
        "properties": properties,
    })
}

/// The attempt a result names; without it, the claim the caller holds now.
fn attempt() -> Value {
    integer(1, i64::from(u32::MAX))
}

/// A schedule's timing: `cron` (5 fields, or 6 with seconds first, or `@daily` …) in a
/// time zone, or `every_seconds`.
///
/// The pattern is the grammar vibehq documents (numbers, lists and `*/step` in each field's
/// range; days of the month up to 28, so every expression fires); NATS, which runs the
/// schedule, judges an expression beyond it (ranges, names, the 29th-31st) and vibehq answers
/// its refusal as a 422.
pub const CRON: &str = concat!(
    "^(@(hourly|daily|weekly|monthly|yearly)|",
    "(((\\*|\\*/([1-9]|[1-5][0-9])|([1-5]?[0-9])(,([1-5]?[0-9]))*) )?",
    "(\\*|\\*/([1-9]|[1-5][0-9])|([1-5]?[0-9])(,([1-5]?[0-9]))*) ",
    "(\\*|\\*/([1-9]|1[0-9]|2[0-3])|([1-9]|1[0-9]|2[0-3]|0)(,([1-9]|1[0-9]|2[0-3]|0))*) ",
    "(\\*|([1-9]|1[0-9]|2[0-8])(,([1-9]|1[0-9]|2[0-8]))*) ",
    "(\\*|([1-9]|1[0-2])(,([1-9]|1[0-2]))*) ",
    "(\\*|[0-6](,[0-6])*)))$"
);

fn schedule_body() -> Value {
    let template = template_fields();
    json!({
        "allOf": [
            {
                "type": "object",
                "required": ["task"],
                "additionalProperties": false,
                "properties": {
                    "schedule_id": {"type": ["string", "null"], "pattern": ID, "maxLength": MAX_SCHEDULE_ID,
                        "description": "Its id (default: a new UUID)"},
                    "cron": {"type": ["string", "null"], "pattern": CRON},
                    "time_zone": {"type": ["string", "null"], "enum": time_zones(),
                        "description": "An IANA time zone (default UTC)"},
                    "every_seconds": integer(1, MAX_EVERY_SECONDS),
                    "task": {
                        "type": "object",
                        "required": ["task_type", "command"],
                        "additionalProperties": false,
                        "properties": template,
                        "description": "What each firing submits",
                    },
                    "overlap": {"type": ["string", "null"], "enum": ["skip", "allow", null],
                        "description": "skip (the default: no firing while the last run has not ended) or allow"},
                    "misfire": {"type": ["string", "null"], "enum": ["run_once", "skip", null],
                        "description": "run_once (the default: a firing missed while vibehq was down runs once when it is back) or skip"},
                    "misfire_grace_seconds": integer(1, MAX_EVERY_SECONDS),
                    "created_by": name(),
                }
            },
            {"properties": {"task": container_needs_worker()}},
            {"anyOf": [
                {"required": ["cron"], "properties": {"cron": {"type": "string"}, "every_seconds": {"type": "null"}}},
                {"required": ["every_seconds"], "properties": {
                    "every_seconds": {"type": "integer"}, "cron": {"type": "null"}, "time_zone": {"type": "null"}}},
            ]},
        ]
    })
}

/// The time zones a cron schedule may name, `null` included (left out: UTC).
fn time_zones() -> Value {
    let mut zones: Vec<Value> = vibehq_events::time_zone::TIME_ZONES
        .iter()
        .map(|z| json!(z))
        .collect();
    zones.push(Value::Null);
    Value::Array(zones)
}

body_schema! {
    /// A submission: one task, or many all or nothing.
    SubmitBody = (submit_body())

    /// A claim of the next task the claimer may take.
    ClaimBody = (claimer(json!({
        "wait_ms": integer(0, MAX_CLAIM_WAIT_MS),
        "max": integer(1, 256),
    })))

    /// A claim of one named task.
    ClaimTaskBody = (claimer(json!({})))

    /// A start or heartbeat: the claimer and its attempt.
    AttemptBody = (claimer(json!({"attempt": attempt()})))

    /// A progress report: a percent, a message, or both.
    ProgressBody = {
        "allOf": [
            claimer(json!({
                "attempt": attempt(),
                "percent": {"type": ["number", "null"], "minimum": 0, "maximum": 100},
                "message": {"type": ["string", "null"], "maxLength": MAX_PROGRESS_MESSAGE},
            })),
            {"anyOf": [
                {"required": ["percent"], "properties": {"percent": {"type": "number"}}},
                {"required": ["message"], "properties": {"message": {"type": "string"}}},
            ]},
        ]
    }

    /// A completion and its output.
    CompleteBody = (claimer(json!({"attempt": attempt(), "output": text()})))

    /// A failure: what went wrong, and whether the task may be tried again.
    FailBody = {
        "allOf": [
            claimer(json!({
                "attempt": attempt(),
                "error": {"type": "string", "minLength": 1, "maxLength": MAX_ERROR, "pattern": NOT_BLANK},
                "retry": {"type": ["boolean", "null"], "description": "Default true"},
            })),
            {"required": ["error"]},
        ]
    }

    /// A cancellation (operators only).
    CancelBody = {
        "type": "object",
        "additionalProperties": false,
        "properties": {"reason": text(), "cancelled_by": name()},
    }

    /// A retry of a dead task (operators only).
    RetryBody = {
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "new_task_id": {"type": ["string", "null"], "pattern": ID,
                "description": "The retry's id: makes sending the retry again safe"},
            "submitted_by": name(),
        },
    }

    /// A pause of a scope of work (operators only).
    PauseBody = {
        "type": "object",
        "required": ["scope"],
        "additionalProperties": false,
        "properties": {
            "scope": {"type": "string", "pattern": SCOPE},
            "reason": text(),
            "paused_by": name(),
        },
    }

    /// A resumption of a paused scope (operators only).
    ResumeBody = {
        "type": "object",
        "required": ["scope"],
        "additionalProperties": false,
        "properties": {"scope": {"type": "string", "pattern": SCOPE}, "resumed_by": name()},
    }

    /// A new schedule (operators only).
    ScheduleBody = (schedule_body())

    /// A change of a schedule (operators only): who makes it.
    ScheduleChangeBody = {
        "type": "object",
        "additionalProperties": false,
        "properties": {"changed_by": name()},
    }

    /// A key's limits (operators only): a concurrency, a rate, or both.
    KeyLimitsBody = {
        "allOf": [
            {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "concurrency": integer(1, 100_000),
                    "rate": {
                        "type": ["object", "null"],
                        "required": ["max", "per_seconds"],
                        "additionalProperties": false,
                        "properties": {
                            "max": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
                            "per_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_RATE_SECONDS as i64},
                        },
                    },
                    "changed_by": name(),
                },
            },
            {"anyOf": [
                {"required": ["concurrency"], "properties": {"concurrency": {"type": "integer"}}},
                {"required": ["rate"], "properties": {"rate": {"type": "object"}}},
            ]},
        ]
    }

    /// A worker's registration, as itself.
    RegisterBody = {
        "type": "object",
        "required": ["worker_name"],
        "additionalProperties": false,
        "properties": {
            "worker_name": {"type": "string", "pattern": NAME},
            "language": {"type": ["string", "null"], "minLength": 1, "maxLength": 32},
            "commands": {"type": ["array", "null"], "maxItems": 1000,
                "items": {"type": "string", "pattern": COMMAND}},
        },
    }
}

body_schema! {
    /// A claim's answer: the claimed task, or (given `max`) the tasks claimed, perhaps none.
    ClaimAnswer = {"oneOf": [
        {"$ref": "#/components/schemas/Claim"},
        {"type": "array", "items": {"$ref": "#/components/schemas/Claim"}},
    ]}

    /// A submission's answer: the task, or for an array the tasks in input order.
    SubmitAnswer = {"oneOf": [
        {"$ref": "#/components/schemas/Submitted"},
        {"type": "array", "items": {"$ref": "#/components/schemas/Submitted"}},
    ]}
}

/// What a pause or resume covers: `all`, or `worker:<name>`.
const SCOPE: &str = "^(all|worker:(?!_$)[A-Za-z0-9_-]{1,64})$";

#[cfg(test)]
mod tests {
    use vibehq_api::schema::round_trips;

    use super::*;

    #[test]
    fn every_body_schema_is_in_the_document_whole() {
        for schema in [
            SubmitBody::json(),
            ClaimBody::json(),
            ClaimTaskBody::json(),
            AttemptBody::json(),
            ProgressBody::json(),
            CompleteBody::json(),
            FailBody::json(),
            CancelBody::json(),
            RetryBody::json(),
            PauseBody::json(),
            ResumeBody::json(),
            ScheduleBody::json(),
            ScheduleChangeBody::json(),
            KeyLimitsBody::json(),
            RegisterBody::json(),
            ClaimAnswer::json(),
            SubmitAnswer::json(),
        ] {
            round_trips(&schema).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
