//! Shared helpers: a live projector over a test server, a queue with its dispatcher and its HTTP
//! routes, projection dumps, the `vibehq` binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use vibehq_events::{Envelope, EventLog, Expect, StreamKind};
use vibehq_projector::{Handle, Options, Projector, Reader, query};
use vibehq_queue::QueueState;
use vibehq_queue::{Actor, NewTask, Queue};
use vibehq_test_support::NatsServer;

/// A test server with streams, and a projector running in this process.
pub struct Live {
    pub nats: NatsServer,
    pub log: EventLog,
    pub database: PathBuf,
    pub handle: Handle,
    stop: CancellationToken,
    task:
        Option<tokio::task::JoinHandle<Result<vibehq_projector::Totals, vibehq_projector::Error>>>,
}

impl Live {
    pub async fn start() -> Self {
        Self::on(NatsServer::start().await).await
    }

    /// A projector over `nats` (with streams).
    pub async fn on(nats: NatsServer) -> Self {
        let log = EventLog::new(nats.connect().await);
        log.ensure_streams(1).await.expect("streams");
        let database = nats.scratch().join("live.sqlite3");
        let (projector, handle) =
            Projector::new(Options::new(&database), log.clone()).expect("projector");
        let stop = CancellationToken::new();
        let task = Some(tokio::spawn(projector.run(stop.clone())));
        Self {
            nats,
            log,
            database,
            handle,
            stop,
            task,
        }
    }

    /// Appends `events` and waits until the projection has applied them all.
    pub async fn append_and_project(&self, events: &[Envelope]) {
        let appended = self.log.append_all(events).await.expect("append");
        let mut last: BTreeMap<StreamKind, u64> = BTreeMap::new();
        for a in appended {
            let seq = last.entry(a.stream).or_default();
            *seq = (*seq).max(a.sequence);
        }
        for (stream, seq) in last {
            self.caught_up(stream, seq).await;
        }
    }

    pub async fn caught_up(&self, stream: StreamKind, sequence: u64) {
        assert!(
            self.handle
                .wait_for(stream, sequence, Duration::from_secs(20))
                .await,
            "projection did not reach {stream} #{sequence}; at {:?}",
            self.handle.checkpoints()
        );
    }

    pub fn reader(&self) -> Reader {
        Reader::new(&self.database)
    }

    /// Stops the projector gracefully and returns what it did.
    pub async fn stop(mut self) -> (vibehq_projector::Totals, Self) {
        self.stop.cancel();
        let totals = self
            .task
            .take()
            .expect("running")
            .await
            .expect("join")
            .expect("projector result");
        (totals, self)
    }
}

pub async fn append_one(log: &EventLog, event: &Envelope) -> u64 {
    log.append(event, Expect::Any)
        .await
        .expect("append")
        .sequence
}

/// Every row of every domain table, plus rejected messages keyed by stream position (their row
/// ids depend on how streams interleaved, which a replay does not reproduce).
pub type Dump = BTreeMap<&'static str, Vec<Map<String, Value>>>;

pub fn dump(path: &Path) -> Dump {
    let conn = vibehq_projector::db::open_reader(path).expect("open");
    let mut out = BTreeMap::new();
    for table in query::TABLES {
        let mut rows = query::dump(&conn, table).expect("dump");
        if table.name == "projector_rejected" {
            for row in &mut rows {
                row.remove("id");
            }
            rows.sort_by_key(|r| (r["stream_name"].to_string(), r["stream_sequence"].as_i64()));
        }
        out.insert(table.name, rows);
    }
    out
}

pub fn checkpoints(path: &Path) -> vibehq_projector::Checkpoints {
    let conn = vibehq_projector::db::open_reader(path).expect("open");
    vibehq_projector::db::load_checkpoints(&conn).expect("checkpoints")
}

/// The `vibehq` binary built for these tests.
pub fn vibehq() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vibehq"));
    cmd.env_remove("VIBEHQ_NATS_URL")
        .env_remove("VIBEHQ_CONFIG")
        .env("VIBEHQ_LOG", "info")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// A running `vibehq up` process and the HTTP address it reported.
pub struct UpProcess {
    pub child: Child,
    pub http: String,
}

impl UpProcess {
    /// Starts `vibehq up` with JSON logs and `--http-addr 127.0.0.1:0`, and waits (on its log,
    /// not by polling) until the HTTP API is listening.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Self {
        let mut child = vibehq()
            .args(["up", "--log-format", "json", "--http-addr", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vibehq up");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        let http = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                seen.push(line.clone());
                let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if entry["fields"]["message"] == "HTTP API listening" {
                    return entry["fields"]["addr"].as_str().map(str::to_owned);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("vibehq up did not start; it logged:\n{}", seen.join("\n")));
        let keep = std::env::var("VIBEHQ_TEST_UP_LOG").ok();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut file = match keep {
                Some(path) => tokio::fs::File::create(path).await.ok(),
                None => None,
            };
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(file) = file.as_mut() {
                    let _ = file.write_all(format!("{line}\n").as_bytes()).await;
                }
            }
        });
        Self {
            child,
            http: format!("http://{http}"),
        }
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id().expect("running") as i32)
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), signal).expect("signal");
    }
}

