// Package search makes every recording searchable: it turns a sealed
// recording into search entries and keeps the index in the state store up
// to date.
//
// # What is indexed
//
// [Extract] reads a sealed cast and the session's audit events and returns
// its entries, each with its offset in the recording: the command line of
// an exec or command session, every line typed in an interactive session
// (as recorded, so after masking; lines typed at a password prompt are
// never indexed), every SQL statement sent to a PostgreSQL target (as
// audited, masked), every SFTP file operation, and the terminal output as
// plain text (escape sequences removed, repeated lines dropped), in entries
// that cover at most two seconds and 1 KiB, up to a per-session budget
// ([Limits]). The words, the query syntax and the SQL of both backends
// (SQLite FTS5, PostgreSQL full-text search) belong to package state.
//
// # Lifecycle
//
// An [Indexer] is created once per server with [New]; the recorder calls
// [Indexer.Enqueue] after each seal, and [Indexer.Run] (one goroutine, on
// one OS thread so that its CPU time is measured) indexes queued sessions
// and periodically backfills sealed sessions without entries, newest
// first: recordings made before search existed, or sealed by a replica
// that stopped before indexing them. A claim in the state store gives each
// session to one replica.
//
// # Imports
//
// search imports the recorder (to read casts) and the state store; it never
// imports the bastion, the inner hop, guardrails, players or server.
package search
