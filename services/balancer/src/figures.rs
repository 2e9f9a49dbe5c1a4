//! The load balancer's figures for `/metrics`, from the projection: instances by state,
//! restarts, and probe results, per worker. They cover every pool whose events reach the
//! streams, not only this process's.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::registry::Registry;
use vibehq_metrics::{Figures, counters, gauges, rows};

#[derive(Debug, Clone, Copy, Default)]
pub struct BalancerFigures;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    worker_name: String,
    state: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WorkerLabels {
    worker_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProbeLabels {
    worker_name: String,
    healthy: bool,
}

impl Figures for BalancerFigures {
    fn read(&self, conn: &rusqlite::Connection, registry: &mut Registry) -> rusqlite::Result<()> {
        let instances = rows(
            conn,
            "SELECT worker_name, state, COUNT(*), SUM(restart_count)
             FROM container_instances GROUP BY 1, 2",
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)? as f64,
                    row.get::<_, i64>(3)? as f64,
                ))
            },
        )?;
        let mut restarts = std::collections::BTreeMap::<String, f64>::new();
        for (worker, _, _, n) in &instances {
            *restarts.entry(worker.clone()).or_default() += n;
        }
        registry.register(
            "instances",
            "Container instances, by worker and state (starting, running, unhealthy, stopped, failed)",
            gauges(instances.into_iter().map(|(worker_name, state, n, _)| {
                (StateLabels { worker_name, state }, n)
            })),
        );
        registry.register(
            "instance_restarts",
            "Restarts of instances after they failed, by worker",
            counters(
                restarts
                    .into_iter()
                    .map(|(worker_name, n)| (WorkerLabels { worker_name }, n)),
            ),
        );
        let probes = rows(
            conn,
            "SELECT worker_name, healthy, COUNT(*) FROM container_health_checks GROUP BY 1, 2",
            |row| {
                let labels = ProbeLabels {
                    worker_name: row.get(0)?,
                    healthy: row.get::<_, i64>(1)? != 0,
                };
                Ok((labels, row.get::<_, i64>(2)? as f64))
            },
        )?;
        registry.register(
            "health_checks",
            "Health probes of instances, by worker and result (healthy=false: a probe failure)",
            counters(probes),
        );
        Ok(())
    }
}
