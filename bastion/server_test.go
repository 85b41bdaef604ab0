package bastion

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/sshdtest"
	"github.com/posternhq/postern/policy"
	"github.com/posternhq/postern/state"
)

// bxFixture is a running bastion Server on 127.0.0.1 with fresh CAs, a real
// SQLite state store (audit log and revocations) and its own metrics
// registry. The server is shut down when the test ends.
type bxFixture struct {
	t      testing.TB
	dir    string
	auth   *certs.Authority
	store  *state.Store
	srv    *Server
	addr   string // 127.0.0.1:PORT
	port   int
	reg    *prometheus.Registry
	known  string // known_hosts: @cert-authority for the host CA, plus extra lines
	login  string
	logBuf *syncBuffer
}

type bxOptions struct {
	cfg        *config.Config
	knownLines []string
	mod        func(*Options)
}

func newBX(t testing.TB, o bxOptions) *bxFixture {
	t.Helper()
	f := &bxFixture{t: t, dir: t.TempDir(), reg: prometheus.NewRegistry(), logBuf: &syncBuffer{}}
	u, err := user.Current()
	if err != nil {
		t.Fatalf("current user: %v", err)
	}
	f.login = u.Username
	if f.auth, err = certs.LoadAuthority(config.CAs{}, f.dir); err != nil {
		t.Fatalf("LoadAuthority: %v", err)
	}
	ctx := context.Background()
	if f.store, err = state.Open(ctx, "sqlite://"+filepath.Join(f.dir, "state.db"), state.Options{}); err != nil {
		t.Fatalf("state.Open: %v", err)
	}
	t.Cleanup(func() { f.store.Close() })
	cfg := o.cfg
	if cfg == nil {
		cfg = &config.Config{}
	}
	eng, err := policy.New(cfg)
	if err != nil {
		t.Fatalf("policy.New: %v", err)
	}
	opts := Options{
		Authority:   f.auth,
		Policy:      eng,
		Audit:       f.store,
		Revocations: f.store,
		HostKeyFile: filepath.Join(f.dir, "host_key"),
		HostNames:   []string{"localhost"},
		Log:         slog.New(slog.NewTextHandler(f.logBuf, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Metrics:     f.reg,
		Handlers:    map[string]TargetHandler{HandlerTCP: Splice},
	}
	if o.mod != nil {
		o.mod(&opts)
	}
	if f.srv, err = NewServer(opts); err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	f.port = ln.Addr().(*net.TCPAddr).Port
	served := make(chan error, 1)
	go func() { served <- f.srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := f.srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v; want ErrServerClosed", err)
		}
		if t.Failed() {
			t.Logf("bastion log:\n%s", f.logBuf.String())
		}
	})
	lines := append([]string{f.auth.HostCALine()}, o.knownLines...)
	f.known = filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(f.known, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// certSpec describes a user certificate to mint.
type certSpec struct {
	id         certs.Identity
	principals []string // the fixture's login if nil
	mod        func(c *ssh.Certificate)
	signer     ssh.Signer // the user CA if nil
}

// userKey mints a key and a certificate and writes both; it returns the
// files and the certificate. A nil spec.id means alice.
func (f *bxFixture) userKey(spec certSpec) (keyFile, certFile string, cert *ssh.Certificate) {
	f.t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		f.t.Fatal(err)
	}
	sshPub, _ := ssh.NewPublicKey(pub)
	cert = f.newCert(sshPub, spec)
	keyFile, certFile = sshdtest.WriteClientKey(f.t, priv, cert)
	return keyFile, certFile, cert
}

var alice = certs.Identity{Issuer: "corp", Subject: "a1", Username: "alice@example.com", Kind: certs.KindHuman, Groups: []string{"dev"}}

func (f *bxFixture) newCert(pub ssh.PublicKey, spec certSpec) *ssh.Certificate {
	f.t.Helper()
	if spec.id.Username == "" {
		spec.id = alice
	}
	if spec.principals == nil {
		spec.principals = []string{f.login}
	}
	var serial [8]byte
	rand.Read(serial[:])
	now := time.Now()
	cert := &ssh.Certificate{
		Key:             pub,
		Serial:          binary.BigEndian.Uint64(serial[:]),
		CertType:        ssh.UserCert,
		KeyId:           "test:" + spec.id.Username,
		ValidPrincipals: spec.principals,
		ValidAfter:      uint64(now.Add(-time.Minute).Unix()),
		ValidBefore:     uint64(now.Add(time.Hour).Unix()),
		Permissions: ssh.Permissions{Extensions: map[string]string{
			"permit-pty":             "",
			"permit-port-forwarding": "",
			certs.IdentityExtension:  certs.EncodeIdentity(spec.id),
		}},
	}
	if spec.mod != nil {
		spec.mod(cert)
	}
	signer := spec.signer
	if signer == nil {
		signer = f.auth.User.Signer()
	}
	if len(cert.ValidPrincipals) == 0 {
		signCertRaw(f.t, cert, signer)
		return cert
	}
	if err := cert.SignCert(rand.Reader, signer); err != nil {
		f.t.Fatalf("sign: %v", err)
	}
	return cert
}

// signCertRaw signs cert as SignCert does, without its refusal of empty
// principal lists, to test that the bastion refuses such certificates.
func signCertRaw(t testing.TB, cert *ssh.Certificate, signer ssh.Signer) {
	t.Helper()
	cert.Nonce = make([]byte, 32)
	rand.Read(cert.Nonce)
	cert.SignatureKey = signer.PublicKey()
	cert.Signature = nil
	b := cert.Marshal()
	sig, err := signer.Sign(rand.Reader, b[:len(b)-4]) // without the empty signature string
	if err != nil {
		t.Fatal(err)
	}
	cert.Signature = sig
}

// sshConfig writes an ssh_config using keyFile/certFile for every hop, so
// ProxyJump's own ssh uses them too.
func (f *bxFixture) sshConfig(keyFile, certFile string) string {
	f.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "Host *\n  UserKnownHostsFile %s\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n", f.known)
	fmt.Fprintf(&b, "  BatchMode yes\n  IdentitiesOnly yes\n  IdentityAgent none\n  IdentityFile %s\n", keyFile)
	if certFile != "" {
		fmt.Fprintf(&b, "  CertificateFile %s\n", certFile)
	}
	b.WriteString("  LogLevel ERROR\n  ConnectTimeout 10\n  ControlMaster no\n  ControlPath none\n  UpdateHostKeys no\n  ExitOnForwardFailure yes\n")
	p := filepath.Join(f.t.TempDir(), "ssh_config")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		f.t.Fatal(err)
	}
	return p
}

