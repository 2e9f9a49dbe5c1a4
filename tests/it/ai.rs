//! AI operations against a real nats-server, the real projection and two deterministic
//! OpenAI-compatible providers on loopback (`FakeOpenAi`), reached over HTTP through rig-core
//! exactly as a real provider would be.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use vibehq_ai::agent::Agents;
use vibehq_ai::ops::Ai;
use vibehq_ai::provider::{Price, ProviderConfig, ProviderKind};
use vibehq_ai::tools::Registry;
use vibehq_ai::{Gateway, GatewayConfig};
use vibehq_events::StreamKind;
use vibehq_projector::{ReplayOptions, Until, query};
use vibehq_queue::{Actor, NewTask};
use vibehq_test_support::openai::{FakeOpenAi, Reply};

use crate::common::{Harness, Live, call, dump, post};

/// Two providers in fallback order (`a`, then `b`), the AI routes, and `AIOps`.
struct Rig {
    live: Live,
    harness: Harness,
    a: FakeOpenAi,
    b: FakeOpenAi,
    base: String,
    ai: Ai,
    stop: CancellationToken,
}

fn provider(name: &str, fake: &FakeOpenAi) -> ProviderConfig {
    ProviderConfig {
        name: name.into(),
        kind: ProviderKind::Openai,
        base_url: Some(fake.url()),
        api_key_env: None,
        model: format!("model-{name}"),
        small_model: Some(format!("model-{name}-small")),
        large_model: None,
        max_tokens: None,
    }
}

