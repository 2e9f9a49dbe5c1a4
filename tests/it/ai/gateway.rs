//! The gateway: fallback on rate limits, timeouts, server errors and broken streams, each attempt
//! recorded.

use super::*;

#[tokio::test]
async fn a_rate_limited_provider_falls_back_to_the_next_and_both_attempts_are_recorded() {
    let rig = Rig::start().await;
    rig.a.push(Reply::rate_limited(30));
    rig.b.push(text("Paris."));

    let (status, reply) = rig
        .post("/api/ai/ask", json!({"worker_name": "factory-1", "container_name": "c1", "prompt": "Capital of France?"}))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["answer"]["text"], "Paris.");
    assert_eq!(
        (reply["provider"].as_str(), reply["attempts"].as_u64()),
        (Some("b"), Some(2))
    );

    let attempts = rig.attempts(&reply).await;
    assert_eq!(attempts.len(), 2);
    let (first, second) = (&attempts[0], &attempts[1]);
    assert_eq!(
        (
            &first["provider"],
            &first["outcome"],
            &first["status_code"],
            &first["retry_after_ms"]
        ),
        (
            &json!("a"),
            &json!("rate_limited"),
            &json!(429),
            &json!(30_000)
        )
    );
    assert_eq!(
        (&second["provider"], &second["outcome"]),
        (&json!("b"), &json!("ok"))
    );
    assert_eq!(
        (
            &second["input_tokens"],
            &second["output_tokens"],
            &second["cached_tokens"]
        ),
        (&json!(12), &json!(5), &json!(4))
    );
    // 8 uncached × $2 + 4 cached × $0.5 + 5 out × $8, per million tokens.
    let cost = second["cost_usd"].as_f64().expect("priced");
    assert!((cost - 58e-6).abs() < 1e-12, "{cost}");
    assert!(
        attempts
            .iter()
            .all(|a| a["worker_name"] == "factory-1" && a["container_name"] == "c1")
    );

    // `a` asked for 30 s: the next call goes straight to `b`.
    rig.b.push(text("Berlin."));
    let (status, reply) = rig
        .post(
            "/api/ai/ask",
            json!({"worker_name": "factory-1", "prompt": "Capital of Germany?"}),
        )
        .await;
    assert_eq!((status, reply["provider"].as_str()), (200, Some("b")));
    assert_eq!(rig.a.requests().len(), 1, "a was called while cooling down");
}

#[tokio::test]
async fn a_slow_provider_times_out_and_the_next_answers_and_server_errors_fall_back_too() {
    let rig = Rig::start().await;
    rig.a.push(Reply::Slow {
        delay: Duration::from_secs(3),
        then: Box::new(text("too late")),
    });
    rig.b.push(text("in time"));
    let (status, reply) = rig
        .post(
            "/api/ai/ask",
            json!({"worker_name": "w", "prompt": "hi", "timeout_ms": 300}),
        )
        .await;
    assert_eq!(
        (status, reply["answer"]["text"].as_str()),
        (200, Some("in time")),
        "{reply}"
    );
    let attempts = rig.attempts(&reply).await;
    assert_eq!(attempts[0]["outcome"], "timeout");

    rig.a.push(Reply::server_error());
    rig.b.push(Reply::server_error());
    let (status, error) = rig
        .post("/api/ai/ask", json!({"worker_name": "w", "prompt": "hi"}))
        .await;
    assert_eq!(status, 502, "{error}");
    assert_eq!(error["error"]["code"], "provider_failed");
    // The refusal names the call, whose attempts were recorded (`vibehq audit ai-call`).
    let failed = rig.attempts(&error["error"]).await;
    assert_eq!(
        failed
            .iter()
            .map(|a| a["outcome"].clone())
            .collect::<Vec<_>>(),
        [json!("server_error"), json!("server_error")]
    );
}

#[tokio::test]
async fn a_stream_that_breaks_before_its_first_token_falls_back_but_not_after_it() {
    let rig = Rig::start().await;
    let ask = json!({"worker_name": "w", "prompt": "hi", "stream": true});
    let stream = async |body: &Value| {
        let response = reqwest::Client::new()
            .post(format!("{}/api/ai/ask", rig.base))
            .json(body)
            .send()
            .await
            .expect("POST");
        sse_events(&response.text().await.expect("body"))
    };

    // Nothing reached the caller yet: the next provider answers.
    rig.a.push(Reply::BrokenStream(vec![]));
    rig.b.push(Reply::Stream(vec!["from ".into(), "b".into()]));
    let events = stream(&ask).await;
    let (name, done) = events.last().expect("an end");
    assert_eq!(
        (name.as_str(), done["answer"]["text"].as_str()),
        ("done", Some("from b")),
        "{events:?}"
    );
    assert_eq!(done["attempts"], 2);

    // Half an answer was shown: no second provider's answer is spliced onto it.
    rig.a.push(Reply::BrokenStream(vec!["half an ".into()]));
    let before = rig.b.requests().len();
    let events = stream(&ask).await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["delta", "error"]);
    let message = events[1].1["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("after the answer began streaming"),
        "{message}"
    );
    assert_eq!(
        rig.b.requests().len(),
        before,
        "b was asked after a's first token"
    );
}

/// Papercut 28: routing reads the prompt alone, so it answers (and is recorded) with no
/// provider configured; the decision then names no provider or model.
#[tokio::test]
async fn a_prompt_is_routed_without_any_provider_configured() {
    let dir = tempfile::tempdir().expect("dir");
    let up = crate::common::UpProcess::start(dir.path(), &["--embedded-nats-port", "0"]).await;
    let (status, decision) = post(
        &format!("{}/api/ai/route", up.http),
        json!({"worker_name": "w", "prompt": "Summarise this paragraph."}),
    )
    .await;
    assert_eq!(status, 200, "{decision}");
    assert_eq!(decision["tier"], "small", "{decision}");
    assert_eq!(
        (&decision["provider"], &decision["model"]),
        (&Value::Null, &Value::Null)
    );
    let row = format!("{}/api/tables/ai_routing_decisions?worker_name=w", up.http);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, page) = crate::common::get_json(&row).await;
        if let Some(recorded) = page["items"].get(0) {
            assert_eq!(recorded["decision_id"], decision["decision_id"]);
            assert_eq!(recorded["provider"], Value::Null);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never projected: {page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
