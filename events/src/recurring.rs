//! Recurring schedules: a cron expression (in a time zone) or an interval that submits a task
//! from a template, and everything that happens to one.
//!
//! A schedule is an aggregate on `vibehq.queue.schedules.<schedule_id>` in the tasks stream:
//! `schedule.created`, then any of `paused`, `resumed`, `fired` (one per firing, run or
//! skipped), until `deleted`. [`Schedule::fold`] reduces them, and [`Schedule::decide`] says
//! what a command may do, for the service and the projector alike.
//!
//! The clock is the server's: an active schedule is *armed* as a JetStream message schedule
//! in `VIBEHQ_SCHEDULES` ([`crate::schedule::arm`]), which stores a copy on
//! `vibehq.schedules.fired.<schedule_id>` at each time; a durable consumer in `vibehq up`
//! turns each copy into a task and a `schedule.fired` event. Paused and deleted schedules are
//! disarmed. So a firing while vibehq is down waits in the stream, and is judged by the
//! schedule's [`Misfire`] policy when vibehq is back.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::actor::Actor;
use crate::catalog::Payload;
use crate::subject::Subject;

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Timing {
    /// A cron expression with seconds (`sec min hour day-of-month month day-of-week`, or
    /// `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`), in `time_zone` (IANA, e.g.
    /// `Europe/Berlin`; UTC when absent). The server checks the expression and the zone.
    Cron {
        cron: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time_zone: Option<String>,
    },
    /// Every so many seconds (at least 1).
    Every { every_seconds: u64 },
}

impl Timing {
    /// A cron timing; a five-field expression (no seconds) fires at second 0 of its minutes.
    pub fn cron(expression: &str, time_zone: Option<String>) -> Self {
        let expression = expression.trim();
        let cron = if !expression.starts_with('@') && expression.split_whitespace().count() == 5 {
            format!("0 {expression}")
        } else {
            expression.to_owned()
        };
        Timing::Cron { cron, time_zone }
    }

    /// The `Nats-Schedule` header's value.
    pub fn pattern(&self) -> String {
        match self {
            Timing::Cron { cron, .. } => cron.clone(),
            Timing::Every { every_seconds } => format!("@every {every_seconds}s"),
        }
    }

    /// The `Nats-Schedule-Time-Zone` header's value, if any (cron only).
    pub fn time_zone(&self) -> Option<&str> {
        match self {
            Timing::Cron { time_zone, .. } => time_zone.as_deref(),
            Timing::Every { .. } => None,
        }
    }
}

/// The task each firing submits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    pub task_type: String,
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    #[serde(default)]
    pub priority: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    pub max_attempts: u32,
}

/// What a firing does while the schedule's last task has not ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Skip the firing (recorded as skipped, `overlap`).
    Skip,
    /// Submit anyway: runs may overlap.
    Allow,
}

/// What a firing handled late does (vibehq was down when it was due).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    /// Skip every late firing.
    Skip,
    /// Run the latest late firing once, skip the ones before it.
    RunOnce,
}

/// How long after its time a firing may be handled and still count as on time, unless the
/// schedule says otherwise.
pub const MISFIRE_GRACE_SECONDS: u64 = 60;

fn default_grace() -> u64 {
    MISFIRE_GRACE_SECONDS
}

/// A schedule was created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Created {
    pub schedule_id: String,
    pub timing: Timing,
    pub task: Template,
    pub overlap: Overlap,
    pub misfire: Misfire,
    /// A firing handled more than this many seconds after its time is late, and its
    /// [`Misfire`] policy decides.
    #[serde(default = "default_grace")]
    pub misfire_grace_seconds: u64,
}

/// A schedule stopped firing until resumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Paused {
    pub schedule_id: String,
}

/// A paused schedule fires again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resumed {
    pub schedule_id: String,
}

/// A schedule was deleted for good; its history stays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deleted {
    pub schedule_id: String,
}

/// Why a firing fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Its time came.
    Timer,
    /// An operator asked for a run now.
    Manual,
}

