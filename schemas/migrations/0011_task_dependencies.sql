-- Tasks that wait for others: the ids they depend on (a JSON array; NULL for none). A task
-- waiting on them is pending with due_at NULL; its release sets due_at, as a delayed task's.
ALTER TABLE container_tasks ADD COLUMN depends_on TEXT;
CREATE INDEX IF NOT EXISTS container_tasks_waiting_idx ON container_tasks (status)
  WHERE depends_on IS NOT NULL AND due_at IS NULL;