impl Rig {
    async fn start() -> Self {
        let live = Live::start().await;
        let harness = Harness::on(None, live.log.clone(), vibehq_queue::Options::default()).await;
        let (a, b) = (FakeOpenAi::start().await, FakeOpenAi::start().await);
        let config = GatewayConfig {
            providers: vec![provider("a", &a), provider("b", &b)],
            timeout_ms: 5_000,
            fallback_after_first_token: false,
            prices: BTreeMap::from([(
                "model-b".to_owned(),
                Price {
                    input: 2.0,
                    output: 8.0,
                    cached_input: Some(0.5),
                },
            )]),
        };
        let gateway = Gateway::new(config, live.log.clone()).expect("gateway");
        let ai = Ai {
            tools: Registry::builtin(harness.queue.clone(), live.reader()),
            agents: Agents {
                gateway: gateway.clone(),
                reader: live.reader(),
                projector: live.handle.clone(),
                queue: Some(harness.queue.clone()),
            },
            gateway,
        };
        let state = vibehq_api::AppState {
            reader: live.reader(),
            projector: live.handle.clone(),
            log: live.log.clone(),
            nats_url: live.nats.url(),
        };
        let routes = vibehq_ai::http::router(ai.clone());
        let app = vibehq_api::router(state, vec![(routes, vibehq_ai::http::AiDoc::openapi())]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            live,
            harness,
            a,
            b,
            base,
            ai,
            stop: CancellationToken::new(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        post(&format!("{}{path}", self.base), body).await
    }

    /// The gateway's attempts for the call that answered `reply`.
    async fn attempts(&self, reply: &Value) -> Vec<Map<String, Value>> {
        let request_id = reply["request_id"].as_str().expect("a request id");
        self.rows("ai_model_calls", "request_id", request_id).await
    }

    /// Rows of an `ai_*` table once the projection holds everything appended so far.
    async fn rows(
        &self,
        table: &str,
        column: &'static str,
        value: &str,
    ) -> Vec<Map<String, Value>> {
        let last = self
            .live
            .log
            .stream_info(StreamKind::Ai)
            .await
            .expect("stream info")
            .state
            .last_sequence;
        self.live.caught_up(StreamKind::Ai, last).await;
        let table = vibehq_projector::Table::named(table).expect("table");
        let filter = query::Filter {
            columns: vec![(column, value.to_owned())],
            limit: 1000,
            ..query::Filter::default()
        };
        self.live
            .reader()
            .read(move |conn| query::list(conn, table, &filter))
            .await
            .expect("rows")
            .items
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn text(reply: &str) -> Reply {
    Reply::Text(reply.into())
}

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

#[tokio::test]
async fn structured_output_is_repaired_on_retry_and_a_never_valid_answer_ends_in_a_clear_error() {
    let rig = Rig::start().await;
    let schema = json!({
        "type": "object",
        "properties": {"name": {"type": "string"}, "stars": {"type": "integer", "minimum": 0}},
        "required": ["name", "stars"],
        "additionalProperties": false
    });
    rig.a.push(text(r#"{"name": 1}"#));
    rig.a
        .push(text("```json\n{\"name\": \"vibehq\", \"stars\": 5}\n```"));
    let (status, out) = rig
        .post(
            "/api/ai/structured",
            json!({"worker_name": "w", "prompt": "Describe the repo", "schema": schema}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["output"], json!({"name": "vibehq", "stars": 5}));
    assert_eq!(out["attempts"], 2);
    let first_error = out["errors"][0].as_str().expect("an error");
    assert!(
        first_error.contains("/name") || first_error.contains("stars"),
        "{first_error}"
    );
    // The retry told the model what was wrong.
    let retry = rig.a.requests()[1].to_string();
    assert!(retry.contains("does not satisfy the schema"), "{retry}");

    rig.a.push(text("not json at all"));
    rig.a.push(text(r#"{"name": "x"}"#));
    let (status, error) = rig
        .post(
            "/api/ai/structured",
            json!({"worker_name": "w", "prompt": "again", "schema": schema, "max_attempts": 2}),
        )
        .await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(
        (
            error["error"]["code"].as_str(),
            error["error"]["field"].as_str()
        ),
        (Some("never_valid"), Some("schema"))
    );

    let rows = rig.rows("ai_structured_outputs", "model", "model-a").await;
    let summary: Vec<(i64, i64)> = rows
        .iter()
        .map(|r| {
            (
                r["valid"].as_i64().expect("valid"),
                r["attempts"].as_i64().expect("attempts"),
            )
        })
        .collect();
    assert_eq!(summary, vec![(1, 2), (0, 2)]);
    assert_eq!(rows[1]["errors"].as_array().map(Vec::len), Some(2));
}

/// The named events of a Server-Sent Events body, in order.
fn sse_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event:") {
                    name = Some(n.trim().to_owned());
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            Some((name?, serde_json::from_str(&data).ok()?))
        })
        .collect()
}

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
                idempotency_key: None,
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
async fn a_step_needing_approval_blocks_until_approved_and_a_rejected_step_stops_the_plan() {
    let rig = Rig::start().await;
    let steps = json!([
        {"title": "Collect the audit findings"},
        {"title": "Restart the failing workers", "requires_approval": true, "command": "restart-workers"},
        {"title": "Report what changed"}
    ]);
    let statuses = |plan: &Value| -> Vec<String> {
        plan["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .map(|t| t["status"].as_str().unwrap_or_default().to_owned())
            .collect()
    };

    let (status, plan) = rig
        .post(
            "/api/ai/plans",
            json!({"worker_name": "orchestrator", "goal": "Fix the workers", "steps": steps}),
        )
        .await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["status"], "awaiting_approval");
    assert_eq!(
        statuses(&plan),
        ["completed", "awaiting_approval", "pending"]
    );
    let approval = plan["approvals"][0]["approval_id"]
        .as_str()
        .expect("approval")
        .to_owned();
    assert_eq!(
        plan["approvals"][0]["action"],
        "Restart the failing workers"
    );

    // Still waiting when asked again: nothing moves without a human.
    let plan_id = plan["plan_id"].as_str().expect("plan id").to_owned();
    let (_, again) = crate::common::get_json(&format!("{}/api/ai/plans/{plan_id}", rig.base)).await;
    assert_eq!(
        statuses(&again),
        ["completed", "awaiting_approval", "pending"]
    );

    let (status, plan) = rig
        .post(
            &format!("/api/ai/approvals/{approval}/approve"),
            json!({"worker_name": "alice", "comment": "go"}),
        )
        .await;
    assert_eq!(status, 200, "{plan}");
    // The approved command runs on the task queue, and the plan waits for it.
    assert_eq!(statuses(&plan), ["completed", "running", "pending"]);
    let queue_task = plan["tasks"][1]["queue_task_id"]
        .as_str()
        .expect("submitted to the queue");
    let task = rig
        .harness
        .queue
        .load(queue_task)
        .await
        .expect("load")
        .expect("the queued step");
    assert_eq!(task.submitted.command, "restart-workers");
    assert_eq!(plan["approvals"][0]["decided_by"], "alice");

    // A container runs it; when it completes, the plan goes on by itself.
    let container = Actor::new("factory-1", Some("c1".into()));
    let claim = rig
        .harness
        .queue
        .claim_task(queue_task, &container)
        .await
        .expect("claim the step");
    rig.harness
        .queue
        .complete(
            queue_task,
            claim.attempt,
            &container,
            Some("3 restarted".into()),
        )
        .await
        .expect("complete");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let finished = loop {
        let rows = rig.rows("ai_tasks", "plan_id", &plan_id).await;
        let now: Vec<&str> = rows.iter().filter_map(|r| r["status"].as_str()).collect();
        if now == ["completed", "completed", "completed"] {
            break rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the plan did not go on: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(finished[1]["result"], "3 restarted");

    let (status, error) = rig
        .post(
            &format!("/api/ai/approvals/{approval}/reject"),
            json!({"worker_name": "bob"}),
        )
        .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (409, Some("already_decided"))
    );

    // A rejected step stops its plan: the steps after it are cancelled.
    let (_, plan) = rig
        .post(
            "/api/ai/plans",
            json!({"worker_name": "orchestrator", "goal": "Fix again", "steps": steps}),
        )
        .await;
    let approval = plan["approvals"][0]["approval_id"]
        .as_str()
        .expect("approval")
        .to_owned();
    let (status, plan) = rig
        .post(
            &format!("/api/ai/approvals/{approval}/reject"),
            json!({"worker_name": "bob", "comment": "not now"}),
        )
        .await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["status"], "rejected");
    assert_eq!(statuses(&plan), ["completed", "rejected", "cancelled"]);
}

#[tokio::test]
async fn the_model_turns_a_goal_into_the_plan_when_no_steps_are_given() {
    let rig = Rig::start().await;
    rig.a.push(text(
        r#"{"steps": [{"title": "Run the health audit", "command": "health-audit"},
                      {"title": "Scale the pool to 3", "requires_approval": true}]}"#,
    ));
    let (status, plan) = rig
        .post(
            "/api/ai/plans",
            json!({"worker_name": "orchestrator", "goal": "Get the fleet healthy"}),
        )
        .await;
    assert_eq!(status, 200, "{plan}");
    let titles: Vec<&str> = plan["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|t| t["title"].as_str())
        .collect();
    assert_eq!(titles, ["Run the health audit", "Scale the pool to 3"]);
    // The first step runs on the task queue; the approval is asked for once it is done.
    assert_eq!(plan["status"], "running");
    assert!(
        plan["tasks"][0]["queue_task_id"].is_string(),
        "the first step went to the queue"
    );
    assert_eq!(plan["tasks"][1]["status"], "pending");
}

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
            422,
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

/// Starts `AIOps` and waits until it answers `$SRV.PING`.
async fn serve_rpc(rig: &Rig) -> async_nats::Client {
    tokio::spawn(vibehq_ai::rpc::run(
        rig.ai.clone(),
        rig.live.nats.connect().await,
        rig.stop.clone(),
    ));
    let client = rig.live.nats.connect().await;
    for _ in 0..200 {
        if client
            .request("$SRV.PING.AIOps", Default::default())
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    client
}

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

/// Runs `vibehq ai --url <rig> --worker-name cli-test ARGS`: whether it succeeded, and what it
/// printed on stdout and stderr.
async fn aicli(rig: &Rig, args: &[&str]) -> (bool, String, String) {
    let output = crate::common::vibehq()
        .args(["ai", "--url", &rig.base, "--worker-name", "cli-test"])
        .args(args)
        .output()
        .await
        .expect("run vibehq ai");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn vibehq_ai_streams_an_answer_routes_runs_tools_and_decides_an_approval_from_a_terminal() {
    let rig = Rig::start().await;

    rig.a.push(Reply::Stream(vec!["Hel".into(), "lo!".into()]));
    let (ok, stdout, stderr) = aicli(&rig, &["ask", "hello"]).await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "Hello!\n");
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("a/model-a, 1 attempt, request "))
        .unwrap_or_else(|| panic!("no summary on stderr: {stderr}"));
    let request_id = summary.rsplit(' ').next().expect("a request id");
    let attempts = rig.rows("ai_model_calls", "request_id", request_id).await;
    assert_eq!(
        attempts[0]["worker_name"], "cli-test",
        "the CLI calls as --worker-name"
    );

    rig.a.push(text("Paris."));
    let (ok, stdout, stderr) = aicli(&rig, &["--json", "ask", "Capital of France?"]).await;
    assert!(ok, "{stderr}");
    let reply: Value = serde_json::from_str(&stdout).expect("--json prints JSON");
    assert_eq!(reply["answer"]["text"], "Paris.");

    let (ok, stdout, stderr) = aicli(&rig, &["route", "What is 2+2?"]).await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("small") && stdout.contains("a/model-a-small"),
        "{stdout}"
    );

    rig.a.push(Reply::StreamToolCall {
        name: "list_container_status".into(),
        parts: vec!["{".into(), "}".into()],
    });
    rig.a
        .push(Reply::Stream(vec!["No ".into(), "containers.".into()]));
    let (ok, stdout, stderr) = aicli(&rig, &["run", "Which containers run?"]).await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "No containers.\n");
    assert!(
        stderr.contains("→ list_container_status {}\n← "),
        "{stderr}"
    );

    let dir = tempfile::tempdir().expect("dir");
    let steps = dir.path().join("steps.json");
    std::fs::write(
        &steps,
        r#"[{"title": "Restart the workers", "requires_approval": true}]"#,
    )
    .expect("write steps");
    let steps = steps.to_str().expect("a UTF-8 path");
    let (ok, stdout, stderr) = aicli(&rig, &["plan", "Fix the workers", "--steps", steps]).await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("awaiting_approval  Restart the workers"),
        "{stdout}"
    );
    let approval = stdout
        .lines()
        .find_map(|l| l.strip_prefix("approval ")?.split_once(" pending"))
        .map(|(id, _)| id.to_owned())
        .unwrap_or_else(|| panic!("no pending approval printed: {stdout}"));
    let (ok, stdout, stderr) = aicli(&rig, &["approve", &approval, "--comment", "go"]).await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("approval {approval} approved by cli-test")),
        "{stdout}"
    );
}

