//! The autoscaler: keeps a pool between `min` and `max` instances, sized to the work waiting for
//! it (queued tasks per instance, read from the task queue's projection) and to its traffic
//! (requests in flight per instance, from the proxy).
//!
//! It scales up as soon as a reading asks for more, and down only after readings have asked
//! for fewer for `scale_down_after`, so a brief lull does not stop instances that are needed
//! again a moment later. Each change is a `container.scaled` event naming the reading.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use vibehq_projector::Reader;

use crate::pool::Pool;

/// How the autoscaler sizes a pool.
#[derive(Debug, Clone)]
pub struct Autoscale {
    pub min: u32,
    pub max: u32,
    /// Queued tasks one instance is meant to carry; `None`: the backlog is not read.
    pub tasks_per_instance: Option<u32>,
    /// Requests in flight one instance is meant to carry; `None`: traffic is not read.
    pub requests_per_instance: Option<u32>,
    /// Time between readings.
    pub interval: Duration,
    /// How long readings must ask for fewer instances before the pool shrinks.
    pub scale_down_after: Duration,
}

impl Default for Autoscale {
    fn default() -> Self {
        Self {
            min: 1,
            max: 8,
            tasks_per_instance: Some(10),
            requests_per_instance: None,
            interval: Duration::from_secs(5),
            scale_down_after: Duration::from_secs(60),
        }
    }
}

/// Where the autoscaler reads the work waiting for a pool.
pub trait Backlog: Send + Sync + std::fmt::Debug + 'static {
    /// Tasks waiting that the pool's instances could take.
    fn queued(&self) -> BoxFuture<'_, Result<u64, String>>;
}

/// Pending tasks one worker's containers may take (targeted at the worker, at one of its
/// containers, or at anyone), from the `container_tasks` projection.
#[derive(Debug, Clone)]
pub struct PendingTasks {
    pub reader: Reader,
    pub worker_name: String,
}

impl Backlog for PendingTasks {
    fn queued(&self) -> BoxFuture<'_, Result<u64, String>> {
        Box::pin(async move {
            let worker = self.worker_name.clone();
            self.reader
                .read(move |conn| {
                    conn.query_row(
                        "SELECT COUNT(*) FROM container_tasks
                         WHERE status = 'pending' AND (worker_name IS NULL OR worker_name = ?1)",
                        [worker],
                        |row| row.get::<_, i64>(0),
                    )
                    .map_err(|source| vibehq_projector::Error::Sqlite {
                        op: "count pending tasks",
                        source,
                    })
                })
                .await
                .map(|n| n.max(0) as u64)
                .map_err(|e| e.to_string())
        })
    }
}

/// The instances a reading asks for, and why.
pub fn decide(policy: &Autoscale, queued: Option<u64>, in_flight: u64) -> (u32, String) {
    let mut want = 0u64;
    let mut reasons = Vec::new();
    if let (Some(per), Some(queued)) = (policy.tasks_per_instance, queued) {
        want = want.max(queued.div_ceil(u64::from(per.max(1))));
        reasons.push(format!("{queued} queued tasks, {per} per instance"));
    }
    if let Some(per) = policy.requests_per_instance {
        want = want.max(in_flight.div_ceil(u64::from(per.max(1))));
        reasons.push(format!(
            "{in_flight} requests in flight, {per} per instance"
        ));
    }
    let min = policy.min.min(policy.max);
    let want = u32::try_from(want)
        .unwrap_or(u32::MAX)
        .clamp(min, policy.max);
    (want, reasons.join("; "))
}

/// Resizes `pool` until `shutdown`.
pub async fn run(
    pool: Pool,
    policy: Autoscale,
    backlog: Arc<dyn Backlog>,
    shutdown: CancellationToken,
) {
    let mut readings = tokio::time::interval(policy.interval);
    readings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut fewer_since: Option<Instant> = None;
    tracing::info!(min = policy.min, max = policy.max, "autoscaler running");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = readings.tick() => {}
        }
        let queued = match policy.tasks_per_instance {
            Some(_) => match backlog.queued().await {
                Ok(queued) => Some(queued),
                Err(error) => {
                    tracing::warn!(%error, "cannot read the backlog; sizing on traffic alone");
                    None
                }
            },
            None => None,
        };
        let in_flight: u64 = pool
            .status()
            .instances
            .iter()
            .map(|i| i.outstanding as u64)
            .sum();
        let (want, reason) = decide(&policy, queued, in_flight);
        let current = pool.desired();
        let resize = if want > current {
            true
        } else if want < current {
            let since = *fewer_since.get_or_insert_with(Instant::now);
            since.elapsed() >= policy.scale_down_after
        } else {
            fewer_since = None;
            false
        };
        if resize {
            fewer_since = None;
            if let Err(error) = pool.scale_for(want, &reason).await {
                tracing::warn!(%error, "the autoscaler could not resize the pool");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Autoscale {
        Autoscale {
            min: 1,
            max: 5,
            tasks_per_instance: Some(4),
            requests_per_instance: Some(10),
            ..Autoscale::default()
        }
    }

    #[test]
    fn the_busier_reading_decides_within_min_and_max() {
        assert_eq!(decide(&policy(), Some(9), 0).0, 3, "9 tasks at 4 each");
        assert_eq!(
            decide(&policy(), Some(2), 35).0,
            4,
            "35 requests at 10 each"
        );
        assert_eq!(decide(&policy(), Some(0), 0).0, 1, "never below min");
        assert_eq!(decide(&policy(), Some(1_000), 0).0, 5, "never above max");
        assert_eq!(
            decide(&policy(), None, 0).0,
            1,
            "an unreadable backlog counts for nothing"
        );
    }

    #[test]
    fn the_reason_names_the_readings() {
        let (_, reason) = decide(&policy(), Some(9), 3);
        assert_eq!(
            reason,
            "9 queued tasks, 4 per instance; 3 requests in flight, 10 per instance"
        );
    }
}
