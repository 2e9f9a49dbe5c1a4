//! `vibehq worker`: a container's agent that pulls tasks and runs allowed commands.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio_util::sync::CancellationToken;
use vibehq_events::EventLog;
use vibehq_queue::Queue;
use vibehq_worker::{Command, Options, Worker};

use crate::config::Settings;

/// Pull tasks for a worker's container and run them.
///
/// Only allow-listed commands run: a task names a command, and `--allow NAME=PROGRAM [ARGS…]`
/// (or `[commands.NAME]` in the config file) maps it to an executable. Task parameters reach the
/// program as JSON on stdin, in `VIBEHQ_PARAMETERS`, and one by one as `VIBEHQ_PARAM_<NAME>`;
/// its stdout is the task's output, a non-zero exit fails the attempt (retried while attempts
/// remain). On SIGTERM the worker stops claiming, lets running tasks finish for `--grace-secs`,
/// then hands the rest back.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The worker this container belongs to (tasks targeted at it, or at anyone, are taken).
    #[arg(long, env = "VIBEHQ_WORKER_NAME")]
    worker_name: String,
    /// This container's name (tasks targeted at it are taken too).
    #[arg(long, env = "VIBEHQ_CONTAINER_NAME")]
    container_name: String,
    /// Tasks run at once.
    #[arg(long, env = "VIBEHQ_CONCURRENCY", default_value_t = 1)]
    concurrency: usize,
    /// Allow a command: `NAME=PROGRAM [ARG…]` (arguments split on spaces; no shell). Repeatable.
    #[arg(long = "allow", value_name = "NAME=PROGRAM [ARG…]")]
    allow: Vec<String>,
    /// Default time limit per task.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// On shutdown, how long running tasks may take before they are handed back.
    #[arg(long, default_value_t = 30)]
    grace_secs: u64,
}

pub async fn run(settings: Settings, args: WorkerArgs) -> Result<()> {
    let mut commands: BTreeMap<String, Command> = settings.commands.clone();
    for spec in &args.allow {
        let (name, command) = parse_allow(spec)?;
        commands.insert(name, command);
    }
    for (name, command) in &commands {
        crate::config::executable(&command.program)
            .with_context(|| format!("the allowed command {name:?}"))?;
    }
    let client = settings
        .connection(&settings.client_nats_url()?, Some(&args.worker_name))
        .connect()
        .await?;
    vibehq_nats::permissions::check_acts_as(&client, &args.worker_name).await?;
    // A claim's lease is its lane's (set by `vibehq up --lease-secs`); the worker heartbeats
    // well within it.
    let queue = Queue::new(EventLog::new(client), vibehq_queue::Options::default())
        .await
        .context("cannot open the task queue (is `vibehq up` running against this NATS?)")?;
    let worker = Worker::new(
        Options {
            worker_name: args.worker_name,
            container_name: args.container_name,
            concurrency: args.concurrency.max(1),
            commands,
            timeout: Duration::from_secs(args.timeout_secs),
            grace: Duration::from_secs(args.grace_secs),
        },
        queue,
    )?;
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::signals::shutdown_on_signal(shutdown.clone()));
    worker.run(shutdown).await?;
    Ok(())
}

fn parse_allow(spec: &str) -> Result<(String, Command)> {
    let Some((name, program)) = spec.split_once('=') else {
        bail!("--allow {spec:?}: expected NAME=PROGRAM [ARG…]");
    };
    let mut parts = program.split_whitespace();
    let Some(program) = parts.next() else {
        bail!("--allow {spec:?}: no program after '='");
    };
    if name.trim().is_empty() {
        bail!("--allow {spec:?}: no command name before '='");
    }
    Ok((
        name.trim().to_owned(),
        Command {
            program: PathBuf::from(program),
            args: parts.map(str::to_owned).collect(),
            timeout_secs: None,
        },
    ))
}
