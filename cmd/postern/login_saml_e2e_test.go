package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/certs/login"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/samltest"
	"github.com/posternhq/postern/internal/sshdtest"
	"github.com/posternhq/postern/internal/testutil"
)

// samlEnv is a whole postern whose only identity provider is a SAML one
// (samltest's samlidp, in this process), with an sshd target web-1 that the
// role for the provider's group ops may reach, and alice at the provider.
type samlEnv struct {
	cfg    *config.Config
	idp    *samltest.IdP
	target *sshdtest.Server
}

// newSAMLEnv starts the environment; more changes cfg before it starts.
func newSAMLEnv(t *testing.T, more ...func(cfg *config.Config)) *samlEnv {
	t.Helper()
	testutil.Need(t, "ssh")
	e := &samlEnv{idp: samltest.Start(t)}
	e.idp.AddUser(t, "alice", "alice-pw", "alice@example.com", "ops", "auditors")
	e.idp.AddUser(t, "bob", "bob-pw", "bob@example.com", "sales")
	cfg := &config.Config{Listen: config.Listen{SSH: testutil.FreeAddr(t), HTTP: testutil.FreeAddr(t)}, DataDir: t.TempDir()}
	cfg.Identity.SAML.Providers = []config.SAMLProvider{{Name: "corp-saml", DisplayName: "Corp SSO", MetadataURL: e.idp.MetadataURL(),
		NameIDFormat: "email", GroupsAttribute: "eduPersonAffiliation"}}
	cfg.SetDefaults()
	auth, err := certs.LoadAuthority(cfg.CA, cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	e.target = sshdtest.Start(t, sshdtest.Options{TrustedUserCAKeys: auth.Target.Trusted()})
	cfg.Targets = []config.Target{{Name: "web-1", Kind: config.KindSSH, Address: e.target.Addr(),
		HostKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(e.target.HostKey())))}}
	cfg.Roles = []config.Role{{Name: "ops", Match: config.RoleMatch{Issuers: []string{"corp-saml"}, Groups: []string{"ops"}},
		Targets: []config.TargetSelector{{Name: "web-*"}}, Logins: []string{"root"}, Forwarding: config.Forwarding{Local: true},
		Record: "required", Permissions: []string{"auditor"}}}
	for _, f := range more {
		f(cfg)
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	serveForTest(t, cfg, slog.LevelInfo)
	e.idp.AddServiceProvider(t, "postern", cfg.PublicURL+"/v1/saml/corp-saml/metadata", true)
	e.cfg = cfg
	return e
}

// signInHTTP plays the browser without one: it signs in at the provider,
// posts its answer to postern and follows postern's redirect to the
// loopback callback.
func (e *samlEnv) signInHTTP(t *testing.T, user, password string) func(string) error {
	return func(u string) error {
		go func() { // postern login waits on its callback: sign in beside it
			a := e.idp.Login(t, nil, u, user, password)
			resp, err := http.PostForm(a.ACS, url.Values{"SAMLResponse": {a.SAMLResponse}, "RelayState": {a.RelayState}})
			if err != nil {
				t.Errorf("post the answer: %v", err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Logf("after the answer: %s %s", resp.Status, b)
		}()
		return nil
	}
}

// chromiumRunner returns a function that runs players/web/e2e/saml.mjs in
// chromium, or skips the test (from the test's goroutine, before any
// login starts) when node, chromium or playwright-core is genuinely
// absent.
func chromiumRunner(t *testing.T) func(start, user, password, want string) error {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		testutil.Missing(t, "node is not installed (apt-get install nodejs npm)")
	}
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		testutil.Missing(t, "chromium is not installed at %s (apt-get install chromium)", chromium)
	}
	webDir := filepath.Join(testutil.RepoRoot(t), "players", "web")
	if _, err := os.Stat(filepath.Join(webDir, "node_modules", "playwright-core")); err != nil {
		testutil.Missing(t, "playwright-core is not installed (npm ci in players/web)")
	}
	return func(start, user, password, want string) error {
		return browser(t, node, chromium, webDir, start, user, password, want)
	}
}

// browser runs players/web/e2e/saml.mjs in chromium.
func browser(t *testing.T, node, chromium, webDir, start, user, password, want string) error {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(webDir, "e2e", "saml.mjs"), start, user, password, want,
		filepath.Join(dir, "saml.png"), filepath.Join(dir, "chromium-profile"))
	cmd.Env = append(os.Environ(), "CHROMIUM="+chromium)
	out, err := cmd.CombinedOutput()
	t.Logf("saml.mjs:\n%s", out)
	return err
}

