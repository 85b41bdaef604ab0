package sshdtest

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
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

// Binary is the sshd started by [Start].
const Binary = "/usr/sbin/sshd"

// startTimeout bounds how long sshd may take to print its listening line.
const startTimeout = 30 * time.Second

// Options configures a test sshd. The zero value is a server with a fresh
// ed25519 host key that trusts no CA and no key.
type Options struct {
	// TrustedUserCAKeys are the CAs whose user certificates sshd accepts
	// (TrustedUserCAKeys); none if empty. A certificate's principals must
	// include the login user, since no AuthorizedPrincipalsFile is set.
	TrustedUserCAKeys []ssh.PublicKey
	// AuthorizedKeys are plain public keys accepted for any user
	// (AuthorizedKeysFile); none if empty.
	AuthorizedKeys []ssh.PublicKey
	// HostKey is the server's host key; a fresh ed25519 key if nil.
	HostKey ssh.Signer
	// HostCert is a host certificate for HostKey's public key
	// (HostCertificate); none if nil.
	HostCert *ssh.Certificate
	// Extra holds additional sshd_config lines. Lines before the first
	// "Match" line are placed ahead of postern's defaults and so override
	// them (sshd keeps the first value it reads); "Match" blocks go last.
	Extra []string
	// NoSFTP disables the internal-sftp subsystem, which is on by default.
	NoSFTP bool
}

// Server is a running test sshd.
type Server struct {
	addr    string
	hostKey ssh.PublicKey
	proc    *testutil.Proc
	dir     string
}

// Start runs sshd on a free 127.0.0.1 port and returns once it listens.
// It skips the test if sshd is not installed.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	testutil.Need(t, Binary)
	// sshd insists on its privilege separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatalf("create /run/sshd (needs root): %v", err)
	}

	dir := t.TempDir()
	s := &Server{dir: dir}
	var hostKeyLines []string
	if opts.HostKey == nil {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatalf("generate host key: %v", err)
		}
		signer, err := ssh.NewSignerFromKey(priv)
		if err != nil {
			t.Fatalf("host key signer: %v", err)
		}
		keyFile := filepath.Join(dir, "ssh_host_ed25519_key")
		writePrivateKey(t, keyFile, priv)
		s.hostKey = signer.PublicKey()
		hostKeyLines = append(hostKeyLines, "HostKey "+keyFile)
	} else {
		// The private key may not be exportable: sshd signs through an
		// agent holding the signer, and reads only the public key.
		sock := serveAgent(t, opts.HostKey)
		pubFile := filepath.Join(dir, "ssh_host_key.pub")
		writeFile(t, pubFile, ssh.MarshalAuthorizedKey(opts.HostKey.PublicKey()), 0o644)
		s.hostKey = opts.HostKey.PublicKey()
		hostKeyLines = append(hostKeyLines, "HostKeyAgent "+sock, "HostKey "+pubFile)
	}
	if opts.HostCert != nil {
		if !bytes.Equal(opts.HostCert.Key.Marshal(), s.hostKey.Marshal()) {
			t.Fatal("sshdtest: Options.HostCert must certify Options.HostKey's public key")
		}
		certFile := filepath.Join(dir, "ssh_host_key-cert.pub")
		writeFile(t, certFile, ssh.MarshalAuthorizedKey(opts.HostCert), 0o644)
		hostKeyLines = append(hostKeyLines, "HostCertificate "+certFile)
	}

	caFile := filepath.Join(dir, "trusted_user_ca_keys")
	writeFile(t, caFile, joinKeys(opts.TrustedUserCAKeys), 0o644)
	akFile := filepath.Join(dir, "authorized_keys")
	writeFile(t, akFile, joinKeys(opts.AuthorizedKeys), 0o644)

	// Sessions get a clean HOME: the login user's real shell start-up files
	// (root's ~/.bashrc on a developer machine may run tools that take
	// locks, and a session killed by a test leaves them held) must not make
	// test commands slow or noisy. sshd applies SetEnv after its own HOME.
	home := filepath.Join(dir, "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		t.Fatal(err)
	}

	var head, tail []string
	for i, l := range opts.Extra {
		if strings.HasPrefix(strings.ToLower(strings.TrimSpace(l)), "match ") {
			tail = opts.Extra[i:]
			break
		}
		head = append(head, l)
	}
	// A port taken between picking and binding makes sshd exit; retry with
	// another port a few times.
	for attempt := 1; ; attempt++ {
		port := testutil.FreePort(t)
		s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		lines := append([]string{"# postern test sshd"}, head...)
		lines = append(lines, hostKeyLines...)
		lines = append(lines,
			"ListenAddress "+s.addr,
			"PidFile none",
			"UsePAM no",
			"StrictModes no",
			"PermitRootLogin yes",
			"PasswordAuthentication no",
			"KbdInteractiveAuthentication no",
			"PubkeyAuthentication yes",
			"AllowTcpForwarding yes",
			"TrustedUserCAKeys "+caFile,
			"AuthorizedKeysFile "+akFile,
			"UseDNS no",
			"PrintMotd no",
			"PrintLastLog no",
			"MaxStartups 200",
			"MaxSessions 100",
			"LogLevel VERBOSE",
			"SetEnv HOME="+home,
		)
		if !opts.NoSFTP {
			lines = append(lines, "Subsystem sftp internal-sftp")
		}
		lines = append(lines, tail...)
		cfgFile := filepath.Join(dir, "sshd_config")
		writeFile(t, cfgFile, []byte(strings.Join(lines, "\n")+"\n"), 0o644)

		s.proc = testutil.Start(t, Binary, []string{"-f", cfgFile, "-D", "-e"})
		ready := regexp.MustCompile(`Server listening on 127\.0\.0\.1 port ` + strconv.Itoa(port))
		_, err := s.proc.AwaitLine(ready, startTimeout)
		if err == nil {
			return s
		}
		s.proc.Stop()
		if attempt < 3 && testutil.PortInUse(s.proc.Output()) {
			continue
		}
		t.Fatalf("start sshd: %v\n%s", err, s.proc.Output())
	}
}

