package login_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs/devidp"
	"github.com/posternhq/postern/certs/devidp/devidptest"
	"github.com/posternhq/postern/certs/login"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/dextest"
	"github.com/posternhq/postern/internal/sshdtest"
	"github.com/posternhq/postern/internal/testutil"
)

// e2eTarget is a real sshd whose host certificate comes from the bastion's
// host CA and which trusts the bastion's user CA, standing in for the
// bastion's SSH listener (the login profile points at it) and for a target.
type e2eTarget struct {
	sshd *sshdtest.Server
}

// startTarget starts sshd for b and makes b advertise it as its SSH address.
func startTarget(t *testing.T, b *testBastion) *e2eTarget {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hostKey, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	hostCert, err := b.Authority.SignHost(hostKey.PublicKey(), []string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sshd := sshdtest.Start(t, sshdtest.Options{
		TrustedUserCAKeys: b.Authority.User.Trusted(),
		HostKey:           hostKey,
		HostCert:          hostCert,
		// The passthrough configuration of docs/security.md, for the
		// bastion's "stand-in" target.
		Extra: []string{"AuthorizedPrincipalsCommand /bin/echo stand-in:%u", "AuthorizedPrincipalsCommandUser nobody"},
	})
	b.SetSSHAddress(sshd.Addr())
	return &e2eTarget{sshd: sshd}
}

// checkKeygenList checks what the stock ssh-keygen -L reads in the
// certificate: a user certificate from the bastion's user CA for the
// expected principals, valid for about ttl, with the granted extensions and
// the identity extension.
func checkKeygenList(t *testing.T, b *testBastion, p *login.Profile, principals []string, ttl time.Duration) {
	t.Helper()
	cmd := exec.Command("ssh-keygen", "-L", "-f", p.CertFile)
	cmd.Env = append(os.Environ(), "TZ=UTC")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen -L: %v\n%s", err, out)
	}
	text := string(out)
	fp := ssh.FingerprintSHA256(b.Authority.User.PublicKey())
	for _, want := range []string{
		"Type: ssh-ed25519-cert-v01@openssh.com user certificate",
		"Signing CA: ED25519 " + fp,
		"Critical Options: (none)",
		"permit-port-forwarding",
		"permit-pty",
		"identity@postern",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("ssh-keygen -L lacks %q:\n%s", want, text)
		}
	}
	m := regexp.MustCompile(`(?s)Principals:\s*\n(.*?)\n\s*Critical Options`).FindStringSubmatch(text)
	if m == nil || strings.Join(strings.Fields(m[1]), ",") != strings.Join(principals, ",") {
		t.Errorf("ssh-keygen -L principals = %q; want %q", m, principals)
	}
	m = regexp.MustCompile(`Valid: from (\S+) to (\S+)`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("ssh-keygen -L shows no validity:\n%s", text)
	}
	from, err1 := time.Parse("2006-01-02T15:04:05", m[1])
	to, err2 := time.Parse("2006-01-02T15:04:05", m[2])
	if err1 != nil || err2 != nil {
		t.Fatalf("validity %q %q: %v %v", m[1], m[2], err1, err2)
	}
	if !from.Equal(p.ValidAfter) || !to.Equal(p.ValidBefore) {
		t.Errorf("ssh-keygen validity %v..%v; profile says %v..%v", from, to, p.ValidAfter, p.ValidBefore)
	}
	if d := to.Sub(time.Now()); d > ttl+time.Minute || d < ttl-2*time.Minute {
		t.Errorf("certificate expires in %v; want about %v", d, ttl)
	}
}

