//! The OpenAI-compatible door: `POST /v1/chat/completions` and `GET /v1/models`, so an
//! unmodified OpenAI SDK (or the AI SDK's OpenAI-compatible provider, LangChain, …) uses the
//! gateway by changing its base URL to `http://<vibehq>/v1`.
//!
//! A chat is translated once into a [`Conversation`] and sent through the [`Gateway`] like
//! every other call (fallback, cool-downs, cost, one `ai.model_called` per attempt), recorded
//! as operation `chat` with the caller's identity: the `x-vibehq-worker-name` and
//! `x-vibehq-container-name` headers, else the chat's `user`, else the token's one worker,
//! else `openai`. A worker's token may act only as itself.
//!
//! `model` is a configured model (`gpt-4o-mini`, or `<provider>/<model>`), or an alias:
//! `vibehq/small`, `vibehq/medium`, `vibehq/large`, or `vibehq/auto` (routed by the prompt's
//! complexity, the decision recorded as `routePrompt` records it). `response_format` with a
//! JSON schema is answered through [`crate::structured`] (validated, repaired, recorded);
//! `stop` sequences cut the answer where they first occur. Errors use OpenAI's shape,
//! `{"error": {"message", "type", "param", "code"}}`, with vibehq's status and code.

use std::convert::Infallible;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use vibehq_api::auth::Identity;
use vibehq_api::body::Body;
use vibehq_api::error::ApiError;

use crate::bodies::{ChatBody, ChatCompletion, ChatEvent, ModelList, OpenAiErrorBody};
use crate::gateway::{Operation, Reply, Request};
use crate::provider::{Answer, Conversation, Delta, Tier, ToolCall, ToolSpec, ToolUse, Turn};
use crate::structured;
use crate::{Actor, Gateway};

/// The aliases `GET /v1/models` lists before the configured models.
pub const ALIASES: [&str; 4] = [
    "vibehq/auto",
    "vibehq/small",
    "vibehq/medium",
    "vibehq/large",
];

/// Longest a chat's messages may be in all, in bytes.
const MAX_CHAT: usize = 1 << 20;

/// The OpenAI-compatible routes: the gateway is all they need.
pub fn router(gateway: Gateway) -> axum::Router {
    axum::Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        // Bodies up to twice the limit reach `read_body`, which answers the JSON 413.
        .layer(DefaultBodyLimit::max(2 * crate::ops::MAX_BODY))
        .with_state(gateway)
}

/// An error in OpenAI's shape: the same status and words as every other vibehq refusal.
#[derive(Debug)]
pub struct OpenAiError(pub ApiError);

impl From<ApiError> for OpenAiError {
    fn from(error: ApiError) -> Self {
        Self(error)
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let ApiError { status, detail } = self.0;
        let kind = match status.as_u16() {
            400 | 404 | 409 | 413 | 422 => "invalid_request_error",
            401 | 403 => "authentication_error",
            429 => "rate_limit_error",
            _ => "api_error",
        };
        let body = json!({"error": {
            "message": detail.message,
            "type": kind,
            "param": detail.field,
            "code": detail.code,
        }});
        (status, Json(body)).into_response()
    }
}

fn invalid(param: &str, message: impl Into<String>) -> OpenAiError {
    OpenAiError(ApiError::invalid(param, message))
}

fn unprocessable(param: &str, message: impl Into<String>) -> OpenAiError {
    OpenAiError(vibehq_api::body::unprocessable(param, message))
}

/// The OpenAI-compatible routes' part of the OpenAPI document (their bodies are OpenAI's).
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(models, chat),
    components(schemas(ChatBody, ChatCompletion, ChatEvent, ModelList, OpenAiErrorBody))
)]
pub struct OpenAiDoc;

/// The configured models and the aliases, as OpenAI lists models.
#[utoipa::path(get, path = "/v1/models", tag = "openai",
    responses((status = 200, description = "OpenAI's model list: the aliases vibehq/auto, vibehq/small, vibehq/medium, vibehq/large, then each provider's models as <provider>/<model>", body = ModelList)))]
