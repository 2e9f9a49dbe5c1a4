//! The HTTP API: queries over the projections, health, and the OpenAPI document.
//!
//! The API never writes a projection and never reads the streams' past to answer a query:
//! reads go to SQLite, and a client that just appended an event passes its sequence as
//! `min_seq` to read its own write. Every error is JSON naming the field at fault
//! ([`error::ErrorBody`]); the whole surface is described at `/openapi.json`.
//!
//! # Layout
//! - [`Options`] → [`Api::run`]: binds and serves until shutdown.
//! - [`router`]: the routes, for tests and for composing with other services' routes.
//! - [`tables`]: `GET /api/tables`, `/api/tables/{table}`, `/api/tables/{table}/{key}`.
//! - [`health`]: `GET /health`.
//! - [`metrics`]: `GET /metrics` (Prometheus), and the middleware timing every request.
//! - [`auth`]: bearer tokens (required beyond loopback).
//! - [`error`]: the JSON error body.
//! - [`body`]: JSON request bodies, parsed so every error names its field (REST and RPC alike).
//! - [`params`]: query parameters, each given at most once.
//! - [`rpc`]: the plumbing of the NATS micro services (`$SRV.*`) other services expose.

pub mod auth;
pub mod body;
pub mod error;
pub mod health;
pub mod metrics;
pub mod params;
pub mod rpc;
pub mod schema;
pub mod tables;

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

use tables::TablePaths;
use vibehq_events::EventLog;
use vibehq_projector::{Handle, Reader};

/// The OpenAPI description of the API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "vibehq",
        description = "Control plane for workers and containers: projections of the event log."
    ),
    paths(
        health::health,
        metrics::scrape,
        tables::index
    ),
    modifiers(&TablePaths),
    components(schemas(
        error::ErrorBody,
        error::ErrorDetail,
        tables::TableInfo,
        tables::RowsPage,
        health::Health,
        health::NatsHealth,
        health::StreamHealth
    ))
)]
#[derive(Debug)]
pub struct ApiDoc;

/// What the handlers share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub reader: Reader,
    pub projector: Handle,
    pub log: EventLog,
    /// The NATS URL reported by `/health`, for outside clients.
    pub nats_url: String,
}

/// How the API serves.
#[derive(Debug, Clone)]
pub struct Options {
    pub addr: SocketAddr,
    /// Bearer tokens accepted; required when `addr` is not loopback. Empty: no authentication.
    pub tokens: auth::Tokens,
}

/// Why the API stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "refusing to serve on {addr} without API tokens: beyond loopback the API needs \
         authentication. Set VIBEHQ_API_TOKENS (comma-separated) or api_tokens in the config \
         file, or listen on 127.0.0.1"
    )]
    Unprotected { addr: SocketAddr },
    #[error(
        "cannot listen on {addr}: {source} (is another vibehq running? choose another --http-addr)"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// The HTTP API service.
pub struct Api {
    options: Options,
    state: AppState,
    extensions: Vec<(Router, utoipa::openapi::OpenApi)>,
    public: Vec<Router>,
    figures: Vec<Box<dyn vibehq_metrics::Figures>>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("options", &self.options)
            .field("extensions", &self.extensions.len())
            .field("public", &self.public.len())
            .field("figures", &self.figures)
            .finish_non_exhaustive()
    }
}

impl Api {
    pub fn new(options: Options, state: AppState) -> Self {
        Self {
            options,
            state,
            extensions: Vec::new(),
            public: Vec::new(),
            figures: Vec::new(),
        }
    }

    /// Serves these routes without a token: only routes that hold no data (the dashboard's
    /// files). Everything else stays behind the API's tokens.
    pub fn serve_public(mut self, routes: Router) -> Self {
        self.public.push(routes);
        self
    }

    /// Adds a service's projection figures to `/metrics`.
    pub fn measure(mut self, figures: impl vibehq_metrics::Figures) -> Self {
        self.figures.push(Box::new(figures));
        self
    }

    /// Serves another service's routes too, and adds its part of the OpenAPI document.
    pub fn extend(mut self, routes: Router, doc: utoipa::openapi::OpenApi) -> Self {
        self.extensions.push((routes, doc));
        self
    }

    /// Binds, then serves until `shutdown`; in-flight requests finish first.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let addr = self.options.addr;
        if !addr.ip().is_loopback() && self.options.tokens.is_empty() {
            return Err(Error::Unprotected { addr });
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let local = listener.local_addr().map_err(Error::Serve)?;
        tracing::info!(addr = %local, "HTTP API listening");
        let metrics = metrics::MetricsState {
            app: self.state.clone(),
            figures: std::sync::Arc::new(self.figures),
        };
        let routes = router(self.state, self.extensions).merge(
            Router::new()
                .route("/metrics", get(metrics::scrape))
                .with_state(metrics),
        );
        let mut app = auth::protect(routes, self.options.tokens);
        for public in self.public {
            app = app.merge(public);
        }
        let app = app.layer(axum::middleware::from_fn(metrics::record_http));
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(Error::Serve)
    }
}

/// The API's routes over `state`, with other services' routes and OpenAPI parts merged in.
pub fn router(state: AppState, extensions: Vec<(Router, utoipa::openapi::OpenApi)>) -> Router {
    let mut doc = ApiDoc::openapi();
    let mut routes = Router::new();
    for (extra_routes, extra_doc) in extensions {
        doc.merge(extra_doc);
        routes = routes.merge(extra_routes);
    }
    error::document_common_errors(&mut doc);
    let doc = std::sync::Arc::new(doc);
    Router::new()
        .route("/health", get(health::health))
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .route("/api/tables", get(tables::index))
        .route("/api/tables/{table}", get(tables::list))
        .route("/api/tables/{table}/{key}", get(tables::get))
        .with_state(state)
        .merge(routes)
        .fallback(not_found)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(
                    |response: &axum::response::Response,
                     _: std::time::Duration,
                     span: &tracing::Span| {
                        span.record("http.response.status_code", response.status().as_u16());
                    },
                ),
        )
}

/// One span per request, named by its route, continuing the caller's trace when it sends a
/// `traceparent` header: so a task submitted by a traced client is in the client's trace.
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |path| path.as_str());
    let method = request.method();
    let span = tracing::info_span!(
        "http",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
    );
    let traceparent = request
        .headers()
        .get(vibehq_events::trace::TRACEPARENT)
        .and_then(|value| value.to_str().ok());
    vibehq_events::trace::follow(&span, traceparent);
    span
}

async fn not_found(uri: axum::http::Uri) -> error::ApiError {
    error::ApiError::not_found("path", format!("no route for {}", uri.path()))
}
