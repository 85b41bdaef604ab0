// Package guardrails decides which data postern masks: the masking rules of
// the configuration (global and per role) compiled into a [Policy] that
// gives each session its [Masks] (what is masked in recordings, what before
// it reaches the client), and the [StreamWriter] that masks a terminal
// stream on its way to the client.
//
// The detectors and the streaming scanner are in guardrails/mask; the
// PostgreSQL-aware proxy that audits, gates and masks statement by
// statement is guardrails/pgproxy.
//
// # Imports
//
// guardrails imports only guardrails/mask and the configuration schema; it
// never imports the bastion, the recorder or the server.
package guardrails
