//! `GET /ws/tasks`: the tasks stream, live, over a WebSocket.
//!
//! Dashboards and workers want to watch tasks move without polling the projection, and to miss
//! nothing when their connection drops. So the feed reads `VIBEHQ_TASKS` itself (the truth, in
//! stream order) with an ordered consumer, and every message carries the event's stream
//! sequence. A client that reconnects with `after_seq` set to the last sequence it saw resumes
//! at the next one: every later event that passes its filters arrives exactly once, in order.
//! Filtering happens after the read, so a filtered-out event costs a decode, never a gap.
//!
//! Events other than `task.submitted` do not carry the task's type or target worker. Each
//! connection learns them from the submissions it reads, and looks up a task it first meets
//! mid-life once, by folding its events ([`Queue::load`]); a task leaves that cache when it
//! ends, so a long-lived feed holds only the tasks still moving.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use tracing::Instrument;
use vibehq_api::error::{ApiError, ErrorBody};
use vibehq_events::{Envelope, Payload, Recorded, StreamKind, Subject};

use crate::Queue;
use crate::fsm::TaskState;
use crate::http::QueueState;

/// How long a closing socket waits for the other side's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// One WebSocket text message of `/ws/tasks`: one task event.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FeedEvent {
    /// The event's sequence in `VIBEHQ_TASKS`. Pass the last one seen as `after_seq` to resume
    /// right after it.
    pub sequence: u64,
    /// The event's wire type, e.g. `task.assigned`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub task_id: String,
    /// The status this event moves the task to (`pending`, `assigned`, `running`,
    /// `completed`, `failed` or `cancelled`); null for `task.result_refused`, which moves
    /// nothing.
    pub status: Option<&'static str>,
    /// Who recorded the event (the envelope's worker).
    pub worker_name: String,
    /// The container within that worker, where there is one.
    pub container_name: Option<String>,
    /// When the event happened (RFC 3339), as seen by whoever recorded it.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub occurred_at: OffsetDateTime,
    /// The event's payload, as stored.
    #[schema(value_type = Object)]
    pub payload: Value,
}

/// What a connection asked for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Filter {
    /// The task is targeted at this worker, or this worker recorded the event.
    worker_name: Option<String>,
    task_type: Option<String>,
    /// The event moves the task to this status.
    status: Option<TaskState>,
    /// Resume after this stream sequence.
    after_seq: Option<u64>,
}

impl Filter {
    /// Parses the query, naming the parameter at fault; unknown parameters are refused.
    fn parse(params: HashMap<String, String>) -> Result<Self, ApiError> {
        let mut filter = Filter::default();
        for (name, value) in params {
            match name.as_str() {
                "worker_name" => filter.worker_name = Some(non_empty(&name, value)?),
                "task_type" => filter.task_type = Some(non_empty(&name, value)?),
                "status" => {
                    filter.status = Some(TaskState::from_name(&value).ok_or_else(|| {
                        let allowed: Vec<_> = TaskState::ALL.iter().map(|s| s.as_str()).collect();
                        ApiError::invalid(
                            "status",
                            format!(
                                "{value:?} is not a task status; use one of {}",
                                allowed.join(", ")
                            ),
                        )
                    })?)
                }
                "after_seq" => {
                    filter.after_seq = Some(value.parse().map_err(|_| {
                        ApiError::invalid(
                            "after_seq",
                            format!("after_seq must be a non-negative integer, not {value:?}"),
                        )
                    })?)
                }
                other => {
                    return Err(ApiError::invalid(
                        other,
                        format!(
                            "{other:?} is not a parameter of /ws/tasks; use worker_name, task_type, status or after_seq"
                        ),
                    ));
                }
            }
        }
        Ok(filter)
    }

    /// Whether the filter needs the task's type or target, which only its submission carries.
    fn needs_task(&self) -> bool {
        self.worker_name.is_some() || self.task_type.is_some()
    }
}

fn non_empty(field: &str, value: String) -> Result<String, ApiError> {
    if value.is_empty() {
        Err(ApiError::invalid(
            field,
            format!("{field} must not be empty"),
        ))
    } else {
        Ok(value)
    }
}

