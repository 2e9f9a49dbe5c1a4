//! Tools: `callTool`, and model-driven loops that call them, streamed or not.
//!
//! A [`Registry`] holds tools with JSON Schema parameters; arguments are validated against the
//! schema before a tool runs, so a tool body sees only well-formed input and a model that sent
//! bad arguments gets the validation errors back as the tool's result. Every call is recorded
//! (`ai_tool_calls`), and every streamed model turn with its deltas as they arrived
//! (`ai_tool_call_streams`).
//!
//! The built-in tools act on this system: `submit_task` (the task queue), `get_task_status`
//! and `list_container_status` (the projection).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::{Map, Value, json};
use vibehq_api::schema::{NAME, NOT_BLANK};
use vibehq_events::ai::{ToolCallStreamed, ToolCalled};
use vibehq_events::task::lane::MAX_PRIORITY;
use vibehq_projector::{Reader, query};
use vibehq_queue::{NewTask, Queue};

use crate::gateway::{GatewayError, Operation, Request};
use crate::provider::{Conversation, Delta, Tier, ToolSpec, Turn};
use crate::{Actor, Gateway, table};

/// The most steps a loop may be given.
pub const MAX_STEPS: u32 = 20;

/// A tool a model (or a caller directly) may call.
pub trait Tool: Send + Sync + 'static {
    fn spec(&self) -> &ToolSpec;
    /// Runs the tool on arguments already validated against its schema. An `Err` is the
    /// tool's failure, given to the model as its result.
    fn call<'a>(
        &'a self,
        caller: &'a Actor,
        arguments: Value,
    ) -> BoxFuture<'a, Result<Value, Failure>>;
}

/// Why a tool that ran gave no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// What the arguments name does not exist (a task id no task has): the caller's mistake,
    /// answered 404 to a direct call.
    #[error("{0}")]
    NotFound(String),
    /// The tool could not do its work (the queue or the projection failed).
    #[error("{0}")]
    Failed(String),
}

/// Tools by name, each with its compiled parameter schema.
#[derive(Clone, Default)]
pub struct Registry {
    tools: BTreeMap<String, (Arc<dyn Tool>, Arc<jsonschema::Validator>)>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.tools.keys()).finish()
    }
}

/// A tool call that did not run, or ran and failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("unknown tool {name:?}; known tools: {known}")]
    UnknownTool { name: String, known: String },
    /// The arguments do not satisfy the tool's schema (recorded as `call_id`).
    #[error("invalid arguments for {name}: {}", .errors.join("; "))]
    InvalidArguments {
        call_id: String,
        name: String,
        errors: Vec<String>,
    },
    /// What the arguments name does not exist (recorded as `call_id`).
    #[error("{name}: {error}")]
    NotFound {
        call_id: String,
        name: String,
        error: String,
    },
    /// The tool ran and failed (recorded as `call_id`).
    #[error("{name} failed: {error}")]
    Failed {
        call_id: String,
        name: String,
        error: String,
    },
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error("cannot record the call: {0}")]
    Record(#[from] vibehq_events::log::Error),
}

/// A tool call that ran.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Called {
    pub call_id: String,
    pub tool_name: String,
    /// As the caller or the model gave them (a model's may be any JSON, or text).
    pub arguments: Value,
    /// What the tool answered (null when it failed).
    pub result: Value,
    /// Why it failed (bad arguments, or the tool's own error), as the model was told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: f64,
}

/// Where a call happened: alone, or at a step of a loop.
#[derive(Debug, Clone, Copy, Default)]
pub struct Within<'a> {
    pub run_id: Option<&'a str>,
    pub step: Option<u32>,
}

