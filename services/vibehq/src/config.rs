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
    /// NATS server or cluster to use (several: comma-separated; `nats://user:password@host`
    /// works too). Without it, `vibehq up` runs its own nats-server in the data folder, and the
    /// other commands use that one.
    #[arg(long, env = "VIBEHQ_NATS_URL", global = true, value_name = "URL")]
    pub nats_url: Option<String>,
    #[command(flatten)]
    pub nats: NatsFlags,
    /// Folder for the projection database and the embedded NATS store [default: .vibehq]
    #[arg(long, env = "VIBEHQ_DATA_DIR", global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Export traces over OTLP/HTTP (protobuf) to this collector, e.g. http://127.0.0.1:4318
    /// (spans go to its /v1/traces). Without it, OTEL_EXPORTER_OTLP_ENDPOINT (or
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) turns export on the same way; with neither, nothing
    /// is exported.
    #[arg(long, env = "VIBEHQ_OTLP_ENDPOINT", global = true, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

/// Credentials for a NATS server that asks for them (give one kind), and TLS.
#[derive(Debug, Clone, Args, Default)]
#[command(next_help_heading = "NATS credentials")]
pub struct NatsFlags {
    /// User name for NATS (with --nats-password).
    #[arg(long, env = "VIBEHQ_NATS_USER", global = true, value_name = "USER")]
    pub nats_user: Option<String>,
    /// Password for NATS (with --nats-user); never printed.
    #[arg(
        long,
        env = "VIBEHQ_NATS_PASSWORD",
        global = true,
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub nats_password: Option<String>,
    /// Token for NATS; never printed.
    #[arg(
        long,
        env = "VIBEHQ_NATS_TOKEN",
        global = true,
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub nats_token: Option<String>,
    /// A file holding an nkey seed (`SU…`), e.g. one `vibehq nats-auth` wrote.
    #[arg(long, env = "VIBEHQ_NATS_NKEY", global = true, value_name = "FILE")]
    pub nats_nkey: Option<PathBuf>,
    /// A `.creds` file (user JWT and seed, decentralized auth).
    #[arg(long, env = "VIBEHQ_NATS_CREDS", global = true, value_name = "FILE")]
    pub nats_creds: Option<PathBuf>,
    /// A CA certificate (PEM) to trust for NATS's TLS.
    #[arg(long, env = "VIBEHQ_NATS_TLS_CA", global = true, value_name = "FILE")]
    pub nats_tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for NATS's TLS (with --nats-tls-key).
    #[arg(long, env = "VIBEHQ_NATS_TLS_CERT", global = true, value_name = "FILE")]
    pub nats_tls_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, env = "VIBEHQ_NATS_TLS_KEY", global = true, value_name = "FILE")]
    pub nats_tls_key: Option<PathBuf>,
}

/// `vibehq up`'s own settings (flags; the same keys in the config file).
#[derive(Debug, Clone, Args, Default)]
pub struct UpFlags {
    /// Address of the HTTP API [default: 127.0.0.1:8080]
    #[arg(long, env = "VIBEHQ_HTTP_ADDR", value_name = "ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Port of the embedded nats-server, on loopback; 0 picks a free one [default: 14222]
    #[arg(long, env = "VIBEHQ_EMBEDDED_NATS_PORT", value_name = "PORT")]
    pub embedded_nats_port: Option<u16>,
    /// The nats-server executable for the embedded default (2.12 or newer) [default: nats-server]
    #[arg(long, env = "VIBEHQ_NATS_SERVER_BIN", value_name = "PATH")]
    pub nats_server_bin: Option<PathBuf>,
    /// Operators' bearer tokens for the HTTP API (comma-separated, 16+ characters): they may act
    /// as any worker. Beyond loopback the API needs tokens.
    #[arg(
        long = "api-token",
        env = "VIBEHQ_API_TOKENS",
        value_delimiter = ',',
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub api_tokens: Vec<String>,
    /// A worker's bearer token: `WORKER=TOKEN` (or `W1,W2=TOKEN`); it acts only as those
    /// workers. Repeatable.
    #[arg(
        long = "worker-token",
        env = "VIBEHQ_WORKER_TOKENS",
        value_delimiter = ';',
        value_name = "WORKERS=TOKEN",
        hide_env_values = true
    )]
    pub worker_tokens: Vec<String>,
    /// Copies of each stream: 1 on a single server, 3 on a cluster [default: 1]
    #[arg(long, env = "VIBEHQ_STREAM_REPLICAS", value_name = "N")]
    pub stream_replicas: Option<usize>,
    /// How long a claim holds a task without a heartbeat before it goes to another container
    /// [default: 30]. Every lane's consumer is set to it at start.
    #[arg(long, env = "VIBEHQ_LEASE_SECS", value_name = "SECS")]
    pub lease_secs: Option<u64>,
}

