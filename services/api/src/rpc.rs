//! NATS micro services: what every vibehq RPC service (`ContainerTaskQueueOps`,
//! `ContainerLoadBalancerOps`, …) shares.
//!
//! Workers and containers already hold a NATS connection; request-reply over it needs no HTTP
//! client and no address, and the micro protocol makes a service discoverable (`$SRV.PING`,
//! `$SRV.INFO`, `$SRV.STATS`) and spreads requests over every vibehq process through one queue
//! group. Every operation has two endpoints: `<prefix>.<operation>`, where a request acts as an
//! operator ([`Identity::Admin`]), and `<prefix>.<operation>.<worker>`, where it acts only as
//! that worker ([`Identity::Workers`]). The NATS server's permissions decide who may publish
//! where (a worker's user only on its own name's subjects, see `vibehq_nats::permissions`), so
//! RPC applies the rule a REST token does with no token of its own. Bodies are the REST API's
//! JSON; a refusal is a
//! service error (`Nats-Service-Error-Code` and `Nats-Service-Error` headers, empty payload)
//! whose code is the HTTP status REST would answer and whose description is REST's JSON error
//! body, `{"error":{"code","message","field"}}`, so an input is refused the same way whichever
//! door it came in by.

use std::future::Future;
use std::time::Duration;

use async_nats::service::{self, Request, ServiceExt};
use axum::body::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::auth::Identity;
use crate::error::{ApiError, ErrorBody};

/// One endpoint of a service.
pub trait Operation: Copy + Send + Sync + std::fmt::Debug + 'static {
    /// The endpoint's name, the last token of its subject (e.g. `submitTask`).
    fn name(self) -> &'static str;
}

/// A service's identity.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// The name in the micro protocol (`$SRV.PING.<name>`).
    pub name: &'static str,
    pub description: &'static str,
    /// The endpoints' subject prefix (`vibehq.rpc.tasks`).
    pub prefix: &'static str,
}

impl Spec {
    /// The subject of `operation`'s operators' endpoint.
    pub fn subject(&self, operation: impl Operation) -> String {
        format!("{}.{}", self.prefix, operation.name())
    }

    /// The subject where a request for `operation` acts as `worker`.
    pub fn subject_as(&self, operation: impl Operation, worker: &str) -> String {
        format!("{}.{}.{worker}", self.prefix, operation.name())
    }

    /// Who a request on `subject` (one of `operation`'s endpoints) acts as.
    fn identity(&self, operation: impl Operation, subject: &str) -> Identity {
        let worker = subject
            .strip_prefix(self.prefix)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|rest| rest.strip_prefix(operation.name()))
            .and_then(|rest| rest.strip_prefix('.'));
        match worker {
            Some(worker) => Identity::Workers(vec![worker.to_owned()]),
            None => Identity::Admin,
        }
    }
}

/// A NATS failure while starting or running a service.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op}: {source}")]
pub struct RpcError {
    pub op: &'static str,
    #[source]
    pub source: async_nats::Error,
}

impl RpcError {
    fn new(op: &'static str, source: impl Into<async_nats::Error>) -> Self {
        Self {
            op,
            source: source.into(),
        }
    }
}

/// Most requests answered at once; beyond it, requests wait in the subscription.
const MAX_IN_FLIGHT: usize = 1024;

/// How long shutdown lets requests in flight finish (a claim may be waiting for work).
const DRAIN: Duration = Duration::from_secs(5);

/// A registered service, ready to serve.
pub struct Micro<O> {
    spec: Spec,
    service: service::Service,
    requests: BoxStream<'static, (O, Request)>,
}

