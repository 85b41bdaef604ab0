package devidp

import (
	"encoding/json"
	"fmt"
	"maps"

	jose "github.com/go-jose/go-jose/v4"
)

// MintOption adjusts a token minted by MintIDToken.
type MintOption func(*mintConfig)

type mintConfig struct {
	key     any
	kid     string
	alg     jose.SignatureAlgorithm
	headers map[jose.HeaderKey]any
	noKid   bool
}

// WithSigner signs the token with key (an *rsa.PrivateKey, *ecdsa.PrivateKey
// or ed25519.PrivateKey) under key id kid and algorithm alg instead of the
// provider's own key. Use it for tokens from a foreign key, or for a key
// published through Options.VerificationKeys.
func WithSigner(key any, kid string, alg jose.SignatureAlgorithm) MintOption {
	return func(c *mintConfig) { c.key, c.kid, c.alg = key, kid, alg }
}

// WithHeader adds a protected header to the token, e.g. a "jwk" or "jku"
// an attacker would inject.
func WithHeader(name string, value any) MintOption {
	return func(c *mintConfig) { c.headers[jose.HeaderKey(name)] = value }
}

// WithoutKeyID leaves the kid header out.
func WithoutKeyID() MintOption {
	return func(c *mintConfig) { c.noKid = true }
}

// Claims returns the claims of an ID token for usr as the provider issues
// them, stamped with the provider's clock.
func (p *Provider) Claims(usr User) map[string]any {
	now := p.now()
	groups := usr.Groups
	if groups == nil {
		groups = []string{}
	}
	c := map[string]any{
		"iss":                p.issuer,
		"sub":                usr.Username,
		"aud":                p.clientID,
		"azp":                p.clientID,
		"client_id":          p.clientID,
		"iat":                now.Unix(),
		"auth_time":          now.Unix(),
		"exp":                now.Add(p.ttl).Unix(),
		"name":               usr.Username,
		"preferred_username": usr.Username,
		"groups":             groups,
	}
	if usr.Email != "" {
		c["email"] = usr.Email
		c["email_verified"] = true
	}
	return c
}

// MintIDToken returns an ID token signed with the provider's key (or the
// WithSigner key) whose claims are those the provider issues for the
// default user, overridden by claims; a nil value removes a claim. It is for
// tests that need tokens the regular flows never produce (expired, wrong
// audience, missing claims), verifiable through the provider's real JWKS.
func (p *Provider) MintIDToken(claims map[string]any, opts ...MintOption) (string, error) {
	cfg := mintConfig{key: p.key, kid: p.keyID, alg: jose.RS256, headers: map[jose.HeaderKey]any{}}
	for _, o := range opts {
		o(&cfg)
	}
	all := p.Claims(p.defUser)
	maps.Copy(all, claims)
	maps.DeleteFunc(all, func(_ string, v any) bool { return v == nil })

	so := (&jose.SignerOptions{}).WithType("JWT")
	for k, v := range cfg.headers {
		so = so.WithHeader(k, v)
	}
	sk := jose.SigningKey{Algorithm: cfg.alg, Key: jose.JSONWebKey{Key: cfg.key, KeyID: cfg.kid}}
	if cfg.noKid {
		sk.Key = cfg.key
	}
	signer, err := jose.NewSigner(sk, so)
	if err != nil {
		return "", fmt.Errorf("mint token: new signer: %w", err)
	}
	payload, err := jsonMarshal(all)
	if err != nil {
		return "", fmt.Errorf("mint token: encode claims: %w", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("mint token: sign: %w", err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("mint token: serialize: %w", err)
	}
	return tok, nil
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
