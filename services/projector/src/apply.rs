//! Applying one event to the projection tables.
//!
//! Pure functions of (row state, event): no clock, no randomness, no I/O beyond the
//! transaction, so a replay produces the same rows as the live run. Idempotence comes from the
//! checkpoint (the caller skips sequences already applied); inserts also tolerate a repeat.
//!
//! A task event applies only if the task's lifecycle allows it
//! ([`vibehq_events::task::lifecycle::decide`], asked with the task's row as it is): an event
//! the lifecycle refuses changes no row and is kept in `container_task_refusals` instead, as
//! is every result the queue itself refused.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use vibehq_events::pause::Scope;
use vibehq_events::recurring::{Skipped, Status as ScheduleStatus, Timing};
use vibehq_events::task::lane::Target;
use vibehq_events::task::lifecycle::{self, State, Status};
use vibehq_events::{Actor, Envelope, Payload, Recorded, Subject};

use crate::db::Checkpoints;

/// Counts of what the writer did, for progress and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub applied: u64,
    /// Messages that are no event this build can apply (kept in `projector_rejected`).
    pub rejected: u64,
    /// Task events their lifecycle refused (kept in `container_task_refusals`).
    pub refused: u64,
    /// Deliveries of sequences already applied (redeliveries, replays): skipped.
    pub skipped: u64,
}

/// What the lifecycle needs of each live task, as the rows last committed (or about to be)
/// hold it: read once from `container_tasks`, then kept as events change it, so a task's
/// events do not each read its row back. A task leaves it when it ends; it starts over when it
/// grows large, and must be [`Statuses::clear`]ed when a transaction that changed it is rolled
/// back.
#[derive(Debug, Default)]
pub struct Statuses(std::collections::HashMap<String, Option<Status>>);

/// Most tasks [`Statuses`] keeps before it starts over.
const STATUSES: usize = 100_000;

impl Statuses {
    /// Forgets everything (after a rollback).
    pub fn clear(&mut self) {
        self.0.clear();
    }

    fn get(&mut self, db: &Connection, task_id: &str) -> rusqlite::Result<Option<Status>> {
        if let Some(status) = self.0.get(task_id) {
            return Ok(status.clone());
        }
        let status = task_status(db, task_id)?;
        self.0.insert(task_id.to_owned(), status.clone());
        Ok(status)
    }

    fn set(&mut self, task_id: &str, status: Status) {
        if status.state.is_terminal() {
            self.0.remove(task_id);
            return;
        }
        if self.0.len() >= STATUSES {
            self.0.clear();
        }
        self.0.insert(task_id.to_owned(), Some(status));
    }
}

/// Applies `records` in order inside `tx`, skipping every sequence at or below its stream's
/// checkpoint and advancing the checkpoints past what it applies. Saving the checkpoints in the
/// same transaction is the caller's part (see [`crate::db`]); together they make a repeated
/// delivery change nothing.
///
/// With `careful` false, events are applied without a savepoint each (the fast path); the
/// first event SQLite refuses then fails the call with [`Refused`], and the caller rolls the
/// transaction back and applies the batch again with `careful` true, where each event gets a
/// savepoint and a refused one is kept in `projector_rejected`.
pub fn apply_batch(
    tx: &mut rusqlite::Transaction<'_>,
    checkpoints: &mut Checkpoints,
    records: &[Recorded],
    totals: &mut Totals,
    careful: bool,
    statuses: &mut Statuses,
) -> Result<(), Refused> {
    for record in records {
        if record.sequence <= checkpoints.get(record.stream) {
            totals.skipped += 1;
            continue;
        }
        match apply_record(tx, record, careful, statuses)? {
            Outcome::Applied => totals.applied += 1,
            Outcome::Refused => totals.refused += 1,
            Outcome::Rejected => totals.rejected += 1,
        }
        checkpoints.set(record.stream, record.sequence);
    }
    Ok(())
}

