//! The load balancer's REST API, its health endpoint and `/ws/containers`.

use axum::Json;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use vibehq_api::auth::Identity;
use vibehq_api::error::{ApiError, ErrorBody};
use vibehq_api::params::Params;
use vibehq_projector::Reader;

use crate::Error;
use crate::pool::{InstanceStatus, Pool, PoolStatus};

/// What the handlers share: the pool, if this process runs one, and the projection (for
/// usage, which covers every process's instances).
#[derive(Debug, Clone, Default)]
pub struct BalancerState {
    pub pool: Option<Pool>,
    pub reader: Option<Reader>,
}

impl BalancerState {
    pub(crate) fn pool(&self) -> Result<&Pool, ApiError> {
        self.pool.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "not_configured",
                "no service is configured for the load balancer: set [balancer] program (or \
                 image) in the configuration file (see deploy/vibehq.example.toml)",
                None,
            )
        })
    }
}

impl BalancerState {
    /// The balancer's part of the OpenAPI document, with the pool's own bounds: how many
    /// instances `scale` takes is the configured maximum's business.
    pub fn doc(&self) -> utoipa::openapi::OpenApi {
        use utoipa::openapi::RefOr;
        let mut doc = <BalancerDoc as utoipa::OpenApi>::openapi();
        let Some(pool) = &self.pool else {
            return doc;
        };
        let max = pool.policy().max_instances;
        let scale = doc
            .paths
            .paths
            .get_mut("/api/containers/scale/{instances}")
            .and_then(|item| item.post.as_mut());
        for param in scale
            .into_iter()
            .flat_map(|op| op.parameters.iter_mut().flatten())
        {
            if let RefOr::T(param) = param
                && param.name == "instances"
            {
                param.schema = Some(vibehq_api::schema::from_json(
                    &serde_json::json!({"type": "integer", "minimum": 0, "maximum": max}),
                ));
            }
        }
        doc
    }

    /// One instance's status, or 404 naming `container_id`.
    pub(crate) fn instance(&self, container_id: &str) -> Result<InstanceStatus, ApiError> {
        self.pool()?
            .instance(container_id)
            .ok_or_else(|| Error::UnknownInstance(container_id.to_owned()).into())
    }
}

/// The balancer's routes.
pub fn router(state: BalancerState) -> axum::Router {
    axum::Router::new()
        .route("/api/containers/scale/{instances}", post(scale))
        .route("/api/containers/status", get(status))
        .route(
            "/api/containers/health/{container_id}",
            get(instance_health),
        )
        .route("/api/containers/{container_id}/restart", post(restart))
        .route("/api/containers/usage", get(usage))
        .route("/health/load-balancer", get(health))
        .route("/ws/containers", get(live))
        .with_state(state)
}

/// The balancer's part of the OpenAPI document.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(scale, status, instance_health, restart, usage, health, live),
    components(schemas(PoolStatus, InstanceStatus, BalancerHealth, WorkerUsage, ErrorBody))
)]
pub struct BalancerDoc;

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        match error {
            Error::TooMany { asked, max } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                format!("{asked} instances asked for; at most {max} are allowed"),
                Some("instances".into()),
            ),
            Error::UnknownInstance(id) => {
                ApiError::not_found("container_id", format!("no instance {id}"))
            }
            other => ApiError::unavailable(other.to_string()),
        }
    }
}

/// Runs the given number of instances.
#[utoipa::path(
    post,
    path = "/api/containers/scale/{instances}",
    params(("instances" = u32, Path, description = "Instances to run (0 to the configured maximum)")),
    responses(
        (status = 200, description = "The pool after scaling (new instances may still be starting)", body = PoolStatus),
        (status = 400, description = "Not a whole number", body = ErrorBody),
        (status = 403, description = "Only an operator may scale", body = ErrorBody),
        (status = 422, description = "More than the maximum", body = ErrorBody),
        (status = 409, description = "No service configured", body = ErrorBody),
    ),
    tag = "containers"
)]
async fn scale(
    State(state): State<BalancerState>,
    identity: Identity,
    Path(instances): Path<String>,
) -> Result<Json<PoolStatus>, ApiError> {
    identity.require_admin("scale the containers")?;
    let pool = state.pool()?;
    let max = pool.policy().max_instances;
    let instances: u32 = instances.parse().map_err(|_| {
        ApiError::invalid(
            "instances",
            format!("instances must be a whole number from 0 to {max}, not {instances:?}"),
        )
    })?;
    Ok(Json(pool.scale(instances).await?))
}

/// Every instance and its state.
#[utoipa::path(
    get,
    path = "/api/containers/status",
    responses(
        (status = 200, body = PoolStatus),
        (status = 409, description = "No service configured", body = ErrorBody),
    ),
    tag = "containers"
)]
async fn status(State(state): State<BalancerState>) -> Result<Json<PoolStatus>, ApiError> {
    Ok(Json(state.pool()?.status()))
}

/// One instance, with its latest health checks.
#[utoipa::path(
    get,
    path = "/api/containers/health/{container_id}",
    params(("container_id" = String, Path, description = "The instance id")),
    responses(
        (status = 200, body = InstanceStatus),
        (status = 404, description = "No such instance", body = ErrorBody),
    ),
    tag = "containers"
)]
async fn instance_health(
    State(state): State<BalancerState>,
    Path(container_id): Path<String>,
) -> Result<Json<InstanceStatus>, ApiError> {
    state.instance(&container_id).map(Json)
}

