package certs

import (
	"crypto/ed25519"
	"crypto/rand"
	"strconv"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/internal/config"
)

// TestSignOnePath: every certificate goes through Authority.Sign, which
// refuses what must never be signed and takes its times from the injected
// clock.
func TestSignOnePath(t *testing.T) {
	a, err := LoadAuthority(config.CAs{}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	a.Now = func() time.Time { return at }
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	pub, _ := ssh.NewPublicKey(priv.Public())
	good := SignOptions{CA: a.User, Type: ssh.UserCert, KeyID: "k", Principals: []string{"alice"}, TTL: time.Hour}

	cert, err := a.Sign(pub, good)
	if err != nil {
		t.Fatal(err)
	}
	if cert.ValidAfter != uint64(at.Unix()) || cert.ValidBefore != uint64(at.Add(time.Hour).Unix()) || cert.Serial == 0 {
		t.Errorf("validity %d..%d serial %d; want from the injected clock and a serial", cert.ValidAfter, cert.ValidBefore, cert.Serial)
	}
	if err := (&ssh.CertChecker{}).CheckCert("alice", cert); err == nil {
		// The checker has no clock override: the certificate is in the past.
		t.Error("a certificate from an injected past clock checked as valid now")
	}

	withSerial := good
	withSerial.SerialInKeyID, withSerial.Backdate, withSerial.Slack = true, time.Minute, 2*time.Minute
	cert, err = a.Sign(pub, withSerial)
	if err != nil {
		t.Fatal(err)
	}
	if cert.KeyId != "k:"+strconv.FormatUint(cert.Serial, 10) {
		t.Errorf("key id %q; want the serial appended", cert.KeyId)
	}
	if cert.ValidAfter != uint64(at.Add(-time.Minute).Unix()) || cert.ValidBefore != uint64(at.Add(time.Hour+2*time.Minute).Unix()) {
		t.Errorf("backdate/slack not applied: %d..%d", cert.ValidAfter, cert.ValidBefore)
	}

	pubOnly := &CA{name: "user", trusted: []ssh.PublicKey{a.User.PublicKey()}} // as OpenCA gives it
	for _, tc := range []struct {
		name string
		pub  ssh.PublicKey
		mod  func(*SignOptions)
	}{
		{"no principals", pub, func(o *SignOptions) { o.Principals = nil }},
		{"empty principal", pub, func(o *SignOptions) { o.Principals = []string{"alice", ""} }},
		{"zero ttl", pub, func(o *SignOptions) { o.TTL = 0 }},
		{"no CA", pub, func(o *SignOptions) { o.CA = nil }},
		{"CA without private key", pub, func(o *SignOptions) { o.CA = pubOnly }},
		{"unknown type", pub, func(o *SignOptions) { o.Type = 9 }},
		{"no key", nil, func(*SignOptions) {}},
		{"certificate as key", cert, func(*SignOptions) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			tc.mod(&o)
			if c, err := a.Sign(tc.pub, o); err == nil {
				t.Errorf("signed %+v", c)
			}
		})
	}
}
