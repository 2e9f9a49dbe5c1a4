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
//! Claimers of one lane in a process share pulls: a lane has a few pulls out at most, each asking
//! for what every claim waiting for it wants, and what the claim that pulled does not take
//! waits, briefly, for the claims behind it ([`HELD`]); what nobody takes by then goes back to
//! the lane (`-NAK`). So concurrent claimers
//! (a worker's slots, or many REST claims) mostly find their work already delivered instead of
//! each paying a round trip.
//!
//! Lane consumers are created by whoever submits into the lane (a claimer only finds them),
//! so a worker that merely looks creates nothing on the server. Which lanes have a consumer is
//! learnt from announcements and, at most every few seconds, from one listing of the stream's
//! consumer names.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::message::AckKind;
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

/// How long a delivery one claim pulled for others waits for them before it goes back.
const HELD: Duration = Duration::from_millis(200);

/// Pulls of one lane a process has out at once: a few, so a claim need not wait for the whole
/// round trip of the one before it, without every claimer pulling for all the others.
const PULLS_IN_FLIGHT: usize = 4;

/// Most deliveries one pull asks for.
const MAX_PULL: usize = 256;

/// How long a pull waits for the server's first answer. The server answers a pull at once
/// (messages, or "none"); no answer means it dropped the request, as it does when the
/// claimer's NATS key may not pull from the lane.
const PULL_ANSWER: Duration = Duration::from_secs(3);

/// How long a lane whose pull went unanswered is left alone before it is tried again.
const UNANSWERED: Duration = Duration::from_secs(30);

/// How long after a delayed task's due time its lane is still looked at first: the server
/// fires the schedule at the due time, and its copy reaches the lane a few milliseconds on.
const DUE_WINDOW: Duration = Duration::from_secs(2);

/// After a due time, the moments a waiting claim looks again (the copy may still be on its
/// way at the first).
const DUE_LOOKS: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_millis(50),
    Duration::from_millis(250),
];

/// Most due times remembered per lane (the earliest; later ones are found by the claims'
/// once-a-second look, or announced again).
const MAX_DUE: usize = 64;

/// How long a listing of the lanes that have consumers is trusted.
pub(crate) const LISTING: Duration = Duration::from_secs(5);

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

/// A lane's consumer and its `ack_wait` (every claim's lease in the lane); shared, since a
/// consumer handle carries its whole info.
pub(crate) type Lease = Arc<(PullConsumer, Duration)>;

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
    /// Deliveries pulled for claims other than the one that pulled them, per lane, oldest
    /// first, with when they were pulled.
    held: Mutex<HashMap<Lane, std::collections::VecDeque<(Delivery, Instant)>>>,
    /// Each lane's turn to pull: a few pulls of a lane at a time in this process.
    turns: Mutex<HashMap<Lane, Arc<Turn>>>,
    /// Deliveries the claims in progress in this process want (for how much a pull asks).
    claiming: std::sync::atomic::AtomicUsize,
    /// The lanes that had consumers when the stream's consumers were last listed, and when.
    listed: tokio::sync::Mutex<Option<(Instant, std::collections::HashSet<Lane>)>>,
    /// Woken whenever work is announced.
    arrived: Notify,
}

/// What this process knows of one lane.
#[derive(Debug, Default)]
struct Known {
    /// The lane's consumer, once found or created, and when.
    consumer: Option<Lease>,
    found_at: Option<Instant>,
    /// Work was announced in the lane, so its consumer exists (find it without a listing).
    announced: bool,
    /// When work was last announced in the lane: a pull that started before it cannot say the
    /// lane is empty.
    announced_at: Option<Instant>,
    hint: Hint,
    /// When a pull from the lane last went unanswered (see [`PULL_ANSWER`]).
    unanswered: Option<Instant>,
    /// When delayed tasks come due in the lane (earliest first, at most [`MAX_DUE`]): the
    /// lane is worth a pull at each, and for [`DUE_WINDOW`] after while the server's copy
    /// arrives.
    due: Vec<Instant>,
}

