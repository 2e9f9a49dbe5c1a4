//! Concurrency keys and rate limits: a task naming `concurrency_key` runs only when its key
//! admits it ([`vibehq_events::limit`]).
//!
//! A keyed task is stored off its lane (its `scheduled` subject, as a dependent is), and its
//! submission appends `key.queued` to the key. Every change to a key is appended expecting
//! the key's version, so however many processes submit, claim and complete, they agree on
//! who holds it; the change's admissions are then handed to their lanes ([`Queue::release`]):
//! appended there at once, or (a rate limit's later start) as a message schedule due then.
//! A claim of a rate-limited key's task records `key.started`; a task's end records
//! `key.released`, which admits the next. The process that made a change hands out what it
//! admitted; should it crash in between, the dependency watcher (which sees every end) and
//! `vibehq up` at start ([`Queue::restore_keys`]) finish it. Every step is safe to repeat.

use std::time::Duration;

use serde::Serialize;
use vibehq_events::limit::{self, Admission, Entry, Holder, Key, Limits};
use vibehq_events::task::lifecycle::{State, Task};
use vibehq_events::{Actor, Envelope, Expect, Payload, StreamKind, Subject};

use crate::{Error, Queue};

/// How many times a change to a key is decided again after losing a race for it: keys are
/// contended (every submission, start and end of their tasks), so more than a task's.
const KEY_RETRIES: usize = 32;

/// A key as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    pub key: String,
    /// Whether its limits were declared (an undeclared key runs one task at a time).
    pub declared: bool,
    /// At most this many hold the key at once; absent: no cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// At most `max` starts per `per_seconds`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateView>,
    /// The tasks holding the key (admitted, not ended), in admission order.
    #[schema(value_type = Vec<Object>)]
    pub holders: Vec<Holder>,
    /// The tasks waiting for it, in the order it admits them.
    pub waiting: Vec<String>,
    /// The stream sequence of the key's last event.
    pub version: u64,
}

#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct RateView {
    pub max: u32,
    pub per_seconds: f64,
}

impl From<&Key> for KeyView {
    fn from(key: &Key) -> Self {
        Self {
            key: key.key.clone(),
            declared: key.declared,
            concurrency: key.limits.concurrency,
            rate: key.limits.rate.map(|r| RateView {
                max: r.max,
                per_seconds: r.per_ms as f64 / 1000.0,
            }),
            holders: key.holders.clone(),
            waiting: key.waiting.iter().map(|w| w.task_id.clone()).collect(),
            version: key.version,
        }
    }
}

impl Queue {
    /// The key as its events say it is now.
    pub async fn key(&self, key: &str) -> Result<Key, Error> {
        self.key_view(key, true).await
    }

    /// Declares a key's limits (replacing earlier ones); waiting tasks they allow now are let
    /// through.
    pub async fn set_key_limits(
        &self,
        key: &str,
        limits: Limits,
        by: &Actor,
    ) -> Result<Key, Error> {
        let limited = limit::Limited {
            key: key.to_owned(),
            limits,
        };
        self.change_key(key, by, limited.into()).await
    }

    /// This process's view of a key, caught up with the stream when `fresh` (or never seen):
    /// only the events after the view are read.
    async fn key_view(&self, key: &str, fresh: bool) -> Result<Key, Error> {
        let cached = self
            .inner
            .keys
            .lock()
            .ok()
            .and_then(|keys| keys.get(key).cloned());
        let mut view = match cached {
            Some(view) if !fresh => return Ok(view),
            Some(view) => view,
            None => Key::new(key),
        };
        let subject = Subject::Key(key.to_owned());
        subject.validate().map_err(vibehq_events::Error::from)?;
        let events = self
            .inner
            .log
            .history_after(
                StreamKind::Tasks,
                &subject.to_string(),
                view.version,
                u64::MAX,
            )
            .await?;
        for record in events {
            match record.decode() {
                Ok(event) => {
                    view.apply(&event.payload, event.occurred_at, record.sequence);
                }
                Err(error) => {
                    tracing::warn!(%error, sequence = record.sequence, key, "an unreadable event of a key changes nothing");
                    view.version = record.sequence;
                }
            }
        }
        self.remember_key(&view);
        Ok(view)
    }

