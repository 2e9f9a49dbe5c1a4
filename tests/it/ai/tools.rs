//! Tool loops: a streamed two-step loop over a built-in tool.

use super::*;

#[tokio::test]
async fn a_streamed_two_step_tool_loop_calls_a_built_in_tool_and_the_deltas_reassemble() {
    let rig = Rig::start().await;
    let submitted = rig
        .harness
        .queue
        .submit(
            &Actor::new("orchestrator", None),
            NewTask {
                task_type: "audit".into(),
                command: "health-audit".into(),
                parameters: None,
                priority: 5,
                worker_name: Some("factory-1".into()),
                container_name: None,
                max_attempts: 3,
                ..Default::default()
            },
        )
        .await
        .expect("submit");
    rig.live
        .caught_up(StreamKind::Tasks, submitted.sequence)
        .await;
    let task_id = submitted.task_id;
    rig.a.push(Reply::StreamToolCall {
        name: "get_task_status".into(),
        parts: vec![
            r#"{"task_"#.into(),
            format!(r#"id": "{task_id}"#),
            r#""}"#.into(),
        ],
    });
    rig.a.push(Reply::Stream(vec![
        "The audit ".into(),
        "is ".into(),
        "pending.".into(),
    ]));

    let response = reqwest::Client::new()
        .post(format!("{}/api/ai/runs", rig.base))
        .json(&json!({"worker_name": "specialist-2", "prompt": "How is the audit doing?", "stream": true}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/event-stream"))
    );
    let events = sse_events(&response.text().await.expect("body"));
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"step"));
    assert_eq!(names.last(), Some(&"done"), "{names:?}");

    let deltas = |step: u64, kind: &str, field: &str| -> String {
        events
            .iter()
            .filter(|(n, e)| n == "delta" && e["step"] == step && e["delta"]["type"] == kind)
            .map(|(_, e)| e["delta"][field].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        deltas(1, "tool_call_arguments", "json"),
        format!(r#"{{"task_id": "{task_id}"}}"#)
    );
    assert_eq!(deltas(2, "text", "text"), "The audit is pending.");
    let (_, tool_result) = events
        .iter()
        .find(|(n, _)| n == "tool_result")
        .expect("a tool result");
    assert_eq!(tool_result["result"]["status"], "pending");
    assert_eq!(tool_result["tool_name"], "get_task_status");

    let (_, done) = events.last().expect("done");
    assert_eq!(
        (done["text"].as_str(), done["steps"].as_u64()),
        (Some("The audit is pending."), Some(2))
    );
    assert_eq!(done["stopped"], "answered");
    // The second turn carried the tool's result back to the model.
    let second = rig.a.requests()[1].to_string();
    assert!(
        second.contains("pending") && second.contains("tool"),
        "{second}"
    );

    let run_id = done["run_id"].as_str().expect("run id");
    let calls = rig.rows("ai_tool_calls", "run_id", run_id).await;
    assert_eq!(calls.len(), 1);
    assert_eq!(
        (&calls[0]["tool_name"], &calls[0]["step"]),
        (&json!("get_task_status"), &json!(1))
    );
    let streams = rig.rows("ai_tool_call_streams", "run_id", run_id).await;
    assert_eq!(streams.len(), 2);
    assert_eq!(streams[1]["text"], "The audit is pending.");
    assert_eq!(streams[1]["chunk_count"], 3);
    assert_eq!(streams[0]["tool_calls"][0]["name"], "get_task_status");
    assert!(streams.iter().all(|s| s["worker_name"] == "specialist-2"));
}

#[tokio::test]
async fn a_runs_failed_tool_calls_are_among_its_calls_as_they_are_in_the_table() {
    let rig = Rig::start().await;
    rig.a.push(Reply::ToolCall {
        name: "get_task_status".into(),
        arguments: json!({"wrong": 1}),
    });
    rig.a.push(text("I could not look it up."));
    let (status, done) = rig
        .post(
            "/api/ai/runs",
            json!({"worker_name": "w", "prompt": "How is task x?"}),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    let calls = done["calls"].as_array().expect("calls");
    assert_eq!(calls.len(), 1, "{done}");
    assert_eq!(calls[0]["tool_name"], "get_task_status");
    assert!(
        calls[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid arguments")),
        "{done}"
    );
    let recorded = rig
        .rows(
            "ai_tool_calls",
            "run_id",
            done["run_id"].as_str().expect("id"),
        )
        .await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["call_id"], calls[0]["call_id"]);
}
