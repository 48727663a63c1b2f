-- When each credential stops working, in epoch seconds; NULL for never (the
-- rows of the original tool). Apache's query refuses a row whose expiry has
-- passed, so a credential dies on time even if no sweep has run yet.
ALTER TABLE `{table}` ADD COLUMN expires_at BIGINT NULL;
