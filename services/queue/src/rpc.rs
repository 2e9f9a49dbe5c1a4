//! `ContainerTaskQueueOps`: the queue's commands as a NATS micro service.
//!
//! Containers and workers already hold a NATS connection; request-reply over it needs no HTTP
//! client and no address, and the micro protocol makes the service discoverable
//! (`$SRV.PING`, `$SRV.INFO`, `$SRV.STATS`) and spreads requests over every vibehq process
//! through one queue group. The endpoints are `vibehq.rpc.tasks.<operation>`
//! ([`Operation`]). Requests and answers are the JSON bodies of the REST API (plus `task_id`
//! where REST has it in the path), checked by the same code, so an input is refused the same way
//! whichever door it came in by. A refusal is a service error (`Nats-Service-Error-Code` and
//! `Nats-Service-Error` headers, empty payload) whose code is the HTTP status REST would
//! answer (400, 404, 409, 413, 422, 503, 504) and whose description is REST's JSON error body,
//! `{"error":{"code","message","field"}}`.

use std::time::Duration;

use async_nats::service::{self, Request, ServiceExt};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use vibehq_api::error::{ApiError, ErrorBody};

use crate::Error;
use crate::body::{self, Body};
use crate::http::{self, QueueState, Written};

/// The service's name in the micro protocol (`$SRV.PING.ContainerTaskQueueOps`, …).
pub const NAME: &str = "ContainerTaskQueueOps";

/// The subject prefix of the endpoints: `vibehq.rpc.tasks.submitTask`, ….
pub const PREFIX: &str = "vibehq.rpc.tasks";

/// Most requests answered at once; beyond it, requests wait in the subscription.
const MAX_IN_FLIGHT: usize = 1024;

/// How long shutdown lets requests in flight finish (a claim may be waiting for work).
const DRAIN: Duration = Duration::from_secs(5);

const DESCRIPTION: &str = "vibehq task queue: submit, list, claim, complete and fail tasks. \
    Bodies are the REST API's JSON; errors carry the HTTP status as their code and the JSON \
    error body as their description.";

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
        format!("{PREFIX}.{}", self.name())
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
pub struct Rpc {
    state: QueueState,
    service: service::Service,
    requests: BoxStream<'static, (Operation, Request)>,
}

impl std::fmt::Debug for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rpc")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Rpc {
    /// Registers the service and its endpoints on `client`'s server.
    ///
    /// Returns once the server has the service's subscriptions (it answered the service's own
    /// `$SRV.PING` over the same connection), so a request sent afterwards from any connection
    /// to the same server reaches it; answers wait for [`Rpc::serve`]. Fails if NATS refuses
    /// the subscriptions or the ping goes unanswered.
    pub async fn start(state: QueueState, client: async_nats::Client) -> Result<Self, Error> {
        let service = client
            .service_builder()
            .description(DESCRIPTION)
            .start(NAME, env!("CARGO_PKG_VERSION"))
            .await
            .map_err(|e| Error::nats("start the RPC service", e))?;
        match Self::endpoints(&service, &client).await {
            Ok(requests) => Ok(Self {
                state,
                service,
                requests,
            }),
            Err(error) => {
                let _ = service.stop().await;
                Err(error)
            }
        }
    }

    async fn endpoints(
        service: &service::Service,
        client: &async_nats::Client,
    ) -> Result<BoxStream<'static, (Operation, Request)>, Error> {
        let group = service.group(PREFIX);
        let mut endpoints = Vec::with_capacity(Operation::ALL.len());
        for operation in Operation::ALL {
            let endpoint = group
                .endpoint_builder()
                .name(operation.name())
                .add(operation.name())
                .await
                .map_err(|e| Error::nats("add an RPC endpoint", e))?;
            endpoints.push(endpoint.map(move |request| (operation, request)));
        }
        // The ping is published after the subscriptions on this connection, so its answer
        // means the server has them all.
        client
            .request(format!("$SRV.PING.{NAME}"), Bytes::new())
            .await
            .map_err(|e| Error::nats("reach the RPC service", e))?;
        Ok(futures::stream::select_all(endpoints).boxed())
    }

    /// Answers requests, each on its own task, until `shutdown`; then stops taking requests and
    /// lets those in flight finish (for up to 5 s).
    #[tracing::instrument(skip_all, fields(service = NAME))]
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Self {
            state,
            service,
            mut requests,
        } = self;
        let mut in_flight = JoinSet::new();
        tracing::info!(subjects = %format!("{PREFIX}.*"), "RPC service running");
        let result = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                    if let Err(error) = joined {
                        tracing::error!(%error, "an RPC handler failed");
                    }
                }
                request = requests.next(), if in_flight.len() < MAX_IN_FLIGHT => match request {
                    Some((operation, request)) => {
                        in_flight.spawn(answer(state.clone(), operation, request));
                    }
                    None => break Err(Error::nats(
                        "receive RPC requests",
                        std::io::Error::other("the NATS connection closed"),
                    )),
                },
            }
        };
        // Unsubscribe first, so the queue group hands new requests to other processes.
        drop(requests);
        let _ = service.stop().await;
        let drained = tokio::time::timeout(DRAIN, async {
            while in_flight.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                abandoned = in_flight.len(),
                "RPC requests still running at shutdown"
            );
        }
        tracing::info!("RPC service stopped");
        result
    }
}

