//! The queue's commands: submit (one or many), claim (the next, many, or one by id), start,
//! heartbeat, complete, fail, cancel.
//!
//! Each command reads the task (this process's last view of it, or its events), asks the
//! lifecycle whether the step applies ([`lifecycle::decide`]), and appends one event expecting
//! the version it read: a command that lost a race is refused by the server instead of
//! overwriting, re-reads and decides again. Leases are the lane consumer's `ack_wait`; every
//! result is checked against the claim holding the task now (JetStream accepts a late ack
//! from a claimer whose lease moved on, nats-server #4786, so the fence must be ours).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::message::AckKind;
use serde::Serialize;
use serde_json::{Map, Value};
use vibehq_events::task::lane::Lane;
use vibehq_events::task::lifecycle::{self, State, Task};
use vibehq_events::{
    Actor, Envelope, EventLog, Expect, MAX_BATCH, Payload, StreamKind, Subject, task,
};

use crate::Error;
use crate::lanes::Lanes;

/// How the queue behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a claim holds a task without a heartbeat: the `ack_wait` of the lane
    /// consumers this process creates.
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

/// A task to submit (validated by the caller's API layer).
#[derive(Debug, Clone, Default, PartialEq)]
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
    /// The task's id, chosen by the client (BullMQ's `jobId`): submitting the same id again
    /// answers the existing task. `None`: a new id (or the idempotency key's).
    pub task_id: Option<String>,
    /// The dead task this one retries.
    pub retry_of: Option<String>,
    /// Not handed out before this time (a delayed task); a time already past runs it now.
    pub run_at: Option<time::OffsetDateTime>,
    /// Tasks that must complete first (see [`crate::dependencies`]).
    pub depends_on: Vec<String>,
    /// What becomes of the task when one of them fails or is cancelled.
    pub on_dependency_failure: Option<task::OnDependencyFailure>,
    /// The concurrency key it runs under (see [`crate::keys`]).
    pub concurrency_key: Option<String>,
}

/// The result of a submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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
    /// This claim's attempt (1 for the first); results and heartbeats may name it.
    pub attempt: u32,
    pub max_attempts: u32,
    /// Heartbeat more often than this, or the task goes to another container.
    pub lease_ms: u64,
    /// The stream sequence of the `task.assigned` event.
    pub sequence: u64,
    /// The W3C trace context the task was submitted in, when the submitter was traced: the
    /// claimer's spans for this task (and its program, as `TRACEPARENT`) continue that trace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
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
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) log: EventLog,
    options: Options,
    pub(crate) lanes: Lanes,
    /// Tasks as this process last saw them, so a command on a task this process just handled
    /// reads nothing first (its append expects that view's version; a stale view is refused).
    pub(crate) known: std::sync::Mutex<HashMap<String, Task>>,
    /// Recurring schedules as this process last saw them (see [`crate::schedules`]).
    pub(crate) schedules: std::sync::Mutex<HashMap<String, vibehq_events::recurring::Schedule>>,
    /// Concurrency keys as this process last saw them (see [`crate::keys`]).
    pub(crate) keys: std::sync::Mutex<HashMap<String, vibehq_events::limit::Key>>,
}

/// Most tasks [`Inner::known`] holds before it starts over.
const KNOWN_TASKS: usize = 50_000;

/// How many times a command re-reads and decides again after losing a race.
pub(crate) const RETRIES: usize = 4;

