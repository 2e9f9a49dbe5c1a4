//! The server's clock: JetStream message schedules, in a stream of their own, for delayed
//! tasks and for recurring schedules.
//!
//! A delayed task's submission is appended to `VIBEHQ_TASKS` on [`Subject::Scheduled`]
//! (the task exists, pending, with its due time) and published as a message schedule in
//! [`STREAM`]: `@at <run_at>`, targeting `vibehq.schedules.due.<task_id>.<lane>`. When it is
//! due the server stores the same event there and purges the schedule; `VIBEHQ_TASKS`
//! sources those copies, transformed onto the task's lane subject, where the lane's consumer
//! hands it out. The server keeps the time, across restarts; vibehq runs no timer.
//!
//! A recurring schedule ([`crate::recurring`]) is *armed* as a message schedule on
//! `vibehq.schedules.timers.<schedule_id>` with its cron expression or interval, targeting
//! [`fired_subject`]: the server stores a copy there each time, which the scheduler in
//! `vibehq up` pulls with a durable consumer ([`FIRED`]) and turns into a task.
//!
//! Why a stream of its own: a stream with schedules forces rollup headers on, and then any
//! publisher may purge it (`Nats-Rollup: all`, measured on 2.15.1). Workers publish to
//! `VIBEHQ_TASKS`, so it must never allow that; only the service publishes here (workers' keys
//! have no permission on `vibehq.schedules.>`).

use async_nats::HeaderMap;
use async_nats::jetstream::stream::{self, Source, SubjectTransform};

use crate::Payload;
use crate::envelope::Envelope;
use crate::log::{Error, EventLog, KIND_HEADER};
use crate::task::lane::Lane;

/// The schedules stream.
pub const STREAM: &str = "VIBEHQ_SCHEDULES";

/// Where a delayed task's schedule waits: `vibehq.schedules.<task_id>`.
pub fn schedule_subject(task_id: &str) -> String {
    format!("vibehq.schedules.{task_id}")
}

/// Where the server stores a delayed task's submission when it is due, before
/// `VIBEHQ_TASKS` sources it onto the lane: `vibehq.schedules.due.<task_id>.<lane>`.
pub fn due_subject(task_id: &str, lane: &Lane) -> String {
    format!("vibehq.schedules.due.{task_id}.{}", lane.tokens())
}

/// Where a recurring schedule's timer waits: `vibehq.schedules.timers.<schedule_id>`.
pub fn timer_subject(schedule_id: &str) -> String {
    format!("vibehq.schedules.timers.{schedule_id}")
}

/// Where the server stores each firing of a recurring schedule:
/// `vibehq.schedules.fired.<schedule_id>`.
pub fn fired_subject(schedule_id: &str) -> String {
    format!("vibehq.schedules.fired.{schedule_id}")
}

/// Every recurring schedule's firings: the scheduler's consumer filter.
pub const FIRED: &str = "vibehq.schedules.fired.*";

/// The schedule a firing's subject names.
pub fn fired_schedule(subject: &str) -> Option<&str> {
    subject
        .strip_prefix("vibehq.schedules.fired.")
        .filter(|id| crate::subject::validate_id(id).is_ok())
}

/// Why the server refused to arm a schedule: the field at fault and its words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Unarmable {
    /// `cron` (or `every_seconds`) for the pattern, `time_zone` for the zone.
    pub field: &'static str,
    pub reason: String,
}

/// The schedules stream's configuration.
pub fn config(replicas: usize) -> stream::Config {
    stream::Config {
        name: STREAM.to_owned(),
        description: Some("vibehq delayed tasks: message schedules (service only)".to_owned()),
        subjects: vec!["vibehq.schedules.>".to_owned()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: replicas.max(1),
        allow_message_schedules: true,
        // The server turns these on for schedules anyway; saying so keeps updates idempotent.
        allow_rollup: true,
        ..Default::default()
    }
}

/// How `VIBEHQ_TASKS` takes in due submissions: each copy, moved onto its lane subject
/// (`vibehq.tasks.<task_id>.submitted.<lane>`, whose lane has two to four tokens).
pub fn source() -> Source {
    let transform = |lane_tokens: usize| {
        let mut source = "vibehq.schedules.due.*".to_owned();
        let mut destination = "vibehq.tasks.{{wildcard(1)}}.submitted".to_owned();
        for token in 0..lane_tokens {
            source.push_str(".*");
            destination.push_str(&format!(".{{{{wildcard({})}}}}", token + 2));
        }
        SubjectTransform {
            source,
            destination,
        }
    };
    Source {
        name: STREAM.to_owned(),
        subject_transforms: (2..=4).map(transform).collect(),
        ..Default::default()
    }
}

impl EventLog {
    /// Publishes the schedule of a delayed task's submission (`event`, whose `run_at` is
    /// set). Publishing it again replaces it (the same subject): safe to repeat.
    pub async fn schedule(&self, event: &Envelope) -> Result<(), Error> {
        let Payload::TaskSubmitted(submitted) = &event.payload else {
            return Err(Error::Nats {
                op: "schedule a task",
                source: "only a submission can be scheduled".into(),
            });
        };
        let Some(run_at) = submitted.run_at else {
            return Err(Error::Nats {
                op: "schedule a task",
                source: "the submission has no run_at".into(),
            });
        };
        let at = run_at
            .to_offset(time::UtcOffset::UTC)
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| Error::Nats {
                op: "schedule a task",
                source: e.into(),
            })?;
        let mut headers = HeaderMap::new();
        headers.insert(KIND_HEADER, event.kind().as_str());
        crate::trace::inject(&mut headers);
        headers.insert(
            async_nats::header::NATS_SCHEDULE,
            format!("@at {at}").as_str(),
        );
        headers.insert(
            async_nats::header::NATS_SCHEDULE_TARGET,
            due_subject(&submitted.task_id, &submitted.lane()).as_str(),
        );
        let payload = event.encode().map_err(Error::Encode)?;
        let publish = |e: async_nats::Error| Error::Nats {
            op: "publish a task's schedule",
            source: e,
        };
        self.jetstream()
            .publish_with_headers(
                schedule_subject(&submitted.task_id),
                headers,
                payload.into(),
            )
            .await
            .map_err(|e| publish(e.into()))?
            .await
            .map_err(|e| publish(e.into()))?;
        Ok(())
    }

    /// Removes a delayed task's schedule, if it has not fired (a cancelled task).
    pub async fn unschedule(&self, task_id: &str) -> Result<(), Error> {
        self.purge_schedules(schedule_subject(task_id), "remove a task's schedule")
            .await
    }
}

