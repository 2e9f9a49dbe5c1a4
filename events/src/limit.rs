//! Concurrency keys and rate limits: how many tasks of a key may run at once, and how often
//! they may start, across every process.
//!
//! A task may name a key (`repo:acme/api`). Its key is an aggregate on
//! `vibehq.queue.keys.<key>` in the tasks stream: `key.limited` declares its limits,
//! `key.queued` adds submitted tasks to its waiting line, `key.started` records a start (for
//! rate-limited keys), `key.released` lets a task go when it ended. [`Key::apply`] reduces them
//! and says which tasks each event *admits*: admission is a pure function of the key's events
//! (their order and their recorded times), so every process folding them agrees on which
//! tasks hold the key, and appends expecting the key's version cannot race.
//!
//! An admitted task is handed to its lane (the service appends its submission there, due at
//! the admission's start time); until then it waits off its lane, as a dependent does. A key
//! with no declared limits runs one task at a time.
//!
//! A rate limit (`max` starts per `per_ms`) admits one task at a time, at the first moment
//! the window allows, and the next only once that one has started (its claim records
//! `key.started`): so tasks cannot pile up on the lane while no one claims and then start
//! together, and any `max + 1` consecutive starts span at least `per_ms`.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::actor::Actor;
use crate::catalog::Payload;
use crate::subject::Subject;

/// How many tasks of a key run at once, and how often they may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// At most this many hold the key at once (admitted and not ended); `None`: no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// At most `max` starts per `per_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
}

impl Default for Limits {
    /// An undeclared key: one task at a time.
    fn default() -> Self {
        Self {
            concurrency: Some(1),
            rate: None,
        }
    }
}

/// At most `max` starts in any `per_ms` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    pub max: u32,
    pub per_ms: u64,
}

/// Limits that cannot be: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidLimits {
    pub field: &'static str,
    pub reason: &'static str,
}

impl Limits {
    pub fn validate(&self) -> Result<(), InvalidLimits> {
        let invalid = |field, reason| Err(InvalidLimits { field, reason });
        if self.concurrency == Some(0) {
            return invalid("concurrency", "must be at least 1");
        }
        if let Some(rate) = self.rate {
            if rate.max == 0 {
                return invalid("rate.max", "must be at least 1");
            }
            if rate.per_ms == 0 {
                return invalid("rate.per_seconds", "must be more than 0");
            }
        }
        if self.concurrency.is_none() && self.rate.is_none() {
            return invalid("concurrency", "give a concurrency, a rate, or both");
        }
        Ok(())
    }
}

/// A key's limits were declared (replacing earlier ones).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limited {
    pub key: String,
    #[serde(flatten)]
    pub limits: Limits,
}

/// Tasks joined the key's waiting line (one submission, or one bulk submission's tasks of the
/// key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queued {
    pub key: String,
    pub tasks: Vec<Entry>,
}

/// A task waiting for its key, with the priority it waits by (higher first, then in order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub task_id: String,
    #[serde(default)]
    pub priority: i64,
}

/// An admitted task was claimed: the start a rate limit counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Started {
    pub key: String,
    pub task_id: String,
}

/// A task of the key ended (or was cancelled while waiting): its slot is free.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Released {
    pub key: String,
    pub task_id: String,
}

macro_rules! key_subject {
    ($($ty:ty),+) => {$(
        impl $ty {
            /// The key's subject.
            pub fn subject(&self, _by: &Actor) -> Subject {
                Subject::Key(self.key.clone())
            }
        }
    )+};
}
key_subject!(Limited, Queued, Started, Released);

/// A task holding its key: admitted, not yet ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    pub task_id: String,
    /// When it may start (its lane gets it then).
    #[serde(with = "time::serde::rfc3339")]
    pub start_at: OffsetDateTime,
    /// Whether its claim recorded the start (rate-limited keys only).
    pub started: bool,
}

/// A task the key let through, and from when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub task_id: String,
    pub start_at: OffsetDateTime,
}

