//! A small, generic finite-state machine (the seed's `fsm` utility), and the task machine.
//!
//! A machine is a table of `(from, on, to)` rows: anything not in the table is an illegal
//! transition. Tables are data, so they read as the specification and test as one.

use std::fmt::Debug;

/// A transition that the machine's table does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {on:?} a task that is {from:?}")]
pub struct Illegal<S: Debug, E: Debug> {
    pub from: S,
    pub on: E,
}

/// A finite-state machine over states `S` and events `E`.
#[derive(Debug)]
pub struct Fsm<S: 'static, E: 'static> {
    table: &'static [(S, E, S)],
}

impl<S: Copy + Eq + Debug, E: Copy + Eq + Debug> Fsm<S, E> {
    /// A machine with this transition table.
    pub const fn new(table: &'static [(S, E, S)]) -> Self {
        Self { table }
    }

    /// The state after `on` in state `from`, or [`Illegal`].
    pub fn next(&self, from: S, on: E) -> Result<S, Illegal<S, E>> {
        self.table
            .iter()
            .find(|(f, e, _)| *f == from && *e == on)
            .map(|(_, _, to)| *to)
            .ok_or(Illegal { from, on })
    }
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskState {
    Pending,
    Assigned,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl TaskState {
    /// Every state, in the order of a task's life.
    pub const ALL: [TaskState; 6] = [
        TaskState::Pending,
        TaskState::Assigned,
        TaskState::Running,
        TaskState::Completed,
        TaskState::Failed,
        TaskState::Cancelled,
    ];

    /// The state with this API name (see [`TaskState::as_str`]), if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The state's name in the API and the `container_tasks.status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Running => "running",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }

    /// Whether the task has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Failed | TaskState::Cancelled
        )
    }

    /// Whether a claim currently holds the task.
    pub fn is_held(self) -> bool {
        matches!(self, TaskState::Assigned | TaskState::Running)
    }
}

/// What can happen to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEvent {
    Assign,
    Start,
    Complete,
    Fail,
    /// Back to pending for another attempt (a failure with attempts left, or a lost lease).
    Requeue,
    Cancel,
}

/// The task machine: `pending → assigned → running → completed | failed`, with requeue back to
/// pending and cancel from any live state.
pub const TASKS: Fsm<TaskState, TaskEvent> = {
    use TaskEvent::*;
    use TaskState::*;
    Fsm::new(&[
        (Pending, Assign, Assigned),
        (Pending, Cancel, Cancelled),
        (Assigned, Start, Running),
        (Assigned, Complete, Completed),
        (Assigned, Fail, Failed),
        (Assigned, Requeue, Pending),
        (Assigned, Cancel, Cancelled),
        (Running, Complete, Completed),
        (Running, Fail, Failed),
        (Running, Requeue, Pending),
        (Running, Cancel, Cancelled),
    ])
};

#[cfg(test)]
mod tests {
    use super::TaskEvent::*;
    use super::TaskState::*;
    use super::*;

    #[test]
    fn the_task_machine_allows_exactly_its_table() {
        let allowed = [
            (Pending, Assign, Assigned),
            (Pending, Cancel, Cancelled),
            (Assigned, Start, Running),
            (Assigned, Complete, Completed),
            (Assigned, Fail, Failed),
            (Assigned, Requeue, Pending),
            (Assigned, Cancel, Cancelled),
            (Running, Complete, Completed),
            (Running, Fail, Failed),
            (Running, Requeue, Pending),
            (Running, Cancel, Cancelled),
        ];
        let states = [Pending, Assigned, Running, Completed, Failed, Cancelled];
        let events = [Assign, Start, Complete, Fail, Requeue, Cancel];
        for from in states {
            for on in events {
                let expected = allowed
                    .iter()
                    .find(|(f, e, _)| *f == from && *e == on)
                    .map(|(_, _, to)| *to);
                assert_eq!(TASKS.next(from, on).ok(), expected, "{from:?} on {on:?}");
            }
        }
    }

    #[test]
    fn every_state_is_found_by_its_api_name_and_nothing_else_is() {
        for state in TaskState::ALL {
            assert_eq!(TaskState::from_name(state.as_str()), Some(state));
        }
        assert_eq!(TaskState::from_name("bogus"), None);
        assert_eq!(TaskState::from_name("Completed"), None);
    }

    #[test]
    fn ended_tasks_accept_nothing() {
        for from in [Completed, Failed, Cancelled] {
            assert!(from.is_terminal());
            for on in [Assign, Start, Complete, Fail, Requeue, Cancel] {
                assert_eq!(TASKS.next(from, on), Err(Illegal { from, on }));
            }
        }
    }
}
