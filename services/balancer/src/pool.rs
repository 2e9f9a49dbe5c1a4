//! The pool: a service's instances, each kept alive by its own keeper task.
//!
//! A keeper starts its instance, probes it, and takes it out of rotation the moment it exits
//! or fails `failure_threshold` probes in a row; then restarts it after a backoff that doubles
//! up to `max_backoff`, so nothing restarts in a tight loop. An instance restarted
//! `max_restarts` times without a healthy minute in between is marked `failed` and replaced by
//! a new one. Every step is an event on the instance's subject (probes on its health subject);
//! `container_instances` and `container_health_checks` are their projection.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use vibehq_events::{Envelope, EventLog, Expect, Payload, container};

use crate::Error;
use crate::runtime::{Runtime, ServiceSpec};

/// How instances are checked and restarted.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Time between health probes of one instance.
    pub interval: Duration,
    /// How long a probe may take.
    pub timeout: Duration,
    /// Failed probes in a row that take a running instance out of rotation.
    pub failure_threshold: u32,
    /// How long a new instance may take to pass its first probe.
    pub startup_timeout: Duration,
    /// The delay before the first restart; doubles per restart.
    pub restart_backoff: Duration,
    pub max_backoff: Duration,
    /// Restarts without a healthy minute in between before an instance is given up on.
    pub max_restarts: u32,
    /// How long a stopping instance gets before it is killed.
    pub stop_grace: Duration,
    /// The most instances a scale request may ask for.
    pub max_instances: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            failure_threshold: 3,
            startup_timeout: Duration::from_secs(30),
            restart_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_restarts: 5,
            stop_grace: Duration::from_secs(5),
            max_instances: 64,
        }
    }
}

/// Where an instance is in its life (the `container_instances.state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Starting,
    Running,
    Unhealthy,
    Stopped,
    Failed,
}

/// One probe's result.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Check {
    pub healthy: bool,
    pub status_code: Option<u16>,
    pub latency_ms: f64,
    pub error: Option<String>,
    /// Unix seconds.
    pub checked_at: i64,
}

/// An instance as its keeper sees it now.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InstanceStatus {
    pub instance_id: String,
    pub worker_name: String,
    pub container_name: String,
    pub state: State,
    /// True while the proxy may send it requests.
    pub in_rotation: bool,
    pub port: Option<u16>,
    pub pid: Option<u32>,
    pub restart_count: u32,
    pub last_error: Option<String>,
    /// Requests the proxy has in flight to it.
    pub outstanding: usize,
    /// The latest probes, newest last.
    pub checks: Vec<Check>,
}

/// The whole pool.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PoolStatus {
    pub worker_name: String,
    pub container_name: String,
    /// Instances asked for.
    pub desired: u32,
    /// Instances in rotation.
    pub healthy: u32,
    pub instances: Vec<InstanceStatus>,
}

/// Probes kept per instance for the status.
const KEPT_CHECKS: usize = 10;

/// A running service's instances. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    spec: ServiceSpec,
    policy: Policy,
    runtime: Arc<dyn Runtime>,
    log: EventLog,
    http: reqwest::Client,
    slots: Mutex<Slots>,
    /// Scale requests take turns.
    scaling: tokio::sync::Mutex<()>,
    changes: broadcast::Sender<InstanceStatus>,
}

#[derive(Debug, Default)]
struct Slots {
    desired: u32,
    live: Vec<Arc<Slot>>,
}

