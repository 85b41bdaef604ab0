-- Locks: the kill switch. A lock names an identity (issuer + subject), a
-- role, a target or one session. While it is active (not removed, not
-- expired) matching sessions end and new certificates, logins, API calls
-- and web sessions of matching identities are refused.

CREATE TABLE locks (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    issuer     TEXT NOT NULL DEFAULT '',
    subject    TEXT NOT NULL DEFAULT '',
    username   TEXT NOT NULL DEFAULT '',
    name       TEXT NOT NULL DEFAULT '',
    reason     TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL DEFAULT '',
    created    TEXT NOT NULL,
    expires    TEXT NOT NULL DEFAULT '',
    removed    TEXT NOT NULL DEFAULT '',
    removed_by TEXT NOT NULL DEFAULT ''
);

CREATE INDEX locks_removed ON locks (removed, created);
