//! Model providers: the one module that speaks rig-core.
//!
//! rig's API changes almost weekly (0.44 here, pinned), so everything else in this crate sees only
//! the small types below: a [`Conversation`] goes in, an [`Answer`] (or a stream of [`Delta`]s)
//! comes out, and a failure is a [`CallError`] that says whether another provider should be
//! tried. A version bump touches this file alone.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use rig_core::completion::{CompletionRequest, ToolDefinition};
use rig_core::message::ToolChoice;
use rig_core::message::{
    AssistantContent, AssistantMessage, CallId, Message, ToolName, UserContent,
};
use rig_core::operation::Completion;
use rig_core::streaming::{Item, StreamEvent};
use rig_core::{DynModel, ProviderError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a provider is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    /// Any OpenAI-compatible Chat Completions endpoint: OpenAI, Ollama (`…:11434/v1`), vLLM,
    /// Cloudflare Workers AI and AI Gateway through their OpenAI-compatible URLs.
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
}

/// The three model tiers routing chooses between.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Small,
    Medium,
    Large,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Small => "small",
            Tier::Medium => "medium",
            Tier::Large => "large",
        }
    }

    pub fn parse(name: &str) -> Option<Tier> {
        match name {
            "small" => Some(Tier::Small),
            "medium" => Some(Tier::Medium),
            "large" => Some(Tier::Large),
            _ => None,
        }
    }
}

/// One provider as configured (`[[ai.providers]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The name used in events, rows and `provider` request fields.
    pub name: String,
    pub kind: ProviderKind,
    /// The API's base URL (OpenAI-compatible ones end in `/v1`); the vendor's default if unset.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The environment variable holding the API key (never the key itself in the file).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// The model for the medium tier, and for any tier not set below.
    pub model: String,
    #[serde(default)]
    pub small_model: Option<String>,
    #[serde(default)]
    pub large_model: Option<String>,
    /// The most tokens an answer may use, unless a call says. Anthropic requires a limit, so
    /// it gets 4096 when this is unset; OpenAI-compatible servers use their own default.
    #[serde(default)]
    pub max_tokens: Option<u64>,
}

impl ProviderConfig {
    /// The model this provider uses for `tier`.
    pub fn model_for(&self, tier: Tier) -> &str {
        match tier {
            Tier::Small => self.small_model.as_deref(),
            Tier::Medium => None,
            Tier::Large => self.large_model.as_deref(),
        }
        .unwrap_or(&self.model)
    }
}

/// A tool the model may call: its name, what it does, and its parameters as JSON Schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: Value,
}

/// A tool call the model asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolCall {
    /// The provider's id for the call (answers name it).
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum Turn {
    User(String),
    Assistant {
        text: String,
        tool_calls: Vec<ToolCall>,
    },
    /// The result of a tool call, as text (JSON for structured results).
    ToolResult {
        call: ToolCall,
        content: String,
    },
}

/// Whether the model must call one of the conversation's tools (OpenAI's `tool_choice`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ToolUse {
    /// The model decides (`auto`).
    #[default]
    Auto,
    /// It must call one of them (`required`).
    Required,
    /// It must call this one.
    Named(String),
}

/// What is sent to a model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conversation {
    pub system: Option<String>,
    pub turns: Vec<Turn>,
    pub tools: Vec<ToolSpec>,
    /// Whether a tool must be called; passed to the provider with the tools.
    pub tool_use: ToolUse,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u64>,
    /// A JSON Schema the answer must satisfy, sent as the provider's own structured output
    /// where it has one (OpenAI's `response_format`, through rig's `output_schema`). The
    /// structured-output loop still validates and repairs what comes back: a provider
    /// without it, or one that strays, is held to the schema all the same.
    pub response_schema: Option<serde_json::Value>,
}

impl Conversation {
    /// A conversation of one user prompt.
    pub fn prompt(text: impl Into<String>) -> Self {
        Self {
            turns: vec![Turn::User(text.into())],
            ..Self::default()
        }
    }

