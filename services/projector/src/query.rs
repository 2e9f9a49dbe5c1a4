//! The read side: listing and fetching projection rows as JSON.
//!
//! Every table is described once in [`TABLES`] (its key, status column and allowed values, time
//! column, extra filters, JSON columns), and one generic query serves them all, so filtering and
//! pagination behave the same everywhere. Queries run on read-only connections in WAL mode and
//! never block the writer.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use rusqlite::types::{Value as SqlValue, ValueRef};
use serde_json::{Map, Value};
use vibehq_events::StreamKind;

use crate::Error;
use crate::db::{open_reader, sqlite};

/// A queryable projection table.
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    /// The stream whose events fill the table (for read-your-writes waits).
    pub stream: Option<StreamKind>,
    /// The column `get` looks rows up by.
    pub key: &'static str,
    /// The column holding the row's state, if it has one, and the values it may take.
    pub status: Option<(&'static str, &'static [&'static str])>,
    /// The column time-range filters apply to (unix seconds).
    pub time: &'static str,
    /// Further columns that may be filtered by equality.
    pub filters: &'static [&'static str],
    /// Columns holding JSON text, returned as JSON values.
    pub json: &'static [&'static str],
    /// Filter columns holding a flag (0 or 1): filtered by `true`/`false` (or `1`/`0`).
    pub flags: &'static [&'static str],
}

/// A task's statuses are its lifecycle's states.
const TASK_STATUSES: &[&str] = &vibehq_events::task::lifecycle::State::NAMES;
const SCHEDULE_STATUSES: &[&str] = &["active", "paused", "deleted"];
const INSTANCE_STATES: &[&str] = &["starting", "running", "unhealthy", "stopped", "failed"];
const AI_TASK_STATUSES: &[&str] = &[
    "pending",
    "awaiting_approval",
    "approved",
    "rejected",
    "running",
    "completed",
    "failed",
    "cancelled",
];
const APPROVAL_STATUSES: &[&str] = &["pending", "approved", "rejected"];

