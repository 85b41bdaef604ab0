package certs_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/usererr"
)

// newTestAuthority generates the three CAs in a fresh data directory.
func newTestAuthority(t testing.TB) *certs.Authority {
	t.Helper()
	a, err := certs.LoadAuthority(config.CAs{}, t.TempDir())
	if err != nil {
		t.Fatalf("LoadAuthority: %v", err)
	}
	return a
}

func newEd25519(t testing.TB) (ed25519.PrivateKey, ssh.Signer) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return priv, s
}

func pemKey(t testing.TB, key any) string {
	t.Helper()
	block, err := ssh.MarshalPrivateKey(key, "test")
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(block))
}

func TestLoadCAGeneratesWithTightPermissions(t *testing.T) {
	dir := t.TempDir()
	ca, err := certs.LoadCA("user", config.CA{}, dir)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	if got, want := ca.PublicKey().Type(), ssh.KeyAlgoED25519; got != want {
		t.Errorf("key type = %s; want %s", got, want)
	}
	checkMode := func(path string, want os.FileMode) {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode = %04o; want %04o", filepath.Base(path), got, want)
		}
	}
	checkMode(filepath.Join(dir, "ca"), 0o700)
	checkMode(filepath.Join(dir, "ca", "user_ca"), 0o600)
	checkMode(filepath.Join(dir, "ca", "user_ca.pub"), 0o644)

	pubLine, err := os.ReadFile(filepath.Join(dir, "ca", "user_ca.pub"))
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(pubLine)
	if err != nil {
		t.Fatalf("parse .pub: %v", err)
	}
	if !bytes.Equal(pub.Marshal(), ca.PublicKey().Marshal()) {
		t.Error(".pub does not match the signing key")
	}
	pemBytes, err := os.ReadFile(filepath.Join(dir, "ca", "user_ca"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(pemBytes, []byte("BEGIN OPENSSH PRIVATE KEY")) {
		t.Errorf("key file is not OpenSSH PEM:\n%s", pemBytes[:40])
	}

	// Reload: the same key comes back, nothing is regenerated.
	again, err := certs.LoadCA("user", config.CA{}, dir)
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	if !bytes.Equal(again.PublicKey().Marshal(), ca.PublicKey().Marshal()) {
		t.Error("reload produced a different key")
	}
	opened, err := certs.OpenCA("user", config.CA{}, dir)
	if err != nil {
		t.Fatalf("OpenCA: %v", err)
	}
	if !opened.IsTrusted(ca.PublicKey()) || opened.Signer() == nil {
		t.Error("OpenCA did not load the generated key")
	}
}

func TestLoadCAAlgorithms(t *testing.T) {
	for _, tc := range []struct {
		alg, want string
	}{
		{"", ssh.KeyAlgoED25519},
		{"ed25519", ssh.KeyAlgoED25519},
		{"ecdsa-p256", ssh.KeyAlgoECDSA256},
		{"rsa-3072", ssh.KeyAlgoRSA},
	} {
		t.Run(tc.alg, func(t *testing.T) {
			ca, err := certs.LoadCA("host", config.CA{Algorithm: tc.alg}, t.TempDir())
			if err != nil {
				t.Fatalf("LoadCA: %v", err)
			}
			if got := ca.PublicKey().Type(); got != tc.want {
				t.Errorf("type = %s; want %s", got, tc.want)
			}
			// The CA can sign, and what it signs verifies.
			a := &certs.Authority{User: ca, Host: ca, Target: ca}
			_, s := newEd25519(t)
			c, err := a.SignHost(s.PublicKey(), []string{"web-1"}, time.Hour)
			if err != nil {
				t.Fatalf("SignHost: %v", err)
			}
			if c.Signature.Format == ssh.KeyAlgoRSA {
				t.Error("RSA CA signed with SHA-1")
			}
		})
	}
	if _, err := certs.LoadCA("host", config.CA{Algorithm: "dsa"}, t.TempDir()); err == nil {
		t.Error("unknown algorithm accepted")
	}
}

func TestLoadCARefusesBadKeys(t *testing.T) {
	dir := t.TempDir()
	priv, _ := newEd25519(t)
	loose := filepath.Join(dir, "loose")
	if err := os.WriteFile(loose, []byte(pemKey(t, priv)), 0o640); err != nil {
		t.Fatal(err)
	}
	_, err := certs.LoadCA("user", config.CA{KeyFile: loose}, dir)
	if err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("group-readable key: err = %v; want a chmod 600 hint", err)
	}

	// A generated default key whose mode was loosened is refused on reload.
	gen := t.TempDir()
	if _, err := certs.LoadCA("target", config.CA{}, gen); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(gen, "ca", "target_ca"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := certs.LoadCA("target", config.CA{}, gen); err == nil {
		t.Error("world-readable generated key accepted on reload")
	}

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := certs.LoadCA("user", config.CA{Key: pemKey(t, rsaKey)}, dir); err == nil {
		t.Error("RSA-2048 CA key accepted")
	}
	if _, err := certs.LoadCA("user", config.CA{Key: "not a key"}, dir); err == nil {
		t.Error("garbage inline key accepted")
	}
	if _, err := certs.LoadCA("user", config.CA{Trusted: []string{"ssh-ed25519 garbage"}}, dir); err == nil {
		t.Error("garbage trusted key accepted")
	}
	if _, err := certs.OpenCA("user", config.CA{}, t.TempDir()); err == nil {
		t.Error("OpenCA generated a key")
	}
}

func TestLoadCAInlineAndFile(t *testing.T) {
	dir := t.TempDir()
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	inline, err := certs.LoadCA("user", config.CA{Key: pemKey(t, ecKey), KeyFile: "/nonexistent"}, dir)
	if err != nil {
		t.Fatalf("inline key: %v", err)
	}
	if got := inline.PublicKey().Type(); got != ssh.KeyAlgoECDSA256 {
		t.Errorf("inline key type = %s; want %s", got, ssh.KeyAlgoECDSA256)
	}
	priv, signer := newEd25519(t)
	file := filepath.Join(dir, "custom_ca")
	if err := os.WriteFile(file, []byte(pemKey(t, priv)), 0o600); err != nil {
		t.Fatal(err)
	}
	fromFile, err := certs.LoadCA("user", config.CA{KeyFile: file}, dir)
	if err != nil {
		t.Fatalf("key_file: %v", err)
	}
	if !bytes.Equal(fromFile.PublicKey().Marshal(), signer.PublicKey().Marshal()) {
		t.Error("key_file loaded a different key")
	}
	if _, err := os.Stat(filepath.Join(dir, "ca")); !os.IsNotExist(err) {
		t.Error("a configured key still generated a default one")
	}
}

func TestAuthorizedKeysAndHostCALine(t *testing.T) {
	_, old := newEd25519(t)
	oldLine := string(ssh.MarshalAuthorizedKey(old.PublicKey()))
	ca, err := certs.LoadCA("host", config.CA{Trusted: []string{oldLine}}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	lines := ca.AuthorizedKeys()
	if len(lines) != 2 {
		t.Fatalf("AuthorizedKeys = %q; want 2 lines", lines)
	}
	for i, want := range []ssh.PublicKey{ca.PublicKey(), old.PublicKey()} {
		got, _, _, _, err := ssh.ParseAuthorizedKey([]byte(lines[i]))
		if err != nil || !bytes.Equal(got.Marshal(), want.Marshal()) {
			t.Errorf("line %d = %q; want key %s", i, lines[i], ssh.FingerprintSHA256(want))
		}
	}
	a := &certs.Authority{Host: ca}
	hl := strings.Split(a.HostCALine(), "\n")
	if len(hl) != 2 {
		t.Fatalf("HostCALine = %q; want 2 lines", a.HostCALine())
	}
	for _, l := range hl {
		if !strings.HasPrefix(l, "@cert-authority * ssh-ed25519 ") {
			t.Errorf("HostCALine line %q lacks the @cert-authority marker", l)
		}
	}
}

// userCert is a well-formed postern user certificate to be spoiled by the
// cases of TestCheckUserCert.
func userCert(t testing.TB, pub ssh.PublicKey, mod func(*ssh.Certificate)) *ssh.Certificate {
	t.Helper()
	now := time.Now()
	c := &ssh.Certificate{
		Key:             pub,
		Serial:          42,
		CertType:        ssh.UserCert,
		KeyId:           "postern:corp:alice@example.com:42",
		ValidPrincipals: []string{"alice@example.com", "deploy"},
		ValidAfter:      uint64(now.Add(-time.Minute).Unix()),
		ValidBefore:     uint64(now.Add(time.Hour).Unix()),
		Permissions: ssh.Permissions{Extensions: map[string]string{
			certs.IdentityExtension: certs.EncodeIdentity(certs.Identity{
				Issuer: "corp", Subject: "u1", Username: "alice@example.com", Kind: certs.KindHuman}),
		}},
	}
	if mod != nil {
		mod(c)
	}
	return c
}

func signWith(t testing.TB, c *ssh.Certificate, s ssh.Signer) *ssh.Certificate {
	t.Helper()
	if err := c.SignCert(rand.Reader, s); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCheckUserCert(t *testing.T) {
	a := newTestAuthority(t)
	_, userKey := newEd25519(t)
	_, foreign := newEd25519(t)
	src := netip.MustParseAddr("127.0.0.1")
	now := time.Now()

	tests := []struct {
		name  string
		cert  func() *ssh.Certificate
		login string
		src   netip.Addr
		want  string // error code; "" means accepted
	}{
		{"valid", func() *ssh.Certificate {
			return signWith(t, userCert(t, userKey.PublicKey(), nil), a.User.Signer())
		}, "deploy", src, ""},
		{"valid username login", func() *ssh.Certificate {
			return signWith(t, userCert(t, userKey.PublicKey(), nil), a.User.Signer())
		}, "alice@example.com", src, ""},
		{"source-address matches", func() *ssh.Certificate {
			return signWith(t, userCert(t, userKey.PublicKey(), func(c *ssh.Certificate) {
				c.CriticalOptions = map[string]string{"source-address": "10.0.0.0/8,127.0.0.1"}
			}), a.User.Signer())
		}, "deploy", netip.MustParseAddr("::ffff:127.0.0.1"), ""},
		{"foreign CA", func() *ssh.Certificate {
			return signWith(t, userCert(t, userKey.PublicKey(), nil), foreign)
		}, "deploy", src, certs.CodeCertUnknownCA},
		{"host CA key", func() *ssh.Certificate {
			return signWith(t, userCert(t, userKey.PublicKey(), nil), a.Host.Signer())
		}, "deploy", src, certs.CodeCertUnknownCA},
		{"target CA key", func() *ssh.Certificate {
			return signWith(t, userCert(t, userKey.PublicKey(), nil), a.Target.Signer())
		}, "deploy", src, certs.CodeCertUnknownCA},
		{"forged signature", func() *ssh.Certificate {
			c := signWith(t, userCert(t, userKey.PublicKey(), nil), a.User.Signer())
			c.ValidPrincipals = append(c.ValidPrincipals, "root")
			return c
		}, "root", src, certs.CodeCertUnknownCA},
		{"host cert as user cert", func() *ssh.Certificate {
			return signWith(t, userCert(t, userKey.PublicKey(), func(c *ssh.Certificate) { c.CertType = ssh.HostCert }), a.User.Signer())
		}, "deploy", src, certs.CodeCertNotUser},
		{"expired", func() *ssh.Certificate {
			return signWith(t, userCert(t, userKey.PublicKey(), func(c *ssh.Certificate) {
				c.ValidAfter = uint64(now.Add(-2 * time.Hour).Unix())
				c.ValidBefore = uint64(now.Add(-time.Hour).Unix())
			}), a.User.Signer())
		}, "deploy", src, certs.CodeCertExpired},
		{"expires exactly now", func() *ssh.Certificate {
			return signWith(t, userCert(t, userKey.PublicKey(), func(c *ssh.Certificate) {
				c.ValidBefore = uint64(now.Unix())
			}), a.User.Signer())
		}, "deploy", src, certs.CodeCertExpired},
		{"not yet valid", func() *ssh.Certificate {
			return signWith(t, userCert(t, userKey.PublicKey(), func(c *ssh.Certificate) {
				c.ValidAfter = uint64(now.Add(time.Minute).Unix())
			}), a.User.Signer())
		}, "deploy", src, certs.CodeCertNotYetValid},
		{"empty principals", func() *ssh.Certificate {
			// A validly signed certificate that names no principal, as a
			// foreign or careless CA could produce.
			c := userCert(t, userKey.PublicKey(), func(c *ssh.Certificate) { c.ValidPrincipals = nil })
			return signEmptyPrincipals(t, c, a.User.Signer())
		}, "deploy", src, certs.CodeCertNoPrincipals},
		{"wrong login", func() *ssh.Certificate {
			return signWith(t, userCert(t, userKey.PublicKey(), nil), a.User.Signer())
		}, "root", src, certs.CodeCertWrongLogin},
		{"empty login", func() *ssh.Certificate {
			return signWith(t, userCert(t, userKey.PublicKey(), nil), a.User.Signer())
		}, "", src, certs.CodeCertWrongLogin},
		{"unknown critical option", func() *ssh.Certificate {
			return signWith(t, userCert(t, userKey.PublicKey(), func(c *ssh.Certificate) {
				c.CriticalOptions = map[string]string{"no-such-option@example.com": ""}
			}), a.User.Signer())
		}, "deploy", src, certs.CodeCertCriticalOption},
		{"force-command", func() *ssh.Certificate {
			return signWith(t, userCert(t, userKey.PublicKey(), func(c *ssh.Certificate) {
				c.CriticalOptions = map[string]string{"force-command": "/bin/true"}
			}), a.User.Signer())
		}, "deploy", src, certs.CodeCertCriticalOption},
		{"source-address mismatch", func() *ssh.Certificate {
			return signWith(t, userCert(t, userKey.PublicKey(), func(c *ssh.Certificate) {
				c.CriticalOptions = map[string]string{"source-address": "10.0.0.0/8"}
			}), a.User.Signer())
		}, "deploy", src, certs.CodeCertSourceAddress},
		{"source-address unknown source", func() *ssh.Certificate {
			return signWith(t, userCert(t, userKey.PublicKey(), func(c *ssh.Certificate) {
				c.CriticalOptions = map[string]string{"source-address": "127.0.0.1"}
			}), a.User.Signer())
		}, "deploy", netip.Addr{}, certs.CodeCertSourceAddress},
		{"source-address garbage", func() *ssh.Certificate {
			return signWith(t, userCert(t, userKey.PublicKey(), func(c *ssh.Certificate) {
				c.CriticalOptions = map[string]string{"source-address": "not-an-address"}
			}), a.User.Signer())
		}, "deploy", src, certs.CodeCertSourceAddress},
		{"no identity extension", func() *ssh.Certificate {
			return signWith(t, userCert(t, userKey.PublicKey(), func(c *ssh.Certificate) {
				c.Extensions = map[string]string{"permit-pty": ""}
			}), a.User.Signer())
		}, "deploy", src, certs.CodeCertNoIdentity},
		{"garbled identity extension", func() *ssh.Certificate {
			return signWith(t, userCert(t, userKey.PublicKey(), func(c *ssh.Certificate) {
				c.Extensions = map[string]string{certs.IdentityExtension: "{not json"}
			}), a.User.Signer())
		}, "deploy", src, certs.CodeCertNoIdentity},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := a.CheckUserCert(tc.cert(), tc.login, tc.src, now)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("got %v; want accepted", err)
				}
				if id.Username != "alice@example.com" || id.Issuer != "corp" {
					t.Errorf("identity = %+v; want alice@example.com from corp", id)
				}
				return
			}
			e := usererr.As(err)
			if e == nil {
				t.Fatalf("got %v; want *usererr.Error %s", err, tc.want)
			}
			if e.Code != tc.want {
				t.Errorf("code = %s (%v); want %s", e.Code, err, tc.want)
			}
			if e.Msg == "" {
				t.Error("empty user message")
			}
		})
	}
}