impl Known {
    /// Whether a delayed task came due in the lane just now.
    fn came_due(&mut self, now: Instant) -> bool {
        self.due.retain(|at| *at + DUE_WINDOW >= now);
        self.due.first().is_some_and(|at| *at <= now)
    }
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
                    // `<process> <count>`, or `<process> 0 <unix ms>` for a delayed task due
                    // then; anything else is a stray message: one look, at most.
                    let text = std::str::from_utf8(&message.payload).unwrap_or_default();
                    let mut words = text.split_whitespace();
                    let (from, count, due) = (words.next(), words.next(), words.next());
                    if from == Some(me.as_str()) {
                        continue;
                    }
                    match due.and_then(|ms| ms.parse::<i64>().ok()) {
                        Some(due_ms) => shared.expect(&lane, due_ms),
                        None => shared.announce(
                            &lane,
                            count
                                .and_then(|c| c.parse().ok())
                                .unwrap_or(1)
                                .min(1_000_000),
                        ),
                    }
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

    /// Makes sure the lane has its consumer, before work is submitted into it. What this
    /// process found is trusted for [`LISTING`]; then it is checked again, so a lane removed by
    /// `vibehq lanes prune` is back before its next submission here (the prune checks for any
    /// that slipped in before).
    ///
    /// `paused` says whether a paused scope covers the lane; it is asked only when the lane is
    /// looked up, and a lane created then is created paused.
    pub(crate) async fn open(
        &self,
        lane: &Lane,
        paused: impl std::future::Future<Output = Result<bool, Error>>,
    ) -> Result<(), Error> {
        let fresh = self.shared.with(lane, |known| {
            known.consumer.is_some() && known.found_at.is_some_and(|at| at.elapsed() < LISTING)
        });
        if fresh {
            return Ok(());
        }
        let consumer = create(&self.tasks, lane, self.lease, paused.await?).await?;
        self.found(lane, consumer);
        Ok(())
    }

    /// What the server says of the lane's consumer now; `None` if it has none.
    pub(crate) async fn info(
        &self,
        lane: &Lane,
    ) -> Result<Option<async_nats::jetstream::consumer::Info>, Error> {
        match self.tasks.consumer_info(lane.consumer_name()).await {
            Ok(info) => Ok(Some(info)),
            Err(e)
                if e.kind() == async_nats::jetstream::context::ConsumerInfoErrorKind::NotFound =>
            {
                Ok(None)
            }
            Err(e) => Err(Error::nats("read a lane's consumer", e)),
        }
    }

    /// Pauses every lane consumer on the server that `paused` says should be, and resumes
    /// every other paused one.
    pub(crate) async fn set_paused(
        &self,
        paused: impl Fn(&Lane) -> bool,
    ) -> Result<PauseChanges, Error> {
        let mut infos = self.tasks.consumers();
        let mut changes = PauseChanges::default();
        while let Some(info) = infos.next().await {
            let info = info.map_err(|e| Error::nats("list the lanes", e))?;
            let Some(lane) = Lane::from_consumer_name(&info.name) else {
                continue;
            };
            let should = paused(&lane);
            if should == info.paused {
                continue;
            }
            if should {
                self.tasks
                    .pause_consumer(&info.name, crate::pauses::until_resumed())
                    .await
                    .map_err(|e| Error::nats("pause a lane", e))?;
            } else {
                self.tasks
                    .resume_consumer(&info.name)
                    .await
                    .map_err(|e| Error::nats("resume a lane", e))?;
                changes.resumed.push(lane);
            }
            changes.changed += 1;
        }
        Ok(changes)
    }