async fn models(State(gateway): State<Gateway>) -> Json<Value> {
    let mut data: Vec<Value> = ALIASES
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "vibehq"}))
        .collect();
    for provider in gateway.providers() {
        let mut seen = Vec::new();
        for tier in [Tier::Small, Tier::Medium, Tier::Large] {
            let model = provider.model_for(tier);
            if seen.contains(&model) {
                continue;
            }
            seen.push(model);
            data.push(json!({
                "id": format!("{}/{model}", provider.name),
                "object": "model",
                "created": 0,
                "owned_by": provider.name,
            }));
        }
    }
    Json(json!({"object": "list", "data": data}))
}

/// A chat request, read.
#[derive(Debug)]
struct Chat {
    conversation: Conversation,
    /// What `model` asked for, answered back when it was an alias.
    model: String,
    route: Model,
    stream: bool,
    include_usage: bool,
    stop: Vec<String>,
    /// `response_format`: a JSON Schema the answer must satisfy (`json_object`: any object).
    schema: Option<Value>,
}

/// Where `model` sends the chat.
#[derive(Debug, Clone, PartialEq)]
enum Model {
    /// `vibehq/auto`: the tier the prompt's complexity calls for.
    Auto,
    /// A tier, first at `provider` when the model named one.
    Tier {
        tier: Tier,
        provider: Option<String>,
    },
}

impl Model {
    fn resolve(name: &str, gateway: &Gateway) -> Result<Self, OpenAiError> {
        if name == "vibehq/auto" {
            return Ok(Model::Auto);
        }
        if let Some(tier) = name.strip_prefix("vibehq/").and_then(Tier::parse) {
            return Ok(Model::Tier {
                tier,
                provider: None,
            });
        }
        for provider in gateway.providers() {
            for tier in [Tier::Medium, Tier::Small, Tier::Large] {
                let model = provider.model_for(tier);
                if name == model || name == format!("{}/{model}", provider.name) {
                    return Ok(Model::Tier {
                        tier,
                        provider: Some(provider.name.clone()),
                    });
                }
            }
        }
        Err(OpenAiError(ApiError::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!(
                "no configured model is {name:?}: use one GET /v1/models lists, or vibehq/auto, vibehq/small, vibehq/medium, vibehq/large"
            ),
            Some("model".into()),
        )))
    }
}

