//! Task queue throughput and claim latency, against the raw JetStream round trip measured on
//! the same server in the same run.
//!
//! For each worker count W (1, 4, 16), on a fresh nats-server, each at 1 and at 16 tasks per
//! claim (pull):
//! - **raw round trip** (the ceiling): a producer publishes N work messages to a work-queue
//!   stream (pipelined); W workers pull from one durable consumer, ack, and publish a
//!   completion to a limits stream. One per pull: each completion's ack is awaited before the
//!   next pull; 16 per pull: completions are pipelined. The least any queue on JetStream does.
//! - **design floor**: the design's own JetStream operations with no vibehq code: submissions
//!   stored as atomic batches of 1,000 on their lane's subject (each expecting its task new),
//!   W workers sharing pulls from the lane's consumer (as a vibehq process's claimers do) and
//!   appending `assigned` (expecting the submission) then `completed` (expecting `assigned`)
//!   and acking, results reported while the next claim runs, as vibehq's workers do; and a
//!   reader decoding every event, as the projector does, writing nothing. No implementation of
//!   the design should pass it here.
//! - **vibehq**: `Queue::submit_many` in requests of 1,000 (bulk, as BullMQ's benchmark adds its
//!   jobs), W loops of `Queue::claim_many` with each result reported by `Queue::complete` while
//!   the loop claims on (as the worker agent does), and the live SQLite projector; timed from the
//!   first submission until every task is completed and projected; and the same with no
//!   projector, so the report shows what projecting into SQLite costs.
//!
//! Then, at half of vibehq's one-per-claim peak with W = 4, tasks are submitted one at a time at
//! a steady rate while the claimers wait: the time from submitting a task to a claimer holding
//! it (p50/p99), with the projector running. CPU is read from `/proc` for this process and the
//! nats-server, NATS messages from the client's statistics.
//!
//! `cargo bench -p vibehq-benches --bench queue`; size: `VIBEHQ_BENCH_TASKS` (default 20,000 per
//! run); `VIBEHQ_BENCH_WORKERS=4` runs one worker count; `VIBEHQ_BENCH_PROFILE=1` runs vibehq
//! alone, again and again, for a profiler to watch; `TOKIO_WORKER_THREADS` sets the runtime's
//! threads (default: one per core).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use futures::StreamExt;
use hdrhistogram::Histogram;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use vibehq_benches::{Cpu, histogram, percentiles, rate, record, size};
use vibehq_events::{Actor, Envelope, EventLog, PIPELINE, StreamKind, task};
use vibehq_projector::{Handle, Projector};
use vibehq_queue::{NewTask, Queue};
use vibehq_test_support::NatsServer;

/// Worker counts (one only with `VIBEHQ_BENCH_WORKERS`).
const WORKERS: [usize; 3] = [1, 4, 16];
/// Tasks per claim (and per raw pull) in the batched runs.
const BATCH: usize = 16;
/// Tasks per bulk submission.
const BULK: usize = 1000;
/// How long a claim or a pull waits for work.
const WAIT: Duration = Duration::from_millis(250);
/// Results a worker has in flight while it claims on.
const REPORTS: usize = 256;
/// The paced run: how many tasks, and at which worker count.
const PACED_TASKS: usize = 3000;
const PACED_WORKERS: usize = 4;
/// Longest any phase may take.
const TIMEOUT: Duration = Duration::from_secs(600);

fn main() {
    vibehq_benches::block_on(run());
}

