//! Test support: real brokers for tests, started per test and removed on drop.
//!
//! Tests never mock NATS. [`NatsServer::start`] runs a real `nats-server -js` (through the same
//! launcher `vibehq up` uses) on a free loopback port with a temporary store, so tests run in
//! parallel without sharing state, and dropping the handle kills the server and deletes its
//! store. Every test server requires credentials, as production servers do: the service's are
//! in [`NatsServer::url`], and workers it was started for connect with their own
//! ([`NatsServer::connect_as`]), bound to their names by the server's permissions.
//!
//! # Layout
//! - [`NatsServer`]: a real JetStream server per test.
//! - [`fixtures`]: events of every kind, and workloads for benchmarks.
//! - [`openai`]: a deterministic OpenAI-compatible server for the AI gateway's tests.
//! - `vibehq-echo` (a binary): the HTTP instance the load balancer's tests run.

pub mod fixtures;
pub mod openai;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use vibehq_nats::permissions::{self, Credential, User, Worker};
use vibehq_nats::{Auth, Connection, EmbeddedNats, Options, Secret};

/// The user every test server gives the service (and the tests) all permissions under.
pub const SERVICE_USER: &str = "vibehq";

/// A JetStream-enabled `nats-server` for one test, with authorization on: the service user
/// (whose credentials [`NatsServer::url`] carries) may do everything, and each worker the
/// server was started for gets an nkey user with exactly the permissions `vibehq nats-auth`
/// writes for it ([`vibehq_nats::permissions`]), so tests run against the rules production
/// runs under.
#[derive(Debug)]
pub struct NatsServer {
    // Declared before the directory so the server stops before its store is deleted.
    server: Option<EmbeddedNats>,
    password: String,
    /// The server's port, kept while it is down (see [`NatsServer::kill`]).
    port: u16,
    /// Each worker's nkey seed file.
    seeds: BTreeMap<String, PathBuf>,
    config: PathBuf,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server on a free port with a fresh store, and only the service user.
    ///
    /// Panics (failing the test) if `nats-server` is not installed, too old, or does not
    /// start: the message says how to get a current one.
    pub async fn start() -> Self {
        Self::with_workers(&[]).await
    }

    /// Starts a server whose users are the service and these workers (`name` or
    /// `name:container,container` for the containers whose lanes it may pull).
    pub async fn with_workers(workers: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory for the NATS store");
        let password = uuid::Uuid::now_v7().simple().to_string();
        let mut users = vec![User {
            credential: Credential::Password {
                user: SERVICE_USER.into(),
                password: password.clone(),
            },
            permissions: None,
        }];
        let mut seeds = BTreeMap::new();
        for spec in workers {
            let worker = Worker::parse(spec).unwrap_or_else(|e| panic!("worker {spec}: {e}"));
            let issued = permissions::issue(Some(permissions::worker(&worker)));
            let seed = dir.path().join(format!("{}.nk", worker.name));
            std::fs::write(&seed, issued.seed.expose()).expect("write the seed");
            seeds.insert(worker.name, seed);
            users.push(issued.user);
        }
        let config = dir.path().join("auth.conf");
        std::fs::write(&config, permissions::authorization(&users)).expect("write the config");
        let mut options = Options::new(dir.path().join("jetstream"));
        options.config = Some(config.clone());
        let server = EmbeddedNats::start(options)
            .await
            .unwrap_or_else(|e| panic!("cannot start the test nats-server: {e}"));
        Self {
            port: server.port(),
            server: Some(server),
            password,
            seeds,
            config,
            dir,
        }
    }

    /// The client URL, with the service user's credentials.
    pub fn url(&self) -> String {
        format!(
            "nats://{SERVICE_USER}:{}@127.0.0.1:{}",
            self.password, self.port
        )
    }

    /// The client URL without credentials (a connection with none is refused).
    pub fn bare_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A new client connection as the service.
    pub async fn connect(&self) -> async_nats::Client {
        Connection::to(self.url())
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test nats-server: {e}"))
    }

    /// The nkey seed file of `worker` (one the server was started with).
    pub fn seed(&self, worker: &str) -> PathBuf {
        self.seeds
            .get(worker)
            .cloned()
            .unwrap_or_else(|| panic!("the server was not started with worker {worker}"))
    }

    /// A new client connection as `worker`, with its inbox prefix.
    pub async fn connect_as(&self, worker: &str) -> async_nats::Client {
        let seed = std::fs::read_to_string(self.seed(worker)).expect("read the seed");
        let connection = Connection {
            url: self.bare_url(),
            auth: Auth::Nkey(Secret::new(seed.trim())),
            inbox_prefix: Some(permissions::inbox_prefix(worker)),
            name: worker.to_owned(),
            ..Connection::default()
        };
        connection
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot connect as {worker}: {e}"))
    }

    /// A scratch directory that lives as long as the server (for SQLite files and the like).
    pub fn scratch(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Stops the server gracefully and starts it again on the same port, store and users,
    /// e.g. to test that clients recover.
    pub async fn restart(&mut self) {
        let server = self.server.take().expect("server running");
        let port = server.port();
        server.shutdown(Duration::from_secs(10)).await;
        self.start_on(port).await;
    }

    /// Kills the server at once (SIGKILL), as a crash or a cut cable would look to clients;
    /// returns its port, for [`NatsServer::start_again`].
    pub async fn kill(&mut self) -> u16 {
        let server = self.server.take().expect("server running");
        let port = server.port();
        server.shutdown(Duration::ZERO).await;
        port
    }

    /// Starts the server again on `port` (see [`NatsServer::kill`]), with its store and users.
    pub async fn start_again(&mut self, port: u16) {
        assert!(self.server.is_none(), "the server is running");
        self.start_on(port).await;
    }

    async fn start_on(&mut self, port: u16) {
        let mut options = Options::new(self.dir.path().join("jetstream"));
        options.port = port;
        options.config = Some(self.config.clone());
        self.server = Some(
            EmbeddedNats::start(options)
                .await
                .unwrap_or_else(|e| panic!("cannot restart the test nats-server: {e}")),
        );
    }
}
