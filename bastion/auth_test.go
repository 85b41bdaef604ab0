package bastion

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/sshdtest"
	"github.com/posternhq/postern/state"
)

// TestAuthDenials covers every way a user key is refused. Each case
// authenticates with the stock ssh client, checks that it sees only
// "Permission denied (publickey)", and finds the auth.failure audit event
// with the reason code, fingerprint and serial.
func TestAuthDenials(t *testing.T) {
	f := newBX(t, bxOptions{})
	_, foreignPriv, _ := ed25519.GenerateKey(rand.Reader)
	foreign, _ := ssh.NewSignerFromKey(foreignPriv)

	tests := []struct {
		name  string
		spec  certSpec
		login string // the fixture's login if empty
		plain bool   // present the plain key, no certificate
		goSSH bool   // use the x/crypto client: stock ssh will not present a host certificate
		pre   func(cert *ssh.Certificate)
		code  string
	}{
		{name: "wrong login", login: "nobody", code: certs.CodeCertWrongLogin},
		{name: "expired", spec: certSpec{mod: func(c *ssh.Certificate) {
			c.ValidAfter = uint64(time.Now().Add(-2 * time.Hour).Unix())
			c.ValidBefore = uint64(time.Now().Add(-time.Hour).Unix())
		}}, code: certs.CodeCertExpired},
		{name: "not yet valid", spec: certSpec{mod: func(c *ssh.Certificate) {
			c.ValidAfter = uint64(time.Now().Add(time.Hour).Unix())
		}}, code: certs.CodeCertNotYetValid},
		{name: "revoked", pre: func(c *ssh.Certificate) {
			if err := f.store.Revoke(context.Background(), c.Serial, "test", "admin@example.com"); err != nil {
				t.Fatal(err)
			}
		}, code: codeCertRevoked},
		{name: "empty principals", spec: certSpec{principals: []string{}}, code: certs.CodeCertNoPrincipals},
		{name: "foreign CA", spec: certSpec{signer: foreign}, code: certs.CodeCertUnknownCA},
		{name: "host certificate", spec: certSpec{mod: func(c *ssh.Certificate) { c.CertType = ssh.HostCert }}, goSSH: true, code: certs.CodeCertNotUser},
		{name: "host certificate from the host CA", spec: certSpec{signer: f.auth.Host.Signer(), mod: func(c *ssh.Certificate) { c.CertType = ssh.HostCert }}, goSSH: true, code: certs.CodeCertNotUser},
		{name: "no identity", spec: certSpec{mod: func(c *ssh.Certificate) { delete(c.Extensions, certs.IdentityExtension) }}, code: certs.CodeCertNoIdentity},
		{name: "force-command", spec: certSpec{mod: func(c *ssh.Certificate) { c.CriticalOptions = map[string]string{"force-command": "id"} }}, code: certs.CodeCertCriticalOption},
		{name: "source address", spec: certSpec{mod: func(c *ssh.Certificate) { c.CriticalOptions = map[string]string{"source-address": "10.0.0.0/8"} }}, code: certs.CodeCertSourceAddress},
		{name: "plain key", plain: true, code: codeCertRequired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, priv, _ := ed25519.GenerateKey(rand.Reader)
			signer, _ := ssh.NewSignerFromKey(priv)
			var cert *ssh.Certificate
			if !tt.plain {
				cert = f.newCert(signer.PublicKey(), tt.spec)
				if tt.pre != nil {
					tt.pre(cert)
				}
			}
			login := tt.login
			if login == "" {
				login = f.login
			}
			if tt.goSSH {
				cs, err := ssh.NewCertSigner(cert, signer)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.dialSigner(cs, login); err == nil {
					t.Fatal("authenticated; want refusal")
				}
			} else {
				keyFile, certFile := sshdtest.WriteClientKey(t, priv, cert)
				cfg := f.sshConfig(keyFile, certFile)
				res := bxRun(t, "", "ssh", "-F", cfg, "-p", strconv.Itoa(f.port), login+"@localhost", "true")
				if res.code != 255 || !strings.Contains(res.stderr, "Permission denied (publickey)") {
					t.Fatalf("ssh: code %d, stderr %q; want 255 and Permission denied (publickey)", res.code, res.stderr)
				}
				if strings.Contains(res.stderr, "postern") || strings.Contains(res.stderr, tt.code) {
					t.Errorf("stderr %q reveals the reason", res.stderr)
				}
			}
			fp := ssh.FingerprintSHA256(signer.PublicKey())
			ev := f.waitEvent(state.EventAuthFailure, hasDetail("fingerprint", fp))
			if got := detail(ev, "reason"); got != tt.code {
				t.Errorf("reason = %q; want %q", got, tt.code)
			}
			if ev.Source != "127.0.0.1" || detail(ev, "login") != login {
				t.Errorf("source %q login %q; want 127.0.0.1 and %q", ev.Source, detail(ev, "login"), login)
			}
			if cert != nil && detail(ev, "serial") != strconv.FormatUint(cert.Serial, 10) {
				t.Errorf("serial = %q; want %d", detail(ev, "serial"), cert.Serial)
			}
			if got := counterValue(t, f.srv.metrics.authFailures.WithLabelValues(tt.code)); got < 1 {
				t.Errorf("postern_auth_failures_total{reason=%q} = %v; want >= 1", tt.code, got)
			}
		})
	}
	if n := len(f.events(state.EventAuthSuccess)); n != 0 {
		t.Errorf("%d auth.success events; want 0", n)
	}
}