/// Why a firing submitted nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Skipped {
    /// The last run had not ended and the overlap policy is `skip`.
    Overlap,
    /// It was handled late and the misfire policy is `skip`.
    Missed,
    /// It was handled late and a later firing is already waiting (`run_once` runs that one).
    Superseded,
    /// The schedule was paused or deleted when the firing arrived.
    Inactive,
}

impl Skipped {
    pub fn as_str(self) -> &'static str {
        match self {
            Skipped::Overlap => "overlap",
            Skipped::Missed => "missed",
            Skipped::Superseded => "superseded",
            Skipped::Inactive => "inactive",
        }
    }
}

/// One firing: the task it submitted, or why it submitted none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fired {
    pub schedule_id: String,
    /// Unique per firing: `<schedule_id>-<sequence>` of the timer's copy, or a manual run's.
    pub firing_id: String,
    /// When it was due (a manual run: when it was asked for).
    #[serde(with = "time::serde::rfc3339")]
    pub fired_at: time::OffsetDateTime,
    pub trigger: Trigger,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<Skipped>,
    /// When the server will fire next, as it said with this firing.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub next_at: Option<time::OffsetDateTime>,
}

macro_rules! schedule_subject {
    ($($ty:ty),+) => {$(
        impl $ty {
            /// The schedule's subject.
            pub fn subject(&self, _by: &Actor) -> Subject {
                Subject::Schedule(self.schedule_id.clone())
            }
        }
    )+};
}
schedule_subject!(Created, Paused, Resumed, Deleted, Fired);

/// Where a schedule is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Active,
    Paused,
    Deleted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Paused => "paused",
            Status::Deleted => "deleted",
        }
    }
}

/// A schedule as its events leave it.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub definition: Created,
    pub status: Status,
    /// The task the last run submitted.
    pub last_task_id: Option<String>,
    /// The last firing recorded, so a redelivered firing is recognised (and its task
    /// submitted, should a crash have come between the two).
    pub last_fired: Option<Fired>,
    /// The sequence of its last event, which the next append expects.
    pub version: u64,
}

/// A command a schedule's state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schedule {schedule_id} is {status}: it cannot be {wanted}")]
pub struct Refused {
    pub schedule_id: String,
    pub status: &'static str,
    pub wanted: &'static str,
}

