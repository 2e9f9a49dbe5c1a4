//! Where work is waiting: a process's view of the work subjects, so a claim knows which
//! consumers to pull from without asking the server each time.
//!
//! A claim must take from the highest priority band that has work it may take. Asking the
//! server (`stream info` with subjects) on every claim cost more server CPU than the rest of
//! the claim together, so each process keeps *hints* instead:
//! - one subscription to the dispatcher's announcements ([`work::WAKE_SUBJECTS`]) counts
//!   work as it is stored (and wakes waiting claimers);
//! - every pull tells how much its consumer still holds back (`num_pending`);
//! - once a second, or when a claimer finds nothing, the hints are refreshed from the stream.
//!
//! Hints may be wrong in both directions, and nothing depends on them being right: a stale
//! positive costs one short empty pull; a missed redelivery (an expired lease publishes
//! nothing) is found by the next refresh. Who gets a task is still decided by the append of
//! `task.assigned` against the task's version.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, PullConsumer};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::stream::Stream;
use futures::StreamExt;
use tokio::sync::Notify;
use tokio::time::Instant;
use vibehq_events::work::{self, Target};

use crate::Error;

/// How long pending counts read from the stream are trusted before they are read again.
const REFRESH: Duration = Duration::from_secs(1);

/// How long a pull waits for a message.
///
/// A pull that finds nothing is where nats-server 2.9.10 misbehaves: a no-wait pull that loses
/// a race for a subject's last message is sometimes never answered, and a waiting pull's
/// expiry is sometimes only answered when the consumer next sees activity (both measured by
/// benches/queue.rs as 5 s stalls, the client's own timeout). So pulls are short waiting pulls,
/// a process's pulls of one subject take turns ([`Puller`]), and the client gives up on its own
/// after [`FETCH_GIVE_UP`]; by then the server has expired the request, so it can no longer
/// take a message with it.
const FETCH_EXPIRES: Duration = Duration::from_millis(10);

/// How long the client waits for a pull's answer before giving up on it.
const FETCH_GIVE_UP: Duration = Duration::from_millis(60);

/// The work stream as this process sees it: pending-work hints and one puller per subject.
#[derive(Debug)]
pub(crate) struct Board {
    work: Stream,
    lease: Duration,
    hints: Arc<Hints>,
    pullers: tokio::sync::Mutex<HashMap<String, Puller>>,
    /// The subscription feeding [`Hints`]; stops with the board.
    listener: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Hints {
    subjects: Mutex<Subjects>,
    /// Woken for every piece of work published.
    arrived: Notify,
}

#[derive(Debug, Default)]
struct Subjects {
    /// Messages believed to be waiting, per work subject.
    pending: HashMap<String, u64>,
    /// Messages announced as stored, per work subject (never decreases).
    published: HashMap<String, u64>,
    refreshed: Option<Instant>,
}

impl Board {
    /// Starts watching the work stream. `lease` is the `ack_wait` of consumers this process
    /// creates.
    pub(crate) async fn new(
        client: &async_nats::Client,
        work: Stream,
        lease: Duration,
    ) -> Result<Self, Error> {
        let mut stored = client
            .subscribe(work::WAKE_SUBJECTS)
            .await
            .map_err(|e| Error::nats("watch for work", e))?;
        let hints = Arc::new(Hints::default());
        let listener = tokio::spawn({
            let hints = hints.clone();
            async move {
                while let Some(message) = stored.next().await {
                    let Some(subject) = work::woken(&message.subject) else {
                        continue;
                    };
                    let count = std::str::from_utf8(&message.payload)
                        .ok()
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(1);
                    if let Ok(mut subjects) = hints.subjects.lock() {
                        *subjects.published.entry(subject.clone()).or_default() += count;
                        *subjects.pending.entry(subject).or_default() += count;
                    }
                    hints.arrived.notify_waiters();
                }
            }
        });
        Ok(Self {
            work,
            lease,
            hints,
            pullers: tokio::sync::Mutex::default(),
            listener,
        })
    }

    /// Resolves when work is next stored (create it before looking, then await it).
    pub(crate) fn arrival(&self) -> tokio::sync::futures::Notified<'_> {
        self.hints.arrived.notified()
    }

