package innerhop

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/bastion"
	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/netguard"
	"github.com/posternhq/postern/internal/sshdtest"
	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/policy"
	"github.com/posternhq/postern/state"
)

// hopFixture is a bastion in miniature for inner-hop tests: the three CAs, a
// policy, an inner-hop Server, an outer SSH server on 127.0.0.1 that hands
// direct-tcpip channels to the Server, a user key with a user certificate
// and an ssh_config for the stock client.
type hopFixture struct {
	t        testing.TB
	auth     *certs.Authority
	cfg      *config.Config
	mu       sync.Mutex
	engine   *policy.Engine
	hop      *Server
	recDir   string
	spoolDir string
	outer    string // outer server address
	userKey  ed25519.PrivateKey
	userPub  ssh.PublicKey
	userCert *ssh.Certificate
	keyFile  string
	certFile string
	sshCfg   string
	known    string
	events   *eventLog
	login    string
	logs     *lockedBuffer
	server   *bastion.Server
	opts     fixtureOpts
	own      *netguard.Listeners // the outer server's listener
}

// lockedBuffer is a log sink tests read.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// eventLog collects audit events.
type eventLog struct {
	mu      sync.Mutex
	events  []state.Event
	changed chan struct{} // closed and replaced on every add
}

func (l *eventLog) add(_ context.Context, e state.Event) {
	l.mu.Lock()
	l.events = append(l.events, e)
	if l.changed != nil {
		close(l.changed)
	}
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

// Append implements the server's AuditLog.
func (l *eventLog) Append(ctx context.Context, e state.Event) (state.Event, error) {
	l.add(ctx, e)
	return e, nil
}

func (l *eventLog) watch() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.changed == nil {
		l.changed = make(chan struct{})
	}
	return l.changed
}

