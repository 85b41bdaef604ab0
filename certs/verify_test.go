package certs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/crypto/ssh"
	"golang.org/x/oauth2"

	"github.com/posternhq/postern/certs/devidp"
	"github.com/posternhq/postern/certs/devidp/devidptest"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/usererr"
)

// verifyClock is a settable clock shared by the provider and the verifier.
type verifyClock struct{ ns atomic.Int64 }

func newVerifyClock() *verifyClock {
	c := &verifyClock{}
	c.ns.Store(time.Now().Truncate(time.Second).UnixNano())
	return c
}
func (c *verifyClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *verifyClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// countingTransport counts requests per URL path.
type countingTransport struct {
	mu    sync.Mutex
	paths map[string]int
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	if c.paths == nil {
		c.paths = map[string]int{}
	}
	c.paths[r.URL.Path]++
	c.mu.Unlock()
	return http.DefaultTransport.RoundTrip(r)
}

func (c *countingTransport) count(path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.paths[path]
}

var verifyUsers = []devidp.User{
	{Username: "dev", Email: "dev@example.com", Groups: []string{"dev", "admins"}},
	{Username: "alice", Email: "alice@example.com", Groups: []string{"sre"}},
}

// verifyFixture is a real development provider served on loopback and a
// Verifier trusting it.
type verifyFixture struct {
	srv   *devidptest.Server
	v     *Verifier
	clock *verifyClock
	reg   *prometheus.Registry
	logs  *syncBuffer
	http  *countingTransport
	ecKey *ecdsa.PrivateKey
}

const ecKeyID = "es256-test"

// newVerifyFixture starts a provider (publishing an extra ES256 key) and a
// Verifier whose issuers are built by mk from the provider's URL.
func newVerifyFixture(t testing.TB, mk func(url string) []config.Issuer) *verifyFixture {
	t.Helper()
	f := &verifyFixture{clock: newVerifyClock(), reg: prometheus.NewRegistry(), logs: &syncBuffer{}, http: &countingTransport{}}
	var err error
	f.ecKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = devidptest.Start(t, devidp.Options{
		Users: verifyUsers,
		Now:   f.clock.Now,
		VerificationKeys: []jose.JSONWebKey{{
			Key: &f.ecKey.PublicKey, KeyID: ecKeyID, Algorithm: string(jose.ES256), Use: "sig",
		}},
	})
	f.v, err = NewVerifier(context.Background(), mk(f.srv.URL), VerifierOptions{
		Now:        f.clock.Now,
		HTTPClient: &http.Client{Transport: f.http, Timeout: 5 * time.Second},
		Log:        slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Metrics:    f.reg,
	})
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return f
}

func humanIssuer(url string) []config.Issuer {
	return []config.Issuer{{Name: "dev", IssuerURL: url, ClientID: "postern", GroupsClaim: "groups"}}
}

func agentIssuer(url string) []config.Issuer {
	return []config.Issuer{{Name: "ci", IssuerURL: url, Audience: "postern", Kind: "agent",
		Require: map[string]string{"repository_owner": "my-org"}}}
}

// unsignedJWT assembles a compact JWS from raw parts, for tokens no signer
// would produce.
func unsignedJWT(t testing.TB, header, claims map[string]any, sig []byte) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	c, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString(h) + "." + enc.EncodeToString(c) + "." + enc.EncodeToString(sig)
}