    /// Work subjects that `eligible` may take from and that seem to hold work, best first.
    /// With `exact`, finding nothing is checked against the stream (for a claim that will not
    /// wait); otherwise the hints are trusted for up to [`REFRESH`].
    pub(crate) async fn candidates(
        &self,
        eligible: &[Target],
        exact: bool,
    ) -> Result<Vec<String>, Error> {
        let stale = self
            .subjects()
            .refreshed
            .is_none_or(|at| at.elapsed() >= REFRESH);
        let mut found = self.lookup(eligible);
        if stale || (exact && found.is_empty()) {
            self.refresh().await?;
            found = self.lookup(eligible);
        }
        Ok(found)
    }

    fn lookup(&self, eligible: &[Target]) -> Vec<String> {
        let subjects = self.subjects();
        let mut found = Vec::new();
        for band in (0..=work::MAX_PRIORITY as u8).rev() {
            for target in eligible {
                let subject = work::subject(band, target);
                if subjects.pending.get(&subject).is_some_and(|n| *n > 0) {
                    found.push(subject);
                }
            }
        }
        found
    }

    /// Reads the pending counts from the stream (they include messages held under a lease,
    /// which a pull then finds are not available).
    async fn refresh(&self) -> Result<(), Error> {
        let mut listed = self
            .work
            .info_with_subjects(work::SUBJECTS)
            .await
            .map_err(|e| Error::nats("list pending work", e))?;
        let mut pending = HashMap::new();
        while let Some(entry) = listed.next().await {
            let (subject, count) = entry.map_err(|e| Error::nats("list pending work", e))?;
            pending.insert(subject, count as u64);
        }
        let mut subjects = self.subjects();
        subjects.pending = pending;
        subjects.refreshed = Some(Instant::now());
        Ok(())
    }

    /// Pulls up to `max` messages from `subject`'s consumer (its [`Board::puller`]) and
    /// updates its hint.
    ///
    /// Claimers of one subject in this process share pulls: whoever holds the subject's turn
    /// pulls for every claimer queued by then, in one request, and hands each its share. So
    /// claimers waiting for the turn mostly find their messages already delivered, instead of
    /// each paying a round trip in line.
    pub(crate) async fn pull(
        &self,
        puller: &Puller,
        subject: &str,
        max: usize,
    ) -> Result<Vec<async_nats::jetstream::Message>, Error> {
        let (share, mut mine) = tokio::sync::oneshot::channel();
        puller.queued().push((max, share));
        let _turn = tokio::select! {
            served = &mut mine => return served.unwrap_or_else(|_| Ok(Vec::new())),
            turn = puller.turn.lock() => turn,
        };
        if let Ok(served) = mine.try_recv() {
            return served;
        }
        let queued = std::mem::take(&mut *puller.queued());
        let want: usize = queued.iter().map(|(max, _)| max).sum();
        let fetched = self.pull_in_turn(puller, subject, want).await;
        let mut messages = match fetched {
            Ok(messages) => messages.into_iter(),
            Err(error) => {
                let reason = error.to_string();
                for (_, share) in queued {
                    let _ = share.send(Err(Error::Nats {
                        op: "fetch work",
                        source: reason.clone().into(),
                    }));
                }
                return mine.await.unwrap_or(Err(error));
            }
        };
        for (max, share) in queued {
            if let Err(Ok(unwanted)) = share.send(Ok(messages.by_ref().take(max).collect())) {
                // That claimer gave up meanwhile: hand its share back now, not after a lease.
                for message in unwanted {
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                }
            }
        }
        mine.await.unwrap_or_else(|_| Ok(Vec::new()))
    }

    /// One pull for `want` messages by the holder of `subject`'s turn.
    async fn pull_in_turn(
        &self,
        puller: &Puller,
        subject: &str,
        want: usize,
    ) -> Result<Vec<async_nats::jetstream::Message>, Error> {
        // Claimers woken together all see the same hint; whoever pulled before us may have
        // emptied it, and a pull that finds nothing is the slow case (see FETCH_EXPIRES). Nor
        // is more asked for than the hint says is there: a pull that is not filled waits out
        // its expiry.
        let (seen, want) = {
            let subjects = self.subjects();
            let pending = subjects.pending.get(subject).copied().unwrap_or(0);
            if want == 0 || pending == 0 {
                return Ok(Vec::new());
            }
            let seen = subjects.published.get(subject).copied().unwrap_or(0);
            (
                seen,
                want.min(usize::try_from(pending).unwrap_or(usize::MAX)),
            )
        };
        let messages = puller.fetch_in_turn(want).await?;
        // What the consumer still holds back, plus whatever was stored meanwhile (which may
        // double count a message this pull took: a wasted pull, never a missed task).
        let left = match messages.last() {
            Some(last) if messages.len() == want => last.info().map_or(1, |i| i.pending),
            _ => 0,
        };
        let mut subjects = self.subjects();
        let since = subjects.published.get(subject).copied().unwrap_or(0) - seen;
        subjects.pending.insert(subject.to_owned(), left + since);
        Ok(messages)
    }

