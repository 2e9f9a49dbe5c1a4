//! `AIOps` over NATS: the seed's entrypoints.

use super::*;

#[tokio::test]
async fn aiops_answers_the_seed_entrypoints_over_nats() {
    let rig = Rig::start().await;
    let client = serve_rpc(&rig).await;
    let rpc = async |op: &str, body: Value| {
        call(
            &client,
            &format!("vibehq.rpc.ai.{op}"),
            body.to_string().into(),
        )
        .await
    };

    let decision = rpc(
        "routePrompt",
        json!({"worker_name": "w", "prompt": "hello"}),
    )
    .await
    .expect("routed");
    assert_eq!(decision["tier"], "small");

    rig.a.push(text(r#"{"city": "Paris"}"#));
    let output = rpc(
        "generateStructuredOutput",
        json!({
            "worker_name": "w", "prompt": "Where?",
            "schema": {"type": "object", "required": ["city"]}
        }),
    )
    .await
    .expect("structured");
    assert_eq!(output["output"]["city"], "Paris");

    let called = rpc(
        "callTool",
        json!({"worker_name": "w", "tool": "submit_task", "arguments": {
            "task_type": "audit", "command": "health-audit", "worker_name": "factory-1"
        }}),
    )
    .await
    .expect("called");
    let task_id = called["result"]["task_id"].as_str().expect("a task id");
    assert!(
        rig.harness
            .queue
            .load(task_id)
            .await
            .expect("load")
            .is_some()
    );
    let shell = rpc(
        "callTool",
        json!({"worker_name": "w", "tool": "submit_task", "arguments": {
            "task_type": "audit", "command": "rm -rf /"
        }}),
    )
    .await;
    assert_eq!(shell.expect_err("a shell line is refused").0, 422);

    rig.a.push(text("draft"));
    rig.a.push(text(r#"{"score": 0.95}"#));
    let evaluation = rpc(
        "evaluateModel",
        json!({"worker_name": "w", "prompt": "p", "criteria": "c"}),
    )
    .await
    .expect("evaluated");
    assert_eq!(evaluation["passed"], true);

    let streamed = rpc(
        "ask",
        json!({"worker_name": "w", "prompt": "p", "stream": true}),
    )
    .await;
    assert_eq!(
        streamed.expect_err("no streaming over request-reply").0,
        422
    );
    let _ = &rig.b;
}
