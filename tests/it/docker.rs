//! The Docker runtime driver, against a stand-in Docker Engine on a unix socket.
//!
//! There is no Docker daemon on the test machines, so the engine here answers the five Engine
//! API calls the driver makes (create, start, wait, stop, delete) over real HTTP on a real
//! unix socket, and runs each "container" as a `vibehq-echo` process listening on the port
//! its PortBindings publish: the driver, the pool and the proxy run as in production.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, post};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::sync::watch;
use vibehq_balancer::docker::Docker;
use vibehq_balancer::{Pool, PoolStatus, Proxy, ServiceSpec, Strategy};

use crate::balancer::{echo, quick};
use crate::common::Live;

#[derive(Default)]
struct Engine {
    containers: Mutex<HashMap<String, Container>>,
    /// Every call, as `METHOD path`.
    calls: Mutex<Vec<String>>,
    /// When each `create` came.
    creates: Mutex<Vec<std::time::Instant>>,
    /// Woken at every call.
    called: tokio::sync::Notify,
}

struct Container {
    config: Value,
    pid: Option<i32>,
    exit: watch::Receiver<Option<i64>>,
}

type Shared = Arc<Engine>;

impl Engine {
    fn call(&self, call: String) {
        if call.contains("/create") {
            self.creates
                .lock()
                .expect("creates")
                .push(std::time::Instant::now());
        }
        self.calls.lock().expect("calls").push(call);
        self.called.notify_waiters();
    }

    /// Waits (up to 20 s) until `n` containers were asked for; when each was.
    async fn created(&self, n: usize) -> Vec<std::time::Instant> {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let called = self.called.notified();
                tokio::pin!(called);
                called.as_mut().enable();
                let creates = self.creates.lock().expect("creates").clone();
                if creates.len() >= n {
                    return creates;
                }
                called.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("fewer than {n} creates in 20 s"))
    }

    fn pid(&self, label: &str) -> Option<i32> {
        let containers = self.containers.lock().expect("containers");
        containers
            .values()
            .find(|c| c.config["Labels"]["vibehq.instance"] == label)
            .and_then(|c| c.pid)
    }
}

fn refuse(status: StatusCode, message: &str) -> (StatusCode, Json<Value>) {
    (status, Json(json!({ "message": message })))
}

async fn create(
    State(engine): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    Json(config): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let name = query.get("name").cloned().unwrap_or_default();
    engine.call(format!("POST /containers/create?name={name}"));
    if config["Image"] != "vibehq/echo:test" {
        return refuse(StatusCode::NOT_FOUND, "No such image");
    }
    let (_, exit) = watch::channel(None);
    engine.containers.lock().expect("containers").insert(
        name.clone(),
        Container {
            config,
            pid: None,
            exit,
        },
    );
    (StatusCode::CREATED, Json(json!({ "Id": name })))
}

async fn start(State(engine): State<Shared>, Path(id): Path<String>) -> (StatusCode, Json<Value>) {
    engine.call(format!("POST /containers/{id}/start"));
    let mut containers = engine.containers.lock().expect("containers");
    let Some(container) = containers.get_mut(&id) else {
        return refuse(StatusCode::NOT_FOUND, "No such container");
    };
    let config = &container.config;
    let inside = config["ExposedPorts"]
        .as_object()
        .and_then(|ports| ports.keys().next().cloned())
        .unwrap_or_default();
    let host_port = config["HostConfig"]["PortBindings"][&inside][0]["HostPort"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut command = tokio::process::Command::new(echo());
    for pair in config["Env"].as_array().into_iter().flatten() {
        if let Some((k, v)) = pair.as_str().and_then(|p| p.split_once('=')) {
            command.env(k, v);
        }
    }
    // The port mapping: the process listens where the host port points.
    command.env("PORT", host_port).kill_on_drop(true);
    let Ok(mut child) = command.spawn() else {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, "cannot run the image");
    };
    container.pid = child.id().map(|p| p as i32);
    let (exited, exit) = watch::channel(None);
    container.exit = exit;
    tokio::spawn(async move {
        let code = child
            .wait()
            .await
            .ok()
            .and_then(|s| s.code())
            .unwrap_or(137);
        let _ = exited.send(Some(i64::from(code)));
    });
    (StatusCode::NO_CONTENT, Json(Value::Null))
}

async fn wait(State(engine): State<Shared>, Path(id): Path<String>) -> (StatusCode, Json<Value>) {
    engine.call(format!("POST /containers/{id}/wait"));
    let exit = engine
        .containers
        .lock()
        .expect("containers")
        .get(&id)
        .map(|c| c.exit.clone());
    let Some(mut exit) = exit else {
        return refuse(StatusCode::NOT_FOUND, "No such container");
    };
    let code = exit.wait_for(Option::is_some).await.ok().and_then(|c| *c);
    (
        StatusCode::OK,
        Json(json!({ "StatusCode": code.unwrap_or(-1) })),
    )
}

