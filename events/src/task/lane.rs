//! Lanes: where pending work waits, and who may take it.
//!
//! A task's submission *is* its pending work: it is stored once, on a subject that names its
//! lane (`vibehq.tasks.<task_id>.submitted.<lane>`), and each lane has one durable pull
//! consumer on the tasks stream that containers claim from. JetStream hands messages out in
//! stream order, not by priority, so priority is subject design: a lane is a priority band
//! (`p0`…`p9`) and a target (`any`, `w.<worker>`, `c.<worker>.<container>`), and a claimer
//! takes from the best lane that has work among those it may take from ([`Lane::eligible`]).
//!
//! Lane consumers are named from their lane ([`Lane::consumer_name`]), so any process finds
//! the same one; the consumer's `ack_wait` is the lease of every claim made from it.

use std::fmt;

use crate::actor::Actor;

/// Priority levels, `0..=MAX_PRIORITY`; higher is handed out first.
pub const MAX_PRIORITY: i64 = 9;

/// Where claimers announce nothing and submitters announce new work: `vibehq.wake.<lane>`,
/// core NATS, never stored (see [`Lane::wake_subject`]).
pub const WAKE_SUBJECTS: &str = "vibehq.wake.>";

/// Who may take a piece of work.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// Any container of any worker.
    Any,
    /// Any container of this worker.
    Worker(String),
    /// This container of this worker.
    Container { worker: String, container: String },
}

impl Target {
    /// The target of a task with these (optional) worker and container names.
    ///
    /// A container name without a worker name is ambiguous (names repeat across workers); the
    /// API refuses it before it gets here, so it reads as the worker-less `Any`.
    pub fn of(worker: Option<&str>, container: Option<&str>) -> Self {
        match (worker, container) {
            (Some(w), Some(c)) => Target::Container {
                worker: w.to_owned(),
                container: c.to_owned(),
            },
            (Some(w), None) => Target::Worker(w.to_owned()),
            (None, _) => Target::Any,
        }
    }

    /// Whether `actor` may take work for this target.
    pub fn admits(&self, actor: &Actor) -> bool {
        match self {
            Target::Any => true,
            Target::Worker(w) => *w == actor.worker_name,
            Target::Container { worker, container } => {
                *worker == actor.worker_name && actor.container_name.as_ref() == Some(container)
            }
        }
    }

    /// The targets `actor` may take from, most specific first. An actor with no container
    /// takes only its worker's and anyone's work.
    pub fn eligible(actor: &Actor) -> Vec<Target> {
        let mut targets = Vec::with_capacity(3);
        if let Some(container) = &actor.container_name {
            targets.push(Target::Container {
                worker: actor.worker_name.clone(),
                container: container.clone(),
            });
        }
        targets.push(Target::Worker(actor.worker_name.clone()));
        targets.push(Target::Any);
        targets
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Any => f.write_str("any worker"),
            Target::Worker(w) => write!(f, "worker {w}"),
            Target::Container { worker, container } => {
                write!(f, "container {container} of worker {worker}")
            }
        }
    }
}

/// A priority band and a target: one consumer's worth of pending work.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lane {
    /// `0..=MAX_PRIORITY`; higher is handed out first.
    pub band: u8,
    pub target: Target,
}

impl Lane {
    /// The lane of a task with `priority` (clamped to the bands) for `target`.
    pub fn new(priority: i64, target: Target) -> Self {
        Self {
            band: priority.clamp(0, MAX_PRIORITY) as u8,
            target,
        }
    }

    /// Every lane `actor` may take from, best first: the highest band first, and within a
    /// band the most specific target first.
    pub fn eligible(actor: &Actor) -> Vec<Lane> {
        let targets = Target::eligible(actor);
        (0..=MAX_PRIORITY as u8)
            .rev()
            .flat_map(|band| {
                targets.iter().map(move |target| Lane {
                    band,
                    target: target.clone(),
                })
            })
            .collect()
    }

    /// The lane's subject tokens: `p5.any`, `p5.w.<worker>` or `p5.c.<worker>.<container>`.
    pub fn tokens(&self) -> String {
        match &self.target {
            Target::Any => format!("p{}.any", self.band),
            Target::Worker(w) => format!("p{}.w.{w}", self.band),
            Target::Container { worker, container } => {
                format!("p{}.c.{worker}.{container}", self.band)
            }
        }
    }

    /// The lane these subject tokens name (see [`Lane::tokens`]).
    pub fn from_tokens(tokens: &[&str]) -> Option<Self> {
        let (band, rest) = tokens.split_first()?;
        let band: u8 = band.strip_prefix('p')?.parse().ok()?;
        if i64::from(band) > MAX_PRIORITY {
            return None;
        }
        let target = match rest {
            ["any"] => Target::Any,
            ["w", worker] => Target::Worker((*worker).to_owned()),
            ["c", worker, container] => Target::Container {
                worker: (*worker).to_owned(),
                container: (*container).to_owned(),
            },
            _ => return None,
        };
        Some(Self { band, target })
    }