impl<O> std::fmt::Debug for Micro<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Micro")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl<O: Operation> Micro<O> {
    /// Registers the service and one endpoint per operation on `client`'s server.
    ///
    /// Returns once the server has the service's subscriptions (it answered the service's own
    /// `$SRV.PING` over the same connection), so a request sent afterwards from any connection
    /// to the same server reaches it; answers wait for [`Micro::serve`].
    pub async fn start(
        client: &async_nats::Client,
        spec: Spec,
        operations: &[O],
    ) -> Result<Self, RpcError> {
        let service = client
            .service_builder()
            .description(spec.description)
            .start(spec.name, env!("CARGO_PKG_VERSION"))
            .await
            .map_err(|e| RpcError::new("start the RPC service", e))?;
        match Self::endpoints(&service, client, spec, operations).await {
            Ok(requests) => Ok(Self {
                spec,
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
        spec: Spec,
        operations: &[O],
    ) -> Result<BoxStream<'static, (O, Request)>, RpcError> {
        let group = service.group(spec.prefix);
        let mut endpoints = Vec::with_capacity(operations.len());
        for &operation in operations {
            let name = operation.name();
            for (endpoint, subject) in [
                (name.to_owned(), name.to_owned()),
                (format!("{name}-as-worker"), format!("{name}.*")),
            ] {
                let endpoint = group
                    .endpoint_builder()
                    .name(endpoint)
                    .add(subject)
                    .await
                    .map_err(|e| RpcError::new("add an RPC endpoint", e))?;
                endpoints.push(endpoint.map(move |request| (operation, request)));
            }
        }
        // The ping is published after the subscriptions on this connection, so its answer
        // means the server has them all.
        client
            .request(format!("$SRV.PING.{}", spec.name), Bytes::new())
            .await
            .map_err(|e| RpcError::new("reach the RPC service", e))?;
        Ok(futures::stream::select_all(endpoints).boxed())
    }

    /// Answers requests with `handle` (given who each acts as), each on its own task, until
    /// `shutdown`; then stops
    /// taking requests and lets those in flight finish (for up to 5 s).
    pub async fn serve<H, F>(self, shutdown: CancellationToken, handle: H) -> Result<(), RpcError>
    where
        H: Fn(O, Identity, Bytes) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Result<Bytes, ApiError>> + Send + 'static,
    {
        let span = tracing::info_span!("rpc", service = self.spec.name);
        self.run(shutdown, handle).instrument(span).await
    }

    async fn run<H, F>(self, shutdown: CancellationToken, handle: H) -> Result<(), RpcError>
    where
        H: Fn(O, Identity, Bytes) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Result<Bytes, ApiError>> + Send + 'static,
    {
        let Self {
            spec,
            service,
            mut requests,
        } = self;
        let mut in_flight = JoinSet::new();
        tracing::info!(subjects = %format!("{}.>", spec.prefix), "RPC service running");
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
                        let identity = spec.identity(operation, request.message.subject.as_str());
                        let span = tracing::info_span!("rpc_request", otel.name = operation.name(), otel.kind = "server");
                        let traceparent = vibehq_events::trace::from_headers(request.message.headers.as_ref());
                        vibehq_events::trace::follow(&span, traceparent.as_deref());
                        in_flight.spawn(answer(handle.clone(), operation, identity, request).instrument(span));
                    }
                    None => break Err(RpcError::new(
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

async fn answer<O, H, F>(handle: H, operation: O, identity: Identity, request: Request)
where
    O: Operation,
    H: Fn(O, Identity, Bytes) -> F,
    F: Future<Output = Result<Bytes, ApiError>>,
{
    let response = match handle(operation, identity, request.message.payload.clone()).await {
        Ok(body) => Ok(body),
        Err(error) => {
            tracing::debug!(
                endpoint = operation.name(),
                code = error.detail.code,
                status = error.status.as_u16(),
                field = error.detail.field.as_deref(),
                "RPC request refused"
            );
            Err(service_error(error))
        }
    };
    if let Err(error) = request.respond(response).await {
        tracing::warn!(%error, endpoint = operation.name(), "cannot answer an RPC request");
    }
}

/// `value` as an RPC answer.
pub fn json(value: &impl Serialize) -> Result<Bytes, ApiError> {
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
pub fn service_error(error: ApiError) -> service::error::Error {
    let code = usize::from(error.status.as_u16());
    let body = ErrorBody {
        error: *error.detail,
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

    #[derive(Debug, Clone, Copy)]
    struct Claim;

    impl Operation for Claim {
        fn name(self) -> &'static str {
            "claimTask"
        }
    }

    #[test]
    fn a_request_acts_as_the_worker_its_subject_names() {
        let spec = Spec {
            name: "Test",
            description: "",
            prefix: "vibehq.rpc.tasks",
        };
        assert_eq!(
            spec.identity(Claim, &spec.subject_as(Claim, "factory-1")),
            Identity::Workers(vec!["factory-1".into()])
        );
        assert_eq!(spec.identity(Claim, &spec.subject(Claim)), Identity::Admin);
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
