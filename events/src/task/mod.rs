//! The task queue's events (`container_tasks`): their payloads, the lanes pending work waits
//! in, and the one reduction of a task's events to its state.
//!
//! A task's life is `submitted → assigned → started → completed | failed`, with `requeued`
//! returning it to pending for another attempt and `cancelled` ending it early. Who did each
//! step is the actor in the event's subject (and its envelope); the payloads say what.
//!
//! # Layout
//! - this module: the payloads and [`Step`], each task event's token in its subject.
//! - [`lane`]: where pending work waits (priority band × target) and who may take it.
//! - [`lifecycle`]: states, the transition table, and [`lifecycle::decide`], which the queue's
//!   commands, the projector and the live feed all use to fold a task's events.

pub mod lane;
pub mod lifecycle;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::actor::Actor;
use crate::catalog::EventKind;
use crate::subject::Subject;
use lane::{Lane, Target};

/// Where every holder hears at once that a task it holds was cancelled:
/// `vibehq.cancels.<worker>.<container>` (see [`cancel_notices`]).
pub const CANCEL_NOTICES: &str = "vibehq.cancels.>";

/// Where `holder` hears at once that a task it holds was cancelled, so it kills the task's
/// program within moments instead of at its next heartbeat. Core NATS, never stored; the
/// payload is the task id. The `task.cancelled` event is the fact; a lost notice only costs
/// time (the holder's next heartbeat is refused). Only the service may publish here.
pub fn cancel_notices(holder: &Actor) -> String {
    format!(
        "vibehq.cancels.{}.{}",
        holder.worker_name,
        holder
            .container_name
            .as_deref()
            .unwrap_or(crate::actor::NO_CONTAINER)
    )
}

/// Every cancel notice for `worker`'s containers: what its NATS key may subscribe to.
pub fn worker_cancel_notices(worker: &str) -> String {
    format!("vibehq.cancels.{worker}.>")
}

/// A task entered the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submitted {
    pub task_id: String,
    /// What kind of work this is (`health_audit`, `code_fix`, …); workers map it to a handler.
    pub task_type: String,
    /// The named command to run; a worker runs only commands its configuration allows.
    pub command: String,
    /// Arguments for the command, always a JSON object.
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    /// Higher runs first.
    #[serde(default)]
    pub priority: i64,
    /// Only this worker's containers may take the task; `None` means any worker.
    #[serde(default)]
    pub worker_name: Option<String>,
    /// Only this container may take the task; `None` means any container.
    #[serde(default)]
    pub container_name: Option<String>,
    /// How many attempts the task gets before it fails for good.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// A client-chosen key that makes submission idempotent.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// The dead task this one retries (`POST /api/tasks/{id}/retry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<String>,
    /// A delayed task: not handed out before this time. It is stored on
    /// [`Subject::Scheduled`], and a JetStream message schedule copies it into its lane when
    /// it is due ([`crate::schedule`]), durably, with no timer of vibehq's own.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub run_at: Option<time::OffsetDateTime>,
    /// Tasks that must complete before this one may run. Until then it waits off its lane,
    /// like a delayed task, and when the last one completes the service hands it a due copy
    /// (its `run_at` then set to that moment); when one fails or is cancelled, the task is
    /// settled by `on_dependency_failure`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// What becomes of the task when a task it depends on fails or is cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_dependency_failure: Option<OnDependencyFailure>,
    /// The concurrency key the task runs under ([`crate::limit`]): it waits off its lane until
    /// its key admits it, and is then handed a due copy, as a dependent is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
}

/// What becomes of a task whose dependency failed or was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDependencyFailure {
    /// It is cancelled (the default).
    #[default]
    Cancel,
    /// It fails (a dead letter, retryable by an operator).
    Fail,
}

/// Who settles tasks by their dependencies (releases them, cancels or fails them). A name no
/// worker may have (`vibehq nats-auth` refuses names starting with `vibehq`).
pub const DEPENDENCY_ACTOR: &str = "vibehq-dependencies";

fn default_max_attempts() -> u32 {
    3
}

/// No task yet: an empty id and type, the default attempts; fill in what a submission sets.
impl Default for Submitted {
    fn default() -> Self {
        Self {
            task_id: String::new(),
            task_type: String::new(),
            command: String::new(),
            parameters: None,
            priority: 0,
            worker_name: None,
            container_name: None,
            max_attempts: default_max_attempts(),
            idempotency_key: None,
            retry_of: None,
            run_at: None,
            depends_on: Vec::new(),
            on_dependency_failure: None,
            concurrency_key: None,
        }
    }
}

impl Submitted {
    /// Who may take the task.
    pub fn target(&self) -> Target {
        Target::of(self.worker_name.as_deref(), self.container_name.as_deref())
    }

    /// The lane the task waits in while pending.
    pub fn lane(&self) -> Lane {
        Lane::new(self.priority, self.target())
    }

    /// The submission's subject: its task's, in its lane. Who submitted is in the envelope
    /// only: submitting is the service's to do, so the lane (which permissions can scope
    /// pulls by) is what the subject carries.
    ///
    /// A delayed task's, or one waiting on dependencies, is [`Subject::Scheduled`]; when it
    /// is due, the server copies the same event onto [`Submitted::lane_subject`].
    pub fn subject(&self, _by: &Actor) -> Subject {
        if self.run_at.is_some() || !self.depends_on.is_empty() || self.concurrency_key.is_some() {
            Subject::Scheduled {
                task_id: self.task_id.clone(),
                lane: self.lane(),
            }
        } else {
            self.lane_subject()
        }
    }

