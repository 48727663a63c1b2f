-- Usernames become text (names are no longer only epoch integers, and the
-- original's int(10) unsigned overflowed on millisecond names), compared
-- byte for byte as SQLite does; hashes get room up to 255 characters; the
-- table becomes InnoDB with utf8mb4 as its default; each row records when it
-- was created, in epoch seconds. The table is altered in place, so Apache
-- keeps reading the same table throughout.
--
-- MySQL commits DDL by itself, so this file holds three statements, which
-- the migration runner executes one after the other: rows without a password
-- (they could never log in, and NOT NULL would refuse them) go; the ALTER;
-- the backfill. The DELETE and the backfill can run again; the ALTER cannot,
-- so a run cut short between statements is finished by hand (README). Rows
-- of the original keep working and take their creation time from their
-- epoch names (thirteen digits are milliseconds), never later than now.
DELETE FROM `{table}` WHERE password IS NULL;

ALTER TABLE `{table}`
    ENGINE = InnoDB,
    DEFAULT CHARACTER SET utf8mb4,
    MODIFY username VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    MODIFY password VARCHAR(255) CHARACTER SET utf8mb4 NOT NULL,
    ADD COLUMN created_at BIGINT NOT NULL,
    ADD INDEX by_created_at (created_at);

UPDATE `{table}`
    SET created_at = LEAST(UNIX_TIMESTAMP(), CASE
        WHEN CAST(username AS UNSIGNED) >= 100000000000 THEN CAST(username AS UNSIGNED) DIV 1000
        ELSE CAST(username AS UNSIGNED)
    END)
    WHERE created_at = 0 AND username REGEXP '^[0-9]{1,19}$';
