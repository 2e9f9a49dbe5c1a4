//! The AI operations over HTTP: `/api/ai/…`, streamed as Server-Sent Events with
//! `"stream": true`, and over the WebSocket `/ws/ai`.
//!
//! A streamed answer is a sequence of named events: `delta` (or `step`, `delta`, `tool_result`
//! for a tool loop), then exactly one `done` with the same JSON the unstreamed call answers, or
//! one `error` with the usual error body. Bad input is refused before the stream starts, with
//! the status and error body every other route uses.

use std::convert::Infallible;

use axum::Json;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use vibehq_api::auth::Identity;
use vibehq_api::body::Body;
use vibehq_api::error::{ApiError, ErrorBody};

use crate::bodies::{
    self, AskBody, AskEvent, DecideBody, EvaluateBody, PlanBody, RouteBody, RunBody,
    RunStreamEvent, StructuredBody, ToolCallBody,
};
use crate::gateway::Reply;
use crate::ops::{self, Ai, AskInput, Op, RunInput, with_path_id};
use crate::provider::ToolSpec;
use crate::tools;

/// The AI routes.
pub fn router(ai: Ai) -> axum::Router {
    axum::Router::new()
        .route("/api/ai/ask", post(ask))
        .route("/api/ai/route", post(route_prompt))
        .route("/api/ai/structured", post(structured))
        .route("/api/ai/tools", get(list_tools))
        .route("/api/ai/tools/{tool}", post(call_tool))
        .route("/api/ai/runs", post(run_tools))
        .route("/api/ai/evaluate", post(evaluate))
        .route("/api/ai/plans", post(create_plan))
        .route("/api/ai/plans/{plan_id}", get(get_plan))
        .route("/api/ai/approvals/{approval_id}/approve", post(approve))
        .route("/api/ai/approvals/{approval_id}/reject", post(reject))
        .route("/ws/ai", get(live))
        // Bodies up to twice the limit reach `read_body`, which answers the JSON 413.
        .layer(DefaultBodyLimit::max(2 * ops::MAX_BODY))
        .with_state(ai)
}

/// The AI routes' part of the OpenAPI document.
///
/// `/ws/ai` is listed with its protocol in words and no operation: a WebSocket is not an HTTP
/// operation OpenAPI can describe (its answer is a 101 and then messages).
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(
        ask,
        route_prompt,
        structured,
        list_tools,
        call_tool,
        run_tools,
        evaluate,
        create_plan,
        get_plan,
        approve,
        reject
    ),
    modifiers(&AiPaths),
    components(schemas(
        AskBody,
        AskEvent,
        RunStreamEvent,
        RouteBody,
        StructuredBody,
        RunBody,
        EvaluateBody,
        PlanBody,
        DecideBody,
        ToolSpec,
        crate::provider::ToolCall,
        crate::provider::Usage,
        crate::provider::Answer,
        crate::gateway::Reply,
        crate::route::Decision,
        crate::structured::Output,
        tools::Called,
        tools::Finished,
        tools::RunEvent,
        crate::evaluate::Evaluation,
        crate::evaluate::Round,
        crate::agent::Plan,
        crate::agent::StepSpec,
        crate::provider::Delta,
        ErrorBody
    ))
)]
pub struct AiDoc;

/// What the path attributes cannot write: a path per built-in tool with its arguments'
/// schema (instead of `/api/ai/tools/{tool}` with any arguments: any other name is answered
/// 404), and `/ws/ai`.
struct AiPaths;

impl utoipa::Modify for AiPaths {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::link::LinkBuilder;
        use utoipa::openapi::path::PathItem;
        use utoipa::openapi::request_body::RequestBody;
        use utoipa::openapi::{Content, RefOr, Required};
        use vibehq_api::error::error_response;

