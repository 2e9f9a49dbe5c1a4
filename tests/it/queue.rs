//! The task queue: priorities, targeting, leases, retries, idempotency and its REST API.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};
use vibehq_events::{EventKind, Subject};
use vibehq_queue::{Actor, Error, NewTask, Options};

use crate::common::{Harness, post, serve};

fn task(priority: i64) -> NewTask {
    NewTask {
        task_type: "health_audit".into(),
        command: "audit".into(),
        priority,
        max_attempts: 3,
        ..Default::default()
    }
}

fn container(worker: &str, container: &str) -> Actor {
    Actor::new(worker, Some(container.into()))
}

#[tokio::test]
async fn a_thousand_tasks_drain_in_priority_order_for_one_container() {
    let mut h = Harness::start(Options::default()).await;
    let priorities: Vec<i64> = (0..1000).map(|i| (i * 7919 % 10) as i64).collect();
    let ids = h
        .submit_all(priorities.iter().map(|p| task(*p)).collect())
        .await;
    let priority_of: HashMap<String, i64> = ids.into_iter().zip(priorities).collect();

    let me = container("factory-1", "c1");
    let mut seen = Vec::new();
    while let Some(claim) = h.queue.claim(&me, Duration::ZERO).await.expect("claim") {
        seen.push(claim.priority);
        assert_eq!(claim.priority, priority_of[&claim.task_id]);
        h.queue
            .complete(&claim.task_id, claim.attempt, &me, None)
            .await
            .expect("complete");
    }
    assert_eq!(seen.len(), 1000);
    assert!(
        seen.windows(2).all(|w| w[0] >= w[1]),
        "not in priority order: {seen:?}"
    );
}

#[tokio::test]
async fn targeted_tasks_reach_only_their_worker_and_untargeted_ones_spread() {
    let mut h = Harness::start(Options::default()).await;
    let workers: Vec<String> = (1..=5).map(|i| format!("worker-{i}")).collect();
    let mut tasks: Vec<NewTask> = workers
        .iter()
        .map(|w| NewTask {
            worker_name: Some(w.clone()),
            ..task(0)
        })
        .collect();
    tasks.extend((0..20).map(|_| task(0)));
    let ids = h.submit_all(tasks).await;
    let targeted: HashMap<&String, &String> = ids.iter().take(5).zip(&workers).collect();

    let mut claimed_by: HashMap<String, Vec<String>> = HashMap::new();
    let mut idle = 0;
    while idle < workers.len() {
        idle = 0;
        for worker in &workers {
            let me = container(worker, "main");
            match h.queue.claim(&me, Duration::ZERO).await.expect("claim") {
                Some(claim) => {
                    h.queue
                        .complete(&claim.task_id, claim.attempt, &me, None)
                        .await
                        .expect("complete");
                    claimed_by
                        .entry(worker.clone())
                        .or_default()
                        .push(claim.task_id);
                }
                None => idle += 1,
            }
        }
    }
    for (task_id, worker) in targeted {
        assert!(
            claimed_by[worker].contains(task_id),
            "{task_id} did not reach {worker}"
        );
    }
    let total: usize = claimed_by.values().map(Vec::len).sum();
    assert_eq!(total, 25);
    for worker in &workers {
        assert!(
            claimed_by[worker].len() >= 2,
            "{worker} got no untargeted work: {claimed_by:?}"
        );
    }
}

#[tokio::test]
async fn a_container_targeted_task_goes_to_that_container_only() {
    let mut h = Harness::start(Options::default()).await;
    let ids = h
        .submit_all(vec![NewTask {
            worker_name: Some("w".into()),
            container_name: Some("c2".into()),
            ..task(5)
        }])
        .await;
    assert!(
        h.queue
            .claim(&container("w", "c1"), Duration::ZERO)
            .await
            .expect("claim")
            .is_none()
    );
    assert!(
        h.queue
            .claim(&container("other", "c2"), Duration::ZERO)
            .await
            .expect("claim")
            .is_none()
    );
    let claim = h
        .queue
        .claim(&container("w", "c2"), Duration::ZERO)
        .await
        .expect("claim");
    assert_eq!(claim.map(|c| c.task_id), Some(ids[0].clone()));
}