/// What became of one recorded message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// A task event its lifecycle refused, recorded in `container_task_refusals` instead.
    Refused,
    /// Recorded in `projector_rejected` instead.
    Rejected,
}

/// Why a batch could not be applied as it was.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// SQLite refused an event on the fast path: apply the batch again with `careful`.
    #[error("an event was refused on the fast path; apply the batch carefully")]
    RetryCarefully,
    /// SQLite failed in a way that is not about one event (disk, corruption): stop.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// Decodes and applies one record inside `tx`. Anything undecodable is kept in
/// `projector_rejected`; an event SQLite refuses is too when `careful` (it is rolled back to
/// its savepoint first), and fails with [`Refused::RetryCarefully`] otherwise.
pub fn apply_record(
    tx: &mut rusqlite::Transaction<'_>,
    record: &Recorded,
    careful: bool,
    statuses: &mut Statuses,
) -> Result<Outcome, Refused> {
    let reason = match record.decode() {
        Err(e) => e.to_string(),
        Ok(event) if !careful => {
            return match apply(tx, &record.subject, record.sequence, &event, statuses) {
                Ok(outcome) => Ok(outcome),
                Err(e) if about_this_event(&e) => Err(Refused::RetryCarefully),
                Err(e) => Err(Refused::Sqlite(e)),
            };
        }
        Ok(event) => {
            let sp = tx.savepoint()?;
            match apply(&sp, &record.subject, record.sequence, &event, statuses) {
                Ok(outcome) => {
                    sp.commit()?;
                    return Ok(outcome);
                }
                // Dropping the savepoint rolls the event's partial changes back.
                Err(e) if about_this_event(&e) => {
                    format!("{} could not be applied: {e}", event.kind())
                }
                // Busy, I/O, out of memory: not the event's fault; stop rather than skip it.
                Err(e) => return Err(Refused::Sqlite(e)),
            }
        }
    };
    tracing::warn!(
        stream = %record.stream, sequence = record.sequence, subject = %record.subject,
        %reason, "rejected a message"
    );
    tx.prepare_cached(
        "INSERT INTO projector_rejected
           (stream_name, stream_sequence, subject, reason, raw, published_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (stream_name, stream_sequence) DO NOTHING",
    )?
    .execute(params![
        record.stream.name(),
        record.sequence as i64,
        record.subject,
        reason,
        record.payload.as_ref(),
        record.published.unix_timestamp(),
    ])?;
    Ok(Outcome::Rejected)
}

/// Whether SQLite refused this particular event's data (a constraint, a type, a size), as
/// opposed to failing for everyone (busy, I/O, memory).
fn about_this_event(error: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{ConstraintViolation, TooBig, TypeMismatch};
    match error {
        rusqlite::Error::SqliteFailure(e, _) => {
            matches!(e.code, ConstraintViolation | TypeMismatch | TooBig)
        }
        rusqlite::Error::ToSqlConversionFailure(_) => true,
        _ => false,
    }
}

fn json(value: &Value) -> String {
    value.to_string()
}

fn json_opt<T: serde::Serialize>(value: &T) -> Option<String> {
    serde_json::to_string(value).ok()
}

/// Applies one decoded event stored on `subject` at `sequence` (which becomes the row's
/// `version`).
pub fn apply(
    db: &Connection,
    subject: &str,
    sequence: u64,
    event: &Envelope,
    statuses: &mut Statuses,
) -> rusqlite::Result<Outcome> {
    let mut state = None;
    let mut decided = None;
    if let Some(checked) = lifecycle::read(subject, event) {
        let refusal = match checked {
            Ok(checked) => {
                let current = statuses.get(db, &checked.task_id)?;
                match lifecycle::decide(current.as_ref(), &checked.actor, &event.payload) {
                    Ok(next) => {
                        state = next.as_ref().map(|s| s.state.as_str());
                        decided = next.map(|s| (checked.task_id, s));
                        None
                    }
                    Err(refusal) => Some((checked.actor, refusal)),
                }
            }
            // The server stored it under an actor: that is who sent it.
            Err(refusal) => {
                let actor = match Subject::parse(subject) {
                    Some(Subject::TaskStep { actor, .. }) => actor,
                    _ => event.actor(),
                };
                Some((actor, refusal))
            }
        };
        if let Some((actor, refusal)) = refusal {
            refuse(
                db,
                sequence,
                event,
                &actor,
                &refusal.to_string(),
                "lifecycle",
            )?;
            return Ok(Outcome::Refused);
        }
    }
    apply_row(db, sequence, event, state.unwrap_or_default())?;
    if let Some((task_id, status)) = decided {
        statuses.set(&task_id, status);
    }
    Ok(Outcome::Applied)
}

/// What the lifecycle needs of a task, from its row; `None` if it was never submitted.
fn task_status(db: &Connection, task_id: &str) -> rusqlite::Result<Option<Status>> {
    db.prepare_cached(
        "SELECT status, attempts, max_attempts, worker_name, container_name, assigned_to
         FROM container_tasks WHERE task_id = ?1",
    )?
    .query_row([task_id], |row| {
        let status: String = row.get(0)?;
        let worker: Option<String> = row.get(3)?;
        let container: Option<String> = row.get(4)?;
        let holder: Option<String> = row.get(5)?;
        Ok(Status {
            // The projector wrote every status from State; another value would be a bug.
            state: State::from_name(&status).unwrap_or(State::Pending),
            attempt: row.get(1)?,
            max_attempts: row.get(2)?,
            target: Target::of(worker.as_deref(), container.as_deref()),
            holder: holder.as_deref().and_then(Actor::from_label),
        })
    })
    .optional()
}

/// Keeps a task event that changed nothing, and why.
fn refuse(
    db: &Connection,
    sequence: u64,
    event: &Envelope,
    by: &Actor,
    reason: &str,
    refused_by: &str,
) -> rusqlite::Result<usize> {
    let attempt = match &event.payload {
        Payload::TaskAssigned(p) => Some(p.attempt),
        Payload::TaskStarted(p) => Some(p.attempt),
        Payload::TaskProgress(p) => Some(p.attempt),
        Payload::TaskCompleted(p) => Some(p.attempt),
        Payload::TaskFailed(p) => Some(p.attempt),
        Payload::TaskRequeued(p) => Some(p.attempt),
        Payload::TaskResultRefused(p) => (p.attempt > 0).then_some(p.attempt),
        _ => None,
    };
    let kind = match &event.payload {
        Payload::TaskResultRefused(p) => format!("task.{}", p.outcome),
        other => other.kind().as_str().to_owned(),
    };
    db.prepare_cached(
        "INSERT INTO container_task_refusals (task_id, worker_name, container_name, event_type,
           attempt, reason, refused_by, stream_sequence, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (stream_sequence) DO NOTHING",
    )?
    .execute(params![
        event.payload.task_id().unwrap_or_default(),
        by.worker_name,
        by.container_name,
        kind,
        attempt,
        reason,
        refused_by,
        sequence as i64,
        event.occurred_at.unix_timestamp(),
    ])
}

/// Applies one decoded event the lifecycle allows to its rows; `status` is the state the
/// lifecycle moved a task to (the SQL takes it from there, never from a literal of its own).
fn apply_row(
    db: &Connection,
    sequence: u64,
    event: &Envelope,
    status: &str,
) -> rusqlite::Result<()> {
    let at = event.occurred_at.unix_timestamp();
    let at_ms = (event.occurred_at.unix_timestamp_nanos() / 1_000_000) as i64;
    let version = sequence as i64;
    let worker = event.worker_name.as_str();
    let container = event.container_name.as_deref();
    let actor = event.actor().label();
    let exec = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> rusqlite::Result<usize> {
        db.prepare_cached(sql)?.execute(params)
    };
    match &event.payload {
        Payload::TaskSubmitted(p) => exec(
            "INSERT INTO container_tasks (task_id, worker_name, container_name, priority, status,
               task_type, command, parameters, max_attempts, idempotency_key, version,
               created_at, updated_at, retry_of, run_at, depends_on, concurrency_key)
             VALUES (?1, ?2, ?3, ?4, ?12, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?13, ?14, ?15, ?16)
             ON CONFLICT (task_id) DO UPDATE SET version = excluded.version,
               due_at = excluded.updated_at, updated_at = excluded.updated_at
             WHERE excluded.run_at IS NOT NULL",
            params![
                p.task_id,
                p.worker_name,
                p.container_name,
                p.priority,
                p.task_type,
                p.command,
                p.parameters.as_ref().and_then(json_opt),
                p.max_attempts.max(1),
                p.idempotency_key,
                version,
                at,
                status,
                p.retry_of,
                p.run_at.map(|t| t.unix_timestamp()),
                (!p.depends_on.is_empty()).then(|| Value::from(p.depends_on.clone()).to_string()),
                p.concurrency_key
            ],
        ),
        Payload::TaskAssigned(p) => exec(
            "UPDATE container_tasks SET status = ?6, assigned_to = ?2, attempts = ?3,
               assigned_at = ?4, started_at = NULL, version = ?5, updated_at = ?4
             WHERE task_id = ?1",
            params![p.task_id, actor, p.attempt, at, version, status],
        ),
        Payload::TaskStarted(p) => exec(
            "UPDATE container_tasks SET status = ?4, started_at = ?2, version = ?3,
               updated_at = ?2
             WHERE task_id = ?1",
            params![p.task_id, at, version, status],
        ),
        Payload::TaskProgress(p) => exec(
            "UPDATE container_tasks SET progress_percent = ?2, progress_message = ?3,
               progress_at = ?4, version = ?5, updated_at = ?4
             WHERE task_id = ?1",
            params![p.task_id, p.percent, p.message, at, version],
        ),
        Payload::TaskCompleted(p) => exec(
            "UPDATE container_tasks SET status = ?5, output = ?2, error = NULL,
               completed_at = ?3, version = ?4, updated_at = ?3
             WHERE task_id = ?1",
            params![p.task_id, p.output, at, version, status],
        ),
        Payload::TaskFailed(p) => exec(
            "UPDATE container_tasks SET status = ?5, error = ?2, completed_at = ?3,
               version = ?4, updated_at = ?3
             WHERE task_id = ?1",
            params![p.task_id, p.error, at, version, status],
        ),
        Payload::TaskRequeued(p) => exec(
            "UPDATE container_tasks SET status = ?6, error = ?2, assigned_to = NULL,
               attempts = ?3, version = ?4, updated_at = ?5
             WHERE task_id = ?1",
            params![p.task_id, p.reason, p.attempt, version, at, status],
        ),
        Payload::TaskCancelled(p) => exec(
            "UPDATE container_tasks SET status = ?5, error = ?2, completed_at = ?3,
               version = ?4, updated_at = ?3
             WHERE task_id = ?1",
            params![p.task_id, p.reason, at, version, status],
        ),
        // A result the queue refused: it changes no state, and is kept with its reason.
        Payload::TaskResultRefused(p) => {
            refuse(db, sequence, event, &event.actor(), &p.reason, "queue")
        }
        Payload::QueuePaused(p) => exec(
            "INSERT INTO container_task_pauses (scope, worker_name, status, reason, changed_by,
               paused_at, version, created_at, updated_at)
             VALUES (?1, ?2, 'paused', ?3, ?4, ?5, ?6, ?5, ?5)
             ON CONFLICT (scope) DO UPDATE SET status = 'paused', reason = excluded.reason,
               changed_by = excluded.changed_by, paused_at = excluded.paused_at,
               version = excluded.version, updated_at = excluded.updated_at",
            params![
                p.scope,
                Scope::parse(&p.scope)
                    .ok()
                    .and_then(|s| s.worker().map(str::to_owned)),
                p.reason,
                actor,
                at,
                version
            ],
        ),
        Payload::QueueResumed(p) => exec(
            "UPDATE container_task_pauses SET status = 'resumed', changed_by = ?2, resumed_at = ?3,
               version = ?4, updated_at = ?3
             WHERE scope = ?1",
            params![p.scope, actor, at, version],
        ),
        Payload::KeyLimited(p) => exec(
            "INSERT INTO container_task_keys (key, concurrency, rate_max, rate_per_ms,
               worker_name, container_name, changed_by, version, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)
             ON CONFLICT (key) DO UPDATE SET concurrency = excluded.concurrency,
               rate_max = excluded.rate_max, rate_per_ms = excluded.rate_per_ms,
               worker_name = excluded.worker_name, container_name = excluded.container_name,
               changed_by = excluded.changed_by, version = excluded.version,
               updated_at = excluded.updated_at",
            params![
                p.key,
                p.limits.concurrency,
                p.limits.rate.map(|r| r.max),
                p.limits.rate.map(|r| r.per_ms as i64),
                worker,
                container,
                actor,
                version,
                at
            ],
        ),
        Payload::WorkerRegistered(p) => exec(
            "INSERT INTO container_workers (worker_name, container_name, language, commands,
               registered_by, version, created_at, updated_at)
             VALUES (?1, ?7, ?2, ?3, ?4, ?5, ?6, ?6)
             ON CONFLICT (worker_name) DO UPDATE SET container_name = excluded.container_name,
               language = excluded.language, commands = excluded.commands,
               registered_by = excluded.registered_by, version = excluded.version,
               updated_at = excluded.updated_at",
            params![
                p.name,
                p.language,
                Value::from(p.commands.clone()).to_string(),
                actor,
                version,
                at,
                container
            ],
        ),
        // A key's waiting line and holders are the queue's to keep (the aggregate); the
        // tasks' own rows show where each task is.
        Payload::KeyQueued(_) | Payload::KeyStarted(_) | Payload::KeyReleased(_) => Ok(0),
        Payload::ScheduleCreated(p) => {
            let (cron, time_zone, every) = match &p.timing {
                Timing::Cron { cron, time_zone } => (Some(cron), time_zone.as_ref(), None),
                Timing::Every { every_seconds } => (None, None, Some(*every_seconds as i64)),
            };
            let parameters = p
                .task
                .parameters
                .as_ref()
                .map(|m| Value::Object(m.clone()).to_string());
            exec(
                "INSERT INTO container_task_schedules (schedule_id, worker_name, container_name,
                   status, cron, time_zone, every_seconds, task_type, command, parameters,
                   priority, max_attempts, overlap, misfire, misfire_grace_seconds, created_by,
                   version, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?18, ?15,
                   ?16, ?17, ?17)
                 ON CONFLICT (schedule_id) DO NOTHING",
                params![
                    p.schedule_id,
                    p.task.worker_name,
                    p.task.container_name,
                    ScheduleStatus::Active.as_str(),
                    cron,
                    time_zone,
                    every,
                    p.task.task_type,
                    p.task.command,
                    parameters,
                    p.task.priority,
                    p.task.max_attempts,
                    wire(&p.overlap),
                    wire(&p.misfire),
                    actor,
                    version,
                    at,
                    p.misfire_grace_seconds as i64
                ],
            )
        }
        Payload::SchedulePaused(p) => set_schedule(
            db,
            &p.schedule_id,
            ScheduleStatus::Active,
            ScheduleStatus::Paused,
            version,
            at,
        ),
        Payload::ScheduleResumed(p) => set_schedule(
            db,
            &p.schedule_id,
            ScheduleStatus::Paused,
            ScheduleStatus::Active,
            version,
            at,
        ),
        Payload::ScheduleDeleted(p) => exec(
            "UPDATE container_task_schedules SET status = ?2, version = ?3, updated_at = ?4
             WHERE schedule_id = ?1 AND status <> ?2",
            params![p.schedule_id, ScheduleStatus::Deleted.as_str(), version, at],
        ),
        Payload::ScheduleFired(p) => {
            let fired_ms = (p.fired_at.unix_timestamp_nanos() / 1_000_000) as i64;
            let inserted = exec(
                "INSERT INTO container_task_schedule_firings (firing_id, schedule_id, worker_name,
                   container_name, trigger, outcome, skipped_reason, task_id, fired_at,
                   fired_at_ms, stream_sequence, created_at)
                 SELECT ?1, ?2, worker_name, container_name, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10
                 FROM container_task_schedules WHERE schedule_id = ?2
                 ON CONFLICT DO NOTHING",
                params![
                    p.firing_id,
                    p.schedule_id,
                    wire(&p.trigger),
                    if p.task_id.is_some() {
                        "submitted"
                    } else {
                        "skipped"
                    },
                    p.skipped.map(Skipped::as_str),
                    p.task_id,
                    p.fired_at.unix_timestamp(),
                    fired_ms,
                    version,
                    at
                ],
            )?;
            if inserted == 0 {
                return Ok(());
            }
            exec(
                "UPDATE container_task_schedules
                 SET firings = firings + (?2 IS NOT NULL), skipped = skipped + (?2 IS NULL),
                   last_task_id = COALESCE(?2, last_task_id),
                   last_fired_at = MAX(COALESCE(last_fired_at, 0), ?3),
                   next_fire_at = COALESCE(?4, next_fire_at), version = ?5, updated_at = ?6
                 WHERE schedule_id = ?1",
                params![
                    p.schedule_id,
                    p.task_id,
                    p.fired_at.unix_timestamp(),
                    p.next_at.map(|t| t.unix_timestamp()),
                    version,
                    at
                ],
            )
        }
        Payload::ContainerStarting(p) => exec(
            "INSERT INTO container_instances (worker_name, container_name, instance_id, state,
               port, version, created_at, updated_at, running_since_ms)
             VALUES (?1, ?2, ?3, 'starting', ?4, ?5, ?6, ?6, ?7)
             ON CONFLICT (instance_id) DO UPDATE SET state = 'starting', port = excluded.port,
               version = excluded.version, updated_at = excluded.updated_at,
               usage_ms = usage_ms + MAX(0, ?7 - COALESCE(running_since_ms, ?7)),
               running_since_ms = ?7",
            params![worker, container, p.instance_id, p.port, version, at, at_ms],
        ),
        Payload::ContainerRunning(p) => set_state(db, &p.instance_id, "running", None, version, at),
        Payload::ContainerUnhealthy(p) => {
            set_state(
                db,
                &p.instance_id,
                "unhealthy",
                Some(&p.reason),
                version,
                at,
            )?;
            process_ended(db, &p.instance_id, at_ms)
        }
        Payload::ContainerStopped(p) => {
            let reason = p.reason.as_deref();
            set_state(db, &p.instance_id, "stopped", reason, version, at)?;
            process_ended(db, &p.instance_id, at_ms)
        }
        Payload::ContainerFailed(p) => {
            set_state(db, &p.instance_id, "failed", Some(&p.reason), version, at)?;
            process_ended(db, &p.instance_id, at_ms)
        }
        Payload::ContainerRestarted(p) => {
            exec(
                "UPDATE container_instances SET state = 'starting', restart_count = ?2,
                   last_error = ?3, version = ?4, updated_at = ?5
                 WHERE instance_id = ?1",
                params![p.instance_id, p.restart_count, p.reason, version, at],
            )?;
            process_ended(db, &p.instance_id, at_ms)
        }
        Payload::ContainerHealthChecked(p) => {
            exec(
                "INSERT INTO container_health_checks (worker_name, container_name, instance_id,
                   healthy, status_code, latency_ms, error, checked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    worker,
                    container,
                    p.instance_id,
                    p.healthy,
                    p.status_code,
                    p.latency_ms,
                    p.error,
                    at
                ],
            )?;
            // Probes live on their own subject, so they do not bump the instance's version.
            exec(
                "UPDATE container_instances SET last_health_check = ?2 WHERE instance_id = ?1",
                params![p.instance_id, at],
            )
        }
        // Kept in the stream for audit; each instance's own events fill its row.
        Payload::ContainerScaled(_) => Ok(0),
        Payload::AiTaskCreated(p) => exec(
            "INSERT INTO ai_tasks (task_id, worker_name, container_name, plan_id, title,
               description, status, requires_approval, command, version, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?8, ?9, ?10, ?10)
             ON CONFLICT (task_id) DO NOTHING",
            params![
                p.task_id,
                worker,
                container,
                p.plan_id,
                p.title,
                p.description,
                p.requires_approval,
                p.command,
                version,
                at
            ],
        ),
        Payload::AiTaskUpdated(p) => exec(
            "UPDATE ai_tasks SET status = ?2, result = COALESCE(?3, result),
               queue_task_id = COALESCE(?4, queue_task_id), version = ?5, updated_at = ?6
             WHERE task_id = ?1",
            params![p.task_id, p.status, p.result, p.queue_task_id, version, at],
        ),
        Payload::AiApprovalRequested(p) => {
            exec(
                "INSERT INTO ai_tasks_hitl (approval_id, task_id, worker_name, container_name,
                   action, details, status, requested_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7)
                 ON CONFLICT (approval_id) DO NOTHING",
                params![
                    p.approval_id,
                    p.task_id,
                    worker,
                    container,
                    p.action,
                    p.details.as_ref().map(json),
                    at
                ],
            )?;
            exec(
                "UPDATE ai_tasks SET status = 'awaiting_approval', version = ?2, updated_at = ?3
                 WHERE task_id = ?1",
                params![p.task_id, version, at],
            )
        }
        Payload::AiApprovalDecided(p) => {
            let status = if p.approved { "approved" } else { "rejected" };
            exec(
                "UPDATE ai_tasks_hitl SET status = ?2, decided_by = ?3, comment = ?4,
                   decided_at = ?5
                 WHERE approval_id = ?1",
                params![p.approval_id, status, p.decided_by, p.comment, at],
            )?;
            exec(
                "UPDATE ai_tasks SET status = ?2, version = ?3, updated_at = ?4
                 WHERE task_id = ?1",
                params![p.task_id, status, version, at],
            )
        }
        Payload::AiEvaluationRound(p) => exec(
            "INSERT INTO ai_evaluations (evaluation_id, round, worker_name, container_name,
               provider, model, prompt, criteria, output, score, feedback, passed, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
             ON CONFLICT (evaluation_id, round) DO NOTHING",
            params![
                p.evaluation_id,
                p.round,
                worker,
                container,
                p.provider,
                p.model,
                p.prompt,
                p.criteria,
                p.output,
                p.score,
                p.feedback,
                p.passed,
                at
            ],
        ),
        Payload::AiRoutingDecided(p) => exec(
            "INSERT INTO ai_routing_decisions (decision_id, worker_name, container_name, prompt,
               complexity, tier, provider, model, reasons, features, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (decision_id) DO NOTHING",
            params![
                p.decision_id,
                worker,
                container,
                p.prompt,
                p.complexity,
                p.tier,
                p.provider,
                p.model,
                json_opt(&p.reasons),
                p.features.as_ref().map(json),
                at
            ],
        ),
        Payload::AiStructuredOutput(p) => exec(
            "INSERT INTO ai_structured_outputs (output_id, worker_name, container_name, provider,
               model, prompt, schema, output, valid, attempts, errors, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT (output_id) DO NOTHING",
            params![
                p.output_id,
                worker,
                container,
                p.provider,
                p.model,
                p.prompt,
                json(&p.schema),
                p.output.as_ref().map(json),
                p.valid,
                p.attempts,
                json_opt(&p.errors),
                at
            ],
        ),
        Payload::AiToolCalled(p) => exec(
            "INSERT INTO ai_tool_calls (call_id, worker_name, container_name, run_id, step,
               tool_name, arguments, result, error, duration_ms, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (call_id) DO NOTHING",
            params![
                p.call_id,
                worker,
                container,
                p.run_id,
                p.step,
                p.tool_name,
                json(&p.arguments),
                p.result.as_ref().map(json),
                p.error,
                p.duration_ms,
                at
            ],
        ),
        Payload::AiToolCallStreamed(p) => exec(
            "INSERT INTO ai_tool_call_streams (stream_id, worker_name, container_name, run_id,
               provider, model, prompt, text, tool_calls, chunks, chunk_count, first_token_ms,
               duration_ms, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
             ON CONFLICT (stream_id) DO NOTHING",
            params![
                p.stream_id,
                worker,
                container,
                p.run_id,
                p.provider,
                p.model,
                p.prompt,
                p.text,
                json_opt(&p.tool_calls),
                json_opt(&p.chunks),
                p.chunks.len() as i64,
                p.first_token_ms,
                p.duration_ms,
                at
            ],
        ),
        Payload::AiModelCalled(p) => exec(
            "INSERT INTO ai_model_calls (attempt_id, request_id, attempt, worker_name,
               container_name, operation, provider, model, streamed, outcome, status_code, error,
               retry_after_ms, latency_ms, first_token_ms, input_tokens, output_tokens,
               cached_tokens, cost_usd, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
               ?18, ?19, ?20)
             ON CONFLICT (attempt_id) DO NOTHING",
            params![
                p.attempt_id,
                p.request_id,
                p.attempt,
                worker,
                container,
                p.operation,
                p.provider,
                p.model,
                p.streamed,
                p.outcome,
                p.status_code,
                p.error,
                p.retry_after_ms.map(|ms| ms as i64),
                p.latency_ms,
                p.first_token_ms,
                p.input_tokens.map(|n| n as i64),
                p.output_tokens.map(|n| n as i64),
                p.cached_tokens.map(|n| n as i64),
                p.cost_usd,
                at
            ],
        ),
    }?;
    Ok(())
}