// errRevocations is a revocation list that cannot answer.
type errRevocations struct{}

func (errRevocations) IsRevoked(context.Context, uint64) (bool, error) {
	return false, os.ErrDeadlineExceeded
}

func TestAuthFailsClosedWithoutRevocationList(t *testing.T) {
	f := newBX(t, bxOptions{mod: func(o *Options) { o.Revocations = errRevocations{} }})
	if _, _, err := f.dial(certSpec{}, f.login); err == nil {
		t.Fatal("authenticated although revocations could not be checked")
	}
	f.waitEvent(state.EventAuthFailure, hasDetail("reason", codeRevocationUnavailable))
}

func TestAuthSuccessAudit(t *testing.T) {
	f := newBX(t, bxOptions{})
	c, cert, err := f.dial(certSpec{}, f.login)
	if err != nil {
		t.Fatal(err)
	}
	ev := f.waitEvent(state.EventAuthSuccess, hasDetail("serial", strconv.FormatUint(cert.Serial, 10)))
	if ev.Actor != alice.Username || detail(ev, "issuer") != "corp" || detail(ev, "fingerprint") != ssh.FingerprintSHA256(cert.Key) {
		t.Errorf("auth.success = %+v", ev)
	}
	// Keepalives are answered.
	ok, _, err := c.SendRequest("keepalive@openssh.com", true, nil)
	if err != nil || !ok {
		t.Errorf("keepalive = %v, %v; want true", ok, err)
	}
	// Remote forwarding is refused.
	if _, err := c.Listen("tcp", "127.0.0.1:0"); err == nil {
		t.Errorf("tcpip-forward accepted")
	}
	f.waitEvent(state.EventChannelDeny, hasDetail("type", "tcpip-forward"))
	// Channel types other than session and direct-tcpip are refused.
	for _, typ := range []string{"x11", "auth-agent@openssh.com", "direct-streamlocal@openssh.com", "forwarded-tcpip", "bogus"} {
		if _, _, err := c.OpenChannel(typ, nil); err == nil {
			t.Errorf("channel %s opened", typ)
		}
	}
	f.waitEvent(state.EventChannelDeny, hasDetail("channel", "x11"))
	if got := counterValue(t, f.srv.metrics.channels.WithLabelValues("other", "denied")); got != 1 {
		t.Errorf("channels{type=other,outcome=denied} = %v; want 1 (client-chosen types share one label)", got)
	}
}

// TestVerifiedCallbackOnly: a client that only queries whether a key would
// be accepted, without proving it holds the key, must not authenticate or
// leave an identity behind (CVE-2024-45337). x/crypto's client always signs,
// so the test checks the property indirectly: offering a certificate for a
// key whose private half the client lacks fails and records nothing.
func TestUnprovenKeyDoesNotAuthenticate(t *testing.T) {
	f := newBX(t, bxOptions{})
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	realSigner, _ := ssh.NewSignerFromKey(priv)
	cert := f.newCert(realSigner.PublicKey(), certSpec{})
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	other, _ := ssh.NewSignerFromKey(otherPriv)
	lying := &lyingSigner{pub: cert, signer: other}
	if _, err := f.dialSigner(lying, f.login); err == nil {
		t.Fatal("authenticated with a certificate for a key the client does not hold")
	}
	if n := len(f.events(state.EventAuthSuccess)); n != 0 {
		t.Errorf("%d auth.success events; want 0", n)
	}
}

// lyingSigner presents pub but signs with another key.
type lyingSigner struct {
	pub    ssh.PublicKey
	signer ssh.Signer
}

func (l *lyingSigner) PublicKey() ssh.PublicKey { return l.pub }

func (l *lyingSigner) Sign(r io.Reader, data []byte) (*ssh.Signature, error) {
	return l.signer.Sign(r, data)
}

// TestAuditChainOfBastionEvents: the events the bastion appends form the
// state store's hash chain; editing one is found by Verify, naming its seq.
func TestAuditChainOfBastionEvents(t *testing.T) {
	f := newBX(t, bxOptions{})
	c, _, err := f.dial(certSpec{}, f.login)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openDirect(c, "web-9", 22); err == nil {
		t.Fatal("channel to an unknown target opened")
	}
	ctx := context.Background()
	deny := f.waitEvent(state.EventChannelDeny, hasDetail("dest", "web-9:22"))
	rep, err := f.store.Verify(ctx)
	if err != nil || !rep.OK() {
		t.Fatalf("Verify before tampering = %+v, %v", rep, err)
	}
	success := f.events(state.EventAuthSuccess)[0]
	db, err := sql.Open("sqlite", filepath.Join(f.dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE audit_events SET actor = 'mallory' WHERE seq = ?`, success.Seq); err != nil {
		t.Fatal(err)
	}
	rep, err = f.store.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.FirstBroken != success.Seq {
		t.Errorf("FirstBroken = %d (%s); want %d, the edited auth.success", rep.FirstBroken, rep.Reason, success.Seq)
	}
	if deny.Seq <= success.Seq {
		t.Errorf("channel.deny seq %d not after auth.success seq %d", deny.Seq, success.Seq)
	}
}
