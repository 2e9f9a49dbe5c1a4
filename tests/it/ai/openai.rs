//! The unmodified `openai` Python package, pointed at vibehq's `/v1` by its base URL: a chat,
//! a streamed chat, a tool-call round trip with a caller-defined tool (also streamed), a
//! `json_schema` answer and an unknown model; each call is a row of `ai_model_calls` with the
//! caller's identity.

use super::*;

/// The case `name` a client reported (its whole output in the failure, if it did not).
fn reported<'a>(seen: &'a BTreeMap<String, Value>, name: &str, stdout: &str) -> &'a Value {
    seen.get(name)
        .unwrap_or_else(|| panic!("no {name}: {stdout}"))
}

/// What an outside client reported, by case.
fn cases(stdout: &str) -> BTreeMap<String, Value> {
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|case| Some((case["case"].as_str()?.to_owned(), case)))
        .collect()
}

#[tokio::test]
async fn the_openai_python_package_chats_streams_and_calls_tools_through_the_gateway() {
    let rig = Rig::start().await;
    let fake = rig.a.url();
    let stdout = crate::common::outside_client(
        "python3",
        &["tests/python/openai_client.py"],
        &[
            ("OPENAI_BASE_URL", &format!("{}/v1", rig.base)),
            ("VIBEHQ_FAKE", fake.trim_end_matches("/v1")),
        ],
    )
    .await;
    let seen = cases(&stdout);
    let case = |name: &str| reported(&seen, name, &stdout);

    let ids = case("models")["ids"].as_array().expect("ids").clone();
    for id in [
        "vibehq/auto",
        "vibehq/small",
        "a/model-a",
        "a/model-a-small",
        "b/model-b",
    ] {
        assert!(ids.contains(&json!(id)), "{id} in {ids:?}");
    }
    let chat = case("chat");
    assert_eq!(chat["content"], "Paris is the capital of France.");
    assert_eq!(chat["finish"], "stop");
    assert_eq!(chat["model"], "vibehq/small");
    assert_eq!(chat["total_tokens"], 17, "the provider's usage");
    let stream = case("stream");
    assert_eq!(
        stream["pieces"].as_array().map(|p| p.len() > 1),
        Some(true),
        "{stream}"
    );
    let text: String = stream["pieces"]
        .as_array()
        .expect("pieces")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(text, "one two three four");
    assert_eq!(stream["finish"], "stop");
    assert_eq!(stream["total_tokens"], 17);
    let tools = case("tools");
    assert_eq!(tools["finish"], "tool_calls");
    assert_eq!(tools["name"], "get_weather");
    assert_eq!(tools["arguments"], json!({"city": "Paris"}));
    assert_eq!(tools["answer"], "It is 18 C in Paris.");
    let streamed = case("streamed_tools");
    assert_eq!(
        (
            &streamed["name"],
            &streamed["arguments"],
            &streamed["finish"]
        ),
        (
            &json!("get_weather"),
            &json!({"city": "Oslo"}),
            &json!("tool_calls")
        )
    );
    assert_eq!(
        case("json_schema")["content"],
        json!({"city": "Paris", "celsius": 18})
    );
    let unknown = case("unknown_model");
    assert_eq!(
        (&unknown["status"], &unknown["param"]),
        (&json!(404), &json!("model"))
    );

    // What the provider was sent: the system prompt and settings, the caller's tool with its
    // schema, and the tool's result tied to its call.
    let sent = rig.a.requests();
    let first = &sent[0];
    assert_eq!(first["model"], "model-a-small");
    assert_eq!(first["temperature"], 0.2);
    assert_eq!(first["max_tokens"], 50);
    assert!(
        first["messages"]
            .to_string()
            .contains("Answer in one sentence."),
        "{first}"
    );
    let round_trip = sent
        .iter()
        .find(|r| r["messages"].to_string().contains("18 C"))
        .expect("the tool's result went to the provider");
    assert!(
        round_trip["tools"].to_string().contains("get_weather"),
        "{round_trip}"
    );
    assert!(
        round_trip["messages"].to_string().contains("tool_call_id"),
        "{round_trip}"
    );

    // Every call is recorded with who made it.
    let calls = rig
        .rows("ai_model_calls", "worker_name", "acme-fixer")
        .await;
    let chats: Vec<_> = calls.iter().filter(|c| c["operation"] == "chat").collect();
    assert!(chats.len() >= 6, "{calls:?}");
    assert!(chats.iter().all(|c| c["container_name"] == "c1"));
    assert!(chats.iter().any(|c| c["streamed"] == 1));
}

#[tokio::test]
async fn a_chat_request_that_cannot_be_answered_names_its_field_in_openais_error_shape() {
    let rig = Rig::start().await;
    let chat = |body: Value| rig.post("/v1/chat/completions", body);
    let user = json!([{"role": "user", "content": "hi"}]);
    for (body, param) in [
        (json!({"messages": user}), "model"),
        (json!({"model": "vibehq/small"}), "messages"),
        (json!({"model": "vibehq/small", "messages": []}), "messages"),
        (
            json!({"model": "vibehq/small", "messages": [{"role": "robot", "content": "hi"}]}),
            "messages[0].role",
        ),
        (
            json!({"model": "vibehq/small", "messages": user, "temperature": 3}),
            "temperature",
        ),
        (
            json!({"model": "vibehq/small", "messages": user, "tools": [{"type": "function", "function": {"name": "bad name"}}]}),
            "tools[0].function.name",
        ),
        (
            json!({"model": "vibehq/small", "messages": user, "response_format": {"type": "json_schema"}}),
            "response_format.json_schema.schema",
        ),
        (
            json!({"model": "vibehq/small", "messages": user, "stop": 5}),
            "stop",
        ),
    ] {
        let (status, error) = chat(body.clone()).await;
        assert_eq!(status, 400, "{body}: {error}");
        assert_eq!(error["error"]["param"], param, "{body}: {error}");
        assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    }
    assert!(rig.a.requests().is_empty(), "nothing reached the provider");

    // A stop sequence cuts the answer where it first occurs.
    rig.a.push(Reply::Text("alpha beta STOP gamma".into()));
    let (status, answer) =
        chat(json!({"model": "vibehq/small", "messages": user, "stop": ["STOP"]})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["choices"][0]["message"]["content"], "alpha beta ");
    assert_eq!(answer["object"], "chat.completion");

    let (_, doc) = crate::common::get_json(&format!("{}/openapi.json", rig.base)).await;
    for path in ["/v1/chat/completions", "/v1/models", "/ws/ai"] {
        assert!(doc["paths"][path].is_object(), "OpenAPI lacks {path}");
    }
}

