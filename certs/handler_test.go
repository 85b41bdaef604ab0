package certs_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/httpx"
)

// dsaLine is an authorized_keys line for a (made-up) DSA key.
func dsaLine() string {
	blob := ssh.Marshal(struct {
		Name       string
		P, Q, G, Y *big.Int
	}{ssh.KeyAlgoDSA, big.NewInt(23), big.NewInt(11), big.NewInt(4), big.NewInt(8)})
	return ssh.KeyAlgoDSA + " " + base64.StdEncoding.EncodeToString(blob) + " old@key"
}

type certServer struct {
	*issuerFixture
	url string
}

func newCertServer(t *testing.T, opts certs.HandlerOptions, mod func(*certs.IssuerOptions)) *certServer {
	t.Helper()
	f := newIssuerFixture(t, mod)
	srv := httptest.NewServer(f.issuer.Handler(opts))
	t.Cleanup(srv.Close)
	return &certServer{issuerFixture: f, url: srv.URL + "/v1/certs"}
}

type httpCase struct {
	method, contentType, auth string
	body                      string
	header                    map[string]string
}

func (s *certServer) do(t *testing.T, c httpCase) (*http.Response, []byte) {
	t.Helper()
	if c.method == "" {
		c.method = http.MethodPost
	}
	req, err := http.NewRequest(c.method, s.url, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	if c.contentType != "-" {
		ct := c.contentType
		if ct == "" {
			ct = "application/json"
		}
		req.Header.Set("Content-Type", ct)
	}
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func keyBody(t *testing.T, pub ssh.PublicKey, ttl string) string {
	t.Helper()
	b, err := json.Marshal(certs.CertRequest{PublicKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))), TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestHandlerIssues(t *testing.T) {
	s := newCertServer(t, certs.HandlerOptions{}, nil)
	_, key := newEd25519(t)
	resp, body := s.do(t, httpCase{auth: "Bearer tok-alice", body: keyBody(t, key.PublicKey(), "10m")})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d (%s); want 200", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("content-type = %q", ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("cache-control = %q; want no-store", cc)
	}
	var got certs.CertResponse
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(got.Certificate))
	if err != nil {
		t.Fatalf("certificate %q: %v", got.Certificate, err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		t.Fatalf("certificate field holds a %T", pub)
	}
	if !bytes.Equal(cert.Key.Marshal(), key.PublicKey().Marshal()) {
		t.Error("certificate certifies another key")
	}
	if cert.Serial != got.Serial {
		t.Errorf("serial = %d; cert says %d", got.Serial, cert.Serial)
	}
	if strings.Join(got.Principals, ",") != "alice@example.com,pass-1:deploy,pass-1:root" {
		t.Errorf("principals = %q", got.Principals)
	}
	va, err1 := time.Parse(time.RFC3339, got.ValidAfter)
	vb, err2 := time.Parse(time.RFC3339, got.ValidBefore)
	if err1 != nil || err2 != nil {
		t.Fatalf("times %q %q are not RFC 3339", got.ValidAfter, got.ValidBefore)
	}
	if d := vb.Sub(va); d != 11*time.Minute {
		t.Errorf("validity = %v; want 11m (10m requested + 1m backdating)", d)
	}
	if got.HostCA != s.authority.HostCALine() || !strings.HasPrefix(got.HostCA, "@cert-authority * ") {
		t.Errorf("host_ca = %q; want %q", got.HostCA, s.authority.HostCALine())
	}
	if _, err := s.authority.CheckUserCert(cert, "alice@example.com", loopback, time.Now()); err != nil {
		t.Errorf("issued certificate does not check: %v", err)
	}
}

func TestHandlerRefusals(t *testing.T) {
	_, key := newEd25519(t)
	good := keyBody(t, key.PublicKey(), "")
	rsaSmall, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	rsaSmallPub, err := ssh.NewPublicKey(&rsaSmall.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	oversized := `{"public_key": "` + strings.Repeat("A", certs.MaxRequestBody) + `"}`
	tests := []struct {
		name       string
		req        httpCase
		wantStatus int
		wantCode   string
	}{
		{"wrong method", httpCase{method: http.MethodGet, auth: "Bearer tok-alice"}, 405, "method_not_allowed"},
		{"no content type", httpCase{contentType: "-", auth: "Bearer tok-alice", body: good}, 415, "unsupported_media_type"},
		{"form content type", httpCase{contentType: "application/x-www-form-urlencoded", auth: "Bearer tok-alice", body: good}, 415, "unsupported_media_type"},
		{"missing bearer", httpCase{body: good}, 401, certs.CodeTokenMissing},
		{"basic auth", httpCase{auth: "Basic YWxpY2U6cHc=", body: good}, 401, certs.CodeTokenMissing},
		{"empty bearer", httpCase{auth: "Bearer ", body: good}, 401, certs.CodeTokenMissing},
		{"bad token", httpCase{auth: "Bearer secret-token-value", body: good}, 401, "invalid_token"},
		{"verifier failure", httpCase{auth: "Bearer broken", body: good}, 401, certs.CodeInvalidToken},
		{"oversized body", httpCase{auth: "Bearer tok-alice", body: oversized}, 413, "body_too_large"},
		{"bad json", httpCase{auth: "Bearer tok-alice", body: `{"public_key":`}, 400, "bad_request"},
		{"json array", httpCase{auth: "Bearer tok-alice", body: `[1,2]`}, 400, "bad_request"},
		{"unknown field", httpCase{auth: "Bearer tok-alice", body: `{"public_key":"x","principals":["root"]}`}, 400, "bad_request"},
		{"two objects", httpCase{auth: "Bearer tok-alice", body: good + good}, 400, "bad_request"},
		{"empty body", httpCase{auth: "Bearer tok-alice", body: ``}, 400, "bad_request"},
		{"null body", httpCase{auth: "Bearer tok-alice", body: `null`}, 400, certs.CodeBadPublicKey},
		{"garbage key", httpCase{auth: "Bearer tok-alice", body: `{"public_key":"ssh-ed25519 bm90IGEga2V5"}`}, 400, certs.CodeBadPublicKey},
		{"two keys", httpCase{auth: "Bearer tok-alice", body: `{"public_key":` + strconv.Quote(string(ssh.MarshalAuthorizedKey(key.PublicKey()))+string(ssh.MarshalAuthorizedKey(key.PublicKey()))) + `}`}, 400, certs.CodeBadPublicKey},
		{"dsa key", httpCase{auth: "Bearer tok-alice", body: `{"public_key":` + strconv.Quote(dsaLine()) + `}`}, 400, certs.CodeWeakKey},
		{"rsa 1024", httpCase{auth: "Bearer tok-alice", body: keyBody(t, rsaSmallPub, "")}, 400, certs.CodeWeakKey},
		{"bad ttl", httpCase{auth: "Bearer tok-alice", body: keyBody(t, key.PublicKey(), "soon")}, 400, certs.CodeBadTTL},
		{"negative ttl", httpCase{auth: "Bearer tok-alice", body: keyBody(t, key.PublicKey(), "-5m")}, 400, certs.CodeBadTTL},
		{"tiny ttl", httpCase{auth: "Bearer tok-alice", body: keyBody(t, key.PublicKey(), "5s")}, 400, certs.CodeBadTTL},
		{"no access", httpCase{auth: "Bearer tok-nobody", body: good}, 403, certs.CodeNoAccess},
	}
	s := newCertServer(t, certs.HandlerOptions{}, nil)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := s.do(t, tc.req)
			if resp.StatusCode != tc.wantStatus {
				t.Errorf("status = %d; want %d (%s)", resp.StatusCode, tc.wantStatus, body)
			}
			var e httpx.ErrorBody
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("error body %q: %v", body, err)
			}
			if e.Code != tc.wantCode || e.Error == "" {
				t.Errorf("error = %+v; want code %s", e, tc.wantCode)
			}
			for _, secret := range []string{"secret-token-value", "jwks", "tok-"} {
				if bytes.Contains(body, []byte(secret)) {
					t.Errorf("body %s echoes %q", body, secret)
				}
			}
			if tc.wantStatus == http.StatusMethodNotAllowed && resp.Header.Get("Allow") != http.MethodPost {
				t.Errorf("Allow = %q; want POST", resp.Header.Get("Allow"))
			}
		})
	}
	if v := counter(t, s.reg, "postern_cert_requests_failed_total", map[string]string{"code": certs.CodeWeakKey}); v != 2 {
		t.Errorf("failed{weak_key} = %v; want 2", v)
	}
}

