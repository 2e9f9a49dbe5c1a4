//! `vibehq why`: why a task is still pending, asked of a running `vibehq up` over NATS.

use anyhow::Result;
use clap::Args;
use serde_json::Value;

use crate::config::Settings;

/// Say why a task is still pending: every reason, with its evidence.
///
/// The reasons: its last attempt's backoff has not passed; its lane has no consumer on the
/// server; its lane holds work nobody has pulled for a while (no claimer that may take it is
/// running); tasks ahead of it at a higher priority or earlier in its lane. Asked of a running
/// `vibehq up` (the `whyPending` operation of ContainerTaskQueueOps), which reads the task's
/// events, its lane and the projection.
#[derive(Debug, Args)]
pub struct WhyArgs {
    /// The task's id.
    task_id: String,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(settings: Settings, args: WhyArgs) -> Result<()> {
    vibehq_events::subject::validate_id(&args.task_id)?;
    let request = serde_json::json!({ "task_id": args.task_id });
    let why = crate::rpc::call(&settings, vibehq_queue::ops::Op::WhyPending, request).await?;
    if args.json {
        println!("{why}");
        return Ok(());
    }
    println!("{}", describe(&why));
    Ok(())
}

/// The answer in words, one reason a line.
fn describe(why: &Value) -> String {
    let task = why["task_id"].as_str().unwrap_or("?");
    let status = why["status"].as_str().unwrap_or("?");
    let lane = why["lane"].as_str().unwrap_or("?");
    if status != "pending" {
        return format!("{task} is {status}, not pending");
    }
    let reasons = why["reasons"].as_array().cloned().unwrap_or_default();
    if reasons.is_empty() {
        return format!(
            "{task} is pending in lane {lane} and nothing holds it back: it is about to be claimed"
        );
    }
    let mut text = format!("{task} is pending in lane {lane} because:");
    for reason in reasons {
        let line = match reason["reason"].as_str().unwrap_or("") {
            "waiting_on" => format!(
                "it waits for {}",
                reason["tasks"]
                    .as_array()
                    .map(|tasks| tasks
                        .iter()
                        .map(|t| format!(
                            "{} ({})",
                            t["task_id"].as_str().unwrap_or("?"),
                            t["status"].as_str().unwrap_or("?")
                        ))
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default()
            ),
            "paused" => format!(
                "its lane is paused ({}) until it is resumed",
                reason["scope"].as_str().unwrap_or("?")
            ),
            "key_at_limit" => format!(
                "its key {} runs {} at once, held by {}",
                reason["key"].as_str().unwrap_or("?"),
                reason["concurrency"],
                reason["held_by"]
                    .as_array()
                    .map(|ids| ids
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default()
            ),
            "rate_limited" => format!(
                "its key {}'s rate limit lets it start at {}",
                reason["key"].as_str().unwrap_or("?"),
                reason["until"].as_str().unwrap_or("?")
            ),
            "not_due" => format!(
                "it is delayed until {}",
                reason["run_at"].as_str().unwrap_or("?")
            ),
            "backoff" => format!(
                "its attempt {} waits out its backoff until {}",
                reason["attempt"],
                reason["retry_at"].as_str().unwrap_or("?")
            ),
            "no_lane" => format!(
                "its lane has no consumer on the server ({}); the next submission into it creates one",
                reason["consumer"].as_str().unwrap_or("?")
            ),
            "no_claimer" => format!(
                "no claimer that may take it has pulled its lane for {} s ({} waiting, last active {})",
                reason["idle_secs"],
                reason["undelivered"],
                reason["last_active"].as_str().unwrap_or("?")
            ),
            "ahead" => format!(
                "{} pending tasks of a higher priority and {} earlier ones in its lane go first",
                reason["higher_priority"], reason["earlier_in_lane"]
            ),
            other => format!("{other}: {reason}"),
        };
        text.push_str("\n  - ");
        text.push_str(&line);
    }
    text
}
