//! [`EventLog`]: appending events to JetStream and reading them back.
//!
//! Appends wait for JetStream's ack, so an `Ok` means the event is stored (replicated, on a
//! cluster). Every append carries the event id as `Nats-Msg-Id`: a retry after a lost ack is
//! stored once and answered with the first append's sequence.

use std::time::Duration;

use async_nats::jetstream::{
    self, consumer, context::PublishErrorKind, message::PublishMessage, stream,
};
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use time::OffsetDateTime;

use crate::envelope::{DecodeError, Envelope};
use crate::stream::StreamKind;
use crate::subject::{InvalidToken, Subject};

/// The header carrying the event's wire kind, so outside clients can filter without parsing.
pub const KIND_HEADER: &str = "Vibehq-Event";

/// Most publishes [`EventLog::append_all`] keeps in flight; below async-nats's 5,000 ack
/// permits, and enough to keep a loopback or LAN round trip busy.
pub const PIPELINE: usize = 2048;

/// What an append expects of its aggregate's current version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Append unconditionally.
    Any,
    /// The aggregate must have no events yet (creation).
    New,
    /// The aggregate's last event must be at this stream sequence.
    Version(u64),
}

/// Where an appended event was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub stream: StreamKind,
    /// The event's stream sequence: the aggregate's new version.
    pub sequence: u64,
    /// True when JetStream had already stored an event with this id (a retried append).
    pub duplicate: bool,
}

/// An event as stored in a stream, not yet decoded.
///
/// Decoding is separate so a reader can record what it cannot decode instead of losing it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub stream: StreamKind,
    pub sequence: u64,
    pub subject: String,
    /// When JetStream stored the event.
    pub published: OffsetDateTime,
    pub payload: Bytes,
}

impl Recorded {
    /// Builds a record from a delivered JetStream message.
    pub fn from_message(stream: StreamKind, message: &jetstream::Message) -> Result<Self, Error> {
        let info = message.info().map_err(|source| Error::Nats {
            op: "read message metadata",
            source,
        })?;
        Ok(Self {
            stream,
            sequence: info.stream_sequence,
            subject: message.subject.to_string(),
            published: info.published,
            payload: message.payload.clone(),
        })
    }

    /// Decodes the stored bytes.
    pub fn decode(&self) -> Result<Envelope, DecodeError> {
        Envelope::decode(&self.payload)
    }
}

/// Failures of the event log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The event's aggregate id cannot be a subject token.
    #[error(transparent)]
    InvalidSubject(#[from] InvalidToken),
    /// Another event was appended to the aggregate since the version the command read.
    #[error("{subject} changed since version {expected:?}")]
    Conflict { subject: String, expected: Expect },
    /// JetStream has no stream for the subject: run `vibehq up` (or `ensure_streams`) first.
    #[error("no stream captures {subject}; the streams are created by `vibehq up`")]
    NoStream { subject: String },
    /// The server did not acknowledge in time; the append may or may not be stored, and is
    /// safe to retry with the same event (same id).
    #[error("no acknowledgement from JetStream for {subject} in time; retry with the same event")]
    Timeout { subject: String },
    /// Any other NATS failure, with the operation it interrupted.
    #[error("NATS failed to {op}: {source}")]
    Nats {
        op: &'static str,
        #[source]
        source: async_nats::Error,
    },
}

fn nats(op: &'static str) -> impl FnOnce(async_nats::Error) -> Error {
    move |source| Error::Nats { op, source }
}

/// Appends events to, and reads them from, vibehq's streams.
///
/// Cheap to clone: clones share one NATS connection.
#[derive(Debug, Clone)]
pub struct EventLog {
    js: jetstream::Context,
}

impl EventLog {
    /// A log over the JetStream of `client`.
    pub fn new(client: async_nats::Client) -> Self {
        let mut js = jetstream::new(client);
        js.set_timeout(Duration::from_secs(10));
        Self { js }
    }