/// Streams task events over a WebSocket, one JSON text message per event ([`FeedEvent`]).
///
/// Query parameters, all optional: `status` (only events that move a task to this status),
/// `worker_name` (only tasks targeted at this worker, or events this worker recorded),
/// `task_type` (only tasks of this type), and `after_seq`. With `after_seq=N` the feed starts
/// at stream sequence N+1, so a client that reconnects with the last `sequence` it saw gets
/// every later matching event exactly once, in order, with no gap. Without it the feed starts
/// after the last event stored when the handshake is answered: everything appended once the
/// connection is open is delivered.
///
/// Parameters are checked before the upgrade: a bad one is a 400 JSON error naming it. The
/// server closes the socket with 1011 if it cannot go on reading the stream (reconnect with
/// `after_seq`), and answers a client's close frame with its own.
#[utoipa::path(get, path = "/ws/tasks", tag = "tasks",
    params(
        ("status" = Option<String>, Query, description = "pending, assigned, running, completed, failed or cancelled: only events that move a task to this status"),
        ("worker_name" = Option<String>, Query, description = "Only tasks targeted at this worker, and events this worker recorded"),
        ("task_type" = Option<String>, Query, description = "Only tasks of this type"),
        ("after_seq" = Option<u64>, Query, description = "Start right after this tasks-stream sequence (the last `sequence` seen); default: events appended from now on"),
    ),
    responses(
        (status = 101, body = FeedEvent, description = "Switching Protocols. Then each WebSocket text message is one FeedEvent, in stream order"),
        (status = 400, body = ErrorBody, description = "A query parameter is invalid (`field` names it), or the request is not a WebSocket upgrade"),
        (status = 503, body = ErrorBody, description = "The tasks stream cannot be read"),
    ))]
pub async fn tasks(
    State(state): State<QueueState>,
    Query(params): Query<HashMap<String, String>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let filter = Filter::parse(params)?;
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::new(
            rejection.status(),
            "not_a_websocket",
            rejection.body_text(),
            None,
        )
    })?;
    let log = state.queue.log();
    // Fix the start before answering the handshake, so "from now on" includes everything
    // appended once the client sees the connection open.
    let from = match filter.after_seq {
        Some(after) => after.saturating_add(1),
        None => log
            .stream_info(StreamKind::Tasks)
            .await
            .map_err(unavailable)?
            .state
            .last_sequence
            .saturating_add(1),
    };
    let records = log
        .read(StreamKind::Tasks, None, from, u64::MAX)
        .await
        .map_err(unavailable)?;
    let span = tracing::info_span!(
        "task_feed",
        from,
        status = filter.status.map(TaskState::as_str),
        worker_name = filter.worker_name.as_deref(),
        task_type = filter.task_type.as_deref(),
    );
    let queue = state.queue.clone();
    Ok(upgrade
        .on_upgrade(move |socket| feed(socket, records, Known::new(queue), filter).instrument(span))
        .into_response())
}

fn unavailable(error: vibehq_events::Error) -> ApiError {
    tracing::error!(%error, "cannot read the tasks stream for a feed");
    ApiError::unavailable(format!("cannot read the tasks stream: {error}"))
}

