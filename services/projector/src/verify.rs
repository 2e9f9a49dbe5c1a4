//! Replay proving itself: a live projection compared, table by table, with a replay of the
//! streams to the very sequences the live one has applied (`vibehq replay --verify`).
//!
//! The live file is first copied as one consistent snapshot (`VACUUM INTO`, while the
//! projector keeps writing), its checkpoints read from the copy, and the streams replayed into
//! a scratch file through exactly those sequences. Then every table of the snapshot is
//! compared with the replay's, each with a SHA-256 over its rows in key order, and the first
//! row that differs is named. Every table the file holds is compared, bookkeeping included,
//! except what is left out by design and says why ([`LEFT_OUT`]):
//! - `projector_rejected`: compared without its `id`, ordered by stream and sequence: its ids
//!   number rejections in the order streams interleaved live, which a replay (one stream after
//!   another) does not reproduce;
//! - `d1_migrations`: compared by migration name only: `applied_at` is when each file was
//!   created;
//! - SQLite's own tables (`sqlite_sequence`, the AUTOINCREMENT counters) are not compared:
//!   they follow from the rows.

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use rusqlite::types::ValueRef;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use vibehq_events::{EventLog, StreamKind};

use crate::db::{self, sqlite};
use crate::replay::{ReplayOptions, Until, replay};
use crate::{Checkpoints, Error};

/// What is compared differently from the rest, and why.
pub const LEFT_OUT: &[(&str, &str)] = &[
    (
        "projector_rejected.id",
        "rejections are numbered in the order the streams interleaved live; compared by stream and sequence instead",
    ),
    (
        "d1_migrations.applied_at",
        "when each file's schema was applied; compared by migration name",
    ),
];

/// One table in both files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableCheck {
    pub table: String,
    pub rows: usize,
    /// SHA-256 of the live snapshot's rows, in key order (hex).
    pub live: String,
    /// The same over the replay's rows.
    pub replayed: String,
}

impl TableCheck {
    pub fn matches(&self) -> bool {
        self.live == self.replayed
    }
}

/// The first row that differs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    pub table: String,
    /// Which row: its key column and value (e.g. `task_id = t-1`), or its place in key order.
    pub row: String,
    /// The row in the live snapshot (`None`: only the replay has it).
    pub live: Option<Map<String, Value>>,
    /// The row in the replay (`None`: only the live snapshot has it).
    pub replayed: Option<Map<String, Value>>,
}

/// The outcome of a verification.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// The sequences both files are at.
    pub checkpoints: Checkpoints,
    pub tables: Vec<TableCheck>,
    pub first_difference: Option<Difference>,
    /// The scratch directory holding the snapshot and the replay, kept when they differ.
    pub scratch: PathBuf,
}

impl Verification {
    pub fn passed(&self) -> bool {
        self.first_difference.is_none() && self.tables.iter().all(TableCheck::matches)
    }
}

/// Verifies the projection at `live` against a replay of `log`, working in `scratch` (a
/// directory that must not hold a previous verification's files).
pub async fn verify(log: &EventLog, live: &Path, scratch: &Path) -> Result<Verification, Error> {
    let io = |source| Error::Io {
        path: scratch.to_owned(),
        source,
    };
    std::fs::create_dir_all(scratch).map_err(io)?;
    let snapshot = scratch.join("live-snapshot.sqlite3");
    let replayed = scratch.join("replayed.sqlite3");
    {
        let conn = db::open_reader(live)?;
        conn.execute("VACUUM INTO ?1", [snapshot.display().to_string()])
            .map_err(sqlite("copy the live projection"))?;
    }
    let snapshot_conn = db::open_reader(&snapshot)?;
    let checkpoints = db::load_checkpoints(&snapshot_conn)?;
    let until = StreamKind::ALL
        .into_iter()
        .map(|stream| (stream, checkpoints.get(stream)))
        .collect();
    replay(
        log,
        ReplayOptions {
            into: replayed.clone(),
            streams: StreamKind::ALL.to_vec(),
            until: Until::Sequence(until),
        },
        |_| {},
    )
    .await?;
    let replayed_conn = db::open_reader(&replayed)?;
    let (tables, first_difference) = compare(&snapshot_conn, &replayed_conn)?;
    Ok(Verification {
        checkpoints,
        tables,
        first_difference,
        scratch: scratch.to_owned(),
    })
}