#[tracing::instrument(skip_all, fields(endpoint = operation.name()))]
async fn answer(state: QueueState, operation: Operation, request: Request) {
    let response = match handle(&state, operation, &request.message.payload).await {
        Ok(body) => Ok(body),
        Err(error) => {
            tracing::debug!(
                code = error.detail.code,
                status = error.status.as_u16(),
                field = error.detail.field.as_deref(),
                "RPC request refused"
            );
            Err(service_error(error))
        }
    };
    if let Err(error) = request.respond(response).await {
        tracing::warn!(%error, "cannot answer an RPC request");
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
            let task_id = body.take_task_id()?;
            let done = body::completion(&body)?;
            let sequence = state
                .queue
                .complete(&task_id, done.attempt, &done.claimer, done.output)
                .await?;
            json(&Written { task_id, sequence })
        }
        Operation::FailTask => {
            let task_id = body.take_task_id()?;
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

fn json(value: &impl Serialize) -> Result<Bytes, ApiError> {
    serde_json::to_vec(value).map(Bytes::from).map_err(|error| {
        tracing::error!(%error, "cannot encode an RPC answer");
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the answer could not be encoded",
            None,
        )
    })
}

/// The service error for `error`: its HTTP status as the code, its JSON body as the
/// description.
fn service_error(error: ApiError) -> service::error::Error {
    let code = usize::from(error.status.as_u16());
    let body = ErrorBody {
        error: error.detail,
    };
    // Compact JSON escapes every control character inside strings, so the description has no
    // raw CR or LF and is a valid header value (async-nats panics on one that is not).
    let status = serde_json::to_string(&body).unwrap_or_else(|_| {
        r#"{"error":{"code":"internal","message":"the error could not be encoded"}}"#.to_owned()
    });
    service::error::Error { status, code }
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

    #[test]
    fn a_refusal_carries_the_http_status_and_the_json_error_body() {
        let error = service_error(ApiError::invalid(
            "status",
            "line one\r\nline two: \"quoted\"",
        ));
        assert_eq!(error.code, 400);
        assert!(!error.status.contains(['\r', '\n']), "{}", error.status);
        let body: serde_json::Value = serde_json::from_str(&error.status).expect("JSON");
        assert_eq!(body["error"]["field"], "status");
        assert_eq!(body["error"]["code"], "invalid_field");
        assert_eq!(body["error"]["message"], "line one\r\nline two: \"quoted\"");
    }
}
