//! A stand-in for a container instance, for the load balancer's tests and benchmark.
//!
//! Serves HTTP on `$PORT`: `GET /health` answers 200 until `POST /fail` (then 503), and every
//! other request answers `<instance id> <method> <path>` (the id from `$VIBEHQ_INSTANCE_ID`);
//! `GET /slow` does so after 2 ms, like a service waiting on its database.
//! With `$VIBEHQ_HEARTBEAT_SUBJECT` set, it heartbeats there over NATS (`$VIBEHQ_NATS_URL`)
//! every `$VIBEHQ_HEARTBEAT_MS` until `POST /hang`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::routing::{get, post};

#[derive(Clone)]
struct Echo {
    id: Arc<str>,
    failing: Arc<AtomicBool>,
    hung: Arc<AtomicBool>,
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
        hung: Arc::default(),
    };
    if let Ok(subject) = std::env::var("VIBEHQ_HEARTBEAT_SUBJECT") {
        tokio::spawn(heartbeat(subject, echo.hung.clone()));
    }
    let app = axum::Router::new()
        .route("/health", get(health))
        .route("/fail", post(fail))
        .route("/hang", post(hang))
        .route("/slow", get(slow))
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

async fn hang(State(echo): State<Echo>) -> StatusCode {
    echo.hung.store(true, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

async fn heartbeat(subject: String, hung: Arc<AtomicBool>) {
    let url = std::env::var("VIBEHQ_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let every = std::env::var("VIBEHQ_HEARTBEAT_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_millis,
        );
    // `vibehq_nats` reads a URL's `user:password@` as other NATS clients do (async-nats alone
    // would drop it).
    let Ok(client) = vibehq_nats::Connection::to(url).connect().await else {
        return;
    };
    let mut ticks = tokio::time::interval(every);
    while !hung.load(Ordering::Relaxed) {
        ticks.tick().await;
        let _ = client.publish(subject.clone(), "ok".into()).await;
    }
}

async fn slow(state: State<Echo>, request: Request) -> String {
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    answer(state, request).await
}

async fn answer(State(echo): State<Echo>, request: Request) -> String {
    format!("{} {} {}", echo.id, request.method(), request.uri().path())
}
