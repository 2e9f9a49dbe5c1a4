//! `vibehq`: the control plane binary.
//!
//! `vibehq up` runs everything (embedded NATS unless `--nats-url` is given, the streams, the
//! projector and the HTTP API); the other subcommands are tools over the same event log, except
//! `vibehq ai`, a client of a running `vibehq up`'s AI API.

mod ai;
mod audit;
mod cancel;
mod config;
mod key;
mod lanes;
mod nats_auth;
mod new;
mod pause;
mod readme;
mod replay;
mod rpc;
mod schedule;
mod signals;
mod telemetry;
mod up;
mod why;
mod worker;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

/// Control plane for a fleet of workers and containers, event-sourced on NATS JetStream.
///
/// Every change is an event in a JetStream stream; SQLite projections of the central
/// (D1-compatible) schema are built from the streams and served over HTTP. Start with
/// `vibehq up`, then open http://127.0.0.1:8080/health.
///
/// Settings come from flags, `VIBEHQ_*` environment variables and a TOML file (--config), in
/// that order of precedence.
#[derive(Debug, Parser)]
// The global flags sort after each subcommand's own in its --help.
#[command(
    name = "vibehq",
    version,
    propagate_version = true,
    next_display_order = 100
)]
struct Cli {
    #[command(flatten)]
    flags: config::Flags,
    /// Log format.
    #[arg(
        long,
        env = "VIBEHQ_LOG_FORMAT",
        global = true,
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane: NATS (embedded by default), streams, projector, HTTP API, task
    /// queue, load balancer, AI operations.
    ///
    /// Without --nats-url, a local nats-server (2.12 or newer) with JetStream is started with
    /// its store in the data folder, listening on loopback only. The RPC services
    /// (ContainerTaskQueueOps, ContainerLoadBalancerOps, AIOps) always run; instances and
    /// their proxy run when the config file has a [balancer] table (see README "Load
    /// balancer"). Stops cleanly on Ctrl-C or SIGTERM, stopping the instances it started.
    Up(config::UpFlags),
    Worker(worker::WorkerArgs),
    Replay(replay::ReplayArgs),
    Audit(audit::AuditArgs),
    Cancel(cancel::CancelArgs),
    Why(why::WhyArgs),
    Schedule(schedule::ScheduleArgs),
    Pause(pause::PauseArgs),
    Resume(pause::ResumeArgs),
    Key(key::KeyArgs),
    /// Call a running `vibehq up`'s AI API from a terminal: ask a model, route a prompt, get
    /// structured output, call tools, run a tool loop, evaluate, and plan with approvals.
    ///
    /// Each subcommand is one request to `/api/ai/…` at --url (default: http://<--http-addr>),
    /// made as --worker-name ("cli" unless set). `ask` and `run` print the answer as it is
    /// written. A refusal prints the server's message and the field at fault and exits non-zero;
    /// --json prints the server's answer as it is.
    Ai(ai::AiArgs),
    New(new::NewArgs),
    NatsAuth(nats_auth::NatsAuthArgs),
    Lanes(lanes::LanesArgs),
    /// Apply the schema migrations to a SQLite file (creating it), e.g. to inspect the schema.
    Migrate {
        /// The database file.
        #[arg(long, value_name = "FILE")]
        database: std::path::PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let up = match &cli.command {
        Command::Up(flags) => Some(flags),
        _ => None,
    };
    let started = config::Settings::resolve(&cli.flags, up).and_then(|settings| {
        let service = match cli.command {
            Command::Up(_) => "vibehq",
            Command::Worker(_) => "vibehq-worker",
            _ => telemetry::CLI_SERVICE,
        };
        let telemetry =
            telemetry::init(cli.log_format, settings.otlp_endpoint.as_deref(), service)?;
        Ok((settings, telemetry))
    });
    let outcome = match started {
        Ok((settings, telemetry)) => {
            let outcome = run(cli.command, settings).await;
            telemetry.shutdown();
            outcome
        }
        Err(error) => Err(error),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", explain(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: config::Settings) -> Result<()> {
    match command {
        Command::Up(_) => up::run(settings).await,
        Command::Worker(args) => worker::run(settings, args).await,
        Command::Replay(args) => replay::run(settings, args).await,
        Command::Audit(args) => audit::run(settings, args).await,
        Command::Cancel(args) => cancel::run(settings, args).await,
        Command::Why(args) => why::run(settings, args).await,
        Command::Schedule(args) => schedule::run(settings, args).await,
        Command::Pause(args) => pause::pause(settings, args).await,
        Command::Resume(args) => pause::resume(settings, args).await,
        Command::Key(args) => key::run(settings, args).await,
        Command::Ai(args) => ai::run(settings, args).await,
        Command::New(args) => new::run(settings, args).await,
        Command::NatsAuth(args) => nats_auth::run(args),
        Command::Lanes(args) => lanes::run(settings, args).await,
        Command::Migrate { database } => {
            let mut conn = rusqlite::Connection::open(&database)?;
            let applied = vibehq_schemas::migrate(&mut conn)?;
            println!("{}: applied {applied:?}", database.display());
            Ok(())
        }
    }
}

/// The error and its causes, each said once: many errors quote their source in their own
/// message, so a cause already in the text before it is left out.
fn explain(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    text
}
