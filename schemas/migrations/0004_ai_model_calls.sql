-- One row per attempt the AI gateway made: which provider and model, how long it took, what it
-- used and cost, and how it ended. A call that fell back from one provider to another has one
-- row per provider tried, sharing `request_id`.
CREATE TABLE IF NOT EXISTS ai_model_calls (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  attempt_id TEXT NOT NULL UNIQUE,
  request_id TEXT NOT NULL,
  attempt INTEGER NOT NULL,               -- 1-based, in the order the chain was tried
  worker_name TEXT NOT NULL,
  container_name TEXT,
  operation TEXT NOT NULL,                -- ask | route | structured | tools | evaluate | plan
  provider TEXT NOT NULL,
  model TEXT NOT NULL,
  streamed INTEGER NOT NULL,
  outcome TEXT NOT NULL,                  -- ok | timeout | rate_limited | server_error | error
  status_code INTEGER,
  error TEXT,
  retry_after_ms INTEGER,
  latency_ms REAL NOT NULL,
  first_token_ms REAL,
  input_tokens INTEGER,
  output_tokens INTEGER,
  cached_tokens INTEGER,
  cost_usd REAL,                          -- from the configured price table; null when unpriced
  created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ai_model_calls_worker_name_idx ON ai_model_calls (worker_name);
CREATE INDEX IF NOT EXISTS ai_model_calls_request_id_idx ON ai_model_calls (request_id);
CREATE INDEX IF NOT EXISTS ai_model_calls_provider_idx ON ai_model_calls (provider);
