//! `vibehq key`: declare and read concurrency keys' limits, asked of a running `vibehq up`.

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use vibehq_queue::ops::Op;

use crate::config::Settings;

/// Limit how many tasks naming a concurrency key run at once, and how often they start.
///
/// A task names its key on submit (`"concurrency_key": "repo:acme/api"`). The limits hold
/// across every `vibehq up` and every claimer; a key's tasks beyond them wait, in priority
/// order, while other keys' work flows. A key never declared runs one task at a time.
///
/// Example:
///   vibehq key set repo:acme/api --concurrency 2
///   vibehq key set api:github --rate 10/60   (at most 10 starts a minute)
///   vibehq key get repo:acme/api
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct KeyArgs {
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Declare a key's limits (replacing earlier ones): waiting tasks they allow start now.
    Set {
        key: String,
        /// At most this many of its tasks run at once.
        #[arg(long)]
        concurrency: Option<u32>,
        /// At most MAX starts per SECONDS, written MAX/SECONDS (`10/60`).
        #[arg(long, value_name = "MAX/SECONDS")]
        rate: Option<String>,
    },
    /// Show a key's limits, the tasks holding it and the tasks waiting for it.
    Get {
        key: String,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(settings: Settings, args: KeyArgs) -> Result<()> {
    match args.command {
        KeyCommand::Set {
            key,
            concurrency,
            rate,
        } => {
            let rate = match rate.as_deref() {
                None => Value::Null,
                Some(text) => {
                    let (max, per) = text.split_once('/').ok_or_else(|| {
                        anyhow::anyhow!("--rate is MAX/SECONDS (10/60), not {text:?}")
                    })?;
                    let max: u64 = max
                        .trim()
                        .parse()
                        .map_err(|_| anyhow::anyhow!("--rate: {max:?} is not a count"))?;
                    let per: f64 = per
                        .trim()
                        .parse()
                        .map_err(|_| anyhow::anyhow!("--rate: {per:?} is not seconds"))?;
                    json!({ "max": max, "per_seconds": per })
                }
            };
            let mut request = json!({ "key": key, "changed_by": "cli" });
            if let Some(concurrency) = concurrency {
                request["concurrency"] = json!(concurrency);
            }
            if !rate.is_null() {
                request["rate"] = rate;
            }
            let view = crate::rpc::call(&settings, Op::SetKeyLimits, request).await?;
            println!("{}", describe(&view));
        }
        KeyCommand::Get { key, json } => {
            let view = crate::rpc::call(&settings, Op::GetKey, json!({ "key": key })).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                println!("{}", describe(&view));
                let holders: Vec<&str> = view["holders"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|h| h["task_id"].as_str())
                    .collect();
                println!("holding: {}", list(&holders));
                let waiting: Vec<&str> = view["waiting"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                println!("waiting: {}", list(&waiting));
            }
        }
    }
    Ok(())
}

/// `repo:acme/api: 2 at once, 10 starts per 60 s`.
fn describe(view: &Value) -> String {
    let mut limits = Vec::new();
    if let Some(c) = view["concurrency"].as_u64() {
        limits.push(format!("{c} at once"));
    }
    if let Some(rate) = view["rate"].as_object() {
        limits.push(format!(
            "{} starts per {} s",
            rate["max"], rate["per_seconds"]
        ));
    }
    let declared = if view["declared"] == true {
        ""
    } else {
        " (undeclared: the default)"
    };
    format!(
        "{}: {}{declared}",
        view["key"].as_str().unwrap_or("?"),
        limits.join(", ")
    )
}

fn list(ids: &[&str]) -> String {
    if ids.is_empty() {
        "none".into()
    } else {
        ids.join(", ")
    }
}
