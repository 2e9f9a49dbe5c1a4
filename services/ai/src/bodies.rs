//! The AI routes' request bodies, and the OpenAI-compatible door's answers, as the OpenAPI
//! document gives them: each field's type and range, and the rules between fields, as
//! [`crate::ops`] and [`crate::openai`] read them.
//!
//! The parsers read bodies by hand, so each error names its field (see [`vibehq_api::body`]);
//! these schemas say the same in JSON Schema, and CI checks that the two agree by running
//! schemathesis against `/openapi.json` (`tests/it/openapi.rs`). What no schema can say is in
//! the operations' descriptions: whether a `provider`, `model` or tool exists (404), whether a
//! `schema` compiles, and whether a model's answers ever satisfy it.

use serde_json::{Value, json};
use vibehq_api::body_schema;
use vibehq_api::schema::{NAME, NOT_BLANK};

use crate::agent::plan_schema;
use crate::evaluate::MAX_ROUNDS;
use crate::ops::{MAX_PROMPT, TIMEOUT_MS};
use crate::provider::ToolSpec;
use crate::structured::MAX_ATTEMPTS;
use crate::tools::{self, MAX_STEPS};

/// The caller: `worker_name` (required unless the token acts as one worker only) and
/// `container_name`.
fn caller() -> serde_json::Map<String, Value> {
    fields(json!({
        "worker_name": {"type": "string", "pattern": NAME,
            "description": "Who calls (recorded with every model call); a worker's token may act only as its own workers"},
        "container_name": {"type": ["string", "null"], "pattern": NAME},
    }))
}

fn fields(value: Value) -> serde_json::Map<String, Value> {
    match value {
        Value::Object(fields) => fields,
        _ => unreachable!("an object literal"),
    }
}

/// A body of the caller's fields and `more`, `required` among them, and nothing else.
fn body(required: &[&str], more: Value) -> Value {
    let mut properties = caller();
    properties.extend(fields(more));
    let mut required: Vec<&str> = required.to_vec();
    required.insert(0, "worker_name");
    json!({
        "type": "object",
        "required": required,
        "additionalProperties": false,
        "properties": properties,
    })
}

/// A prompt: text that is not blank.
fn prompt(description: &str) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": MAX_PROMPT, "pattern": NOT_BLANK,
        "description": description})
}

fn tier() -> Value {
    json!({"type": ["string", "null"], "enum": ["small", "medium", "large", null],
        "description": "The model tier (default medium)"})
}

fn provider() -> Value {
    json!({"type": ["string", "null"],
        "description": "A configured provider to try first (404 if none has this name)"})
}

fn integer(min: i64, max: i64, description: &str) -> Value {
    json!({"type": ["integer", "null"], "minimum": min, "maximum": max, "description": description})
}

fn text() -> Value {
    json!({"type": ["string", "null"]})
}

fn stream() -> Value {
    json!({"type": ["boolean", "null"],
        "description": "Answer as Server-Sent Events (text/event-stream)"})
}

/// A JSON Schema an answer must satisfy: an object, or `true` (`false` allows no answer).
/// Whether it compiles is checked by the server (422, or 400 at the OpenAI door).
fn json_schema(description: &str) -> Value {
    json!({"description": description, "anyOf": [
        {"type": "object"},
        {"type": "boolean", "enum": [true]},
    ]})
}

/// The names of the built-in tools, which `tools` of a run may list.
fn tool_names() -> Value {
    tools::builtin_specs()
        .into_iter()
        .map(|spec| Value::String(spec.name))
        .collect()
}

/// A plan's steps as given: [`plan_schema`]'s, or null.
fn steps() -> Value {
    let mut steps = plan_schema()["properties"]["steps"].clone();
    steps["type"] = json!(["array", "null"]);
    steps["description"] =
        json!("The plan's steps, in order; without them the model proposes the steps");
    steps
}

/// The name of a function a model may call: what providers accept.
pub const FUNCTION_NAME: &str = "^[A-Za-z0-9_-]{1,64}$";

/// A chat message's text part (other parts are refused): some text that is not blank, which
/// providers would drop.
fn text_part() -> Value {
    json!({
        "type": "object",
        "required": ["type", "text"],
        "properties": {
            "type": {"type": "string", "enum": ["text"]},
            "text": {"type": "string", "pattern": NOT_BLANK},
        },
    })
}

