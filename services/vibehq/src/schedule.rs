//! `vibehq schedule`: recurring schedules from a terminal, asked of a running `vibehq up`.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};
use vibehq_queue::ops::Op;

use crate::config::Settings;
use crate::rpc;

/// Create, list, inspect, pause, resume, delete and run recurring schedules.
///
/// A schedule submits a task from its template at each time of a cron expression (in a time
/// zone) or every so many seconds. The clock is the NATS server's (a message schedule), so
/// schedules keep time across restarts of vibehq; a firing while vibehq is down is handled
/// when it is back, by the schedule's misfire policy. Each firing, run or skipped, is a row
/// of `container_task_schedule_firings`. Every command is one request to a running
/// `vibehq up` (ContainerTaskQueueOps over NATS).
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    #[command(subcommand)]
    command: ScheduleCommand,
    /// Print the server's answers as JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum ScheduleCommand {
    /// Create a schedule.
    ///
    /// Example, the daily health audit of factory-1 at 09:00 Berlin time:
    ///   vibehq schedule create audit-factory-1 --cron "0 9 * * *" --time-zone Europe/Berlin \
    ///     --task-type health_audit --command audit --worker factory-1
    #[command(verbatim_doc_comment)]
    Create(Box<CreateArgs>),
    /// List schedules (all but deleted ones, unless --status says otherwise).
    List {
        /// active, paused or deleted.
        #[arg(long)]
        status: Option<String>,
    },
    /// Show a schedule and its latest firings.
    Get { schedule_id: String },
    /// Stop a schedule firing until it is resumed.
    Pause { schedule_id: String },
    /// Let a paused schedule fire again, from its next time.
    Resume { schedule_id: String },
    /// Delete a schedule; its firings stay on record.
    Delete { schedule_id: String },
    /// Run a schedule's task now, whatever its time and overlap policy.
    Trigger { schedule_id: String },
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// The schedule's id (its tasks' ids start with it). A new id if left out.
    schedule_id: Option<String>,
    /// A cron expression: 5 fields (minute hour day month weekday), 6 with seconds first, or
    /// @hourly, @daily, @weekly, @monthly, @yearly.
    #[arg(long, conflicts_with = "every", required_unless_present = "every")]
    cron: Option<String>,
    /// The cron expression's time zone (IANA, e.g. Europe/Berlin); UTC if left out.
    #[arg(long, requires = "cron")]
    time_zone: Option<String>,
    /// Fire every so many seconds instead of by cron.
    #[arg(long, value_name = "SECONDS")]
    every: Option<u64>,
    /// The submitted task's type.
    #[arg(long)]
    task_type: String,
    /// The named command the worker runs.
    #[arg(long)]
    command: String,
    /// The task's parameters, a JSON object.
    #[arg(long, value_name = "JSON")]
    parameters: Option<String>,
    /// Only this worker's containers may take the tasks.
    #[arg(long)]
    worker: Option<String>,
    /// Only this container of --worker may take the tasks.
    #[arg(long, requires = "worker")]
    container: Option<String>,
    /// 0-9, higher first.
    #[arg(long)]
    priority: Option<i64>,
    /// Attempts each task gets.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// skip (no firing while the last run has not ended) or allow.
    #[arg(long, default_value = "skip")]
    overlap: String,
    /// run_once (a firing missed while vibehq was down runs once when it is back) or skip.
    #[arg(long, default_value = "run_once")]
    misfire: String,
}

pub async fn run(settings: Settings, args: ScheduleArgs) -> Result<()> {
    let (op, request) = match args.command {
        ScheduleCommand::Create(create) => (Op::CreateSchedule, create.request()?),
        ScheduleCommand::List { status } => {
            let mut request = Map::new();
            if let Some(status) = status {
                request.insert("status".into(), status.into());
            }
            (Op::GetSchedules, Value::Object(request))
        }
        ScheduleCommand::Get { schedule_id } => {
            (Op::GetSchedule, json!({ "schedule_id": schedule_id }))
        }
        ScheduleCommand::Pause { schedule_id } => (
            Op::PauseSchedule,
            json!({ "schedule_id": schedule_id, "changed_by": "cli" }),
        ),
        ScheduleCommand::Resume { schedule_id } => (
            Op::ResumeSchedule,
            json!({ "schedule_id": schedule_id, "changed_by": "cli" }),
        ),
        ScheduleCommand::Delete { schedule_id } => (
            Op::DeleteSchedule,
            json!({ "schedule_id": schedule_id, "changed_by": "cli" }),
        ),
        ScheduleCommand::Trigger { schedule_id } => {
            (Op::TriggerSchedule, json!({ "schedule_id": schedule_id }))
        }
    };
    let answer = rpc::call(&settings, op, request).await?;
    if args.json {
        println!("{answer}");
        return Ok(());
    }
    println!("{}", describe(op, &answer));
    Ok(())
}

impl CreateArgs {
    fn request(self) -> Result<Value> {
        let mut task = Map::new();
        task.insert("task_type".into(), self.task_type.into());
        task.insert("command".into(), self.command.into());
        if let Some(parameters) = self.parameters {
            let parameters: Value =
                serde_json::from_str(&parameters).context("--parameters must be a JSON object")?;
            task.insert("parameters".into(), parameters);
        }
        let optional = [
            ("worker_name", self.worker.map(Value::from)),
            ("container_name", self.container.map(Value::from)),
            ("priority", self.priority.map(Value::from)),
            ("max_attempts", self.max_attempts.map(Value::from)),
        ];
        for (field, value) in optional {
            if let Some(value) = value {
                task.insert(field.into(), value);
            }
        }
        let mut request = Map::new();
        let optional = [
            ("schedule_id", self.schedule_id.map(Value::from)),
            ("cron", self.cron.map(Value::from)),
            ("time_zone", self.time_zone.map(Value::from)),
            ("every_seconds", self.every.map(Value::from)),
        ];
        for (field, value) in optional {
            if let Some(value) = value {
                request.insert(field.into(), value);
            }
        }
        request.insert("task".into(), Value::Object(task));
        request.insert("created_by".into(), "cli".into());
        request.insert("overlap".into(), self.overlap.into());
        request.insert("misfire".into(), self.misfire.into());
        Ok(Value::Object(request))
    }
}

/// The answer in words.
fn describe(op: Op, answer: &Value) -> String {
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    match op {
        Op::GetSchedules => {
            let rows = answer["items"].as_array().cloned().unwrap_or_default();
            if rows.is_empty() {
                return "no schedules".to_owned();
            }
            rows.iter()
                .map(|row| {
                    let when = match row["cron"].as_str() {
                        Some(cron) => format!(
                            "cron {cron:?} {}",
                            row["time_zone"].as_str().unwrap_or("UTC")
                        ),
                        None => format!("every {}s", row["every_seconds"]),
                    };
                    format!(
                        "{}  {}  {when}  {} → {}  fired {} (skipped {}), last task {}",
                        text(&row["schedule_id"]),
                        text(&row["status"]),
                        text(&row["task_type"]),
                        row["worker_name"].as_str().unwrap_or("any worker"),
                        row["firings"],
                        row["skipped"],
                        row["last_task_id"].as_str().unwrap_or("none"),
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
        Op::GetSchedule => serde_json::to_string_pretty(answer).unwrap_or_default(),
        Op::TriggerSchedule => format!(
            "fired {}: task {}",
            text(&answer["firing_id"]),
            text(&answer["task_id"])
        ),
        _ => format!(
            "{} is {} (event #{})",
            text(&answer["schedule_id"]),
            text(&answer["status"]),
            answer["sequence"]
        ),
    }
}
