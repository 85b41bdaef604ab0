package certs_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/sshdtest"
	"github.com/posternhq/postern/internal/testutil"
)

// runSSH runs the stock ssh client against srv as login and returns its
// combined output and error.
func runSSH(t *testing.T, srv *sshdtest.Server, keyFile, certFile, knownHosts, login string, cmd ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := sshdtest.ClientArgs(keyFile, certFile, knownHosts)
	args = append(args, "-p", strconv.Itoa(srv.Port()), login+"@127.0.0.1")
	args = append(args, cmd...)
	out, err := exec.CommandContext(ctx, "ssh", args...).CombinedOutput()
	return string(out), err
}

// TestSignTargetAcceptedBySSHD proves the target CA's certificates log in to a
// stock OpenSSH sshd that trusts only the target CA, that the host CA's
// certificates and @cert-authority line satisfy the stock ssh client, and
// that a user-CA certificate is refused by such a target.
func TestSignTargetAcceptedBySSHD(t *testing.T) {
	testutil.Need(t, "ssh")
	a := newTestAuthority(t)
	_, hostKey := newEd25519(t)
	hostCert, err := a.SignHost(hostKey.PublicKey(), []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv := sshdtest.Start(t, sshdtest.Options{
		TrustedUserCAKeys: a.Target.Trusted(),
		HostKey:           hostKey,
		HostCert:          hostCert,
	})
	knownHosts := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(knownHosts, []byte(a.HostCALine()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	priv, key := newEd25519(t)
	cert, err := a.SignTarget(key.PublicKey(), "root", "postern:corp:alice@example.com:1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	keyFile, certFile := sshdtest.WriteClientKey(t, priv, cert)
	out, err := runSSH(t, srv, keyFile, certFile, knownHosts, "root", "echo", "postern-target-ok")
	if err != nil || !strings.Contains(out, "postern-target-ok") {
		t.Fatalf("ssh with a target-CA cert: %v\n%s\nsshd log:\n%s", err, out, srv.Log())
	}

	// The same key certified by the user CA must not open the target.
	issued := signWith(t, userCert(t, key.PublicKey(), func(c *ssh.Certificate) {
		c.ValidPrincipals = []string{"root"}
	}), a.User.Signer())
	keyFile2, certFile2 := sshdtest.WriteClientKey(t, priv, issued)
	if out, err := runSSH(t, srv, keyFile2, certFile2, knownHosts, "root", "true"); err == nil {
		t.Errorf("user-CA certificate opened the target:\n%s", out)
	}

	// A target cert for another login does not open root.
	other, err := a.SignTarget(key.PublicKey(), "deploy", "postern:corp:alice@example.com:2", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	keyFile3, certFile3 := sshdtest.WriteClientKey(t, priv, other)
	if out, err := runSSH(t, srv, keyFile3, certFile3, knownHosts, "root", "true"); err == nil {
		t.Errorf("certificate for deploy logged in as root:\n%s", out)
	}
}

// TestIssuedCertAcceptedBySSHD proves a certificate from the issuance
// pipeline (explicit principals, the identity extension, no critical
// options) is accepted by a stock sshd that trusts the user CA with the
// principals command docs/security.md gives for passthrough targets, for a
// login granted on that target, and refused for others — also for a login
// granted on another target, and by an sshd without the command.
func TestIssuedCertAcceptedBySSHD(t *testing.T) {
	testutil.Need(t, "ssh")
	f := newIssuerFixture(t, func(o *certs.IssuerOptions) {
		o.Now = nil
		o.Policy = grantStub{"alice@example.com": {Logins: []string{"root", "nobody"}, PermitPTY: true,
			Passthrough: []string{certs.PassthroughPrincipal("pass-1", "root"), certs.PassthroughPrincipal("pass-2", "nobody")}}}
	})
	srv := sshdtest.Start(t, sshdtest.Options{TrustedUserCAKeys: f.authority.User.Trusted(),
		Extra: []string{"AuthorizedPrincipalsCommand /bin/echo pass-1:%u", "AuthorizedPrincipalsCommandUser nobody"}})
	plain := sshdtest.Start(t, sshdtest.Options{TrustedUserCAKeys: f.authority.User.Trusted()})
	knownHosts := srv.WriteKnownHosts(t)
	priv, key := newEd25519(t)
	got, err := f.issuer.Issue(context.Background(), certs.Request{Token: "tok-alice", PublicKey: key.PublicKey(), Source: loopback})
	if err != nil {
		t.Fatal(err)
	}
	keyFile, certFile := sshdtest.WriteClientKey(t, priv, got.Cert)
	out, err := runSSH(t, srv, keyFile, certFile, knownHosts, "root", "echo", "postern-issued-ok")
	if err != nil || !strings.Contains(out, "postern-issued-ok") {
		t.Fatalf("ssh with an issued cert: %v\n%s\nsshd log:\n%s", err, out, srv.Log())
	}
	// sshd logs the key id, which names the identity and serial.
	srv.WaitLog(t, regexp.MustCompile(regexp.QuoteMeta(got.Cert.KeyId)), 10*time.Second)
	for _, login := range []string{"nobody", "alice@example.com"} {
		if out, err := runSSH(t, srv, keyFile, certFile, knownHosts, login, "true"); err == nil || !strings.Contains(out, "Permission denied") {
			t.Errorf("pass-1 took the login %s, granted elsewhere or the username: %v\n%s", login, err, out)
		}
	}
	// An sshd that trusts the user CA without the command finds no login
	// among the principals (only the username, which is no account here).
	for _, login := range []string{"root", "nobody"} {
		if out, err := runSSH(t, plain, keyFile, certFile, plain.WriteKnownHosts(t), login, "true"); err == nil || !strings.Contains(out, "Permission denied") {
			t.Errorf("an sshd without the principals command took %s: %v\n%s", login, err, out)
		}
	}
}
