//! The HTTP query API over the projections.

use serde_json::Value;
use vibehq_api::{AppState, router};
use vibehq_events::{Expect, StreamKind};
use vibehq_test_support::fixtures;

use crate::common::{Live, get_json};

/// A live projector and the API served on a free port.
async fn serve() -> (Live, String) {
    let live = Live::start().await;
    let state = AppState {
        reader: live.reader(),
        projector: live.handle.clone(),
        log: live.log.clone(),
        nats_url: live.nats.url(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router(state, Vec::new())).await });
    (live, base)
}

#[tokio::test]
async fn lists_filter_by_worker_status_and_time_and_paginate() {
    let (live, base) = serve().await;
    live.append_and_project(&fixtures::task_workload(400, "api"))
        .await;

    let (status, page) = get_json(&format!(
        "{base}/api/tables/container_tasks?worker_name=worker-0&limit=1000"
    ))
    .await;
    assert_eq!(status, 200);
    let items = page["items"].as_array().expect("items");
    assert_eq!(
        items.len(),
        10,
        "tasks 0, 10, 20, …: only even ids are targeted, every fifth worker-0"
    );
    assert!(items.iter().all(|r| r["worker_name"] == "worker-0"));

    let (_, failed) = get_json(&format!(
        "{base}/api/tables/container_tasks?status=failed&limit=1000"
    ))
    .await;
    let failed = failed["items"].as_array().expect("items");
    assert_eq!(failed.len(), 15, "every seventh of 100 tasks failed");
    assert!(
        failed
            .iter()
            .all(|r| r["status"] == "failed" && r["error"] == "exit 1")
    );

    let (_, none) = get_json(&format!(
        "{base}/api/tables/container_tasks?since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00Z"
    ))
    .await;
    assert_eq!(none["items"].as_array().expect("items").len(), 0);

    // Pages of 30 cover all 100 tasks exactly once, in order.
    let mut seen = Vec::new();
    let mut cursor: Option<i64> = None;
    loop {
        let url = match cursor {
            Some(c) => format!("{base}/api/tables/container_tasks?limit=30&cursor={c}"),
            None => format!("{base}/api/tables/container_tasks?limit=30"),
        };
        let (_, page) = get_json(&url).await;
        seen.extend(
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|r| r["id"].as_i64().expect("id")),
        );
        match page["next_cursor"].as_i64() {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, (1..=100).collect::<Vec<_>>());

    let (_, desc) = get_json(&format!(
        "{base}/api/tables/container_tasks?limit=2&order=desc"
    ))
    .await;
    assert_eq!(desc["items"][0]["id"], 100);

    let (status, row) = get_json(&format!("{base}/api/tables/container_tasks/api-3")).await;
    assert_eq!(status, 200);
    assert_eq!(
        row["parameters"],
        serde_json::json!({"n": 3}),
        "JSON columns come back as JSON"
    );
}

#[tokio::test]
async fn bad_input_gets_a_4xx_json_error_naming_the_field() {
    let (_live, base) = serve().await;
    let cases: &[(&str, u16, &str)] = &[
        ("/api/tables/container_tasks?status=exploded", 400, "status"),
        ("/api/tables/container_tasks?limit=0", 400, "limit"),
        ("/api/tables/container_tasks?limit=5000", 400, "limit"),
        ("/api/tables/container_tasks?limit=ten", 400, "limit"),
        ("/api/tables/container_tasks?cursor=-1", 400, "cursor"),
        ("/api/tables/container_tasks?since=yesterday", 400, "since"),
        ("/api/tables/container_tasks?order=sideways", 400, "order"),
        (
            "/api/tables/container_tasks?wroker_name=typo",
            400,
            "wroker_name",
        ),
        ("/api/tables/ai_evaluations?status=pending", 400, "status"),
        ("/api/tables/container_tasks?min_seq=abc", 400, "min_seq"),
        (
            "/api/tables/container_health_checks?healthy=banana",
            400,
            "healthy",
        ),
        (
            "/api/tables/container_tasks?worker_name=a&worker_name=b",
            400,
            "worker_name",
        ),
        ("/api/tables/no_such_table", 404, "table"),
        ("/api/tables/container_tasks/no-such-task", 404, "key"),
        ("/api/nothing-here", 404, "path"),
    ];
    for (path, status, field) in cases {
        let (got, body) = get_json(&format!("{base}{path}")).await;
        assert_eq!(got, *status, "{path}: {body}");
        assert_eq!(body["error"]["field"], *field, "{path}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{path}"
        );
    }
    let (got, body) = get_json(&format!(
        "{base}/api/tables/container_tasks?since=200&until=100"
    ))
    .await;
    assert_eq!(
        (got, &body["items"]),
        (200, &serde_json::json!([])),
        "an empty window is no rows, not an error: {body}"
    );
    for flag in ["true", "false", "1", "0"] {
        let path = format!("/api/tables/container_health_checks?healthy={flag}");
        let (got, body) = get_json(&format!("{base}{path}")).await;
        assert_eq!(got, 200, "{path}: {body}");
    }
}