// sshRun runs the stock ssh client with the profile's ssh_config (and
// nothing of the user's) and returns its trimmed output.
func sshRun(t *testing.T, p *login.Profile, args ...string) string {
	t.Helper()
	full := append([]string{"-F", p.SSHConfig, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
		"-o", "GlobalKnownHostsFile=/dev/null", "-o", "IdentityAgent=none", "-o", "ConnectTimeout=10"}, args...)
	cmd := exec.Command("ssh", full...)
	cmd.Stdin = nil
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ssh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// checkSSH logs in to the sshd with the profile exactly as a user would:
// directly (the profile's bastion block: port, key, certificate, host CA),
// and through it as a -J jump host to a target name (the Host * block).
func checkSSH(t *testing.T, p *login.Profile, tg *e2eTarget) {
	t.Helper()
	if got := sshRun(t, p, "-l", "root", p.BastionHost, "id -un"); got != "root" {
		t.Errorf("ssh as root ran as %q", got)
	}
	port := fmt.Sprint(tg.sshd.Port())
	if got := sshRun(t, p, "-J", "root@"+p.BastionHost, "-p", port, "root@localhost", "echo via-jump"); got != "via-jump" {
		t.Errorf("ssh -J printed %q; want via-jump", got)
	}
	if log := tg.sshd.Log(); !strings.Contains(log, "Accepted publickey for root") || !strings.Contains(log, "ED25519-CERT") {
		t.Errorf("sshd did not log a certificate login:\n%s", log)
	}
}

// TestEndToEndDevIssuer: development issuer → in-process bastion API →
// Login (browser flow, followed headlessly) → ssh-keygen -L → a real sshd
// accepts the certificate, directly and as a -J hop.
func TestEndToEndDevIssuer(t *testing.T) {
	testutil.Need(t, "ssh", "ssh-keygen")
	idp := devidptest.Start(t, devidp.Options{})
	b := startBastion(t, bastionOptions{
		Issuers: []config.Issuer{devIssuer("dev", idp.URL)},
		Dev:     map[string]bool{"dev": true},
	})
	tg := startTarget(t, b)
	p, err := login.Login(t.Context(), login.Options{Bastion: b.URL, Dir: filepath.Join(t.TempDir(), "profile"), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	checkKeygenList(t, b, p, []string{"dev", "stand-in:root"}, time.Hour)
	checkSSH(t, p, tg)
}

// dexE2E is the end-to-end setting: a real Dex with alice (group sre) and
// mallory (no role), a bastion trusting it whose sre role grants root and
// local forwarding, a real sshd standing in for its SSH side, and an ID
// token for alice from Dex's password grant in a file.
type dexE2E struct {
	dex       *dextest.Dex
	bastion   *testBastion
	target    *e2eTarget
	tokenFile string
}

func startDexE2E(t *testing.T) *dexE2E {
	t.Helper()
	testutil.Need(t, "ssh", "ssh-keygen")
	d := dextest.Start(t, dextest.Options{Users: []dextest.User{
		{Email: "alice@example.com", Password: "correct horse", Groups: []string{"sre"}},
		{Email: "mallory@example.com", Password: "battery staple", Groups: []string{"guests"}},
	}})
	b := startBastion(t, bastionOptions{
		Issuers: []config.Issuer{{
			Name: "corp", IssuerURL: d.Issuer(), ClientID: d.ClientID(), Kind: "human",
			UsernameClaim: "email", GroupsClaim: "groups",
		}},
		Roles: []config.Role{{
			Name: "sre", Match: config.RoleMatch{Groups: []string{"sre"}},
			Targets: []config.TargetSelector{{Name: "*"}}, Logins: []string{"root"},
			Forwarding: config.Forwarding{Local: true},
		}},
	})
	e := &dexE2E{dex: d, bastion: b, target: startTarget(t, b), tokenFile: filepath.Join(t.TempDir(), "id-token")}
	if err := os.WriteFile(e.tokenFile, []byte(d.PasswordToken(t, "alice@example.com", "correct horse")), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// alicePrincipals are the principals of alice's certificates: her username
// and the passthrough principal of the stand-in target (logins are no
// principals).
var alicePrincipals = []string{"alice@example.com", "stand-in:root"}

// TestEndToEndDex: a real Dex issues an ID token (password grant) → the
// bastion's certificate API in-process → Login with the token file →
// ssh-keygen -L shows the principals, validity and extensions → a real sshd
// trusting the user CA accepts the certificate for root (a role login),
// directly and as a -J hop.
func TestEndToEndDex(t *testing.T) {
	e := startDexE2E(t)
	p, err := login.Login(t.Context(), login.Options{
		Bastion: e.bastion.URL, Dir: filepath.Join(t.TempDir(), "profile"),
		Mode: login.ModeTokenFile, TokenFile: e.tokenFile, TTL: 30 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	if p.Username != "alice@example.com" || p.Issuer != "corp" {
		t.Errorf("profile user %q issuer %q; want alice@example.com, corp", p.Username, p.Issuer)
	}
	checkKeygenList(t, e.bastion, p, alicePrincipals, 30*time.Minute)
	checkSSH(t, p, e.target)
}

// dexBrowser plays a person at Dex's pages: it opens u and submits every
// form it meets (the device code form, the local password form) until the
// redirects end, on the login's loopback callback or Dex's device "done"
// page, and checks that final page says wantFinal.
func dexBrowser(t *testing.T, u, email, password, wantFinal string) {
	p, err := dextest.Browse(u, email, password, "")
	if err != nil {
		t.Error(err)
		return
	}
	if p.Status != http.StatusOK || !strings.Contains(p.Body, wantFinal) {
		t.Errorf("final page %s %d lacks %q:\n%s", p.URL, p.Status, wantFinal, p.Body)
	}
}

// dexSetup starts Dex with alice (group sre) and a bastion trusting it with
// an sre role granting root.
func dexSetup(t *testing.T) (*dextest.Dex, *testBastion) {
	t.Helper()
	d := dextest.Start(t, dextest.Options{Users: []dextest.User{
		{Email: "alice@example.com", Password: "correct horse", Groups: []string{"sre"}},
	}})
	b := startBastion(t, bastionOptions{
		Issuers: []config.Issuer{{
			Name: "corp", IssuerURL: d.Issuer(), ClientID: d.ClientID(), Kind: "human",
			UsernameClaim: "email", GroupsClaim: "groups",
		}},
		Roles: []config.Role{{
			Name: "sre", Match: config.RoleMatch{Groups: []string{"sre"}},
			Targets: []config.TargetSelector{{Name: "*"}}, Logins: []string{"root"},
		}},
	})
	return d, b
}

// TestLoginBrowserDex runs the browser flow (PKCE, loopback redirect, state
// and nonce) against a real Dex, with its password form filled in.
func TestLoginBrowserDex(t *testing.T) {
	d, b := dexSetup(t)
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	p, err := login.Login(t.Context(), login.Options{
		Bastion: b.URL, Dir: t.TempDir(),
		OpenBrowser: func(u string) error {
			wg.Go(func() { dexBrowser(t, u, "alice@example.com", "correct horse", "You can close this tab") })
			return nil
		},
	})
	if err != nil {
		t.Fatalf("Login: %v\n%s", err, d.Log())
	}
	if p.Username != "alice@example.com" || strings.Join(p.Principals, ",") != "alice@example.com,stand-in:root" {
		t.Errorf("profile %+v; want alice@example.com with stand-in:root", p)
	}
}

// TestLoginDeviceDex runs the device flow against a real Dex: the printed
// complete verification URL is opened and Dex's forms are filled in while
// Login polls at Dex's interval.
func TestLoginDeviceDex(t *testing.T) {
	d, b := dexSetup(t)
	errb := newSyncBuffer()
	type result struct {
		p   *login.Profile
		err error
	}
	done := make(chan result, 1)
	go func() {
		p, err := login.Login(t.Context(), login.Options{Bastion: b.URL, Dir: t.TempDir(), Mode: login.ModeDevice, Err: errb})
		done <- result{p, err}
	}()
	complete := errb.await(t, regexp.MustCompile(`or open (\S+)\n`), 30*time.Second)
	dexBrowser(t, complete, "alice@example.com", "correct horse", "Login Successful")
	r := <-done
	if r.err != nil {
		t.Fatalf("Login: %v\nstderr: %s\n%s", r.err, errb, d.Log())
	}
	if r.p.Username != "alice@example.com" {
		t.Errorf("profile %+v; want alice@example.com", r.p)
	}
}
