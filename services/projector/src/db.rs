//! Opening projection files and their bookkeeping (checkpoints).

use std::path::Path;

use rusqlite::{Connection, OpenFlags, params};
use vibehq_events::StreamKind;

use crate::Error;

/// The last stream sequence applied to the projection, per stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checkpoints([u64; 3]);

/// As a map from each stream's short name (`tasks`, `containers`, `ai`) to its sequence.
impl serde::Serialize for Checkpoints {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(StreamKind::ALL.len()))?;
        for stream in StreamKind::ALL {
            map.serialize_entry(stream.short_name(), &self.get(stream))?;
        }
        map.end()
    }
}

impl Checkpoints {
    /// The last applied sequence of `stream` (0: nothing applied yet).
    pub fn get(&self, stream: StreamKind) -> u64 {
        self.0[index(stream)]
    }

    /// Records that `stream` is applied through `sequence`.
    pub fn set(&mut self, stream: StreamKind, sequence: u64) {
        self.0[index(stream)] = sequence;
    }
}

fn index(stream: StreamKind) -> usize {
    match stream {
        StreamKind::Tasks => 0,
        StreamKind::Containers => 1,
        StreamKind::Ai => 2,
    }
}

/// Opens (creating if needed) a projection file for writing and brings its schema up to date.
///
/// WAL lets the HTTP API read while the projector writes; `synchronous = NORMAL` is safe here
/// because a commit lost to a power cut takes its checkpoint with it, and the events are then
/// applied again from the stream.
pub fn open_writer(path: &Path) -> Result<Connection, Error> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_owned(),
            source,
        })?;
    }
    let mut conn = Connection::open(path).map_err(sqlite("open the projection"))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA busy_timeout = 5000;
         PRAGMA foreign_keys = ON;
         PRAGMA cache_size = -65536;
         PRAGMA temp_store = MEMORY;",
    )
    .map_err(sqlite("configure the projection"))?;
    vibehq_schemas::migrate(&mut conn)?;
    Ok(conn)
}

/// Opens a projection file read-only (for queries).
pub fn open_reader(path: &Path) -> Result<Connection, Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite("open the projection for reading"))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(sqlite("configure a reader"))?;
    Ok(conn)
}

/// Reads the checkpoints stored in the projection.
pub fn load_checkpoints(conn: &Connection) -> Result<Checkpoints, Error> {
    let mut checkpoints = Checkpoints::default();
    let mut stmt = conn
        .prepare("SELECT stream_name, last_sequence FROM projector_checkpoints")
        .map_err(sqlite("read checkpoints"))?;
    let rows = stmt
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })
        .map_err(sqlite("read checkpoints"))?;
    for row in rows {
        let (name, sequence) = row.map_err(sqlite("read checkpoints"))?;
        if let Some(stream) = StreamKind::from_name(&name) {
            checkpoints.set(stream, u64::try_from(sequence).unwrap_or(0));
        }
    }
    Ok(checkpoints)
}

/// Stores `stream`'s checkpoint; call inside the transaction that applied its events.
pub fn save_checkpoint(
    conn: &Connection,
    stream: StreamKind,
    sequence: u64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO projector_checkpoints (stream_name, last_sequence) VALUES (?1, ?2)
         ON CONFLICT (stream_name) DO UPDATE SET last_sequence = excluded.last_sequence",
    )?
    .execute(params![stream.name(), sequence as i64])?;
    Ok(())
}

pub(crate) fn sqlite(op: &'static str) -> impl Fn(rusqlite::Error) -> Error {
    move |source| Error::Sqlite { op, source }
}
