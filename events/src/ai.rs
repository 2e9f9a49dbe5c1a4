//! Payloads of AI operations (the `ai_*` tables).
//!
//! The caller is the envelope's `worker_name`/`container_name`. Free-form structures (JSON
//! schemas, tool arguments, routing features) stay `serde_json::Value`: they are data the
//! caller chose, stored and returned as given.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::actor::Actor;
use crate::subject::Subject;

/// An agent created a task in a plan (`ai_tasks`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCreated {
    pub task_id: String,
    /// The plan (one goal turned into tasks) this task belongs to.
    pub plan_id: String,
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Whether a human must approve the task before it runs.
    #[serde(default)]
    pub requires_approval: bool,
    /// A task-queue command this task runs when approved, if any.
    #[serde(default)]
    pub command: Option<String>,
}

/// An agent task changed status (`ai_tasks.status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskUpdated {
    pub task_id: String,
    /// `pending`, `awaiting_approval`, `approved`, `rejected`, `running`, `completed`,
    /// `failed` or `cancelled`.
    pub status: String,
    #[serde(default)]
    pub result: Option<String>,
    /// The task-queue task submitted for this step, if any.
    #[serde(default)]
    pub queue_task_id: Option<String>,
}

/// A step waits for a human (`ai_tasks_hitl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequested {
    pub approval_id: String,
    pub task_id: String,
    /// What the step will do, in words a human can judge.
    pub action: String,
    #[serde(default)]
    pub details: Option<Value>,
}

/// A human decided on a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalDecided {
    pub approval_id: String,
    pub task_id: String,
    pub approved: bool,
    pub decided_by: String,
    #[serde(default)]
    pub comment: Option<String>,
}

/// One round of generate → evaluate (`ai_evaluations`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationRound {
    pub evaluation_id: String,
    /// 1-based round number.
    pub round: u32,
    pub provider: String,
    pub model: String,
    pub prompt: String,
    #[serde(default)]
    pub criteria: Option<String>,
    pub output: String,
    /// The evaluator's score in `0.0..=1.0`.
    pub score: f64,
    #[serde(default)]
    pub feedback: Option<String>,
    /// Whether the score met the threshold (the loop stops here).
    pub passed: bool,
}

/// The router chose a model (`ai_routing_decisions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingDecided {
    pub decision_id: String,
    pub prompt: String,
    /// Estimated complexity in `0.0..=1.0`.
    pub complexity: f64,
    /// The chosen tier (`small`, `medium`, `large`).
    pub tier: String,
    /// The provider and model the gateway would use for the tier; none when no provider is
    /// configured (routing reads the prompt alone).
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    /// Human-readable reasons for the choice.
    #[serde(default)]
    pub reasons: Vec<String>,
    /// The features the classifier saw.
    #[serde(default)]
    pub features: Option<Value>,
}

/// A structured-output generation finished (`ai_structured_outputs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StructuredOutput {
    pub output_id: String,
    pub provider: String,
    pub model: String,
    pub prompt: String,
    /// The JSON Schema the output had to satisfy.
    pub schema: Value,
    /// The validated output; `None` when every attempt was invalid.
    #[serde(default)]
    pub output: Option<Value>,
    pub valid: bool,
    pub attempts: u32,
    /// Validation errors of the failed attempts, oldest first.
    #[serde(default)]
    pub errors: Vec<String>,
}

/// A tool was called (`ai_tool_calls`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCalled {
    pub call_id: String,
    /// The model-driven loop this call was part of, if any.
    #[serde(default)]
    pub run_id: Option<String>,
    /// The loop step (1-based), if part of a loop.
    #[serde(default)]
    pub step: Option<u32>,
    pub tool_name: String,
    pub arguments: Value,
    #[serde(default)]
    pub result: Option<Value>,
    #[serde(default)]
    pub error: Option<String>,
    pub duration_ms: f64,
}

/// A streamed response finished (`ai_tool_call_streams`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallStreamed {
    pub stream_id: String,
    #[serde(default)]
    pub run_id: Option<String>,
    pub provider: String,
    pub model: String,
    pub prompt: String,
    /// The reassembled text of the response.
    pub text: String,
    /// The reassembled tool calls (name and arguments), in order.
    #[serde(default)]
    pub tool_calls: Vec<Value>,
    /// The deltas as they arrived, for audit and replay of the stream.
    #[serde(default)]
    pub chunks: Vec<Value>,
    #[serde(default)]
    pub first_token_ms: Option<f64>,
    pub duration_ms: f64,
}

/// The gateway tried one provider for a model call (`ai_model_calls`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCalled {
    /// This attempt.
    pub attempt_id: String,
    /// The gateway call the attempt belongs to (its attempts share it).
    pub request_id: String,
    /// 1-based position in the fallback chain.
    pub attempt: u32,
    /// What asked: `ask`, `route`, `structured`, `tools`, `evaluate` or `plan`.
    pub operation: String,
    pub provider: String,
    pub model: String,
    pub streamed: bool,
    /// `ok`, `timeout`, `rate_limited`, `server_error`, `unreachable`, `refused` or `error`
    /// (`CallError::outcome` in the AI service).
    pub outcome: String,
    #[serde(default)]
    pub status_code: Option<u16>,
    #[serde(default)]
    pub error: Option<String>,
    /// How long the provider asked us to stay away (its `retry-after`).
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
    pub latency_ms: f64,
    #[serde(default)]
    pub first_token_ms: Option<f64>,
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cached_tokens: Option<u64>,
    /// From the configured price table; `None` when the model has no price.
    #[serde(default)]
    pub cost_usd: Option<f64>,
}

macro_rules! ai_subject {
    ($($ty:ty => $variant:ident($field:ident)),+ $(,)?) => {$(
        impl $ty {
            /// The aggregate subject of this payload.
            pub fn subject(&self, _by: &Actor) -> Subject {
                Subject::$variant(self.$field.clone())
            }
        }
    )+};
}
ai_subject!(
    TaskCreated => AiTask(task_id),
    TaskUpdated => AiTask(task_id),
    ApprovalRequested => AiTask(task_id),
    ApprovalDecided => AiTask(task_id),
    EvaluationRound => Evaluation(evaluation_id),
    RoutingDecided => Routing(decision_id),
    StructuredOutput => Structured(output_id),
    ToolCalled => ToolCall(call_id),
    ToolCallStreamed => ToolStream(stream_id),
    ModelCalled => ModelCall(request_id),
);
