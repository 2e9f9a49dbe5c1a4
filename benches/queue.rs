//! Task queue throughput and claim latency, against the raw JetStream round trip measured on
//! the same server in the same run.
//!
//! For each worker count W (1, 4, 16), on a fresh nats-server:
//! - **raw ceiling**: a producer publishes N work messages to a work-queue stream (pipelined);
//!   W workers pull one message at a time from one shared durable consumer, ack it, and publish
//!   a completion to a limits stream, awaiting its ack. This is the least any queue on
//!   JetStream does per task. Also run with 16 messages per pull and pipelined completions.
//! - **vibehq**: `Queue::submit` from concurrent submitters, the dispatcher, W loops of
//!   `Queue::claim` → `Queue::complete`, and a live projector; timed from the first submit until
//!   every task is completed and the projection has caught up with the tasks stream. Also run
//!   with `Queue::claim_many` taking up to 16 tasks per claim, completed concurrently, against
//!   the 16-per-pull raw round trip.
//! - **design floor**: the JetStream operations the design itself needs (a submission event,
//!   `assigned` and `completed` on the task's subject with expected sequences, a reader of every
//!   event) with no vibehq code, pulled straight from the submissions' lane and, as vibehq
//!   does, through a dispatcher and a work-queue stream. No implementation of the design can
//!   beat the first here, so its ratio to the raw round trip bounds what any can reach.
//!
//! Then W idle claimers take tasks submitted one at a time (latency and cost per task when
//! claimers race), and one caller on an idle server times the NATS operations a claim and a
//! completion are made of, to show where vibehq's time per task goes. CPU is read from `/proc`
//! for this process and the nats-server, and NATS messages from the client's statistics.
//!
//! `cargo bench -p vibehq-benches --bench queue`; size: `VIBEHQ_BENCH_TASKS` (default 20,000
//! per worker count); `VIBEHQ_BENCH_WORKERS=4` runs one worker count; `TOKIO_WORKER_THREADS`
//! sets the runtime's threads (default: one per core).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use futures::StreamExt;
use hdrhistogram::Histogram;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use vibehq_benches::{Cpu, histogram, line, percentiles, rate, record, size};
use vibehq_events::{
    Envelope, EventKind, EventLog, Expect, PIPELINE, StreamKind, Subject, task, work,
};
use vibehq_projector::{Handle, Projector};
use vibehq_queue::{Actor, NewTask, Queue};
use vibehq_test_support::{NatsServer, fixtures};

/// Concurrent claim → complete loops (one count only: `VIBEHQ_BENCH_WORKERS`).
const WORKERS: [usize; 3] = [1, 4, 16];
/// Concurrent `Queue::submit` loops (each submit awaits its append).
const SUBMITTERS: usize = 16;
/// How long one `claim` call waits for work.
const CLAIM_WAIT: Duration = Duration::from_millis(250);
/// How long a raw pull waits for a message.
const PULL_WAIT: Duration = Duration::from_millis(250);
/// Messages per pull in the batched raw round trip.
const RAW_BATCH: usize = 16;
/// Tasks in the idle-claimers run, and the gap between their submissions.
const TRICKLE_TASKS: usize = 500;
const TRICKLE_EVERY: Duration = Duration::from_millis(5);
/// Samples per operation in the profile.
const PROFILE_SAMPLES: usize = 2_000;
/// Longest wait for any phase before the benchmark gives up.
const TIMEOUT: Duration = Duration::from_secs(600);

fn main() {
    vibehq_benches::block_on(run());
}