// Addr returns the listening address, "127.0.0.1:PORT".
func (s *Server) Addr() string { return s.addr }

// Dir returns the directory holding sshd_config, keys and the trusted CA
// and authorized keys files.
func (s *Server) Dir() string { return s.dir }

// Port returns the listening port.
func (s *Server) Port() int {
	_, p, _ := net.SplitHostPort(s.addr)
	n, _ := strconv.Atoi(p)
	return n
}

// PID returns the process id of the listening sshd (the parent of every
// per-connection sshd process).
func (s *Server) PID() int { return s.proc.PID() }

// HostKey returns the server's public host key.
func (s *Server) HostKey() ssh.PublicKey { return s.hostKey }

// KnownHostsLine returns a known_hosts line for the host key. The names
// default to the address as ssh looks it up, "[127.0.0.1]:PORT"; names
// without a port are written as given.
func (s *Server) KnownHostsLine(names ...string) string {
	if len(names) == 0 {
		names = []string{s.addr}
	}
	return knownhosts.Line(names, s.hostKey)
}

// WriteKnownHosts writes [Server.KnownHostsLine] for names to a new file
// in a test temporary directory and returns its path.
func (s *Server) WriteKnownHosts(t testing.TB, names ...string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "known_hosts")
	writeFile(t, f, []byte(s.KnownHostsLine(names...)+"\n"), 0o644)
	return f
}

// Kill kills sshd and all its connection handlers at once, for fault
// tests: open sessions drop and the port stops answering. It is safe to
// call more than once.
func (s *Server) Kill() { s.proc.Stop() }

// Log returns what sshd has logged so far (LogLevel VERBOSE on stderr).
func (s *Server) Log() string { return s.proc.Output() }

// WaitLog waits until sshd logs a line matching re and returns it.
func (s *Server) WaitLog(t testing.TB, re *regexp.Regexp, timeout time.Duration) string {
	t.Helper()
	return s.proc.WaitLine(t, re, timeout)
}

// ClientArgs returns the stock ssh client flags used by every end-to-end
// test: no user configuration, batch mode, strict host key checking against
// knownHosts, only the given identity and certificate. certFile may be
// empty for plain key login. Callers add -p, the destination and the
// command.
func ClientArgs(keyFile, certFile, knownHosts string) []string {
	args := []string{
		"-F", "/dev/null",
		"-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile=" + knownHosts,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "IdentitiesOnly=yes",
		"-o", "IdentityAgent=none",
		"-i", keyFile,
	}
	if certFile != "" {
		args = append(args, "-o", "CertificateFile="+certFile)
	}
	return append(args, "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10")
}

// WriteClientKey writes key (an ed25519, ECDSA or RSA private key) in
// OpenSSH format to a new file, and cert, if not nil, beside it as
// "<key>-cert.pub". It returns both paths (certFile is empty without cert).
func WriteClientKey(t testing.TB, key crypto.PrivateKey, cert *ssh.Certificate) (keyFile, certFile string) {
	t.Helper()
	keyFile = filepath.Join(t.TempDir(), "id")
	writePrivateKey(t, keyFile, key)
	if cert != nil {
		certFile = keyFile + "-cert.pub"
		writeFile(t, certFile, ssh.MarshalAuthorizedKey(cert), 0o644)
	}
	return keyFile, certFile
}

// NewUserCert returns a user certificate for pub, valid now for an hour for
// the given principals, signed by ca, with the default OpenSSH permissions
// (pty, port, agent and X11 forwarding, user rc).
func NewUserCert(t testing.TB, ca ssh.Signer, pub ssh.PublicKey, principals ...string) *ssh.Certificate {
	t.Helper()
	now := time.Now()
	cert := &ssh.Certificate{
		Key:             pub,
		CertType:        ssh.UserCert,
		KeyId:           "postern-test",
		ValidPrincipals: principals,
		ValidAfter:      uint64(now.Add(-time.Minute).Unix()),
		ValidBefore:     uint64(now.Add(time.Hour).Unix()),
		Permissions: ssh.Permissions{Extensions: map[string]string{
			"permit-X11-forwarding":   "",
			"permit-agent-forwarding": "",
			"permit-port-forwarding":  "",
			"permit-pty":              "",
			"permit-user-rc":          "",
		}},
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatalf("sign user certificate: %v", err)
	}
	return cert
}

func joinKeys(keys []ssh.PublicKey) []byte {
	var b []byte
	for _, k := range keys {
		b = append(b, ssh.MarshalAuthorizedKey(k)...)
	}
	return b
}

func writePrivateKey(t testing.TB, path string, key crypto.PrivateKey) {
	t.Helper()
	block, err := ssh.MarshalPrivateKey(key, "")
	if err != nil {
		t.Fatalf("marshal private key: %v", err)
	}
	writeFile(t, path, pem.EncodeToMemory(block), 0o600)
}

func writeFile(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatalf("write %s: %v", filepath.Base(path), err)
	}
}

// String describes the server for test logs.
func (s *Server) String() string { return fmt.Sprintf("sshd %s", s.addr) }
