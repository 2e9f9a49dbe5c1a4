//! [`EventLog`]: appending events to JetStream and reading them back.
//!
//! Appends wait for JetStream's ack, so an `Ok` means the event is stored (replicated, on a
//! cluster). Every append carries the event id as `Nats-Msg-Id`: a retried append is stored
//! once. An append may expect its aggregate's version ([`Expect`]); the version is the last
//! sequence under the aggregate's filter ([`Subject::version`]), checked by the server with
//! `Nats-Expected-Last-Subject-Sequence(-Subject)`, so two racing commands cannot both win.
//!
//! Three ways to append, for three needs:
//! - [`EventLog::append`]: one event, awaited;
//! - [`EventLog::append_many`]: many events pipelined, each with its own expectation and its
//!   own outcome, so one stale event costs the others nothing (claims, results);
//! - [`EventLog::append_atomic`]: an atomic batch, stored all or nothing (bulk submission).
//!   It costs milliseconds per batch (`notes-jetstream.md`), so it stays off the hot path.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{
    self, consumer, context::PublishErrorKind, message::PublishMessage, stream,
};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::catalog::Payload;
use crate::envelope::{DecodeError, Envelope};
use crate::stream::StreamKind;
use crate::subject::{InvalidToken, Subject};

/// The header carrying the event's wire kind, so outside clients can filter without parsing.
pub const KIND_HEADER: &str = "Vibehq-Event";

/// The header naming the filter an expected sequence is checked against (nats-server 2.11+).
const EXPECTED_SUBJECT: &str = "Nats-Expected-Last-Subject-Sequence-Subject";

/// Most publishes [`EventLog::append_many`] keeps in flight; below async-nats's 5,000 ack
/// permits, and enough to keep a loopback or LAN round trip busy.
pub const PIPELINE: usize = 2048;

/// Most events in one atomic batch (the server's limit).
pub const MAX_BATCH: usize = 1000;

/// How often an append waiting for its acknowledgement checks that the connection is up.
const CONNECTION_CHECK: Duration = Duration::from_millis(25);

/// Events one history request returns at most.
const HISTORY_PAGE: usize = 256;

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

impl Expect {
    /// The expectation for an aggregate last seen at `version` (0: never seen).
    pub fn at(version: u64) -> Self {
        match version {
            0 => Expect::New,
            v => Expect::Version(v),
        }
    }
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
    /// An id or name in the event's subject cannot be a subject token.
    #[error(transparent)]
    InvalidSubject(#[from] InvalidToken),
    /// The event cannot be written as JSON.
    #[error("cannot encode the event: {0}")]
    Encode(#[source] serde_json::Error),
    /// Another event was appended to the aggregate since the version the command read.
    #[error("{subject} changed since version {expected:?}")]
    Conflict { subject: String, expected: Expect },
    /// JetStream has no stream for the subject: run `vibehq up` (or `ensure_streams`) first.
    #[error("no stream captures {subject}; the streams are created by `vibehq up`")]
    NoStream { subject: String },
    /// The server did not acknowledge in time (or the connection dropped before it did): the
    /// append may or may not be stored. Retry with the same event (same id) to find out.
    #[error(
        "no acknowledgement from JetStream for {subject}: it may or may not be stored; retry with the same event"
    )]
    Timeout { subject: String },
    /// The client is not connected (the server is down or being reconnected to), so nothing
    /// was sent: nothing was stored. (A publish while disconnected would wait in the client's
    /// buffer and could be stored long after its caller was told it failed.)
    #[error("not connected to NATS (reconnecting); nothing was stored")]
    NotConnected,
    /// An atomic batch was refused whole: nothing of it was stored.
    #[error("the batch was refused, nothing of it stored: {reason}")]
    BatchRefused {
        reason: String,
        /// The server's error code (10071: an expected version did not hold; 10201: an
        /// event of the batch was stored before).
        code: u64,
    },
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
    timeout: Duration,
}

