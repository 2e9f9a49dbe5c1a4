//! The projector: builds the D1-compatible SQLite projection from the event streams, and
//! answers queries over it.
//!
//! The streams are the truth; a projection file is a disposable view of them. Each stream is
//! read by an ordered consumer (ephemeral: no acknowledgements, nothing left on the server
//! once the projector stops), and every applied event's stream sequence is committed in the
//! same SQLite transaction as the rows it changed (`projector_checkpoints`). That checkpoint
//! decides where to resume: on start, and after any interruption, the read starts again at
//! `checkpoint + 1`, so a crash at any instruction neither loses nor double-applies an event.
//! Anything at or below the checkpoint is skipped; a message that cannot be applied is kept
//! in `projector_rejected`, a task event its lifecycle refuses in `container_task_refusals`,
//! and the projector moves on.
//!
//! Nothing here reads a clock: rows are functions of the events alone, so [`replay`] into a new
//! file reproduces the live projection table for table.
//!
//! # Layout
//! - [`projector`]: [`Options`] → [`Projector::run`] → [`Handle`] (checkpoints, read-your-writes).
//! - [`replay`]: rebuilding a projection file from the streams, up to a sequence or a time.
//! - [`verify`]: a live projection compared with a replay to its sequences, table by table.
//! - [`query`]: the read side: the tables, their filters, pagination, rows as JSON.
//! - [`apply`]: one event → row changes (pure, clock-free).
//! - [`db`]: opening files, checkpoints, the projection's identity.
//! - `writer`: the single writer thread that commits batches.

pub mod apply;
pub mod db;
pub mod projector;
pub mod query;
pub mod replay;
pub mod verify;
mod writer;

use std::path::PathBuf;

pub use apply::Totals;
pub use db::Checkpoints;
pub use projector::{Handle, NotThrough, Options, Projector};
pub use query::{Reader, Table};
pub use replay::{ReplayOptions, Until, replay};

/// Failures of the projector and the projection store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQLite failed; the transaction in progress was rolled back.
    #[error("SQLite failed to {op}: {source}")]
    Sqlite {
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// The schema could not be brought up to date.
    #[error(transparent)]
    Migration(#[from] vibehq_schemas::Error),
    /// A file or directory could not be used.
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The event log failed.
    #[error(transparent)]
    Log(#[from] vibehq_events::Error),
    /// The writer thread stopped (after an earlier error, or a panic).
    #[error("the projection writer stopped unexpectedly")]
    WriterGone,
    /// A query's thread stopped before it answered (it panicked).
    #[error("a projection query stopped unexpectedly")]
    ReaderGone,
    /// The replay target already holds a projection.
    #[error("{0} already exists; replay builds a new file (remove it or pick another path)")]
    TargetExists(PathBuf),
}