#[tokio::test]
async fn vibehq_ai_fails_with_the_servers_reason_or_names_the_unreadable_file() {
    let rig = Rig::start().await;

    let (ok, _, stderr) = aicli(&rig, &["approve", "nope"]).await;
    assert!(!ok, "approving an unknown approval succeeded");
    assert!(
        stderr.contains("404") && stderr.contains("approval_id"),
        "{stderr}"
    );

    let schema = tempfile::NamedTempFile::new().expect("file");
    std::fs::write(schema.path(), "{not json").expect("write");
    let path = schema.path().to_str().expect("a UTF-8 path");
    let (ok, _, stderr) = aicli(&rig, &["structured", "x", "--schema", path]).await;
    assert!(!ok, "an invalid schema file was accepted");
    assert!(
        stderr.contains(path) && stderr.contains("not JSON"),
        "{stderr}"
    );

    let (ok, _, stderr) = aicli(
        &rig,
        &["ask", "hi", "--tier", "small", "--provider", "nope"],
    )
    .await;
    assert!(!ok);
    assert!(stderr.contains("provider"), "{stderr}");
    assert!(
        rig.a.requests().is_empty(),
        "a refused call reached a provider"
    );
}

#[tokio::test]
async fn the_websocket_streams_an_answer_then_refuses_bad_input_and_keeps_serving() {
    let rig = Rig::start().await;
    rig.a
        .push(Reply::Stream(vec!["web".into(), "socket".into()]));
    let url = format!("{}/ws/ai", rig.base.replacen("http", "ws", 1));
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    send(
        json!({"op": "ask", "worker_name": "w", "prompt": "hi"}),
        &mut socket,
    )
    .await;
    let mut text = String::new();
    let done = loop {
        let event = read(&mut socket).await;
        match event["event"].as_str() {
            Some("delta") => text.push_str(event["data"]["text"].as_str().unwrap_or_default()),
            Some("done") => break event,
            other => panic!("unexpected {other:?}: {event}"),
        }
    };
    assert_eq!(text, "websocket");
    assert_eq!(done["data"]["answer"]["text"], "websocket");

    send(
        json!({"op": "ask", "worker_name": "w", "prompt": "hi", "tier": "huge"}),
        &mut socket,
    )
    .await;
    let refused = read(&mut socket).await;
    assert_eq!(
        (
            refused["event"].as_str(),
            refused["data"]["error"]["field"].as_str()
        ),
        (Some("error"), Some("tier"))
    );
    send(
        json!({"op": "evaluateModel", "worker_name": "w"}),
        &mut socket,
    )
    .await;
    assert_eq!(read(&mut socket).await["data"]["error"]["field"], "op");

    rig.a.push(Reply::Stream(vec!["again".into()]));
    send(
        json!({"op": "ask", "worker_name": "w", "prompt": "hi"}),
        &mut socket,
    )
    .await;
    assert_eq!(read(&mut socket).await["event"], "delta");
    assert_eq!(read(&mut socket).await["event"], "done");
}