/// Restarts one instance now.
#[utoipa::path(
    post,
    path = "/api/containers/{container_id}/restart",
    params(("container_id" = String, Path, description = "The instance id")),
    responses(
        (status = 202, description = "The restart is under way"),
        (status = 403, description = "Only an operator may restart", body = ErrorBody),
        (status = 404, description = "No such instance", body = ErrorBody),
    ),
    tag = "containers"
)]
async fn restart(
    State(state): State<BalancerState>,
    identity: Identity,
    Path(container_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    identity.require_admin("restart a container")?;
    state.pool()?.restart(&container_id)?;
    Ok(StatusCode::ACCEPTED)
}

/// What one worker's instances have run.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WorkerUsage {
    pub worker_name: String,
    /// Instances it has had (any state).
    pub instances: i64,
    /// Of those, instances whose process runs now.
    pub running: i64,
    /// Seconds their processes have run, up to now.
    pub instance_seconds: f64,
}

/// Instance-seconds per worker_name, from the projection (every vibehq process's instances).
#[utoipa::path(
    get,
    path = "/api/containers/usage",
    params(("worker_name" = Option<String>, Query, description = "Only this worker")),
    responses(
        (status = 200, body = Vec<WorkerUsage>),
        (status = 400, description = "An unknown query parameter", body = ErrorBody),
    ),
    tag = "containers"
)]
async fn usage(
    State(state): State<BalancerState>,
    Params(mut params): Params,
) -> Result<Json<Vec<WorkerUsage>>, ApiError> {
    let worker = params.remove("worker_name");
    if let Some(unknown) = params.keys().next() {
        return Err(ApiError::invalid(
            unknown.clone(),
            format!("unknown query parameter {unknown:?}; usage takes worker_name"),
        ));
    }
    let reader = state
        .reader
        .clone()
        .ok_or_else(|| ApiError::unavailable("this process keeps no projection"))?;
    let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let rows = reader
        .read(move |conn| {
            let sqlite = |source| vibehq_projector::Error::Sqlite {
                op: "read instance usage",
                source,
            };
            let mut statement = conn
                .prepare(
                    "SELECT worker_name, COUNT(*), COUNT(running_since_ms),
                       SUM(usage_ms + CASE WHEN running_since_ms IS NULL THEN 0
                                      ELSE MAX(0, ?1 - running_since_ms) END) / 1000.0
                     FROM container_instances
                     WHERE ?2 IS NULL OR worker_name = ?2
                     GROUP BY worker_name ORDER BY worker_name",
                )
                .map_err(sqlite)?;
            let rows = statement
                .query_map(rusqlite::params![now_ms, worker], |row| {
                    Ok(WorkerUsage {
                        worker_name: row.get(0)?,
                        instances: row.get(1)?,
                        running: row.get(2)?,
                        instance_seconds: row.get(3)?,
                    })
                })
                .map_err(sqlite)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sqlite)?;
            Ok(rows)
        })
        .await
        .map_err(|e| ApiError::unavailable(format!("cannot read the projection: {e}")))?;
    Ok(Json(rows))
}

/// The load balancer's health.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BalancerHealth {
    /// `ok` when every desired instance is in rotation, `degraded` when some are, `down` when
    /// none is (and some are wanted), `idle` when none is wanted or no service is configured.
    pub status: &'static str,
    /// Whether this process runs a load balancer at all (a `[balancer]` table): without one,
    /// the `/api/containers/…` routes answer 409 `not_configured`.
    pub configured: bool,
    pub desired: u32,
    pub healthy: u32,
}

/// 200 unless instances are wanted and none is in rotation (503).
#[utoipa::path(
    get,
    path = "/health/load-balancer",
    responses(
        (status = 200, body = BalancerHealth),
        (status = 503, description = "Instances are wanted and none is in rotation", body = BalancerHealth),
    ),
    tag = "containers"
)]
async fn health(State(state): State<BalancerState>) -> (StatusCode, Json<BalancerHealth>) {
    let (code, health) = balancer_health(&state);
    (code, Json(health))
}

/// The load balancer's health, and the HTTP status that goes with it.
pub(crate) fn balancer_health(state: &BalancerState) -> (StatusCode, BalancerHealth) {
    let (desired, healthy) = state
        .pool
        .as_ref()
        .map(|p| p.status())
        .map_or((0, 0), |s| (s.desired, s.healthy));
    let (code, status) = match (desired, healthy) {
        (0, _) => (StatusCode::OK, "idle"),
        (d, h) if h >= d => (StatusCode::OK, "ok"),
        (_, 0) => (StatusCode::SERVICE_UNAVAILABLE, "down"),
        _ => (StatusCode::OK, "degraded"),
    };
    (
        code,
        BalancerHealth {
            status,
            configured: state.pool.is_some(),
            desired,
            healthy,
        },
    )
}

/// `GET /ws/containers`: the pool's status, then every instance change as it happens.
#[utoipa::path(get, path = "/ws/containers", tag = "containers",
    responses(
        (status = 101, description = "Switching Protocols. The first WebSocket text message is the pool's status (as GET /api/containers/status answers it); each one after is an instance change"),
        (status = 409, body = ErrorBody, description = "No load balancer is configured ([balancer] in the config file)"),
    ))]
async fn live(State(state): State<BalancerState>, upgrade: WebSocketUpgrade) -> Response {
    match state.pool() {
        Ok(pool) => {
            let pool = pool.clone();
            upgrade.on_upgrade(move |socket| feed(socket, pool))
        }
        Err(error) => error.into_response(),
    }
}

async fn feed(mut socket: WebSocket, pool: Pool) {
    let mut changes = pool.changes();
    let Ok(first) = serde_json::to_string(&pool.status()) else {
        return;
    };
    if socket.send(Message::Text(first.into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            change = changes.recv() => {
                let text = match change {
                    Ok(instance) => serde_json::to_string(&instance),
                    // Fell behind: send the whole picture again.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        serde_json::to_string(&pool.status())
                    }
                    Err(_) => return,
                };
                let Ok(text) = text else { return };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
