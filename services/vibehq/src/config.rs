//! Settings from a TOML file, `VIBEHQ_*` environment variables and flags, in rising precedence.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use serde::Deserialize;

/// Flags shared by every command. Each also reads a `VIBEHQ_*` variable, and each may be set
/// in the config file under the same name with underscores.
#[derive(Debug, Clone, Args, Default)]
pub struct Flags {
    /// A TOML config file (keys as the flags, with underscores: `nats_url = "…"`).
    #[arg(long, env = "VIBEHQ_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// NATS server or cluster to use (several: comma-separated). Without it, `vibehq up` runs its own nats-server in the
    /// data folder, and the other commands use that one.
    #[arg(long, env = "VIBEHQ_NATS_URL", global = true, value_name = "URL")]
    pub nats_url: Option<String>,
    /// Folder for the projection database and the embedded NATS store [default: .vibehq]
    #[arg(long, env = "VIBEHQ_DATA_DIR", global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the HTTP API [default: 127.0.0.1:8080]
    #[arg(long, env = "VIBEHQ_HTTP_ADDR", global = true, value_name = "ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Port of the embedded nats-server, on loopback; 0 picks a free one [default: 14222]
    #[arg(
        long,
        env = "VIBEHQ_EMBEDDED_NATS_PORT",
        global = true,
        value_name = "PORT"
    )]
    pub embedded_nats_port: Option<u16>,
    /// The nats-server executable for the embedded default [default: nats-server]
    #[arg(
        long,
        env = "VIBEHQ_NATS_SERVER_BIN",
        global = true,
        value_name = "PATH"
    )]
    pub nats_server_bin: Option<PathBuf>,
    /// Bearer tokens the HTTP API accepts (comma-separated); required beyond loopback.
    #[arg(long = "api-token", env = "VIBEHQ_API_TOKENS", global = true, value_delimiter = ',', value_name = "TOKEN", hide_env_values = true, value_parser = parse_token)]
    pub api_tokens: Vec<vibehq_api::auth::Token>,
    /// Copies of each stream: 1 on a single server, 3 on a cluster [default: 1]
    #[arg(long, env = "VIBEHQ_STREAM_REPLICAS", global = true, value_name = "N")]
    pub stream_replicas: Option<usize>,
}

/// The config file's shape: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    nats_url: Option<String>,
    data_dir: Option<PathBuf>,
    http_addr: Option<SocketAddr>,
    embedded_nats_port: Option<u16>,
    nats_server_bin: Option<PathBuf>,
    stream_replicas: Option<usize>,
    /// How long a claim holds a task without a heartbeat (`vibehq up --lease-secs`).
    lease_secs: Option<u64>,
    #[serde(default)]
    api_tokens: Vec<String>,
    /// `vibehq worker`'s allow-list: `[commands.NAME]` tables.
    #[serde(default)]
    commands: BTreeMap<String, vibehq_worker::Command>,
    /// The load balancer's service: a `[balancer]` table.
    balancer: Option<Balancer>,
    /// The AI gateway: `[ai]` with `[[ai.providers]]` in fallback order.
    ai: Option<vibehq_ai::GatewayConfig>,
}

/// `[balancer]`: the service `vibehq up` runs instances of, and the proxy in front of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Balancer {
    /// `process` (default: each instance a child process) or `docker` (a container each).
    #[serde(default)]
    pub runtime: Option<String>,
    /// The executable of one instance (process runtime); it must serve HTTP on `$PORT`.
    pub program: Option<PathBuf>,
    /// The image of one instance (docker runtime); `args`, if any, are its command.
    pub image: Option<String>,
    /// The port the service listens on inside its container (docker runtime; default 8080).
    pub container_port: Option<u16>,
    /// The Docker Engine API socket (default `/var/run/docker.sock`).
    pub docker_socket: Option<PathBuf>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Instances started with `vibehq up` (scale later with POST /api/containers/scale/N).
    #[serde(default = "one")]
    pub instances: u32,
    #[serde(default = "default_worker")]
    pub worker_name: String,
    #[serde(default = "default_container")]
    pub container_name: String,
    /// The HTTP path probed for health; `""` for instances that serve no HTTP (they are
    /// healthy while their process runs).
    #[serde(default = "default_health_path")]
    pub health_path: String,
    /// Where the proxy listens.
    #[serde(default = "default_proxy_addr")]
    pub proxy_addr: SocketAddr,
    /// `least_outstanding` (default) or `round_robin`.
    #[serde(default)]
    pub strategy: Option<String>,
    pub health_interval_ms: Option<u64>,
    pub health_timeout_ms: Option<u64>,
    pub failure_threshold: Option<u32>,
    pub max_instances: Option<u32>,
    /// Instances heartbeat over NATS at least this often (see README); a missing heartbeat is a
    /// failed health check.
    pub heartbeat_ms: Option<u64>,
    /// `[balancer.autoscale]`: size the pool from the queue's backlog and the traffic.
    pub autoscale: Option<AutoscaleConfig>,
}

