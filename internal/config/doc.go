// Package config is postern's configuration file: its schema (Config and the
// section types), loading with ${env:NAME} / ${file:/path} secret references,
// documented defaults (SetDefaults), and validation whose every message names
// the key path and the fix (Validate).
//
// Config lives in internal/ rather than under cmd/ because the certs, bastion
// and recorder packages all read their sections of it, and the import rule
// (cmd → bastion → {certs, recorder}) forbids them importing cmd or bastion.
// Only the file format is decided here; each package interprets its section.
//
// The reference for every key is docs/config.md.
//
// # Imports
//
// config imports only guardrails/mask (to validate detector names).
package config
