//! `AIOps`: the AI operations as a NATS micro service (`vibehq.rpc.ai.<operation>`, see
//! [`vibehq_api::rpc`] for the protocol): `evaluateModel`, `routePrompt`,
//! `generateStructuredOutput` and `callTool` (the seed's entrypoint), plus `ask`, `runTools`,
//! `createPlan`, `getPlan` and `decideApproval`.
//!
//! Bodies are the REST API's JSON objects (REST's path ids — `tool`, `plan_id`, `approval_id` —
//! are body fields here; `decideApproval` takes `approved`). Request-reply does not stream:
//! `stream: true` is refused, and streamed answers are served over SSE and `/ws/ai`.
//!
//! As every vibehq service, `vibehq.rpc.ai.<operation>.<worker>` acts only as that worker and
//! the bare subject as an operator (see [`vibehq_api::rpc`]).

use axum::body::Bytes;
use tokio_util::sync::CancellationToken;
use vibehq_api::auth::Identity;
use vibehq_api::body::Body;
use vibehq_api::error::ApiError;
use vibehq_api::rpc::{Micro, RpcError, Spec, json};

use crate::ops::{self, Ai, Op};

/// The service's identity.
pub const SPEC: Spec = Spec {
    name: "AIOps",
    description: "vibehq AI operations: model calls through the gateway, routing, structured \
        output, tools, evaluation and agent plans with approval. Bodies are JSON objects; errors \
        carry the HTTP status as their code and the JSON error body as their description.",
    prefix: "vibehq.rpc.ai",
};

impl vibehq_api::rpc::Operation for Op {
    fn name(self) -> &'static str {
        Op::name(self)
    }
}

/// Serves `AIOps` until `shutdown`.
pub async fn run(
    ai: Ai,
    client: async_nats::Client,
    shutdown: CancellationToken,
) -> Result<(), RpcError> {
    let micro = Micro::start(&client, SPEC, &Op::ALL).await?;
    micro
        .serve(shutdown, move |op, identity, payload| {
            let ai = ai.clone();
            async move { handle(&ai, &identity, op, &payload).await }
        })
        .await
}

async fn handle(ai: &Ai, identity: &Identity, op: Op, payload: &[u8]) -> Result<Bytes, ApiError> {
    json(&ops::handle(ai, identity, op, Body::from_json(payload)?).await?)
}
