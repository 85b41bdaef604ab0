package login_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs/devidp"
	"github.com/posternhq/postern/certs/devidp/devidptest"
	"github.com/posternhq/postern/certs/login"
	"github.com/posternhq/postern/internal/config"
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
	checkKeygenList(t, b, p, []string{"dev", "root"}, time.Hour)
	checkSSH(t, p, tg)
}