impl Registry {
    /// Adds a tool. Its parameter schema must compile.
    pub fn with(mut self, tool: impl Tool) -> Result<Self, jsonschema::ValidationError<'static>> {
        let validator = jsonschema::validator_for(&tool.spec().parameters)?;
        self.tools.insert(
            tool.spec().name.clone(),
            (Arc::new(tool), Arc::new(validator)),
        );
        Ok(self)
    }

    /// The registry of built-in tools.
    pub fn builtin(queue: Queue, reader: Reader) -> Self {
        let registry = Registry::default()
            .with(SubmitTask {
                spec: submit_task_spec(),
                queue,
            })
            .and_then(|r| {
                r.with(TaskStatus {
                    spec: task_status_spec(),
                    reader: reader.clone(),
                })
            })
            .and_then(|r| {
                r.with(ContainerStatus {
                    spec: container_status_spec(),
                    reader,
                })
            });
        match registry {
            Ok(registry) => registry,
            // The built-in schemas are literals below; a test compiles each of them.
            Err(error) => unreachable!("a built-in tool schema does not compile: {error}"),
        }
    }

    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools
            .values()
            .map(|(tool, _)| tool.spec().clone())
            .collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tools.contains_key(name)
    }

    /// The specs of `names`, or an error naming the first unknown one.
    pub fn select(&self, names: &[String]) -> Result<Vec<ToolSpec>, ToolError> {
        names
            .iter()
            .map(|name| {
                self.tools
                    .get(name)
                    .map(|(tool, _)| tool.spec().clone())
                    .ok_or_else(|| self.unknown(name))
            })
            .collect()
    }

    fn unknown(&self, name: &str) -> ToolError {
        ToolError::UnknownTool {
            name: name.to_owned(),
            known: self.tools.keys().cloned().collect::<Vec<_>>().join(", "),
        }
    }

    /// Validates `arguments`, runs the tool, and records the call.
    pub async fn call(
        &self,
        gateway: &Gateway,
        caller: &Actor,
        name: &str,
        arguments: Value,
        within: Within<'_>,
    ) -> Result<Called, ToolError> {
        let call_id = uuid::Uuid::now_v7().to_string();
        let Some((tool, validator)) = self.tools.get(name) else {
            // Recorded too: a model that calls a tool it was not given is worth seeing.
            let unknown = self.unknown(name);
            let event = ToolCalled {
                call_id,
                run_id: within.run_id.map(str::to_owned),
                step: within.step,
                tool_name: name.to_owned(),
                arguments,
                result: None,
                error: Some(unknown.to_string()),
                duration_ms: 0.0,
            };
            gateway.record(caller, event).await?;
            return Err(unknown);
        };
        let started = Instant::now();
        let problems: Vec<String> = crate::schema_errors(validator, &arguments);
        let outcome = if problems.is_empty() {
            tool.call(caller, arguments.clone()).await
        } else {
            Err(Failure::Failed(problems.join("; ")))
        };
        let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        let event = ToolCalled {
            call_id: call_id.clone(),
            run_id: within.run_id.map(str::to_owned),
            step: within.step,
            tool_name: name.to_owned(),
            arguments: arguments.clone(),
            result: outcome.as_ref().ok().cloned(),
            error: outcome.as_ref().err().map(ToString::to_string),
            duration_ms,
        };
        gateway.record(caller, event).await?;
        match outcome {
            Ok(result) => Ok(Called {
                call_id,
                tool_name: name.to_owned(),
                arguments,
                result,
                error: None,
                duration_ms,
            }),
            Err(_) if !problems.is_empty() => Err(ToolError::InvalidArguments {
                call_id,
                name: name.to_owned(),
                errors: problems,
            }),
            Err(Failure::NotFound(error)) => Err(ToolError::NotFound {
                call_id,
                name: name.to_owned(),
                error,
            }),
            Err(Failure::Failed(error)) => Err(ToolError::Failed {
                call_id,
                name: name.to_owned(),
                error,
            }),
        }
    }
}

/// A model-driven tool loop.
#[derive(Debug, Clone)]
pub struct Run<'a> {
    pub prompt: &'a str,
    pub system: Option<&'a str>,
    /// The tools the model may call (every registered tool if `None`).
    pub tools: Option<&'a [String]>,
    /// Model turns at most; a loop still calling tools at the limit stops there.
    pub max_steps: u32,
    pub tier: Tier,
    pub provider: Option<&'a str>,
}

