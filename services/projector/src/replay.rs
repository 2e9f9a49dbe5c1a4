//! Rebuilding a projection from the streams.
//!
//! A replay reads each stream from its first event with an ordered consumer (no server state
//! left behind) and applies it through the same writer as the live projector, so the result is
//! the live projection as of the chosen point.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use futures::StreamExt;
use time::OffsetDateTime;
use tokio::sync::watch;
use vibehq_events::{EventLog, StreamKind};

use crate::Error;
use crate::apply::Totals;
use crate::db::{self, Checkpoints};
use crate::writer::{self, Batch};

/// Where a replay stops.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Until {
    /// Through each stream's last event at the time the replay starts.
    #[default]
    End,
    /// Through these stream sequences (inclusive); streams not named are replayed to the end.
    Sequence(BTreeMap<StreamKind, u64>),
    /// Through events stored at or before this time.
    Time(OffsetDateTime),
}

/// What to replay, and into which file.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The new projection file; it must not exist yet.
    pub into: PathBuf,
    pub streams: Vec<StreamKind>,
    pub until: Until,
}

/// Progress of a replay, reported as it goes.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub stream: StreamKind,
    /// Sequences of this stream read so far.
    pub read: u64,
    /// The last sequence this stream's replay will read.
    pub end: u64,
}

/// Replays the streams into a new projection file; `on_progress` is called after each batch.
pub async fn replay(
    log: &EventLog,
    options: ReplayOptions,
    mut on_progress: impl FnMut(Progress),
) -> Result<(Totals, Checkpoints, std::time::Duration), Error> {
    if options.into.exists() {
        return Err(Error::TargetExists(options.into));
    }
    let started = Instant::now();
    let conn = db::open_writer(&options.into)?;
    let (progress_tx, progress) = watch::channel(Checkpoints::default());
    let writer = writer::spawn(conn, Checkpoints::default(), progress_tx)?;
    for stream in options.streams.iter().copied() {
        let last = log.stream_info(stream).await?.state.last_sequence;
        let end = match &options.until {
            Until::Sequence(limits) => limits.get(&stream).copied().unwrap_or(last).min(last),
            Until::End | Until::Time(_) => last,
        };
        let records = log.read(stream, None, 1, end).await?;
        let mut chunks = std::pin::pin!(records.ready_chunks(1024));
        'read: while let Some(chunk) = chunks.next().await {
            let mut batch = Vec::with_capacity(chunk.len());
            let mut done = false;
            for record in chunk {
                let record = record?;
                if let Until::Time(until) = options.until
                    && record.published > until
                {
                    done = true;
                    break;
                }
                done = record.sequence >= end;
                batch.push(record);
            }
            if let Some(last) = batch.last() {
                on_progress(Progress {
                    stream,
                    read: last.sequence,
                    end,
                });
            }
            writer
                .batches
                .send(Batch { records: batch })
                .await
                .map_err(|_| Error::WriterGone)?;
            if done {
                break 'read;
            }
        }
    }
    drop(writer.batches);
    let totals = tokio::task::spawn_blocking(move || writer.thread.join())
        .await
        .map_err(|_| Error::WriterGone)?
        .map_err(|_| Error::WriterGone)??;
    let checkpoints = *progress.borrow();
    Ok((totals, checkpoints, started.elapsed()))
}