/// Compares every table of two projection files.
pub fn compare(
    live: &Connection,
    replayed: &Connection,
) -> Result<(Vec<TableCheck>, Option<Difference>), Error> {
    let mut names = table_names(live)?;
    for name in table_names(replayed)? {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names.sort();
    let mut checks = Vec::new();
    let mut first = None;
    for table in names {
        let (key, a) = rows(live, &table)?;
        let (_, b) = rows(replayed, &table)?;
        checks.push(TableCheck {
            table: table.clone(),
            rows: a.len(),
            live: digest(&a),
            replayed: digest(&b),
        });
        if first.is_none() {
            first = first_difference(&table, key.as_deref(), &a, &b);
        }
    }
    Ok((checks, first))
}

fn table_names(conn: &Connection) -> Result<Vec<String>, Error> {
    let mut stmt = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             ORDER BY name",
        )
        .map_err(sqlite("list the tables"))?;
    let names = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(sqlite("list the tables"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sqlite("list the tables"))?;
    Ok(names)
}

/// A row as JSON, column by column.
type Row = Map<String, Value>;

/// A table's rows in a replay-stable order, and the column that names a row. Rows that one
/// stream writes are in that stream's order (their rowid); bookkeeping tables, which every
/// stream writes, are in key order.
fn rows(conn: &Connection, table: &str) -> Result<(Option<String>, Vec<Row>), Error> {
    let exists: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [table],
            |row| row.get(0),
        )
        .map_err(sqlite("look a table up"))?;
    if !exists {
        return Ok((None, Vec::new()));
    }
    let quoted = format!("\"{}\"", table.replace('"', "\"\""));
    let (sql, key, drop) = match table {
        "projector_rejected" => (
            format!("SELECT * FROM {quoted} ORDER BY stream_name, stream_sequence"),
            Some("stream_sequence".to_owned()),
            Some("id"),
        ),
        "projector_checkpoints" => (
            format!("SELECT * FROM {quoted} ORDER BY stream_name"),
            Some("stream_name".to_owned()),
            None,
        ),
        "projector_meta" => (
            format!("SELECT * FROM {quoted} ORDER BY key"),
            Some("key".to_owned()),
            None,
        ),
        "d1_migrations" => (
            format!("SELECT * FROM {quoted} ORDER BY name"),
            Some("name".to_owned()),
            Some("applied_at"),
        ),
        _ => {
            let key = crate::query::Table::named(table).map(|t| t.key.to_owned());
            (format!("SELECT * FROM {quoted} ORDER BY rowid"), key, None)
        }
    };
    let mut stmt = conn.prepare(&sql).map_err(sqlite("read a table"))?;
    let names: Vec<String> = stmt.column_names().map(str::to_owned).collect();
    let mut result = stmt.query([]).map_err(sqlite("read a table"))?;
    let mut out = Vec::new();
    while let Some(row) = result.next().map_err(sqlite("read a row"))? {
        let mut map = Map::new();
        for (i, name) in names.iter().enumerate() {
            if Some(name.as_str()) == drop {
                continue;
            }
            let value = match row.get_ref(i).map_err(sqlite("read a column"))? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(n) => Value::from(n),
                ValueRef::Real(x) => Value::from(x),
                ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Value::String(format!("blob:{}", hex(&Sha256::digest(b)))),
            };
            map.insert(name.clone(), value);
        }
        out.push(map);
    }
    Ok((key, out))
}

fn digest(rows: &[Row]) -> String {
    let mut hasher = Sha256::new();
    for row in rows {
        hasher.update(Value::Object(row.clone()).to_string().as_bytes());
        hasher.update(b"\n");
    }
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn first_difference(
    table: &str,
    key: Option<&str>,
    live: &[Row],
    replayed: &[Row],
) -> Option<Difference> {
    let n = live.len().max(replayed.len());
    (0..n).find_map(|i| {
        let (a, b) = (live.get(i), replayed.get(i));
        if a == b {
            return None;
        }
        let named = |row: Option<&Map<String, Value>>| {
            let key = key?;
            let value = row?.get(key)?;
            Some(match value {
                Value::String(s) => format!("{key} = {s}"),
                other => format!("{key} = {other}"),
            })
        };
        let row = named(a)
            .or_else(|| named(b))
            .unwrap_or_else(|| format!("row {} in key order", i + 1));
        Some(Difference {
            table: table.to_owned(),
            row,
            live: a.cloned(),
            replayed: b.cloned(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str) -> Connection {
        let path = dir.join(name);
        drop(db::open_writer(&path).expect("a projection file"));
        Connection::open(path).expect("open")
    }

    #[test]
    fn identical_files_match_and_a_changed_row_is_named() {
        let dir = tempfile::tempdir().expect("dir");
        let (a, b) = (file(dir.path(), "a.sqlite3"), file(dir.path(), "b.sqlite3"));
        for conn in [&a, &b] {
            conn.execute(
                "INSERT INTO container_tasks (task_id, task_type, command, status, created_at, updated_at)
                 VALUES ('t-1', 'audit', 'audit', 'pending', 1, 1)",
                [],
            )
            .expect("insert");
        }
        let (checks, first) = compare(&a, &b).expect("compare");
        assert!(first.is_none() && checks.iter().all(TableCheck::matches));
        assert!(
            checks.iter().any(|c| c.table == "projector_checkpoints"),
            "bookkeeping is compared"
        );

        a.execute("UPDATE container_tasks SET status = 'completed'", [])
            .expect("tamper");
        let (checks, first) = compare(&a, &b).expect("compare");
        let first = first.expect("a difference");
        assert_eq!(
            (first.table.as_str(), first.row.as_str()),
            ("container_tasks", "task_id = t-1")
        );
        assert_eq!(first.live.expect("live row")["status"], "completed");
        let tasks = checks
            .iter()
            .find(|c| c.table == "container_tasks")
            .expect("checked");
        assert!(!tasks.matches());
    }
}
