-- Moderators who joined a session (watched it live): what a session whose
-- role requires moderation waits for.

CREATE TABLE session_joins (
    session TEXT NOT NULL,
    who     TEXT NOT NULL,
    issuer  TEXT NOT NULL DEFAULT '',
    groups  TEXT NOT NULL DEFAULT '',
    time    TEXT NOT NULL
);

CREATE INDEX session_joins_session ON session_joins (session);
