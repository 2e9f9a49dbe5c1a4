//! The lanes as this process sees them: their consumers, where work seems to be waiting, and
//! the announcements that say when more arrives.
//!
//! A claim takes from the best lane that has work among those its claimer may take from
//! ([`Lane::eligible`]: up to 30). Asking the server about every lane on every claim would
//! cost more than the claim, so each process keeps a *hint* per lane instead:
//! - a pull tells what its lane still holds (the `pending` count of its last message; an
//!   empty answer means nothing is there);
//! - submitters announce new work on the lane's wake subject (core NATS) and in their own
//!   process directly;
//! - at most once a second a claimer that found nothing forgets what it believed, so work the
//!   server hands out again (an expired lease, a retry after its backoff), which nobody
//!   announces, is found by the next look.
//!
//! Hints may be wrong both ways and nothing depends on them: a stale hint costs one empty
//! pull, a missed one delays a claim by at most a second. Pulls are `no_wait` (answered at
//! once with what is there: nats-server 2.12+ answers them reliably, so no pull ever waits
//! out an expiry), and who gets a task is decided by the `task.assigned` append against the
//! task's version, never by the pull.
//!
//! Lane consumers are created by whoever submits into the lane (a claimer only finds them),
//! so a worker that merely looks creates nothing on the server. Which lanes have a consumer is
//! learnt from announcements and, at most every few seconds, from one listing of the stream's
//! consumer names.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::{
    self,
    consumer::{self, AckPolicy, DeliverPolicy, FromConsumer, PullConsumer},
};
use futures::StreamExt;
use tokio::sync::Notify;
use tokio::time::Instant;
use vibehq_events::task::lane::{Lane, WAKE_SUBJECTS};

use crate::Error;

/// How long a claimer trusts "nothing there" before it looks again.
const FORGET: Duration = Duration::from_secs(1);

/// How long a listing of the lanes that have consumers is trusted.
const LISTING: Duration = Duration::from_secs(5);

/// Deliveries after which a task that keeps coming back is failed for good (a poison task
/// that crashes every claimer, or one the queue keeps losing): far above any `max_attempts`.
pub(crate) const MAX_DELIVER: i64 = 1000;

/// Most deliveries of a lane outstanding (held by claims, or waiting out a retry's backoff)
/// before the server hands out no more from it.
const MAX_ACK_PENDING: i64 = 100_000;

/// A delivered submission: pending work, and the lease it comes with.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub message: async_nats::jetstream::Message,
    /// The lane consumer's `ack_wait`: the lease of a claim made from this delivery.
    pub lease: Duration,
}

/// The lanes: their consumers and hints, and the subscription to announcements.
#[derive(Debug)]
pub(crate) struct Lanes {
    js: jetstream::Context,
    tasks: Stream,
    client: async_nats::Client,
    /// The `ack_wait` of lane consumers this process creates.
    lease: Duration,
    /// Tells this process's announcements from others' (it hears its own directly).
    process: String,
    shared: Arc<Shared>,
    listener: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Shared {
    lanes: Mutex<HashMap<Lane, Known>>,
    /// The lanes that had consumers when the stream's consumers were last listed, and when.
    listed: tokio::sync::Mutex<Option<(Instant, std::collections::HashSet<Lane>)>>,
    /// Woken whenever work is announced.
    arrived: Notify,
}

/// What this process knows of one lane.
#[derive(Debug, Clone, Default)]
struct Known {
    /// The lane's consumer, once found or created.
    consumer: Option<(PullConsumer, Duration)>,
    /// Work was announced in the lane, so its consumer exists (find it without a listing).
    announced: bool,
    hint: Hint,
}

/// Where work seems to be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Hint {
    /// Not known: look.
    #[default]
    Unknown,
    /// A pull found nothing (at this time).
    Empty(Instant),
    /// About this many messages wait.
    Waiting(u64),
}

