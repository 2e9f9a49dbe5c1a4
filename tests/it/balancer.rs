//! The container load balancer: real child processes (`vibehq-echo`), a real nats-server, the
//! projection, the REST API and the proxy.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use vibehq_balancer::http::BalancerState;
use vibehq_balancer::{Policy, Pool, PoolStatus, Process, Proxy, ServiceSpec, Strategy};
use vibehq_events::StreamKind;

use crate::common::{Live, call, get_json, post};

/// The stand-in instance program, built with the workspace.
pub(crate) fn echo() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("vibehq-echo"))
        .expect("target folder");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p vibehq-test-support` (tests/run.sh does)",
        bin.display()
    );
    bin
}

/// Probes every 100 ms, out of rotation after 2 failures, restarts after 100 ms.
pub(crate) fn quick() -> Policy {
    Policy {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(300),
        failure_threshold: 2,
        startup_timeout: Duration::from_secs(10),
        restart_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
        max_restarts: 5,
        stop_grace: Duration::from_secs(2),
        max_instances: 8,
    }
}

struct Balancer {
    live: Live,
    pool: Pool,
    /// The REST API.
    api: String,
    /// The proxy.
    proxy: String,
}

impl Balancer {
    async fn start(policy: Policy) -> Self {
        let live = Live::start().await;
        let spec = ServiceSpec {
            worker_name: "web".into(),
            container_name: "echo".into(),
            program: echo(),
            args: Vec::new(),
            env: Default::default(),
            health_path: Some("/health".into()),
            heartbeat: None,
            nats_url: None,
        };
        let pool = Pool::new(spec, policy, Arc::new(Process), live.log.clone());
        let api = serve(vibehq_balancer::http::router(BalancerState {
            pool: Some(pool.clone()),
            reader: Some(live.reader()),
        }))
        .await;
        let proxy = serve(Proxy::new(pool.clone(), Strategy::LeastOutstanding).router()).await;
        Self {
            live,
            pool,
            api,
            proxy,
        }
    }

    /// Waits until `done` holds for the pool's status.
    async fn until(&self, what: &str, done: impl Fn(&PoolStatus) -> bool) -> PoolStatus {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let status = self.pool.status();
            if done(&status) {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within 20 s; status: {status:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the projection holds every container event recorded so far.
    async fn projected(&self) {
        let last = self
            .live
            .log
            .stream_info(StreamKind::Containers)
            .await
            .expect("stream info")
            .state
            .last_sequence;
        self.live.caught_up(StreamKind::Containers, last).await;
    }
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

fn pids(status: &PoolStatus) -> Vec<i32> {
    status
        .instances
        .iter()
        .filter_map(|i| i.pid.map(|p| p as i32))
        .collect()
}

fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

fn rows(live: &Live, sql: &str) -> Vec<(String, i64)> {
    let db = rusqlite::Connection::open(&live.database).expect("open projection");
    let mut statement = db.prepare(sql).expect("prepare");
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[tokio::test]
async fn scaling_0_3_1_0_runs_that_many_processes_and_the_projection_agrees() {
    let lb = Balancer::start(quick()).await;

    let status = lb.pool.scale(3).await.expect("scale to 3");
    assert_eq!(status.desired, 3);
    let status = lb.until("3 in rotation", |s| s.healthy == 3).await;
    let started = pids(&status);
    assert_eq!(started.len(), 3);
    assert!(started.iter().all(|p| alive(*p)), "3 processes run");

    let status = lb.pool.scale(1).await.expect("scale to 1");
    assert_eq!(status.instances.len(), 1);
    assert_eq!(
        started.iter().filter(|p| alive(**p)).count(),
        1,
        "two processes were stopped before the scale request answered"
    );

    lb.pool.scale(0).await.expect("scale to 0");
    assert!(started.iter().all(|p| !alive(*p)), "no process is left");

    lb.projected().await;
    assert_eq!(
        rows(
            &lb.live,
            "SELECT state, COUNT(*) FROM container_instances WHERE worker_name = 'web' GROUP BY state"
        ),
        vec![("stopped".to_owned(), 3)]
    );
    let checks = rows(
        &lb.live,
        "SELECT 'healthy', COUNT(*) FROM container_health_checks WHERE healthy = 1 AND container_name = 'echo'",
    );
    assert!(
        checks[0].1 >= 3,
        "each instance's passing probes are recorded: {checks:?}"
    );

    // What the worker's instances cost, from the same projection.
    let (code, usage) = get_json(&format!("{}/api/containers/usage?worker_name=web", lb.api)).await;
    assert_eq!(code, 200, "{usage}");
    assert_eq!(usage[0]["worker_name"], "web");
    assert_eq!(
        (usage[0]["instances"].as_i64(), usage[0]["running"].as_i64()),
        (Some(3), Some(0))
    );
    let seconds = usage[0]["instance_seconds"].as_f64().expect("seconds");
    assert!(seconds > 0.0 && seconds < 60.0, "{usage}");
    let (code, refused) = get_json(&format!("{}/api/containers/usage?worker=web", lb.api)).await;
    assert_eq!(
        (code, refused["error"]["field"].as_str()),
        (400, Some("worker"))
    );
}

#[tokio::test]
async fn a_killed_instance_is_restarted_and_a_steady_request_stream_sees_no_failure() {
    let lb = Balancer::start(quick()).await;
    lb.pool.scale(3).await.expect("scale");
    let before = lb.until("3 in rotation", |s| s.healthy == 3).await;

    let (stop, served, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let answered = Arc::new(tokio::sync::Notify::new());
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
            let answered = answered.clone();
            let url = format!("{}/hello", lb.proxy);
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                while !stop.load(Ordering::Relaxed) {
                    match http.get(&url).send().await {
                        Ok(r) if r.status().is_success() => served.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    answered.notify_waiters();
                }
            })
        })
        .collect();
    // Waits (up to 10 s) until the stream has served `n` requests in all.
    let served_until = |n: usize| {
        let (served, answered) = (served.clone(), answered.clone());
        async move {
            tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    let next = answered.notified();
                    tokio::pin!(next);
                    next.as_mut().enable();
                    if served.load(Ordering::Relaxed) >= n {
                        return;
                    }
                    next.await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("the stream did not reach {n} requests"));
        }
    };
    served_until(50).await;

    let victim = before.instances[0].clone();
    let pid = victim.pid.expect("pid") as i32;
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill -9");
    let after = lb
        .until("the killed instance back in rotation", |s| {
            s.instances.iter().any(|i| {
                i.instance_id == victim.instance_id
                    && i.restart_count >= 1
                    && i.in_rotation
                    && i.pid.is_some_and(|p| p as i32 != pid)
            })
        })
        .await;
    // The stream goes on through the restarted instance too.
    served_until(served.load(Ordering::Relaxed) + 50).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("client");
    }

    assert_eq!(after.healthy, 3);
    let (served, failed) = (
        served.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    assert!(served > 100, "the stream kept flowing: {served} served");
    assert_eq!(failed, 0, "no request failed ({served} served)");
    lb.projected().await;
    let restarted = rows(
        &lb.live,
        &format!(
            "SELECT state, restart_count FROM container_instances WHERE instance_id = '{}'",
            victim.instance_id
        ),
    );
    assert_eq!(restarted, vec![("running".to_owned(), 1)]);
    lb.pool.scale(0).await.expect("scale down");
}

#[tokio::test]
async fn an_instance_whose_health_fails_leaves_rotation_then_is_restarted() {
    let lb = Balancer::start(Policy {
        restart_backoff: Duration::from_millis(500),
        ..quick()
    })
    .await;
    lb.pool.scale(2).await.expect("scale");
    let before = lb.until("2 in rotation", |s| s.healthy == 2).await;
    let sick = before.instances[0].clone();
    let port = sick.port.expect("port");
    let (code, _) = post(&format!("http://127.0.0.1:{port}/fail"), Value::Null).await;
    assert_eq!(code, 204);

    lb.until("the sick instance out of rotation", |s| {
        s.instances
            .iter()
            .any(|i| i.instance_id == sick.instance_id && !i.in_rotation)
    })
    .await;
    // While it waits to restart, every request goes to the other one. (Its restart comes
    // after the backoff; on a loaded machine the requests may outlast it, and a restarted,
    // healthy instance may rightly take traffic again.)
    for _ in 0..20 {
        let answer = reqwest::get(format!("{}/who", lb.proxy))
            .await
            .expect("GET")
            .text()
            .await
            .expect("body");
        if answer.starts_with(&sick.instance_id) {
            let status = lb.pool.status();
            let back = status
                .instances
                .iter()
                .any(|i| i.instance_id == sick.instance_id && i.restart_count >= 1);
            assert!(
                back,
                "routed to the unhealthy instance: {answer}; {status:#?}"
            );
            break;
        }
    }
    lb.until("the sick instance restarted and back", |s| {
        s.instances
            .iter()
            .any(|i| i.instance_id == sick.instance_id && i.restart_count == 1 && i.in_rotation)
    })
    .await;
    lb.pool.scale(0).await.expect("scale down");
}

#[tokio::test]
async fn the_rest_api_scales_reports_and_refuses_bad_input_naming_the_field() {
    let lb = Balancer::start(quick()).await;
    let (code, health) = get_json(&format!("{}/health/load-balancer", lb.api)).await;
    assert_eq!((code, health["status"].as_str()), (200, Some("idle")));
    assert_eq!(
        health["configured"], true,
        "a pool of none wanted is still configured"
    );

    for (path, status, field) in [
        ("/api/containers/scale/-1", 400, "instances"),
        ("/api/containers/scale/two", 400, "instances"),
        ("/api/containers/scale/1000", 422, "instances"),
    ] {
        let (code, body) = post(&format!("{}{path}", lb.api), Value::Null).await;
        assert_eq!(code, status, "{path}: {body}");
        assert_eq!(body["error"]["field"], field, "{path}: {body}");
    }
    let (code, body) = get_json(&format!("{}/api/containers/health/nope", lb.api)).await;
    assert_eq!(
        (code, body["error"]["field"].as_str()),
        (404, Some("container_id"))
    );
    let (code, body) = post(
        &format!("{}/api/containers/nope/restart", lb.api),
        Value::Null,
    )
    .await;
    assert_eq!(
        (code, body["error"]["field"].as_str()),
        (404, Some("container_id"))
    );

    let (code, body) = post(&format!("{}/api/containers/scale/2", lb.api), Value::Null).await;
    assert_eq!((code, body["desired"].as_u64()), (200, Some(2)), "{body}");
    lb.until("2 in rotation", |s| s.healthy == 2).await;
    let (code, status) = get_json(&format!("{}/api/containers/status", lb.api)).await;
    assert_eq!((code, status["healthy"].as_u64()), (200, Some(2)));
    let id = status["instances"][0]["instance_id"].as_str().expect("id");
    let (code, one) = get_json(&format!("{}/api/containers/health/{id}", lb.api)).await;
    assert_eq!((code, one["state"].as_str()), (200, Some("running")));
    assert!(one["checks"].as_array().is_some_and(|c| !c.is_empty()));
    let (code, health) = get_json(&format!("{}/health/load-balancer", lb.api)).await;
    assert_eq!((code, health["status"].as_str()), (200, Some("ok")));

    let (code, _) = post(
        &format!("{}/api/containers/{id}/restart", lb.api),
        Value::Null,
    )
    .await;
    assert_eq!(code, 202);
    lb.until("restarted by request", |s| {
        s.instances
            .iter()
            .any(|i| i.instance_id == id && i.restart_count == 1 && i.in_rotation)
    })
    .await;
    post(&format!("{}/api/containers/scale/0", lb.api), Value::Null).await;
}

#[tokio::test]
async fn without_a_configured_service_the_api_says_how_to_configure_one() {
    let api = serve(vibehq_balancer::http::router(BalancerState::default())).await;
    let (code, body) = post(&format!("{api}/api/containers/scale/1"), Value::Null).await;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (409, Some("not_configured"))
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("[balancer] program"))
    );
    let (code, health) = get_json(&format!("{api}/health/load-balancer")).await;
    assert_eq!(code, 200);
    assert_eq!(
        health["configured"], false,
        "the dashboard reads this before asking more"
    );
}

#[tokio::test]
async fn the_rpc_service_scales_reports_and_refuses_like_the_rest_api() {
    let lb = Balancer::start(quick()).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let service = tokio::spawn(vibehq_balancer::rpc::run(
        BalancerState {
            pool: Some(lb.pool.clone()),
            reader: None,
        },
        lb.live.nats.connect().await,
        stop.clone(),
    ));
    let client = lb.live.nats.connect().await;
    // The service is registered once its ping is answered.
    let ping = async || {
        client
            .request("$SRV.PING.ContainerLoadBalancerOps", Default::default())
            .await
            .is_ok()
    };
    for _ in 0..200 {
        if ping().await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let rpc = async |operation: &str, body: Value| {
        call(
            &client,
            &format!("vibehq.rpc.containers.{operation}"),
            body.to_string().into(),
        )
        .await
    };

    let scaled = rpc("scaleContainers", serde_json::json!({"instances": 2}))
        .await
        .expect("scaled");
    assert_eq!(scaled["desired"], 2);
    lb.until("2 in rotation", |s| s.healthy == 2).await;
    let status = rpc("getContainerStatus", serde_json::json!({}))
        .await
        .expect("status");
    assert_eq!(status["healthy"], 2);
    let id = status["instances"][0]["instance_id"].clone();
    let one = rpc(
        "getContainerStatus",
        serde_json::json!({"container_id": id}),
    )
    .await
    .expect("one");
    assert_eq!(one["state"], "running");
    let health = rpc("healthCheck", serde_json::json!({}))
        .await
        .expect("health");
    assert_eq!(health["status"], "ok");
    rpc("restartContainer", serde_json::json!({"container_id": id}))
        .await
        .expect("restart");

    for (operation, body, code, field) in [
        (
            "scaleContainers",
            serde_json::json!({"instances": -1}),
            400,
            "instances",
        ),
        ("scaleContainers", serde_json::json!({}), 400, "instances"),
        (
            "scaleContainers",
            serde_json::json!({"instances": 100}),
            422,
            "instances",
        ),
        (
            "scaleContainers",
            serde_json::json!({"count": 1}),
            400,
            "count",
        ),
        (
            "restartContainer",
            serde_json::json!({"container_id": "nope"}),
            404,
            "container_id",
        ),
        (
            "restartContainer",
            serde_json::json!({}),
            400,
            "container_id",
        ),
    ] {
        let (status, error) = rpc(operation, body.clone()).await.expect_err("refused");
        assert_eq!(status, code, "{operation} {body}: {error}");
        assert_eq!(
            error["error"]["field"], field,
            "{operation} {body}: {error}"
        );
    }
    rpc("scaleContainers", serde_json::json!({"instances": 0}))
        .await
        .expect("scaled down");
    stop.cancel();
    service.await.expect("joined").expect("clean stop");
}

/// A backlog the test sets.
#[derive(Debug, Default)]
struct Scripted(std::sync::atomic::AtomicU64);

impl vibehq_balancer::autoscale::Backlog for Scripted {
    fn queued(&self) -> futures::future::BoxFuture<'_, Result<u64, String>> {
        Box::pin(async move { Ok(self.0.load(Ordering::Relaxed)) })
    }
}

#[tokio::test]
async fn the_autoscaler_follows_the_backlog_between_min_and_max_and_records_why() {
    let lb = Balancer::start(quick()).await;
    let backlog = Arc::new(Scripted::default());
    let stop = tokio_util::sync::CancellationToken::new();
    let autoscaler = tokio::spawn(vibehq_balancer::autoscale::run(
        lb.pool.clone(),
        vibehq_balancer::autoscale::Autoscale {
            min: 1,
            max: 4,
            tasks_per_instance: Some(4),
            requests_per_instance: None,
            interval: Duration::from_millis(50),
            scale_down_after: Duration::from_millis(300),
        },
        backlog.clone(),
        stop.clone(),
    ));
    lb.until("min instances", |s| s.desired == 1 && s.healthy == 1)
        .await;

    backlog.0.store(10, Ordering::Relaxed);
    lb.until("3 instances for 10 tasks at 4 each", |s| {
        s.desired == 3 && s.healthy == 3
    })
    .await;
    backlog.0.store(1_000, Ordering::Relaxed);
    lb.until("never above max", |s| s.desired == 4).await;
    backlog.0.store(0, Ordering::Relaxed);
    let status = lb
        .until("back to min after the lull", |s| s.desired == 1)
        .await;
    assert_eq!(status.instances.len(), 1);
    stop.cancel();
    autoscaler.await.expect("autoscaler");

    let history = lb
        .live
        .log
        .history(&vibehq_events::Subject::Pool(lb.pool.name()))
        .await
        .expect("pool history");
    let changes: Vec<(u32, u32, String)> = history
        .iter()
        .filter_map(
            |r| match vibehq_events::Envelope::decode(&r.payload).ok()?.payload {
                vibehq_events::Payload::ContainerScaled(s) => Some((s.from, s.to, s.reason)),
                _ => None,
            },
        )
        .collect();
    assert_eq!(
        changes.iter().map(|c| (c.0, c.1)).collect::<Vec<_>>(),
        vec![(0, 1), (1, 3), (3, 4), (4, 1)]
    );
    assert_eq!(changes[1].2, "10 queued tasks, 4 per instance");
    lb.pool.scale(0).await.expect("scale down");
}

#[tokio::test]
async fn an_instance_without_a_health_endpoint_is_healthy_while_its_process_runs() {
    let live = Live::start().await;
    let spec = ServiceSpec {
        worker_name: "factory".into(),
        container_name: "sleeper".into(),
        program: "sleep".into(),
        args: vec!["30".into()],
        env: Default::default(),
        health_path: None,
        heartbeat: None,
        nats_url: None,
    };
    let pool = Pool::new(spec, quick(), Arc::new(Process), live.log.clone());
    pool.scale(2).await.expect("scale");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pool.status().healthy < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:#?}",
            pool.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = pool.status().instances[0].pid.expect("pid") as i32;
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill -9");
    while !pool
        .status()
        .instances
        .iter()
        .any(|i| i.restart_count == 1 && i.in_rotation)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:#?}",
            pool.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pool.scale(0).await.expect("scale down");
}

#[tokio::test]
async fn an_instance_whose_nats_heartbeat_stops_leaves_rotation_then_is_restarted() {
    let live = Live::start().await;
    let spec = ServiceSpec {
        worker_name: "web".into(),
        container_name: "beating".into(),
        program: echo(),
        args: Vec::new(),
        env: Default::default(),
        health_path: Some("/health".into()),
        heartbeat: Some(Duration::from_millis(50)),
        nats_url: Some(live.nats.url()),
    };
    let pool = Pool::new(spec, quick(), Arc::new(Process), live.log.clone());
    pool.scale(1).await.expect("scale");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let wait = async |what: &str, done: &dyn Fn(&PoolStatus) -> bool| {
        while !done(&pool.status()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: {:#?}",
                pool.status()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    wait("in rotation", &|s| s.healthy == 1).await;
    // Its HTTP health stays fine; only the heartbeat stops.
    let port = pool.status().instances[0].port.expect("port");
    let (code, _) = post(&format!("http://127.0.0.1:{port}/hang"), Value::Null).await;
    assert_eq!(code, 204);
    // (On a loaded machine a 50 ms heartbeat may be missed again after the restart.)
    wait("restarted after the missing heartbeats", &|s| {
        s.instances[0].restart_count >= 1 && s.instances[0].in_rotation
    })
    .await;
    let error = pool.status().instances[0]
        .last_error
        .clone()
        .unwrap_or_default();
    assert!(error.contains("no heartbeat"), "{error}");
    pool.scale(0).await.expect("scale down");
}

#[tokio::test]
async fn an_instance_that_keeps_failing_is_marked_failed_and_replaced() {
    let live = Live::start().await;
    let spec = ServiceSpec {
        worker_name: "web".into(),
        container_name: "crashy".into(),
        program: "false".into(),
        args: Vec::new(),
        env: Default::default(),
        health_path: Some("/health".into()),
        heartbeat: None,
        nats_url: None,
    };
    let policy = Policy {
        max_restarts: 2,
        ..quick()
    };
    let pool = Pool::new(spec, policy, Arc::new(Process), live.log.clone());
    let first = pool.scale(1).await.expect("scale").instances[0]
        .instance_id
        .clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while pool.status().instances.first().map(|i| &i.instance_id) == Some(&first) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:#?}",
            pool.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = pool.status();
    assert_eq!(
        (status.desired, status.instances.len()),
        (1, 1),
        "replaced, not dropped"
    );
    pool.scale(0).await.expect("scale down");

    let history = live
        .log
        .history(&vibehq_events::Subject::Instance(first))
        .await
        .expect("history");
    let kinds: Vec<String> = history
        .iter()
        .filter_map(|r| vibehq_events::Envelope::decode(&r.payload).ok())
        .map(|e| e.kind().to_string())
        .collect();
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("container.failed"),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "container.restarted").count(),
        2,
        "{kinds:?}"
    );
}

#[tokio::test]
async fn the_live_feed_sends_the_status_then_every_change() {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let lb = Balancer::start(quick()).await;
    let url = format!("{}/ws/containers", lb.api.replacen("http://", "ws://", 1));
    let (mut feed, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("the feed opens");
    let next = async |feed: &mut tokio_tungstenite::WebSocketStream<_>| -> Value {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), feed.next())
                .await
                .expect("a message in time")
                .expect("open")
                .expect("a message");
            if let Message::Text(text) = message {
                return serde_json::from_str(&text).expect("JSON");
            }
        }
    };
    let first = next(&mut feed).await;
    assert_eq!(
        (first["desired"].as_u64(), first["healthy"].as_u64()),
        (Some(0), Some(0))
    );

    lb.pool.scale(1).await.expect("scale");
    let mut states = Vec::new();
    while !states.iter().any(|s| s == "running") {
        let change = next(&mut feed).await;
        assert!(change["instance_id"].is_string(), "{change}");
        states.push(change["state"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(states[0], "starting", "{states:?}");

    // The endpoints are in the OpenAPI document.
    let api = serve(vibehq_api::router(
        vibehq_api::AppState {
            reader: lb.live.reader(),
            projector: lb.live.handle.clone(),
            log: lb.live.log.clone(),
            nats_url: lb.live.nats.url(),
        },
        vec![(
            vibehq_balancer::http::router(BalancerState::default()),
            <vibehq_balancer::http::BalancerDoc as utoipa::OpenApi>::openapi(),
        )],
    ))
    .await;
    let (_, doc) = get_json(&format!("{api}/openapi.json")).await;
    for path in [
        "/api/containers/scale/{instances}",
        "/api/containers/status",
        "/api/containers/health/{container_id}",
        "/api/containers/{container_id}/restart",
        "/api/containers/usage",
        "/health/load-balancer",
        "/ws/containers",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the document"
        );
    }
    lb.pool.scale(0).await.expect("scale down");
}
