-- The table as the original Registry-Rubber's documentation had it created
-- by hand. On a new database this creates it; on one the original used, it
-- changes nothing, so both take the same path through the migrations that
-- follow.
CREATE TABLE IF NOT EXISTS `{table}` (
    username int(10) unsigned NOT NULL PRIMARY KEY,
    password varchar(64)
) DEFAULT CHARACTER SET latin1;
