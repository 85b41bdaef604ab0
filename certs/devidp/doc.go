// Package devidp is postern's embedded development OpenID Connect provider:
// the issuer behind `postern serve --dev` and the in-process identity
// provider every certs test runs against.
//
// It is insecure by design. It has no passwords and no consent: every
// authorization request is approved as Options.DefaultUser (or the
// configured user a login_hint names), and the device verification page
// approves a code as soon as it is visited. New therefore refuses any issuer
// whose host is not loopback (127.0.0.0/8, ::1, localhost), and logs a
// warning when it starts.
//
// What it offers, built on the zitadel op engine with in-memory storage:
//
//   - discovery (/.well-known/openid-configuration) and the signing key set
//     (/keys): one RSA key signing RS256 ID tokens, plus any extra
//     Options.VerificationKeys;
//   - the authorization code grant with PKCE (S256 required) for one public,
//     native client whose redirect URIs are http://127.0.0.1/callback and
//     http://localhost/callback on any port ([RFC 8252] §7.3);
//   - the device authorization grant ([RFC 8628]); the verification page is
//     /device under the issuer;
//   - refresh tokens for requests with the offline_access scope, rotated on
//     every use (the old one stops working);
//   - userinfo for the opaque access tokens it issues.
//
// ID tokens carry iss, sub (the username), aud (the client id), azp, exp,
// iat, email, email_verified, name, preferred_username and groups.
// MintIDToken signs arbitrary claims with the provider's key, so tests can
// build expired, misaddressed or incomplete tokens that the real key set
// verifies.
//
// Lifecycle: New builds the provider (generating a key if none is given);
// ServeHTTP serves it at the issuer's path; there is nothing to close. Its
// state lives as long as the Provider value.
//
// # Imports
//
// devidp imports nothing of postern; only the service in development mode and
// tests use it.
//
// [RFC 8252]: https://www.rfc-editor.org/rfc/rfc8252
// [RFC 8628]: https://www.rfc-editor.org/rfc/rfc8628
package devidp