impl Queue {
    /// A queue over `log`'s streams (`vibehq up` creates them).
    pub async fn new(log: EventLog, options: Options) -> Result<Self, Error> {
        let js = log.jetstream();
        let tasks = js
            .get_stream(StreamKind::Tasks.name())
            .await
            .map_err(|e| Error::nats("find the tasks stream", e))?;
        let lanes = Lanes::new(js.clone(), tasks, options.lease).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                log,
                options,
                lanes,
                known: std::sync::Mutex::default(),
                schedules: std::sync::Mutex::default(),
                keys: std::sync::Mutex::default(),
            }),
        })
    }

    /// The event log the queue appends to.
    pub fn log(&self) -> &EventLog {
        &self.inner.log
    }

    /// Sets every existing lane's lease to this queue's ([`Options::lease`]): the lease is the
    /// lane consumer's `ack_wait`, fixed by whoever created it, so the service (`vibehq up`)
    /// makes its configuration the one that holds. Returns how many lanes changed.
    pub async fn apply_lease(&self) -> Result<usize, Error> {
        self.inner.lanes.apply_lease().await
    }

    /// The task as its events say it is now; `None` if it was never submitted.
    ///
    /// One request when this process's view is current (the last event under the task's
    /// filter is the one it saw), otherwise the task's events are read and folded.
    pub async fn load(&self, task_id: &str) -> Result<Option<Task>, Error> {
        let filter = Subject::task(task_id);
        if let Some(known) = self.known(task_id) {
            let last = self.inner.log.last(StreamKind::Tasks, &filter).await?;
            if last.is_some_and(|l| l.record.sequence == known.version) {
                return Ok(Some(known));
            }
        }
        let task = self.load_until(task_id, u64::MAX).await?;
        if let Some(task) = &task {
            self.remember(task);
        }
        Ok(task)
    }

    /// The task as its events up to stream sequence `until` say it was.
    pub async fn load_until(&self, task_id: &str, until: u64) -> Result<Option<Task>, Error> {
        vibehq_events::subject::validate_id(task_id).map_err(vibehq_events::Error::from)?;
        let history = self
            .inner
            .log
            .history_of(StreamKind::Tasks, &Subject::task(task_id), until)
            .await?;
        let mut task = None;
        for record in &history {
            if let Err(refusal) =
                Task::fold(&mut task, &record.subject, &record.payload, record.sequence)
            {
                tracing::debug!(%task_id, sequence = record.sequence, %refusal, "an event of the task changes nothing");
            }
        }
        Ok(task)
    }

    pub(crate) fn known(&self, task_id: &str) -> Option<Task> {
        self.inner
            .known
            .lock()
            .ok()
            .and_then(|known| known.get(task_id).cloned())
    }

    pub(crate) fn remember(&self, task: &Task) {
        if let Ok(mut known) = self.inner.known.lock() {
            if task.status.state.is_terminal() {
                known.remove(task.id());
                return;
            }
            if known.len() >= KNOWN_TASKS {
                known.clear();
            }
            known.insert(task.id().to_owned(), task.clone());
        }
    }

    pub(crate) async fn require(&self, task_id: &str) -> Result<Task, Error> {
        self.load(task_id)
            .await?
            .ok_or_else(|| Error::NotFound(task_id.to_owned()))
    }

    /// Submits a task. With an idempotency key the task id is derived from the key, and a
    /// second submission of the same task returns the first (`created: false`); the same key
    /// with a different task is refused ([`Error::KeyReused`]).
    pub async fn submit(&self, by: &Actor, new: NewTask) -> Result<Submitted, Error> {
        for dependency in &new.depends_on {
            if self.load(dependency).await?.is_none() {
                return Err(Error::UnknownDependency(dependency.clone()));
            }
        }
        let event = submission(by, new);
        let lane = submitted(&event).lane();
        self.inner
            .lanes
            .open(&lane, self.lane_paused(&lane))
            .await?;
        let outcome = match self.inner.log.append(&event, Expect::New).await {
            Ok(appended) => Submitted {
                task_id: submitted(&event).task_id.clone(),
                sequence: appended.sequence,
                created: true,
            },
            Err(vibehq_events::Error::Conflict { .. }) => {
                let existing = self.existing(&event).await?;
                if submitted(&event).concurrency_key.is_some() {
                    // The first submission may have been stored without joining its key.
                    self.restore_keys(std::slice::from_ref(&existing.task_id))
                        .await?;
                }
                return Ok(existing);
            }
            Err(e) => return Err(e.into()),
        };
        match submitted(&event).run_at {
            Some(run_at) => self.schedule(&event, &lane, run_at).await,
            None if !submitted(&event).depends_on.is_empty() => {
                self.settle_waiting(&outcome.task_id).await?;
            }
            None if submitted(&event).concurrency_key.is_some() => {
                self.queue_keyed(by, &[submitted(&event)]).await?;
            }
            None => self.inner.lanes.announce(&lane, 1).await,
        }
        Ok(outcome)
    }

    /// Hands a stored delayed submission to the server's scheduler, and tells claimers when
    /// its lane will have it. Should the schedule not be stored (NATS away), the task stays
    /// pending until `vibehq up` next starts, which schedules such tasks again
    /// ([`Queue::reschedule_pending`]).
    pub(crate) async fn schedule(
        &self,
        event: &Envelope,
        lane: &Lane,
        run_at: time::OffsetDateTime,
    ) {
        let mut tries = 0;
        loop {
            match self.inner.log.schedule(event).await {
                Ok(()) => break,
                Err(error) if tries < 3 => {
                    tries += 1;
                    tracing::debug!(%error, "cannot schedule a delayed task yet; trying again");
                    tokio::time::sleep(Duration::from_millis(100 * tries)).await;
                }
                Err(error) => {
                    tracing::error!(%error, task_id = %submitted(event).task_id, "cannot schedule a delayed task; it is scheduled again when vibehq up next starts");
                    return;
                }
            }
        }
        self.inner.lanes.announce_due(lane, run_at).await;
    }

    /// Schedules again every delayed task still waiting for its due copy (`task_ids`, from
    /// the projection): after a crash between a delayed submission and its schedule. A task
    /// whose copy already arrived is left alone; scheduling one again replaces its schedule.
    pub async fn reschedule_pending(&self, task_ids: &[String]) -> Result<usize, Error> {
        let mut rescheduled = 0;
        for task_id in task_ids {
            let log = &self.inner.log;
            let lane_filter = format!("vibehq.tasks.{task_id}.submitted.>");
            if log.last(StreamKind::Tasks, &lane_filter).await?.is_some() {
                continue;
            }
            let scheduled = format!("vibehq.tasks.{task_id}.scheduled.>");
            let Some(last) = log.last(StreamKind::Tasks, &scheduled).await? else {
                continue;
            };
            let Ok(event) = last.record.decode() else {
                continue;
            };
            let Payload::TaskSubmitted(submitted) = &event.payload else {
                continue;
            };
            if let Some(run_at) = submitted.run_at {
                let lane = submitted.lane();
                log.schedule(&event).await?;
                self.inner.lanes.announce_due(&lane, run_at).await;
                rescheduled += 1;
            }
        }
        Ok(rescheduled)
    }

    /// Submits up to [`MAX_BATCH`] tasks all or nothing (BullMQ's `addBulk`, River's
    /// `InsertMany`): one atomic batch, so either every task is stored or none is. Tasks whose
    /// idempotency key matches an existing task are answered as that task (`created: false`)
    /// and the rest are submitted; answers are in input order.
    pub async fn submit_many(
        &self,
        by: &Actor,
        tasks: Vec<NewTask>,
    ) -> Result<Vec<Submitted>, Error> {
        self.submit_each(tasks.into_iter().map(|new| (by.clone(), new)).collect())
            .await
    }

    /// [`Queue::submit_many`] with each task's own submitter (a bulk submission over REST
    /// names `submitted_by` per task).
    pub async fn submit_each(&self, tasks: Vec<(Actor, NewTask)>) -> Result<Vec<Submitted>, Error> {
        if tasks.len() > MAX_BATCH {
            return Err(Error::TooMany { max: MAX_BATCH });
        }
        let events: Vec<Envelope> = tasks
            .into_iter()
            .map(|(by, new)| submission(&by, new))
            .collect();
        let mut lanes: BTreeMap<Lane, u64> = BTreeMap::new();
        for event in &events {
            *lanes.entry(submitted(event).lane()).or_default() += 1;
        }
        for lane in lanes.keys() {
            self.inner.lanes.open(lane, self.lane_paused(lane)).await?;
        }
        let batch: Vec<(Envelope, Expect)> =
            events.iter().map(|e| (e.clone(), Expect::New)).collect();
        let mut answers: Vec<Option<Submitted>> = vec![None; events.len()];
        let unknown = |error| match error {
            vibehq_events::Error::Timeout { .. } => Error::OutcomeUnknown {
                task_ids: events
                    .iter()
                    .map(|e| submitted(e).task_id.clone())
                    .collect(),
            },
            other => other.into(),
        };
        match self.inner.log.append_atomic(&batch).await {
            Ok(appended) => {
                for ((answer, event), appended) in answers.iter_mut().zip(&events).zip(appended) {
                    *answer = Some(Submitted {
                        task_id: submitted(event).task_id.clone(),
                        sequence: appended.sequence,
                        created: true,
                    });
                }
            }
            Err(vibehq_events::Error::BatchRefused { .. }) => {
                // Some task exists already (a reused key, or this batch retried): answer those
                // as themselves and submit the rest, again all or nothing.
                let mut rest = Vec::new();
                lanes.clear();
                for (i, event) in events.iter().enumerate() {
                    match self.existing(event).await {
                        Ok(found) => answers[i] = Some(found),
                        Err(Error::NotFound(_)) => {
                            *lanes.entry(submitted(event).lane()).or_default() += 1;
                            rest.push(i);
                        }
                        Err(e) => return Err(e),
                    }
                }
                let batch: Vec<(Envelope, Expect)> = rest
                    .iter()
                    .map(|&i| (events[i].clone(), Expect::New))
                    .collect();
                let appended = self
                    .inner
                    .log
                    .append_atomic(&batch)
                    .await
                    .map_err(unknown)?;
                for (&i, appended) in rest.iter().zip(appended) {
                    answers[i] = Some(Submitted {
                        task_id: submitted(&events[i]).task_id.clone(),
                        sequence: appended.sequence,
                        created: true,
                    });
                }
            }
            Err(e) => return Err(unknown(e)),
        }
        let mut keyed: BTreeMap<Actor, Vec<&task::Submitted>> = BTreeMap::new();
        for (event, _) in events
            .iter()
            .zip(&answers)
            .filter(|(_, answer)| answer.as_ref().is_some_and(|a| a.created))
        {
            let task = submitted(event);
            if task.concurrency_key.is_some() {
                keyed.entry(event.actor()).or_default().push(task);
            }
        }
        for (by, tasks) in keyed {
            self.queue_keyed(&by, &tasks).await?;
        }
        for (lane, count) in &lanes {
            self.inner.lanes.announce(lane, *count).await;
        }
        Ok(answers.into_iter().flatten().collect())
    }

    /// The task a refused submission collided with: this very submission (stored by an
    /// earlier try whose answer was lost) answers as created; the same task (its idempotency
    /// key and content match) answers as itself; anything else is [`Error::KeyReused`].
    async fn existing(&self, event: &Envelope) -> Result<Submitted, Error> {
        let wanted = submitted(event);
        let task = self
            .load(&wanted.task_id)
            .await?
            .ok_or_else(|| Error::NotFound(wanted.task_id.clone()))?;
        let history = self
            .inner
            .log
            .history_of(StreamKind::Tasks, &Subject::task(&wanted.task_id), u64::MAX)
            .await?;
        let first = history.first();
        let sequence = first.map_or(0, |r| r.sequence);
        let original = first.and_then(|r| r.decode().ok());
        let ours = original
            .as_ref()
            .is_some_and(|stored| stored.id == event.id);
        // Compared with the submission as first stored: a held task's release copy carries
        // the run_at it was let through at, which the submitter never sent.
        let stored = match original.as_ref().map(|e| &e.payload) {
            Some(Payload::TaskSubmitted(first)) => first,
            _ => &task.submitted,
        };
        if stored != wanted {
            return Err(match &wanted.idempotency_key {
                Some(key) => Error::KeyReused {
                    task_id: wanted.task_id.clone(),
                    key: key.clone(),
                },
                None => Error::IdReused(wanted.task_id.clone()),
            });
        }
        Ok(Submitted {
            task_id: wanted.task_id.clone(),
            sequence,
            created: ours,
        })
    }

    /// The task as `claimer` holds it (for `attempt`, when one is named); a refusal (recorded,
    /// when `outcome` names a result) otherwise.
    pub(crate) async fn holding(
        &self,
        task_id: &str,
        attempt: Option<u32>,
        claimer: &Actor,
        outcome: Option<&str>,
        fresh: bool,
    ) -> Result<Task, Error> {
        let holds = |task: &Task| {
            task.status.state.is_held()
                && task.status.holder.as_ref() == Some(claimer)
                && attempt.is_none_or(|a| a == task.status.attempt)
        };
        if !fresh && let Some(task) = self.known(task_id).filter(holds) {
            return Ok(task);
        }
        let task = self.require(task_id).await?;
        if holds(&task) {
            return Ok(task);
        }
        let status = &task.status;
        let reason = match (&status.holder, status.state.is_held()) {
            (Some(holder), true) if holder == claimer => format!(
                "attempt {} is over; {claimer} holds attempt {} now",
                attempt.unwrap_or(0),
                status.attempt
            ),
            (Some(holder), true) => format!(
                "{claimer} does not hold the task; {holder} does (attempt {})",
                status.attempt
            ),
            _ => format!(
                "{claimer} does not hold the task: it is {} (attempt {})",
                status.state, status.attempt
            ),
        };
        if let Some(outcome) = outcome {
            let refused = claimer.envelope(task::ResultRefused {
                task_id: task_id.to_owned(),
                attempt: attempt.unwrap_or(0),
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
    pub async fn start(
        &self,
        task_id: &str,
        attempt: Option<u32>,
        claimer: &Actor,
    ) -> Result<u64, Error> {
        for round in 0..RETRIES {
            let task = self
                .holding(task_id, attempt, claimer, None, round > 0)
                .await?;
            let started = claimer.envelope(task::Started {
                task_id: task_id.to_owned(),
                attempt: task.status.attempt,
            });
            match self.append(&task, started).await {
                Err(Error::Conflict { .. }) => continue,
                other => return other.map(|task| task.version),
            }
        }
        Err(kept_changing(task_id))
    }

    /// Records how far a running task got (`percent` 0-100 and/or a `message`); it also
    /// extends the lease, as a heartbeat does. Refused when the claim no longer holds the
    /// task, or the task is not running.
    pub async fn progress(
        &self,
        task_id: &str,
        attempt: Option<u32>,
        claimer: &Actor,
        percent: Option<f64>,
        message: Option<String>,
    ) -> Result<u64, Error> {
        for round in 0..RETRIES {
            let task = self
                .holding(task_id, attempt, claimer, None, round > 0)
                .await?;
            let progress = claimer.envelope(task::Progress {
                task_id: task_id.to_owned(),
                attempt: task.status.attempt,
                percent,
                message: message.clone(),
            });
            match self.append(&task, progress).await {
                Err(Error::Conflict { .. }) => continue,
                Ok(now) => {
                    self.signal(now.lease.as_deref(), AckKind::Progress).await?;
                    return Ok(now.version);
                }
                Err(e) => return Err(e),
            }
        }
        Err(kept_changing(task_id))
    }

    /// Extends the lease of a held task by another lease period. Refused when the claim no
    /// longer holds the task: stop working on it.
    pub async fn heartbeat(
        &self,
        task_id: &str,
        attempt: Option<u32>,
        claimer: &Actor,
    ) -> Result<(), Error> {
        let task = self.holding(task_id, attempt, claimer, None, true).await?;
        self.signal(task.lease.as_deref(), AckKind::Progress).await
    }

    /// Completes a held task; refused (and recorded) if the claim does not hold it. Without
    /// an `attempt`, whatever attempt the claimer holds now is completed.
    pub async fn complete(
        &self,
        task_id: &str,
        attempt: Option<u32>,
        claimer: &Actor,
        output: Option<String>,
    ) -> Result<u64, Error> {
        for round in 0..RETRIES {
            let task = self
                .holding(task_id, attempt, claimer, Some("completed"), round > 0)
                .await?;
            let completed = claimer.envelope(task::Completed {
                task_id: task_id.to_owned(),
                attempt: task.status.attempt,
                output: output.clone(),
            });
            match self.append(&task, completed).await {
                Ok(now) => {
                    self.signal(task.lease.as_deref(), AckKind::Ack).await?;
                    self.release_key_after(&now, claimer).await;
                    return Ok(now.version);
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
        attempt: Option<u32>,
        claimer: &Actor,
        error: String,
        retry: bool,
    ) -> Result<FailOutcome, Error> {
        for round in 0..RETRIES {
            let task = self
                .holding(task_id, attempt, claimer, Some("failed"), round > 0)
                .await?;
            match self.fail_held(&task, claimer, &error, retry).await {
                Err(Error::Conflict { .. }) => continue,
                other => return other,
            }
        }
        Err(kept_changing(task_id))
    }

    async fn fail_held(
        &self,
        task: &Task,
        claimer: &Actor,
        error: &str,
        retry: bool,
    ) -> Result<FailOutcome, Error> {
        let attempt = task.status.attempt;
        let task_id = task.id().to_owned();
        if retry && attempt < task.status.max_attempts {
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
            let now = self.append(task, requeued).await?;
            self.signal(task.lease.as_deref(), AckKind::Nak(Some(backoff)))
                .await?;
            Ok(FailOutcome {
                retried: true,
                backoff_ms: backoff.as_millis() as u64,
                sequence: now.version,
            })
        } else {
            let failed = claimer.envelope(task::Failed {
                task_id,
                attempt,
                error: error.to_owned(),
            });
            let now = self.append(task, failed).await?;
            self.signal(task.lease.as_deref(), AckKind::Term).await?;
            self.release_key_after(&now, claimer).await;
            Ok(FailOutcome {
                retried: false,
                backoff_ms: 0,
                sequence: now.version,
            })
        }
    }

    /// Cancels a task that has not ended. A held task's lease ends at once and its holder is
    /// told on its cancel notices ([`task::cancel_notices`]; if that is lost, it learns at its
    /// next heartbeat); a pending one is dropped when its lane next hands it out.
    pub async fn cancel(
        &self,
        task_id: &str,
        by: &Actor,
        reason: Option<String>,
    ) -> Result<u64, Error> {
        for _ in 0..RETRIES {
            let task = self.require(task_id).await?;
            let cancelled = by.envelope(task::Cancelled {
                task_id: task_id.to_owned(),
                reason: reason.clone(),
            });
            match self.append(&task, cancelled).await {
                Ok(now) => {
                    self.signal(task.lease.as_deref(), AckKind::Term).await?;
                    self.release_key_after(&now, by).await;
                    if let Some(holder) = task.status.holder.as_ref() {
                        self.notify_cancelled(holder, task_id).await;
                    }
                    if task.submitted.run_at.is_some() && task.status.attempt == 0 {
                        // Not due yet (or just due): its schedule need not fire. If it does
                        // anyway, its lane passes over the ended task.
                        if let Err(error) = self.inner.log.unschedule(task_id).await {
                            tracing::debug!(%error, task_id, "cannot remove a cancelled task's schedule");
                        }
                    }
                    return Ok(now.version);
                }
                Err(Error::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(kept_changing(task_id))
    }

    async fn notify_cancelled(&self, holder: &Actor, task_id: &str) {
        let subject = task::cancel_notices(holder);
        let client = self.inner.lanes.client();
        let sent = client.publish(subject, task_id.to_owned().into()).await;
        if let Err(error) = sent {
            tracing::debug!(%error, task_id, "cannot tell the holder of a cancelled task; it learns at its next heartbeat");
        }
    }

    /// Task ids of the tasks `me` holds that were cancelled, as they are (see
    /// [`Queue::cancel`]). A worker kills such a task's program at once.
    pub async fn cancellations(
        &self,
        me: &Actor,
    ) -> Result<impl futures::Stream<Item = String> + Send + 'static, Error> {
        let notices = self
            .inner
            .lanes
            .client()
            .subscribe(task::cancel_notices(me))
            .await
            .map_err(|e| Error::nats("listen for cancellations", e))?;
        Ok(futures::StreamExt::filter_map(
            notices,
            |notice| async move { String::from_utf8(notice.payload.to_vec()).ok() },
        ))
    }

    /// Retries a dead task (failed or cancelled): submits a new task with the same work, which
    /// records the task it retries (`retry_of`). `task_id` chooses the new task's id (sending
    /// the same retry again is then safe); without it the id is new.
    pub async fn retry(
        &self,
        dead: &str,
        by: &Actor,
        task_id: Option<String>,
    ) -> Result<Submitted, Error> {
        let task = self.require(dead).await?;
        if !matches!(task.status.state, State::Failed | State::Cancelled) {
            return Err(Error::NotDead {
                task_id: dead.to_owned(),
                state: task.status.state,
            });
        }
        let old = task.submitted;
        self.submit(
            by,
            NewTask {
                task_type: old.task_type,
                command: old.command,
                parameters: old.parameters,
                priority: old.priority,
                worker_name: old.worker_name,
                container_name: old.container_name,
                max_attempts: old.max_attempts,
                idempotency_key: None,
                task_id,
                retry_of: Some(dead.to_owned()),
                run_at: None,
                // A retry runs now: what the dead task waited for has ended.
                depends_on: Vec::new(),
                on_dependency_failure: None,
                concurrency_key: old.concurrency_key,
            },
        )
        .await
    }

    /// Appends `event` to `task` if the lifecycle allows it, expecting the task's version; the
    /// task as it is after the event.
    pub(crate) async fn append(&self, task: &Task, event: Envelope) -> Result<Task, Error> {
        let subject = event.subject().to_string();
        let origin = match lifecycle::read(&subject, &event) {
            Some(Ok(origin)) => origin,
            Some(Err(refusal)) => {
                return Err(Error::Refused {
                    task_id: task.id().to_owned(),
                    refusal: Box::new(refusal),
                });
            }
            None => unreachable!("the queue appends task events only"),
        };
        let mut after = Some(task.clone());
        Task::apply(&mut after, &origin, &event, task.version.saturating_add(1)).map_err(
            |refusal| Error::Refused {
                task_id: task.id().to_owned(),
                refusal: Box::new(refusal),
            },
        )?;
        match self
            .inner
            .log
            .append(&event, Expect::at(task.version))
            .await
        {
            Ok(appended) => {
                let mut now = after.unwrap_or_else(|| task.clone());
                now.version = appended.sequence;
                self.remember(&now);
                Ok(now)
            }
            Err(vibehq_events::Error::Conflict { .. }) => {
                if let Ok(mut known) = self.inner.known.lock() {
                    known.remove(task.id());
                }
                Err(Error::Conflict {
                    task_id: task.id().to_owned(),
                    reason: "the task changed meanwhile".into(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sends an ack of `kind` for a lease (a delivery's ack subject). Any process can.
    pub(crate) async fn signal(&self, lease: Option<&str>, kind: AckKind) -> Result<(), Error> {
        let Some(lease) = lease else { return Ok(()) };
        let client = self.inner.log.jetstream().client();
        client
            .publish(lease.to_owned(), kind.into())
            .await
            .map_err(|e| Error::nats("signal a lease", e))?;
        Ok(())
    }
}

/// The id of the task submitted with idempotency key `key` (a UUIDv5 of the key), so a client
/// can name the task before, or without, asking.
pub fn keyed_task_id(key: &str) -> String {
    uuid::Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, key.as_bytes()).to_string()
}

/// The `task.submitted` event of a new task by `by`.
fn submission(by: &Actor, new: NewTask) -> Envelope {
    let task_id = match (new.task_id, &new.idempotency_key) {
        (Some(id), _) => id,
        (None, Some(key)) => keyed_task_id(key),
        (None, None) => uuid::Uuid::now_v7().to_string(),
    };
    by.envelope(task::Submitted {
        task_id,
        task_type: new.task_type,
        command: new.command,
        parameters: new.parameters,
        priority: new.priority,
        worker_name: new.worker_name,
        container_name: new.container_name,
        max_attempts: new.max_attempts.max(1),
        idempotency_key: new.idempotency_key,
        retry_of: new.retry_of,
        run_at: new
            .run_at
            .filter(|at| *at > time::OffsetDateTime::now_utc()),
        depends_on: new.depends_on,
        on_dependency_failure: new.on_dependency_failure,
        concurrency_key: new.concurrency_key,
    })
}

fn submitted(event: &Envelope) -> &task::Submitted {
    match &event.payload {
        Payload::TaskSubmitted(s) => s,
        _ => unreachable!("built by `submission`"),
    }
}

pub(crate) fn kept_changing(task_id: &str) -> Error {
    Error::Conflict {
        task_id: task_id.to_owned(),
        reason: "the task kept changing while the command was recorded; send it again".into(),
    }
}

/// Namespace of task ids derived from idempotency keys.
const IDEMPOTENCY_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x7f3c_2a1e_9d4b_4c8a_b6e5_1f0a_3d9c_8e21);
