-- Identity keys for sessions and moderator joins: a recording belongs to an
-- issuer and subject (or an alias), not to a bare username that two subjects
-- or two issuers may both carry. Replay, watch, list and search compare
-- identity_key. Rows from before have an empty key and are visible to
-- auditors and admins only (fail closed). A join from before has no key
-- and no longer counts as a moderator.

ALTER TABLE sessions ADD COLUMN identity_key TEXT NOT NULL DEFAULT '';
CREATE INDEX sessions_identity_key ON sessions (identity_key, start_time);
ALTER TABLE session_joins ADD COLUMN subject TEXT NOT NULL DEFAULT '';
ALTER TABLE session_joins ADD COLUMN who_key TEXT NOT NULL DEFAULT '';
