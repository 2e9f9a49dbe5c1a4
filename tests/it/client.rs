//! `vibehq-client`, the Rust client library, against a real vibehq: a worker's whole round —
//! submit, submit many, claim, start, heartbeat, progress, complete, fail, cancel — and the live feed.

use std::time::Duration;

use futures::StreamExt;
use vibehq_client::{Client, Error, NewTask, Watch};

use crate::common::serve;

#[tokio::test]
async fn a_worker_submits_claims_reports_and_watches_through_the_client() {
    let (_live, _h, base) = serve().await;
    let worker = Client::new(&base)
        .expect("client")
        .acting_as("factory-1", Some("c1"));
    let mut feed = worker
        .watch(&Watch {
            worker_name: Some("factory-1".into()),
            ..Watch::default()
        })
        .await
        .expect("the live feed");

    let one = worker
        .submit(&NewTask {
            worker_name: Some("factory-1".into()),
            priority: Some(5),
            ..NewTask::new("health_audit", "audit")
        })
        .await
        .expect("submit");
    assert!(one.created);
    let many = worker
        .submit_many(&[
            NewTask::new("report", "report"),
            NewTask::new("report", "report"),
        ])
        .await
        .expect("submit many");
    assert_eq!(many.len(), 2);

    let claim = worker
        .claim(Duration::from_secs(5))
        .await
        .expect("claim")
        .expect("the urgent task first");
    assert_eq!(
        (claim.task_id.as_str(), claim.attempt),
        (one.task_id.as_str(), 1)
    );
    worker.start(&claim).await.expect("start");
    worker.heartbeat(&claim).await.expect("heartbeat");
    worker
        .progress(&claim, Some(50.0), Some("half way"))
        .await
        .expect("progress");
    let done = worker
        .complete(&claim, Some("all healthy"))
        .await
        .expect("complete");
    let row = worker.task(&one.task_id, Some(done)).await.expect("row");
    assert_eq!(
        (&row["status"], &row["output"], &row["progress_percent"]),
        (
            &serde_json::json!("completed"),
            &serde_json::json!("all healthy"),
            &serde_json::json!(50.0)
        )
    );

    let second = worker
        .claim(Duration::from_secs(5))
        .await
        .expect("claim")
        .expect("a report");
    let failed = worker.fail(&second, "no data", false).await.expect("fail");
    assert!(!failed.retried);
    // Results of a claim this worker no longer holds are refused, naming why.
    let again = worker.complete(&second, None).await;
    assert!(
        matches!(&again, Err(Error::Refused { status: 409, .. })),
        "{again:?}"
    );
    let left = &many[1].task_id;
    worker
        .cancel(left, Some("not needed"))
        .await
        .expect("cancel");
    assert!(
        worker
            .claim(Duration::from_millis(200))
            .await
            .expect("claim")
            .is_none(),
        "nothing is left"
    );

    let refused = worker.submit(&NewTask::new("x", "rm -rf /")).await;
    assert!(
        matches!(&refused, Err(Error::Refused { status: 422, field: Some(f), .. }) if f == "command"),
        "{refused:?}"
    );

    // The feed saw this worker's round, in order.
    let mut kinds = Vec::new();
    while kinds.last().map(String::as_str) != Some("task.completed") {
        let event = tokio::time::timeout(Duration::from_secs(5), feed.next())
            .await
            .expect("the feed's next event in time")
            .expect("an event")
            .expect("a readable event");
        if event.task_id == one.task_id {
            kinds.push(event.kind);
        }
    }
    assert_eq!(
        kinds,
        [
            "task.submitted",
            "task.assigned",
            "task.started",
            "task.progress",
            "task.completed"
        ]
    );
}

#[tokio::test]
async fn the_python_client_does_a_workers_round_against_a_real_vibehq() {
    let (_live, _h, base) = serve().await;
    let stdout = crate::common::outside_client(
        "python3",
        &["clients/python/test_client.py"],
        &[("VIBEHQ_URL", base.as_str())],
    )
    .await;
    assert_eq!(stdout.trim(), "ok");
}

#[tokio::test]
async fn the_typescript_client_does_a_workers_round_and_watches_the_feed() {
    let (_live, _h, base) = serve().await;
    // Node 20's WebSocket is behind this flag (on by default from 22).
    let stdout = crate::common::outside_client(
        "node",
        &[
            "--experimental-websocket",
            "--no-warnings",
            "clients/typescript/test.mjs",
        ],
        &[("VIBEHQ_URL", base.as_str())],
    )
    .await;
    assert_eq!(stdout.trim(), "ok");
}
