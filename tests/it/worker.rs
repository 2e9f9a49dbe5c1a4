//! `vibehq worker` as a process: it runs only allowed commands, and a killed worker's task goes
//! to another worker after its lease.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use nix::sys::signal::Signal;
use tokio::process::Child;
use vibehq_events::{Envelope, EventKind, EventLog, Payload, StreamKind, Subject};
use vibehq_queue::{Actor, NewTask, Options, Queue};
use vibehq_test_support::NatsServer;

use crate::common::vibehq;

/// A task's stored events, as they come.
type Events = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<vibehq_events::Recorded, vibehq_events::Error>> + Send>,
>;

/// A server with streams, and a queue to submit through.
struct Setup {
    nats: NatsServer,
    log: EventLog,
    queue: Queue,
}

impl Setup {
    async fn start() -> Self {
        // The worker process connects with its own credentials, as in production: the server
        // lets it append, pull and call only as `factory`.
        Self::with_key("factory").await
    }

    /// As [`Setup::start`], with the worker's key issued for `spec` (`factory:c1,…` limits
    /// the containers whose lanes it may pull).
    async fn with_key(spec: &str) -> Self {
        // A killed worker's task goes to another after 2 s.
        Self::with(spec, Duration::from_secs(2)).await
    }

    /// As [`Setup::with_key`], with lanes created with this lease.
    async fn with(spec: &str, lease: Duration) -> Self {
        let nats = NatsServer::with_workers(&[spec]).await;
        let log = EventLog::new(nats.connect().await);
        log.ensure_streams(1).await.expect("streams");
        // The queue's lanes are created by its first submissions, with this lease.
        let options = Options {
            lease,
            ..Options::default()
        };
        let queue = Queue::new(log.clone(), options).await.expect("queue");
        Self { nats, log, queue }
    }

    async fn submit(&self, command: &str, parameters: serde_json::Value) -> String {
        let task = NewTask {
            task_type: "job".into(),
            command: command.into(),
            parameters: parameters.as_object().cloned(),
            max_attempts: 3,
            ..Default::default()
        };
        self.queue
            .submit(&Actor::worker("orchestrator"), task)
            .await
            .expect("submit")
            .task_id
    }

    /// Starts `vibehq worker` with these allow-list entries.
    fn worker(&self, container: &str, allow: &[String]) -> Child {
        let mut cmd = vibehq();
        cmd.args([
            "worker",
            "--nats-url",
            &self.nats.bare_url(),
            "--worker-name",
            "factory",
        ])
        .arg("--nats-nkey")
        .arg(self.nats.seed("factory"))
        .args(["--container-name", container])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        for entry in allow {
            cmd.args(["--allow", entry]);
        }
        cmd.spawn().expect("spawn worker")
    }

    /// Waits (reading the task's stored events as they come, not polling) for an event of
    /// one of `kinds`.
    async fn until(&self, events: &mut Events, kinds: &[EventKind]) -> Envelope {
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(record) = events.next().await {
                let event = record.expect("record").decode().expect("event");
                if kinds.contains(&event.kind()) {
                    return event;
                }
            }
            panic!("the read ended");
        })
        .await
        .unwrap_or_else(|_| panic!("no {kinds:?} within 30 s"))
    }

    /// The task's events as they are stored, from the first.
    async fn watch(&self, task_id: &str) -> Events {
        let read = self
            .log
            .read(StreamKind::Tasks, Some(Subject::task(task_id)), 1, u64::MAX)
            .await
            .expect("read");
        Box::pin(read)
    }
}

fn script(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.display().to_string()
}