/// `[balancer.autoscale]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscaleConfig {
    pub min: u32,
    pub max: u32,
    /// Queued tasks (for this worker, or for anyone) one instance is meant to carry.
    pub tasks_per_instance: Option<u32>,
    /// Requests in flight through the proxy one instance is meant to carry.
    pub requests_per_instance: Option<u32>,
    pub interval_ms: Option<u64>,
    pub scale_down_after_secs: Option<u64>,
}

impl AutoscaleConfig {
    pub fn policy(&self) -> vibehq_balancer::autoscale::Autoscale {
        let defaults = vibehq_balancer::autoscale::Autoscale::default();
        vibehq_balancer::autoscale::Autoscale {
            min: self.min,
            max: self.max,
            tasks_per_instance: self.tasks_per_instance,
            requests_per_instance: self.requests_per_instance,
            interval: self.interval_ms.map_or(defaults.interval, |ms| {
                std::time::Duration::from_millis(ms.max(100))
            }),
            scale_down_after: self
                .scale_down_after_secs
                .map_or(defaults.scale_down_after, std::time::Duration::from_secs),
        }
    }
}

fn one() -> u32 {
    1
}
fn default_worker() -> String {
    "vibehq".into()
}
fn default_container() -> String {
    "web".into()
}
fn default_health_path() -> String {
    "/health".into()
}
fn default_proxy_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8090))
}

impl Balancer {
    /// The pool's service and policy, and the proxy's strategy.
    pub fn parts(
        &self,
    ) -> Result<(
        vibehq_balancer::ServiceSpec,
        vibehq_balancer::Policy,
        vibehq_balancer::Strategy,
    )> {
        let strategy = match &self.strategy {
            Some(s) => s
                .parse()
                .map_err(|e: String| anyhow::anyhow!("[balancer] strategy: {e}"))?,
            None => vibehq_balancer::Strategy::default(),
        };
        let mut policy = vibehq_balancer::Policy::default();
        if let Some(ms) = self.health_interval_ms {
            policy.interval = std::time::Duration::from_millis(ms.max(10));
        }
        if let Some(ms) = self.health_timeout_ms {
            policy.timeout = std::time::Duration::from_millis(ms.max(1));
        }
        if let Some(n) = self.failure_threshold {
            policy.failure_threshold = n.max(1);
        }
        if let Some(n) = self.max_instances {
            policy.max_instances = n;
        }
        if let Some(autoscale) = &self.autoscale {
            anyhow::ensure!(
                autoscale.min <= autoscale.max && autoscale.max <= policy.max_instances,
                "[balancer.autoscale] needs min <= max <= max_instances ({})",
                policy.max_instances
            );
            anyhow::ensure!(
                autoscale.tasks_per_instance.is_some() || autoscale.requests_per_instance.is_some(),
                "[balancer.autoscale] needs tasks_per_instance, requests_per_instance or both"
            );
        }
        anyhow::ensure!(
            self.instances <= policy.max_instances,
            "[balancer] instances ({}) is above max_instances ({})",
            self.instances,
            policy.max_instances
        );
        let spec = vibehq_balancer::ServiceSpec {
            worker_name: self.worker_name.clone(),
            container_name: self.container_name.clone(),
            program: self.program.clone().unwrap_or_default(),
            args: self.args.clone(),
            env: self.env.clone(),
            health_path: (!self.health_path.is_empty()).then(|| self.health_path.clone()),
            heartbeat: self.heartbeat_ms.map(std::time::Duration::from_millis),
            nats_url: None,
        };
        Ok((spec, policy, strategy))
    }

    /// The runtime driver the configuration selects.
    pub fn runtime(&self) -> Result<std::sync::Arc<dyn vibehq_balancer::Runtime>> {
        match self.runtime.as_deref().unwrap_or("process") {
            "process" => {
                anyhow::ensure!(
                    self.program.is_some(),
                    "[balancer] program is required with the process runtime"
                );
                Ok(std::sync::Arc::new(vibehq_balancer::Process))
            }
            "docker" => {
                let image = self.image.clone().ok_or_else(|| {
                    anyhow::anyhow!("[balancer] image is required with the docker runtime")
                })?;
                Ok(std::sync::Arc::new(vibehq_balancer::docker::Docker {
                    socket: self
                        .docker_socket
                        .clone()
                        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock")),
                    image,
                    container_port: self.container_port.unwrap_or(8080),
                }))
            }
            other => anyhow::bail!("[balancer] runtime {other:?}: use \"process\" or \"docker\""),
        }
    }
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub nats_url: Option<String>,
    pub data_dir: PathBuf,
    pub http_addr: SocketAddr,
    pub embedded_nats_port: u16,
    pub nats_server_bin: PathBuf,
    pub stream_replicas: usize,
    /// The task queue's lease, from the config file (`vibehq up --lease-secs` overrides it).
    pub lease_secs: Option<u64>,
    /// Bearer tokens of the HTTP API (redacted in `Debug`).
    pub api_tokens: Vec<vibehq_api::auth::Token>,
    /// Commands `vibehq worker` may run, from the config file.
    pub commands: BTreeMap<String, vibehq_worker::Command>,
    /// The load balancer's service, if configured.
    pub balancer: Option<Balancer>,
    /// The AI gateway's providers; none configured means AI calls answer 409 saying how.
    pub ai: vibehq_ai::GatewayConfig,
}