// jump is the -J argument for the bastion.
func (f *bxFixture) jump() string { return fmt.Sprintf("%s@localhost:%d", f.login, f.port) }

type bxResult struct {
	stdout, stderr string
	code           int
}

// run runs a stock OpenSSH client binary (ssh, scp, sftp) with args.
func bxRun(t *testing.T, stdin string, bin string, args ...string) bxResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Stdin = strings.NewReader(stdin)
	err := cmd.Run()
	res := bxResult{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("%s %v timed out; stderr: %s", bin, args, errb.String())
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run %s: %v", bin, err)
	}
	return res
}

// events returns the audit events of type typ so far.
func (f *bxFixture) events(typ string) []state.Event {
	f.t.Helper()
	evs, err := f.store.Events(context.Background(), 0, 100000)
	if err != nil {
		f.t.Fatalf("Events: %v", err)
	}
	var out []state.Event
	for _, e := range evs {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// waitEvent waits until an audit event of type typ satisfies match; audit
// events of a channel may be appended just after the client has exited.
func (f *bxFixture) waitEvent(typ string, match func(state.Event) bool) state.Event {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, e := range f.events(typ) {
			if match(e) {
				return e
			}
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("no %s audit event matched; have %+v", typ, f.events(typ))
		}
		time.Sleep(20 * time.Millisecond) // polling a store with a deadline, not waiting for time to pass
	}
}

func detail(e state.Event, k string) string {
	v, ok := e.Details[k]
	if !ok {
		return ""
	}
	return fmt.Sprint(v)
}

func hasDetail(k, v string) func(state.Event) bool {
	return func(e state.Event) bool { return detail(e, k) == v }
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// dial connects an x/crypto client to the bastion as login with a fresh key
// certified by spec, checking the bastion's host certificate.
func (f *bxFixture) dial(spec certSpec, login string) (*ssh.Client, *ssh.Certificate, error) {
	f.t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		f.t.Fatal(err)
	}
	signer, _ := ssh.NewSignerFromKey(priv)
	cert := f.newCert(signer.PublicKey(), spec)
	cs, err := ssh.NewCertSigner(cert, signer)
	if err != nil {
		f.t.Fatal(err)
	}
	c, err := f.dialSigner(cs, login)
	return c, cert, err
}

func (f *bxFixture) dialSigner(signer ssh.Signer, login string) (*ssh.Client, error) {
	f.t.Helper()
	checker := &ssh.CertChecker{IsHostAuthority: func(k ssh.PublicKey, _ string) bool {
		return f.auth.Host.IsTrusted(k)
	}}
	conf := &ssh.ClientConfig{
		User:              login,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback:   checker.CheckHostKey,
		HostKeyAlgorithms: []string{ssh.CertAlgoED25519v01},
		Timeout:           10 * time.Second,
	}
	nc, err := net.DialTimeout("tcp", f.addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	cc, chans, reqs, err := ssh.NewClientConn(nc, net.JoinHostPort("localhost", strconv.Itoa(f.port)), conf)
	if err != nil {
		nc.Close()
		return nil, err
	}
	c := ssh.NewClient(cc, chans, reqs)
	f.t.Cleanup(func() { c.Close() })
	return c, nil
}

// openDirect opens a direct-tcpip channel to host:port with the raw host
// string (no parsing on the client side).
func openDirect(c *ssh.Client, host string, port int) (ssh.Channel, error) {
	ch, reqs, err := c.OpenChannel(channelDirectTCPIP, ssh.Marshal(directTCPIP{
		Host: host, Port: uint32(port), OriginIP: "127.0.0.1", OriginPort: 5555,
	}))
	if err != nil {
		return nil, err
	}
	go ssh.DiscardRequests(reqs)
	return ch, nil
}

func counterValue(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	return promtest.ToFloat64(c)
}