impl Lanes {
    /// Starts listening for announcements. `lease` is the `ack_wait` of the lane consumers this
    /// process creates (a lane created by another process keeps that process's).
    pub(crate) async fn new(
        js: jetstream::Context,
        tasks: Stream,
        lease: Duration,
    ) -> Result<Self, Error> {
        let client = js.client();
        let process = uuid::Uuid::now_v7().simple().to_string();
        let mut announcements = client
            .subscribe(WAKE_SUBJECTS)
            .await
            .map_err(|e| Error::nats("listen for new work", e))?;
        let shared = Arc::new(Shared::default());
        let listener = tokio::spawn({
            let (shared, me) = (shared.clone(), process.clone());
            async move {
                while let Some(message) = announcements.next().await {
                    let Some(lane) = Lane::from_wake_subject(&message.subject) else {
                        continue;
                    };
                    // `<process> <count>`; anything else is a stray message: one look, at most.
                    let text = std::str::from_utf8(&message.payload).unwrap_or_default();
                    let (from, count) = text.split_once(' ').unwrap_or(("", "1"));
                    if from == me {
                        continue;
                    }
                    shared.announce(&lane, count.parse().unwrap_or(1).min(1_000_000));
                }
            }
        });
        Ok(Self {
            js,
            tasks,
            client,
            lease,
            process,
            shared,
            listener,
        })
    }

