package sshdtest

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/posternhq/postern/internal/testutil"
)

func newSigner(t *testing.T) (ed25519.PrivateKey, ssh.Signer) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return priv, s
}

func loginName(t *testing.T) string {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

// runSSH runs the stock ssh client against s and returns its combined output.
func runSSH(t *testing.T, s *Server, keyFile, certFile, knownHosts string, cmd ...string) (string, error) {
	t.Helper()
	testutil.Need(t, "ssh")
	args := append(ClientArgs(keyFile, certFile, knownHosts), "-p", strconv.Itoa(s.Port()), loginName(t)+"@127.0.0.1")
	args = append(args, cmd...)
	out, err := exec.Command("ssh", args...).CombinedOutput()
	return string(out), err
}

func TestCertificateLogin(t *testing.T) {
	_, ca := newSigner(t)
	userKey, userSigner := newSigner(t)
	s := Start(t, Options{TrustedUserCAKeys: []ssh.PublicKey{ca.PublicKey()}})
	cert := NewUserCert(t, ca, userSigner.PublicKey(), loginName(t))
	keyFile, certFile := WriteClientKey(t, userKey, cert)

	out, err := runSSH(t, s, keyFile, certFile, s.WriteKnownHosts(t), "echo", "hello")
	if err != nil {
		t.Fatalf("ssh with a trusted certificate: %v\n%s\nsshd log:\n%s", err, out, s.Log())
	}
	if got := strings.TrimSpace(out); got != "hello" {
		t.Fatalf("got %q; want %q", got, "hello")
	}
	s.WaitLog(t, regexp.MustCompile(`Accepted publickey for \S+ from 127\.0\.0\.1 .*ID postern-test`), 10*time.Second)
}

func TestForeignCARejected(t *testing.T) {
	_, ca := newSigner(t)
	_, foreign := newSigner(t)
	userKey, userSigner := newSigner(t)
	s := Start(t, Options{TrustedUserCAKeys: []ssh.PublicKey{ca.PublicKey()}})
	cert := NewUserCert(t, foreign, userSigner.PublicKey(), loginName(t))
	keyFile, certFile := WriteClientKey(t, userKey, cert)

	out, err := runSSH(t, s, keyFile, certFile, s.WriteKnownHosts(t), "true")
	if err == nil {
		t.Fatalf("ssh with a certificate from a foreign CA succeeded; want denied\n%s", out)
	}
	if !strings.Contains(out, "Permission denied") {
		t.Fatalf("got %q; want Permission denied", out)
	}
}

func TestWrongPrincipalRejected(t *testing.T) {
	_, ca := newSigner(t)
	userKey, userSigner := newSigner(t)
	s := Start(t, Options{TrustedUserCAKeys: []ssh.PublicKey{ca.PublicKey()}})
	cert := NewUserCert(t, ca, userSigner.PublicKey(), "somebody-else")
	keyFile, certFile := WriteClientKey(t, userKey, cert)
	if out, err := runSSH(t, s, keyFile, certFile, s.WriteKnownHosts(t), "true"); err == nil {
		t.Fatalf("ssh with a certificate for another principal succeeded; want denied\n%s", out)
	}
}

func TestAuthorizedKeyWithCallerHostKey(t *testing.T) {
	// An RSA host key exercises the agent path with rsa-sha2 signature flags.
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	hostSigner, err := ssh.NewSignerFromSigner(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	userKey, userSigner := newSigner(t)
	s := Start(t, Options{HostKey: hostSigner, AuthorizedKeys: []ssh.PublicKey{userSigner.PublicKey()}})
	if got, want := s.HostKey().Marshal(), hostSigner.PublicKey().Marshal(); string(got) != string(want) {
		t.Fatal("HostKey() is not the caller's key")
	}
	keyFile, _ := WriteClientKey(t, userKey, nil)
	if out, err := runSSH(t, s, keyFile, "", s.WriteKnownHosts(t), "true"); err != nil {
		t.Fatalf("ssh with an authorized key: %v\n%s\nsshd log:\n%s", err, out, s.Log())
	}

	// The same server must fail strict host key checking against another key.
	_, other := newSigner(t)
	kh := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(kh, []byte(knownhosts.Line([]string{s.Addr()}, other.PublicKey())+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runSSH(t, s, keyFile, "", kh, "true")
	if err == nil || !strings.Contains(out, "Host key verification failed") {
		t.Fatalf("ssh against a wrong known host key: err %v, output %q; want host key verification failure", err, out)
	}
}

func TestHostCertificate(t *testing.T) {
	_, hostCA := newSigner(t)
	_, hostKey := newSigner(t)
	hostCert := &ssh.Certificate{
		Key:             hostKey.PublicKey(),
		CertType:        ssh.HostCert,
		KeyId:           "test-host",
		ValidPrincipals: []string{"127.0.0.1"},
		ValidAfter:      uint64(time.Now().Add(-time.Minute).Unix()),
		ValidBefore:     uint64(time.Now().Add(time.Hour).Unix()),
	}
	if err := hostCert.SignCert(rand.Reader, hostCA); err != nil {
		t.Fatal(err)
	}
	userKey, userSigner := newSigner(t)
	s := Start(t, Options{HostKey: hostKey, HostCert: hostCert, AuthorizedKeys: []ssh.PublicKey{userSigner.PublicKey()}})

	kh := filepath.Join(t.TempDir(), "known_hosts")
	line := "@cert-authority * " + string(ssh.MarshalAuthorizedKey(hostCA.PublicKey()))
	if err := os.WriteFile(kh, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	keyFile, _ := WriteClientKey(t, userKey, nil)
	if out, err := runSSH(t, s, keyFile, "", kh, "true"); err != nil {
		t.Fatalf("ssh trusting only the host CA: %v\n%s\nsshd log:\n%s", err, out, s.Log())
	}
}

func TestSFTPSubsystem(t *testing.T) {
	testutil.Need(t, "sftp")
	userKey, userSigner := newSigner(t)
	s := Start(t, Options{AuthorizedKeys: []ssh.PublicKey{userSigner.PublicKey()}})
	keyFile, _ := WriteClientKey(t, userKey, nil)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, []byte("payload"), 0o644); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "dst")
	args := append(ClientArgs(keyFile, "", s.WriteKnownHosts(t)), "-P", strconv.Itoa(s.Port()), "-b", "-", loginName(t)+"@127.0.0.1")
	cmd := exec.Command("sftp", args...)
	cmd.Stdin = strings.NewReader("put " + src + " " + dst + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sftp put: %v\n%s\nsshd log:\n%s", err, out, s.Log())
	}
	got, err := os.ReadFile(dst)
	if err != nil || string(got) != "payload" {
		t.Fatalf("uploaded file: got %q, %v; want \"payload\"", got, err)
	}
}

func TestExtraOverridesDefaults(t *testing.T) {
	userKey, userSigner := newSigner(t)
	s := Start(t, Options{
		AuthorizedKeys: []ssh.PublicKey{userSigner.PublicKey()},
		Extra:          []string{"PermitRootLogin no", "Match User nobody", "  ForceCommand /bin/false"},
	})
	if loginName(t) != "root" {
		return // the override is only observable for root
	}
	keyFile, _ := WriteClientKey(t, userKey, nil)
	if out, err := runSSH(t, s, keyFile, "", s.WriteKnownHosts(t), "true"); err == nil {
		t.Fatalf("root login succeeded with PermitRootLogin no in Extra\n%s", out)
	}
}

func TestKill(t *testing.T) {
	s := Start(t, Options{})
	testutil.WaitPort(t, s.Addr(), 5*time.Second)
	s.Kill()
	s.Kill()
	if c, err := net.Dial("tcp", s.Addr()); err == nil {
		c.Close()
		t.Fatal("port still answers after Kill")
	}
}

func TestKnownHostsLine(t *testing.T) {
	s := Start(t, Options{})
	line := s.KnownHostsLine()
	want := "[127.0.0.1]:" + strconv.Itoa(s.Port()) + " ssh-ed25519 "
	if !strings.HasPrefix(line, want) {
		t.Fatalf("got %q; want prefix %q", line, want)
	}
	if got := s.KnownHostsLine("bastion", "db"); !strings.HasPrefix(got, "bastion,db ssh-ed25519 ") {
		t.Fatalf("got %q; want prefix %q", got, "bastion,db ssh-ed25519 ")
	}
}

func TestKillDropsOpenSessions(t *testing.T) {
	testutil.Need(t, "ssh")
	userKey, userSigner := newSigner(t)
	s := Start(t, Options{AuthorizedKeys: []ssh.PublicKey{userSigner.PublicKey()}})
	keyFile, _ := WriteClientKey(t, userKey, nil)
	args := append(ClientArgs(keyFile, "", s.WriteKnownHosts(t)), "-p", strconv.Itoa(s.Port()), loginName(t)+"@127.0.0.1", "sleep", "600")
	client := testutil.Start(t, "ssh", args)
	s.WaitLog(t, regexp.MustCompile(`Starting session: command`), 30*time.Second)
	s.Kill()
	select {
	case <-client.Done():
		if client.Err() == nil {
			t.Fatal("ssh exited 0 after its server was killed; want a failure")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ssh session still open 30s after Kill; want it dropped")
	}
}

func TestTCPForwarding(t *testing.T) {
	testutil.Need(t, "ssh")
	echo := testutil.EchoServer(t)
	userKey, userSigner := newSigner(t)
	s := Start(t, Options{AuthorizedKeys: []ssh.PublicKey{userSigner.PublicKey()}})
	keyFile, _ := WriteClientKey(t, userKey, nil)
	// -W forwards stdio over a direct-tcpip channel, as -L and -J do.
	args := append(ClientArgs(keyFile, "", s.WriteKnownHosts(t)), "-p", strconv.Itoa(s.Port()), "-W", echo, loginName(t)+"@127.0.0.1")
	cmd := exec.Command("ssh", args...)
	cmd.Stdin = strings.NewReader("through the tunnel")
	out, err := cmd.Output()
	if err != nil || string(out) != "through the tunnel" {
		t.Fatalf("ssh -W %s: got %q, %v; want the input echoed\nsshd log:\n%s", echo, out, err, s.Log())
	}
}