// signEmptyPrincipals signs a certificate with no principals, which
// SignCert refuses to do: it signs with one placeholder principal, then
// re-signs the bytes a certificate without principals would have. This is
// what a foreign or buggy CA could hand out.
func signEmptyPrincipals(t testing.TB, c *ssh.Certificate, s ssh.Signer) *ssh.Certificate {
	t.Helper()
	c.ValidPrincipals = []string{"placeholder"}
	signWith(t, c, s)
	c.ValidPrincipals = nil
	c2 := *c
	c2.Signature = nil
	out := c2.Marshal()
	sig, err := s.Sign(rand.Reader, out[:len(out)-4])
	if err != nil {
		t.Fatal(err)
	}
	c.Signature = sig
	return c
}

func TestCheckUserCertRotation(t *testing.T) {
	oldPriv, oldSigner := newEd25519(t)
	dir := t.TempDir()
	// Before: the old key signs.
	before, err := certs.LoadAuthority(config.CAs{User: config.CA{Key: pemKey(t, oldPriv)}}, dir)
	if err != nil {
		t.Fatal(err)
	}
	_, userKey := newEd25519(t)
	oldCert := signWith(t, userCert(t, userKey.PublicKey(), nil), before.User.Signer())

	// After: a new signing key, the old one still trusted.
	newPriv, _ := newEd25519(t)
	after, err := certs.LoadAuthority(config.CAs{User: config.CA{
		Key:     pemKey(t, newPriv),
		Trusted: []string{string(ssh.MarshalAuthorizedKey(oldSigner.PublicKey()))},
	}}, dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(after.User.Trusted()); got != 2 {
		t.Fatalf("trusted keys = %d; want 2", got)
	}
	if _, err := after.CheckUserCert(oldCert, "deploy", netip.MustParseAddr("127.0.0.1"), time.Now()); err != nil {
		t.Errorf("cert from the old trusted key: %v; want accepted", err)
	}
	newCert := signWith(t, userCert(t, userKey.PublicKey(), nil), after.User.Signer())
	if _, err := after.CheckUserCert(newCert, "deploy", netip.MustParseAddr("127.0.0.1"), time.Now()); err != nil {
		t.Errorf("cert from the new key: %v; want accepted", err)
	}
	// Once the old key is dropped, its certificates are refused.
	dropped, err := certs.LoadAuthority(config.CAs{User: config.CA{Key: pemKey(t, newPriv)}}, dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = dropped.CheckUserCert(oldCert, "deploy", netip.MustParseAddr("127.0.0.1"), time.Now())
	if e := usererr.As(err); e == nil || e.Code != certs.CodeCertUnknownCA {
		t.Errorf("cert from a dropped key: %v; want %s", err, certs.CodeCertUnknownCA)
	}
}

func TestSignHostAndTarget(t *testing.T) {
	a := newTestAuthority(t)
	_, key := newEd25519(t)
	before := time.Now()

	hc, err := a.SignHost(key.PublicKey(), []string{"web-1", "web-1.example.com"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if hc.CertType != ssh.HostCert || !a.Host.IsTrusted(hc.SignatureKey) {
		t.Errorf("host cert type %d signed by %s; want host cert from the host CA", hc.CertType, ssh.FingerprintSHA256(hc.SignatureKey))
	}
	checker := ssh.CertChecker{IsHostAuthority: func(k ssh.PublicKey, _ string) bool { return a.Host.IsTrusted(k) }}
	if err := checker.CheckCert("web-1.example.com", hc); err != nil {
		t.Errorf("host cert does not check: %v", err)
	}
	if _, err := a.SignHost(key.PublicKey(), nil, time.Hour); err == nil {
		t.Error("host cert without principals signed")
	}

	tc, err := a.SignTarget(key.PublicKey(), "deploy", "postern:corp:alice@example.com:7", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if tc.CertType != ssh.UserCert || !a.Target.IsTrusted(tc.SignatureKey) {
		t.Error("target cert is not a user cert from the target CA")
	}
	if got := tc.ValidPrincipals; len(got) != 1 || got[0] != "deploy" {
		t.Errorf("principals = %q; want [deploy]", got)
	}
	if tc.KeyId != "postern:corp:alice@example.com:7" {
		t.Errorf("key id = %q", tc.KeyId)
	}
	if after := time.Unix(int64(tc.ValidAfter), 0); after.After(before.Add(-5*time.Minute+10*time.Second)) || after.Before(before.Add(-5*time.Minute-time.Minute)) {
		t.Errorf("valid_after = %v; want the clock-skew allowance before %v", after, before)
	}
	if vb := time.Unix(int64(tc.ValidBefore), 0); vb.Sub(before) > time.Minute+5*time.Minute+10*time.Second {
		t.Errorf("valid_before = %v; want a minute and the clock-skew allowance after %v", vb, before)
	}
	want := map[string]string{"permit-pty": "", "permit-port-forwarding": ""}
	if len(tc.Extensions) != len(want) {
		t.Errorf("extensions = %v; want %v", tc.Extensions, want)
	}
	for k := range want {
		if _, ok := tc.Extensions[k]; !ok {
			t.Errorf("extension %s missing", k)
		}
	}
	if len(tc.CriticalOptions) != 0 {
		t.Errorf("critical options = %v; want none", tc.CriticalOptions)
	}
	if tc.Serial == 0 {
		t.Error("serial 0")
	}
	// A target certificate is never accepted as a user certificate.
	if _, err := a.CheckUserCert(tc, "deploy", netip.MustParseAddr("127.0.0.1"), time.Now()); err == nil {
		t.Error("target CA certificate accepted by CheckUserCert")
	}
}

func TestLoadCAAlgorithmMismatch(t *testing.T) {
	dir := t.TempDir()
	if _, err := certs.LoadCA("user", config.CA{Algorithm: "ecdsa-p256"}, dir); err != nil {
		t.Fatal(err)
	}
	// Dropping the setting keeps the existing key.
	if ca, err := certs.LoadCA("user", config.CA{}, dir); err != nil || ca.PublicKey().Type() != ssh.KeyAlgoECDSA256 {
		t.Errorf("reload without algorithm: %v", err)
	}
	// Asking for another algorithm over an existing key is an error, not a
	// silent regeneration or a silent mismatch.
	_, err := certs.LoadCA("user", config.CA{Algorithm: "ed25519"}, dir)
	if err == nil || !strings.Contains(err.Error(), "ca.user.algorithm") {
		t.Errorf("algorithm mismatch: %v; want an error naming ca.user.algorithm", err)
	}
}

func TestSignRefusesBadInput(t *testing.T) {
	a := newTestAuthority(t)
	_, key := newEd25519(t)
	if _, err := a.SignHost(key.PublicKey(), []string{"web-1"}, 0); err == nil {
		t.Error("SignHost with zero lifetime succeeded")
	}
	if _, err := a.SignHost(key.PublicKey(), []string{""}, time.Hour); err == nil {
		t.Error("SignHost with an empty principal succeeded")
	}
	if _, err := a.SignTarget(key.PublicKey(), "", "id", time.Minute); err == nil {
		t.Error("SignTarget with no login succeeded")
	}
	if _, err := a.SignTarget(key.PublicKey(), "root", "id", -time.Minute); err == nil {
		t.Error("SignTarget with negative lifetime succeeded")
	}
}

func TestLoadCAConcurrentFirstStart(t *testing.T) {
	dir := t.TempDir()
	const n = 8
	keys := make(chan ssh.PublicKey, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			ca, err := certs.LoadCA("user", config.CA{}, dir)
			if err != nil {
				errs <- err
				return
			}
			keys <- ca.PublicKey()
		})
	}
	wg.Wait()
	close(keys)
	close(errs)
	for err := range errs {
		t.Errorf("LoadCA: %v", err)
	}
	var first ssh.PublicKey
	for k := range keys {
		if first == nil {
			first = k
		} else if !bytes.Equal(k.Marshal(), first.Marshal()) {
			t.Error("concurrent first starts generated different keys")
		}
	}
	entries, err := os.ReadDir(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != "user_ca,user_ca.pub" {
		t.Errorf("ca dir holds %q; want only user_ca and user_ca.pub", names)
	}
}
