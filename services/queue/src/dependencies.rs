//! Tasks that wait for others: `depends_on` on submit.
//!
//! A task with dependencies is stored off its lane (on its `scheduled` subject, as a delayed
//! task is), so nothing hands it out. When every task it depends on has completed, the
//! service *releases* it: the submission is published as a message schedule due now, and the
//! server copies it onto the lane, the same way a delayed task comes due. When one fails or
//! is cancelled, the task is cancelled or failed, as its submitter chose
//! (`on_dependency_failure`), by [`DEPENDENCY_ACTOR`].
//!
//! Who settles: the submission itself (its dependencies may have ended already), and a
//! durable consumer of every task's end in `vibehq up` ([`run_watcher`]), which finds the
//! waiting tasks in the projection once it has caught up with the end. Settling reads the
//! tasks' events and is safe to repeat; `vibehq up` settles every waiting task at start, for
//! an end handled while it was down. The same watcher frees an ended task's concurrency key
//! ([`crate::keys`]) when the process that ended it could not.

use std::time::Duration;

use async_nats::jetstream::consumer::{self, DeliverPolicy, pull};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use vibehq_events::task::lifecycle::{State, Task};
use vibehq_events::task::{self, DEPENDENCY_ACTOR, OnDependencyFailure};
use vibehq_events::{Actor, StreamKind, Subject};

use crate::ops::QueueState;
use crate::{Error, Queue};

/// The watcher's durable consumer on the tasks stream.
const CONSUMER: &str = "vibehq-dependencies";

/// Most tasks one task may depend on.
pub const MAX_DEPENDENCIES: usize = 100;

/// A dependency of a waiting task, and where it is.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Dependency {
    pub task_id: String,
    /// `pending`, `running`, `completed`, …
    pub status: &'static str,
}

fn settler() -> Actor {
    Actor::worker(DEPENDENCY_ACTOR)
}

impl Queue {
    /// The dependencies of a task still waiting on them, with their states; empty when it is
    /// not waiting (it has none, was released, or ended).
    pub async fn waiting_on(&self, task: &Task) -> Result<Vec<Dependency>, Error> {
        let submitted = &task.submitted;
        if submitted.depends_on.is_empty()
            || submitted.run_at.is_some()
            || task.status.state != State::Pending
        {
            return Ok(Vec::new());
        }
        let mut found = Vec::with_capacity(submitted.depends_on.len());
        for id in &submitted.depends_on {
            let status = match self.load(id).await? {
                Some(dependency) => dependency.status.state.as_str(),
                None => "unknown",
            };
            found.push(Dependency {
                task_id: id.clone(),
                status,
            });
        }
        Ok(found)
    }

