//! The central, D1-compatible SQL schema and the runner that applies it.
//!
//! The migrations in `schemas/migrations/` are plain SQLite that Cloudflare D1 accepts (no
//! extensions, no PRAGMAs), numbered `NNNN_name.sql` as `wrangler d1 migrations apply` expects.
//! [`migrate`] records applied migrations in `d1_migrations`, the table wrangler itself uses, so
//! a database migrated by either tool is recognised by the other.
//!
//! # Layout
//! - [`MIGRATIONS`]: the migrations, embedded in order.
//! - [`migrate`]: applies the pending ones, each in its own transaction.
//! - [`TABLES`]: the domain tables (the seed's ten and two more), for code that must treat
//!   them uniformly.

use rusqlite::{Connection, OptionalExtension};

/// One numbered migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The file name, e.g. `0001_init.sql`; also its key in `d1_migrations`.
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in the order it must apply.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "0001_init.sql",
        sql: include_str!("../migrations/0001_init.sql"),
    },
    Migration {
        name: "0002_projector.sql",
        sql: include_str!("../migrations/0002_projector.sql"),
    },
    Migration {
        name: "0003_instance_usage.sql",
        sql: include_str!("../migrations/0003_instance_usage.sql"),
    },
    Migration {
        name: "0004_ai_model_calls.sql",
        sql: include_str!("../migrations/0004_ai_model_calls.sql"),
    },
    Migration {
        name: "0005_task_refusals.sql",
        sql: include_str!("../migrations/0005_task_refusals.sql"),
    },
    Migration {
        name: "0006_task_retries.sql",
        sql: include_str!("../migrations/0006_task_retries.sql"),
    },
    Migration {
        name: "0007_task_progress.sql",
        sql: include_str!("../migrations/0007_task_progress.sql"),
    },
    Migration {
        name: "0008_task_run_at.sql",
        sql: include_str!("../migrations/0008_task_run_at.sql"),
    },
    Migration {
        name: "0009_task_schedules.sql",
        sql: include_str!("../migrations/0009_task_schedules.sql"),
    },
    Migration {
        name: "0010_task_pauses.sql",
        sql: include_str!("../migrations/0010_task_pauses.sql"),
    },
    Migration {
        name: "0011_task_dependencies.sql",
        sql: include_str!("../migrations/0011_task_dependencies.sql"),
    },
    Migration {
        name: "0012_task_keys.sql",
        sql: include_str!("../migrations/0012_task_keys.sql"),
    },
    Migration {
        name: "0013_workers.sql",
        sql: include_str!("../migrations/0013_workers.sql"),
    },
    Migration {
        name: "0014_routing_without_provider.sql",
        sql: include_str!("../migrations/0014_routing_without_provider.sql"),
    },
];

/// The domain tables, each with `worker_name` and `container_name`: the seed plan's ten,
/// `ai_model_calls` (one row per AI gateway attempt, which the seed's tables have no place for),
/// `container_task_refusals` (task events that changed nothing, and why), and the recurring
/// schedules with their firings, paused scopes of work, declared concurrency keys, and the
/// registered workers.
pub const TABLES: &[&str] = &[
    "container_tasks",
    "container_task_refusals",
    "container_task_schedules",
    "container_task_schedule_firings",
    "container_task_pauses",
    "container_task_keys",
    "container_workers",
    "container_instances",
    "container_health_checks",
    "ai_tasks",
    "ai_tasks_hitl",
    "ai_evaluations",
    "ai_routing_decisions",
    "ai_structured_outputs",
    "ai_tool_calls",
    "ai_tool_call_streams",
    "ai_model_calls",
];

/// A migration failed; the database is left as it was before that migration.
#[derive(Debug, thiserror::Error)]
#[error("migration {name} failed: {source}")]
pub struct Error {
    pub name: &'static str,
    #[source]
    pub source: rusqlite::Error,
}