fn signal(engine: &Engine, id: &str) -> bool {
    let containers = engine.containers.lock().expect("containers");
    match containers.get(id) {
        Some(container) => {
            if let Some(pid) = container.pid {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            true
        }
        None => false,
    }
}

async fn stop(State(engine): State<Shared>, Path(id): Path<String>) -> StatusCode {
    engine.call(format!("POST /containers/{id}/stop"));
    if signal(&engine, &id) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn remove(State(engine): State<Shared>, Path(id): Path<String>) -> StatusCode {
    engine.call(format!("DELETE /containers/{id}"));
    signal(&engine, &id);
    match engine.containers.lock().expect("containers").remove(&id) {
        Some(_) => StatusCode::NO_CONTENT,
        None => StatusCode::NOT_FOUND,
    }
}

/// Serves the stand-in engine on a socket in `dir`.
async fn engine(dir: &std::path::Path) -> (PathBuf, Shared) {
    let socket = dir.join("docker.sock");
    let engine = Shared::default();
    let app = axum::Router::new()
        .route("/containers/create", post(create))
        .route("/containers/{id}/start", post(start))
        .route("/containers/{id}/wait", post(wait))
        .route("/containers/{id}/stop", post(stop))
        .route("/containers/{id}", delete(remove))
        .with_state(engine.clone());
    let listener = tokio::net::UnixListener::bind(&socket).expect("bind the socket");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (socket, engine)
}

fn spec() -> ServiceSpec {
    ServiceSpec {
        worker_name: "web".into(),
        container_name: "boxed".into(),
        program: PathBuf::new(),
        args: Vec::new(),
        env: [("GREETING".to_owned(), "hi".to_owned())].into(),
        health_path: Some("/health".into()),
        heartbeat: None,
        nats_url: None,
    }
}

async fn until(pool: &Pool, what: &str, done: impl Fn(&PoolStatus) -> bool) -> PoolStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = pool.status();
        if done(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {status:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_docker_runtime_runs_restarts_and_removes_containers_through_the_engine_api() {
    let live = Live::start().await;
    let (socket, engine) = engine(live.nats.scratch()).await;
    let docker = Docker {
        socket,
        image: "vibehq/echo:test".into(),
        container_port: 8080,
    };
    let pool = Pool::new(spec(), quick(), Arc::new(docker), live.log.clone());
    pool.scale(2).await.expect("scale");
    let running = until(&pool, "2 containers in rotation", |s| s.healthy == 2).await;

    // Traffic reaches them through the published ports.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let proxy = format!("http://{}", listener.local_addr().expect("addr"));
    let app = Proxy::new(pool.clone(), Strategy::RoundRobin).router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let answer = reqwest::get(format!("{proxy}/hello"))
        .await
        .expect("GET")
        .text()
        .await
        .expect("body");
    assert!(answer.ends_with("GET /hello"), "{answer}");

    // Labels and environment reach the engine.
    {
        let containers = engine.containers.lock().expect("containers");
        let config = &containers.values().next().expect("a container").config;
        assert_eq!(config["Labels"]["vibehq.worker"], "web");
        let env: Vec<&str> = config["Env"]
            .as_array()
            .expect("env")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(env.contains(&"PORT=8080"), "{env:?}");
        assert!(env.contains(&"GREETING=hi"), "{env:?}");
    }

    // A container that dies is noticed through /wait and replaced by a new one.
    let victim = running.instances[0].instance_id.clone();
    let pid = engine.pid(&victim).expect("pid");
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill -9");
    until(&pool, "the dead container restarted", |s| {
        s.instances
            .iter()
            .any(|i| i.instance_id == victim && i.restart_count == 1 && i.in_rotation)
    })
    .await;

    pool.scale(0).await.expect("scale down");
    assert!(
        engine.containers.lock().expect("containers").is_empty(),
        "every container was removed"
    );
    let calls = engine.calls.lock().expect("calls").clone();
    assert!(calls.iter().any(|c| c.ends_with("/stop")), "{calls:?}");
}

#[tokio::test]
async fn an_engine_refusal_is_the_instances_error_and_it_is_retried_with_backoff() {
    let live = Live::start().await;
    let (socket, engine) = engine(live.nats.scratch()).await;
    let docker = Docker {
        socket,
        image: "no/such:image".into(),
        container_port: 8080,
    };
    let pool = Pool::new(spec(), quick(), Arc::new(docker), live.log.clone());
    pool.scale(1).await.expect("scale");
    let status = until(&pool, "the refusal recorded", |s| {
        s.instances.iter().any(|i| {
            i.last_error
                .as_deref()
                .is_some_and(|e| e.contains("No such image"))
        })
    })
    .await;
    assert_eq!(status.healthy, 0);
    // Retried with backoff (0.1 s, then 0.2 s, …), not in a tight loop.
    let creates = engine.created(3).await;
    let gaps: Vec<Duration> = creates.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps[0] >= Duration::from_millis(90) && gaps[1] >= Duration::from_millis(180),
        "{gaps:?}"
    );
    pool.scale(0).await.expect("scale down");
}