/// The config file's shape: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    nats_url: Option<String>,
    nats_user: Option<String>,
    nats_password: Option<String>,
    nats_token: Option<String>,
    nats_nkey: Option<PathBuf>,
    nats_creds: Option<PathBuf>,
    nats_tls_ca: Option<PathBuf>,
    nats_tls_cert: Option<PathBuf>,
    nats_tls_key: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    otlp_endpoint: Option<String>,
    http_addr: Option<SocketAddr>,
    embedded_nats_port: Option<u16>,
    nats_server_bin: Option<PathBuf>,
    stream_replicas: Option<usize>,
    /// How long a claim holds a task without a heartbeat (`vibehq up --lease-secs`).
    lease_secs: Option<u64>,
    #[serde(default)]
    api_tokens: Vec<String>,
    /// `[[worker_tokens]]`: `workers = ["factory-1"]`, `token = "…"`.
    #[serde(default)]
    worker_tokens: Vec<WorkerToken>,
    /// `vibehq worker`'s allow-list: `[commands.NAME]` tables.
    #[serde(default)]
    commands: BTreeMap<String, vibehq_worker::Command>,
    /// The load balancer's service: a `[balancer]` table.
    balancer: Option<Balancer>,
    /// The AI gateway: `[ai]` with `[[ai.providers]]` in fallback order.
    ai: Option<vibehq_ai::GatewayConfig>,
}

/// `[[worker_tokens]]`: a token that acts only as these workers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkerToken {
    workers: Vec<String>,
    token: String,
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
                let Some(program) = &self.program else {
                    anyhow::bail!("[balancer] program is required with the process runtime");
                };
                executable(program).context("[balancer] program")?;
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
    /// Credentials and TLS for NATS (secrets never print).
    pub nats_auth: vibehq_nats::Auth,
    pub nats_tls: vibehq_nats::Tls,
    pub data_dir: PathBuf,
    /// Where spans are exported (`--otlp-endpoint`); `None`: the OTEL_* environment decides.
    pub otlp_endpoint: Option<String>,
    pub http_addr: SocketAddr,
    pub embedded_nats_port: u16,
    pub nats_server_bin: PathBuf,
    pub stream_replicas: usize,
    /// The task queue's lease, from the config file (`vibehq up --lease-secs` overrides it).
    pub lease_secs: Option<u64>,
    /// Bearer tokens of the HTTP API (redacted in `Debug`): operators' and workers'.
    pub tokens: vibehq_api::auth::Tokens,
    /// Commands `vibehq worker` may run, from the config file.
    pub commands: BTreeMap<String, vibehq_worker::Command>,
    /// The load balancer's service, if configured.
    pub balancer: Option<Balancer>,
    /// The AI gateway's providers; none configured means AI calls answer 409 saying how.
    pub ai: vibehq_ai::GatewayConfig,
}

