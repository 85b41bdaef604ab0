-- Identity keys: requests and grants belong to an issuer and subject (or an
-- alias), not to a bare username that two issuers may both vouch for. Rows
-- from before have an empty key: their requester sees them no more and their
-- grants apply to nobody (fail closed).

ALTER TABLE approvals ADD COLUMN requester_key TEXT NOT NULL DEFAULT '';
ALTER TABLE grants ADD COLUMN identity TEXT NOT NULL DEFAULT '';
CREATE INDEX grants_identity ON grants (identity, expires);
