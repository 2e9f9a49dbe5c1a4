//! Tasks that wait for others: a chain runs in order, each released when the one before it
//! completes; a failed dependency settles its dependents as their submitters chose.

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::common::{get_json, post, queue_state, serve};

/// The API with its dependency watcher running (as `vibehq up` runs it).
async fn serve_with_watcher() -> (crate::common::Live, crate::common::Harness, String) {
    let (live, harness, base) = serve().await;
    tokio::spawn(vibehq_queue::dependencies::run_watcher(
        queue_state(&live, &harness),
        CancellationToken::new(),
    ));
    (live, harness, base)
}

async fn submit(base: &str, body: Value) -> String {
    let (status, submitted) = post(&format!("{base}/api/tasks"), body).await;
    assert_eq!(status, 201, "{submitted}");
    submitted["task_id"].as_str().expect("id").to_owned()
}

async fn claim(base: &str, wait_ms: u64) -> Option<Value> {
    let (status, claim) = post(
        &format!("{base}/api/tasks/claim"),
        json!({"worker_name": "factory-1", "container_name": "c1", "wait_ms": wait_ms}),
    )
    .await;
    (status == 200).then_some(claim)
}

async fn finish(base: &str, task_id: &str, outcome: &str) {
    let body = match outcome {
        "complete" => json!({"worker_name": "factory-1", "container_name": "c1"}),
        _ => {
            json!({"worker_name": "factory-1", "container_name": "c1", "error": "broke", "retry": false})
        }
    };
    let (status, done) = post(&format!("{base}/api/tasks/{task_id}/{outcome}"), body).await;
    assert_eq!(status, 200, "{done}");
}

async fn status_of(base: &str, task_id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (_, row) = get_json(&format!("{base}/api/tasks/{task_id}")).await;
        if row["status"] != "pending" || tokio::time::Instant::now() > deadline {
            return row["status"].clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_dependency_chain_runs_in_order() {
    let (_live, _h, base) = serve_with_watcher().await;
    let task = |deps: &[&str]| json!({"task_type": "step", "command": "run", "depends_on": deps});
    let first = submit(&base, json!({"task_type": "step", "command": "run"})).await;
    let second = submit(&base, task(&[&first])).await;
    let third = submit(&base, task(&[&second, &first])).await;

    let (_, why) = get_json(&format!("{base}/api/tasks/{third}/why")).await;
    assert_eq!(why["reasons"][0]["reason"], "waiting_on", "{why}");
    assert_eq!(
        why["reasons"][0]["tasks"].as_array().map(Vec::len),
        Some(2),
        "{why}"
    );

    for (expected, next) in [
        (&first, Some(&second)),
        (&second, Some(&third)),
        (&third, None),
    ] {
        let claimed = claim(&base, 3000)
            .await
            .expect("the next step of the chain");
        assert_eq!(claimed["task_id"], expected.as_str());
        if let Some(next) = next {
            assert!(
                claim(&base, 300).await.is_none(),
                "{next} waits for {expected}"
            );
        }
        finish(&base, expected, "complete").await;
    }
    // A dependency that completed before its dependent was submitted releases it at once.
    let late = submit(&base, task(&[&first])).await;
    assert_eq!(
        claim(&base, 3000).await.expect("released")["task_id"],
        late.as_str()
    );
}

#[tokio::test]
async fn a_failed_dependency_settles_its_dependents_as_chosen() {
    let (_live, _h, base) = serve_with_watcher().await;
    let parent = submit(
        &base,
        json!({"task_type": "build", "command": "run", "max_attempts": 1}),
    )
    .await;
    let cancelled = submit(
        &base,
        json!({"task_type": "deploy", "command": "run", "depends_on": [parent]}),
    )
    .await;
    let failed = submit(
        &base,
        json!({"task_type": "deploy", "command": "run", "depends_on": [parent],
               "on_dependency_failure": "fail", "worker_name": "factory-2"}),
    )
    .await;
    let claimed = claim(&base, 3000).await.expect("the parent");
    assert_eq!(claimed["task_id"], parent.as_str());
    finish(&base, &parent, "fail").await;
    assert_eq!(status_of(&base, &cancelled).await, "cancelled");
    assert_eq!(status_of(&base, &failed).await, "failed");
    let (_, row) = get_json(&format!("{base}/api/tasks/{failed}")).await;
    assert!(
        row["error"].as_str().unwrap_or("").contains(&parent),
        "{row}"
    );
}

#[tokio::test]
async fn bad_dependencies_are_refused_naming_the_field() {
    let (_live, _h, base) = serve_with_watcher().await;
    let url = format!("{base}/api/tasks");
    let (status, refused) = post(
        &url,
        json!({"task_type": "t", "command": "c", "depends_on": ["never-submitted"]}),
    )
    .await;
    assert_eq!(
        (status, refused["error"]["field"].as_str()),
        (404, Some("depends_on")),
        "a dependency that was never submitted is not found: {refused}"
    );
    for (body, field) in [
        (
            json!({"task_type": "t", "command": "c", "depends_on": "a"}),
            "depends_on",
        ),
        (
            json!({"task_type": "t", "command": "c", "depends_on": ["a.b"]}),
            "depends_on",
        ),
        (
            json!({"task_type": "t", "command": "c", "on_dependency_failure": "fail"}),
            "on_dependency_failure",
        ),
        (
            json!([{"task_type": "t", "command": "c", "depends_on": ["x"]}]),
            "[0].depends_on",
        ),
    ] {
        let (status, refused) = post(&url, body.clone()).await;
        assert_eq!(
            (status, refused["error"]["field"].as_str()),
            (422, Some(field)),
            "{body}: {refused}"
        );
    }
}
