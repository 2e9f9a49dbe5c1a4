//! Recurring schedules: create, pause, resume, delete and trigger them, and the scheduler that
//! turns each of the server's firings into a task.
//!
//! A schedule's events are the truth ([`vibehq_events::recurring`]); its clock is the server's
//! (an armed message schedule, [`EventLog::arm`]). Each command appends one event expecting the
//! schedule's version, then arms or disarms the timer; `vibehq up` arms again at start what an
//! interrupted command left unarmed ([`Queue::rearm_schedules`]).
//!
//! A firing is recorded *before* its task is submitted, so two processes handling firings of
//! one schedule at once are fenced by the schedule's version (the overlap policy cannot be
//! raced), and a crash between the two is healed by the redelivery: the firing is found
//! recorded, and its task (whose id is the firing's) is submitted again, idempotently.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, pull};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use vibehq_events::recurring::{
    Created, Deleted, Fired, Misfire, Overlap, Paused, Resumed, Schedule, Skipped, Status, Trigger,
};
use vibehq_events::schedule::{FIRED, STREAM, fired_schedule, fired_subject};
use vibehq_events::{Actor, Expect, Payload, StreamKind, Subject};

use crate::queue::{NewTask, RETRIES};
use crate::{Error, Queue};

/// Who records firings and submits their tasks.
pub fn scheduler() -> Actor {
    Actor::worker("vibehq-scheduler")
}

/// The scheduler's durable consumer on the schedules stream, shared by every `vibehq up`.
const CONSUMER: &str = "vibehq-scheduler";

/// Deliveries of one firing before it is given up (a firing that keeps failing, or junk).
const MAX_DELIVER: i64 = 20;

/// A command's answer: the schedule as it is now, and the event's sequence.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Changed {
    pub schedule_id: String,
    pub status: &'static str,
    /// Pass as `min_seq` to read the change back.
    pub sequence: u64,
}

/// One firing to handle.
#[derive(Debug, Clone)]
struct Firing {
    schedule_id: String,
    firing_id: String,
    at: OffsetDateTime,
    trigger: Trigger,
    next_at: Option<OffsetDateTime>,
    /// A later firing of the same schedule is already stored.
    superseded: bool,
}

impl Queue {
    /// The schedule as its events say it is now; `None` if it was never created.
    ///
    /// One request when this process's view is current, else its events are read and folded.
    pub async fn load_schedule(&self, schedule_id: &str) -> Result<Option<Schedule>, Error> {
        let subject = Subject::Schedule(schedule_id.to_owned());
        subject.validate().map_err(vibehq_events::Error::from)?;
        let known = self.known_schedule(schedule_id);
        if let Some(known) = known {
            let last = self
                .inner
                .log
                .last(StreamKind::Tasks, &subject.version())
                .await?;
            if last.is_some_and(|l| l.record.sequence == known.version) {
                return Ok(Some(known));
            }
        }
        let history = self.inner.log.history(&subject).await?;
        let decoded: Vec<(u64, Payload)> = history
            .iter()
            .filter_map(|r| r.decode().ok().map(|e| (r.sequence, e.payload)))
            .collect();
        let schedule = Schedule::fold(decoded.iter().map(|(s, p)| (*s, p)));
        if let Some(schedule) = &schedule {
            self.remember_schedule(schedule);
        }
        Ok(schedule)
    }

    fn known_schedule(&self, schedule_id: &str) -> Option<Schedule> {
        let known = self.inner.schedules.lock().ok()?;
        known.get(schedule_id).cloned()
    }

    fn remember_schedule(&self, schedule: &Schedule) {
        if let Ok(mut known) = self.inner.schedules.lock() {
            if known.len() >= 10_000 {
                known.clear();
            }
            known.insert(schedule.definition.schedule_id.clone(), schedule.clone());
        }
    }

    async fn require_schedule(&self, schedule_id: &str) -> Result<Schedule, Error> {
        self.load_schedule(schedule_id)
            .await?
            .ok_or_else(|| Error::ScheduleNotFound(schedule_id.to_owned()))
    }

