//! `vibehq cancel`: end a task that has not ended, from a terminal.

use anyhow::Result;
use clap::Args;
use vibehq_events::{Actor, EventLog};
use vibehq_queue::Queue;

use crate::config::Settings;

/// Cancel a task: a pending one is never handed out, a running one's program is killed by its
/// worker within moments (the worker is told on NATS), and the task ends `cancelled`.
///
/// The cancellation is recorded as made by --worker-name (an operator's name; "cli" unless
/// set). Cancelling a task that already ended is refused, naming its state.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The task's id.
    task_id: String,
    /// Why, recorded with the cancellation and shown in the task's history.
    #[arg(long)]
    reason: Option<String>,
    /// Who cancels, as recorded in the event.
    #[arg(long, env = "VIBEHQ_WORKER_NAME", default_value = "cli")]
    worker_name: String,
}

pub async fn run(settings: Settings, args: CancelArgs) -> Result<()> {
    vibehq_events::subject::validate_id(&args.task_id)?;
    let by = Actor::new(&args.worker_name, None);
    by.validate()?;
    let client = settings
        .connection(&settings.client_nats_url()?, None)
        .connect()
        .await?;
    let queue = Queue::new(EventLog::new(client), vibehq_queue::Options::default()).await?;
    let sequence = queue.cancel(&args.task_id, &by, args.reason).await?;
    println!("cancelled {} (event #{sequence})", args.task_id);
    Ok(())
}