    fn remember_key(&self, view: &Key) {
        if let Ok(mut keys) = self.inner.keys.lock() {
            let newer = keys
                .get(&view.key)
                .is_none_or(|k| k.version <= view.version);
            if newer {
                keys.insert(view.key.clone(), view.clone());
            }
        }
    }

    /// Appends `payload` to `key`, expecting the version this process decided on, and hands
    /// out what it admits; the key after it.
    async fn change_key(&self, key: &str, by: &Actor, payload: Payload) -> Result<Key, Error> {
        let event = by.envelope(payload);
        let mut fresh = false;
        for round in 0..KEY_RETRIES {
            let view = self.key_view(key, fresh).await?;
            let mut after = view.clone();
            let admitted = after.apply(&event.payload, event.occurred_at, view.version);
            match self
                .inner
                .log
                .append(&event, Expect::at(view.version))
                .await
            {
                Ok(appended) => {
                    after.version = appended.sequence;
                    self.remember_key(&after);
                    self.release_all(&admitted).await;
                    return Ok(after);
                }
                Err(vibehq_events::Error::Conflict { .. }) => {
                    fresh = true;
                    if round > 2 {
                        tokio::time::sleep(Duration::from_millis(round as u64)).await;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Conflict {
            task_id: key.to_owned(),
            reason: "the key kept changing while the change was recorded; send it again".into(),
        })
    }

    /// Hands each admitted task to its lane; one that cannot be now is handed out by the
    /// dependency watcher or at `vibehq up`'s next start.
    async fn release_all(&self, admitted: &[Admission]) {
        for admission in admitted {
            if let Err(error) = self.release(&admission.task_id, admission.start_at).await {
                tracing::warn!(%error, task_id = %admission.task_id, "cannot hand an admitted task to its lane yet; vibehq up does at its next start");
            }
        }
    }

    /// Lets a held task (a dependent whose dependencies completed, or a keyed task its key
    /// admitted) through to its lane, from `at` on: appended there now, or scheduled for `at`.
    /// A task that is no longer waiting is left alone.
    pub(crate) async fn release(
        &self,
        task_id: &str,
        at: time::OffsetDateTime,
    ) -> Result<(), Error> {
        for round in 0..crate::queue::RETRIES {
            // This process's view first: the append expects it, so a stale one only costs a
            // second round, read from the stream.
            let known = if round == 0 {
                self.known(task_id)
            } else {
                None
            };
            let task = match known {
                Some(task) => task,
                None => match self.load(task_id).await? {
                    Some(task) => task,
                    None => return Ok(()),
                },
            };
            if !is_held(&task) {
                return Ok(());
            }
            let now = time::OffsetDateTime::now_utc();
            let mut copy = task.submitted.clone();
            let run_at = Some(at.max(now));
            copy.run_at = run_at;
            let event: Envelope = task.submitted_by.envelope(copy);
            let lane = task.submitted.lane();
            if at > now + time::Duration::milliseconds(5) {
                self.schedule(&event, &lane, at).await;
                return Ok(());
            }
            match self.inner.log.release(&event, task.version).await {
                Ok(appended) => {
                    let mut now = task.clone();
                    now.version = appended.sequence;
                    now.submitted.run_at = run_at;
                    self.remember(&now);
                    self.inner.lanes.announce(&lane, 1).await;
                    return Ok(());
                }
                Err(vibehq_events::Error::Conflict { .. }) => {
                    if let Ok(mut known) = self.inner.known.lock() {
                        known.remove(task_id);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(crate::queue::kept_changing(task_id))
    }

    /// Puts newly submitted keyed tasks in their keys' waiting lines (one change per key).
    pub(crate) async fn queue_keyed(
        &self,
        by: &Actor,
        tasks: &[&vibehq_events::task::Submitted],
    ) -> Result<(), Error> {
        let mut by_key: std::collections::BTreeMap<&str, Vec<Entry>> = Default::default();
        for task in tasks {
            if let Some(key) = task.concurrency_key.as_deref() {
                by_key.entry(key).or_default().push(Entry {
                    task_id: task.task_id.clone(),
                    priority: task.priority,
                });
            }
        }
        for (key, entries) in by_key {
            let queued = limit::Queued {
                key: key.to_owned(),
                tasks: entries,
            };
            self.change_key(key, by, queued.into()).await?;
        }
        Ok(())
    }

    /// Records the start of a claimed task whose key has a rate limit (the start it counts,
    /// which lets its next task be placed).
    pub(crate) async fn key_started(&self, task: &Task, by: &Actor) {
        let Some(key) = task.submitted.concurrency_key.as_deref() else {
            return;
        };
        let outcome = async {
            let view = self.key_view(key, false).await?;
            if view.limits.rate.is_none() {
                return Ok(());
            }
            let view = self.key_view(key, true).await?;
            if !view
                .holders
                .iter()
                .any(|h| h.task_id == task.id() && !h.started)
            {
                return Ok(());
            }
            let started = limit::Started {
                key: key.to_owned(),
                task_id: task.id().to_owned(),
            };
            self.change_key(key, by, started.into()).await.map(|_| ())
        };
        if let Err(error) = outcome.await {
            tracing::warn!(%error, task_id = task.id(), key, "cannot record a keyed task's start; vibehq up does at its next start");
        }
    }

    /// Frees the key of a task that ended (or leaves its waiting line), admitting the next.
    pub(crate) async fn key_released(&self, task: &Task, by: &Actor) -> Result<(), Error> {
        let Some(key) = task.submitted.concurrency_key.as_deref() else {
            return Ok(());
        };
        let mut view = self.key_view(key, false).await?;
        if !view.knows(task.id()) {
            // This process's view may be behind: the task may have joined since.
            view = self.key_view(key, true).await?;
            if !view.knows(task.id()) {
                return Ok(());
            }
        }
        let released = limit::Released {
            key: key.to_owned(),
            task_id: task.id().to_owned(),
        };
        self.change_key(key, by, released.into()).await.map(|_| ())
    }

    /// Frees the key of an ended task, logging instead of failing the command that ended it:
    /// the end stands, and the dependency watcher frees the key if this could not.
    pub(crate) async fn release_key_after(&self, task: &Task, by: &Actor) {
        if let Err(error) = self.key_released(task, by).await {
            tracing::warn!(%error, task_id = task.id(), "cannot free an ended task's key yet; the dependency watcher does");
        }
    }

    /// Brings the keys of `task_ids` (the non-ended keyed tasks the projection shows) in line
    /// with their tasks, after a crash between a task's change and its key's: a task missing
    /// from its key joins it, an ended holder is released, a started one recorded, and an
    /// admitted one still off its lane is let through. Answers how many changes it made.
    pub async fn restore_keys(&self, task_ids: &[String]) -> Result<usize, Error> {
        let actor = Actor::worker(vibehq_events::task::DEPENDENCY_ACTOR);
        let mut changes = 0;
        let mut keys = std::collections::BTreeSet::new();
        for task_id in task_ids {
            let Some(task) = self.load(task_id).await? else {
                continue;
            };
            let Some(key) = task.submitted.concurrency_key.clone() else {
                continue;
            };
            // Read from the stream once per key; this process's view stays current after.
            let first_look = !keys.contains(&key);
            let view = self.key_view(&key, first_look).await?;
            if !task.status.state.is_terminal() && !view.knows(task_id) {
                self.queue_keyed(&task.submitted_by, &[&task.submitted])
                    .await?;
                changes += 1;
            }
            keys.insert(key);
        }
        for key in keys {
            let view = self.key_view(&key, false).await?;
            for holder in &view.holders {
                let Some(task) = self.load(&holder.task_id).await? else {
                    continue;
                };
                if task.status.state.is_terminal() {
                    self.key_released(&task, &actor).await?;
                    changes += 1;
                } else if is_held(&task) {
                    self.release(&holder.task_id, holder.start_at).await?;
                    changes += 1;
                } else if view.limits.rate.is_some() && !holder.started && task.status.attempt > 0 {
                    self.key_started(&task, &actor).await;
                    changes += 1;
                }
            }
        }
        Ok(changes)
    }
}

/// Whether a task still waits off its lane: pending, never handed out, and no copy of its
/// submission on its lane yet (a copy carries the `run_at` it was let through at).
fn is_held(task: &Task) -> bool {
    task.status.state == State::Pending
        && task.status.attempt == 0
        && task.submitted.run_at.is_none()
}