impl EventLog {
    /// Arms a recurring schedule: the server fires it from now on. Arming it again replaces
    /// the timer (the same subject), so it is safe to repeat. A pattern or time zone the
    /// server refuses is `Ok(Err(..))`, naming the field.
    pub async fn arm(
        &self,
        schedule_id: &str,
        timing: &crate::recurring::Timing,
    ) -> Result<Result<(), Unarmable>, Error> {
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_SCHEDULE, timing.pattern().as_str());
        headers.insert(
            async_nats::header::NATS_SCHEDULE_TARGET,
            fired_subject(schedule_id).as_str(),
        );
        if let Some(zone) = timing.time_zone() {
            headers.insert("Nats-Schedule-Time-Zone", zone);
        }
        let publish = |e: async_nats::Error| Error::Nats {
            op: "arm a schedule",
            source: e,
        };
        let acked = self
            .jetstream()
            .publish_with_headers(
                timer_subject(schedule_id),
                headers,
                schedule_id.to_owned().into(),
            )
            .await
            .map_err(|e| publish(e.into()))?
            .await;
        match acked {
            Ok(_) => Ok(Ok(())),
            Err(error) => {
                let code = std::error::Error::source(&error)
                    .and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>())
                    .map(|e| e.error_code().0);
                let field = match code {
                    // "message schedules pattern is invalid"
                    Some(10189) => match timing {
                        crate::recurring::Timing::Cron { .. } => "cron",
                        crate::recurring::Timing::Every { .. } => "every_seconds",
                    },
                    // "message schedules time zone is invalid"
                    Some(10223) => "time_zone",
                    _ => return Err(publish(error.into())),
                };
                let reason = match field {
                    "time_zone" => format!(
                        "NATS does not know the time zone {:?}: use an IANA name such as Europe/Berlin",
                        timing.time_zone().unwrap_or_default()
                    ),
                    _ => format!(
                        "NATS refused the schedule {:?}: a cron expression has 6 fields with seconds (or 5 without), or is @hourly, @daily, @weekly, @monthly or @yearly",
                        timing.pattern()
                    ),
                };
                Ok(Err(Unarmable { field, reason }))
            }
        }
    }

    /// Disarms a recurring schedule (paused or deleted): the server fires it no more.
    pub async fn disarm(&self, schedule_id: &str) -> Result<(), Error> {
        self.purge_schedules(timer_subject(schedule_id), "disarm a schedule")
            .await
    }

    /// Whether a recurring schedule's timer is stored.
    pub async fn is_armed(&self, schedule_id: &str) -> Result<bool, Error> {
        let stream = self
            .jetstream()
            .get_stream(STREAM)
            .await
            .map_err(|e| Error::Nats {
                op: "look up the schedules stream",
                source: e.into(),
            })?;
        match stream
            .get_last_raw_message_by_subject(&timer_subject(schedule_id))
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if e.kind()
                    == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
            {
                Ok(false)
            }
            Err(e) => Err(Error::Nats {
                op: "look up a schedule's timer",
                source: e.into(),
            }),
        }
    }

    async fn purge_schedules(&self, filter: String, op: &'static str) -> Result<(), Error> {
        let purge = |e: async_nats::Error| Error::Nats { op, source: e };
        let stream = self
            .jetstream()
            .get_stream(STREAM)
            .await
            .map_err(|e| purge(e.into()))?;
        stream
            .purge()
            .filter(filter)
            .await
            .map_err(|e| purge(e.into()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::lane::Target;

    #[test]
    fn due_copies_land_on_their_lane_subject() {
        let lane = Lane::new(
            3,
            Target::Container {
                worker: "w".into(),
                container: "c".into(),
            },
        );
        assert_eq!(due_subject("t1", &lane), "vibehq.schedules.due.t1.p3.c.w.c");
        let transforms = source().subject_transforms;
        let four = &transforms[2];
        assert_eq!(four.source, "vibehq.schedules.due.*.*.*.*.*");
        assert_eq!(
            four.destination,
            "vibehq.tasks.{{wildcard(1)}}.submitted.{{wildcard(2)}}.{{wildcard(3)}}.{{wildcard(4)}}.{{wildcard(5)}}"
        );
    }
}
