-- User names compare byte for byte: ascii_bin pads with spaces, so Apache's
-- lookup of "alice " found the row of "alice". (No name this service writes
-- holds a space; the names Apache is asked about may.)
ALTER TABLE `{table}` MODIFY username VARBINARY(128) NOT NULL;
