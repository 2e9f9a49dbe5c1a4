//! `vibehq audit`: an aggregate's full history, read from its stream.

use anyhow::Result;
use clap::{Args, ValueEnum};
use time::format_description::well_known::Rfc3339;
use vibehq_events::{EventLog, Subject};

use crate::config::{Settings, connect};

/// Print an aggregate's full event history from the stream (not the projection).
///
/// Every event is shown with its stream sequence, the time it happened, who recorded it
/// (worker:container), its type and its payload, oldest first. The stream is the record of
/// truth, so this is what happened even if a projection is stale or lost.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// What kind of aggregate.
    #[arg(value_enum)]
    kind: AggregateKind,
    /// Its id (e.g. the task_id).
    id: String,
    /// Print one JSON event per line instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AggregateKind {
    /// A queued task (`container_tasks`).
    Task,
    /// A container instance's lifecycle.
    Instance,
    /// A container instance's health probes.
    Health,
    /// A pool's scaling (`<worker_name>-<container_name>`).
    Pool,
    /// An agent task and its approvals.
    AiTask,
    /// An AI gateway request: every provider it tried.
    AiCall,
}

pub async fn run(settings: Settings, args: AuditArgs) -> Result<()> {
    let subject = match args.kind {
        AggregateKind::Task => Subject::Task(args.id),
        AggregateKind::Instance => Subject::Instance(args.id),
        AggregateKind::Health => Subject::Health(args.id),
        AggregateKind::Pool => Subject::Pool(args.id),
        AggregateKind::AiTask => Subject::AiTask(args.id),
        AggregateKind::AiCall => Subject::ModelCall(args.id),
    };
    let log = EventLog::new(connect(&settings.client_nats_url()?).await?);
    let history = log.history(&subject).await?;
    if history.is_empty() {
        anyhow::bail!("no events for {subject}");
    }
    if !args.json {
        println!(
            "{:>6}  {:<30}  {:<24}  {:<28}  payload",
            "seq", "occurred_at", "type", "actor"
        );
    }
    for record in &history {
        match record.decode() {
            Ok(event) => {
                let actor = match &event.container_name {
                    Some(c) => format!("{}:{c}", event.worker_name),
                    None => event.worker_name.clone(),
                };
                let payload = serde_json::to_string(&event.payload)?;
                if args.json {
                    let mut line: serde_json::Value = serde_json::from_slice(&record.payload)?;
                    line["stream_sequence"] = record.sequence.into();
                    println!("{line}");
                } else {
                    println!(
                        "{:>6}  {:<30}  {:<24}  {:<28}  {payload}",
                        record.sequence,
                        event.occurred_at.format(&Rfc3339)?,
                        event.kind().as_str(),
                        actor,
                    );
                }
            }
            Err(error) => println!("{:>6}  (undecodable: {error})", record.sequence),
        }
    }
    Ok(())
}
