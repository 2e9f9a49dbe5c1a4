//! `routePrompt`: choose a model tier from a prompt's complexity.
//!
//! The classifier is a handful of cheap features (length, questions, code, reasoning words,
//! constraints) weighed into a score in `0..=1`; it costs microseconds, so every call can be
//! routed. The decision, the features it saw and its reasons in words are recorded
//! (`ai.routing_decided` → `ai_routing_decisions`), so a wrong tier can be traced to the feature
//! that caused it and the weights tuned from real traffic.

use serde::Serialize;
use serde_json::json;
use vibehq_events::ai::RoutingDecided;

use crate::provider::Tier;
use crate::{Actor, Gateway};

/// What the classifier saw in a prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Features {
    pub words: usize,
    pub lines: usize,
    pub questions: usize,
    pub code_blocks: usize,
    /// Words that ask for reasoning rather than recall ("analyze", "design", "prove", …).
    pub reasoning_words: usize,
    /// Requirements spelled out ("must", "should", "at least", list items).
    pub constraints: usize,
}

const REASONING: &[&str] = &[
    "analyze",
    "analyse",
    "design",
    "prove",
    "derive",
    "compare",
    "explain why",
    "trade-off",
    "tradeoff",
    "architecture",
    "optimize",
    "optimise",
    "refactor",
    "debug",
    "step by step",
    "evaluate",
    "plan",
    "strategy",
];
const CONSTRAINTS: &[&str] = &["must", "should", "at least", "at most", "without", "ensure"];

impl Features {
    pub fn of(prompt: &str) -> Self {
        let lower = prompt.to_lowercase();
        let lines = prompt.lines().filter(|l| !l.trim().is_empty()).count();
        let list_items = prompt
            .lines()
            .map(str::trim_start)
            .filter(|l| {
                l.starts_with("- ")
                    || l.starts_with("* ")
                    || l.split_once(". ")
                        .is_some_and(|(n, _)| n.parse::<u32>().is_ok())
            })
            .count();
        Self {
            words: prompt.split_whitespace().count(),
            lines,
            questions: prompt.matches('?').count(),
            code_blocks: prompt.matches("```").count() / 2,
            reasoning_words: REASONING.iter().map(|w| lower.matches(w).count()).sum(),
            constraints: CONSTRAINTS
                .iter()
                .map(|w| lower.matches(w).count())
                .sum::<usize>()
                + list_items,
        }
    }

    /// The complexity score in `0..=1`, and the reasons that raised it.
    pub fn score(&self) -> (f64, Vec<String>) {
        let mut score = 0.0;
        let mut reasons = Vec::new();
        let mut add = |points: f64, reason: String| {
            score += points;
            reasons.push(reason);
        };
        if self.words > 400 {
            add(0.35, format!("long prompt ({} words)", self.words));
        } else if self.words > 80 {
            add(0.15, format!("medium-length prompt ({} words)", self.words));
        }
        if self.code_blocks > 0 {
            add(0.25, format!("{} code block(s)", self.code_blocks));
        }
        if self.reasoning_words > 0 {
            let points = (0.2 * self.reasoning_words as f64).min(0.4);
            add(
                points,
                format!("{} reasoning word(s)", self.reasoning_words),
            );
        }
        if self.constraints > 2 {
            add(0.15, format!("{} constraints", self.constraints));
        }
        if self.questions > 2 {
            add(0.1, format!("{} questions", self.questions));
        }
        if reasons.is_empty() {
            reasons.push("short, direct prompt".to_owned());
        }
        (score.min(1.0), reasons)
    }
}

/// The tier for a complexity score.
pub fn tier_for(complexity: f64) -> Tier {
    if complexity < 0.3 {
        Tier::Small
    } else if complexity < 0.6 {
        Tier::Medium
    } else {
        Tier::Large
    }
}

/// A routing decision, as recorded and answered.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Decision {
    pub decision_id: String,
    pub complexity: f64,
    pub tier: Tier,
    /// The provider and model the gateway would call for the tier first; none when no
    /// provider is configured (routing reads the prompt alone).
    pub provider: Option<String>,
    pub model: Option<String>,
    pub reasons: Vec<String>,
    #[schema(value_type = Object)]
    pub features: serde_json::Value,
}

/// A prompt cannot be routed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("cannot record the decision: {0}")]
    Record(#[from] vibehq_events::log::Error),
}

/// Classifies `prompt`, chooses the tier and the model the gateway would use for it (if a
/// provider is configured), and records the decision.
pub async fn route(
    gateway: &Gateway,
    caller: &Actor,
    prompt: &str,
) -> Result<Decision, RouteError> {
    let features = Features::of(prompt);
    let (complexity, reasons) = features.score();
    let tier = tier_for(complexity);
    let choice = gateway.first_choice(tier);
    let decision = Decision {
        decision_id: uuid::Uuid::now_v7().to_string(),
        complexity,
        tier,
        provider: choice.map(|(provider, _)| provider.to_owned()),
        model: choice.map(|(_, model)| model.to_owned()),
        reasons,
        features: json!(features),
    };
    let event = RoutingDecided {
        decision_id: decision.decision_id.clone(),
        prompt: prompt.to_owned(),
        complexity,
        tier: tier.as_str().to_owned(),
        provider: decision.provider.clone(),
        model: decision.model.clone(),
        reasons: decision.reasons.clone(),
        features: Some(decision.features.clone()),
    };
    gateway.record(caller, event).await?;
    Ok(decision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_question_goes_to_the_small_tier() {
        let (score, reasons) = Features::of("What is the capital of France?").score();
        assert_eq!(tier_for(score), Tier::Small);
        assert_eq!(reasons, vec!["short, direct prompt"]);
    }

    #[test]
    fn a_design_task_with_code_and_constraints_goes_to_the_large_tier() {
        let prompt = "Analyze this function and design a refactor step by step.\n\
            ```rust\nfn f() {}\n```\n\
            - it must keep the API\n- it should not allocate\n- ensure it is thread safe";
        let features = Features::of(prompt);
        assert_eq!(features.code_blocks, 1);
        assert!(features.reasoning_words >= 3, "{features:?}");
        let (score, reasons) = features.score();
        assert_eq!(tier_for(score), Tier::Large, "{score} {reasons:?}");
    }

    #[test]
    fn a_longer_explanation_request_goes_to_the_medium_tier() {
        let prompt = format!(
            "Explain why the sky is blue. {}",
            "Keep it simple. ".repeat(30)
        );
        let (score, reasons) = Features::of(&prompt).score();
        assert_eq!(tier_for(score), Tier::Medium, "{score} {reasons:?}");
    }
}
