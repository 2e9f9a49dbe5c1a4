//! What the queue holds and how it moves, for operators: the work waiting in each lane with the
//! age of its oldest task, and throughput and latency per minute. Read from the projection
//! (and the lanes' consumers, for what the server is about to hand out), never from a stream's
//! past. `/api/queues…`, the dashboard and `/metrics` ask here.

use std::collections::BTreeMap;

use rusqlite::params;
use serde::Serialize;
use vibehq_events::EventLog;
use vibehq_events::task::lane::{Lane, Target};
use vibehq_projector::Reader;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::registry::{Registry, Unit};
use vibehq_metrics::{Figures, counters, gauges, rows};

use crate::Error;
use crate::inventory;

/// One lane: what waits in it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LaneLoad {
    /// `p5.any`, `p5.w.<worker>`, `p5.c.<worker>.<container>`.
    pub lane: String,
    pub priority: i64,
    /// The worker the lane's tasks are for (`null`: anyone).
    pub worker_name: Option<String>,
    /// The container they are for (`null`: any of the worker's).
    pub container_name: Option<String>,
    /// Tasks pending in the projection (submitted or requeued, not yet claimed).
    pub pending: u64,
    /// Seconds since the oldest pending task was submitted.
    pub oldest_pending_secs: Option<i64>,
    /// Tasks a claim holds (assigned or running).
    pub held: u64,
    /// What the lane's consumer has not handed out yet (`null`: the lane has no consumer).
    pub undelivered: Option<u64>,
}

/// Every lane that has work or a consumer, best first (highest priority, most specific).
pub async fn lanes(reader: &Reader, log: &EventLog, now: i64) -> Result<Vec<LaneLoad>, Error> {
    let rows = reader.read(|conn| live_work(conn).map_err(sqlite)).await?;
    let mut by_lane: BTreeMap<Lane, LaneLoad> = BTreeMap::new();
    for row in rows {
        let lane = Lane::new(
            row.priority,
            Target::of(row.worker_name.as_deref(), row.container_name.as_deref()),
        );
        let load = by_lane.entry(lane.clone()).or_insert_with(|| empty(&lane));
        load.pending += row.pending;
        load.held += row.held;
        load.oldest_pending_secs = match (load.oldest_pending_secs, row.oldest_pending_at) {
            (Some(a), Some(b)) => Some(a.max(now - b)),
            (a, b) => a.or(b.map(|b| now - b)),
        };
    }
    for consumer in inventory::list(log).await? {
        let Some(lane) = Lane::from_consumer_name(&consumer.consumer) else {
            continue;
        };
        let load = by_lane.entry(lane.clone()).or_insert_with(|| empty(&lane));
        load.undelivered = Some(consumer.pending);
    }
    // Lanes sort lowest band first; operators read the best lane first.
    let mut lanes: Vec<LaneLoad> = by_lane.into_values().collect();
    lanes.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.lane.cmp(&b.lane)));
    Ok(lanes)
}

/// Live work of one priority and target, as the projection holds it.
struct LiveWork {
    priority: i64,
    worker_name: Option<String>,
    container_name: Option<String>,
    pending: u64,
    /// When the oldest pending task was submitted (unix seconds).
    oldest_pending_at: Option<i64>,
    held: u64,
}

/// Pending and held tasks per priority and target: what `/api/queues` and `/metrics` report.
fn live_work(conn: &rusqlite::Connection) -> rusqlite::Result<Vec<LiveWork>> {
    rows(
        conn,
        "SELECT priority, worker_name, container_name,
                SUM(status = 'pending'),
                MIN(CASE WHEN status = 'pending' THEN created_at END),
                SUM(status IN ('assigned', 'running'))
         FROM container_tasks
         WHERE status IN ('pending', 'assigned', 'running')
         GROUP BY priority, worker_name, container_name",
        |row| {
            Ok(LiveWork {
                priority: row.get::<_, Option<i64>>(0)?.unwrap_or(0),
                worker_name: row.get(1)?,
                container_name: row.get(2)?,
                pending: row.get::<_, i64>(3)?.max(0) as u64,
                oldest_pending_at: row.get(4)?,
                held: row.get::<_, i64>(5)?.max(0) as u64,
            })
        },
    )
}

fn empty(lane: &Lane) -> LaneLoad {
    let (worker_name, container_name) = match &lane.target {
        Target::Any => (None, None),
        Target::Worker(w) => (Some(w.clone()), None),
        Target::Container { worker, container } => (Some(worker.clone()), Some(container.clone())),
    };
    LaneLoad {
        lane: lane.tokens(),
        priority: i64::from(lane.band),
        worker_name,
        container_name,
        pending: 0,
        oldest_pending_secs: None,
        held: 0,
        undelivered: None,
    }
}

/// One minute of the queue's life.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Minute {
    /// The minute's start (unix seconds).
    pub at: i64,
    pub submitted: u64,
    pub completed: u64,
    /// Tasks that failed for good in this minute.
    pub failed: u64,
    /// Of the tasks completed in this minute: seconds from submission to completion.
    pub latency_p50_secs: Option<f64>,
    pub latency_p95_secs: Option<f64>,
}

