-- Search across recordings (PostgreSQL): the same tables as the SQLite
-- migration of this version, with the words of each entry kept as a
-- tsvector (built by postern, see state/search.go) under a GIN index instead
-- of an FTS5 table.

CREATE TABLE search_entries (
    id        BIGINT   PRIMARY KEY,
    session   TEXT     NOT NULL,
    kind      TEXT     NOT NULL,
    offset_ms BIGINT   NOT NULL,
    text      TEXT     NOT NULL,
    words     tsvector NOT NULL
);

CREATE INDEX search_entries_session ON search_entries (session);

CREATE INDEX search_entries_words ON search_entries USING GIN (words);

CREATE TABLE search_sessions (
    session   TEXT PRIMARY KEY,
    state     TEXT    NOT NULL,
    claimed   TEXT    NOT NULL,
    replica   TEXT    NOT NULL DEFAULT '',
    entries   BIGINT  NOT NULL DEFAULT 0,
    bytes     BIGINT  NOT NULL DEFAULT 0,
    truncated INTEGER NOT NULL DEFAULT 0,
    error     TEXT    NOT NULL DEFAULT ''
);
