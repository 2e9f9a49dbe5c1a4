//! The work queue: pending tasks as messages for containers to pull.
//!
//! A submitted task is history (its event on `vibehq.tasks.<id>`) *and* pending work. It is
//! appended once, as history; the dispatcher carries it into the work stream with a message id
//! derived from the event's, so a crash in between neither loses nor duplicates work.
//!
//! JetStream 2.9 has no message priority, so priority is subject design: the work subject is
//! `vibehq.work.p<band>.<target>`, one band per priority level, and a claimer takes from the
//! highest band that has work among the subjects it may take from. Targets are `any`,
//! `w.<worker>` (any container of that worker) and `c.<worker>.<container>`. Each subject has
//! its own durable pull consumer (work-queue streams need non-overlapping filters); the
//! consumer's `ack_wait` is the claim's lease.

use std::time::Duration;

use async_nats::jetstream::stream;
use serde::{Deserialize, Serialize};

/// The work stream's JetStream name.
pub const STREAM: &str = "VIBEHQ_WORK";

/// Every work subject (the stream's subjects).
pub const SUBJECTS: &str = "vibehq.work.>";

/// Where the dispatcher announces stored work: `vibehq.wake.<band>.<target>` mirrors each
/// work subject. Core NATS, not stored; the payload is how many messages were stored.
///
/// Claimers wait for these rather than watching the work subjects themselves, because a
/// publish is seen by subscribers before the stream has stored it, and a pull sent in that gap
/// waits on the server: nats-server 2.9.10 then sometimes answers neither with the message nor
/// at the pull's expiry (measured by benches/queue.rs: 5 s stalls).
pub const WAKE_SUBJECTS: &str = "vibehq.wake.>";

/// The wake subject announcing work stored on `work_subject`.
pub fn wake_subject(work_subject: &str) -> String {
    work_subject.replacen("vibehq.work.", "vibehq.wake.", 1)
}

/// The work subject a wake subject announces, if it is one.
pub fn woken(wake_subject: &str) -> Option<String> {
    wake_subject
        .strip_prefix("vibehq.wake.")
        .map(|rest| format!("vibehq.work.{rest}"))
}

/// Priority levels, `0..=MAX_PRIORITY`; higher is handed out first.
pub const MAX_PRIORITY: i64 = 9;

/// One unit of pending work: which task, and where it was recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkItem {
    pub task_id: String,
    /// The stream sequence of the `task.submitted` event this work came from.
    pub submitted_sequence: u64,
    /// The submission itself, so a first claim needs no read of the task's history: it
    /// appends `task.assigned` expecting the task's subject to be empty, and only if the task
    /// moved since does it read the history. Absent in work written by older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Carried>,
}

/// A submission as the work stream carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Carried {
    pub submitted: crate::task::Submitted,
    /// The `worker_name` of the submitting event.
    pub submitted_by: String,
}

/// Who may take a piece of work.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// Any container of any worker.
    Any,
    /// Any container of this worker.
    Worker(String),
    /// This container of this worker.
    Container(String, String),
}

impl Target {
    /// The target of a task with these (optional) worker and container names.
    ///
    /// A container name without a worker name is ambiguous (names repeat across workers) and
    /// is refused by the API before it gets here; it is treated as the worker-less `Any`.
    pub fn of(worker: Option<&str>, container: Option<&str>) -> Self {
        match (worker, container) {
            (Some(w), Some(c)) => Target::Container(w.to_owned(), c.to_owned()),
            (Some(w), None) => Target::Worker(w.to_owned()),
            (None, _) => Target::Any,
        }
    }

    /// The targets a container may take from, most specific first.
    pub fn eligible(worker: &str, container: &str) -> [Target; 3] {
        [
            Target::Container(worker.to_owned(), container.to_owned()),
            Target::Worker(worker.to_owned()),
            Target::Any,
        ]
    }

    fn token(&self) -> String {
        match self {
            Target::Any => "any".to_owned(),
            Target::Worker(w) => format!("w.{w}"),
            Target::Container(w, c) => format!("c.{w}.{c}"),
        }
    }
}

/// The band of a priority: clamped to `0..=MAX_PRIORITY`.
pub fn band(priority: i64) -> u8 {
    priority.clamp(0, MAX_PRIORITY) as u8
}

/// The subject of work in `band` for `target`.
pub fn subject(band: u8, target: &Target) -> String {
    format!("vibehq.work.p{band}.{}", target.token())
}

/// The durable consumer name for a work subject (consumer names cannot contain dots).
pub fn consumer_name(subject: &str) -> String {
    subject.replace('.', "_")
}

/// The band of a work subject, if it is one.
pub fn band_of(subject: &str) -> Option<u8> {
    subject
        .strip_prefix("vibehq.work.p")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// The message id of the work carried on from the event `event_id`.
pub fn message_id(event_id: &uuid::Uuid) -> String {
    format!("work-{event_id}")
}

/// The work stream's configuration: work-queue retention (a message is gone once acked).
pub fn stream_config(replicas: usize) -> stream::Config {
    stream::Config {
        name: STREAM.to_owned(),
        description: Some("vibehq pending work; derived from VIBEHQ_TASKS".into()),
        subjects: vec![SUBJECTS.to_owned()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        num_replicas: replicas.max(1),
        duplicate_window: Duration::from_secs(120),
        allow_direct: true,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_encode_band_and_target() {
        assert_eq!(subject(9, &Target::Any), "vibehq.work.p9.any");
        assert_eq!(
            subject(0, &Target::Worker("w1".into())),
            "vibehq.work.p0.w.w1"
        );
        assert_eq!(
            subject(3, &Target::Container("w1".into(), "c2".into())),
            "vibehq.work.p3.c.w1.c2"
        );
        assert_eq!(band_of("vibehq.work.p7.any"), Some(7));
        assert_eq!(consumer_name("vibehq.work.p7.w.w1"), "vibehq_work_p7_w_w1");
    }

    #[test]
    fn priorities_outside_the_bands_are_clamped() {
        assert_eq!(band(-5), 0);
        assert_eq!(band(4), 4);
        assert_eq!(band(100), 9);
    }
}
