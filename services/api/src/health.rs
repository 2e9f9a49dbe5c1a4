//! `GET /health`: is the system able to do its job, and how far behind is the projection?

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use vibehq_events::StreamKind;

use crate::AppState;

/// The health report.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` when NATS is unreachable or a stream cannot be read.
    pub status: &'static str,
    /// What is degraded, one sentence each (empty when `ok`).
    pub degraded: Vec<String>,
    pub nats: NatsHealth,
    pub streams: Vec<StreamHealth>,
}

/// The NATS connection.
#[derive(Debug, Serialize, ToSchema)]
pub struct NatsHealth {
    pub connected: bool,
    /// The server's version, as it announced itself.
    pub server_version: String,
    /// Where outside clients can reach this NATS server.
    pub url: String,
}

/// One stream and the projection's progress through it.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamHealth {
    pub name: &'static str,
    pub subjects: Vec<&'static str>,
    /// Events stored.
    pub messages: Option<u64>,
    pub last_sequence: Option<u64>,
    /// The last sequence the projection has applied.
    pub projected_sequence: u64,
    /// Events stored but not yet projected.
    pub lag: Option<u64>,
    /// Why the stream could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How long a stream may take to answer before health calls it degraded: the whole report
/// answers within a second whatever the broker's state.
const STREAM_CHECK: Duration = Duration::from_millis(800);

/// Reports NATS connectivity, the streams, and projector lag. Answers 503 when degraded, naming
/// what is, within a second whatever the broker's state (the streams are asked at once, each
/// for at most 0.8 s, and not at all while NATS is disconnected).
#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let health = report(&state).await;
    let status = if health.degraded.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health))
}

/// The health report (also read by `/metrics` for the streams and the projection's lag).
pub async fn report(state: &AppState) -> Health {
    let client = state.log.jetstream().client();
    let connected = client.connection_state() == async_nats::connection::State::Connected;
    let checkpoints = state.projector.checkpoints();
    let checks = StreamKind::ALL.map(|kind| {
        let log = &state.log;
        async move {
            let projected = checkpoints.get(kind);
            let mut entry = StreamHealth {
                name: kind.name(),
                subjects: kind.subjects().to_vec(),
                messages: None,
                last_sequence: None,
                projected_sequence: projected,
                lag: None,
                error: None,
            };
            if !connected {
                entry.error = Some("not checked: NATS is not connected".into());
                return entry;
            }
            match tokio::time::timeout(STREAM_CHECK, log.stream_info(kind)).await {
                Err(_) => entry.error = Some("the stream did not answer within 0.8 s".into()),
                Ok(Ok(info)) if info.cluster.as_ref().is_some_and(|c| c.leader.is_none()) => {
                    entry.error = Some("the stream has no leader (cluster quorum lost?)".into());
                }
                Ok(Ok(info)) => {
                    entry.messages = Some(info.state.messages);
                    entry.last_sequence = Some(info.state.last_sequence);
                    entry.lag = Some(info.state.last_sequence.saturating_sub(projected));
                }
                Ok(Err(e)) => entry.error = Some(e.to_string()),
            }
            entry
        }
    });
    let streams = futures::future::join_all(checks).await;
    let mut degraded = Vec::new();
    if !connected {
        degraded
            .push("nats: not connected (reconnecting); writes are refused as not stored".into());
    }
    for stream in &streams {
        if let (Some(error), true) = (&stream.error, connected) {
            degraded.push(format!("stream {}: {error}", stream.name));
        }
    }
    Health {
        status: if degraded.is_empty() {
            "ok"
        } else {
            "degraded"
        },
        degraded,
        nats: NatsHealth {
            connected,
            server_version: client.server_info().version,
            url: vibehq_nats::redact(&state.nats_url),
        },
        streams,
    }
}
