//! Pausing and resuming work: every lane, or a worker's targeted work. A paused scope's tasks
//! are handed to no claimer and stay pending; resuming lets them go at once; both are in the
//! API, the live feed and `why`.

use serde_json::{Value, json};

use crate::common::{get_json, post, serve};
use crate::queue_live::{events_through, open};

async fn submit(base: &str, body: Value) -> String {
    let (status, submitted) = post(&format!("{base}/api/tasks"), body).await;
    assert_eq!(status, 201, "{submitted}");
    submitted["task_id"].as_str().expect("id").to_owned()
}

/// What `worker:c1` is handed within `wait_ms`, if anything.
async fn claim(base: &str, worker: &str, wait_ms: u64) -> Option<String> {
    let (status, claim) = post(
        &format!("{base}/api/tasks/claim"),
        json!({"worker_name": worker, "container_name": "c1", "wait_ms": wait_ms}),
    )
    .await;
    assert!(status == 200 || status == 204, "{status}: {claim}");
    claim["task_id"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn pause_holds_work_back_and_resume_releases_it() {
    let (_live, _h, base) = serve().await;
    let factory_1 = submit(
        &base,
        json!({"task_type": "audit", "command": "audit", "worker_name": "factory-1"}),
    )
    .await;
    let factory_2 = submit(
        &base,
        json!({"task_type": "audit", "command": "audit", "worker_name": "factory-2"}),
    )
    .await;
    let mut feed = open(&base, "").await;

    let (status, paused) = post(
        &format!("{base}/api/queues/pause"),
        json!({"scope": "worker:factory-1", "reason": "maintenance"}),
    )
    .await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["paused"], true);
    let events = events_through(&mut feed, paused["sequence"].as_u64().expect("seq")).await;
    let event = events.last().expect("the pause");
    assert_eq!(
        (event["type"].as_str(), event["payload"]["scope"].as_str()),
        (Some("queue.paused"), Some("worker:factory-1"))
    );

    // factory-1's work is held back; other workers' flows.
    assert_eq!(claim(&base, "factory-1", 800).await, None, "held back");
    assert_eq!(
        claim(&base, "factory-2", 2000).await.as_deref(),
        Some(factory_2.as_str())
    );
    let (_, why) = get_json(&format!("{base}/api/tasks/{factory_1}/why")).await;
    assert_eq!(
        why["reasons"][0],
        json!({"reason": "paused", "scope": "worker:factory-1"}),
        "{why}"
    );
    let (status, again) = post(
        &format!("{base}/api/queues/pause"),
        json!({"scope": "worker:factory-1"}),
    )
    .await;
    assert_eq!(
        (status, again["error"]["field"].as_str()),
        (409, Some("scope"))
    );

    // Pausing everything also holds back a lane created afterwards.
    let (status, _) = post(&format!("{base}/api/queues/pause"), json!({"scope": "all"})).await;
    assert_eq!(status, 200);
    let urgent = submit(
        &base,
        json!({"task_type": "audit", "command": "audit", "priority": 8}),
    )
    .await;
    assert_eq!(
        claim(&base, "factory-2", 800).await,
        None,
        "everything is held back"
    );
    let (_, listed) = get_json(&format!("{base}/api/queues/pauses?status=paused")).await;
    let mut scopes: Vec<&str> = listed["items"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["scope"].as_str())
        .collect();
    scopes.sort_unstable();
    assert_eq!(scopes, ["all", "worker:factory-1"], "{listed}");

    // Resuming everything releases the new lane at once; factory-1's stays paused.
    let (status, resumed) = post(
        &format!("{base}/api/queues/resume"),
        json!({"scope": "all"}),
    )
    .await;
    assert_eq!(
        (status, resumed["paused"].as_bool()),
        (200, Some(false)),
        "{resumed}"
    );
    assert_eq!(
        claim(&base, "factory-2", 2000).await.as_deref(),
        Some(urgent.as_str())
    );
    assert_eq!(
        claim(&base, "factory-1", 800).await,
        None,
        "its own pause holds"
    );
    let (status, _) = post(
        &format!("{base}/api/queues/resume"),
        json!({"scope": "worker:factory-1"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        claim(&base, "factory-1", 2000).await.as_deref(),
        Some(factory_1.as_str()),
        "nothing was lost"
    );
    let (_, why) = get_json(&format!("{base}/api/tasks/{factory_1}/why")).await;
    assert_eq!(why["status"], "assigned");
}

#[tokio::test]
async fn a_bad_pause_is_refused_naming_the_field() {
    let (_live, _h, base) = serve().await;
    for (body, status, field) in [
        (json!({}), 422, "scope"),
        (json!({"scope": "type:audit"}), 422, "scope"),
        (json!({"scope": "worker:a.b"}), 422, "scope"),
        (json!({"scope": "all", "colour": "red"}), 422, "colour"),
    ] {
        let (got, refused) = post(&format!("{base}/api/queues/pause"), body.clone()).await;
        assert_eq!(
            (got, refused["error"]["field"].as_str()),
            (status, Some(field)),
            "{body}: {refused}"
        );
    }
    let (got, refused) = post(
        &format!("{base}/api/queues/resume"),
        json!({"scope": "all"}),
    )
    .await;
    assert_eq!(
        (got, refused["error"]["field"].as_str()),
        (409, Some("scope")),
        "not paused: {refused}"
    );
}