// TestLoginSAMLEndToEnd: postern login signs in at a SAML identity
// provider in chromium, gets a certificate from the one issuance pipeline,
// and the stock ssh client uses it through the bastion; a user outside the
// role's group gets no certificate.
func TestLoginSAMLEndToEnd(t *testing.T) {
	e := newSAMLEnv(t)
	var cfgBody struct{ Issuers []login.IssuerInfo }
	resp, err := http.Get(e.cfg.PublicURL + "/v1/config")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.NewDecoder(resp.Body).Decode(&cfgBody); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(cfgBody.Issuers) != 1 || cfgBody.Issuers[0].Protocol != login.ProtocolSAML ||
		cfgBody.Issuers[0].LoginURL != e.cfg.PublicURL+"/v1/saml/corp-saml/login" {
		t.Fatalf("/v1/config issuers: %+v", cfgBody.Issuers)
	}

	run := chromiumRunner(t)
	browserDone := make(chan error, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	p, err := login.Login(ctx, login.Options{
		Bastion: e.cfg.PublicURL, Dir: filepath.Join(t.TempDir(), "profile"), Err: loginTestLog{t},
		OpenBrowser: func(u string) error {
			go func() { // postern login waits on its callback while the browser signs in
				err := run(u, "alice", "alice-pw", "postern login received your sign-in")
				browserDone <- err
				if err != nil {
					cancel()
				}
			}()
			return nil
		},
	})
	if err != nil {
		t.Fatalf("postern login: %v (browser: %v)", err, <-browserDone)
	}
	if err := <-browserDone; err != nil {
		t.Fatalf("browser: %v", err)
	}
	if p.Username != "alice@example.com" || p.Issuer != "corp-saml" {
		t.Errorf("profile %s of issuer %s", p.Username, p.Issuer)
	}
	cert, err := certFromProfile(p)
	if err != nil {
		t.Fatal(err)
	}
	id, err := certs.IdentityFromCert(cert)
	if err != nil || id.Issuer != "corp-saml" || id.Subject != "alice@example.com" || !id.InGroup("ops") {
		t.Fatalf("certificate identity %+v, %v", id, err)
	}
	out, err := exec.Command("ssh", "-F", p.SSHConfig, "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
		"-J", p.BastionHost, "root@web-1", "echo hello from $(id -un)").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "hello from root" {
		t.Fatalf("ssh -J through the bastion with the SAML certificate: %v\n%s\ntarget log:\n%s", err, out, e.target.Log())
	}

	// bob signs in fine, but no role matches his groups: no certificate.
	bctx, bcancel := context.WithTimeout(t.Context(), time.Minute)
	defer bcancel()
	_, err = login.Login(bctx, login.Options{
		Bastion: e.cfg.PublicURL, Dir: filepath.Join(t.TempDir(), "bob"), Err: loginTestLog{t},
		OpenBrowser: e.signInHTTP(t, "bob", "bob-pw"),
	})
	var se *login.ServerError
	if err == nil || !asServerError(err, &se) || se.Code != certs.CodeNoAccess {
		t.Errorf("bob's login: %v; want no_access", err)
	}
	// --device cannot sign in at a SAML provider.
	if _, err := login.Login(t.Context(), login.Options{Bastion: e.cfg.PublicURL, Dir: t.TempDir(), Mode: login.ModeDevice}); err == nil ||
		!strings.Contains(err.Error(), "SAML") {
		t.Errorf("--device with a SAML provider: %v", err)
	}
}

// TestWebUISAMLLogin logs in to the web UI with chromium at the SAML
// provider and lands on the sessions list.
func TestWebUISAMLLogin(t *testing.T) {
	run := chromiumRunner(t)
	e := newSAMLEnv(t)
	if err := run(e.cfg.PublicURL+"/ui/", "alice", "alice-pw", "alice@example.com"); err != nil {
		t.Fatalf("web UI SAML login: %v", err)
	}
}

// certFromProfile reads the profile's user certificate.
func certFromProfile(p *login.Profile) (*ssh.Certificate, error) {
	b, err := os.ReadFile(p.CertFile)
	if err != nil {
		return nil, err
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		return nil, err
	}
	return pub.(*ssh.Certificate), nil
}

func asServerError(err error, se **login.ServerError) bool { return errors.As(err, se) }