    pub fn system(mut self, system: impl Into<String>) -> Self {
        self.system = Some(system.into());
        self
    }

    /// The last user prompt, for records.
    pub fn last_prompt(&self) -> &str {
        self.turns
            .iter()
            .rev()
            .find_map(|turn| match turn {
                Turn::User(text) => Some(text.as_str()),
                _ => None,
            })
            .unwrap_or("")
    }
}

/// Tokens a call used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
}

/// A model's whole answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Answer {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
}

/// One piece of a streamed answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Delta {
    /// More answer text.
    Text { text: String },
    /// The model started calling a tool.
    ToolCallStart { index: usize, name: String },
    /// More of a tool call's argument JSON.
    ToolCallArguments { index: usize, json: String },
    /// The provider streaming this answer failed and `provider` starts over: discard the
    /// deltas so far (only with `fallback_after_first_token`).
    Restart { provider: String },
}

/// Why a provider call failed, and so whether the next provider should be tried.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// No answer within the call's timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// 429: the provider asked us to slow down (for `retry_after`, if it said).
    #[error("rate limited (429){}", .retry_after.map(|d| format!(", retry after {d:?}")).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    /// 5xx: the provider failed.
    #[error("server error ({status}): {message}")]
    Server { status: u16, message: String },
    /// The provider could not be reached (connection refused, reset, DNS).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// 401, 402, 403 or 404: this provider will not serve the call (an expired key, no
    /// credit, a model it does not have), though another may.
    #[error("refused (HTTP {status}): {message}")]
    Refused { status: u16, message: String },
    /// Anything else (a 400 or 422, an answer that does not parse or reports a failure):
    /// another provider would fail the same way.
    #[error("{}{message}", .status.map(|s| format!("HTTP {s}: ")).unwrap_or_default())]
    Other {
        status: Option<u16>,
        message: String,
    },
}

impl CallError {
    /// Whether the gateway should try the next provider.
    pub fn falls_back(&self) -> bool {
        !matches!(self, CallError::Other { .. })
    }

    /// The outcome recorded for this failure.
    pub fn outcome(&self) -> &'static str {
        match self {
            CallError::Timeout(_) => "timeout",
            CallError::RateLimited { .. } => "rate_limited",
            CallError::Server { .. } => "server_error",
            CallError::Unreachable(_) => "unreachable",
            CallError::Refused { .. } => "refused",
            CallError::Other { .. } => "error",
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::RateLimited { .. } => Some(429),
            CallError::Server { status, .. } | CallError::Refused { status, .. } => Some(*status),
            CallError::Other { status, .. } => *status,
            CallError::Timeout(_) | CallError::Unreachable(_) => None,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    fn from_rig(error: ProviderError) -> Self {
        let status = error.provider_response_status().map(|s| s.as_u16());
        let message = error
            .provider_response_body()
            .filter(|body| !body.trim().is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| error.to_string());
        match status {
            Some(429) => CallError::RateLimited {
                retry_after: error
                    .provider_response_headers()
                    .and_then(|h| h.get("retry-after"))
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after),
            },
            Some(status @ 500..=599) => CallError::Server { status, message },
            Some(408) => CallError::Timeout(Duration::ZERO),
            Some(status @ 401..=404) => CallError::Refused { status, message },
            Some(status) => CallError::Other {
                status: Some(status),
                message,
            },
            // A dropped connection, before or during the answer.
            None if matches!(error, ProviderError::Http(_) | ProviderError::Truncated) => {
                CallError::Unreachable(message)
            }
            None => CallError::Other {
                status: None,
                message,
            },
        }
    }
}

/// The longest `retry-after` honoured: a provider asking for more is tried again after this.
const MAX_RETRY_AFTER: f64 = 3600.0;

