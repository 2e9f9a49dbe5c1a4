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

/// Three `nats-server`s clustered on loopback, with JetStream and the same users as a
/// [`NatsServer`] (the service's password; workers' nkeys), for tests of what a cluster
/// survives. Dropping it kills the nodes and deletes their stores.
#[derive(Debug)]
pub struct NatsCluster {
    // Declared before the directory so the nodes stop before their stores are deleted.
    nodes: Vec<Option<EmbeddedNats>>,
    ports: Vec<u16>,
    password: String,
    configs: Vec<PathBuf>,
    dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts nodes `n1`, `n2` and `n3`, and returns once the cluster answers JetStream
    /// requests (it has a meta leader).
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory for the cluster");
        let password = uuid::Uuid::now_v7().simple().to_string();
        let users = vec![User {
            credential: Credential::Password {
                user: SERVICE_USER.into(),
                password: password.clone(),
            },
            permissions: None,
        }];
        let auth = permissions::authorization(&users);
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port()
        };
        let ports: Vec<u16> = (0..3).map(|_| free()).collect();
        let routes: Vec<u16> = (0..3).map(|_| free()).collect();
        let mut configs = Vec::new();
        for i in 0..3 {
            let peers: Vec<String> = routes
                .iter()
                .map(|p| format!("nats-route://127.0.0.1:{p}"))
                .collect();
            let config = dir.path().join(format!("n{}.conf", i + 1));
            std::fs::write(
                &config,
                format!(
                    "server_name: n{}\ncluster {{\n  name: vibehq-test\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n{auth}",
                    i + 1,
                    routes[i],
                    peers.join(", ")
                ),
            )
            .expect("write a node's config");
            configs.push(config);
        }
        let mut cluster = Self {
            nodes: (0..3).map(|_| None).collect(),
            ports,
            password,
            configs,
            dir,
        };
        let (a, b, c) = tokio::join!(
            cluster.start_node(0),
            cluster.start_node(1),
            cluster.start_node(2)
        );
        cluster.nodes = vec![Some(a), Some(b), Some(c)];
        cluster.wait_for_jetstream().await;
        cluster
    }

    /// The client URL of every node, comma-separated, with the service's credentials.
    pub fn url(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("nats://{SERVICE_USER}:{}@127.0.0.1:{p}", self.password))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A connection as the service to any node.
    pub async fn connect(&self) -> async_nats::Client {
        Connection::to(self.url())
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test cluster: {e}"))
    }

    /// The index (0-2) of the node named `name` (`n1`…).
    pub fn index_of(&self, name: &str) -> usize {
        name.strip_prefix('n')
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| n.checked_sub(1))
            .filter(|i| *i < 3)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Kills node `i` at once (SIGKILL).
    pub async fn kill(&mut self, i: usize) {
        let node = self.nodes[i].take().expect("the node is running");
        node.shutdown(Duration::ZERO).await;
    }

    /// Starts node `i` again on its port, store and configuration.
    pub async fn start_again(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "the node is running");
        self.nodes[i] = Some(self.start_node(i).await);
    }

    async fn start_node(&self, i: usize) -> EmbeddedNats {
        let mut options = Options::new(self.dir.path().join(format!("n{}", i + 1)));
        options.port = self.ports[i];
        options.config = Some(self.configs[i].clone());
        EmbeddedNats::start(options)
            .await
            .unwrap_or_else(|e| panic!("cannot start cluster node n{}: {e}", i + 1))
    }

    async fn wait_for_jetstream(&self) {
        let client = self.connect().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let answer = client.request("$JS.API.INFO", Vec::new().into()).await;
            if let Ok(reply) = answer
                && serde_json::from_slice::<serde_json::Value>(&reply.payload)
                    .is_ok_and(|v| v.get("error").is_none())
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the cluster elected no JetStream leader in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