impl Chat {
    fn parse(body: &Body, gateway: &Gateway) -> Result<Self, OpenAiError> {
        let model = body
            .string("model")?
            .ok_or_else(|| invalid("model", "model is required"))?;
        let route = Model::resolve(&model, gateway)?;
        let mut conversation = messages(body.0.get("messages"))?;
        conversation.temperature =
            match body.0.get("temperature") {
                None | Some(Value::Null) => None,
                Some(t) => Some(t.as_f64().filter(|t| (0.0..=2.0).contains(t)).ok_or_else(
                    || invalid("temperature", "temperature is a number from 0 to 2"),
                )?),
            };
        let max_completion_tokens = body.integer("max_completion_tokens", 1..=1_000_000)?;
        let max_tokens = body.integer("max_tokens", 1..=1_000_000)?;
        conversation.max_tokens = max_completion_tokens.or(max_tokens).map(|n| n as u64);
        conversation.tools = tools(body.0.get("tools"))?;
        conversation.tool_use = match body.0.get("tool_choice") {
            None | Some(Value::Null) => ToolUse::Auto,
            Some(Value::String(choice)) if choice == "auto" => ToolUse::Auto,
            Some(Value::String(choice)) if choice == "none" => {
                conversation.tools.clear();
                ToolUse::Auto
            }
            Some(Value::String(choice)) if choice == "required" => ToolUse::Required,
            Some(choice @ Value::Object(_)) => {
                let name = choice
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .filter(|_| choice.get("type").and_then(Value::as_str) == Some("function"))
                    .ok_or_else(|| {
                        invalid(
                            "tool_choice",
                            "tool_choice names a tool as {\"type\": \"function\", \"function\": {\"name\": …}}",
                        )
                    })?;
                if !conversation.tools.iter().any(|t| t.name == name) {
                    return Err(OpenAiError(ApiError::new(
                        StatusCode::NOT_FOUND,
                        "tool_not_found",
                        format!(
                            "tool_choice names {name:?}, which is not among the request's tools"
                        ),
                        Some("tool_choice.function.name".into()),
                    )));
                }
                ToolUse::Named(name.to_owned())
            }
            Some(_) => {
                return Err(invalid(
                    "tool_choice",
                    "tool_choice is auto, none, required, or a function to call",
                ));
            }
        };
        if conversation.tool_use != ToolUse::Auto && conversation.tools.is_empty() {
            return Err(invalid(
                "tool_choice",
                "tool_choice asks for a tool call, but the request has no tools",
            ));
        }
        let stop = match body.0.get("stop") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
            Some(Value::Array(items)) if items.len() <= 4 => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .ok_or_else(|| invalid("stop", "stop is a string or up to 4 strings"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(invalid("stop", "stop is a string or up to 4 strings")),
        };
        let schema = match body.0.get("response_format") {
            None | Some(Value::Null) => None,
            Some(format) => match format.get("type").and_then(Value::as_str) {
                Some("text") => None,
                Some("json_object") => Some(json!({"type": "object"})),
                Some("json_schema") => {
                    let field = "response_format.json_schema.schema";
                    let schema =
                        format
                            .pointer("/json_schema/schema")
                            .cloned()
                            .ok_or_else(|| {
                                invalid(
                                    field,
                                    "a json_schema response_format needs json_schema.schema",
                                )
                            })?;
                    check_schema(&schema, field)?;
                    Some(schema)
                }
                _ => {
                    return Err(invalid(
                        "response_format.type",
                        "response_format.type is text, json_object or json_schema",
                    ));
                }
            },
        };
        if schema.is_some() && !conversation.tools.is_empty() {
            return Err(invalid(
                "response_format",
                "a chat asks for tools or for a JSON answer, not both yet",
            ));
        }
        let stream = body.boolean("stream")?.unwrap_or(false);
        let include_usage = match body.0.get("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(options)) => Body(options.clone())
                .boolean("include_usage")
                .map_err(|_| {
                    invalid(
                        "stream_options.include_usage",
                        "include_usage is true or false",
                    )
                })?
                .unwrap_or(false),
            Some(_) => return Err(invalid("stream_options", "stream_options is an object")),
        };
        Ok(Self {
            conversation,
            model,
            route,
            stream,
            include_usage,
            stop,
            schema,
        })
    }

    /// The tier and provider to ask, routing `vibehq/auto` (and recording the decision).
    async fn target(
        &self,
        gateway: &Gateway,
        caller: &Actor,
    ) -> Result<(Tier, Option<String>), OpenAiError> {
        match &self.route {
            Model::Tier { tier, provider } => Ok((*tier, provider.clone())),
            Model::Auto => {
                let prompt = self.conversation.last_prompt();
                let decision = crate::route::route(gateway, caller, prompt)
                    .await
                    .map_err(|e| OpenAiError(ApiError::from(e)))?;
                Ok((decision.tier, decision.provider))
            }
        }
    }
}

/// OpenAI's `messages` as a conversation: system (and developer) messages become its
/// system prompt; user, assistant (with `tool_calls`) and tool messages its turns.
fn messages(given: Option<&Value>) -> Result<Conversation, OpenAiError> {
    let Some(Value::Array(items)) = given else {
        return Err(invalid("messages", "messages is a non-empty array"));
    };
    if items.is_empty() {
        return Err(invalid("messages", "messages is a non-empty array"));
    }
    if items.iter().map(|m| m.to_string().len()).sum::<usize>() > MAX_CHAT {
        return Err(invalid("messages", "the messages are larger than 1 MiB"));
    }
    let mut conversation = Conversation::default();
    let mut system = Vec::new();
    for (i, message) in items.iter().enumerate() {
        let at = |field: &str| format!("messages[{i}].{field}");
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let content = text(message.get("content"), &at("content"))?;
        match role {
            "system" | "developer" | "user" if is_blank(&content) => {
                return Err(invalid(
                    &at("content"),
                    format!("a {role} message has some text (not blank: providers drop it)"),
                ));
            }
            "system" | "developer" => system.push(content),
            "user" => conversation.turns.push(Turn::User(content)),
            "assistant" => {
                let mut tool_calls = Vec::new();
                let calls = match message.get("tool_calls") {
                    None | Some(Value::Null) => &[][..],
                    Some(Value::Array(calls)) => calls.as_slice(),
                    Some(_) => {
                        return Err(invalid(&at("tool_calls"), "tool_calls is an array"));
                    }
                };
                for (j, call) in calls.iter().enumerate() {
                    let field = at(&format!("tool_calls[{j}]"));
                    let id = call
                        .get("id")
                        .and_then(Value::as_str)
                        .filter(|id| !id.is_empty());
                    let name = call
                        .pointer("/function/name")
                        .and_then(Value::as_str)
                        .filter(|name| is_function_name(name));
                    let (Some(id), Some(name)) = (id, name) else {
                        return Err(invalid(
                            &field,
                            "a tool call has an id and a function.name of 1-64 letters, digits, _ or -",
                        ));
                    };
                    let arguments = match call.pointer("/function/arguments") {
                        None | Some(Value::Null) => "{}",
                        Some(Value::String(arguments)) => arguments.as_str(),
                        Some(_) => {
                            return Err(invalid(
                                &format!("{field}.function.arguments"),
                                "a tool call's arguments are JSON text",
                            ));
                        }
                    };
                    let arguments = serde_json::from_str(arguments)
                        .unwrap_or_else(|_| Value::String(arguments.to_owned()));
                    tool_calls.push(ToolCall {
                        id: id.to_owned(),
                        name: name.to_owned(),
                        arguments,
                    });
                }
                if is_blank(&content) && tool_calls.is_empty() {
                    return Err(invalid(
                        &at("content"),
                        "an assistant message has some text (not blank) or tool_calls",
                    ));
                }
                conversation.turns.push(Turn::Assistant {
                    text: content,
                    tool_calls,
                });
            }
            "tool" => {
                let id = message
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .filter(|id| !id.is_empty())
                    .ok_or_else(|| {
                        invalid(&at("tool_call_id"), "a tool message names its tool_call_id")
                    })?;
                let call = conversation
                    .turns
                    .iter()
                    .rev()
                    .find_map(|turn| match turn {
                        Turn::Assistant { tool_calls, .. } => {
                            tool_calls.iter().find(|c| c.id == id).cloned()
                        }
                        _ => None,
                    })
                    .ok_or_else(|| {
                        OpenAiError(ApiError::new(
                            StatusCode::NOT_FOUND,
                            "tool_call_not_found",
                            format!("no assistant message before it called a tool {id:?}"),
                            Some(at("tool_call_id")),
                        ))
                    })?;
                conversation.turns.push(Turn::ToolResult { call, content });
            }
            other => {
                return Err(invalid(
                    &at("role"),
                    format!("role is system, developer, user, assistant or tool, not {other:?}"),
                ));
            }
        }
    }
    conversation.system = (!system.is_empty()).then(|| system.join("\n\n"));
    Ok(conversation)
}

/// Whether `text` has nothing but white space and control characters, which providers drop
/// (as [`vibehq_api::schema::NOT_BLANK`] says in the document).
fn is_blank(text: &str) -> bool {
    text.chars().all(|c| c.is_whitespace() || c.is_control())
}

/// A message's content: a string, or text parts (each with some text).
fn text(content: Option<&Value>, field: &str) -> Result<String, OpenAiError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text") => match part.get("text") {
                    Some(Value::String(text)) if !is_blank(text) => Ok(text.clone()),
                    _ => Err(invalid(field, "a text part has some text (not blank)")),
                },
                _ => Err(invalid(field, "only text parts are passed to models here")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|parts| parts.concat()),
        Some(_) => Err(invalid(
            field,
            "content is a string or an array of text parts",
        )),
    }
}