impl Settings {
    /// Merges defaults, the config file (if any) and flags/environment; `up` holds `vibehq
    /// up`'s own flags (other commands take those settings from the file alone).
    pub fn resolve(flags: &Flags, up: Option<&UpFlags>) -> Result<Self> {
        let file = match &flags.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str::<File>(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => File::default(),
        };
        let none = UpFlags::default();
        let up = up.unwrap_or(&none);
        let stream_replicas = up.stream_replicas.or(file.stream_replicas).unwrap_or(1);
        anyhow::ensure!(
            matches!(stream_replicas, 1 | 3 | 5),
            "stream_replicas must be 1, 3 or 5 (got {stream_replicas})"
        );
        let nats = &flags.nats;
        let nats_auth = nats_auth(
            nats.nats_user.clone().or(file.nats_user),
            nats.nats_password.clone().or(file.nats_password),
            nats.nats_token.clone().or(file.nats_token),
            nats.nats_nkey.clone().or(file.nats_nkey),
            nats.nats_creds.clone().or(file.nats_creds),
        )?;
        let cert = nats.nats_tls_cert.clone().or(file.nats_tls_cert);
        let key = nats.nats_tls_key.clone().or(file.nats_tls_key);
        let client = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => anyhow::bail!(
                "a NATS client certificate needs both --nats-tls-cert and --nats-tls-key"
            ),
        };
        let nats_tls = vibehq_nats::Tls {
            ca: nats.nats_tls_ca.clone().or(file.nats_tls_ca),
            client,
            required: false,
        };
        let admin = if up.api_tokens.is_empty() {
            file.api_tokens
        } else {
            up.api_tokens.clone()
        };
        let mut workers = Vec::new();
        if up.worker_tokens.is_empty() {
            for t in file.worker_tokens {
                workers.push((t.workers, t.token));
            }
        } else {
            for spec in &up.worker_tokens {
                let (names, token) = spec.split_once('=').ok_or_else(|| {
                    anyhow::anyhow!(
                        "--worker-token takes WORKER=TOKEN (or W1,W2=TOKEN), not {:?}",
                        "***"
                    )
                })?;
                workers.push((
                    names.split(',').map(|n| n.trim().to_owned()).collect(),
                    token.to_owned(),
                ));
            }
        }
        let tokens = tokens(admin, workers)?;
        Ok(Self {
            nats_url: flags.nats_url.clone().or(file.nats_url),
            nats_auth,
            nats_tls,
            data_dir: flags
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(".vibehq")),
            otlp_endpoint: flags.otlp_endpoint.clone().or(file.otlp_endpoint),
            http_addr: up
                .http_addr
                .or(file.http_addr)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            embedded_nats_port: up
                .embedded_nats_port
                .or(file.embedded_nats_port)
                .unwrap_or(14222),
            nats_server_bin: up
                .nats_server_bin
                .clone()
                .or(file.nats_server_bin)
                .unwrap_or_else(|| PathBuf::from("nats-server")),
            stream_replicas,
            lease_secs: up.lease_secs.or(file.lease_secs),
            tokens,
            commands: file.commands,
            balancer: file.balancer,
            ai: file.ai.unwrap_or_default(),
        })
    }

    /// How to connect to NATS at `url` with the configured credentials; a worker's connection
    /// reads its replies under its own inbox prefix (what its server permissions allow).
    pub fn connection(&self, url: &str, worker: Option<&str>) -> vibehq_nats::Connection {
        vibehq_nats::Connection {
            url: url.to_owned(),
            auth: self.nats_auth.clone(),
            tls: self.nats_tls.clone(),
            inbox_prefix: worker.map(vibehq_nats::permissions::inbox_prefix),
            name: worker.map_or_else(|| "vibehq".to_owned(), |w| format!("vibehq worker {w}")),
        }
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

/// The NATS credentials given, of which there may be one kind.
fn nats_auth(
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
    nkey: Option<PathBuf>,
    creds: Option<PathBuf>,
) -> Result<vibehq_nats::Auth> {
    use vibehq_nats::{Auth, Secret};
    let given = [
        user.is_some() || password.is_some(),
        token.is_some(),
        nkey.is_some(),
        creds.is_some(),
    ];
    anyhow::ensure!(
        given.iter().filter(|g| **g).count() <= 1,
        "give one kind of NATS credentials: --nats-user/--nats-password, --nats-token, --nats-nkey or --nats-creds"
    );
    Ok(match (user, password, token, nkey, creds) {
        (Some(user), Some(password), ..) => Auth::UserPassword {
            user,
            password: Secret::new(password),
        },
        (Some(_), None, ..) | (None, Some(_), ..) => {
            anyhow::bail!("--nats-user and --nats-password go together")
        }
        (_, _, Some(token), ..) => Auth::Token(Secret::new(token)),
        (_, _, _, Some(path), _) => {
            let seed = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read the nkey seed file {}", path.display()))?;
            Auth::Nkey(Secret::new(seed.trim()))
        }
        (_, _, _, _, Some(path)) => Auth::Creds(path),
        _ => Auth::None,
    })
}

/// The API's tokens, each at least 16 characters whichever way it came (flag, environment or
/// file), and each worker token's names valid worker names.
fn tokens(
    admin: Vec<String>,
    workers: Vec<(Vec<String>, String)>,
) -> Result<vibehq_api::auth::Tokens> {
    use vibehq_api::auth::Token;
    let checked = |token: &str| -> Result<Token> {
        let token = token.trim();
        anyhow::ensure!(
            token.len() >= 16,
            "API tokens must be at least 16 characters (one given has {})",
            token.len()
        );
        Ok(Token::new(token))
    };
    let mut tokens = vibehq_api::auth::Tokens::default();
    for token in admin {
        tokens.admin.push(checked(&token)?);
    }
    for (names, token) in workers {
        anyhow::ensure!(
            !names.is_empty(),
            "a worker token needs at least one worker name"
        );
        for name in &names {
            vibehq_events::validate_name(name)?;
        }
        tokens.workers.push((names, checked(&token)?));
    }
    Ok(tokens)
}

fn read_url(path: &Path) -> Result<String> {
    let url = std::fs::read_to_string(path)?;
    Ok(url.trim().to_owned())
}

/// Where `program` runs from: a path with a slash as it is, a bare name looked up on `PATH`;
/// an error (said at start, not when the first task or instance needs it) if it is not an
/// executable file.
pub fn executable(program: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.components().count() > 1 || program.is_absolute() {
        anyhow::ensure!(
            runnable(program),
            "{} is not an executable file",
            program.display()
        );
        return Ok(program.to_owned());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| runnable(candidate))
        .ok_or_else(|| anyhow::anyhow!("{} is not on PATH", program.display()))
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
    fn tokens_are_sixteen_characters_or_more_however_they_come() {
        assert!(tokens(vec!["short".into()], vec![]).is_err());
        assert!(tokens(vec![], vec![(vec!["w".into()], "a".into())]).is_err());
        assert!(tokens(vec![], vec![(vec!["a:b".into()], "x".repeat(16))]).is_err());
        let ok = tokens(
            vec!["x".repeat(16)],
            vec![(vec!["w".into()], "y".repeat(16))],
        )
        .expect("ok");
        assert_eq!((ok.admin.len(), ok.workers.len()), (1, 1));
    }

    #[test]
    fn one_kind_of_nats_credentials_at_a_time() {
        assert!(
            nats_auth(
                Some("u".into()),
                Some("p".into()),
                Some("t".into()),
                None,
                None
            )
            .is_err()
        );
        assert!(nats_auth(Some("u".into()), None, None, None, None).is_err());
        assert!(matches!(
            nats_auth(None, None, Some("t".into()), None, None),
            Ok(vibehq_nats::Auth::Token(_))
        ));
    }
}