// hmacJWT signs claims with HS256 under secret, as an attacker who knows the
// provider's public key would.
func hmacJWT(t testing.TB, kid string, claims map[string]any, secret []byte) string {
	t.Helper()
	tok := unsignedJWT(t, map[string]any{"alg": "HS256", "typ": "JWT", "kid": kid}, claims, nil)
	signingInput := tok[:strings.LastIndex(tok, ".")]
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(signingInput))
	return signingInput + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func with(base map[string]any, kv ...any) map[string]any {
	out := make(map[string]any, len(base)+len(kv)/2)
	for k, v := range base {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		// A nil value stays: MintIDToken removes the claim.
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

func TestVerifyValid(t *testing.T) {
	tests := []struct {
		name    string
		issuers func(string) []config.Issuer
		claims  map[string]any
		opts    []devidp.MintOption
		want    Identity
	}{
		{
			name:    "human by email with groups",
			issuers: humanIssuer,
			want:    Identity{Issuer: "dev", Subject: "dev", Username: "dev@example.com", Kind: KindHuman, Groups: []string{"dev", "admins"}},
		},
		{
			name: "username from preferred_username",
			issuers: func(u string) []config.Issuer {
				return []config.Issuer{{Name: "dev", IssuerURL: u, ClientID: "postern", UsernameClaim: "preferred_username"}}
			},
			claims: map[string]any{"sub": "alice", "preferred_username": "alice"},
			want:   Identity{Issuer: "dev", Subject: "alice", Username: "alice", Kind: KindHuman},
		},
		{
			name:    "agent by sub with required claim",
			issuers: agentIssuer,
			claims:  map[string]any{"sub": "repo:my-org/app:ref:refs/heads/main", "repository_owner": "my-org", "email": nil},
			want:    Identity{Issuer: "ci", Subject: "repo:my-org/app:ref:refs/heads/main", Username: "repo:my-org/app:ref:refs/heads/main", Kind: KindAgent},
		},
		{
			name:    "groups as a single string",
			issuers: humanIssuer,
			claims:  map[string]any{"groups": "ops"},
			want:    Identity{Issuer: "dev", Subject: "dev", Username: "dev@example.com", Kind: KindHuman, Groups: []string{"ops"}},
		},
		{
			name:    "no groups claim",
			issuers: humanIssuer,
			claims:  map[string]any{"groups": nil},
			want:    Identity{Issuer: "dev", Subject: "dev", Username: "dev@example.com", Kind: KindHuman},
		},
		{
			name:    "several audiences with our azp",
			issuers: humanIssuer,
			claims:  map[string]any{"aud": []string{"postern", "other"}, "azp": "postern"},
			want:    Identity{Issuer: "dev", Subject: "dev", Username: "dev@example.com", Kind: KindHuman, Groups: []string{"dev", "admins"}},
		},
		{
			name:    "ES256 key from the JWKS",
			issuers: humanIssuer,
			want:    Identity{Issuer: "dev", Subject: "dev", Username: "dev@example.com", Kind: KindHuman, Groups: []string{"dev", "admins"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newVerifyFixture(t, tt.issuers)
			opts := tt.opts
			if strings.HasPrefix(tt.name, "ES256") {
				opts = []devidp.MintOption{devidp.WithSigner(f.ecKey, ecKeyID, jose.ES256)}
			}
			tok := f.srv.Mint(t, tt.claims, opts...)
			got, err := f.v.Verify(context.Background(), tok)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got.Issuer != tt.want.Issuer || got.Subject != tt.want.Subject || got.Username != tt.want.Username ||
				got.Kind != tt.want.Kind || !slices.Equal(got.Groups, tt.want.Groups) {
				t.Fatalf("got %+v; want %+v", got, tt.want)
			}
		})
	}
}

func TestVerifyClockSkew(t *testing.T) {
	f := newVerifyFixture(t, humanIssuer)
	now := f.clock.Now()
	tests := []struct {
		name     string
		claims   map[string]any
		wantCode string // "" = accepted
	}{
		{"expired 10s ago, within skew", map[string]any{"exp": now.Add(-10 * time.Second).Unix()}, ""},
		{"expired 2m1s ago", map[string]any{"exp": now.Add(-121 * time.Second).Unix()}, CodeTokenExpired},
		{"nbf 10s ahead, within skew", map[string]any{"nbf": now.Add(10 * time.Second).Unix()}, ""},
		{"nbf 2m1s ahead", map[string]any{"nbf": now.Add(121 * time.Second).Unix()}, CodeTokenNotYetValid},
		{"nbf past", map[string]any{"nbf": now.Add(-time.Hour).Unix()}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.v.Verify(context.Background(), f.srv.Mint(t, tt.claims))
			if tt.wantCode == "" {
				if err != nil {
					t.Fatalf("Verify: %v; want accepted", err)
				}
				return
			}
			assertCode(t, err, tt.wantCode)
		})
	}
}

// assertCode checks err is a 401 *usererr.Error with code want.
func assertCode(t testing.TB, err error, want string) *usererr.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("Verify accepted the token; want %s", want)
	}
	e := usererr.As(err)
	if e == nil {
		t.Fatalf("error %v (%T) is not a *usererr.Error", err, err)
	}
	if e.Code != want {
		t.Fatalf("code = %s (%v); want %s", e.Code, err, want)
	}
	if e.HTTPStatus() != http.StatusUnauthorized && want != CodeIssuerUnavailable {
		t.Fatalf("status = %d; want 401", e.HTTPStatus())
	}
	if e.Msg == "" || len(e.Msg) > 100 {
		t.Fatalf("message %q: want a short message", e.Msg)
	}
	return e
}