/// `retry-after` in seconds (the HTTP-date form is rare for model APIs and is ignored).
fn parse_retry_after(value: &str) -> Option<Duration> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(MAX_RETRY_AFTER)))
}

/// A stream of deltas, ending with the whole answer.
pub type DeltaStream = Pin<Box<dyn Stream<Item = Result<Streamed, CallError>> + Send>>;

/// An item of a [`DeltaStream`].
#[derive(Debug, Clone, PartialEq)]
pub enum Streamed {
    Delta(Delta),
    /// The last item: everything the deltas added up to, with usage.
    Done(Answer),
}

/// A configured provider, ready to call.
#[derive(Debug, Clone)]
pub struct Provider {
    pub config: ProviderConfig,
    client: Client,
}

#[derive(Debug, Clone)]
enum Client {
    // Boxed: rig's clients are hundreds of bytes, and a provider is cloned with its gateway.
    Openai(Box<rig_core::providers::openai::OpenAI>),
    Anthropic(Box<rig_core::providers::anthropic::Anthropic>),
}

/// A provider could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("provider {provider}: the environment variable {variable} (api_key_env) is not set")]
    MissingKey { provider: String, variable: String },
}

impl Provider {
    /// Builds the client for `config` (reading its key from the environment now, so a missing
    /// key is a start-up error rather than a failed call).
    pub fn new(config: ProviderConfig) -> Result<Self, SetupError> {
        let key = match &config.api_key_env {
            Some(variable) => std::env::var(variable).map_err(|_| SetupError::MissingKey {
                provider: config.name.clone(),
                variable: variable.clone(),
            })?,
            // Local servers (Ollama, vLLM, the test fake) take any key.
            None => "unused".to_owned(),
        };
        let client = match config.kind {
            ProviderKind::Openai => {
                let mut c = rig_core::providers::openai::OpenAIConfig::new(key);
                if let Some(url) = &config.base_url {
                    c = c.with_base_url(url.trim_end_matches('/'));
                }
                Client::Openai(Box::new(c.client()))
            }
            ProviderKind::Anthropic => {
                let mut c = rig_core::providers::anthropic::AnthropicConfig::new(key);
                if let Some(url) = &config.base_url {
                    c = c.with_base_url(url.trim_end_matches('/'));
                }
                Client::Anthropic(Box::new(c.client()))
            }
        };
        Ok(Self { config, client })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    fn model(&self, model: &str) -> DynModel<Completion> {
        match &self.client {
            // The Chat Completions route: what every OpenAI-compatible server speaks.
            Client::Openai(c) => c.chat(model).erase(),
            Client::Anthropic(c) => c.completion(model).erase(),
        }
    }

    /// The answer-length limit a call gets when it names none.
    fn max_tokens(&self) -> Option<u64> {
        match self.config.kind {
            ProviderKind::Anthropic => Some(self.config.max_tokens.unwrap_or(4096)),
            ProviderKind::Openai => self.config.max_tokens,
        }
    }

    /// Asks `model` and waits for the whole answer.
    pub async fn complete(
        &self,
        model: &str,
        conversation: &Conversation,
    ) -> Result<Answer, CallError> {
        let request = request(conversation, self.max_tokens())?;
        let response = self
            .model(model)
            .call(request)
            .await
            .map_err(CallError::from_rig)?;
        if let Some(error) = response.error {
            return Err(CallError::Other {
                status: None,
                message: error,
            });
        }
        Ok(answer(&response.choice, &response.usage))
    }

    /// Asks `model` for a streamed answer. Nothing is sent until the stream is first polled.
    pub fn stream(
        &self,
        model: &str,
        conversation: &Conversation,
    ) -> Result<DeltaStream, CallError> {
        let request = request(conversation, self.max_tokens())?;
        let streamed = self
            .model(model)
            .stream(request)
            .map_err(CallError::from_rig)?;
        let stream = futures::stream::unfold(Some(streamed), |state| async move {
            let mut streamed = state?;
            loop {
                match streamed.next().await {
                    Some(Ok(Item::Event(event))) => {
                        if let Some(delta) = delta(event) {
                            return Some((Ok(Streamed::Delta(delta)), Some(streamed)));
                        }
                    }
                    Some(Ok(Item::Unknown(_))) => {}
                    Some(Err(error)) => return Some((Err(CallError::from_rig(error)), None)),
                    None => {
                        let response = streamed.partial();
                        if let Some(error) = response.error {
                            let error = CallError::Other {
                                status: None,
                                message: error,
                            };
                            return Some((Err(error), None));
                        }
                        return Some((
                            Ok(Streamed::Done(answer(&response.choice, &response.usage))),
                            None,
                        ));
                    }
                }
            }
        });
        Ok(Box::pin(stream))
    }
}

fn delta(event: StreamEvent) -> Option<Delta> {
    match event {
        StreamEvent::Text { text, .. } => Some(Delta::Text { text }),
        StreamEvent::Start {
            part,
            name: Some(name),
            ..
        } => Some(Delta::ToolCallStart {
            index: part.index(),
            name: name.as_str().to_owned(),
        }),
        StreamEvent::Arguments { part, json } => Some(Delta::ToolCallArguments {
            index: part.index(),
            json,
        }),
        _ => None,
    }
}

fn answer(choice: &[AssistantContent], usage: &rig_core::completion::Usage) -> Answer {
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for content in choice {
        match content {
            AssistantContent::Text(t) => text.push_str(&t.text),
            AssistantContent::ToolCall(call) => tool_calls.push(ToolCall {
                id: call.id.wire().into_owned(),
                name: call.function.name.as_str().to_owned(),
                arguments: call.function.arguments_value(),
            }),
            _ => {}
        }
    }
    Answer {
        text,
        tool_calls,
        usage: Usage {
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cached_tokens: usage.cached_input_tokens,
        },
    }
}

fn tool_name(name: &str) -> Result<ToolName, CallError> {
    ToolName::new(name).map_err(|_| CallError::Other {
        status: None,
        message: "a tool name is empty".into(),
    })
}

fn request(
    conversation: &Conversation,
    default_max_tokens: Option<u64>,
) -> Result<CompletionRequest, CallError> {
    let mut messages = Vec::with_capacity(conversation.turns.len() + 1);
    if let Some(system) = &conversation.system {
        messages.push(Message::system(system));
    }
    for turn in &conversation.turns {
        let message = match turn {
            Turn::User(text) => Message::user(text),
            Turn::Assistant { text, tool_calls } => {
                let mut content = Vec::new();
                if !text.is_empty() {
                    content.push(AssistantContent::text(text));
                }
                for call in tool_calls {
                    content.push(AssistantContent::tool_call(
                        &call.id,
                        tool_name(&call.name)?,
                        call.arguments.clone(),
                    ));
                }
                Message::Assistant(AssistantMessage::new(content))
            }
            Turn::ToolResult { call, content } => {
                let result = UserContent::tool_result(
                    CallId::from_wire(&call.id),
                    tool_name(&call.name)?,
                    vec![rig_core::message::ToolResultContent::text(content)],
                );
                // The results of one turn's calls travel in one message: Anthropic refuses
                // a tool call whose result is not in the message right after it.
                if let Some(Message::User { content }) = messages.last_mut()
                    && content
                        .iter()
                        .all(|c| matches!(c, UserContent::ToolResult(_)))
                {
                    content.push(result);
                    continue;
                }
                Message::User {
                    content: vec![result],
                }
            }
        };
        messages.push(message);
    }
    let Some(last) = messages.pop() else {
        return Err(CallError::Other {
            status: None,
            message: "a conversation needs at least one turn".into(),
        });
    };
    // `messages` goes before the prompt, which stays last.
    let request = CompletionRequest::new(last).messages(messages);
    let tools = conversation
        .tools
        .iter()
        .map(|tool| {
            Ok(ToolDefinition {
                name: tool_name(&tool.name)?,
                description: tool.description.clone(),
                parameters: tool.parameters.clone(),
            })
        })
        .collect::<Result<Vec<_>, CallError>>()?;
    let output_schema = conversation
        .response_schema
        .clone()
        .and_then(|schema| rig_core::schemars::Schema::try_from(schema).ok());
    let request = match &conversation.tool_use {
        _ if tools.is_empty() => request,
        ToolUse::Auto => request,
        ToolUse::Required => request.tool_choice(ToolChoice::Required),
        ToolUse::Named(name) => request.tool_choice(ToolChoice::Specific {
            function_names: vec![tool_name(name)?],
        }),
    };
    Ok(request
        .tools(tools)
        .temperature(conversation.temperature)
        .max_tokens(conversation.max_tokens.or(default_max_tokens))
        .output_schema(output_schema))
}

/// Prices per million tokens, by model (`[ai.prices."<model>"]`).
pub type PriceTable = BTreeMap<String, Price>;

/// What a model costs, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Cached input tokens (often a tenth of `input`); `input` if unset.
    #[serde(default)]
    pub cached_input: Option<f64>,
}

