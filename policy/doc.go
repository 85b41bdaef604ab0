// Package policy decides who may reach what through the bastion.
//
// An [Engine] is built once from a validated configuration ([New]) and is
// immutable afterwards; a configuration reload builds a new Engine and the
// bastion swaps it in atomically. All methods are safe for concurrent use.
//
// # Model
//
// Everything is denied unless a role allows it. A role applies to an identity
// when every non-empty list of its match section matches: the identity's
// issuer is one of match.issuers, it is in any of match.groups, and its
// username matches one of the match.users globs, and each match.claims glob
// matches the claim of that name its issuer kept (a workload token's
// repository, ref, namespace). A role with an empty match section is a
// configuration error (write users: ["*"] to match everyone).
//
// A role reaches the targets selected by name globs ([path.Match]) or label
// selectors (all labels equal). On them it may use its logins and ports:
//
//   - ssh target: the target's port; port 22 is accepted as the default
//     spelling of the target's sshd, since `ssh -J bastion web-1` asks for 22;
//   - tcp target: the target's port, or the ports the role lists instead;
//   - command target: no port (any port the client sends is ignored).
//
// When several roles match an identity and reach a target (with the login and
// port asked for), the decision takes the most permissive value across them:
// the least strict recording (off over optional over required), interactive if
// any allows it, every forwarding right any grants (the union of their allow
// lists), the longest max_session (unbounded if any is unbounded), and the
// rules of all of them in role order (first match wins); a moderator is
// required only if every one of them requires it.
//
// Denials carry a user-visible reason that is the same whether a target does
// not exist or is not allowed, so the inventory does not leak: see
// [DenyMessage].
//
// # Imports
//
// policy imports certs (identities) and the configuration; it never imports
// the bastion, the recorder, approvals, players, guardrails or server.
package policy