        let template = doc
            .paths
            .paths
            .remove("/api/ai/tools/{tool}")
            .and_then(|item| item.post);
        if let Some(template) = template {
            for spec in tools::builtin_specs() {
                let mut operation = template.clone();
                operation.operation_id = Some(format!("call_{}", spec.name));
                operation.summary = Some(format!("`callTool` {}: {}", spec.name, spec.description));
                operation.description = None;
                operation.parameters = None;
                let responses = &mut operation.responses.responses;
                responses.insert(
                    "404".into(),
                    RefOr::T(error_response(
                        "What the arguments name does not exist (a task id no task has)",
                    )),
                );
                if spec.name == "submit_task"
                    && let Some(RefOr::T(submitted)) = responses.get_mut("200")
                {
                    // The task it submitted is one get_task_status can look up.
                    submitted.links.insert(
                        "getTaskStatus".into(),
                        RefOr::T(
                            LinkBuilder::new()
                                .operation_id("call_get_task_status")
                                .request_body(Some(json!({
                                    "arguments": {"task_id": "$response.body#/result/task_id"}
                                })))
                                .build(),
                        ),
                    );
                }
                let mut body = RequestBody::new();
                body.required = Some(Required::True);
                body.content.insert(
                    "application/json".into(),
                    RefOr::T(Content::new(Some(vibehq_api::schema::from_json(
                        &bodies::tool_body(&spec),
                    )))),
                );
                operation.request_body = Some(RefOr::T(body));
                let mut item = PathItem::default();
                item.post = Some(operation);
                doc.paths
                    .paths
                    .insert(format!("/api/ai/tools/{}", spec.name), item);
            }
        }
        let mut live = PathItem::default();
        live.summary = Some("The streamed operations over a WebSocket".into());
        live.description = Some(LIVE.into());
        doc.paths.paths.insert("/ws/ai".into(), live);
    }
}

/// `/ws/ai`'s protocol, for the document.
const LIVE: &str = "GET with a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket, \
    Sec-WebSocket-Version: 13, Sec-WebSocket-Key); a request that is not one is refused (400). \
    Then send a text message `{\"op\": \"ask\" | \"runTools\", …the same body as POST \
    /api/ai/ask or /api/ai/runs…}` and receive `{\"event\": name, \"data\": …}` messages (delta, \
    step, tool_result), ending with done (the unstreamed answer) or error (an ErrorBody). \
    Several requests may follow one another on one connection.";

async fn answer(ai: &Ai, identity: &Identity, op: Op, body: Body) -> Result<Json<Value>, ApiError> {
    Ok(Json(ops::handle(ai, identity, op, body).await?))
}

/// One model call through the gateway (`stream: true` answers as Server-Sent Events, as
/// `/ws/ai` does over a WebSocket).
#[utoipa::path(
    post, path = "/api/ai/ask",
    request_body(content = AskBody),
    responses(
        (status = 200, description = "The answer, the provider and model that gave it, and the \
            request_id its attempts are recorded under; with `stream`, Server-Sent Events named \
            `delta` (a Delta)… then one `done` (this Reply) or `error` (an ErrorBody)",
            content((Reply = "application/json"), (AskEvent = "text/event-stream"))),
        (status = 413, description = "The body is larger than 4 MiB", body = ErrorBody),
        (status = 403, description = "The token may not act as worker_name", body = ErrorBody),
        (status = 404, description = "No provider has this name (code unknown_provider)", body = ErrorBody),
        (status = 409, description = "No provider is configured", body = ErrorBody),
        (status = 502, description = "Every provider failed", body = ErrorBody),
        (status = 503, description = "Every provider is rate limiting, or the call could not be \
            recorded", body = ErrorBody),
    ),
    tag = "ai"
)]
async fn ask(State(ai): State<Ai>, identity: Identity, body: Bytes) -> Result<Response, ApiError> {
    let body = ops::read_body(&body)?;
    if body.boolean("stream")? == Some(true) {
        return Ok(sse(start(&ai, &identity, Op::Ask, body)?).into_response());
    }
    Ok(answer(&ai, &identity, Op::Ask, body).await?.into_response())
}

