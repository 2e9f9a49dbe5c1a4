//! `GET /ws/tasks`: the tasks stream, live, over a WebSocket.
//!
//! Dashboards and workers want to watch tasks move without polling the projection, and to miss
//! nothing when their connection drops. So the feed reads `VIBEHQ_TASKS` itself (the truth, in
//! stream order) with an ordered consumer, and every message carries the event's stream
//! sequence. A client that reconnects with `after_seq` set to the last sequence it saw resumes
//! at the next one: every later event that passes its filters arrives exactly once, in order.
//! Filtering happens after the read, so a filtered-out event costs a decode, never a gap.
//!
//! What an event does to its task is the lifecycle's to say ([`Task::apply`]), as it is for the
//! projector: each message names the status its event moves the task to, and an event the
//! lifecycle refuses (a forged result, a step for a task never submitted) is sent as refused,
//! never as a change. So each connection folds the tasks it sees: it learns a task from its
//! submission, and one it first meets mid-life from the task's events before that point
//! ([`Queue::load_until`]); a task leaves the connection's view when it ends, so a long-lived
//! feed holds only the tasks still moving.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use tracing::Instrument;
use vibehq_api::error::{ApiError, ErrorBody};
use vibehq_api::params::Params;
use vibehq_events::task::lifecycle::{self, State as TaskState, Task};
use vibehq_events::{Envelope, Payload, Recorded, StreamKind};

use crate::Queue;
use crate::ops::QueueState;

/// How long a closing socket waits for the other side's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// One WebSocket text message of `/ws/tasks`: one task event.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FeedEvent {
    /// The event's sequence in `VIBEHQ_TASKS`. Pass the last one seen as `after_seq` to resume
    /// right after it.
    pub sequence: u64,
    /// The event's wire type, e.g. `task.assigned`; `queue.paused` and `queue.resumed` (a
    /// scope of work paused or resumed, in `payload.scope`) have an empty `task_id`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub task_id: String,
    /// The status this event moves the task to (`pending`, `assigned`, `running`,
    /// `completed`, `failed` or `cancelled`); null for an event that moves nothing: a
    /// `task.result_refused`, or an event the task's lifecycle refuses (see `refused`).
    pub status: Option<&'static str>,
    /// Why the task's lifecycle refuses this event (it changed nothing), e.g. "w2:c1 does not
    /// hold the task; w1:c1 does"; absent for events that apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
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
        ("worker_name" = Option<String>, Query, min_length = 1, description = "Only tasks targeted at this worker, and events this worker recorded"),
        ("task_type" = Option<String>, Query, min_length = 1, description = "Only tasks of this type"),
        ("after_seq" = Option<u64>, Query, description = "Start right after this tasks-stream sequence (the last `sequence` seen); default: events appended from now on"),
    ),
    responses(
        (status = 101, body = FeedEvent, description = "Switching Protocols. Then each WebSocket text message is one FeedEvent, in stream order"),
        (status = 400, body = ErrorBody, description = "A query parameter is invalid (`field` names it), or the request is not a WebSocket upgrade"),
        (status = 503, body = ErrorBody, description = "The tasks stream cannot be read"),
    ))]