func TestVerifyRejects(t *testing.T) {
	f := newVerifyFixture(t, agentIssuer)
	// The agent issuer requires repository_owner and takes sub as username.
	good := with(f.srv.Claims(verifyUsers[0]), "repository_owner", "my-org")
	now := f.clock.Now()

	foreign, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(f.srv.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	pkcs1PEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(f.srv.PublicKey())})
	foreignJWK := jose.JSONWebKey{Key: &foreign.PublicKey, KeyID: "attacker", Algorithm: "RS256", Use: "sig"}

	mint := func(claims map[string]any, opts ...devidp.MintOption) func(*testing.T) string {
		return func(t *testing.T) string {
			tok, err := f.srv.MintIDToken(with(claims), opts...)
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}
	}
	raw := func(s string) func(*testing.T) string { return func(*testing.T) string { return s } }

	tests := []struct {
		name     string
		token    func(*testing.T) string
		wantCode string
		wantMsg  string // substring of the message, if set
	}{
		{"alg none", func(t *testing.T) string {
			return unsignedJWT(t, map[string]any{"alg": "none", "typ": "JWT"}, good, nil)
		}, CodeUnsupportedAlg, ""},
		{"alg None with kid", func(t *testing.T) string {
			return unsignedJWT(t, map[string]any{"alg": "None", "kid": f.srv.KeyID()}, good, nil)
		}, CodeUnsupportedAlg, ""},
		{"HS256 keyed with the public key PEM", func(t *testing.T) string {
			return hmacJWT(t, f.srv.KeyID(), good, pubPEM)
		}, CodeUnsupportedAlg, ""},
		{"HS256 keyed with the PKCS#1 PEM", func(t *testing.T) string {
			return hmacJWT(t, f.srv.KeyID(), good, pkcs1PEM)
		}, CodeUnsupportedAlg, ""},
		{"HS256 keyed with the public key DER", func(t *testing.T) string {
			return hmacJWT(t, f.srv.KeyID(), good, pubDER)
		}, CodeUnsupportedAlg, ""},
		{"foreign key with the provider's kid", mint(good, devidp.WithSigner(foreign, f.srv.KeyID(), jose.RS256)), CodeBadSignature, ""},
		{"foreign key without kid", mint(good, devidp.WithSigner(foreign, "", jose.RS256), devidp.WithoutKeyID()), CodeBadSignature, ""},
		{"foreign key with unknown kid", mint(good, devidp.WithSigner(foreign, "attacker", jose.RS256)), CodeUnknownKey, ""},
		{"injected jwk header, unknown kid", mint(good, devidp.WithSigner(foreign, "attacker", jose.RS256),
			devidp.WithHeader("jwk", foreignJWK)), CodeUnknownKey, ""},
		{"injected jwk header, provider's kid", mint(good, devidp.WithSigner(foreign, f.srv.KeyID(), jose.RS256),
			devidp.WithHeader("jwk", foreignJWK)), CodeBadSignature, ""},
		{"injected jku header", mint(good, devidp.WithSigner(foreign, "attacker", jose.RS256),
			devidp.WithHeader("jku", "http://127.0.0.1:1/keys")), CodeUnknownKey, ""},
		{"ES256 key id with an RS256 token", mint(good, devidp.WithSigner(foreign, ecKeyID, jose.RS256)), CodeUnknownKey, ""},
		{"tampered payload", func(t *testing.T) string {
			tok := f.srv.Mint(t, good)
			parts := strings.Split(tok, ".")
			evil := with(good, "sub", "root")
			forged := unsignedJWT(t, map[string]any{}, evil, nil)
			return parts[0] + "." + strings.Split(forged, ".")[1] + "." + parts[2]
		}, CodeBadSignature, ""},
		{"expired", mint(with(good, "exp", now.Add(-time.Hour).Unix(), "iat", now.Add(-2*time.Hour).Unix())), CodeTokenExpired, ""},
		{"no exp", mint(with(good, "exp", nil)), CodeMissingClaim, "exp"},
		{"nbf in the future", mint(with(good, "nbf", now.Add(3*time.Minute).Unix())), CodeTokenNotYetValid, ""},
		{"nbf far in the future", mint(with(good, "nbf", now.Add(time.Hour).Unix())), CodeTokenNotYetValid, ""},
		{"wrong issuer", mint(with(good, "iss", "https://idp.example.com")), CodeWrongIssuer, ""},
		{"no issuer", mint(with(good, "iss", nil)), CodeMissingClaim, "iss"},
		{"wrong audience", mint(with(good, "aud", "someone-else", "azp", nil)), CodeWrongAudience, ""},
		{"token for another client", mint(with(good, "aud", "other-client", "azp", "other-client", "client_id", "other-client")), CodeWrongAudience, ""},
		{"several audiences without azp", mint(with(good, "aud", []string{"postern", "other"}, "azp", nil)), CodeWrongAudience, ""},
		{"several audiences with wrong azp", mint(with(good, "aud", []string{"postern", "other"}, "azp", "other")), CodeWrongAudience, ""},
		{"missing required claim", mint(with(good, "repository_owner", nil)), CodeMissingClaim, "repository_owner"},
		{"wrong required claim", mint(with(good, "repository_owner", "evil-org")), CodeClaimMismatch, "repository_owner"},
		{"required claim not a string", mint(with(good, "repository_owner", []string{"my-org"})), CodeClaimMismatch, "repository_owner"},
		{"missing sub", mint(with(good, "sub", nil)), CodeMissingClaim, "sub"},
		{"empty sub", mint(with(good, "sub", "")), CodeMissingClaim, "sub"},
		{"oversized", mint(with(good, "padding", strings.Repeat("x", 17<<10))), CodeInvalidToken, ""},
		{"non-JSON garbage", raw("definitely not a token"), CodeInvalidToken, ""},
		{"empty", raw(""), CodeInvalidToken, ""},
		{"three garbage segments", raw("a.b.c"), CodeInvalidToken, ""},
		{"header not JSON", raw(base64.RawURLEncoding.EncodeToString([]byte("nope")) + ".e30.c2ln"), CodeInvalidToken, ""},
		{"payload not JSON", func(t *testing.T) string {
			return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256"}`)) + "." +
				base64.RawURLEncoding.EncodeToString([]byte("[1,2")) + ".c2ln"
		}, CodeInvalidToken, ""},
		{"JWS JSON serialization", func(t *testing.T) string {
			tok := f.srv.Mint(t, good)
			p := strings.Split(tok, ".")
			return `{"protected":"` + p[0] + `","payload":"` + p[1] + `","signature":"` + p[2] + `"}`
		}, CodeInvalidToken, ""},
		{"five segments (JWE)", raw("eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d"), CodeInvalidToken, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := tt.token(t)
			id, err := f.v.Verify(context.Background(), tok)
			e := assertCode(t, err, tt.wantCode)
			if id.Username != "" {
				t.Errorf("identity %+v returned with an error; want zero", id)
			}
			if tt.wantMsg != "" && !strings.Contains(e.Msg, tt.wantMsg) {
				t.Errorf("message %q does not name %q", e.Msg, tt.wantMsg)
			}
			if len(tok) > 20 && (strings.Contains(e.Error(), tok[len(tok)-20:]) || strings.Contains(e.Msg, tok[:20])) {
				t.Errorf("error %q contains the token", e.Error())
			}
		})
	}
	// No rejection logged any part of a token's signature.
	if strings.Contains(f.logs.String(), "eyJ") {
		t.Errorf("logs contain token material:\n%s", f.logs.String())
	}
}

