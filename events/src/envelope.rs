//! The envelope every event travels in.
//!
//! On the wire an event is one JSON object:
//!
//! ```json
//! {"id":"0192…","type":"task.submitted","schema_version":1,
//!  "occurred_at":"2026-11-26T10:00:00.123456Z","worker_name":"orchestrator",
//!  "container_name":null,"correlation_id":null,"causation_id":null,"payload":{…}}
//! ```
//!
//! `type` selects the payload's shape (see [`crate::catalog`]); `schema_version` lets a reader
//! refuse an event written by a newer vibehq rather than misread it.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::actor::Actor;
use crate::catalog::{EventKind, Payload};
use crate::subject::Subject;

/// The version of the envelope and payload encoding this build writes and reads.
///
/// Readers refuse events with a higher version (they may carry fields whose meaning this build
/// does not know); additive changes that old readers can ignore keep the version.
pub const SCHEMA_VERSION: u16 = 1;

/// An event's identity: a UUIDv7, so ids sort by creation time.
///
/// It doubles as the `Nats-Msg-Id` of the publish, which makes a retried append idempotent
/// within the stream's duplicate window.
pub type EventId = Uuid;

/// One recorded fact, with who recorded it and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Unique id; also the publish's `Nats-Msg-Id`.
    pub id: EventId,
    /// When the fact happened, as seen by the process that recorded it.
    pub occurred_at: OffsetDateTime,
    /// The worker that recorded the event: every row in the central schema names its worker.
    pub worker_name: String,
    /// The container within that worker, where there is one.
    pub container_name: Option<String>,
    /// The id of the first event of the flow this one belongs to (e.g. the submission of the
    /// task a completion finishes), so a whole flow can be gathered across aggregates.
    pub correlation_id: Option<EventId>,
    /// The id of the event that directly caused this one.
    pub causation_id: Option<EventId>,
    /// What happened.
    pub payload: Payload,
}

impl Envelope {
    /// A new event recorded now by `worker_name`, with a fresh UUIDv7 id.
    pub fn new(worker_name: impl Into<String>, payload: impl Into<Payload>) -> Self {
        Self {
            id: Uuid::now_v7(),
            occurred_at: OffsetDateTime::now_utc(),
            worker_name: worker_name.into(),
            container_name: None,
            correlation_id: None,
            causation_id: None,
            payload: payload.into(),
        }
    }

    /// Sets the container that recorded the event.
    pub fn in_container(mut self, container_name: impl Into<String>) -> Self {
        self.container_name = Some(container_name.into());
        self
    }

    /// Marks this event as caused by `cause`, inheriting its correlation id (or starting one at
    /// `cause` if it had none).
    pub fn caused_by(mut self, cause: &Envelope) -> Self {
        self.causation_id = Some(cause.id);
        self.correlation_id = Some(cause.correlation_id.unwrap_or(cause.id));
        self
    }

    /// The event's kind, derived from its payload.
    pub fn kind(&self) -> EventKind {
        self.payload.kind()
    }

    /// Who recorded the event.
    pub fn actor(&self) -> Actor {
        Actor::new(&self.worker_name, self.container_name.clone())
    }

    /// The subject the event is appended on (a task event's names its actor).
    pub fn subject(&self) -> Subject {
        self.payload.subject(&self.actor())
    }

    /// Encodes the event as its wire JSON.
    ///
    /// Fails only if a payload's JSON cannot be written, which none of vibehq's can; the error
    /// is passed on rather than replaced by an empty payload.
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        let wire = WireOut {
            id: self.id,
            kind: self.kind().as_str(),
            schema_version: SCHEMA_VERSION,
            occurred_at: self.occurred_at,
            worker_name: &self.worker_name,
            container_name: self.container_name.as_deref(),
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            payload: &self.payload,
        };
        serde_json::to_vec(&wire)
    }

    /// Decodes wire JSON, refusing unknown kinds, newer schema versions and malformed payloads.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let wire: WireIn<'_> = serde_json::from_slice(bytes).map_err(DecodeError::Malformed)?;
        if wire.schema_version > SCHEMA_VERSION {
            return Err(DecodeError::NewerSchema(wire.schema_version));
        }
        let kind = EventKind::from_wire(wire.kind)
            .ok_or_else(|| DecodeError::UnknownKind(wire.kind.to_owned()))?;
        let payload = Payload::decode(kind, wire.payload.get()).map_err(|source| {
            DecodeError::InvalidPayload {
                kind: kind.as_str(),
                source,
            }
        })?;
        Ok(Self {
            id: wire.id,
            occurred_at: wire.occurred_at,
            worker_name: wire.worker_name,
            container_name: wire.container_name,
            correlation_id: wire.correlation_id,
            causation_id: wire.causation_id,
            payload,
        })
    }
}

/// Why bytes on an event subject are not an event this build can apply.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or missing envelope fields.
    #[error("not an event envelope: {0}")]
    Malformed(#[source] serde_json::Error),
    /// Written by a newer vibehq whose schema this build does not know.
    #[error("schema version {0} is newer than this build's {SCHEMA_VERSION}")]
    NewerSchema(u16),
    /// A `type` this build has no payload for.
    #[error("unknown event type {0:?}")]
    UnknownKind(String),
    /// The payload does not have the shape its `type` requires.
    #[error("invalid payload for {kind}: {source}")]
    InvalidPayload {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Serialize)]
struct WireOut<'a> {
    id: Uuid,
    #[serde(rename = "type")]
    kind: &'static str,
    schema_version: u16,
    #[serde(with = "time::serde::rfc3339")]
    occurred_at: OffsetDateTime,
    worker_name: &'a str,
    container_name: Option<&'a str>,
    correlation_id: Option<Uuid>,
    causation_id: Option<Uuid>,
    payload: &'a Payload,
}

#[derive(Deserialize)]
struct WireIn<'a> {
    id: Uuid,
    #[serde(rename = "type")]
    kind: &'a str,
    schema_version: u16,
    #[serde(with = "time::serde::rfc3339")]
    occurred_at: OffsetDateTime,
    worker_name: String,
    #[serde(default)]
    container_name: Option<String>,
    #[serde(default)]
    correlation_id: Option<Uuid>,
    #[serde(default)]
    causation_id: Option<Uuid>,
    #[serde(borrow)]
    payload: &'a RawValue,
}
