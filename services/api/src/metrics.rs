//! `GET /metrics`: what the system does and holds, in the Prometheus text format (OpenMetrics).
//!
//! A scrape gathers three things into one registry (names prefixed `vibehq_`):
//! - this process's own families ([`vibehq_metrics::Metrics`]: HTTP, queue operations, proxy,
//!   model calls, the projector's applies);
//! - the fleet's figures, read from the projection in one read by every service's
//!   [`Figures`] (tasks, pending work, instances, AI spend);
//! - the streams: events stored, and how far the projection lags behind each.
//!
//! [`record_http`] is the middleware that times every request by its route's template.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use vibehq_metrics::{Figures, FloatGauge, HttpLabels, StreamLabels, gauges, metrics};

use crate::AppState;
use crate::error::ApiError;

/// The OpenMetrics text format's media type, which Prometheus asks for and parses.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What `/metrics` needs besides the API's state: every service's projection figures.
#[derive(Debug, Clone)]
pub struct MetricsState {
    pub app: AppState,
    pub figures: Arc<Vec<Box<dyn Figures>>>,
}

/// The metrics, in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text")))]
pub async fn scrape(State(state): State<MetricsState>) -> Result<Response, ApiError> {
    let figures = state.figures.clone();
    let mut registry = state
        .app
        .reader
        .read(move |conn| {
            let mut registry = Registry::with_prefix("vibehq");
            for source in figures.iter() {
                source.read(conn, &mut registry).map_err(|source| {
                    vibehq_projector::Error::Sqlite {
                        op: "read the figures for /metrics",
                        source,
                    }
                })?;
            }
            Ok(registry)
        })
        .await
        .map_err(|error| {
            tracing::error!(%error, "cannot read the projection for /metrics");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "projection_unreadable",
                "the projection could not be read",
                None,
            )
        })?;
    metrics().register(&mut registry);

    let health = crate::health::report(&state.app).await;
    let stream = |name: &str| StreamLabels {
        stream: name.to_owned(),
    };
    let streams = &health.streams;
    registry.register(
        "stream_messages",
        "Events stored in each stream (absent while the stream cannot be read)",
        gauges(
            streams
                .iter()
                .filter_map(|s| Some((stream(s.name), s.messages? as f64))),
        ),
    );
    registry.register(
        "projection_sequence",
        "The last stream sequence this process's projection has applied",
        gauges(
            streams
                .iter()
                .map(|s| (stream(s.name), s.projected_sequence as f64)),
        ),
    );
    registry.register(
        "projection_lag_events",
        "Events stored but not yet applied to this process's projection",
        gauges(
            streams
                .iter()
                .filter_map(|s| Some((stream(s.name), s.lag? as f64))),
        ),
    );
    let connected = FloatGauge::default();
    connected.set(f64::from(u8::from(health.nats.connected)));
    registry.register(
        "nats_connected",
        "1 while this process is connected to NATS",
        connected,
    );

    let mut text = String::new();
    encode(&mut text, &registry).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the metrics could not be encoded",
            None,
        )
    })?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

/// Times every request by its route's template (`/api/tasks/{task_id}`; `unmatched` for a
/// path no route has), method and status.
pub async fn record_http(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics()
        .http_requests
        .get_or_create(&HttpLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .observe(started.elapsed().as_secs_f64());
    response
}
