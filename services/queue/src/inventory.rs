//! The lanes on the server, for operators: which exist, what each holds, and removing the
//! idle ones (`vibehq lanes`, `vibehq lanes prune`).
//!
//! A lane's durable consumer is created by the first submission into it and stays: that is
//! what lets a container that comes back find the work that waited for it. Lanes of targets
//! that are gone (a renamed container, a retired worker) would stay forever too, so an
//! operator can remove those with nothing pending, nothing outstanding, and no activity for a
//! while. Removing one loses nothing: its submissions are in the stream, and the lane's next
//! submission creates the consumer again, delivering from the stream's start (tasks that ended
//! are passed over). Processes re-check a lane they submit into every few seconds, and the
//! prune looks, after that long, for a submission that slipped in meanwhile and re-creates
//! its lane at once if one did.

use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use time::OffsetDateTime;
use vibehq_events::task::lane::Lane;
use vibehq_events::{EventLog, StreamKind};

use crate::Error;
use crate::lanes::{LISTING, create};

/// One lane's consumer as the server reports it.
#[derive(Debug, Clone, Serialize)]
pub struct LaneState {
    /// `p5.any`, `p5.w.<worker>`, `p5.c.<worker>.<container>`.
    pub lane: String,
    pub consumer: String,
    /// Submissions not yet handed out.
    pub pending: u64,
    /// Handed out and not yet acknowledged (held by claims, or waiting out a retry's backoff).
    pub outstanding: u64,
    /// The lease of every claim in the lane.
    pub lease_secs: u64,
    /// When the lane last handed something out or had something acknowledged (or was
    /// created, if never).
    #[serde(with = "time::serde::rfc3339")]
    pub last_active: OffsetDateTime,
}

impl LaneState {
    /// Whether the lane holds nothing and has been idle for at least `idle`.
    pub fn is_idle(&self, idle: Duration, now: OffsetDateTime) -> bool {
        self.pending == 0 && self.outstanding == 0 && now - self.last_active >= idle
    }
}

/// Every lane consumer on the tasks stream, in name order.
pub async fn list(log: &EventLog) -> Result<Vec<LaneState>, Error> {
    let stream = tasks(log).await?;
    let mut names = stream.consumer_names();
    let mut lanes = Vec::new();
    while let Some(name) = names.next().await {
        let name = name.map_err(|e| Error::nats("list the lanes' consumers", e))?;
        let Some(lane) = Lane::from_consumer_name(&name) else {
            continue;
        };
        let info = match stream.consumer_info(&name).await {
            Ok(info) => info,
            // Removed since the listing.
            Err(e)
                if e.kind() == async_nats::jetstream::context::ConsumerInfoErrorKind::NotFound =>
            {
                continue;
            }
            Err(e) => return Err(Error::nats("read a lane's consumer", e)),
        };
        let last_active = [info.delivered.last_active, info.ack_floor.last_active]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(info.created);
        lanes.push(LaneState {
            lane: lane.tokens(),
            consumer: name,
            pending: info.num_pending,
            outstanding: info.num_ack_pending as u64,
            lease_secs: info.config.ack_wait.as_secs(),
            last_active,
        });
    }
    lanes.sort_by(|a, b| a.consumer.cmp(&b.consumer));
    Ok(lanes)
}

/// What a prune did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pruned {
    /// The lanes removed.
    pub removed: Vec<String>,
    /// Removed lanes created again because a submission reached them meanwhile.
    pub recreated: Vec<String>,
}

/// Removes the lanes idle for `idle` (see [`LaneState::is_idle`]); with `dry_run`, only says
/// which. Returns after checking, [`LISTING`] later, that no submission slipped into a removed
/// lane (re-creating any that one did).
pub async fn prune(log: &EventLog, idle: Duration, dry_run: bool) -> Result<Pruned, Error> {
    let now = OffsetDateTime::now_utc();
    let idle_lanes: Vec<LaneState> = list(log)
        .await?
        .into_iter()
        .filter(|lane| lane.is_idle(idle, now))
        .collect();
    let mut pruned = Pruned::default();
    if dry_run {
        pruned.removed = idle_lanes.into_iter().map(|l| l.consumer).collect();
        return Ok(pruned);
    }
    let stream = tasks(log).await?;
    let before = log
        .stream_info(StreamKind::Tasks)
        .await?
        .state
        .last_sequence;
    let mut removed = Vec::new();
    for state in idle_lanes {
        match stream.delete_consumer(&state.consumer).await {
            Ok(_) => {
                tracing::info!(lane = %state.lane, "removed an idle lane");
                removed.push(state);
            }
            Err(error) => tracing::warn!(%error, lane = %state.lane, "cannot remove a lane"),
        }
    }
    if removed.is_empty() {
        return Ok(pruned);
    }
    // A process that found a lane just before it was removed submits into it for up to
    // LISTING more; after that every submission re-creates the lane first.
    tokio::time::sleep(LISTING + Duration::from_secs(1)).await;
    for state in removed {
        let lane = Lane::from_consumer_name(&state.consumer)
            .unwrap_or_else(|| unreachable!("listed as a lane"));
        let slipped_in = log
            .last(StreamKind::Tasks, &lane.filter())
            .await?
            .is_some_and(|last| last.record.sequence > before);
        if slipped_in {
            create(&stream, &lane, Duration::from_secs(state.lease_secs), false).await?;
            tracing::info!(lane = %state.lane, "a submission reached a removed lane; created it again");
            pruned.recreated.push(state.consumer.clone());
        }
        pruned.removed.push(state.consumer);
    }
    Ok(pruned)
}

/// Creates the consumer of every lane that holds a submission and has none (lanes are not part
/// of the stream's data: a stream restored from a backup or promoted from a mirror has none),
/// with `lease` as its `ack_wait`. Reads the subjects of every submission once (headers
/// only), so it takes a while on a long history. Returns the lanes it created.
pub async fn restore(log: &EventLog, lease: Duration) -> Result<Vec<String>, Error> {
    let stream = tasks(log).await?;
    let info = log.stream_info(StreamKind::Tasks).await?;
    let mut lanes = std::collections::BTreeSet::new();
    if info.state.messages > 0 {
        let reader = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                filter_subject: "vibehq.tasks.*.submitted.>".to_owned(),
                headers_only: true,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::nats("read the submissions", e))?;
        if reader.cached_info().num_pending > 0 {
            let mut messages = reader
                .messages()
                .await
                .map_err(|e| Error::nats("read the submissions", e))?;
            while let Some(message) = messages.next().await {
                let message = message.map_err(|e| Error::nats("read the submissions", e))?;
                if let Some(vibehq_events::Subject::Submission { lane, .. }) =
                    vibehq_events::Subject::parse(&message.subject)
                {
                    lanes.insert(lane);
                }
                if message.info().map_or(true, |i| i.pending == 0) {
                    break;
                }
            }
        }
    }
    let existing: std::collections::HashSet<String> =
        list(log).await?.into_iter().map(|l| l.consumer).collect();
    let mut created = Vec::new();
    for lane in lanes {
        let name = lane.consumer_name();
        if !existing.contains(&name) {
            create(&stream, &lane, lease, false).await?;
            tracing::info!(%lane, "created a lane that held submissions");
            created.push(name);
        }
    }
    Ok(created)
}

async fn tasks(log: &EventLog) -> Result<async_nats::jetstream::stream::Stream, Error> {
    log.jetstream()
        .get_stream(StreamKind::Tasks.name())
        .await
        .map_err(|e| Error::nats("find the tasks stream", e))
}