    /// Releases a waiting task whose dependencies all completed, or settles it by its
    /// `on_dependency_failure` when one failed or was cancelled; otherwise leaves it waiting.
    pub async fn settle_waiting(&self, task_id: &str) -> Result<(), Error> {
        let Some(task) = self.load(task_id).await? else {
            return Ok(());
        };
        let dependencies = self.waiting_on(&task).await?;
        if dependencies.is_empty() {
            return Ok(());
        }
        let dead = dependencies
            .iter()
            .find(|d| matches!(d.status, "failed" | "cancelled"));
        if let Some(dead) = dead {
            let reason = format!("task {} it depends on is {}", dead.task_id, dead.status);
            let policy = task.submitted.on_dependency_failure.unwrap_or_default();
            let settled = match policy {
                OnDependencyFailure::Cancel => self
                    .cancel(task_id, &settler(), Some(reason))
                    .await
                    .map(|_| ()),
                OnDependencyFailure::Fail => {
                    let failed = settler().envelope(task::Failed {
                        task_id: task_id.to_owned(),
                        attempt: 0,
                        error: reason,
                    });
                    match self.append(&task, failed).await {
                        Ok(now) => {
                            self.release_key_after(&now, &settler()).await;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            return match settled {
                // Settled meanwhile by someone else: nothing left to do.
                Err(Error::Refused { .. } | Error::Conflict { .. }) => Ok(()),
                other => other,
            };
        }
        if dependencies.iter().all(|d| d.status == "completed") {
            if let Some(key) = task.submitted.concurrency_key.as_deref() {
                // Its key lets it through from here.
                if !self.key(key).await?.knows(task_id) {
                    self.queue_keyed(&task.submitted_by, &[&task.submitted])
                        .await?;
                }
                return Ok(());
            }
            self.release(task_id, time::OffsetDateTime::now_utc())
                .await?;
        }
        Ok(())
    }
}

/// Settles the tasks waiting on each task that ends, until `shutdown`: a durable consumer
/// of every completion, failure and cancellation, shared by every `vibehq up`.
pub async fn run_watcher(state: QueueState, shutdown: CancellationToken) -> Result<(), Error> {
    let js = state.queue.log().jetstream();
    let stream = js
        .get_stream(StreamKind::Tasks.name())
        .await
        .map_err(|e| Error::nats("find the tasks stream", e))?;
    let ends = ["completed", "failed", "cancelled"]
        .map(|step| format!("vibehq.tasks.*.{step}.*.*"))
        .to_vec();
    let config = pull::Config {
        durable_name: Some(CONSUMER.to_owned()),
        description: Some("vibehq: tasks waiting on the tasks that end".to_owned()),
        filter_subjects: ends,
        // What ended before the consumer existed is settled at start (see the module).
        deliver_policy: DeliverPolicy::New,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_deliver: 20,
        ..Default::default()
    };
    let mut messages = crate::durable::open(&stream, config).await?;
    while let Some(message) = messages.next(&shutdown).await {
        let ended = Subject::parse(&message.subject).map(|s| s.id().to_owned());
        let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        let outcome = match ended {
            Some(task_id) => settle_dependents(&state, &task_id, sequence).await,
            None => Ok(()),
        };
        let ack = match outcome {
            Ok(()) => message.ack().await,
            Err(error) => {
                tracing::warn!(%error, subject = %message.subject, "cannot settle the tasks waiting on an ended task yet; trying again");
                message
                    .ack_with(async_nats::jetstream::AckKind::Nak(Some(
                        Duration::from_secs(1),
                    )))
                    .await
            }
        };
        if let Err(error) = ack {
            tracing::debug!(%error, "cannot acknowledge a task's end; it comes again");
        }
    }
    Ok(())
}

/// Settles every task the projection (once it has `sequence`) shows waiting on `task_id`.
async fn settle_dependents(state: &QueueState, task_id: &str, sequence: u64) -> Result<(), Error> {
    if !state
        .projector
        .wait_for(StreamKind::Tasks, sequence, Duration::from_secs(10))
        .await
    {
        return Err(Error::Conflict {
            task_id: task_id.to_owned(),
            reason: "the projection has not caught up with the task's end".into(),
        });
    }
    let ended = task_id.to_owned();
    let waiting = waiting_tasks(state, Some(ended)).await?;
    for id in waiting {
        state.queue.settle_waiting(&id).await?;
    }
    // The process that ended it frees its key; this is the backstop if it could not. The
    // projection (caught up with the end) says whether it has a key, so an unkeyed task's end
    // costs no read of the stream.
    if keyed(state, task_id).await?
        && let Some(task) = state.queue.load(task_id).await?
        && task.status.state.is_terminal()
    {
        state.queue.key_released(&task, &settler()).await?;
    }
    Ok(())
}

/// Whether the projection shows `task_id` with a concurrency key.
async fn keyed(state: &QueueState, task_id: &str) -> Result<bool, Error> {
    let task_id = task_id.to_owned();
    let keyed = state
        .reader
        .read(move |conn| {
            conn.prepare_cached(
                "SELECT 1 FROM container_tasks WHERE task_id = ?1 AND concurrency_key IS NOT NULL",
            )
            .and_then(|mut statement| statement.exists([task_id]))
            .map_err(|source| vibehq_projector::Error::Sqlite {
                op: "find an ended task's key",
                source,
            })
        })
        .await?;
    Ok(keyed)
}

/// The pending tasks the projection shows waiting on `dependency` (any, if `None`).
pub async fn waiting_tasks(
    state: &QueueState,
    dependency: Option<String>,
) -> Result<Vec<String>, Error> {
    let ids = state
        .reader
        .read(move |conn| {
            let fail = |source| vibehq_projector::Error::Sqlite {
                op: "find the tasks waiting on others",
                source,
            };
            let mut statement = conn
                .prepare_cached(
                    "SELECT DISTINCT t.task_id FROM container_tasks t, json_each(t.depends_on) d
                     WHERE t.status = 'pending' AND t.depends_on IS NOT NULL AND t.due_at IS NULL
                       AND (?1 IS NULL OR d.value = ?1)",
                )
                .map_err(fail)?;
            statement
                .query_map([dependency], |row| row.get::<_, String>(0))
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(fail)
        })
        .await?;
    Ok(ids)
}
