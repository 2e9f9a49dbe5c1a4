//! The queue's doors: REST and RPC answer every operation alike, and REST's own behaviour
//! (statuses, read-your-writes, errors that name their field).

use serde_json::{Map, Value, json};

use crate::common::{call, post, queue_state, serve};

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
        "/api/keys/{key}",
        "/api/keys",
        "/ws/tasks",
    ] {
        assert!(doc["paths"].get(path).is_some(), "OpenAPI lacks {path}");
    }
}

#[tokio::test]
async fn the_rest_api_claims_a_named_task_and_lists_dead_letters() {
    let (_live, _h, base) = serve().await;
    let mut ids = Vec::new();
    for priority in [1, 2] {
        let (_, s) = post(
            &format!("{base}/api/tasks"),
            json!({"task_type": "t", "command": "c", "priority": priority, "max_attempts": 1}),
        )
        .await;
        ids.push(s["task_id"].as_str().expect("id").to_owned());
    }
    // Claim the lower-priority one by name.
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
        (json!("not an object"), 400, "body"),
        (json!(["not", "an", "object"]), 400, "[0]"),
        (
            json!([{"task_type": "t", "command": "c"}, {"task_type": "t"}]),
            422,
            "[1].command",
        ),
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
        json!({"worker_name": "w", "attempt": 0}),
    )
    .await;
    assert_eq!(
        (status, error["error"]["field"].as_str()),
        (422, Some("attempt"))
    );
    let (status, error) = post(
        &format!("{tasks}/some-task/complete"),
        json!({"task_id": "other", "worker_name": "w"}),
    )
    .await;
    assert_eq!(
        (status, error["error"]["field"].as_str()),
        (422, Some("task_id")),
        "REST takes the task id from the path only"
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

/// One step of the scenario both doors run: an operation, its request (with `task_id` as RPC
/// takes it), and the HTTP status it must answer.
struct Step {
    op: &'static str,
    body: Value,
    status: u16,
}

fn step(op: &'static str, body: Value, status: u16) -> Step {
    Step { op, body, status }
}

/// The REST request of an operation: method, path and the body or query it sends.
fn rest(op: &str, body: &Value) -> (reqwest::Method, String, Option<Value>) {
    let mut body = body.as_object().cloned().unwrap_or_default();
    let task_id = body
        .remove("task_id")
        .and_then(|v| v.as_str().map(str::to_owned));
    let id = task_id.unwrap_or_default();
    let post = |path: String, body: Map<String, Value>| {
        (reqwest::Method::POST, path, Some(Value::Object(body)))
    };
    let query = |path: String, body: &Map<String, Value>| {
        let pairs: Vec<String> = body
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_owned)))
            .collect();
        (
            reqwest::Method::GET,
            format!("{path}?{}", pairs.join("&")),
            None,
        )
    };
    match op {
        "submitTask" => post("/api/tasks".into(), body),
        "getTasks" => query("/api/tasks".into(), &body),
        "getTask" => query(format!("/api/tasks/{id}"), &body),
        "claimTask" => post("/api/tasks/claim".into(), body),
        "claimTaskById" => post(format!("/api/tasks/{id}/claim"), body),
        "startTask" => post(format!("/api/tasks/{id}/start"), body),
        "heartbeatTask" => post(format!("/api/tasks/{id}/heartbeat"), body),
        "completeTask" => post(format!("/api/tasks/{id}/complete"), body),
        "failTask" => post(format!("/api/tasks/{id}/fail"), body),
        "cancelTask" => post(format!("/api/tasks/{id}/cancel"), body),
        other => panic!("no REST route for {other}"),
    }
}

/// What an answer says, without what differs between two runs (row ids and times).
fn comparable(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| !k.ends_with("_at") && k != "id" && k != "next_cursor")
                .map(|(k, v)| (k, comparable(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(comparable).collect()),
        other => other,
    }
}

