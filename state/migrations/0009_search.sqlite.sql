-- Search across recordings (SQLite): one row per indexed piece of text of a
-- sealed recording (a command line, an input line, a SQL statement, an SFTP
-- operation, a line of terminal output), with its offset in the recording,
-- and an FTS5 index over the text. The row id orders entries by the start of
-- their session (see state/search.go), so newest-first results need no sort.
-- search_sessions says which sessions are indexed (or being indexed, by
-- whom), so that backfill finds the rest.

CREATE TABLE search_entries (
    id        INTEGER PRIMARY KEY,
    session   TEXT    NOT NULL,
    kind      TEXT    NOT NULL,
    offset_ms BIGINT  NOT NULL,
    text      TEXT    NOT NULL
);

CREATE INDEX search_entries_session ON search_entries (session);

CREATE VIRTUAL TABLE search_fts USING fts5(
    text,
    content = 'search_entries',
    content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 0'
);

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



-- Merge index segments 8 at a time instead of 4: every sealed session adds
-- a segment, and merging them was a fifth of the CPU of indexing.
INSERT INTO search_fts (search_fts, rank) VALUES ('automerge', 8);
