//! The worker agent: a container's loop that pulls tasks and runs them.
//!
//! It runs **only what its configuration allows**: a task names a command, and the worker maps
//! that name to an executable and fixed arguments from its allow-list. A submitted task never
//! supplies a shell line, so a queue cannot be turned into remote code execution; a task whose
//! command is not allowed fails for good with that reason.
//!
//! The worker keeps its `concurrency` slots busy: one loop claims as many tasks as slots are
//! free (in one claim), each task runs in its own slot, and a slot is free again the moment its
//! program exits: the result is reported while the next task already runs, so no slot idles for
//! a round trip.
//!
//! For each task, the worker starts the executable with the task's parameters as JSON on stdin
//! and (up to 32 KiB each) as `VIBEHQ_PARAM_<NAME>` environment variables (and, when traced,
//! the run's W3C trace context as `TRACEPARENT`), logs its output as it comes, heartbeats to
//! keep the lease, kills it at the task's timeout, and reports the result of its attempt. A
//! cancelled task's program is killed as soon as the queue's cancel notice arrives; a refused
//! heartbeat means the task moved on (its lease expired, or a notice was lost): the worker
//! kills the process and drops the task. On shutdown it stops claiming and lets running
//! tasks finish for a grace period; what still runs then is killed and reported failed for
//! this attempt (retried elsewhere while attempts remain).
//!
//! # Layout
//! This file: [`Options`] (with [`Command`], the allow-list entries) → [`Worker::run`];
//! [`progress`]: the FIFO a program reports its progress on.

pub mod progress;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use vibehq_queue::{Actor, Claim, Error as QueueError, Queue};

/// Most bytes of a task's stdout kept as its output (and of stderr as its error).
pub const MAX_OUTPUT: usize = 64 * 1024;

/// Largest parameter (and whole parameter JSON) also passed in the environment; all of them
/// always arrive on stdin.
const ENV_LIMIT: usize = 32 * 1024;

/// How long output is still read after the program exits (anything it left behind may hold the
/// pipes open) before its process group is killed.
const DRAIN: Duration = Duration::from_secs(2);

/// How long one claim waits for work before the loop looks at its slots again.
const CLAIM_WAIT: Duration = Duration::from_secs(5);

/// First and longest wait before the worker tries the queue again after a failure.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// How many times a result is sent again after the queue could not take it (NATS away); by
/// the last, the lease has usually expired and the task gone to another container.
const REPORT_TRIES: u32 = 8;

/// An allowed command: the executable a task's command name maps to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// The executable (looked up on `PATH` unless it contains a slash).
    pub program: PathBuf,
    /// Fixed arguments, before nothing: tasks cannot add arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Kill the process after this long (overrides the worker's default).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// How the worker runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub worker_name: String,
    pub container_name: String,
    /// Tasks run at once.
    pub concurrency: usize,
    /// The allow-list: command name → executable.
    pub commands: BTreeMap<String, Command>,
    /// Default per-task timeout.
    pub timeout: Duration,
    /// On shutdown, how long running tasks may take to finish before they are killed.
    pub grace: Duration,
}

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the worker has no allowed commands: configure at least one (`--allow NAME=PROGRAM`)")]
    NothingAllowed,
}

/// The worker agent.
#[derive(Debug)]
pub struct Worker {
    options: Options,
    queue: Queue,
}

impl Worker {
    pub fn new(options: Options, queue: Queue) -> Result<Self, Error> {
        if options.commands.is_empty() {
            return Err(Error::NothingAllowed);
        }
        Ok(Self { options, queue })
    }

