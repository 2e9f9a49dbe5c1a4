//! The queue's commands: submit, claim, start, heartbeat, complete, fail, cancel.
//!
//! Each command loads the task from its stream, decides with the task machine, and appends
//! one event expecting the version it read: a command that lost a race gets
//! [`Error::Conflict`] instead of overwriting. Leases are the work message's `ack_wait`; the
//! attempt number in every result fences off a claimer whose lease has moved on (JetStream
//! accepts a late ack from such a claimer, nats-server #4786, so the fence must be ours).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::stream::Stream;
use serde::Serialize;
use serde_json::{Map, Value};
use vibehq_events::work::{self, Target, WorkItem};
use vibehq_events::{Envelope, EventLog, Expect, StreamKind, task};

use crate::Error;
use crate::aggregate::{self, Task};
use crate::board::Board;
use crate::fsm::{TASKS, TaskEvent, TaskState};

/// How the queue behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a claim holds a task without a heartbeat (the work consumers' `ack_wait`).
    pub lease: Duration,
    /// The delay before the first retry of a failed attempt; doubles per attempt.
    pub retry_backoff: Duration,
    /// The longest retry delay.
    pub max_backoff: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            retry_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// Who is acting: a worker, and the container within it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub worker_name: String,
    pub container_name: Option<String>,
}

impl Actor {
    pub fn new(worker_name: impl Into<String>, container_name: Option<String>) -> Self {
        Self {
            worker_name: worker_name.into(),
            container_name,
        }
    }

    fn envelope(&self, payload: impl Into<vibehq_events::Payload>) -> Envelope {
        let event = Envelope::new(&self.worker_name, payload);
        match &self.container_name {
            Some(c) => event.in_container(c),
            None => event,
        }
    }

    fn label(&self) -> String {
        match &self.container_name {
            Some(c) => format!("{}:{c}", self.worker_name),
            None => self.worker_name.clone(),
        }
    }
}

/// A task to submit (validated by the caller's API layer).
#[derive(Debug, Clone, Default)]
pub struct NewTask {
    pub task_type: String,
    pub command: String,
    pub parameters: Option<Map<String, Value>>,
    pub priority: i64,
    pub worker_name: Option<String>,
    pub container_name: Option<String>,
    pub max_attempts: u32,
    /// Submitting twice with the same key yields one task.
    pub idempotency_key: Option<String>,
}

/// The result of a submission.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Submitted {
    pub task_id: String,
    /// The stream sequence of the `task.submitted` event (pass as `min_seq` to read it back).
    pub sequence: u64,
    /// False when the idempotency key matched an existing task.
    pub created: bool,
}

/// A claimed task: everything a container needs to run it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Claim {
    pub task_id: String,
    pub task_type: String,
    pub command: String,
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Map<String, Value>>,
    pub priority: i64,
    /// Name this attempt in every heartbeat and result.
    pub attempt: u32,
    pub max_attempts: u32,
    /// Heartbeat more often than this, or the task goes to another container.
    pub lease_ms: u64,
    /// The stream sequence of the `task.assigned` event.
    pub sequence: u64,
}

/// The outcome of a reported failure.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FailOutcome {
    /// True if the task will be retried; false if it failed for good.
    pub retried: bool,
    /// The delay before the retry.
    pub backoff_ms: u64,
    pub sequence: u64,
}

/// The task queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    log: EventLog,
    options: Options,
    tasks: Stream,
    board: Board,
    /// Tasks as last seen by this process, so a load reads only newer events.
    known: std::sync::Mutex<HashMap<String, Task>>,
}

/// Most tasks [`Inner::known`] holds before it starts over.
const KNOWN_TASKS: usize = 50_000;

