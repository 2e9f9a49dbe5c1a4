-- vibehq central schema (D1-compatible SQLite): the ten tables of the seed plan.
-- Every table carries worker_name and container_name. Timestamps are unix seconds
-- (Drizzle's integer 'timestamp' mode). Rows are written only by the projector, from events;
-- `version` is the stream sequence of the last event applied to the row.

CREATE TABLE IF NOT EXISTS container_tasks (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  task_id TEXT NOT NULL UNIQUE,
  worker_name TEXT,                       -- null = any worker may take it
  container_name TEXT,                    -- null = any container may take it
  priority INTEGER DEFAULT 0,             -- higher runs first
  status TEXT NOT NULL DEFAULT 'pending', -- pending | assigned | running | completed | failed | cancelled
  task_type TEXT NOT NULL,
  command TEXT NOT NULL,
  parameters TEXT,                        -- JSON object
  assigned_to TEXT,                       -- worker_name:container_name
  output TEXT,
  error TEXT,
  attempts INTEGER NOT NULL DEFAULT 0,
  max_attempts INTEGER NOT NULL DEFAULT 3,
  idempotency_key TEXT,
  version INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER DEFAULT (unixepoch()),
  assigned_at INTEGER,
  started_at INTEGER,
  completed_at INTEGER,
  updated_at INTEGER DEFAULT (unixepoch())
);
CREATE INDEX IF NOT EXISTS container_tasks_task_id_idx ON container_tasks (task_id);
CREATE INDEX IF NOT EXISTS container_tasks_worker_name_idx ON container_tasks (worker_name);
CREATE INDEX IF NOT EXISTS container_tasks_status_idx ON container_tasks (status);
CREATE INDEX IF NOT EXISTS container_tasks_priority_idx ON container_tasks (priority);
CREATE INDEX IF NOT EXISTS container_tasks_created_at_idx ON container_tasks (created_at);

CREATE TABLE IF NOT EXISTS container_instances (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  worker_name TEXT NOT NULL,
  container_name TEXT,
  instance_id TEXT NOT NULL UNIQUE,
  state TEXT NOT NULL,                    -- starting | running | unhealthy | stopped | failed
  port INTEGER DEFAULT 8080,
  restart_count INTEGER NOT NULL DEFAULT 0,
  last_error TEXT,
  version INTEGER NOT NULL DEFAULT 0,
  last_health_check INTEGER,
  created_at INTEGER DEFAULT (unixepoch()),
  updated_at INTEGER DEFAULT (unixepoch())
);
CREATE INDEX IF NOT EXISTS container_instances_worker_name_idx ON container_instances (worker_name);
CREATE INDEX IF NOT EXISTS container_instances_state_idx ON container_instances (state);

CREATE TABLE IF NOT EXISTS container_health_checks (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  worker_name TEXT NOT NULL,
  container_name TEXT,
  instance_id TEXT NOT NULL,
  healthy INTEGER NOT NULL,               -- 0 | 1
  status_code INTEGER,
  latency_ms REAL NOT NULL,
  error TEXT,
  checked_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS container_health_checks_instance_idx ON container_health_checks (instance_id, checked_at);
CREATE INDEX IF NOT EXISTS container_health_checks_worker_name_idx ON container_health_checks (worker_name);

CREATE TABLE IF NOT EXISTS ai_tasks (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  task_id TEXT NOT NULL UNIQUE,
  worker_name TEXT NOT NULL,
  container_name TEXT,
  plan_id TEXT NOT NULL,
  title TEXT NOT NULL,
  description TEXT,
  status TEXT NOT NULL DEFAULT 'pending', -- pending | awaiting_approval | approved | rejected | running | completed | failed | cancelled
  requires_approval INTEGER NOT NULL DEFAULT 0,
  command TEXT,
  queue_task_id TEXT,                     -- container_tasks.task_id submitted for this step
  result TEXT,
  version INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER DEFAULT (unixepoch()),
  updated_at INTEGER DEFAULT (unixepoch())
);
CREATE INDEX IF NOT EXISTS ai_tasks_worker_name_idx ON ai_tasks (worker_name);
CREATE INDEX IF NOT EXISTS ai_tasks_status_idx ON ai_tasks (status);
CREATE INDEX IF NOT EXISTS ai_tasks_plan_id_idx ON ai_tasks (plan_id);

CREATE TABLE IF NOT EXISTS ai_tasks_hitl (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  approval_id TEXT NOT NULL UNIQUE,
  task_id TEXT NOT NULL,
  worker_name TEXT NOT NULL,
  container_name TEXT,
  action TEXT NOT NULL,
  details TEXT,                           -- JSON
  status TEXT NOT NULL DEFAULT 'pending', -- pending | approved | rejected
  decided_by TEXT,
  comment TEXT,
  requested_at INTEGER NOT NULL,
  decided_at INTEGER
);
CREATE INDEX IF NOT EXISTS ai_tasks_hitl_worker_name_idx ON ai_tasks_hitl (worker_name);
CREATE INDEX IF NOT EXISTS ai_tasks_hitl_status_idx ON ai_tasks_hitl (status);
CREATE INDEX IF NOT EXISTS ai_tasks_hitl_task_id_idx ON ai_tasks_hitl (task_id);

CREATE TABLE IF NOT EXISTS ai_evaluations (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  evaluation_id TEXT NOT NULL,
  round INTEGER NOT NULL,
  worker_name TEXT NOT NULL,
  container_name TEXT,
  provider TEXT NOT NULL,
  model TEXT NOT NULL,
  prompt TEXT NOT NULL,
  criteria TEXT,
  output TEXT NOT NULL,
  score REAL NOT NULL,
  feedback TEXT,
  passed INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  UNIQUE (evaluation_id, round)
);
CREATE INDEX IF NOT EXISTS ai_evaluations_worker_name_idx ON ai_evaluations (worker_name);
CREATE INDEX IF NOT EXISTS ai_evaluations_model_idx ON ai_evaluations (model);

CREATE TABLE IF NOT EXISTS ai_routing_decisions (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  decision_id TEXT NOT NULL UNIQUE,
  worker_name TEXT NOT NULL,
  container_name TEXT,
  prompt TEXT NOT NULL,
  complexity REAL NOT NULL,
  tier TEXT NOT NULL,
  provider TEXT NOT NULL,
  model TEXT NOT NULL,
  reasons TEXT,                           -- JSON array of strings
  features TEXT,                          -- JSON
  created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ai_routing_decisions_worker_name_idx ON ai_routing_decisions (worker_name);
CREATE INDEX IF NOT EXISTS ai_routing_decisions_tier_idx ON ai_routing_decisions (tier);

CREATE TABLE IF NOT EXISTS ai_structured_outputs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  output_id TEXT NOT NULL UNIQUE,
  worker_name TEXT NOT NULL,
  container_name TEXT,
  provider TEXT NOT NULL,
  model TEXT NOT NULL,
  prompt TEXT NOT NULL,
  schema TEXT NOT NULL,                   -- JSON Schema
  output TEXT,                            -- JSON; null when never valid
  valid INTEGER NOT NULL,
  attempts INTEGER NOT NULL,
  errors TEXT,                            -- JSON array of strings
  created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ai_structured_outputs_worker_name_idx ON ai_structured_outputs (worker_name);

CREATE TABLE IF NOT EXISTS ai_tool_calls (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  call_id TEXT NOT NULL UNIQUE,
  worker_name TEXT NOT NULL,
  container_name TEXT,
  run_id TEXT,
  step INTEGER,
  tool_name TEXT NOT NULL,
  arguments TEXT NOT NULL,                -- JSON
  result TEXT,                            -- JSON
  error TEXT,
  duration_ms REAL NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ai_tool_calls_worker_name_idx ON ai_tool_calls (worker_name);
CREATE INDEX IF NOT EXISTS ai_tool_calls_run_id_idx ON ai_tool_calls (run_id);
CREATE INDEX IF NOT EXISTS ai_tool_calls_tool_name_idx ON ai_tool_calls (tool_name);

CREATE TABLE IF NOT EXISTS ai_tool_call_streams (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  stream_id TEXT NOT NULL UNIQUE,
  worker_name TEXT NOT NULL,
  container_name TEXT,
  run_id TEXT,
  provider TEXT NOT NULL,
  model TEXT NOT NULL,
  prompt TEXT NOT NULL,
  text TEXT NOT NULL,
  tool_calls TEXT,                        -- JSON array
  chunks TEXT,                            -- JSON array of deltas as they arrived
  chunk_count INTEGER NOT NULL,
  first_token_ms REAL,
  duration_ms REAL NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ai_tool_call_streams_worker_name_idx ON ai_tool_call_streams (worker_name);
CREATE INDEX IF NOT EXISTS ai_tool_call_streams_run_id_idx ON ai_tool_call_streams (run_id);