/// What a streaming caller sees of a loop, in order.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    /// A model turn began.
    Step { step: u32 },
    /// A piece of the model's answer (text or a tool call's arguments).
    Delta { step: u32, delta: Delta },
    /// A tool ran; `result` or `error`.
    ToolResult {
        step: u32,
        call_id: String,
        tool_name: String,
        result: Option<Value>,
        error: Option<String>,
    },
}

/// How a loop ended.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Finished {
    pub run_id: String,
    /// The model's final answer.
    pub text: String,
    /// Model turns taken.
    pub steps: u32,
    /// `answered`, or `step_limit` when the model was still calling tools at the limit.
    pub stopped: String,
    pub calls: Vec<Called>,
    pub provider: String,
    pub model: String,
}

/// Runs a loop: the model answers or calls tools, whose results go back to it, until it
/// answers without calling a tool or `max_steps` turns were taken. With `on_event`, each turn
/// is streamed and recorded as a stream.
pub async fn run(
    gateway: &Gateway,
    registry: &Registry,
    caller: &Actor,
    run: Run<'_>,
    mut on_event: Option<&mut (dyn FnMut(RunEvent) + Send)>,
) -> Result<Finished, ToolError> {
    let run_id = uuid::Uuid::now_v7().to_string();
    let mut conversation = Conversation::prompt(run.prompt);
    conversation.system = run.system.map(str::to_owned);
    conversation.tools = match run.tools {
        Some(names) => registry.select(names)?,
        None => registry.specs(),
    };
    let mut calls = Vec::new();
    let max_steps = run.max_steps.clamp(1, MAX_STEPS);
    let mut last = (String::new(), String::new(), String::new());
    for step in 1..=max_steps {
        let request = Request {
            caller,
            operation: Operation::Tools,
            tier: run.tier,
            provider: run.provider,
            conversation: &conversation,
            timeout: None,
        };
        let reply = match on_event.as_deref_mut() {
            None => gateway.complete(request).await?,
            Some(sink) => {
                sink(RunEvent::Step { step });
                let started = Instant::now();
                let mut chunks = Vec::new();
                let reply = gateway
                    .stream(request, &mut |delta: Delta| {
                        chunks.push(json!(delta));
                        sink(RunEvent::Delta { step, delta });
                    })
                    .await?;
                let event = ToolCallStreamed {
                    stream_id: uuid::Uuid::now_v7().to_string(),
                    run_id: Some(run_id.clone()),
                    provider: reply.provider.clone(),
                    model: reply.model.clone(),
                    prompt: run.prompt.to_owned(),
                    text: reply.answer.text.clone(),
                    tool_calls: reply.answer.tool_calls.iter().map(|c| json!(c)).collect(),
                    chunks,
                    first_token_ms: reply.first_token_ms,
                    duration_ms: started.elapsed().as_secs_f64() * 1000.0,
                };
                gateway.record(caller, event).await?;
                reply
            }
        };
        let answer = reply.answer;
        last = (answer.text.clone(), reply.provider, reply.model);
        if answer.tool_calls.is_empty() {
            return Ok(finished(run_id, last, step, "answered", calls));
        }
        conversation.turns.push(Turn::Assistant {
            text: answer.text,
            tool_calls: answer.tool_calls.clone(),
        });
        for call in answer.tool_calls {
            let within = Within {
                run_id: Some(&run_id),
                step: Some(step),
            };
            let called_at = std::time::Instant::now();
            let outcome = registry
                .call(gateway, caller, &call.name, call.arguments.clone(), within)
                .await;
            let (call_id, result, error) = match outcome {
                Ok(called) => {
                    let result = called.result.clone();
                    let id = called.call_id.clone();
                    calls.push(called);
                    (id, Some(result), None)
                }
                // The model hears about its mistakes and may correct them on the next turn.
                Err(ToolError::UnknownTool { name, known }) => (
                    String::new(),
                    None,
                    Some(format!("unknown tool {name:?}; known tools: {known}")),
                ),
                Err(ToolError::InvalidArguments {
                    call_id, errors, ..
                }) => (
                    call_id,
                    None,
                    Some(format!("invalid arguments: {}", errors.join("; "))),
                ),
                Err(
                    ToolError::Failed { call_id, error, .. }
                    | ToolError::NotFound { call_id, error, .. },
                ) => (call_id, None, Some(error)),
                Err(other) => return Err(other),
            };
            if let Some(error) = &error
                && !call_id.is_empty()
            {
                // A recorded call that failed is one of the run's calls too.
                calls.push(Called {
                    call_id: call_id.clone(),
                    tool_name: call.name.clone(),
                    arguments: call.arguments.clone(),
                    result: Value::Null,
                    error: Some(error.clone()),
                    duration_ms: called_at.elapsed().as_secs_f64() * 1000.0,
                });
            }
            if let Some(sink) = on_event.as_deref_mut() {
                sink(RunEvent::ToolResult {
                    step,
                    call_id,
                    tool_name: call.name.clone(),
                    result: result.clone(),
                    error: error.clone(),
                });
            }
            let content = match (result, error) {
                (Some(result), _) => result.to_string(),
                (None, error) => json!({ "error": error }).to_string(),
            };
            conversation.turns.push(Turn::ToolResult { call, content });
        }
    }
    Ok(finished(run_id, last, max_steps, "step_limit", calls))
}

