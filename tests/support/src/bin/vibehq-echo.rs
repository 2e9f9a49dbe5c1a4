//! A stand-in for a container instance, for the load balancer's tests and benchmark.
//!
//! Serves HTTP on `$PORT`: `GET /health` answers 200 until `POST /fail` (then 503), and every
//! other request answers `<instance id> <method> <path>` (the id from `$VIBEHQ_INSTANCE_ID`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::routing::{get, post};

#[derive(Clone)]
struct Echo {
    id: Arc<str>,
    failing: Arc<AtomicBool>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| std::io::Error::other("set PORT to the port to serve on"))?;
    let echo = Echo {
        id: std::env::var("VIBEHQ_INSTANCE_ID")
            .unwrap_or_else(|_| "echo".into())
            .into(),
        failing: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/health", get(health))
        .route("/fail", post(fail))
        .fallback(answer)
        .with_state(echo);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await
}

async fn health(State(echo): State<Echo>) -> StatusCode {
    if echo.failing.load(Ordering::Relaxed) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

async fn fail(State(echo): State<Echo>) -> StatusCode {
    echo.failing.store(true, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

async fn answer(State(echo): State<Echo>, request: Request) -> String {
    format!("{} {} {}", echo.id, request.method(), request.uri().path())
}