func TestHandlerRateLimit(t *testing.T) {
	s := newCertServer(t, certs.HandlerOptions{}, func(o *certs.IssuerOptions) {
		o.RateLimit = config.RateLimit{PerIdentity: 6}
	})
	_, key := newEd25519(t)
	for i := range 5 {
		if resp, body := s.do(t, httpCase{auth: "Bearer tok-alice", body: keyBody(t, key.PublicKey(), "")}); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
	}
	resp, body := s.do(t, httpCase{auth: "Bearer tok-alice", body: keyBody(t, key.PublicKey(), "")})
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), certs.CodeRateLimited) {
		t.Fatalf("6th request: %d %s; want 429 rate_limited", resp.StatusCode, body)
	}
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || ra < 1 || ra > 60 {
		t.Errorf("Retry-After = %q; want 1..60 seconds", resp.Header.Get("Retry-After"))
	}
}

func TestHandlerSource(t *testing.T) {
	_, key := newEd25519(t)
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	for _, tc := range []struct {
		name  string
		trust []netip.Prefix
		xff   string
		want  string
	}{
		{"peer address", nil, "203.0.113.9", "127.0.0.1"},
		{"trusted proxy last hop", loopback, "198.51.100.1, 203.0.113.9", "203.0.113.9"},
		{"trusted proxy garbage header", loopback, "nonsense", "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newCertServer(t, certs.HandlerOptions{TrustedProxies: tc.trust}, nil)
			resp, body := s.do(t, httpCase{auth: "Bearer tok-alice", body: keyBody(t, key.PublicKey(), ""),
				header: map[string]string{"X-Forwarded-For": tc.xff}})
			if resp.StatusCode != 200 {
				t.Fatalf("status %d %s", resp.StatusCode, body)
			}
			ev := s.audit.all()
			if len(ev) != 1 || ev[0].Source != tc.want {
				t.Errorf("audited source = %+v; want %s", ev, tc.want)
			}
		})
	}
}

func TestHandlerNeverLogsToken(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	s := newCertServer(t, certs.HandlerOptions{}, func(o *certs.IssuerOptions) {
		o.Log = slog.New(slog.NewJSONHandler(&lockedWriter{mu: &mu, w: &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	_, key := newEd25519(t)
	for _, tok := range []string{"secret-token-value", "broken", "tok-alice", "tok-nobody"} {
		s.do(t, httpCase{auth: "Bearer " + tok, body: keyBody(t, key.PublicKey(), "")})
	}
	mu.Lock()
	defer mu.Unlock()
	out := logs.String()
	if !strings.Contains(out, "certificate issued") || !strings.Contains(out, "certificate refused") {
		t.Fatalf("expected issue and refusal lines, got:\n%s", out)
	}
	for _, tok := range []string{"secret-token-value", "tok-alice", "tok-nobody"} {
		if strings.Contains(out, tok) {
			t.Errorf("log contains the token %q:\n%s", tok, out)
		}
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
