//! A task's timeline: every event stored under it, oldest first, each with what the lifecycle
//! made of it. What `vibehq audit task` prints, `GET /api/tasks/{id}/history` answers and the
//! dashboard draws.

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use vibehq_events::task::lifecycle;
use vibehq_events::{Recorded, StreamKind, Subject};

use crate::{Error, Queue};

/// One stored event of a task.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Entry {
    /// Its sequence in `VIBEHQ_TASKS`.
    pub sequence: u64,
    pub subject: String,
    /// When JetStream stored it.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub stored_at: OffsetDateTime,
    /// `task.submitted`, `task.assigned`, …; absent when the message is not a readable event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Who appended it (`worker:container`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The whole event envelope as stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub event: Option<Value>,
    /// The task's status after it, when the lifecycle applied it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Why the lifecycle refused it (it changed nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Why the message could not be read as an event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undecodable: Option<String>,
}

/// Folds `history` (one task's stored events, oldest first) as the lifecycle folds it.
pub fn entries(history: &[Recorded]) -> Vec<Entry> {
    let mut task = None;
    history
        .iter()
        .map(|record| {
            let folded =
                lifecycle::Task::fold(&mut task, &record.subject, &record.payload, record.sequence);
            let mut entry = Entry {
                sequence: record.sequence,
                subject: record.subject.clone(),
                stored_at: record.published,
                kind: None,
                actor: None,
                event: None,
                status: None,
                refused: None,
                undecodable: None,
            };
            match record.decode() {
                Ok(event) => {
                    entry.kind = Some(event.kind().as_str().to_owned());
                    entry.actor = Some(event.actor().label());
                    entry.event = serde_json::from_slice(&record.payload).ok();
                }
                Err(error) => entry.undecodable = Some(error.to_string()),
            }
            match folded {
                Ok(()) => {
                    entry.status = task.as_ref().map(|t| t.status.state.as_str().to_owned());
                }
                Err(refusal) => entry.refused = Some(refusal.to_string()),
            }
            entry
        })
        .collect()
}

impl Queue {
    /// The timeline of `task_id`, from the stream (not the projection); `NotFound` if nothing
    /// was ever stored under it.
    pub async fn history(&self, task_id: &str) -> Result<Vec<Entry>, Error> {
        let history = self
            .inner
            .log
            .history_of(StreamKind::Tasks, &Subject::task(task_id), u64::MAX)
            .await?;
        if history.is_empty() {
            return Err(Error::NotFound(task_id.to_owned()));
        }
        Ok(entries(&history))
    }
}
