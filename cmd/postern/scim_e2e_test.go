package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/posternhq/postern/certs/login"
	"github.com/posternhq/postern/certs/scim"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/scimtest"
	"github.com/posternhq/postern/lock"
)

// TestSCIMDeprovisionsSAMLLogin: a SAML identity provider that also
// provisions over SCIM deactivates alice: postern login gets no
// certificate for her any more, and the certificate she holds stops
// working through the bastion; reactivated, she logs in again.
func TestSCIMDeprovisionsSAMLLogin(t *testing.T) {
	const token = "scim-saml-e2e-token-0123456789abcdefgh"
	e := newSAMLEnv(t, func(cfg *config.Config) {
		cfg.Identity.SCIM = []config.SCIM{{Name: "okta", BearerToken: token, Issuers: []config.SCIMIssuer{{Issuer: "corp-saml"}}}}
	})
	c := scimtest.New(t, e.cfg.PublicURL+scim.PathPrefix+"okta", token)
	alice := c.CreateUser("alice@example.com") // the NameID the provider sends
	c.CreateGroup("ops", alice)

	signIn := func() (*login.Profile, error) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		return login.Login(ctx, login.Options{Bastion: e.cfg.PublicURL, Dir: filepath.Join(t.TempDir(), "profile"), Err: loginTestLog{t},
			OpenBrowser: e.signInHTTP(t, "alice", "alice-pw")})
	}
	ssh := func(p *login.Profile) error {
		return exec.Command("ssh", "-F", p.SSHConfig, "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
			"-J", p.BastionHost, "root@web-1", "true").Run()
	}
	p, err := signIn()
	if err != nil {
		t.Fatalf("alice's login while provisioned: %v", err)
	}
	if err := ssh(p); err != nil {
		t.Fatalf("ssh with alice's certificate: %v", err)
	}

	c.SetActive(alice, false)
	var se *login.ServerError
	if _, err := signIn(); !asServerError(err, &se) || se.Code != lock.CodeLocked {
		t.Errorf("alice's login while deactivated: %v; want %s", err, lock.CodeLocked)
	}
	if err := ssh(p); err == nil {
		t.Error("alice's certificate still works through the bastion after her deactivation")
	}

	c.SetActive(alice, true)
	if p, err = signIn(); err != nil {
		t.Fatalf("alice's login after reactivation: %v", err)
	}
	if err := ssh(p); err != nil {
		t.Errorf("ssh after reactivation: %v", err)
	}
}
