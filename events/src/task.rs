//! Payloads of the task queue (`container_tasks`).
//!
//! A task's life is `submitted → assigned → started → completed | failed`, with `requeued`
//! returning it to pending for another attempt and `cancelled` ending it early. Who did each
//! step is the envelope's `worker_name`/`container_name`; the payloads say what.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::subject::Subject;

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
}

fn default_max_attempts() -> u32 {
    3
}

/// A container claimed the task (the claimer is the envelope's worker and container).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assigned {
    pub task_id: String,
    /// 1 for the first attempt; a result must name the attempt it belongs to.
    pub attempt: u32,
    /// How long the claim holds without a heartbeat.
    pub lease_ms: u64,
    /// The JetStream ack subject of the work message this claim holds. Acknowledging it ends
    /// the lease; `+WPI` on it extends the lease; any process may do either.
    #[serde(default)]
    pub lease: Option<String>,
    /// The work message's sequence in the work stream: a redelivery of *this* message means the
    /// lease expired; any other work message for the task is a duplicate.
    #[serde(default)]
    pub work_sequence: Option<u64>,
}

/// The claimer began running the task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Started {
    pub task_id: String,
    pub attempt: u32,
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

/// A result (completion or failure) was refused because it came from a claim that no longer
/// holds the task: its lease expired and another attempt took over, or the task ended. Kept for
/// audit; it changes no projection row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRefused {
    pub task_id: String,
    /// The attempt the refused result named.
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

macro_rules! task_subject {
    ($($ty:ty),+) => {$(
        impl $ty {
            /// The task's aggregate subject.
            pub fn subject(&self) -> Subject {
                Subject::Task(self.task_id.clone())
            }
        }
    )+};
}
impl Submitted {
    /// The submission's own subject (see [`crate::subject::SUBMISSIONS`]).
    pub fn subject(&self) -> Subject {
        Subject::Submission(self.task_id.clone())
    }
}

task_subject!(
    Assigned,
    Started,
    Completed,
    Failed,
    Requeued,
    ResultRefused,
    Cancelled
);
