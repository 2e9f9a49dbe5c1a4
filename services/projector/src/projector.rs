//! The live projector: follows every stream with a durable pull consumer and applies what
//! arrives.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span};
use vibehq_events::{EventLog, Recorded, StreamKind};

use crate::Error;
use crate::db::{self, Checkpoints};
use crate::writer::{self, Batch, Totals};

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
    projection_id: String,
    checkpoints: Checkpoints,
    progress_tx: watch::Sender<Checkpoints>,
}

/// A cheap-to-clone view of the projector's progress.
#[derive(Debug, Clone)]
pub struct Handle {
    progress: watch::Receiver<Checkpoints>,
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
}

impl Projector {
    /// Opens (and migrates) the projection file and reads where it stopped.
    pub fn new(options: Options, log: EventLog) -> Result<(Self, Handle), Error> {
        let conn = db::open_writer(&options.database)?;
        let checkpoints = db::load_checkpoints(&conn)?;
        let projection_id = db::projection_id(&conn)?;
        let (progress_tx, progress) = watch::channel(checkpoints);
        Ok((
            Self {
                options,
                log,
                conn,
                projection_id,
                checkpoints,
                progress_tx,
            },
            Handle { progress },
        ))
    }

    /// Follows the streams until `shutdown` is cancelled, then applies what it already pulled
    /// and returns what it did. Returns early with the error if SQLite fails.
    pub async fn run(self, shutdown: CancellationToken) -> Result<Totals, Error> {
        let Self {
            options,
            log,
            conn,
            projection_id,
            checkpoints,
            progress_tx,
        } = self;
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let writer = writer::spawn(conn, checkpoints, progress_tx, Some(ack_tx))?;
        let acker = tokio::spawn(acknowledge(ack_rx));

        let stop_readers = shutdown.child_token();
        let mut readers = tokio::task::JoinSet::new();
        for stream in options.streams.iter().copied() {
            let follow = Follow {
                log: log.clone(),
                stream,
                consumer: format!("vibehq-projector-{projection_id}-{}", stream.short_name()),
                last: checkpoints.get(stream),
                batch_size: options.batch_size.max(1),
                batches: writer.batches.clone(),
                stop: stop_readers.clone(),
            };
            readers.spawn(follow.run().instrument(info_span!("projector", %stream)));
        }
        drop(writer.batches);
        tracing::info!(
            projection = %options.database.display(), id = %projection_id,
            "projector running"
        );

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
        let _ = acker.await;
        let _ = log.jetstream().client().flush().await;
        match &result {
            Ok(totals) => tracing::info!(?totals, "projector stopped"),
            Err(error) => tracing::error!(%error, "projector failed"),
        }
        result
    }
}

async fn acknowledge(mut acks: mpsc::UnboundedReceiver<async_nats::jetstream::Message>) {
    while let Some(message) = acks.recv().await {
        if let Err(error) = message.ack().await {
            // Harmless for correctness (the checkpoint decides where to resume); the server
            // will redeliver and the writer will skip.
            tracing::debug!(%error, "ack failed");
        }
    }
}

/// One stream's reader: pulls from the durable consumer and hands contiguous batches to the
/// writer.
struct Follow {
    log: EventLog,
    stream: StreamKind,
    consumer: String,
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
                Ok(Session::Stopped) => return Ok(()),
                Ok(Session::Resync) => backoff = Duration::from_millis(100),
                Err(Error::WriterGone) => return Err(Error::WriterGone),
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "reader interrupted");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            tokio::select! {
                _ = self.stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(backoff) => {}
            }
        }
    }

    /// Recreates the durable consumer at `last + 1` and reads until told to stop, or until the
    /// delivery stream breaks or skips (then the caller starts a new session).
    async fn session(&mut self) -> Result<Session, Error> {
        let consumer_error = |source| Error::Consumer {
            consumer: self.consumer.clone(),
            source,
        };
        let stream = self
            .log
            .jetstream()
            .get_stream(self.stream.name())
            .await
            .map_err(|e| consumer_error(e.into()))?;
        // The checkpoint, not the server's ack state, says where to resume: a consumer left
        // with unacknowledged deliveries would hand out newer events before redelivering
        // older ones, and the projection must apply them in order.
        let _ = stream.delete_consumer(&self.consumer).await;
        let start = self.last + 1;
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(self.consumer.clone()),
                description: Some(
                    "vibehq projector; recreated from the projection's checkpoint on start".into(),
                ),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
                ack_policy: AckPolicy::All,
                ack_wait: Duration::from_secs(60),
                max_ack_pending: 100_000,
                // An abandoned projection's consumer is cleaned up by the server.
                inactive_threshold: Duration::from_secs(24 * 3600),
                ..Default::default()
            })
            .await
            .map_err(|e| consumer_error(e.into()))?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(self.batch_size)
            .messages()
            .await
            .map_err(|e| consumer_error(e.into()))?;
        let mut chunks = messages.ready_chunks(self.batch_size);
        tracing::debug!(start, "following");
        let mut fresh = true;
        loop {
            let chunk = tokio::select! {
                _ = self.stop.cancelled() => return Ok(Session::Stopped),
                chunk = chunks.next() => chunk,
            };
            let Some(chunk) = chunk else {
                return Ok(Session::Resync);
            };
            let mut records = Vec::with_capacity(chunk.len());
            let mut ack = None;
            let mut resync = false;
            for message in chunk {
                let message = match message {
                    Ok(m) => m,
                    Err(error) => {
                        tracing::warn!(%error, "delivery failed; resuming from the checkpoint");
                        resync = true;
                        break;
                    }
                };
                let record = match Recorded::from_message(self.stream, &message) {
                    Ok(record) => record,
                    Err(error) => {
                        // Hand over what was gathered, then resume right after it.
                        tracing::warn!(%error, "unreadable delivery; resuming from the checkpoint");
                        resync = true;
                        break;
                    }
                };
                if record.sequence <= self.last {
                    continue; // a redelivery of something already handed over
                }
                if !fresh && record.sequence != self.last + 1 {
                    tracing::warn!(
                        expected = self.last + 1,
                        got = record.sequence,
                        "sequence gap; resuming from the checkpoint"
                    );
                    resync = true;
                    break;
                }
                fresh = false;
                self.last = record.sequence;
                records.push(record);
                ack = Some(message);
            }
            if !records.is_empty() {
                let batch = Batch { records, ack };
                self.batches
                    .send(batch)
                    .await
                    .map_err(|_| Error::WriterGone)?;
            }
            if resync {
                return Ok(Session::Resync);
            }
        }
    }
}

enum Session {
    Stopped,
    Resync,
}
