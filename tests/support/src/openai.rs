//! A deterministic OpenAI-compatible server on loopback, for the AI gateway's tests.
//!
//! It also speaks Anthropic's `POST /v1/messages` for text answers and error statuses.
//!
//! Tests script what `POST /v1/chat/completions` answers, one [`Reply`] per request in order:
//! text, tool calls, streamed chunks (Server-Sent Events, as the Chat Completions API streams),
//! slow answers, and error statuses with `retry-after`. Every request body is kept for
//! assertions. The production code reaches it exactly as it reaches a real provider: over HTTP,
//! at the base URL [`FakeOpenAi::url`] gives. A request nothing was scripted for is answered
//! "ok", or, when it asks for JSON satisfying a schema, with a value the schema allows (so a
//! fuzzer's structured outputs and agent plans succeed unscripted).
//!
//! Clients in other processes (a browser test, the `openai` package) script it over HTTP:
//! `POST /_script` with a JSON array of `{"text": "..."}` or
//! `{"tool_call": {"name": "...", "arguments": {...}}}` queues those replies. The
//! `vibehq-fake-openai` binary serves it on a port of its own.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A completion whose message says `text`.
    Text(String),
    /// A completion that calls tool `name` with `arguments`.
    ToolCall { name: String, arguments: Value },
    /// A streamed completion: each string is one content delta.
    Stream(Vec<String>),
    /// A stream that sends these content deltas, then breaks off: no finish reason, no
    /// `[DONE]`, as when a provider's connection drops mid-answer.
    BrokenStream(Vec<String>),
    /// A streamed tool call whose arguments arrive in `parts`.
    StreamToolCall { name: String, parts: Vec<String> },
    /// An error status with an OpenAI-shaped error body, and `retry-after` seconds if set.
    Status {
        code: u16,
        retry_after: Option<u64>,
        message: String,
    },
    /// `then`, after `delay`.
    Slow { delay: Duration, then: Box<Reply> },
}

impl Reply {
    /// 429 Too Many Requests, asking to retry after `seconds`.
    pub fn rate_limited(seconds: u64) -> Self {
        Reply::Status {
            code: 429,
            retry_after: Some(seconds),
            message: "Rate limit reached".into(),
        }
    }

    /// 500 Internal Server Error.
    pub fn server_error() -> Self {
        Reply::Status {
            code: 500,
            retry_after: None,
            message: "The server had an error while processing your request".into(),
        }
    }
}

/// Tokens every scripted completion reports using (prompt, completion, cached).
pub const USAGE: (u64, u64, u64) = (12, 5, 4);

#[derive(Debug, Default)]
struct Script {
    replies: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Value>>,
}

/// The running server; stops when dropped.
#[derive(Debug)]
pub struct FakeOpenAi {
    addr: std::net::SocketAddr,
    script: Arc<Script>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeOpenAi {
    /// Starts the server on a free loopback port.
    pub async fn start() -> Self {
        Self::on("127.0.0.1:0").await
    }

    /// Starts the server on `addr` (`127.0.0.1:0` for a free port).
    pub async fn on(addr: &str) -> Self {
        let script = Arc::new(Script::default());
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/messages", post(messages))
            .route("/_script", post(push_script))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind the fake OpenAI server: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("fake OpenAI address: {e}"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            script,
            server,
        }
    }

    /// The base URL to configure as the provider's (`…/v1`).
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues the answer to the next request that finds the queue empty before it.
    pub fn push(&self, reply: Reply) {
        lock(&self.script.replies).push_back(reply);
    }

    /// Every request body received so far, in order.
    pub fn requests(&self) -> Vec<Value> {
        lock(&self.script.requests).clone()
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `POST /_script`: queues the replies of another process's test (see the module's docs).
async fn push_script(
    State(script): State<Arc<Script>>,
    Json(replies): Json<Vec<Value>>,
) -> Response {
    let mut parsed = Vec::new();
    for (i, reply) in replies.iter().enumerate() {
        let reply = if let Some(text) = reply["text"].as_str() {
            Reply::Text(text.to_owned())
        } else if let Some(name) = reply["tool_call"]["name"].as_str() {
            Reply::ToolCall {
                name: name.to_owned(),
                arguments: reply["tool_call"]["arguments"].clone(),
            }
        } else {
            let error = format!("reply {i} is neither {{\"text\"}} nor {{\"tool_call\"}}");
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({ "error": error })),
            )
                .into_response();
        };
        parsed.push(reply);
    }
    let queued = parsed.len();
    lock(&script.replies).extend(parsed);
    Json(json!({ "queued": queued })).into_response()
}

