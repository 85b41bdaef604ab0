// Package playtest builds what the players tests replay: a real state store
// (SQLite), a real file store and a real recorder, and sessions recorded
// through it. It is imported by tests only.
package playtest
