//! The JetStream streams that hold the events.
//!
//! Three streams split the log by area so each can be sized, replicated and replayed on its
//! own: tasks, containers and AI. All keep every event (limits retention, no age limit): they
//! are the source of truth that projections are rebuilt from.

use std::time::Duration;

use async_nats::jetstream::stream;

/// One of vibehq's event streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamKind {
    /// Task queue events: `vibehq.tasks.>`, and `vibehq.queue.>` (schedules).
    Tasks,
    /// Container lifecycle and health events: `vibehq.containers.>`.
    Containers,
    /// AI operations: `vibehq.ai.>`.
    Ai,
}

/// How long JetStream remembers a `Nats-Msg-Id` to drop a retried publish.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

impl StreamKind {
    /// Every stream, in a fixed order.
    pub const ALL: [StreamKind; 3] = [StreamKind::Tasks, StreamKind::Containers, StreamKind::Ai];

    /// The stream's JetStream name.
    pub fn name(self) -> &'static str {
        match self {
            StreamKind::Tasks => "VIBEHQ_TASKS",
            StreamKind::Containers => "VIBEHQ_CONTAINERS",
            StreamKind::Ai => "VIBEHQ_AI",
        }
    }

    /// A short lowercase name for logs, flags and consumer names.
    pub fn short_name(self) -> &'static str {
        match self {
            StreamKind::Tasks => "tasks",
            StreamKind::Containers => "containers",
            StreamKind::Ai => "ai",
        }
    }

    /// The stream with this JetStream or short name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.name() == name || s.short_name() == name)
    }

    /// The subjects the stream captures.
    pub fn subjects(self) -> &'static [&'static str] {
        match self {
            // Tasks, and the queue's other aggregates (recurring schedules).
            StreamKind::Tasks => &["vibehq.tasks.>", "vibehq.queue.>"],
            StreamKind::Containers => &["vibehq.containers.>"],
            StreamKind::Ai => &["vibehq.ai.>"],
        }
    }

    /// The stream's configuration with `replicas` copies (1 standalone, 3 on a cluster).
    pub fn config(self, replicas: usize) -> stream::Config {
        stream::Config {
            name: self.name().to_owned(),
            description: Some(format!(
                "vibehq {} events (source of truth)",
                self.short_name()
            )),
            subjects: self.subjects().iter().map(|s| (*s).to_owned()).collect(),
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            num_replicas: replicas.max(1),
            duplicate_window: DUPLICATE_WINDOW,
            allow_direct: true,
            // Bulk submissions are stored all or nothing (nats-server 2.12+).
            allow_atomic_publish: self == StreamKind::Tasks,
            // Delayed tasks' submissions, copied in when due (see `schedule`).
            sources: (self == StreamKind::Tasks).then(|| vec![crate::schedule::source()]),
            ..Default::default()
        }
    }
}

impl std::fmt::Display for StreamKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.short_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Measured on nats-server 2.15.1: a stream with message schedules forces rollup headers
    /// on, and then ANY publisher may send `Nats-Rollup: all` and purge the whole stream, or
    /// `Nats-Schedule-Next: purge` with `Nats-Scheduler: <subject>` and purge another
    /// aggregate's subject. Workers publish to the event streams, so none may have schedules
    /// or rollups: delayed tasks need a stream of their own that only the service writes to.
    #[test]
    fn no_event_stream_lets_a_publisher_purge_it() {
        for kind in StreamKind::ALL {
            let config = kind.config(1);
            assert!(!config.allow_message_schedules, "{kind}");
            assert!(!config.allow_rollup, "{kind}");
        }
    }
}
