// Package mcpserver is postern's Model Context Protocol server: the tools an
// AI agent calls to learn what it may reach, run commands, wait for
// approvals, read its sessions and ask for just-in-time access, with typed
// results. It is built on the official Go SDK
// (github.com/modelcontextprotocol/go-sdk).
//
// # Never a side door
//
// The server holds no privilege of its own. It acts for one [Caller] at a
// time, with that caller's user certificate, through the bastion's public
// interfaces only: commands run over SSH exactly as `ssh -J bastion target
// cmd` would (an outer connection to the bastion, a direct-tcpip channel to
// the target, the inner hop authenticated with the same certificate), so
// the role policy, locks, recording, masking and approval rules apply to
// them unchanged; everything else goes through the signed HTTP API
// (/v1/approvals, /v1/sessions). A command held for approval returns
// status pending_approval at once, with the approval id and link, while its
// SSH session waits in the background; [wait_approval] and [wait_run]
// collect the outcome.
//
// Two transports: `postern mcp` serves stdio for an agent runtime that
// launches it, acting with the profile `postern login` or `postern agent`
// wrote ([OpenProfile]); [NewHandler] serves streamable HTTP on the
// bastion's own mux (/v1/mcp), authenticating every request as the API does
// and acting with a short certificate the bastion issues for that identity
// (its roles, its locks, its rate limit) and dialing its own SSH listener.
//
// # Lifecycle
//
// [New] returns a [Server] for one caller: it owns the caller's outer SSH
// connection to the bastion (reused across commands while the certificate
// stays the same) and the commands it started (kept, finished or not, for
// 15 minutes after they end). [Server.Close] closes the connection and ends
// the commands still running.
//
// # Imports
//
// mcpserver is a client of the bastion: it imports the identity and login
// client (certs, certs/login), the shapes of what the bastion answers
// (bastion.Info, state, the cast decoder of recorder) and nothing that
// decides anything — never server, innerhop, approval or lock.
package mcpserver