async fn chat(State(script): State<Arc<Script>>, Json(request): Json<Value>) -> Response {
    let model = request["model"].as_str().unwrap_or("fake").to_owned();
    let request_streamed = request["stream"] == true;
    let unscripted = unscripted(&request);
    lock(&script.requests).push(request);
    let mut reply = lock(&script.replies).pop_front().unwrap_or(unscripted);
    while let Reply::Slow { delay, then } = reply {
        tokio::time::sleep(delay).await;
        reply = *then;
    }
    // A streamed request gets its scripted answer streamed, as a real provider streams it.
    if request_streamed {
        reply = match reply {
            Reply::Text(text) => {
                Reply::Stream(text.split_inclusive(' ').map(str::to_owned).collect())
            }
            Reply::ToolCall { name, arguments } => {
                let json = arguments.to_string();
                let half = json.char_indices().nth(json.chars().count() / 2);
                let (head, tail) = json.split_at(half.map_or(0, |(at, _)| at));
                Reply::StreamToolCall {
                    name,
                    parts: vec![head.to_owned(), tail.to_owned()],
                }
            }
            other => other,
        };
    }
    match reply {
        Reply::Text(text) => Json(completion(
            &model,
            json!({"role": "assistant", "content": text}),
            "stop",
        ))
        .into_response(),
        Reply::ToolCall { name, arguments } => Json(completion(
            &model,
            json!({"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": name, "arguments": arguments.to_string()}
            }]}),
            "tool_calls",
        ))
        .into_response(),
        Reply::Stream(parts) => sse(&model, content_deltas(&parts), Some("stop")),
        Reply::BrokenStream(parts) => sse(&model, content_deltas(&parts), None),
        Reply::StreamToolCall { name, parts } => {
            let mut chunks = vec![json!({"role": "assistant", "tool_calls": [{
                "index": 0, "id": "call_1", "type": "function",
                "function": {"name": name, "arguments": ""}
            }]})];
            chunks.extend(parts.iter().map(
                |part| json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}),
            ));
            sse(&model, chunks, Some("tool_calls"))
        }
        Reply::Status {
            code,
            retry_after,
            message,
        } => status(
            code,
            retry_after,
            json!({"error": {"message": message, "type": "fake_error", "code": code}}),
        ),
        Reply::Slow { .. } => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// What a request nothing was scripted for gets: "ok", or, when it asks for JSON satisfying a
/// schema (`response_format`, or the gateway's structured-output instruction ending its system
/// prompt), the simplest value the schema allows, so structured output and agent plans work
/// unscripted too.
fn unscripted(request: &Value) -> Reply {
    match asked_schema(request) {
        Some(schema) => Reply::Text(instance(&schema).to_string()),
        None => Reply::Text("ok".into()),
    }
}

/// The JSON Schema a request asks its answer to satisfy, if any.
fn asked_schema(request: &Value) -> Option<Value> {
    if let Some(schema) = request.pointer("/response_format/json_schema/schema") {
        return Some(schema.clone());
    }
    if request.pointer("/response_format/type") == Some(&json!("json_object")) {
        return Some(json!({"type": "object"}));
    }
    const MARK: &str = "It must satisfy this JSON Schema:\n";
    request["messages"]
        .as_array()?
        .iter()
        .filter(|m| m["role"] == "system")
        .find_map(|m| {
            let text = match &m["content"] {
                Value::String(text) => text.clone(),
                Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
                _ => return None,
            };
            let (_, schema) = text.split_once(MARK)?;
            serde_json::Deserializer::from_str(schema)
                .into_iter::<Value>()
                .next()?
                .ok()
        })
}

/// A value `schema` allows, for the schemas tests and fuzzers send: the first of an `enum`,
/// `anyOf` or `oneOf`, every property of an object, the fewest items of an array, a short
/// string, `true`; anything else (no type: any value) is `{}`.
fn instance(schema: &Value) -> Value {
    let Value::Object(node) = schema else {
        return json!({});
    };
    if let Some(value) = node.get("const") {
        return value.clone();
    }
    if let Some(first) = node
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    for keyword in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = node
            .get(keyword)
            .and_then(Value::as_array)
            .and_then(|e| e.first())
        {
            return instance(first);
        }
    }
    let kind = match node.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null")
            .or_else(|| kinds.first().and_then(Value::as_str))
            .unwrap_or("object"),
        _ if node.contains_key("properties") || node.contains_key("required") => "object",
        _ => return json!({}),
    };
    let number = |key: &str| node.get(key).and_then(Value::as_f64);
    match kind {
        "null" => Value::Null,
        "boolean" => json!(true),
        "integer" => json!(number("minimum").map_or(0, |m| m.ceil() as i64)),
        "number" => json!(number("minimum").unwrap_or(0.0)),
        "string" => {
            let length = node.get("minLength").and_then(Value::as_u64).unwrap_or(0);
            json!("x".repeat(length.max(1) as usize))
        }
        "array" => {
            let count = node.get("minItems").and_then(Value::as_u64).unwrap_or(0);
            let item = node.get("items").map_or(json!({}), instance);
            Value::Array(vec![item; count as usize])
        }
        _ => {
            // Every property it names (a plan's step then asks for approval), and the required
            // ones it does not.
            let mut object: serde_json::Map<String, Value> = node
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(name, property)| (name.clone(), instance(property)))
                .collect();
            for name in node
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(name) = name.as_str() {
                    object.entry(name.to_owned()).or_insert_with(|| json!({}));
                }
            }
            Value::Object(object)
        }
    }
}

