//! The dispatcher: carries each submitted task from the tasks stream into the work stream.
//!
//! A submission is one append (history). This consumer turns it into pending work, publishing
//! with a message id derived from the event's id: if the process dies between publishing and
//! acknowledging, the redelivered event's work is recognised as a duplicate. Every vibehq
//! process may run one; they share the durable consumer and split the events.
//!
//! Submissions have their own subjects ([`SUBMISSIONS`]), so the dispatcher is handed nothing
//! else: a task's later events never cost it a delivery and an ack.

use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy};
use async_nats::jetstream::message::{AckKind, PublishMessage};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use vibehq_events::work::{self, Carried, Target, WorkItem};
use vibehq_events::{EventLog, Payload, SUBMISSIONS, StreamKind};

use crate::Error;

/// The dispatcher's durable consumer on the tasks stream.
pub const CONSUMER: &str = "vibehq-dispatch";

/// The consumer of vibehq versions whose dispatcher read every task event (its filter cannot be
/// changed in place on nats-server 2.9); removed on start.
const LEGACY_CONSUMER: &str = "vibehq-dispatcher";

/// Runs the dispatcher until `shutdown`.
pub async fn run(log: EventLog, shutdown: CancellationToken) -> Result<(), Error> {
    let js = log.jetstream().clone();
    let stream = js
        .get_stream(StreamKind::Tasks.name())
        .await
        .map_err(|e| Error::nats("find the tasks stream", e))?;
    if stream.delete_consumer(LEGACY_CONSUMER).await.is_ok() {
        tracing::info!(
            consumer = LEGACY_CONSUMER,
            "removed the old dispatcher's consumer"
        );
    }
    let consumer = stream
        .get_or_create_consumer(
            CONSUMER,
            consumer::pull::Config {
                durable_name: Some(CONSUMER.into()),
                description: Some("carries task.submitted into VIBEHQ_WORK".into()),
                filter_subject: SUBMISSIONS.to_owned(),
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
        let mut work = Vec::new();
        let mut done = Vec::with_capacity(chunk.len());
        for message in chunk {
            let message = match message {
                Ok(m) => m,
                Err(error) => {
                    tracing::warn!(%error, "dispatcher delivery failed");
                    continue;
                }
            };
            match carried(&message) {
                Some(item) => work.push(item),
                None => {
                    // Perhaps written by a newer vibehq: leave it for a dispatcher that can
                    // read it rather than lose the task's work.
                    tracing::error!(subject = %message.subject, "cannot read a task.submitted; leaving it for another dispatcher");
                    let _ = message
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(30))))
                        .await;
                    continue;
                }
            }
            done.push(message);
        }
        // Publishing again is safe (the message ids deduplicate), so retry until it works.
        let mut backoff = Duration::from_millis(100);
        while let Err(error) = publish(&js, &work).await {
            tracing::warn!(%error, retry_in = ?backoff, "cannot publish work; retrying");
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
        for message in done {
            let _ = message.ack().await;
        }
    }
}

/// The work a `task.submitted` message carries: subject, payload and message id.
fn carried(message: &async_nats::jetstream::Message) -> Option<(String, bytes::Bytes, String)> {
    let event = vibehq_events::Envelope::decode(&message.payload).ok()?;
    let Payload::TaskSubmitted(task) = &event.payload else {
        return None;
    };
    let info = message.info().ok()?;
    let item = WorkItem {
        task_id: task.task_id.clone(),
        submitted_sequence: info.stream_sequence,
        task: Some(Carried {
            submitted: task.clone(),
            submitted_by: event.worker_name.clone(),
        }),
    };
    let target = Target::of(task.worker_name.as_deref(), task.container_name.as_deref());
    let subject = work::subject(work::band(task.priority), &target);
    let payload = serde_json::to_vec(&item).ok()?.into();
    Some((subject, payload, work::message_id(&event.id)))
}

/// Publishes `work` pipelined, waits for every acknowledgement, then announces what was stored
/// (see [`work::WAKE_SUBJECTS`]).
async fn publish(
    js: &async_nats::jetstream::Context,
    work: &[(String, bytes::Bytes, String)],
) -> Result<(), Error> {
    let mut acks = Vec::with_capacity(work.len());
    for (subject, payload, id) in work {
        let publish = PublishMessage::build()
            .payload(payload.clone())
            .message_id(id);
        let ack = js
            .send_publish(subject.clone(), publish)
            .await
            .map_err(|e| Error::nats("publish work", e))?;
        acks.push(ack);
    }
    let mut stored = std::collections::BTreeMap::<&str, u64>::new();
    for (ack, (subject, ..)) in acks.into_iter().zip(work) {
        let ack = ack.await.map_err(|e| Error::nats("publish work", e))?;
        if !ack.duplicate {
            *stored.entry(subject).or_default() += 1;
        }
    }
    for (subject, count) in stored {
        // A lost announcement only delays claimers until their next look at the stream.
        let _ = js
            .client()
            .publish(work::wake_subject(subject), count.to_string().into())
            .await;
    }
    Ok(())
}
