//! The AI operations as requests: parsing and answering shared by REST, WebSocket and RPC.
//!
//! Each operation takes one JSON object, read by [`Body`] so every error names its field and
//! unknown fields are refused; the answer is JSON. The HTTP routes and the `AIOps` micro
//! service are thin doors onto [`handle`]; only streaming (SSE, WebSocket) lives in [`http`]
//! (crate::http), on top of the same parsed inputs.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use vibehq_api::auth::Identity;
use vibehq_api::body::{Body, unprocessable};
use vibehq_api::error::ApiError;

use crate::agent::{AgentError, Agents};
use crate::evaluate::{self, Evaluate, EvaluateError};
use crate::gateway::{GatewayError, Operation, Request};
use crate::provider::{Conversation, Tier};
use crate::structured::{self, StructuredError};
use crate::tools::{self, Registry, Run, ToolError, Within};
use crate::{Actor, Gateway, route};

/// Longest prompt (and criteria, goal) accepted, in characters.
pub const MAX_PROMPT: usize = 200_000;

/// Largest AI request body over HTTP and the WebSocket, in bytes (413 beyond), rather than the
/// API's 256 KiB: a prompt may be [`MAX_PROMPT`] characters, and JSON spells a character in up
/// to 12 bytes (`\ud83d\ude00`), so a whole prompt fits however it is spelt, and one too long
/// is refused as too long (422), not as too large (413).
pub const MAX_BODY: usize = 4 << 20;

/// Reads an AI request body: empty means `{}`; more than [`MAX_BODY`] bytes is 413, and
/// anything that is not JSON, or not a JSON object, is 400, all naming `body`.
pub fn read_body(bytes: &[u8]) -> Result<Body, ApiError> {
    Body::from_value(vibehq_api::body::json_within(bytes, MAX_BODY)?)
}

/// The timeouts `ask` may ask for, in milliseconds: at least a quarter second (a model call
/// rarely answers sooner, even on loopback, so a shorter timeout would only make calls fail),
/// at most ten minutes.
pub const TIMEOUT_MS: std::ops::RangeInclusive<i64> = 250..=600_000;

/// Everything the operations need. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Ai {
    pub gateway: Gateway,
    pub tools: Registry,
    pub agents: Agents,
}

impl Ai {
    /// The AI operations over `gateway`: the built-in tools over the task queue and the
    /// projection, and agent plans whose approved steps go to the queue. `vibehq up` and the
    /// tests wire it this one way.
    pub fn new(
        gateway: Gateway,
        queue: vibehq_queue::Queue,
        reader: vibehq_projector::Reader,
        projector: vibehq_projector::Handle,
    ) -> Self {
        Self {
            tools: Registry::builtin(queue.clone(), reader.clone()),
            agents: Agents {
                gateway: gateway.clone(),
                reader,
                projector,
                queue: Some(queue),
            },
            gateway,
        }
    }
}

/// The operations, by their RPC names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `ask`: one model call (`prompt`, optional `system`).
    Ask,
    /// `routePrompt`: the tier and model for a prompt.
    RoutePrompt,
    /// `generateStructuredOutput`: an answer satisfying `schema`.
    GenerateStructuredOutput,
    /// `callTool`: run `tool` with `arguments`.
    CallTool,
    /// `runTools`: a model-driven tool loop.
    RunTools,
    /// `evaluateModel`: the evaluator-optimiser loop.
    EvaluateModel,
    /// `createPlan`: a goal turned into agent tasks.
    CreatePlan,
    /// `getPlan`: a plan and its approvals.
    GetPlan,
    /// `decideApproval`: approve or reject a waiting step.
    DecideApproval,
}