/// OpenAI's `tools` (functions with JSON Schemas) as the gateway's.
fn tools(given: Option<&Value>) -> Result<Vec<ToolSpec>, OpenAiError> {
    let items = match given {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) if items.len() <= 128 => items,
        Some(_) => return Err(invalid("tools", "tools is an array of up to 128 functions")),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            let field = format!("tools[{i}]");
            if tool.get("type").and_then(Value::as_str) != Some("function") {
                return Err(invalid(
                    &format!("{field}.type"),
                    "a tool's type is function",
                ));
            }
            let name = tool
                .pointer("/function/name")
                .and_then(Value::as_str)
                .filter(|n| is_function_name(n))
                .ok_or_else(|| {
                    invalid(
                        &format!("{field}.function.name"),
                        "a function's name is 1-64 letters, digits, _ or -",
                    )
                })?;
            let parameters = match tool.pointer("/function/parameters") {
                None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
                Some(parameters) => parameters.clone(),
            };
            check_schema(&parameters, &format!("{field}.function.parameters"))?;
            let description = match tool.pointer("/function/description") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(text)) => text.clone(),
                Some(_) => {
                    return Err(invalid(
                        &format!("{field}.function.description"),
                        "a function's description is a string",
                    ));
                }
            };
            Ok(ToolSpec {
                name: name.to_owned(),
                description,
                parameters,
            })
        })
        .collect()
}