impl EventLog {
    /// A log over the JetStream of `client`.
    pub fn new(client: async_nats::Client) -> Self {
        let timeout = Duration::from_secs(10);
        let mut js = jetstream::new(client);
        js.set_timeout(timeout);
        Self { js, timeout }
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
        // The tasks stream sources the schedules stream: make that first.
        self.js
            .create_or_update_stream(crate::schedule::config(replicas))
            .await
            .map_err(|e| nats("create or update the schedules stream")(e.into()))?;
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
    /// [`Error::Conflict`] if the aggregate has moved on: the caller re-reads and decides
    /// again. A retry of an append whose outcome was unknown is answered with the first
    /// append's sequence (`duplicate`), even where the server itself answers the retry's stale
    /// expectation with a conflict (nats-server 2.12+ checks the expectation first).
    pub async fn append(&self, event: &Envelope, expect: Expect) -> Result<Appended, Error> {
        let subject = event.subject();
        let ack = self.send(event, &subject, expect).await?;
        match finish(self.ack_or_cut(ack).await, &subject, expect) {
            Err(Error::Conflict { .. }) if expect != Expect::Any => {
                match self.last(subject.stream(), &subject.version()).await? {
                    Some(last) if last.is(event) => Ok(Appended {
                        stream: subject.stream(),
                        sequence: last.record.sequence,
                        duplicate: true,
                    }),
                    _ => Err(Error::Conflict {
                        subject: subject.to_string(),
                        expected: expect,
                    }),
                }
            }
            other => other,
        }
    }

    /// Appends many events unconditionally ([`Expect::Any`]), pipelined; fails with the
    /// first event that could not be stored (those before it are stored).
    pub async fn append_all(&self, events: &[Envelope]) -> Result<Vec<Appended>, Error> {
        let events: Vec<(Envelope, Expect)> =
            events.iter().map(|e| (e.clone(), Expect::Any)).collect();
        self.append_many(&events).await.into_iter().collect()
    }

    /// Appends many events, pipelining the publishes, each with its own expectation; the
    /// outcomes are in input order, one per event.
    ///
    /// Up to [`PIPELINE`] publishes are in flight at once (more would exhaust the client's ack
    /// permits and stall). Order within one aggregate is preserved. A refused event (a stale
    /// version) refuses only itself.
    pub async fn append_many(&self, events: &[(Envelope, Expect)]) -> Vec<Result<Appended, Error>> {
        let mut in_flight = std::collections::VecDeque::with_capacity(PIPELINE.min(events.len()));
        let mut outcomes = Vec::with_capacity(events.len());
        for (event, expect) in events {
            if in_flight.len() == PIPELINE
                && let Some(sent) = in_flight.pop_front()
            {
                outcomes.push(settle(sent).await);
            }
            let subject = event.subject();
            let sent = self
                .send(event, &subject, *expect)
                .await
                .map(|ack| (ack, subject, *expect));
            in_flight.push_back(sent);
        }
        for sent in in_flight {
            outcomes.push(settle(sent).await);
        }
        outcomes
    }

    /// Waits for `ack`, giving up as soon as the connection drops: the server the publish went
    /// to can no longer answer it, so waiting out the timeout would only delay telling the
    /// caller the outcome is unknown (a disconnect while waiting reads as a timeout).
    async fn ack_or_cut(
        &self,
        ack: jetstream::context::PublishAckFuture,
    ) -> Result<jetstream::publish::PublishAck, jetstream::context::PublishError> {
        let client = self.js.client();
        tokio::select! {
            ack = ack.into_future() => ack,
            () = disconnected(&client) => {
                Err(jetstream::context::PublishError::new(PublishErrorKind::BrokenPipe))
            }
        }
    }

    /// Appends every event or none, as one atomic batch (nats-server 2.12+, at most
    /// [`MAX_BATCH`] events, all on one stream), each with its own expectation: one stale
    /// expectation refuses the whole batch with [`Error::BatchRefused`]. Answers every
    /// event's sequence, in input order.
    pub async fn append_atomic(
        &self,
        events: &[(Envelope, Expect)],
    ) -> Result<Vec<Appended>, Error> {
        let Some(last) = events.len().checked_sub(1) else {
            return Ok(Vec::new());
        };
        self.connected()?;
        let client = self.js.client();
        let batch = uuid::Uuid::now_v7().simple().to_string();
        let mut stream = None;
        let mut commit = None;
        for (i, (event, expect)) in events.iter().enumerate() {
            let subject = event.subject();
            subject.validate()?;
            let kind = subject.stream();
            if *stream.get_or_insert(kind) != kind {
                return Err(Error::BatchRefused {
                    reason: "an atomic batch must stay on one stream".into(),
                    code: 0,
                });
            }
            let mut headers = headers(event, &subject, *expect);
            headers.insert("Nats-Batch-Id", batch.as_str());
            headers.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
            let payload: Bytes = event.encode().map_err(Error::Encode)?.into();
            if i == last {
                headers.insert("Nats-Batch-Commit", "1");
                let request = client.request_with_headers(subject.to_string(), headers, payload);
                commit = tokio::select! {
                    answer = tokio::time::timeout(self.timeout, request) => Some(answer),
                    () = disconnected(&client) => None,
                };
            } else {
                client
                    .publish_with_headers(subject.to_string(), headers, payload)
                    .await
                    .map_err(|e| nats("send an event of a batch")(e.into()))?;
            }
        }
        let subject = events[last].0.subject().to_string();
        let reply = match commit {
            Some(Ok(Ok(reply))) => reply,
            Some(Ok(Err(e))) => return Err(nats("commit a batch")(e.into())),
            Some(Err(_)) | None => return Err(Error::Timeout { subject }),
        };
        #[derive(Deserialize)]
        struct Ack {
            #[serde(default)]
            seq: u64,
            #[serde(default)]
            count: Option<usize>,
            #[serde(default)]
            error: Option<AckError>,
        }
        #[derive(Deserialize)]
        struct AckError {
            #[serde(default)]
            err_code: u64,
            #[serde(default)]
            description: String,
        }
        let ack: Ack = serde_json::from_slice(&reply.payload).map_err(|e| {
            nats("read a batch's acknowledgement")(Box::new(e) as async_nats::Error)
        })?;
        if let Some(error) = ack.error {
            return Err(Error::BatchRefused {
                reason: error.description,
                code: error.err_code,
            });
        }
        let count = ack.count.unwrap_or(events.len());
        let stream = stream.unwrap_or(StreamKind::Tasks);
        // A committed batch is stored contiguously, ending at the commit's sequence.
        let first = ack.seq + 1 - count as u64;
        Ok((0..events.len() as u64)
            .map(|i| Appended {
                stream,
                sequence: first + i,
                duplicate: false,
            })
            .collect())
    }

    /// Refuses to send while disconnected: a publish would be buffered and stored after its
    /// caller gave up, so a caller could never know that "failed" meant "not stored".
    fn connected(&self) -> Result<(), Error> {
        match self.js.client().connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            _ => Err(Error::NotConnected),
        }
    }

