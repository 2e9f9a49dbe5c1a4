//! A task's states, the transitions between them, and the one reduction of its events.
//!
//! Everything that asks "what does this event do to its task?" asks [`decide`]: the queue's
//! commands before they append (so they refuse with the same words), the projector when it
//! applies an event to `container_tasks`, the live feed when it says which status an event
//! moves a task to, and the list filters for which statuses exist. An event [`decide`] refuses
//! changes nothing anywhere, the same way on replay: appending an event does not make it true.
//!
//! The rules, besides the [`TRANSITIONS`] table:
//! - a task is submitted once, and nothing happens to a task that was never submitted (a
//!   delayed task's submission comes again, in its lane, when it is due: that changes
//!   nothing);
//! - `assigned` takes the next attempt, by an actor the task's target admits, while attempts
//!   remain;
//! - `started`, `progress` and `completed` come from the claim holding the task, for its
//!   attempt (`progress` only while it runs, and it changes no state);
//! - `requeued` comes from the holder, or (when the holder's lease expired and the server
//!   handed the task to someone else) from an actor the target admits; `failed` of a held
//!   task only from its holder, of a pending one (out of attempts) from an actor the target
//!   admits, or (a task that never ran, whose dependency failed) from the dependency
//!   settler ([`task::DEPENDENCY_ACTOR`]);
//! - `cancelled` may come from anyone the server let append it;
//! - `result_refused` records a refusal and changes nothing.

use std::fmt;

use crate::actor::Actor;
use crate::catalog::Payload;
use crate::envelope::Envelope;
use crate::subject::Subject;
use crate::task::lane::Target;
use crate::task::{self, Step};

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Pending,
    Assigned,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl State {
    /// Every state, in the order of a task's life.
    pub const ALL: [State; 6] = [
        State::Pending,
        State::Assigned,
        State::Running,
        State::Completed,
        State::Failed,
        State::Cancelled,
    ];

    /// Every state's name, in [`State::ALL`]'s order (the `status` filter's values).
    pub const NAMES: [&'static str; 6] = [
        "pending",
        "assigned",
        "running",
        "completed",
        "failed",
        "cancelled",
    ];

    /// The state's name in the API and the `container_tasks.status` column.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// The state with this name, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the task has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Completed | State::Failed | State::Cancelled)
    }

    /// Whether a claim holds the task.
    pub fn is_held(self) -> bool {
        matches!(self, State::Assigned | State::Running)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every transition: `(from, step, to)`. A step from a state not listed is refused.
/// (`submitted` creates a task and `refused` changes none; [`decide`] handles both.)
pub const TRANSITIONS: &[(State, Step, State)] = {
    use State::*;
    &[
        (Pending, Step::Assigned, Assigned),
        (Pending, Step::Cancelled, Cancelled),
        (Pending, Step::Failed, Failed),
        (Assigned, Step::Started, Running),
        (Assigned, Step::Completed, Completed),
        (Assigned, Step::Failed, Failed),
        (Assigned, Step::Requeued, Pending),
        (Assigned, Step::Cancelled, Cancelled),
        (Running, Step::Progress, Running),
        (Running, Step::Completed, Completed),
        (Running, Step::Failed, Failed),
        (Running, Step::Requeued, Pending),
        (Running, Step::Cancelled, Cancelled),
    ]
};

/// The state `step` leads to from `from`, if the table allows it.
pub fn next(from: State, step: Step) -> Option<State> {
    TRANSITIONS
        .iter()
        .find(|(f, s, _)| *f == from && *s == step)
        .map(|(_, _, to)| *to)
}

/// What the rules need to know of a task: the projector keeps exactly this in its row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub state: State,
    /// The current (or last) attempt; 0 before the first claim.
    pub attempt: u32,
    pub max_attempts: u32,
    /// Who may take the task.
    pub target: Target,
    /// The claim holding (or that last held) the task.
    pub holder: Option<Actor>,
}

