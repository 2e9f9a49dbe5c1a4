//! `vibehq pause` and `vibehq resume`: hold back a scope of work and let it go, asked of a
//! running `vibehq up`.

use anyhow::Result;
use clap::Args;
use serde_json::json;
use vibehq_queue::ops::Op;

use crate::config::Settings;

/// Hold back a scope of work: `all`, or `worker:<name>` (the work targeted at that worker and
/// its containers).
///
/// No claimer in any process is handed the scope's tasks until it is resumed; they stay
/// pending in their lanes (the lanes' consumers are paused on the NATS server), and `vibehq
/// why` says so. The pause is the event `queue.paused`, on `/ws/tasks` and in
/// `container_task_pauses`.
#[derive(Debug, Args)]
pub struct PauseArgs {
    /// `all` or `worker:<name>`.
    scope: String,
    /// Why, recorded with the pause.
    #[arg(long)]
    reason: Option<String>,
}

/// Let a paused scope's work flow again (lanes another paused scope covers stay paused).
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// `all` or `worker:<name>`.
    scope: String,
}

pub async fn pause(settings: Settings, args: PauseArgs) -> Result<()> {
    let request = json!({ "scope": args.scope, "reason": args.reason, "paused_by": "cli" });
    let state = crate::rpc::call(&settings, Op::PauseQueue, request).await?;
    println!(
        "paused {} ({} lanes paused)",
        args.scope, state["lanes_changed"]
    );
    Ok(())
}

pub async fn resume(settings: Settings, args: ResumeArgs) -> Result<()> {
    let request = json!({ "scope": args.scope, "resumed_by": "cli" });
    let state = crate::rpc::call(&settings, Op::ResumeQueue, request).await?;
    println!(
        "resumed {} ({} lanes resumed)",
        args.scope, state["lanes_changed"]
    );
    Ok(())
}
