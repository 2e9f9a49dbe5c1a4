//! `ContainerTaskQueueOps`: the queue's commands as a NATS micro service
//! (`vibehq.rpc.tasks.<operation>`, see [`vibehq_api::rpc`] for the protocol).
//!
//! Requests and answers are the JSON bodies of the REST API (plus `task_id` where REST has it
//! in the path), checked by the same code, so an input is refused the same way whichever door
//! it came in by; a refusal's code is the HTTP status REST would answer (400, 404, 409, 413,
//! 422, 503, 504) and its description REST's JSON error body.

use axum::body::Bytes;
use tokio_util::sync::CancellationToken;
use vibehq_api::error::ApiError;
use vibehq_api::rpc::{Micro, Spec, json};

use crate::Error;
use crate::body::{self, Body};
use crate::http::{self, QueueState, Written};

/// The service's name in the micro protocol (`$SRV.PING.ContainerTaskQueueOps`, …).
pub const NAME: &str = "ContainerTaskQueueOps";

/// The subject prefix of the endpoints: `vibehq.rpc.tasks.submitTask`, ….
pub const PREFIX: &str = "vibehq.rpc.tasks";

/// The service's identity.
pub const SPEC: Spec = Spec {
    name: NAME,
    description: "vibehq task queue: submit, list, claim, complete and fail tasks. Bodies are \
        the REST API's JSON; errors carry the HTTP status as their code and the JSON error body \
        as their description.",
    prefix: PREFIX,
};

/// The service's endpoints; each is named as its subject's last token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `POST /api/tasks`'s body → `Submitted`.
    SubmitTask,
    /// `{status?, worker_name?, container_name?, task_type?, limit?, cursor?, min_seq?}` →
    /// `GET /api/tasks`'s page, from the projection.
    GetTasks,
    /// `{worker_name, container_name?, wait_ms?}` → the `Claim`, or `null` when no work came.
    ClaimTask,
    /// `{task_id, worker_name, container_name?, attempt, output?}` → `Written`.
    CompleteTask,
    /// `{task_id, worker_name, container_name?, attempt, error, retry?}` → `FailOutcome`.
    FailTask,
}

impl Operation {
    /// Every endpoint.
    pub const ALL: [Operation; 5] = [
        Operation::SubmitTask,
        Operation::GetTasks,
        Operation::ClaimTask,
        Operation::CompleteTask,
        Operation::FailTask,
    ];

    /// The endpoint's name, e.g. `submitTask`.
    pub fn name(self) -> &'static str {
        match self {
            Operation::SubmitTask => "submitTask",
            Operation::GetTasks => "getTasks",
            Operation::ClaimTask => "claimTask",
            Operation::CompleteTask => "completeTask",
            Operation::FailTask => "failTask",
        }
    }

    /// The endpoint's subject, e.g. `vibehq.rpc.tasks.submitTask`.
    pub fn subject(self) -> String {
        SPEC.subject(self)
    }
}

impl vibehq_api::rpc::Operation for Operation {
    fn name(self) -> &'static str {
        Operation::name(self)
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
    micro: Micro<Operation>,
}

impl Rpc {
    /// Registers the service and its endpoints on `client`'s server; returns once a request
    /// from any connection reaches it (see [`Micro::start`]).
    pub async fn start(state: QueueState, client: async_nats::Client) -> Result<Self, Error> {
        let micro = Micro::start(&client, SPEC, &Operation::ALL).await?;
        Ok(Self { state, micro })
    }

    /// Answers requests until `shutdown`, then lets those in flight finish (for up to 5 s).
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), Error> {
        let state = self.state;
        self.micro
            .serve(shutdown, move |operation, payload| {
                let state = state.clone();
                async move { handle(&state, operation, &payload).await }
            })
            .await?;
        Ok(())
    }
}

/// Runs one request: the body is checked exactly as the REST route checks it.
async fn handle(
    state: &QueueState,
    operation: Operation,
    payload: &[u8],
) -> Result<Bytes, ApiError> {
    let mut body = Body::from_json(payload)?;
    match operation {
        Operation::SubmitTask => {
            let (by, new) = body::new_task(&body)?;
            json(&state.queue.submit(&by, new).await?)
        }
        Operation::GetTasks => {
            let params = body::list_params(
                &body,
                &[
                    "status",
                    "worker_name",
                    "container_name",
                    "task_type",
                    "limit",
                    "cursor",
                    "min_seq",
                ],
            )?;
            json(&http::list_tasks(state, params).await?)
        }
        Operation::ClaimTask => {
            let (claimer, wait) = body::claim_next(&body)?;
            json(&state.queue.claim(&claimer, wait).await?)
        }
        Operation::CompleteTask => {
            let task_id = body::take_task_id(&mut body)?;
            let done = body::completion(&body)?;
            let sequence = state
                .queue
                .complete(&task_id, done.attempt, &done.claimer, done.output)
                .await?;
            json(&Written { task_id, sequence })
        }
        Operation::FailTask => {
            let task_id = body::take_task_id(&mut body)?;
            let failed = body::failure(&body)?;
            json(
                &state
                    .queue
                    .fail(
                        &task_id,
                        failed.attempt,
                        &failed.claimer,
                        failed.error,
                        failed.retry,
                    )
                    .await?,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_live_under_vibehq_rpc_tasks() {
        let subjects: Vec<String> = Operation::ALL.iter().map(|o| o.subject()).collect();
        assert_eq!(
            subjects,
            [
                "vibehq.rpc.tasks.submitTask",
                "vibehq.rpc.tasks.getTasks",
                "vibehq.rpc.tasks.claimTask",
                "vibehq.rpc.tasks.completeTask",
                "vibehq.rpc.tasks.failTask",
            ]
        );
    }
}