async fn run() {
    let tasks = size("VIBEHQ_BENCH_TASKS", 20_000).max(BULK);
    let workers = match size("VIBEHQ_BENCH_WORKERS", 0) {
        0 => WORKERS.to_vec(),
        one => vec![one],
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = std::env::var("TOKIO_WORKER_THREADS").unwrap_or_else(|_| cores.to_string());
    let server = tokio::process::Command::new("nats-server")
        .arg("--version")
        .output()
        .await
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|e| format!("nats-server: {e}"));
    println!(
        "queue benchmark: {tasks} tasks per run, {server} on loopback, {cores} cores, {threads} \
         runtime threads (TOKIO_WORKER_THREADS)\n\
         - raw: publish → W × (pull → ack → publish a completion); 1 per pull awaits each \
         completion, {BATCH} per pull pipelines them\n\
         - floor: atomic batches of {BULK} submissions → W × (pull → `assigned` expecting the \
         submission → `completed` expecting it → ack, results pipelined) → a reader of every \
         event\n\
         - vibehq: Queue::submit_many ({BULK} per request) → W × (Queue::claim_many → \
         Queue::complete, results pipelined) → live projector; until completed and projected\n"
    );
    if size("VIBEHQ_BENCH_PROFILE", 0) > 0 {
        let nats = NatsServer::start().await;
        for (round, per_claim) in [1, BATCH].into_iter().cycle().take(6).enumerate() {
            let run = end_to_end(&nats, tasks, workers[0], per_claim, round, true).await;
            println!(
                "vibehq, {per_claim} per claim: {:.0} tasks/s, {} per task",
                run.rate,
                run.cpu.per(tasks)
            );
        }
        return;
    }
    let mut rows = Vec::new();
    for &w in &workers {
        let nats = NatsServer::start().await;
        for per_claim in [1, BATCH] {
            let row = Row {
                workers: w,
                per_claim,
                raw: raw_round_trip(&nats, tasks, w, per_claim).await,
                floor: floor(&nats, tasks, w, per_claim).await,
                vibehq: end_to_end(&nats, tasks, w, per_claim, 0, true).await,
                unprojected: end_to_end(&nats, tasks, w, per_claim, 1, false).await,
            };
            row.report(tasks);
            rows.push(row);
        }
    }
    summary(&rows, tasks);

    let Some(peak) = rows
        .iter()
        .find(|r| r.workers == PACED_WORKERS && r.per_claim == 1)
        .map(|r| r.vibehq.rate)
    else {
        return;
    };
    let paced_rate = peak / 2.0;
    let nats = NatsServer::start().await;
    let (waited, claims) = paced(&nats, PACED_TASKS, PACED_WORKERS, paced_rate).await;
    println!(
        "\nat half the peak: {PACED_TASKS} tasks submitted one at a time at {paced_rate:.0}/s \
         (half of W = {PACED_WORKERS}'s {peak:.0}), {PACED_WORKERS} claimers waiting, projector \
         running\nsubmit → claimed      {}\nclaim calls (a task) {}\n{:.1}% of tasks waited ≥ 5 ms",
        percentiles(&waited),
        percentiles(&claims),
        100.0 * waited.count_between(5_000, u64::MAX) as f64 / waited.len().max(1) as f64,
    );
}

/// One worker count and claim size: the ceiling, the design's floor, and vibehq.
#[derive(Debug)]
struct Row {
    workers: usize,
    per_claim: usize,
    raw: Run,
    floor: Run,
    vibehq: Run,
    /// vibehq without its projector: what projecting costs is the difference.
    unprojected: Run,
}

/// What one run measured.
#[derive(Debug)]
struct Run {
    rate: f64,
    /// Claims (pulls) that returned work.
    take: Histogram<u64>,
    /// Completions (raw: ack and completion publish).
    finish: Histogram<u64>,
    /// Takes that found nothing within their wait.
    empty: usize,
    cpu: Cpu,
    /// NATS messages sent and received by the client connection(s).
    sent: u64,
    received: u64,
}

impl Row {
    fn report(&self, tasks: usize) {
        println!(
            "W = {}, {} per claim ({tasks} tasks)",
            self.workers, self.per_claim
        );
        for (name, run) in [
            ("raw round trip", &self.raw),
            ("design floor", &self.floor),
            ("vibehq", &self.vibehq),
            ("vibehq, no proj.", &self.unprojected),
        ] {
            println!(
                "  {name:<15} {:>8.0} tasks/s  {:>5.1}% of raw  take {}\n  {:<15} {:>25} finish {}\n  {:<15} {:>25} {} per task; NATS messages {:.1} out + {:.1} in per task; {} empty takes",
                run.rate,
                100.0 * run.rate / self.raw.rate.max(1e-9),
                percentiles(&run.take),
                "",
                "",
                percentiles(&run.finish),
                "",
                "",
                run.cpu.per(tasks),
                run.sent as f64 / tasks as f64,
                run.received as f64 / tasks as f64,
                run.empty,
            );
        }
    }
}

