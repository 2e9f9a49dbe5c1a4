//! The catalog of event kinds: the one place that maps each kind to its wire name, its payload
//! type and (through the payload) its subject.
//!
//! Adding an event is one line in the [`catalog!`] invocation below plus its payload struct.
//! Renaming a wire name is a migration: old events in the streams keep the old name.

use serde::Serialize;

use crate::actor::Actor;
use crate::subject::Subject;
use crate::{ai, container, fleet, limit, pause, recurring, task};

macro_rules! catalog {
    ($( $(#[$doc:meta])* $variant:ident($ty:ty) = $wire:literal ),+ $(,)?) => {
        /// What an event records; its wire name is the envelope's `type`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventKind {
            $( $(#[$doc])* $variant, )+
        }

        impl EventKind {
            /// Every kind, in catalog order.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant),+];

            /// The kind's wire name, e.g. `task.submitted`.
            pub fn as_str(self) -> &'static str {
                match self { $(EventKind::$variant => $wire,)+ }
            }

            /// The kind with this wire name, if this build knows it.
            pub fn from_wire(name: &str) -> Option<Self> {
                match name { $($wire => Some(EventKind::$variant),)+ _ => None }
            }
        }

        /// An event's payload: one variant per [`EventKind`].
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(untagged)]
        pub enum Payload {
            $( $(#[$doc])* $variant($ty), )+
        }

        impl Payload {
            /// The kind of this payload.
            pub fn kind(&self) -> EventKind {
                match self { $(Payload::$variant(_) => EventKind::$variant,)+ }
            }

            /// Parses a payload of the given kind from its JSON.
            pub fn decode(kind: EventKind, json: &str) -> Result<Self, serde_json::Error> {
                Ok(match kind {
                    $(EventKind::$variant => Payload::$variant(serde_json::from_str(json)?),)+
                })
            }

            /// The subject of this payload appended by `by` (task events carry their actor in
            /// the subject; other domains' subjects name only their aggregate).
            pub fn subject(&self, by: &Actor) -> Subject {
                match self { $(Payload::$variant(p) => p.subject(by),)+ }
            }
        }

        $(
            impl From<$ty> for Payload {
                fn from(payload: $ty) -> Self { Payload::$variant(payload) }
            }
        )+
    };
}

catalog! {
    /// A task entered the queue.
    TaskSubmitted(task::Submitted) = "task.submitted",
    /// A container claimed a task; starts its lease.
    TaskAssigned(task::Assigned) = "task.assigned",
    /// The claiming container began running the task.
    TaskStarted(task::Started) = "task.started",
    /// The running program reported its progress.
    TaskProgress(task::Progress) = "task.progress",
    /// The task finished successfully.
    TaskCompleted(task::Completed) = "task.completed",
    /// The task failed for good (no attempts left, or not retryable).
    TaskFailed(task::Failed) = "task.failed",
    /// The task went back to `pending` for another attempt.
    TaskRequeued(task::Requeued) = "task.requeued",
    /// The task was cancelled before it finished.
    TaskCancelled(task::Cancelled) = "task.cancelled",
    /// A result from a claim that no longer held the task was refused (audit only).
    TaskResultRefused(task::ResultRefused) = "task.result_refused",

    /// A scope of work (every lane, or a worker's) was paused.
    QueuePaused(pause::Paused) = "queue.paused",
    /// A paused scope was resumed.
    QueueResumed(pause::Resumed) = "queue.resumed",

    /// A concurrency key's limits were declared.
    KeyLimited(limit::Limited) = "key.limited",
    /// Tasks joined a key's waiting line.
    KeyQueued(limit::Queued) = "key.queued",
    /// A task of a rate-limited key was claimed (the start its rate counts).
    KeyStarted(limit::Started) = "key.started",
    /// A task of a key ended, or left its waiting line: its slot is free.
    KeyReleased(limit::Released) = "key.released",

    /// A worker registered itself with what it is and the commands it handles.
    WorkerRegistered(fleet::Registered) = "worker.registered",

    /// A recurring schedule was created.
    ScheduleCreated(recurring::Created) = "schedule.created",
    /// A schedule was paused.
    SchedulePaused(recurring::Paused) = "schedule.paused",
    /// A paused schedule was resumed.
    ScheduleResumed(recurring::Resumed) = "schedule.resumed",
    /// A schedule was deleted.
    ScheduleDeleted(recurring::Deleted) = "schedule.deleted",
    /// A schedule fired: the task it submitted, or why it skipped.
    ScheduleFired(recurring::Fired) = "schedule.fired",

    /// An instance is being started.
    ContainerStarting(container::Starting) = "container.starting",
    /// An instance passed its first health check and takes traffic.
    ContainerRunning(container::Running) = "container.running",
    /// An instance failed its health checks and was taken out of rotation.
    ContainerUnhealthy(container::Unhealthy) = "container.unhealthy",
    /// An instance was stopped on purpose (scale down, shutdown).
    ContainerStopped(container::Stopped) = "container.stopped",
    /// An instance kept failing and was given up on.
    ContainerFailed(container::Failed) = "container.failed",
    /// An instance was restarted after failing.
    ContainerRestarted(container::Restarted) = "container.restarted",
    /// One health probe of an instance, with its outcome and latency.
    ContainerHealthChecked(container::HealthChecked) = "container.health_checked",
    /// A pool's desired instance count changed (audit only: its instances' rows show the rest).
    ContainerScaled(container::Scaled) = "container.scaled",

    /// An agent created a task in a plan.
    AiTaskCreated(ai::TaskCreated) = "ai.task_created",
    /// An agent task changed status.
    AiTaskUpdated(ai::TaskUpdated) = "ai.task_updated",
    /// A step waits for a human's approval.
    AiApprovalRequested(ai::ApprovalRequested) = "ai.approval_requested",
    /// A human approved or rejected a step.
    AiApprovalDecided(ai::ApprovalDecided) = "ai.approval_decided",
    /// One round of the evaluator-optimiser loop.
    AiEvaluationRound(ai::EvaluationRound) = "ai.evaluation_round",
    /// The router chose a model for a prompt.
    AiRoutingDecided(ai::RoutingDecided) = "ai.routing_decided",
    /// A structured-output generation finished (valid or not).
    AiStructuredOutput(ai::StructuredOutput) = "ai.structured_output",
    /// A tool was called.
    AiToolCalled(ai::ToolCalled) = "ai.tool_called",
    /// A streamed model response (with tool-call deltas) finished.
    AiToolCallStreamed(ai::ToolCallStreamed) = "ai.tool_call_streamed",
    /// The gateway tried one provider for a model call (one event per attempt).
    AiModelCalled(ai::ModelCalled) = "ai.model_called",
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_wire(kind.as_str()), Some(*kind));
            assert!(seen.insert(kind.as_str()), "duplicate wire name {kind}");
        }
        assert_eq!(EventKind::from_wire("task.exploded"), None);
    }
}