impl Op {
    pub const ALL: [Op; 9] = [
        Op::Ask,
        Op::RoutePrompt,
        Op::GenerateStructuredOutput,
        Op::CallTool,
        Op::RunTools,
        Op::EvaluateModel,
        Op::CreatePlan,
        Op::GetPlan,
        Op::DecideApproval,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Ask => "ask",
            Op::RoutePrompt => "routePrompt",
            Op::GenerateStructuredOutput => "generateStructuredOutput",
            Op::CallTool => "callTool",
            Op::RunTools => "runTools",
            Op::EvaluateModel => "evaluateModel",
            Op::CreatePlan => "createPlan",
            Op::GetPlan => "getPlan",
            Op::DecideApproval => "decideApproval",
        }
    }

    /// The fields the operation's body may have (beyond `worker_name`, `container_name`).
    pub(crate) fn fields(self) -> &'static [&'static str] {
        match self {
            Op::Ask => &[
                "prompt",
                "system",
                "tier",
                "provider",
                "stream",
                "timeout_ms",
            ],
            Op::RoutePrompt => &["prompt"],
            Op::GenerateStructuredOutput => {
                &["prompt", "schema", "max_attempts", "tier", "provider"]
            }
            Op::CallTool => &["tool", "arguments"],
            Op::RunTools => &[
                "prompt",
                "system",
                "tools",
                "max_steps",
                "tier",
                "provider",
                "stream",
            ],
            Op::EvaluateModel => &[
                "prompt",
                "criteria",
                "threshold",
                "max_rounds",
                "tier",
                "provider",
            ],
            Op::CreatePlan => &["goal", "steps"],
            Op::GetPlan => &["plan_id"],
            Op::DecideApproval => &["approval_id", "approved", "comment"],
        }
    }

    /// Refuses fields the operation does not take.
    pub fn check_fields(self, body: &Body) -> Result<(), ApiError> {
        let mut allowed = vec!["worker_name", "container_name"];
        allowed.extend_from_slice(self.fields());
        body.only(&allowed)
    }
}

