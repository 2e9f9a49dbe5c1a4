//! Why is my task still pending? Every reason a pending task has not run, each with its
//! evidence: the facts come from the task's own events (its backoff), its lane's consumer on
//! the server (whether anyone has pulled from it lately) and the projection (what waits ahead
//! of it). A task that is not pending has no reasons; its status says what happened.

use serde::Serialize;
use time::OffsetDateTime;
use vibehq_events::task::lane::{Lane, Target};
use vibehq_events::task::lifecycle::State;
use vibehq_events::{Payload, StreamKind, Subject};
use vibehq_projector::Reader;

use crate::{Error, Queue};

/// A lane that has work and handed nothing out for this long has no claimer looking: live
/// claimers look at least once a second.
pub const IDLE_LANE_SECS: i64 = 3;

/// A task's status and, if it is pending, why it has not run.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Why {
    pub task_id: String,
    /// `pending`, `assigned`, …: only a pending task has reasons.
    pub status: &'static str,
    /// The lane it waits in (`p5.any`, `p0.w.<worker>`, …).
    pub lane: String,
    /// Every reason found, most decisive first; empty when the task is not pending, or when
    /// nothing holds it back (it is about to be claimed).
    pub reasons: Vec<Reason>,
}

/// One reason a pending task has not run, with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// A delayed task: not handed out before `run_at`.
    NotDue {
        #[serde(with = "time::serde::rfc3339")]
        #[schema(value_type = String, format = DateTime)]
        run_at: OffsetDateTime,
    },
    /// Its lane has no consumer on the server (it was pruned, or never created), so nothing
    /// hands the task out until the next submission into the lane creates it again.
    NoLane { consumer: String },
    /// Its last attempt failed and the retry waits out its backoff.
    Backoff {
        attempt: u32,
        #[serde(with = "time::serde::rfc3339")]
        #[schema(value_type = String, format = DateTime)]
        retry_at: OffsetDateTime,
    },
    /// Its lane holds work but has handed nothing out for `idle_secs`: no claimer that may
    /// take the task (its target's containers) has looked since.
    NoClaimer {
        consumer: String,
        /// The lane's last delivery or acknowledgement (or its creation).
        #[serde(with = "time::serde::rfc3339")]
        #[schema(value_type = String, format = DateTime)]
        last_active: OffsetDateTime,
        idle_secs: i64,
        /// Submissions in the lane not yet handed out.
        undelivered: u64,
    },
    /// It waits for tasks it depends on to complete: those not completed yet, with their
    /// states.
    WaitingOn {
        #[schema(value_type = Vec<Object>)]
        tasks: Vec<crate::dependencies::Dependency>,
    },
    /// Its concurrency key is at its limit: `held_by` hold it (admitted, not ended).
    KeyAtLimit {
        key: String,
        concurrency: u32,
        held_by: Vec<String>,
    },
    /// Its key's rate limit lets its next task start at `until`.
    RateLimited {
        key: String,
        #[serde(with = "time::serde::rfc3339")]
        #[schema(value_type = String, format = DateTime)]
        until: OffsetDateTime,
    },
    /// Its lane is paused: `scope` (`all`, `worker:<name>`) holds its work back until resumed.
    Paused { scope: String },
    /// Pending tasks its claimers take first: of a higher priority in a lane they pull, and
    /// earlier ones in its own lane.
    Ahead {
        higher_priority: u64,
        earlier_in_lane: u64,
    },
}

impl Queue {
    /// Why `task_id` is pending (see the module docs). 404 if it was never submitted.
    pub async fn why(&self, reader: &Reader, task_id: &str) -> Result<Why, Error> {
        let task = self.require(task_id).await?;
        let submitted = &task.submitted;
        let lane = submitted.lane();
        let mut why = Why {
            task_id: task_id.to_owned(),
            status: task.status.state.as_str(),
            lane: lane.tokens(),
            reasons: Vec::new(),
        };
        if task.status.state != State::Pending {
            return Ok(why);
        }
        let now = OffsetDateTime::now_utc();
        if let Some(run_at) = submitted.run_at.filter(|at| *at > now) {
            why.reasons.push(Reason::NotDue { run_at });
            return Ok(why);
        }
        let waiting: Vec<_> = self
            .waiting_on(&task)
            .await?
            .into_iter()
            .filter(|d| d.status != "completed")
            .collect();
        if !waiting.is_empty() {
            why.reasons.push(Reason::WaitingOn { tasks: waiting });
            return Ok(why);
        }
        if let Some(reason) = self.key_reason(&task, now).await? {
            why.reasons.push(reason);
            return Ok(why);
        }
        for scope in self.paused_scopes().await? {
            if scope.covers(&lane) {
                why.reasons.push(Reason::Paused {
                    scope: scope.to_string(),
                });
            }
        }
        if let Some(reason) = self.backoff(task_id, now).await? {
            why.reasons.push(reason);
        }
        // A paused lane hands nothing out: that it is idle says nothing of its claimers.
        let paused = why
            .reasons
            .iter()
            .any(|r| matches!(r, Reason::Paused { .. }));
        if !paused {
            why.reasons.extend(self.lane_reason(&lane, now).await?);
        }
        let (higher_priority, earlier_in_lane) = ahead(reader, &lane, task.version).await?;
        if higher_priority + earlier_in_lane > 0 {
            why.reasons.push(Reason::Ahead {
                higher_priority,
                earlier_in_lane,
            });
        }
        Ok(why)
    }

