-- Concurrency keys and rate limits. A task may name a key; container_tasks keeps it, so the
-- tasks of a key can be listed. container_task_keys holds each key whose limits were declared
-- (an undeclared key runs one task at a time): concurrency is how many may run at once (NULL:
-- no cap), rate_max starts per rate_per_ms milliseconds (NULL: no rate limit). worker_name and
-- container_name are who declared it.
ALTER TABLE container_tasks ADD COLUMN concurrency_key TEXT;
CREATE INDEX IF NOT EXISTS container_tasks_key_idx ON container_tasks (concurrency_key, status)
  WHERE concurrency_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS container_task_keys (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  key TEXT NOT NULL UNIQUE,
  concurrency INTEGER,
  rate_max INTEGER,
  rate_per_ms INTEGER,
  worker_name TEXT NOT NULL,
  container_name TEXT,
  changed_by TEXT NOT NULL,
  version INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
