package certs

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/usererr"
)

// apiAuthFixture is an authority, a user key and a certificate for it.
type apiAuthFixture struct {
	auth   *Authority
	cert   *ssh.Certificate
	signer ssh.Signer
	now    time.Time
}

func newAPIAuthFixture(t *testing.T) *apiAuthFixture {
	t.Helper()
	a, err := LoadAuthority(config.CAs{}, t.TempDir())
	if err != nil {
		t.Fatalf("LoadAuthority: %v", err)
	}
	now := time.Unix(1_800_000_000, 0)
	signer := newTestSigner(t)
	cert := signUserCert(t, a.User, signer.PublicKey(), "alice@example.com", 42, now)
	return &apiAuthFixture{auth: a, cert: cert, signer: signer, now: now}
}

func newTestSigner(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func signUserCert(t *testing.T, ca *CA, pub ssh.PublicKey, user string, serial uint64, now time.Time) *ssh.Certificate {
	t.Helper()
	id := Identity{Issuer: "corp", Subject: "sub-1", Username: user, Kind: KindHuman}
	cert := &ssh.Certificate{
		Key:             pub,
		Serial:          serial,
		CertType:        ssh.UserCert,
		KeyId:           "test",
		ValidPrincipals: []string{user, "deploy"},
		ValidAfter:      uint64(now.Add(-time.Minute).Unix()),
		ValidBefore:     uint64(now.Add(time.Hour).Unix()),
		Permissions:     ssh.Permissions{Extensions: map[string]string{IdentityExtension: EncodeIdentity(id)}},
	}
	if err := cert.SignCert(rand.Reader, ca.Signer()); err != nil {
		t.Fatalf("sign cert: %v", err)
	}
	return cert
}

type fakeVerifier map[string]Identity

func (f fakeVerifier) Verify(_ context.Context, raw string) (Identity, error) {
	if id, ok := f[raw]; ok {
		return id, nil
	}
	if raw == "expired" {
		return Identity{}, &usererr.Error{Status: 401, Code: "token_expired", Msg: "token has expired"}
	}
	return Identity{}, &usererr.Error{Status: 401, Code: "token_invalid", Msg: "invalid token"}
}

func TestAPIAuthAuthenticate(t *testing.T) {
	f := newAPIAuthFixture(t)
	foreign, err := LoadAuthority(config.CAs{}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	foreignCert := signUserCert(t, foreign.User, f.signer.PublicKey(), "alice@example.com", 43, f.now)
	noIdentity := *f.cert
	noIdentity.Permissions = ssh.Permissions{Extensions: map[string]string{}}
	if err := noIdentity.SignCert(rand.Reader, f.auth.User.Signer()); err != nil {
		t.Fatal(err)
	}

	const uri = "/v1/sessions?user=bob"
	signed := func(cert *ssh.Certificate, s ssh.Signer, at time.Time) func(*http.Request) {
		return func(r *http.Request) {
			// Sign a clone so the signed URI can differ from the one sent.
			if err := SignAPIRequest(r, cert, s, at); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name     string
		method   string
		uri      string // request URI sent; uri if empty
		prepare  func(*http.Request)
		revoked  bool
		wantUser string
		wantCode string
	}{
		{name: "valid", prepare: signed(f.cert, f.signer, f.now), wantUser: "alice@example.com"},
		{name: "valid within skew", prepare: signed(f.cert, f.signer, f.now.Add(-4*time.Minute)), wantUser: "alice@example.com"},
		{name: "no header", prepare: func(*http.Request) {}, wantCode: CodeAuthRequired},
		{name: "unknown scheme", prepare: func(r *http.Request) { r.Header.Set("Authorization", "Basic YTpi") }, wantCode: CodeAuthRequired},
		{name: "tampered path", uri: "/v1/sessions?user=alice", prepare: signed(f.cert, f.signer, f.now), wantCode: CodeAuthInvalid},
		{name: "tampered method", method: http.MethodPost, prepare: func(r *http.Request) {
			r2 := r.Clone(context.Background())
			r2.Method = http.MethodGet
			signed(f.cert, f.signer, f.now)(r2)
			r.Header.Set("Authorization", r2.Header.Get("Authorization"))
		}, wantCode: CodeAuthInvalid},
		{name: "stale ts", prepare: signed(f.cert, f.signer, f.now.Add(-6*time.Minute)), wantCode: CodeAuthExpired},
		{name: "future ts", prepare: signed(f.cert, f.signer, f.now.Add(6*time.Minute)), wantCode: CodeAuthExpired},
		{name: "foreign CA", prepare: signed(foreignCert, f.signer, f.now), wantCode: CodeAuthInvalid},
		{name: "wrong key", prepare: signed(f.cert, newTestSigner(t), f.now), wantCode: CodeAuthInvalid},
		{name: "no identity", prepare: signed(&noIdentity, f.signer, f.now), wantCode: CodeAuthInvalid},
		{name: "revoked", prepare: signed(f.cert, f.signer, f.now), revoked: true, wantCode: CodeAuthRevoked},
		{name: "garbage params", prepare: func(r *http.Request) {
			r.Header.Set("Authorization", `Postern-SSH cert="!!", ts="1", sig="x"`)
		}, wantCode: CodeAuthInvalid},
		{name: "missing sig", prepare: func(r *http.Request) {
			signed(f.cert, f.signer, f.now)(r)
			h := r.Header.Get("Authorization")
			r.Header.Set("Authorization", h[:strings.Index(h, ", sig=")])
		}, wantCode: CodeAuthInvalid},
		{name: "bearer valid", prepare: func(r *http.Request) { r.Header.Set("Authorization", "Bearer good") }, wantUser: "bob@example.com"},
		{name: "bearer invalid", prepare: func(r *http.Request) { r.Header.Set("Authorization", "Bearer bad") }, wantCode: CodeAuthInvalid},
		{name: "bearer expired", prepare: func(r *http.Request) { r.Header.Set("Authorization", "Bearer expired") }, wantCode: CodeAuthExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var asked []uint64
			a := &APIAuth{
				Authority: f.auth,
				Verifier:  fakeVerifier{"good": {Issuer: "corp", Username: "bob@example.com", Kind: KindHuman}},
				Revoked: func(serial uint64) (bool, error) {
					asked = append(asked, serial)
					return tt.revoked, nil
				},
				Now: func() time.Time { return f.now },
			}
			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			r := httptest.NewRequest(method, uri, nil)
			r.RemoteAddr = "127.0.0.1:50000"
			tt.prepare(r)
			if tt.uri != "" {
				r.RequestURI = tt.uri
			}
			id, err := a.Authenticate(r)
			if tt.wantCode != "" {
				e := usererr.As(err)
				if e == nil {
					t.Fatalf("Authenticate = %+v, %v; want error %s", id, err, tt.wantCode)
				}
				if e.Code != tt.wantCode || e.HTTPStatus() != http.StatusUnauthorized {
					t.Errorf("got %d %s (%v); want 401 %s", e.HTTPStatus(), e.Code, err, tt.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			if id.Username != tt.wantUser {
				t.Errorf("got user %q; want %q", id.Username, tt.wantUser)
			}
			if strings.HasPrefix(r.Header.Get("Authorization"), APIAuthScheme) && (len(asked) != 1 || asked[0] != 42) {
				t.Errorf("revocation asked for %v; want [42]", asked)
			}
		})
	}
}

func TestAPIAuthRevocationErrorFailsClosed(t *testing.T) {
	f := newAPIAuthFixture(t)
	a := &APIAuth{Authority: f.auth, Now: func() time.Time { return f.now },
		Revoked: func(uint64) (bool, error) { return false, errors.New("database down") }}
	r := httptest.NewRequest(http.MethodGet, "/v1/sessions", nil)
	if err := SignAPIRequest(r, f.cert, f.signer, f.now); err != nil {
		t.Fatal(err)
	}
	_, err := a.Authenticate(r)
	if e := usererr.As(err); e == nil || e.HTTPStatus() != http.StatusServiceUnavailable {
		t.Fatalf("got %v; want a 503 error", err)
	}
	if strings.Contains(usererr.As(err).Msg, "database") {
		t.Errorf("message %q leaks the internal cause", usererr.As(err).Msg)
	}
}

func TestAPIAuthZeroValueRefuses(t *testing.T) {
	f := newAPIAuthFixture(t)
	r := httptest.NewRequest(http.MethodGet, "/v1/sessions", nil)
	if err := SignAPIRequest(r, f.cert, f.signer, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := (&APIAuth{}).Authenticate(r); err == nil {
		t.Fatal("zero APIAuth accepted a signed request")
	}
	r.Header.Set("Authorization", "Bearer x")
	if _, err := (&APIAuth{}).Authenticate(r); err == nil {
		t.Fatal("zero APIAuth accepted a bearer token")
	}
}

func FuzzParseAuthParams(f *testing.F) {
	f.Add(`cert="AAAA", ts="1", sig="BBBB"`)
	f.Add(`cert=AAAA,ts=1,sig=BBBB`)
	f.Add(`cert="", ts="1"`)
	f.Fuzz(func(t *testing.T, s string) {
		p, err := parseAuthParams(s)
		if err == nil && (p["cert"] == "" || p["ts"] == "" || p["sig"] == "") {
			t.Fatalf("parseAuthParams(%q) = %v without error", s, p)
		}
	})
}

func TestAPIAuthRSAKey(t *testing.T) {
	f := newAPIAuthFixture(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert := signUserCert(t, f.auth.User, signer.PublicKey(), "rsa@example.com", 44, f.now)
	r := httptest.NewRequest(http.MethodGet, "/v1/sessions", nil)
	if err := SignAPIRequest(r, cert, signer, f.now); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.Header.Get("Authorization"), "sig=") {
		t.Fatal("no signature")
	}
	id, err := (&APIAuth{Authority: f.auth, Now: func() time.Time { return f.now }}).Authenticate(r)
	if err != nil || id.Username != "rsa@example.com" {
		t.Fatalf("RSA-signed request: %+v, %v", id, err)
	}
}

// TestAPIAuthLocked: Locked is asked about every identity that
// authenticated, by certificate or bearer token, and its refusal is the
// answer; an identity it does not refuse passes, and a request that failed
// to authenticate never reaches it.
func TestAPIAuthLocked(t *testing.T) {
	f := newAPIAuthFixture(t)
	refusal := &usererr.Error{Status: http.StatusForbidden, Code: "locked", Msg: "your access is locked: x"}
	var asked []string
	a := &APIAuth{Authority: f.auth, Verifier: fakeVerifier{"tok-bob": {Issuer: "corp", Subject: "sub-2", Username: "bob"}},
		Now: func() time.Time { return f.now },
		Locked: func(id Identity) error {
			asked = append(asked, id.Subject)
			if id.Subject == "sub-1" {
				return refusal
			}
			return nil
		}}
	r := httptest.NewRequest(http.MethodGet, "/v1/sessions", nil)
	if err := SignAPIRequest(r, f.cert, f.signer, f.now); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(r); usererr.As(err) != refusal {
		t.Errorf("locked certificate holder: %v; want the lock's refusal", err)
	}
	r = httptest.NewRequest(http.MethodGet, "/v1/sessions", nil)
	r.Header.Set("Authorization", "Bearer tok-bob")
	if id, err := a.Authenticate(r); err != nil || id.Username != "bob" {
		t.Errorf("unlocked bearer: %+v, %v", id, err)
	}
	r = httptest.NewRequest(http.MethodGet, "/v1/sessions", nil)
	r.Header.Set("Authorization", "Bearer tok-mallory")
	if _, err := a.Authenticate(r); usererr.As(err) == nil || usererr.As(err).HTTPStatus() != http.StatusUnauthorized {
		t.Errorf("bad token: %v; want 401", err)
	}
	if strings.Join(asked, ",") != "sub-1,sub-2" {
		t.Errorf("Locked asked about %v; want [sub-1 sub-2] (never about a failed authentication)", asked)
	}
}