impl Settings {
    /// Merges defaults, the config file (if any) and flags/environment.
    pub fn resolve(flags: &Flags) -> Result<Self> {
        let file = match &flags.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str::<File>(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => File::default(),
        };
        let stream_replicas = flags.stream_replicas.or(file.stream_replicas).unwrap_or(1);
        anyhow::ensure!(
            matches!(stream_replicas, 1 | 3 | 5),
            "stream_replicas must be 1, 3 or 5 (got {stream_replicas})"
        );
        Ok(Self {
            nats_url: flags.nats_url.clone().or(file.nats_url),
            data_dir: flags
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(".vibehq")),
            http_addr: flags
                .http_addr
                .or(file.http_addr)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            embedded_nats_port: flags
                .embedded_nats_port
                .or(file.embedded_nats_port)
                .unwrap_or(14222),
            nats_server_bin: flags
                .nats_server_bin
                .clone()
                .or(file.nats_server_bin)
                .unwrap_or_else(|| PathBuf::from("nats-server")),
            stream_replicas,
            lease_secs: file.lease_secs,
            api_tokens: if flags.api_tokens.is_empty() {
                file.api_tokens
                    .into_iter()
                    .map(vibehq_api::auth::Token::new)
                    .collect()
            } else {
                flags.api_tokens.clone()
            },
            commands: file.commands,
            balancer: file.balancer,
            ai: file.ai.unwrap_or_default(),
        })
    }

    /// The live projection database.
    pub fn projection_path(&self) -> PathBuf {
        self.data_dir.join("projection.sqlite3")
    }

    /// Where a running `vibehq up` records the URL of its embedded NATS server.
    pub fn embedded_url_file(&self) -> PathBuf {
        self.data_dir.join("nats.url")
    }

    /// The NATS URL to use for commands other than `up`: the configured one, else the embedded
    /// server of a `vibehq up` running on the same data folder.
    pub fn client_nats_url(&self) -> Result<String> {
        if let Some(url) = &self.nats_url {
            return Ok(url.clone());
        }
        read_url(&self.embedded_url_file()).with_context(|| {
            format!(
                "no NATS URL configured and no `vibehq up` running with data folder {}: \
                 pass --nats-url (or VIBEHQ_NATS_URL), or start `vibehq up` first",
                self.data_dir.display()
            )
        })
    }
}

fn parse_token(token: &str) -> Result<vibehq_api::auth::Token, String> {
    let token = token.trim();
    if token.len() < 16 {
        return Err("API tokens must be at least 16 characters".into());
    }
    Ok(vibehq_api::auth::Token::new(token))
}

fn read_url(path: &Path) -> Result<String> {
    let url = std::fs::read_to_string(path)?;
    Ok(url.trim().to_owned())
}

/// Connects to NATS, explaining what to do if it is unreachable or too old for vibehq.
///
/// `url` may list several servers separated by commas (`nats://n1:4222,nats://n2:4222`): the
/// client starts with whichever answers, then learns the rest of the cluster from it. The
/// server's version (from the INFO it greets every client with) must be at least
/// [`vibehq_embedded_nats::version::MINIMUM`]. No message shows a password the URL holds.
pub async fn connect(url: &str) -> Result<async_nats::Client> {
    let shown = redact(url);
    let servers = url
        .split(',')
        .map(|u| u.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            anyhow::anyhow!("invalid NATS URL {shown:?} (expected nats://host:port[,…])")
        })?;
    let client = async_nats::ConnectOptions::new()
        .name("vibehq")
        .connect(servers)
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "cannot reach NATS at {shown}: {}: check the server is running and the URL \
                 (--nats-url / VIBEHQ_NATS_URL), or omit it to use the embedded server",
                redact(&error.to_string())
            )
        })?;
    let info = client.server_info();
    vibehq_embedded_nats::version::check(
        &format!("the server at {shown} ({})", info.server_name),
        &info.version,
    )?;
    Ok(client)
}

/// `url` without the password (or token) of any server in it: `nats://user:***@host:4222`.
pub fn redact(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let Some((scheme, rest)) = one.split_once("://") else {
                return one.to_owned();
            };
            match rest.rsplit_once('@') {
                Some((user, host)) => {
                    let user = user.split(':').next().unwrap_or_default();
                    format!("{scheme}://{user}:***@{host}")
                }
                None => one.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deployment_example_is_a_config_vibehq_accepts() {
        let example = include_str!("../../../deploy/vibehq.example.toml");
        let file: File = toml::from_str(example).expect("deploy/vibehq.example.toml parses");
        assert_eq!((file.stream_replicas, file.lease_secs), (Some(3), Some(30)));
    }

    #[test]
    fn a_url_is_shown_without_its_password() {
        assert_eq!(
            redact("nats://svc:s3cret@n1:4222,nats://n2:4222"),
            "nats://svc:***@n1:4222,nats://n2:4222"
        );
        assert_eq!(redact("nats://n1:4222"), "nats://n1:4222");
    }
}
