// Package server wires a whole postern from one configuration: the state
// store, the certificate authorities and the issuance pipeline, the
// recorder, the approval broker and its channels, the guardrails, the outer
// SSH server with a handler for each target kind, and the one HTTP mux
// (certificates, sessions, approvals, Slack, web UI, metrics, health).
//
// # Lifecycle
//
// [NewService] checks what can be checked without side effects;
// [Service.Run] opens every component, serves until its context ends, and
// shuts down in order (stop accepting, drain sessions, close idle upstream
// logins, seal recordings, close the store). A SIGHUP reloads the
// configuration: policy, masking, penalties and upstream reuse are swapped in
// place; the rest needs a restart.
//
// Replicas (replica.go): each process has a replica name that owns the
// sessions it records; a live follow asked on another replica is forwarded to
// the one recording it. Every replica records a heartbeat in the state store
// and, with PostgreSQL, completes the recordings of replicas that stopped
// (recorder.RecoverDead). The secrets postern generates (secrets.go: the SSH
// host key, CA keys nobody configured, the web cookie key) come from the
// state store, never a replica's disk.
//
// Check (check.go) validates a configuration without serving (`postern
// check`); a SIGHUP reload runs it first and applies only what can change in
// place (PlanReload), reporting the rest as needing a restart.
//
// The adapters between components also live here (gates.go: the approval
// broker as the inner hop's command gate and the PostgreSQL proxy's
// statement gate; webapprovals.go: the broker as the web UI's approvals).
//
// # Imports
//
// server is the only package that knows every other; only cmd/postern
// imports it (the test harness internal/posterntest runs it too).
// TestImportRules (imports_test.go) holds the layering of every package.
package server
