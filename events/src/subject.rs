//! Aggregates and the NATS subjects their events live on.
//!
//! Every aggregate's events share a subject prefix, so its history is one filter away and its
//! version is the stream sequence of the last event under that filter ([`Subject::version`]),
//! which a command's append expects (`Nats-Expected-Last-Subject-Sequence` with
//! `Nats-Expected-Last-Subject-Sequence-Subject`, nats-server 2.11+).
//!
//! A task's events carry more in their subjects, so NATS permissions can bind a worker to its
//! name and a claimer to its lanes:
//! - `vibehq.tasks.<task_id>.submitted.<lane>`: the submission, which is also the task's
//!   pending work (see [`crate::task::lane`]);
//! - `vibehq.tasks.<task_id>.<step>.<worker>.<container>`: every later event, with the actor
//!   that appended it (`_` for no container);
//! - `vibehq.tasks.<task_id>.>`: the task's whole history, and its version.
//!
//! Other aggregates have one subject each, `vibehq.<area>.<kind>.<id>`.

use std::fmt;

use crate::actor::{Actor, InvalidName, NO_CONTAINER, validate_name};
use crate::stream::StreamKind;
use crate::task::Step;
use crate::task::lane::Lane;

/// The subject of one event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A task's submission, in its lane: `vibehq.tasks.<task_id>.submitted.<lane>`.
    Submission { task_id: String, lane: Lane },
    /// A delayed task's submission until it is due: `vibehq.tasks.<task_id>.scheduled.<lane>`.
    /// Nothing pulls this subject, so the task is not handed out early; when it is due, the
    /// server copies the submission onto [`Subject::Submission`] (see [`crate::schedule`]).
    Scheduled { task_id: String, lane: Lane },
    /// A later task event by `actor`: `vibehq.tasks.<task_id>.<step>.<worker>.<container>`.
    TaskStep {
        task_id: String,
        step: Step,
        actor: Actor,
    },
    /// A pause scope (`all`, `worker:<name>`): `vibehq.queue.pauses.<scope>` (see [`crate::pause`]).
    Pause(String),
    /// A recurring schedule: `vibehq.queue.schedules.<schedule_id>` (see [`crate::recurring`]).
    Schedule(String),
    /// A concurrency key: `vibehq.queue.keys.<key>` (see [`crate::limit`]).
    Key(String),
    /// A registered worker: `vibehq.queue.workers.<name>` (see [`crate::fleet`]).
    Worker(String),
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

/// An id or name that cannot be part of a subject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidToken {
    #[error(
        "{id:?} cannot be used as an id: ids must be 1-128 characters without spaces, '.', '*' or '>'"
    )]
    Id { id: String },
    #[error(transparent)]
    Name(#[from] InvalidName),
}

/// The prefix of every task subject.
const TASKS: &str = "vibehq.tasks";

/// The token of a delayed task's submission before it is due ([`Subject::Scheduled`]).
const SCHEDULED: &str = "scheduled";

impl Subject {
    /// The subject filter holding the whole history of `task_id`.
    pub fn task(task_id: &str) -> String {
        format!("{TASKS}.{task_id}.>")
    }