    /// The filter of the lane's consumer: every task's submission in this lane.
    pub fn filter(&self) -> String {
        format!("vibehq.tasks.*.submitted.{}", self.tokens())
    }

    /// The lane's durable consumer: `vibehq-lane-p5-any`, `vibehq-lane-p5-w-<worker>`,
    /// `vibehq-lane-p5-c-<container>@<worker>` (names cannot contain `@`, so it is
    /// unambiguous; consumer names cannot contain dots).
    pub fn consumer_name(&self) -> String {
        match &self.target {
            Target::Any => format!("vibehq-lane-p{}-any", self.band),
            Target::Worker(w) => format!("vibehq-lane-p{}-w-{w}", self.band),
            Target::Container { worker, container } => {
                format!("vibehq-lane-p{}-c-{container}@{worker}", self.band)
            }
        }
    }

    /// The lane whose consumer has this name (see [`Lane::consumer_name`]).
    pub fn from_consumer_name(name: &str) -> Option<Self> {
        let rest = name.strip_prefix("vibehq-lane-p")?;
        let (band, target) = rest.split_once('-')?;
        let band: u8 = band.parse().ok()?;
        if i64::from(band) > MAX_PRIORITY {
            return None;
        }
        let target = if target == "any" {
            Target::Any
        } else if let Some(worker) = target.strip_prefix("w-") {
            Target::Worker(worker.to_owned())
        } else {
            let (container, worker) = target.strip_prefix("c-")?.split_once('@')?;
            Target::Container {
                worker: worker.to_owned(),
                container: container.to_owned(),
            }
        };
        Some(Self { band, target })
    }

    /// Where submitters announce new work in this lane (core NATS; a lost announcement only
    /// delays claimers until they next look).
    pub fn wake_subject(&self) -> String {
        format!("vibehq.wake.{}", self.tokens())
    }

    /// The lane a wake subject announces, if it is one.
    pub fn from_wake_subject(subject: &str) -> Option<Self> {
        let rest = subject.strip_prefix("vibehq.wake.")?;
        Self::from_tokens(&rest.split('.').collect::<Vec<_>>())
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "priority {} for {}", self.band, self.target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(worker: &str, container: &str) -> Target {
        Target::Container {
            worker: worker.into(),
            container: container.into(),
        }
    }

    #[test]
    fn a_lane_is_its_band_and_target_in_every_name() {
        let lane = Lane::new(3, container("w1", "c2"));
        assert_eq!(lane.tokens(), "p3.c.w1.c2");
        assert_eq!(lane.filter(), "vibehq.tasks.*.submitted.p3.c.w1.c2");
        assert_eq!(lane.consumer_name(), "vibehq-lane-p3-c-c2@w1");
        assert_eq!(lane.wake_subject(), "vibehq.wake.p3.c.w1.c2");
        for lane in [
            lane,
            Lane::new(9, Target::Any),
            Lane::new(0, Target::Worker("w-1".into())),
            Lane::new(1, container("w-c", "c-1")),
        ] {
            assert_eq!(
                Lane::from_wake_subject(&lane.wake_subject()),
                Some(lane.clone())
            );
            assert_eq!(Lane::from_consumer_name(&lane.consumer_name()), Some(lane));
        }
        assert_eq!(Lane::from_consumer_name("vibehq-projector-x"), None);
        assert_eq!(Lane::from_wake_subject("vibehq.wake.p10.any"), None);
        assert_eq!(Lane::from_wake_subject("vibehq.wake.p1.x"), None);
    }

    #[test]
    fn priorities_outside_the_bands_are_clamped() {
        assert_eq!(Lane::new(-5, Target::Any).band, 0);
        assert_eq!(Lane::new(4, Target::Any).band, 4);
        assert_eq!(Lane::new(100, Target::Any).band, 9);
    }

    #[test]
    fn a_claimer_looks_at_the_highest_band_first_and_its_own_lanes_first_within_one() {
        let lanes = Lane::eligible(&Actor::new("w", Some("c".into())));
        assert_eq!(lanes.len(), 30);
        assert_eq!(lanes[0], Lane::new(9, container("w", "c")));
        assert_eq!(lanes[1], Lane::new(9, Target::Worker("w".into())));
        assert_eq!(lanes[2], Lane::new(9, Target::Any));
        assert_eq!(lanes[29], Lane::new(0, Target::Any));
        // No container: no container's lanes.
        let lanes = Lane::eligible(&Actor::worker("w"));
        assert_eq!(lanes.len(), 20);
        assert!(
            lanes
                .iter()
                .all(|l| !matches!(l.target, Target::Container { .. }))
        );
    }

    #[test]
    fn a_target_admits_exactly_whom_it_names() {
        let (a, b) = (Actor::new("w", Some("c".into())), Actor::worker("w"));
        let other = Actor::new("x", Some("c".into()));
        assert!(Target::Any.admits(&other));
        assert!(Target::Worker("w".into()).admits(&a) && Target::Worker("w".into()).admits(&b));
        assert!(!Target::Worker("w".into()).admits(&other));
        assert!(container("w", "c").admits(&a));
        assert!(!container("w", "c").admits(&b) && !container("w", "c").admits(&other));
    }
}