    /// The core NATS connection the lanes use (announcements, notices).
    pub(crate) fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Forgets the lane's consumer (it could not be pulled from).
    fn forget(&self, lane: &Lane) {
        self.shared.update(lane, |known| {
            known.consumer = None;
            known.announced = false;
            known.hint = Hint::Unknown;
        });
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

    /// Tells this process and every other that `lane` gets a delayed task at `at`.
    pub(crate) async fn announce_due(&self, lane: &Lane, at: time::OffsetDateTime) {
        let due_ms = (at.unix_timestamp_nanos() / 1_000_000) as i64;
        self.shared.expect(lane, due_ms);
        let payload = format!("{} 0 {due_ms}", self.process);
        if let Err(error) = self
            .client
            .publish(lane.wake_subject(), payload.into())
            .await
        {
            tracing::debug!(%error, %lane, "cannot announce a delayed task");
        }
    }

    /// The next moment a claim waiting on `lanes` should look again for a delayed task.
    pub(crate) fn next_due_look(&self, lanes: &[Lane]) -> Option<Instant> {
        let now = Instant::now();
        let known = self.shared.lock();
        lanes
            .iter()
            .filter_map(|lane| known.get(lane))
            .flat_map(|k| k.due.iter())
            .flat_map(|at| DUE_LOOKS.iter().map(move |d| *at + *d))
            .filter(|look| *look > now)
            .min()
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
            if pulled.len() == max {
                break;
            }
            self.take_held(lane, max, &mut pulled).await;
            let want = max - pulled.len();
            if want == 0 {
                break;
            }
            let Some(found) = self.consumer_to_pull(lane, thorough).await? else {
                continue;
            };
            let (consumer, lease) = (&found.0, found.1);
            // Few pulls of a lane at a time here: a claim that comes while they are out waits for
            // one and takes what it brought; a pull asks for every claim waiting behind it.
            let turn = self.turn(lane);
            let queued = Instant::now();
            let held_turn = turn.lock.acquire().await;
            self.take_held(lane, max, &mut pulled).await;
            let want = max - pulled.len();
            // A pull that ended while this claim waited found the lane empty: no need to ask
            // again (an older "empty" is what this claim came to check).
            let emptied = self.shared.with(
                lane,
                |known| matches!(known.hint, Hint::Empty(at) if at > queued),
            );
            if want == 0 || (emptied && !thorough) {
                continue;
            }
            // Ask for the other claims in progress too, less what is already held or being
            // pulled for them.
            let others = self
                .shared
                .claiming
                .load(std::sync::atomic::Ordering::Relaxed)
                .saturating_sub(max);
            let held = self.held().get(lane).map_or(0, |q| q.len());
            let pulling = turn.extra.load(std::sync::atomic::Ordering::Relaxed);
            let extra = others.saturating_sub(held + pulling);
            let ask = (want + extra).min(MAX_PULL);
            turn.extra
                .fetch_add(ask - want, std::sync::atomic::Ordering::Relaxed);
            let _asked = Asked(&turn.extra, ask - want);
            let asked_at = Instant::now();
            let mut batch = match consumer.fetch().max_messages(ask).messages().await {
                Ok(batch) => batch,
                Err(error) => {
                    // The consumer may be gone (`vibehq lanes prune`): forget it, so the next
                    // look finds out afresh.
                    tracing::debug!(%error, %lane, "cannot pull from a lane; forgetting its consumer");
                    self.forget(lane);
                    continue;
                }
            };
            let mut got = 0;
            let mut left = 0;
            let mut extra = Vec::new();
            loop {
                let next = if got == 0 {
                    match tokio::time::timeout(PULL_ANSWER, batch.next()).await {
                        Ok(next) => next,
                        Err(_) => {
                            tracing::warn!(
                                %lane, consumer = lane.consumer_name(), wait = ?PULL_ANSWER, skip = ?UNANSWERED,
                                "the server did not answer a pull from this lane: is this claimer's NATS key allowed to pull it? Its other lanes go on"
                            );
                            self.shared
                                .update(lane, |known| known.unanswered = Some(Instant::now()));
                            break;
                        }
                    }
                } else {
                    batch.next().await
                };
                let Some(message) = next else { break };
                let message = match message {
                    Ok(message) => message,
                    Err(error) if got == 0 => {
                        tracing::debug!(%error, %lane, "cannot pull from a lane; forgetting its consumer");
                        self.forget(lane);
                        break;
                    }
                    Err(error) => return Err(Error::nats("pull work", error)),
                };
                left = message.info().map_or(0, |i| i.pending);
                got += 1;
                let delivery = Delivery { message, lease };
                if pulled.len() < max {
                    pulled.push(delivery);
                } else {
                    extra.push(delivery);
                }
            }
            let hint = if got < ask || left == 0 {
                Hint::Empty(Instant::now())
            } else {
                Hint::Waiting(left)
            };
            self.shared.update(lane, |known| {
                let newer_news = known.announced_at.is_some_and(|at| at >= asked_at);
                if !(newer_news && matches!(hint, Hint::Empty(_))) {
                    known.hint = hint;
                }
            });
            if !extra.is_empty() {
                self.hold(lane, extra);
            }
            drop(held_turn);
        }
        Ok(pulled)
    }