#[tokio::test]
async fn a_worker_runs_allowed_commands_and_refuses_the_rest() {
    let setup = Setup::start().await;
    let echo = script(
        setup.nats.scratch(),
        "echo-params.sh",
        r#"cat; echo; echo "greeting=$VIBEHQ_PARAM_GREETING attempt=$VIBEHQ_ATTEMPT""#,
    );
    let failing = script(
        setup.nats.scratch(),
        "fail.sh",
        "echo 'disk full' >&2; exit 3",
    );

    let allowed = setup
        .submit("echo-params", serde_json::json!({"greeting": "hello"}))
        .await;
    let refused = setup.submit("rm-rf", serde_json::json!({})).await;
    let broken = setup.submit("fails", serde_json::json!({})).await;
    let (mut allowed_events, mut refused_events, mut broken_events) = (
        setup.watch(&allowed).await,
        setup.watch(&refused).await,
        setup.watch(&broken).await,
    );
    let mut worker = setup.worker(
        "c1",
        &[format!("echo-params={echo}"), format!("fails={failing}")],
    );

    let done = setup
        .until(
            &mut allowed_events,
            &[EventKind::TaskCompleted, EventKind::TaskFailed],
        )
        .await;
    let Payload::TaskCompleted(completed) = done.payload else {
        panic!("not completed: {done:?}")
    };
    let output = completed.output.expect("output");
    assert!(
        output.contains(r#"{"greeting":"hello"}"#),
        "parameters on stdin: {output}"
    );
    assert!(
        output.contains("greeting=hello attempt=1"),
        "parameters in env: {output}"
    );
    assert_eq!(done.worker_name, "factory");
    assert_eq!(done.container_name.as_deref(), Some("c1"));

    let done = setup
        .until(
            &mut refused_events,
            &[EventKind::TaskCompleted, EventKind::TaskFailed],
        )
        .await;
    let Payload::TaskFailed(failed) = done.payload else {
        panic!("not failed: {done:?}")
    };
    assert!(
        failed.error.contains("\"rm-rf\" is not allowed"),
        "{}",
        failed.error
    );
    assert_eq!(failed.attempt, 1, "a refused command is not retried");

    let done = setup
        .until(&mut broken_events, &[EventKind::TaskRequeued])
        .await;
    let Payload::TaskRequeued(requeued) = done.payload else {
        panic!("{done:?}")
    };
    assert!(
        requeued.reason.contains("exited with code 3: disk full"),
        "{}",
        requeued.reason
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker.id().expect("pid") as i32),
        Signal::SIGTERM,
    )
    .expect("term");
    let exit = tokio::time::timeout(Duration::from_secs(20), worker.wait())
        .await
        .expect("stops")
        .expect("exit");
    assert!(exit.success(), "graceful stop: {exit:?}");
}

#[tokio::test]
async fn a_killed_workers_task_goes_to_another_worker_after_the_lease() {
    let setup = Setup::start().await;
    let task = setup.submit("job", serde_json::json!({})).await;
    let mut events = setup.watch(&task).await;
    let mut first = setup.worker("a", &["job=sleep 60".to_owned()]);
    let started = setup.until(&mut events, &[EventKind::TaskStarted]).await;
    assert_eq!(started.container_name.as_deref(), Some("a"));
    first.start_kill().expect("kill -9");
    first.wait().await.expect("reaped");

    let mut second = setup.worker("b", &["job=true".to_owned()]);
    let done = setup.until(&mut events, &[EventKind::TaskCompleted]).await;
    assert_eq!(done.container_name.as_deref(), Some("b"));
    let Payload::TaskCompleted(completed) = done.payload else {
        panic!("{done:?}")
    };
    assert_eq!(completed.attempt, 2);
    second.start_kill().expect("stop");

    let history = setup
        .log
        .history_of(
            vibehq_events::StreamKind::Tasks,
            &Subject::task(&task),
            u64::MAX,
        )
        .await
        .expect("history");
    let attempts: Vec<(EventKind, Option<String>)> = history
        .iter()
        .map(|r| r.decode().expect("event"))
        .filter(|e| {
            matches!(
                e.kind(),
                EventKind::TaskAssigned | EventKind::TaskRequeued | EventKind::TaskCompleted
            )
        })
        .map(|e| (e.kind(), e.container_name))
        .collect();
    assert_eq!(
        attempts,
        [
            (EventKind::TaskAssigned, Some("a".to_owned())),
            (EventKind::TaskRequeued, Some("b".to_owned())),
            (EventKind::TaskAssigned, Some("b".to_owned())),
            (EventKind::TaskCompleted, Some("b".to_owned())),
        ],
        "the audit shows both attempts"
    );
}

