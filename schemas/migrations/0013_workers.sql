-- The fleet's workers, as they registered themselves (`worker.registered`): one row per worker,
-- its latest registration. worker_name is the worker; container_name is the container that
-- registered it (NULL when it was registered from outside one, as `vibehq new worker` does).
-- commands is a JSON array of the command names it handles.
CREATE TABLE IF NOT EXISTS container_workers (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  worker_name TEXT NOT NULL UNIQUE,
  container_name TEXT,
  language TEXT,
  commands TEXT NOT NULL,
  registered_by TEXT NOT NULL,
  version INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
