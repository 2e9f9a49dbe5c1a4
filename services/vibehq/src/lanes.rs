//! `vibehq lanes`: the task lanes on the server, and removing idle ones.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use time::format_description::well_known::Rfc3339;
use vibehq_events::EventLog;
use vibehq_queue::inventory;

use crate::config::Settings;

/// List the task lanes (one durable consumer per priority band and target) or remove idle ones.
///
/// A lane's consumer is created by the first submission into it and stays, so a container
/// that comes back finds the work that waited for it. `prune` removes lanes with nothing
/// pending or outstanding and no activity for --idle: nothing is lost (submissions stay in the
/// stream, and the lane's next submission creates it again).
#[derive(Debug, Args)]
pub struct LanesArgs {
    #[command(subcommand)]
    command: Option<LanesCommand>,
    /// Print JSON lines instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum LanesCommand {
    /// List every lane with what it holds (the default).
    List,
    /// Remove lanes idle for --idle (e.g. 30m, 24h, 7d).
    Prune {
        #[arg(long, value_parser = parse_duration, default_value = "24h")]
        idle: Duration,
        /// Only say which lanes would go.
        #[arg(long)]
        dry_run: bool,
    },
    /// Create the lane of every submission that has none (after restoring or promoting the
    /// streams: consumers are not part of a stream's data).
    Restore {
        /// The lease of the lanes it creates (as `vibehq up --lease-secs`).
        #[arg(long, default_value_t = 30)]
        lease_secs: u64,
    },
}

pub async fn run(settings: Settings, args: LanesArgs) -> Result<()> {
    let client = settings
        .connection(&settings.client_nats_url()?, None)
        .connect()
        .await?;
    let log = EventLog::new(client);
    match args.command.unwrap_or(LanesCommand::List) {
        LanesCommand::List => {
            let lanes = inventory::list(&log).await?;
            if args.json {
                for lane in &lanes {
                    println!("{}", serde_json::to_string(lane)?);
                }
                return Ok(());
            }
            println!(
                "{:<28} {:>8} {:>11} {:>6}  LAST ACTIVE",
                "LANE", "PENDING", "OUTSTANDING", "LEASE"
            );
            for lane in &lanes {
                println!(
                    "{:<28} {:>8} {:>11} {:>5}s  {}",
                    lane.lane,
                    lane.pending,
                    lane.outstanding,
                    lane.lease_secs,
                    lane.last_active.format(&Rfc3339)?
                );
            }
        }
        LanesCommand::Restore { lease_secs } => {
            eprintln!("reading every submission's lane…");
            let created = inventory::restore(&log, Duration::from_secs(lease_secs)).await?;
            for lane in &created {
                println!("created {lane}");
            }
            println!("{} lanes created", created.len());
        }
        LanesCommand::Prune { idle, dry_run } => {
            if !dry_run {
                eprintln!("removing lanes idle for {idle:?}; then checking for late submissions…");
            }
            let pruned = inventory::prune(&log, idle, dry_run).await?;
            if args.json {
                println!("{}", serde_json::to_string(&pruned)?);
                return Ok(());
            }
            let verb = if dry_run { "would remove" } else { "removed" };
            for lane in &pruned.removed {
                println!("{verb} {lane}");
            }
            for lane in &pruned.recreated {
                println!("created {lane} again: a submission reached it meanwhile");
            }
            if pruned.removed.is_empty() {
                println!("no lane has been idle for {idle:?}");
            }
        }
    }
    Ok(())
}

/// `90s`, `30m`, `24h`, `7d`.
fn parse_duration(text: &str) -> Result<Duration> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let Ok(number) = number.parse::<u64>() else {
        bail!("{text:?} is not a duration: write a number and a unit, e.g. 30m, 24h or 7d");
    };
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("{text:?}: the unit must be s, m, h or d (e.g. 24h)"),
    };
    Ok(Duration::from_secs(number.saturating_mul(seconds)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_operators_write_them() {
        assert_eq!(
            parse_duration("24h").expect("ok"),
            Duration::from_secs(86_400)
        );
        assert_eq!(parse_duration("90s").expect("ok"), Duration::from_secs(90));
        assert!(parse_duration("24").is_err());
        assert!(parse_duration("yesterday").is_err());
    }
}
