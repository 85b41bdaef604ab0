package innerhop

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/sshdtest"
)

// TestInnerHopRefusesBadHostCerts: a target trusted through host_ca must
// present a host certificate from that CA, for the target's name, valid
// now. A user certificate from the same CA, a host certificate for another
// name, and an expired one are all refused with ExitUpstreamFailed.
func TestInnerHopRefusesBadHostCerts(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{})
	_, caKey, _ := ed25519.GenerateKey(rand.Reader)
	ca, _ := ssh.NewSignerFromKey(caKey)
	caLine := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(ca.PublicKey())))
	now := time.Now()
	for _, tt := range []struct {
		name string
		mod  func(*ssh.Certificate)
	}{
		{"user certificate as host certificate", func(c *ssh.Certificate) { c.CertType = ssh.UserCert }},
		{"host certificate for another name", func(c *ssh.Certificate) { c.ValidPrincipals = []string{"web-other"} }},
		{"expired host certificate", func(c *ssh.Certificate) {
			c.ValidAfter, c.ValidBefore = uint64(now.Add(-2*time.Hour).Unix()), uint64(now.Add(-time.Hour).Unix())
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, hk, _ := ed25519.GenerateKey(rand.Reader)
			hs, _ := ssh.NewSignerFromKey(hk)
			cert := &ssh.Certificate{Key: hs.PublicKey(), CertType: ssh.HostCert, ValidPrincipals: []string{"web-ca"},
				ValidAfter: uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(time.Hour).Unix())}
			tt.mod(cert)
			if err := cert.SignCert(rand.Reader, ca); err != nil {
				t.Fatal(err)
			}
			sshd := sshdtest.Start(t, sshdtest.Options{TrustedUserCAKeys: []ssh.PublicKey{f.auth.Target.PublicKey()}, HostKey: hs, HostCert: cert})
			f.setTargets(config.Target{Name: "web-ca", Kind: config.KindSSH, Address: sshd.Addr(), HostCA: caLine})
			r := f.ssh(nil, "web-ca", "echo ok")
			if r.Code != ExitUpstreamFailed || strings.Contains(string(r.Stdout), "ok") {
				t.Errorf("exit = %d, stdout %q; want %d and no command run (stderr %q)", r.Code, r.Stdout, ExitUpstreamFailed, r.Stderr)
			}
		})
	}
}