/// Answers a (non-streaming) operation made by `identity`: the caller (`worker_name`) must be
/// one it may act as, and only an operator decides an approval.
pub async fn handle(ai: &Ai, identity: &Identity, op: Op, body: Body) -> Result<Value, ApiError> {
    op.check_fields(&body)?;
    if matches!(op, Op::GetPlan) {
        let plan_id = required(&body, "plan_id", 128)?;
        // Reading a plan also takes any step that became possible while nothing watched it.
        return Ok(json!(ai.agents.advance(&plan_id, 0).await?));
    }
    if op == Op::DecideApproval {
        identity.require_admin("decide an approval")?;
    }
    let caller = caller(&body, identity)?;
    match op {
        Op::Ask => {
            let ask = AskInput::parse(&body, &ai.gateway)?;
            if ask.stream {
                return Err(no_stream());
            }
            let reply = ai.gateway.complete(ask.request(&caller)).await?;
            Ok(json!(reply))
        }
        Op::RoutePrompt => {
            let prompt = required(&body, "prompt", MAX_PROMPT)?;
            Ok(json!(route::route(&ai.gateway, &caller, &prompt).await?))
        }
        Op::GenerateStructuredOutput => {
            let prompt = required(&body, "prompt", MAX_PROMPT)?;
            let schema = match body.0.get("schema") {
                Some(Value::Bool(false)) => {
                    return Err(unprocessable(
                        "schema",
                        "the schema false allows no answer at all",
                    ));
                }
                Some(schema @ (Value::Object(_) | Value::Bool(_))) => schema.clone(),
                Some(_) => {
                    return Err(unprocessable(
                        "schema",
                        "schema must be a JSON Schema object",
                    ));
                }
                None => return Err(unprocessable("schema", "schema is required")),
            };
            let max_attempts = body
                .integer("max_attempts", 1..=i64::from(structured::MAX_ATTEMPTS))?
                .unwrap_or(3) as u32;
            let provider = provider(&body, &ai.gateway)?;
            let ask = structured::Ask {
                conversation: None,
                prompt: &prompt,
                schema: &schema,
                max_attempts,
                operation: Operation::Structured,
                tier: tier(&body)?,
                provider: provider.as_deref(),
            };
            Ok(json!(
                structured::generate(&ai.gateway, &caller, ask).await?
            ))
        }
        Op::CallTool => {
            let name = required(&body, "tool", 128)?;
            let arguments = match body.0.get("arguments") {
                None | Some(Value::Null) => json!({}),
                Some(args @ Value::Object(_)) => args.clone(),
                Some(_) => {
                    return Err(unprocessable(
                        "arguments",
                        "arguments must be a JSON object",
                    ));
                }
            };
            let called = ai
                .tools
                .call(&ai.gateway, &caller, &name, arguments, Within::default())
                .await?;
            Ok(json!(called))
        }
        Op::RunTools => {
            let input = RunInput::parse(&body, ai)?;
            if input.stream {
                return Err(no_stream());
            }
            let finished = tools::run(&ai.gateway, &ai.tools, &caller, input.run(), None).await?;
            Ok(json!(finished))
        }
        Op::EvaluateModel => {
            let prompt = required(&body, "prompt", MAX_PROMPT)?;
            let criteria = required(&body, "criteria", MAX_PROMPT)?;
            let provider = provider(&body, &ai.gateway)?;
            let ask = Evaluate {
                prompt: &prompt,
                criteria: &criteria,
                threshold: body.number("threshold", 0.0..=1.0)?.unwrap_or(0.8),
                max_rounds: body
                    .integer("max_rounds", 1..=i64::from(evaluate::MAX_ROUNDS))?
                    .unwrap_or(3) as u32,
                tier: tier(&body)?,
                provider: provider.as_deref(),
            };
            Ok(json!(evaluate::evaluate(&ai.gateway, &caller, ask).await?))
        }
        Op::CreatePlan => {
            let goal = required(&body, "goal", MAX_PROMPT)?;
            let steps = match body.0.get("steps") {
                None | Some(Value::Null) => None,
                Some(steps) => Some(Agents::check_steps(steps).map_err(|e| {
                    unprocessable(
                        "steps",
                        format!(
                            "steps{e} (each step: title, description, requires_approval, command)"
                        ),
                    )
                })?),
            };
            Ok(json!(ai.agents.create(&caller, &goal, steps).await?))
        }
        Op::DecideApproval => {
            let approval_id = required(&body, "approval_id", 128)?;
            let approved = body
                .boolean("approved")?
                .ok_or_else(|| unprocessable("approved", "approved (true or false) is required"))?;
            let comment = body.string("comment")?;
            Ok(json!(
                ai.agents
                    .decide(&approval_id, approved, &caller, comment)
                    .await?
            ))
        }
        Op::GetPlan => unreachable!("answered above"),
    }
}

fn no_stream() -> ApiError {
    unprocessable(
        "stream",
        "streaming is served over HTTP (Server-Sent Events) and WebSocket, not here",
    )
}

/// The parsed `ask` body.
#[derive(Debug, Clone)]
pub struct AskInput {
    pub conversation: Conversation,
    pub tier: Tier,
    pub provider: Option<String>,
    pub stream: bool,
    pub timeout: Option<Duration>,
}

impl AskInput {
    pub fn parse(body: &Body, gateway: &Gateway) -> Result<Self, ApiError> {
        let mut conversation = Conversation::prompt(required(body, "prompt", MAX_PROMPT)?);
        conversation.system = body.string("system")?;
        Ok(Self {
            conversation,
            tier: tier(body)?,
            provider: provider(body, gateway)?,
            stream: body.boolean("stream")?.unwrap_or(false),
            timeout: body
                .integer("timeout_ms", TIMEOUT_MS)?
                .map(|ms| Duration::from_millis(ms as u64)),
        })
    }

    pub fn request<'a>(&'a self, caller: &'a Actor) -> Request<'a> {
        Request {
            caller,
            operation: Operation::Ask,
            tier: self.tier,
            provider: self.provider.as_deref(),
            conversation: &self.conversation,
            timeout: self.timeout,
        }
    }
}