func TestVerifyUsernameClaims(t *testing.T) {
	f := newVerifyFixture(t, humanIssuer)
	tests := []struct {
		name     string
		claims   map[string]any
		wantCode string
		wantMsg  string
	}{
		{"missing email", map[string]any{"email": nil}, CodeMissingClaim, "email"},
		{"empty email", map[string]any{"email": ""}, CodeMissingClaim, "email"},
		{"email not a string", map[string]any{"email": 42}, CodeMissingClaim, "email"},
		{"email not verified", map[string]any{"email_verified": false}, CodeClaimMismatch, "verified"},
		{"groups not strings", map[string]any{"groups": []int{1, 2}}, CodeClaimMismatch, "groups"},
		{"groups an object", map[string]any{"groups": map[string]any{"a": "b"}}, CodeClaimMismatch, "groups"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.v.Verify(context.Background(), f.srv.Mint(t, tt.claims))
			e := assertCode(t, err, tt.wantCode)
			if !strings.Contains(e.Msg, tt.wantMsg) {
				t.Errorf("message %q does not mention %q", e.Msg, tt.wantMsg)
			}
		})
	}
}

func TestVerifySeveralIssuers(t *testing.T) {
	clock := newVerifyClock()
	a := devidptest.Start(t, devidp.Options{Users: verifyUsers, Now: clock.Now})
	b := devidptest.Start(t, devidp.Options{Users: verifyUsers, Now: clock.Now, DefaultUser: "alice", ClientID: "ci-audience"})
	v, err := NewVerifier(context.Background(), []config.Issuer{
		{Name: "corp", IssuerURL: a.URL, ClientID: "postern", GroupsClaim: "groups"},
		{Name: "ci", IssuerURL: b.URL, Audience: "ci-audience", Kind: "agent"},
	}, VerifierOptions{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	id, err := v.Verify(ctx, a.Mint(t, nil))
	if err != nil || id.Issuer != "corp" || id.Username != "dev@example.com" || id.Kind != KindHuman {
		t.Fatalf("issuer a: %+v, %v; want corp/dev@example.com/human", id, err)
	}
	id, err = v.Verify(ctx, b.Mint(t, nil))
	if err != nil || id.Issuer != "ci" || id.Username != "alice" || id.Kind != KindAgent || id.Groups != nil {
		t.Fatalf("issuer b: %+v, %v; want ci/alice/agent without groups", id, err)
	}
	// b's key cannot vouch for a token claiming to come from a.
	forged := b.Mint(t, map[string]any{"iss": a.URL, "aud": "postern", "azp": "postern"})
	assertCode(t, mustFail(v.Verify(ctx, forged)), CodeUnknownKey)
	// a's own token for b's audience is not accepted by a's entry.
	assertCode(t, mustFail(v.Verify(ctx, a.Mint(t, map[string]any{"aud": "ci-audience", "azp": nil}))), CodeWrongAudience)
}

// TestVerifyIdentityKeys: one username from two issuers is two people (two
// keys); identity.aliases makes them one, and only them.
func TestVerifyIdentityKeys(t *testing.T) {
	clock := newVerifyClock()
	a := devidptest.Start(t, devidp.Options{Users: verifyUsers, Now: clock.Now, DefaultUser: "alice"})
	b := devidptest.Start(t, devidp.Options{Users: verifyUsers, Now: clock.Now, DefaultUser: "alice"})
	issuers := []config.Issuer{{Name: "corp", IssuerURL: a.URL, ClientID: "postern"}, {Name: "other", IssuerURL: b.URL, ClientID: "postern"}}
	v, err := NewVerifier(context.Background(), issuers, VerifierOptions{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ida, err := v.Verify(ctx, a.Mint(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	idb, err := v.Verify(ctx, b.Mint(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	if ida.Username != idb.Username || ida.SameAs(idb) || ida.Key() != "corp:"+ida.Subject {
		t.Fatalf("keys %q and %q for usernames %q and %q; want one username, two people", ida.Key(), idb.Key(), ida.Username, idb.Username)
	}
	aliases := func(issuer, subject string) string {
		if issuer == "other" && subject == idb.Subject || issuer == "corp" && subject == ida.Subject {
			return "alice"
		}
		return ""
	}
	v, err = NewVerifier(context.Background(), issuers, VerifierOptions{Now: clock.Now, Aliases: aliases})
	if err != nil {
		t.Fatal(err)
	}
	ida, _ = v.Verify(ctx, a.Mint(t, nil))
	idb, _ = v.Verify(ctx, b.Mint(t, nil))
	if !ida.SameAs(idb) || ida.Key() != "alias:alice" || ida.Display() != ida.Username+" (corp)" {
		t.Fatalf("aliased keys %q and %q (display %q); want alias:alice for both", ida.Key(), idb.Key(), ida.Display())
	}
	other, err := v.Verify(ctx, b.Mint(t, map[string]any{"sub": "someone-else"}))
	if err != nil || other.Key() != "other:someone-else" {
		t.Fatalf("another subject: %q, %v; want other:someone-else", other.Key(), err)
	}
	if other.SameAs(ida) {
		t.Fatalf("another subject of the aliased issuer shares the alias: %q", other.Key())
	}
}

func mustFail(_ Identity, err error) error { return err }

func TestVerifyCachedKeysSurviveOutage(t *testing.T) {
	f := newVerifyFixture(t, humanIssuer)
	f.v.minKeyRefresh = 0 // let the unknown-key case try the (dead) JWKS
	ctx := context.Background()
	if _, err := f.v.Verify(ctx, f.srv.Mint(t, nil)); err != nil {
		t.Fatalf("first Verify: %v", err)
	}
	f.srv.Close()
	for _, opts := range [][]devidp.MintOption{nil, {devidp.WithSigner(f.ecKey, ecKeyID, jose.ES256)}} {
		if _, err := f.v.Verify(ctx, f.srv.Mint(t, map[string]any{"sub": "alice", "email": "alice@example.com"}, opts...)); err != nil {
			t.Fatalf("Verify with the IdP down: %v; want cached keys to verify", err)
		}
	}
	foreign, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.v.Verify(ctx, f.srv.Mint(t, nil, devidp.WithSigner(foreign, "rotated", jose.RS256)))
	assertCode(t, err, CodeUnknownKey)
	if !strings.Contains(f.logs.String(), "JWKS fetch failed") {
		t.Errorf("no log of the failed JWKS refresh:\n%s", f.logs.String())
	}
}

// gatedIssuer serves a development provider that answers 503 while down.
type gatedIssuer struct {
	p        *devidp.Provider
	url      string
	down     atomic.Bool // everything answers 503
	keysDown atomic.Bool // the key set answers 503
}

func startGatedIssuer(t *testing.T, now func() time.Time) *gatedIssuer {
	t.Helper()
	g := &gatedIssuer{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g.url = "http://" + ln.Addr().String()
	g.p, err = devidp.New(devidp.Options{Issuer: g.url, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.down.Load() || (g.keysDown.Load() && r.URL.Path == "/keys") {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		g.p.ServeHTTP(w, r)
	}))
	hs.Listener.Close()
	hs.Listener = ln
	hs.Start()
	t.Cleanup(hs.Close)
	return g
}

func TestVerifyLazyDiscoveryWithBackoff(t *testing.T) {
	clock := newVerifyClock()
	g := startGatedIssuer(t, clock.Now)
	g.down.Store(true)
	counter := &countingTransport{}
	v, err := NewVerifier(context.Background(), humanIssuer(g.url), VerifierOptions{
		Now: clock.Now, HTTPClient: &http.Client{Transport: counter},
	})
	if err != nil {
		t.Fatalf("NewVerifier with the IdP down: %v; want lazy discovery", err)
	}
	if n := counter.count("/.well-known/openid-configuration"); n != 0 {
		t.Fatalf("NewVerifier made %d discovery requests; want 0", n)
	}
	tok, err := g.p.MintIDToken(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	e := assertCode(t, mustFail(v.Verify(ctx, tok)), CodeIssuerUnavailable)
	if e.HTTPStatus() != http.StatusServiceUnavailable {
		t.Errorf("status = %d; want 503", e.HTTPStatus())
	}
	// Within the backoff, no new attempt is made.
	assertCode(t, mustFail(v.Verify(ctx, tok)), CodeIssuerUnavailable)
	if n := counter.count("/.well-known/openid-configuration"); n != 1 {
		t.Fatalf("discovery requests = %d; want 1 (second call inside the backoff)", n)
	}
	// The IdP comes back; after the backoff the next call discovers it.
	g.down.Store(false)
	clock.Advance(2 * time.Second)
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatalf("Verify after recovery: %v", err)
	}
	// Discovery and keys are cached: more verifications make no requests.
	before := counter.count("/.well-known/openid-configuration") + counter.count("/keys")
	for range 5 {
		if _, err := v.Verify(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	if after := counter.count("/.well-known/openid-configuration") + counter.count("/keys"); after != before {
		t.Errorf("cached verifications made %d requests; want 0", after-before)
	}
}

func TestVerifyKeySetNeverFetched(t *testing.T) {
	clock := newVerifyClock()
	g := startGatedIssuer(t, clock.Now)
	g.keysDown.Store(true)
	counter := &countingTransport{}
	v, err := NewVerifier(context.Background(), humanIssuer(g.url), VerifierOptions{
		Now: clock.Now, HTTPClient: &http.Client{Transport: counter},
	})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := g.p.MintIDToken(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for range 3 {
		assertCode(t, mustFail(v.Verify(ctx, tok)), CodeIssuerUnavailable)
	}
	if n := counter.count("/keys"); n != 1 {
		t.Fatalf("JWKS requests = %d; want 1 (retries wait for the refresh interval)", n)
	}
	g.keysDown.Store(false)
	clock.Advance(defaultMinKeyRefresh)
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatalf("Verify once the key set answers: %v", err)
	}
}

func TestVerifyKeyRefreshIsRateLimited(t *testing.T) {
	f := newVerifyFixture(t, humanIssuer)
	ctx := context.Background()
	if _, err := f.v.Verify(ctx, f.srv.Mint(t, nil)); err != nil {
		t.Fatal(err)
	}
	foreign, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tok := f.srv.Mint(t, nil, devidp.WithSigner(foreign, "unknown", jose.RS256))
	bad := f.srv.Mint(t, nil, devidp.WithSigner(foreign, f.srv.KeyID(), jose.RS256))
	keysBefore := f.http.count("/keys")
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := f.v.Verify(ctx, tok); usererr.As(err) == nil || usererr.As(err).Code != CodeUnknownKey {
				t.Errorf("Verify = %v; want unknown_key", err)
			}
			if _, err := f.v.Verify(ctx, bad); usererr.As(err) == nil || usererr.As(err).Code != CodeBadSignature {
				t.Errorf("Verify = %v; want bad_signature", err)
			}
		})
	}
	wg.Wait()
	if n := f.http.count("/keys") - keysBefore; n != 0 {
		t.Errorf("%d JWKS fetches inside the refresh interval; want 0", n)
	}
	// After the interval one refresh is allowed, shared by everyone.
	f.clock.Advance(defaultMinKeyRefresh + time.Second)
	for range 5 {
		assertCode(t, mustFail(f.v.Verify(ctx, tok)), CodeUnknownKey)
	}
	if n := f.http.count("/keys") - keysBefore; n != 1 {
		t.Errorf("%d JWKS fetches after the interval; want 1", n)
	}
}

func TestVerifyMetrics(t *testing.T) {
	f := newVerifyFixture(t, humanIssuer)
	ctx := context.Background()
	for range 2 {
		if _, err := f.v.Verify(ctx, f.srv.Mint(t, nil)); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = f.v.Verify(ctx, f.srv.Mint(t, map[string]any{"aud": "x", "azp": nil}))
	_, _ = f.v.Verify(ctx, "garbage")
	tests := []struct {
		issuer, result string
		want           float64
	}{
		{"dev", "ok", 2},
		{"dev", CodeWrongAudience, 1},
		{"unknown", CodeInvalidToken, 1},
	}
	for _, tt := range tests {
		got := testutil.ToFloat64(f.v.results.WithLabelValues(tt.issuer, tt.result))
		if got != tt.want {
			t.Errorf("postern_token_verifications_total{issuer=%q,result=%q} = %v; want %v", tt.issuer, tt.result, got, tt.want)
		}
	}
	if n, err := testutil.GatherAndCount(f.reg, "postern_token_verifications_total"); err != nil || n != 3 {
		t.Errorf("registered series = %d (%v); want 3", n, err)
	}
	// A second Verifier on the same registry shares the counter.
	if _, err := NewVerifier(ctx, humanIssuer(f.srv.URL), VerifierOptions{Metrics: f.reg}); err != nil {
		t.Errorf("second NewVerifier on one registry: %v", err)
	}
}

func TestNewVerifierConfig(t *testing.T) {
	tests := []struct {
		name    string
		issuers []config.Issuer
		wantErr string // "" = ok
	}{
		{"none", nil, ""},
		{"ok", []config.Issuer{{Name: "a", IssuerURL: "https://a.example.com", ClientID: "c"}}, ""},
		{"no name", []config.Issuer{{IssuerURL: "https://a.example.com", ClientID: "c"}}, "identity.issuers[0].name"},
		{"duplicate name", []config.Issuer{
			{Name: "a", IssuerURL: "https://a.example.com", ClientID: "c"},
			{Name: "a", IssuerURL: "https://b.example.com", ClientID: "c"}}, "identity.issuers[1].name"},
		{"duplicate url", []config.Issuer{
			{Name: "a", IssuerURL: "https://a.example.com", ClientID: "c"},
			{Name: "b", IssuerURL: "https://a.example.com", ClientID: "c"}}, "identity.issuers[1].issuer_url"},
		{"bad url", []config.Issuer{{Name: "a", IssuerURL: "a.example.com", ClientID: "c"}}, "issuer_url"},
		{"no audience", []config.Issuer{{Name: "a", IssuerURL: "https://a.example.com"}}, "audience"},
		{"bad kind", []config.Issuer{{Name: "a", IssuerURL: "https://a.example.com", ClientID: "c", Kind: "robot"}}, "kind"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewVerifier(context.Background(), tt.issuers, VerifierOptions{})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("NewVerifier: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v; want one naming %q", err, tt.wantErr)
			}
		})
	}
}

func TestVerifyCanceledContext(t *testing.T) {
	clock := newVerifyClock()
	g := startGatedIssuer(t, clock.Now)
	v, err := NewVerifier(context.Background(), humanIssuer(g.url), VerifierOptions{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := g.p.MintIDToken(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = v.Verify(ctx, tok)
	if e := usererr.As(err); e == nil || e.Code != CodeIssuerUnavailable || !errors.Is(err, context.Canceled) {
		t.Fatalf("Verify with a canceled context = %v; want issuer_unavailable wrapping context.Canceled", err)
	}
	// A canceled caller does not poison the issuer for others.
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("Verify after a canceled call: %v", err)
	}
}

func FuzzVerify(f *testing.F) {
	fx := newVerifyFixture(f, humanIssuer)
	good := fx.srv.Mint(f, nil)
	for _, seed := range []string{good, "", "a.b.c", "e30.e30.", good + "x", strings.Replace(good, ".", "..", 1),
		unsignedJWT(f, map[string]any{"alg": "none"}, map[string]any{"iss": fx.srv.URL}, nil)} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := fx.v.Verify(context.Background(), tok)
		if err != nil {
			if usererr.As(err) == nil {
				t.Fatalf("error %v is not a *usererr.Error", err)
			}
			return
		}
		if id.Username == "" || id.Issuer != "dev" {
			t.Fatalf("accepted token gave identity %+v", id)
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	fx := newVerifyFixture(b, humanIssuer)
	for _, bc := range []struct {
		name string
		opts []devidp.MintOption
	}{
		{"RS256", nil},
		{"ES256", []devidp.MintOption{devidp.WithSigner(fx.ecKey, ecKeyID, jose.ES256)}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tok := fx.srv.Mint(b, nil, bc.opts...)
			ctx := context.Background()
			if _, err := fx.v.Verify(ctx, tok); err != nil { // discovery and keys cached
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := fx.v.Verify(ctx, tok); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifications/s")
		})
	}
	// The floor: parsing and checking the RS256 signature alone, without
	// claims, issuer selection or identity mapping.
	b.Run("RS256-signature-only", func(b *testing.B) {
		tok := fx.srv.Mint(b, nil)
		pub := fx.srv.PublicKey()
		b.ReportAllocs()
		for b.Loop() {
			jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.RS256})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := jws.Verify(pub); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifications/s")
	})
}

func TestVerifyKeyRollover(t *testing.T) {
	f := newVerifyFixture(t, humanIssuer)
	ctx := context.Background()
	if _, err := f.v.Verify(ctx, f.srv.Mint(t, nil)); err != nil {
		t.Fatal(err)
	}
	next, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f.srv.AddVerificationKey(jose.JSONWebKey{Key: &next.PublicKey, KeyID: "next", Algorithm: "ES384", Use: "sig"})
	tok := f.srv.Mint(t, nil, devidp.WithSigner(next, "next", jose.ES384))
	// Keys were fetched just now: the new kid waits for the refresh interval.
	assertCode(t, mustFail(f.v.Verify(ctx, tok)), CodeUnknownKey)
	f.clock.Advance(defaultMinKeyRefresh)
	id, err := f.v.Verify(ctx, tok)
	if err != nil {
		t.Fatalf("Verify with the rolled-over key: %v", err)
	}
	if id.Username != "dev@example.com" {
		t.Errorf("username = %q; want dev@example.com", id.Username)
	}
	// The old key still verifies: it is still published and cached.
	if _, err := f.v.Verify(ctx, f.srv.Mint(t, nil)); err != nil {
		t.Fatalf("Verify with the old key after rollover: %v", err)
	}
}

// TestVerifyTokenFromCodeFlow verifies an ID token obtained the way `postern
// login` obtains one: authorization code with PKCE over a loopback redirect.
func TestVerifyTokenFromCodeFlow(t *testing.T) {
	srv := devidptest.Start(t, devidp.Options{Users: verifyUsers})
	v, err := NewVerifier(context.Background(), humanIssuer(srv.URL), VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	prov, err := oidc.NewProvider(ctx, srv.Issuer())
	if err != nil {
		t.Fatal(err)
	}
	codes := make(chan string, 1)
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case codes <- r.URL.Query().Get("code"):
		default:
		}
	}))
	t.Cleanup(cb.Close)
	cfg := oauth2.Config{ClientID: srv.ClientID(), Endpoint: prov.Endpoint(), RedirectURL: cb.URL + "/callback",
		Scopes: []string{oidc.ScopeOpenID, "email", "profile", "groups"}}
	verifier := oauth2.GenerateVerifier()
	resp, err := http.Get(cfg.AuthCodeURL("st", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("login_hint", "alice")))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var code string
	select {
	case code = <-codes:
	default:
		t.Fatalf("callback not reached (%s)", resp.Status)
	}
	tok, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := tok.Extra("id_token").(string)
	id, err := v.Verify(ctx, raw)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	want := Identity{Issuer: "dev", Subject: "alice", Username: "alice@example.com", Kind: KindHuman, Groups: []string{"sre"}}
	if id.Issuer != want.Issuer || id.Subject != want.Subject || id.Username != want.Username || !slices.Equal(id.Groups, want.Groups) {
		t.Fatalf("identity %+v; want %+v", id, want)
	}
}

func TestVerifyConcurrentFirstUse(t *testing.T) {
	f := newVerifyFixture(t, humanIssuer)
	tok := f.srv.Mint(t, nil)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			if _, err := f.v.Verify(context.Background(), tok); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
	wg.Wait()
	if n := f.http.count("/.well-known/openid-configuration"); n != 1 {
		t.Errorf("discovery requests = %d; want 1 shared by all callers", n)
	}
	if n := f.http.count("/keys"); n != 1 {
		t.Errorf("JWKS requests = %d; want 1 shared by all callers", n)
	}
}

// TestVerifyWorkloadProfiles: GitHub Actions and Kubernetes service-account
// tokens (their real claim shapes) verify under their profiles as agents
// named by sub, and keep the claims roles match on: repository, ref,
// job_workflow_ref; the namespace and service account of kubernetes.io.
// A claim the token lacks is simply not kept.
func TestVerifyWorkloadProfiles(t *testing.T) {
	gh := devidptest.Start(t, devidp.Options{})
	k8s := devidptest.Start(t, devidp.Options{})
	v, err := NewVerifier(context.Background(), []config.Issuer{
		{Name: "github", Profile: config.ProfileGitHubActions, IssuerURL: gh.URL, Audience: "postern",
			Require: map[string]string{"repository_owner": "acme"}},
		{Name: "k8s", Profile: config.ProfileKubernetes, IssuerURL: k8s.URL, Audience: "postern", Claims: []string{"kubernetes.io/pod"}},
	}, VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	id, err := v.Verify(ctx, gh.Mint(t, devidptest.GitHubActionsClaims("acme/app", "refs/heads/main", "postern")))
	if err != nil {
		t.Fatal(err)
	}
	if id.Issuer != "github" || id.Kind != KindAgent || id.Username != "repo:acme/app:ref:refs/heads/main" ||
		id.Claims["repository"] != "acme/app" || id.Claims["ref"] != "refs/heads/main" ||
		id.Claims["job_workflow_ref"] != "acme/app/.github/workflows/deploy.yml@refs/heads/main" ||
		id.Claims["repository_owner"] != "acme" || id.Claims["environment"] != "" || len(id.Claims) != 8 {
		t.Errorf("GitHub Actions identity = %+v", id)
	}
	if _, err := v.Verify(ctx, gh.Mint(t, devidptest.GitHubActionsClaims("evil/app", "refs/heads/main", "postern"))); err == nil {
		t.Error("a repository of another owner passed the issuer's require")
	}
	id, err = v.Verify(ctx, k8s.Mint(t, devidptest.KubernetesClaims("ci", "runner", "postern")))
	if err != nil {
		t.Fatal(err)
	}
	if id.Issuer != "k8s" || id.Kind != KindAgent || id.Username != "system:serviceaccount:ci:runner" ||
		id.Claims["kubernetes.io/namespace"] != "ci" || id.Claims["kubernetes.io/serviceaccount"] != "runner" ||
		id.Claims["kubernetes.io/pod"] != "runner-7d9f8c-x2x4q" {
		t.Errorf("Kubernetes identity = %+v", id)
	}
	// The claims ride in the certificate's identity.
	back, err := IdentityFromCert(&ssh.Certificate{Permissions: ssh.Permissions{Extensions: map[string]string{IdentityExtension: EncodeIdentity(id)}}})
	if err != nil || back.Claims["kubernetes.io/namespace"] != "ci" {
		t.Errorf("identity through a certificate: %+v, %v", back, err)
	}
	if _, err := NewVerifier(ctx, []config.Issuer{{Name: "x", Profile: "gitlab", IssuerURL: gh.URL, Audience: "a"}}, VerifierOptions{}); err == nil {
		t.Error("an unknown profile was accepted")
	}
}

func TestClaimValue(t *testing.T) {
	claims := map[string]any{"a": "x", "n": 42.0, "b": true, "obj": map[string]any{"name": "nm", "deep": map[string]any{"k": "v"}},
		"list": []any{"a"}, "slash/name": "top", "empty": "", "long": strings.Repeat("x", 300)}
	tests := []struct {
		name, want string
		ok         bool
	}{
		{"a", "x", true}, {"n", "42", true}, {"b", "true", true}, {"obj", "nm", true}, {"obj/deep/k", "v", true},
		{"obj/deep", "", false}, {"list", "", false}, {"missing", "", false}, {"a/b", "", false},
		{"slash/name", "top", true}, {"empty", "", false}, {"long", "", false},
	}
	for _, tt := range tests {
		got, ok := claimValue(claims, tt.name)
		if got != tt.want || ok != tt.ok {
			t.Errorf("claimValue(%q) = %q, %v; want %q, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}
