//! `generateStructuredOutput`: an answer that satisfies a JSON Schema, or a clear failure.
//!
//! The model is told the schema and asked for JSON only. Its answer is parsed (a Markdown code
//! fence around it is tolerated) and validated with the `jsonschema` crate; an invalid answer is
//! sent back with the validation errors, up to `max_attempts`. The outcome — the valid output, or
//! every attempt's errors — is recorded either way (`ai_structured_outputs`).

use serde::Serialize;
use serde_json::Value;
use vibehq_events::ai::StructuredOutput;

use crate::gateway::{GatewayError, Operation, Request};
use crate::provider::{Conversation, Tier, Turn};
use crate::{Actor, Gateway};

/// The most attempts a request may ask for.
pub const MAX_ATTEMPTS: u32 = 10;

/// A structured-output request.
#[derive(Debug, Clone)]
pub struct Ask<'a> {
    pub prompt: &'a str,
    pub schema: &'a Value,
    /// Attempts in all (first answer included), 1 to [`MAX_ATTEMPTS`].
    pub max_attempts: u32,
    pub tier: Tier,
    pub provider: Option<&'a str>,
    /// Recorded with each model call: `Structured`, or `Plan` for the agent's planner.
    pub operation: Operation,
    /// The conversation to answer (an OpenAI-style chat), instead of `prompt` alone; `prompt`
    /// is then what is recorded.
    pub conversation: Option<&'a Conversation>,
}

/// A valid output.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Output {
    pub output_id: String,
    /// The answer: any JSON value the schema allows.
    pub output: Value,
    pub attempts: u32,
    /// The validation errors of the attempts before the valid one.
    pub errors: Vec<String>,
    pub provider: String,
    pub model: String,
}

/// Why no valid output came.
#[derive(Debug, thiserror::Error)]
pub enum StructuredError {
    /// The schema itself is not a valid JSON Schema.
    #[error("the schema is not a valid JSON Schema: {0}")]
    InvalidSchema(String),
    /// Every attempt was invalid (recorded as `output_id`).
    #[error("no valid answer after {attempts} attempts; last error: {}", .errors.last().map(String::as_str).unwrap_or("none"))]
    NeverValid {
        output_id: String,
        attempts: u32,
        errors: Vec<String>,
    },
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error("cannot record the output: {0}")]
    Record(#[from] vibehq_events::log::Error),
}

/// Checks that `schema` compiles (for early, field-named errors).
pub fn check_schema(schema: &Value) -> Result<jsonschema::Validator, StructuredError> {
    jsonschema::validator_for(schema).map_err(|e| StructuredError::InvalidSchema(e.to_string()))
}

/// Asks until the answer satisfies the schema or the attempts run out.
pub async fn generate(
    gateway: &Gateway,
    caller: &Actor,
    ask: Ask<'_>,
) -> Result<Output, StructuredError> {
    let validator = check_schema(ask.schema)?;
    let output_id = uuid::Uuid::now_v7().to_string();
    let instruction = format!(
        "Answer with a single JSON value and nothing else: no prose, no code fence. \
         It must satisfy this JSON Schema:\n{}",
        ask.schema
    );
    let mut conversation = match ask.conversation {
        Some(given) => {
            let mut conversation = given.clone();
            conversation.system = Some(match conversation.system.take() {
                Some(system) => format!("{system}\n\n{instruction}"),
                None => instruction,
            });
            conversation
        }
        None => Conversation::prompt(ask.prompt).system(instruction),
    };
    conversation.response_schema = Some(ask.schema.clone());
    let mut errors = Vec::new();
    let mut last = None;
    for attempt in 1..=ask.max_attempts.clamp(1, MAX_ATTEMPTS) {
        let reply = gateway
            .complete(Request {
                caller,
                operation: ask.operation,
                tier: ask.tier,
                provider: ask.provider,
                conversation: &conversation,
                timeout: None,
            })
            .await?;
        let text = reply.answer.text.clone();
        last = Some((reply.provider.clone(), reply.model.clone()));
        let problem = match parse(&text) {
            Err(e) => format!("not JSON: {e}"),
            Ok(value) => {
                let problems: Vec<String> = crate::schema_errors(&validator, &value);
                if problems.is_empty() {
                    let (provider, model) = (reply.provider, reply.model);
                    record(
                        gateway,
                        caller,
                        &output_id,
                        &ask,
                        &provider,
                        &model,
                        Some(&value),
                        attempt,
                        &errors,
                    )
                    .await?;
                    return Ok(Output {
                        output_id,
                        output: value,
                        attempts: attempt,
                        errors,
                        provider,
                        model,
                    });
                }
                problems.join("; ")
            }
        };
        tracing::info!(%output_id, attempt, error = %problem, "structured answer invalid");
        conversation.turns.push(Turn::Assistant {
            text,
            tool_calls: Vec::new(),
        });
        conversation.turns.push(Turn::User(format!(
            "That answer does not satisfy the schema: {problem}. \
             Answer again with only the corrected JSON."
        )));
        errors.push(problem);
    }
    let (provider, model) = last.unwrap_or_default();
    let attempts = errors.len() as u32;
    record(
        gateway, caller, &output_id, &ask, &provider, &model, None, attempts, &errors,
    )
    .await?;
    Err(StructuredError::NeverValid {
        output_id,
        attempts,
        errors,
    })
}

/// The JSON in an answer, with a surrounding Markdown code fence tolerated.
pub fn parse(text: &str) -> Result<Value, serde_json::Error> {
    let trimmed = text.trim();
    let unfenced = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|rest| rest.strip_suffix("```"))
        .unwrap_or(trimmed);
    serde_json::from_str(unfenced.trim())
}

#[allow(clippy::too_many_arguments)]
async fn record(
    gateway: &Gateway,
    caller: &Actor,
    output_id: &str,
    ask: &Ask<'_>,
    provider: &str,
    model: &str,
    output: Option<&Value>,
    attempts: u32,
    errors: &[String],
) -> Result<(), StructuredError> {
    let event = StructuredOutput {
        output_id: output_id.to_owned(),
        provider: provider.to_owned(),
        model: model.to_owned(),
        prompt: ask.prompt.to_owned(),
        schema: ask.schema.clone(),
        output: output.cloned(),
        valid: output.is_some(),
        attempts,
        errors: errors.to_vec(),
    };
    gateway.record(caller, event).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_fenced_answer_is_read_as_its_json() {
        assert_eq!(
            parse("```json\n{\"a\": 1}\n```").ok(),
            Some(json!({"a": 1}))
        );
        assert_eq!(parse(" [1, 2] ").ok(), Some(json!([1, 2])));
        assert!(parse("Sure! {\"a\": 1}").is_err());
    }

    #[test]
    fn a_schema_that_is_not_a_schema_is_refused() {
        assert!(check_schema(&json!({"type": "object"})).is_ok());
        assert!(matches!(
            check_schema(&json!({"type": "no-such-type"})),
            Err(StructuredError::InvalidSchema(_))
        ));
    }
}