#[tokio::test]
async fn an_expired_lease_hands_the_task_on_and_the_late_result_is_refused() {
    let options = Options {
        lease: Duration::from_secs(1),
        ..Options::default()
    };
    let mut h = Harness::start(options).await;
    let id = h.submit_all(vec![task(1)]).await.remove(0);
    let (a, b) = (container("factory", "a"), container("factory", "b"));

    let first = h
        .queue
        .claim(&a, Duration::ZERO)
        .await
        .expect("claim")
        .expect("task");
    assert_eq!(first.attempt, 1);
    // `a` goes silent; after its lease, `b` gets the task as attempt 2.
    let second = h
        .queue
        .claim(&b, Duration::from_secs(5))
        .await
        .expect("claim")
        .expect("redelivered");
    assert_eq!((second.task_id.as_str(), second.attempt), (id.as_str(), 2));

    let late = h.queue.complete(&id, 1, &a, Some("late".into())).await;
    assert!(matches!(late, Err(Error::StaleClaim { .. })), "{late:?}");
    let heartbeat = h.queue.heartbeat(&id, 1, &a).await;
    assert!(
        matches!(heartbeat, Err(Error::StaleClaim { .. })),
        "{heartbeat:?}"
    );
    h.queue
        .complete(&id, 2, &b, Some("done".into()))
        .await
        .expect("b completes");
    let again = h.queue.complete(&id, 2, &b, Some("twice".into())).await;
    assert!(
        matches!(again, Err(Error::StaleClaim { .. })),
        "completes once"
    );

    let history = h
        .log
        .history(&Subject::Task(id.clone()))
        .await
        .expect("history");
    let kinds: Vec<_> = history
        .iter()
        .map(|r| r.decode().expect("event").kind())
        .collect();
    assert_eq!(
        kinds,
        [
            EventKind::TaskSubmitted,
            EventKind::TaskAssigned,
            EventKind::TaskRequeued,
            EventKind::TaskAssigned,
            EventKind::TaskResultRefused,
            EventKind::TaskCompleted,
            EventKind::TaskResultRefused,
        ]
    );
    let task = h.queue.load(&id).await.expect("load").expect("task");
    assert_eq!(task.state.as_str(), "completed");
}

#[tokio::test]
async fn heartbeats_keep_a_lease() {
    let options = Options {
        lease: Duration::from_secs(1),
        ..Options::default()
    };
    let mut h = Harness::start(options).await;
    let id = h.submit_all(vec![task(1)]).await.remove(0);
    let a = container("factory", "a");
    let claim = h
        .queue
        .claim(&a, Duration::ZERO)
        .await
        .expect("claim")
        .expect("task");
    h.queue.start(&id, claim.attempt, &a).await.expect("start");
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        h.queue
            .heartbeat(&id, claim.attempt, &a)
            .await
            .expect("heartbeat");
    }
    assert!(
        h.queue
            .claim(&container("factory", "b"), Duration::ZERO)
            .await
            .expect("claim")
            .is_none()
    );
    h.queue
        .complete(&id, claim.attempt, &a, None)
        .await
        .expect("still ours after 1.6 s");
}

#[tokio::test]
async fn a_task_that_exhausts_its_attempts_ends_failed_with_its_last_error() {
    let options = Options {
        retry_backoff: Duration::from_millis(50),
        ..Options::default()
    };
    let mut h = Harness::start(options).await;
    let id = h
        .submit_all(vec![NewTask {
            max_attempts: 2,
            ..task(3)
        }])
        .await
        .remove(0);
    let me = container("w", "c");
    let first = h
        .queue
        .claim(&me, Duration::ZERO)
        .await
        .expect("claim")
        .expect("task");
    let outcome = h
        .queue
        .fail(&id, first.attempt, &me, "exit 1".into(), true)
        .await
        .expect("fail");
    assert!(outcome.retried);
    let second = h
        .queue
        .claim(&me, Duration::from_secs(5))
        .await
        .expect("claim")
        .expect("retry");
    assert_eq!(second.attempt, 2);
    let outcome = h
        .queue
        .fail(&id, 2, &me, "exit 2".into(), true)
        .await
        .expect("fail");
    assert!(!outcome.retried, "no attempts left");
    let task = h.queue.load(&id).await.expect("load").expect("task");
    assert_eq!(
        (task.state.as_str(), task.error.as_deref()),
        ("failed", Some("exit 2"))
    );
    assert!(
        h.queue
            .claim(&me, Duration::from_millis(200))
            .await
            .expect("claim")
            .is_none()
    );
}

