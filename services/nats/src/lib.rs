//! NATS for vibehq: the broker as vibehq uses it.
//!
//! vibehq keeps everything in JetStream, so everything about the broker itself lives here:
//! starting a local server (the embedded default and the tests' broker), which server versions
//! vibehq runs on, connecting with whatever credentials a production server asks for, and the
//! server permissions that bind each worker's credentials to its own name.
//!
//! # Layout
//! - [`embedded`]: [`Options`] → [`EmbeddedNats::start`] → [`EmbeddedNats`], a child
//!   `nats-server -js`.
//! - [`version`]: which server versions vibehq runs on (2.12+), checked for every server.
//! - [`connect`]: [`Connection`] → a client: URLs, users, tokens, nkeys, creds files, TLS;
//!   no secret is ever shown.
//! - [`permissions`]: what a worker's credentials may do, and the `authorization {}` block of
//!   a server configuration.

pub mod connect;
pub mod embedded;
pub mod permissions;
pub mod version;

pub use connect::{Auth, Connection, Secret, Tls, redact};
pub use embedded::{EmbeddedNats, Error, Options};
