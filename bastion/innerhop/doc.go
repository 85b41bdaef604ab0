// Package innerhop terminates the inner SSH hop: the SSH connection a client
// runs inside a direct-tcpip channel (ssh -J). It serves SSH on the channel
// with a host certificate for the target's name, re-authenticates the same
// user key, and then either proxies every channel and request to the target
// (kind ssh: upstream.go, pool.go, session.go) or runs the configured program
// in a pty (kind command: command.go), recording sessions as policy says
// (tap.go, copy.go), gating commands and typed lines (gate.go, linegate.go),
// deciding forwards through the target (forward.go) and auditing SFTP
// operations (sftpaudit.go).
//
// # Lifecycle
//
// [New] returns a [Server], which the service registers with the outer
// server as the handler of ssh and command targets; [Server.ServeTarget]
// accepts one channel and serves its inner connection until it ends;
// [Server.Close] closes the idle upstream logins at shutdown.
//
// # Authentication
//
// The host key is a per-process ed25519 key with a host
// certificate from the host CA for the target's name and aliases (1 hour,
// re-signed at half-life, cached per target). Only public key authentication
// is offered, and only the key of the outer connection (bastion.ConnInfo.Key, plain
// or inside a certificate) is accepted. The decision is taken in
// VerifiedPublicKeyCallback, on the key the client proved it holds
// (CVE-2024-45337), with the current policy: Authorize(identity, target,
// login, 22). A denial is sent as an SSH banner ("postern: web-1: not
// allowed for alice"), which ssh prints at its default log level.
//
// # Upstream (kind ssh)
//
// The target is dialled at its address and its host key
// verified by host_key, known_hosts or host_ca (never skipped); a mismatch
// ends the session with "postern: web-1: host key verification failed". The
// login is a fresh ed25519 key with a 2-minute target-CA certificate (key id
// "<identity>/<session-id>"), or the target's stored private_key. A clean
// login is kept after the inner hop ends and handed to the next inner hop
// of the same identity, role, login and target (upstreamPool, which says
// why that is safe), one inner hop at a time. Session
// channels and their requests are relayed both ways (pty-req, env from an
// allow-list, shell, exec, subsystem, window-change, signal, break,
// keepalives, exit-status, exit-signal, eow), exit-status always before EOF
// and close; nested direct-tcpip and tcpip-forward are decided like the
// outer hop's forwards, with the destination as the target sees it
// (forward.go: forwarding.local or .remote and a covering
// forwarding.target_allow entry, the netguard ranges, postern's own
// listeners never); agent and X11 forwarding need their own rights.
//
// # Recording
//
// Each shell, exec or subsystem is one recording (80x24 without a
// pty): output and stderr as 'o', input as 'i' (masked at secret prompts,
// see hopTap), window-change as 'r', markers "exec: <cmd>" and "exit <n>".
// SFTP sessions are recorded as having run and audited per operation
// (sftpaudit.go). With record: required a recording that cannot start or
// fails ends the session with ExitRecordingUnavailable and "postern:
// recording unavailable; session ended" on stderr; with optional it goes on
// unrecorded and a recording.error event is audited; off records nothing.
// A nil Recorder counts as a recording that cannot start.
//
// # Announcing, moderation, locks
//
// When a session starts, the client is sent its id in a session-id@postern
// channel request (stock clients ignore it; the MCP server reads it). A
// session whose role requires moderation waits, telling the user, until a
// moderator joins it (Options.Moderation), or ends with exit 119. Every
// begun session registers with the kill switch (Options.Locks): a lock on
// its identity, role, target or the session itself aborts it with exit 124
// and the lock's reason; an ssh target that keeps it running loses
// postern's login to it after 250 ms.
//
// # Session end
//
// Every session ends at the certificate's expiry (a second
// early, so the message reaches the user), after the role's max_session, on
// ctx cancellation (shutdown, revocation) or when the target disconnects
// ("postern: web-1: connection lost"); the user reads the reason on stderr,
// as JSON when the session set POSTERN_JSON_ERRORS=1.
//
// # Data path
//
// Copies use pooled buffers (8 KiB, growing to 256 KiB while
// reads fill them) and hand each chunk to the recorder before the client,
// never blocking beyond the recorder's bounded buffer. AES-GCM is preferred
// on both SSH connections.

// # Imports
//
// innerhop imports the outer server's types (bastion), the recorder, the
// policy and guardrails; it never imports approval, players or server: the
// approval gate is given to it as an [Approver].
package innerhop