async fn run() {
    let tasks = size("VIBEHQ_BENCH_TASKS", 20_000);
    let workers = match size("VIBEHQ_BENCH_WORKERS", 0) {
        0 => WORKERS.to_vec(),
        one => vec![one],
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Tokio reads TOKIO_WORKER_THREADS itself; on 2 cores shared with nats-server, 1 thread
    // measured 5-10% faster than the default, for vibehq and the raw client alike.
    let threads = std::env::var("TOKIO_WORKER_THREADS").unwrap_or_else(|_| cores.to_string());
    println!(
        "queue benchmark: {tasks} tasks per worker count W, nats-server on loopback, {cores} cores, \
         {threads} runtime threads (TOKIO_WORKER_THREADS)\n\
         - vibehq: Queue::submit ({SUBMITTERS} concurrent submitters) → dispatcher → W × (Queue::claim → \
         Queue::complete) → live projector;\n  tasks/s from the first submit until all are completed \
         and projected; claim latency of the claims that returned a task\n\
         - raw round trip (the ceiling, same server, same run): publish to a work-queue stream \
         ({PIPELINE} in flight) → W × (pull 1 from\n  one durable consumer → ack → publish a completion \
         to a limits stream, awaiting its ack); tasks/s from the first publish to the last completion\n\
         - raw, {RAW_BATCH} per pull: the same, each (waiting) pull taking up to {RAW_BATCH} messages and \
         their completions published pipelined\n\
         - design floor: the design's JetStream operations with no vibehq code (submission event → \
         W × (pull → append assigned and completed\n  with expected sequences → ack) → a reader of \
         every event, writing nothing); also through a dispatcher and a work-queue stream\n"
    );
    let mut rows = Vec::new();
    for &workers in &workers {
        let nats = NatsServer::start().await;
        let raw = raw_round_trip(&nats, tasks, workers, 1).await;
        let batched = raw_round_trip(&nats, tasks, workers, RAW_BATCH).await;
        let vibehq = end_to_end(&nats, tasks, workers, 1).await;
        let vibehq_batched = end_to_end(&nats, tasks, workers, RAW_BATCH).await;
        let mut floors = Vec::new();
        for batch in [1, RAW_BATCH] {
            for layout in [Layout::Events, Layout::WorkStream] {
                floors.push(event_floor(&nats, tasks, workers, batch, layout).await);
            }
        }
        let [floor, layout, floor_batched, layout_batched] = <[Run; 4]>::try_from(floors)
            .unwrap_or_else(|_| unreachable!("four floors were measured"));
        let one = Row {
            raw,
            floor,
            layout,
            vibehq,
        };
        let many = Row {
            raw: batched,
            floor: floor_batched,
            layout: layout_batched,
            vibehq: vibehq_batched,
        };
        report(workers, tasks, &one, 1);
        report(workers, tasks, &many, RAW_BATCH);
        rows.push((workers, one, many));
    }

    println!(
        "\nsummary ({tasks} tasks per row; a claim takes up to `per claim` tasks, and the raw \
         round trip pulls as many)"
    );
    println!(
        "{:>7} {:>9} {:>14} {:>11} {:>7} {:>11} {:>9} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "workers",
        "per claim",
        "vibehq tasks/s",
        "raw tasks/s",
        "ratio",
        "floor",
        "floor/raw",
        "vibehq/floor",
        "claim p50 ms",
        "claim p99 ms",
        "compl p50 ms",
        "compl p99 ms",
    );
    for (workers, one, many) in &rows {
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let percent = |a: &Run, b: &Run| 100.0 * a.rate / b.rate.max(1e-9);
        for (per_claim, row) in [(1, one), (RAW_BATCH, many)] {
            println!(
                "{workers:>7} {per_claim:>9} {:>14.0} {:>11.0} {:>6.1}% {:>11.0} {:>8.1}% {:>11.1}% {:>12.3} {:>12.3} {:>12.3} {:>12.3}",
                row.vibehq.rate,
                row.raw.rate,
                percent(&row.vibehq, &row.raw),
                row.floor.rate,
                percent(&row.floor, &row.raw),
                percent(&row.vibehq, &row.floor),
                ms(&row.vibehq.take, 0.5),
                ms(&row.vibehq.take, 0.99),
                ms(&row.vibehq.finish, 0.5),
                ms(&row.vibehq.finish, 0.99),
            );
        }
    }
    println!(
        "floor: the design's own JetStream operations with no vibehq code (submission, assigned, \
         completed, a reader of every event);\nno implementation of the design can pass it here, \
         so floor/raw bounds the ratio any implementation can reach"
    );

    println!(
        "\nidle claimers: {TRICKLE_TASKS} tasks submitted one at a time every {} ms, W claimers \
         waiting in Queue::claim (no projector)",
        TRICKLE_EVERY.as_millis()
    );
    for &workers in &workers {
        let run = trickle(workers).await;
        println!(
            "W = {workers:<2} submit → claimed {}",
            percentiles(&run.take)
        );
        println!(
            "{:<8}{:.1}% ≥ 10 ms; per task: {}; NATS messages {:.1} out + {:.1} in",
            "",
            100.0 * run.take.count_between(10_000, u64::MAX) as f64 / run.take.len().max(1) as f64,
            run.cpu.per(TRICKLE_TASKS),
            run.sent as f64 / TRICKLE_TASKS as f64,
            run.received as f64 / TRICKLE_TASKS as f64,
        );
    }

    let samples = tasks.min(PROFILE_SAMPLES);
    let fresh = profile(samples, 0).await;
    let grown = profile(samples, 3 * tasks).await;
    println!(
        "\nwhere a task's time goes: {samples} sequential calls of each, one caller, idle server, \
         {samples} tasks pending;\nround trips per call read off services/queue/src/{{queue,board}}.rs; \
         a fresh tasks stream vs one already\n\
         holding {} other events (a run's end state); CPU in µs per call (idle: includes the \
         broker's wake-up costs)",
        3 * tasks
    );
    println!(
        "{:<46} {:>9} {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} {:>9}",
        "operation (round trips)",
        "p50 ms",
        "p99 ms",
        "server",
        "in-proc",
        "p50 ms",
        "p99 ms",
        "server",
        "in-proc"
    );
    for ((name, a), (_, b)) in fresh.iter().zip(&grown) {
        let cells = |op: &Op| {
            let (bench, server) = op.cpu.micros_per(op.count);
            format!(
                "{:>9.3} {:>9.3} {:>9.0} {:>9.0}",
                op.latency.value_at_quantile(0.5) as f64 / 1000.0,
                op.latency.value_at_quantile(0.99) as f64 / 1000.0,
                server,
                bench
            )
        };
        println!("{name:<46} {} | {}", cells(a), cells(b));
    }
}

/// One worker count and claim size: the ceiling, the design's floors, and vibehq.
#[derive(Debug)]
struct Row {
    /// The raw round trip.
    raw: Run,
    /// The design's floor ([`Layout::Events`]).
    floor: Run,
    /// The floor through vibehq's layout ([`Layout::WorkStream`]).
    layout: Run,
    vibehq: Run,
}

/// What one run measured.
#[derive(Debug)]
struct Run {
    rate: f64,
    /// From the start to the last completion.
    completed_in: Duration,
    /// From the last completion until the projection had caught up (vibehq only).
    projection_lag: Duration,
    /// `Queue::claim` calls that returned a task, or raw pulls that returned a message.
    take: Histogram<u64>,
    /// `Queue::complete`, or the raw ack + completion publish.
    finish: Histogram<u64>,
    /// `Queue::submit` (vibehq only).
    submit: Histogram<u64>,
    /// Claims (pulls) that returned nothing within their wait.
    empty: usize,
    cpu: Cpu,
    /// NATS messages sent and received by the client connection.
    sent: u64,
    received: u64,
}

/// Counts completions and wakes the timer at the last one.
#[derive(Debug)]
struct Finish {
    target: usize,
    done: AtomicUsize,
    last: Notify,
}

impl Finish {
    fn new(target: usize) -> Arc<Self> {
        Arc::new(Self {
            target,
            done: AtomicUsize::new(0),
            last: Notify::new(),
        })
    }

    fn pending(&self) -> bool {
        self.done.load(Ordering::Acquire) < self.target
    }

    fn one(&self) {
        if self.done.fetch_add(1, Ordering::AcqRel) + 1 == self.target {
            self.last.notify_one();
        }
    }

    async fn wait(&self, what: &str) {
        if tokio::time::timeout(TIMEOUT, self.last.notified())
            .await
            .is_err()
        {
            panic!(
                "{what}: only {} of {} tasks completed in {TIMEOUT:?}",
                self.done.load(Ordering::Acquire),
                self.target
            );
        }
    }
}

/// Messages sent and received by `client` so far.
fn messages(client: &async_nats::Client) -> (u64, u64) {
    let stats = client.statistics();
    (
        stats.out_messages.load(Ordering::Relaxed),
        stats.in_messages.load(Ordering::Relaxed),
    )
}

/// The raw ceiling: publish → pull → ack → publish a completion, with no vibehq code.
///
/// With `batch` > 1 each worker's pull takes up to `batch` messages as they come, and the
/// completions are published pipelined: what claiming many tasks at once could reach.
async fn raw_round_trip(nats: &NatsServer, tasks: usize, workers: usize, batch: usize) -> Run {
    let client = nats.connect().await;
    let js = jetstream::new(client.clone());
    let work = js
        .create_stream(stream::Config {
            name: "BENCH_WORK".into(),
            subjects: vec!["bench.work.>".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("raw work stream: {e}"));
    js.create_stream(stream::Config {
        name: "BENCH_DONE".into(),
        subjects: vec!["bench.done.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("raw completion stream: {e}"));
    let consumer: consumer::PullConsumer = work
        .create_consumer(consumer::pull::Config {
            durable_name: Some("bench".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 100_000,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("raw consumer: {e}"));
    // A completion shaped like vibehq's.
    let completion: bytes::Bytes = Envelope::new(
        "bench",
        task::Completed {
            task_id: "0197a3c2-5b1e-7c4d-9e8f-0a1b2c3d4e5f".into(),
            attempt: 1,
            output: None,
        },
    )
    .encode()
    .into();

    let finish = Finish::new(tasks);
    let (sent, received) = messages(&client);
    let cpu = Cpu::now();
    let started = Instant::now();
    let producer = produce(&js, tasks, |i| {
        // A payload shaped like a `WorkItem`.
        let item =
            format!(r#"{{"task_id":"0197a3c2-5b1e-7c4d-9e8f-{i:012x}","submitted_sequence":{i}}}"#);
        let message = PublishMessage::build()
            .payload(item.into())
            .message_id(format!("work-{i}"));
        ("bench.work.p0.any".to_owned(), message)
    });
    let pullers: Vec<_> = (0..workers)
        .map(|_| {
            let (js, consumer, completion, finish) = (
                js.clone(),
                consumer.clone(),
                completion.clone(),
                finish.clone(),
            );
            tokio::spawn(async move {
                let (mut pulls, mut finishes, mut empty) = (histogram(), histogram(), 0);
                if batch > 1 {
                    // Completions are counted as their acks arrive, so a pull waiting out its
                    // expiry at the end does not hold the count back. Each worker keeps a share
                    // of the client's ack permits.
                    let (acks, mut pending) = tokio::sync::mpsc::channel(PIPELINE / workers);
                    let acker = {
                        let finish = finish.clone();
                        tokio::spawn(async move {
                            while let Some(ack) = pending.recv().await {
                                let ack: jetstream::context::PublishAckFuture = ack;
                                ack.await
                                    .unwrap_or_else(|e| panic!("raw completion ack: {e}"));
                                finish.one();
                            }
                        })
                    };
                    while finish.pending() {
                        // A waiting pull (no `no_wait` race): up to `batch` messages, as they come.
                        let mut pulled = consumer
                            .batch()
                            .max_messages(batch)
                            .expires(PULL_WAIT)
                            .messages()
                            .await
                            .unwrap_or_else(|e| panic!("raw pull: {e}"));
                        let mut got = 0;
                        while let Some(message) = pulled.next().await {
                            let message = message.unwrap_or_else(|e| panic!("raw pull: {e}"));
                            let sequence = message
                                .info()
                                .unwrap_or_else(|e| panic!("raw metadata: {e}"))
                                .stream_sequence;
                            message
                                .ack()
                                .await
                                .unwrap_or_else(|e| panic!("raw ack: {e}"));
                            let done = PublishMessage::build()
                                .payload(completion.clone())
                                .message_id(format!("done-{sequence}"));
                            let ack = js
                                .send_publish(format!("bench.done.{sequence}"), done)
                                .await
                                .unwrap_or_else(|e| panic!("raw completion: {e}"));
                            if acks.send(ack).await.is_err() {
                                panic!("raw acker stopped");
                            }
                            got += 1;
                        }
                        if got == 0 {
                            empty += 1;
                        }
                    }
                    drop(acks);
                    acker.await.unwrap_or_else(|e| panic!("raw acker: {e}"));
                    return (pulls, finishes, empty);
                }
                while finish.pending() {
                    let t = Instant::now();
                    let mut batch = consumer
                        .batch()
                        .max_messages(1)
                        .expires(PULL_WAIT)
                        .messages()
                        .await
                        .unwrap_or_else(|e| panic!("raw pull: {e}"));
                    let Some(message) = batch.next().await else {
                        empty += 1;
                        continue;
                    };
                    let message = message.unwrap_or_else(|e| panic!("raw pull: {e}"));
                    record(&mut pulls, t.elapsed());
                    let t = Instant::now();
                    let sequence = message
                        .info()
                        .unwrap_or_else(|e| panic!("raw metadata: {e}"))
                        .stream_sequence;
                    message
                        .ack()
                        .await
                        .unwrap_or_else(|e| panic!("raw ack: {e}"));
                    let done = PublishMessage::build()
                        .payload(completion.clone())
                        .message_id(format!("done-{sequence}"));
                    js.send_publish(format!("bench.done.{sequence}"), done)
                        .await
                        .unwrap_or_else(|e| panic!("raw completion: {e}"))
                        .await
                        .unwrap_or_else(|e| panic!("raw completion ack: {e}"));
                    record(&mut finishes, t.elapsed());
                    finish.one();
                }
                (pulls, finishes, empty)
            })
        })
        .collect();
    finish.wait("raw round trip").await;
    let completed_in = started.elapsed();
    let cpu = Cpu::now().since(&cpu);
    let (sent_now, received_now) = messages(&client);
    producer
        .await
        .unwrap_or_else(|e| panic!("raw producer: {e}"));
    let (take, finishes, empty) = gather(pullers, "raw worker").await;
    let _ = js.delete_stream("BENCH_WORK").await;
    let _ = js.delete_stream("BENCH_DONE").await;
    Run {
        rate: rate(tasks, completed_in),
        completed_in,
        projection_lag: Duration::ZERO,
        take,
        finish: finishes,
        submit: histogram(),
        empty,
        cpu,
        sent: sent_now - sent,
        received: received_now - received,
    }
}

/// Where the floor's workers pull submissions from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Straight from the events stream: submissions on a lane subject, one consumer per lane.
    Events,
    /// vibehq's layout: submissions on subjects of their own, carried by a dispatcher into a
    /// work-queue stream that the workers pull from.
    WorkStream,
}

/// The design's floor: the event-sourced queue in JetStream alone, with no vibehq code.
///
/// Every task is a submission event, `assigned` on the task's own subject expecting it empty,
/// and `completed` expecting the `assigned`, all on one limits stream; W workers pull up to
/// `batch` submissions at a time (from where `layout` says), append those two events and ack;
/// a reader reads every event as the projector does (decoding it, acking a batch at once) but
/// writes nothing. Submissions are published as the raw producer does. Tasks/s from the first
/// submission until the reader has read every event.
///
/// No implementation of the design can beat [`Layout::Events`] on this server: it is the
/// raw round trip plus what the design itself adds (a third stored event, expected-sequence
/// checks, a reader of every event). The gap between it and vibehq is vibehq's own cost
/// (its layout, its SQLite projection, its code), not the design's.
async fn event_floor(
    nats: &NatsServer,
    tasks: usize,
    workers: usize,
    batch: usize,
    layout: Layout,
) -> Run {
    let client = nats.connect().await;
    let js = jetstream::new(client.clone());
    let events = js
        .create_stream(stream::Config {
            name: "BENCH_EVENTS".into(),
            subjects: vec!["bench.ev.>".into()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("floor stream: {e}"));
    // Where workers pull from: the submissions' own lane, or (vibehq's layout) a work-queue
    // stream that a dispatcher fills from submissions on subjects of their own.
    let (lane_stream, lane_subject) = match layout {
        Layout::Events => (events.clone(), "bench.ev.queued.p0.any"),
        Layout::WorkStream => (
            js.create_stream(stream::Config {
                name: "BENCH_FLOOR_WORK".into(),
                subjects: vec!["bench.fw.>".into()],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("floor work stream: {e}")),
            "bench.fw.p0.any",
        ),
    };
    let lane: consumer::PullConsumer = lane_stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("lane".into()),
            filter_subject: lane_subject.into(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 100_000,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("floor lane consumer: {e}"));
    let dispatcher = match layout {
        Layout::Events => None,
        Layout::WorkStream => Some(tokio::spawn(floor_dispatcher(js.clone(), events.clone()))),
    };
    let reader: consumer::PullConsumer = events
        .create_consumer(consumer::pull::Config {
            durable_name: Some("reader".into()),
            ack_policy: consumer::AckPolicy::All,
            ack_wait: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("floor reader consumer: {e}"));
    let encode = |payload: vibehq_events::Payload| -> bytes::Bytes {
        Envelope::new("bench", payload).encode().into()
    };
    let task_id = "0197a3c2-5b1e-7c4d-9e8f-0a1b2c3d4e5f".to_owned();
    let submitted = encode(
        task::Submitted {
            task_id: task_id.clone(),
            task_type: "health_audit".into(),
            command: "audit".into(),
            parameters: None,
            priority: 0,
            worker_name: None,
            container_name: None,
            max_attempts: 3,
            idempotency_key: None,
        }
        .into(),
    );
    let assigned = encode(
        task::Assigned {
            task_id: task_id.clone(),
            attempt: 1,
            lease_ms: 30_000,
            lease: Some("$JS.ACK.VIBEHQ_TASKS.lane.1.1.1.1.1".into()),
            work_sequence: Some(1),
        }
        .into(),
    );
    let completed = encode(
        task::Completed {
            task_id,
            attempt: 1,
            output: None,
        }
        .into(),
    );

    let read = Finish::new(3 * tasks);
    let (sent, received) = messages(&client);
    let cpu = Cpu::now();
    let started = Instant::now();
    let producer = produce(&js, tasks, move |i| {
        let submission = PublishMessage::build().payload(submitted.clone());
        match layout {
            Layout::Events => ("bench.ev.queued.p0.any".to_owned(), submission),
            Layout::WorkStream => (
                format!("bench.ev.sub.{i}"),
                submission.expected_last_subject_sequence(0),
            ),
        }
    });
    let projector = {
        let read = read.clone();
        tokio::spawn(async move {
            let mut chunks = reader
                .stream()
                .max_messages_per_batch(1024)
                .messages()
                .await
                .unwrap_or_else(|e| panic!("floor reader: {e}"))
                .ready_chunks(1024);
            while read.pending() {
                let Some(chunk) = chunks.next().await else {
                    break;
                };
                let mut last = None;
                for message in chunk {
                    let message = message.unwrap_or_else(|e| panic!("floor read: {e}"));
                    Envelope::decode(&message.payload)
                        .unwrap_or_else(|e| panic!("floor decode: {e}"));
                    read.one();
                    last = Some(message);
                }
                if let Some(last) = last {
                    let _ = last.ack().await;
                }
            }
        })
    };
    let done = Finish::new(tasks);
    let pullers: Vec<_> = (0..workers)
        .map(|_| {
            let (js, lane, done) = (js.clone(), lane.clone(), done.clone());
            let (assigned, completed) = (assigned.clone(), completed.clone());
            tokio::spawn(async move {
                let (mut pulls, mut finishes, mut empty) = (histogram(), histogram(), 0);
                while done.pending() {
                    let t = Instant::now();
                    let pulled: Vec<_> = lane
                        .batch()
                        .max_messages(batch)
                        .expires(PULL_WAIT)
                        .messages()
                        .await
                        .unwrap_or_else(|e| panic!("floor pull: {e}"))
                        .collect()
                        .await;
                    if pulled.is_empty() {
                        empty += 1;
                        continue;
                    }
                    record(&mut pulls, t.elapsed());
                    let (t, count) = (Instant::now(), pulled.len());
                    futures::future::join_all(pulled.into_iter().map(|message| {
                        let (js, assigned, completed) = (&js, assigned.clone(), completed.clone());
                        async move {
                            let message = message.unwrap_or_else(|e| panic!("floor pull: {e}"));
                            let sequence = message
                                .info()
                                .unwrap_or_else(|e| panic!("floor metadata: {e}"))
                                .stream_sequence;
                            let subject = format!("bench.ev.task.{sequence}");
                            let first = js
                                .send_publish(
                                    subject.clone(),
                                    PublishMessage::build()
                                        .payload(assigned)
                                        .expected_last_subject_sequence(0),
                                )
                                .await
                                .unwrap_or_else(|e| panic!("floor assign: {e}"))
                                .await
                                .unwrap_or_else(|e| panic!("floor assign ack: {e}"));
                            js.send_publish(
                                subject,
                                PublishMessage::build()
                                    .payload(completed)
                                    .expected_last_subject_sequence(first.sequence),
                            )
                            .await
                            .unwrap_or_else(|e| panic!("floor complete: {e}"))
                            .await
                            .unwrap_or_else(|e| panic!("floor complete ack: {e}"));
                            message
                                .ack()
                                .await
                                .unwrap_or_else(|e| panic!("floor ack: {e}"));
                        }
                    }))
                    .await;
                    record(&mut finishes, t.elapsed());
                    for _ in 0..count {
                        done.one();
                    }
                }
                (pulls, finishes, empty)
            })
        })
        .collect();
    read.wait("floor reader").await;
    let elapsed = started.elapsed();
    let cpu = Cpu::now().since(&cpu);
    let (sent_now, received_now) = messages(&client);
    producer
        .await
        .unwrap_or_else(|e| panic!("floor producer: {e}"));
    let _ = projector.await;
    let (take, finishes, empty) = gather(pullers, "floor worker").await;
    if let Some(dispatcher) = dispatcher {
        dispatcher.abort();
    }
    let _ = js.delete_stream("BENCH_EVENTS").await;
    let _ = js.delete_stream("BENCH_FLOOR_WORK").await;
    Run {
        rate: rate(tasks, elapsed),
        completed_in: elapsed,
        projection_lag: Duration::ZERO,
        take,
        finish: finishes,
        submit: histogram(),
        empty,
        cpu,
        sent: sent_now - sent,
        received: received_now - received,
    }
}

/// The floor's dispatcher, as vibehq's: carries submissions (acked one by one) into the work
/// stream, each with a message id so a redelivered submission is not carried twice.
async fn floor_dispatcher(js: jetstream::Context, events: stream::Stream) {
    let consumer: consumer::PullConsumer = events
        .create_consumer(consumer::pull::Config {
            durable_name: Some("dispatch".into()),
            filter_subject: "bench.ev.sub.*".into(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 20_000,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("floor dispatcher consumer: {e}"));
    let mut chunks = consumer
        .stream()
        .max_messages_per_batch(1000)
        .messages()
        .await
        .unwrap_or_else(|e| panic!("floor dispatcher: {e}"))
        .ready_chunks(1000);
    while let Some(chunk) = chunks.next().await {
        let mut acks = Vec::with_capacity(chunk.len());
        let mut carried = Vec::with_capacity(chunk.len());
        for message in chunk {
            let message = message.unwrap_or_else(|e| panic!("floor dispatch: {e}"));
            let sequence = message
                .info()
                .unwrap_or_else(|e| panic!("floor metadata: {e}"))
                .stream_sequence;
            let work = PublishMessage::build()
                .payload(message.payload.clone())
                .message_id(format!("work-{sequence}"));
            acks.push(
                js.send_publish("bench.fw.p0.any", work)
                    .await
                    .unwrap_or_else(|e| panic!("floor work: {e}")),
            );
            carried.push(message);
        }
        for ack in acks {
            ack.await.unwrap_or_else(|e| panic!("floor work ack: {e}"));
        }
        for message in carried {
            let _ = message.ack().await;
        }
    }
}

/// What each worker measured: its take and finish latencies and its empty takes.
type Measured = (Histogram<u64>, Histogram<u64>, usize);

/// Waits for `workers` and merges what they measured.
async fn gather(workers: Vec<tokio::task::JoinHandle<Measured>>, what: &str) -> Measured {
    let (mut take, mut finishes, mut empty) = (histogram(), histogram(), 0);
    for worker in workers {
        let (t, f, e) = worker.await.unwrap_or_else(|e| panic!("{what}: {e}"));
        add(&mut take, &t);
        add(&mut finishes, &f);
        empty += e;
    }
    (take, finishes, empty)
}

/// Publishes `tasks` messages, `message(i)` giving the i-th's subject and body, with up to
/// [`PIPELINE`] awaiting their acks: the raw producer, as fast as the client goes.
fn produce(
    js: &jetstream::Context,
    tasks: usize,
    message: impl Fn(usize) -> (String, PublishMessage) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let js = js.clone();
    tokio::spawn(async move {
        let mut acks = VecDeque::with_capacity(PIPELINE);
        for i in 0..tasks {
            let (subject, message) = message(i);
            let ack = js
                .send_publish(subject, message)
                .await
                .unwrap_or_else(|e| panic!("produce: {e}"));
            acks.push_back(ack);
            if acks.len() == PIPELINE
                && let Some(ack) = acks.pop_front()
            {
                ack.await.unwrap_or_else(|e| panic!("produce ack: {e}"));
            }
        }
        for ack in acks {
            ack.await.unwrap_or_else(|e| panic!("produce ack: {e}"));
        }
    })
}

fn add(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    into.add(from)
        .unwrap_or_else(|e| panic!("merge histograms: {e}"));
}

fn new_task() -> NewTask {
    NewTask {
        task_type: "health_audit".into(),
        command: "audit".into(),
        max_attempts: 3,
        ..Default::default()
    }
}

async fn caught_up(handle: &Handle, sequence: u64) {
    if !handle.wait_for(StreamKind::Tasks, sequence, TIMEOUT).await {
        panic!(
            "projection did not reach tasks #{sequence}: {:?}",
            handle.checkpoints()
        );
    }
}

/// vibehq end to end: submit → dispatch → claim → complete → projected. Each claim takes up
/// to `batch` tasks (`Queue::claim_many`), which are then completed concurrently.
async fn end_to_end(nats: &NatsServer, tasks: usize, workers: usize, batch: usize) -> Run {
    // One connection for the whole vibehq process, as `vibehq up` has.
    let client = nats.connect().await;
    let log = EventLog::new(client.clone());
    log.ensure_streams(1)
        .await
        .unwrap_or_else(|e| panic!("streams: {e}"));
    let queue = Queue::new(log.clone(), vibehq_queue::Options::default())
        .await
        .unwrap_or_else(|e| panic!("queue: {e}"));
    let stop = CancellationToken::new();
    let dispatcher = tokio::spawn(vibehq_queue::dispatch::run(log.clone(), stop.clone()));
    let database = nats
        .scratch()
        .join(format!("queue-{workers}-{batch}.sqlite3"));
    let (projector, handle) =
        Projector::new(vibehq_projector::Options::new(&database), log.clone())
            .unwrap_or_else(|e| panic!("projector: {e}"));
    let projection = tokio::spawn(projector.run(stop.clone()));

    // Warm up: one task through every step, so the work consumer exists before the clock runs.
    let orchestrator = Actor::new("bench", None);
    queue
        .submit(&orchestrator, new_task())
        .await
        .unwrap_or_else(|e| panic!("warm-up submit: {e}"));
    let warm = Actor::new("bench", Some("warm-up".into()));
    let claim = queue
        .claim(&warm, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("warm-up claim: {e}"))
        .unwrap_or_else(|| panic!("warm-up task never became claimable"));
    let sequence = queue
        .complete(&claim.task_id, claim.attempt, &warm, None)
        .await
        .unwrap_or_else(|e| panic!("warm-up complete: {e}"));
    caught_up(&handle, sequence).await;

    let finish = Finish::new(tasks);
    let (sent, received) = messages(&client);
    let cpu = Cpu::now();
    let started = Instant::now();
    let submitters: Vec<_> = (0..SUBMITTERS)
        .map(|s| {
            let queue = queue.clone();
            let count = tasks / SUBMITTERS + usize::from(s < tasks % SUBMITTERS);
            tokio::spawn(async move {
                let by = Actor::new("bench", None);
                let mut latency = histogram();
                for _ in 0..count {
                    let t = Instant::now();
                    queue
                        .submit(&by, new_task())
                        .await
                        .unwrap_or_else(|e| panic!("submit: {e}"));
                    record(&mut latency, t.elapsed());
                }
                latency
            })
        })
        .collect();
    let claimers: Vec<_> = (0..workers)
        .map(|w| {
            let (queue, finish) = (queue.clone(), finish.clone());
            tokio::spawn(async move {
                let me = Actor::new("bench", Some(format!("c{w}")));
                let (mut claims, mut completes, mut empty) = (histogram(), histogram(), 0);
                while finish.pending() {
                    let t = Instant::now();
                    let claimed = queue
                        .claim_many(&me, batch, CLAIM_WAIT)
                        .await
                        .unwrap_or_else(|e| panic!("claim: {e}"));
                    if claimed.is_empty() {
                        empty += 1;
                        continue;
                    }
                    record(&mut claims, t.elapsed());
                    let t = Instant::now();
                    let completed = futures::future::join_all(
                        claimed
                            .iter()
                            .map(|c| queue.complete(&c.task_id, c.attempt, &me, None)),
                    )
                    .await;
                    record(&mut completes, t.elapsed());
                    for outcome in completed {
                        outcome.unwrap_or_else(|e| panic!("complete: {e}"));
                        finish.one();
                    }
                }
                (claims, completes, empty)
            })
        })
        .collect();
    finish.wait("vibehq").await;
    let completed_in = started.elapsed();
    let last = log
        .stream_info(StreamKind::Tasks)
        .await
        .unwrap_or_else(|e| panic!("tasks stream info: {e}"))
        .state
        .last_sequence;
    caught_up(&handle, last).await;
    let elapsed = started.elapsed();
    let cpu = Cpu::now().since(&cpu);
    let (sent_now, received_now) = messages(&client);

    let mut submit = histogram();
    for submitter in submitters {
        add(
            &mut submit,
            &submitter.await.unwrap_or_else(|e| panic!("submitter: {e}")),
        );
    }
    let (take, finishes, empty) = gather(claimers, "worker").await;
    stop.cancel();
    let _ = dispatcher.await;
    let _ = projection.await;
    Run {
        rate: rate(tasks, elapsed),
        completed_in,
        projection_lag: elapsed - completed_in,
        take,
        finish: finishes,
        submit,
        empty,
        cpu,
        sent: sent_now - sent,
        received: received_now - received,
    }
}

/// Idle claimers: W claimers wait in `Queue::claim` while tasks arrive one at a time, well
/// below capacity; measures submit-to-claim latency and what each task costs when claimers
/// race for it.
async fn trickle(workers: usize) -> Run {
    let nats = NatsServer::start().await;
    let client = nats.connect().await;
    let log = EventLog::new(client.clone());
    log.ensure_streams(1)
        .await
        .unwrap_or_else(|e| panic!("streams: {e}"));
    let queue = Queue::new(log.clone(), vibehq_queue::Options::default())
        .await
        .unwrap_or_else(|e| panic!("queue: {e}"));
    let stop = CancellationToken::new();
    let dispatcher = tokio::spawn(vibehq_queue::dispatch::run(log.clone(), stop.clone()));
    let by = Actor::new("bench", None);
    let warm = Actor::new("bench", Some("warm-up".into()));
    queue
        .submit(&by, new_task())
        .await
        .unwrap_or_else(|e| panic!("warm-up submit: {e}"));
    let claim = queue
        .claim(&warm, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("warm-up claim: {e}"))
        .unwrap_or_else(|| panic!("warm-up task never became claimable"));
    queue
        .complete(&claim.task_id, claim.attempt, &warm, None)
        .await
        .unwrap_or_else(|e| panic!("warm-up complete: {e}"));

    let submitted_at: Arc<Vec<std::sync::OnceLock<Instant>>> = Arc::new(
        (0..TRICKLE_TASKS)
            .map(|_| std::sync::OnceLock::new())
            .collect(),
    );
    let finish = Finish::new(TRICKLE_TASKS);
    let claimers: Vec<_> = (0..workers)
        .map(|w| {
            let (queue, finish, submitted_at) =
                (queue.clone(), finish.clone(), submitted_at.clone());
            tokio::spawn(async move {
                let me = Actor::new("bench", Some(format!("c{w}")));
                let (mut latency, mut empty) = (histogram(), 0);
                while finish.pending() {
                    let claim = queue
                        .claim(&me, CLAIM_WAIT)
                        .await
                        .unwrap_or_else(|e| panic!("claim: {e}"));
                    let Some(claim) = claim else {
                        empty += 1;
                        continue;
                    };
                    // The task's index travels in its type.
                    let at = claim
                        .task_type
                        .strip_prefix("trickle-")
                        .and_then(|i| i.parse::<usize>().ok())
                        .and_then(|i| submitted_at.get(i))
                        .and_then(|at| at.get())
                        .unwrap_or_else(|| panic!("claimed a task this run did not submit"));
                    record(&mut latency, at.elapsed());
                    queue
                        .complete(&claim.task_id, claim.attempt, &me, None)
                        .await
                        .unwrap_or_else(|e| panic!("complete: {e}"));
                    finish.one();
                }
                (latency, empty)
            })
        })
        .collect();
    // Let the claimers settle into waiting.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (sent, received) = messages(&client);
    let cpu = Cpu::now();
    let mut every = tokio::time::interval(TRICKLE_EVERY);
    for (i, at) in submitted_at.iter().enumerate() {
        every.tick().await;
        let _ = at.set(Instant::now());
        queue
            .submit(
                &by,
                NewTask {
                    task_type: format!("trickle-{i}"),
                    ..new_task()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("submit: {e}"));
    }
    finish.wait("idle claimers").await;
    let cpu = Cpu::now().since(&cpu);
    let (sent_now, received_now) = messages(&client);
    let (mut take, mut empty) = (histogram(), 0);
    for claimer in claimers {
        let (l, e) = claimer.await.unwrap_or_else(|e| panic!("worker: {e}"));
        add(&mut take, &l);
        empty += e;
    }
    stop.cancel();
    let _ = dispatcher.await;
    Run {
        rate: 0.0,
        completed_in: Duration::ZERO,
        projection_lag: Duration::ZERO,
        take,
        finish: histogram(),
        submit: histogram(),
        empty,
        cpu,
        sent: sent_now - sent,
        received: received_now - received,
    }
}

/// One worker count's figures at `batch` tasks per claim (and per raw pull).
fn report(workers: usize, tasks: usize, row: &Row, batch: usize) {
    let Row {
        raw,
        floor,
        layout,
        vibehq,
    } = row;
    let per_task = |count: u64| count as f64 / tasks as f64;
    let slow = |h: &Histogram<u64>| {
        100.0 * h.count_between(10_000, u64::MAX) as f64 / h.len().max(1) as f64
    };
    println!("— W = {workers}, up to {batch} per claim");
    line("raw JetStream round trip", raw.rate, "tasks/s", None);
    line(
        "design floor (its JetStream operations alone)",
        floor.rate,
        "tasks/s",
        Some(("raw round trip", raw.rate)),
    );
    line(
        "  the same through a dispatcher + work stream",
        layout.rate,
        "tasks/s",
        Some(("design floor", floor.rate)),
    );
    line(
        "vibehq submit→claim→complete→projected",
        vibehq.rate,
        "tasks/s",
        Some(("raw round trip", raw.rate)),
    );
    line(
        "  vibehq against the design floor",
        vibehq.rate,
        "tasks/s",
        Some(("design floor", floor.rate)),
    );
    for (name, histogram) in [
        ("  vibehq claim latency", &vibehq.take),
        ("  vibehq complete latency", &vibehq.finish),
        ("  vibehq submit latency", &vibehq.submit),
        ("  raw pull latency", &raw.take),
        ("  raw ack + completion latency", &raw.finish),
    ] {
        println!("{name:<44} {}", percentiles(histogram));
    }
    println!(
        "{:<44} {:.1}% of claims ≥ 10 ms, {} ≥ 1 s; {} empty claims; last completion at {:.2} s, projected {:.0} ms later",
        "  vibehq claim stalls",
        slow(&vibehq.take),
        vibehq.take.count_between(1_000_000, u64::MAX),
        vibehq.empty,
        vibehq.completed_in.as_secs_f64(),
        vibehq.projection_lag.as_secs_f64() * 1000.0,
    );
    println!(
        "{:<44} vibehq {}; floor {}; floor via work stream {}; raw {}",
        "  CPU per task",
        vibehq.cpu.per(tasks),
        floor.cpu.per(tasks),
        layout.cpu.per(tasks),
        raw.cpu.per(tasks),
    );
    println!(
        "{:<44} vibehq {:.1} out + {:.1} in; floor {:.1} + {:.1}; via work stream {:.1} + {:.1}; raw {:.1} + {:.1}",
        "  NATS messages per task (client)",
        per_task(vibehq.sent),
        per_task(vibehq.received),
        per_task(floor.sent),
        per_task(floor.received),
        per_task(layout.sent),
        per_task(layout.received),
        per_task(raw.sent),
        per_task(raw.received),
    );
}

/// One operation's figures in the profile.
#[derive(Debug)]
struct Op {
    latency: Histogram<u64>,
    cpu: Cpu,
    count: usize,
}

/// Runs `op` `count` times, one after the other, timing each and the CPU all of them cost.
async fn measure(count: usize, mut op: impl AsyncFnMut(usize)) -> Op {
    let mut latency = histogram();
    let cpu = Cpu::now();
    for i in 0..count {
        let t = Instant::now();
        op(i).await;
        record(&mut latency, t.elapsed());
    }
    Op {
        latency,
        cpu: Cpu::now().since(&cpu),
        count,
    }
}

/// Times the NATS operations that `Queue::claim` and `Queue::complete` are made of (read off
/// services/queue/src/queue.rs and aggregate.rs), and the calls themselves: `samples` calls of
/// each, one at a time, on an idle server with `samples` tasks pending and `filler` other task
/// events already in the tasks stream.
///
/// `Queue` keeps the tasks it has loaded (`known`) and reads only newer events on the next
/// load, so the folds are timed on a second `Queue` (`probe`) whose cache goes through the
/// same states as the claiming queue's: empty before the claim, at the submission before the
/// completion.
async fn profile(samples: usize, filler: usize) -> Vec<(&'static str, Op)> {
    let nats = NatsServer::start().await;
    let client = nats.connect().await;
    let log = EventLog::new(client.clone());
    log.ensure_streams(1)
        .await
        .unwrap_or_else(|e| panic!("streams: {e}"));
    for (i, start) in (0..filler).step_by(10_000).enumerate() {
        let events: Vec<Envelope> =
            fixtures::task_workload((filler - start).min(10_000), &format!("filler{i}"))
                .into_iter()
                .filter(|e| e.kind() != EventKind::TaskSubmitted)
                .collect();
        log.append_all(&events)
            .await
            .unwrap_or_else(|e| panic!("filler: {e}"));
    }
    let queue = Queue::new(log.clone(), vibehq_queue::Options::default())
        .await
        .unwrap_or_else(|e| panic!("queue: {e}"));
    let probe = Queue::new(log.clone(), vibehq_queue::Options::default())
        .await
        .unwrap_or_else(|e| panic!("queue: {e}"));
    let js = log.jetstream().clone();
    let tasks_stream = js
        .get_stream(StreamKind::Tasks.name())
        .await
        .unwrap_or_else(|e| panic!("tasks stream: {e}"));
    let mut work_stream = js
        .get_stream(work::STREAM)
        .await
        .unwrap_or_else(|e| panic!("work stream: {e}"));
    let mut ops = Vec::new();

    // Submit the backlog, let the dispatcher carry it into the work stream, then stop it so
    // it does not take part in what follows.
    let stop = CancellationToken::new();
    let dispatcher = tokio::spawn(vibehq_queue::dispatch::run(log.clone(), stop.clone()));
    let by = Actor::new("bench", None);
    let mut submitted = Vec::with_capacity(samples);
    let op = measure(samples, async |_| {
        let s = queue
            .submit(&by, new_task())
            .await
            .unwrap_or_else(|e| panic!("submit: {e}"));
        submitted.push((Subject::Task(s.task_id.clone()).to_string(), s));
    })
    .await;
    ops.push(("submit: append, expect new (1)", op));
    let deadline = Instant::now() + TIMEOUT;
    while work_stream
        .info()
        .await
        .unwrap_or_else(|e| panic!("work stream info: {e}"))
        .state
        .messages
        < samples as u64
    {
        assert!(Instant::now() < deadline, "dispatcher did not keep up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    let _ = dispatcher.await;

    // What a claim and a completion are made of.
    let refresh = measure(samples, async |_| {
        let mut pending = work_stream
            .info_with_subjects(work::SUBJECTS)
            .await
            .unwrap_or_else(|e| panic!("stream info: {e}"));
        while let Some(entry) = pending.next().await {
            entry.unwrap_or_else(|e| panic!("stream info: {e}"));
        }
    })
    .await;
    let fetch = fetch_and_ack(&js, samples).await;
    let fold = measure(samples, async |i| {
        probe
            .load(&submitted[i].1.task_id)
            .await
            .unwrap_or_else(|e| panic!("load: {e}"));
    })
    .await;

    // The calls themselves, draining the backlog one task at a time, as a waiting claimer
    // does (its hints say where the work is; the stream is read once a second).
    let me = Actor::new("bench", Some("c0".into()));
    let mut claims = Vec::with_capacity(samples);
    let claim = measure(samples, async |_| {
        claims.push(
            queue
                .claim(&me, CLAIM_WAIT)
                .await
                .unwrap_or_else(|e| panic!("claim: {e}"))
                .unwrap_or_else(|| panic!("the backlog ran out")),
        );
    })
    .await;
    let mut completed_at = Vec::with_capacity(samples);
    let complete = measure(samples, async |i| {
        completed_at.push(
            queue
                .complete(&claims[i].task_id, claims[i].attempt, &me, None)
                .await
                .unwrap_or_else(|e| panic!("complete: {e}")),
        );
    })
    .await;
    // An append expecting a version, as claim and complete make (a refusal, harmless here).
    let append = measure(samples, async |i| {
        let refused = Envelope::new(
            "bench",
            task::ResultRefused {
                task_id: claims[i].task_id.clone(),
                attempt: claims[i].attempt,
                outcome: "completed".into(),
                reason: "profile".into(),
            },
        );
        log.append(&refused, Expect::Version(completed_at[i]))
            .await
            .unwrap_or_else(|e| panic!("append: {e}"));
    })
    .await;
    ops.push(("claim, waiting claimer (2)", claim));
    ops.push(("  pull 1 (10 ms expiry) + ack (1)", fetch));
    ops.push(("  append, expect version (1)", append));
    ops.push(("complete (1 + ack)", complete));
    ops.push(("work stream info + subjects, 1/s (1)", refresh));
    ops.push(("fold a task, not cached: last + next (2)", fold));

    // Direct gets, on tasks with 4 events now.
    let op = measure(samples, async |i| {
        tasks_stream
            .direct_get_last_for_subject(submitted[i].0.as_str())
            .await
            .unwrap_or_else(|e| panic!("direct get: {e}"));
    })
    .await;
    ops.push(("direct get: last for subject (1)", op));
    let op = measure(samples, async |i| {
        tasks_stream
            .direct_get_next_for_subject(submitted[i].0.as_str(), Some(1))
            .await
            .unwrap_or_else(|e| panic!("direct get: {e}"));
    })
    .await;
    ops.push(("direct get: next for subject from 1 (1)", op));
    let op = measure(samples, async |i| {
        tasks_stream
            .direct_get_next_for_subject(submitted[i].0.as_str(), Some(submitted[i].1.sequence + 1))
            .await
            .unwrap_or_else(|e| panic!("direct get: {e}"));
    })
    .await;
    ops.push(("direct get: next for subject from submit + 1 (1)", op));
    let op = measure(samples, async |i| {
        tasks_stream
            .direct_get(completed_at[i])
            .await
            .unwrap_or_else(|e| panic!("direct get: {e}"));
    })
    .await;
    ops.push(("direct get: by sequence (1)", op));
    ops
}

/// A waiting pull of one message with a 10 ms expiry and its ack, as a claim makes, on a scratch work-queue stream with a backlog of `samples`.
async fn fetch_and_ack(js: &jetstream::Context, samples: usize) -> Op {
    let scratch = js
        .create_stream(stream::Config {
            name: "BENCH_FETCH".into(),
            subjects: vec!["bench.fetch.>".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("scratch stream: {e}"));
    let mut acks = VecDeque::new();
    for i in 0..samples {
        let message = PublishMessage::build().payload(format!("{i}").into());
        let ack = js
            .send_publish("bench.fetch.any", message)
            .await
            .unwrap_or_else(|e| panic!("scratch publish: {e}"));
        acks.push_back(ack);
    }
    for ack in acks {
        ack.await.unwrap_or_else(|e| panic!("scratch ack: {e}"));
    }
    let consumer: consumer::PullConsumer = scratch
        .create_consumer(consumer::pull::Config {
            durable_name: Some("fetch".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("scratch consumer: {e}"));
    let op = measure(samples, async |_| {
        let mut batch = consumer
            .batch()
            .max_messages(1)
            .expires(Duration::from_millis(10))
            .messages()
            .await
            .unwrap_or_else(|e| panic!("fetch: {e}"));
        while let Some(message) = batch.next().await {
            message
                .unwrap_or_else(|e| panic!("fetch: {e}"))
                .ack()
                .await
                .unwrap_or_else(|e| panic!("ack: {e}"));
        }
    })
    .await;
    let _ = js.delete_stream("BENCH_FETCH").await;
    op
}
