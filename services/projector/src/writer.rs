//! The single writer: one thread owns the projection's write connection and applies batches in
//! arrival order. Readers of every stream feed it through one channel, so there is never write
//! contention, and each commit carries its rows and its checkpoints together.

use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::{mpsc, watch};
use vibehq_events::{Recorded, StreamKind};

use crate::Error;
use crate::apply::{Refused, Statuses, Totals, apply_batch};
use crate::db::{Checkpoints, save_checkpoint, sqlite};

/// Records of one stream, in stream order.
#[derive(Debug)]
pub(crate) struct Batch {
    pub records: Vec<Recorded>,
}

/// A commit of fewer records than this waits [`LINGER`] once for more before it is made.
const LINGER_BELOW: usize = 256;

/// How long a small commit waits for more records: the most it delays a read of one's own
/// write (`min_seq`).
const LINGER: std::time::Duration = std::time::Duration::from_millis(1);

/// Most records folded into one transaction: big enough to amortise the commit, small enough
/// to keep readers' view fresh.
const MAX_RECORDS_PER_COMMIT: usize = 8192;

pub(crate) struct Writer {
    pub batches: mpsc::Sender<Batch>,
    pub thread: JoinHandle<Result<Totals, Error>>,
}

/// Starts the writer thread over `conn`, resuming from `checkpoints`. Each commit's checkpoints
/// are published on `progress`. The thread ends when every sender is dropped (after applying
/// everything sent) or on the first SQLite failure.
pub(crate) fn spawn(
    conn: Connection,
    checkpoints: Checkpoints,
    progress: watch::Sender<Checkpoints>,
) -> Result<Writer, Error> {
    let (batches, rx) = mpsc::channel(16);
    let thread = std::thread::Builder::new()
        .name("projector-writer".into())
        .spawn(move || run(conn, checkpoints, rx, progress))
        .map_err(|source| Error::Io {
            path: "projector-writer thread".into(),
            source,
        })?;
    Ok(Writer { batches, thread })
}

fn run(
    mut conn: Connection,
    mut checkpoints: Checkpoints,
    mut rx: mpsc::Receiver<Batch>,
    progress: watch::Sender<Checkpoints>,
) -> Result<Totals, Error> {
    let mut totals = Totals::default();
    let mut statuses = Statuses::default();
    while let Some(first) = rx.blocking_recv() {
        // Gather what is already waiting, up to a commit's worth. A commit rewrites every page
        // it touched (the table's and each index's), so a stream of small commits costs more
        // per event than a few large ones: when little is waiting, give more a moment to come.
        let mut batches = vec![first];
        let mut count = batches[0].records.len();
        let mut lingered = false;
        while count < MAX_RECORDS_PER_COMMIT {
            match rx.try_recv() {
                Ok(next) => {
                    count += next.records.len();
                    batches.push(next);
                }
                Err(mpsc::error::TryRecvError::Empty) if !lingered && count < LINGER_BELOW => {
                    lingered = true;
                    std::thread::sleep(LINGER);
                }
                Err(_) => break,
            }
        }
        let before = (checkpoints, totals);
        let mut careful = false;
        loop {
            let mut tx = conn.transaction().map_err(sqlite("begin a batch"))?;
            let applied = batches.iter().try_for_each(|batch| {
                apply_batch(
                    &mut tx,
                    &mut checkpoints,
                    &batch.records,
                    &mut totals,
                    careful,
                    &mut statuses,
                )
            });
            match applied {
                Ok(()) => {
                    for stream in StreamKind::ALL {
                        if checkpoints.get(stream) != before.0.get(stream) {
                            save_checkpoint(&tx, stream, checkpoints.get(stream))
                                .map_err(sqlite("save a checkpoint"))?;
                        }
                    }
                    tx.commit().map_err(sqlite("commit a batch"))?;
                    for stream in StreamKind::ALL {
                        let taken = checkpoints.get(stream) - before.0.get(stream);
                        if taken > 0 {
                            vibehq_metrics::metrics()
                                .projector_applied
                                .get_or_create(&vibehq_metrics::StreamLabels {
                                    stream: stream.name().to_owned(),
                                })
                                .inc_by(taken);
                        }
                    }
                    break;
                }
                Err(Refused::RetryCarefully) if !careful => {
                    // Dropping the transaction rolls it back; start over event by event.
                    drop(tx);
                    (checkpoints, totals) = before;
                    statuses.clear();
                    careful = true;
                }
                Err(Refused::RetryCarefully) => return Err(Error::WriterGone),
                Err(Refused::Sqlite(source)) => {
                    return Err(Error::Sqlite {
                        op: "apply an event",
                        source,
                    });
                }
            }
        }
        progress.send_replace(checkpoints);
    }
    Ok(totals)
}