/// Applies every migration not yet recorded in `d1_migrations`; returns the names applied.
///
/// Idempotent: a second run applies nothing. Each migration and its record commit together.
pub fn migrate(conn: &mut Connection) -> Result<Vec<&'static str>, Error> {
    let fail = |name| move |source| Error { name, source };
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS d1_migrations (
           id INTEGER PRIMARY KEY AUTOINCREMENT,
           name TEXT UNIQUE,
           applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
         );",
    )
    .map_err(fail("d1_migrations"))?;
    let mut applied = Vec::new();
    for migration in MIGRATIONS {
        let tx = conn.transaction().map_err(fail(migration.name))?;
        let done = tx
            .query_row(
                "SELECT 1 FROM d1_migrations WHERE name = ?1",
                [migration.name],
                |_| Ok(()),
            )
            .optional()
            .map_err(fail(migration.name))?
            .is_some();
        if done {
            continue;
        }
        tx.execute_batch(migration.sql)
            .map_err(fail(migration.name))?;
        tx.execute(
            "INSERT INTO d1_migrations (name) VALUES (?1)",
            [migration.name],
        )
        .map_err(fail(migration.name))?;
        tx.commit().map_err(fail(migration.name))?;
        applied.push(migration.name);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(conn: &Connection, table: &str) -> Vec<String> {
        let mut stmt = conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
            .expect("prepare");
        stmt.query_map([], |row| row.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    #[test]
    fn migrations_apply_to_an_empty_database_then_apply_nothing() {
        let mut conn = Connection::open_in_memory().expect("open");
        let first = migrate(&mut conn).expect("first run");
        let every: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(first, every);
        assert_eq!(every.last(), Some(&"0014_routing_without_provider.sql"));
        let second = migrate(&mut conn).expect("second run");
        assert!(second.is_empty());
    }

    #[test]
    fn every_table_names_its_worker_and_container() {
        let mut conn = Connection::open_in_memory().expect("open");
        migrate(&mut conn).expect("migrate");
        for table in TABLES {
            let cols = columns(&conn, table);
            assert!(cols.iter().any(|c| c == "worker_name"), "{table}: {cols:?}");
            assert!(
                cols.iter().any(|c| c == "container_name"),
                "{table}: {cols:?}"
            );
        }
    }

    #[test]
    fn migrations_stay_within_what_d1_accepts() {
        for m in MIGRATIONS {
            let sql = m.sql.to_ascii_uppercase();
            for banned in [
                "PRAGMA",
                "ATTACH",
                "LOAD_EXTENSION",
                "VACUUM",
                "BEGIN",
                "COMMIT",
            ] {
                assert!(!sql.contains(banned), "{} uses {banned}", m.name);
            }
        }
    }

    #[test]
    fn seed_columns_and_indexes_exist() {
        let mut conn = Connection::open_in_memory().expect("open");
        migrate(&mut conn).expect("migrate");
        let tasks = columns(&conn, "container_tasks");
        for col in [
            "id",
            "task_id",
            "worker_name",
            "container_name",
            "priority",
            "status",
            "task_type",
            "command",
            "parameters",
            "assigned_to",
            "output",
            "error",
            "created_at",
            "assigned_at",
            "started_at",
            "completed_at",
        ] {
            assert!(tasks.iter().any(|c| c == col), "container_tasks.{col}");
        }
        let instances = columns(&conn, "container_instances");
        for col in [
            "id",
            "worker_name",
            "container_name",
            "instance_id",
            "state",
            "port",
            "last_health_check",
            "created_at",
            "updated_at",
        ] {
            assert!(
                instances.iter().any(|c| c == col),
                "container_instances.{col}"
            );
        }
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index'")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        for idx in [
            "container_tasks_task_id_idx",
            "container_tasks_worker_name_idx",
            "container_tasks_status_idx",
            "container_tasks_priority_idx",
            "container_instances_worker_name_idx",
            "container_instances_state_idx",
        ] {
            assert!(indexes.iter().any(|i| i == idx), "missing index {idx}");
        }
    }
}
