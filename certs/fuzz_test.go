package certs_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/usererr"
)

// FuzzCertHandlerBody feeds arbitrary bodies to POST /v1/certs: whatever
// arrives, the answer is never a 500 and always a JSON object.
func FuzzCertHandlerBody(f *testing.F) {
	_, key := newEd25519(f)
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key.PublicKey())))
	for _, seed := range []string{
		`{"public_key":"` + line + `"}`,
		`{"public_key":"` + line + `","ttl":"10m"}`,
		`{"public_key":"` + line + `","ttl":"-1h"}`,
		`{"public_key":"` + dsaLine() + `"}`,
		`{"public_key":"ssh-ed25519 AAAA"}`,
		`{"public_key":`, `null`, `[]`, ``, `{"x":1}`,
	} {
		f.Add(seed, "tok-alice")
	}
	f.Add(`{"public_key":"`+line+`"}`, "tok-nobody")
	f.Add(`{"public_key":"`+line+`"}`, "broken")
	fx := newIssuerFixture(f, func(o *certs.IssuerOptions) {
		o.RateLimit = config.RateLimit{PerIdentity: 1 << 30, PerSource: 1 << 30}
	})
	h := fx.issuer.Handler(certs.HandlerOptions{})
	f.Fuzz(func(t *testing.T, body, token string) {
		req := httptest.NewRequest(http.MethodPost, "/v1/certs", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("status %d for body %q: %s", rec.Code, body, rec.Body)
		}
		var v map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
			t.Fatalf("answer %q is not a JSON object: %v", rec.Body, err)
		}
		if rec.Code != http.StatusOK && v["code"] == "" {
			t.Fatalf("error answer without code: %s", rec.Body)
		}
	})
}

// FuzzCheckUserCert parses arbitrary certificate bytes and checks them: no
// panic, and nothing is accepted unless a trusted CA key signed it.
func FuzzCheckUserCert(f *testing.F) {
	a := newTestAuthority(f)
	_, key := newEd25519(f)
	_, foreign := newEd25519(f)
	f.Add(signWith(f, userCert(f, key.PublicKey(), nil), a.User.Signer()).Marshal(), "deploy")
	f.Add(signWith(f, userCert(f, key.PublicKey(), nil), foreign).Marshal(), "deploy")
	f.Add(signWith(f, userCert(f, key.PublicKey(), func(c *ssh.Certificate) {
		c.CriticalOptions = map[string]string{"source-address": "127.0.0.0/8"}
	}), a.User.Signer()).Marshal(), "alice@example.com")
	now := time.Now()
	src := netip.MustParseAddr("127.0.0.1")
	f.Fuzz(func(t *testing.T, raw []byte, login string) {
		pub, err := ssh.ParsePublicKey(raw)
		if err != nil {
			return
		}
		cert, ok := pub.(*ssh.Certificate)
		if !ok {
			return
		}
		id, err := a.CheckUserCert(cert, login, src, now)
		if err != nil {
			if usererr.As(err) == nil {
				t.Fatalf("refusal %v is not a *usererr.Error", err)
			}
			return
		}
		if !a.User.IsTrusted(cert.SignatureKey) || id.Username == "" {
			t.Fatalf("accepted a certificate not from the user CA: %+v", cert)
		}
	})
}