    async fn send(
        &self,
        event: &Envelope,
        subject: &Subject,
        expect: Expect,
    ) -> Result<jetstream::context::PublishAckFuture, Error> {
        subject.validate()?;
        self.connected()?;
        let payload = event.encode().map_err(Error::Encode)?;
        let publish = PublishMessage::build()
            .payload(payload.into())
            .headers(headers(event, subject, expect));
        self.js
            .send_publish(subject.to_string(), publish)
            .await
            .map_err(|e| publish_error(e, subject, expect))
    }

    /// Appends a held submission (a dependent, or a keyed task its key admitted; its
    /// `run_at` set to the moment it was let through) onto its lane, expecting its task at
    /// `version`: a task that moved on meanwhile (cancelled, or released already) is refused
    /// with [`Error::Conflict`].
    pub async fn release(&self, event: &Envelope, version: u64) -> Result<Appended, Error> {
        let Payload::TaskSubmitted(submitted) = &event.payload else {
            return Err(Error::Nats {
                op: "release a task",
                source: "only a submission can be released".into(),
            });
        };
        let subject = submitted.lane_subject();
        let expect = Expect::at(version);
        let ack = self.send(event, &subject, expect).await?;
        finish(self.ack_or_cut(ack).await, &subject, expect)
    }

    /// The last event under `filter` (an aggregate's [`Subject::version`]) on `kind`'s
    /// stream, if there is one: one direct get, answered by any replica.
    pub async fn last(&self, kind: StreamKind, filter: &str) -> Result<Option<Last>, Error> {
        let request = serde_json::json!({ "last_by_subj": filter });
        let reply = self
            .js
            .client()
            .request(
                format!("$JS.API.DIRECT.GET.{}", kind.name()),
                request.to_string().into(),
            )
            .await
            .map_err(|e| nats("read an aggregate's last event")(e.into()))?;
        if let Some(status) = reply.status {
            return match status.as_u16() {
                404 => Ok(None),
                _ => Err(nats("read an aggregate's last event")(
                    format!("direct get answered {status}").into(),
                )),
            };
        }
        Last::from_message(kind, reply).map(Some)
    }