    /// Creates a schedule and arms it. Creating the same schedule again answers the first
    /// (`created: false` in the HTTP status); another definition under its id is refused.
    pub async fn create_schedule(
        &self,
        by: &Actor,
        new: Created,
    ) -> Result<(Changed, bool), Error> {
        let id = new.schedule_id.clone();
        if let Some(existing) = self.load_schedule(&id).await? {
            if existing.definition == new {
                return Ok((changed(&existing, existing.version), false));
            }
            return Err(Error::ScheduleExists(id));
        }
        // Arming first lets the server judge the pattern and zone before anything is stored.
        self.inner
            .log
            .arm(&id, &new.timing)
            .await?
            .map_err(Error::Unarmable)?;
        let event = by.envelope(new.clone());
        match self.inner.log.append(&event, Expect::New).await {
            Ok(appended) => Ok((
                Changed {
                    schedule_id: id,
                    status: Status::Active.as_str(),
                    sequence: appended.sequence,
                },
                true,
            )),
            Err(vibehq_events::Error::Conflict { .. }) => {
                // Created meanwhile by someone else: its timer is the one that holds.
                let existing = self.require_schedule(&id).await?;
                self.sync_timer(&existing).await?;
                if existing.definition == new {
                    Ok((changed(&existing, existing.version), false))
                } else {
                    Err(Error::ScheduleExists(id))
                }
            }
            Err(error) => {
                let _ = self.inner.log.disarm(&id).await;
                Err(error.into())
            }
        }
    }

    /// Pauses an active schedule: it fires no more until resumed.
    pub async fn pause_schedule(&self, schedule_id: &str, by: &Actor) -> Result<Changed, Error> {
        let payload = Payload::SchedulePaused(Paused {
            schedule_id: schedule_id.to_owned(),
        });
        self.change_schedule(schedule_id, by, payload).await
    }

    /// Resumes a paused schedule: it fires from its next time on (what it missed meanwhile
    /// is not made up).
    pub async fn resume_schedule(&self, schedule_id: &str, by: &Actor) -> Result<Changed, Error> {
        let payload = Payload::ScheduleResumed(Resumed {
            schedule_id: schedule_id.to_owned(),
        });
        self.change_schedule(schedule_id, by, payload).await
    }

    /// Deletes a schedule: it never fires again; its history and firings stay.
    pub async fn delete_schedule(&self, schedule_id: &str, by: &Actor) -> Result<Changed, Error> {
        let payload = Payload::ScheduleDeleted(Deleted {
            schedule_id: schedule_id.to_owned(),
        });
        self.change_schedule(schedule_id, by, payload).await
    }

