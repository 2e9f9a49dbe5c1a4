//! The task queue: submit, claim, heartbeat, complete, fail, cancel, over JetStream.
//!
//! A task is an aggregate on `vibehq.tasks.<task_id>` (its submission on
//! `vibehq.tasks.submitted.<task_id>`); its events are the truth and `container_tasks` is their
//! projection. Pending work lives in a separate work-queue stream
//! that containers pull from with durable consumers, one per priority band and target
//! (see [`vibehq_events::work`]): nothing polls SQLite to hand out work. A claim is an append
//! of `task.assigned` expecting the task's current version, so two racing claimers cannot both
//! win; the claim's lease is the work message's `ack_wait`, extended by heartbeats; and every
//! result names its attempt, so a claimer whose lease has moved on is refused (409) and the
//! refusal is recorded.
//!
//! # Layout
//! - [`fsm`]: a generic finite-state machine and the task machine.
//! - [`aggregate`]: a task's current state, folded from its events.
//! - [`queue`]: [`Queue`], the commands.
//! - `board`: where work is waiting, as this process sees it, and the work consumers.
//! - [`dispatch`]: carries submitted tasks into the work stream.
//! - [`http`]: the REST API (`/api/tasks…`).
//! - [`ws`]: `GET /ws/tasks`, task events live over a WebSocket, resumable by stream sequence.
//! - [`rpc`]: `ContainerTaskQueueOps`, the commands as a NATS micro service.
//! - `body`: request bodies, parsed and validated once for REST and RPC alike.

pub mod aggregate;
mod board;
mod body;
pub mod dispatch;
pub mod fsm;
pub mod http;
pub mod queue;
pub mod rpc;
pub mod ws;

pub use queue::{Actor, Claim, FailOutcome, NewTask, Options, Queue, Submitted};

/// Failures of queue commands.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No task has this id.
    #[error("no task {0}")]
    NotFound(String),
    /// The command does not apply to the task as it is now (or lost a race).
    #[error("task {task_id}: {reason}")]
    Conflict { task_id: String, reason: String },
    /// A result or heartbeat from a claim that no longer holds the task.
    #[error("task {task_id}: {reason}")]
    StaleClaim { task_id: String, reason: String },
    /// A stored event of the task cannot be decoded.
    #[error("task {task_id} has an undecodable event at sequence {sequence}: {source}")]
    Corrupt {
        task_id: String,
        sequence: u64,
        #[source]
        source: vibehq_events::DecodeError,
    },
    #[error(transparent)]
    Log(#[from] vibehq_events::Error),
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
