//! A local `nats-server` with JetStream as a child process.
//!
//! This is vibehq's embedded default (`vibehq up` with no NATS URL configured) and the test
//! harness's broker: the same code starts both, so tests exercise what users run. Nothing is
//! installed here: if the binary is missing, [`Error::NotInstalled`] says how to get it.
//!
//! Readiness is read from the server's own log ("Listening for client connections on …", then
//! "Server is ready"), which also yields the port when a random one (`port: 0`) was asked for:
//! no polling and no race for a "free" port. The server's version is read from the same log
//! and checked against [`version::MINIMUM`]: a server too old for vibehq is stopped with a
//! message saying how to get a current one.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::version;

/// How to start the server.
#[derive(Debug, Clone)]
pub struct Options {
    /// The executable, looked up on `PATH` unless it contains a slash.
    pub binary: PathBuf,
    /// Directory for JetStream's store; created if missing. The server locks it, so two
    /// servers cannot share one.
    pub store_dir: PathBuf,
    /// Address to listen on. Loopback by default: the embedded server is not a network service.
    pub host: String,
    /// Port to listen on; 0 picks a free one.
    pub port: u16,
    /// How long to wait for the server to report ready.
    pub ready_timeout: Duration,
    /// A server configuration file (accounts, users and their permissions, a cluster), given
    /// with `-c`; the options above still win over it.
    pub config: Option<PathBuf>,
}

impl Options {
    /// Loopback, a free port, the default binary, and `store_dir`.
    pub fn new(store_dir: impl Into<PathBuf>) -> Self {
        Self {
            binary: PathBuf::from("nats-server"),
            store_dir: store_dir.into(),
            host: "127.0.0.1".to_owned(),
            port: 0,
            ready_timeout: Duration::from_secs(20),
            config: None,
        }
    }
}

/// Why the server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The binary is not installed.
    #[error(
        "`{binary}` was not found. vibehq runs a local NATS server (2.12 or newer) when no \
         --nats-url is given. {}",
        version::how_to_get()
    )]
    NotInstalled { binary: String },
    /// The binary is older than vibehq needs.
    #[error(transparent)]
    TooOld(#[from] version::TooOld),
    /// The store directory could not be created.
    #[error("cannot create the NATS store directory {dir}: {source}")]
    StoreDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The process could not be spawned.
    #[error("cannot start `{binary}`: {source}")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    /// Something else listens on the port (often another `vibehq up`).
    #[error(
        "the embedded nats-server cannot listen on {host}:{port}: the port is in use (another \
         vibehq up?). Choose another with --embedded-nats-port (0 picks a free one), or connect \
         to the running server with --nats-url"
    )]
    PortInUse { host: String, port: u16 },
    /// The server exited or went quiet before it was ready; `log` is what it printed.
    #[error("nats-server did not become ready; its last output was:\n{log}")]
    NotReady { log: String },
}

/// A running `nats-server` child. Dropping it kills the server; [`EmbeddedNats::shutdown`]
/// stops it gracefully.
#[derive(Debug)]
pub struct EmbeddedNats {
    child: Child,
    port: u16,
    host: String,
    store_dir: PathBuf,
}

impl EmbeddedNats {
    /// Starts the server and waits until it accepts clients.
    pub async fn start(options: Options) -> Result<Self, Error> {
        let binary = options.binary.display().to_string();
        std::fs::create_dir_all(&options.store_dir).map_err(|source| Error::StoreDir {
            dir: options.store_dir.clone(),
            source,
        })?;
        let port = if options.port == 0 {
            "-1".to_owned()
        } else {
            options.port.to_string()
        };
        let mut command = Command::new(&options.binary);
        if let Some(config) = &options.config {
            command.arg("-c").arg(config);
        }
        let mut child = command
            .arg("-a")
            .arg(&options.host)
            .arg("-p")
            .arg(&port)
            .arg("-js")
            .arg("-sd")
            .arg(&options.store_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => Error::NotInstalled {
                    binary: binary.clone(),
                },
                _ => Error::Spawn {
                    binary: binary.clone(),
                    source,
                },
            })?;
        let stderr = child.stderr.take().ok_or_else(|| Error::NotReady {
            log: "no stderr pipe".to_owned(),
        })?;
        let mut lines = BufReader::new(stderr).lines();
        let mut log = Vec::new();
        let ready = tokio::time::timeout(options.ready_timeout, async {
            let (mut port, mut version) = (None, None);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
                    port = addr.rsplit(':').next().and_then(|p| p.trim().parse().ok());
                }
                if version.is_none()
                    && let Some(found) = line.split("Version:").nth(1)
                {
                    version = Some(found.trim().to_owned());
                }
                let is_ready = line.contains("Server is ready");
                log.push(line);
                if is_ready {
                    return port.map(|port| (port, version));
                }
            }
            None
        })
        .await;
        match ready {
            Ok(Some((port, version))) => {
                let found = version.unwrap_or_else(|| "of an unknown version".into());
                if let Err(too_old) = version::check(&format!("`{binary}`"), &found) {
                    let _ = child.start_kill();
                    return Err(too_old.into());
                }
                // Keep draining the log so the server never blocks on a full pipe.
                tokio::spawn(async move {
                    while let Ok(Some(line)) = lines.next_line().await {
                        tracing::debug!(target: "nats_server", "{line}");
                    }
                });
                tracing::info!(port, store = %options.store_dir.display(), "embedded nats-server ready");
                Ok(Self {
                    child,
                    port,
                    host: options.host,
                    store_dir: options.store_dir,
                })
            }
            _ => {
                let _ = child.start_kill();
                if log.iter().any(|l| l.contains("address already in use")) {
                    return Err(Error::PortInUse {
                        host: options.host,
                        port: options.port,
                    });
                }
                let tail = log.iter().rev().take(15).rev().cloned().collect::<Vec<_>>();
                Err(Error::NotReady {
                    log: tail.join("\n"),
                })
            }
        }
    }

    /// The client URL, e.g. `nats://127.0.0.1:4250`.
    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.host, self.port)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory.
    pub fn store_dir(&self) -> &std::path::Path {
        &self.store_dir
    }

    /// The server's process id, e.g. to kill it in a failure test.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops the server gracefully (SIGTERM, which flushes JetStream), killing it if it has not
    /// exited within `grace`.
    pub async fn shutdown(mut self, grace: Duration) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
                return;
            }
        }
        let _ = self.child.kill().await;
    }
}