/// A key as its events say it is now.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Key {
    pub key: String,
    /// As declared; [`Limits::default`] until then.
    pub limits: Limits,
    pub declared: bool,
    /// In admission order.
    pub holders: Vec<Holder>,
    /// In admission order: highest priority first, then by arrival.
    pub waiting: Vec<Entry>,
    /// The latest starts, at most the rate's `max` of them.
    starts: VecDeque<OffsetDateTime>,
    /// The stream sequence of the key's last event (0: none).
    pub version: u64,
}

impl Key {
    /// A key with no events.
    pub fn new(key: &str) -> Self {
        Self {
            key: key.to_owned(),
            ..Self::default()
        }
    }

    /// Applies one event of the key, recorded at `at` and stored at `sequence`; the tasks
    /// it admits. Events of other aggregates, and repeats, change nothing.
    pub fn apply(
        &mut self,
        payload: &Payload,
        at: OffsetDateTime,
        sequence: u64,
    ) -> Vec<Admission> {
        self.version = self.version.max(sequence);
        match payload {
            Payload::KeyLimited(p) => {
                self.limits = p.limits;
                self.declared = true;
            }
            Payload::KeyQueued(p) => {
                for entry in &p.tasks {
                    if self.holds(&entry.task_id) || self.is_waiting(&entry.task_id) {
                        continue;
                    }
                    // After every entry of at least its priority: by priority, then arrival.
                    let at = self
                        .waiting
                        .iter()
                        .position(|w| w.priority < entry.priority)
                        .unwrap_or(self.waiting.len());
                    self.waiting.insert(at, entry.clone());
                }
            }
            Payload::KeyStarted(p) => {
                let Some(holder) = self.holders.iter_mut().find(|h| h.task_id == p.task_id) else {
                    return Vec::new();
                };
                if holder.started {
                    return Vec::new();
                }
                holder.started = true;
                self.starts.push_back(at);
            }
            Payload::KeyReleased(p) => {
                self.holders.retain(|h| h.task_id != p.task_id);
                self.waiting.retain(|w| w.task_id != p.task_id);
            }
            _ => return Vec::new(),
        }
        if let Some(rate) = self.limits.rate {
            while self.starts.len() > rate.max as usize {
                self.starts.pop_front();
            }
        }
        self.admit(at)
    }

    /// Admits waiting tasks while the limits allow, at `now`.
    fn admit(&mut self, now: OffsetDateTime) -> Vec<Admission> {
        let mut admitted = Vec::new();
        while !self.waiting.is_empty() {
            if self
                .limits
                .concurrency
                .is_some_and(|c| self.holders.len() >= c as usize)
            {
                break;
            }
            let start_at = match self.limits.rate {
                None => now,
                Some(rate) => {
                    // One admitted start at a time: the next is placed once this one started.
                    if self.holders.iter().any(|h| !h.started) {
                        break;
                    }
                    self.window_start(rate, now)
                }
            };
            let entry = self.waiting.remove(0);
            self.holders.push(Holder {
                task_id: entry.task_id.clone(),
                start_at,
                started: false,
            });
            admitted.push(Admission {
                task_id: entry.task_id,
                start_at,
            });
        }
        admitted
    }

    /// When the next waiting task can be let through by the rate limit, if the key has one:
    /// after the admitted task that has not started yet (if any), and not before its window
    /// has room.
    pub fn next_start(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let rate = self.limits.rate?;
        let unstarted = self
            .holders
            .iter()
            .filter(|h| !h.started)
            .map(|h| h.start_at)
            .max();
        Some(self.window_start(rate, now).max(unstarted.unwrap_or(now)))
    }

    /// The first moment from `now` on at which one more start keeps to `rate`.
    fn window_start(&self, rate: Rate, now: OffsetDateTime) -> OffsetDateTime {
        let max = rate.max as usize;
        if self.starts.len() < max {
            return now;
        }
        let window = time::Duration::milliseconds(rate.per_ms.min(i64::MAX as u64) as i64);
        (self.starts[self.starts.len() - max] + window).max(now)
    }

    /// Whether the task holds the key.
    pub fn holds(&self, task_id: &str) -> bool {
        self.holders.iter().any(|h| h.task_id == task_id)
    }

    /// Whether the task waits for the key.
    pub fn is_waiting(&self, task_id: &str) -> bool {
        self.waiting.iter().any(|w| w.task_id == task_id)
    }

