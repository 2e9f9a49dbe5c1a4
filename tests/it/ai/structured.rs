//! Structured output: validated against its schema, repaired on retry.

use super::*;

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
    // The provider was asked for the schema natively too (OpenAI's `response_format`).
    let first = &rig.a.requests()[0];
    assert_eq!(first["response_format"]["type"], "json_schema", "{first}");
    assert_eq!(
        first["response_format"]["json_schema"]["schema"]["required"],
        json!(["name", "stars"]),
        "{first}"
    );

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
