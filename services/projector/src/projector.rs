//! The live projector: follows every stream with an ordered consumer from its checkpoint and
//! applies what arrives.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span};
use vibehq_events::{EventLog, StreamKind};

use crate::Error;
use crate::apply::Totals;
use crate::db::{self, Checkpoints};
use crate::writer::{self, Batch};

/// How the projector runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The SQLite projection file; created and migrated if missing.
    pub database: PathBuf,
    /// The streams to project (all of them by default).
    pub streams: Vec<StreamKind>,
    /// Most messages pulled and handed to the writer at once.
    pub batch_size: usize,
}

impl Options {
    /// Projects every stream into `database` with default batching.
    pub fn new(database: impl Into<PathBuf>) -> Self {
        Self {
            database: database.into(),
            streams: StreamKind::ALL.to_vec(),
            batch_size: 1024,
        }
    }
}

/// The projector service. Build it with [`Projector::new`], then [`Projector::run`] it.
#[derive(Debug)]
pub struct Projector {
    options: Options,
    log: EventLog,
    conn: rusqlite::Connection,
    checkpoints: Checkpoints,
    progress_tx: watch::Sender<Checkpoints>,
}

/// A cheap-to-clone view of the projector's progress.
#[derive(Debug, Clone)]
pub struct Handle {
    progress: watch::Receiver<Checkpoints>,
    log: EventLog,
}

/// Why a read could not be given the projection through a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotThrough {
    /// The stream has not reached the sequence: no write was answered with it, so waiting
    /// would be in vain.
    #[error("the stream's last sequence is {last}")]
    Ahead { last: u64 },
    /// The stream holds it but the projection did not apply it in time.
    #[error("the projection did not reach it in time")]
    TimedOut,
}

impl Handle {
    /// The checkpoints as of the last commit.
    pub fn checkpoints(&self) -> Checkpoints {
        *self.progress.borrow()
    }

    /// Waits until `stream` is applied through `sequence`, or `timeout` passes; returns whether
    /// it got there. This is how a client reads its own writes: a command answers with its
    /// event's sequence, and a query given that sequence waits for it.
    pub async fn wait_for(&self, stream: StreamKind, sequence: u64, timeout: Duration) -> bool {
        let mut progress = self.progress.clone();
        tokio::time::timeout(timeout, progress.wait_for(|c| c.get(stream) >= sequence))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Like [`Handle::wait_for`], for a client's `min_seq`: a sequence the stream has not
    /// reached is refused at once ([`NotThrough::Ahead`]) instead of waited for.
    pub async fn read_through(
        &self,
        stream: StreamKind,
        sequence: u64,
        timeout: Duration,
    ) -> Result<(), NotThrough> {
        if self.checkpoints().get(stream) >= sequence {
            return Ok(());
        }
        if let Ok(info) = self.log.stream_info(stream).await
            && info.state.last_sequence < sequence
        {
            return Err(NotThrough::Ahead {
                last: info.state.last_sequence,
            });
        }
        if self.wait_for(stream, sequence, timeout).await {
            Ok(())
        } else {
            Err(NotThrough::TimedOut)
        }
    }
}

impl Projector {
    /// Opens (and migrates) the projection file and reads where it stopped.
    pub fn new(options: Options, log: EventLog) -> Result<(Self, Handle), Error> {
        let conn = db::open_writer(&options.database)?;
        let checkpoints = db::load_checkpoints(&conn)?;
        let (progress_tx, progress) = watch::channel(checkpoints);
        let handle = Handle {
            progress,
            log: log.clone(),
        };
        Ok((
            Self {
                options,
                log,
                conn,
                checkpoints,
                progress_tx,
            },
            handle,
        ))
    }

    /// Follows the streams until `shutdown` is cancelled, then applies what it already read
    /// and returns what it did. Returns early with the error if SQLite fails.
    pub async fn run(self, shutdown: CancellationToken) -> Result<Totals, Error> {
        let Self {
            options,
            log,
            conn,
            checkpoints,
            progress_tx,
        } = self;
        let writer = writer::spawn(conn, checkpoints, progress_tx)?;
        let stop_readers = shutdown.child_token();
        let mut readers = tokio::task::JoinSet::new();
        for stream in options.streams.iter().copied() {
            let follow = Follow {
                log: log.clone(),
                stream,
                last: checkpoints.get(stream),
                batch_size: options.batch_size.max(1),
                batches: writer.batches.clone(),
                stop: stop_readers.clone(),
            };
            readers.spawn(follow.run().instrument(info_span!("projector", %stream)));
        }
        drop(writer.batches);
        tracing::info!(projection = %options.database.display(), "projector running");

        // Readers end on shutdown, or if the writer is gone (it failed).
        while let Some(ended) = readers.join_next().await {
            if let Ok(Err(error)) = ended {
                tracing::error!(%error, "a stream reader stopped");
            }
            stop_readers.cancel();
        }
        let result = tokio::task::spawn_blocking(move || writer.thread.join())
            .await
            .map_err(|_| Error::WriterGone)?
            .map_err(|_| Error::WriterGone)?;
        match &result {
            Ok(totals) => tracing::info!(?totals, "projector stopped"),
            Err(error) => tracing::error!(%error, "projector failed"),
        }
        result
    }
}

/// One stream's reader: reads from the checkpoint on and hands batches to the writer.
struct Follow {
    log: EventLog,
    stream: StreamKind,
    /// The last sequence handed to the writer.
    last: u64,
    batch_size: usize,
    batches: mpsc::Sender<Batch>,
    stop: CancellationToken,
}

impl Follow {
    async fn run(mut self) -> Result<(), Error> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.session().await {
                Ok(()) => return Ok(()),
                Err(Error::WriterGone) => return Err(Error::WriterGone),
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "reader interrupted; resuming from the checkpoint");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            tokio::select! {
                _ = self.stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(backoff) => {}
            }
        }
    }

    /// Reads from `last + 1` until told to stop (`Ok`) or until the read fails (`Err`: the
    /// caller starts again from what it handed over). The ordered consumer delivers in stream
    /// order and heals its own gaps; a sequence it skips was deleted from the stream.
    async fn session(&mut self) -> Result<(), Error> {
        let records = self
            .log
            .read(self.stream, None, self.last + 1, u64::MAX)
            .await?;
        let mut chunks = std::pin::pin!(records.ready_chunks(self.batch_size));
        tracing::debug!(start = self.last + 1, "following");
        loop {
            let chunk = tokio::select! {
                _ = self.stop.cancelled() => return Ok(()),
                chunk = chunks.next() => chunk,
            };
            let Some(chunk) = chunk else {
                return Err(Error::Log(vibehq_events::Error::Nats {
                    op: "follow a stream",
                    source: "the reader ended".into(),
                }));
            };
            let mut records = Vec::with_capacity(chunk.len());
            let mut failed = None;
            for record in chunk {
                match record {
                    Ok(record) if record.sequence <= self.last => {}
                    Ok(record) => {
                        self.last = record.sequence;
                        records.push(record);
                    }
                    Err(error) => {
                        failed = Some(error);
                        break;
                    }
                }
            }
            if !records.is_empty() {
                self.batches
                    .send(Batch { records })
                    .await
                    .map_err(|_| Error::WriterGone)?;
            }
            if let Some(error) = failed {
                return Err(error.into());
            }
        }
    }
}