    /// Resolves when work is next announced: create it, enable it, look, then await it.
    pub(crate) fn arrival(&self) -> tokio::sync::futures::Notified<'_> {
        self.shared.arrived.notified()
    }

    /// Makes sure the lane has its consumer, before work is submitted into it.
    pub(crate) async fn open(&self, lane: &Lane) -> Result<(), Error> {
        if self.shared.known(lane).consumer.is_some() {
            return Ok(());
        }
        let name = lane.consumer_name();
        let consumer: PullConsumer = self
            .tasks
            .get_or_create_consumer(
                &name,
                consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    description: Some(format!("vibehq work lane: {lane}")),
                    filter_subject: lane.filter(),
                    deliver_policy: DeliverPolicy::All,
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: self.lease,
                    max_deliver: MAX_DELIVER,
                    max_ack_pending: MAX_ACK_PENDING,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| Error::nats("create a lane's consumer", e))?;
        self.found(lane, consumer);
        Ok(())
    }

    /// Announces `count` new messages in `lane`: to this process at once, and to every other
    /// on the lane's wake subject (a lost announcement delays claimers by a second at most).
    pub(crate) async fn announce(&self, lane: &Lane, count: u64) {
        self.shared.announce(lane, count);
        let payload = format!("{} {count}", self.process);
        if let Err(error) = self
            .client
            .publish(lane.wake_subject(), payload.into())
            .await
        {
            tracing::debug!(%error, %lane, "cannot announce new work");
        }
    }

    /// Pulls up to `max` deliveries from `lanes` (best first), taking from the next lane only
    /// while the claim is not full. With `thorough`, a lane believed empty is looked at
    /// anyway (a claim that will not wait must not miss work a hint forgot).
    pub(crate) async fn pull(
        &self,
        lanes: &[Lane],
        max: usize,
        thorough: bool,
    ) -> Result<Vec<Delivery>, Error> {
        let mut pulled = Vec::new();
        for lane in lanes {
            let want = max - pulled.len();
            if want == 0 {
                break;
            }
            let Some((consumer, lease)) = self.consumer_to_pull(lane, thorough).await? else {
                continue;
            };
            let mut batch = consumer
                .fetch()
                .max_messages(want)
                .messages()
                .await
                .map_err(|e| Error::nats("pull work", e))?;
            let mut got = 0;
            let mut left = 0;
            while let Some(message) = batch.next().await {
                let message = message.map_err(|e| Error::nats("pull work", e))?;
                left = message.info().map_or(0, |i| i.pending);
                got += 1;
                pulled.push(Delivery { message, lease });
            }
            let hint = if got < want || left == 0 {
                Hint::Empty(Instant::now())
            } else {
                Hint::Waiting(left)
            };
            self.shared.update(lane, |known| known.hint = hint);
        }
        Ok(pulled)
    }

    /// The lane's consumer if it may hold work worth a pull; `None` to skip the lane.
    async fn consumer_to_pull(
        &self,
        lane: &Lane,
        thorough: bool,
    ) -> Result<Option<(PullConsumer, Duration)>, Error> {
        let known = self.shared.known(lane);
        let worth = match known.hint {
            Hint::Waiting(_) | Hint::Unknown => true,
            Hint::Empty(at) => thorough || at.elapsed() >= FORGET,
        };
        if !worth {
            return Ok(None);
        }
        if let Some(consumer) = known.consumer {
            return Ok(Some(consumer));
        }
        if !known.announced && !self.listed(lane).await? {
            return Ok(None);
        }
        match self.tasks.consumer_info(lane.consumer_name()).await {
            Ok(info) => {
                let config = consumer::pull::Config::try_from_consumer_config(info.config.clone())
                    .map_err(|e| Error::nats("read a lane's consumer", e))?;
                let consumer = PullConsumer::new(config, info, self.js.clone());
                Ok(Some(self.found(lane, consumer)))
            }
            Err(e)
                if e.kind() == async_nats::jetstream::context::ConsumerInfoErrorKind::NotFound =>
            {
                self.shared.update(lane, |known| {
                    known.announced = false;
                    known.hint = Hint::Empty(Instant::now());
                });
                Ok(None)
            }
            Err(e) => Err(Error::nats("find a lane's consumer", e)),
        }
    }

    /// Whether the lane had a consumer at the last listing of the stream's consumers (listed
    /// again when older than [`LISTING`]): one request for every lane, instead of one per lane.
    async fn listed(&self, lane: &Lane) -> Result<bool, Error> {
        let mut listed = self.shared.listed.lock().await;
        let fresh = listed
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < LISTING);
        if !fresh {
            let mut names = self.tasks.consumer_names();
            let mut lanes = std::collections::HashSet::new();
            while let Some(name) = names.next().await {
                let name = name.map_err(|e| Error::nats("list the lanes' consumers", e))?;
                if let Some(lane) = Lane::from_consumer_name(&name) {
                    lanes.insert(lane);
                }
            }
            *listed = Some((Instant::now(), lanes));
        }
        Ok(listed
            .as_ref()
            .is_some_and(|(_, lanes)| lanes.contains(lane)))
    }

    fn found(&self, lane: &Lane, consumer: PullConsumer) -> (PullConsumer, Duration) {
        let lease = consumer.cached_info().config.ack_wait;
        if lease != self.lease {
            // The consumer's ack_wait is every claim's lease in this lane, whoever claims; the
            // process that created it set it.
            tracing::warn!(
                %lane, ?lease, configured = ?self.lease,
                "this lane's lease was set by the process that created it; claims here use its lease"
            );
        }
        let found = (consumer, lease);
        self.shared
            .update(lane, |known| known.consumer = Some(found.clone()));
        found
    }

    /// Sets every lane consumer's `ack_wait` to this process's lease.
    pub(crate) async fn apply_lease(&self) -> Result<usize, Error> {
        let mut names = self.tasks.consumer_names();
        let mut changed = 0;
        while let Some(name) = names.next().await {
            let name = name.map_err(|e| Error::nats("list the lanes' consumers", e))?;
            let Some(lane) = Lane::from_consumer_name(&name) else {
                continue;
            };
            let info = self
                .tasks
                .consumer_info(&name)
                .await
                .map_err(|e| Error::nats("read a lane's consumer", e))?;
            if info.config.ack_wait == self.lease {
                continue;
            }
            let mut config = consumer::pull::Config::try_from_consumer_config(info.config.clone())
                .map_err(|e| Error::nats("read a lane's consumer", e))?;
            config.ack_wait = self.lease;
            self.tasks
                .update_consumer(config)
                .await
                .map_err(|e| Error::nats("set a lane's lease", e))?;
            tracing::info!(%lane, from = ?info.config.ack_wait, to = ?self.lease, "lane lease set");
            changed += 1;
        }
        Ok(changed)
    }

    /// One lane's consumer and lease, found or created: for claiming one task by id.
    pub(crate) async fn consumer(
        &self,
        lane: &Lane,
    ) -> Result<Option<(PullConsumer, Duration)>, Error> {
        self.consumer_to_pull(lane, true).await
    }
}

impl Shared {
    fn known(&self, lane: &Lane) -> Known {
        self.lock().get(lane).cloned().unwrap_or_default()
    }

    fn update(&self, lane: &Lane, change: impl FnOnce(&mut Known)) {
        change(self.lock().entry(lane.clone()).or_default());
    }

    fn announce(&self, lane: &Lane, count: u64) {
        self.update(lane, |known| {
            known.hint = match known.hint {
                Hint::Waiting(n) => Hint::Waiting(n.saturating_add(count)),
                _ => Hint::Waiting(count.max(1)),
            };
            // Another process may have just created the lane's consumer.
            known.announced = true;
        });
        self.arrived.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Lane, Known>> {
        // A panic elsewhere while holding the lock leaves hints that are merely hints.
        self.lanes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        self.listener.abort();
    }
}
