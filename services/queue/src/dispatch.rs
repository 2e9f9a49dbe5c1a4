//! The dispatcher: carries each submitted task from the tasks stream into the work stream.
//!
//! A submission is one append (history). This consumer turns it into pending work, publishing
//! with a message id derived from the event's id: if the process dies between publishing and
//! acknowledging, the redelivered event's work is recognised as a duplicate. Every vibehq
//! process may run one; they share the durable consumer and split the events.

use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy};
use async_nats::jetstream::message::PublishMessage;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use vibehq_events::work::{self, Target, WorkItem};
use vibehq_events::{EventKind, EventLog, Payload, StreamKind, log::KIND_HEADER};

use crate::Error;

/// The dispatcher's durable consumer on the tasks stream.
pub const CONSUMER: &str = "vibehq-dispatcher";

/// Runs the dispatcher until `shutdown`.
pub async fn run(log: EventLog, shutdown: CancellationToken) -> Result<(), Error> {
    let js = log.jetstream().clone();
    let stream = js
        .get_stream(StreamKind::Tasks.name())
        .await
        .map_err(|e| Error::nats("find the tasks stream", e))?;
    let consumer = stream
        .get_or_create_consumer(
            CONSUMER,
            consumer::pull::Config {
                durable_name: Some(CONSUMER.into()),
                description: Some("carries task.submitted into VIBEHQ_WORK".into()),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 20_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| Error::nats("create the dispatcher consumer", e))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(1000)
        .messages()
        .await
        .map_err(|e| Error::nats("start the dispatcher", e))?
        .ready_chunks(1000);
    tracing::info!("dispatcher running");
    loop {
        let chunk = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            chunk = messages.next() => chunk,
        };
        let Some(chunk) = chunk else { return Ok(()) };
        let mut publishes = Vec::new();
        let mut done = Vec::with_capacity(chunk.len());
        for message in chunk {
            let message = match message {
                Ok(m) => m,
                Err(error) => {
                    tracing::warn!(%error, "dispatcher delivery failed");
                    continue;
                }
            };
            let submitted = message
                .headers
                .as_ref()
                .and_then(|h| h.get(KIND_HEADER))
                .is_some_and(|k| k.as_str() == EventKind::TaskSubmitted.as_str());
            if submitted
                && let Ok(event) = vibehq_events::Envelope::decode(&message.payload)
                && let Payload::TaskSubmitted(task) = &event.payload
            {
                let info = message
                    .info()
                    .map_err(|e| Error::nats("read message metadata", e))?;
                let item = WorkItem {
                    task_id: task.task_id.clone(),
                    submitted_sequence: info.stream_sequence,
                };
                let target =
                    Target::of(task.worker_name.as_deref(), task.container_name.as_deref());
                let subject = work::subject(work::band(task.priority), &target);
                let publish = PublishMessage::build()
                    .payload(serde_json::to_vec(&item).unwrap_or_default().into())
                    .message_id(work::message_id(&event.id));
                let ack = js
                    .send_publish(subject, publish)
                    .await
                    .map_err(|e| Error::nats("publish work", e))?;
                publishes.push(ack);
            }
            done.push(message);
        }
        for ack in publishes {
            ack.await.map_err(|e| Error::nats("publish work", e))?;
        }
        for message in done {
            let _ = message.ack().await;
        }
    }
}
