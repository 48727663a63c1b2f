-- What each credential may do through the token door: space-separated
-- scope patterns such as repository:team/*:pull; NULL for the configured
-- default_scopes. The other doors do not read it.
ALTER TABLE `{table}` ADD COLUMN scopes TEXT CHARACTER SET ascii COLLATE ascii_bin NULL;