    fn subjects(&self) -> std::sync::MutexGuard<'_, Subjects> {
        // A panic elsewhere while holding the lock leaves hints that are merely hints.
        self.hints
            .subjects
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The durable consumer of one work subject, created on first use.
    pub(crate) async fn puller(&self, subject: &str) -> Result<Puller, Error> {
        let name = work::consumer_name(subject);
        let mut pullers = self.pullers.lock().await;
        if let Some(puller) = pullers.get(&name) {
            return Ok(puller.clone());
        }
        let consumer = self
            .work
            .get_or_create_consumer(
                &name,
                consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: subject.to_owned(),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: self.lease,
                    max_ack_pending: 100_000,
                    inactive_threshold: Duration::from_secs(7 * 24 * 3600),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| Error::nats("create a work consumer", e))?;
        let lease = consumer.cached_info().config.ack_wait;
        if lease != self.lease {
            // The consumer's ack_wait is every claim's lease on this subject, whoever claims;
            // the first process to create it set it.
            tracing::warn!(
                %subject,
                lease = ?lease,
                configured = ?self.lease,
                "this subject's lease was set by another process; claims here use its lease"
            );
        }
        let puller = Puller {
            consumer,
            lease,
            turn: Arc::default(),
            queued: Arc::default(),
        };
        pullers.insert(name, puller.clone());
        Ok(puller)
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// A work consumer and the turn its fetches take in this process.
///
/// Fetches of one subject go one at a time within a process, so a process's claimers never race
/// each other for the same message (see [`FETCH_EXPIRES`]).
#[derive(Debug, Clone)]
pub(crate) struct Puller {
    consumer: PullConsumer,
    /// The consumer's `ack_wait`: the lease of every claim made from it.
    lease: Duration,
    turn: Arc<tokio::sync::Mutex<()>>,
    /// Claimers waiting for a share of the next pull: how many messages each wants, and where
    /// to hand them.
    queued: Arc<Mutex<Vec<(usize, Share)>>>,
}

/// Where a claimer receives its share of a pull.
type Share = tokio::sync::oneshot::Sender<Result<Vec<async_nats::jetstream::Message>, Error>>;

impl Puller {
    /// The consumer's `ack_wait`: the lease of every claim made from it.
    pub(crate) fn lease(&self) -> Duration {
        self.lease
    }

    fn queued(&self) -> std::sync::MutexGuard<'_, Vec<(usize, Share)>> {
        // Poisoned only by a panic while pushing or taking: the queue is still whole.
        self.queued
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Pulls up to `max` messages, waiting at most [`FETCH_EXPIRES`] for them.
    pub(crate) async fn fetch(
        &self,
        max: usize,
    ) -> Result<Vec<async_nats::jetstream::Message>, Error> {
        let _turn = self.turn.lock().await;
        self.fetch_in_turn(max).await
    }

    /// [`Puller::fetch`], for a caller that holds the turn.
    async fn fetch_in_turn(
        &self,
        max: usize,
    ) -> Result<Vec<async_nats::jetstream::Message>, Error> {
        let mut batch = self
            .consumer
            .batch()
            .max_messages(max)
            .expires(FETCH_EXPIRES)
            .messages()
            .await
            .map_err(|e| Error::nats("fetch work", e))?;
        let mut messages = Vec::new();
        let give_up = tokio::time::sleep(FETCH_GIVE_UP);
        tokio::pin!(give_up);
        loop {
            tokio::select! {
                message = batch.next() => match message {
                    Some(message) => messages.push(message.map_err(|e| Error::nats("fetch work", e))?),
                    None => break,
                },
                _ = &mut give_up => {
                    tracing::debug!(got = messages.len(), "a pull went unanswered; giving up on it");
                    break;
                }
            }
        }
        Ok(messages)
    }
}
