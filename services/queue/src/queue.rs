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
use vibehq_events::task::lifecycle::{self, Refusal, State, Task};
use vibehq_events::{
    Actor, Envelope, EventLog, Expect, MAX_BATCH, Payload, StreamKind, Subject, task,
};

use crate::Error;
use crate::lanes::{Delivery, Lanes, MAX_DELIVER};

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
    lanes: Lanes,
    /// Tasks as this process last saw them, so a command on a task this process just handled
    /// reads nothing first (its append expects that view's version; a stale view is refused).
    known: std::sync::Mutex<HashMap<String, Task>>,
}

/// Most tasks [`Inner::known`] holds before it starts over.
const KNOWN_TASKS: usize = 50_000;

/// Most deliveries a claim pulls at once to sweep unreadable messages out of a lane.
const SWEEP: usize = 256;

/// How many times a command re-reads and decides again after losing a race.
const RETRIES: usize = 4;

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

    fn known(&self, task_id: &str) -> Option<Task> {
        self.inner
            .known
            .lock()
            .ok()
            .and_then(|known| known.get(task_id).cloned())
    }

    fn remember(&self, task: &Task) {
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

    async fn require(&self, task_id: &str) -> Result<Task, Error> {
        self.load(task_id)
            .await?
            .ok_or_else(|| Error::NotFound(task_id.to_owned()))
    }

    /// Submits a task. With an idempotency key the task id is derived from the key, and a
    /// second submission of the same task returns the first (`created: false`); the same key
    /// with a different task is refused ([`Error::KeyReused`]).
    pub async fn submit(&self, by: &Actor, new: NewTask) -> Result<Submitted, Error> {
        let event = submission(by, new);
        let lane = submitted(&event).lane();
        self.inner.lanes.open(&lane).await?;
        let outcome = match self.inner.log.append(&event, Expect::New).await {
            Ok(appended) => Submitted {
                task_id: submitted(&event).task_id.clone(),
                sequence: appended.sequence,
                created: true,
            },
            Err(vibehq_events::Error::Conflict { .. }) => return self.existing(&event).await,
            Err(e) => return Err(e.into()),
        };
        self.inner.lanes.announce(&lane, 1).await;
        Ok(outcome)
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
        if tasks.len() > MAX_BATCH {
            return Err(Error::TooMany { max: MAX_BATCH });
        }
        let events: Vec<Envelope> = tasks.into_iter().map(|new| submission(by, new)).collect();
        let mut lanes: BTreeMap<Lane, u64> = BTreeMap::new();
        for event in &events {
            *lanes.entry(submitted(event).lane()).or_default() += 1;
        }
        for lane in lanes.keys() {
            self.inner.lanes.open(lane).await?;
        }
        let batch: Vec<(Envelope, Expect)> =
            events.iter().map(|e| (e.clone(), Expect::New)).collect();
        let mut answers: Vec<Option<Submitted>> = vec![None; events.len()];
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
                for (&i, appended) in rest.iter().zip(self.inner.log.append_atomic(&batch).await?) {
                    answers[i] = Some(Submitted {
                        task_id: submitted(&events[i]).task_id.clone(),
                        sequence: appended.sequence,
                        created: true,
                    });
                }
            }
            Err(e) => return Err(e.into()),
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
        let ours = first
            .and_then(|r| r.decode().ok())
            .is_some_and(|stored| stored.id == event.id);
        if task.submitted != *wanted {
            return Err(Error::KeyReused {
                task_id: wanted.task_id.clone(),
                key: wanted.idempotency_key.clone().unwrap_or_default(),
            });
        }
        Ok(Submitted {
            task_id: wanted.task_id.clone(),
            sequence,
            created: ours,
        })
    }

    /// Claims the next task `claimer` may take: the highest priority first, and within a
    /// priority the most specifically targeted. Waits up to `wait` for work to arrive; `None`
    /// if none did.
    pub async fn claim(&self, claimer: &Actor, wait: Duration) -> Result<Option<Claim>, Error> {
        Ok(self.claim_many(claimer, 1, wait).await?.into_iter().next())
    }

    /// Claims up to `max` tasks at once, best first (as [`Queue::claim`]): a container with
    /// free slots claims for all of them in one pull and one round of pipelined appends, each
    /// expecting its own task's version, so a task that went stale costs the others nothing.
    /// Waits up to `wait` for the first task; empty if none arrived.
    pub async fn claim_many(
        &self,
        claimer: &Actor,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Claim>, Error> {
        let eligible = Lane::eligible(claimer);
        let deadline = tokio::time::Instant::now() + wait;
        let lanes = &self.inner.lanes;
        let max = max.max(1);
        let _claiming = lanes.claiming(max);
        // After a pull of nothing but unreadable messages, pull more at once to sweep them.
        let mut sweep = max;
        loop {
            // Listen before looking, so work announced in between wakes us.
            let arrival = lanes.arrival();
            tokio::pin!(arrival);
            arrival.as_mut().enable();
            let pulled = lanes.pull(&eligible, sweep, wait.is_zero()).await?;
            let looked = !pulled.is_empty();
            let (claims, unreadable) = self.take_all(claimer, pulled, max).await?;
            sweep = if unreadable > 0 && claims.is_empty() {
                (sweep * 4).min(SWEEP)
            } else {
                max
            };
            if !claims.is_empty() {
                return Ok(claims);
            }
            if looked {
                // Everything pulled was stale or ended: look again at once.
                continue;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(claims);
            }
            // Redeliveries (expired leases, retries after their backoff) are announced by
            // nobody: look again at least once a second.
            let until = deadline.min(now + Duration::from_secs(1));
            let _ = tokio::time::timeout_at(until, arrival).await;
        }
    }

    /// Turns pulled deliveries into claims. First deliveries go the fast way together (one
    /// pipelined round of appends, each expecting the submission as the task's version); the
    /// rest, and any that lost a race, are decided one by one on the task's events.
    ///
    /// At most `max` are claimed; readable deliveries beyond that (a sweep pulled more) go back
    /// to their lane. Answers the claims and how many deliveries were unreadable.
    async fn take_all(
        &self,
        claimer: &Actor,
        pulled: Vec<Delivery>,
        max: usize,
    ) -> Result<(Vec<Claim>, usize), Error> {
        let mut fresh = Vec::new();
        let mut again = Vec::new();
        let mut unreadable = 0;
        let mut surplus = Vec::new();
        for delivery in pulled {
            match Offer::read(delivery) {
                Ok(offer) if fresh.len() + again.len() == max => surplus.push(offer),
                Ok(offer) if offer.delivered == 1 => fresh.push(offer),
                Ok(offer) => again.push(offer),
                Err(delivery) => {
                    // Not a submission (the projector keeps it in projector_rejected): make
                    // sure no claimer sees it again.
                    tracing::debug!(subject = %delivery.message.subject, "dropping an unreadable message from a lane");
                    unreadable += 1;
                    terminate(&delivery.message).await;
                }
            }
        }
        if unreadable > 0 {
            tracing::warn!(unreadable, "dropped unreadable messages from a lane");
        }
        for offer in surplus {
            let _ = offer.delivery.message.ack_with(AckKind::Nak(None)).await;
        }
        let mut claims = Vec::with_capacity(fresh.len());
        let mut failed = None;
        let appends: Vec<(Envelope, Expect)> = fresh
            .iter()
            .map(|offer| {
                (
                    offer.assignment(claimer, 1),
                    Expect::Version(offer.sequence),
                )
            })
            .collect();
        let outcomes = self.inner.log.append_many(&appends).await;
        for ((offer, (event, _)), outcome) in fresh.into_iter().zip(appends).zip(outcomes) {
            match outcome {
                Ok(appended) => {
                    claims.extend(self.claimed(offer.pending(), event, appended.sequence))
                }
                Err(vibehq_events::Error::Conflict { .. }) => again.push(offer),
                Err(error) => failed = Some(Error::from(error)),
            }
        }
        let decided =
            futures::future::join_all(again.into_iter().map(|offer| self.take(claimer, offer)))
                .await;
        for outcome in decided {
            match outcome {
                Ok(Some(claim)) => claims.push(claim),
                Ok(None) => {}
                Err(error) => failed = Some(error),
            }
        }
        // Claims made stand; a delivery that failed comes back after its lease.
        match failed {
            Some(error) if claims.is_empty() => Err(error),
            Some(error) => {
                tracing::warn!(%error, "part of a claim failed; its tasks come back after their lease");
                Ok((claims, unreadable))
            }
            None => Ok((claims, unreadable)),
        }
    }

    /// Decides what a delivery that cannot go the fast way is: a claim of the task's next
    /// attempt, or nothing (the task ended, or ran out of attempts).
    async fn take(&self, claimer: &Actor, offer: Offer) -> Result<Option<Claim>, Error> {
        for _ in 0..RETRIES {
            let Some(task) = self.load(&offer.task_id).await? else {
                terminate(&offer.delivery.message).await;
                return Ok(None);
            };
            if task.status.state.is_terminal() {
                acknowledge(&offer.delivery.message).await;
                return Ok(None);
            }
            let mut task = task;
            let status = task.status.clone();
            if status.state.is_held() {
                // The server handed the task out again: the holder's lease expired.
                let holder = status
                    .holder
                    .as_ref()
                    .map_or_else(|| "the previous claim".to_owned(), Actor::label);
                let requeued = claimer.envelope(task::Requeued {
                    task_id: offer.task_id.clone(),
                    attempt: status.attempt,
                    reason: format!("the lease of {holder} expired"),
                    backoff_ms: 0,
                });
                match self.append(&task, requeued).await {
                    Ok(now) => task = now,
                    Err(Error::Conflict { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
            let exhausted = task.status.attempt >= task.status.max_attempts;
            if exhausted || offer.delivered >= MAX_DELIVER as u64 {
                let error = match (&task.error, exhausted) {
                    (Some(error), true) => error.clone(),
                    (None, true) => "no attempts left".to_owned(),
                    (_, false) => format!("handed out {} times without finishing", offer.delivered),
                };
                let failed = claimer.envelope(task::Failed {
                    task_id: offer.task_id.clone(),
                    attempt: task.status.attempt,
                    error,
                });
                match self.append(&task, failed).await {
                    Ok(_) => {}
                    Err(Error::Conflict { .. }) => continue,
                    Err(e) => return Err(e),
                }
                terminate(&offer.delivery.message).await;
                return Ok(None);
            }
            let attempt = task.status.attempt + 1;
            let assigned = offer.assignment(claimer, attempt);
            match self.append(&task, assigned.clone()).await {
                Ok(now) => return Ok(Some(self.claim_of(&now, now.version))),
                Err(Error::Conflict { .. }) => continue,
                Err(Error::Refused { refusal, .. }) => {
                    tracing::warn!(task_id = %offer.task_id, %refusal, "cannot claim a delivered task");
                    terminate(&offer.delivery.message).await;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        // Still racing: hand it back for whoever wins.
        let _ = offer.delivery.message.ack_with(AckKind::Nak(None)).await;
        Ok(None)
    }

    /// The claim a fast-way assignment of `pending` made (stored at `sequence`), remembered
    /// as this process's view of the task. `None` if the lifecycle refuses what the server
    /// stored (it cannot: the claimer pulled from a lane it may take from, the first attempt):
    /// then the delivery comes back after its lease and is decided on the task's events.
    fn claimed(&self, pending: Task, event: Envelope, sequence: u64) -> Option<Claim> {
        let subject = event.subject().to_string();
        let mut task = Some(pending);
        let applied = match lifecycle::read(&subject, &event) {
            Some(Ok(origin)) => Task::apply(&mut task, &origin, &event, sequence),
            Some(Err(refusal)) => Err(refusal),
            None => Err(Refusal::Unknown),
        };
        match (applied, task) {
            (Ok(()), Some(task)) => {
                self.remember(&task);
                Some(self.claim_of(&task, sequence))
            }
            (outcome, _) => {
                tracing::error!(%subject, ?outcome, "the lifecycle refuses an assignment the server stored");
                None
            }
        }
    }

    fn claim_of(&self, task: &Task, sequence: u64) -> Claim {
        let s = &task.submitted;
        Claim {
            task_id: s.task_id.clone(),
            task_type: s.task_type.clone(),
            command: s.command.clone(),
            parameters: s.parameters.clone(),
            priority: s.priority,
            attempt: task.status.attempt,
            max_attempts: task.status.max_attempts,
            lease_ms: task.lease_ms,
            sequence,
        }
    }

    /// Claims one specific pending task for `claimer`, if `claimer` may take it.
    ///
    /// The task's delivery is looked for among the next 256 its lane would hand out (the
    /// others go straight back, first in line); a task further back answers
    /// [`Error::NotAvailable`].
    pub async fn claim_task(&self, task_id: &str, claimer: &Actor) -> Result<Claim, Error> {
        let task = self.require(task_id).await?;
        let refused = |refusal| Error::Refused {
            task_id: task_id.to_owned(),
            refusal: Box::new(refusal),
        };
        if task.status.state != State::Pending {
            return Err(refused(Refusal::NotAllowed {
                state: task.status.state,
                step: lifecycle::StepName(task::Step::Assigned),
            }));
        }
        if !task.status.target.admits(claimer) {
            return Err(refused(Refusal::NotEligible {
                target: task.status.target.clone(),
                actor: claimer.clone(),
            }));
        }
        let lane = task.submitted.lane();
        let Some(found) = self.inner.lanes.consumer(&lane).await? else {
            return Err(Error::NotAvailable(task_id.to_owned()));
        };
        let (consumer, lease) = (&found.0, found.1);
        let mut batch = consumer
            .fetch()
            .max_messages(256)
            .messages()
            .await
            .map_err(|e| Error::nats("pull work", e))?;
        let prefix = format!("vibehq.tasks.{task_id}.submitted.");
        let mut found = None;
        let mut others = Vec::new();
        while let Some(message) = futures::StreamExt::next(&mut batch).await {
            let message = message.map_err(|e| Error::nats("pull work", e))?;
            if found.is_none() && message.subject.starts_with(prefix.as_str()) {
                found = Some(message);
            } else {
                others.push(message);
            }
        }
        for message in others {
            let _ = message.ack_with(AckKind::Nak(None)).await;
        }
        let Some(message) = found else {
            return Err(Error::NotAvailable(task_id.to_owned()));
        };
        let offer = Offer::read(Delivery { message, lease })
            .map_err(|_| Error::NotAvailable(task_id.to_owned()))?;
        self.take(claimer, offer)
            .await?
            .ok_or_else(|| Error::NotAvailable(task_id.to_owned()))
    }

    /// The task as `claimer` holds it (for `attempt`, when one is named); a refusal (recorded,
    /// when `outcome` names a result) otherwise.
    async fn holding(
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
            Ok(FailOutcome {
                retried: false,
                backoff_ms: 0,
                sequence: now.version,
            })
        }
    }

    /// Cancels a task that has not ended. A held task's lease ends at once (its holder learns
    /// at its next heartbeat); a pending one is dropped when its lane next hands it out.
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
                    return Ok(now.version);
                }
                Err(Error::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(kept_changing(task_id))
    }

    /// Appends `event` to `task` if the lifecycle allows it, expecting the task's version; the
    /// task as it is after the event.
    async fn append(&self, task: &Task, event: Envelope) -> Result<Task, Error> {
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

/// A pulled submission, read: which task, at which version, delivered how often.
#[derive(Debug)]
struct Offer {
    task_id: String,
    /// The submission's stream sequence: the task's version while nothing else happened.
    sequence: u64,
    delivered: u64,
    /// The submission as stored, with who submitted it.
    submission: Option<(task::Submitted, Actor)>,
    delivery: Delivery,
}

impl Offer {
    /// Reads a delivery; gives it back when it is not a submission (wrong subject, not an
    /// event, or an event that does not match its subject).
    fn read(delivery: Delivery) -> Result<Self, Box<Delivery>> {
        let Ok(info) = delivery.message.info() else {
            return Err(Box::new(delivery));
        };
        let (sequence, delivered) = (info.stream_sequence, info.delivered.max(1) as u64);
        let Ok(envelope) = Envelope::decode(&delivery.message.payload) else {
            return Err(Box::new(delivery));
        };
        let Some(Ok(origin)) = lifecycle::read(&delivery.message.subject, &envelope) else {
            return Err(Box::new(delivery));
        };
        let Payload::TaskSubmitted(submitted) = envelope.payload else {
            return Err(Box::new(delivery));
        };
        Ok(Self {
            task_id: origin.task_id,
            sequence,
            delivered,
            submission: Some((submitted, origin.actor)),
            delivery,
        })
    }

    /// The lease this delivery gives a claim: its ack subject.
    fn lease(&self) -> Option<&str> {
        self.delivery.message.reply.as_deref()
    }

    /// `task.assigned` of `attempt` by `claimer`, holding this delivery.
    fn assignment(&self, claimer: &Actor, attempt: u32) -> Envelope {
        claimer.envelope(task::Assigned {
            task_id: self.task_id.clone(),
            attempt,
            lease_ms: self.delivery.lease.as_millis() as u64,
            lease: self.lease().map(str::to_owned),
        })
    }

    /// The task as just submitted, at the submission's version.
    fn pending(&self) -> Task {
        let (submitted, by) = self
            .submission
            .clone()
            .unwrap_or_else(|| unreachable!("an offer holds its submission"));
        Task {
            status: lifecycle::Status {
                state: State::Pending,
                attempt: 0,
                max_attempts: submitted.max_attempts.max(1),
                target: submitted.target(),
                holder: None,
            },
            submitted,
            submitted_by: by,
            lease: None,
            lease_ms: 0,
            error: None,
            version: self.sequence,
        }
    }
}

/// The id of the task submitted with idempotency key `key` (a UUIDv5 of the key), so a client
/// can name the task before, or without, asking.
pub fn keyed_task_id(key: &str) -> String {
    uuid::Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, key.as_bytes()).to_string()
}

/// The `task.submitted` event of a new task by `by`.
fn submission(by: &Actor, new: NewTask) -> Envelope {
    let task_id = match &new.idempotency_key {
        Some(key) => keyed_task_id(key),
        None => uuid::Uuid::now_v7().to_string(),
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
    })
}

fn submitted(event: &Envelope) -> &task::Submitted {
    match &event.payload {
        Payload::TaskSubmitted(s) => s,
        _ => unreachable!("built by `submission`"),
    }
}

async fn acknowledge(message: &async_nats::jetstream::Message) {
    if let Err(error) = message.ack().await {
        tracing::debug!(%error, "cannot acknowledge a delivery; it comes back after its lease");
    }
}

async fn terminate(message: &async_nats::jetstream::Message) {
    if let Err(error) = message.ack_with(AckKind::Term).await {
        tracing::debug!(%error, "cannot end a delivery; it comes back after its lease");
    }
}

fn kept_changing(task_id: &str) -> Error {
    Error::Conflict {
        task_id: task_id.to_owned(),
        reason: "the task kept changing while the command was recorded; send it again".into(),
    }
}

/// Namespace of task ids derived from idempotency keys.
const IDEMPOTENCY_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x7f3c_2a1e_9d4b_4c8a_b6e5_1f0a_3d9c_8e21);
