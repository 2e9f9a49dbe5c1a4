//! The fleet's workers, as they registered themselves: a worker's project (made by `vibehq new
//! worker`, or any other) says what it is and which commands it handles, so the orchestrator
//! knows it before its first claim. One aggregate per worker on `vibehq.queue.workers.<name>`
//! in the tasks stream; a later registration replaces the earlier one.

use serde::{Deserialize, Serialize};

use crate::actor::Actor;
use crate::subject::Subject;

/// A worker registered itself (or was registered by an operator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// The worker's name: what it claims and reports as.
    pub name: String,
    /// What its project is written in (`rust`, `python`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// The command names it handles.
    #[serde(default)]
    pub commands: Vec<String>,
}

impl Registered {
    /// The worker's subject.
    pub fn subject(&self, _by: &Actor) -> Subject {
        Subject::Worker(self.name.clone())
    }
}