    /// What its concurrency key says: it waits behind the key's holders, or for its rate
    /// limit's window.
    async fn key_reason(
        &self,
        task: &vibehq_events::task::lifecycle::Task,
        now: OffsetDateTime,
    ) -> Result<Option<Reason>, Error> {
        let Some(name) = task.submitted.concurrency_key.as_deref() else {
            return Ok(None);
        };
        let key = self.key(name).await?;
        if key.is_waiting(task.id()) {
            if let Some(concurrency) = key
                .limits
                .concurrency
                .filter(|c| key.holders.len() >= *c as usize)
            {
                return Ok(Some(Reason::KeyAtLimit {
                    key: name.to_owned(),
                    concurrency,
                    held_by: key.holders.iter().map(|h| h.task_id.clone()).collect(),
                }));
            }
            if let Some(until) = key.next_start(now) {
                return Ok(Some(Reason::RateLimited {
                    key: name.to_owned(),
                    until,
                }));
            }
        }
        let admitted_later = key
            .holders
            .iter()
            .find(|h| h.task_id == task.id() && h.start_at > now);
        Ok(admitted_later.map(|h| Reason::RateLimited {
            key: name.to_owned(),
            until: h.start_at,
        }))
    }

    /// The backoff the task's last event (a requeue) set, while it lasts.
    async fn backoff(&self, task_id: &str, now: OffsetDateTime) -> Result<Option<Reason>, Error> {
        let last = self
            .inner
            .log
            .last(StreamKind::Tasks, &Subject::task(task_id))
            .await?;
        let Some(event) = last.and_then(|l| l.record.decode().ok()) else {
            return Ok(None);
        };
        Ok(match event.payload {
            Payload::TaskRequeued(requeued) if requeued.backoff_ms > 0 => {
                let retry_at = event.occurred_at
                    + time::Duration::milliseconds(requeued.backoff_ms.min(i64::MAX as u64) as i64);
                (retry_at > now).then_some(Reason::Backoff {
                    attempt: requeued.attempt + 1,
                    retry_at,
                })
            }
            _ => None,
        })
    }

    /// What the lane's consumer says: gone, or holding work nobody pulled for a while.
    async fn lane_reason(&self, lane: &Lane, now: OffsetDateTime) -> Result<Option<Reason>, Error> {
        let consumer = lane.consumer_name();
        let Some(info) = self.inner.lanes.info(lane).await? else {
            return Ok(Some(Reason::NoLane { consumer }));
        };
        let last_active = [info.delivered.last_active, info.ack_floor.last_active]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(info.created);
        let idle_secs = (now - last_active).whole_seconds();
        Ok(
            (info.num_pending > 0 && idle_secs >= IDLE_LANE_SECS).then_some(Reason::NoClaimer {
                consumer,
                last_active,
                idle_secs,
                undelivered: info.num_pending,
            }),
        )
    }
}

/// Pending tasks the claimers of `lane` take before a task at `version` in it: of a higher
/// band in any lane such a claimer pulls, and earlier ones in the lane itself (as the
/// projection has them).
async fn ahead(reader: &Reader, lane: &Lane, version: u64) -> Result<(u64, u64), Error> {
    let band = i64::from(lane.band);
    // The lanes a claimer of this lane also pulls: anyone's, and its worker's and containers'.
    let (worker, container) = match &lane.target {
        Target::Any => (None, None),
        Target::Worker(w) => (Some(w.clone()), None),
        Target::Container { worker, container } => (Some(worker.clone()), Some(container.clone())),
    };
    let counted = reader
        .read(move |conn| {
            let higher: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM container_tasks
                     WHERE status = 'pending' AND MAX(0, MIN(9, priority)) > ?1
                       AND (?2 IS NULL OR worker_name IS NULL
                            OR (worker_name = ?2 AND (container_name IS NULL OR ?3 IS NULL
                                                      OR container_name = ?3)))",
                    rusqlite::params![band, worker, container],
                    |row| row.get(0),
                )
                .map_err(sqlite)?;
            let earlier: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM container_tasks
                     WHERE status = 'pending' AND MAX(0, MIN(9, priority)) = ?1
                       AND worker_name IS ?2 AND container_name IS ?3 AND version < ?4",
                    rusqlite::params![band, worker, container, version as i64],
                    |row| row.get(0),
                )
                .map_err(sqlite)?;
            Ok((higher.max(0) as u64, earlier.max(0) as u64))
        })
        .await?;
    Ok(counted)
}

fn sqlite(source: rusqlite::Error) -> vibehq_projector::Error {
    vibehq_projector::Error::Sqlite {
        op: "read what waits ahead of a task",
        source,
    }
}
