-- Paused scopes of work: `all`, or `worker:<name>` (the work targeted at that worker and its
-- containers). worker_name is the paused worker (NULL for all); container_name is always NULL
-- (a pause covers all of a worker's containers).
CREATE TABLE IF NOT EXISTS container_task_pauses (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  scope TEXT NOT NULL UNIQUE,
  worker_name TEXT,
  container_name TEXT,
  status TEXT NOT NULL,                   -- paused | resumed
  reason TEXT,
  changed_by TEXT NOT NULL,
  paused_at INTEGER,
  resumed_at INTEGER,
  version INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
