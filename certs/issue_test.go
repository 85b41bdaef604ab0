package certs_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/lock"
	"github.com/posternhq/postern/state"
)

// tokenStub stands in for the OIDC verifier in pipeline and handler unit
// tests (the real verifier is tested against a real OP): a token is the key
// of the identity it proves. The token "broken" fails with a plain error.
type tokenStub map[string]certs.Identity

func (s tokenStub) Verify(_ context.Context, raw string) (certs.Identity, error) {
	if raw == "broken" {
		return certs.Identity{}, errors.New("jwks fetch failed")
	}
	id, ok := s[raw]
	if !ok {
		return certs.Identity{}, &usererr.Error{Status: http.StatusUnauthorized, Code: "invalid_token", Msg: "invalid token"}
	}
	return id, nil
}

// grantStub grants by username.
type grantStub map[string]certs.Grant

func (g grantStub) Grant(id certs.Identity) certs.Grant { return g[id.Username] }

var (
	alice  = certs.Identity{Issuer: "corp", Subject: "u-alice", Username: "alice@example.com", Kind: certs.KindHuman, Groups: []string{"sre"}}
	bot    = certs.Identity{Issuer: "github", Subject: "repo:org/app:ref:refs/heads/main", Username: "org/app", Kind: certs.KindAgent}
	nobody = certs.Identity{Issuer: "corp", Subject: "u-nobody", Username: "nobody@example.com", Kind: certs.KindHuman}
)

// dsaKeyStub is a public key that says it is DSA: the SSH library no longer
// parses DSA keys, but an Issuer must refuse one however it got there.
type dsaKeyStub struct{}

func (dsaKeyStub) Type() string                        { return ssh.KeyAlgoDSA }
func (dsaKeyStub) Marshal() []byte                     { return ssh.Marshal(struct{ Name string }{ssh.KeyAlgoDSA}) }
func (dsaKeyStub) Verify([]byte, *ssh.Signature) error { return errors.New("no") }

func testTokens() tokenStub {
	return tokenStub{"tok-alice": alice, "tok-bot": bot, "tok-nobody": nobody}
}

func testGrants() grantStub {
	return grantStub{
		"alice@example.com": {Roles: []string{"sre"}, Logins: []string{"deploy", "root", "deploy", "alice@example.com"},
			Passthrough: []string{"pass-1:root", "pass-1:deploy"}, PermitPTY: true, PermitPortForwarding: true},
		"org/app":            {Roles: []string{"agents"}, Logins: []string{"deploy"}, MaxTTL: 10 * time.Minute},
		"nobody@example.com": {Roles: []string{"auditors"}},
	}
}

type auditLog struct {
	mu     sync.Mutex
	events []state.Event
}

func (l *auditLog) record(_ context.Context, e state.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
}

func (l *auditLog) all() []state.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]state.Event(nil), l.events...)
}

type issuerFixture struct {
	authority *certs.Authority
	issuer    *certs.Issuer
	audit     *auditLog
	reg       *prometheus.Registry
	now       time.Time
}

func newIssuerFixture(t testing.TB, mod func(*certs.IssuerOptions)) *issuerFixture {
	t.Helper()
	f := &issuerFixture{
		authority: newTestAuthority(t),
		audit:     &auditLog{},
		reg:       prometheus.NewRegistry(),
		now:       time.Now().Truncate(time.Second),
	}
	opts := certs.IssuerOptions{
		Authority: f.authority,
		Verifier:  testTokens(),
		Policy:    testGrants(),
		Audit:     f.audit.record,
		Now:       func() time.Time { return f.now },
		Metrics:   f.reg,
	}
	if mod != nil {
		mod(&opts)
	}
	var err error
	if f.issuer, err = certs.NewIssuer(opts); err != nil {
		t.Fatalf("NewIssuer: %v", err)
	}
	return f
}