/// Why an event does not apply to its task. The words are the API's: they reach clients as
/// error messages and operators as refusal reasons.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no such task")]
    Unknown,
    #[error("the task was already submitted")]
    AlreadySubmitted,
    #[error("{} {state} task cannot {step}", article(*state))]
    NotAllowed { state: State, step: StepName },
    #[error("attempt {got} is not the task's current attempt ({current})")]
    WrongAttempt { got: u32, current: u32 },
    #[error("the task has had all of its {max} attempts")]
    NoAttemptsLeft { max: u32 },
    #[error("{actor} does not hold the task{}", holder.as_ref().map(|h| format!("; {h} does")).unwrap_or_default())]
    NotHolder { actor: Actor, holder: Option<Actor> },
    #[error("the task is for {target}; {actor} may not take it")]
    NotEligible { target: Target, actor: Actor },
    #[error("the event does not match its subject {subject}: {why}")]
    Mismatch { subject: String, why: &'static str },
    #[error("not a readable event: {0}")]
    Unreadable(String),
}

/// A [`Step`] as refusals name it: "an assigned task cannot report progress".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepName(pub Step);

impl fmt::Display for StepName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Step::Submitted => "be submitted",
            Step::Assigned => "be assigned",
            Step::Started => "be started",
            Step::Progress => "report progress",
            Step::Completed => "be completed",
            Step::Failed => "be failed",
            Step::Requeued => "be requeued",
            Step::Cancelled => "be cancelled",
            Step::Refused => "have a result refused",
        })
    }
}

/// "a" or "an", as a state's name begins.
fn article(state: State) -> &'static str {
    if state.as_str().starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// The status after `actor` records `payload` on a task now at `current` (`None`: never
/// submitted); `Ok(None)` for an event that changes no state (a recorded refusal).
pub fn decide(
    current: Option<&Status>,
    actor: &Actor,
    payload: &Payload,
) -> Result<Option<Status>, Refusal> {
    let Some(step) = Step::of(payload.kind()) else {
        return Err(Refusal::Unknown);
    };
    if let Payload::TaskSubmitted(submitted) = payload {
        return match current {
            // A held task's submission, again, in its lane (a delayed task came due, or a
            // dependent or keyed task was released): it changes nothing (the task was
            // pending all along); its lane now hands it out.
            Some(status)
                if submitted.run_at.is_some()
                    && status.state == State::Pending
                    && status.attempt == 0 =>
            {
                Ok(Some(status.clone()))
            }
            Some(_) => Err(Refusal::AlreadySubmitted),
            None => Ok(Some(Status {
                state: State::Pending,
                attempt: 0,
                max_attempts: submitted.max_attempts.max(1),
                target: submitted.target(),
                holder: None,
            })),
        };
    }
    let status = current.ok_or(Refusal::Unknown)?;
    if step == Step::Refused {
        return Ok(None);
    }
    let to = next(status.state, step).ok_or(Refusal::NotAllowed {
        state: status.state,
        step: StepName(step),
    })?;
    let holds = status.holder.as_ref() == Some(actor);
    let same_attempt = |got: u32| {
        if got == status.attempt {
            Ok(())
        } else {
            Err(Refusal::WrongAttempt {
                got,
                current: status.attempt,
            })
        }
    };
    let holder_only = || {
        if holds {
            Ok(())
        } else {
            Err(Refusal::NotHolder {
                actor: actor.clone(),
                holder: status.holder.clone(),
            })
        }
    };
    // A result for a task someone else holds: only one the server handed the task to (its
    // target admits it) can say the holder's lease expired.
    let holder_or_eligible = || {
        if holds || status.target.admits(actor) {
            Ok(())
        } else {
            Err(Refusal::NotEligible {
                target: status.target.clone(),
                actor: actor.clone(),
            })
        }
    };
    let mut after = status.clone();
    after.state = to;
    match payload {
        Payload::TaskAssigned(p) => {
            if status.attempt >= status.max_attempts {
                return Err(Refusal::NoAttemptsLeft {
                    max: status.max_attempts,
                });
            }
            if p.attempt != status.attempt + 1 {
                return Err(Refusal::WrongAttempt {
                    got: p.attempt,
                    current: status.attempt,
                });
            }
            if !status.target.admits(actor) {
                return Err(Refusal::NotEligible {
                    target: status.target.clone(),
                    actor: actor.clone(),
                });
            }
            after.attempt = p.attempt;
            after.holder = Some(actor.clone());
        }
        Payload::TaskStarted(p) => {
            same_attempt(p.attempt)?;
            holder_only()?;
        }
        Payload::TaskProgress(p) => {
            same_attempt(p.attempt)?;
            holder_only()?;
        }
        Payload::TaskCompleted(p) => {
            same_attempt(p.attempt)?;
            holder_only()?;
        }
        Payload::TaskFailed(p) => {
            same_attempt(p.attempt)?;
            // A held task fails only by its holder: an expired lease is a requeue first.
            if status.state == State::Pending
                && status.attempt == 0
                && actor.worker_name == task::DEPENDENCY_ACTOR
            {
                // A task that never ran, failed because a task it depends on did.
            } else if status.state.is_held() {
                holder_only()?;
            } else {
                holder_or_eligible()?;
            }
        }
        Payload::TaskRequeued(p) => {
            same_attempt(p.attempt)?;
            holder_or_eligible()?;
        }
        Payload::TaskCancelled(_) => {}
        _ => return Err(Refusal::Unknown),
    }
    Ok(Some(after))
}

