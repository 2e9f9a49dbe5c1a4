//! vibehq itself: a process with the streams, the queue and the projector, end to end and paced.

use super::*;

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

/// vibehq end to end: bulk submissions → claims → completions → projected. With `keys` > 0,
/// the tasks name one of that many concurrency keys in turn (each undeclared: one task at a
/// time).
pub(crate) async fn end_to_end(
    nats: &NatsServer,
    tasks: usize,
    workers: usize,
    batch: usize,
    round: usize,
    project: bool,
    keys: usize,
) -> Run {
    // A fresh projection file each time: the streams start over too.
    let name = format!("queue-{workers}-{batch}-{round}-{keys}");
    let vibehq = Vibehq::start(nats, &name, project).await;
    let finish = Finish::new(tasks);
    let clock = Clock::start(&[&vibehq.client]);
    let producer = tokio::spawn({
        let queue = vibehq.queue.clone();
        async move {
            let by = Actor::worker("bench");
            for chunk in 0..tasks.div_ceil(BULK) {
                let count = BULK.min(tasks - chunk * BULK);
                let task = |i: usize| NewTask {
                    concurrency_key: (keys > 0)
                        .then(|| format!("key-{}", (chunk * BULK + i) % keys)),
                    ..new_task(None)
                };
                queue
                    .submit_many(&by, (0..count).map(task).collect())
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
pub(crate) async fn paced(
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
