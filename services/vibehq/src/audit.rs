//! `vibehq audit`: an aggregate's full history, read from its stream.

use std::io::Write;

use anyhow::Result;
use clap::{Args, ValueEnum};
use time::format_description::well_known::Rfc3339;
use vibehq_events::{EventLog, Recorded, StreamKind, Subject};

use crate::config::Settings;

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
    vibehq_events::subject::validate_id(&args.id)?;
    let one = |subject: Subject| (subject.stream(), subject.version());
    let (stream, filter) = match args.kind {
        AggregateKind::Task => (StreamKind::Tasks, Subject::task(&args.id)),
        AggregateKind::Instance => one(Subject::Instance(args.id.clone())),
        AggregateKind::Health => one(Subject::Health(args.id.clone())),
        AggregateKind::Pool => one(Subject::Pool(args.id.clone())),
        AggregateKind::AiTask => one(Subject::AiTask(args.id.clone())),
        AggregateKind::AiCall => one(Subject::ModelCall(args.id.clone())),
    };
    let log = EventLog::new(
        settings
            .connection(&settings.client_nats_url()?, None)
            .connect()
            .await?,
    );
    let history = log.history_of(stream, &filter, u64::MAX).await?;
    if history.is_empty() {
        anyhow::bail!("no events for {filter}");
    }
    match print(&history, args.json) {
        // A reader that stops reading (`| head`) ends the listing, not in a panic.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Prints `history`, oldest first. A task's events are folded as its lifecycle folds them, so
/// each line says what the event did: the status it moved the task to, or why it changed
/// nothing.
fn print(history: &[Recorded], json: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if !json {
        writeln!(
            out,
            "{:>6}  {:<30}  {:<24}  {:<28}  {:<10}  payload",
            "seq", "occurred_at", "type", "actor", "status"
        )?;
    }
    // What the lifecycle made of each event: the queue's timeline, which the API serves too.
    let timeline = vibehq_queue::history::entries(history);
    for (record, entry) in history.iter().zip(timeline) {
        let effect = match (entry.status, entry.refused) {
            (_, Some(refusal)) => Some(format!("refused: {refusal}")),
            (status, None) => status,
        };
        match record.decode() {
            Ok(event) => {
                let effect = effect.filter(|_| event.kind().as_str().starts_with("task."));
                if json {
                    let mut line: serde_json::Value =
                        serde_json::from_slice(&record.payload).map_err(std::io::Error::other)?;
                    line["stream_sequence"] = record.sequence.into();
                    line["subject"] = record.subject.clone().into();
                    if let Some(effect) = &effect {
                        line["effect"] = effect.clone().into();
                    }
                    writeln!(out, "{line}")?;
                } else {
                    let payload =
                        serde_json::to_string(&event.payload).map_err(std::io::Error::other)?;
                    let at = event
                        .occurred_at
                        .format(&Rfc3339)
                        .map_err(std::io::Error::other)?;
                    writeln!(
                        out,
                        "{:>6}  {:<30}  {:<24}  {:<28}  {:<10}  {payload}",
                        record.sequence,
                        at,
                        event.kind().as_str(),
                        event.actor().label(),
                        effect.unwrap_or_default(),
                    )?;
                }
            }
            Err(error) => writeln!(out, "{:>6}  (undecodable: {error})", record.sequence)?,
        }
    }
    out.flush()
}