/// The parsed `runTools` body.
#[derive(Debug, Clone)]
pub struct RunInput {
    pub prompt: String,
    pub system: Option<String>,
    pub tools: Option<Vec<String>>,
    pub max_steps: u32,
    pub tier: Tier,
    pub provider: Option<String>,
    pub stream: bool,
}

impl RunInput {
    pub fn parse(body: &Body, ai: &Ai) -> Result<Self, ApiError> {
        let tools = match body.0.get("tools") {
            None | Some(Value::Null) => None,
            Some(Value::Array(names)) => Some(
                names
                    .iter()
                    .map(|n| {
                        let name = n.as_str().ok_or_else(|| {
                            unprocessable("tools", "tools must be a list of tool names")
                        })?;
                        if !ai.tools.contains(name) {
                            return Err(ApiError::new(
                                StatusCode::NOT_FOUND,
                                "unknown_tool",
                                format!("unknown tool {name:?}"),
                                Some("tools".into()),
                            ));
                        }
                        Ok(name.to_owned())
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(_) => return Err(unprocessable("tools", "tools must be a list of tool names")),
        };
        Ok(Self {
            prompt: required(body, "prompt", MAX_PROMPT)?,
            system: body.string("system")?,
            tools,
            max_steps: body
                .integer("max_steps", 1..=i64::from(tools::MAX_STEPS))?
                .unwrap_or(5) as u32,
            tier: tier(body)?,
            provider: provider(body, &ai.gateway)?,
            stream: body.boolean("stream")?.unwrap_or(false),
        })
    }

    pub fn run(&self) -> Run<'_> {
        Run {
            prompt: &self.prompt,
            system: self.system.as_deref(),
            tools: self.tools.as_deref(),
            max_steps: self.max_steps,
            tier: self.tier,
            provider: self.provider.as_deref(),
        }
    }
}

/// The caller: `worker_name` (required) and `container_name`.
pub fn caller(body: &Body, identity: &Identity) -> Result<Actor, ApiError> {
    let worker = identity.acting_as(body, "worker_name", None)?;
    Ok(Actor::new(worker, body.name("container_name")?))
}

fn required(body: &Body, field: &str, max: usize) -> Result<String, ApiError> {
    body.required_string(field, max)
}

fn tier(body: &Body) -> Result<Tier, ApiError> {
    match body.string("tier")? {
        None => Ok(Tier::Medium),
        Some(name) => Tier::parse(&name)
            .ok_or_else(|| unprocessable("tier", "tier must be small, medium or large")),
    }
}

fn provider(body: &Body, gateway: &Gateway) -> Result<Option<String>, ApiError> {
    let Some(name) = body.string("provider")? else {
        return Ok(None);
    };
    gateway.check_provider(&name)?;
    Ok(Some(name))
}

impl From<GatewayError> for ApiError {
    fn from(error: GatewayError) -> Self {
        let request_id = match &error {
            GatewayError::Exhausted { request_id, .. }
            | GatewayError::Failed { request_id, .. }
            | GatewayError::Interrupted { request_id, .. } => Some(request_id.clone()),
            _ => None,
        };
        let mut refusal = refuse(error);
        refusal.detail.request_id = request_id;
        refusal
    }
}

/// The status, code and words of a gateway error.
fn refuse(error: GatewayError) -> ApiError {
    let message = error.to_string();
    match error {
        GatewayError::UnknownProvider(_) => ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_provider",
            message,
            Some("provider".into()),
        ),
        GatewayError::NoProviders => {
            ApiError::new(StatusCode::CONFLICT, "not_configured", message, None)
        }
        GatewayError::Exhausted {
            rate_limited: true,
            retry_after,
            ..
        } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "rate_limited",
            match retry_after {
                Some(wait) => format!(
                    "every provider asked to wait (retry after {:.1} s): {message}",
                    wait.as_secs_f64()
                ),
                None => format!("every provider is rate limiting: {message}"),
            },
            None,
        ),
        GatewayError::Exhausted { .. }
        | GatewayError::Failed { .. }
        | GatewayError::Interrupted { .. } => {
            ApiError::new(StatusCode::BAD_GATEWAY, "provider_failed", message, None)
        }
        GatewayError::Record(_) => ApiError::unavailable(message),
    }
}