    /// Counts a claim of up to `max` tasks as in progress while the guard lives, so pulls ask
    /// for it too.
    pub(crate) fn claiming(&self, max: usize) -> Claiming<'_> {
        self.shared
            .claiming
            .fetch_add(max, std::sync::atomic::Ordering::Relaxed);
        Claiming {
            shared: &self.shared,
            max,
        }
    }

    /// The lane's turn to pull.
    fn turn(&self, lane: &Lane) -> Arc<Turn> {
        let mut turns = self
            .shared
            .turns
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        turns.entry(lane.clone()).or_default().clone()
    }

    /// Takes deliveries held for this lane (the freshest first go to claims, the stale ones
    /// back to the lane) until `pulled` has `max`.
    async fn take_held(&self, lane: &Lane, max: usize, pulled: &mut Vec<Delivery>) {
        let (taken, stale) = {
            let mut held = self.held();
            let Some(queue) = held.get_mut(lane) else {
                return;
            };
            let mut stale = Vec::new();
            while queue.front().is_some_and(|(_, at)| at.elapsed() >= HELD) {
                stale.extend(queue.pop_front().map(|(d, _)| d));
            }
            let n = (max - pulled.len()).min(queue.len());
            let taken: Vec<Delivery> = queue.drain(..n).map(|(d, _)| d).collect();
            (taken, stale)
        };
        pulled.extend(taken);
        hand_back(stale).await;
    }

    /// Holds deliveries for the next claims, and makes sure they go back to the lane if
    /// nobody takes them in time.
    fn hold(&self, lane: &Lane, deliveries: Vec<Delivery>) {
        let now = Instant::now();
        self.held()
            .entry(lane.clone())
            .or_default()
            .extend(deliveries.into_iter().map(|d| (d, now)));
        // Claimers waiting for work take these at once.
        self.shared.arrived.notify_waiters();
        let (shared, lane) = (self.shared.clone(), lane.clone());
        tokio::spawn(async move {
            tokio::time::sleep(HELD).await;
            let stale: Vec<Delivery> = {
                let mut held = shared.held.lock().unwrap_or_else(|p| p.into_inner());
                let Some(queue) = held.get_mut(&lane) else {
                    return;
                };
                let mut stale = Vec::new();
                while queue.front().is_some_and(|(_, at)| at.elapsed() >= HELD) {
                    stale.extend(queue.pop_front().map(|(d, _)| d));
                }
                stale
            };
            if !stale.is_empty() {
                // Back in the lane: look there again.
                shared.announce(&lane, stale.len() as u64);
            }
            hand_back(stale).await;
        });
    }

    fn held(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Lane, std::collections::VecDeque<(Delivery, Instant)>>>
    {
        // Held deliveries are whole whatever panicked: they go back on their timer anyway.
        self.shared
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The lane's consumer if it may hold work worth a pull; `None` to skip the lane.
    async fn consumer_to_pull(&self, lane: &Lane, thorough: bool) -> Result<Option<Lease>, Error> {
        let known = self.shared.with(lane, |known| {
            (known.hint, known.consumer.clone(), known.announced)
        });
        let (hint, consumer, announced) = known;
        let came_due = self
            .shared
            .with_mut(lane, |known| known.came_due(Instant::now()));
        let ignored = self.shared.with(lane, |known| {
            known.unanswered.is_some_and(|at| at.elapsed() < UNANSWERED)
        });
        if ignored {
            return Ok(None);
        }
        let worth = came_due
            || match hint {
                Hint::Waiting(_) | Hint::Unknown => true,
                Hint::Empty(at) => thorough || at.elapsed() >= FORGET,
            };
        if !worth {
            return Ok(None);
        }
        if let Some(consumer) = consumer {
            return Ok(Some(consumer));
        }
        if !announced && !self.listed(lane).await? {
            // No consumer, so no work: skip the lane until announced or looked at again.
            self.shared
                .update(lane, |known| known.hint = Hint::Empty(Instant::now()));
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

    fn found(&self, lane: &Lane, consumer: PullConsumer) -> Lease {
        let lease = consumer.cached_info().config.ack_wait;
        if lease != self.lease {
            // The consumer's ack_wait is every claim's lease in this lane, whoever claims; the
            // process that created it set it.
            tracing::warn!(
                %lane, ?lease, configured = ?self.lease,
                "this lane's lease was set by the process that created it; claims here use its lease"
            );
        }
        let found = Arc::new((consumer, lease));
        self.shared.update(lane, |known| {
            known.consumer = Some(found.clone());
            known.found_at = Some(Instant::now());
        });
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
    pub(crate) async fn consumer(&self, lane: &Lane) -> Result<Option<Lease>, Error> {
        self.consumer_to_pull(lane, true).await
    }
}

/// A lane's turn to pull, and how many deliveries the claims waiting for it want.
#[derive(Debug)]
struct Turn {
    /// [`PULLS_IN_FLIGHT`] permits.
    lock: tokio::sync::Semaphore,
    /// Deliveries the pulls out now ask for beyond their own claim's.
    extra: std::sync::atomic::AtomicUsize,
}

impl Default for Turn {
    fn default() -> Self {
        Self {
            lock: tokio::sync::Semaphore::new(PULLS_IN_FLIGHT),
            extra: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

/// Takes a pull's extra ask off its lane's count when the pull is done.
struct Asked<'a>(&'a std::sync::atomic::AtomicUsize, usize);

impl Drop for Asked<'_> {
    fn drop(&mut self) {
        self.0
            .fetch_sub(self.1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Counts a claim in progress for as long as it lives.
#[derive(Debug)]
pub(crate) struct Claiming<'a> {
    shared: &'a Shared,
    max: usize,
}

impl Drop for Claiming<'_> {
    fn drop(&mut self) {
        self.shared
            .claiming
            .fetch_sub(self.max, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The lane's consumer, created with `lease` as its `ack_wait` if it does not exist. It
/// delivers every submission in the lane from the stream's start: one created after its first
/// submissions (a first submission races none: the submitter opens the lane first; a lane
/// re-created after a prune) still hands them out, and those already ended are passed over.
///
/// A lane created `paused` hands nothing out until it is resumed ([`crate::pauses`]).
pub(crate) async fn create(
    tasks: &Stream,
    lane: &Lane,
    lease: Duration,
    paused: bool,
) -> Result<PullConsumer, Error> {
    let name = lane.consumer_name();
    tasks
        .get_or_create_consumer(
            &name,
            consumer::pull::Config {
                durable_name: Some(name.clone()),
                description: Some(format!("vibehq work lane: {lane}")),
                filter_subject: lane.filter(),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: lease,
                max_deliver: MAX_DELIVER,
                max_ack_pending: MAX_ACK_PENDING,
                pause_until: paused.then(crate::pauses::until_resumed),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| Error::nats("create a lane's consumer", e))
}

/// What [`Lanes::set_paused`] changed.
#[derive(Debug, Default)]
pub(crate) struct PauseChanges {
    pub(crate) changed: usize,
    pub(crate) resumed: Vec<Lane>,
}

/// Gives deliveries nobody took back to their lane at once (first in line again).
async fn hand_back(deliveries: Vec<Delivery>) {
    for delivery in deliveries {
        if let Err(error) = delivery.message.ack_with(AckKind::Nak(None)).await {
            tracing::debug!(%error, "cannot hand a delivery back; it comes back after its lease");
        }
    }
}

impl Shared {
    /// Reads what is known of `lane` without copying it.
    fn with<T>(&self, lane: &Lane, read: impl FnOnce(&Known) -> T) -> T {
        let lanes = self.lock();
        match lanes.get(lane) {
            Some(known) => read(known),
            None => read(&Known::default()),
        }
    }

    fn update(&self, lane: &Lane, change: impl FnOnce(&mut Known)) {
        change(self.lock().entry(lane.clone()).or_default());
    }

    fn with_mut<T>(&self, lane: &Lane, change: impl FnOnce(&mut Known) -> T) -> T {
        change(self.lock().entry(lane.clone()).or_default())
    }

    /// Remembers that a delayed task comes due in `lane` at `due_ms` (unix ms), and wakes the
    /// waiting claims so they look then.
    fn expect(&self, lane: &Lane, due_ms: i64) {
        let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        let at =
            Instant::now() + Duration::from_millis(due_ms.saturating_sub(now_ms).max(0) as u64);
        self.update(lane, |known| {
            known.announced = true;
            if let Err(i) = known.due.binary_search(&at) {
                known.due.insert(i, at);
            }
            known.due.truncate(MAX_DUE);
        });
        self.arrived.notify_waiters();
    }

    fn announce(&self, lane: &Lane, count: u64) {
        self.update(lane, |known| {
            known.hint = match known.hint {
                Hint::Waiting(n) => Hint::Waiting(n.saturating_add(count)),
                _ => Hint::Waiting(count.max(1)),
            };
            // Another process may have just created the lane's consumer.
            known.announced = true;
            known.announced_at = Some(Instant::now());
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
