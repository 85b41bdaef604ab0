-- Initial schema: audit chain, sessions index, revocations.
-- Kept to portable SQL (BIGINT, TEXT, INTEGER) so a PostgreSQL store can
-- apply the same statements. Times are stored as fixed-width RFC 3339 UTC text
-- with microseconds, which sorts lexically in time order.

CREATE TABLE audit_events (
    seq     BIGINT PRIMARY KEY,
    time    TEXT   NOT NULL,
    type    TEXT   NOT NULL,
    actor   TEXT   NOT NULL DEFAULT '',
    source  TEXT   NOT NULL DEFAULT '',
    target  TEXT   NOT NULL DEFAULT '',
    session TEXT   NOT NULL DEFAULT '',
    details TEXT   NOT NULL DEFAULT '',
    prev    TEXT   NOT NULL,
    hash    TEXT   NOT NULL
);

CREATE INDEX audit_events_session ON audit_events (session);

CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,
    identity    TEXT   NOT NULL DEFAULT '',
    issuer      TEXT   NOT NULL DEFAULT '',
    role        TEXT   NOT NULL DEFAULT '',
    target      TEXT   NOT NULL DEFAULT '',
    login       TEXT   NOT NULL DEFAULT '',
    kind        TEXT   NOT NULL DEFAULT '',
    command     TEXT   NOT NULL DEFAULT '',
    start_time  TEXT   NOT NULL,
    end_time    TEXT,
    status      TEXT   NOT NULL,
    exit_status INTEGER,
    bytes_in    BIGINT NOT NULL DEFAULT 0,
    bytes_out   BIGINT NOT NULL DEFAULT 0,
    size        BIGINT NOT NULL DEFAULT 0,
    sha256      TEXT   NOT NULL DEFAULT '',
    seal_seq    BIGINT NOT NULL DEFAULT 0,
    object      TEXT   NOT NULL DEFAULT '',
    replica     TEXT   NOT NULL DEFAULT '',
    masked      INTEGER NOT NULL DEFAULT 0,
    meta        TEXT   NOT NULL DEFAULT ''
);

CREATE INDEX sessions_start ON sessions (start_time);
CREATE INDEX sessions_status ON sessions (status);

CREATE TABLE revocations (
    serial  BIGINT PRIMARY KEY,
    reason  TEXT NOT NULL DEFAULT '',
    revoked_by TEXT NOT NULL DEFAULT '',
    time    TEXT NOT NULL
);