/// The next JSON text frame of a WebSocket.
async fn read<S>(socket: &mut tokio_tungstenite::WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures::StreamExt;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("a frame");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            return serde_json::from_str(&text).expect("JSON");
        }
    }
}

async fn send<S>(body: Value, socket: &mut tokio_tungstenite::WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures::SinkExt;
    let text = tokio_tungstenite::tungstenite::Message::Text(body.to_string().into());
    socket.send(text).await.expect("send");
}

#[tokio::test]
async fn an_anthropic_provider_is_reached_by_configuration_and_falls_back_like_any_other() {
    let live = Live::start().await;
    let (claude, openai) = (FakeOpenAi::start().await, FakeOpenAi::start().await);
    let anthropic = ProviderConfig {
        kind: ProviderKind::Anthropic,
        ..provider("claude", &claude)
    };
    let gateway = Gateway::new(
        GatewayConfig {
            providers: vec![anthropic, provider("openai", &openai)],
            ..GatewayConfig::default()
        },
        live.log.clone(),
    )
    .expect("gateway");
    let caller = vibehq_ai::Caller::new("w", None);
    let conversation = vibehq_ai::Conversation::prompt("hi").system("be brief");
    let request = vibehq_ai::Request {
        caller: &caller,
        operation: vibehq_ai::Operation::Ask,
        tier: vibehq_ai::Tier::Medium,
        provider: None,
        conversation: &conversation,
        timeout: None,
    };

    claude.push(text("Hello from the Messages API."));
    let reply = gateway.complete(request).await.expect("an answer");
    assert_eq!(
        (reply.provider.as_str(), reply.answer.text.as_str()),
        ("claude", "Hello from the Messages API.")
    );
    assert_eq!(reply.answer.usage.output_tokens, Some(5));
    let sent = &claude.requests()[0];
    assert_eq!(
        (sent["model"].as_str(), sent["system"].is_null()),
        (Some("model-claude"), false),
        "{sent}"
    );

    claude.push(Reply::rate_limited(60));
    openai.push(text("from openai"));
    let reply = gateway.complete(request).await.expect("an answer");
    assert_eq!((reply.provider.as_str(), reply.attempts), ("openai", 2));
}
