//! The event vocabulary of vibehq and the log that stores it.
//!
//! Every change in the system (a task submitted, an instance found unhealthy, a model routed) is
//! an [`Envelope`] appended to a NATS JetStream stream. The streams are the source of truth;
//! everything else (the SQLite projections, the audit trail, live WebSocket feeds) is derived
//! from them. This crate is the *only* place whose types are serialized onto NATS: changing one
//! of them is a wire migration, so payloads are versioned ([`SCHEMA_VERSION`]) and decoding
//! refuses what it does not understand instead of guessing.
//!
//! Each aggregate (one task, one container instance, one AI run) has its own subject prefix
//! ([`Subject`]), so its history is one subject filter away and its version is the stream
//! sequence of its last event: the basis for optimistic concurrency with
//! `Nats-Expected-Last-Subject-Sequence`. A task's subjects also carry who appended each event
//! ([`Actor`]) and the lane its pending work waits in, so the server's permissions can bind a
//! worker to its own name.
//!
//! # Layout
//! - [`envelope`]: the envelope every event travels in, and its wire encoding.
//! - [`catalog`]: the one table mapping each [`EventKind`] to its wire name and payload type.
//! - [`task`], [`container`], [`ai`]: the payloads, one module per domain; [`task::lane`] and
//!   [`task::lifecycle`] are where pending work waits and what each task event does.
//! - [`actor`]: who records an event, and the rules for worker and container names.
//! - [`subject`]: aggregates and the NATS subjects they live on.
//! - [`stream`]: the JetStream streams and their configuration.
//! - [`log`]: [`EventLog`], appending (one, pipelined, or atomic) and reading history back.
//! - [`schedule`]: the server's clock: message schedules, in a stream only the service writes,
//!   for delayed tasks and for [`recurring`] schedules (cron or interval).
//! - [`limit`]: concurrency keys and rate limits, and which waiting tasks they let through.
//! - [`fleet`]: the workers, as they registered themselves.
//! - [`pause`]: holding back every lane's work, or a worker's, and letting it go again.
//! - [`trace`]: the trace context each append carries in its NATS headers.

pub mod actor;
pub mod ai;
pub mod catalog;
pub mod container;
pub mod envelope;
pub mod fleet;
pub mod limit;
pub mod log;
pub mod pause;
pub mod recurring;
pub mod schedule;
pub mod stream;
pub mod subject;
pub mod task;
pub mod time_zone;
pub mod trace;

pub use actor::{Actor, InvalidName, validate_name};
pub use catalog::{EventKind, Payload};
pub use envelope::{DecodeError, Envelope, EventId, SCHEMA_VERSION};
pub use log::{Appended, Error, EventLog, Expect, MAX_BATCH, PIPELINE, Recorded};
pub use stream::StreamKind;
pub use subject::{InvalidToken, Subject};
