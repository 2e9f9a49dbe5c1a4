//! Aggregates and the NATS subjects they live on.
//!
//! Each aggregate has one subject, `vibehq.<area>.<kind>.<id>` (tasks are
//! `vibehq.tasks.<id>`), and the event kind travels in the envelope rather than the subject. One
//! subject per aggregate is what makes `Nats-Expected-Last-Subject-Sequence` work as optimistic
//! concurrency on nats-server 2.9, which cannot check the last sequence of a wildcard.
//!
//! The one exception is a task's submission, which has a subject of its own,
//! `vibehq.tasks.submitted.<id>`, so that the queue's dispatcher can consume submissions alone
//! ([`SUBMISSIONS`]) rather than every task event. A task's later events are on
//! `vibehq.tasks.<id>`; [`Subject::history`] names both.

use std::fmt;

use crate::stream::StreamKind;

/// The subject of one aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A queued task's events after its submission: `vibehq.tasks.<task_id>`.
    Task(String),
    /// A task's submission: `vibehq.tasks.submitted.<task_id>`.
    Submission(String),
    /// A container instance's lifecycle: `vibehq.containers.instances.<instance_id>`.
    Instance(String),
    /// A container instance's health probes: `vibehq.containers.health.<instance_id>`.
    Health(String),
    /// A pool of instances (its scaling): `vibehq.containers.pools.<pool>`.
    Pool(String),
    /// An agent task and its approvals: `vibehq.ai.tasks.<task_id>`.
    AiTask(String),
    /// An evaluator-optimiser run: `vibehq.ai.evaluations.<evaluation_id>`.
    Evaluation(String),
    /// A routing decision: `vibehq.ai.routing.<decision_id>`.
    Routing(String),
    /// A structured-output generation: `vibehq.ai.structured.<output_id>`.
    Structured(String),
    /// A tool call: `vibehq.ai.tools.<call_id>`.
    ToolCall(String),
    /// A streamed response: `vibehq.ai.streams.<stream_id>`.
    ToolStream(String),
    /// One gateway request and its attempts: `vibehq.ai.calls.<request_id>`.
    ModelCall(String),
}

/// An id that cannot be a subject token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{id:?} cannot be used as an id: ids must be 1-128 characters without spaces, '.', '*' or '>'"
)]
pub struct InvalidToken {
    pub id: String,
}

impl Subject {
    /// The prefix before the id, e.g. `vibehq.tasks`.
    pub fn prefix(&self) -> &'static str {
        match self {
            Subject::Task(_) => "vibehq.tasks",
            Subject::Submission(_) => "vibehq.tasks.submitted",
            Subject::Instance(_) => "vibehq.containers.instances",
            Subject::Health(_) => "vibehq.containers.health",
            Subject::Pool(_) => "vibehq.containers.pools",
            Subject::AiTask(_) => "vibehq.ai.tasks",
            Subject::Evaluation(_) => "vibehq.ai.evaluations",
            Subject::Routing(_) => "vibehq.ai.routing",
            Subject::Structured(_) => "vibehq.ai.structured",
            Subject::ToolCall(_) => "vibehq.ai.tools",
            Subject::ToolStream(_) => "vibehq.ai.streams",
            Subject::ModelCall(_) => "vibehq.ai.calls",
        }
    }

    /// The aggregate's id.
    pub fn id(&self) -> &str {
        match self {
            Subject::Task(id)
            | Subject::Submission(id)
            | Subject::Instance(id)
            | Subject::Health(id)
            | Subject::Pool(id)
            | Subject::AiTask(id)
            | Subject::Evaluation(id)
            | Subject::Routing(id)
            | Subject::Structured(id)
            | Subject::ToolCall(id)
            | Subject::ToolStream(id)
            | Subject::ModelCall(id) => id,
        }
    }

    /// The stream that stores this subject.
    pub fn stream(&self) -> StreamKind {
        match self {
            Subject::Task(_) | Subject::Submission(_) => StreamKind::Tasks,
            Subject::Instance(_) | Subject::Health(_) | Subject::Pool(_) => StreamKind::Containers,
            Subject::AiTask(_)
            | Subject::Evaluation(_)
            | Subject::Routing(_)
            | Subject::Structured(_)
            | Subject::ToolCall(_)
            | Subject::ToolStream(_)
            | Subject::ModelCall(_) => StreamKind::Ai,
        }
    }

    /// The subjects holding the aggregate's whole history: a task's submission and its later
    /// events; any other aggregate's one subject.
    pub fn history(&self) -> Vec<Subject> {
        match self {
            Subject::Task(id) | Subject::Submission(id) => {
                vec![Subject::Submission(id.clone()), Subject::Task(id.clone())]
            }
            other => vec![other.clone()],
        }
    }

    /// Checks that the id is a single valid subject token.
    pub fn validate(&self) -> Result<(), InvalidToken> {
        validate_id(self.id())
    }
}

/// Every task submission: the filter of the queue's dispatcher.
///
/// `vibehq.tasks.*` is every task's later events; the two never overlap, whatever a task's id.
pub const SUBMISSIONS: &str = "vibehq.tasks.submitted.*";

/// Checks that `id` can be one subject token (and so an aggregate id).
pub fn validate_id(id: &str) -> Result<(), InvalidToken> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>'));
    if ok {
        Ok(())
    } else {
        Err(InvalidToken { id: id.to_owned() })
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.prefix(), self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_render_with_their_prefix() {
        assert_eq!(Subject::Task("t1".into()).to_string(), "vibehq.tasks.t1");
        assert_eq!(
            Subject::Submission("t1".into()).to_string(),
            "vibehq.tasks.submitted.t1"
        );
        assert_eq!(
            Subject::Health("i-1".into()).to_string(),
            "vibehq.containers.health.i-1"
        );
    }

    #[test]
    fn ids_that_would_split_or_widen_a_subject_are_refused() {
        for bad in ["", "a.b", "a b", "*", ">", "x>", &"x".repeat(129)] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_id("0192f3c4-task_ok-1").is_ok());
    }

    #[test]
    fn every_subject_falls_under_its_streams_filter() {
        for subject in [
            Subject::Task("a".into()),
            Subject::Submission("a".into()),
            Subject::Instance("a".into()),
            Subject::Health("a".into()),
            Subject::AiTask("a".into()),
            Subject::ToolStream("a".into()),
        ] {
            let filter = subject.stream().subjects()[0];
            let prefix = filter.trim_end_matches(".>");
            assert!(
                subject.to_string().starts_with(prefix),
                "{subject} vs {filter}"
            );
        }
    }
}