/// One instance and its keeper.
#[derive(Debug)]
pub(crate) struct Slot {
    status: Mutex<InstanceStatus>,
    /// The port while in rotation, 0 otherwise: what the proxy reads on every request,
    /// without taking the status lock. Kept in step by [`Inner::update`].
    target: AtomicU32,
    pub(crate) outstanding: AtomicUsize,
    stop: CancellationToken,
    restart: Notify,
    keeper: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Slot {
    pub(crate) fn snapshot(&self) -> InstanceStatus {
        let mut status = lock(&self.status).clone();
        status.outstanding = self.outstanding.load(Ordering::Relaxed);
        status
    }

    /// The port to send requests to, if the instance is in rotation.
    pub(crate) fn target(&self) -> Option<u16> {
        u16::try_from(self.target.load(Ordering::Acquire))
            .ok()
            .filter(|port| *port != 0)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves the data whole, so a panic elsewhere poisons nothing real.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Pool {
    pub fn new(
        spec: ServiceSpec,
        policy: Policy,
        runtime: Arc<dyn Runtime>,
        log: EventLog,
    ) -> Self {
        // Probes are plain HTTP on loopback (this client has no TLS backend to fail); each
        // probe carries the policy's timeout itself.
        let http = reqwest::Client::new();
        Self {
            inner: Arc::new(Inner {
                spec,
                policy,
                runtime,
                log,
                http,
                slots: Mutex::default(),
                scaling: tokio::sync::Mutex::default(),
                changes: broadcast::channel(1024).0,
            }),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// Every change of any instance, as it happens.
    pub fn changes(&self) -> broadcast::Receiver<InstanceStatus> {
        self.inner.changes.subscribe()
    }

    /// The worker whose instances these are.
    pub fn worker_name(&self) -> &str {
        &self.inner.spec.worker_name
    }

    /// The pool's name: the id of its `container.scaled` events' subject.
    pub fn name(&self) -> String {
        format!(
            "{}-{}",
            self.inner.spec.worker_name, self.inner.spec.container_name
        )
    }

    /// Instances asked for now.
    pub fn desired(&self) -> u32 {
        lock(&self.inner.slots).desired
    }

    /// Runs `instances` instances: starts new ones, or stops the newest (waiting until they
    /// have stopped).
    pub async fn scale(&self, instances: u32) -> Result<PoolStatus, Error> {
        self.scale_for(instances, "requested").await
    }

    /// [`Pool::scale`], recording `reason` with the change.
    pub async fn scale_for(&self, instances: u32, reason: &str) -> Result<PoolStatus, Error> {
        if instances > self.inner.policy.max_instances {
            return Err(Error::TooMany {
                asked: instances,
                max: self.inner.policy.max_instances,
            });
        }
        let _turn = self.inner.scaling.lock().await;
        let from = self.desired();
        if from != instances {
            let scaled = Envelope::new(
                &self.inner.spec.worker_name,
                container::Scaled {
                    pool: self.name(),
                    from,
                    to: instances,
                    reason: reason.to_owned(),
                },
            )
            .in_container(&self.inner.spec.container_name);
            if let Err(error) = self.inner.log.append(&scaled, Expect::Any).await {
                tracing::warn!(%error, "cannot record a scaling");
            }
            tracing::info!(from, to = instances, reason, "scaling");
        }
        let stopping = {
            let mut slots = lock(&self.inner.slots);
            slots.desired = instances;
            let keep = (instances as usize).min(slots.live.len());
            slots.live.split_off(keep)
        };
        for _ in 0..self.missing() {
            self.inner.clone().add();
        }
        for slot in &stopping {
            slot.stop.cancel();
        }
        for slot in stopping {
            let keeper = lock(&slot.keeper).take();
            if let Some(keeper) = keeper {
                let _ = keeper.await;
            }
        }
        Ok(self.status())
    }

    fn missing(&self) -> usize {
        let slots = lock(&self.inner.slots);
        (slots.desired as usize).saturating_sub(slots.live.len())
    }

    /// Every instance's status.
    pub fn status(&self) -> PoolStatus {
        let (desired, live) = {
            let slots = lock(&self.inner.slots);
            (slots.desired, slots.live.clone())
        };
        let instances: Vec<_> = live.iter().map(|s| s.snapshot()).collect();
        PoolStatus {
            worker_name: self.inner.spec.worker_name.clone(),
            container_name: self.inner.spec.container_name.clone(),
            desired,
            healthy: instances.iter().filter(|i| i.in_rotation).count() as u32,
            instances,
        }
    }

    /// One instance's status.
    pub fn instance(&self, instance_id: &str) -> Option<InstanceStatus> {
        self.slot(instance_id).map(|s| s.snapshot())
    }

    /// Restarts an instance now (no backoff).
    pub fn restart(&self, instance_id: &str) -> Result<(), Error> {
        let slot = self
            .slot(instance_id)
            .ok_or_else(|| Error::UnknownInstance(instance_id.to_owned()))?;
        slot.restart.notify_one();
        Ok(())
    }

    fn slot(&self, instance_id: &str) -> Option<Arc<Slot>> {
        lock(&self.inner.slots)
            .live
            .iter()
            .find(|s| lock(&s.status).instance_id == instance_id)
            .cloned()
    }

    /// The instances that may take requests now.
    pub(crate) fn live(&self) -> Vec<Arc<Slot>> {
        lock(&self.inner.slots).live.clone()
    }

    /// Stops every instance (on shutdown).
    pub async fn stop_all(&self) {
        let _ = self.scale(0).await;
    }
}

impl Inner {
    /// Adds a slot with a new instance and starts its keeper.
    fn add(self: Arc<Self>) {
        let instance_id = uuid::Uuid::now_v7().to_string();
        let slot = Arc::new(Slot {
            status: Mutex::new(InstanceStatus {
                instance_id: instance_id.clone(),
                worker_name: self.spec.worker_name.clone(),
                container_name: self.spec.container_name.clone(),
                state: State::Starting,
                in_rotation: false,
                port: None,
                pid: None,
                restart_count: 0,
                last_error: None,
                outstanding: 0,
                checks: Vec::new(),
            }),
            target: AtomicU32::new(0),
            outstanding: AtomicUsize::new(0),
            stop: CancellationToken::new(),
            restart: Notify::new(),
            keeper: Mutex::new(None),
        });
        lock(&self.slots).live.push(slot.clone());
        let span = tracing::info_span!("instance", %instance_id);
        let keeper = tokio::spawn(keep(self.clone(), slot.clone()).instrument(span));
        *lock(&slot.keeper) = Some(keeper);
    }

    /// Replaces a failed instance with a new one, if the pool still wants it.
    fn replace(self: Arc<Self>, failed: &Arc<Slot>) {
        let wanted = {
            let mut slots = lock(&self.slots);
            let before = slots.live.len();
            slots.live.retain(|s| !Arc::ptr_eq(s, failed));
            slots.live.len() < before && slots.live.len() < slots.desired as usize
        };
        if wanted {
            self.add();
        }
    }

    /// Records `payload` for the slot's instance and publishes its new status.
    async fn record(&self, slot: &Slot, payload: impl Into<Payload>) {
        let event =
            Envelope::new(&self.spec.worker_name, payload).in_container(&self.spec.container_name);
        if let Err(error) = self.log.append(&event, Expect::Any).await {
            // The instance is kept either way; only its record is missing.
            tracing::warn!(%error, "cannot record an instance event");
        }
        let _ = self.changes.send(slot.snapshot());
    }

    /// Changes the slot's status (the only way it changes).
    fn update<R>(&self, slot: &Slot, change: impl FnOnce(&mut InstanceStatus) -> R) -> R {
        let mut status = lock(&slot.status);
        let result = change(&mut status);
        let target = match (status.in_rotation, status.port) {
            (true, Some(port)) => u32::from(port),
            _ => 0,
        };
        slot.target.store(target, Ordering::Release);
        result
    }

    async fn probe(&self, port: u16, path: &str) -> Check {
        let url = format!("http://127.0.0.1:{port}{path}");
        let started = Instant::now();
        let answer = self.http.get(url).timeout(self.policy.timeout).send().await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let checked_at = time::OffsetDateTime::now_utc().unix_timestamp();
        match answer {
            Ok(response) => {
                let status = response.status();
                Check {
                    healthy: status.is_success(),
                    status_code: Some(status.as_u16()),
                    latency_ms,
                    error: (!status.is_success())
                        .then(|| format!("health endpoint answered {status}")),
                    checked_at,
                }
            }
            Err(e) => Check {
                healthy: false,
                status_code: None,
                latency_ms,
                error: Some(if e.is_timeout() {
                    format!("no answer within {:?}", self.policy.timeout)
                } else {
                    format!("cannot reach the health endpoint: {e}")
                }),
                checked_at,
            },
        }
    }
}

/// Why a run of an instance ended.
enum Ended {
    /// Asked to stop (scale down, shutdown).
    Stopped,
    /// Asked to restart.
    Restart,
    /// It exited or failed its probes.
    Broke(String),
}

/// Keeps one slot's instance running until the slot is stopped or given up on.
async fn keep(pool: Arc<Inner>, slot: Arc<Slot>) {
    let instance_id = lock(&slot.status).instance_id.clone();
    let policy = pool.policy.clone();
    let mut backoff = policy.restart_backoff;
    let mut restarts: u32 = 0;
    loop {
        let (ended, healthy_for) = run_once(&pool, &slot, &instance_id).await;
        if healthy_for >= Duration::from_secs(60) {
            // A healthy minute: past trouble is forgiven.
            restarts = 0;
            backoff = policy.restart_backoff;
        }
        let reason = match ended {
            Ended::Stopped => return mark_stopped(&pool, &slot, &instance_id, "scaled down").await,
            Ended::Restart => "restart requested".to_owned(),
            Ended::Broke(reason) => {
                restarts += 1;
                if restarts > policy.max_restarts {
                    tracing::error!(%reason, restarts, "instance keeps failing; replacing it");
                    pool.update(&slot, |s| {
                        s.state = State::Failed;
                        s.last_error = Some(reason.clone());
                    });
                    pool.record(
                        &slot,
                        container::Failed {
                            instance_id: instance_id.clone(),
                            reason,
                        },
                    )
                    .await;
                    pool.clone().replace(&slot);
                    return;
                }
                tracing::warn!(%reason, retry_in = ?backoff, "instance out of rotation; restarting");
                let stopped = tokio::select! {
                    _ = slot.stop.cancelled() => true,
                    _ = tokio::time::sleep(backoff) => false,
                };
                if stopped {
                    let reason = "scaled down while restarting";
                    return mark_stopped(&pool, &slot, &instance_id, reason).await;
                }
                backoff = (backoff * 2).min(policy.max_backoff);
                reason
            }
        };
        let count = pool.update(&slot, |status| {
            status.restart_count += 1;
            status.restart_count
        });
        pool.record(
            &slot,
            container::Restarted {
                instance_id: instance_id.clone(),
                restart_count: count,
                reason,
            },
        )
        .await;
    }
}

/// Marks the instance stopped on purpose, recording why.
async fn mark_stopped(pool: &Inner, slot: &Slot, instance_id: &str, reason: &str) {
    pool.update(slot, |s| {
        s.state = State::Stopped;
        s.in_rotation = false;
        s.pid = None;
    });
    pool.record(
        slot,
        container::Stopped {
            instance_id: instance_id.to_owned(),
            reason: Some(reason.to_owned()),
        },
    )
    .await;
}

/// Starts the instance once and watches it until it ends; returns why, and how long it was
/// healthy.
async fn run_once(pool: &Arc<Inner>, slot: &Arc<Slot>, instance_id: &str) -> (Ended, Duration) {
    let port = match free_port() {
        Ok(port) => port,
        Err(e) => return (Ended::Broke(format!("no free port: {e}")), Duration::ZERO),
    };
    pool.update(slot, |s| {
        s.state = State::Starting;
        s.in_rotation = false;
        s.port = Some(port);
    });
    pool.record(
        slot,
        container::Starting {
            instance_id: instance_id.to_owned(),
            port,
        },
    )
    .await;
    let mut instance = match pool.runtime.start(&pool.spec, instance_id, port).await {
        Ok(instance) => instance,
        Err(e) => {
            let reason = format!("cannot start: {e}");
            mark_unhealthy(pool, slot, instance_id, &reason).await;
            return (Ended::Broke(reason), Duration::ZERO);
        }
    };
    let pid = instance.pid();
    pool.update(slot, |s| s.pid = pid);
    let health_path = pool.spec.health_path.clone();
    if health_path.is_none() {
        // Nothing to probe: running means its process runs.
        pool.update(slot, |s| {
            s.state = State::Running;
            s.in_rotation = true;
        });
        pool.record(
            slot,
            container::Running {
                instance_id: instance_id.to_owned(),
            },
        )
        .await;
    }
    let heartbeat = pool.spec.heartbeat;
    let mut beats = match heartbeat {
        Some(_) => pool
            .log
            .jetstream()
            .client()
            .subscribe(container::heartbeat_subject(instance_id))
            .await
            .map_err(|e| tracing::warn!(error = %e, "cannot watch heartbeats"))
            .ok(),
        None => None,
    };
    let mut last_beat = Instant::now();
    let started = Instant::now();
    let mut healthy_since: Option<Instant> = None;
    let mut failures = 0u32;
    let mut probes = tokio::time::interval(pool.policy.interval);
    probes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One watch of the instance for its whole run (for a container it is a long request).
    let mut exited = instance.exited();
    let ended = loop {
        tokio::select! {
            _ = slot.stop.cancelled() => break Ended::Stopped,
            _ = slot.restart.notified() => break Ended::Restart,
            how = &mut exited => {
                // Out of rotation at once; nothing waits for a probe to notice.
                pool.update(slot, |s| s.in_rotation = false);
                break Ended::Broke(how);
            }
            Some(_) = next_beat(&mut beats) => last_beat = Instant::now(),
            _ = probes.tick(), if health_path.is_some() || heartbeat.is_some() => {
                let mut check = match health_path.as_deref() {
                    Some(path) => pool.probe(port, path).await,
                    None => Check::process_alive(),
                };
                if let Some(every) = heartbeat {
                    let silent = last_beat.elapsed();
                    if silent > every * 2 && check.healthy {
                        check.healthy = false;
                        check.error = Some(format!("no heartbeat for {} ms", silent.as_millis()));
                    }
                }
                failures = if check.healthy { 0 } else { failures + 1 };
                let broke = observe(pool, slot, instance_id, &check, failures, started).await;
                if check.healthy && healthy_since.is_none() {
                    healthy_since = Some(Instant::now());
                }
                if let Some(reason) = broke {
                    break Ended::Broke(reason);
                }
            }
        }
    };
    drop(exited);
    pool.update(slot, |s| s.in_rotation = false);
    if let Ended::Broke(reason) = &ended {
        mark_unhealthy(pool, slot, instance_id, reason).await;
    }
    instance.stop(pool.policy.stop_grace).await;
    pool.update(slot, |s| s.pid = None);
    (
        ended,
        healthy_since.map_or(Duration::ZERO, |at| at.elapsed()),
    )
}

/// Takes the instance out of rotation as unhealthy, recording why.
async fn mark_unhealthy(pool: &Inner, slot: &Slot, instance_id: &str, reason: &str) {
    pool.update(slot, |s| {
        s.state = State::Unhealthy;
        s.in_rotation = false;
        s.last_error = Some(reason.to_owned());
    });
    pool.record(
        slot,
        container::Unhealthy {
            instance_id: instance_id.to_owned(),
            reason: reason.to_owned(),
        },
    )
    .await;
}

/// The next heartbeat, or never if heartbeats are not watched.
async fn next_beat(beats: &mut Option<async_nats::Subscriber>) -> Option<async_nats::Message> {
    match beats {
        Some(beats) => futures::StreamExt::next(beats).await,
        None => std::future::pending().await,
    }
}

impl Check {
    /// A check of an instance with no health endpoint: its process runs.
    fn process_alive() -> Self {
        Check {
            healthy: true,
            status_code: None,
            latency_ms: 0.0,
            error: None,
            checked_at: time::OffsetDateTime::now_utc().unix_timestamp(),
        }
    }
}

/// Applies one probe to the slot; returns a reason if the instance must go.
async fn observe(
    pool: &Inner,
    slot: &Slot,
    instance_id: &str,
    check: &Check,
    failures: u32,
    started: Instant,
) -> Option<String> {
    let became_running = pool.update(slot, |status| {
        let mut checks: VecDeque<_> = std::mem::take(&mut status.checks).into();
        checks.push_back(check.clone());
        while checks.len() > KEPT_CHECKS {
            checks.pop_front();
        }
        status.checks = checks.into();
        let became_running = check.healthy && status.state != State::Running;
        if check.healthy {
            status.state = State::Running;
            status.in_rotation = true;
        } else if failures >= pool.policy.failure_threshold {
            status.in_rotation = false;
        }
        became_running
    });
    pool.record(
        slot,
        container::HealthChecked {
            instance_id: instance_id.to_owned(),
            healthy: check.healthy,
            status_code: check.status_code,
            latency_ms: check.latency_ms,
            error: check.error.clone(),
        },
    )
    .await;
    if became_running {
        pool.record(
            slot,
            container::Running {
                instance_id: instance_id.to_owned(),
            },
        )
        .await;
    }
    let running = lock(&slot.status).state == State::Running;
    let error = || check.error.clone().unwrap_or_default();
    if running && failures >= pool.policy.failure_threshold {
        return Some(format!(
            "{failures} failed health checks in a row: {}",
            error()
        ));
    }
    if !running && started.elapsed() >= pool.policy.startup_timeout {
        return Some(format!(
            "not healthy within {:?} of starting: {}",
            pool.policy.startup_timeout,
            error()
        ));
    }
    None
}

/// A port on the loopback interface nothing listens on right now.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
