//! The agent task manager: a goal becomes a plan of tasks, run in order, with a human's
//! approval where a step asks for one.
//!
//! A plan lives only in events (`ai.task_created`, `ai.task_updated`, `ai.approval_requested`,
//! `ai.approval_decided` on each task's subject) and so in `ai_tasks` / `ai_tasks_hitl`. Nothing
//! waits in memory: [`Agents::advance`] reads the plan from the projection and takes every step
//! it can — a step needing approval stops it there with a request in `ai_tasks_hitl`; a decision
//! through REST, RPC or the CLI appends the decision and advances again. A process restart
//! therefore loses nothing, and two deciders race on the task's version (the loser gets a 409).
//!
//! A step that names a command is submitted to the task queue once it may run (its
//! `queue_task_id` is recorded and the step is `running`). Consecutive command steps are
//! submitted together, each depending on the one before (`depends_on`): the queue, not this
//! module, holds each back until the previous completed, and cancels the rest when one fails.
//! The plan records each end as it sees it: completed, the plan goes on; failed or cancelled,
//! the step fails and the plan stops. A step without a command, or one needing approval, waits
//! until the steps before it ended; a step without a command is done when it is reached. A
//! rejected or failed step stops the plan: the steps after it are `cancelled` (their queue
//! tasks too).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use vibehq_events::ai::{ApprovalDecided, ApprovalRequested, TaskCreated, TaskUpdated};
use vibehq_events::log::Expect;
use vibehq_events::stream::StreamKind;
use vibehq_projector::{Handle, Reader, query};
use vibehq_queue::{NewTask, Queue};

use crate::provider::Tier;
use crate::structured::{self, Ask, StructuredError};
use crate::{Actor, Gateway, table};

/// The most steps a plan may have.
pub const MAX_STEPS: usize = 50;

/// How long a command waits for the projection to show its own events.
const READ_YOUR_WRITES: Duration = Duration::from_secs(10);

/// How often a watched step's queue task is checked even without news of it: a change whose
/// projection lagged past the read is picked up by the next look, so this bounds how late a
/// plan goes on. One projection read per running step per period.
const WATCH_RECHECK: Duration = Duration::from_secs(2);

/// One step of a plan, as given or as the model proposed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Wait for a human before running this step.
    #[serde(default)]
    pub requires_approval: bool,
    /// A task-queue command to run for this step (a name workers allow).
    #[serde(default)]
    pub command: Option<String>,
}

/// A plan and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Plan {
    pub plan_id: String,
    /// `running`, `awaiting_approval`, `completed`, `rejected` or `failed`.
    pub status: String,
    /// The plan's `ai_tasks` rows, in order.
    #[schema(value_type = Vec<Object>)]
    pub tasks: Vec<Map<String, Value>>,
    /// Its `ai_tasks_hitl` rows, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub approvals: Vec<Map<String, Value>>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("no plan {0}")]
    UnknownPlan(String),
    #[error("no approval {0}")]
    UnknownApproval(String),
    #[error("approval {approval_id} was already {status}")]
    AlreadyDecided { approval_id: String, status: String },
    #[error("the planner's answer was not a usable plan: {0}")]
    Planning(#[from] StructuredError),
    #[error("the projection did not catch up within {0:?}")]
    Lagging(Duration),
    #[error("cannot submit the step to the task queue: {0}")]
    Queue(#[from] vibehq_queue::Error),
    #[error(transparent)]
    Log(#[from] vibehq_events::log::Error),
    #[error(transparent)]
    Projection(#[from] vibehq_projector::Error),
}

/// The plan schema the model's proposal must satisfy.
pub fn plan_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "steps": {
                "type": "array", "minItems": 1, "maxItems": MAX_STEPS,
                "items": {
                    "type": "object",
                    "properties": {
                        "title": {"type": "string", "minLength": 1, "maxLength": 200},
                        "description": {"type": "string"},
                        "requires_approval": {"type": "boolean"},
                        "command": {"type": "string", "pattern": "^[A-Za-z0-9_.:/-]{1,128}$"}
                    },
                    "required": ["title"],
                    "additionalProperties": false
                }
            }
        },
        "required": ["steps"]
    })
}

const PLANNER: &str = "Turn the goal into a short plan of concrete steps, in order. Mark a step \
    requires_approval when it changes or deletes something, costs money, or reaches people. \
    Give a step a command only when one of the workers' named commands does it.";

/// The agent task manager. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Agents {
    pub gateway: Gateway,
    pub reader: Reader,
    pub projector: Handle,
    /// Where approved commands go; without a queue, command steps complete when reached.
    pub queue: Option<Queue>,
}

