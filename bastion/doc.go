// Package bastion is postern's outer SSH server: it accepts connections,
// authenticates users by their postern user certificates, decides every
// channel with the role policy ([policy]) and hands the channels it admits
// to inventory targets to the [TargetHandler] registered for the target's
// kind (Options.Handlers: the inner hop for ssh and command targets, the
// PostgreSQL proxy, the byte [Splice] for tcp and passthrough targets). It
// splices forwards to destinations outside the inventory itself, behind the
// SSRF guard, and answers the bastion's own session (info, targets).
//
// # Lifecycle
//
// [NewServer] loads (or generates) postern's host key and signs a host
// certificate for Options.HostNames with the host CA (24 hours, re-signed
// 12 hours before expiry; both the certificate and the plain key are
// offered). [Server.Serve] accepts connections on a listener until
// [Server.Shutdown], which stops accepting, lets connections drain, and
// closes what is left when its context ends. [Server.SetPolicy] swaps the
// role policy atomically; open connections keep their authentication and
// every later channel is decided by the new policy.
//
// Connection handling lives in conn.go, authentication in auth.go, channel
// routing in router.go, the handler map in handler.go, the SSRF guard in
// ssrf.go, splicing in forward.go and the bastion's own session in info.go.
// A panic while serving one client is recovered in its connection's
// goroutines: that connection ends, every other goes on
// (postern_panics_total).
//
// The server owns its listeners; each accepted connection is owned by one
// goroutine that closes it. A connection is refused before the handshake
// when the global or per-source limit is reached. The handshake (key
// exchange and authentication) must finish within the handshake timeout; a
// connection ends after the idle timeout without traffic and at the expiry of
// its certificate; at most 1024 channels may be open at once on one
// connection. Keepalive global requests are answered; remote forwarding
// (-R, tcpip-forward) is not supported and refused.
//
// # Authentication
//
// Only public key authentication is offered, with no banner. The decision is
// taken once, in x/crypto's VerifiedPublicKeyCallback, which runs only for a
// key whose signature the client produced (the plain PublicKeyCallback may
// run for keys the client never proves it holds, CVE-2024-45337, so it
// accepts provisionally and records nothing). The key must be a user
// certificate accepted by [certs.Authority.CheckUserCert] for the login and
// source address, and its serial must not be revoked (checked in the state
// store; an unavailable store fails closed; open connections recheck every
// minute and end once their certificate is revoked), and it must not be
// locked (Options.Locks, read fresh from the store; the refusal is the one
// case the client gets a banner, with the lock's reason). An open
// connection runs on past its certificate's expiry when the same identity
// holds a newer certificate for the same key (Options.Renewals: postern
// agent renews it). The result is a [ConnInfo],
// bound to the connection through a Permissions extension; channel handlers
// read only that. Every success and failure is audited with its reason code,
// source, key fingerprint and serial, and failures are counted in
// postern_auth_failures_total{reason}.
//
// A source address (IPv4, or IPv6 /64) whose connections keep failing
// authentication is penalised (penalty.go, ssh.penalty): for a while its
// new connections are reset at accept, before any key exchange, and one
// auth.penalty event is audited instead of one event per connection.
//
// # Channels
//
// Every channel type is gated:
//
//   - direct-tcpip (ssh -J, ssh -L): the destination as the client typed it
//     is looked up in the inventory. An inventory target must be authorized
//     by the policy (for ssh and command targets only that some login of the
//     matching roles reaches it: the inner hop checks the actual login). tcp
//     targets additionally need forwarding.local. The channel then goes to
//     the handler of the target's kind; a kind without a handler is refused
//     ("postern: <name>: not available"). ssh targets marked passthrough go
//     to the tcp handler (the target's sshd must then trust the user CA, and
//     nothing is recorded). A destination outside the
//     inventory goes through the SSRF guard and needs forwarding.local and a
//     covering forwarding.allow entry.
//   - session: the bastion runs no shell and no commands. A shell (or exec
//     "", "whoami", "info", "targets") prints who the user is and what they
//     may reach; exec "targets --json" prints the same as JSON ([Info]).
//   - everything else (x11, auth-agent, streamlocal, forwarded-*) is refused
//     with a message in the channel rejection.
//
// Connections and the channels to inventory targets register with the
// kill switch (Options.Locks): a lock that comes to match one ends it with
// the lock's reason (the connection after a 2-second grace, so that its
// sessions tell the user and send exit status 124), and channels to a
// locked target are refused.
//
// Denials are short and stable, and the same whether a target does not
// exist or is not allowed: "postern: web-9: not allowed for
// alice@example.com". Internal errors go only to the log. Every channel open
// and denial is audited (channel.open, channel.deny with a code); spliced
// forwards also emit forward.start and forward.end with byte counts and
// duration.
//
// # SSRF guard
//
// A destination outside the inventory is parsed before any DNS: every
// numeric spelling inet_aton or a resolver might accept (2130706433,
// 0x7f000001, 0177.0.0.1, 127.1, [::1], ::ffff:127.0.0.1, zone ids) becomes
// an address. A name is resolved once (Options.Resolver) and every address
// must pass; the forward dials the checked addresses, never the name, so a
// DNS answer that changes between check and dial cannot win. Loopback,
// unspecified, link-local, cloud metadata (every well-known endpoint, by
// address in any IPv6 form carrying it, and by host name) and multicast
// addresses are refused unless a role's forwarding.allow names a prefix
// inside that range (a catch-all such as 0.0.0.0/0 does not count); the
// bastion's own listeners (SSH, and HTTP as the wiring adds it:
// Options.OwnListeners) are refused by any address that reaches them,
// whatever the roles allow. The classification is internal/netguard's.
//
// # Forwarding
//
// Splices copy both directions with buffers borrowed from a pool only while
// data flows (idle forwards hold 2 KiB per direction), pass EOF on as a
// half-close, and count bytes in postern_forwarded_bytes_total{direction}
// (up: client to destination). Dialing a destination times out after 10
// seconds.
//
// # Metrics
//
// postern_connections_total, postern_connections_active,
// postern_connections_refused_total{reason},
// postern_auth_failures_total{reason}, postern_auth_penalties_total,
// postern_channels_total{type,outcome},
// postern_forwarded_bytes_total{direction}, postern_panics_total{where}.
//
// # Imports
//
// bastion knows certificates (certs), the policy, the configuration and the
// audit event type (state); it never imports the handlers it serves
// (bastion/innerhop, guardrails), the recorder, approvals, players, the
// development issuer or server. TestImportRules (server/imports_test.go)
// holds this.
//
// [RFC 4254]: https://www.rfc-editor.org/rfc/rfc4254
// [draft-miller-ssh-cert]: https://datatracker.ietf.org/doc/html/draft-miller-ssh-cert
package bastion
