//! Who records an event: a worker, and the container within it.
//!
//! Every row of the central schema names its worker and container, and every task event's
//! subject carries the actor that appended it (see [`crate::subject`]), so NATS permissions can
//! bind a worker's credentials to its own name. That puts two rules on names, checked here and
//! nowhere else:
//! - a name is one subject token that is also safe in a consumer name and a file name:
//!   1 to 64 ASCII letters, digits, `_` or `-`;
//! - `_` alone is not a name: it stands for "no container" in subjects.

use std::fmt;

use crate::catalog::Payload;
use crate::envelope::Envelope;

/// The subject token that stands for "no container".
pub const NO_CONTAINER: &str = "_";

/// Longest worker or container name.
pub const MAX_NAME: usize = 64;

/// A worker or container name that vibehq cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{name:?} cannot be a worker or container name: names are 1-64 ASCII letters, digits, '_' or '-' (and not '_' alone)"
)]
pub struct InvalidName {
    pub name: String,
}

/// Checks that `name` can name a worker or a container.
pub fn validate_name(name: &str) -> Result<(), InvalidName> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name != NO_CONTAINER
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(InvalidName {
            name: name.to_owned(),
        })
    }
}

/// A worker, and optionally the container within it, acting or being acted for.
///
/// One type for every domain: the queue's claimers, the AI gateway's callers and the load
/// balancer's owners are all actors, labelled the same way ([`Actor::label`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Actor {
    pub worker_name: String,
    pub container_name: Option<String>,
}

impl Actor {
    /// An actor; the names are not checked here (the API checks them with [`validate_name`],
    /// and appending an event checks its subject).
    pub fn new(worker_name: impl Into<String>, container_name: Option<String>) -> Self {
        Self {
            worker_name: worker_name.into(),
            container_name,
        }
    }

    /// A worker acting as itself, in no particular container.
    pub fn worker(worker_name: impl Into<String>) -> Self {
        Self::new(worker_name, None)
    }

    /// Checks both names.
    pub fn validate(&self) -> Result<(), InvalidName> {
        validate_name(&self.worker_name)?;
        match &self.container_name {
            Some(container) => validate_name(container),
            None => Ok(()),
        }
    }

    /// `worker:container`, or `worker` alone: the seed's `assigned_to` and how logs and
    /// errors name an actor. [`Actor::from_label`] reads it back; names cannot contain `:`.
    pub fn label(&self) -> String {
        self.to_string()
    }

    /// The actor a [`Actor::label`] names.
    pub fn from_label(label: &str) -> Option<Self> {
        let (worker, container) = match label.split_once(':') {
            Some((w, c)) => (w, Some(c.to_owned())),
            None => (label, None),
        };
        let actor = Self::new(worker, container);
        actor.validate().ok().map(|()| actor)
    }

    /// The container's subject token: its name, or [`NO_CONTAINER`].
    pub fn container_token(&self) -> &str {
        self.container_name.as_deref().unwrap_or(NO_CONTAINER)
    }

    /// A new event recorded now by this actor.
    pub fn envelope(&self, payload: impl Into<Payload>) -> Envelope {
        let event = Envelope::new(&self.worker_name, payload);
        match &self.container_name {
            Some(container) => event.in_container(container),
            None => event,
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.container_name {
            Some(container) => write!(f, "{}:{container}", self.worker_name),
            None => f.write_str(&self.worker_name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_subject_and_consumer_safe_tokens() {
        for good in ["factory-1", "c1", "health_audit", &"x".repeat(64)] {
            assert!(validate_name(good).is_ok(), "{good:?} refused");
        }
        for bad in [
            "",
            "_",
            "a.b",
            "a b",
            "a:b",
            "a@b",
            "*",
            ">",
            "ü",
            &"x".repeat(65),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_label_reads_back_as_the_same_actor() {
        for actor in [
            Actor::new("factory-1", Some("c1".into())),
            Actor::worker("orchestrator"),
        ] {
            assert_eq!(Actor::from_label(&actor.label()), Some(actor));
        }
        assert_eq!(Actor::from_label("a:b:c"), None);
        assert_eq!(Actor::from_label(""), None);
    }
}