#[tokio::test]
async fn submitting_with_the_same_idempotency_key_twice_yields_one_task() {
    let h = Harness::start(Options::default()).await;
    let by = Actor::new("orchestrator", None);
    let keyed = || NewTask {
        idempotency_key: Some("audit-2026-11-26".into()),
        ..task(1)
    };
    let first = h.queue.submit(&by, keyed()).await.expect("first");
    let second = h.queue.submit(&by, keyed()).await.expect("second");
    assert!(first.created && !second.created);
    assert_eq!(first.task_id, second.task_id);
    assert_eq!(first.sequence, second.sequence);
    let history = h
        .log
        .history(&Subject::Task(first.task_id))
        .await
        .expect("history");
    assert_eq!(history.len(), 1);
}

#[tokio::test]
async fn a_cancelled_task_is_never_handed_out() {
    let mut h = Harness::start(Options::default()).await;
    let id = h.submit_all(vec![task(9)]).await.remove(0);
    h.queue
        .cancel(&id, &Actor::new("ops", None), Some("not needed".into()))
        .await
        .expect("cancel");
    assert!(
        h.queue
            .claim(&container("w", "c"), Duration::ZERO)
            .await
            .expect("claim")
            .is_none()
    );
    let again = h.queue.cancel(&id, &Actor::new("ops", None), None).await;
    assert!(matches!(again, Err(Error::Conflict { .. })));
}

#[tokio::test]
async fn racing_containers_complete_every_task_exactly_once() {
    let mut h = Harness::start(Options::default()).await;
    let ids: HashSet<String> = h
        .submit_all((0..300).map(|i| task(i % 10)).collect())
        .await
        .into_iter()
        .collect();
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..6 {
        let queue = h.queue.clone();
        workers.spawn(async move {
            let me = container("pool", &format!("c{i}"));
            let mut done = Vec::new();
            loop {
                let claim =
                    tokio::time::timeout(Duration::from_secs(5), queue.claim(&me, Duration::ZERO))
                        .await
                        .expect("claim hung")
                        .expect("claim");
                let Some(claim) = claim else { break };
                tokio::time::timeout(
                    Duration::from_secs(5),
                    queue.complete(&claim.task_id, claim.attempt, &me, None),
                )
                .await
                .expect("complete hung")
                .expect("complete");
                done.push(claim.task_id);
            }
            done
        });
    }
    let mut completed = Vec::new();
    while let Some(done) = workers.join_next().await {
        completed.extend(done.expect("worker"));
    }
    let unique: HashSet<String> = completed.iter().cloned().collect();
    assert_eq!(completed.len(), 300, "no task completed twice");
    assert_eq!(unique, ids, "no task lost");
}

