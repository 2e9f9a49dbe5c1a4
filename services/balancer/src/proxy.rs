//! The reverse proxy: each request goes to an instance in rotation.
//!
//! Instances are picked by least outstanding requests (ties broken round robin) or plain round
//! robin. A request that cannot be delivered is tried on another instance when that is safe:
//! always if the connection was never made (nothing was sent), and for idempotent methods
//! (GET, HEAD, PUT, DELETE, OPTIONS, TRACE) on any failure before an answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::uri::PathAndQuery;
use axum::http::{HeaderName, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use vibehq_api::error::ApiError;

use crate::pool::{Pool, Slot};

/// How the proxy picks an instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Strategy {
    #[default]
    LeastOutstanding,
    RoundRobin,
}

impl std::str::FromStr for Strategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "least_outstanding" => Ok(Self::LeastOutstanding),
            "round_robin" => Ok(Self::RoundRobin),
            other => Err(format!(
                "unknown strategy {other:?}: use least_outstanding or round_robin"
            )),
        }
    }
}

/// Largest request body the proxy buffers (bodies are buffered so a request can be retried).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// Instances tried per request, at most.
const TRIES: usize = 3;

/// The proxy. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: Pool,
    strategy: Strategy,
    client: Client<HttpConnector, Body>,
    next: AtomicUsize,
}

impl Proxy {
    pub fn new(pool: Pool, strategy: Strategy) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Self {
            inner: Arc::new(Inner {
                pool,
                strategy,
                client,
                next: AtomicUsize::new(0),
            }),
        }
    }

    /// A router that proxies every request.
    pub fn router(self) -> axum::Router {
        axum::Router::new()
            .fallback(forward)
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
            .with_state(self)
    }

    /// The instance to try next, skipping `tried`.
    fn pick(&self, tried: &[Arc<Slot>]) -> Option<(Arc<Slot>, u16)> {
        let live = self.inner.pool.live();
        let candidates: Vec<_> = live
            .into_iter()
            .filter(|s| !tried.iter().any(|t| Arc::ptr_eq(t, s)))
            .filter_map(|s| s.target().map(|port| (s, port)))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed) % candidates.len();
        let mut rotated = candidates.iter().cycle().skip(start).take(candidates.len());
        match self.inner.strategy {
            Strategy::RoundRobin => rotated.next().cloned(),
            Strategy::LeastOutstanding => rotated
                .min_by_key(|(s, _)| s.outstanding.load(Ordering::Relaxed))
                .cloned(),
        }
    }
}

/// Counts a request against an instance while it is in flight.
struct InFlight(Arc<Slot>);

impl InFlight {
    fn new(slot: Arc<Slot>) -> Self {
        slot.outstanding.fetch_add(1, Ordering::Relaxed);
        Self(slot)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Forwards one request, timed (to the answer's head) for `/metrics`.
async fn forward(State(proxy): State<Proxy>, request: Request) -> Response {
    let started = std::time::Instant::now();
    let response = relay(&proxy, request).await;
    vibehq_metrics::metrics()
        .proxy_requests
        .get_or_create(&vibehq_metrics::ProxyLabels {
            worker_name: proxy.inner.pool.worker_name().to_owned(),
            status: response.status().as_u16(),
        })
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn relay(proxy: &Proxy, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    // A body is read whole so the request can be sent again; most requests have none.
    let body = if hyper::body::Body::is_end_stream(&body) {
        None
    } else {
        match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(body) => Some(body),
            Err(_) => {
                return ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("request bodies through the proxy are limited to {MAX_BODY} bytes"),
                    Some("body".into()),
                )
                .into_response();
            }
        }
    };
    let idempotent = matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    );
    for name in HOP_BY_HOP {
        parts.headers.remove(name);
    }
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut tried = Vec::new();
    let mut last_error = None;
    while tried.len() < TRIES {
        let Some((slot, port)) = proxy.pick(&tried) else {
            break;
        };
        let in_flight = InFlight::new(slot.clone());
        let uri = Uri::builder()
            .scheme("http")
            .authority(format!("127.0.0.1:{port}"))
            .path_and_query(path.clone())
            .build();
        let Ok(uri) = uri else {
            return ApiError::invalid("path", "the request path cannot be forwarded")
                .into_response();
        };
        let mut outgoing = axum::http::Request::new(match &body {
            Some(bytes) => Body::from(bytes.clone()),
            None => Body::from(axum::body::Bytes::new()),
        });
        *outgoing.method_mut() = parts.method.clone();
        *outgoing.uri_mut() = uri;
        *outgoing.headers_mut() = parts.headers.clone();
        match proxy.inner.client.request(outgoing).await {
            Ok(response) => {
                let (mut head, incoming) = response.into_parts();
                for name in HOP_BY_HOP {
                    head.headers.remove(name);
                }
                // The count drops when the answer's body has been passed on.
                let body = Body::new(Counted {
                    body: incoming,
                    _in_flight: in_flight,
                });
                return Response::from_parts(head, body);
            }
            Err(error) => {
                let unsent = error.is_connect();
                tracing::debug!(%error, port, unsent, "instance did not answer");
                last_error = Some(error.to_string());
                tried.push(slot);
                if !(unsent || idempotent) {
                    break;
                }
            }
        }
    }
    match last_error {
        Some(error) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            format!("no instance answered ({} tried): {error}", tried.len()),
            None,
        )
        .into_response(),
        None => ApiError::unavailable("no instance is in rotation").into_response(),
    }
}

/// A response body that holds its instance's in-flight count until it is done.
struct Counted {
    body: hyper::body::Incoming,
    _in_flight: InFlight,
}

impl hyper::body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Headers that describe one connection, not the request (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("keep-alive"),
];
