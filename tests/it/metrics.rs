//! `/metrics`: after a known workload, a Prometheus text-format parser reads the figures the
//! workload implies: tasks by status and type, pending depth per priority and target, HTTP
//! requests by route and status, queue operations by outcome, streams and the connection.

use std::time::Duration;

use prometheus_parse::{Sample, Scrape, Value as Metric};
use serde_json::json;

use crate::common::{UpProcess, post};

/// One scrape, parsed.
struct Figures(Vec<Sample>);

impl Figures {
    async fn scrape(base: &str) -> Self {
        let response = reqwest::get(format!("{base}/metrics")).await.expect("GET");
        assert_eq!(response.status().as_u16(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        let text = response.text().await.expect("body");
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        Self(
            Scrape::parse(lines)
                .expect("Prometheus text format")
                .samples,
        )
    }

    /// The value of `metric` with exactly these labels (0 when absent: a family without
    /// that series).
    fn value(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .find(|s| {
                s.metric == metric
                    && s.labels.len() == labels.len()
                    && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
            })
            .map_or(0.0, |s| match &s.value {
                Metric::Counter(v) | Metric::Gauge(v) | Metric::Untyped(v) => *v,
                other => panic!("{metric} is not a number: {other:?}"),
            })
    }
}

#[tokio::test]
async fn metrics_count_a_known_workload() {
    let dir = tempfile::tempdir().expect("dir");
    let up = UpProcess::start(dir.path(), &["--embedded-nats-port", "0"]).await;
    let base = up.http.as_str();
    let submit = format!("{base}/api/tasks");
    for _ in 0..3 {
        let (status, _) = post(&submit, json!({"task_type": "build", "command": "make"})).await;
        assert_eq!(status, 201);
    }
    for _ in 0..2 {
        let task = json!({"task_type": "deploy", "command": "ship", "priority": 5, "worker_name": "factory-1"});
        let (status, _) = post(&submit, task).await;
        assert_eq!(status, 201);
    }
    let (status, _) = post(&submit, json!({"command": "make"})).await;
    assert_eq!(status, 422, "a submission without task_type is refused");
    let (status, claim) = post(
        &format!("{base}/api/tasks/claim"),
        json!({"worker_name": "factory-2", "container_name": "c1"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(claim["task_type"], "build");
    let task_id = claim["task_id"].as_str().expect("task_id");
    let (status, _) = post(
        &format!("{base}/api/tasks/{task_id}/complete"),
        json!({"worker_name": "factory-2", "container_name": "c1", "output": "ok"}),
    )
    .await;
    assert_eq!(status, 200);

    // The fleet's figures come from the projection: wait until it has the completion.
    let figures = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let figures = Figures::scrape(base).await;
            let completed = [("status", "completed"), ("task_type", "build")];
            if figures.value("vibehq_tasks", &completed) == 1.0 {
                return figures;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await
    .expect("the projection reaches the completion");

    let tasks = |status, task_type| {
        figures.value(
            "vibehq_tasks",
            &[("status", status), ("task_type", task_type)],
        )
    };
    assert_eq!(tasks("pending", "build"), 2.0);
    assert_eq!(tasks("pending", "deploy"), 2.0);
    let pending = |priority, worker| {
        figures.value(
            "vibehq_pending_tasks",
            &[
                ("priority", priority),
                ("worker_name", worker),
                ("container_name", ""),
            ],
        )
    };
    assert_eq!(
        pending("5", "factory-1"),
        2.0,
        "targeted work, by its target"
    );
    assert_eq!(pending("0", ""), 2.0, "work for any worker");
    let age = figures.value(
        "vibehq_oldest_pending_age_seconds",
        &[
            ("priority", "5"),
            ("worker_name", "factory-1"),
            ("container_name", ""),
        ],
    );
    assert!((0.0..60.0).contains(&age), "oldest pending age {age}");

    let http = |status| {
        figures.value(
            "vibehq_http_request_duration_seconds_count",
            &[
                ("method", "POST"),
                ("route", "/api/tasks"),
                ("status", status),
            ],
        )
    };
    assert_eq!(http("201"), 5.0);
    assert_eq!(http("422"), 1.0);
    let op = |op, outcome| {
        figures.value(
            "vibehq_queue_operation_duration_seconds_count",
            &[("op", op), ("outcome", outcome)],
        )
    };
    assert_eq!(op("submitTask", "2xx"), 5.0);
    assert_eq!(op("submitTask", "4xx"), 1.0);
    assert_eq!(op("claimTask", "2xx"), 1.0);
    assert_eq!(op("completeTask", "2xx"), 1.0);

    // 5 submissions, 1 assignment, 1 completion.
    let stored = figures.value("vibehq_stream_messages", &[("stream", "VIBEHQ_TASKS")]);
    assert_eq!(stored, 7.0);
    assert_eq!(figures.value("vibehq_nats_connected", &[]), 1.0);
}