/// Every queryable table: the domain tables of the central schema (`vibehq_schemas::TABLES`),
/// then the projector's rejected messages.
pub const TABLES: &[Table] = &[
    Table {
        name: "container_tasks",
        stream: Some(StreamKind::Tasks),
        key: "task_id",
        status: Some(("status", TASK_STATUSES)),
        time: "created_at",
        filters: &[
            "task_type",
            "assigned_to",
            "idempotency_key",
            "priority",
            "retry_of",
            "concurrency_key",
        ],
        json: &["parameters", "depends_on"],
        flags: &[],
    },
    Table {
        name: "container_task_refusals",
        stream: Some(StreamKind::Tasks),
        key: "id",
        status: None,
        time: "created_at",
        filters: &["task_id", "event_type", "refused_by"],
        json: &[],
        flags: &[],
    },
    Table {
        name: "container_task_schedules",
        stream: Some(StreamKind::Tasks),
        key: "schedule_id",
        status: Some(("status", SCHEDULE_STATUSES)),
        time: "created_at",
        filters: &["task_type"],
        json: &["parameters"],
        flags: &[],
    },
    Table {
        name: "container_task_schedule_firings",
        stream: Some(StreamKind::Tasks),
        key: "firing_id",
        status: Some(("outcome", &["submitted", "skipped"])),
        time: "fired_at",
        filters: &["schedule_id", "task_id", "trigger"],
        json: &[],
        flags: &[],
    },
    Table {
        name: "container_task_pauses",
        stream: Some(StreamKind::Tasks),
        key: "scope",
        status: Some(("status", &["paused", "resumed"])),
        time: "created_at",
        filters: &[],
        json: &[],
        flags: &[],
    },
    Table {
        name: "container_task_keys",
        stream: Some(StreamKind::Tasks),
        key: "key",
        status: None,
        time: "created_at",
        filters: &[],
        json: &[],
        flags: &[],
    },
    Table {
        name: "container_workers",
        stream: Some(StreamKind::Tasks),
        key: "worker_name",
        status: None,
        time: "created_at",
        filters: &["language"],
        json: &["commands"],
        flags: &[],
    },
    Table {
        name: "container_instances",
        stream: Some(StreamKind::Containers),
        key: "instance_id",
        status: Some(("state", INSTANCE_STATES)),
        time: "created_at",
        filters: &[],
        json: &[],
        flags: &[],
    },
    Table {
        name: "container_health_checks",
        stream: Some(StreamKind::Containers),
        key: "id",
        status: None,
        time: "checked_at",
        filters: &["instance_id", "healthy"],
        json: &[],
        flags: &["healthy"],
    },
    Table {
        name: "ai_tasks",
        stream: Some(StreamKind::Ai),
        key: "task_id",
        status: Some(("status", AI_TASK_STATUSES)),
        time: "created_at",
        filters: &["plan_id", "queue_task_id"],
        json: &[],
        flags: &[],
    },
    Table {
        name: "ai_tasks_hitl",
        stream: Some(StreamKind::Ai),
        key: "approval_id",
        status: Some(("status", APPROVAL_STATUSES)),
        time: "requested_at",
        filters: &["task_id"],
        json: &["details"],
        flags: &[],
    },
    Table {
        name: "ai_evaluations",
        stream: Some(StreamKind::Ai),
        key: "id",
        status: None,
        time: "created_at",
        filters: &["evaluation_id", "model", "passed"],
        json: &[],
        flags: &[],
    },
    Table {
        name: "ai_routing_decisions",
        stream: Some(StreamKind::Ai),
        key: "decision_id",
        status: None,
        time: "created_at",
        filters: &["tier", "model", "provider"],
        json: &["reasons", "features"],
        flags: &[],
    },
    Table {
        name: "ai_structured_outputs",
        stream: Some(StreamKind::Ai),
        key: "output_id",
        status: None,
        time: "created_at",
        filters: &["model", "valid"],
        json: &["schema", "output", "errors"],
        flags: &[],
    },
    Table {
        name: "ai_tool_calls",
        stream: Some(StreamKind::Ai),
        key: "call_id",
        status: None,
        time: "created_at",
        filters: &["run_id", "tool_name"],
        json: &["arguments", "result"],
        flags: &[],
    },
    Table {
        name: "ai_tool_call_streams",
        stream: Some(StreamKind::Ai),
        key: "stream_id",
        status: None,
        time: "created_at",
        filters: &["run_id", "model"],
        json: &["tool_calls", "chunks"],
        flags: &[],
    },
    Table {
        name: "ai_model_calls",
        stream: Some(StreamKind::Ai),
        key: "attempt_id",
        status: None,
        time: "created_at",
        filters: &["request_id", "provider", "model", "outcome", "operation"],
        json: &[],
        flags: &[],
    },
    Table {
        name: "projector_rejected",
        stream: None,
        key: "id",
        status: None,
        time: "published_at",
        filters: &["stream_name", "subject"],
        json: &[],
        flags: &[],
    },
];

impl Table {
    /// The table with this name.
    pub fn named(name: &str) -> Option<&'static Table> {
        TABLES.iter().find(|t| t.name == name)
    }

    /// Whether `value` is a status this table's rows can have.
    pub fn allows_status(&self, value: &str) -> bool {
        self.status
            .is_some_and(|(_, allowed)| allowed.contains(&value))
    }

    /// Whether the table has `worker_name`/`container_name` columns.
    pub fn has_worker(&self) -> bool {
        self.name != "projector_rejected"
    }
}

/// A validated list query. Build it with the API's parser; all fields are optional.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub worker_name: Option<String>,
    pub container_name: Option<String>,
    /// Must be one of the table's statuses.
    pub status: Option<String>,
    /// Rows at or after this time (unix seconds).
    pub since: Option<i64>,
    /// Rows at or before this time (unix seconds).
    pub until: Option<i64>,
    /// Equality filters on the table's extra filter columns.
    pub columns: Vec<(&'static str, String)>,
    /// Newest first instead of oldest first.
    pub descending: bool,
    /// Continue after this row id (from a previous page's `next_cursor`).
    pub cursor: Option<i64>,
    /// Page size, 1..=1000.
    pub limit: u32,
}

/// One page of rows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Page {
    pub items: Vec<Map<String, Value>>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<i64>,
}

