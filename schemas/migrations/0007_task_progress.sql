-- A running program reports its progress (task.progress events); the latest report is kept
-- with the task: a percentage (0-100), a message, and when it came.
ALTER TABLE container_tasks ADD COLUMN progress_percent REAL;
ALTER TABLE container_tasks ADD COLUMN progress_message TEXT;
ALTER TABLE container_tasks ADD COLUMN progress_at INTEGER;
