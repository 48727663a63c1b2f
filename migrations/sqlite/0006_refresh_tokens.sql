-- The token door's refresh tokens, by the SHA-256 digest of the token (the
-- token itself is never stored), each bound to the credential it was issued
-- to: its user, and the SHA-256 digest of the user's stored hash then, so
-- that a replaced or re-created credential never inherits it. Deleted with
-- the credential.
CREATE TABLE "{table}_refresh" (
    digest    TEXT    NOT NULL PRIMARY KEY,
    username  TEXT    NOT NULL,
    service   TEXT    NOT NULL,
    issued_at INTEGER NOT NULL,
    credential TEXT   NOT NULL
);
CREATE INDEX "{table}_refresh_username" ON "{table}_refresh" (username);