/// The last `minutes` minutes up to `now`, oldest first, every minute present.
pub async fn throughput(reader: &Reader, minutes: u32, now: i64) -> Result<Vec<Minute>, Error> {
    let start = (now / 60 - i64::from(minutes) + 1) * 60;
    let (submitted, ended) = reader
        .read(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT created_at / 60 * 60, COUNT(*) FROM container_tasks
                     WHERE created_at >= ?1 GROUP BY 1",
                )
                .map_err(sqlite)?;
            let submitted = stmt
                .query_map(params![start], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
                })
                .map_err(sqlite)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sqlite)?;
            let mut stmt = conn
                .prepare(
                    "SELECT completed_at, status, completed_at - created_at FROM container_tasks
                     WHERE completed_at >= ?1 AND status IN ('completed', 'failed')",
                )
                .map_err(sqlite)?;
            let ended = stmt
                .query_map(params![start], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, Option<i64>>(2)?,
                    ))
                })
                .map_err(sqlite)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sqlite)?;
            Ok((submitted, ended))
        })
        .await?;
    let mut series: BTreeMap<i64, (Minute, Vec<f64>)> = (0..i64::from(minutes))
        .map(|i| {
            let at = start + i * 60;
            (
                at,
                (
                    Minute {
                        at,
                        ..Minute::default()
                    },
                    Vec::new(),
                ),
            )
        })
        .collect();
    for (at, count) in submitted {
        if let Some((minute, _)) = series.get_mut(&at) {
            minute.submitted = count as u64;
        }
    }
    for (ended_at, status, latency) in ended {
        let Some((minute, latencies)) = series.get_mut(&(ended_at / 60 * 60)) else {
            continue;
        };
        if status == "completed" {
            minute.completed += 1;
            latencies.extend(latency.map(|l| l as f64));
        } else {
            minute.failed += 1;
        }
    }
    Ok(series
        .into_values()
        .map(|(mut minute, mut latencies)| {
            latencies.sort_by(f64::total_cmp);
            minute.latency_p50_secs = percentile(&latencies, 0.50);
            minute.latency_p95_secs = percentile(&latencies, 0.95);
            minute
        })
        .collect())
}

/// The `q` quantile of sorted `values` (nearest rank).
fn percentile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

fn sqlite(error: rusqlite::Error) -> vibehq_projector::Error {
    vibehq_projector::Error::Sqlite {
        op: "read the queue's state",
        source: error,
    }
}

/// The queue's figures for `/metrics`, from the projection: tasks by status and type, the
/// pending work and its oldest age per priority and target, and refused results.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueFigures;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabels {
    status: String,
    task_type: String,
}

/// A lane's coordinates; an empty name means "any".
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TargetLabels {
    priority: i64,
    worker_name: String,
    container_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusalLabels {
    refused_by: String,
    event_type: String,
}

impl Figures for QueueFigures {
    fn read(&self, conn: &rusqlite::Connection, registry: &mut Registry) -> rusqlite::Result<()> {
        let by_status = rows(
            conn,
            "SELECT status, task_type, COUNT(*) FROM container_tasks GROUP BY 1, 2",
            |row| {
                let labels = StatusLabels {
                    status: row.get(0)?,
                    task_type: row.get(1)?,
                };
                Ok((labels, row.get::<_, i64>(2)? as f64))
            },
        )?;
        registry.register(
            "tasks",
            "Tasks in the projection, by status and type",
            gauges(by_status),
        );

        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let pending: Vec<_> = live_work(conn)?
            .into_iter()
            .filter(|work| work.pending > 0)
            .map(|work| {
                let age = work.oldest_pending_at.map_or(0, |at| (now - at).max(0));
                let labels = TargetLabels {
                    priority: work.priority,
                    worker_name: work.worker_name.unwrap_or_default(),
                    container_name: work.container_name.unwrap_or_default(),
                };
                (labels, work.pending as f64, age as f64)
            })
            .collect();
        registry.register(
            "pending_tasks",
            "Tasks waiting to be claimed, by priority and target (empty names: any)",
            gauges(pending.iter().map(|(l, n, _)| (l.clone(), *n))),
        );
        registry.register_with_unit(
            "oldest_pending_age",
            "Age of the oldest task waiting to be claimed, by priority and target",
            Unit::Seconds,
            gauges(pending.into_iter().map(|(l, _, age)| (l, age))),
        );

        let refusals = rows(
            conn,
            "SELECT refused_by, event_type, COUNT(*) FROM container_task_refusals GROUP BY 1, 2",
            |row| {
                let labels = RefusalLabels {
                    refused_by: row.get(0)?,
                    event_type: row.get(1)?,
                };
                Ok((labels, row.get::<_, i64>(2)? as f64))
            },
        )?;
        registry.register(
            "task_refusals",
            "Task events refused (a result from a claim that does not hold the task, …), by who refused it",
            counters(refusals),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), Some(10.0));
        assert_eq!(percentile(&values, 0.95), Some(19.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
