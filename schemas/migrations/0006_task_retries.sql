-- A dead task (failed or cancelled) can be retried: a new task with the same work, which
-- records the task it retries. The dashboard links the two.
ALTER TABLE container_tasks ADD COLUMN retry_of TEXT;
CREATE INDEX IF NOT EXISTS container_tasks_retry_of_idx ON container_tasks (retry_of);
