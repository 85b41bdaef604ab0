package certs

import (
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/internal/config"
)

// TestTargetCertSurvivesClockSkew: a target whose clock runs up to two
// minutes (and more: up to the skew allowance) behind or ahead of postern's
// still accepts the short-lived certificate postern presents, checked as
// sshd does (valid_after <= now < valid_before) with the target's clock.
// The bastion asks for two-minute certificates (targetCertTTL).
func TestTargetCertSurvivesClockSkew(t *testing.T) {
	a, err := LoadAuthority(config.CAs{}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	key, _ := ssh.NewSignerFromKey(priv)
	cert, err := a.SignTarget(key.PublicKey(), "deploy", "postern:test", 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, skew := range []time.Duration{-4 * time.Minute, -2 * time.Minute, -30 * time.Second, 0, 30 * time.Second, 2 * time.Minute, 4 * time.Minute} {
		t.Run(skew.String(), func(t *testing.T) {
			// A few seconds pass between signing and the target's check.
			targetNow := time.Now().Add(skew + 5*time.Second)
			checker := &ssh.CertChecker{
				IsUserAuthority: func(k ssh.PublicKey) bool { return a.Target.IsTrusted(k) },
				Clock:           func() time.Time { return targetNow },
			}
			if err := checker.CheckCert("deploy", cert); err != nil {
				t.Errorf("a target %v off refuses the certificate: %v", skew, err)
			}
		})
	}
	// The allowance is bounded: a target far off still refuses it.
	checker := &ssh.CertChecker{
		IsUserAuthority: func(k ssh.PublicKey) bool { return a.Target.IsTrusted(k) },
		Clock:           func() time.Time { return time.Now().Add(30 * time.Minute) },
	}
	if err := checker.CheckCert("deploy", cert); err == nil {
		t.Error("a target 30 minutes ahead accepts the certificate")
	}
}

// TestVerifyToleratesTwoMinutesIdPSkew: an identity provider whose clock is
// two minutes ahead (not-before in postern's future) or behind (a token that
// just expired by postern's clock) still gets its fresh tokens accepted.
func TestVerifyToleratesTwoMinutesIdPSkew(t *testing.T) {
	f := newVerifyFixture(t, humanIssuer)
	now := f.clock.Now()
	for name, claims := range map[string]map[string]any{
		"IdP 2m ahead":  {"nbf": now.Add(2 * time.Minute).Unix(), "iat": now.Add(2 * time.Minute).Unix()},
		"IdP 2m behind": {"exp": now.Add(-110 * time.Second).Unix()},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := f.v.Verify(t.Context(), f.srv.Mint(t, claims)); err != nil {
				t.Errorf("Verify: %v; want accepted", err)
			}
		})
	}
}