impl Agents {
    /// Creates a plan for `goal` (the model proposes the steps unless they are given) and
    /// takes its first steps.
    pub async fn create(
        &self,
        caller: &Actor,
        goal: &str,
        steps: Option<Vec<StepSpec>>,
    ) -> Result<Plan, AgentError> {
        let steps = match steps {
            Some(steps) => steps,
            None => self.propose(caller, goal).await?,
        };
        let plan_id = uuid::Uuid::now_v7().to_string();
        let events: Vec<_> = steps
            .into_iter()
            .map(|step| {
                caller.envelope(TaskCreated {
                    task_id: uuid::Uuid::now_v7().to_string(),
                    plan_id: plan_id.clone(),
                    title: step.title,
                    description: step.description,
                    requires_approval: step.requires_approval,
                    command: step.command,
                })
            })
            .collect();
        let appended = self.gateway.log().append_all(&events).await?;
        let last = appended.last().map_or(0, |a| a.sequence);
        tracing::info!(%plan_id, %goal, steps = events.len(), "plan created");
        self.advance(&plan_id, last).await
    }

    async fn propose(&self, caller: &Actor, goal: &str) -> Result<Vec<StepSpec>, AgentError> {
        let schema = plan_schema();
        let prompt = format!("{PLANNER}\n\nGoal: {goal}");
        let output = structured::generate(
            &self.gateway,
            caller,
            Ask {
                conversation: None,
                prompt: &prompt,
                schema: &schema,
                max_attempts: 3,
                operation: crate::Operation::Plan,
                tier: Tier::Large,
                provider: None,
            },
        )
        .await?;
        let steps = output.output.get("steps").cloned().unwrap_or_default();
        serde_json::from_value(steps).map_err(|e| {
            AgentError::Planning(StructuredError::InvalidSchema(format!(
                "the plan's steps do not read as steps: {e}"
            )))
        })
    }

    /// The plan as the projection shows it once `sequence` is applied.
    pub async fn plan(&self, plan_id: &str, sequence: u64) -> Result<Plan, AgentError> {
        if !self
            .projector
            .wait_for(StreamKind::Ai, sequence, READ_YOUR_WRITES)
            .await
        {
            return Err(AgentError::Lagging(READ_YOUR_WRITES));
        }
        let id = plan_id.to_owned();
        let (tasks, approvals) = self
            .reader
            .read(move |conn| {
                let tasks = rows(conn, "ai_tasks", "plan_id", &id)?;
                let mut approvals = Vec::new();
                for task in &tasks {
                    let task_id = text(task, "task_id").to_owned();
                    approvals.extend(rows(conn, "ai_tasks_hitl", "task_id", &task_id)?);
                }
                Ok((tasks, approvals))
            })
            .await?;
        if tasks.is_empty() {
            return Err(AgentError::UnknownPlan(plan_id.to_owned()));
        }
        let status = plan_status(&tasks).to_owned();
        Ok(Plan {
            plan_id: plan_id.to_owned(),
            status,
            tasks,
            approvals,
        })
    }

    /// Checks steps a caller gave against [`plan_schema`], naming the first wrong one.
    pub fn check_steps(steps: &Value) -> Result<Vec<StepSpec>, String> {
        let plan = json!({ "steps": steps });
        let validator = jsonschema::validator_for(&plan_schema()).map_err(|e| e.to_string())?;
        if let Some(error) = crate::schema_errors(&validator, &plan).first() {
            return Err(error.strip_prefix("/steps").unwrap_or(error).to_owned());
        }
        serde_json::from_value(steps.clone()).map_err(|e| e.to_string())
    }

    /// Takes every step the plan allows now (once the projection holds `sequence`), and
    /// answers the plan as it then stands. Steps are taken in the name of the plan's owner.
    /// Safe to call any time: reading a plan this way also moves on a plan whose queue task
    /// ended while nothing watched it (across a restart, say).
    pub async fn advance(&self, plan_id: &str, sequence: u64) -> Result<Plan, AgentError> {
        self.advance_from(plan_id, sequence, true).await
    }