// counter returns the value of a counter with the given labels, 0 if absent.
func counter(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

var loopback = netip.MustParseAddr("127.0.0.1")

func TestIssue(t *testing.T) {
	f := newIssuerFixture(t, nil)
	_, key := newEd25519(t)
	got, err := f.issuer.Issue(context.Background(), certs.Request{Token: "tok-alice", PublicKey: key.PublicKey(), Source: loopback})
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	c := got.Cert
	// The username and the passthrough principals; never a bare login.
	wantPrincipals := []string{"alice@example.com", "pass-1:deploy", "pass-1:root"}
	if fmt.Sprint(got.Principals) != fmt.Sprint(wantPrincipals) || fmt.Sprint(c.ValidPrincipals) != fmt.Sprint(wantPrincipals) {
		t.Errorf("principals = %q / %q; want %q", got.Principals, c.ValidPrincipals, wantPrincipals)
	}
	if c.Serial == 0 || c.Serial != got.Serial {
		t.Errorf("serial = %d (issued %d); want equal and non-zero", c.Serial, got.Serial)
	}
	if want := fmt.Sprintf("postern:corp:alice@example.com:%d", c.Serial); c.KeyId != want {
		t.Errorf("key id = %q; want %q", c.KeyId, want)
	}
	if want := f.now.Add(-time.Minute); !got.ValidAfter.Equal(want) {
		t.Errorf("valid_after = %v; want %v", got.ValidAfter, want)
	}
	if want := f.now.Add(8 * time.Hour); !got.ValidBefore.Equal(want) {
		t.Errorf("valid_before = %v; want %v", got.ValidBefore, want)
	}
	if len(c.CriticalOptions) != 0 {
		t.Errorf("critical options = %v; want none", c.CriticalOptions)
	}
	wantExt := []string{certs.IdentityExtension, "permit-port-forwarding", "permit-pty"}
	if len(c.Extensions) != len(wantExt) {
		t.Errorf("extensions = %v; want %v", c.Extensions, wantExt)
	}
	for _, e := range wantExt {
		if _, ok := c.Extensions[e]; !ok {
			t.Errorf("extension %s missing", e)
		}
	}
	if _, err := f.authority.CheckUserCert(c, "deploy", loopback, f.now); err == nil {
		t.Error("an issued certificate logs in as a bare login")
	}
	id, err := f.authority.CheckUserCert(c, "alice@example.com", loopback, f.now)
	if err != nil {
		t.Fatalf("CheckUserCert on an issued cert: %v", err)
	}
	if id.Username != alice.Username || id.Subject != alice.Subject || id.Kind != certs.KindHuman {
		t.Errorf("identity in cert = %+v; want %+v", id, alice)
	}

	ev := f.audit.all()
	if len(ev) != 1 {
		t.Fatalf("audit events = %d; want 1", len(ev))
	}
	e := ev[0]
	if e.Type != state.EventCertIssued || e.Actor != alice.Username || e.Source != "127.0.0.1" {
		t.Errorf("audit event = %+v", e)
	}
	for _, k := range []string{"serial", "principals", "valid_after", "valid_before", "kind", "issuer"} {
		if _, ok := e.Details[k]; !ok {
			t.Errorf("audit details lack %s: %v", k, e.Details)
		}
	}
	if e.Details["serial"] != fmt.Sprint(c.Serial) {
		t.Errorf("audit serial = %v; want %d", e.Details["serial"], c.Serial)
	}
	if v := counter(t, f.reg, "postern_certs_issued_total", map[string]string{"issuer": "corp", "kind": "human"}); v != 1 {
		t.Errorf("postern_certs_issued_total{corp,human} = %v; want 1", v)
	}
}

func TestIssueTTL(t *testing.T) {
	tests := []struct {
		name      string
		cfg       config.CertTTL
		token     string
		requested time.Duration
		want      time.Duration
		wantCode  string
	}{
		{name: "human default", token: "tok-alice", want: 8 * time.Hour},
		{name: "agent default capped by grant", token: "tok-bot", want: 10 * time.Minute},
		{name: "agent shorter request", token: "tok-bot", requested: 5 * time.Minute, want: 5 * time.Minute},
		{name: "request shortens", token: "tok-alice", requested: 10 * time.Minute, want: 10 * time.Minute},
		{name: "request cannot lengthen", token: "tok-alice", requested: 48 * time.Hour, want: 8 * time.Hour},
		{name: "configured human", token: "tok-alice", cfg: config.CertTTL{Human: config.Duration(2 * time.Hour)}, want: 2 * time.Hour},
		{name: "max caps default", token: "tok-alice", cfg: config.CertTTL{Max: config.Duration(time.Hour)}, want: time.Hour},
		{name: "max caps configured", token: "tok-alice", cfg: config.CertTTL{Human: config.Duration(72 * time.Hour)}, want: 24 * time.Hour},
		{name: "grant caps agent config", token: "tok-bot", cfg: config.CertTTL{Agent: config.Duration(time.Hour)}, want: 10 * time.Minute},
		{name: "too short", token: "tok-alice", requested: 30 * time.Second, wantCode: certs.CodeBadTTL},
		{name: "negative", token: "tok-alice", requested: -time.Minute, wantCode: certs.CodeBadTTL},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newIssuerFixture(t, func(o *certs.IssuerOptions) { o.TTL = tc.cfg })
			_, key := newEd25519(t)
			got, err := f.issuer.Issue(context.Background(), certs.Request{Token: tc.token, PublicKey: key.PublicKey(), TTL: tc.requested, Source: loopback})
			if tc.wantCode != "" {
				if e := usererr.As(err); e == nil || e.Code != tc.wantCode {
					t.Fatalf("got %v; want %s", err, tc.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := got.ValidBefore.Sub(f.now); d != tc.want {
				t.Errorf("lifetime = %v; want %v", d, tc.want)
			}
		})
	}
}

func TestIssueRefusals(t *testing.T) {
	_, good := newEd25519(t)
	var dsaPub ssh.PublicKey = dsaKeyStub{}
	rsaSmall, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	rsaSmallPub, err := ssh.NewPublicKey(&rsaSmall.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	rsaOK, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaOKPub, err := ssh.NewPublicKey(&rsaOK.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	a := newTestAuthority(t)
	certAsKey := signWith(t, userCert(t, good.PublicKey(), nil), a.User.Signer())

	tests := []struct {
		name       string
		token      string
		key        ssh.PublicKey
		wantCode   string
		wantStatus int
		audited    bool
	}{
		{"rsa 2048 accepted", "tok-alice", rsaOKPub, "", 0, true},
		{"dsa", "tok-alice", dsaPub, certs.CodeWeakKey, 400, false},
		{"rsa 1024", "tok-alice", rsaSmallPub, certs.CodeWeakKey, 400, false},
		{"certificate as key", "tok-alice", certAsKey, certs.CodeBadPublicKey, 400, false},
		{"no key", "tok-alice", nil, certs.CodeBadPublicKey, 400, false},
		{"no token", "", good.PublicKey(), certs.CodeTokenMissing, 401, false},
		{"bad token", "tok-mallory", good.PublicKey(), "invalid_token", 401, false},
		{"verifier failure", "broken", good.PublicKey(), certs.CodeInvalidToken, 401, false},
		{"no role grants a login", "tok-nobody", good.PublicKey(), certs.CodeNoAccess, 403, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newIssuerFixture(t, nil)
			got, err := f.issuer.Issue(context.Background(), certs.Request{Token: tc.token, PublicKey: tc.key, Source: loopback})
			if tc.wantCode == "" {
				if err != nil {
					t.Fatalf("got %v; want issued", err)
				}
				if len(got.Principals) == 0 {
					t.Error("issued with no principals")
				}
			} else {
				e := usererr.As(err)
				if e == nil || e.Code != tc.wantCode || e.HTTPStatus() != tc.wantStatus {
					t.Fatalf("got %v; want %s (%d)", err, tc.wantCode, tc.wantStatus)
				}
				if strings.Contains(e.Msg, "jwks") {
					t.Errorf("message %q leaks an internal error", e.Msg)
				}
				if v := counter(t, f.reg, "postern_cert_requests_failed_total", map[string]string{"code": tc.wantCode}); v != 1 {
					t.Errorf("failed counter{%s} = %v; want 1", tc.wantCode, v)
				}
			}
			ev := f.audit.all()
			if got := len(ev) == 1; got != tc.audited {
				t.Fatalf("audit events = %v; want audited=%v", ev, tc.audited)
			}
			if tc.audited && tc.wantCode != "" {
				if ev[0].Type != state.EventCertDenied || ev[0].Details["code"] != tc.wantCode || ev[0].Actor != "nobody@example.com" {
					t.Errorf("denial event = %+v", ev[0])
				}
			}
		})
	}
}

func TestIssueRateLimits(t *testing.T) {
	f := newIssuerFixture(t, func(o *certs.IssuerOptions) {
		o.RateLimit = config.RateLimit{PerIdentity: 6, PerSource: 60} // bursts 5 and 10
	})
	_, key := newEd25519(t)
	issue := func(token string, src netip.Addr) error {
		_, err := f.issuer.Issue(context.Background(), certs.Request{Token: token, PublicKey: key.PublicKey(), Source: src})
		return err
	}
	for i := range 5 {
		if err := issue("tok-alice", loopback); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	err := issue("tok-alice", loopback)
	e := usererr.As(err)
	if e == nil || e.Code != certs.CodeRateLimited || e.HTTPStatus() != http.StatusTooManyRequests {
		t.Fatalf("6th request by one identity: %v; want rate_limited 429", err)
	}
	var ra *certs.RetryAfterError
	if !errors.As(err, &ra) || ra.Wait <= 0 || ra.Scope != "identity" {
		t.Errorf("retry-after = %+v; want a positive identity wait", ra)
	}
	// Another identity from the same source still gets through.
	if err := issue("tok-bot", loopback); err != nil {
		t.Errorf("other identity: %v", err)
	}
	// Four more requests exhaust the source's burst of 10, even with bad
	// tokens (the source limit applies before verification).
	for range 4 {
		_ = issue("tok-mallory", loopback)
	}
	err = issue("tok-bot", loopback)
	if !errors.As(err, &ra) || ra.Scope != "source" {
		t.Errorf("11th request from one source: %v; want rate limited per source", err)
	}
	if err := issue("tok-bot", netip.MustParseAddr("127.0.0.2")); err != nil {
		t.Errorf("other source: %v", err)
	}
	// After refill time passes, the identity may ask again.
	f.now = f.now.Add(time.Minute)
	if err := issue("tok-alice", loopback); err != nil {
		t.Errorf("after a minute: %v", err)
	}
}

func TestIssueConcurrent(t *testing.T) {
	f := newIssuerFixture(t, func(o *certs.IssuerOptions) {
		o.Now = nil
		o.RateLimit = config.RateLimit{PerIdentity: 6000, PerSource: 6000}
	})
	_, key := newEd25519(t)
	var wg sync.WaitGroup
	serials := make(chan uint64, 64)
	for i := range 8 {
		wg.Go(func() {
			for range 8 {
				got, err := f.issuer.Issue(context.Background(), certs.Request{Token: "tok-alice", PublicKey: key.PublicKey(),
					Source: netip.AddrFrom4([4]byte{127, 0, 0, byte(i + 1)})})
				if err != nil {
					t.Errorf("Issue: %v", err)
					return
				}
				serials <- got.Serial
			}
		})
	}
	wg.Wait()
	close(serials)
	seen := map[uint64]bool{}
	for s := range serials {
		if seen[s] {
			t.Errorf("serial %d issued twice", s)
		}
		seen[s] = true
	}
	if len(seen) != 64 {
		t.Errorf("issued %d; want 64", len(seen))
	}
}

func TestNewIssuerNeedsParts(t *testing.T) {
	a := newTestAuthority(t)
	for name, o := range map[string]certs.IssuerOptions{
		"no authority": {Verifier: testTokens(), Policy: testGrants()},
		"no verifier":  {Authority: a, Policy: testGrants()},
		"no policy":    {Authority: a, Verifier: testTokens()},
	} {
		if _, err := certs.NewIssuer(o); err == nil {
			t.Errorf("%s: NewIssuer succeeded", name)
		}
	}
	// Two issuers may share a registry.
	reg := prometheus.NewRegistry()
	for range 2 {
		if _, err := certs.NewIssuer(certs.IssuerOptions{Authority: a, Verifier: testTokens(), Policy: testGrants(), Metrics: reg}); err != nil {
			t.Errorf("second issuer on one registry: %v", err)
		}
	}
}

// manyPrincipals returns n distinct passthrough principals.
func manyPrincipals(n int) []string {
	var out []string
	for i := range n {
		out = append(out, certs.PassthroughPrincipal(fmt.Sprintf("t-%d", i), "deploy"))
	}
	return out
}

func TestIssuePrincipals(t *testing.T) {
	tests := []struct {
		name   string
		grant  certs.Grant
		want   string
		refuse bool
	}{
		{"username only: logins are no principals", certs.Grant{Logins: []string{"deploy"}}, "alice@example.com", false},
		{"passthrough, deduplicated and sorted", certs.Grant{Logins: []string{"web"},
			Passthrough: []string{"p-2:web", "p-1:app", "p-2:web", "alice@example.com"}}, "alice@example.com,p-1:app,p-2:web", false},
		{"empty logins ignored", certs.Grant{Logins: []string{"", "deploy", ""}}, "alice@example.com", false},
		{"only empty logins", certs.Grant{Logins: []string{""}}, "", true},
		{"roles without logins", certs.Grant{Roles: []string{"auditors"}}, "", true},
		{"more principals than sshd takes", certs.Grant{Logins: []string{"a"}, Passthrough: manyPrincipals(certs.MaxPrincipals)}, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newIssuerFixture(t, func(o *certs.IssuerOptions) {
				o.Policy = grantStub{"alice@example.com": tc.grant}
			})
			_, key := newEd25519(t)
			got, err := f.issuer.Issue(context.Background(), certs.Request{Token: "tok-alice", PublicKey: key.PublicKey(), Source: loopback})
			if tc.refuse {
				if e := usererr.As(err); e == nil || (e.Code != certs.CodeNoAccess && e.Code != certs.CodeTooManyPrincipals) || e.HTTPStatus() != http.StatusForbidden {
					t.Fatalf("got %v; want no_access or too_many_principals, 403", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s := strings.Join(got.Cert.ValidPrincipals, ","); s != tc.want {
				t.Errorf("principals = %s; want %s", s, tc.want)
			}
		})
	}
}

// TestIssueLocked: a verified identity that a lock matches gets no
// certificate (403 locked, audited as cert.denied); others still do, and
// once the lock is removed the identity does again.
func TestIssueLocked(t *testing.T) {
	ctx := context.Background()
	st, err := state.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	locks, err := lock.New(ctx, lock.Options{Store: st, Poll: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(locks.Close)
	f := newIssuerFixture(t, func(o *certs.IssuerOptions) {
		o.Locked = func(ctx context.Context, id certs.Identity) error {
			return locks.CheckFresh(ctx, lock.Subject{Identity: id})
		}
	})
	_, key := newEd25519(t)
	lk, err := locks.Lock(ctx, lock.Spec{Kind: state.LockIdentity, Identity: bot, Reason: "runaway", By: "sec"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.issuer.Issue(ctx, certs.Request{Token: "tok-bot", PublicKey: key.PublicKey(), Source: loopback})
	if e := usererr.As(err); e == nil || e.Code != lock.CodeLocked || e.HTTPStatus() != http.StatusForbidden ||
		!strings.Contains(e.Msg, "runaway") {
		t.Fatalf("locked identity: %v; want 403 locked naming the reason", err)
	}
	ev := f.audit.all()
	if len(ev) != 1 || ev[0].Type != state.EventCertDenied || ev[0].Details["code"] != lock.CodeLocked {
		t.Errorf("audit = %+v; want one cert.denied with code locked", ev)
	}
	if _, err := f.issuer.Issue(ctx, certs.Request{Token: "tok-alice", PublicKey: key.PublicKey(), Source: loopback}); err != nil {
		t.Errorf("another identity: %v", err)
	}
	if err := locks.Unlock(ctx, lk.ID, "sec"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.issuer.Issue(ctx, certs.Request{Token: "tok-bot", PublicKey: key.PublicKey(), Source: loopback}); err != nil {
		t.Errorf("after unlock: %v", err)
	}
}

// TestIssueFor: an identity another credential proved gets a certificate
// without a token, by the same policy (no role, no certificate) and
// audited with what proved it.
func TestIssueFor(t *testing.T) {
	f := newIssuerFixture(t, nil)
	_, key := newEd25519(t)
	got, err := f.issuer.IssueFor(context.Background(), bot, certs.Request{PublicKey: key.PublicKey(), TTL: 5 * time.Minute, Source: loopback}, "mcp")
	if err != nil {
		t.Fatal(err)
	}
	if got.Identity.Subject != bot.Subject || got.ValidBefore.Sub(got.ValidAfter) > 6*time.Minute+certBackdateForTest {
		t.Errorf("issued %+v", got)
	}
	ev := f.audit.all()
	if len(ev) != 1 || ev[0].Type != state.EventCertIssued || ev[0].Details["via"] != "mcp" {
		t.Errorf("audit = %+v; want cert.issued via mcp", ev)
	}
	if _, err := f.issuer.IssueFor(context.Background(), nobody, certs.Request{PublicKey: key.PublicKey(), Source: loopback}, "mcp"); usererr.As(err) == nil ||
		usererr.As(err).Code != certs.CodeNoAccess {
		t.Errorf("an identity no role grants a login: %v; want no_access", err)
	}
	if _, err := f.issuer.IssueFor(context.Background(), certs.Identity{}, certs.Request{PublicKey: key.PublicKey()}, "mcp"); err == nil {
		t.Error("IssueFor issued for an empty identity")
	}
}

// certBackdateForTest is how far back issued certificates start.
const certBackdateForTest = time.Minute
