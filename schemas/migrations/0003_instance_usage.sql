-- What each instance has cost: the milliseconds its process ran, accrued from its lifecycle
-- events (from `container.starting` until it stops, fails, goes unhealthy or is restarted).
-- `running_since_ms` is set while a process runs, so a query can add the time not yet accrued.
-- Instance-seconds per worker: SUM(usage_ms) / 1000.0 grouped by worker_name.
ALTER TABLE container_instances ADD COLUMN usage_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE container_instances ADD COLUMN running_since_ms INTEGER;