    /// Claims and runs tasks until `shutdown`, then drains (see the crate docs).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let options = Arc::new(self.options);
        let queue = self.queue;
        let me = Actor::new(&options.worker_name, Some(options.container_name.clone()));
        let concurrency = options.concurrency.max(1);
        let slots = Arc::new(Semaphore::new(concurrency));
        let hand_back = CancellationToken::new();
        let running = Running::default();
        running.listen(&queue, &me).await;
        let mut tasks = tokio::task::JoinSet::new();
        tracing::info!(
            worker = %options.worker_name, container = %options.container_name, concurrency,
            commands = ?options.commands.keys().collect::<Vec<_>>(), "worker running"
        );
        let mut backoff = RETRY_MIN;
        loop {
            // Claim for every free slot at once, once at least one is free.
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let mut free = vec![first];
            while let Ok(permit) = slots.clone().try_acquire_owned() {
                free.push(permit);
            }
            let claimed = tokio::select! {
                _ = shutdown.cancelled() => break,
                claimed = queue.claim_many(&me, free.len(), CLAIM_WAIT) => claimed,
            };
            match claimed {
                Ok(claims) => {
                    backoff = RETRY_MIN;
                    for claim in claims {
                        let Some(slot) = free.pop() else { break };
                        let span = tracing::info_span!("task", task_id = %claim.task_id, attempt = claim.attempt, command = %claim.command);
                        // The task's spans continue the trace it was submitted in.
                        vibehq_events::trace::follow(&span, claim.traceparent.as_deref());
                        let (queue, options, me) = (queue.clone(), options.clone(), me.clone());
                        let stop = Stop {
                            hand_back: hand_back.clone(),
                            cancelled: running.add(&claim.task_id),
                        };
                        let running = running.clone();
                        tasks.spawn(
                            async move {
                                let task_id = claim.task_id.clone();
                                run_task(&queue, &options, &me, claim, slot, &stop).await;
                                running.remove(&task_id);
                            }
                            .instrument(span),
                        );
                    }
                }
                Err(error) => {
                    // A passing NATS failure must not stop the worker.
                    tracing::warn!(%error, retry_in = ?backoff, "queue unavailable; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
            }
            while tasks.try_join_next().is_some() {}
        }
        tracing::info!(grace = ?options.grace, running = tasks.len(), "stopping: no new claims; finishing running tasks");
        let drained = tokio::time::timeout(options.grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                running = tasks.len(),
                "grace period over: killing what still runs and reporting it failed for this attempt"
            );
            hand_back.cancel();
            while tasks.join_next().await.is_some() {}
        }
        Ok(())
    }
}

/// The tasks this worker is running, each with the token that stops it when it is cancelled.
#[derive(Debug, Clone, Default)]
struct Running(Arc<std::sync::Mutex<BTreeMap<String, CancellationToken>>>);