/// A chat message's content: text, or text parts; `null` is no text.
fn content() -> Value {
    json!({"anyOf": [
        {"type": ["string", "null"]},
        {"type": "array", "items": text_part()},
    ]})
}

/// Content with some text in it, not blank: what providers take from a system prompt, a user
/// or an assistant that calls no tool.
fn some_content() -> Value {
    json!({"anyOf": [
        {"type": "string", "pattern": NOT_BLANK},
        {"type": "array", "minItems": 1, "items": text_part()},
    ]})
}

/// A chat message, by role.
fn message() -> Value {
    let tool_call = json!({
        "type": "object",
        "required": ["id", "function"],
        "properties": {
            "id": {"type": "string", "minLength": 1},
            "function": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "pattern": FUNCTION_NAME},
                    "arguments": {"type": ["string", "null"],
                        "description": "JSON text (anything else is passed on as text)"},
                },
            },
        },
    });
    json!({"anyOf": [
        {
            "type": "object",
            "required": ["role", "content"],
            "properties": {
                "role": {"type": "string", "enum": ["system", "developer", "user"]},
                "content": some_content(),
            },
        },
        {"allOf": [
            {
                "type": "object",
                "required": ["role"],
                "properties": {
                    "role": {"type": "string", "enum": ["assistant"]},
                    "content": content(),
                    "tool_calls": {"type": ["array", "null"], "items": tool_call},
                },
            },
            {"anyOf": [
                {"required": ["content"], "properties": {"content": some_content()}},
                {"required": ["tool_calls"], "properties": {"tool_calls": {"type": "array", "minItems": 1}}},
            ]},
        ]},
        {
            "type": "object",
            "required": ["role", "tool_call_id"],
            "properties": {
                "role": {"type": "string", "enum": ["tool"]},
                "tool_call_id": {"type": "string", "minLength": 1,
                    "description": "A tool call of an earlier assistant message (404 if none has this id)"},
                "content": content(),
            },
        },
    ]})
}

/// A function the model may call.
fn function_tool() -> Value {
    json!({
        "type": "object",
        "required": ["type", "function"],
        "properties": {
            "type": {"type": "string", "enum": ["function"]},
            "function": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "pattern": FUNCTION_NAME},
                    "description": text(),
                    "parameters": {"anyOf": [
                        {"type": "null"},
                        json_schema("Its arguments' JSON Schema (left out or null: any object)"),
                    ]},
                },
            },
        },
    })
}

fn response_format() -> Value {
    json!({"anyOf": [
        {"type": "null"},
        {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"type": "string", "enum": ["text", "json_object"]}},
        },
        {
            "type": "object",
            "required": ["type", "json_schema"],
            "properties": {
                "type": {"type": "string", "enum": ["json_schema"]},
                "json_schema": {
                    "type": "object",
                    "required": ["schema"],
                    "properties": {"schema": json_schema("The JSON Schema the answer satisfies")},
                },
            },
        },
    ]})
}

fn chat_body() -> Value {
    let tokens = integer(1, 1_000_000, "The most tokens the answer may use");
    json!({"allOf": [
        {
            "type": "object",
            "required": ["model", "messages"],
            "properties": {
                "model": {"type": "string",
                    "description": "A model GET /v1/models lists (404 otherwise)",
                    "examples": crate::openai::ALIASES},
                "messages": {"type": "array", "minItems": 1, "items": message()},
                "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
                "max_tokens": tokens,
                "max_completion_tokens": tokens,
                "tools": {"type": ["array", "null"], "maxItems": 128, "items": function_tool()},
                "tool_choice": {"anyOf": [
                    {"type": ["string", "null"], "enum": ["auto", "none", "required", null]},
                    {
                        "type": "object",
                        "required": ["type", "function"],
                        "properties": {
                            "type": {"type": "string", "enum": ["function"]},
                            "function": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {"name": {"type": "string", "pattern": FUNCTION_NAME}},
                            },
                        },
                        "description": "Call this tool (one of the request's tools: 404 otherwise)",
                    },
                ]},
                "stop": {"anyOf": [
                    {"type": "null"},
                    {"type": "string", "minLength": 1},
                    {"type": "array", "maxItems": 4, "items": {"type": "string", "minLength": 1}},
                ]},
                "response_format": response_format(),
                "stream": stream(),
                "stream_options": {
                    "type": ["object", "null"],
                    "properties": {"include_usage": {"type": ["boolean", "null"]}},
                },
                "user": {"type": ["string", "null"], "pattern": NAME,
                    "description": "Who calls, unless the x-vibehq-worker-name header says"},
            },
        },
        // Forcing a tool call needs a tool to call.
        {"anyOf": [
            {"properties": {"tool_choice": {"type": ["string", "null"], "enum": ["auto", "none", null]}}},
            {"required": ["tools"], "properties": {"tools": {"type": "array", "minItems": 1}}},
        ]},
        // A chat asks for tools or for a JSON answer, not both yet.
        {"anyOf": [
            {"properties": {"response_format": {"anyOf": [
                {"type": "null"},
                {"properties": {"type": {"type": "string", "enum": ["text"]}}},
            ]}}},
            {"properties": {"tools": {"type": ["array", "null"], "maxItems": 0}}},
            {"required": ["tool_choice"], "properties": {"tool_choice": {"type": "string", "enum": ["none"]}}},
        ]},
    ]})
}