    /// The submission's subject in its lane, which the lane's consumer hands out.
    pub fn lane_subject(&self) -> Subject {
        Subject::Submission {
            task_id: self.task_id.clone(),
            lane: self.lane(),
        }
    }
}

/// A container claimed the task (the claimer is the event's actor).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assigned {
    pub task_id: String,
    /// 1 for the first attempt; a result must belong to the attempt holding the task.
    pub attempt: u32,
    /// How long the claim holds without a heartbeat.
    pub lease_ms: u64,
    /// The JetStream ack subject of the delivery this claim holds. Acknowledging it ends the
    /// lease; `+WPI` on it extends the lease; any process may do either.
    #[serde(default)]
    pub lease: Option<String>,
}

/// The claimer began running the task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Started {
    pub task_id: String,
    pub attempt: u32,
}

/// The running program reported how far it got. The latest report is the task's progress;
/// each one is kept in the task's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub task_id: String,
    pub attempt: u32,
    /// How much is done, 0 to 100, when the program says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// What it is doing, when the program says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The task finished successfully.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completed {
    pub task_id: String,
    pub attempt: u32,
    #[serde(default)]
    pub output: Option<String>,
}

/// The task failed for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failed {
    pub task_id: String,
    pub attempt: u32,
    pub error: String,
}

/// The task returned to pending for another attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requeued {
    pub task_id: String,
    /// The attempt that just ended.
    pub attempt: u32,
    /// Why the attempt ended (its error, or "lease expired").
    pub reason: String,
    /// How long the task waits before it may be claimed again.
    #[serde(default)]
    pub backoff_ms: u64,
}

/// A result (completion or failure) was refused because it came from a claim that does not
/// hold the task: its lease expired and another attempt took over, or the task ended. Kept for
/// audit; it changes no state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRefused {
    pub task_id: String,
    /// The attempt the refused result named (0 when it named none).
    pub attempt: u32,
    /// `completed` or `failed`.
    pub outcome: String,
    pub reason: String,
}

/// The task was cancelled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cancelled {
    pub task_id: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// What a task event records, as the token in its subject
/// (`vibehq.tasks.<task_id>.<step>.…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    Submitted,
    Assigned,
    Started,
    /// A running program's progress report (`task.progress`).
    Progress,
    Completed,
    Failed,
    Requeued,
    Cancelled,
    /// A result refused by a command (`task.result_refused`).
    Refused,
}

impl Step {
    /// Every step.
    pub const ALL: [Step; 9] = [
        Step::Submitted,
        Step::Assigned,
        Step::Started,
        Step::Progress,
        Step::Completed,
        Step::Failed,
        Step::Requeued,
        Step::Cancelled,
        Step::Refused,
    ];

    /// The step's subject token.
    pub fn token(self) -> &'static str {
        match self {
            Step::Submitted => "submitted",
            Step::Assigned => "assigned",
            Step::Started => "started",
            Step::Progress => "progress",
            Step::Completed => "completed",
            Step::Failed => "failed",
            Step::Requeued => "requeued",
            Step::Cancelled => "cancelled",
            Step::Refused => "refused",
        }
    }

    /// The step with this subject token.
    pub fn from_token(token: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.token() == token)
    }

    /// The event kind this step records.
    pub fn kind(self) -> EventKind {
        match self {
            Step::Submitted => EventKind::TaskSubmitted,
            Step::Assigned => EventKind::TaskAssigned,
            Step::Started => EventKind::TaskStarted,
            Step::Progress => EventKind::TaskProgress,
            Step::Completed => EventKind::TaskCompleted,
            Step::Failed => EventKind::TaskFailed,
            Step::Requeued => EventKind::TaskRequeued,
            Step::Cancelled => EventKind::TaskCancelled,
            Step::Refused => EventKind::TaskResultRefused,
        }
    }

    /// The step of a task event kind; `None` for other domains' kinds.
    pub fn of(kind: EventKind) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.kind() == kind)
    }
}

impl crate::catalog::Payload {
    /// The task a task event is about; `None` for other domains' events.
    pub fn task_id(&self) -> Option<&str> {
        use crate::catalog::Payload as P;
        Some(match self {
            P::TaskSubmitted(p) => &p.task_id,
            P::TaskAssigned(p) => &p.task_id,
            P::TaskStarted(p) => &p.task_id,
            P::TaskProgress(p) => &p.task_id,
            P::TaskCompleted(p) => &p.task_id,
            P::TaskFailed(p) => &p.task_id,
            P::TaskRequeued(p) => &p.task_id,
            P::TaskCancelled(p) => &p.task_id,
            P::TaskResultRefused(p) => &p.task_id,
            _ => return None,
        })
    }
}

macro_rules! step_subject {
    ($($ty:ty => $step:ident),+ $(,)?) => {$(
        impl $ty {
            /// The subject of this event appended by `by`.
            pub fn subject(&self, by: &Actor) -> Subject {
                Subject::TaskStep {
                    task_id: self.task_id.clone(),
                    step: Step::$step,
                    actor: by.clone(),
                }
            }
        }
    )+};
}

step_subject!(
    Assigned => Assigned,
    Started => Started,
    Progress => Progress,
    Completed => Completed,
    Failed => Failed,
    Requeued => Requeued,
    ResultRefused => Refused,
    Cancelled => Cancelled,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_kind_has_one_step_and_back() {
        for step in Step::ALL {
            assert_eq!(Step::from_token(step.token()), Some(step));
            assert_eq!(Step::of(step.kind()), Some(step));
        }
        let task_kinds = EventKind::ALL
            .iter()
            .filter(|k| k.as_str().starts_with("task."))
            .count();
        assert_eq!(task_kinds, Step::ALL.len());
    }
}
