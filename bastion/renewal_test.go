package bastion

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/state"
)

// TestRenewalExtendsConnection: a connection's end moves to the expiry of
// a newer certificate of the same identity for the same key that names the
// connection's login, and only then (another key or identity, a revoked
// serial, a certificate without the login, an earlier expiry do not).
func TestRenewalExtendsConnection(t *testing.T) {
	ctx := context.Background()
	st, err := state.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "s.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	pub, _ := ssh.NewPublicKey(priv.Public())
	fp := ssh.FingerprintSHA256(pub)
	now := time.Now().Truncate(time.Second)
	id := certs.Identity{Issuer: "ci", Subject: "bot-1", Username: "bot"}
	newConnInfo := func() *ConnInfo {
		return &ConnInfo{ID: "c1", Identity: id, Cert: &ssh.Certificate{Serial: 1, Key: pub}, Key: pub, Login: "bot",
			Remote: netip.MustParseAddrPort("127.0.0.1:5000"), Expires: now.Add(10 * time.Second), Log: slog.New(slog.DiscardHandler)}
	}
	s := &Server{opts: Options{Renewals: st}, now: time.Now, log: slog.New(slog.DiscardHandler)}
	c := &serverConn{s: s, ctx: ctx, log: s.log}
	record := func(serial uint64, key, subject string, principals []string, until time.Duration) {
		t.Helper()
		if err := st.RecordIssued(ctx, state.IssuedCert{Serial: serial, KeyFingerprint: key, Issuer: "ci", Subject: subject,
			Principals: principals, ValidBefore: now.Add(until)}); err != nil {
			t.Fatal(err)
		}
	}
	check := func(name string, want time.Time) {
		t.Helper()
		ci := newConnInfo()
		c.renewal(ci)
		if got := ci.Expiry(); !got.Equal(want) {
			t.Errorf("%s: expiry %s; want %s", name, got, want)
		}
	}
	check("no renewal", now.Add(10*time.Second))
	record(2, "SHA256:other", "bot-1", []string{"bot"}, time.Hour)
	record(3, fp, "bot-2", []string{"bot"}, time.Hour)
	check("another key or identity", now.Add(10*time.Second))
	record(4, fp, "bot-1", []string{"deploy"}, time.Hour)
	check("a renewal without the connection's login", now.Add(10*time.Second))
	record(5, fp, "bot-1", []string{"bot", "deploy"}, 5*time.Second)
	check("an earlier expiry", now.Add(10*time.Second))
	record(6, fp, "bot-1", []string{"bot", "deploy"}, 15*time.Minute)
	check("a renewal", now.Add(15*time.Minute))
	ci := newConnInfo()
	c.renewal(ci)
	if ci.serial() != 6 {
		t.Errorf("the connection rides on serial %d; want 6", ci.serial())
	}
	if err := st.Revoke(ctx, 6, "test", "ops"); err != nil {
		t.Fatal(err)
	}
	check("a revoked renewal", now.Add(10*time.Second))
}
