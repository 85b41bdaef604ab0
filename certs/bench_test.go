package certs_test

import (
	"context"
	"crypto/rand"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
)

// BenchmarkIssue runs the whole pipeline (with the token verifier stubbed:
// the verifier benchmarks real verification) including the validate step.
func BenchmarkIssue(b *testing.B) {
	f := newIssuerFixture(b, func(o *certs.IssuerOptions) {
		o.Now = nil
		o.RateLimit = config.RateLimit{PerIdentity: 1 << 30, PerSource: 1 << 30}
	})
	_, key := newEd25519(b)
	req := certs.Request{Token: "tok-alice", PublicKey: key.PublicKey(), Source: netip.MustParseAddr("127.0.0.1")}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.issuer.Issue(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignUserCert measures signing alone, per CA algorithm.
func BenchmarkSignUserCert(b *testing.B) {
	for _, alg := range []string{certs.AlgorithmEd25519, certs.AlgorithmECDSAP256, certs.AlgorithmRSA3072} {
		b.Run(alg, func(b *testing.B) {
			ca, err := certs.LoadCA("user", config.CA{Algorithm: alg}, b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			_, key := newEd25519(b)
			now := time.Now()
			b.ReportAllocs()
			for b.Loop() {
				c := &ssh.Certificate{
					Key:             key.PublicKey(),
					Serial:          1,
					CertType:        ssh.UserCert,
					KeyId:           "postern:corp:alice@example.com:1",
					ValidPrincipals: []string{"alice@example.com", "deploy"},
					ValidAfter:      uint64(now.Add(-time.Minute).Unix()),
					ValidBefore:     uint64(now.Add(8 * time.Hour).Unix()),
					Permissions:     ssh.Permissions{Extensions: map[string]string{"permit-pty": ""}},
				}
				if err := c.SignCert(rand.Reader, ca.Signer()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCheckUserCert measures the bastion's per-login certificate check.
func BenchmarkCheckUserCert(b *testing.B) {
	a := newTestAuthority(b)
	_, key := newEd25519(b)
	c := signWith(b, userCert(b, key.PublicKey(), nil), a.User.Signer())
	src := netip.MustParseAddr("127.0.0.1")
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.CheckUserCert(c, "deploy", src, now); err != nil {
			b.Fatal(err)
		}
	}
}
