-- Stateless replicas: what used to live in a replica's data directory is
-- shared through the state store.

-- Secrets postern generates itself (the web UI's cookie key, the SSH host
-- key, CA keys when none are configured): created once by whichever replica
-- needs one first, then read by every replica.
CREATE TABLE secrets (
    name    TEXT PRIMARY KEY,
    value   TEXT NOT NULL,
    created TEXT NOT NULL
);

-- Web UI sessions. The browser's cookie holds a random token, and the row is
-- keyed by the token's SHA-256, so the table alone cannot be replayed as
-- cookies. Logout deletes the row, and so does the revocation of a certificate
-- of the same identity (issuer + subject).
CREATE TABLE web_sessions (
    id       TEXT PRIMARY KEY,
    issuer   TEXT NOT NULL,
    subject  TEXT NOT NULL,
    identity TEXT NOT NULL,
    csrf     TEXT NOT NULL,
    created  TEXT NOT NULL,
    expires  TEXT NOT NULL
);

CREATE INDEX web_sessions_identity ON web_sessions (issuer, subject);
CREATE INDEX web_sessions_expires ON web_sessions (expires);

-- Replica heartbeats: a replica that stopped beating has died, and another
-- completes the recordings it left running from their checkpoints.
CREATE TABLE replicas (
    name      TEXT PRIMARY KEY,
    started   TEXT NOT NULL,
    heartbeat TEXT NOT NULL
);

-- Recording checkpoints. While a session is recorded, its replica copies the
-- bytes of its spool that are not yet in the recording store here, every few
-- seconds. If the replica dies, another completes the recording from the
-- store's partial upload and these entries, and deletes them.
CREATE TABLE recording_journal (
    session TEXT   NOT NULL,
    pos     BIGINT NOT NULL,
    size    BIGINT NOT NULL,
    data    BYTEA  NOT NULL,
    time    TEXT   NOT NULL,
    PRIMARY KEY (session, pos)
);
