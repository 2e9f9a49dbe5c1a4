//! Pausing and resuming work: every lane, or a worker's targeted work, held back without
//! losing anything.
//!
//! A pause is an aggregate per scope on `vibehq.queue.pauses.<scope>` in the tasks stream
//! (`queue.paused`, `queue.resumed`); its last event says whether the scope is paused. What
//! holds work back is the server's: the lanes a paused scope covers have their consumers
//! paused (`pause_until`, nats-server 2.11+), so no claimer in any process is handed their
//! tasks, which stay pending where they are until the scope is resumed.

use serde::{Deserialize, Serialize};

use crate::actor::{Actor, validate_name};
use crate::catalog::Payload;
use crate::subject::Subject;
use crate::task::lane::{Lane, Target};

/// What a pause holds back.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Every lane.
    All,
    /// The work targeted at one worker (and at its containers).
    Worker(String),
}

/// A scope written as neither `all` nor `worker:<name>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a pause scope: use all, or worker:<worker name>")]
pub struct InvalidScope(pub String);

impl Scope {
    /// `all` or `worker:<name>`.
    pub fn parse(text: &str) -> Result<Self, InvalidScope> {
        match text.split_once(':') {
            None if text == "all" => Ok(Scope::All),
            Some(("worker", name)) if validate_name(name).is_ok() => {
                Ok(Scope::Worker(name.to_owned()))
            }
            _ => Err(InvalidScope(text.to_owned())),
        }
    }

    /// Whether the scope holds back the lane's work.
    pub fn covers(&self, lane: &Lane) -> bool {
        match (self, &lane.target) {
            (Scope::All, _) => true,
            (Scope::Worker(w), Target::Worker(worker))
            | (Scope::Worker(w), Target::Container { worker, .. }) => w == worker,
            (Scope::Worker(_), Target::Any) => false,
        }
    }

    /// The worker a scope is about, if any.
    pub fn worker(&self) -> Option<&str> {
        match self {
            Scope::All => None,
            Scope::Worker(w) => Some(w),
        }
    }

    /// The scopes that may cover a lane: everything, and its target's worker.
    pub fn covering(lane: &Lane) -> Vec<Scope> {
        let mut scopes = vec![Scope::All];
        match &lane.target {
            Target::Any => {}
            Target::Worker(worker) | Target::Container { worker, .. } => {
                scopes.push(Scope::Worker(worker.clone()));
            }
        }
        scopes
    }

    /// The scope's subject, holding its pauses and resumptions.
    pub fn subject(&self) -> Subject {
        Subject::Pause(self.to_string())
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::All => f.write_str("all"),
            Scope::Worker(w) => write!(f, "worker:{w}"),
        }
    }
}

/// A scope's work is held back from now on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Paused {
    /// `all` or `worker:<name>`.
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A scope's work flows again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resumed {
    pub scope: String,
}

impl Paused {
    pub fn subject(&self, _by: &Actor) -> Subject {
        Subject::Pause(self.scope.clone())
    }
}

impl Resumed {
    pub fn subject(&self, _by: &Actor) -> Subject {
        Subject::Pause(self.scope.clone())
    }
}

/// Whether a scope's last event leaves it paused.
pub fn is_paused(last: Option<&Payload>) -> bool {
    matches!(last, Some(Payload::QueuePaused(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_cover_their_lanes() {
        assert_eq!(Scope::parse("all"), Ok(Scope::All));
        let w = Scope::parse("worker:factory-1").expect("a worker scope");
        assert_eq!(w.to_string(), "worker:factory-1");
        for bad in ["", "everything", "worker:", "worker:a.b", "type:audit"] {
            assert!(Scope::parse(bad).is_err(), "{bad:?}");
        }
        let any = Lane::new(5, Target::Any);
        let mine = Lane::new(5, Target::Worker("factory-1".into()));
        let my_container = Lane::new(
            0,
            Target::Container {
                worker: "factory-1".into(),
                container: "c1".into(),
            },
        );
        let theirs = Lane::new(5, Target::Worker("factory-2".into()));
        assert!(Scope::All.covers(&any) && Scope::All.covers(&theirs));
        assert!(w.covers(&mine) && w.covers(&my_container));
        assert!(!w.covers(&any) && !w.covers(&theirs));
        assert_eq!(Scope::covering(&my_container), vec![Scope::All, w]);
    }
}