/// Whether `name` is a function name providers accept ([`crate::bodies::FUNCTION_NAME`]).
fn is_function_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
}

/// Checks a JSON Schema a chat gave, naming `field`: it compiles, and allows some answer.
fn check_schema(schema: &Value, field: &str) -> Result<(), OpenAiError> {
    if schema == &Value::Bool(false) {
        return Err(invalid(field, "the schema false allows nothing at all"));
    }
    structured::check_schema(schema).map_err(|e| invalid(field, e.to_string()))?;
    Ok(())
}

/// The caller: the `x-vibehq-worker-name` header, else the chat's `user`, else the token's
/// one worker, else `openai`; with `x-vibehq-container-name`. Each is a name (422 otherwise),
/// even when another one wins.
fn caller(headers: &HeaderMap, body: &Body, identity: &Identity) -> Result<Actor, OpenAiError> {
    let header = |name: &str| -> Result<Option<String>, OpenAiError> {
        let Some(value) = headers.get(name) else {
            return Ok(None);
        };
        let value = value.to_str().map_err(|_| {
            unprocessable(name, format!("{name} must be a worker or container name"))
        })?;
        vibehq_events::validate_name(value).map_err(|e| unprocessable(name, e.to_string()))?;
        Ok(Some(value.to_owned()))
    };
    let user = body.name("user")?;
    let mut named = Map::new();
    if let Some(worker) = header("x-vibehq-worker-name")?.or(user) {
        named.insert("worker_name".into(), Value::String(worker));
    }
    if let Some(container) = header("x-vibehq-container-name")? {
        named.insert("container_name".into(), Value::String(container));
    }
    let named = Body(named);
    let worker = identity.acting_as(&named, "worker_name", Some("openai"))?;
    Ok(Actor::new(worker, named.name("container_name")?))
}

/// OpenAI's chat completions, through the gateway: `model` (a configured model or an alias),
/// `messages` (system, developer, user, assistant with `tool_calls`, tool), `temperature`,
/// `max_tokens`/`max_completion_tokens`, `stop`, `tools` (functions with JSON Schemas),
/// `tool_choice` (auto, none, required, or a named function), `response_format` (text, json_object, json_schema), `stream`
/// (with `stream_options.include_usage`), `user`.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai",
    params(
        ("x-vibehq-worker-name" = Option<String>, Header, pattern = "^(?!_$)[A-Za-z0-9_-]{1,64}$",
            description = "Who calls (before the body's `user`)"),
        ("x-vibehq-container-name" = Option<String>, Header, pattern = "^(?!_$)[A-Za-z0-9_-]{1,64}$",
            description = "The caller's container"),
    ),
    request_body(content = ChatBody),
    responses(
        (status = 200, description = "A chat.completion; with `stream`, chat.completion.chunk             Server-Sent Events (with a last one carrying `usage` if             stream_options.include_usage) ending with `[DONE]`",
            content((ChatCompletion = "application/json"), (ChatEvent = "text/event-stream"))),
        (status = 400, description = "The body is not a JSON object, or a field is wrong             (`param` names it), or a schema does not compile", body = OpenAiErrorBody),
        (status = 403, description = "The token may not act as this worker", body = OpenAiErrorBody),
        (status = 404, description = "No configured model has this name (code             model_not_found), or a tool message answers no earlier tool call (code             tool_call_not_found)", body = OpenAiErrorBody),
        (status = 409, description = "No provider is configured", body = OpenAiErrorBody),
        (status = 413, description = "The body is larger than 4 MiB", body = OpenAiErrorBody),
        (status = 422, description = "A field has the wrong type, or a caller name is not a             name, or no answer satisfied response_format (code never_valid)", body = OpenAiErrorBody),
        (status = 502, description = "Every provider failed", body = OpenAiErrorBody),
        (status = 503, description = "Every provider is rate limiting, or the call could not be             recorded", body = OpenAiErrorBody)))]