#[tokio::test]
async fn a_client_reads_its_own_write_with_min_seq() {
    let (live, base) = serve().await;
    let event = fixtures::every_kind("w", "c", "ryw").remove(0);
    let seq = live
        .log
        .append(&event, Expect::Any)
        .await
        .expect("append")
        .sequence;
    let (status, row) = get_json(&format!(
        "{base}/api/tables/container_tasks/task-ryw?min_seq={seq}"
    ))
    .await;
    assert_eq!(status, 200, "{row}");
    assert_eq!(row["version"], seq);

    let (status, body) =
        get_json(&format!("{base}/api/tables/container_tasks?min_seq=999999")).await;
    assert_eq!(
        (
            status,
            body["error"]["code"].as_str(),
            body["error"]["field"].as_str()
        ),
        (409, Some("min_seq_ahead"), Some("min_seq")),
        "a sequence the stream has not reached is refused at once, not waited for: {body}"
    );
}

#[tokio::test]
async fn health_reports_streams_and_projector_lag_and_the_api_is_documented() {
    let (live, base) = serve().await;
    live.append_and_project(&fixtures::every_kind("w", "c", "h"))
        .await;
    let (status, health) = get_json(&format!("{base}/health")).await;
    assert_eq!(status, 200);
    let tasks = &health["streams"][0];
    assert_eq!(tasks["name"], StreamKind::Tasks.name());
    assert_eq!(tasks["lag"], 0);
    assert_eq!(tasks["projected_sequence"], tasks["last_sequence"]);

    let (status, doc) = get_json(&format!("{base}/openapi.json")).await;
    assert_eq!(status, 200);
    for path in [
        "/health",
        "/api/tables",
        "/api/tables/container_tasks",
        "/api/tables/container_tasks/{task_id}",
        "/api/tables/ai_model_calls/{attempt_id}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "OpenAPI lacks {path}");
    }
    // The document says what the server accepts (papercut 16): a cursor is never negative,
    // and a min_seq the projection does not reach in time is a 504. Each table has its own
    // path, with its own statuses.
    let list = &doc["paths"]["/api/tables/container_tasks"]["get"];
    let status = list["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "status"))
        .expect("a status parameter");
    assert_eq!(
        status["schema"]["enum"],
        serde_json::json!(vibehq_events::task::lifecycle::State::NAMES),
        "{status}"
    );
    let cursor = list["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "cursor"))
        .expect("a cursor parameter");
    assert_eq!(cursor["schema"]["minimum"], 0, "{cursor}");
    assert!(list["responses"]["504"].is_object(), "{list}");
    let (_, tables) = get_json(&format!("{base}/api/tables")).await;
    assert_eq!(
        tables.as_array().map(Vec::len),
        Some(vibehq_projector::query::TABLES.len())
    );
    assert!(
        tables
            .as_array()
            .expect("tables")
            .iter()
            .any(|t: &Value| t["name"] == "ai_tool_call_streams")
    );
}
