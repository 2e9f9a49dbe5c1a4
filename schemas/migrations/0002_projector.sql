-- Bookkeeping of the projector that builds the tables of 0001 from the event streams.

-- The last stream sequence applied, per stream. Written in the same transaction as the rows the
-- events changed, so a redelivered or replayed event is recognised and changes nothing.
CREATE TABLE IF NOT EXISTS projector_checkpoints (
  stream_name TEXT PRIMARY KEY,
  last_sequence INTEGER NOT NULL
);

-- Messages on event subjects that could not be applied (malformed, unknown type, newer schema).
-- Kept whole for inspection; the projector moves on instead of wedging.
CREATE TABLE IF NOT EXISTS projector_rejected (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  stream_name TEXT NOT NULL,
  stream_sequence INTEGER NOT NULL,
  subject TEXT NOT NULL,
  reason TEXT NOT NULL,
  raw BLOB NOT NULL,
  published_at INTEGER NOT NULL,
  UNIQUE (stream_name, stream_sequence)
);

-- Facts about this projection file, e.g. the id its durable consumers are named after.
CREATE TABLE IF NOT EXISTS projector_meta (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
