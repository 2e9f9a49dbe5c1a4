//! `vibehq replay`: rebuild a projection from the streams.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use vibehq_events::{EventLog, StreamKind};
use vibehq_projector::{ReplayOptions, Until};

use crate::config::Settings;

/// Rebuild a projection database from the event streams.
///
/// The result equals the live projection as of the chosen point, table for table. Use it to
/// recover a lost or corrupt projection, to inspect the past ("what did the queue look like at
/// 10:00?"), or to build a copy for analysis.
///
/// With --verify, proves it: the live projection (the data folder's, or --database) is copied
/// as one snapshot, the streams are replayed to exactly its sequences, and every table is
/// compared by a SHA-256 of its rows; the first row that differs is named, and the exit code
/// is non-zero.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The new database file (must not exist).
    #[arg(long, value_name = "FILE", required_unless_present = "verify")]
    into: Option<PathBuf>,
    /// Compare the live projection with a replay to its sequences, table by table.
    #[arg(long, conflicts_with_all = ["into", "until", "until_seq", "stream"])]
    verify: bool,
    /// The live projection to verify [default: the data folder's projection.sqlite3]
    #[arg(long, value_name = "FILE", requires = "verify")]
    database: Option<PathBuf>,
    /// Stop after this stream sequence: `N` for every stream, or `STREAM=N` (repeatable;
    /// streams: tasks, containers, ai).
    #[arg(long, value_name = "[STREAM=]N", conflicts_with = "until")]
    until_seq: Vec<String>,
    /// Stop at events stored after this time (RFC 3339, e.g. 2026-11-26T10:00:00Z).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Replay only these streams (repeatable) [default: all]
    #[arg(long, value_name = "STREAM")]
    stream: Vec<String>,
}

pub async fn run(settings: Settings, args: ReplayArgs) -> Result<()> {
    if args.verify {
        return verify(&settings, args.database.as_deref()).await;
    }
    let into = args
        .into
        .clone()
        .unwrap_or_else(|| unreachable!("clap requires --into without --verify"));
    let streams = if args.stream.is_empty() {
        StreamKind::ALL.to_vec()
    } else {
        args.stream
            .iter()
            .map(|s| parse_stream(s))
            .collect::<Result<_>>()?
    };
    let until = if let Some(time) = &args.until {
        Until::Time(OffsetDateTime::parse(time, &Rfc3339).with_context(|| {
            format!("--until {time:?} is not a time: write RFC 3339, e.g. 2026-11-26T10:00:00Z")
        })?)
    } else if !args.until_seq.is_empty() {
        let mut limits = BTreeMap::new();
        for spec in &args.until_seq {
            match spec.split_once('=') {
                Some((stream, n)) => {
                    limits.insert(parse_stream(stream)?, parse_seq(n)?);
                }
                None => {
                    let n = parse_seq(spec)?;
                    for stream in &streams {
                        limits.insert(*stream, n);
                    }
                }
            }
        }
        Until::Sequence(limits)
    } else {
        Until::End
    };
    let log = EventLog::new(
        settings
            .connection(&settings.client_nats_url()?, None)
            .connect()
            .await?,
    );
    let mut last_print = Instant::now();
    let mut stderr = std::io::stderr();
    let (totals, checkpoints, elapsed) = vibehq_projector::replay(
        &log,
        ReplayOptions {
            into: into.clone(),
            streams: streams.clone(),
            until,
        },
        |p| {
            if last_print.elapsed() >= Duration::from_millis(500) || p.read >= p.end {
                let pct = (p.read * 100).checked_div(p.end).unwrap_or(100);
                let _ = write!(
                    stderr,
                    "\r{:>10}: {}/{} ({pct}%)   ",
                    p.stream, p.read, p.end
                );
                if p.read >= p.end {
                    let _ = writeln!(stderr);
                }
                last_print = Instant::now();
            }
        },
    )
    .await?;
    let total = totals.applied + totals.rejected;
    let rate = total as f64 / elapsed.as_secs_f64().max(1e-9);
    println!(
        "replayed {total} events into {} in {:.2}s ({rate:.0} events/s): {} applied, {} rejected",
        into.display(),
        elapsed.as_secs_f64(),
        totals.applied,
        totals.rejected
    );
    for stream in streams {
        println!(
            "  {:<10} through sequence {}",
            stream.short_name(),
            checkpoints.get(stream)
        );
    }
    Ok(())
}

async fn verify(settings: &Settings, database: Option<&std::path::Path>) -> Result<()> {
    let live = database.map_or_else(|| settings.projection_path(), std::path::Path::to_path_buf);
    if !live.exists() {
        bail!(
            "no projection at {}: give --database, or --data-dir of a `vibehq up`",
            live.display()
        );
    }
    let log = EventLog::new(
        settings
            .connection(&settings.client_nats_url()?, None)
            .connect()
            .await?,
    );
    let scratch = tempfile::Builder::new()
        .prefix("vibehq-verify-")
        .tempdir()
        .context("cannot make a scratch directory")?;
    eprintln!("verifying {} against a replay…", live.display());
    let verification = vibehq_projector::verify::verify(&log, &live, scratch.path()).await?;
    let at: Vec<String> = StreamKind::ALL
        .iter()
        .map(|s| format!("{}={}", s.short_name(), verification.checkpoints.get(*s)))
        .collect();
    println!("at {}", at.join(" "));
    for check in &verification.tables {
        let mark = if check.matches() { "ok" } else { "DIFFERS" };
        println!(
            "{mark:<8} {:<26} {:>8} rows  sha256 {}",
            check.table,
            check.rows,
            &check.live[..16]
        );
    }
    for (what, why) in vibehq_projector::verify::LEFT_OUT {
        println!("         (left out: {what}: {why})");
    }
    match &verification.first_difference {
        None => {
            println!("the live projection equals a replay of the streams");
            Ok(())
        }
        Some(difference) => {
            let kept = scratch.keep();
            let show = |row: &Option<serde_json::Map<String, serde_json::Value>>| {
                row.as_ref().map_or_else(
                    || "(no such row)".to_owned(),
                    |r| serde_json::Value::Object(r.clone()).to_string(),
                )
            };
            println!("first difference: {}, {}", difference.table, difference.row);
            println!("  live:     {}", show(&difference.live));
            println!("  replayed: {}", show(&difference.replayed));
            println!("(both files are kept in {})", kept.display());
            bail!(
                "the live projection differs from a replay of the streams: {} ({})",
                difference.table,
                difference.row
            )
        }
    }
}

fn parse_stream(name: &str) -> Result<StreamKind> {
    match StreamKind::from_name(name) {
        Some(stream) => Ok(stream),
        None => bail!("unknown stream {name:?}: use tasks, containers or ai"),
    }
}

fn parse_seq(n: &str) -> Result<u64> {
    n.parse()
        .with_context(|| format!("{n:?} is not a stream sequence (a non-negative integer)"))
}
