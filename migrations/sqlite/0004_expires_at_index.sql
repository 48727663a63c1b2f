-- The sweeper deletes expired rows in bounded batches, found by this index.
CREATE INDEX "{table}_expires_at" ON "{table}" (expires_at);