    /// The underlying JetStream context, for consumers built elsewhere.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Creates the streams, or updates their configuration; safe to call on every start.
    ///
    /// Replication is never lowered: a process started with fewer `replicas` than a stream
    /// already has keeps the stream's copies (and logs that it did), so one misconfigured
    /// member cannot quietly strip a cluster's redundancy.
    pub async fn ensure_streams(&self, replicas: usize) -> Result<Vec<stream::Info>, Error> {
        let mut infos = Vec::with_capacity(StreamKind::ALL.len());
        for kind in StreamKind::ALL {
            let existing = match self.js.get_stream(kind.name()).await {
                Ok(mut stream) => stream.info().await.ok().map(|i| i.config.num_replicas),
                Err(_) => None,
            };
            let mut wanted = replicas;
            if let Some(current) = existing
                && current > replicas
            {
                tracing::warn!(
                    stream = kind.name(),
                    current,
                    requested = replicas,
                    "keeping the stream's replicas; lower them with the nats CLI if you mean it"
                );
                wanted = current;
            }
            let info = self
                .js
                .create_or_update_stream(kind.config(wanted))
                .await
                .map_err(|e| nats("create or update a stream")(e.into()))?;
            infos.push(info);
        }
        Ok(infos)
    }

    /// The current state of one stream.
    pub async fn stream_info(&self, kind: StreamKind) -> Result<stream::Info, Error> {
        let mut stream = self
            .js
            .get_stream(kind.name())
            .await
            .map_err(|e| nats("look up a stream")(e.into()))?;
        stream
            .info()
            .await
            .cloned()
            .map_err(|e| nats("read stream info")(e.into()))
    }

    /// Appends one event and waits until JetStream has stored it.
    ///
    /// With [`Expect::New`] or [`Expect::Version`] the append is refused with
    /// [`Error::Conflict`] if the aggregate has moved on: the caller re-reads and decides again.
    pub async fn append(&self, event: &Envelope, expect: Expect) -> Result<Appended, Error> {
        let subject = event.subject();
        let ack = self.send(event, &subject, expect).await?;
        finish(ack.await, &subject, expect)
    }

    /// Appends many events, pipelining the publishes, and waits for every acknowledgement.
    ///
    /// Up to [`PIPELINE`] publishes are in flight at once (more would exhaust the client's ack
    /// permits and stall). Order within one aggregate is preserved; results are in input order.
    /// This is the fast path for bulk producers.
    pub async fn append_all(&self, events: &[Envelope]) -> Result<Vec<Appended>, Error> {
        let mut in_flight = std::collections::VecDeque::with_capacity(PIPELINE);
        let mut appended = Vec::with_capacity(events.len());
        for event in events {
            if in_flight.len() == PIPELINE
                && let Some((subject, ack)) = in_flight.pop_front()
            {
                appended.push(finish(ack.await, &subject, Expect::Any)?);
            }
            let subject = event.subject();
            let ack = self.send(event, &subject, Expect::Any).await?;
            in_flight.push_back((subject, ack));
        }
        for (subject, ack) in in_flight {
            appended.push(finish(ack.await, &subject, Expect::Any)?);
        }
        Ok(appended)
    }

    async fn send(
        &self,
        event: &Envelope,
        subject: &Subject,
        expect: Expect,
    ) -> Result<jetstream::context::PublishAckFuture, Error> {
        subject.validate()?;
        let mut publish = PublishMessage::build()
            .payload(event.encode().into())
            .message_id(event.id.to_string())
            .header(KIND_HEADER, event.kind().as_str());
        match expect {
            Expect::Any => {}
            Expect::New => publish = publish.expected_last_subject_sequence(0),
            Expect::Version(v) => publish = publish.expected_last_subject_sequence(v),
        }
        self.js
            .send_publish(subject.to_string(), publish)
            .await
            .map_err(|e| publish_error(e, subject, expect))
    }

