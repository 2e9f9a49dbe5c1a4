-- Delayed tasks: not handed out before run_at (unix seconds; the event holds it to the
-- millisecond). due_at is when its submission reached its lane (the schedule fired).
ALTER TABLE container_tasks ADD COLUMN run_at INTEGER;
ALTER TABLE container_tasks ADD COLUMN due_at INTEGER;
CREATE INDEX IF NOT EXISTS container_tasks_run_at_idx ON container_tasks (run_at)
  WHERE run_at IS NOT NULL;
