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
//! Then **keyed**: vibehq end to end again at the largest worker count, each task naming one
//! of 100 concurrency keys (limit 1 each), against the unkeyed rate of the same run.
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

mod floor;
mod raw;
mod vibehq;

use floor::floor;
use raw::raw_round_trip;
use vibehq::{end_to_end, paced};

/// Worker counts (one only with `VIBEHQ_BENCH_WORKERS`).
const WORKERS: [usize; 3] = [1, 4, 16];
/// Concurrency keys in the keyed run.
const KEYS: usize = 100;
/// Tasks per claim (and per raw pull) in the batched runs.
pub(crate) const BATCH: usize = 16;
/// Tasks per bulk submission.
pub(crate) const BULK: usize = 1000;
/// How long a claim or a pull waits for work.
pub(crate) const WAIT: Duration = Duration::from_millis(250);
/// Results a worker has in flight while it claims on.
pub(crate) const REPORTS: usize = 256;
/// The paced run: how many tasks, and at which worker count.
const PACED_TASKS: usize = 3000;
const PACED_WORKERS: usize = 4;
/// Longest any phase may take.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(600);

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
            let run = end_to_end(&nats, tasks, workers[0], per_claim, round, true, 0).await;
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
                vibehq: end_to_end(&nats, tasks, w, per_claim, 0, true, 0).await,
                unprojected: end_to_end(&nats, tasks, w, per_claim, 1, false, 0).await,
            };
            row.report(tasks);
            rows.push(row);
        }
    }
    summary(&rows, tasks);

    // Concurrency keys: the same workload with each task naming one of KEYS keys (limit 1
    // each), against the unkeyed vibehq rate of the same run and worker count.
    println!("\n{KEYS} concurrency keys, limit 1 each (target: at least 50% of unkeyed)");
    for row in rows
        .iter()
        .filter(|r| r.workers == *workers.last().unwrap_or(&1))
    {
        let nats = NatsServer::start().await;
        let keyed = end_to_end(&nats, tasks, row.workers, row.per_claim, 2, true, KEYS).await;
        println!(
            "  W = {}, {} per claim: keyed {:.0} tasks/s vs unkeyed {:.0} tasks/s = {:.1}%; take {}; finish {}; {} per task; NATS messages {:.1} out per task",
            row.workers,
            row.per_claim,
            keyed.rate,
            row.vibehq.rate,
            100.0 * keyed.rate / row.vibehq.rate.max(1e-9),
            percentiles(&keyed.take),
            percentiles(&keyed.finish),
            keyed.cpu.per(tasks),
            keyed.sent as f64 / tasks as f64,
        );
    }

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
pub(crate) struct Row {
    pub(crate) workers: usize,
    pub(crate) per_claim: usize,
    pub(crate) raw: Run,
    pub(crate) floor: Run,
    pub(crate) vibehq: Run,
    /// vibehq without its projector: what projecting costs is the difference.
    pub(crate) unprojected: Run,
}

/// What one run measured.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) rate: f64,
    /// Claims (pulls) that returned work.
    pub(crate) take: Histogram<u64>,
    /// Completions (raw: ack and completion publish).
    pub(crate) finish: Histogram<u64>,
    /// Takes that found nothing within their wait.
    pub(crate) empty: usize,
    pub(crate) cpu: Cpu,
    /// NATS messages sent and received by the client connection(s).
    pub(crate) sent: u64,
    pub(crate) received: u64,
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
pub(crate) struct Finish {
    target: usize,
    done: AtomicUsize,
    last: Notify,
}

impl Finish {
    pub(crate) fn new(target: usize) -> Arc<Self> {
        Arc::new(Self {
            target,
            done: AtomicUsize::new(0),
            last: Notify::new(),
        })
    }

    pub(crate) fn pending(&self) -> bool {
        self.done.load(Ordering::Acquire) < self.target
    }

    pub(crate) fn add(&self, n: usize) {
        let before = self.done.fetch_add(n, Ordering::AcqRel);
        if before < self.target && before + n >= self.target {
            self.last.notify_one();
        }
    }

    pub(crate) async fn wait(&self, what: &str) {
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
pub(crate) struct Measured {
    pub(crate) take: Histogram<u64>,
    pub(crate) finish: Histogram<u64>,
    pub(crate) empty: usize,
}

impl Measured {
    pub(crate) fn new() -> Self {
        Self {
            take: histogram(),
            finish: histogram(),
            empty: 0,
        }
    }

    pub(crate) fn merge(&mut self, other: Measured) {
        add(&mut self.take, &other.take);
        add(&mut self.finish, &other.finish);
        self.empty += other.empty;
    }
}

/// The shared view of a run's result timings, for results reported in the background.
pub(crate) type Finishes = Arc<Mutex<Histogram<u64>>>;

/// Called with each claimed task's id (the paced run times its tasks' waits with it).
pub(crate) type OnClaim = Arc<dyn Fn(&str) + Send + Sync>;

pub(crate) fn add(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    into.add(from)
        .unwrap_or_else(|e| panic!("merge histograms: {e}"));
}

pub(crate) async fn gather(
    workers: Vec<tokio::task::JoinHandle<Measured>>,
    what: &str,
) -> Measured {
    let mut all = Measured::new();
    for worker in workers {
        all.merge(worker.await.unwrap_or_else(|e| panic!("{what}: {e}")));
    }
    all
}

/// Messages sent and received by `client` so far.
pub(crate) fn messages(client: &async_nats::Client) -> (u64, u64) {
    let stats = client.statistics();
    (
        stats.out_messages.load(Ordering::Relaxed),
        stats.in_messages.load(Ordering::Relaxed),
    )
}

/// Starts the clock: CPU and message counts now.
pub(crate) struct Clock {
    started: Instant,
    cpu: Cpu,
    counts: Vec<(async_nats::Client, (u64, u64))>,
}

impl Clock {
    pub(crate) fn start(clients: &[&async_nats::Client]) -> Self {
        Self {
            counts: clients
                .iter()
                .map(|c| ((*c).clone(), messages(c)))
                .collect(),
            cpu: Cpu::now(),
            started: Instant::now(),
        }
    }

    pub(crate) fn stop(self, tasks: usize, measured: Measured) -> Run {
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

pub(crate) fn encode(event: &Envelope) -> bytes::Bytes {
    event
        .encode()
        .unwrap_or_else(|e| panic!("encode: {e}"))
        .into()
}
