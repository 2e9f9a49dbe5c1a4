//! Claims: the next task (or many) from the best lanes a claimer may take from, or one task by
//! id, and what a delivered submission becomes.
//!
//! A first delivery is claimed the fast way: `task.assigned` expecting the submission's own
//! sequence, pipelined with the other deliveries of the same pull, each fenced on its own
//! task. A redelivery, or a delivery whose task moved on, is decided on the task's events:
//! an expired lease is recorded (`task.requeued`) and the next attempt taken, an ended task's
//! delivery acknowledged, an unreadable one ended (`+TERM`) so no lane stalls on it.

use std::time::Duration;

use async_nats::jetstream::message::AckKind;
use vibehq_events::task::lane::Lane;
use vibehq_events::task::lifecycle::{self, Refusal, State, Task};
use vibehq_events::{Actor, Envelope, Expect, Payload, task};

use crate::Error;
use crate::lanes::{Delivery, MAX_DELIVER};
use crate::queue::{Claim, Queue, RETRIES};

/// Most deliveries a claim pulls at once to sweep unreadable messages out of a lane.
const SWEEP: usize = 256;

impl Queue {
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
            let mut until = deadline.min(now + Duration::from_secs(1));
            if let Some(look) = lanes.next_due_look(&eligible) {
                until = until.min(look);
            }
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
                // A delayed task's copy may follow other events of its task (a cancel):
                // decided on the task's events, never the fast way. A released copy was
                // appended expecting its task unchanged, so it may.
                Ok(offer)
                    if offer.delivered == 1 && (!offer.is_due_copy() || offer.is_released()) =>
                {
                    fresh.push(offer)
                }
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
                    let Some(claim) = self.claimed(&offer, event, appended.sequence) else {
                        continue;
                    };
                    if offer.is_released()
                        && let Some(task) = self.known(&claim.task_id)
                    {
                        // A keyed task's start, which its key's rate limit counts.
                        self.key_started(&task, claimer).await;
                    }
                    claims.push(claim);
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
            if offer.is_due_copy() && offer.delivered == 1 && task.version != offer.sequence {
                // A first delivery of a delayed task's copy is claimable only as the task's
                // latest event: another copy came after it (a schedule published twice), or
                // the task moved on. The lane keeps one copy per task.
                terminate(&offer.delivery.message).await;
                return Ok(None);
            }
            let mut task = task;
            let status = task.status.clone();
            if status.state.is_held() {
                // The server handed the task out again: the holder's lease expired.
                vibehq_metrics::metrics().lease_expiries.inc();
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
                    Ok(now) => self.release_key_after(&now, claimer).await,
                    Err(Error::Conflict { .. }) => continue,
                    Err(e) => return Err(e),
                }
                terminate(&offer.delivery.message).await;
                return Ok(None);
            }
            let attempt = task.status.attempt + 1;
            let assigned = offer.assignment(claimer, attempt);
            match self.append(&task, assigned.clone()).await {
                Ok(now) => {
                    if attempt == 1 {
                        self.key_started(&now, claimer).await;
                    }
                    return Ok(Some(self.claim_of(&now, now.version, offer.trace())));
                }
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
    fn claimed(&self, offer: &Offer, event: Envelope, sequence: u64) -> Option<Claim> {
        let subject = event.subject().to_string();
        let mut task = Some(offer.pending());
        let applied = match lifecycle::read(&subject, &event) {
            Some(Ok(origin)) => Task::apply(&mut task, &origin, &event, sequence),
            Some(Err(refusal)) => Err(refusal),
            None => Err(Refusal::Unknown),
        };
        match (applied, task) {
            (Ok(()), Some(task)) => {
                self.remember(&task);
                Some(self.claim_of(&task, sequence, offer.trace()))
            }
            (outcome, _) => {
                tracing::error!(%subject, ?outcome, "the lifecycle refuses an assignment the server stored");
                None
            }
        }
    }

    /// The claim of `task` at `sequence`, continuing the submission's trace (`traceparent`).
    fn claim_of(&self, task: &Task, sequence: u64, traceparent: Option<String>) -> Claim {
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
            traceparent,
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

    /// Whether this is a delayed task's submission, copied into its lane when it came due.
    /// Whether it is a held task's release copy ([`vibehq_events::log::RELEASED_HEADER`]).
    fn is_released(&self) -> bool {
        self.delivery
            .message
            .headers
            .as_ref()
            .is_some_and(|h| h.get(vibehq_events::log::RELEASED_HEADER).is_some())
    }

    fn is_due_copy(&self) -> bool {
        self.submission
            .as_ref()
            .is_some_and(|(submitted, _)| submitted.run_at.is_some())
    }

    /// The trace the submission was made in (its `traceparent` header).
    fn trace(&self) -> Option<String> {
        vibehq_events::trace::from_headers(self.delivery.message.headers.as_ref())
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