    /// Whether the task is known to the key at all (waiting or holding).
    pub fn knows(&self, task_id: &str) -> bool {
        self.holds(task_id) || self.is_waiting(task_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(ms)
    }

    fn queued(ids: &[(&str, i64)]) -> Payload {
        Payload::KeyQueued(Queued {
            key: "k".into(),
            tasks: ids
                .iter()
                .map(|(id, priority)| Entry {
                    task_id: (*id).into(),
                    priority: *priority,
                })
                .collect(),
        })
    }

    fn released(id: &str) -> Payload {
        Payload::KeyReleased(Released {
            key: "k".into(),
            task_id: id.into(),
        })
    }

    fn started(id: &str) -> Payload {
        Payload::KeyStarted(Started {
            key: "k".into(),
            task_id: id.into(),
        })
    }

    fn ids(admitted: &[Admission]) -> Vec<&str> {
        admitted.iter().map(|a| a.task_id.as_str()).collect()
    }

    #[test]
    fn an_undeclared_key_runs_one_task_at_a_time_in_priority_order() {
        let mut key = Key::new("k");
        let first = key.apply(&queued(&[("a", 0), ("b", 0)]), t(0), 1);
        assert_eq!(ids(&first), ["a"]);
        assert!(key.apply(&queued(&[("c", 5)]), t(1), 2).is_empty());
        assert_eq!(
            ids(&key.apply(&released("a"), t(2), 3)),
            ["c"],
            "higher priority first"
        );
        assert_eq!(ids(&key.apply(&released("c"), t(3), 4)), ["b"]);
        assert!(
            key.apply(&queued(&[("b", 0)]), t(4), 5).is_empty(),
            "a repeat changes nothing"
        );
        assert!(key.apply(&released("b"), t(5), 6).is_empty());
        assert!(key.holders.is_empty() && key.waiting.is_empty());
    }

    #[test]
    fn a_concurrency_limit_admits_up_to_it_and_raising_it_admits_more() {
        let mut key = Key::new("k");
        let limited = |c| {
            Payload::KeyLimited(Limited {
                key: "k".into(),
                limits: Limits {
                    concurrency: Some(c),
                    rate: None,
                },
            })
        };
        key.apply(&limited(2), t(0), 1);
        let all: Vec<(String, i64)> = (0..5).map(|i| (format!("t{i}"), 0)).collect();
        let all: Vec<(&str, i64)> = all.iter().map(|(id, p)| (id.as_str(), *p)).collect();
        assert_eq!(ids(&key.apply(&queued(&all), t(1), 2)), ["t0", "t1"]);
        assert_eq!(ids(&key.apply(&limited(3), t(2), 3)), ["t2"]);
        assert!(
            key.apply(&released("t3"), t(3), 4).is_empty(),
            "a waiting task leaves the line"
        );
        assert_eq!(ids(&key.apply(&released("t0"), t(4), 5)), ["t4"]);
    }

    #[test]
    fn a_rate_limit_spaces_starts_by_its_window() {
        let mut key = Key::new("k");
        key.apply(
            &Payload::KeyLimited(Limited {
                key: "k".into(),
                limits: Limits {
                    concurrency: None,
                    rate: Some(Rate {
                        max: 2,
                        per_ms: 1000,
                    }),
                },
            }),
            t(0),
            1,
        );
        let admitted = key.apply(&queued(&[("a", 0), ("b", 0), ("c", 0), ("d", 0)]), t(10), 2);
        assert_eq!(ids(&admitted), ["a"], "one admitted start at a time");
        assert_eq!(admitted[0].start_at, t(10));
        let b = key.apply(&started("a"), t(20), 3);
        assert_eq!(ids(&b), ["b"]);
        assert_eq!(
            b[0].start_at,
            t(20),
            "the window has room for a second start"
        );
        let c = key.apply(&started("b"), t(30), 4);
        assert_eq!(ids(&c), ["c"]);
        assert_eq!(
            c[0].start_at,
            t(1020),
            "the third start waits for the first to leave the window"
        );
        assert!(
            key.apply(&released("a"), t(40), 5).is_empty(),
            "c has not started yet"
        );
        let d = key.apply(&started("c"), t(1025), 6);
        assert_eq!(d[0].start_at, t(1030));
    }
}
