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
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use vibehq_api::auth::Identity;
use vibehq_api::body::Body;
use vibehq_api::error::{ApiError, ErrorBody};

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
        .with_state(ai)
}

/// The AI routes' part of the OpenAPI document.
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
        reject,
        live
    ),
    components(schemas(
        ToolSpec,
        crate::route::Decision,
        crate::structured::Output,
        tools::Called,
        tools::Finished,
        tools::RunEvent,
        crate::evaluate::Evaluation,
        crate::agent::Plan,
        crate::agent::StepSpec,
        crate::provider::Delta,
        ErrorBody
    ))
)]
pub struct AiDoc;

async fn answer(ai: &Ai, identity: &Identity, op: Op, body: Body) -> Result<Json<Value>, ApiError> {
    Ok(Json(ops::handle(ai, identity, op, body).await?))
}

/// One model call through the gateway (`stream: true` answers as Server-Sent Events).
#[utoipa::path(
    post, path = "/api/ai/ask",
    request_body(content = Object, description = "`worker_name`, `container_name`, `prompt`, \
        `system`, `tier` (small|medium|large), `provider` (try first), `stream`, `timeout_ms`"),
    responses(
        (status = 200, description = "The answer, the provider and model that gave it, and the \
            request_id its attempts are recorded under; with `stream`, SSE events `delta`… then \
            `done` (this JSON) or `error`"),
        (status = 400, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 502, description = "Every provider failed", body = ErrorBody),
    ),
    tag = "ai"
)]
async fn ask(State(ai): State<Ai>, identity: Identity, body: Bytes) -> Result<Response, ApiError> {
    let body = Body::from_json(&body)?;
    if body.boolean("stream")? == Some(true) {
        return Ok(sse(start(&ai, &identity, Op::Ask, body)?).into_response());
    }
    Ok(answer(&ai, &identity, Op::Ask, body).await?.into_response())
}

/// `routePrompt`: the tier and model for a prompt, with the features and reasons.
#[utoipa::path(
    post, path = "/api/ai/route",
    request_body(content = Object, description = "`worker_name`, `container_name`, `prompt`"),
    responses((status = 200, body = crate::route::Decision), (status = 422, body = ErrorBody)),
    tag = "ai"
)]
async fn route_prompt(
    State(ai): State<Ai>,
    identity: Identity,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    answer(&ai, &identity, Op::RoutePrompt, Body::from_json(&body)?).await
}

/// `generateStructuredOutput`: an answer that satisfies a JSON Schema.
#[utoipa::path(
    post, path = "/api/ai/structured",
    request_body(content = Object, description = "`worker_name`, `container_name`, `prompt`, \
        `schema` (JSON Schema), `max_attempts` (1-10, default 3), `tier`, `provider`"),
    responses(
        (status = 200, body = crate::structured::Output),
        (status = 422, description = "Invalid schema, or never a valid answer", body = ErrorBody),
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
        Body::from_json(&body)?,
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

/// `callTool`: runs a tool with arguments checked against its schema.
#[utoipa::path(
    post, path = "/api/ai/tools/{tool}",
    params(("tool" = String, Path)),
    request_body(content = Object, description = "`worker_name`, `container_name`, `arguments`"),
    responses(
        (status = 200, body = tools::Called),
        (status = 404, description = "Unknown tool", body = ErrorBody),
        (status = 422, description = "Arguments do not satisfy the schema", body = ErrorBody),
    ),
    tag = "ai"
)]
async fn call_tool(
    State(ai): State<Ai>,
    identity: Identity,
    Path(tool): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = with_path_id(Body::from_json(&body)?, "tool", tool);
    answer(&ai, &identity, Op::CallTool, body).await
}

/// A model-driven tool loop (`stream: true` answers as Server-Sent Events).
#[utoipa::path(
    post, path = "/api/ai/runs",
    request_body(content = Object, description = "`worker_name`, `container_name`, `prompt`, \
        `system`, `tools` (names; all if absent), `max_steps` (1-20, default 5), `tier`, \
        `provider`, `stream`"),
    responses(
        (status = 200, description = "How the loop ended; with `stream`, SSE events `step`, \
            `delta`, `tool_result`… then `done` or `error`", body = tools::Finished),
        (status = 404, description = "Unknown tool", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    tag = "ai"
)]
async fn run_tools(
    State(ai): State<Ai>,
    identity: Identity,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = Body::from_json(&body)?;
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
    request_body(content = Object, description = "`worker_name`, `container_name`, `prompt`, \
        `criteria`, `threshold` (0-1, default 0.8), `max_rounds` (1-10, default 3), `tier`, \
        `provider`"),
    responses((status = 200, body = crate::evaluate::Evaluation), (status = 422, body = ErrorBody)),
    tag = "ai"
)]
async fn evaluate(
    State(ai): State<Ai>,
    identity: Identity,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    answer(&ai, &identity, Op::EvaluateModel, Body::from_json(&body)?).await
}

/// Turns a goal into a plan of agent tasks (the model proposes steps unless `steps` is given)
/// and runs it up to the first step that needs approval.
#[utoipa::path(
    post, path = "/api/ai/plans",
    request_body(content = Object, description = "`worker_name`, `container_name`, `goal`, \
        `steps` ([{title, description, requires_approval, command}], optional)"),
    responses((status = 200, body = crate::agent::Plan), (status = 422, body = ErrorBody)),
    tag = "ai"
)]
async fn create_plan(
    State(ai): State<Ai>,
    identity: Identity,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    answer(&ai, &identity, Op::CreatePlan, Body::from_json(&body)?).await
}

/// A plan, its tasks and its approvals.
#[utoipa::path(
    get, path = "/api/ai/plans/{plan_id}",
    params(("plan_id" = String, Path)),
    responses((status = 200, body = crate::agent::Plan), (status = 404, body = ErrorBody)),
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
    params(("approval_id" = String, Path)),
    request_body(content = Object, description = "`worker_name` (who decides), \
        `container_name`, `comment`"),
    responses(
        (status = 200, description = "The plan after continuing", body = crate::agent::Plan),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Already decided", body = ErrorBody),
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
    params(("approval_id" = String, Path)),
    request_body(content = Object, description = "`worker_name` (who decides), \
        `container_name`, `comment`"),
    responses(
        (status = 200, description = "The plan, stopped", body = crate::agent::Plan),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Already decided", body = ErrorBody),
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
    let mut body = with_path_id(Body::from_json(body)?, "approval_id", approval_id);
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
#[utoipa::path(get, path = "/ws/ai", tag = "ai",
    responses(
        (status = 101, description = "Switching Protocols. Send a text message `{\"op\": \"ask\" | \"runTools\", …the same body as POST /api/ai/ask or /api/ai/runs…}`; receive `{\"event\": name, \"data\": …}` messages (delta, step, tool_result), ending with done or error"),
        (status = 400, body = ErrorBody, description = "Not a WebSocket upgrade"),
    ))]
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
    let mut body = Body::from_json(bytes)?;
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