    /// [`Agents::advance`]; a watch of the plan is started when it submitted steps and
    /// `watch` (the watch itself advances with `watch` false: one watch a plan).
    async fn advance_from(
        &self,
        plan_id: &str,
        sequence: u64,
        watch: bool,
    ) -> Result<Plan, AgentError> {
        let mut plan = self.plan(plan_id, sequence).await?;
        let owner = plan.owner();
        let caller = &owner;
        let mut last = sequence;
        let mut stopped = false;
        // The queue task of the last step still running: the next command step depends on it.
        let mut after: Option<String> = None;
        // Whether this call submitted steps (which a watch then follows).
        let mut submitted = false;
        for task in &plan.tasks {
            let task_id = text(task, "task_id").to_owned();
            let version = task.get("version").and_then(Value::as_u64).unwrap_or(0);
            let status = text(task, "status");
            if stopped {
                if status == "running" {
                    self.cancel_queued(caller, task).await;
                }
                if matches!(status, "pending" | "running" | "approved") {
                    let cancelled = updated(&task_id, "cancelled", None, None);
                    match self.step(caller, cancelled, version).await? {
                        Some(sequence) => last = sequence,
                        None => break,
                    }
                }
                continue;
            }
            let needs_approval = task.get("requires_approval").and_then(Value::as_i64) == Some(1);
            let command = task.get("command").and_then(Value::as_str).is_some();
            let asks = status == "pending" && needs_approval;
            if after.is_some() && matches!(status, "pending" | "approved") && (asks || !command) {
                // Asked, or done, only once the steps before it ended.
                break;
            }
            let next = match status {
                "pending" if needs_approval => {
                    let request = ApprovalRequested {
                        approval_id: uuid::Uuid::now_v7().to_string(),
                        task_id: task_id.clone(),
                        action: text(task, "title").to_owned(),
                        details: Some(json!({
                            "description": task.get("description"),
                            "command": task.get("command"),
                        })),
                    };
                    if let Some(sequence) = self.step(caller, request, version).await? {
                        last = sequence;
                    }
                    break;
                }
                "pending" | "approved" => {
                    let next = self
                        .run_step(caller, task, &task_id, version, after.as_deref())
                        .await?;
                    submitted |= matches!(next, Next::Running { .. });
                    next
                }
                "running" => self.settle(caller, task, &task_id, version).await?,
                "awaiting_approval" => break,
                "rejected" | "failed" => {
                    stopped = true;
                    continue;
                }
                _ => continue,
            };
            match next {
                Next::Continue(sequence) => last = sequence,
                Next::Running {
                    sequence,
                    queue_task_id,
                } => {
                    last = sequence.unwrap_or(last);
                    after = Some(queue_task_id);
                }
                Next::Wait(sequence) => {
                    last = sequence.unwrap_or(last);
                    break;
                }
                Next::Stop(sequence) => {
                    last = sequence;
                    stopped = true;
                }
            }
        }
        if submitted && watch {
            self.watch(plan_id.to_owned());
        }
        if last != sequence {
            plan = self.plan(plan_id, last).await?;
        }
        Ok(plan)
    }

    /// Cancels a stopped plan's step still on the queue (held behind the failed step, as a
    /// rule: the queue may have cancelled it already, which is as good).
    async fn cancel_queued(&self, caller: &Actor, task: &Map<String, Value>) {
        let (Some(queue), queue_task_id) = (&self.queue, text(task, "queue_task_id")) else {
            return;
        };
        if queue_task_id.is_empty() {
            return;
        }
        let reason = Some("an earlier step of its plan failed".to_owned());
        match queue.cancel(queue_task_id, caller, reason).await {
            Ok(_) | Err(vibehq_queue::Error::Refused { .. }) => {}
            Err(error) => {
                tracing::warn!(%error, queue_task_id, "cannot cancel a stopped plan's step")
            }
        }
    }

