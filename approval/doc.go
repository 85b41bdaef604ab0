// Package approval holds flagged commands and just-in-time access requests
// until authorised approvers decide them.
//
// Rules ([Rules]) come from a role's rules: a regular expression (match) or
// a shell glob (glob) over the command line, first match wins, with action
// allow, deny or approve. An approve rule names its approvers (groups or
// usernames), how many approvals it needs (1 by default) and its timeout (5
// minutes by default).
//
// The [Broker] keeps requests in the state store, so they survive a restart
// and a decision taken on one replica releases a command waiting on another:
// a waiter is woken at once by a decision made in its own process or
// announced through the store's notifications (Options.Notify and Subscribe,
// LISTEN/NOTIFY on PostgreSQL), and otherwise sees it at the next poll of the
// store (every second by default).
// A request nobody decides times out and counts as denied; a notifier that
// cannot be reached never approves anything (fail closed).
//
// Channels: [Slack] posts a Block Kit message with Approve/Deny buttons to an
// incoming webhook and takes clicks at POST /v1/slack/actions (signature and
// timestamp window checked on the raw body before anything is parsed, replays
// refused); [Webhook] POSTs signed JSON to generic receivers, with retries;
// [API] serves GET /v1/approvals, GET /v1/approvals/{id}[?wait=30s],
// POST /v1/approvals/{id}/approve|deny and POST /v1/approvals (an access
// request).
//
// The Slack signature check is done here rather than with a Slack client
// library: it is a few lines of HMAC-SHA256 with a constant-time compare, and
// doing it in-house keeps the clock injectable (tests, the 5-minute window)
// and adds the replay cache the libraries do not have.
//
// # Imports
//
// approval imports certs, policy and the state store; it never imports the
// bastion, the inner hop, the recorder, players or server.
package approval