#[tokio::test]
async fn the_vercel_ai_sdk_generates_streams_and_runs_tools_through_the_gateway() {
    let rig = Rig::start().await;
    let fake = rig.a.url();
    let stdout = crate::common::outside_client(
        "node",
        &["tests/node/ai-sdk.mjs"],
        &[
            ("VIBEHQ_BASE_URL", rig.base.as_str()),
            ("VIBEHQ_FAKE", fake.trim_end_matches("/v1")),
        ],
    )
    .await;
    let seen = cases(&stdout);
    let case = |name: &str| reported(&seen, name, &stdout);

    let chat = case("chat");
    assert_eq!(chat["text"], "Paris is the capital of France.");
    assert_eq!(chat["finish"], "stop");
    assert_eq!(chat["tokens"], 17);
    let stream = case("stream");
    let text: String = stream["pieces"]
        .as_array()
        .expect("pieces")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(text, "one two three four");
    assert_eq!(stream["tokens"], 17, "{stream}");
    let tools = case("tools");
    assert_eq!(tools["calls"], json!(["Paris"]), "{tools}");
    assert_eq!(tools["text"], "It is 18 C in Paris.");
    let streamed = case("streamed_tools");
    assert_eq!(streamed["calls"], json!(["Oslo"]), "{streamed}");
    assert_eq!(streamed["text"], "Cold in Oslo.");
    assert_eq!(
        case("json_schema")["output"],
        json!({"city": "Paris", "celsius": 18})
    );

    let calls = rig
        .rows("ai_model_calls", "worker_name", "ai-sdk-app")
        .await;
    assert!(
        calls.len() >= 7 && calls.iter().all(|c| c["container_name"] == "web-1"),
        "{calls:?}"
    );
}

#[tokio::test]
async fn a_new_demo_runs_on_the_gateway_with_the_openai_package() {
    let rig = Rig::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let output = crate::common::vibehq()
        .args(["new", "demo", "fleet-demo", "--dir"])
        .arg(dir.path())
        .output()
        .await
        .expect("vibehq new demo");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    rig.a.push(text("It schedules and watches work."));
    rig.a.push(Reply::ToolCall {
        name: "fleet_size".into(),
        arguments: json!({"team": "platform"}),
    });
    rig.a.push(text("The platform team runs 5 workers."));
    let demo = dir.path().join("fleet-demo/demo.py");
    let stdout = crate::common::outside_client(
        "python3",
        &[&demo.to_string_lossy()],
        &[("VIBEHQ_URL", rig.base.as_str())],
    )
    .await;
    assert!(
        stdout.contains("It schedules and watches work."),
        "{stdout}"
    );
    assert!(
        stdout.contains("The platform team runs 5 workers."),
        "{stdout}"
    );
    let calls = rig
        .rows("ai_model_calls", "worker_name", "fleet-demo")
        .await;
    assert_eq!(calls.len(), 3, "{calls:?}");
}

/// `tool_choice` reaches the provider: `required`, or one named tool; naming a tool the
/// request does not have is a 404, and forcing a call with no tools a 400.
#[tokio::test]
async fn tool_choice_required_or_named_is_passed_to_the_provider() {
    let rig = Rig::start().await;
    let weather = json!({"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}});
    let chat = |choice: Value| {
        json!({"model": "vibehq/small", "messages": [{"role": "user", "content": "Weather in Paris?"}],
               "tools": [weather.clone()], "tool_choice": choice})
    };
    let (status, answer) = rig
        .post("/v1/chat/completions", chat(json!("required")))
        .await;
    assert_eq!(status, 200, "{answer}");
    let named = json!({"type": "function", "function": {"name": "get_weather"}});
    let (status, answer) = rig.post("/v1/chat/completions", chat(named.clone())).await;
    assert_eq!(status, 200, "{answer}");
    let sent: Vec<Value> = rig
        .a
        .requests()
        .iter()
        .map(|r| r["tool_choice"].clone())
        .collect();
    assert_eq!(
        sent,
        [json!("required"), named],
        "what the provider was asked"
    );

    let unknown = json!({"type": "function", "function": {"name": "get_time"}});
    let (status, error) = rig.post("/v1/chat/completions", chat(unknown)).await;
    assert_eq!(
        (status, error["error"]["param"].as_str()),
        (404, Some("tool_choice.function.name")),
        "{error}"
    );
    let mut without_tools = chat(json!("required"));
    without_tools["tools"] = json!([]);
    let (status, error) = rig.post("/v1/chat/completions", without_tools).await;
    assert_eq!(
        (status, error["error"]["param"].as_str()),
        (400, Some("tool_choice")),
        "{error}"
    );
}