#[tokio::test]
async fn the_rest_api_runs_a_task_from_submission_to_completion() {
    let (_live, _h, base) = serve().await;
    let (status, submitted) = post(
        &format!("{base}/api/tasks"),
        json!({"task_type": "health_audit", "command": "audit", "parameters": {"target": "api"},
               "priority": 7, "worker_name": "factory-1", "submitted_by": "orchestrator"}),
    )
    .await;
    assert_eq!(status, 201, "{submitted}");
    let id = submitted["task_id"].as_str().expect("id").to_owned();
    let (status, row) = crate::common::get_json(&format!(
        "{base}/api/tasks/{id}?min_seq={}",
        submitted["sequence"]
    ))
    .await;
    assert_eq!(status, 200, "{row}");
    assert_eq!(
        (row["status"].as_str(), row["priority"].as_i64()),
        (Some("pending"), Some(7))
    );

    let (status, claim) = post(
        &format!("{base}/api/tasks/claim"),
        json!({"worker_name": "factory-1", "container_name": "c1", "wait_ms": 5000}),
    )
    .await;
    assert_eq!(status, 200, "{claim}");
    assert_eq!(claim["task_id"], id.as_str());
    assert_eq!(claim["parameters"], json!({"target": "api"}));
    let who =
        json!({"worker_name": "factory-1", "container_name": "c1", "attempt": claim["attempt"]});
    let (status, _) = post(&format!("{base}/api/tasks/{id}/heartbeat"), who.clone()).await;
    assert_eq!(status, 204);
    let mut done = who.clone();
    done["output"] = json!("all healthy");
    let (status, written) = post(&format!("{base}/api/tasks/{id}/complete"), done.clone()).await;
    assert_eq!(status, 200, "{written}");
    let (status, stale) = post(&format!("{base}/api/tasks/{id}/complete"), done).await;
    assert_eq!(
        (status, stale["error"]["code"].as_str()),
        (409, Some("stale_claim"))
    );

    let (_, row) = crate::common::get_json(&format!(
        "{base}/api/tasks/{id}?min_seq={}",
        written["sequence"]
    ))
    .await;
    assert_eq!(row["status"], "completed");
    assert_eq!(row["output"], "all healthy");
    assert_eq!(row["assigned_to"], "factory-1:c1");
    let (status, _) = post(
        &format!("{base}/api/tasks/claim"),
        json!({"worker_name": "factory-1"}),
    )
    .await;
    assert_eq!(status, 204, "no more work");

    let (_, doc) = crate::common::get_json(&format!("{base}/openapi.json")).await;
    for path in [
        "/api/tasks",
        "/api/tasks/claim",
        "/api/tasks/{task_id}/complete",
        "/api/tasks/{task_id}/fail",
    ] {
        assert!(doc["paths"].get(path).is_some(), "OpenAPI lacks {path}");
    }
}

#[tokio::test]
async fn the_rest_api_claims_a_named_task_and_lists_dead_letters() {
    let (_live, mut h, base) = serve().await;
    let mut ids = Vec::new();
    for priority in [1, 2] {
        let (_, s) = post(
            &format!("{base}/api/tasks"),
            json!({"task_type": "t", "command": "c", "priority": priority, "max_attempts": 1}),
        )
        .await;
        ids.push(s["task_id"].as_str().expect("id").to_owned());
    }
    // Claim the lower-priority one by name, once the dispatcher has queued both.
    h.dispatched(2).await;
    let (status, claim) = post(
        &format!("{base}/api/tasks/{}/claim", ids[0]),
        json!({"worker_name": "w"}),
    )
    .await;
    assert_eq!(status, 200, "{claim}");
    assert_eq!(claim["task_id"], ids[0].as_str());
    let (status, outcome) = post(
        &format!("{base}/api/tasks/{}/fail", ids[0]),
        json!({"worker_name": "w", "attempt": 1, "error": "disk full"}),
    )
    .await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["retried"], false);
    let (_, page) = crate::common::get_json(&format!(
        "{base}/api/tasks?status=failed&min_seq={}",
        outcome["sequence"]
    ))
    .await;
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(
        (items[0]["task_id"].as_str(), items[0]["error"].as_str()),
        (Some(ids[0].as_str()), Some("disk full"))
    );
    // The other task is still there for anyone.
    let (status, other) = post(
        &format!("{base}/api/tasks/claim"),
        json!({"worker_name": "x", "wait_ms": 2000}),
    )
    .await;
    assert_eq!(
        (status, other["task_id"].as_str()),
        (200, Some(ids[1].as_str()))
    );
}