/// Sends matching events until the client closes the socket or the stream cannot be read.
/// Dropping `records` on the way out stops reading NATS.
async fn feed(
    mut socket: WebSocket,
    records: impl Stream<Item = Result<Recorded, vibehq_events::Error>>,
    mut known: Known,
    filter: Filter,
) {
    tracing::debug!("feed open");
    // Boxed, not pinned on the stack, so dropping it below really stops the reader.
    let mut records = Box::pin(records);
    let mut sent = 0u64;
    let close = loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) => {
                    // Reading on lets the socket send its answering close frame.
                    let _ = tokio::time::timeout(CLOSE_WAIT, drain(&mut socket)).await;
                    tracing::debug!(sent, "feed closed by the client");
                    return;
                }
                Some(Ok(_)) => continue,
                None | Some(Err(_)) => {
                    tracing::debug!(sent, "feed's client went away");
                    return;
                }
            },
            record = records.next() => match record {
                Some(Ok(record)) => {
                    let Some(event) = known.event(&record, &filter).await else { continue };
                    let text = match serde_json::to_string(&event) {
                        Ok(text) => text,
                        Err(error) => {
                            tracing::error!(%error, sequence = record.sequence, "cannot encode a feed event");
                            continue;
                        }
                    };
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        tracing::debug!(sent, "feed's client went away");
                        return;
                    }
                    sent += 1;
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, sent, "feed stopped reading the tasks stream");
                    break CloseFrame {
                        code: close_code::ERROR,
                        reason: "the tasks stream could not be read; reconnect with after_seq".into(),
                    };
                }
                None => {
                    break CloseFrame {
                        code: close_code::NORMAL,
                        reason: "end of the tasks stream".into(),
                    };
                }
            },
        }
    };
    // Stop reading NATS before the close handshake, which may take a while.
    drop(records);
    if socket.send(Message::Close(Some(close))).await.is_ok() {
        let _ = tokio::time::timeout(CLOSE_WAIT, drain(&mut socket)).await;
    }
}

/// Reads until the socket ends (which flushes a pending close frame).
async fn drain(socket: &mut WebSocket) {
    while let Some(Ok(_)) = socket.recv().await {}
}

/// What a connection knows about the tasks it has seen: their type and target worker.
#[derive(Debug)]
struct Known {
    queue: Queue,
    /// Task id → (type, target worker); `None` when the task's events could not be found.
    tasks: HashMap<String, Option<(String, Option<String>)>>,
}

impl Known {
    fn new(queue: Queue) -> Self {
        Self {
            queue,
            tasks: HashMap::new(),
        }
    }

    /// The record as a feed event, if it is a task event that passes `filter`.
    async fn event(&mut self, record: &Recorded, filter: &Filter) -> Option<FeedEvent> {
        let event = match record.decode() {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, sequence = record.sequence, "skipping an undecodable event");
                return None;
            }
        };
        let (Subject::Task(task_id) | Subject::Submission(task_id)) = event.subject() else {
            return None;
        };
        let status = moves_to(&event.payload);
        let pass = self.passes(&task_id, &event, status, filter).await;
        if status.is_some_and(TaskState::is_terminal) {
            // An ended task moves no more; a late refused result would look it up again.
            self.tasks.remove(&task_id);
        }
        pass.then(|| FeedEvent {
            sequence: record.sequence,
            kind: event.kind().as_str(),
            task_id,
            status: status.map(TaskState::as_str),
            worker_name: event.worker_name,
            container_name: event.container_name,
            occurred_at: event.occurred_at,
            payload: serde_json::to_value(&event.payload).unwrap_or(Value::Null),
        })
    }

    async fn passes(
        &mut self,
        task_id: &str,
        event: &Envelope,
        status: Option<TaskState>,
        filter: &Filter,
    ) -> bool {
        // Learn from every submission, even one the status filter drops: the task's later
        // events need its type and target.
        if filter.needs_task()
            && let Payload::TaskSubmitted(submitted) = &event.payload
        {
            self.tasks.insert(
                task_id.to_owned(),
                Some((submitted.task_type.clone(), submitted.worker_name.clone())),
            );
        }
        if filter.status.is_some() && status != filter.status {
            return false;
        }
        if !filter.needs_task() {
            return true;
        }
        let by_actor = filter.worker_name.as_deref() == Some(event.worker_name.as_str());
        if by_actor && filter.task_type.is_none() {
            return true;
        }
        let Some((task_type, target)) = self.lookup(task_id).await else {
            return false;
        };
        let type_ok = filter.task_type.as_ref().is_none_or(|t| t == task_type);
        let worker_ok = by_actor || filter.worker_name.is_none() || filter.worker_name == *target;
        type_ok && worker_ok
    }

    /// The task's type and target, from the cache or (once) from its events.
    async fn lookup(&mut self, task_id: &str) -> Option<&(String, Option<String>)> {
        if !self.tasks.contains_key(task_id) {
            match self.queue.load(task_id).await {
                Ok(task) => {
                    let known = task.map(|t| (t.submitted.task_type, t.submitted.worker_name));
                    self.tasks.insert(task_id.to_owned(), known);
                }
                Err(error) => {
                    // Not cached: the task's next event tries again.
                    tracing::warn!(%error, task_id, "cannot load a task to filter the feed");
                    return None;
                }
            }
        }
        self.tasks.get(task_id).and_then(Option::as_ref)
    }
}

