//! Bad input gets a clear error naming its field, over REST and RPC.

use super::*;

#[tokio::test]
async fn bad_input_gets_a_clear_error_naming_the_field_over_rest_and_rpc() {
    let rig = Rig::start().await;
    let cases = [
        (
            "/api/ai/structured",
            json!({"worker_name": "w", "prompt": "p", "schema": {"type": "nope"}}),
            422,
            "schema",
        ),
        (
            "/api/ai/structured",
            json!({"worker_name": "w", "prompt": "p", "schema": "object"}),
            422,
            "schema",
        ),
        (
            "/api/ai/tools/no_such_tool",
            json!({"worker_name": "w", "arguments": {}}),
            404,
            "tool",
        ),
        (
            "/api/ai/tools/get_task_status",
            json!({"worker_name": "w", "arguments": {"id": 1}}),
            422,
            "arguments",
        ),
        (
            "/api/ai/ask",
            json!({"worker_name": "w", "prompt": "p", "provider": "openai-prod"}),
            404,
            "provider",
        ),
        ("/api/ai/ask", json!({"prompt": "p"}), 422, "worker_name"),
        ("/api/ai/ask", json!({"worker_name": "w"}), 422, "prompt"),
        (
            "/api/ai/ask",
            json!({"worker_name": "w", "prompt": "p", "tier": "huge"}),
            422,
            "tier",
        ),
        (
            "/api/ai/ask",
            json!({"worker_name": "w", "prompt": "p", "temperature": 2}),
            422,
            "temperature",
        ),
        (
            "/api/ai/runs",
            json!({"worker_name": "w", "prompt": "p", "tools": ["nope"]}),
            404,
            "tools",
        ),
        (
            "/api/ai/runs",
            json!({"worker_name": "w", "prompt": "p", "max_steps": 0}),
            422,
            "max_steps",
        ),
        (
            "/api/ai/evaluate",
            json!({"worker_name": "w", "prompt": "p", "criteria": "c", "threshold": 2}),
            422,
            "threshold",
        ),
        (
            "/api/ai/plans",
            json!({"worker_name": "w", "goal": "g", "steps": []}),
            422,
            "steps",
        ),
        (
            "/api/ai/plans",
            json!({"worker_name": "w", "goal": "g", "steps": [{"name": "x"}]}),
            422,
            "steps",
        ),
        (
            "/api/ai/plans",
            json!({"worker_name": "w", "goal": "g", "steps": [{"title": "t", "command": "rm -rf /"}]}),
            422,
            "steps",
        ),
        (
            "/api/ai/approvals/nope/approve",
            json!({"worker_name": "w"}),
            404,
            "approval_id",
        ),
    ];
    for (path, body, code, field) in cases {
        let (status, error) = rig.post(path, body.clone()).await;
        assert_eq!(status, code, "{path} {body}: {error}");
        assert_eq!(error["error"]["field"], field, "{path} {body}: {error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let response = reqwest::Client::new()
        .post(format!("{}/api/ai/ask", rig.base))
        .body("{not json")
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 400);
    assert!(rig.a.requests().is_empty(), "bad input reached a provider");

    // The same refusals over NATS.
    let client = serve_rpc(&rig).await;
    let refused = call(
        &client,
        "vibehq.rpc.ai.generateStructuredOutput",
        json!({"worker_name": "w", "prompt": "p", "schema": {"type": "nope"}})
            .to_string()
            .into(),
    )
    .await;
    let (code, body) = refused.expect_err("refused");
    assert_eq!(
        (code, body["error"]["field"].as_str()),
        (422, Some("schema"))
    );
    let refused = call(
        &client,
        "vibehq.rpc.ai.callTool",
        json!({"worker_name": "w", "tool": "nope"})
            .to_string()
            .into(),
    )
    .await;
    assert_eq!(refused.expect_err("refused").0, 404);
}