    async fn change_schedule(
        &self,
        schedule_id: &str,
        by: &Actor,
        payload: Payload,
    ) -> Result<Changed, Error> {
        for _ in 0..RETRIES {
            let mut schedule = self.require_schedule(schedule_id).await?;
            schedule
                .decide(&payload)
                .map_err(|refused| Error::ScheduleRefused(Box::new(refused)))?;
            let event = by.envelope(payload.clone());
            match self
                .inner
                .log
                .append(&event, Expect::at(schedule.version))
                .await
            {
                Ok(appended) => {
                    schedule.record(appended.sequence, &payload);
                    self.remember_schedule(&schedule);
                    self.sync_timer(&schedule).await?;
                    return Ok(changed(&schedule, appended.sequence));
                }
                Err(vibehq_events::Error::Conflict { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(Error::Conflict {
            task_id: schedule_id.to_owned(),
            reason: "the schedule kept changing while the command was recorded; send it again"
                .into(),
        })
    }

    /// Arms an active schedule's timer, disarms another's.
    async fn sync_timer(&self, schedule: &Schedule) -> Result<(), Error> {
        let id = &schedule.definition.schedule_id;
        match schedule.status {
            Status::Active => {
                if let Err(unarmable) = self.inner.log.arm(id, &schedule.definition.timing).await? {
                    // It was armed once with this timing: a server that now refuses it is
                    // older or configured otherwise. Nothing a caller can mend here.
                    tracing::error!(schedule_id = %id, %unarmable, "cannot arm a schedule");
                }
            }
            Status::Paused | Status::Deleted => self.inner.log.disarm(id).await?,
        }
        Ok(())
    }

    /// Arms every active schedule whose timer is missing and disarms every other whose timer
    /// is there (`schedule_ids`, from the projection): after a command interrupted between its
    /// event and its timer. Returns how many timers it changed.
    pub async fn rearm_schedules(&self, schedule_ids: &[String]) -> Result<usize, Error> {
        let mut changed = 0;
        for id in schedule_ids {
            let Some(schedule) = self.load_schedule(id).await? else {
                continue;
            };
            let armed = self.inner.log.is_armed(id).await?;
            if armed != (schedule.status == Status::Active) {
                self.sync_timer(&schedule).await?;
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// Runs a schedule's task now, whatever its time and overlap policy (an operator asked).
    pub async fn trigger_schedule(&self, schedule_id: &str) -> Result<Fired, Error> {
        // A deleted schedule is gone for its commands, as for its reads (its rows stay).
        if self.require_schedule(schedule_id).await?.status == Status::Deleted {
            return Err(Error::ScheduleNotFound(schedule_id.to_owned()));
        }
        let now = OffsetDateTime::now_utc();
        let firing = Firing {
            schedule_id: schedule_id.to_owned(),
            firing_id: format!("{schedule_id}-manual-{}", uuid::Uuid::now_v7().simple()),
            at: now,
            trigger: Trigger::Manual,
            next_at: None,
            superseded: false,
        };
        self.fire(&firing).await
    }

    /// Handles one firing: records it (run or skipped, by the schedule's policies), then
    /// submits its task.
    async fn fire(&self, firing: &Firing) -> Result<Fired, Error> {
        for _ in 0..RETRIES {
            let schedule = self.require_schedule(&firing.schedule_id).await?;
            if let Some(fired) = schedule
                .last_fired
                .as_ref()
                .filter(|f| f.firing_id == firing.firing_id)
            {
                // Recorded before a crash or a lost ack: make sure its task exists.
                if let Some(task_id) = &fired.task_id {
                    self.submit_firing(&schedule, task_id).await?;
                }
                return Ok(fired.clone());
            }
            let fired = self.judge(&schedule, firing).await?;
            let event = scheduler().envelope(fired.clone());
            match self
                .inner
                .log
                .append(&event, Expect::at(schedule.version))
                .await
            {
                Ok(appended) => {
                    let mut schedule = schedule;
                    schedule.record(appended.sequence, &event.payload);
                    self.remember_schedule(&schedule);
                    if let Some(task_id) = &fired.task_id {
                        self.submit_firing(&schedule, task_id).await?;
                    }
                    return Ok(fired);
                }
                Err(vibehq_events::Error::Conflict { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(Error::Conflict {
            task_id: firing.schedule_id.clone(),
            reason: "the schedule kept changing while a firing was recorded".into(),
        })
    }

    /// What a firing does under the schedule's state and policies.
    async fn judge(&self, schedule: &Schedule, firing: &Firing) -> Result<Fired, Error> {
        let definition = &schedule.definition;
        let grace = time::Duration::seconds(definition.misfire_grace_seconds as i64);
        let late = OffsetDateTime::now_utc() - firing.at > grace;
        let mut skipped = match schedule.status {
            Status::Active => None,
            Status::Paused | Status::Deleted => Some(Skipped::Inactive),
        };
        if skipped.is_none() && firing.trigger == Trigger::Timer && late {
            skipped = match (firing.superseded, definition.misfire) {
                (true, _) => Some(Skipped::Superseded),
                (false, Misfire::Skip) => Some(Skipped::Missed),
                (false, Misfire::RunOnce) => None,
            };
        }
        if skipped.is_none()
            && firing.trigger == Trigger::Timer
            && definition.overlap == Overlap::Skip
            && let Some(last) = &schedule.last_task_id
            && self
                .load(last)
                .await?
                .is_some_and(|task| !task.status.state.is_terminal())
        {
            skipped = Some(Skipped::Overlap);
        }
        Ok(Fired {
            schedule_id: firing.schedule_id.clone(),
            firing_id: firing.firing_id.clone(),
            fired_at: firing.at,
            trigger: firing.trigger,
            task_id: skipped.is_none().then(|| firing.firing_id.clone()),
            skipped,
            next_at: firing.next_at,
        })
    }

    async fn submit_firing(&self, schedule: &Schedule, task_id: &str) -> Result<(), Error> {
        let task = &schedule.definition.task;
        self.submit(
            &scheduler(),
            NewTask {
                task_type: task.task_type.clone(),
                command: task.command.clone(),
                parameters: task.parameters.clone(),
                priority: task.priority,
                worker_name: task.worker_name.clone(),
                container_name: task.container_name.clone(),
                max_attempts: task.max_attempts,
                task_id: Some(task_id.to_owned()),
                ..NewTask::default()
            },
        )
        .await?;
        Ok(())
    }
}

fn changed(schedule: &Schedule, sequence: u64) -> Changed {
    Changed {
        schedule_id: schedule.definition.schedule_id.clone(),
        status: schedule.status.as_str(),
        sequence,
    }
}

/// Turns the server's firings into tasks until `shutdown`: a durable consumer on the
/// schedules stream, shared by every `vibehq up`, so each firing is handled once.
pub async fn run_scheduler(queue: Queue, shutdown: CancellationToken) -> Result<(), Error> {
    let js = queue.log().jetstream();
    let stream = js
        .get_stream(STREAM)
        .await
        .map_err(|e| Error::nats("find the schedules stream", e))?;
    let config = pull::Config {
        durable_name: Some(CONSUMER.to_owned()),
        description: Some("vibehq: recurring schedules' firings into tasks".to_owned()),
        filter_subject: FIRED.to_owned(),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_deliver: MAX_DELIVER,
        ..Default::default()
    };
    let mut superseding: HashMap<String, u64> = HashMap::new();
    let mut messages = crate::durable::open(&stream, config).await?;
    while let Some(message) = messages.next(&shutdown).await {
        handle_firing(&queue, &stream, &message, &mut superseding).await;
    }
    Ok(())
}

/// Handles one delivered firing and acknowledges it; a firing that cannot be handled now is
/// delivered again shortly, one that can never be (junk, an unknown schedule) is dropped.
async fn handle_firing(
    queue: &Queue,
    stream: &async_nats::jetstream::stream::Stream,
    message: &async_nats::jetstream::Message,
    latest: &mut HashMap<String, u64>,
) {
    use async_nats::jetstream::AckKind;
    let (Some(schedule_id), Ok(info)) = (fired_schedule(&message.subject), message.info()) else {
        tracing::warn!(subject = %message.subject, "dropping a message that is no firing");
        let _ = message.ack_with(AckKind::Term).await;
        return;
    };
    let sequence = info.stream_sequence;
    let at = info.published;
    let next_at = message
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Schedule-Next"))
        .and_then(|v| {
            OffsetDateTime::parse(v.as_str(), &time::format_description::well_known::Rfc3339).ok()
        });
    // Whether a later firing of this schedule is stored (asked only of firings that waited:
    // only a late one's policy needs it).
    let superseded = if OffsetDateTime::now_utc() - at > time::Duration::seconds(1) {
        let last = match latest.get(schedule_id) {
            Some(last) if *last > sequence => Some(*last),
            _ => stream
                .get_last_raw_message_by_subject(&fired_subject(schedule_id))
                .await
                .ok()
                .map(|m| m.sequence),
        };
        if let Some(last) = last {
            latest.insert(schedule_id.to_owned(), last);
        }
        last.is_some_and(|last| last > sequence)
    } else {
        false
    };
    let firing = Firing {
        schedule_id: schedule_id.to_owned(),
        firing_id: timer_firing_id(schedule_id, at),
        at,
        trigger: Trigger::Timer,
        next_at,
        superseded,
    };
    match queue.fire(&firing).await {
        Ok(fired) => {
            tracing::info!(
                schedule_id, firing_id = %fired.firing_id, task_id = fired.task_id.as_deref(),
                skipped = fired.skipped.map(Skipped::as_str), "schedule fired"
            );
            let _ = message.ack().await;
        }
        Err(Error::ScheduleNotFound(_)) => {
            tracing::warn!(
                schedule_id,
                "dropping a firing of a schedule that was never created"
            );
            let _ = message.ack_with(AckKind::Term).await;
        }
        Err(error) => {
            tracing::warn!(schedule_id, %error, "cannot handle a firing yet; it comes again");
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
        }
    }
}

/// A timer firing's id, which is also its task's: the schedule and the second it fired
/// (`audit-20261203T090000Z`), so a task's id says which run it is.
fn timer_firing_id(schedule_id: &str, at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{schedule_id}-{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_firing_is_named_by_its_schedule_and_second() {
        let at = OffsetDateTime::from_unix_timestamp(1_796_288_400).expect("a time");
        assert_eq!(timer_firing_id("audit", at), "audit-20261203T090000Z");
    }
}
