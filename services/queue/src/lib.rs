//! The task queue: submit, claim, heartbeat, complete, fail, cancel, over JetStream.
//!
//! A task is an aggregate under `vibehq.tasks.<task_id>.>`; its events are the truth and
//! `container_tasks` is their projection. A submission is one append, and that append *is*
//! the pending work: it is stored on a subject naming its lane (priority band × target), and
//! each lane has a durable pull consumer on the tasks stream that containers claim from
//! ([`vibehq_events::task::lane`]). Nothing carries it anywhere else, and nothing polls
//! SQLite to hand out work.
//!
//! A claim is an append of `task.assigned` expecting the task's version (the submission's
//! sequence, for a first claim: no read needed), so two racing claimers cannot both win;
//! claims of many tasks are pipelined appends, each fenced on its own task. The claim's lease
//! is the delivery's `ack_wait`, extended by heartbeats, and every result is checked against
//! the claim holding the task now, so a claimer whose lease moved on is refused (409) and the
//! refusal recorded. What each event may do is decided in one place,
//! [`vibehq_events::task::lifecycle`], which the projector and the live feed use too.
//!
//! # Layout
//! - [`queue`]: [`Queue`], the commands; `claim` holds its claims.
//! - `lanes`: the lane consumers as this process sees them, and where work seems to wait.
//! - [`inventory`]: the lanes on the server, for operators; removing idle ones.
//! - [`history`]: a task's timeline from the stream, as the lifecycle reads it.
//! - [`ops`]: every command and query as a request, answered once for REST and RPC alike.
//! - [`http`]: the REST routes (`/api/tasks…`) and their OpenAPI document.
//! - [`schedules`]: recurring schedules' commands, and the scheduler turning firings into tasks.
//! - [`keys`]: concurrency keys and rate limits, admitting their waiting tasks.
//! - [`dependencies`]: tasks that wait for others, released or settled when those end.
//! - [`pauses`]: pausing and resuming every lane, or a worker's targeted work.
//! - [`rpc`]: `ContainerTaskQueueOps`, the same operations as a NATS micro service.
//! - [`stats`]: the work waiting per lane and the throughput per minute, for operators.
//! - [`why`]: why a pending task has not run, each reason with its evidence.
//! - [`ws`]: `GET /ws/tasks`, task events live over a WebSocket, resumable by sequence.

pub mod bodies;
mod claim;
pub mod dependencies;
mod durable;
pub mod history;
pub mod http;
pub mod inventory;
pub mod keys;
mod lanes;
pub mod ops;
pub mod pauses;
pub mod queue;
pub mod rpc;
pub mod schedules;
pub mod stats;
pub mod why;
pub mod ws;

pub use ops::QueueState;
pub use queue::{Claim, FailOutcome, NewTask, Options, Queue, Submitted};
pub use vibehq_events::Actor;
pub use vibehq_events::task::lifecycle::{Refusal, State, Task};

/// Failures of queue commands.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No task has this id.
    #[error("no task {0}")]
    NotFound(String),
    /// The task's lifecycle does not allow the command now.
    #[error("task {task_id}: {refusal}")]
    Refused {
        task_id: String,
        refusal: Box<Refusal>,
    },
    /// A result or heartbeat from a claim that does not hold the task (any more).
    #[error("task {task_id}: {reason}")]
    StaleClaim { task_id: String, reason: String },
    /// The command kept losing races for the task; sending it again is safe.
    #[error("task {task_id}: {reason}")]
    Conflict { task_id: String, reason: String },
    /// The task is pending, but not among what its lane hands out next.
    #[error(
        "task {0} is pending but not available to claim by id right now (other claims are handing out its lane); claim the next task instead, or try again"
    )]
    NotAvailable(String),
    /// An idempotency key was used before for a different task.
    #[error("idempotency key {key:?} was used for a different task, {task_id}")]
    KeyReused { task_id: String, key: String },
    /// Only a failed or cancelled task can be retried.
    #[error("task {task_id} is {state}: only a failed or cancelled task can be retried")]
    NotDead {
        task_id: String,
        state: vibehq_events::task::lifecycle::State,
    },
    /// A client-chosen task id was used before for a different task.
    #[error("task id {0} was used for a different task")]
    IdReused(String),
    /// NATS did not confirm an atomic bulk submission in time: it may or may not be stored.
    /// Sending it again with these task ids (in input order; a task with an idempotency key
    /// keeps its key) stores it at most once.
    #[error("NATS did not confirm the submission of {} tasks in time; it may or may not be stored", task_ids.len())]
    OutcomeUnknown { task_ids: Vec<String> },
    /// A bulk submission of more tasks than one atomic batch holds.
    #[error("at most {max} tasks can be submitted at once")]
    TooMany { max: usize },
    /// A task named as a dependency was never submitted.
    #[error("no task {0} to depend on")]
    UnknownDependency(String),
    /// The scope is paused already, or not paused.
    #[error("{0}")]
    PauseRefused(String),
    /// No schedule has this id.
    #[error("no schedule {0}")]
    ScheduleNotFound(String),
    /// A schedule with this id exists with another definition.
    #[error("schedule {0} exists with another definition; delete it first or choose another id")]
    ScheduleExists(String),
    /// The schedule's state does not allow the command now.
    #[error(transparent)]
    ScheduleRefused(Box<vibehq_events::recurring::Refused>),
    /// The server refused the schedule's timing.
    #[error(transparent)]
    Unarmable(vibehq_events::schedule::Unarmable),
    #[error(transparent)]
    Log(#[from] vibehq_events::Error),
    /// The projection could not be read.
    #[error(transparent)]
    Projection(#[from] vibehq_projector::Error),
    #[error("NATS failed to {op}: {source}")]
    Nats {
        op: &'static str,
        #[source]
        source: async_nats::Error,
    },
}

impl Error {
    fn nats(op: &'static str, source: impl Into<async_nats::Error>) -> Self {
        Error::Nats {
            op,
            source: source.into(),
        }
    }
}

impl From<vibehq_api::rpc::RpcError> for Error {
    fn from(error: vibehq_api::rpc::RpcError) -> Self {
        Error::Nats {
            op: error.op,
            source: error.source,
        }
    }
}