    /// The full history of one aggregate, oldest first: every event under its
    /// [`Subject::version`] filter, read with batched direct gets (no consumer is created).
    pub async fn history(&self, subject: &Subject) -> Result<Vec<Recorded>, Error> {
        subject.validate()?;
        self.history_of(subject.stream(), &subject.version(), u64::MAX)
            .await
    }

    /// Every event under `filter` on `kind`'s stream up to sequence `until`, oldest first.
    pub async fn history_of(
        &self,
        kind: StreamKind,
        filter: &str,
        until: u64,
    ) -> Result<Vec<Recorded>, Error> {
        self.history_after(kind, filter, 0, until).await
    }

    /// The events under `filter` on `kind`'s stream after sequence `after` and up to `until`,
    /// oldest first: what a view last caught up at `after` has not seen.
    pub async fn history_after(
        &self,
        kind: StreamKind,
        filter: &str,
        after: u64,
        until: u64,
    ) -> Result<Vec<Recorded>, Error> {
        let mut from = after + 1;
        let mut history = Vec::new();
        loop {
            let request = serde_json::json!({
                "seq": from, "next_by_subj": filter, "batch": HISTORY_PAGE,
            });
            let page = self.direct_batch(kind, request).await?;
            let full = page.len() == HISTORY_PAGE;
            let Some(next) = page.last().map(|l| l.record.sequence + 1) else {
                break;
            };
            for last in page {
                if last.record.sequence > until {
                    return Ok(history);
                }
                history.push(last.record);
            }
            if !full {
                break;
            }
            from = next;
        }
        Ok(history)
    }

    /// One batched direct get on `kind`'s stream: the messages it answers, until its
    /// end-of-batch marker or "not found".
    async fn direct_batch(
        &self,
        kind: StreamKind,
        request: serde_json::Value,
    ) -> Result<Vec<Last>, Error> {
        let client = self.js.client();
        let inbox = client.new_inbox();
        let mut answers = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| nats("read events")(e.into()))?;
        client
            .publish_with_reply(
                format!("$JS.API.DIRECT.GET.{}", kind.name()),
                inbox,
                request.to_string().into(),
            )
            .await
            .map_err(|e| nats("read events")(e.into()))?;
        let mut found = Vec::new();
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let message = match tokio::time::timeout_at(deadline, answers.next()).await {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(_) => {
                    return Err(Error::Timeout {
                        subject: format!("$JS.API.DIRECT.GET.{}", kind.name()),
                    });
                }
            };
            if let Some(status) = message.status {
                // 204: the end of a batch; 404: nothing (more) to read.
                if status.as_u16() == 204 || status.as_u16() == 404 {
                    break;
                }
                return Err(nats("read events")(
                    format!("direct get answered {status}").into(),
                ));
            }
            found.push(Last::from_message(kind, message)?);
        }
        Ok(found)
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