/// `routePrompt`: the tier and model for a prompt, with the features and reasons.
#[utoipa::path(
    post, path = "/api/ai/route",
    request_body(content = RouteBody),
    responses(
        (status = 200, body = crate::route::Decision),
        (status = 413, description = "The body is larger than 4 MiB", body = ErrorBody),
        (status = 403, description = "The token may not act as worker_name", body = ErrorBody),
        (status = 503, description = "The decision could not be recorded", body = ErrorBody),
    ),
    tag = "ai"
)]
async fn route_prompt(
    State(ai): State<Ai>,
    identity: Identity,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    answer(&ai, &identity, Op::RoutePrompt, ops::read_body(&body)?).await
}

/// `generateStructuredOutput`: an answer that satisfies a JSON Schema.
#[utoipa::path(
    post, path = "/api/ai/structured",
    request_body(content = StructuredBody),
    responses(
        (status = 200, body = crate::structured::Output),
        (status = 413, description = "The body is larger than 4 MiB", body = ErrorBody),
        (status = 403, description = "The token may not act as worker_name", body = ErrorBody),
        (status = 404, description = "No provider has this name (code unknown_provider)", body = ErrorBody),
        (status = 409, description = "No provider is configured", body = ErrorBody),
        (status = 422, description = "A field is wrong; or the schema does not compile; or no \
            answer satisfied it within max_attempts (code never_valid, recorded)", body = ErrorBody),
        (status = 502, description = "Every provider failed", body = ErrorBody),
        (status = 503, description = "Every provider is rate limiting, or the output could not \
            be recorded", body = ErrorBody),
    ),
    tag = "ai"
)]
async fn structured(
    State(ai): State<Ai>,
    identity: Identity,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    answer(
        &ai,
        &identity,
        Op::GenerateStructuredOutput,
        ops::read_body(&body)?,
    )
    .await
}

/// The tools a model or a caller may call, with their parameter schemas.
#[utoipa::path(
    get, path = "/api/ai/tools",
    responses((status = 200, body = Vec<ToolSpec>)),
    tag = "ai"
)]
async fn list_tools(State(ai): State<Ai>) -> Json<Vec<ToolSpec>> {
    Json(ai.tools.specs())
}

/// `callTool`: runs a tool with arguments checked against its schema. The document gives each
/// built-in tool a path of its own from this one ([`AiPaths`]); any other name is 404
/// (`unknown_tool`).
#[utoipa::path(
    post, path = "/api/ai/tools/{tool}",
    params(("tool" = String, Path)),
    request_body(content = ToolCallBody),
    responses(
        (status = 200, body = tools::Called),
        (status = 413, description = "The body is larger than 4 MiB", body = ErrorBody),
        (status = 403, description = "The token may not act as worker_name", body = ErrorBody),
        (status = 404, description = "What the arguments name does not exist", body = ErrorBody),
        (status = 422, description = "A field is wrong, or the arguments do not satisfy the \
            tool's schema (recorded)", body = ErrorBody),
        (status = 502, description = "The tool failed (recorded)", body = ErrorBody),
        (status = 503, description = "The call could not be recorded", body = ErrorBody),
    ),
    tag = "ai"
)]
async fn call_tool(
    State(ai): State<Ai>,
    identity: Identity,
    Path(tool): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = with_path_id(ops::read_body(&body)?, "tool", tool);
    answer(&ai, &identity, Op::CallTool, body).await
}

/// A model-driven tool loop (`stream: true` answers as Server-Sent Events, as `/ws/ai` does
/// over a WebSocket).
#[utoipa::path(
    post, path = "/api/ai/runs",
    request_body(content = RunBody),
    responses(
        (status = 200, description = "How the loop ended; with `stream`, Server-Sent Events \
            named `step`, `delta`, `tool_result` (RunEvents)… then one `done` (this Finished) or \
            `error` (an ErrorBody)",
            content((tools::Finished = "application/json"), (RunStreamEvent = "text/event-stream"))),
        (status = 413, description = "The body is larger than 4 MiB", body = ErrorBody),
        (status = 403, description = "The token may not act as worker_name", body = ErrorBody),
        (status = 404, description = "No provider has this name (code unknown_provider), or no \
            tool has a name `tools` lists (code unknown_tool)", body = ErrorBody),
        (status = 409, description = "No provider is configured", body = ErrorBody),
        (status = 502, description = "Every provider failed", body = ErrorBody),
        (status = 503, description = "Every provider is rate limiting, or a step could not be \
            recorded", body = ErrorBody),
    ),
    tag = "ai"
)]
async fn run_tools(
    State(ai): State<Ai>,
    identity: Identity,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = ops::read_body(&body)?;
    if body.boolean("stream")? == Some(true) {
        return Ok(sse(start(&ai, &identity, Op::RunTools, body)?).into_response());
    }
    Ok(answer(&ai, &identity, Op::RunTools, body)
        .await?
        .into_response())
}