/// Who appended a stored task event, to which task: read from its subject, checked against
/// its envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub task_id: String,
    /// The actor in the subject (for a submission, the envelope's).
    pub actor: Actor,
}

/// Reads a decoded event stored on `subject` as a task event: the subject must be a task
/// subject of the event's step and task, and a step's actor must be the envelope's. `None`
/// for events of other domains.
pub fn read(subject: &str, envelope: &Envelope) -> Option<Result<Origin, Refusal>> {
    let step = Step::of(envelope.kind())?;
    let task_id = envelope.payload.task_id().unwrap_or_default();
    // The subject an envelope belongs on is a function of the envelope: the common case is one
    // comparison; only a mismatch is taken apart to say what is wrong.
    if envelope.subject().to_string() == subject || is_due_copy(subject, envelope) {
        return Some(Ok(Origin {
            task_id: task_id.to_owned(),
            actor: envelope.actor(),
        }));
    }
    let why = match Subject::parse(subject) {
        None => "not a task subject",
        Some(Subject::Submission { .. }) if step != Step::Submitted => {
            "a submission's subject holds another kind of event"
        }
        Some(Subject::Submission { .. }) => "the submission is not in its lane",
        Some(Subject::TaskStep { step: s, .. }) if s != step => "the subject names another step",
        Some(parsed) if parsed.id() != task_id => "the subject names another task",
        Some(_) => "the envelope names another actor than the subject",
    };
    Some(Err(Refusal::Mismatch {
        subject: subject.to_owned(),
        why,
    }))
}

/// Whether `envelope`, stored on `subject`, is a delayed task's submission copied into its
/// lane when it came due (see [`crate::schedule`]).
pub fn is_due_copy(subject: &str, envelope: &Envelope) -> bool {
    match &envelope.payload {
        Payload::TaskSubmitted(submitted) => {
            submitted.run_at.is_some() && submitted.lane_subject().to_string() == subject
        }
        _ => false,
    }
}

/// A task as its events say it is: what the queue's commands and the live feed decide on.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// What was submitted (never changes).
    pub submitted: task::Submitted,
    /// Who submitted it.
    pub submitted_by: Actor,
    pub status: Status,
    /// The ack subject of the delivery the current claim holds: acking it ends the lease,
    /// `+WPI` extends it.
    pub lease: Option<String>,
    /// The current claim's lease period.
    pub lease_ms: u64,
    /// The last error or requeue reason.
    pub error: Option<String>,
    /// The stream sequence of the last event under the task's filter, whatever it held (a
    /// refused or unreadable event moves the version too): what the next append expects.
    pub version: u64,
}

impl Task {
    /// The task's id.
    pub fn id(&self) -> &str {
        &self.submitted.task_id
    }

