//! `ContainerTaskQueueOps`: the queue's operations as a NATS micro service
//! (`vibehq.rpc.tasks.<operation>`, see [`vibehq_api::rpc`] for the protocol).
//!
//! Every operation REST has, by the names of [`Op`]: the seed's `submitTask`, `getTasks`,
//! `claimTask`, `completeTask` and `failTask`, and `submitTasks`, `getTask`,
//! `claimTaskById`, `startTask`, `heartbeatTask` and `cancelTask`, so a worker that speaks
//! only NATS can do all a REST client can. A request is REST's JSON body, with `task_id` where
//! REST has it in the path (and a query's parameters as fields); it is answered by the same
//! code ([`ops::handle`]), and a refusal's code is the HTTP status REST would answer and its
//! description REST's JSON error body. "No content" (no work to claim, a heartbeat) is `null`.
//!
//! `vibehq.rpc.tasks.<operation>.<worker>` acts only as that worker, as a REST token issued
//! for it does (`worker_name` defaults to it; naming another is refused with 403); the bare
//! `vibehq.rpc.tasks.<operation>` acts as an operator. A worker's NATS user may publish only
//! on its own name's subjects.

use axum::body::Bytes;
use tokio_util::sync::CancellationToken;
use vibehq_api::auth::Identity;
use vibehq_api::error::ApiError;
use vibehq_api::rpc::{Micro, Spec, json};

use crate::Error;
use crate::ops::{self, Op, QueueState};

/// The service's name in the micro protocol (`$SRV.PING.ContainerTaskQueueOps`, …).
pub const NAME: &str = "ContainerTaskQueueOps";

/// The subject prefix of the endpoints: `vibehq.rpc.tasks.submitTask`, ….
pub const PREFIX: &str = "vibehq.rpc.tasks";

/// The service's identity.
pub const SPEC: Spec = Spec {
    name: NAME,
    description: "vibehq task queue: submit, list, get, claim, start, heartbeat, complete, fail \
        and cancel tasks. Bodies are the REST API's JSON (with task_id); errors carry the HTTP \
        status as their code and the JSON error body as their description.",
    prefix: PREFIX,
};

impl vibehq_api::rpc::Operation for Op {
    fn name(self) -> &'static str {
        Op::name(self)
    }
}

/// Serves `ContainerTaskQueueOps` until `shutdown`: [`Rpc::start`], then [`Rpc::serve`].
pub async fn run(
    state: QueueState,
    client: async_nats::Client,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    Rpc::start(state, client).await?.serve(shutdown).await
}

/// The registered service, ready to serve.
#[derive(Debug)]
pub struct Rpc {
    state: QueueState,
    micro: Micro<Op>,
}

impl Rpc {
    /// Registers the service and its endpoints on `client`'s server; returns once a request
    /// from any connection reaches it (see [`Micro::start`]).
    pub async fn start(state: QueueState, client: async_nats::Client) -> Result<Self, Error> {
        let micro = Micro::start(&client, SPEC, &Op::ALL).await?;
        Ok(Self { state, micro })
    }

    /// Answers requests until `shutdown`, then lets those in flight finish (for up to 5 s).
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), Error> {
        let state = self.state;
        self.micro
            .serve(shutdown, move |op, identity, payload| {
                let state = state.clone();
                async move { handle(&state, &identity, op, &payload).await }
            })
            .await?;
        Ok(())
    }
}

async fn handle(
    state: &QueueState,
    identity: &Identity,
    op: Op,
    payload: &[u8],
) -> Result<Bytes, ApiError> {
    let input = vibehq_api::body::json(payload)?;
    json(&ops::handle(state, identity, op, input).await?.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_live_under_vibehq_rpc_tasks() {
        let subjects: Vec<String> = Op::ALL.iter().map(|o| SPEC.subject(*o)).collect();
        assert_eq!(subjects[0], "vibehq.rpc.tasks.submitTask");
        assert!(subjects.contains(&"vibehq.rpc.tasks.heartbeatTask".to_owned()));
        assert!(subjects.contains(&"vibehq.rpc.tasks.setKeyLimits".to_owned()));
        assert_eq!(subjects.len(), 30);
    }
}
