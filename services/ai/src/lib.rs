//! AI operations: every model call goes through one [`Gateway`], and every call and decision is
//! an event on the `VIBEHQ_AI` stream, so the `ai_*` tables are projections like the rest.
//!
//! # Layout
//! - [`provider`]: the only module that speaks rig-core: OpenAI-compatible endpoints and
//!   Anthropic, behind [`provider::Conversation`] in, [`provider::Answer`] or deltas out.
//! - [`gateway`]: [`Gateway`]: fallback across providers, timeouts, `retry-after`, an
//!   `ai.model_called` event per attempt with tokens and cost.
//! - [`route`]: `routePrompt`: cheap prompt features → a model tier (`ai_routing_decisions`).
//! - [`structured`]: `generateStructuredOutput`: answers checked against a JSON Schema and
//!   repaired with the validation errors fed back (`ai_structured_outputs`).
//! - [`tools`]: `callTool` and model-driven tool loops, streamed (`ai_tool_calls`,
//!   `ai_tool_call_streams`), with built-in tools that act on the task queue and the pool.
//! - [`evaluate`]: `evaluateModel`: generate, evaluate, improve (`ai_evaluations`).
//! - [`agent`]: goals turned into plans of tasks, with human approval (`ai_tasks`,
//!   `ai_tasks_hitl`); approved commands go to the task queue.
//! - [`figures`]: calls, tokens, cost, fallbacks and approvals for `/metrics`.
//! - [`ops`]: each operation's request parsed and answered once, for every door.
//! - [`bodies`]: the request bodies (and the OpenAI door's answers) as JSON Schema, for the
//!   OpenAPI document.
//! - [`http`] and [`rpc`]: the REST routes (SSE, `/ws/ai`) and the `AIOps` NATS micro service.
//! - [`openai`]: the OpenAI-compatible door (`/v1/chat/completions`, `/v1/models`) for
//!   unmodified SDKs.

pub mod agent;
pub mod bodies;
pub mod evaluate;
pub mod figures;
pub mod gateway;
pub mod http;
pub mod openai;
pub mod ops;
pub mod provider;
pub mod route;
pub mod rpc;
pub mod structured;
pub mod tools;

pub use gateway::{Gateway, GatewayConfig, GatewayError, Operation, Reply, Request};
pub use provider::{Conversation, Tier};

pub use vibehq_events::Actor;
use vibehq_projector::Table;

/// One of the projection's tables, by a name written in this crate (never from a request).
pub(crate) fn table(name: &str) -> &'static Table {
    Table::named(name).unwrap_or_else(|| unreachable!("the projection has no table {name}"))
}

/// What is wrong with `value` against a schema, one line per error, each prefixed by where
/// (`/` for the value itself, `/steps/1/command` deeper in): fed back to models and callers.
pub(crate) fn schema_errors(
    validator: &jsonschema::Validator,
    value: &serde_json::Value,
) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| {
            let path = e.instance_path().to_string();
            format!("{}: {e}", if path.is_empty() { "/" } else { &path })
        })
        .collect()
}