impl Schedule {
    /// Folds a schedule's events (with their sequences) in order; `None` if it was never
    /// created. Events that its state does not allow change nothing, as [`Schedule::decide`]
    /// would have refused them.
    pub fn fold<'a>(events: impl IntoIterator<Item = (u64, &'a Payload)>) -> Option<Schedule> {
        let mut schedule: Option<Schedule> = None;
        for (sequence, payload) in events {
            match (&mut schedule, payload) {
                (None, Payload::ScheduleCreated(created)) => {
                    schedule = Some(Schedule {
                        definition: created.clone(),
                        status: Status::Active,
                        last_task_id: None,
                        last_fired: None,
                        version: sequence,
                    });
                }
                (Some(s), payload) => s.record(sequence, payload),
                (None, _) => {}
            }
        }
        schedule
    }

    /// Whether `payload` may happen to the schedule now.
    pub fn decide(&self, payload: &Payload) -> Result<(), Refused> {
        let (allowed, wanted) = match payload {
            Payload::ScheduleCreated(_) => (false, "created again"),
            Payload::SchedulePaused(_) => (self.status == Status::Active, "paused"),
            Payload::ScheduleResumed(_) => (self.status == Status::Paused, "resumed"),
            Payload::ScheduleDeleted(_) => (self.status != Status::Deleted, "deleted"),
            // A firing of an inactive schedule is recorded, as skipped.
            Payload::ScheduleFired(fired) => (
                self.status == Status::Active || fired.skipped == Some(Skipped::Inactive),
                "fired",
            ),
            _ => (false, "changed by a non-schedule event"),
        };
        if allowed {
            Ok(())
        } else {
            Err(Refused {
                schedule_id: self.definition.schedule_id.clone(),
                status: self.status.as_str(),
                wanted,
            })
        }
    }

    /// Takes in the schedule's next event, stored at `sequence`.
    pub fn record(&mut self, sequence: u64, payload: &Payload) {
        if self.decide(payload).is_ok() {
            self.apply(payload);
        }
        self.version = sequence;
    }

    fn apply(&mut self, payload: &Payload) {
        match payload {
            Payload::SchedulePaused(_) => self.status = Status::Paused,
            Payload::ScheduleResumed(_) => self.status = Status::Active,
            Payload::ScheduleDeleted(_) => self.status = Status::Deleted,
            Payload::ScheduleFired(fired) => {
                self.last_fired = Some(fired.clone());
                if fired.task_id.is_some() {
                    self.last_task_id = fired.task_id.clone();
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created() -> Payload {
        Payload::ScheduleCreated(Created {
            schedule_id: "audit".into(),
            timing: Timing::cron("0 9 * * *", Some("Europe/Berlin".into())),
            task: Template {
                task_type: "health_audit".into(),
                command: "audit".into(),
                parameters: None,
                priority: 0,
                worker_name: None,
                container_name: None,
                max_attempts: 3,
            },
            overlap: Overlap::Skip,
            misfire: Misfire::RunOnce,
            misfire_grace_seconds: MISFIRE_GRACE_SECONDS,
        })
    }

    fn fired(id: &str, task: Option<&str>) -> Payload {
        Payload::ScheduleFired(Fired {
            schedule_id: "audit".into(),
            firing_id: id.into(),
            fired_at: time::OffsetDateTime::UNIX_EPOCH,
            trigger: Trigger::Timer,
            task_id: task.map(str::to_owned),
            skipped: task.is_none().then_some(Skipped::Overlap),
            next_at: None,
        })
    }

    #[test]
    fn five_field_cron_fires_at_second_zero_and_intervals_are_every() {
        assert_eq!(Timing::cron("0 9 * * *", None).pattern(), "0 0 9 * * *");
        assert_eq!(
            Timing::cron("*/5 * * * * *", None).pattern(),
            "*/5 * * * * *"
        );
        assert_eq!(Timing::cron("@daily", None).pattern(), "@daily");
        assert_eq!(Timing::Every { every_seconds: 30 }.pattern(), "@every 30s");
    }

    #[test]
    fn a_schedule_pauses_resumes_fires_and_ends() {
        let paused = Payload::SchedulePaused(Paused {
            schedule_id: "audit".into(),
        });
        let resumed = Payload::ScheduleResumed(Resumed {
            schedule_id: "audit".into(),
        });
        let deleted = Payload::ScheduleDeleted(Deleted {
            schedule_id: "audit".into(),
        });
        let events = [
            created(),
            fired("f1", Some("t1")),
            paused.clone(),
            fired("f2", Some("t2")),
            resumed.clone(),
            fired("f3", None),
        ];
        let s = Schedule::fold(events.iter().enumerate().map(|(i, p)| (i as u64 + 1, p)))
            .expect("created");
        assert_eq!(s.status, Status::Active);
        assert_eq!(
            s.last_task_id.as_deref(),
            Some("t1"),
            "paused firings run nothing"
        );
        assert_eq!(
            s.last_fired.as_ref().map(|f| f.firing_id.as_str()),
            Some("f3")
        );
        assert_eq!(s.version, 6);
        assert!(s.decide(&resumed).is_err());
        assert!(s.decide(&paused).is_ok());
        let s = Schedule::fold(
            events
                .iter()
                .chain([&deleted])
                .enumerate()
                .map(|(i, p)| (i as u64 + 1, p)),
        )
        .expect("created");
        assert_eq!(s.status, Status::Deleted);
        let refused = s.decide(&deleted).expect_err("deleted once");
        assert_eq!(
            refused.to_string(),
            "schedule audit is deleted: it cannot be deleted"
        );
    }
}