func (l *eventLog) ofType(typ string) []state.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []state.Event
	for _, e := range l.events {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// testLogin is the login used on targets: sshd runs as root in CI.
func testLogin(t testing.TB) string {
	u, err := user.Current()
	if err != nil {
		t.Fatalf("current user: %v", err)
	}
	return u.Username
}

type fixtureOpts struct {
	record      string // role record mode; "off" if empty
	targets     []config.Target
	forwarding  config.Forwarding
	noRecorder  bool
	recDir      string // recording dir; a temp dir if empty
	quiet       bool   // no logs (benchmarks)
	reuse       config.UpstreamReuse
	logins      []string               // logins the role allows besides the test login
	interactive string                 // the role's interactive setting
	revoked     bastion.RevocationList // consulted by the outer server every 50ms; none if nil
	probe       time.Duration          // Options.probeTimeout
	// state, if set, is the recorder's state store, and audit events are
	// appended to it as well as logged.
	state          *state.Store
	recordingAudit bool // Options.RecordingAudit
}

func newHopFixture(t testing.TB, o fixtureOpts) *hopFixture {
	t.Helper()
	f := &hopFixture{t: t, events: &eventLog{}, login: testLogin(t), logs: &lockedBuffer{}, opts: o, own: &netguard.Listeners{}}
	var err error
	f.auth, err = certs.LoadAuthority(config.CAs{}, t.TempDir())
	if err != nil {
		t.Fatalf("load authority: %v", err)
	}
	if o.record == "" {
		o.record = "off"
	}
	f.cfg = &config.Config{
		Targets: o.targets,
		Roles: []config.Role{{
			Name:        "ops",
			Match:       config.RoleMatch{Users: []string{"alice"}},
			Targets:     []config.TargetSelector{{Name: "*"}},
			Logins:      append([]string{f.login}, o.logins...),
			Record:      o.record,
			Forwarding:  o.forwarding,
			Interactive: o.interactive,
		}},
	}
	f.engine, err = policy.New(f.cfg)
	if err != nil {
		t.Fatalf("policy: %v", err)
	}
	f.recDir = o.recDir
	if f.recDir == "" {
		f.recDir = t.TempDir()
	}
	opts := Options{
		Authority: f.auth,
		Policy: func() *policy.Engine {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.engine
		},
		Audit:         f.events.add,
		UpstreamReuse: o.reuse,
		OwnListeners:  f.own,
		probeTimeout:  o.probe,
		Log:           slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{t}, f.logs), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if o.quiet {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if o.state != nil {
		opts.Audit = func(ctx context.Context, e state.Event) {
			f.events.add(ctx, e)
			if _, err := o.state.Append(ctx, e); err != nil {
				t.Errorf("audit append: %v", err)
			}
		}
	}
	opts.RecordingAudit = o.recordingAudit
	if !o.noRecorder {
		f.spoolDir = filepath.Join(t.TempDir(), "spool")
		opts.Recorder = newTestRecorder(t, f.recDir, f.spoolDir, o.state)
	}
	f.hop, err = New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(f.hop.Close)
	f.outer = startTestOuter(t, f)

	_, f.userKey, _ = ed25519.GenerateKey(rand.Reader)
	f.userPub, _ = ssh.NewPublicKey(f.userKey.Public())
	f.userCert = f.signUser(f.userPub)
	f.keyFile, f.certFile = sshdtest.WriteClientKey(t, f.userKey, f.userCert)
	f.known = filepath.Join(t.TempDir(), "known_hosts")
	writeTestFile(t, f.known, f.auth.HostCALine()+"\n")
	f.sshCfg = f.writeSSHConfig(f.keyFile, f.certFile)
	return f
}

// setRole changes the role (a policy reload).
func (f *hopFixture) setRole(change func(r *config.Role)) {
	f.t.Helper()
	cfg := *f.cfg
	cfg.Roles = []config.Role{cfg.Roles[0]}
	change(&cfg.Roles[0])
	f.reload(&cfg)
}

// setTargets replaces the inventory (a policy reload).
func (f *hopFixture) setTargets(targets ...config.Target) {
	f.t.Helper()
	cfg := *f.cfg
	cfg.Targets = targets
	f.reload(&cfg)
	f.hop.SetUpstreamReuse(f.opts.reuse) // as Service.reload does: idle logins belong to the old targets
}

// reload makes cfg the policy of the inner hop and the outer server.
func (f *hopFixture) reload(cfg *config.Config) {
	f.t.Helper()
	eng, err := policy.New(cfg)
	if err != nil {
		f.t.Fatalf("policy: %v", err)
	}
	f.mu.Lock()
	f.cfg = cfg
	f.engine = eng
	f.mu.Unlock()
	f.server.SetPolicy(eng)
}

// signUser issues a user certificate for alice from the user CA.
func (f *hopFixture) signUser(pub ssh.PublicKey) *ssh.Certificate {
	f.t.Helper()
	return f.signUserFor(pub, time.Hour)
}

// signUserFor issues a user certificate for alice valid for ttl from now.
func (f *hopFixture) signUserFor(pub ssh.PublicKey, ttl time.Duration) *ssh.Certificate {
	f.t.Helper()
	return f.signUserAs(pub, certs.Identity{Issuer: "test", Subject: "alice-sub", Username: "alice", Kind: certs.KindHuman, Groups: []string{"ops"}}, ttl)
}

// signUserAs issues a user certificate for id (whose username must be
// alice, the role's user) valid for ttl from now.
func (f *hopFixture) signUserAs(pub ssh.PublicKey, id certs.Identity, ttl time.Duration) *ssh.Certificate {
	f.t.Helper()
	now := time.Now()
	cert := &ssh.Certificate{
		Key: pub, CertType: ssh.UserCert, KeyId: "alice", ValidPrincipals: []string{"alice"},
		ValidAfter: uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(ttl).Unix()),
		Permissions: ssh.Permissions{Extensions: map[string]string{
			"permit-pty": "", "permit-port-forwarding": "", certs.IdentityExtension: certs.EncodeIdentity(id),
		}},
	}
	if err := cert.SignCert(rand.Reader, f.auth.User.Signer()); err != nil {
		f.t.Fatalf("sign user cert: %v", err)
	}
	return cert
}

// writeSSHConfig writes an ssh_config that reaches every target through the
// outer server with -J semantics (ProxyJump), using keyFile and certFile for
// both hops.
func (f *hopFixture) writeSSHConfig(keyFile, certFile string) string {
	return f.writeSSHConfigKeys(keyFile, certFile, keyFile, certFile)
}

// writeSSHConfigKeys is writeSSHConfig with one identity for the outer hop
// and another for the targets.
func (f *hopFixture) writeSSHConfigKeys(outerKey, outerCert, innerKey, innerCert string) string {
	host, port, _ := net.SplitHostPort(f.outer)
	var b strings.Builder
	fmt.Fprintf(&b, "Host bastion\n  HostName %s\n  Port %s\n  User alice\n  IdentityFile %s\n", host, port, outerKey)
	if outerCert != "" {
		fmt.Fprintf(&b, "  CertificateFile %s\n", outerCert)
	}
	fmt.Fprintf(&b, "Host * !bastion\n  ProxyJump bastion\n  User %s\n  IdentityFile %s\n", f.login, innerKey)
	if innerCert != "" {
		fmt.Fprintf(&b, "  CertificateFile %s\n", innerCert)
	}
	fmt.Fprintf(&b, "Host *\n  UserKnownHostsFile %s\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n", f.known)
	b.WriteString("  BatchMode yes\n  IdentitiesOnly yes\n  IdentityAgent none\n")
	b.WriteString("  LogLevel ERROR\n  ConnectTimeout 10\n  ControlMaster no\n  ControlPath none\n  UpdateHostKeys no\n")
	p := filepath.Join(f.t.TempDir(), "ssh_config")
	writeTestFile(f.t, p, b.String())
	return p
}

// sshTarget returns a config.Target for a test sshd.
func sshTarget(name string, s *sshdtest.Server) config.Target {
	return config.Target{Name: name, Kind: config.KindSSH, Address: s.Addr(),
		HostKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.HostKey())))}
}