    /// The full history of one aggregate, oldest first, read from its stream (a task's from
    /// both of its subjects, see [`Subject::history`]).
    pub async fn history(&self, subject: &Subject) -> Result<Vec<Recorded>, Error> {
        subject.validate()?;
        let kind = subject.stream();
        let stream = self
            .js
            .get_stream(kind.name())
            .await
            .map_err(|e| nats("look up a stream")(e.into()))?;
        let mut history = Vec::new();
        for subject in subject.history() {
            let subject_name = subject.to_string();
            let last = match stream.get_last_raw_message_by_subject(&subject_name).await {
                Ok(message) => message.sequence,
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => continue,
                Err(e) => return Err(nats("find an aggregate's last event")(e.into())),
            };
            let records: Vec<Recorded> = self
                .read(kind, Some(subject_name), 1, last)
                .await?
                .try_collect()
                .await?;
            history.extend(records);
        }
        history.sort_by_key(|record| record.sequence);
        Ok(history)
    }

    /// Reads `stream` from sequence `from` through `until` (inclusive), in order; with
    /// `until == u64::MAX` it follows the stream live and never ends by itself.
    ///
    /// `filter` narrows the read to one subject (or wildcard). The read uses an ordered
    /// consumer: no state is left on the server, and a gap is healed by the client.
    pub async fn read(
        &self,
        kind: StreamKind,
        filter: Option<String>,
        from: u64,
        until: u64,
    ) -> Result<impl Stream<Item = Result<Recorded, Error>> + Send + 'static + use<>, Error> {
        let stream = self
            .js
            .get_stream(kind.name())
            .await
            .map_err(|e| nats("look up a stream")(e.into()))?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: filter.unwrap_or_default(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from.max(1),
                },
                ..Default::default()
            })
            .await
            .map_err(|e| nats("create a reader")(e.into()))?;
        // A bounded read (`until` below `u64::MAX`) ends when nothing is left to deliver, even if
        // the event at `until` itself was deleted; an unbounded one follows the stream live.
        let bounded = until != u64::MAX;
        let empty = bounded && consumer.cached_info().num_pending == 0;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| nats("start reading")(e.into()))?;
        // Stop right after the last wanted event without polling again: the ordered consumer
        // would wait for events that do not exist yet.
        let state = (messages, from > until || empty);
        let records = futures::stream::unfold(state, move |(mut messages, done)| async move {
            if done {
                return None;
            }
            let message = match messages.next().await? {
                Ok(message) => message,
                Err(e) => return Some((Err(nats("read a message")(e.into())), (messages, true))),
            };
            let record = Recorded::from_message(kind, &message);
            if record.as_ref().is_ok_and(|r| r.sequence > until) {
                return None;
            }
            let drained = bounded && message.info().is_ok_and(|i| i.pending == 0);
            let done = drained || record.as_ref().map_or(true, |r| r.sequence >= until);
            Some((record, (messages, done)))
        });
        Ok(records)
    }
}

fn publish_error(
    error: jetstream::context::PublishError,
    subject: &Subject,
    expect: Expect,
) -> Error {
    let subject = subject.to_string();
    match error.kind() {
        PublishErrorKind::WrongLastSequence => Error::Conflict {
            subject,
            expected: expect,
        },
        PublishErrorKind::StreamNotFound => Error::NoStream { subject },
        PublishErrorKind::TimedOut => Error::Timeout { subject },
        _ => Error::Nats {
            op: "append an event",
            source: error.into(),
        },
    }
}

fn finish(
    ack: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
    subject: &Subject,
    expect: Expect,
) -> Result<Appended, Error> {
    let ack = ack.map_err(|e| publish_error(e, subject, expect))?;
    let stream = StreamKind::from_name(&ack.stream).ok_or_else(|| Error::NoStream {
        subject: subject.to_string(),
    })?;
    Ok(Appended {
        stream,
        sequence: ack.sequence,
        duplicate: ack.duplicate,
    })
}