/// `evaluateModel`: generate, evaluate against criteria, improve, until a threshold.
#[utoipa::path(
    post, path = "/api/ai/evaluate",
    request_body(content = EvaluateBody),
    responses(
        (status = 200, body = crate::evaluate::Evaluation),
        (status = 413, description = "The body is larger than 4 MiB", body = ErrorBody),
        (status = 403, description = "The token may not act as worker_name", body = ErrorBody),
        (status = 404, description = "No provider has this name (code unknown_provider)", body = ErrorBody),
        (status = 409, description = "No provider is configured", body = ErrorBody),
        (status = 502, description = "Every provider failed", body = ErrorBody),
        (status = 503, description = "Every provider is rate limiting, or a round could not be \
            recorded", body = ErrorBody),
    ),
    tag = "ai"
)]
async fn evaluate(
    State(ai): State<Ai>,
    identity: Identity,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    answer(&ai, &identity, Op::EvaluateModel, ops::read_body(&body)?).await
}

/// Turns a goal into a plan of agent tasks (the model proposes steps unless `steps` is given)
/// and runs it up to the first step that needs approval.
#[utoipa::path(
    post, path = "/api/ai/plans",
    request_body(content = PlanBody),
    responses(
        (status = 200, body = crate::agent::Plan, links(
            ("getPlan" = (operation_id = "get_plan",
                parameters(("plan_id" = "$response.body#/plan_id")))),
            ("approve" = (operation_id = "approve",
                parameters(("approval_id" = "$response.body#/approvals/0/approval_id")))),
            ("reject" = (operation_id = "reject",
                parameters(("approval_id" = "$response.body#/approvals/0/approval_id")))),
        )),
        (status = 413, description = "The body is larger than 4 MiB", body = ErrorBody),
        (status = 403, description = "The token may not act as worker_name", body = ErrorBody),
        (status = 409, description = "No provider is configured (to propose the steps)", body = ErrorBody),
        (status = 502, description = "The model proposed no usable plan, every provider \
            failed, or a step could not be submitted to the task queue", body = ErrorBody),
        (status = 503, description = "Every provider is rate limiting, or the plan could not be \
            recorded or read back in time", body = ErrorBody),
    ),
    tag = "ai"
)]
async fn create_plan(
    State(ai): State<Ai>,
    identity: Identity,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    answer(&ai, &identity, Op::CreatePlan, ops::read_body(&body)?).await
}