// startSSHD starts a test sshd trusting only the target CA.
func startSSHD(t testing.TB, auth *certs.Authority) *sshdtest.Server {
	return sshdtest.Start(t, sshdtest.Options{TrustedUserCAKeys: []ssh.PublicKey{auth.Target.PublicKey()}})
}

// sshResult is how a client program ended.
type sshResult = testutil.Result

// ssh runs the stock ssh client with the fixture's config.
func (f *hopFixture) ssh(stdin []byte, args ...string) sshResult {
	f.t.Helper()
	return runClient(f.t, "ssh", stdin, append([]string{"-F", f.sshCfg}, args...)...)
}

func runClient(t testing.TB, bin string, stdin []byte, args ...string) sshResult {
	t.Helper()
	r, err := runClientErr(bin, stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// runClientErr runs a client program for at most two minutes; it is safe in
// goroutines other than the test's.
func runClientErr(bin string, stdin []byte, args ...string) (sshResult, error) {
	return testutil.Run(nil, stdin, bin, args...)
}

func writeTestFile(t testing.TB, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

// testWriter sends log output to t.Log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startTestOuter runs the bastion's real outer server (NewServer) on
// 127.0.0.1 with f.hop as its inner server.
func startTestOuter(t testing.TB, f *hopFixture) string {
	t.Helper()
	opts := bastion.Options{
		Authority:    f.auth,
		Policy:       f.engine,
		Audit:        f.events,
		Revocations:  f.opts.revoked,
		Handlers:     map[string]bastion.TargetHandler{bastion.HandlerSSH: f.hop, bastion.HandlerCommand: f.hop},
		HostNames:    []string{"127.0.0.1", "bastion"},
		Log:          f.hop.log,
		OwnListeners: f.own,
	}
	if f.opts.revoked != nil {
		opts.RevocationRecheck = 50 * time.Millisecond
	}
	srv, err := bastion.NewServer(opts)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	f.server = srv
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	})
	return ln.Addr().String()
}

// castFile returns the path of the recording of session id.
func (f *hopFixture) castFile(id string) string {
	f.t.Helper()
	var found string
	_ = filepath.WalkDir(f.recDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && filepath.Base(p) == id+".cast" {
			found = p
		}
		return nil
	})
	if found == "" {
		f.t.Fatalf("no recording %s.cast under the store", id)
	}
	return found
}

// lastSession returns the id of the last session.start event.
func (f *hopFixture) lastSession() string {
	f.t.Helper()
	ev := f.events.ofType(state.EventSessionStart)
	if len(ev) == 0 {
		f.t.Fatalf("no session.start audit event")
	}
	return ev[len(ev)-1].Session
}

// waitEvent waits until an audit event of typ has been seen n times.
func (f *hopFixture) waitEvent(typ string, n int) []state.Event {
	f.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		ch := f.events.watch()
		if ev := f.events.ofType(typ); len(ev) >= n {
			return ev
		}
		select {
		case <-ch:
		case <-timeout:
			f.t.Fatalf("no %d %s audit events", n, typ)
		}
	}
}