pub async fn get_json(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.expect("GET");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// A queue over a test server.
pub struct Harness {
    _nats: Option<NatsServer>,
    pub log: EventLog,
    pub queue: Queue,
}

impl Harness {
    pub async fn start(options: vibehq_queue::Options) -> Self {
        let nats = NatsServer::start().await;
        let log = EventLog::new(nats.connect().await);
        log.ensure_streams(1).await.expect("streams");
        Self::on(Some(nats), log, options).await
    }

    pub async fn on(
        nats: Option<NatsServer>,
        log: EventLog,
        options: vibehq_queue::Options,
    ) -> Self {
        let queue = Queue::new(log.clone(), options).await.expect("queue");
        Self {
            _nats: nats,
            log,
            queue,
        }
    }

    /// Submits `tasks` one by one (each is claimable once its submission is answered).
    pub async fn submit_all(&self, tasks: Vec<NewTask>) -> Vec<String> {
        let by = Actor::worker("orchestrator");
        let mut ids = Vec::new();
        for task in tasks {
            ids.push(self.queue.submit(&by, task).await.expect("submit").task_id);
        }
        ids
    }
}

/// The REST API over a live projector and queue.
pub async fn serve() -> (Live, Harness, String) {
    serve_on(Live::start().await, vibehq_api::auth::Tokens::default()).await
}

/// The REST API over `live`, answering only requests with one of `tokens` (if any).
pub async fn serve_on(live: Live, tokens: vibehq_api::auth::Tokens) -> (Live, Harness, String) {
    let harness = Harness::on(None, live.log.clone(), vibehq_queue::Options::default()).await;
    let state = vibehq_api::AppState {
        reader: live.reader(),
        projector: live.handle.clone(),
        log: live.log.clone(),
        nats_url: live.nats.url(),
    };
    let queue_routes = vibehq_queue::http::router(queue_state(&live, &harness));
    let doc = <vibehq_queue::http::QueueDoc as utoipa::OpenApi>::openapi();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let app =
        vibehq_api::auth::protect(vibehq_api::router(state, vec![(queue_routes, doc)]), tokens);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (live, harness, base)
}

/// What the queue's REST routes and RPC service share, over `live`'s projection.
pub fn queue_state(live: &Live, harness: &Harness) -> QueueState {
    QueueState {
        queue: harness.queue.clone(),
        reader: live.reader(),
        projector: live.handle.clone(),
    }
}

/// POSTs `body` as JSON; the status, and the answer as JSON (null if it is not).
pub async fn post(url: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A plain NATS request: the JSON answer, or the service error's code and JSON description.
pub async fn call(
    client: &async_nats::Client,
    subject: &str,
    payload: bytes::Bytes,
) -> Result<Value, (u16, Value)> {
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(subject.to_owned(), payload),
    )
    .await
    .expect("an answer in time")
    .expect("an answer");
    let header = |name: &str| {
        reply
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    match header("Nats-Service-Error-Code") {
        Some(code) => Err((
            code.parse().expect("a numeric code"),
            serde_json::from_str(&header("Nats-Service-Error").expect("a description"))
                .expect("a JSON description"),
        )),
        None => Ok(serde_json::from_slice(&reply.payload).expect("a JSON answer")),
    }
}

/// Runs an outside client (`python3 script`, `node script`) from the repository with `env`,
/// which must succeed; its stdout.
pub async fn outside_client(program: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = Command::new(program)
        .args(args)
        .current_dir(&root)
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap_or_else(|e| panic!("{program} runs (tests/run.sh installs the clients): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{program} {args:?}:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A loopback port free right now (for a balancer's proxy, which `vibehq up` binds itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Writes `dir/vibehq.toml` for a whole `vibehq up`: a load balancer of `vibehq-echo`
/// instances and the AI gateway on `fake`, after `prelude` (top-level keys such as
/// `api_tokens`). Returns the file's path.
pub fn whole_system_config(
    dir: &Path,
    fake: &vibehq_test_support::openai::FakeOpenAi,
    prelude: &str,
) -> PathBuf {
    let config = dir.join("vibehq.toml");
    std::fs::write(
        &config,
        format!(
            r#"{prelude}
[balancer]
program = "{echo}"
instances = 1
max_instances = 4
worker_name = "web"
container_name = "api"
proxy_addr = "127.0.0.1:{proxy}"
health_interval_ms = 200

[ai]
[[ai.providers]]
name = "fake"
kind = "openai"
base_url = "{openai}"
model = "fake-large"
small_model = "fake-small"
"#,
            echo = crate::balancer::echo().display(),
            proxy = free_port(),
            openai = fake.url(),
        ),
    )
    .expect("write the config");
    config
}
