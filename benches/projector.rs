//! Projector throughput, replay speed and append-to-queryable latency, against the raw
//! JetStream publish and consume rates measured on the same server in the same run.
//!
//! `cargo bench -p vibehq-benches --bench projector`; sizes: `VIBEHQ_BENCH_EVENTS` (default
//! 1,000,000) and `VIBEHQ_BENCH_LATENCY_SAMPLES` (default 2,000).

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use vibehq_benches::{histogram, line, percentiles, rate, record, size};
use vibehq_events::{Envelope, EventLog, Expect, StreamKind};
use vibehq_projector::{Options, Projector, ReplayOptions, Until};
use vibehq_test_support::{NatsServer, fixtures};

const CHUNK: usize = 10_000;

fn main() {
    vibehq_benches::block_on(run());
}

async fn run() {
    let events = size("VIBEHQ_BENCH_EVENTS", 1_000_000);
    let samples = size("VIBEHQ_BENCH_LATENCY_SAMPLES", 2_000);
    let nats = NatsServer::start().await;
    let client = nats.connect().await;
    let log = EventLog::new(client.clone());
    log.ensure_streams(1)
        .await
        .unwrap_or_else(|e| panic!("streams: {e}"));
    println!(
        "projector benchmark: {events} task events (25% inserts, 75% updates), nats-server on loopback\n"
    );

    // Ceiling 1: raw JetStream async publish of payloads shaped like our events.
    let sample = fixtures::task_workload(4, "shape");
    let payloads: Vec<bytes::Bytes> = sample
        .iter()
        .map(|e| e.encode().unwrap_or_else(|e| panic!("encode: {e}")).into())
        .collect();
    let (raw_publish, raw_consume) = raw_ceiling(&client, &payloads, events).await;
    line(
        "raw JetStream publish (async, msg-id)",
        raw_publish,
        "msgs/s",
        None,
    );
    line(
        "raw JetStream consume (ordered consumer)",
        raw_consume,
        "msgs/s",
        None,
    );

    // vibehq append: encode + publish with Nats-Msg-Id, pipelined, every ack awaited.
    let started = Instant::now();
    for (i, start) in (0..events).step_by(CHUNK).enumerate() {
        let batch = fixtures::task_workload(CHUNK.min(events - start), &format!("b{i}"));
        log.append_all(&batch)
            .await
            .unwrap_or_else(|e| panic!("append: {e}"));
    }
    let append = rate(events, started.elapsed());
    line(
        "EventLog::append_all",
        append,
        "events/s",
        Some(("raw publish", raw_publish)),
    );

    // Projector catch-up: a fresh projection follows the full stream.
    let dir = nats.scratch().to_owned();
    let database = dir.join("bench.sqlite3");
    let (projector, handle) = Projector::new(Options::new(&database), log.clone())
        .unwrap_or_else(|e| panic!("projector: {e}"));
    let stop = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(projector.run(stop.clone()));
    let last = events as u64;
    if !handle
        .wait_for(StreamKind::Tasks, last, Duration::from_secs(600))
        .await
    {
        panic!("projector did not catch up: {:?}", handle.checkpoints());
    }
    let projected = rate(events, started.elapsed());
    line(
        "projector catch-up (SQLite, rows + checkpoint)",
        projected,
        "events/s",
        Some(("raw consume", raw_consume)),
    );

    // Replay into a new file through the same writer.
    let started = Instant::now();
    let (totals, _, _) = vibehq_projector::replay(
        &log,
        ReplayOptions {
            into: dir.join("replay.sqlite3"),
            streams: vec![StreamKind::Tasks],
            until: Until::End,
        },
        |_| {},
    )
    .await
    .unwrap_or_else(|e| panic!("replay: {e}"));
    let replay_time = started.elapsed();
    assert_eq!(totals.applied, last);
    line(
        "replay",
        rate(events, replay_time),
        "events/s",
        Some(("raw consume", raw_consume)),
    );
    println!(
        "{:<44} {:>12.2} s for {events} events (target < 30 s per 1,000,000)",
        "replay time",
        replay_time.as_secs_f64()
    );

    // Append-to-queryable latency: one event at a time, timed until the projection has it.
    let mut latency = histogram();
    for i in 0..samples {
        let event = Envelope::new(
            "bench",
            fixtures::task_workload(1, &format!("lat{i}"))
                .remove(0)
                .payload,
        );
        let started = Instant::now();
        let seq = log
            .append(&event, Expect::Any)
            .await
            .unwrap_or_else(|e| panic!("append: {e}"))
            .sequence;
        handle
            .wait_for(StreamKind::Tasks, seq, Duration::from_secs(10))
            .await;
        record(&mut latency, started.elapsed());
    }
    println!(
        "{:<44} {}",
        "append → queryable latency",
        percentiles(&latency)
    );
    stop.cancel();
    let _ = task.await;
}

/// Publishes `count` raw messages (cycling through `payloads`) to a scratch stream with message
/// ids and async acks, then reads them all back with an ordered consumer.
async fn raw_ceiling(
    client: &async_nats::Client,
    payloads: &[bytes::Bytes],
    count: usize,
) -> (f64, f64) {
    let js = jetstream::new(client.clone());
    let raw = js
        .create_stream(stream::Config {
            name: "BENCH_RAW".into(),
            subjects: vec!["bench.raw.>".into()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("raw stream: {e}"));
    let started = Instant::now();
    // The same in-flight window as EventLog::append_all, so the comparison is like for like.
    let mut acks = std::collections::VecDeque::with_capacity(vibehq_events::PIPELINE);
    for i in 0..count {
        let message = PublishMessage::build()
            .payload(payloads[i % payloads.len()].clone())
            .message_id(format!("raw-{i}"));
        let ack = js
            .send_publish(format!("bench.raw.{}", i % 1000), message)
            .await
            .unwrap_or_else(|e| panic!("raw publish: {e}"));
        acks.push_back(ack);
        if acks.len() == vibehq_events::PIPELINE
            && let Some(ack) = acks.pop_front()
        {
            ack.await.unwrap_or_else(|e| panic!("raw ack: {e}"));
        }
    }
    for ack in acks {
        ack.await.unwrap_or_else(|e| panic!("raw ack: {e}"));
    }
    let publish = rate(count, started.elapsed());

    let started = Instant::now();
    let consumer = raw
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await
        .unwrap_or_else(|e| panic!("raw consumer: {e}"));
    let mut messages = consumer
        .messages()
        .await
        .unwrap_or_else(|e| panic!("raw read: {e}"));
    let mut read = 0;
    while read < count {
        match messages.next().await {
            Some(Ok(_)) => read += 1,
            other => panic!("raw read ended early: {other:?}"),
        }
    }
    let consume = rate(count, started.elapsed());
    let _ = js.delete_stream("BENCH_RAW").await;
    (publish, consume)
}