fn summary(rows: &[Row], tasks: usize) {
    println!(
        "\nsummary ({tasks} tasks per run; a claim takes up to `per claim` tasks, and the raw round trip pulls as many)"
    );
    println!(
        "{:>7} {:>9} {:>12} {:>10} {:>7} {:>10} {:>9} {:>12} {:>12} {:>12}",
        "workers",
        "per claim",
        "vibehq/s",
        "raw/s",
        "ratio",
        "floor/s",
        "floor/raw",
        "vibehq/floor",
        "claim p50 ms",
        "claim p99 ms",
    );
    for row in rows {
        let ms = |q: f64| row.vibehq.take.value_at_quantile(q) as f64 / 1000.0;
        let percent = |a: f64, b: f64| 100.0 * a / b.max(1e-9);
        println!(
            "{:>7} {:>9} {:>12.0} {:>10.0} {:>6.1}% {:>10.0} {:>8.1}% {:>11.1}% {:>12.3} {:>12.3}",
            row.workers,
            row.per_claim,
            row.vibehq.rate,
            row.raw.rate,
            percent(row.vibehq.rate, row.raw.rate),
            row.floor.rate,
            percent(row.floor.rate, row.raw.rate),
            percent(row.vibehq.rate, row.floor.rate),
            ms(0.5),
            ms(0.99),
        );
    }
}

/// Counts finished tasks and wakes the timer at the last one.
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

    fn add(&self, n: usize) {
        let before = self.done.fetch_add(n, Ordering::AcqRel);
        if before < self.target && before + n >= self.target {
            self.last.notify_one();
        }
    }

    async fn wait(&self, what: &str) {
        let done = self.last.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        if !self.pending() {
            return;
        }
        if tokio::time::timeout(TIMEOUT, done).await.is_err() {
            panic!(
                "{what}: only {} of {} done in {TIMEOUT:?}",
                self.done.load(Ordering::Acquire),
                self.target
            );
        }
    }
}

/// What a set of workers measured, merged.
#[derive(Debug)]
struct Measured {
    take: Histogram<u64>,
    finish: Histogram<u64>,
    empty: usize,
}

impl Measured {
    fn new() -> Self {
        Self {
            take: histogram(),
            finish: histogram(),
            empty: 0,
        }
    }

    fn merge(&mut self, other: Measured) {
        add(&mut self.take, &other.take);
        add(&mut self.finish, &other.finish);
        self.empty += other.empty;
    }
}

/// The shared view of a run's result timings, for results reported in the background.
type Finishes = Arc<Mutex<Histogram<u64>>>;

/// Called with each claimed task's id (the paced run times its tasks' waits with it).
type OnClaim = Arc<dyn Fn(&str) + Send + Sync>;

fn add(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    into.add(from)
        .unwrap_or_else(|e| panic!("merge histograms: {e}"));
}

async fn gather(workers: Vec<tokio::task::JoinHandle<Measured>>, what: &str) -> Measured {
    let mut all = Measured::new();
    for worker in workers {
        all.merge(worker.await.unwrap_or_else(|e| panic!("{what}: {e}")));
    }
    all
}

/// Messages sent and received by `client` so far.
fn messages(client: &async_nats::Client) -> (u64, u64) {
    let stats = client.statistics();
    (
        stats.out_messages.load(Ordering::Relaxed),
        stats.in_messages.load(Ordering::Relaxed),
    )
}

/// Starts the clock: CPU and message counts now.
struct Clock {
    started: Instant,
    cpu: Cpu,
    counts: Vec<(async_nats::Client, (u64, u64))>,
}

impl Clock {
    fn start(clients: &[&async_nats::Client]) -> Self {
        Self {
            counts: clients
                .iter()
                .map(|c| ((*c).clone(), messages(c)))
                .collect(),
            cpu: Cpu::now(),
            started: Instant::now(),
        }
    }

    fn stop(self, tasks: usize, measured: Measured) -> Run {
        let elapsed = self.started.elapsed();
        let (mut sent, mut received) = (0, 0);
        for (client, (out, into)) in &self.counts {
            let (out_now, in_now) = messages(client);
            sent += out_now - out;
            received += in_now - into;
        }
        Run {
            rate: rate(tasks, elapsed),
            take: measured.take,
            finish: measured.finish,
            empty: measured.empty,
            cpu: Cpu::now().since(&self.cpu),
            sent,
            received,
        }
    }
}