async fn chat(
    State(gateway): State<Gateway>,
    identity: Identity,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OpenAiError> {
    let body = crate::ops::read_body(&body)?;
    let caller = caller(&headers, &body, &identity)?;
    let chat = Chat::parse(&body, &gateway)?;
    let (tier, provider) = chat.target(&gateway, &caller).await?;
    let created = time::OffsetDateTime::now_utc().unix_timestamp();
    if chat.stream {
        return Ok(stream(gateway, caller, chat, tier, provider, created).into_response());
    }
    let answer = answer(&gateway, &caller, &chat, tier, provider.as_deref()).await?;
    Ok(Json(completion(&chat, &answer, created)).into_response())
}

/// A whole answer: the reply, and the text to show (cut at a stop sequence, or the JSON).
struct Answered {
    reply: Reply,
    text: String,
    stopped: bool,
}

async fn answer(
    gateway: &Gateway,
    caller: &Actor,
    chat: &Chat,
    tier: Tier,
    provider: Option<&str>,
) -> Result<Answered, OpenAiError> {
    if let Some(schema) = &chat.schema {
        let output = structured::generate(
            gateway,
            caller,
            structured::Ask {
                prompt: chat.conversation.last_prompt(),
                schema,
                max_attempts: 3,
                tier,
                provider,
                operation: Operation::Chat,
                conversation: Some(&chat.conversation),
            },
        )
        .await
        .map_err(|e| OpenAiError(ApiError::from(e)))?;
        let text = output.output.to_string();
        let reply = Reply {
            request_id: output.output_id,
            provider: output.provider,
            model: output.model,
            answer: Answer {
                text: text.clone(),
                ..Answer::default()
            },
            attempts: output.attempts,
            latency_ms: 0.0,
            first_token_ms: None,
        };
        return Ok(Answered {
            reply,
            text,
            stopped: false,
        });
    }
    let reply = gateway
        .complete(request(caller, chat, tier, provider))
        .await
        .map_err(|e| OpenAiError(ApiError::from(e)))?;
    let (text, stopped) = cut(&reply.answer.text, &chat.stop);
    Ok(Answered {
        text: text.to_owned(),
        stopped,
        reply,
    })
}

fn request<'a>(
    caller: &'a Actor,
    chat: &'a Chat,
    tier: Tier,
    provider: Option<&'a str>,
) -> Request<'a> {
    Request {
        caller,
        operation: Operation::Chat,
        tier,
        provider,
        conversation: &chat.conversation,
        timeout: None,
    }
}

/// `text` up to the first of `stops`, and whether one was found.
fn cut<'a>(text: &'a str, stops: &[String]) -> (&'a str, bool) {
    match stops.iter().filter_map(|s| text.find(s.as_str())).min() {
        Some(at) => (&text[..at], true),
        None => (text, false),
    }
}

/// The model an answer names: the alias asked for, or the model that answered.
fn model_named(chat: &Chat, reply: &Reply) -> String {
    if chat.model.starts_with("vibehq/") {
        chat.model.clone()
    } else {
        reply.model.clone()
    }
}

fn usage(answer: &Answer) -> Value {
    let prompt = answer.usage.input_tokens.unwrap_or(0);
    let completion = answer.usage.output_tokens.unwrap_or(0);
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

fn tool_calls(calls: &[ToolCall]) -> Value {
    calls
        .iter()
        .map(|call| {
            json!({
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": arguments(&call.arguments)},
            })
        })
        .collect()
}

/// A tool call's arguments as OpenAI sends them: JSON text.
fn arguments(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn finish_reason(answer: &Answer) -> &'static str {
    if answer.tool_calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    }
}