impl Running {
    /// Stops each running task its cancel notice names, for as long as the worker runs. A
    /// worker that cannot listen still learns of a cancellation at its next heartbeat.
    async fn listen(&self, queue: &Queue, me: &Actor) {
        let notices = match queue.cancellations(me).await {
            Ok(notices) => notices,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for cancellations; a cancelled task stops at its next heartbeat");
                return;
            }
        };
        let running = self.clone();
        tokio::spawn(async move {
            futures::pin_mut!(notices);
            while let Some(task_id) = futures::StreamExt::next(&mut notices).await {
                if let Some(stop) = running.lock().get(&task_id) {
                    stop.cancel();
                }
            }
        });
    }

    fn add(&self, task_id: &str) -> CancellationToken {
        let token = CancellationToken::new();
        self.lock().insert(task_id.to_owned(), token.clone());
        token
    }

    fn remove(&self, task_id: &str) {
        self.lock().remove(task_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, CancellationToken>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What stops a running task early: the worker's shutdown grace ending, or the task's
/// cancellation.
struct Stop {
    hand_back: CancellationToken,
    cancelled: CancellationToken,
}

/// How a task's process ended.
enum Outcome {
    Exited {
        code: Option<i32>,
        stdout: String,
        stderr: String,
    },
    TimedOut(Duration),
    LeaseLost,
    /// The task was cancelled while it ran: its program was killed.
    Cancelled,
    HandedBack,
    /// The program could not be started.
    NotStarted(std::io::Error),
    /// The command is not on the allow-list.
    NotAllowed(String),
}

/// Runs one claimed task in `slot`, frees the slot as soon as the program has ended, then
/// reports the attempt's result.
async fn run_task(
    queue: &Queue,
    options: &Options,
    me: &Actor,
    claim: Claim,
    slot: OwnedSemaphorePermit,
    stop: &Stop,
) {
    // In the task's trace, the claim is this event at the start of its span.
    tracing::info!(
        sequence = claim.sequence,
        lease_ms = claim.lease_ms,
        "claimed"
    );
    let outcome = match options.commands.get(&claim.command) {
        None => {
            let allowed: Vec<_> = options.commands.keys().map(String::as_str).collect();
            Outcome::NotAllowed(format!(
                "command {:?} is not allowed on {me} (allowed: {})",
                claim.command,
                allowed.join(", ")
            ))
        }
        Some(command) => match queue.start(&claim.task_id, Some(claim.attempt), me).await {
            Ok(_) => {
                let timeout = command
                    .timeout_secs
                    .map(Duration::from_secs)
                    .unwrap_or(options.timeout);
                tracing::info!(?timeout, "running");
                execute(queue, me, &claim, command, timeout, stop)
                    .instrument(tracing::info_span!("run", program = %command.program.display()))
                    .await
                    .unwrap_or_else(Outcome::NotStarted)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot start the task; dropped");
                return;
            }
        },
    };
    drop(slot);
    report(queue, me, &claim, outcome)
        .instrument(tracing::info_span!("report"))
        .await;
}

/// Reports an attempt's result, sending it again while the queue cannot take it. A refusal
/// (the task moved on to another claim, or ended) is the end of it: the task is someone
/// else's now.
async fn report(queue: &Queue, me: &Actor, claim: &Claim, outcome: Outcome) {
    let (task_id, attempt) = (claim.task_id.as_str(), Some(claim.attempt));
    let failure = match outcome {
        Outcome::Exited {
            code: Some(0),
            stdout,
            ..
        } => {
            tracing::info!("completed");
            let mut backoff = RETRY_MIN;
            for _ in 0..REPORT_TRIES {
                match queue
                    .complete(task_id, attempt, me, Some(stdout.clone()))
                    .await
                {
                    Ok(_) => return,
                    Err(error) if settled(&error) => return,
                    Err(_) => {}
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
            }
            return;
        }
        Outcome::Exited { code, stderr, .. } => {
            let status = code.map_or("was killed by a signal".to_owned(), |c| {
                format!("exited with code {c}")
            });
            let error = if stderr.trim().is_empty() {
                status
            } else {
                format!("{status}: {}", stderr.trim())
            };
            (error, true)
        }
        Outcome::TimedOut(after) => (format!("timed out after {} s", after.as_secs_f64()), true),
        Outcome::LeaseLost => {
            tracing::warn!("the task moved on (its lease expired, or it was cancelled); dropped");
            return;
        }
        Outcome::Cancelled => {
            tracing::info!("cancelled while running; its program was killed");
            return;
        }
        Outcome::HandedBack => (
            "the worker shut down before the task finished".to_owned(),
            true,
        ),
        Outcome::NotStarted(error) => (format!("cannot start the program: {error}"), true),
        Outcome::NotAllowed(error) => (error, false),
    };
    let (error, retry) = failure;
    tracing::warn!(%error, retry, "failed");
    let mut backoff = RETRY_MIN;
    for _ in 0..REPORT_TRIES {
        match queue.fail(task_id, attempt, me, error.clone(), retry).await {
            Ok(_) => return,
            Err(error) if settled(&error) => return,
            Err(_) => {}
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RETRY_MAX);
    }
}

/// Whether a failed report is settled (the queue refused it for good: the task is not this
/// claim's any more) rather than worth sending again (a lost race, or NATS away).
fn settled(error: &QueueError) -> bool {
    match error {
        QueueError::StaleClaim { reason, .. } => {
            tracing::warn!(%reason, "result not accepted: the task moved on");
            true
        }
        QueueError::Refused { refusal, .. } => {
            tracing::warn!(%refusal, "result not accepted");
            true
        }
        QueueError::NotFound(_) => true,
        error => {
            tracing::warn!(%error, "cannot report the result yet; sending it again");
            false
        }
    }
}

async fn execute(
    queue: &Queue,
    me: &Actor,
    claim: &Claim,
    command: &Command,
    timeout: Duration,
    stop: &Stop,
) -> std::io::Result<Outcome> {
    let parameters = claim.parameters.clone().unwrap_or_default();
    let mut process = tokio::process::Command::new(&command.program);
    process
        .args(&command.args)
        .env("VIBEHQ_TASK_ID", &claim.task_id)
        .env("VIBEHQ_TASK_TYPE", &claim.task_type)
        .env("VIBEHQ_ATTEMPT", claim.attempt.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a kill reaches whatever it started too.
        .process_group(0)
        .kill_on_drop(true);
    // The program's own spans, if it makes any, belong to this run's trace.
    if let Some(traceparent) = vibehq_events::trace::current() {
        process.env("TRACEPARENT", traceparent);
    }
    // Linux caps one environment string at 128 KiB: large parameters travel on stdin only.
    let json = serde_json::Value::Object(parameters.clone()).to_string();
    if json.len() <= ENV_LIMIT {
        process.env("VIBEHQ_PARAMETERS", &json);
    }
    for (name, value) in &parameters {
        let key: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        let value = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if value.len() <= ENV_LIMIT {
            process.env(format!("VIBEHQ_PARAM_{key}"), value);
        }
    }
    let progress = match progress::Progress::open(queue, me, claim) {
        Ok(progress) => {
            process.env("VIBEHQ_PROGRESS", progress.path());
            Some(progress)
        }
        Err(error) => {
            tracing::warn!(%error, "cannot make the progress FIFO; the program runs without VIBEHQ_PROGRESS");
            None
        }
    };
    let outcome = supervise(process, json, queue, me, claim, timeout, stop).await;
    // Its last reports are recorded before its result is.
    if let Some(progress) = progress {
        progress.finish().await;
    }
    outcome
}

/// Runs the program to its end (or kills it at its timeout, a lost lease, a cancellation or
/// the end of the grace period), heartbeating meanwhile.
async fn supervise(
    mut process: tokio::process::Command,
    json: String,
    queue: &Queue,
    me: &Actor,
    claim: &Claim,
    timeout: Duration,
    stop: &Stop,
) -> std::io::Result<Outcome> {
    let mut child = process.spawn()?;
    // The group's id is the child's pid; keep it, since the pid is gone once the child is reaped.
    let group = child.id().and_then(|p| i32::try_from(p).ok());
    let mut stdout = tokio::spawn(collect(child.stdout.take(), "stdout"));
    let mut stderr = tokio::spawn(collect(child.stderr.take(), "stderr"));
    if let Some(mut stdin) = child.stdin.take() {
        // In its own task: a program that never reads stdin must not stop the timeout and the
        // heartbeats. One that exits without reading closes it; that is not an error.
        tokio::spawn(async move {
            let _ = stdin.write_all(json.as_bytes()).await;
        });
    }
    let mut beat = tokio::time::interval(Duration::from_millis((claim.lease_ms / 3).max(100)));
    beat.tick().await;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            _ = &mut deadline => {
                kill(&mut child, group).await;
                return Ok(Outcome::TimedOut(timeout));
            }
            _ = stop.hand_back.cancelled() => {
                kill(&mut child, group).await;
                return Ok(Outcome::HandedBack);
            }
            _ = stop.cancelled.cancelled() => {
                kill(&mut child, group).await;
                return Ok(Outcome::Cancelled);
            }
            _ = beat.tick() => {
                match queue.heartbeat(&claim.task_id, Some(claim.attempt), me).await {
                    Ok(()) => {}
                    Err(QueueError::StaleClaim { .. } | QueueError::Refused { .. } | QueueError::NotFound(_)) => {
                        kill(&mut child, group).await;
                        return Ok(Outcome::LeaseLost);
                    }
                    Err(error) => tracing::warn!(%error, "heartbeat failed; retrying"),
                }
            }
        }
    };
    // Something the program left running may hold its output open: give the output a moment to
    // end, then kill the group (closing the pipes) and take what was read.
    let (mut out, mut err) = (None, None);
    let ended = tokio::time::timeout(DRAIN, async {
        out = Some((&mut stdout).await.unwrap_or_default());
        err = Some((&mut stderr).await.unwrap_or_default());
    })
    .await
    .is_ok();
    if !ended {
        tracing::warn!("the program left processes holding its output; killing them");
    }
    kill(&mut child, group).await;
    let stdout = match out {
        Some(text) => text,
        None => stdout.await.unwrap_or_default(),
    };
    let stderr = match err {
        Some(text) => text,
        None => stderr.await.unwrap_or_default(),
    };
    Ok(Outcome::Exited {
        code: status.code(),
        stdout,
        stderr,
    })
}

/// Kills the task's whole process group (the program and anything it started).
async fn kill(child: &mut tokio::process::Child, group: Option<i32>) {
    if let Some(group) = group {
        let group = nix::unistd::Pid::from_raw(group);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    }
    let _ = child.kill().await;
}

/// Logs a stream line by line as it arrives and keeps the first [`MAX_OUTPUT`] bytes.
async fn collect(stream: Option<impl AsyncRead + Unpin>, name: &'static str) -> String {
    let Some(stream) = stream else {
        return String::new();
    };
    let mut lines = BufReader::new(stream).lines();
    let mut kept = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(stream = name, "{line}");
        if kept.len() + line.len() < MAX_OUTPUT {
            if !kept.is_empty() {
                kept.push('\n');
            }
            kept.push_str(&line);
        }
    }
    kept
}
