-- Usernames become text (names are no longer only epoch integers) and each
-- row records when it was created, in epoch seconds. Rows of the original
-- keep working: their creation time is read from their epoch names
-- (thirteen digits are milliseconds), never later than now, so that a name
-- from the future (such as 4294967295, what a MySQL int(10) unsigned column
-- stored for a millisecond name) cannot escape cleanup. A row without a password could never
-- log in and is not carried over. The table is rebuilt in place, inside
-- the migration's transaction, so Apache reading the same file never sees
-- it missing.
CREATE TABLE "{table}__v2" (
    username   TEXT    NOT NULL PRIMARY KEY,
    password   TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
INSERT INTO "{table}__v2" (username, password, created_at)
    SELECT CAST(username AS TEXT),
           password,
           min(unixepoch(), CASE WHEN username >= 100000000000 THEN username / 1000 ELSE username END)
    FROM "{table}"
    WHERE password IS NOT NULL;
DROP TABLE "{table}";
ALTER TABLE "{table}__v2" RENAME TO "{table}";
CREATE INDEX "{table}_created_at" ON "{table}" (created_at);
