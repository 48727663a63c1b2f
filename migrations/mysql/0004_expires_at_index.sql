-- The sweeper deletes expired rows in bounded batches, found by this index.
ALTER TABLE `{table}` ADD INDEX by_expires_at (expires_at);
