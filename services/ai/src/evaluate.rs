//! `evaluateModel`: the evaluator-optimiser loop.
//!
//! A generator answers the prompt; an evaluator scores the answer against the criteria
//! (`{"score": 0..1, "feedback": "…"}`); below the threshold the generator is asked to improve
//! on its answer with that feedback, until the score passes or the rounds run out. Each round's
//! output, score and feedback is recorded (`ai_evaluations`), so a run can be read back as the
//! sequence of drafts it was.

use serde::{Deserialize, Serialize};
use vibehq_events::ai::EvaluationRound;

use crate::gateway::{GatewayError, Operation, Request};
use crate::provider::{Conversation, Tier};
use crate::{Actor, Gateway};

/// The most rounds a request may ask for.
pub const MAX_ROUNDS: u32 = 10;

/// An evaluation request.
#[derive(Debug, Clone)]
pub struct Evaluate<'a> {
    pub prompt: &'a str,
    pub criteria: &'a str,
    /// The score (0..=1) that ends the loop.
    pub threshold: f64,
    pub max_rounds: u32,
    pub tier: Tier,
    pub provider: Option<&'a str>,
}

/// One round, as answered.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Round {
    pub round: u32,
    pub output: String,
    pub score: f64,
    pub feedback: Option<String>,
    pub passed: bool,
}

/// The loop's result: every round, and the best output.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Evaluation {
    pub evaluation_id: String,
    pub passed: bool,
    pub best_output: String,
    pub best_score: f64,
    pub rounds: Vec<Round>,
    pub provider: String,
    pub model: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error("cannot record the round: {0}")]
    Record(#[from] vibehq_events::log::Error),
}

const EVALUATOR: &str = "You are a strict evaluator. Judge the answer against the criteria \
    and reply with only a JSON object {\"score\": <number from 0 to 1>, \"feedback\": \
    \"<what to improve>\"}.";

/// What the evaluator says.
#[derive(Debug, Deserialize)]
struct Verdict {
    score: f64,
    #[serde(default)]
    feedback: Option<String>,
}

pub async fn evaluate(
    gateway: &Gateway,
    caller: &Actor,
    ask: Evaluate<'_>,
) -> Result<Evaluation, EvaluateError> {
    let evaluation_id = uuid::Uuid::now_v7().to_string();
    let mut rounds: Vec<Round> = Vec::new();
    let mut served_by = (String::new(), String::new());
    for round in 1..=ask.max_rounds.clamp(1, MAX_ROUNDS) {
        let generate = match rounds.last() {
            None => Conversation::prompt(ask.prompt),
            Some(previous) => Conversation::prompt(format!(
                "{}\n\nYour previous answer:\n{}\n\nAn evaluator scored it {:.2} against these \
                 criteria: {}\nFeedback: {}\n\nWrite an improved answer.",
                ask.prompt,
                previous.output,
                previous.score,
                ask.criteria,
                previous.feedback.as_deref().unwrap_or("none")
            )),
        };
        let generated = call(gateway, caller, &ask, &generate).await?;
        served_by = (generated.provider.clone(), generated.model.clone());
        let output = generated.answer.text;
        let judge = Conversation::prompt(format!(
            "Task:\n{}\n\nCriteria:\n{}\n\nAnswer:\n{output}",
            ask.prompt, ask.criteria
        ))
        .system(EVALUATOR);
        let verdict = call(gateway, caller, &ask, &judge).await?;
        let (score, feedback) = read_verdict(&verdict.answer.text);
        let passed = score >= ask.threshold;
        tracing::info!(%evaluation_id, round, score, passed, "evaluation round");
        let event = EvaluationRound {
            evaluation_id: evaluation_id.clone(),
            round,
            provider: served_by.0.clone(),
            model: served_by.1.clone(),
            prompt: ask.prompt.to_owned(),
            criteria: Some(ask.criteria.to_owned()),
            output: output.clone(),
            score,
            feedback: feedback.clone(),
            passed,
        };
        gateway.record(caller, event).await?;
        rounds.push(Round {
            round,
            output,
            score,
            feedback,
            passed,
        });
        if passed {
            break;
        }
    }
    let best = rounds
        .iter()
        .max_by(|a, b| a.score.total_cmp(&b.score).then(b.round.cmp(&a.round)))
        .cloned();
    let (best_output, best_score) = best.map(|r| (r.output, r.score)).unwrap_or_default();
    Ok(Evaluation {
        evaluation_id,
        passed: rounds.iter().any(|r| r.passed),
        best_output,
        best_score,
        rounds,
        provider: served_by.0,
        model: served_by.1,
    })
}

async fn call(
    gateway: &Gateway,
    caller: &Actor,
    ask: &Evaluate<'_>,
    conversation: &Conversation,
) -> Result<crate::Reply, GatewayError> {
    gateway
        .complete(Request {
            caller,
            operation: Operation::Evaluate,
            tier: ask.tier,
            provider: ask.provider,
            conversation,
            timeout: None,
        })
        .await
}

/// The score (clamped to 0..=1) and feedback in an evaluator's answer; an answer that is not
/// the asked-for JSON scores 0 and says so, rather than failing the run.
fn read_verdict(text: &str) -> (f64, Option<String>) {
    let trimmed = text
        .trim()
        .trim_start_matches("```json")
        .trim_matches('`')
        .trim();
    match serde_json::from_str::<Verdict>(trimmed) {
        Ok(v) if v.score.is_finite() => (v.score.clamp(0.0, 1.0), v.feedback),
        _ => (
            0.0,
            Some(format!(
                "the evaluator did not answer with a score: {trimmed}"
            )),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_is_read_clamped_and_an_unreadable_one_scores_zero() {
        assert_eq!(
            read_verdict(r#"{"score": 0.7, "feedback": "shorter"}"#),
            (0.7, Some("shorter".into()))
        );
        assert_eq!(read_verdict(r#"{"score": 3}"#), (1.0, None));
        let (score, feedback) = read_verdict("Looks good to me!");
        assert_eq!(score, 0.0);
        assert!(feedback.is_some_and(|f| f.contains("did not answer with a score")));
    }
}