/// The body of a call of `tool`: its arguments as its schema has them (left out or null
/// means `{}`, where the schema allows that).
pub fn tool_body(spec: &ToolSpec) -> Value {
    let takes_nothing = jsonschema::validator_for(&spec.parameters)
        .map(|v| v.is_valid(&json!({})))
        .unwrap_or(false);
    let mut arguments = document_schema(&spec.parameters);
    let mut required = vec![];
    if takes_nothing {
        arguments = json!({"anyOf": [{"type": "null"}, arguments]});
    } else {
        required.push("arguments");
    }
    body(&required, json!({"arguments": arguments}))
}

/// `schema` as the document can hold it: each `dependentRequired` (which utoipa's model has
/// no room for) becomes the `anyOf` that says the same.
fn document_schema(schema: &Value) -> Value {
    let mut plain = schema.clone();
    let Some(Value::Object(dependent)) = plain
        .as_object_mut()
        .and_then(|node| node.remove("dependentRequired"))
    else {
        return plain;
    };
    let mut all = vec![plain];
    for (field, needs) in dependent {
        all.push(json!({"anyOf": [
            {"properties": {field: {"type": "null"}}},
            {"required": needs},
        ]}));
    }
    json!({"allOf": all})
}

/// A Server-Sent Event named `event` whose data is the JSON `schema` describes.
fn event(names: &[&str], schema: &str) -> Value {
    json!({
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"type": "string", "enum": names},
            "data": {"type": "string", "contentMediaType": "application/json",
                "contentSchema": {"$ref": format!("#/components/schemas/{schema}")}},
        },
    })
}