#[tokio::test]
async fn every_operation_answers_the_same_over_rest_and_over_rpc() {
    let id = vibehq_queue::queue::keyed_task_id;
    let (t1, t2, t3) = (id("k1"), id("k2"), id("k3"));
    let me = json!({"worker_name": "w", "container_name": "c"});
    let with = |extra: Value| {
        let mut body = me.clone();
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            body[k] = v;
        }
        body
    };
    let task = |key: &str, extra: Value| {
        let mut body = json!({"task_type": "audit", "command": "audit", "idempotency_key": key});
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            body[k] = v;
        }
        body
    };
    let scenario = vec![
        step("submitTask", task("k1", json!({"worker_name": "w"})), 201),
        step("submitTask", task("k1", json!({"worker_name": "w"})), 200),
        step(
            "submitTask",
            task("k1", json!({"worker_name": "w", "priority": 3})),
            409,
        ),
        step(
            "submitTasks",
            json!([task("k2", json!({})), task("k3", json!({}))]),
            201,
        ),
        step("getTask", json!({"task_id": t1, "min_seq": 3}), 200),
        step("getTasks", json!({"status": "pending", "min_seq": 3}), 200),
        step("claimTask", me.clone(), 200),
        step("claimTaskById", with(json!({"task_id": t2})), 200),
        step("startTask", with(json!({"task_id": t1})), 200),
        step(
            "heartbeatTask",
            with(json!({"task_id": t1, "attempt": 1})),
            204,
        ),
        step(
            "completeTask",
            with(json!({"task_id": t1, "output": "ok"})),
            200,
        ),
        step("completeTask", with(json!({"task_id": t1})), 409),
        step(
            "failTask",
            with(json!({"task_id": t2, "error": "disk full", "retry": false})),
            200,
        ),
        step(
            "cancelTask",
            json!({"task_id": t3, "reason": "not needed"}),
            200,
        ),
        step("cancelTask", json!({"task_id": t3}), 409),
        step("claimTask", me.clone(), 204),
        step(
            "getTasks",
            json!({"status": "completed", "min_seq": 10}),
            200,
        ),
        step("getTasks", json!({"status": "bogus"}), 400),
        step(
            "completeTask",
            json!({"task_id": "nope", "worker_name": "w"}),
            404,
        ),
        step("claimTask", json!({"container_name": "c"}), 422),
    ];

    // Over REST, on one fresh server.
    let (_live, _h, base) = serve().await;
    let client = reqwest::Client::new();
    let mut over_rest = Vec::new();
    for step in &scenario {
        let (status, answer) = if step.op == "submitTasks" {
            post(&format!("{base}/api/tasks"), step.body.clone()).await
        } else {
            let (method, path, body) = rest(step.op, &step.body);
            let mut request = client.request(method, format!("{base}{path}"));
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            let text = response.text().await.expect("body");
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        };
        assert_eq!(
            status, step.status,
            "REST {} {}: {answer}",
            step.op, step.body
        );
        over_rest.push(comparable(answer));
    }

    // Over RPC, on another fresh server: the same answers.
    let (live, h, _base) = serve().await;
    let rpc = vibehq_queue::rpc::Rpc::start(queue_state(&live, &h), live.nats.connect().await)
        .await
        .expect("the service starts");
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    tokio::spawn(rpc.serve(stop));
    let client = live.nats.connect().await;
    for (step, rest_answer) in scenario.iter().zip(over_rest) {
        let subject = format!("vibehq.rpc.tasks.{}", step.op);
        let answer = match call(&client, &subject, step.body.to_string().into()).await {
            Ok(value) => {
                let status = if value.is_null() { 204 } else { step.status };
                assert_eq!(
                    status, step.status,
                    "RPC {} {}: {value}",
                    step.op, step.body
                );
                value
            }
            Err((code, error)) => {
                assert_eq!(code, step.status, "RPC {} {}: {error}", step.op, step.body);
                error
            }
        };
        assert_eq!(comparable(answer), rest_answer, "{} {}", step.op, step.body);
    }
}

#[tokio::test]
async fn a_thousand_tasks_in_one_rest_request_are_stored_together_and_answered_in_order() {
    let (_live, h, base) = serve().await;
    let tasks: Vec<Value> = (0..1000)
        .map(|i| json!({"task_type": "audit", "command": "audit", "priority": i % 10, "parameters": {"n": i}}))
        .collect();
    let (status, answer) = post(&format!("{base}/api/tasks"), Value::Array(tasks.clone())).await;
    assert_eq!(status, 201, "{answer}");
    let answers = answer.as_array().expect("an array");
    assert_eq!(answers.len(), 1000);
    let sequences: Vec<u64> = answers
        .iter()
        .map(|a| a["sequence"].as_u64().expect("sequence"))
        .collect();
    assert!(
        sequences.windows(2).all(|w| w[1] == w[0] + 1),
        "one batch, stored contiguously in order"
    );
    // One bad task refuses the whole request, naming it; nothing of it is stored.
    let mut bad = tasks;
    bad[500] = json!({"task_type": "audit", "command": "rm -rf /"});
    let (status, error) = post(&format!("{base}/api/tasks"), Value::Array(bad)).await;
    assert_eq!(
        (status, error["error"]["field"].as_str()),
        (422, Some("[500].command"))
    );
    let info = h
        .log
        .stream_info(vibehq_events::StreamKind::Tasks)
        .await
        .expect("info");
    assert_eq!(info.state.messages, 1000);
}

