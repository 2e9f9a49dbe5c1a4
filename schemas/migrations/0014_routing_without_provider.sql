-- A routing decision names the provider and model the gateway would use only when one is
-- configured: routing itself reads the prompt alone, so `/api/ai/route` answers without any
-- (papercut 28). SQLite cannot drop NOT NULL in place: the table is rebuilt, rows and ids kept.
CREATE TABLE ai_routing_decisions_rebuilt (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  decision_id TEXT NOT NULL UNIQUE,
  worker_name TEXT NOT NULL,
  container_name TEXT,
  prompt TEXT NOT NULL,
  complexity REAL NOT NULL,
  tier TEXT NOT NULL,
  provider TEXT,                          -- NULL: no provider was configured
  model TEXT,
  reasons TEXT,                           -- JSON array of strings
  features TEXT,                          -- JSON
  created_at INTEGER NOT NULL
);
INSERT INTO ai_routing_decisions_rebuilt
  (id, decision_id, worker_name, container_name, prompt, complexity, tier, provider, model,
   reasons, features, created_at)
  SELECT id, decision_id, worker_name, container_name, prompt, complexity, tier, provider, model,
         reasons, features, created_at
  FROM ai_routing_decisions;
DROP TABLE ai_routing_decisions;
ALTER TABLE ai_routing_decisions_rebuilt RENAME TO ai_routing_decisions;
CREATE INDEX IF NOT EXISTS ai_routing_decisions_worker_name_idx ON ai_routing_decisions (worker_name);
CREATE INDEX IF NOT EXISTS ai_routing_decisions_tier_idx ON ai_routing_decisions (tier);
