-- Recurring schedules (cron in a time zone, or an interval) that submit a task template, and
-- every firing, run or skipped. worker_name/container_name are the target of the tasks the
-- schedule submits (NULL: any worker), as on container_tasks; created_by is who made it.
CREATE TABLE IF NOT EXISTS container_task_schedules (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  schedule_id TEXT NOT NULL UNIQUE,
  worker_name TEXT,
  container_name TEXT,
  status TEXT NOT NULL,                   -- active | paused | deleted
  cron TEXT,                              -- 6 fields with seconds, or @daily …; NULL for an interval
  time_zone TEXT,                         -- IANA name; NULL: UTC
  every_seconds INTEGER,                  -- NULL for cron
  task_type TEXT NOT NULL,
  command TEXT NOT NULL,
  parameters TEXT,                        -- JSON object
  priority INTEGER NOT NULL DEFAULT 0,
  max_attempts INTEGER NOT NULL,
  overlap TEXT NOT NULL,                  -- skip | allow
  misfire TEXT NOT NULL,                  -- skip | run_once
  misfire_grace_seconds INTEGER NOT NULL, -- later than this after its time, a firing is late
  created_by TEXT NOT NULL,
  firings INTEGER NOT NULL DEFAULT 0,     -- firings that submitted a task
  skipped INTEGER NOT NULL DEFAULT 0,     -- firings that did not
  last_fired_at INTEGER,
  last_task_id TEXT,
  next_fire_at INTEGER,                   -- as the server said with the last firing
  version INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS container_task_schedules_status_idx ON container_task_schedules (status);

CREATE TABLE IF NOT EXISTS container_task_schedule_firings (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  firing_id TEXT NOT NULL UNIQUE,
  schedule_id TEXT NOT NULL,
  worker_name TEXT,                       -- the target of the submitted task, as above
  container_name TEXT,
  trigger TEXT NOT NULL,                  -- timer | manual
  outcome TEXT NOT NULL,                  -- submitted | skipped
  skipped_reason TEXT,                    -- overlap | missed | superseded | inactive
  task_id TEXT,
  fired_at INTEGER NOT NULL,              -- when it was due (unix seconds)
  fired_at_ms INTEGER NOT NULL,           -- the same, to the millisecond
  stream_sequence INTEGER NOT NULL UNIQUE,
  created_at INTEGER NOT NULL             -- when it was handled
);
CREATE INDEX IF NOT EXISTS container_task_schedule_firings_schedule_idx
  ON container_task_schedule_firings (schedule_id, fired_at);