#[tokio::test]
async fn ten_thousand_tasks_with_workers_killed_at_random_complete_exactly_once() {
    const TASKS: usize = 10_000;
    let setup = Setup::start().await;
    let client = setup.log.jetstream().client();
    let mut events = client.subscribe("vibehq.tasks.>").await.expect("subscribe");
    let by = Actor::worker("orchestrator");
    let mut submitted = std::collections::HashSet::new();
    for chunk in 0..TASKS / 1000 {
        let tasks = (0..1000)
            .map(|i| NewTask {
                task_type: "job".into(),
                command: "job".into(),
                priority: ((chunk * 1000 + i) % 10) as i64,
                max_attempts: 100,
                ..Default::default()
            })
            .collect();
        for task in setup.queue.submit_many(&by, tasks).await.expect("submit") {
            submitted.insert(task.task_id);
        }
    }

    let allow = ["job=true".to_owned()];
    let mut workers: Vec<Child> = (0..3)
        .map(|i| setup.worker(&format!("w{i}"), &allow))
        .collect();
    let mut completed: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut kills = 0;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(150);
    while completed.len() < TASKS {
        let next = tokio::time::timeout_at(deadline, events.next()).await;
        let message = next.expect("all tasks completed in time").expect("events");
        let event = Envelope::decode(&message.payload).expect("event");
        if let Payload::TaskCompleted(done) = event.payload {
            *completed.entry(done.task_id).or_default() += 1;
            // Every 1,500 completions, kill -9 a random worker and start a new one.
            if completed.len().is_multiple_of(1_500) && kills < 4 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let victim = (rng % workers.len() as u64) as usize;
                workers[victim].start_kill().expect("kill -9");
                workers[victim].wait().await.expect("reaped");
                workers[victim] = setup.worker(&format!("w{}-{kills}", victim), &allow);
                kills += 1;
            }
        }
    }
    for mut worker in workers {
        let _ = worker.start_kill();
    }
    assert_eq!(kills, 4);
    let keys: std::collections::HashSet<String> = completed.keys().cloned().collect();
    assert_eq!(keys, submitted, "no task lost");
    let twice: Vec<_> = completed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "completed more than once: {twice:?}");
}

#[tokio::test]
async fn a_program_that_leaves_a_process_behind_does_not_hang_its_worker() {
    let setup = Setup::start().await;
    let leaves = script(
        setup.nats.scratch(),
        "leaves.sh",
        "sleep 60 &\necho started it",
    );
    let task = setup
        .submit("leaves", serde_json::json!({"big": "x".repeat(200_000)}))
        .await;
    let mut events = setup.watch(&task).await;
    let mut worker = setup.worker("c1", &[format!("leaves={leaves}")]);
    let done = setup
        .until(
            &mut events,
            &[EventKind::TaskCompleted, EventKind::TaskFailed],
        )
        .await;
    let Payload::TaskCompleted(completed) = done.payload else {
        panic!("{done:?}")
    };
    assert_eq!(completed.output.as_deref(), Some("started it"));
    worker.start_kill().expect("stop");
}

