// Package login is the client half of postern's certificate issuance: it
// obtains an OIDC ID token, asks the bastion for a short-lived SSH user
// certificate, and writes a profile directory that the stock OpenSSH client
// uses as is.
//
// # Flow
//
// [Login] reads the bastion's GET /v1/config (issuers, SSH address, host-CA
// line), obtains an ID token in one of four ways, and POSTs the public key
// with the token as a bearer credential to /v1/certs:
//
//   - [ModeBrowser]: authorization code with PKCE (S256) and a loopback
//     redirect to http://127.0.0.1:<port>/callback ([RFC 8252], [RFC 7636]).
//     The state and the ID token's nonce are checked. When the bastion marks
//     the issuer as its embedded development issuer ("dev": true), which
//     approves every request, the client follows the authorization URL with
//     its own HTTP client and no browser is needed.
//   - [ModeDevice]: the device authorization grant ([RFC 8628]); the user code
//     and verification URL are printed, polling honours the interval,
//     slow_down and the code's expiry.
//   - [ModeTokenFile] and [ModeTokenEnv]: an ID token obtained elsewhere (a
//     CI workload identity, a Kubernetes projected token) is used as is.
//
// # Profile
//
// A profile directory (default ~/.postern/<bastion-host>/, mode 0700) holds:
//
//	id_ed25519            the private key, OpenSSH format, mode 0600 (reused across logins)
//	id_ed25519.pub        its public key
//	id_ed25519-cert.pub   the certificate
//	known_hosts           the bastion's @cert-authority line for the host CA
//	ssh_config            a Host block for the bastion and a Host * block for targets
//	profile.json          bastion URL, issuer, username, principals, serial, validity
//
// Every file is written to a temporary name and renamed, so a concurrent ssh
// never reads half a certificate; profile.json is written last. Logins racing
// in one directory share one key.
//
// The ssh_config serves "ssh -F <dir>/ssh_config -J <bastion-host>
// <login>@<target>": the bastion block sets the port, the user (the
// username carried in the certificate's identity), the key and certificate
// and the host-CA known_hosts; the Host * block gives targets reached
// through the bastion the same key, certificate and host-CA known_hosts
// (their host certificates come from postern's host CA too), and passes
// POSTERN_JSON_ERRORS on (setting it for a profile made with
// [Options.JSONErrors]). Values the bastion supplies are checked before they
// are written, so a bastion cannot add ssh_config directives. When the file
// is Included from ~/.ssh/config instead, its Host * block offers the
// certificate to every host; the summary printed after a login says so.
//
// # Renewal
//
// Running Login again while the certificate has more than a fifth of its
// lifetime left does not contact the identity provider: it reports that the
// certificate is still valid (and until when) and returns the existing
// profile. [Options.Force] renews regardless. When less than a fifth is left,
// or the certificate has expired, or the profile belongs to another bastion,
// Login renews.
//
// [RunAgent] (postern agent) repeats a login with a [TokenSource] — a file
// another system refreshes, GitHub Actions' token service, a command —
// whenever a third of the certificate's lifetime is left, keeping the key
// and replacing the certificate file atomically; failures are reported
// with their stage ([RenewalError]) and retried with a backoff.
//
// # Imports
//
// login imports certs (the API types); it never imports the server side
// (bastion, recorder, server).
//
// [RFC 7636]: https://www.rfc-editor.org/rfc/rfc7636
// [RFC 8252]: https://www.rfc-editor.org/rfc/rfc8252
// [RFC 8628]: https://www.rfc-editor.org/rfc/rfc8628
package login