    /// Folds the record of one stored event (at `sequence`, on `subject`) into `task`.
    ///
    /// An event [`decide`] refuses, or bytes that are no event, leave the state as it was
    /// and only move the version; the refusal is returned for whoever records it.
    pub fn fold(
        task: &mut Option<Task>,
        subject: &str,
        bytes: &[u8],
        sequence: u64,
    ) -> Result<(), Refusal> {
        if let Some(task) = task.as_mut() {
            task.version = task.version.max(sequence);
        }
        let envelope = Envelope::decode(bytes).map_err(|e| Refusal::Unreadable(e.to_string()))?;
        let origin = read(subject, &envelope).unwrap_or(Err(Refusal::Unknown))?;
        Self::apply(task, &origin, &envelope, sequence)
    }

    /// Applies `envelope`, stored at `sequence` by `origin` (see [`read`]), to `task`.
    pub fn apply(
        task: &mut Option<Task>,
        origin: &Origin,
        envelope: &Envelope,
        sequence: u64,
    ) -> Result<(), Refusal> {
        let payload = &envelope.payload;
        let status = decide(task.as_ref().map(|t| &t.status), &origin.actor, payload)?;
        if let Payload::TaskSubmitted(submitted) = payload {
            if let Some(status) = status {
                *task = Some(Task {
                    submitted: submitted.clone(),
                    submitted_by: origin.actor.clone(),
                    status,
                    lease: None,
                    lease_ms: 0,
                    error: None,
                    version: sequence,
                });
            }
            return Ok(());
        }
        let Some(task) = task.as_mut() else {
            return Err(Refusal::Unknown);
        };
        task.version = task.version.max(sequence);
        let Some(status) = status else {
            return Ok(());
        };
        task.status = status;
        match payload {
            Payload::TaskAssigned(p) => {
                task.lease = p.lease.clone();
                task.lease_ms = p.lease_ms;
            }
            Payload::TaskFailed(p) => {
                task.error = Some(p.error.clone());
                task.lease = None;
            }
            Payload::TaskRequeued(p) => {
                task.error = Some(p.reason.clone());
                task.lease = None;
            }
            Payload::TaskCompleted(_) => task.lease = None,
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task;

    fn submitted(max_attempts: u32, target: Option<&str>) -> Payload {
        task::Submitted {
            task_id: "t".into(),
            task_type: "audit".into(),
            command: "audit".into(),
            parameters: None,
            priority: 0,
            worker_name: target.map(str::to_owned),
            container_name: None,
            max_attempts,
            idempotency_key: None,
            ..Default::default()
        }
        .into()
    }

    fn assigned(attempt: u32) -> Payload {
        task::Assigned {
            task_id: "t".into(),
            attempt,
            lease_ms: 1000,
            lease: None,
        }
        .into()
    }

    fn completed(attempt: u32) -> Payload {
        task::Completed {
            task_id: "t".into(),
            attempt,
            output: None,
        }
        .into()
    }

    fn requeued(attempt: u32) -> Payload {
        task::Requeued {
            task_id: "t".into(),
            attempt,
            reason: "r".into(),
            backoff_ms: 0,
        }
        .into()
    }

    /// Folds `steps` from nothing, each by its actor; the status after each.
    fn fold(steps: &[(&Actor, Payload)]) -> Vec<Result<Option<State>, Refusal>> {
        let mut status: Option<Status> = None;
        steps
            .iter()
            .map(|(actor, payload)| {
                let after = decide(status.as_ref(), actor, payload)?;
                if let Some(after) = after {
                    status = Some(after);
                }
                Ok(status.as_ref().map(|s| s.state))
            })
            .collect()
    }

    #[test]
    fn the_table_allows_exactly_its_rows() {
        let allowed = TRANSITIONS.len();
        let mut found = 0;
        for from in State::ALL {
            for step in Step::ALL {
                if let Some(to) = next(from, step) {
                    found += 1;
                    assert!(!from.is_terminal(), "{from} → {to} on {step:?}");
                }
            }
        }
        assert_eq!(found, allowed);
        for (i, state) in State::ALL.iter().enumerate() {
            assert_eq!(State::from_name(State::NAMES[i]), Some(*state));
        }
    }

    #[test]
    fn given_a_claimed_task_only_its_holder_completes_it_for_its_attempt() {
        let (a, b) = (
            Actor::new("w", Some("a".into())),
            Actor::new("w", Some("b".into())),
        );
        let api = Actor::worker("api");
        let outcomes = fold(&[
            (&api, submitted(3, None)),
            (&a, assigned(1)),
            (&b, completed(1)),
            (&a, completed(2)),
            (&a, completed(1)),
            (&a, completed(1)),
        ]);
        assert_eq!(outcomes[0], Ok(Some(State::Pending)));
        assert_eq!(outcomes[1], Ok(Some(State::Assigned)));
        assert!(matches!(outcomes[2], Err(Refusal::NotHolder { .. })));
        assert!(matches!(
            outcomes[3],
            Err(Refusal::WrongAttempt { got: 2, current: 1 })
        ));
        assert_eq!(outcomes[4], Ok(Some(State::Completed)));
        assert!(matches!(outcomes[5], Err(Refusal::NotAllowed { .. })));
    }

    #[test]
    fn given_an_expired_lease_an_eligible_claimer_requeues_and_takes_the_next_attempt() {
        let (a, b) = (Actor::worker("w1"), Actor::worker("w2"));
        let outsider = Actor::worker("x");
        let api = Actor::worker("api");
        let mut status = decide(None, &api, &submitted(2, None))
            .expect("ok")
            .expect("status");
        for (actor, payload) in [(&a, assigned(1)), (&b, requeued(1)), (&b, assigned(2))] {
            status = decide(Some(&status), actor, &payload)
                .expect("allowed")
                .expect("status");
        }
        assert_eq!((status.state, status.attempt), (State::Assigned, 2));
        assert_eq!(status.holder, Some(b.clone()));
        // The old holder's late result, and a third attempt, are refused.
        assert!(decide(Some(&status), &a, &completed(1)).is_err());
        let requeued_again = decide(Some(&status), &b, &requeued(2))
            .expect("ok")
            .expect("status");
        assert_eq!(
            decide(Some(&requeued_again), &b, &assigned(3)),
            Err(Refusal::NoAttemptsLeft { max: 2 })
        );
        // A task for w1 cannot be taken over by w2.
        let targeted = decide(None, &api, &submitted(3, Some("w1")))
            .expect("ok")
            .expect("status");
        let held = decide(Some(&targeted), &a, &assigned(1))
            .expect("ok")
            .expect("status");
        assert!(matches!(
            decide(Some(&held), &outsider, &requeued(1)),
            Err(Refusal::NotEligible { .. })
        ));
        // Nor failed by anyone but its holder while it is held: an expiry is a requeue first.
        let failed = task::Failed {
            task_id: "t".into(),
            attempt: 1,
            error: "e".into(),
        }
        .into();
        assert!(matches!(
            decide(Some(&held), &b, &failed),
            Err(Refusal::NotHolder { .. })
        ));
    }

    #[test]
    fn nothing_happens_to_a_task_never_submitted_or_submitted_twice() {
        let a = Actor::worker("w");
        assert_eq!(decide(None, &a, &completed(1)), Err(Refusal::Unknown));
        let status = decide(None, &a, &submitted(1, None))
            .expect("ok")
            .expect("status");
        assert_eq!(
            decide(Some(&status), &a, &submitted(1, None)),
            Err(Refusal::AlreadySubmitted)
        );
    }

    #[test]
    fn refusals_read_as_sentences() {
        let refusal = Refusal::NotAllowed {
            state: State::Cancelled,
            step: StepName(Step::Cancelled),
        };
        assert_eq!(refusal.to_string(), "a cancelled task cannot be cancelled");
        let refusal = Refusal::NotEligible {
            target: Target::Container {
                worker: "fw".into(),
                container: "cX".into(),
            },
            actor: Actor::new("w", Some("c".into())),
        };
        assert_eq!(
            refusal.to_string(),
            "the task is for container cX of worker fw; w:c may not take it"
        );
    }
}
