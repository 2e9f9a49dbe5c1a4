//! Test support: real brokers for tests, started per test and removed on drop.
//!
//! Tests never mock NATS. [`NatsServer::start`] runs a real `nats-server -js` (through the same
//! launcher `vibehq up` uses) on a free loopback port with a temporary store, so tests run in
//! parallel without sharing state, and dropping the handle kills the server and deletes its
//! store.
//!
//! # Layout
//! - [`NatsServer`]: a real JetStream server per test.
//! - [`fixtures`]: events of every kind, and workloads for benchmarks.
//! - [`openai`]: a deterministic OpenAI-compatible server for the AI gateway's tests.
//! - `vibehq-echo` (a binary): the HTTP instance the load balancer's tests run.

pub mod fixtures;
pub mod openai;

use std::time::Duration;

use vibehq_embedded_nats::{EmbeddedNats, Options};

/// A JetStream-enabled `nats-server` for one test.
#[derive(Debug)]
pub struct NatsServer {
    // Declared before the directory so the server stops before its store is deleted.
    server: Option<EmbeddedNats>,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server on a free port with a fresh store.
    ///
    /// Panics (failing the test) if `nats-server` is not installed or does not start: the
    /// message says how to install it.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory for the NATS store");
        let server = EmbeddedNats::start(Options::new(dir.path().join("jetstream")))
            .await
            .unwrap_or_else(|e| panic!("cannot start the test nats-server: {e}"));
        Self {
            server: Some(server),
            dir,
        }
    }

    /// The client URL.
    pub fn url(&self) -> String {
        self.server().url()
    }

    /// A new client connection.
    pub async fn connect(&self) -> async_nats::Client {
        async_nats::connect(self.url())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test nats-server: {e}"))
    }

    /// A scratch directory that lives as long as the server (for SQLite files and the like).
    pub fn scratch(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Stops the server gracefully and starts it again on the same port and store, e.g. to test
    /// that clients recover.
    pub async fn restart(&mut self) {
        let server = self.server.take().expect("server running");
        let mut options = Options::new(server.store_dir());
        options.port = server.port();
        server.shutdown(Duration::from_secs(10)).await;
        self.server = Some(
            EmbeddedNats::start(options)
                .await
                .unwrap_or_else(|e| panic!("cannot restart the test nats-server: {e}")),
        );
    }

    fn server(&self) -> &EmbeddedNats {
        self.server.as_ref().expect("server running")
    }
}