#[tokio::test]
async fn a_tasks_timeline_comes_from_the_stream_and_a_dead_task_can_be_retried() {
    let (_live, _h, base) = serve().await;
    let (_, submitted) = post(
        &format!("{base}/api/tasks"),
        json!({"task_type": "t", "command": "c", "max_attempts": 1, "parameters": {"n": 1}}),
    )
    .await;
    let id = submitted["task_id"].as_str().expect("id").to_owned();
    let (status, refused) = post(&format!("{base}/api/tasks/{id}/retry"), json!({})).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (409, Some("not_dead")),
        "a pending task is not retried: {refused}"
    );
    let (_, claim) = post(
        &format!("{base}/api/tasks/claim"),
        json!({"worker_name": "w", "wait_ms": 5000}),
    )
    .await;
    assert_eq!(claim["task_id"], id.as_str());
    let (status, _) = post(
        &format!("{base}/api/tasks/{id}/fail"),
        json!({"worker_name": "w", "error": "disk full"}),
    )
    .await;
    assert_eq!(status, 200);

    let (status, timeline) =
        crate::common::get_json(&format!("{base}/api/tasks/{id}/history")).await;
    assert_eq!(status, 200, "{timeline}");
    let steps: Vec<(&str, &str)> = timeline
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or_default(),
                e["status"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("task.submitted", "pending"),
            ("task.assigned", "assigned"),
            ("task.failed", "failed")
        ]
    );
    assert_eq!(timeline[2]["event"]["payload"]["error"], "disk full");
    assert_eq!(timeline[1]["actor"], "w");

    let (status, retried) = post(
        &format!("{base}/api/tasks/{id}/retry"),
        json!({"new_task_id": "retry-1"}),
    )
    .await;
    assert_eq!(
        (status, retried["task_id"].as_str()),
        (201, Some("retry-1")),
        "{retried}"
    );
    let (status, again) = post(
        &format!("{base}/api/tasks/{id}/retry"),
        json!({"new_task_id": "retry-1"}),
    )
    .await;
    assert_eq!(
        (status, again["created"].as_bool()),
        (200, Some(false)),
        "sending it again is safe"
    );
    let (_, row) = crate::common::get_json(&format!(
        "{base}/api/tasks/retry-1?min_seq={}",
        retried["sequence"]
    ))
    .await;
    assert_eq!(row["retry_of"], id.as_str());
    assert_eq!(row["parameters"], json!({"n": 1}));
    assert_eq!(row["status"], "pending");
    let (_, retries) =
        crate::common::get_json(&format!("{base}/api/tasks?retry_of={id}&priority=0")).await;
    let ids: Vec<&str> = retries["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {retries}"))
        .iter()
        .filter_map(|t| t["task_id"].as_str())
        .collect();
    assert_eq!(ids, ["retry-1"], "the retries of a task, by its id");
    let (status, missing) =
        crate::common::get_json(&format!("{base}/api/tasks/no-such-task/history")).await;
    assert_eq!(
        (status, missing["error"]["field"].as_str()),
        (404, Some("task_id"))
    );
}

#[tokio::test]
async fn queues_show_what_waits_per_lane_and_throughput_per_minute() {
    let (live, _h, base) = serve().await;
    let mut last = 0;
    for (priority, worker) in [(5, None), (5, None), (1, Some("w"))] {
        let (_, s) = post(
            &format!("{base}/api/tasks"),
            json!({"task_type": "t", "command": "c", "priority": priority, "worker_name": worker}),
        )
        .await;
        last = s["sequence"].as_u64().expect("sequence");
    }
    let (_, claim) = post(
        &format!("{base}/api/tasks/claim"),
        json!({"worker_name": "x", "wait_ms": 5000}),
    )
    .await;
    let id = claim["task_id"].as_str().expect("claimed").to_owned();
    let (_, done) = post(
        &format!("{base}/api/tasks/{id}/complete"),
        json!({"worker_name": "x"}),
    )
    .await;
    last = last.max(done["sequence"].as_u64().expect("sequence"));
    live.caught_up(vibehq_events::StreamKind::Tasks, last).await;

    let (status, lanes) = crate::common::get_json(&format!("{base}/api/queues")).await;
    assert_eq!(status, 200, "{lanes}");
    let lanes = lanes.as_array().expect("lanes");
    assert_eq!(lanes[0]["lane"], "p5.any", "the best lane first: {lanes:?}");
    assert_eq!(
        (lanes[0]["pending"].as_u64(), lanes[0]["held"].as_u64()),
        (Some(1), Some(0))
    );
    assert!(
        lanes[0]["oldest_pending_secs"]
            .as_i64()
            .is_some_and(|s| s >= 0)
    );
    let w = lanes
        .iter()
        .find(|l| l["lane"] == "p1.w.w")
        .expect("w's lane");
    assert_eq!(
        (w["pending"].as_u64(), w["worker_name"].as_str()),
        (Some(1), Some("w"))
    );

    let (status, minutes) =
        crate::common::get_json(&format!("{base}/api/queues/throughput?minutes=5")).await;
    assert_eq!(status, 200, "{minutes}");
    let minutes = minutes.as_array().expect("minutes");
    assert_eq!(minutes.len(), 5);
    let sum = |field: &str| {
        minutes
            .iter()
            .filter_map(|m| m[field].as_u64())
            .sum::<u64>()
    };
    assert_eq!((sum("submitted"), sum("completed")), (3, 1));
    let (status, bad) =
        crate::common::get_json(&format!("{base}/api/queues/throughput?minutes=0")).await;
    assert_eq!(
        (status, bad["error"]["field"].as_str()),
        (400, Some("minutes"))
    );
}