impl Price {
    /// The cost of `usage`, in dollars; `None` when the provider reported no tokens.
    pub fn cost(&self, usage: &Usage) -> Option<f64> {
        let input = usage.input_tokens? as f64;
        let cached = usage.cached_tokens.unwrap_or(0) as f64;
        let output = usage.output_tokens.unwrap_or(0) as f64;
        let cached_price = self.cached_input.unwrap_or(self.input);
        Some(((input - cached) * self.input + cached * cached_price + output * self.output) / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_tokens_are_priced_at_the_cached_rate() {
        let price = Price {
            input: 2.0,
            output: 8.0,
            cached_input: Some(0.5),
        };
        let usage = Usage {
            input_tokens: Some(1_000_000),
            output_tokens: Some(500_000),
            cached_tokens: Some(400_000),
        };
        // 600k × $2 + 400k × $0.5 + 500k × $8 = 1.2 + 0.2 + 4.0
        assert_eq!(price.cost(&usage), Some(5.4));
        assert_eq!(price.cost(&Usage::default()), None);
    }

    #[test]
    fn a_call_falls_back_unless_every_provider_would_refuse_it_the_same_way() {
        assert!(CallError::Timeout(Duration::from_secs(1)).falls_back());
        assert!(CallError::RateLimited { retry_after: None }.falls_back());
        assert!(
            CallError::Server {
                status: 503,
                message: String::new()
            }
            .falls_back()
        );
        assert!(CallError::Unreachable("refused".into()).falls_back());
        assert!(
            CallError::Refused {
                status: 401,
                message: "expired key".into()
            }
            .falls_back()
        );
        assert!(
            !CallError::Other {
                status: Some(400),
                message: "bad request".into()
            }
            .falls_back()
        );
    }

    #[test]
    fn the_results_of_one_turns_tool_calls_travel_in_one_message() {
        let call = |id: &str| ToolCall {
            id: id.into(),
            name: "get_task_status".into(),
            arguments: serde_json::json!({}),
        };
        let conversation = Conversation {
            turns: vec![
                Turn::User("status?".into()),
                Turn::Assistant {
                    text: String::new(),
                    tool_calls: vec![call("a"), call("b")],
                },
                Turn::ToolResult {
                    call: call("a"),
                    content: "1".into(),
                },
                Turn::ToolResult {
                    call: call("b"),
                    content: "2".into(),
                },
            ],
            ..Conversation::default()
        };
        let request = request(&conversation, None).expect("a request");
        assert_eq!(request.chat_history.len(), 3);
        assert!(matches!(
            request.chat_history.last(),
            Some(Message::User { content }) if content.len() == 2
        ));
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("1e20"), Some(Duration::from_secs(3600)));
    }
}
