-- Audit evidence: signed checkpoints of the chain (also written outside the
-- store, see package audit), the cursors and leases of the continuous
-- export, and indexes for `postern audit ls` and checkpoint counts.

CREATE TABLE audit_checkpoints (
    seq      BIGINT  PRIMARY KEY,
    time     TEXT    NOT NULL,
    envelope TEXT    NOT NULL,
    anchored INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX audit_checkpoints_unanchored ON audit_checkpoints (anchored, seq);

CREATE TABLE audit_export (
    sink        TEXT   PRIMARY KEY,
    seq         BIGINT NOT NULL DEFAULT 0,
    owner       TEXT   NOT NULL DEFAULT '',
    lease_until TEXT   NOT NULL DEFAULT '',
    updated     TEXT   NOT NULL DEFAULT ''
);

CREATE INDEX audit_events_time ON audit_events (time);
CREATE INDEX audit_events_type ON audit_events (type, seq);