#[tokio::test]
async fn bad_task_input_gets_a_4xx_json_error_naming_the_field() {
    let (_live, _h, base) = serve().await;
    let tasks = format!("{base}/api/tasks");
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"command": "audit"}), 422, "task_type"),
        (json!({"task_type": "t"}), 422, "command"),
        (
            json!({"task_type": "", "command": "audit"}),
            422,
            "task_type",
        ),
        (
            json!({"task_type": "t", "command": "rm -rf / && curl evil"}),
            422,
            "command",
        ),
        (
            json!({"task_type": "t", "command": "c", "parameters": [1, 2]}),
            422,
            "parameters",
        ),
        (
            json!({"task_type": "t", "command": "c", "parameters": "x=1"}),
            422,
            "parameters",
        ),
        (
            json!({"task_type": "t", "command": "c", "priority": 10}),
            422,
            "priority",
        ),
        (
            json!({"task_type": "t", "command": "c", "priority": "high"}),
            422,
            "priority",
        ),
        (
            json!({"task_type": "t", "command": "c", "max_attempts": 0}),
            422,
            "max_attempts",
        ),
        (
            json!({"task_type": "t", "command": "c", "container_name": "c1"}),
            422,
            "container_name",
        ),
        (
            json!({"task_type": "t", "command": "c", "worker_name": "has space"}),
            422,
            "worker_name",
        ),
        (
            json!({"task_type": "t", "command": "c", "colour": "red"}),
            422,
            "colour",
        ),
        (json!(["not", "an", "object"]), 400, "body"),
    ];
    for (body, status, field) in cases {
        let (got, error) = post(&tasks, body.clone()).await;
        assert_eq!(got, status, "{body}: {error}");
        assert_eq!(error["error"]["field"], field, "{body}: {error}");
    }
    let client = reqwest::Client::new();
    let broken = client
        .post(&tasks)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("POST");
    assert_eq!(broken.status().as_u16(), 400);
    let error: Value = broken.json().await.expect("json");
    assert_eq!(error["error"]["field"], "body");
    let huge =
        json!({"task_type": "t", "command": "c", "parameters": {"blob": "x".repeat(300 * 1024)}});
    let (status, error) = post(&tasks, huge).await;
    assert_eq!(
        (status, error["error"]["field"].as_str()),
        (413, Some("body"))
    );

    let (status, error) = crate::common::get_json(&format!("{tasks}?status=exploded")).await;
    assert_eq!(
        (status, error["error"]["field"].as_str()),
        (400, Some("status"))
    );
    let (status, error) = crate::common::get_json(&format!("{tasks}/no-such-task")).await;
    assert_eq!(
        (status, error["error"]["field"].as_str()),
        (404, Some("task_id"))
    );
    let (status, error) = post(&format!("{tasks}/claim"), json!({"container_name": "c"})).await;
    assert_eq!(
        (status, error["error"]["field"].as_str()),
        (422, Some("worker_name"))
    );
    let (status, error) = post(
        &format!("{tasks}/claim"),
        json!({"worker_name": "w", "wait_ms": 600000}),
    )
    .await;
    assert_eq!(
        (status, error["error"]["field"].as_str()),
        (422, Some("wait_ms"))
    );
    let (status, error) = post(
        &format!("{tasks}/some-task/complete"),
        json!({"worker_name": "w"}),
    )
    .await;
    assert_eq!(
        (status, error["error"]["field"].as_str()),
        (422, Some("attempt"))
    );
    let (status, error) = post(
        &format!("{tasks}/some-task/complete"),
        json!({"worker_name": "w", "attempt": 1}),
    )
    .await;
    assert_eq!(
        (status, error["error"]["field"].as_str()),
        (404, Some("task_id"))
    );
    let (status, error) = post(
        &format!("{tasks}/some-task/fail"),
        json!({"worker_name": "w", "attempt": 1}),
    )
    .await;
    assert_eq!(
        (status, error["error"]["field"].as_str()),
        (422, Some("error"))
    );
}

