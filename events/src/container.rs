//! Payloads of the container load balancer (`container_instances`, `container_health_checks`).
//!
//! The instance's owner is the envelope's `worker_name`/`container_name`; lifecycle events live
//! on the instance's subject, health probes on a subject of their own so frequent probes do not
//! bump the instance's version (which commands such as restart check).

use serde::{Deserialize, Serialize};

use crate::actor::Actor;
use crate::subject::Subject;

/// An instance is being started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Starting {
    pub instance_id: String,
    /// The port the instance serves on.
    pub port: u16,
}

/// An instance passed its first health check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Running {
    pub instance_id: String,
}

/// An instance failed its checks and is out of rotation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unhealthy {
    pub instance_id: String,
    pub reason: String,
}

/// An instance was stopped on purpose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stopped {
    pub instance_id: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// An instance kept failing and was given up on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failed {
    pub instance_id: String,
    pub reason: String,
}

/// An instance was restarted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restarted {
    pub instance_id: String,
    /// How many times this instance has been restarted, this one included.
    pub restart_count: u32,
    pub reason: String,
}

/// One health probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthChecked {
    pub instance_id: String,
    pub healthy: bool,
    /// The HTTP status of the probe, if it got an answer.
    #[serde(default)]
    pub status_code: Option<u16>,
    pub latency_ms: f64,
    #[serde(default)]
    pub error: Option<String>,
}

/// A pool was scaled: asked for, or decided by the autoscaler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaled {
    /// The pool's name (`<worker_name>-<container_name>` unless configured).
    pub pool: String,
    pub from: u32,
    pub to: u32,
    /// Why: `requested`, or the autoscaler's reading (e.g. `12 queued tasks, 4 per instance`).
    pub reason: String,
}

impl Scaled {
    /// Scaling decisions of one pool share a subject.
    pub fn subject(&self, _by: &Actor) -> Subject {
        Subject::Pool(self.pool.clone())
    }
}

/// Where an instance heartbeats (core NATS, not stored): `vibehq.heartbeats.<instance_id>`.
/// Any message counts; the supervisor treats a missing heartbeat as a failed health check.
pub fn heartbeat_subject(instance_id: &str) -> String {
    format!("vibehq.heartbeats.{instance_id}")
}

macro_rules! instance_subject {
    ($($ty:ty),+) => {$(
        impl $ty {
            /// The instance's aggregate subject.
            pub fn subject(&self, _by: &Actor) -> Subject {
                Subject::Instance(self.instance_id.clone())
            }
        }
    )+};
}
instance_subject!(Starting, Running, Unhealthy, Stopped, Failed, Restarted);

impl HealthChecked {
    /// Probes of one instance share a subject apart from its lifecycle.
    pub fn subject(&self, _by: &Actor) -> Subject {
        Subject::Health(self.instance_id.clone())
    }
}
