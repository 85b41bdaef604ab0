-- Approvals: commands and access requests held until approvers decide, and
-- the just-in-time grants approved access requests create.

CREATE TABLE approvals (
    id          TEXT PRIMARY KEY,
    kind        TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    requester   TEXT    NOT NULL,
    req_groups  TEXT    NOT NULL DEFAULT '',
    target      TEXT    NOT NULL DEFAULT '',
    login       TEXT    NOT NULL DEFAULT '',
    command     TEXT    NOT NULL DEFAULT '',
    session     TEXT    NOT NULL DEFAULT '',
    rule        TEXT    NOT NULL DEFAULT '',
    approvers   TEXT    NOT NULL DEFAULT '',
    required    INTEGER NOT NULL DEFAULT 1,
    reason      TEXT    NOT NULL DEFAULT '',
    duration_ms BIGINT  NOT NULL DEFAULT 0,
    votes       TEXT    NOT NULL DEFAULT '',
    created     TEXT    NOT NULL,
    expires     TEXT    NOT NULL,
    decided     TEXT    NOT NULL DEFAULT '',
    decided_by  TEXT    NOT NULL DEFAULT '',
    note        TEXT    NOT NULL DEFAULT ''
);

CREATE INDEX approvals_status ON approvals (status, created);

CREATE TABLE grants (
    id          TEXT PRIMARY KEY,
    username    TEXT NOT NULL,
    target      TEXT NOT NULL,
    logins      TEXT NOT NULL DEFAULT '',
    approval    TEXT NOT NULL DEFAULT '',
    created     TEXT NOT NULL,
    expires     TEXT NOT NULL,
    revoked     TEXT NOT NULL DEFAULT '',
    revoked_by  TEXT NOT NULL DEFAULT ''
);

CREATE INDEX grants_user ON grants (username, expires);