/// The raw ceiling: publish → pull → ack → publish a completion, with no vibehq code.
async fn raw_round_trip(nats: &NatsServer, tasks: usize, workers: usize, batch: usize) -> Run {
    let client = nats.connect().await;
    let js = jetstream::new(client.clone());
    let work = js
        .create_stream(stream::Config {
            name: "RAW_WORK".into(),
            subjects: vec!["raw.work.>".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("raw work stream: {e}"));
    js.create_stream(stream::Config {
        name: "RAW_DONE".into(),
        subjects: vec!["raw.done.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("raw completion stream: {e}"));
    let consumer: consumer::PullConsumer = work
        .create_consumer(consumer::pull::Config {
            durable_name: Some("raw".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 100_000,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("raw consumer: {e}"));
    let completion: bytes::Bytes = encode(&Actor::worker("bench").envelope(task::Completed {
        task_id: "0197a3c2-5b1e-7c4d-9e8f-0a1b2c3d4e5f".into(),
        attempt: 1,
        output: None,
    }));

    let finish = Finish::new(tasks);
    let clock = Clock::start(&[&client]);
    let producer = tokio::spawn({
        let js = js.clone();
        async move {
            let mut acks = std::collections::VecDeque::new();
            for i in 0..tasks {
                let item = format!(r#"{{"task_id":"0197a3c2-5b1e-7c4d-9e8f-{i:012x}"}}"#);
                let publish = PublishMessage::build()
                    .payload(item.into())
                    .message_id(format!("work-{i}"));
                let ack = js
                    .send_publish("raw.work.p0.any", publish)
                    .await
                    .unwrap_or_else(|e| panic!("raw publish: {e}"));
                acks.push_back(ack);
                if acks.len() == PIPELINE
                    && let Some(ack) = acks.pop_front()
                {
                    ack.await.unwrap_or_else(|e| panic!("raw publish ack: {e}"));
                }
            }
            for ack in acks {
                ack.await.unwrap_or_else(|e| panic!("raw publish ack: {e}"));
            }
        }
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
                let mut measured = Measured::new();
                let reports = Arc::new(Semaphore::new(REPORTS));
                while finish.pending() {
                    let t = Instant::now();
                    let mut pulled = consumer
                        .batch()
                        .max_messages(batch)
                        .expires(WAIT)
                        .messages()
                        .await
                        .unwrap_or_else(|e| panic!("raw pull: {e}"));
                    let mut got = 0;
                    while let Some(message) = pulled.next().await {
                        let message = message.unwrap_or_else(|e| panic!("raw pull: {e}"));
                        if got == 0 {
                            record(&mut measured.take, t.elapsed());
                        }
                        got += 1;
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
                        let ack = js
                            .send_publish(format!("raw.done.{sequence}"), done)
                            .await
                            .unwrap_or_else(|e| panic!("raw completion: {e}"));
                        if batch == 1 {
                            ack.await
                                .unwrap_or_else(|e| panic!("raw completion ack: {e}"));
                            record(&mut measured.finish, t.elapsed());
                            finish.add(1);
                        } else {
                            let permit = reports
                                .clone()
                                .acquire_owned()
                                .await
                                .unwrap_or_else(|e| panic!("semaphore: {e}"));
                            let finish = finish.clone();
                            tokio::spawn(async move {
                                ack.await
                                    .unwrap_or_else(|e| panic!("raw completion ack: {e}"));
                                finish.add(1);
                                drop(permit);
                            });
                        }
                    }
                    if got == 0 {
                        measured.empty += 1;
                    }
                }
                measured
            })
        })
        .collect();
    finish.wait("raw round trip").await;
    let measured = gather(pullers, "raw worker").await;
    let run = clock.stop(tasks, measured);
    producer
        .await
        .unwrap_or_else(|e| panic!("raw producer: {e}"));
    let _ = js.delete_stream("RAW_WORK").await;
    let _ = js.delete_stream("RAW_DONE").await;
    run
}

fn encode(event: &Envelope) -> bytes::Bytes {
    event
        .encode()
        .unwrap_or_else(|e| panic!("encode: {e}"))
        .into()
}

/// Headers of a floor append: the version it expects of its task (a conditional append needs
/// no message id: a retry of a stored one fails its expectation).
fn expecting(task: &str, version: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        "Nats-Expected-Last-Subject-Sequence",
        version.to_string().as_str(),
    );
    headers.insert(
        "Nats-Expected-Last-Subject-Sequence-Subject",
        format!("floor.{task}.>").as_str(),
    );
    headers
}

/// The design's floor: the event-sourced queue in JetStream alone, with no vibehq code.
async fn floor(nats: &NatsServer, tasks: usize, workers: usize, batch: usize) -> Run {
    let client = nats.connect().await;
    let js = jetstream::new(client.clone());
    let events = js
        .create_stream(stream::Config {
            name: "FLOOR".into(),
            subjects: vec!["floor.>".into()],
            storage: stream::StorageType::File,
            allow_direct: true,
            allow_atomic_publish: true,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("floor stream: {e}"));
    let lane: consumer::PullConsumer = events
        .create_consumer(consumer::pull::Config {
            durable_name: Some("lane".into()),
            filter_subject: "floor.*.submitted.p0.any".into(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_deliver: 1000,
            max_ack_pending: 100_000,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("floor lane: {e}"));

    // A reader of every event, decoding each as the projector does.
    let read = Finish::new(3 * tasks);
    let reader = tokio::spawn({
        let (events, read) = (events.clone(), read.clone());
        async move {
            let ordered = events
                .create_consumer(consumer::pull::OrderedConfig::default())
                .await
                .unwrap_or_else(|e| panic!("floor reader: {e}"));
            let mut messages = ordered
                .messages()
                .await
                .unwrap_or_else(|e| panic!("floor reader: {e}"));
            while let Some(message) = messages.next().await {
                let message = message.unwrap_or_else(|e| panic!("floor read: {e}"));
                let _ = Envelope::decode(&message.payload);
                read.add(1);
                if !read.pending() {
                    return;
                }
            }
        }
    });

    let bench = Actor::worker("bench");
    let clock = Clock::start(&[&client]);
    let producer = tokio::spawn({
        let client = client.clone();
        async move {
            for chunk in 0..tasks.div_ceil(BULK) {
                let batch_id = format!("b{chunk}");
                let count = BULK.min(tasks - chunk * BULK);
                for i in 0..count {
                    let task_id = format!("t{chunk}-{i}");
                    let event = bench.envelope(task::Submitted {
                        task_id: task_id.clone(),
                        task_type: "health_audit".into(),
                        command: "audit".into(),
                        parameters: None,
                        priority: 0,
                        worker_name: None,
                        container_name: None,
                        max_attempts: 3,
                        idempotency_key: None,
                    });
                    let mut headers = expecting(&task_id, 0);
                    headers.insert("Nats-Batch-Id", batch_id.as_str());
                    headers.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
                    let subject = format!("floor.{task_id}.submitted.p0.any");
                    if i + 1 == count {
                        headers.insert("Nats-Batch-Commit", "1");
                        let ack = client
                            .request_with_headers(subject, headers, encode(&event))
                            .await
                            .unwrap_or_else(|e| panic!("floor commit: {e}"));
                        assert!(
                            !ack.payload.starts_with(b"{\"error"),
                            "floor batch refused: {}",
                            String::from_utf8_lossy(&ack.payload)
                        );
                    } else {
                        client
                            .publish_with_headers(subject, headers, encode(&event))
                            .await
                            .unwrap_or_else(|e| panic!("floor submit: {e}"));
                    }
                }
            }
        }
    });
    let finish = Finish::new(tasks);
    // The workers share pulls, as a vibehq process's claimers do: one pull asks for every
    // worker's batch, and each takes its share.
    let (deliveries, pulled) = tokio::sync::mpsc::channel(workers * batch);
    let pulled = Arc::new(tokio::sync::Mutex::new(pulled));
    let puller = tokio::spawn({
        let (lane, finish) = (lane.clone(), finish.clone());
        async move {
            while finish.pending() {
                let mut batch = lane
                    .batch()
                    .max_messages(workers * batch)
                    .expires(WAIT)
                    .messages()
                    .await
                    .unwrap_or_else(|e| panic!("floor pull: {e}"));
                while let Some(message) = batch.next().await {
                    let message = message.unwrap_or_else(|e| panic!("floor pull: {e}"));
                    if deliveries.send(message).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let pullers: Vec<_> = (0..workers)
        .map(|w| {
            let (js, pulled, finish) = (js.clone(), pulled.clone(), finish.clone());
            tokio::spawn(async move {
                let me = Actor::new("bench", Some(format!("c{w}")));
                let mut measured = Measured::new();
                let reports = Arc::new(Semaphore::new(REPORTS));
                let finishes: Finishes = Arc::new(Mutex::new(histogram()));
                while finish.pending() {
                    let t = Instant::now();
                    let mut share = Vec::with_capacity(batch);
                    {
                        let mut pulled = pulled.lock().await;
                        match tokio::time::timeout(WAIT, pulled.recv()).await {
                            Ok(Some(message)) => share.push(message),
                            Ok(None) => break,
                            Err(_) => {}
                        }
                        while share.len() < batch
                            && let Ok(message) = pulled.try_recv()
                        {
                            share.push(message);
                        }
                    }
                    // Claim every pulled submission: its `assigned`, pipelined, expecting it.
                    let mut claims = Vec::new();
                    for message in share {
                        let version = message
                            .info()
                            .unwrap_or_else(|e| panic!("floor metadata: {e}"))
                            .stream_sequence;
                        let task_id = message
                            .subject
                            .split('.')
                            .nth(1)
                            .unwrap_or_else(|| panic!("a task subject"))
                            .to_owned();
                        let assigned = me.envelope(task::Assigned {
                            task_id: task_id.clone(),
                            attempt: 1,
                            lease_ms: 30_000,
                            lease: message.reply.as_ref().map(|r| r.to_string()),
                        });
                        let publish = PublishMessage::build()
                            .payload(encode(&assigned))
                            .headers(expecting(&task_id, version));
                        let ack = js
                            .send_publish(format!("floor.{task_id}.assigned.bench.c{w}"), publish)
                            .await
                            .unwrap_or_else(|e| panic!("floor assign: {e}"));
                        claims.push((message, task_id, ack));
                    }
                    if claims.is_empty() {
                        measured.empty += 1;
                        continue;
                    }
                    let mut held = Vec::with_capacity(claims.len());
                    for (message, task_id, ack) in claims {
                        let ack = ack.await.unwrap_or_else(|e| panic!("floor assigned: {e}"));
                        held.push((message, task_id, ack.sequence));
                    }
                    record(&mut measured.take, t.elapsed());
                    // Report the results while pulling on.
                    for (message, task_id, version) in held {
                        let permit = reports
                            .clone()
                            .acquire_owned()
                            .await
                            .unwrap_or_else(|e| panic!("semaphore: {e}"));
                        let (js, me, finish, finishes) =
                            (js.clone(), me.clone(), finish.clone(), finishes.clone());
                        tokio::spawn(async move {
                            let t = Instant::now();
                            let completed = me.envelope(task::Completed {
                                task_id: task_id.clone(),
                                attempt: 1,
                                output: None,
                            });
                            let publish = PublishMessage::build()
                                .payload(encode(&completed))
                                .headers(expecting(&task_id, version));
                            js.send_publish(
                                format!("floor.{task_id}.completed.bench.c{w}"),
                                publish,
                            )
                            .await
                            .unwrap_or_else(|e| panic!("floor complete: {e}"))
                            .await
                            .unwrap_or_else(|e| panic!("floor completed: {e}"));
                            message
                                .ack()
                                .await
                                .unwrap_or_else(|e| panic!("floor ack: {e}"));
                            if let Ok(mut h) = finishes.lock() {
                                record(&mut h, t.elapsed());
                            }
                            finish.add(1);
                            drop(permit);
                        });
                    }
                }
                let _ = reports.acquire_many(REPORTS as u32).await;
                if let Ok(h) = finishes.lock() {
                    add(&mut measured.finish, &h);
                }
                measured
            })
        })
        .collect();
    finish.wait("floor").await;
    read.wait("floor reader").await;
    let measured = gather(pullers, "floor worker").await;
    puller.abort();
    let run = clock.stop(tasks, measured);
    producer
        .await
        .unwrap_or_else(|e| panic!("floor producer: {e}"));
    let _ = reader.await;
    let _ = js.delete_stream("FLOOR").await;
    run
}

fn new_task(key: Option<String>) -> NewTask {
    NewTask {
        task_type: "health_audit".into(),
        command: "audit".into(),
        max_attempts: 3,
        idempotency_key: key,
        ..Default::default()
    }
}

/// A vibehq process: the streams, a queue and a live projector on one connection, as
/// `vibehq up` has them.
struct Vibehq {
    client: async_nats::Client,
    log: EventLog,
    queue: Queue,
    /// The live projector, when the run has one.
    handle: Option<Handle>,
    stop: CancellationToken,
    projector:
        Option<tokio::task::JoinHandle<Result<vibehq_projector::Totals, vibehq_projector::Error>>>,
}

impl Vibehq {
    async fn start(nats: &NatsServer, name: &str, project: bool) -> Self {
        let client = nats.connect().await;
        let log = EventLog::new(client.clone());
        // Each run starts from empty streams.
        for kind in StreamKind::ALL {
            let _ = log.jetstream().delete_stream(kind.name()).await;
        }
        log.ensure_streams(1)
            .await
            .unwrap_or_else(|e| panic!("streams: {e}"));
        let queue = Queue::new(log.clone(), vibehq_queue::Options::default())
            .await
            .unwrap_or_else(|e| panic!("queue: {e}"));
        let database = nats.scratch().join(format!("{name}.sqlite3"));
        let stop = CancellationToken::new();
        let (projector, handle) = if project {
            let (projector, handle) =
                Projector::new(vibehq_projector::Options::new(&database), log.clone())
                    .unwrap_or_else(|e| panic!("projector: {e}"));
            (
                Some(tokio::spawn(projector.run(stop.clone()))),
                Some(handle),
            )
        } else {
            (None, None)
        };
        // One task through every step, so the lane's consumer exists before the clock runs.
        let warm = Actor::new("bench", Some("warm-up".into()));
        queue
            .submit(&Actor::worker("bench"), new_task(None))
            .await
            .unwrap_or_else(|e| panic!("warm-up submit: {e}"));
        let claim = queue
            .claim(&warm, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("warm-up claim: {e}"))
            .unwrap_or_else(|| panic!("the warm-up task was not claimable"));
        let sequence = queue
            .complete(&claim.task_id, None, &warm, None)
            .await
            .unwrap_or_else(|e| panic!("warm-up complete: {e}"));
        if let Some(handle) = &handle {
            caught_up(handle, sequence).await;
        }
        Self {
            client,
            log,
            queue,
            handle,
            stop,
            projector,
        }
    }

    async fn projected(&self) {
        let Some(handle) = &self.handle else { return };
        let last = self
            .log
            .stream_info(StreamKind::Tasks)
            .await
            .unwrap_or_else(|e| panic!("tasks stream: {e}"))
            .state
            .last_sequence;
        caught_up(handle, last).await;
    }

    async fn stop(self) {
        self.stop.cancel();
        if let Some(projector) = self.projector {
            let _ = projector.await;
        }
    }

    /// W claim loops: claim up to `batch`, report each result in the background, claim on.
    fn claimers(
        &self,
        workers: usize,
        batch: usize,
        finish: &Arc<Finish>,
        on_claim: Option<OnClaim>,
    ) -> Vec<tokio::task::JoinHandle<Measured>> {
        (0..workers)
            .map(|w| {
                let (queue, finish, on_claim) =
                    (self.queue.clone(), finish.clone(), on_claim.clone());
                tokio::spawn(async move {
                    let me = Actor::new("bench", Some(format!("c{w}")));
                    let mut measured = Measured::new();
                    let reports = Arc::new(Semaphore::new(REPORTS));
                    let finishes: Finishes = Arc::new(Mutex::new(histogram()));
                    while finish.pending() {
                        let t = Instant::now();
                        let claims = queue
                            .claim_many(&me, batch, WAIT)
                            .await
                            .unwrap_or_else(|e| panic!("claim: {e}"));
                        if claims.is_empty() {
                            measured.empty += 1;
                            continue;
                        }
                        record(&mut measured.take, t.elapsed());
                        for claim in claims {
                            if let Some(on_claim) = &on_claim {
                                on_claim(&claim.task_id);
                            }
                            let permit = reports
                                .clone()
                                .acquire_owned()
                                .await
                                .unwrap_or_else(|e| panic!("semaphore: {e}"));
                            let (queue, me, finish, finishes) =
                                (queue.clone(), me.clone(), finish.clone(), finishes.clone());
                            tokio::spawn(async move {
                                let t = Instant::now();
                                queue
                                    .complete(&claim.task_id, Some(claim.attempt), &me, None)
                                    .await
                                    .unwrap_or_else(|e| panic!("complete: {e}"));
                                if let Ok(mut h) = finishes.lock() {
                                    record(&mut h, t.elapsed());
                                }
                                finish.add(1);
                                drop(permit);
                            });
                        }
                    }
                    let _ = reports.acquire_many(REPORTS as u32).await;
                    if let Ok(h) = finishes.lock() {
                        add(&mut measured.finish, &h);
                    }
                    measured
                })
            })
            .collect()
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

/// vibehq end to end: bulk submissions → claims → completions → projected.
async fn end_to_end(
    nats: &NatsServer,
    tasks: usize,
    workers: usize,
    batch: usize,
    round: usize,
    project: bool,
) -> Run {
    // A fresh projection file each time: the streams start over too.
    let name = format!("queue-{workers}-{batch}-{round}");
    let vibehq = Vibehq::start(nats, &name, project).await;
    let finish = Finish::new(tasks);
    let clock = Clock::start(&[&vibehq.client]);
    let producer = tokio::spawn({
        let queue = vibehq.queue.clone();
        async move {
            let by = Actor::worker("bench");
            for chunk in 0..tasks.div_ceil(BULK) {
                let count = BULK.min(tasks - chunk * BULK);
                queue
                    .submit_many(&by, (0..count).map(|_| new_task(None)).collect())
                    .await
                    .unwrap_or_else(|e| panic!("submit: {e}"));
            }
        }
    });
    let claimers = vibehq.claimers(workers, batch, &finish, None);
    finish.wait("vibehq").await;
    let measured = gather(claimers, "vibehq worker").await;
    vibehq.projected().await;
    let run = clock.stop(tasks, measured);
    producer.await.unwrap_or_else(|e| panic!("producer: {e}"));
    vibehq.stop().await;
    run
}

/// Tasks submitted one at a time at `per_second` while `workers` claimers wait: how long each
/// task waited from its submission until a claimer held it, and the claim calls that got one.
async fn paced(
    nats: &NatsServer,
    tasks: usize,
    workers: usize,
    per_second: f64,
) -> (Histogram<u64>, Histogram<u64>) {
    let vibehq = Vibehq::start(nats, "paced", true).await;
    let submitted: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let waited = Arc::new(Mutex::new(histogram()));
    let on_claim: OnClaim = {
        let (submitted, waited) = (submitted.clone(), waited.clone());
        Arc::new(move |task_id: &str| {
            let at = submitted.lock().ok().and_then(|mut s| s.remove(task_id));
            if let (Some(at), Ok(mut waited)) = (at, waited.lock()) {
                record(&mut waited, at.elapsed());
            }
        })
    };
    let finish = Finish::new(tasks);
    let claimers = vibehq.claimers(workers, 1, &finish, Some(on_claim));
    let by = Actor::worker("bench");
    let started = Instant::now();
    for i in 0..tasks {
        let due = started + Duration::from_secs_f64(i as f64 / per_second);
        tokio::time::sleep_until(due.into()).await;
        let key = format!("paced-{i}");
        if let Ok(mut s) = submitted.lock() {
            s.insert(vibehq_queue::queue::keyed_task_id(&key), Instant::now());
        }
        vibehq
            .queue
            .submit(&by, new_task(Some(key)))
            .await
            .unwrap_or_else(|e| panic!("submit: {e}"));
    }
    finish.wait("paced").await;
    let measured = gather(claimers, "paced worker").await;
    vibehq.stop().await;
    let waited = waited
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| histogram());
    (waited, measured.take)
}
