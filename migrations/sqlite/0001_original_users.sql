-- The table exactly as the original Registry-Rubber created it. On a new
-- database this creates it; on one the original wrote, it changes nothing,
-- so both take the same path through the migrations that follow.
CREATE TABLE IF NOT EXISTS "{table}" (username integer PRIMARY KEY, password varchar(64));