    /// Appends a step's change if the step is still at `version`; `None` when another
    /// process moved it first (the caller stops and reads the plan again).
    async fn step(
        &self,
        caller: &Actor,
        payload: impl Into<vibehq_events::Payload>,
        version: u64,
    ) -> Result<Option<u64>, AgentError> {
        let event = caller.envelope(payload);
        match self
            .gateway
            .log()
            .append(&event, Expect::Version(version))
            .await
        {
            Ok(appended) => Ok(Some(appended.sequence)),
            Err(vibehq_events::Error::Conflict { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A running step's queue task, if it ended: completed lets the plan go on, failed or
    /// cancelled stops it.
    async fn settle(
        &self,
        caller: &Actor,
        task: &Map<String, Value>,
        task_id: &str,
        version: u64,
    ) -> Result<Next, AgentError> {
        let queue_task_id = text(task, "queue_task_id").to_owned();
        let row = self
            .reader
            .read(move |conn| query::get(conn, table("container_tasks"), &queue_task_id))
            .await?;
        let column = |name: &str| {
            row.as_ref()
                .and_then(|r| r.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let (status, go_on) = match column("status").as_deref() {
            Some("completed") => ("completed", true),
            Some("failed" | "cancelled") => ("failed", false),
            _ => {
                return Ok(Next::Running {
                    sequence: None,
                    queue_task_id: text(task, "queue_task_id").to_owned(),
                });
            }
        };
        let result = column("output").or_else(|| column("error"));
        let Some(sequence) = self
            .step(caller, updated(task_id, status, result, None), version)
            .await?
        else {
            return Ok(Next::Wait(None));
        };
        Ok(if go_on {
            Next::Continue(sequence)
        } else {
            Next::Stop(sequence)
        })
    }

    /// Advances `plan_id` whenever the queue task of its first running step changes, while
    /// the plan runs (not once it is done, stopped or waiting for a human). Each change is announced on the task's subject; the projection is read
    /// once it has caught up with the tasks stream. A restart drops this watch; reading the
    /// plan (`getPlan`) advances it again.
    fn watch(&self, plan_id: String) {
        let agents = self.clone();
        tokio::spawn(async move {
            let client = agents.gateway.log().jetstream().client();
            let mut following: Option<(String, async_nats::Subscriber)> = None;
            loop {
                // Checked once before the first change too: the task may have ended already.
                // The plan's own rows and its queue tasks' are read once projected.
                for stream in [StreamKind::Tasks, StreamKind::Ai] {
                    if let Ok(info) = agents.gateway.log().stream_info(stream).await {
                        let last = info.state.last_sequence;
                        agents
                            .projector
                            .wait_for(stream, last, READ_YOUR_WRITES)
                            .await;
                    }
                }
                let running = match agents.advance_from(&plan_id, 0, false).await {
                    // Done, stopped, or waiting for a human: nothing left to follow.
                    Ok(plan) if plan.status != "running" => return,
                    Ok(plan) => plan
                        .tasks
                        .iter()
                        .find(|t| text(t, "status") == "running")
                        .map(|t| text(t, "queue_task_id").to_owned()),
                    Err(error) => {
                        tracing::warn!(%plan_id, %error, "cannot advance the plan");
                        None
                    }
                };
                // No step shows running yet (the projection, or another process, is behind):
                // keep following what was followed, or look again shortly.
                let followed = following.as_ref().map(|(id, _)| id.clone());
                let Some(queue_task_id) = running.or(followed) else {
                    tokio::time::sleep(WATCH_RECHECK).await;
                    continue;
                };
                if following
                    .as_ref()
                    .is_none_or(|(id, _)| *id != queue_task_id)
                {
                    let subject = vibehq_events::Subject::task(&queue_task_id);
                    let Ok(changes) = client.subscribe(subject).await else {
                        return;
                    };
                    following = Some((queue_task_id, changes));
                }
                let Some((_, changes)) = following.as_mut() else {
                    return;
                };
                let next = tokio::time::timeout(WATCH_RECHECK, futures::StreamExt::next(changes));
                if let Ok(None) = next.await {
                    return;
                }
            }
        });
    }

    /// Runs one step: a command goes to the queue, after the queue task `after` (the step
    /// before, still running) when there is one; anything else is done when reached.
    async fn run_step(
        &self,
        caller: &Actor,
        task: &Map<String, Value>,
        task_id: &str,
        version: u64,
        after: Option<&str>,
    ) -> Result<Next, AgentError> {
        let command = task.get("command").and_then(Value::as_str);
        let event = match (command, &self.queue) {
            (Some(command), Some(queue)) => {
                let mut parameters = Map::new();
                parameters.insert("ai_task_id".into(), json!(task_id));
                parameters.insert("plan_id".into(), json!(text(task, "plan_id")));
                parameters.insert("title".into(), json!(text(task, "title")));
                let submitted = queue
                    .submit(
                        &caller.clone(),
                        NewTask {
                            task_type: "ai-plan-step".into(),
                            command: command.to_owned(),
                            parameters: Some(parameters),
                            priority: 0,
                            worker_name: None,
                            container_name: None,
                            max_attempts: 3,
                            // A step is submitted once, even if two deciders race to it.
                            idempotency_key: Some(format!("ai-task:{task_id}")),
                            task_id: None,
                            retry_of: None,
                            run_at: None,
                            depends_on: after.map(str::to_owned).into_iter().collect(),
                            on_dependency_failure: None,
                            concurrency_key: None,
                        },
                    )
                    .await?;
                let running = updated(task_id, "running", None, Some(submitted.task_id.clone()));
                let Some(sequence) = self.step(caller, running, version).await? else {
                    return Ok(Next::Wait(None));
                };
                return Ok(Next::Running {
                    sequence: Some(sequence),
                    queue_task_id: submitted.task_id,
                });
            }
            _ => updated(task_id, "completed", Some("done".into()), None),
        };
        Ok(match self.step(caller, event, version).await? {
            Some(sequence) => Next::Continue(sequence),
            None => Next::Wait(None),
        })
    }

    /// Approves or rejects a waiting step, then advances its plan.
    pub async fn decide(
        &self,
        approval_id: &str,
        approved: bool,
        decided_by: &Actor,
        comment: Option<String>,
    ) -> Result<Plan, AgentError> {
        let id = approval_id.to_owned();
        let found = self
            .reader
            .read(move |conn| {
                let Some(approval) = query::get(conn, table("ai_tasks_hitl"), &id)? else {
                    return Ok(None);
                };
                let task = query::get(conn, table("ai_tasks"), text(&approval, "task_id"))?;
                Ok(task.map(|task| (approval, task)))
            })
            .await?;
        let (approval, task) =
            found.ok_or_else(|| AgentError::UnknownApproval(approval_id.to_owned()))?;
        let status = text(&approval, "status");
        if status != "pending" {
            return Err(AgentError::AlreadyDecided {
                approval_id: approval_id.to_owned(),
                status: status.to_owned(),
            });
        }
        let version = task.get("version").and_then(Value::as_u64).unwrap_or(0);
        let decision = decided_by.envelope(ApprovalDecided {
            approval_id: approval_id.to_owned(),
            task_id: text(&task, "task_id").to_owned(),
            approved,
            decided_by: decided_by.worker_name.clone(),
            comment,
        });
        let sequence = match self
            .gateway
            .log()
            .append(&decision, Expect::Version(version))
            .await
        {
            Ok(appended) => appended.sequence,
            Err(vibehq_events::Error::Conflict { .. }) => {
                return Err(AgentError::AlreadyDecided {
                    approval_id: approval_id.to_owned(),
                    status: "decided by someone else".into(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(%approval_id, approved, decided_by = %decided_by.worker_name, "approval decided");
        self.advance(text(&task, "plan_id"), sequence).await
    }
}

fn updated(
    task_id: &str,
    status: &str,
    result: Option<String>,
    queue_task_id: Option<String>,
) -> TaskUpdated {
    TaskUpdated {
        task_id: task_id.to_owned(),
        status: status.to_owned(),
        result,
        queue_task_id,
    }
}

impl Plan {
    /// Who the plan belongs to: the worker (and container) that created it.
    fn owner(&self) -> Actor {
        let first = self.tasks.first();
        let column = |name: &str| first.and_then(|t| t.get(name)).and_then(Value::as_str);
        Actor::new(
            column("worker_name").unwrap_or_default(),
            column("container_name").map(str::to_owned),
        )
    }
}

/// What a plan does after a step.
#[derive(Debug)]
enum Next {
    /// Go on to the next step.
    Continue(u64),
    /// The step's queue task has not ended: the next command step is submitted after it.
    Running {
        sequence: Option<u64>,
        queue_task_id: String,
    },
    /// Stop here for now (another process moved the step).
    Wait(Option<u64>),
    /// The plan ends: the remaining steps are cancelled.
    Stop(u64),
}

/// A plan's status from its tasks' statuses.
fn plan_status(tasks: &[Map<String, Value>]) -> &'static str {
    let statuses: Vec<&str> = tasks.iter().map(|t| text(t, "status")).collect();
    if statuses.contains(&"rejected") {
        "rejected"
    } else if statuses.contains(&"failed") {
        "failed"
    } else if statuses.contains(&"awaiting_approval") {
        "awaiting_approval"
    } else if statuses.iter().all(|s| *s == "completed") {
        "completed"
    } else {
        "running"
    }
}

fn text<'a>(row: &'a Map<String, Value>, column: &str) -> &'a str {
    row.get(column).and_then(Value::as_str).unwrap_or_default()
}

fn rows(
    conn: &rusqlite::Connection,
    name: &str,
    column: &'static str,
    value: &str,
) -> Result<Vec<Map<String, Value>>, vibehq_projector::Error> {
    let filter = query::Filter {
        columns: vec![(column, value.to_owned())],
        limit: 1000,
        ..query::Filter::default()
    };
    Ok(query::list(conn, table(name), &filter)?.items)
}