/// Lists rows of `table` matching `filter`, ordered by row id.
pub fn list(conn: &Connection, table: &Table, filter: &Filter) -> Result<Page, Error> {
    let mut sql = format!("SELECT * FROM {} WHERE 1 = 1", table.name);
    let mut args: Vec<SqlValue> = Vec::new();
    let mut push = |clause: &str, value: SqlValue| {
        args.push(value);
        sql.push_str(&format!(" AND {clause} ?{}", args.len()));
    };
    // Identifiers below come from the static table description, never from the request.
    if let Some(v) = &filter.worker_name {
        push("worker_name =", v.clone().into());
    }
    if let Some(v) = &filter.container_name {
        push("container_name =", v.clone().into());
    }
    if let (Some(v), Some((column, _))) = (&filter.status, table.status) {
        push(&format!("{column} ="), v.clone().into());
    }
    if let Some(v) = filter.since {
        push(&format!("{} >=", table.time), v.into());
    }
    if let Some(v) = filter.until {
        push(&format!("{} <=", table.time), v.into());
    }
    for (column, value) in &filter.columns {
        // Integer-valued filter columns (flags such as `healthy`) compare as numbers.
        let value = value
            .parse::<i64>()
            .map_or_else(|_| value.clone().into(), SqlValue::from);
        push(&format!("{column} ="), value);
    }
    if let Some(v) = filter.cursor {
        push(if filter.descending { "id <" } else { "id >" }, v.into());
    }
    let limit = filter.limit.clamp(1, 1000);
    sql.push_str(&format!(
        " ORDER BY id {} LIMIT {}",
        if filter.descending { "DESC" } else { "ASC" },
        limit + 1
    ));
    let mut items = rows(conn, table, &sql, &args)?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items
            .last()
            .and_then(|row| row.get("id"))
            .and_then(Value::as_i64)
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// The row of `table` whose key column equals `key`.
pub fn get(
    conn: &Connection,
    table: &Table,
    key: &str,
) -> Result<Option<Map<String, Value>>, Error> {
    let sql = format!(
        "SELECT * FROM {} WHERE {} = ?1 LIMIT 1",
        table.name, table.key
    );
    let key_value = match (table.key, key.parse::<i64>()) {
        ("id", Ok(id)) => SqlValue::from(id),
        ("id", Err(_)) => return Ok(None),
        _ => SqlValue::from(key.to_owned()),
    };
    Ok(rows(conn, table, &sql, &[key_value])?.pop())
}

/// Every row of `table` in id order, as JSON (for comparing projections).
pub fn dump(conn: &Connection, table: &Table) -> Result<Vec<Map<String, Value>>, Error> {
    rows(
        conn,
        table,
        &format!("SELECT * FROM {} ORDER BY id", table.name),
        &[],
    )
}

fn rows(
    conn: &Connection,
    table: &Table,
    sql: &str,
    args: &[SqlValue],
) -> Result<Vec<Map<String, Value>>, Error> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(sqlite("prepare a query"))?;
    let names: Vec<String> = stmt.column_names().map(str::to_owned).collect();
    let mut out = Vec::new();
    let mut result = stmt
        .query(rusqlite::params_from_iter(args))
        .map_err(sqlite("run a query"))?;
    while let Some(row) = result.next().map_err(sqlite("read a row"))? {
        let mut map = Map::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let value = row.get_ref(i).map_err(sqlite("read a column"))?;
            map.insert(
                name.clone(),
                to_json(value, table.json.contains(&name.as_str())),
            );
        }
        out.push(map);
    }
    Ok(out)
}

fn to_json(value: ValueRef<'_>, is_json: bool) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => Value::from(f),
        ValueRef::Text(t) => {
            let text = String::from_utf8_lossy(t);
            if is_json {
                serde_json::from_str(&text).unwrap_or(Value::String(text.into_owned()))
            } else {
                Value::String(text.into_owned())
            }
        }
        ValueRef::Blob(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
    }
}

/// A small pool of read-only connections to one projection file. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Reader {
    path: PathBuf,
    idle: Arc<Mutex<Vec<Connection>>>,
}

impl Reader {
    /// A pool over the projection at `path` (which the projector creates).
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_owned(),
            idle: Arc::default(),
        }
    }

    /// Runs `f` on a pooled connection on the blocking thread pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    {
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = pool.idle.lock().ok().and_then(|mut idle| idle.pop());
            let conn = match pooled {
                Some(conn) => conn,
                None => open_reader(&pool.path)?,
            };
            let result = f(&conn);
            if let Ok(mut idle) = pool.idle.lock()
                && idle.len() < 8
            {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|_| Error::ReaderGone)?
    }
}
