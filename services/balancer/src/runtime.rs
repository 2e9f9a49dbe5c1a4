//! Runtime drivers: what starts and stops an instance.
//!
//! The supervisor knows instances only through [`Runtime`] and [`Instance`], so the embedded
//! default (a child process per instance, [`Process`]) and a container engine can be swapped by
//! configuration without touching health checks, restarts or the proxy.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures::future::BoxFuture;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::Error;

/// What every instance of a service runs.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// The owner recorded on every event and row.
    pub worker_name: String,
    pub container_name: String,
    /// The program (for [`Process`]) and its arguments (for [`crate::docker::Docker`], the
    /// container's command); `PORT`, `VIBEHQ_INSTANCE_ID` and more are set in its environment
    /// ([`ServiceSpec::instance_env`]).
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// The path probed for health (`GET`, any 2xx is healthy). `None` for instances that serve
    /// no HTTP (e.g. `vibehq worker`): they are healthy while their process runs.
    pub health_path: Option<String>,
    /// If set, instances promise a NATS heartbeat at least this often (on
    /// `VIBEHQ_HEARTBEAT_SUBJECT`, every `VIBEHQ_HEARTBEAT_MS`, to `VIBEHQ_NATS_URL`); one
    /// missing for twice as long counts as a failed health check.
    pub heartbeat: Option<Duration>,
    /// The NATS URL given to instances as `VIBEHQ_NATS_URL`.
    pub nats_url: Option<String>,
}

impl ServiceSpec {
    /// Every instance's environment: the configured variables, then what vibehq tells it.
    pub fn instance_env(&self, instance_id: &str, port: u16) -> BTreeMap<String, String> {
        let mut env = self.env.clone();
        env.insert("PORT".into(), port.to_string());
        env.insert("VIBEHQ_INSTANCE_ID".into(), instance_id.into());
        if let Some(url) = &self.nats_url {
            env.insert("VIBEHQ_NATS_URL".into(), url.clone());
        }
        if let Some(every) = self.heartbeat {
            env.insert(
                "VIBEHQ_HEARTBEAT_SUBJECT".into(),
                vibehq_events::container::heartbeat_subject(instance_id),
            );
            env.insert("VIBEHQ_HEARTBEAT_MS".into(), every.as_millis().to_string());
        }
        env
    }
}

/// Starts instances.
pub trait Runtime: Send + Sync + std::fmt::Debug + 'static {
    /// Starts instance `instance_id` of `spec`, serving on `port` of the loopback interface.
    fn start<'a>(
        &'a self,
        spec: &'a ServiceSpec,
        instance_id: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<Box<dyn Instance>, Error>>;
}

/// One started instance.
pub trait Instance: Send + std::fmt::Debug {
    /// The operating system's id for it, if it has one (shown in the status).
    fn pid(&self) -> Option<u32>;
    /// Resolves when the instance has exited on its own, saying how.
    fn exited(&mut self) -> BoxFuture<'_, String>;
    /// Stops the instance: asks it to stop, and kills it after `grace`.
    fn stop(&mut self, grace: Duration) -> BoxFuture<'_, ()>;
}

/// Each instance is a child process in its own process group (the embedded default).
#[derive(Debug, Default)]
pub struct Process;

impl Runtime for Process {
    fn start<'a>(
        &'a self,
        spec: &'a ServiceSpec,
        instance_id: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<Box<dyn Instance>, Error>> {
        Box::pin(async move {
            let mut command = tokio::process::Command::new(&spec.program);
            command.envs(spec.instance_env(instance_id, port));
            let child = command
                .args(&spec.args)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                // Its own group, so a stop reaches whatever the instance started.
                .process_group(0)
                .spawn()
                .map_err(|source| Error::Start {
                    program: spec.program.display().to_string(),
                    source,
                })?;
            let pid = child.id();
            Ok(Box::new(Child { child, pid }) as Box<dyn Instance>)
        })
    }
}

#[derive(Debug)]
struct Child {
    child: tokio::process::Child,
    /// Kept: tokio forgets the id once the child is reaped.
    pid: Option<u32>,
}

impl Child {
    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid.and_then(|p| i32::try_from(p).ok()) {
            let _ = killpg(Pid::from_raw(pid), signal);
        }
    }
}

impl Instance for Child {
    fn pid(&self) -> Option<u32> {
        self.pid
    }

    fn exited(&mut self) -> BoxFuture<'_, String> {
        Box::pin(async move {
            match self.child.wait().await {
                Ok(status) => format!("exited ({status})"),
                Err(e) => format!("lost track of the process: {e}"),
            }
        })
    }

    fn stop(&mut self, grace: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                // Gone already; still clear out anything left in its group.
                self.signal(Signal::SIGKILL);
                return;
            }
            self.signal(Signal::SIGTERM);
            if tokio::time::timeout(grace, self.child.wait())
                .await
                .is_err()
            {
                self.signal(Signal::SIGKILL);
                let _ = self.child.wait().await;
            }
            self.signal(Signal::SIGKILL);
        })
    }
}