/// The status an event moves its task to; `None` for events that move nothing.
fn moves_to(payload: &Payload) -> Option<TaskState> {
    match payload {
        Payload::TaskSubmitted(_) | Payload::TaskRequeued(_) => Some(TaskState::Pending),
        Payload::TaskAssigned(_) => Some(TaskState::Assigned),
        Payload::TaskStarted(_) => Some(TaskState::Running),
        Payload::TaskCompleted(_) => Some(TaskState::Completed),
        Payload::TaskFailed(_) => Some(TaskState::Failed),
        Payload::TaskCancelled(_) => Some(TaskState::Cancelled),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_query_is_parsed_into_a_filter() {
        let filter = Filter::parse(params(&[
            ("status", "completed"),
            ("worker_name", "w1"),
            ("task_type", "deploy"),
            ("after_seq", "41"),
        ]))
        .expect("valid");
        assert_eq!(
            filter,
            Filter {
                worker_name: Some("w1".into()),
                task_type: Some("deploy".into()),
                status: Some(TaskState::Completed),
                after_seq: Some(41),
            }
        );
        assert_eq!(
            Filter::parse(HashMap::new()).expect("empty"),
            Filter::default()
        );
    }

    #[test]
    fn a_bad_parameter_is_a_400_naming_it() {
        for (name, value) in [
            ("status", "bogus"),
            ("after_seq", "-1"),
            ("after_seq", "x"),
            ("worker_name", ""),
            ("colour", "red"),
        ] {
            let error = Filter::parse(params(&[(name, value)])).expect_err("refused");
            assert_eq!(error.status.as_u16(), 400, "{name}={value}");
            assert_eq!(error.detail.field.as_deref(), Some(name), "{name}={value}");
        }
    }

    #[test]
    fn every_event_but_a_refused_result_moves_its_task_to_a_status() {
        use vibehq_events::task;
        let id = || "t".to_owned();
        let cases: Vec<(Payload, Option<TaskState>)> = vec![
            (
                task::Submitted {
                    task_id: id(),
                    task_type: "x".into(),
                    command: "c".into(),
                    parameters: None,
                    priority: 0,
                    worker_name: None,
                    container_name: None,
                    max_attempts: 1,
                    idempotency_key: None,
                }
                .into(),
                Some(TaskState::Pending),
            ),
            (
                task::Assigned {
                    task_id: id(),
                    attempt: 1,
                    lease_ms: 1,
                    lease: None,
                    work_sequence: None,
                }
                .into(),
                Some(TaskState::Assigned),
            ),
            (
                task::Started {
                    task_id: id(),
                    attempt: 1,
                }
                .into(),
                Some(TaskState::Running),
            ),
            (
                task::Completed {
                    task_id: id(),
                    attempt: 1,
                    output: None,
                }
                .into(),
                Some(TaskState::Completed),
            ),
            (
                task::Failed {
                    task_id: id(),
                    attempt: 1,
                    error: "e".into(),
                }
                .into(),
                Some(TaskState::Failed),
            ),
            (
                task::Requeued {
                    task_id: id(),
                    attempt: 1,
                    reason: "r".into(),
                    backoff_ms: 0,
                }
                .into(),
                Some(TaskState::Pending),
            ),
            (
                task::Cancelled {
                    task_id: id(),
                    reason: None,
                }
                .into(),
                Some(TaskState::Cancelled),
            ),
            (
                task::ResultRefused {
                    task_id: id(),
                    attempt: 1,
                    outcome: "completed".into(),
                    reason: "r".into(),
                }
                .into(),
                None,
            ),
        ];
        for (payload, status) in cases {
            assert_eq!(moves_to(&payload), status, "{}", payload.kind());
        }
    }
}