// innerClient dials the outer server and, through a direct-tcpip channel to
// target, runs an x/crypto SSH client on the inner hop.
func (f *hopFixture) innerClient(t testing.TB, target string) *ssh.Client {
	t.Helper()
	signer, _ := ssh.NewSignerFromKey(f.userKey)
	cs, _ := ssh.NewCertSigner(f.userCert, signer)
	hostCA := f.auth.Host.PublicKey()
	hkcb := (&ssh.CertChecker{IsHostAuthority: func(k ssh.PublicKey, _ string) bool {
		return bytes.Equal(k.Marshal(), hostCA.Marshal())
	}}).CheckHostKey
	outer, err := ssh.Dial("tcp", f.outer, &ssh.ClientConfig{User: "alice", Auth: []ssh.AuthMethod{ssh.PublicKeys(cs)},
		HostKeyCallback: hkcb, Config: ssh.Config{Ciphers: []string{ssh.CipherAES128GCM}}})
	if err != nil {
		t.Fatalf("dial outer: %v", err)
	}
	t.Cleanup(func() { outer.Close() })
	nc, err := outer.Dial("tcp", net.JoinHostPort(target, "22"))
	if err != nil {
		t.Fatalf("direct-tcpip to %s: %v", target, err)
	}
	conn, chans, reqs, err := ssh.NewClientConn(nc, net.JoinHostPort(target, "22"), &ssh.ClientConfig{User: f.login,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(cs)}, HostKeyCallback: hkcb, Config: ssh.Config{Ciphers: []string{ssh.CipherAES128GCM}}})
	if err != nil {
		t.Fatalf("inner handshake: %v", err)
	}
	c := ssh.NewClient(conn, chans, reqs)
	t.Cleanup(func() { c.Close() })
	return c
}

// cutProxy is a TCP proxy to a target whose connections a test can cut, to
// simulate a lost target, or freeze, to simulate a path that died silently.
// It counts the connections it accepted and those still open, so that a
// test can tell fresh logins to the target from reused ones.
type cutProxy struct {
	addr     string
	mu       sync.Mutex
	to       string
	pairs    []*proxyPair
	accepted int
	open     int
	changed  chan struct{} // closed and replaced when accepted or open change
}

// proxyPair is one proxied connection: c from the client, u to the target.
type proxyPair struct {
	c, u   net.Conn
	frozen atomic.Bool // u is closed, c is kept open and hears nothing more
}

func startCutProxy(t testing.TB, to string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{addr: ln.Addr().String(), to: to, changed: make(chan struct{})}
	t.Cleanup(func() {
		ln.Close()
		p.cut()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			to := p.to
			p.mu.Unlock()
			u, err := net.Dial("tcp", to)
			if err != nil {
				c.Close()
				continue
			}
			pair := &proxyPair{c: c, u: u}
			p.mu.Lock()
			p.pairs = append(p.pairs, pair)
			p.note(1, 1)
			p.mu.Unlock()
			var both sync.WaitGroup
			both.Go(func() { _, _ = io.Copy(u, c); u.Close() })
			both.Go(func() {
				_, _ = io.Copy(c, u)
				if !pair.frozen.Load() {
					c.Close()
				}
			})
			go func() { // ends with the two copies above
				both.Wait()
				p.mu.Lock()
				p.note(0, -1)
				p.mu.Unlock()
			}()
		}
	}()
	return p
}

// setTo sends connections accepted from now on to addr.
func (p *cutProxy) setTo(addr string) {
	p.mu.Lock()
	p.to = addr
	p.mu.Unlock()
}

// cut closes every proxied connection.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pr := range p.pairs {
		pr.c.Close()
		pr.u.Close()
	}
	p.pairs = nil
}

// freeze closes the target side of every proxied connection but keeps the
// client side open and silent: the client is not told, as when a path dies
// without a reset. Connections accepted later work.
func (p *cutProxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pr := range p.pairs {
		pr.frozen.Store(true)
		pr.u.Close()
	}
}

// counts returns the connections accepted so far and those still open.
func (p *cutProxy) counts() (accepted, open int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted, p.open
}

// waitOpen waits until exactly n proxied connections are open.
func (p *cutProxy) waitOpen(t testing.TB, n int) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		p.mu.Lock()
		open, ch := p.open, p.changed
		p.mu.Unlock()
		if open == n {
			return
		}
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("proxy: %d connections open; want %d", open, n)
		}
	}
}

// note changes the counts by accepted and open. Called with p.mu held.
func (p *cutProxy) note(accepted, open int) {
	p.accepted += accepted
	p.open += open
	close(p.changed)
	p.changed = make(chan struct{})
}

// breakRecorderSpool makes the recorder's spool directory unusable: it is
// replaced by a file (root ignores permissions, so chmod would not do).
func breakRecorderSpool(t testing.TB, f *hopFixture) {
	t.Helper()
	if err := os.RemoveAll(f.spoolDir); err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, f.spoolDir, "not a directory")
}

// bgResult is what sshInBackground delivers when the client exits.
type bgResult struct {
	r   sshResult
	err error
}

// sshInBackground runs the stock ssh client to target with command while
// the test goes on (to kill or shut something down mid-session); the result
// arrives on the channel when the client exits.
func (f *hopFixture) sshInBackground(target, command string) <-chan bgResult {
	done := make(chan bgResult, 1)
	go func() {
		r, err := runClientErr("ssh", nil, "-F", f.sshCfg, target, command)
		done <- bgResult{r, err}
	}()
	return done
}