#[tokio::test]
async fn a_worker_takes_the_work_it_may_take_when_its_key_forbids_one_of_its_lanes() {
    // The key allows container c1's lane only; the worker runs as c2, a lane with work waiting.
    let setup = Setup::with_key("factory:c1").await;
    let echo = script(setup.nats.scratch(), "ok.sh", "echo done");
    let forbidden = NewTask {
        task_type: "job".into(),
        command: "ok".into(),
        worker_name: Some("factory".into()),
        container_name: Some("c2".into()),
        ..Default::default()
    };
    setup
        .queue
        .submit(&Actor::worker("orchestrator"), forbidden)
        .await
        .expect("submit");
    let anyone = setup.submit("ok", serde_json::json!({})).await;
    let mut events = setup.watch(&anyone).await;
    let mut worker = setup.worker("c2", &[format!("ok={echo}")]);

    let done = setup
        .until(
            &mut events,
            &[EventKind::TaskCompleted, EventKind::TaskFailed],
        )
        .await;
    assert_eq!(done.kind(), EventKind::TaskCompleted);
    worker.kill().await.expect("kill");
}

#[tokio::test]
async fn cancelling_a_running_task_kills_its_program_within_a_second() {
    // A 30 s lease heartbeats every 10 s: only the cancel notice can be this quick.
    let setup = Setup::with("factory", Duration::from_secs(30)).await;
    let pid_file = setup.nats.scratch().join("pid");
    let long = script(
        setup.nats.scratch(),
        "long.sh",
        &format!("echo $$ > {}; exec sleep 30", pid_file.display()),
    );
    let task_id = setup.submit("long", serde_json::json!({})).await;
    let mut events = setup.watch(&task_id).await;
    let mut worker = setup.worker("c1", &[format!("long={long}")]);
    setup.until(&mut events, &[EventKind::TaskStarted]).await;
    let pid = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
            {
                return nix::unistd::Pid::from_raw(pid);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the program started");

    let cancelled_at = std::time::Instant::now();
    setup
        .queue
        .cancel(
            &task_id,
            &Actor::worker("orchestrator"),
            Some("not needed".into()),
        )
        .await
        .expect("cancel");
    let gone = tokio::time::timeout(Duration::from_secs(1), async {
        // Signal 0 only asks whether the process exists (a zombie still does until reaped).
        while nix::sys::signal::kill(pid, None).is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "the program still runs 1 s after the cancel");
    let took = cancelled_at.elapsed();
    let ended = setup.until(&mut events, &[EventKind::TaskCancelled]).await;
    assert_eq!(ended.kind(), EventKind::TaskCancelled);
    let task = setup
        .queue
        .load(&task_id)
        .await
        .expect("load")
        .expect("task");
    assert_eq!(
        task.status.state,
        vibehq_events::task::lifecycle::State::Cancelled
    );
    eprintln!("the program was gone {took:?} after the cancel");
    worker.kill().await.expect("kill");
}

#[tokio::test]
async fn a_programs_progress_lines_are_recorded_in_order_before_its_result() {
    let setup = Setup::start().await;
    let reporting = script(
        setup.nats.scratch(),
        "report.sh",
        r#"echo "10 cloning" > "$VIBEHQ_PROGRESS"
sleep 0.3
echo '{"percent": 60, "message": "testing"}' > "$VIBEHQ_PROGRESS"
sleep 0.3
echo "100% done" > "$VIBEHQ_PROGRESS"
echo finished"#,
    );
    let task_id = setup.submit("report", serde_json::json!({})).await;
    let mut events = setup.watch(&task_id).await;
    let mut worker = setup.worker("c1", &[format!("report={reporting}")]);

    let mut reports = Vec::new();
    loop {
        let event = setup
            .until(
                &mut events,
                &[
                    EventKind::TaskProgress,
                    EventKind::TaskCompleted,
                    EventKind::TaskFailed,
                ],
            )
            .await;
        match event.payload {
            Payload::TaskProgress(p) => reports.push((p.percent, p.message)),
            Payload::TaskCompleted(_) => break,
            other => panic!("the task did not complete: {other:?}"),
        }
    }
    assert_eq!(
        reports,
        [
            (Some(10.0), Some("cloning".to_owned())),
            (Some(60.0), Some("testing".to_owned())),
            (Some(100.0), Some("done".to_owned())),
        ],
        "each report, in order, the last one before the result"
    );
    worker.kill().await.expect("kill");
}