/// A plan, its tasks and its approvals.
#[utoipa::path(
    get, path = "/api/ai/plans/{plan_id}",
    params(("plan_id" = String, Path, max_length = 128, pattern = "[^\\s\\x00-\\x1f\\x7f-\\x9f]")),
    responses(
        (status = 200, body = crate::agent::Plan, links(
            ("approve" = (operation_id = "approve",
                parameters(("approval_id" = "$response.body#/approvals/0/approval_id")))),
            ("reject" = (operation_id = "reject",
                parameters(("approval_id" = "$response.body#/approvals/0/approval_id")))),
        )),
        (status = 404, description = "No plan has this id", body = ErrorBody),
        (status = 422, description = "The id is blank or longer than 128 characters", body = ErrorBody),
        (status = 502, description = "A step could not be submitted to the task queue", body = ErrorBody),
        (status = 503, description = "The plan could not be recorded or read back in time", body = ErrorBody),
    ),
    tag = "ai"
)]
async fn get_plan(
    State(ai): State<Ai>,
    identity: Identity,
    Path(plan_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    answer(
        &ai,
        &identity,
        Op::GetPlan,
        with_path_id(Body::default(), "plan_id", plan_id),
    )
    .await
}

/// Approves a waiting step; its plan continues.
#[utoipa::path(
    post, path = "/api/ai/approvals/{approval_id}/approve",
    params(("approval_id" = String, Path, max_length = 128, pattern = "[^\\s\\x00-\\x1f\\x7f-\\x9f]")),
    request_body(content = DecideBody, description = "`worker_name` is who decides"),
    responses(
        (status = 200, description = "The plan after continuing", body = crate::agent::Plan),
        (status = 413, description = "The body is larger than 4 MiB", body = ErrorBody),
        (status = 403, description = "Only an operator decides", body = ErrorBody),
        (status = 404, description = "No approval has this id", body = ErrorBody),
        (status = 409, description = "Already decided", body = ErrorBody),
        (status = 502, description = "A step could not be submitted to the task queue", body = ErrorBody),
        (status = 503, description = "The decision could not be recorded or read back in time", body = ErrorBody),
    ),
    tag = "ai"
)]
async fn approve(
    State(ai): State<Ai>,
    identity: Identity,
    Path(approval_id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    decide(&ai, &identity, approval_id, true, &body).await
}

/// Rejects a waiting step; its plan stops and its remaining steps are cancelled.
#[utoipa::path(
    post, path = "/api/ai/approvals/{approval_id}/reject",
    params(("approval_id" = String, Path, max_length = 128, pattern = "[^\\s\\x00-\\x1f\\x7f-\\x9f]")),
    request_body(content = DecideBody, description = "`worker_name` is who decides"),
    responses(
        (status = 200, description = "The plan, stopped", body = crate::agent::Plan),
        (status = 413, description = "The body is larger than 4 MiB", body = ErrorBody),
        (status = 403, description = "Only an operator decides", body = ErrorBody),
        (status = 404, description = "No approval has this id", body = ErrorBody),
        (status = 409, description = "Already decided", body = ErrorBody),
        (status = 502, description = "A queued step could not be cancelled", body = ErrorBody),
        (status = 503, description = "The decision could not be recorded or read back in time", body = ErrorBody),
    ),
    tag = "ai"
)]
async fn reject(
    State(ai): State<Ai>,
    identity: Identity,
    Path(approval_id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    decide(&ai, &identity, approval_id, false, &body).await
}

async fn decide(
    ai: &Ai,
    identity: &Identity,
    approval_id: String,
    approved: bool,
    body: &[u8],
) -> Result<Json<Value>, ApiError> {
    let mut body = with_path_id(ops::read_body(body)?, "approval_id", approval_id);
    if body.0.contains_key("approved") {
        return Err(vibehq_api::body::unprocessable(
            "approved",
            "the path says approve or reject; approved is not a body field here",
        ));
    }
    body.0.insert("approved".into(), Value::Bool(approved));
    answer(ai, identity, Op::DecideApproval, body).await
}

/// A named event of a streamed answer.
type Named = (&'static str, Value);

/// Parses `body` for a streamed `op` (refusing bad input now), then runs it in the background,
/// sending its events as they happen and then `done` or `error`.
fn start(
    ai: &Ai,
    identity: &Identity,
    op: Op,
    body: Body,
) -> Result<mpsc::UnboundedReceiver<Named>, ApiError> {
    op.check_fields(&body)?;
    let caller = ops::caller(&body, identity)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let ai = ai.clone();
    match op {
        Op::Ask => {
            let input = AskInput::parse(&body, &ai.gateway)?;
            let gone = tx.clone();
            spawn_until_gone(gone, async move {
                let events = tx.clone();
                let mut sink = move |delta| {
                    let _ = events.send(("delta", json!(delta)));
                };
                let result = ai.gateway.stream(input.request(&caller), &mut sink).await;
                finish(&tx, result.map(|r| json!(r)).map_err(ApiError::from));
            });
        }
        Op::RunTools => {
            let input = RunInput::parse(&body, &ai)?;
            let gone = tx.clone();
            spawn_until_gone(gone, async move {
                let events = tx.clone();
                let mut sink = move |event: tools::RunEvent| {
                    let name = match &event {
                        tools::RunEvent::Step { .. } => "step",
                        tools::RunEvent::Delta { .. } => "delta",
                        tools::RunEvent::ToolResult { .. } => "tool_result",
                    };
                    let _ = events.send((name, json!(event)));
                };
                let result = tools::run(
                    &ai.gateway,
                    &ai.tools,
                    &caller,
                    input.run(),
                    Some(&mut sink),
                )
                .await;
                finish(&tx, result.map(|r| json!(r)).map_err(ApiError::from));
            });
        }
        other => {
            return Err(vibehq_api::body::unprocessable(
                "stream",
                format!("{} does not stream", other.name()),
            ));
        }
    }
    Ok(rx)
}

/// Runs `work` until it ends or the client stops listening (the SSE response or the socket
/// was dropped): a client that went away stops paying for model calls and tool runs.
fn spawn_until_gone(
    listener: mpsc::UnboundedSender<Named>,
    work: impl std::future::Future<Output = ()> + Send + 'static,
) {
    tokio::spawn(async move {
        tokio::select! {
            () = listener.closed() => tracing::info!("the client went away; stopped its AI call"),
            () = work => {}
        }
    });
}

fn finish(tx: &mpsc::UnboundedSender<Named>, result: Result<Value, ApiError>) {
    let _ = tx.send(match result {
        Ok(done) => ("done", done),
        Err(error) => (
            "error",
            json!(ErrorBody {
                error: *error.detail
            }),
        ),
    });
}

fn sse(
    events: mpsc::UnboundedReceiver<Named>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures::stream::unfold(events, |mut events| async move {
        let (name, data) = events.recv().await?;
        Some((
            Ok(Event::default().event(name).data(data.to_string())),
            events,
        ))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// `/ws/ai`: send one request `{"op": "ask" | "runTools", …the same body…}`; receive each
/// event as `{"event": name, "data": …}`, ending with `done` or `error`. Several requests may
/// follow one another on one connection.
async fn live(State(ai): State<Ai>, identity: Identity, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| serve_socket(socket, ai, identity))
}

async fn serve_socket(mut socket: WebSocket, ai: Ai, identity: Identity) {
    while let Some(Ok(message)) = socket.recv().await {
        let text = match message {
            Message::Text(text) => text,
            Message::Close(_) => return,
            Message::Binary(_) => {
                let refusal = ApiError::invalid("body", "send requests as JSON text messages");
                if send(
                    &mut socket,
                    "error",
                    json!(ErrorBody {
                        error: *refusal.detail
                    }),
                )
                .await
                .is_err()
                {
                    return;
                }
                continue;
            }
            _ => continue,
        };
        let mut events = match socket_request(&ai, &identity, text.as_bytes()) {
            Ok(events) => events,
            Err(error) => {
                let (name, data) = (
                    "error",
                    json!(ErrorBody {
                        error: *error.detail
                    }),
                );
                if send(&mut socket, name, data).await.is_err() {
                    return;
                }
                continue;
            }
        };
        while let Some((name, data)) = events.recv().await {
            if send(&mut socket, name, data).await.is_err() {
                return;
            }
        }
    }
}

fn socket_request(
    ai: &Ai,
    identity: &Identity,
    bytes: &[u8],
) -> Result<mpsc::UnboundedReceiver<Named>, ApiError> {
    let mut body = ops::read_body(bytes)?;
    let op = match body.0.remove("op") {
        Some(Value::String(op)) if op == "ask" => Op::Ask,
        Some(Value::String(op)) if op == "runTools" => Op::RunTools,
        _ => {
            return Err(vibehq_api::body::unprocessable(
                "op",
                "op must be \"ask\" or \"runTools\"",
            ));
        }
    };
    body.0.remove("stream");
    start(ai, identity, op, body)
}

async fn send(socket: &mut WebSocket, name: &str, data: Value) -> Result<(), axum::Error> {
    let text = json!({ "event": name, "data": data }).to_string();
    socket.send(Message::Text(text.into())).await
}