/// An event read with a direct get, with the id it was appended with.
#[derive(Debug, Clone)]
pub struct Last {
    pub record: Recorded,
    /// The `Nats-Msg-Id` it was stored with (vibehq's event id).
    pub event_id: Option<String>,
}

impl Last {
    /// Whether this is `event` (by its id, from the stored message's `Nats-Msg-Id` or its
    /// envelope).
    pub fn is(&self, event: &Envelope) -> bool {
        let id = event.id.to_string();
        match &self.event_id {
            Some(stored) => *stored == id,
            None => self
                .record
                .decode()
                .is_ok_and(|stored| stored.id == event.id),
        }
    }

    /// Reads a direct get's answer: the stored message in the payload, where it was stored
    /// in the headers.
    fn from_message(stream: StreamKind, message: async_nats::Message) -> Result<Self, Error> {
        let headers = message.headers.unwrap_or_default();
        let text = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
        let malformed = || {
            nats("read a direct get's answer")(
                "it lacks the stored message's sequence or time".into(),
            )
        };
        let sequence = text("Nats-Sequence")
            .and_then(|s| s.parse().ok())
            .ok_or_else(malformed)?;
        let published = text("Nats-Time-Stamp")
            .and_then(|t| {
                OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()
            })
            .ok_or_else(malformed)?;
        Ok(Self {
            record: Recorded {
                stream,
                sequence,
                subject: text("Nats-Subject").unwrap_or_default(),
                published,
                payload: message.payload,
            },
            event_id: text("Nats-Msg-Id"),
        })
    }
}

/// The headers of an append: its kind, its trace context, and what it expects or else its
/// event id.
///
/// An unconditional append carries the event id as `Nats-Msg-Id`, so a retry is stored once.
/// A conditional one needs no id: once the first try is stored, a retry's expectation no longer
/// holds and the server refuses it (the server checks the expectation first), and
/// [`EventLog::append`] recognises its own event as the last one stored. Without the id the
/// server keeps no duplicate-window entry for it.
fn headers(event: &Envelope, subject: &Subject, expect: Expect) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(KIND_HEADER, event.kind().as_str());
    crate::trace::inject(&mut headers);
    let expected = match expect {
        Expect::Any => {
            headers.insert("Nats-Msg-Id", event.id.to_string().as_str());
            return headers;
        }
        Expect::New => 0,
        Expect::Version(v) => v,
    };
    headers.insert(
        "Nats-Expected-Last-Subject-Sequence",
        expected.to_string().as_str(),
    );
    if let Subject::Submission { task_id, .. } | Subject::TaskStep { task_id, .. } = subject {
        headers.insert(EXPECTED_SUBJECT, Subject::task(task_id).as_str());
    }
    if matches!(subject, Subject::Submission { .. }) && expected > 0 {
        // A submission appended onto its lane after other events of its task: a release.
        headers.insert(RELEASED_HEADER, expected.to_string().as_str());
    }
    headers
}

/// On a held task's release copy ([`EventLog::release`]): the task's version it was appended
/// after. Such a copy, unlike one the server's scheduler stored, was appended only if nothing
/// happened to its task since, so a claim may take it the fast way (expecting the copy as
/// the task's version).
pub const RELEASED_HEADER: &str = "Vibehq-Released";

/// Returns once `client` is not connected (checked every [`CONNECTION_CHECK`]).
async fn disconnected(client: &async_nats::Client) {
    loop {
        tokio::time::sleep(CONNECTION_CHECK).await;
        if client.connection_state() != async_nats::connection::State::Connected {
            return;
        }
    }
}

async fn settle(
    sent: Result<(jetstream::context::PublishAckFuture, Subject, Expect), Error>,
) -> Result<Appended, Error> {
    let (ack, subject, expect) = sent?;
    finish(ack.await, &subject, expect)
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
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => Error::Timeout { subject },
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