impl From<route::RouteError> for ApiError {
    fn from(error: route::RouteError) -> Self {
        match error {
            route::RouteError::Record(e) => GatewayError::Record(e).into(),
        }
    }
}

impl From<StructuredError> for ApiError {
    fn from(error: StructuredError) -> Self {
        let message = error.to_string();
        match error {
            StructuredError::InvalidSchema(_) => unprocessable("schema", message),
            StructuredError::NeverValid { output_id, .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "never_valid",
                format!("{message} (recorded as output {output_id})"),
                Some("schema".into()),
            ),
            StructuredError::Gateway(e) => e.into(),
            StructuredError::Record(e) => GatewayError::Record(e).into(),
        }
    }
}

impl From<ToolError> for ApiError {
    fn from(error: ToolError) -> Self {
        let message = error.to_string();
        match error {
            ToolError::UnknownTool { .. } => ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_tool",
                message,
                Some("tool".into()),
            ),
            ToolError::InvalidArguments { .. } => unprocessable("arguments", message),
            ToolError::NotFound { .. } => ApiError::not_found("arguments", message),
            ToolError::Failed { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "tool_failed", message, None)
            }
            ToolError::Gateway(e) => e.into(),
            ToolError::Record(e) => GatewayError::Record(e).into(),
        }
    }
}

impl From<EvaluateError> for ApiError {
    fn from(error: EvaluateError) -> Self {
        match error {
            EvaluateError::Gateway(e) => e.into(),
            EvaluateError::Record(e) => GatewayError::Record(e).into(),
        }
    }
}

impl From<AgentError> for ApiError {
    fn from(error: AgentError) -> Self {
        let message = error.to_string();
        match error {
            AgentError::UnknownPlan(_) => ApiError::not_found("plan_id", message),
            AgentError::UnknownApproval(_) => ApiError::not_found("approval_id", message),
            AgentError::AlreadyDecided { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "already_decided",
                message,
                Some("approval_id".into()),
            ),
            AgentError::Planning(StructuredError::Gateway(e)) => e.into(),
            AgentError::Planning(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "planner_failed", message, None)
            }
            AgentError::Queue(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "queue_failed", message, None)
            }
            AgentError::Lagging(_) | AgentError::Log(_) => ApiError::unavailable(message),
            AgentError::Projection(e) => e.into(),
        }
    }
}

/// Puts an id from a REST path into the body, where RPC callers give it, so both doors share
/// one parser.
pub fn with_path_id(mut body: Body, field: &str, value: String) -> Body {
    body.0.insert(field.to_owned(), Value::String(value));
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(bytes: &[u8]) -> (u16, Option<String>) {
        let error = read_body(bytes).expect_err("refused");
        (error.status.as_u16(), error.detail.field)
    }

    #[test]
    fn a_body_holds_a_whole_prompt_however_json_spells_it() {
        assert!(read_body(b"").expect("empty is {}").0.is_empty());
        assert_eq!(refusal(b"[1]"), (400, Some("body".into())));
        assert_eq!(refusal(b"{not json"), (400, Some("body".into())));
        let prompt = "\\ud83d\\ude00".repeat(MAX_PROMPT + 1);
        let body = format!(r#"{{"prompt": "{prompt}"}}"#);
        let read = read_body(body.as_bytes()).expect("read");
        let error = read
            .required_string("prompt", MAX_PROMPT)
            .expect_err("too long");
        assert_eq!(error.status.as_u16(), 422);
        assert_eq!(
            refusal(&vec![b' '; MAX_BODY + 1]),
            (413, Some("body".into()))
        );
    }
}