    /// The aggregate's id (a task's id for both kinds of task subject).
    pub fn id(&self) -> &str {
        match self {
            Subject::Submission { task_id, .. }
            | Subject::Scheduled { task_id, .. }
            | Subject::TaskStep { task_id, .. } => task_id,
            Subject::Schedule(id)
            | Subject::Key(id)
            | Subject::Worker(id)
            | Subject::Pause(id)
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
            Subject::Submission { .. }
            | Subject::Scheduled { .. }
            | Subject::TaskStep { .. }
            | Subject::Schedule(_)
            | Subject::Key(_)
            | Subject::Worker(_)
            | Subject::Pause(_) => StreamKind::Tasks,
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

    /// The filter whose last sequence is the aggregate's version, and which holds its whole
    /// history: a task's `vibehq.tasks.<task_id>.>`, any other aggregate's own subject.
    pub fn version(&self) -> String {
        match self {
            Subject::Submission { task_id, .. }
            | Subject::Scheduled { task_id, .. }
            | Subject::TaskStep { task_id, .. } => Self::task(task_id),
            other => other.to_string(),
        }
    }

    /// Checks every id and name in the subject.
    pub fn validate(&self) -> Result<(), InvalidToken> {
        validate_id(self.id())?;
        match self {
            Subject::TaskStep { actor, .. } => actor.validate()?,
            Subject::Submission { lane, .. } | Subject::Scheduled { lane, .. } => {
                match &lane.target {
                    crate::task::lane::Target::Any => {}
                    crate::task::lane::Target::Worker(w) => validate_name(w)?,
                    crate::task::lane::Target::Container { worker, container } => {
                        validate_name(worker)?;
                        validate_name(container)?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The task subject `subject` is, if it is one (other domains' subjects are not parsed:
    /// nothing reads identity from them).
    pub fn parse(subject: &str) -> Option<Subject> {
        let rest = subject.strip_prefix(TASKS)?.strip_prefix('.')?;
        let tokens: Vec<&str> = rest.split('.').collect();
        if let [task_id, SCHEDULED, lane @ ..] = tokens.as_slice() {
            validate_id(task_id).ok()?;
            return Some(Subject::Scheduled {
                task_id: (*task_id).to_owned(),
                lane: Lane::from_tokens(lane)?,
            });
        }
        let (task_id, step, rest) = match tokens.as_slice() {
            [task_id, step, rest @ ..] => (*task_id, Step::from_token(step)?, rest),
            _ => return None,
        };
        validate_id(task_id).ok()?;
        let task_id = task_id.to_owned();
        match (step, rest) {
            (Step::Submitted, lane) => Some(Subject::Submission {
                task_id,
                lane: Lane::from_tokens(lane)?,
            }),
            (step, [worker, container]) => {
                let container = (*container != NO_CONTAINER).then(|| (*container).to_owned());
                let actor = Actor::new(*worker, container);
                actor.validate().ok()?;
                Some(Subject::TaskStep {
                    task_id,
                    step,
                    actor,
                })
            }
            _ => None,
        }
    }
}

/// Checks that `id` can be one subject token (and so an aggregate id).
pub fn validate_id(id: &str) -> Result<(), InvalidToken> {
    let ok = !id.is_empty()
        && id.chars().count() <= 128
        && !id
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>'));
    if ok {
        Ok(())
    } else {
        Err(InvalidToken::Id { id: id.to_owned() })
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (prefix, id) = match self {
            Subject::Submission { task_id, lane } => {
                return write!(f, "{TASKS}.{task_id}.submitted.{}", lane.tokens());
            }
            Subject::Scheduled { task_id, lane } => {
                return write!(f, "{TASKS}.{task_id}.{SCHEDULED}.{}", lane.tokens());
            }
            Subject::TaskStep {
                task_id,
                step,
                actor,
            } => {
                return write!(
                    f,
                    "{TASKS}.{task_id}.{}.{}.{}",
                    step.token(),
                    actor.worker_name,
                    actor.container_token()
                );
            }
            Subject::Schedule(id) => ("vibehq.queue.schedules", id),
            Subject::Pause(scope) => ("vibehq.queue.pauses", scope),
            Subject::Key(key) => ("vibehq.queue.keys", key),
            Subject::Worker(name) => ("vibehq.queue.workers", name),
            Subject::Instance(id) => ("vibehq.containers.instances", id),
            Subject::Health(id) => ("vibehq.containers.health", id),
            Subject::Pool(id) => ("vibehq.containers.pools", id),
            Subject::AiTask(id) => ("vibehq.ai.tasks", id),
            Subject::Evaluation(id) => ("vibehq.ai.evaluations", id),
            Subject::Routing(id) => ("vibehq.ai.routing", id),
            Subject::Structured(id) => ("vibehq.ai.structured", id),
            Subject::ToolCall(id) => ("vibehq.ai.tools", id),
            Subject::ToolStream(id) => ("vibehq.ai.streams", id),
            Subject::ModelCall(id) => ("vibehq.ai.calls", id),
        };
        write!(f, "{prefix}.{id}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::lane::Target;

    fn step(task_id: &str, step: Step, worker: &str, container: Option<&str>) -> Subject {
        Subject::TaskStep {
            task_id: task_id.into(),
            step,
            actor: Actor::new(worker, container.map(str::to_owned)),
        }
    }

    #[test]
    fn task_subjects_carry_the_lane_or_the_actor_and_parse_back() {
        let submission = Subject::Submission {
            task_id: "t1".into(),
            lane: Lane::new(5, Target::Worker("w1".into())),
        };
        let assigned = step("t1", Step::Assigned, "w1", Some("c1"));
        let cancelled = step("t1", Step::Cancelled, "ops", None);
        assert_eq!(submission.to_string(), "vibehq.tasks.t1.submitted.p5.w.w1");
        let scheduled = Subject::Scheduled {
            task_id: "t1".into(),
            lane: Lane::new(5, Target::Worker("w1".into())),
        };
        assert_eq!(scheduled.to_string(), "vibehq.tasks.t1.scheduled.p5.w.w1");
        assert_eq!(Subject::parse(&scheduled.to_string()), Some(scheduled));
        assert_eq!(assigned.to_string(), "vibehq.tasks.t1.assigned.w1.c1");
        assert_eq!(cancelled.to_string(), "vibehq.tasks.t1.cancelled.ops._");
        for subject in [submission, assigned, cancelled] {
            assert_eq!(Subject::parse(&subject.to_string()), Some(subject.clone()));
            assert_eq!(subject.version(), "vibehq.tasks.t1.>");
        }
    }

    #[test]
    fn what_is_not_a_task_subject_does_not_parse() {
        for bad in [
            "vibehq.tasks.t1",
            "vibehq.tasks.t1.exploded.w.c",
            "vibehq.tasks.t1.completed.w",
            "vibehq.tasks.t1.completed.w.c.extra",
            "vibehq.tasks.t1.completed.w:x.c",
            "vibehq.tasks.t1.submitted.p5",
            "vibehq.tasks.t1.submitted.p12.any",
            "vibehq.containers.instances.i1",
        ] {
            assert_eq!(Subject::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn ids_that_would_split_or_widen_a_subject_are_refused() {
        for bad in ["", "a.b", "a b", "*", ">", "x>", &"x".repeat(129)] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_id("0192f3c4-task_ok-1").is_ok());
        assert!(step("t", Step::Started, "a.b", None).validate().is_err());
    }

    #[test]
    fn every_subject_falls_under_its_streams_filter() {
        for subject in [
            step("a", Step::Completed, "w", None),
            Subject::Submission {
                task_id: "a".into(),
                lane: Lane::new(0, Target::Any),
            },
            Subject::Instance("a".into()),
            Subject::Health("a".into()),
            Subject::AiTask("a".into()),
            Subject::ToolStream("a".into()),
            Subject::Schedule("a".into()),
        ] {
            let filters = subject.stream().subjects();
            assert!(
                filters
                    .iter()
                    .any(|f| subject.to_string().starts_with(f.trim_end_matches(".>"))),
                "{subject} vs {filters:?}"
            );
        }
    }
}