fn finished(
    run_id: String,
    (text, provider, model): (String, String, String),
    steps: u32,
    stopped: &str,
    calls: Vec<Called>,
) -> Finished {
    Finished {
        run_id,
        text,
        steps,
        stopped: stopped.to_owned(),
        calls,
        provider,
        model,
    }
}

/// The built-in tools' specs, as [`Registry::builtin`] registers them: the OpenAPI document
/// describes each tool's path from these.
pub fn builtin_specs() -> [ToolSpec; 3] {
    [
        submit_task_spec(),
        task_status_spec(),
        container_status_spec(),
    ]
}

struct SubmitTask {
    spec: ToolSpec,
    queue: Queue,
}

fn submit_task_spec() -> ToolSpec {
    ToolSpec {
        name: "submit_task".into(),
        description: "Submit a task to the vibehq task queue for a worker's containers to run. \
            Returns the task id."
            .into(),
        // The queue's own rules for a submission (`POST /api/tasks`), so a call the schema
        // allows is one the queue takes.
        parameters: json!({
            "type": "object",
            "properties": {
                "task_type": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": NOT_BLANK},
                "command": {
                    "type": "string", "pattern": "^[A-Za-z0-9_.:/-]{1,128}$",
                    "description": "the name of a command the workers allow, not a shell line"
                },
                "parameters": {"type": "object"},
                "priority": {"type": "integer", "minimum": 0, "maximum": MAX_PRIORITY},
                "worker_name": {"type": "string", "pattern": NAME},
                "container_name": {
                    "type": "string", "pattern": NAME,
                    "description": "needs worker_name: container names are unique only within a worker"
                }
            },
            "required": ["task_type", "command"],
            "additionalProperties": false,
            "dependentRequired": {"container_name": ["worker_name"]}
        }),
    }
}

impl Tool for SubmitTask {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn call<'a>(
        &'a self,
        caller: &'a Actor,
        arguments: Value,
    ) -> BoxFuture<'a, Result<Value, Failure>> {
        Box::pin(async move {
            let text = |field: &str| {
                arguments
                    .get(field)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            let new = NewTask {
                task_type: text("task_type").unwrap_or_default(),
                command: text("command").unwrap_or_default(),
                parameters: arguments
                    .get("parameters")
                    .and_then(Value::as_object)
                    .cloned(),
                priority: arguments
                    .get("priority")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
                worker_name: text("worker_name"),
                container_name: text("container_name"),
                max_attempts: 3,
                idempotency_key: None,
                task_id: None,
                retry_of: None,
                run_at: None,
                depends_on: Vec::new(),
                on_dependency_failure: None,
                concurrency_key: None,
            };
            let by = caller.clone();
            let submitted = self
                .queue
                .submit(&by, new)
                .await
                .map_err(|e| Failure::Failed(e.to_string()))?;
            Ok(json!({ "task_id": submitted.task_id, "created": submitted.created }))
        })
    }
}

