//! The container load balancer: a service's instances started, probed, restarted and scaled,
//! and a reverse proxy that sends traffic only to the healthy ones.
//!
//! A [`Pool`] runs one service (a [`ServiceSpec`]) through a [`Runtime`] driver. Each instance
//! has a keeper task that probes it over HTTP, takes it out of rotation the moment it exits or
//! fails its probes, and restarts it with a growing backoff; an instance that keeps failing is
//! marked `failed` and replaced. Every step is an event (`container.*` on the instance's
//! subject), so `container_instances` and `container_health_checks` are projections like every
//! other table, and `vibehq audit instance <id>` shows an instance's life.
//!
//! # Layout
//! - [`runtime`]: the driver trait, and [`runtime::Process`] (a child process per instance).
//! - [`docker`]: [`docker::Docker`], a container per instance through the Docker Engine API.
//! - [`pool`]: [`Pool`]: scaling, keepers, health checks, restarts, status.
//! - [`autoscale`]: sizes a pool from the queue's backlog and the proxy's traffic.
//! - [`proxy`]: [`Proxy`]: least-outstanding or round-robin forwarding with safe retries.
//! - [`figures`]: instances, restarts and probes for `/metrics`.
//! - [`http`]: `/api/containers/…`, `/health/load-balancer`, `/ws/containers`.
//! - [`rpc`]: `ContainerLoadBalancerOps`, the same as a NATS micro service.

pub mod autoscale;
pub mod docker;
pub mod figures;
pub mod http;
pub mod pool;
pub mod proxy;
pub mod rpc;
pub mod runtime;

pub use pool::{InstanceStatus, Policy, Pool, PoolStatus, State};
pub use proxy::{Proxy, Strategy};
pub use runtime::{Process, Runtime, ServiceSpec};

/// Failures of the load balancer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A scale request beyond the configured maximum.
    #[error("{asked} instances asked for; at most {max} are allowed")]
    TooMany { asked: u32, max: u32 },
    /// No instance has this id.
    #[error("no instance {0}")]
    UnknownInstance(String),
    /// The Docker Engine API refused or could not be reached.
    #[error("Docker Engine at {socket}: {detail}")]
    Engine { socket: String, detail: String },
    /// The runtime could not start an instance.
    #[error("cannot start {program}: {source}")]
    Start {
        program: String,
        #[source]
        source: std::io::Error,
    },
}
