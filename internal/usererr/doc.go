// Package usererr is postern's one user-visible error: the only kind of
// error whose message an edge shows to a client. Every edge that answers a
// client (SSH stderr and exit status, HTTP JSON, Slack) finds it with
// errors.As ([As]) and shows its Msg and Code; any other error is logged
// with an id the user can quote and answered with a generic message.
//
// It imports nothing of postern.
package usererr