pub async fn tasks(
    State(state): State<QueueState>,
    Params(params): Params,
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

/// The tasks a connection has seen, folded as the lifecycle folds them.
#[derive(Debug)]
struct Known {
    queue: Queue,
    /// Task id → the task as of the last event the feed read (`None`: its events could not
    /// be found, e.g. it was never submitted).
    tasks: HashMap<String, Option<Task>>,
}

/// Most tasks a connection keeps in view before it starts over (each is read again once).
const KNOWN_TASKS: usize = 10_000;

impl Known {
    fn new(queue: Queue) -> Self {
        Self {
            queue,
            tasks: HashMap::new(),
        }
    }

    /// The record as a feed event, if it is a task event that passes `filter`.
    async fn event(&mut self, record: &Recorded, filter: &Filter) -> Option<FeedEvent> {
        let envelope = match record.decode() {
            Ok(envelope) => envelope,
            Err(error) => {
                tracing::debug!(%error, sequence = record.sequence, "skipping an undecodable message");
                return None;
            }
        };
        if let Payload::QueuePaused(vibehq_events::pause::Paused { scope, .. })
        | Payload::QueueResumed(vibehq_events::pause::Resumed { scope }) = &envelope.payload
        {
            return pause_passes(filter, scope).then(|| FeedEvent {
                sequence: record.sequence,
                kind: envelope.kind().as_str(),
                task_id: String::new(),
                status: None,
                refused: None,
                worker_name: envelope.worker_name.clone(),
                container_name: envelope.container_name.clone(),
                occurred_at: envelope.occurred_at,
                payload: serde_json::to_value(&envelope.payload).unwrap_or(Value::Null),
            });
        }
        let checked = lifecycle::read(&record.subject, &envelope)?;
        let task_id = envelope.payload.task_id().unwrap_or_default().to_owned();
        let outcome = match checked {
            Ok(origin) => {
                let task = self.before(&origin.task_id, record.sequence).await;
                Task::apply(task, &origin, &envelope, record.sequence).map(|()| {
                    let moves = !matches!(envelope.payload, Payload::TaskResultRefused(_));
                    task.as_ref().filter(|_| moves).map(|t| t.status.state)
                })
            }
            Err(refusal) => Err(refusal),
        };
        let (status, refused) = match outcome {
            Ok(status) => (status, None),
            Err(refusal) => (None, Some(refusal.to_string())),
        };
        let view = self.tasks.get(&task_id).and_then(Option::as_ref);
        let pass = passes(filter, &envelope, view, status);
        if status.is_some_and(TaskState::is_terminal) {
            // An ended task moves no more; a late event looks it up again.
            self.tasks.remove(&task_id);
        }
        pass.then(|| FeedEvent {
            sequence: record.sequence,
            kind: envelope.kind().as_str(),
            task_id,
            status: status.map(TaskState::as_str),
            refused,
            worker_name: envelope.worker_name,
            container_name: envelope.container_name,
            occurred_at: envelope.occurred_at,
            payload: serde_json::to_value(&envelope.payload).unwrap_or(Value::Null),
        })
    }

    /// The task as it was just before `sequence`: from this connection's view, or (the first
    /// time the feed meets it) from its events.
    async fn before(&mut self, task_id: &str, sequence: u64) -> &mut Option<Task> {
        if !self.tasks.contains_key(task_id) {
            if self.tasks.len() >= KNOWN_TASKS {
                self.tasks.clear();
            }
            let task = match self
                .queue
                .load_until(task_id, sequence.saturating_sub(1))
                .await
            {
                Ok(task) => task,
                Err(error) => {
                    tracing::warn!(%error, task_id, "cannot read a task for the feed");
                    None
                }
            };
            self.tasks.insert(task_id.to_owned(), task);
        }
        self.tasks.entry(task_id.to_owned()).or_default()
    }
}

/// Whether a pause or resumption passes the connection's filter: one that names no status or
/// type, and no worker or the paused scope's.
fn pause_passes(filter: &Filter, scope: &str) -> bool {
    let worker_ok = filter.worker_name.as_ref().is_none_or(|w| {
        vibehq_events::pause::Scope::parse(scope)
            .is_ok_and(|s| s.worker().is_none_or(|paused| paused == w))
    });
    filter.status.is_none() && filter.task_type.is_none() && worker_ok
}

/// Whether an event passes the connection's filter: `status` is what it moves its task to;
/// `task` the task after it.
fn passes(
    filter: &Filter,
    event: &Envelope,
    task: Option<&Task>,
    status: Option<TaskState>,
) -> bool {
    if filter.status.is_some() && status != filter.status {
        return false;
    }
    let type_ok = filter
        .task_type
        .as_ref()
        .is_none_or(|t| task.is_some_and(|task| task.submitted.task_type == *t));
    let worker_ok = filter.worker_name.as_ref().is_none_or(|w| {
        *w == event.worker_name
            || task.is_some_and(|task| task.submitted.worker_name.as_ref() == Some(w))
    });
    type_ok && worker_ok
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
}
