-- Task events that changed nothing, and why: results a command refused (the queue recorded a
-- `task.result_refused`), and events the task's lifecycle refuses although they were stored
-- (a result from a claim that does not hold the task, a step for a task never submitted, an
-- event whose envelope names another actor than its subject). The same on every replay.
CREATE TABLE IF NOT EXISTS container_task_refusals (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  task_id TEXT NOT NULL,
  worker_name TEXT NOT NULL,              -- who sent what was refused
  container_name TEXT,
  event_type TEXT NOT NULL,               -- task.completed, task.assigned, …
  attempt INTEGER,                        -- the attempt it named, where it named one
  reason TEXT NOT NULL,
  refused_by TEXT NOT NULL,               -- queue (a command refused it) | lifecycle (the projection did)
  stream_sequence INTEGER NOT NULL UNIQUE,
  created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS container_task_refusals_task_id_idx ON container_task_refusals (task_id);
CREATE INDEX IF NOT EXISTS container_task_refusals_worker_name_idx ON container_task_refusals (worker_name);