/// The `chat.completion` object.
fn completion(chat: &Chat, answered: &Answered, created: i64) -> Value {
    let answer = &answered.reply.answer;
    let mut message = json!({"role": "assistant", "content": answered.text});
    if !answer.tool_calls.is_empty() {
        message["tool_calls"] = tool_calls(&answer.tool_calls);
        if answered.text.is_empty() {
            message["content"] = Value::Null;
        }
    }
    json!({
        "id": format!("chatcmpl-{}", answered.reply.request_id),
        "object": "chat.completion",
        "created": created,
        "model": model_named(chat, &answered.reply),
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": if answered.stopped { "stop" } else { finish_reason(answer) },
        }],
        "usage": usage(answer),
    })
}

/// A streamed chat: `chat.completion.chunk`s as Server-Sent Events, then `[DONE]`.
fn stream(
    gateway: Gateway,
    caller: Actor,
    chat: Chat,
    tier: Tier,
    provider: Option<String>,
    created: i64,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let (tx, rx) = mpsc::unbounded_channel::<String>();
    let id = format!("chatcmpl-{}", uuid::Uuid::now_v7());
    let chunk = {
        let (id, model) = (id.clone(), chat.model.clone());
        move |choices: Value, usage: Option<Value>| {
            let mut chunk = json!({
                "id": id, "object": "chat.completion.chunk", "created": created,
                "model": model, "choices": choices,
            });
            if let Some(usage) = usage {
                chunk["usage"] = usage;
            }
            chunk.to_string()
        }
    };
    let delta = |delta: Value, finish: Option<&str>| json!([{"index": 0, "delta": delta, "finish_reason": finish}]);
    let gone = tx.clone();
    let work = async move {
        let _ = tx.send(chunk(
            delta(json!({"role": "assistant", "content": ""}), None),
            None,
        ));
        let finished = if chat.schema.is_some() {
            // A JSON answer is shown once it is valid: validated and repaired first.
            answer(&gateway, &caller, &chat, tier, provider.as_deref())
                .await
                .map(|answered| {
                    let _ = tx.send(chunk(delta(json!({"content": answered.text}), None), None));
                    answered.reply.answer
                })
        } else {
            let mut stops = Stops::new(&chat.stop);
            let events = tx.clone();
            let send = chunk.clone();
            let mut sink = move |d: Delta| {
                let piece = match d {
                    Delta::Text { text } => match stops.push(&text) {
                        Some(shown) if !shown.is_empty() => json!({"content": shown}),
                        _ => return,
                    },
                    Delta::ToolCallStart { index, name } => json!({"tool_calls": [{
                        "index": index, "id": format!("call_{index}"), "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }]}),
                    Delta::ToolCallArguments { index, json } => {
                        json!({"tool_calls": [{"index": index, "function": {"arguments": json}}]})
                    }
                    // A provider that broke mid-answer, with falling back after the first
                    // token allowed: OpenAI's stream cannot say "start over", so the new
                    // answer simply follows.
                    Delta::Restart { .. } => return,
                };
                let _ = events.send(send(delta(piece, None), None));
            };
            gateway
                .stream(
                    request(&caller, &chat, tier, provider.as_deref()),
                    &mut sink,
                )
                .await
                .map(|reply| reply.answer)
                .map_err(|e| OpenAiError(ApiError::from(e)))
        };
        match finished {
            Ok(answer) => {
                let reason = finish_reason(&answer);
                let _ = tx.send(chunk(delta(json!({}), Some(reason)), None));
                if chat.include_usage {
                    let _ = tx.send(chunk(json!([]), Some(usage(&answer))));
                }
            }
            Err(OpenAiError(error)) => {
                let _ = tx.send(
                    json!({"error": {"message": error.detail.message, "type": "api_error",
                        "param": error.detail.field, "code": error.detail.code}})
                    .to_string(),
                );
            }
        }
        let _ = tx.send("[DONE]".to_owned());
    };
    tokio::spawn(async move {
        tokio::select! {
            () = gone.closed() => tracing::info!("the client went away; stopped its chat"),
            () = work => {}
        }
    });
    let events = futures::stream::unfold(rx, |mut rx| async move {
        let data = rx.recv().await?;
        Some((Ok(Event::default().data(data)), rx))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// Holds a streamed answer's text back while it could still be the start of a stop
/// sequence, and ends it at the first one.
struct Stops<'a> {
    stops: &'a [String],
    held: String,
    stopped: bool,
}

impl<'a> Stops<'a> {
    fn new(stops: &'a [String]) -> Self {
        Self {
            stops,
            held: String::new(),
            stopped: false,
        }
    }

    /// The text that may be shown now, after `text` arrived; `None` once stopped.
    fn push(&mut self, text: &str) -> Option<String> {
        if self.stopped {
            return None;
        }
        if self.stops.is_empty() {
            return Some(text.to_owned());
        }
        self.held.push_str(text);
        let (before, found) = cut(&self.held, self.stops);
        if found {
            self.stopped = true;
            let shown = before.to_owned();
            self.held.clear();
            return Some(shown);
        }
        // Keep back the longest tail that begins some stop sequence.
        let keep = self
            .stops
            .iter()
            .flat_map(|stop| (1..stop.len()).map(move |n| &stop[..n]))
            .filter(|prefix| self.held.ends_with(prefix))
            .map(str::len)
            .max()
            .unwrap_or(0);
        let split = self.held.len() - keep;
        let shown = self.held[..split].to_owned();
        self.held.drain(..split);
        Some(shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_cut_at_a_stop_sequence_split_across_deltas() {
        let stops = vec!["END".to_owned()];
        let mut filter = Stops::new(&stops);
        let shown: Vec<Option<String>> = ["Hello E", "N", "D and more", "!"]
            .iter()
            .map(|d| filter.push(d))
            .collect();
        assert_eq!(
            shown,
            [
                Some("Hello ".to_owned()),
                Some(String::new()),
                Some(String::new()),
                None
            ]
        );
        assert_eq!(cut("a STOP b", &["STOP".to_owned()]), ("a ", true));
    }

    #[test]
    fn messages_become_a_conversation_with_tool_results_tied_to_their_calls() {
        let conversation = messages(Some(&json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "18 C"},
        ])))
        .expect("a conversation");
        assert_eq!(conversation.system.as_deref(), Some("Be brief."));
        assert_eq!(conversation.turns.len(), 3);
        let Turn::ToolResult { call, content } = &conversation.turns[2] else {
            panic!("a tool result");
        };
        assert_eq!((call.name.as_str(), content.as_str()), ("weather", "18 C"));
        assert_eq!(call.arguments, json!({"city": "Paris"}));
        let refused = messages(Some(
            &json!([{"role": "tool", "tool_call_id": "x", "content": ""}]),
        ));
        let refused = refused.expect_err("a tool message answering no call");
        assert_eq!(refused.0.status.as_u16(), 404);
        assert_eq!(
            refused.0.detail.field.as_deref(),
            Some("messages[0].tool_call_id")
        );
    }

    #[test]
    fn a_message_providers_would_drop_is_refused_naming_it() {
        for (messages, field) in [
            (
                json!([{"role": "user", "content": " \n"}]),
                "messages[0].content",
            ),
            (json!([{"role": "system"}]), "messages[0].content"),
            (
                json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]),
                "messages[1].content",
            ),
            (
                json!([{"role": "user", "content": [{"type": "text", "text": ""}]}]),
                "messages[0].content",
            ),
        ] {
            let refused = messages_of(&messages).expect_err("refused");
            assert_eq!(
                (refused.0.status.as_u16(), refused.0.detail.field.as_deref()),
                (400, Some(field)),
                "{messages}"
            );
        }
        let system_alone = messages_of(&json!([{"role": "developer", "content": "Be brief."}]));
        assert!(system_alone.is_ok(), "a system prompt alone is a chat");
    }

    fn messages_of(value: &Value) -> Result<Conversation, OpenAiError> {
        messages(Some(value))
    }
}
