package certs

import (
	"context"
	"strings"
)

// LoginCodePrefix starts the bearer token of a login that ended at an
// identity provider answering through the browser (SAML): instead of an ID
// token, the client sends postern's one-time login code and the PKCE
// verifier it started the login with, as
//
//	postern-code.<code>.<verifier>
//
// Both parts are base64url, so neither holds a dot; no JWT starts with
// "postern-code.".
const LoginCodePrefix = "postern-code."

// LoginCodeToken returns the bearer token for code and verifier.
func LoginCodeToken(code, verifier string) string { return LoginCodePrefix + code + "." + verifier }

// ParseLoginCodeToken splits a LoginCodeToken, reporting false for anything
// else.
func ParseLoginCodeToken(token string) (code, verifier string, ok bool) {
	rest, ok := strings.CutPrefix(token, LoginCodePrefix)
	if !ok {
		return "", "", false
	}
	code, verifier, ok = strings.Cut(rest, ".")
	if !ok || code == "" || verifier == "" || strings.Contains(verifier, ".") {
		return "", "", false
	}
	return code, verifier, true
}

// LoginCodes routes bearer tokens: a LoginCodeToken to Codes (the SAML
// service provider), anything else to Tokens (the OIDC verifier). Without
// Codes, login codes are refused like any malformed token.
type LoginCodes struct {
	// Tokens verifies OIDC ID tokens.
	Tokens TokenVerifier
	// Codes redeems login codes; nil if no provider issues them.
	Codes TokenVerifier
}

// Verify implements TokenVerifier.
func (v LoginCodes) Verify(ctx context.Context, raw string) (Identity, error) {
	if strings.HasPrefix(raw, LoginCodePrefix) && v.Codes != nil {
		return v.Codes.Verify(ctx, raw)
	}
	return v.Tokens.Verify(ctx, raw)
}