impl Queue {
    /// A queue over `log`'s streams; creates the work stream (with the tasks stream's
    /// replication) if needed.
    pub async fn new(log: EventLog, options: Options) -> Result<Self, Error> {
        let js = log.jetstream();
        let mut tasks = js
            .get_stream(StreamKind::Tasks.name())
            .await
            .map_err(|e| Error::nats("find the tasks stream", e))?;
        let replicas = tasks
            .info()
            .await
            .map_err(|e| Error::nats("read the tasks stream", e))?
            .config
            .num_replicas;
        let work = match js.get_stream(work::STREAM).await {
            Ok(stream) => stream,
            Err(_) => js
                .create_stream(work::stream_config(replicas))
                .await
                .map_err(|e| Error::nats("create the work stream", e))?,
        };
        let board = Board::new(&js.client(), work, options.lease).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                log,
                options,
                tasks,
                board,
                known: std::sync::Mutex::default(),
            }),
        })
    }

    /// The event log the queue appends to.
    pub fn log(&self) -> &EventLog {
        &self.inner.log
    }

    /// The task as its events say it is now.
    pub async fn load(&self, task_id: &str) -> Result<Option<Task>, Error> {
        let known = self.known(task_id);
        let task = aggregate::load(&self.inner.tasks, task_id, known).await?;
        if let Some(task) = &task {
            self.remember(task.clone());
        }
        Ok(task)
    }

    /// This process's last view of the task (possibly stale).
    fn known(&self, task_id: &str) -> Option<Task> {
        self.inner
            .known
            .lock()
            .ok()
            .and_then(|k| k.get(task_id).cloned())
    }

    fn remember(&self, task: Task) {
        if let Ok(mut known) = self.inner.known.lock() {
            if known.len() >= KNOWN_TASKS {
                known.clear();
            }
            known.insert(task.submitted.task_id.clone(), task);
        }
    }

    async fn require(&self, task_id: &str) -> Result<Task, Error> {
        self.load(task_id)
            .await?
            .ok_or_else(|| Error::NotFound(task_id.to_owned()))
    }

    /// Submits a task. With an idempotency key, the task id is derived from the key and a
    /// second submission returns the first task (`created: false`).
    pub async fn submit(&self, by: &Actor, new: NewTask) -> Result<Submitted, Error> {
        let task_id = match &new.idempotency_key {
            Some(key) => uuid::Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, key.as_bytes()).to_string(),
            None => uuid::Uuid::now_v7().to_string(),
        };
        let event = by.envelope(task::Submitted {
            task_id: task_id.clone(),
            task_type: new.task_type,
            command: new.command,
            parameters: new.parameters,
            priority: new.priority,
            worker_name: new.worker_name,
            container_name: new.container_name,
            max_attempts: new.max_attempts.max(1),
            idempotency_key: new.idempotency_key,
        });
        match self.inner.log.append(&event, Expect::New).await {
            Ok(appended) => Ok(Submitted {
                task_id,
                sequence: appended.sequence,
                created: true,
            }),
            Err(vibehq_events::Error::Conflict { .. }) => {
                let subject = vibehq_events::Subject::Submission(task_id.clone()).to_string();
                let first = self
                    .inner
                    .tasks
                    .direct_get_last_for_subject(subject)
                    .await
                    .map_err(|e| Error::nats("read a task's submission", e))?;
                Ok(Submitted {
                    task_id,
                    sequence: first.sequence,
                    created: false,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Claims the next task `claimer` may take: the highest priority first, and within a
    /// priority the most specifically targeted. Waits up to `wait` for work to arrive;
    /// `None` if none did.
    pub async fn claim(&self, claimer: &Actor, wait: Duration) -> Result<Option<Claim>, Error> {
        Ok(self.claim_many(claimer, 1, wait).await?.into_iter().next())
    }

    /// Claims up to `max` tasks at once, best first (as [`Queue::claim`]): a container with
    /// free slots claims for all of them in one pull and one round of appends. Waits up to
    /// `wait` for the first task; empty if none arrived.
    pub async fn claim_many(
        &self,
        claimer: &Actor,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Claim>, Error> {
        let container = claimer.container_name.clone().unwrap_or_default();
        let eligible = Target::eligible(&claimer.worker_name, &container);
        let deadline = tokio::time::Instant::now() + wait;
        let board = &self.inner.board;
        loop {
            // Listen before looking, so work published in between wakes us.
            let arrival = board.arrival();
            tokio::pin!(arrival);
            arrival.as_mut().enable();
            let exact = wait.is_zero();
            let claims = self
                .try_claim(claimer, &eligible, max.max(1), exact)
                .await?;
            if !claims.is_empty() {
                return Ok(claims);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(claims);
            }
            // Redeliveries (expired leases, retry delays) publish nothing: look again at least
            // once a second.
            let until = deadline.min(now + Duration::from_secs(1));
            let _ = tokio::time::timeout_at(until, arrival).await;
        }
    }

    async fn try_claim(
        &self,
        claimer: &Actor,
        eligible: &[Target],
        max: usize,
        exact: bool,
    ) -> Result<Vec<Claim>, Error> {
        let mut claims = Vec::new();
        for _ in 0..CLAIM_ROUNDS {
            let candidates = self.inner.board.candidates(eligible, exact).await?;
            if candidates.is_empty() {
                break;
            }
            self.claim_from(claimer, candidates, max, &mut claims)
                .await?;
            if !claims.is_empty() {
                break;
            }
        }
        Ok(claims)
    }

    /// Pulls from `candidates` in order until `claims` holds `max`. The messages of one pull
    /// are taken concurrently, so their appends share round trips.
    async fn claim_from(
        &self,
        claimer: &Actor,
        candidates: Vec<String>,
        max: usize,
        claims: &mut Vec<Claim>,
    ) -> Result<(), Error> {
        for subject in candidates {
            let want = max - claims.len();
            if want == 0 {
                break;
            }
            let puller = self.inner.board.puller(&subject).await?;
            let fetched = self.inner.board.pull(&puller, &subject, want).await?;
            let lease = puller.lease();
            let taken = futures::future::join_all(
                fetched.into_iter().map(|m| self.take(claimer, m, lease)),
            )
            .await;
            let mut failed = None;
            for outcome in taken {
                match outcome {
                    Ok(Some(claim)) => claims.push(claim),
                    Ok(None) => {}
                    Err(error) => failed = Some(error),
                }
            }
            // Claims already made stand; a failed message is redelivered after its lease.
            match failed {
                Some(error) if claims.is_empty() => return Err(error),
                Some(error) => tracing::warn!(%error, "one claim of a batch failed"),
                None => {}
            }
        }
        Ok(())
    }

    /// Turns a delivered work message into a claim, or disposes of it (its task ended, or ran
    /// out of attempts). `None` means: look at the next message. `period` is the lease of the
    /// consumer that delivered it.
    async fn take(
        &self,
        claimer: &Actor,
        message: async_nats::jetstream::Message,
        period: Duration,
    ) -> Result<Option<Claim>, Error> {
        let Ok(mut item) = serde_json::from_slice::<WorkItem>(&message.payload) else {
            tracing::warn!(subject = %message.subject, "dropping undecodable work");
            let _ = message.ack_with(AckKind::Term).await;
            return Ok(None);
        };
        let lease = message.reply.as_ref().map(|r| r.to_string());
        let info = message.info().ok();
        let work_sequence = info.as_ref().map(|i| i.stream_sequence);
        if let Some(carried) = item.task.take()
            && info.is_some_and(|i| i.delivered == 1)
        {
            // First delivery: most likely nothing happened since the submission, so assign
            // expecting exactly that (no event on the task's subject yet); if the task moved, the
            // history below decides.
            let submitted = Task::pending(carried.submitted, carried.submitted_by, 0);
            match self
                .assign(claimer, submitted, (lease.clone(), period), work_sequence)
                .await
            {
                Err(Error::Conflict { .. }) => {}
                claimed => return claimed.map(Some),
            }
        }
        for _ in 0..3 {
            let current = match self.load(&item.task_id).await {
                Ok(current) => current,
                Err(error @ Error::Corrupt { .. }) => {
                    // Redelivering would only hand the same poison to the next claimer.
                    tracing::error!(%error, task_id = %item.task_id, "dropping work for an unreadable task");
                    let _ = message.ack_with(AckKind::Term).await;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            let Some(mut current) = current else {
                let _ = message.ack_with(AckKind::Term).await;
                return Ok(None);
            };
            if current.state.is_terminal() {
                let _ = message.ack().await;
                return Ok(None);
            }
            let same_message =
                current.work_sequence.is_none() || current.work_sequence == work_sequence;
            if current.state.is_held() && !same_message {
                // Another work message for a task that a live claim holds: a duplicate carried
                // by the dispatcher after its dedupe window. Drop it; the holder keeps the task.
                tracing::warn!(task_id = %item.task_id, ?work_sequence, "dropping duplicate work");
                let _ = message.ack().await;
                return Ok(None);
            }
            if current.state.is_held() {
                // The held message itself was delivered again: the holder's lease expired.
                let lost = self
                    .append(
                        &current,
                        TaskEvent::Requeue,
                        claimer.envelope(task::Requeued {
                            task_id: item.task_id.clone(),
                            attempt: current.attempt,
                            reason: format!(
                                "lease of {} expired",
                                current
                                    .assigned_to
                                    .as_deref()
                                    .unwrap_or("the previous claim")
                            ),
                            backoff_ms: 0,
                        }),
                    )
                    .await;
                match lost {
                    Ok(version) => {
                        current.version = version;
                        current.state = TaskState::Pending;
                    }
                    Err(Error::Conflict { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
            let attempt = current.attempt + 1;
            if attempt > current.submitted.max_attempts {
                let failed = claimer.envelope(task::Failed {
                    task_id: item.task_id.clone(),
                    attempt: current.attempt,
                    error: current
                        .error
                        .clone()
                        .unwrap_or_else(|| "no attempts left".to_owned()),
                });
                match self.append_raw(&current, failed).await {
                    Ok(_) | Err(Error::Conflict { .. }) => {}
                    Err(e) => return Err(e),
                }
                let _ = message.ack_with(AckKind::Term).await;
                return Ok(None);
            }
            match self
                .assign(claimer, current, (lease.clone(), period), work_sequence)
                .await
            {
                Ok(claim) => return Ok(Some(claim)),
                Err(Error::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        // Still racing after three tries: let someone else have it.
        let _ = message.ack_with(AckKind::Nak(None)).await;
        Ok(None)
    }

    /// Appends `task.assigned` for the next attempt of a pending task, expecting its version.
    /// `lease` is the work message's ack subject and its consumer's `ack_wait`.
    async fn assign(
        &self,
        claimer: &Actor,
        task: Task,
        (lease, period): (Option<String>, Duration),
        work_sequence: Option<u64>,
    ) -> Result<Claim, Error> {
        let attempt = task.attempt + 1;
        let lease_ms = period.as_millis() as u64;
        let assigned = claimer.envelope(task::Assigned {
            task_id: task.submitted.task_id.clone(),
            attempt,
            lease_ms,
            lease,
            work_sequence,
        });
        let sequence = self.append(&task, TaskEvent::Assign, assigned).await?;
        let s = task.submitted;
        Ok(Claim {
            task_id: s.task_id,
            task_type: s.task_type,
            command: s.command,
            parameters: s.parameters,
            priority: s.priority,
            attempt,
            max_attempts: s.max_attempts,
            lease_ms,
            sequence,
        })
    }

    /// Claims one specific pending task for `claimer`, if `claimer` may take it.
    pub async fn claim_task(&self, task_id: &str, claimer: &Actor) -> Result<Claim, Error> {
        let task = self.require(task_id).await?;
        if task.state != TaskState::Pending {
            return Err(Error::Conflict {
                task_id: task_id.to_owned(),
                reason: format!("the task is {}, not pending", task.state.as_str()),
            });
        }
        let target = Target::of(
            task.submitted.worker_name.as_deref(),
            task.submitted.container_name.as_deref(),
        );
        let container = claimer.container_name.clone().unwrap_or_default();
        if !Target::eligible(&claimer.worker_name, &container).contains(&target) {
            return Err(Error::Conflict {
                task_id: task_id.to_owned(),
                reason: format!(
                    "the task is for {target:?}; {} may not take it",
                    claimer.label()
                ),
            });
        }
        let subject = work::subject(work::band(task.submitted.priority), &target);
        let puller = self.inner.board.puller(&subject).await?;
        let fetched = puller.fetch(256).await?;
        let mut found = None;
        let mut others = Vec::new();
        for message in fetched {
            let mine = serde_json::from_slice::<WorkItem>(&message.payload)
                .is_ok_and(|item| item.task_id == task_id);
            if mine && found.is_none() {
                found = Some(message);
            } else {
                others.push(message);
            }
        }
        // Hand the rest back at once, in order.
        for message in others {
            let _ = message.ack_with(AckKind::Nak(None)).await;
        }
        match found {
            Some(message) => self.take(claimer, message, puller.lease()).await?.ok_or_else(|| Error::Conflict {
                task_id: task_id.to_owned(),
                reason: "the task changed while it was being claimed".into(),
            }),
            None => Err(Error::Conflict {
                task_id: task_id.to_owned(),
                reason: "the task is not available to claim right now (another claim may be handing it out)".into(),
            }),
        }
    }

    /// Checks that `claimer` holds `attempt` of the task; records a refusal otherwise.
    ///
    /// With `Read::Cached`, this process's last view of the task is trusted if it shows the
    /// claim holding: the caller's append expects that view's version, so if anything happened
    /// since, the append is refused and the caller asks again with `Read::Stream`.
    async fn holding(
        &self,
        task_id: &str,
        attempt: u32,
        claimer: &Actor,
        outcome: &str,
        read: Read,
    ) -> Result<Task, Error> {
        let holds = |task: &Task| {
            task.state.is_held()
                && task.attempt == attempt
                && task.assigned_to.as_deref() == Some(claimer.label().as_str())
        };
        if read == Read::Cached
            && let Some(task) = self.known(task_id).filter(holds)
        {
            return Ok(task);
        }
        let task = self.require(task_id).await?;
        if holds(&task) {
            return Ok(task);
        }
        let reason = if task.state.is_held() {
            format!(
                "attempt {attempt} by {} no longer holds the task: attempt {} by {} does",
                claimer.label(),
                task.attempt,
                task.assigned_to.as_deref().unwrap_or("?")
            )
        } else {
            format!(
                "the task is {} (attempt {})",
                task.state.as_str(),
                task.attempt
            )
        };
        if !outcome.is_empty() {
            let refused = claimer.envelope(task::ResultRefused {
                task_id: task_id.to_owned(),
                attempt,
                outcome: outcome.to_owned(),
                reason: reason.clone(),
            });
            self.inner.log.append(&refused, Expect::Any).await?;
        }
        Err(Error::StaleClaim {
            task_id: task_id.to_owned(),
            reason,
        })
    }

    /// Marks a held task as running.
    pub async fn start(&self, task_id: &str, attempt: u32, claimer: &Actor) -> Result<u64, Error> {
        // Each result below re-reads and retries while the claim still holds the task, if the
        // version moved between read and append (e.g. a stale claimer's refusal was recorded).
        for read in Read::RETRIES {
            let task = self.holding(task_id, attempt, claimer, "", read).await?;
            let started = claimer.envelope(task::Started {
                task_id: task_id.to_owned(),
                attempt,
            });
            match self.append(&task, TaskEvent::Start, started).await {
                Err(Error::Conflict { .. }) => continue,
                other => return other,
            }
        }
        Err(kept_changing(task_id))
    }

    /// Extends the lease of a held task by another lease period.
    pub async fn heartbeat(
        &self,
        task_id: &str,
        attempt: u32,
        claimer: &Actor,
    ) -> Result<(), Error> {
        let task = self
            .holding(task_id, attempt, claimer, "", Read::Stream)
            .await?;
        self.signal(task.lease.as_deref(), AckKind::Progress).await
    }

    /// Completes a held task; refused (and recorded) if the claim no longer holds it.
    pub async fn complete(
        &self,
        task_id: &str,
        attempt: u32,
        claimer: &Actor,
        output: Option<String>,
    ) -> Result<u64, Error> {
        for read in Read::RETRIES {
            let task = self
                .holding(task_id, attempt, claimer, "completed", read)
                .await?;
            let completed = claimer.envelope(task::Completed {
                task_id: task_id.to_owned(),
                attempt,
                output: output.clone(),
            });
            match self.append(&task, TaskEvent::Complete, completed).await {
                Ok(sequence) => {
                    self.signal(task.lease.as_deref(), AckKind::Ack).await?;
                    return Ok(sequence);
                }
                Err(Error::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(kept_changing(task_id))
    }

    /// Reports a failed attempt: retried after a backoff while attempts remain (and `retry`
    /// is true), failed for good otherwise.
    pub async fn fail(
        &self,
        task_id: &str,
        attempt: u32,
        claimer: &Actor,
        error: String,
        retry: bool,
    ) -> Result<FailOutcome, Error> {
        for read in Read::RETRIES {
            let task = self
                .holding(task_id, attempt, claimer, "failed", read)
                .await?;
            match self.fail_held(&task, attempt, claimer, &error, retry).await {
                Err(Error::Conflict { .. }) => continue,
                other => return other,
            }
        }
        Err(kept_changing(task_id))
    }

    async fn fail_held(
        &self,
        task: &Task,
        attempt: u32,
        claimer: &Actor,
        error: &str,
        retry: bool,
    ) -> Result<FailOutcome, Error> {
        let task_id = task.submitted.task_id.clone();
        if retry && attempt < task.submitted.max_attempts {
            let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
            let backoff = self
                .inner
                .options
                .retry_backoff
                .saturating_mul(factor)
                .min(self.inner.options.max_backoff);
            let requeued = claimer.envelope(task::Requeued {
                task_id,
                attempt,
                reason: error.to_owned(),
                backoff_ms: backoff.as_millis() as u64,
            });
            let sequence = self.append(task, TaskEvent::Requeue, requeued).await?;
            self.signal(task.lease.as_deref(), AckKind::Nak(Some(backoff)))
                .await?;
            Ok(FailOutcome {
                retried: true,
                backoff_ms: backoff.as_millis() as u64,
                sequence,
            })
        } else {
            let failed = claimer.envelope(task::Failed {
                task_id,
                attempt,
                error: error.to_owned(),
            });
            let sequence = self.append(task, TaskEvent::Fail, failed).await?;
            self.signal(task.lease.as_deref(), AckKind::Term).await?;
            Ok(FailOutcome {
                retried: false,
                backoff_ms: 0,
                sequence,
            })
        }
    }

    /// Cancels a task that has not ended.
    pub async fn cancel(
        &self,
        task_id: &str,
        by: &Actor,
        reason: Option<String>,
    ) -> Result<u64, Error> {
        let task = self.require(task_id).await?;
        let cancelled = by.envelope(task::Cancelled {
            task_id: task_id.to_owned(),
            reason,
        });
        let sequence = self.append(&task, TaskEvent::Cancel, cancelled).await?;
        // A held task's work message goes; a pending one is dropped when next fetched.
        self.signal(task.lease.as_deref(), AckKind::Term).await?;
        Ok(sequence)
    }

    /// Appends `event` if the machine allows `on` from the task's state, expecting its version.
    async fn append(&self, task: &Task, on: TaskEvent, event: Envelope) -> Result<u64, Error> {
        TASKS
            .next(task.state, on)
            .map_err(|illegal| Error::Conflict {
                task_id: task.submitted.task_id.clone(),
                reason: illegal.to_string(),
            })?;
        self.append_raw(task, event).await
    }

    async fn append_raw(&self, task: &Task, event: Envelope) -> Result<u64, Error> {
        let expect = match task.version {
            0 => Expect::New,
            version => Expect::Version(version),
        };
        match self.inner.log.append(&event, expect).await {
            Ok(appended) => {
                // The task is now exactly its last view plus this event.
                let mut now = Some(task.clone());
                aggregate::fold(&mut now, &event, appended.sequence);
                if let Some(now) = now {
                    self.remember(now);
                }
                Ok(appended.sequence)
            }
            Err(vibehq_events::Error::Conflict { .. }) => Err(Error::Conflict {
                task_id: task.submitted.task_id.clone(),
                reason: "the task changed concurrently; read it again".into(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends an ack of `kind` for a lease (a work message's ack subject). Any process can.
    async fn signal(&self, lease: Option<&str>, kind: AckKind) -> Result<(), Error> {
        let Some(lease) = lease else { return Ok(()) };
        let client = self.inner.log.jetstream().client();
        client
            .publish(lease.to_owned(), kind.into())
            .await
            .map_err(|e| Error::nats("signal a lease", e))?;
        Ok(())
    }
}

/// Where a result reads the task it is about to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// This process's last view, if it has one.
    Cached,
    /// The stream.
    Stream,
}

impl Read {
    /// A result's tries: first on the cached view, then re-reading the stream after a
    /// concurrent event moved the task's version.
    const RETRIES: [Read; 3] = [Read::Cached, Read::Stream, Read::Stream];
}

/// How many times a claim re-reads the candidates after losing every race for them.
const CLAIM_ROUNDS: usize = 3;

fn kept_changing(task_id: &str) -> Error {
    Error::Conflict {
        task_id: task_id.to_owned(),
        reason: "the task kept changing while the result was recorded; report it again".into(),
    }
}

/// Namespace of task ids derived from idempotency keys.
const IDEMPOTENCY_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x7f3c_2a1e_9d4b_4c8a_b6e5_1f0a_3d9c_8e21);
