//! `ContainerLoadBalancerOps`: the load balancer as a NATS micro service
//! (`vibehq.rpc.containers.<operation>`, see [`vibehq_api::rpc`] for the protocol).
//!
//! Bodies are JSON objects (an empty payload is `{}`); answers are the REST API's, and a
//! refusal carries REST's status as its code and REST's JSON error body as its description.
//! Scaling and restarting are an operator's: refused (403) on a worker's subject
//! (`vibehq.rpc.containers.<operation>.<worker>`).

use axum::body::Bytes;
use axum::http::StatusCode;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use vibehq_api::auth::Identity;
use vibehq_api::error::ApiError;
use vibehq_api::rpc::{Micro, RpcError, Spec, json};

use crate::http::{BalancerState, balancer_health};

/// The service's identity.
pub const SPEC: Spec = Spec {
    name: "ContainerLoadBalancerOps",
    description: "vibehq load balancer: scale, status, restart and health of container \
        instances. Bodies are JSON objects; errors carry the HTTP status as their code and the \
        JSON error body as their description.",
    prefix: "vibehq.rpc.containers",
};

/// The service's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `{instances}` → the pool's status after scaling.
    ScaleContainers,
    /// `{}` → the pool's status; `{container_id}` → one instance's.
    GetContainerStatus,
    /// `{container_id}` → `{restarting: id}`.
    RestartContainer,
    /// `{}` → the `/health/load-balancer` answer.
    HealthCheck,
}

impl Operation {
    pub const ALL: [Operation; 4] = [
        Operation::ScaleContainers,
        Operation::GetContainerStatus,
        Operation::RestartContainer,
        Operation::HealthCheck,
    ];
}

impl vibehq_api::rpc::Operation for Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::ScaleContainers => "scaleContainers",
            Operation::GetContainerStatus => "getContainerStatus",
            Operation::RestartContainer => "restartContainer",
            Operation::HealthCheck => "healthCheck",
        }
    }
}

/// Serves `ContainerLoadBalancerOps` until `shutdown`.
pub async fn run(
    state: BalancerState,
    client: async_nats::Client,
    shutdown: CancellationToken,
) -> Result<(), RpcError> {
    let micro = Micro::start(&client, SPEC, &Operation::ALL).await?;
    micro
        .serve(shutdown, move |operation, identity, payload| {
            let state = state.clone();
            async move { handle(&state, &identity, operation, &payload).await }
        })
        .await
}

async fn handle(
    state: &BalancerState,
    identity: &Identity,
    operation: Operation,
    payload: &[u8],
) -> Result<Bytes, ApiError> {
    let body = object(payload)?;
    let allowed: &[&str] = match operation {
        Operation::ScaleContainers => &["instances"],
        Operation::GetContainerStatus | Operation::RestartContainer => &["container_id"],
        Operation::HealthCheck => &[],
    };
    if let Some(unknown) = body.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            unknown.clone(),
            format!("unknown field {unknown:?}; this operation takes {allowed:?}"),
        ));
    }
    match operation {
        Operation::ScaleContainers | Operation::RestartContainer => {
            identity.require_admin("scale or restart containers")?;
        }
        Operation::GetContainerStatus | Operation::HealthCheck => {}
    }
    match operation {
        Operation::ScaleContainers => {
            let pool = state.pool()?;
            let max = pool.policy().max_instances;
            let instances = match body.get("instances") {
                Some(Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
                None => {
                    return Err(ApiError::invalid("instances", "instances is required"));
                }
                _ => None,
            }
            .ok_or_else(|| {
                ApiError::invalid(
                    "instances",
                    format!("instances must be a whole number from 0 to {max}"),
                )
            })?;
            json(&pool.scale(instances).await?)
        }
        Operation::GetContainerStatus => match container_id(&body, false)? {
            Some(id) => json(&state.instance(&id)?),
            None => json(&state.pool()?.status()),
        },
        Operation::RestartContainer => {
            let id = container_id(&body, true)?.unwrap_or_default();
            state.pool()?.restart(&id)?;
            json(&serde_json::json!({ "restarting": id }))
        }
        Operation::HealthCheck => json(&balancer_health(state).1),
    }
}

fn object(payload: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(payload) {
        Ok(Value::Object(body)) => Ok(body),
        Ok(_) => Err(ApiError::invalid("body", "the body must be a JSON object")),
        Err(e) => Err(ApiError::invalid(
            "body",
            format!("the body is not valid JSON: {e}"),
        )),
    }
}

fn container_id(body: &Map<String, Value>, required: bool) -> Result<Option<String>, ApiError> {
    match body.get("container_id") {
        Some(Value::String(id)) if !id.is_empty() => Ok(Some(id.clone())),
        None if !required => Ok(None),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "container_id must be an instance id (a non-empty string)",
            Some("container_id".into()),
        )),
    }
}
