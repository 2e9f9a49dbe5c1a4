//! Every `ai_*` table replays exactly as it was filled live.

use super::*;

#[tokio::test]
async fn routing_evaluation_and_every_ai_table_fill_from_replay_exactly_as_live() {
    let rig = Rig::start().await;
    let (status, small) = rig
        .post(
            "/api/ai/route",
            json!({"worker_name": "w", "prompt": "What time is it in Tokyo?"}),
        )
        .await;
    assert_eq!(status, 200, "{small}");
    assert_eq!(
        (small["tier"].as_str(), small["model"].as_str()),
        (Some("small"), Some("model-a-small"))
    );
    let (_, large) = rig
        .post("/api/ai/route", json!({"worker_name": "w", "prompt":
            "Analyze this design and plan a refactor step by step:\n```rust\nfn main() {}\n```\n- it must stay fast\n- it should not allocate\n- ensure it is safe"}))
        .await;
    assert_eq!(large["tier"], "large", "{large}");
    assert!(large["reasons"].as_array().is_some_and(|r| r.len() >= 3));

    for reply in [
        "A haiku.",
        r#"{"score": 0.4, "feedback": "count the syllables"}"#,
        "A better haiku.",
        r#"{"score": 0.9, "feedback": "good"}"#,
    ] {
        rig.a.push(text(reply));
    }
    let (status, evaluation) = rig
        .post("/api/ai/evaluate", json!({"worker_name": "w", "prompt": "Write a haiku", "criteria": "5-7-5 syllables", "threshold": 0.8}))
        .await;
    assert_eq!(status, 200, "{evaluation}");
    assert_eq!(
        (
            evaluation["passed"].as_bool(),
            evaluation["rounds"].as_array().map(Vec::len)
        ),
        (Some(true), Some(2))
    );
    assert_eq!(evaluation["best_output"], "A better haiku.");
    let rounds = rig.rows("ai_evaluations", "model", "model-a").await;
    assert_eq!(
        rounds
            .iter()
            .map(|r| r["score"].clone())
            .collect::<Vec<_>>(),
        [json!(0.4), json!(0.9)]
    );
    assert_eq!(rounds[0]["feedback"], "count the syllables");

    let (status, called) = rig
        .post(
            "/api/ai/tools/list_container_status",
            json!({"worker_name": "w", "arguments": {}}),
        )
        .await;
    assert_eq!(status, 200, "{called}");
    rig.a.push(text(r#"{"ok": true}"#));
    rig.post(
        "/api/ai/structured",
        json!({"worker_name": "w", "prompt": "ok?", "schema": {"type": "object"}}),
    )
    .await;
    let (_, plan) = rig
        .post("/api/ai/plans", json!({"worker_name": "w", "goal": "g", "steps": [{"title": "t", "requires_approval": true}]}))
        .await;
    let approval = plan["approvals"][0]["approval_id"]
        .as_str()
        .expect("approval")
        .to_owned();
    rig.post(
        &format!("/api/ai/approvals/{approval}/approve"),
        json!({"worker_name": "alice"}),
    )
    .await;
    rig.a.push(Reply::StreamToolCall {
        name: "list_container_status".into(),
        parts: vec!["{}".into()],
    });
    rig.a.push(Reply::Stream(vec!["none".into()]));
    rig.post(
        "/api/ai/runs",
        json!({"worker_name": "w", "prompt": "containers?", "stream": true}),
    )
    .await;
    rig.rows("ai_tasks", "plan_id", "-").await; // waits for the projection to catch up

    let copy = rig.live.nats.scratch().join("ai-replayed.sqlite3");
    vibehq_projector::replay(
        &rig.live.log,
        ReplayOptions {
            into: copy.clone(),
            streams: vec![StreamKind::Ai],
            until: Until::End,
        },
        |_| {},
    )
    .await
    .expect("replay");
    let (live, replayed) = (dump(&rig.live.database), dump(&copy));
    for table in vibehq_schemas::TABLES
        .iter()
        .filter(|t| t.starts_with("ai_"))
    {
        assert!(
            !live[*table].is_empty(),
            "{table} is empty: the test did not exercise it"
        );
        assert_eq!(
            live[*table], replayed[*table],
            "{table} differs after replay"
        );
    }
}
