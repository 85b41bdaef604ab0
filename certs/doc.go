// Package certs owns postern's certificate authorities, the issuance of user
// certificates in exchange for OIDC ID tokens, the POST /v1/certs handler,
// and the verification of OIDC tokens into an Identity.
//
// # Authorities
//
// An [Authority] holds three CAs, each a [CA] with one signing key (ed25519 by
// default; ECDSA P-256 and RSA-3072 allowed) and any extra public keys it
// still trusts during a rotation:
//
//   - the user CA signs the certificates users and agents present to postern;
//     [Authority.CheckUserCert] is how the bastion checks them;
//   - the host CA signs postern's own host certificate and the per-target host
//     certificates of the inner hop ([Authority.SignHost]); clients trust it
//     through [Authority.HostCALine];
//   - the target CA signs the one-minute certificates postern presents to
//     targets ([Authority.SignTarget]); targets trust only this key
//     (TrustedUserCAKeys), so a user certificate never reaches a target.
//
// Beside the CAs, [AuditKey] is the audit signing key (ca.audit): an
// ed25519 key of its own that signs audit checkpoints and sealed recordings'
// digest records (package audit), loaded and rotated like a CA and signing
// no certificate.
//
// [LoadAuthority] loads the keys from the configuration, or generates them in
// <data_dir>/ca on first start (0600 files; group- or world-readable key files
// are refused). An Authority is immutable after loading and safe for
// concurrent use; reloading means loading a new one.
//
// # Issuance
//
// An [Issuer] runs one ordered pipeline per request, each step a small
// function: defaults (public key and ttl checks, per-source rate limit) →
// identity (token verification through a [TokenVerifier]) → locks (the
// kill switch refuses a locked identity) → role policy (a
// [Policy] grants logins and extensions) → limits (per-identity rate limit,
// lifetime) → sign (user CA) → validate (the signed certificate is checked
// with CheckUserCert before it leaves). Certificates always carry explicit
// principals (the username plus the granted logins), a random serial, the
// key id postern:<issuer>:<username>:<serial>, the extensions the grant
// allows, the identity extension ([IdentityExtension]) and no critical
// options. Each issuance, and each refusal after the token was verified, is
// an audit event; counters postern_certs_issued_total{issuer,kind} and
// postern_cert_requests_failed_total{code} are kept on an injected registry.
//
// [Issuer.IssueFor] runs the same pipeline without the token for an identity
// another credential proved (the MCP endpoint's caller), and
// IssuerOptions.Record keeps every certificate for renewals of open
// connections.
//
// Issuer profiles (github-actions, kubernetes) preset workload issuers and
// keep their claims (repository, ref, job_workflow_ref; kubernetes.io
// namespace and service account) in [Identity.Claims], which rides in the
// certificate for roles to match.
//
// [Issuer.Handler] serves POST /v1/certs (bearer ID token, JSON body of at
// most 64 KiB). Every refusal is an [*usererr.Error] with a stable code and a message
// safe to show; tokens are never echoed or logged.
//
// The certificate format is specified in [PROTOCOL.certkeys]; the OpenSSH
// known_hosts @cert-authority marker in [sshd(8)].
//
// # Imports
//
// certs imports the configuration and the state store (audit events); it
// never imports the bastion, the recorder, approvals, players, guardrails or
// server.
//
// [PROTOCOL.certkeys]: https://datatracker.ietf.org/doc/draft-miller-ssh-cert/
// [sshd(8)]: https://man.openbsd.org/sshd.8#SSH_KNOWN_HOSTS_FILE_FORMAT
package certs
