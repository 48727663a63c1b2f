-- The token door's refresh tokens, by the SHA-256 digest of the token (the
-- token itself is never stored), each bound to the credential it was issued
-- to: its user, and the SHA-256 digest of the user's stored hash then, so
-- that a replaced or re-created credential never inherits it. Deleted with
-- the credential.
CREATE TABLE `{table}_refresh` (
    digest    CHAR(64)     CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    username  VARBINARY(128) NOT NULL,
    service   VARCHAR(255) CHARACTER SET utf8mb4 NOT NULL,
    issued_at BIGINT       NOT NULL,
    credential CHAR(64)    CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    INDEX by_username (username)
) ENGINE = InnoDB DEFAULT CHARACTER SET utf8mb4;