body_schema! {
    /// An event of a streamed `ask`: `delta`s, then `done` or `error`.
    AskEvent = {"oneOf": [
        event(&["delta"], "Delta"),
        event(&["done"], "Reply"),
        event(&["error"], "ErrorBody"),
    ]}

    /// An event of a streamed run: `step`, `delta` and `tool_result` events, then `done` or
    /// `error`.
    RunStreamEvent = {"oneOf": [
        event(&["step", "delta", "tool_result"], "RunEvent"),
        event(&["done"], "Finished"),
        event(&["error"], "ErrorBody"),
    ]}

    /// An event of a streamed chat: each `data` a `chat.completion.chunk` (or, should the
    /// answer fail, an error in OpenAI's shape) as JSON text, the last one `[DONE]`.
    ChatEvent = {
        "type": "object",
        "required": ["data"],
        "properties": {"event": {"type": "string", "enum": ["message"]}, "data": {"type": "string"}},
    }

    /// `ask`: one model call.
    AskBody = (body(&["prompt"], json!({
        "prompt": prompt("What to ask"),
        "system": text(),
        "tier": tier(),
        "provider": provider(),
        "stream": stream(),
        "timeout_ms": integer(*TIMEOUT_MS.start(), *TIMEOUT_MS.end(),
            "Give up on a provider after this long (at most the configured timeout)"),
    })))

    /// `routePrompt`: the tier and model for a prompt.
    RouteBody = (body(&["prompt"], json!({"prompt": prompt("The prompt to route")})))

    /// `generateStructuredOutput`: an answer satisfying a JSON Schema.
    StructuredBody = (body(&["prompt", "schema"], json!({
        "prompt": prompt("What to ask"),
        "schema": json_schema("The JSON Schema the answer must satisfy (422 if it does not compile)"),
        "max_attempts": integer(1, i64::from(MAX_ATTEMPTS), "Answers asked for in all, repairs included (default 3)"),
        "tier": tier(),
        "provider": provider(),
    })))

    /// `callTool` for a tool not built in: the caller and the arguments.
    ToolCallBody = (body(&[], json!({"arguments": {"type": ["object", "null"]}})))

    /// `runTools`: a model-driven tool loop.
    RunBody = (body(&["prompt"], json!({
        "prompt": prompt("What to do"),
        "system": text(),
        "tools": {"type": ["array", "null"], "items": {"type": "string", "enum": tool_names()},
            "description": "The tools the model may call (all if left out)"},
        "max_steps": integer(1, i64::from(MAX_STEPS), "Model turns at most (default 5)"),
        "tier": tier(),
        "provider": provider(),
        "stream": stream(),
    })))

    /// `evaluateModel`: generate, evaluate, improve.
    EvaluateBody = (body(&["prompt", "criteria"], json!({
        "prompt": prompt("What to answer"),
        "criteria": prompt("What a good answer is"),
        "threshold": {"type": ["number", "null"], "minimum": 0, "maximum": 1,
            "description": "The score that ends the loop (default 0.8)"},
        "max_rounds": integer(1, i64::from(MAX_ROUNDS), "Rounds at most (default 3)"),
        "tier": tier(),
        "provider": provider(),
    })))

    /// `createPlan`: a goal and, optionally, its steps.
    PlanBody = (body(&["goal"], json!({"goal": prompt("What the plan is for"), "steps": steps()})))

    /// `decideApproval`: who decides, and why.
    DecideBody = (body(&[], json!({"comment": text()})))

    /// An OpenAI chat completion request, as far as vibehq reads it (other fields are
    /// ignored).
    ChatBody = (chat_body())

    /// A `chat.completion`.
    ChatCompletion = {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices", "usage"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["chat.completion"]},
            "created": {"type": "integer"},
            "model": {"type": "string", "description": "The alias asked for, or the model that answered"},
            "choices": {"type": "array", "minItems": 1, "maxItems": 1, "items": {
                "type": "object",
                "required": ["index", "message", "finish_reason"],
                "properties": {
                    "index": {"type": "integer"},
                    "message": {
                        "type": "object",
                        "required": ["role", "content"],
                        "properties": {
                            "role": {"type": "string", "enum": ["assistant"]},
                            "content": {"type": ["string", "null"]},
                            "tool_calls": {"type": "array", "items": {
                                "type": "object",
                                "required": ["id", "type", "function"],
                                "properties": {
                                    "id": {"type": "string"},
                                    "type": {"type": "string", "enum": ["function"]},
                                    "function": {
                                        "type": "object",
                                        "required": ["name", "arguments"],
                                        "properties": {
                                            "name": {"type": "string"},
                                            "arguments": {"type": "string"},
                                        },
                                    },
                                },
                            }},
                        },
                    },
                    "finish_reason": {"type": "string", "enum": ["stop", "tool_calls"]},
                },
            }},
            "usage": {
                "type": "object",
                "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
                "properties": {
                    "prompt_tokens": {"type": "integer", "minimum": 0},
                    "completion_tokens": {"type": "integer", "minimum": 0},
                    "total_tokens": {"type": "integer", "minimum": 0},
                },
            },
        },
    }

    /// OpenAI's model list.
    ModelList = {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": {
                "type": "object",
                "required": ["id", "object", "created", "owned_by"],
                "properties": {
                    "id": {"type": "string"},
                    "object": {"type": "string", "enum": ["model"]},
                    "created": {"type": "integer"},
                    "owned_by": {"type": "string"},
                },
            }},
        },
    }

    /// An error in OpenAI's shape, with vibehq's status and code.
    OpenAiErrorBody = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string", "enum": [
                        "invalid_request_error", "authentication_error", "rate_limit_error", "api_error",
                    ]},
                    "param": {"type": ["string", "null"], "description": "The request field at fault"},
                    "code": {"type": "string", "description": "vibehq's code (invalid_field, model_not_found, …)"},
                },
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use vibehq_api::schema::round_trips;

    use super::*;
    use crate::ops::Op;

    #[test]
    fn every_schema_survives_into_the_document() {
        let mut schemas = vec![
            AskBody::json(),
            RouteBody::json(),
            StructuredBody::json(),
            ToolCallBody::json(),
            RunBody::json(),
            EvaluateBody::json(),
            PlanBody::json(),
            DecideBody::json(),
            ChatBody::json(),
            AskEvent::json(),
            RunStreamEvent::json(),
            ChatEvent::json(),
            ChatCompletion::json(),
            ModelList::json(),
            OpenAiErrorBody::json(),
        ];
        schemas.extend(tools::builtin_specs().iter().map(tool_body));
        for schema in schemas {
            round_trips(&schema).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn each_body_has_exactly_the_fields_its_operation_reads() {
        let named = |schema: Value| -> Vec<String> {
            let mut names: Vec<String> = schema["properties"]
                .as_object()
                .expect("properties")
                .keys()
                .cloned()
                .collect();
            names.sort();
            names
        };
        for (op, schema, from_the_path) in [
            (Op::Ask, AskBody::json(), &[][..]),
            (Op::RoutePrompt, RouteBody::json(), &[]),
            (Op::GenerateStructuredOutput, StructuredBody::json(), &[]),
            (Op::CallTool, ToolCallBody::json(), &["tool"]),
            (Op::RunTools, RunBody::json(), &[]),
            (Op::EvaluateModel, EvaluateBody::json(), &[]),
            (Op::CreatePlan, PlanBody::json(), &[]),
            // `approved` is the path's (approve or reject).
            (
                Op::DecideApproval,
                DecideBody::json(),
                &["approval_id", "approved"],
            ),
        ] {
            let mut expected: Vec<String> = ["worker_name", "container_name"]
                .into_iter()
                .chain(op.fields().iter().copied())
                .filter(|f| !from_the_path.contains(f))
                .map(str::to_owned)
                .collect();
            expected.sort();
            assert_eq!(named(schema), expected, "{}", op.name());
        }
    }

    /// The patterns path attributes spell out (they take literals only) are the parsers'.
    #[test]
    fn the_patterns_written_in_path_attributes_are_the_shared_ones() {
        use utoipa::OpenApi;

        let mut doc = crate::http::AiDoc::openapi();
        doc.merge(crate::openai::OpenAiDoc::openapi());
        let doc = serde_json::to_value(doc).expect("the document as JSON");
        for (path, method, parameter, pattern) in [
            ("/api/ai/plans/{plan_id}", "get", "plan_id", NOT_BLANK),
            (
                "/api/ai/approvals/{approval_id}/approve",
                "post",
                "approval_id",
                NOT_BLANK,
            ),
            (
                "/api/ai/approvals/{approval_id}/reject",
                "post",
                "approval_id",
                NOT_BLANK,
            ),
            ("/v1/chat/completions", "post", "x-vibehq-worker-name", NAME),
            (
                "/v1/chat/completions",
                "post",
                "x-vibehq-container-name",
                NAME,
            ),
        ] {
            let parameters = doc["paths"][path][method]["parameters"]
                .as_array()
                .unwrap_or_else(|| panic!("{path} has parameters"));
            let found = parameters
                .iter()
                .find(|p| p["name"] == parameter)
                .unwrap_or_else(|| panic!("{path} has {parameter}"));
            assert_eq!(found["schema"]["pattern"], pattern, "{path} {parameter}");
        }
        for spec in tools::builtin_specs() {
            let path = format!("/api/ai/tools/{}", spec.name);
            assert!(doc["paths"][&path]["post"].is_object(), "{path}");
        }
        assert!(doc["paths"]["/api/ai/tools/{tool}"].is_null());
    }

    #[test]
    fn a_tool_body_requires_arguments_only_where_its_schema_needs_some() {
        let [submit, status, containers] = tools::builtin_specs();
        for (spec, required) in [(submit, true), (status, true), (containers, false)] {
            let body = tool_body(&spec);
            let listed = body["required"]
                .as_array()
                .is_some_and(|r| r.contains(&json!("arguments")));
            assert_eq!(listed, required, "{}", spec.name);
        }
    }
}
