//! A task's current state, folded from its events in the stream.
//!
//! Commands decide on this, never on the projection (which may lag): the fold reads the
//! task's submission and its later events with direct gets, and its `version` is the stream
//! sequence of the last event on the task's subject, which the command's append then expects.

use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use vibehq_events::{Envelope, Payload, Subject, task};

use crate::Error;
use crate::fsm::TaskState;

/// A task as its events say it is now.
#[derive(Debug, Clone)]
pub struct Task {
    /// What was submitted (never changes).
    pub submitted: task::Submitted,
    /// Who submitted it.
    pub submitted_by: String,
    pub state: TaskState,
    /// The current (or last) attempt; 0 before the first claim.
    pub attempt: u32,
    /// The work message's ack subject while a claim holds the task.
    pub lease: Option<String>,
    /// The work-stream sequence of the message the current claim holds.
    pub work_sequence: Option<u64>,
    /// `worker:container` of the claim holding (or last holding) the task.
    pub assigned_to: Option<String>,
    /// The last error or requeue reason.
    pub error: Option<String>,
    /// The stream sequence of the task's last event on `vibehq.tasks.<id>`; 0 while it has
    /// none (only its submission, which has its own subject).
    pub version: u64,
}

impl Task {
    /// A task just submitted: pending, no attempt yet, at `version` (0, unless the submission
    /// was stored on the task's subject, as vibehq did before submissions had their own).
    pub fn pending(submitted: task::Submitted, submitted_by: String, version: u64) -> Self {
        Task {
            submitted,
            submitted_by,
            state: TaskState::Pending,
            attempt: 0,
            lease: None,
            work_sequence: None,
            assigned_to: None,
            error: None,
            version,
        }
    }
}

/// Loads task `task_id` from the tasks stream; `None` if it was never submitted.
///
/// `known` is an earlier state of the same task (from a cache): only the events after its
/// version are read, so a task this process has just handled costs one request.
pub async fn load(
    stream: &Stream,
    task_id: &str,
    known: Option<Task>,
) -> Result<Option<Task>, Error> {
    let subject = Subject::Task(task_id.to_owned()).to_string();
    let last = match stream.direct_get_last_for_subject(subject.as_str()).await {
        Ok(message) => message.sequence,
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => 0,
        Err(e) => return Err(Error::nats("read a task's last event", e)),
    };
    let mut task = match known.filter(|t| t.version <= last) {
        Some(known) if known.version == last => return Ok(Some(known)),
        Some(known) => Some(known),
        None => submission(stream, task_id).await?,
    };
    let mut next = (last > 0).then(|| task.as_ref().map_or(1, |t| t.version + 1));
    while let Some(from) = next {
        let message = stream
            .direct_get_next_for_subject(subject.as_str(), Some(from))
            .await
            .map_err(|e| Error::nats("read a task's events", e))?;
        let event = decode(task_id, message.sequence, &message.payload)?;
        fold(&mut task, &event, message.sequence);
        next = (message.sequence < last).then_some(message.sequence + 1);
    }
    Ok(task)
}

/// The task as submitted, from its submission's subject; `None` if there is none there (never
/// submitted, or submitted on the task's own subject by an older vibehq, which the fold reads).
async fn submission(stream: &Stream, task_id: &str) -> Result<Option<Task>, Error> {
    let subject = Subject::Submission(task_id.to_owned()).to_string();
    let message = match stream.direct_get_last_for_subject(subject.as_str()).await {
        Ok(message) => message,
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::nats("read a task's submission", e)),
    };
    let event = decode(task_id, message.sequence, &message.payload)?;
    Ok(match event.payload {
        Payload::TaskSubmitted(submitted) => Some(Task::pending(submitted, event.worker_name, 0)),
        _ => None,
    })
}

fn decode(task_id: &str, sequence: u64, payload: &[u8]) -> Result<Envelope, Error> {
    Envelope::decode(payload).map_err(|source| Error::Corrupt {
        task_id: task_id.to_owned(),
        sequence,
        source,
    })
}

/// Applies one event of the task's subject (at stream `sequence`) to the task's state.
pub(crate) fn fold(task: &mut Option<Task>, event: &Envelope, sequence: u64) {
    if let Payload::TaskSubmitted(submitted) = &event.payload {
        if task.is_none() {
            *task = Some(Task::pending(
                submitted.clone(),
                event.worker_name.clone(),
                sequence,
            ));
        }
        return;
    }
    let Some(task) = task else { return };
    task.version = sequence;
    match &event.payload {
        Payload::TaskAssigned(p) => {
            task.state = TaskState::Assigned;
            task.attempt = p.attempt;
            task.lease = p.lease.clone();
            task.work_sequence = p.work_sequence;
            task.assigned_to = Some(match &event.container_name {
                Some(c) => format!("{}:{c}", event.worker_name),
                None => event.worker_name.clone(),
            });
        }
        Payload::TaskStarted(_) => task.state = TaskState::Running,
        Payload::TaskCompleted(_) => {
            task.state = TaskState::Completed;
            task.lease = None;
        }
        Payload::TaskFailed(p) => {
            task.state = TaskState::Failed;
            task.error = Some(p.error.clone());
            task.lease = None;
        }
        Payload::TaskRequeued(p) => {
            task.state = TaskState::Pending;
            task.attempt = p.attempt;
            task.error = Some(p.reason.clone());
            task.lease = None;
        }
        Payload::TaskCancelled(_) => {
            task.state = TaskState::Cancelled;
        }
        _ => {}
    }
}
