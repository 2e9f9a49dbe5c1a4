//! `GET /health`: is the system able to do its job, and how far behind is the projection?

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

/// Reports NATS connectivity, the streams, and projector lag. Answers 503 when degraded.
#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let client = state.log.jetstream().client();
    let connected = client.connection_state() == async_nats::connection::State::Connected;
    let checkpoints = state.projector.checkpoints();
    let mut streams = Vec::new();
    for kind in StreamKind::ALL {
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
        match state.log.stream_info(kind).await {
            Ok(info) if info.cluster.as_ref().is_some_and(|c| c.leader.is_none()) => {
                entry.error = Some("the stream has no leader (cluster quorum lost?)".into());
            }
            Ok(info) => {
                entry.messages = Some(info.state.messages);
                entry.last_sequence = Some(info.state.last_sequence);
                entry.lag = Some(info.state.last_sequence.saturating_sub(projected));
            }
            Err(e) => entry.error = Some(e.to_string()),
        }
        streams.push(entry);
    }
    let ok = connected && streams.iter().all(|s| s.error.is_none());
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let health = Health {
        status: if ok { "ok" } else { "degraded" },
        nats: NatsHealth {
            connected,
            server_version: client.server_info().version,
            url: state.nats_url.clone(),
        },
        streams,
    };
    (status, Json(health))
}