#[tokio::test]
async fn a_duplicate_work_message_never_takes_a_task_from_its_holder() {
    let mut h = Harness::start(Options::default()).await;
    let id = h.submit_all(vec![task(4)]).await.remove(0);
    let a = container("factory", "a");
    let claim = h
        .queue
        .claim(&a, Duration::ZERO)
        .await
        .expect("claim")
        .expect("task");

    // The dispatcher carried the submission twice (a redelivery after its dedupe window).
    let held = h.queue.load(&id).await.expect("load").expect("task");
    let duplicate = vibehq_events::work::WorkItem {
        task_id: id.clone(),
        submitted_sequence: 1,
        task: Some(vibehq_events::work::Carried {
            submitted: held.submitted,
            submitted_by: held.submitted_by,
        }),
    };
    let subject = vibehq_events::work::subject(4, &vibehq_events::work::Target::Any);
    h.log
        .jetstream()
        .publish(
            subject,
            serde_json::to_vec(&duplicate).expect("json").into(),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");

    let b = container("factory", "b");
    assert!(
        h.queue
            .claim(&b, Duration::ZERO)
            .await
            .expect("claim")
            .is_none(),
        "the duplicate is dropped"
    );
    h.queue
        .complete(&id, claim.attempt, &a, None)
        .await
        .expect("the holder still completes");
    let task = h.queue.load(&id).await.expect("load").expect("task");
    assert_eq!((task.state.as_str(), task.attempt), ("completed", 1));
}

#[tokio::test]
async fn a_submission_has_its_own_subject_and_the_dispatcher_reads_nothing_else() {
    let mut h = Harness::start(Options::default()).await;
    let ids = h.submit_all(vec![task(1), task(2)]).await;
    let a = container("factory", "a");
    while let Some(claim) = h.queue.claim(&a, Duration::ZERO).await.expect("claim") {
        h.queue
            .complete(&claim.task_id, claim.attempt, &a, None)
            .await
            .expect("complete");
    }

    let history = h
        .log
        .history(&Subject::Task(ids[0].clone()))
        .await
        .expect("history");
    let subjects: Vec<&str> = history.iter().map(|r| r.subject.as_str()).collect();
    let submission = format!("vibehq.tasks.submitted.{}", ids[0]);
    let later = format!("vibehq.tasks.{}", ids[0]);
    assert_eq!(subjects, [&submission, &later, &later]);

    // Two tasks, six events: the dispatcher was handed the two submissions only.
    let dispatcher = h
        .log
        .jetstream()
        .get_stream("VIBEHQ_TASKS")
        .await
        .expect("tasks stream")
        .consumer_info(vibehq_queue::dispatch::CONSUMER)
        .await
        .expect("dispatcher consumer")
        .clone();
    assert_eq!(dispatcher.delivered.consumer_sequence, 2);
    assert_eq!(dispatcher.num_pending, 0);
}

#[tokio::test]
async fn concurrent_claimers_in_one_process_share_pulls_and_never_share_a_task() {
    let mut h = Harness::start(Options::default()).await;
    let claimers: Vec<_> = (0..8)
        .map(|i| {
            let queue = h.queue.clone();
            tokio::spawn(async move {
                let me = container("factory", &format!("c{i}"));
                let mut mine = Vec::new();
                while let Some(claim) = queue
                    .claim(&me, Duration::from_millis(500))
                    .await
                    .expect("claim")
                {
                    mine.push(claim.task_id);
                }
                mine
            })
        })
        .collect();
    let ids = h.submit_all((0..200).map(|i| task(i % 3)).collect()).await;

    let mut claimed = Vec::new();
    for claimer in claimers {
        claimed.extend(claimer.await.expect("claimer"));
    }
    claimed.sort();
    let mut submitted = ids;
    submitted.sort();
    assert_eq!(claimed, submitted, "every task claimed exactly once");
}

#[tokio::test]
async fn a_claim_reports_the_lease_its_subject_really_has() {
    let thirty = Options {
        lease: Duration::from_secs(30),
        ..Options::default()
    };
    let mut h = Harness::start(thirty).await;
    h.submit_all(vec![task(5), task(5)]).await;
    let first = h
        .queue
        .claim(&container("w", "a"), Duration::ZERO)
        .await
        .expect("claim")
        .expect("task");
    assert_eq!(first.lease_ms, 30_000);

    // Another process configured with a shorter lease claims from the same subject, whose
    // consumer the first process created: the consumer's lease is the one that holds.
    let one = Options {
        lease: Duration::from_secs(1),
        ..Options::default()
    };
    let other = Harness::on(None, h.log.clone(), one).await;
    let second = other
        .queue
        .claim(&container("w", "b"), Duration::ZERO)
        .await
        .expect("claim")
        .expect("task");
    assert_eq!(second.lease_ms, 30_000);
}