/// A schedule moving from `from` to `to` (an event its state does not allow changes nothing,
/// as [`vibehq_events::recurring::Schedule::decide`] refuses it).
fn set_schedule(
    db: &Connection,
    schedule_id: &str,
    from: ScheduleStatus,
    to: ScheduleStatus,
    version: i64,
    at: i64,
) -> rusqlite::Result<usize> {
    db.prepare_cached(
        "UPDATE container_task_schedules SET status = ?3, version = ?4, updated_at = ?5
         WHERE schedule_id = ?1 AND status = ?2",
    )?
    .execute(params![
        schedule_id,
        from.as_str(),
        to.as_str(),
        version,
        at
    ])
}

/// A policy's or trigger's wire name (its serde name), for a text column.
fn wire(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(name)) => name,
        _ => String::new(),
    }
}

/// Accrues the time an instance's process ran, up to `at_ms`, and marks it not running.
fn process_ended(db: &Connection, instance_id: &str, at_ms: i64) -> rusqlite::Result<usize> {
    db.prepare_cached(
        "UPDATE container_instances
         SET usage_ms = usage_ms + MAX(0, ?2 - COALESCE(running_since_ms, ?2)),
             running_since_ms = NULL
         WHERE instance_id = ?1",
    )?
    .execute(params![instance_id, at_ms])
}

fn set_state(
    db: &Connection,
    instance_id: &str,
    state: &str,
    error: Option<&str>,
    version: i64,
    at: i64,
) -> rusqlite::Result<usize> {
    db.prepare_cached(
        "UPDATE container_instances SET state = ?2, last_error = COALESCE(?3, last_error),
           version = ?4, updated_at = ?5
         WHERE instance_id = ?1",
    )?
    .execute(params![instance_id, state, error, version, at])
}