/// Anthropic's Messages API (`POST /v1/messages`), from the same script: text answers and
/// error statuses (other replies are not scripted for it and answer 500).
async fn messages(State(script): State<Arc<Script>>, Json(request): Json<Value>) -> Response {
    let model = request["model"].as_str().unwrap_or("fake").to_owned();
    lock(&script.requests).push(request);
    let reply = lock(&script.replies)
        .pop_front()
        .unwrap_or_else(|| Reply::Text("ok".into()));
    match reply {
        Reply::Text(text) => {
            let (input, output, cached) = USAGE;
            Json(json!({
                "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": input - cached, "output_tokens": output,
                          "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0}
            }))
            .into_response()
        }
        Reply::Status {
            code,
            retry_after,
            message,
        } => status(
            code,
            retry_after,
            json!({"type": "error", "error": {"type": "fake_error", "message": message}}),
        ),
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// One streamed content delta per part.
fn content_deltas(parts: &[String]) -> Vec<Value> {
    parts
        .iter()
        .map(|part| json!({"role": "assistant", "content": part}))
        .collect()
}

/// An error answer with `body`, and `retry-after` when given.
fn status(code: u16, retry_after: Option<u64>, body: Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(body)).into_response();
    if let Some(seconds) = retry_after
        && let Ok(value) = seconds.to_string().parse()
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn usage() -> Value {
    let (prompt, completion, cached) = USAGE;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached}
    })
}

fn completion(model: &str, message: Value, finish: &str) -> Value {
    json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage(),
    })
}

/// A streamed completion: one chunk per delta, a final chunk with the finish reason and the
/// usage, then `[DONE]`; without a finish reason, the deltas alone (a broken stream).
fn sse(model: &str, deltas: Vec<Value>, finish: Option<&str>) -> Response {
    let chunk = |delta: Value, finish: Option<&str>, usage: Option<Value>| {
        let mut chunk = json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        if let Some(usage) = usage {
            chunk["usage"] = usage;
        }
        format!("data: {chunk}\n\n")
    };
    let mut body: String = deltas.into_iter().map(|d| chunk(d, None, None)).collect();
    if let Some(finish) = finish {
        body.push_str(&chunk(json!({}), Some(finish), Some(usage())));
        body.push_str("data: [DONE]\n\n");
    }
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ask(fake: &FakeOpenAi) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}/chat/completions", fake.url()))
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .expect("POST")
    }

    #[tokio::test]
    async fn replies_come_in_the_scripted_order_and_requests_are_kept() {
        let fake = FakeOpenAi::start().await;
        fake.push(Reply::rate_limited(2));
        fake.push(Reply::Text("hello".into()));

        let limited = ask(&fake).await;
        assert_eq!(limited.status().as_u16(), 429);
        assert_eq!(limited.headers()["retry-after"], "2");
        let answer: Value = ask(&fake).await.json().await.expect("JSON");
        assert_eq!(answer["choices"][0]["message"]["content"], "hello");
        assert_eq!(answer["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
        assert_eq!(fake.requests().len(), 2);
        assert_eq!(fake.requests()[0]["model"], "m");
    }

    #[tokio::test]
    async fn a_streamed_tool_call_arrives_as_argument_fragments() {
        let fake = FakeOpenAi::start().await;
        fake.push(Reply::StreamToolCall {
            name: "get_task".into(),
            parts: vec!["{\"task_".into(), "id\": ".into(), "\"t-1\"}".into()],
        });
        let response = ask(&fake).await;
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let text = response.text().await.expect("body");
        let arguments: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|c| {
                c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(arguments, "{\"task_id\": \"t-1\"}");
        assert!(text.ends_with("data: [DONE]\n\n"));
    }
}