struct TaskStatus {
    spec: ToolSpec,
    reader: Reader,
}

fn task_status_spec() -> ToolSpec {
    ToolSpec {
        name: "get_task_status".into(),
        description: "Get a queued task's status, attempts, output and error by its id.".into(),
        parameters: json!({
            "type": "object",
            "properties": {"task_id": {"type": "string", "minLength": 1}},
            "required": ["task_id"],
            "additionalProperties": false
        }),
    }
}

impl Tool for TaskStatus {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn call<'a>(&'a self, _: &'a Actor, arguments: Value) -> BoxFuture<'a, Result<Value, Failure>> {
        Box::pin(async move {
            let task_id = arguments["task_id"].as_str().unwrap_or_default().to_owned();
            let row = read_row(&self.reader, "container_tasks", task_id.clone()).await?;
            let row = row.ok_or_else(|| Failure::NotFound(format!("no task {task_id}")))?;
            let keep = [
                "task_id",
                "task_type",
                "command",
                "status",
                "priority",
                "worker_name",
                "container_name",
                "attempts",
                "max_attempts",
                "output",
                "error",
            ];
            Ok(Value::Object(
                row.into_iter()
                    .filter(|(k, _)| keep.contains(&k.as_str()))
                    .collect(),
            ))
        })
    }
}

struct ContainerStatus {
    spec: ToolSpec,
    reader: Reader,
}

fn container_status_spec() -> ToolSpec {
    ToolSpec {
        name: "list_container_status".into(),
        description: "List container instances with their state and health, optionally for one \
            worker."
            .into(),
        parameters: json!({
            "type": "object",
            "properties": {"worker_name": {"type": "string", "minLength": 1}},
            "additionalProperties": false
        }),
    }
}

impl Tool for ContainerStatus {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn call<'a>(&'a self, _: &'a Actor, arguments: Value) -> BoxFuture<'a, Result<Value, Failure>> {
        Box::pin(async move {
            let filter = query::Filter {
                worker_name: arguments
                    .get("worker_name")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                descending: true,
                limit: 100,
                ..query::Filter::default()
            };
            let page = self
                .reader
                .read(move |conn| query::list(conn, table("container_instances"), &filter))
                .await
                .map_err(|e| Failure::Failed(e.to_string()))?;
            let keep = [
                "instance_id",
                "worker_name",
                "container_name",
                "state",
                "healthy",
                "restart_count",
                "last_error",
            ];
            let instances: Vec<Map<String, Value>> = page
                .items
                .into_iter()
                .map(|row| {
                    row.into_iter()
                        .filter(|(k, _)| keep.contains(&k.as_str()))
                        .collect()
                })
                .collect();
            Ok(json!({ "instances": instances }))
        })
    }
}

async fn read_row(
    reader: &Reader,
    name: &'static str,
    key: String,
) -> Result<Option<Map<String, Value>>, Failure> {
    reader
        .read(move |conn| query::get(conn, table(name), &key))
        .await
        .map_err(|e| Failure::Failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_schema_compiles() {
        for spec in builtin_specs() {
            assert!(
                jsonschema::validator_for(&spec.parameters).is_ok(),
                "{}",
                spec.name
            );
        }
    }

    #[test]
    fn a_shell_line_is_not_a_command_name() {
        let validator = jsonschema::validator_for(&submit_task_spec().parameters).expect("schema");
        assert!(validator.is_valid(&json!({"task_type": "audit", "command": "health-audit"})));
        assert!(!validator.is_valid(&json!({"task_type": "audit", "command": "rm -rf /"})));
        assert!(!validator.is_valid(&json!({"task_type": "audit"})));
        let container = json!({"task_type": "audit", "command": "a", "container_name": "c1"});
        assert!(
            !validator.is_valid(&container),
            "a container needs its worker"
        );
    }
}
