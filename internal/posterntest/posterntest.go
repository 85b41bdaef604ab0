package posterntest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/sshdtest"
	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/server"
	"github.com/posternhq/postern/state"
)

// Service is a server.Service running in the test's process.
type Service struct {
	t testing.TB
	// Config is the configuration the service started with (defaults
	// applied; listeners, data dir, state and storage filled in).
	Config *config.Config
	// SSHAddr and HTTPURL are where the service listens.
	SSHAddr, HTTPURL string
	// DataDir is the service's data directory.
	DataDir string
	// Recordings is the directory of the file recording store.
	Recordings string
	// Authority holds the service's certificate authorities (loaded from
	// the data directory the service generated them in).
	Authority *certs.Authority
	// State is a second handle on the service's state store, for checks.
	State *state.Store

	logs   *testutil.LockedBuffer
	hup    chan struct{}
	reload chan *config.Config
}

// Start runs a postern with cfg: listeners on 127.0.0.1 port 0, a data dir,
// SQLite state and file recordings in temporary directories unless cfg sets
// them, defaults applied and the result validated. The test's cleanup
// stops the service and waits for it.
func Start(t testing.TB, cfg *config.Config) *Service {
	t.Helper()
	c := *cfg
	if c.Listen.SSH == "" {
		c.Listen.SSH = "127.0.0.1:0"
	}
	if c.Listen.HTTP == "" {
		c.Listen.HTTP = "127.0.0.1:0"
	}
	if c.DataDir == "" {
		c.DataDir = t.TempDir()
	}
	if c.State == "" {
		c.State = "sqlite://" + filepath.Join(c.DataDir, "state.db")
	}
	rec := ""
	if c.Storage == "" {
		rec = filepath.Join(t.TempDir(), "recordings")
		c.Storage = "file://" + rec
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("posterntest: config: %v", err)
	}
	s := &Service{t: t, DataDir: c.DataDir, Recordings: rec, logs: &testutil.LockedBuffer{},
		hup: make(chan struct{}), reload: make(chan *config.Config, 1)}
	type addrs struct{ ssh, http net.Addr }
	ready := make(chan addrs, 1)
	svc, err := server.NewService(&c, server.ServiceOptions{
		Version: "test",
		Log:     slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Ready:   func(sshAddr, httpAddr net.Addr) { ready <- addrs{sshAddr, httpAddr} },
		Reload: func() (*config.Config, error) {
			select {
			case nc := <-s.reload:
				return nc, nil
			default:
				return nil, errors.New("posterntest: no configuration to reload")
			}
		},
	})
	if err != nil {
		t.Fatalf("posterntest: NewService: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx, s.hup) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("posterntest: service ended with %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Errorf("posterntest: service did not stop")
		}
		if t.Failed() {
			t.Logf("postern log:\n%s", s.logs.String())
		}
	})
	select {
	case a := <-ready:
		s.SSHAddr, s.HTTPURL = a.ssh.String(), "http://"+a.http.String()
	case err := <-done:
		t.Fatalf("posterntest: service did not start: %v\n%s", err, s.logs.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("posterntest: service not ready\n%s", s.logs.String())
	}
	s.Config = &c
	if s.Authority, err = certs.LoadAuthority(c.CA, c.DataDir); err != nil {
		t.Fatalf("posterntest: load the service's authorities: %v", err)
	}
	if s.State, err = state.Open(context.Background(), c.State, state.Options{}); err != nil {
		t.Fatalf("posterntest: open the service's state store: %v", err)
	}
	t.Cleanup(func() { _ = s.State.Close() })
	return s
}

// Logs returns what the service logged so far.
func (s *Service) Logs() string { return s.logs.String() }

// Reload makes the service reload cfg (as on SIGHUP) and waits until the
// reload is audited.
func (s *Service) Reload(cfg *config.Config) {
	s.t.Helper()
	c := *cfg
	c.SetDefaults()
	before := len(s.Events(state.EventConfigReload))
	s.reload <- &c
	s.hup <- struct{}{}
	s.WaitEvents(state.EventConfigReload, before+1)
}

// Authority generates (or loads) the certificate authorities in dataDir the
// way the service will: a test that needs the CAs before the service
// starts (to start sshd targets that trust its target CA) calls it with
// the data dir it then gives Start.
func Authority(t testing.TB, dataDir string) *certs.Authority {
	t.Helper()
	a, err := certs.LoadAuthority(config.CAs{}, dataDir)
	if err != nil {
		t.Fatalf("posterntest: certificate authorities: %v", err)
	}
	return a
}

// SSHD starts a test sshd that trusts only auth's target CA, and returns it
// with its inventory entry named name.
func SSHD(t testing.TB, auth *certs.Authority, name string) (*sshdtest.Server, config.Target) {
	t.Helper()
	d := sshdtest.Start(t, sshdtest.Options{TrustedUserCAKeys: []ssh.PublicKey{auth.Target.PublicKey()}})
	return d, SSHTarget(name, d)
}

// SSHTarget is the inventory entry of a test sshd, pinned to its host key.
func SSHTarget(name string, d *sshdtest.Server) config.Target {
	return config.Target{Name: name, Kind: config.KindSSH, Address: d.Addr(),
		HostKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(d.HostKey())))}
}

// Events returns the audit events of type typ ("" for all) in order.
func (s *Service) Events(typ string) []state.Event {
	s.t.Helper()
	evs, err := s.State.Events(context.Background(), 0, 1<<20)
	if err != nil {
		s.t.Fatalf("posterntest: audit events: %v", err)
	}
	var out []state.Event
	for _, e := range evs {
		if typ == "" || e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// WaitEvents waits up to 30 seconds until n audit events of type typ exist,
// and returns them.
func (s *Service) WaitEvents(typ string, n int) []state.Event {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if ev := s.Events(typ); len(ev) >= n {
			return ev
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("posterntest: %d %s audit events after 30s; want %d", len(s.Events(typ)), typ, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitEvent waits up to 30 seconds for an audit event of type typ that
// match accepts (any if nil).
func (s *Service) WaitEvent(typ string, match func(state.Event) bool) state.Event {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, e := range s.Events(typ) {
			if match == nil || match(e) {
				return e
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("posterntest: no matching %s audit event after 30s", typ)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CastFile returns the path of session id's recording in the file store.
func (s *Service) CastFile(id string) string {
	s.t.Helper()
	if s.Recordings == "" {
		s.t.Fatalf("posterntest: the service does not record to its own file store")
	}
	var found string
	_ = filepath.WalkDir(s.Recordings, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && filepath.Base(p) == id+".cast" {
			found = p
		}
		return nil
	})
	if found == "" {
		s.t.Fatalf("posterntest: no recording %s.cast", id)
	}
	return found
}

// Cast decodes session id's recording.
func (s *Service) Cast(id string) (recorder.Header, []recorder.Event) {
	s.t.Helper()
	f, err := os.Open(s.CastFile(id))
	if err != nil {
		s.t.Fatal(err)
	}
	defer f.Close()
	d := recorder.NewDecoder(f)
	h, err := d.Header()
	if err != nil {
		s.t.Fatalf("posterntest: cast header: %v", err)
	}
	var evs []recorder.Event
	for {
		e, err := d.Next()
		if errors.Is(err, io.EOF) {
			return h, evs
		}
		if err != nil {
			s.t.Fatalf("posterntest: cast event: %v", err)
		}
		evs = append(evs, e)
	}
}

// Markers returns the marker labels of session id's recording, one a line.
func (s *Service) Markers(id string) string {
	s.t.Helper()
	_, evs := s.Cast(id)
	var ms []string
	for _, e := range evs {
		if e.Code == "m" {
			ms = append(ms, e.Data)
		}
	}
	return strings.Join(ms, "\n")
}

// User is a person or agent with a user certificate from the service's CA.
type User struct {
	// Identity is who the certificate says the user is.
	Identity certs.Identity
	// Cert is the user certificate.
	Cert *ssh.Certificate
	// KeyFile and CertFile hold the private key and the certificate.
	KeyFile, CertFile string
	// SSHConfig reaches the bastion as host "bastion" and every other host
	// through it (ProxyJump), logging in to targets as Login.
	SSHConfig string
	// Login is the login on targets.
	Login string
	// Signer is the private key paired with the certificate.
	Signer ssh.Signer

	t          testing.TB
	api        string // the service's HTTP base URL
	knownHosts string
}

// User issues a certificate for id from the service's user CA, valid for
// an hour, and writes an ssh_config that logs in to targets as login.
func (s *Service) User(id certs.Identity, login string) *User {
	s.t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		s.t.Fatal(err)
	}
	pub, err := ssh.NewPublicKey(key.Public())
	if err != nil {
		s.t.Fatal(err)
	}
	now := time.Now()
	cert := &ssh.Certificate{
		Key: pub, CertType: ssh.UserCert, KeyId: id.Username, ValidPrincipals: []string{id.Username},
		ValidAfter: uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(time.Hour).Unix()),
		Permissions: ssh.Permissions{Extensions: map[string]string{
			"permit-pty": "", "permit-port-forwarding": "", certs.IdentityExtension: certs.EncodeIdentity(id),
		}},
	}
	if err := cert.SignCert(rand.Reader, s.Authority.User.Signer()); err != nil {
		s.t.Fatalf("posterntest: sign user certificate: %v", err)
	}
	return s.UserWithCert(key, cert, login)
}

// UserWithCert is the user who holds key and cert (a certificate postern
// issued, through /v1/certs for instance), with an ssh_config that logs in
// to the bastion as the certificate's identity and to targets as login.
func (s *Service) UserWithCert(key ed25519.PrivateKey, cert *ssh.Certificate, login string) *User {
	s.t.Helper()
	id, err := certs.IdentityFromCert(cert)
	if err != nil {
		s.t.Fatalf("posterntest: %v", err)
	}
	signer, err := ssh.NewSignerFromKey(key)
	if err != nil {
		s.t.Fatal(err)
	}
	u := &User{Identity: id, Cert: cert, Login: login, Signer: signer, t: s.t, api: s.HTTPURL}
	u.KeyFile, u.CertFile = sshdtest.WriteClientKey(s.t, key, cert)
	dir := s.t.TempDir()
	u.knownHosts = filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(u.knownHosts, []byte(s.Authority.HostCALine()+"\n"), 0o600); err != nil {
		s.t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(s.SSHAddr)
	var b strings.Builder
	fmt.Fprintf(&b, "Host bastion\n  HostName %s\n  Port %s\n  User %s\n", host, port, id.Username)
	fmt.Fprintf(&b, "Host * !bastion\n  ProxyJump bastion\n  User %s\n", login)
	fmt.Fprintf(&b, "Host *\n  IdentityFile %s\n  CertificateFile %s\n", u.KeyFile, u.CertFile)
	fmt.Fprintf(&b, "  UserKnownHostsFile %s\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n", u.knownHosts)
	b.WriteString("  BatchMode yes\n  IdentitiesOnly yes\n  IdentityAgent none\n")
	b.WriteString("  LogLevel ERROR\n  ConnectTimeout 10\n  ControlMaster no\n  ControlPath none\n  UpdateHostKeys no\n")
	u.SSHConfig = filepath.Join(dir, "ssh_config")
	if err := os.WriteFile(u.SSHConfig, []byte(b.String()), 0o600); err != nil {
		s.t.Fatal(err)
	}
	return u
}

// TrustHostKey adds a known_hosts line to the user's known hosts (for a
// passthrough target, whose own host key the client checks).
func (u *User) TrustHostKey(line string) {
	u.t.Helper()
	f, err := os.OpenFile(u.knownHosts, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		u.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(strings.TrimSpace(line) + "\n"); err != nil {
		u.t.Fatal(err)
	}
}

// API sends an HTTP API request to the service signed with the user's
// certificate (as postern's CLI signs them), with body as JSON (none if
// nil), decodes a JSON answer into out (if not nil) and returns the status.
// It is safe in goroutines other than the test's (it reports with Errorf).
func (u *User) API(method, path string, body, out any) int {
	u.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			u.t.Errorf("posterntest: encode %T: %v", body, err)
			return 0
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, u.api+path, rd)
	if err != nil {
		u.t.Errorf("posterntest: %v", err)
		return 0
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if err := certs.SignAPIRequest(req, u.Cert, u.Signer, time.Now()); err != nil {
		u.t.Errorf("posterntest: sign: %v", err)
		return 0
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		u.t.Errorf("posterntest: %s %s: %v", method, path, err)
		return 0
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			u.t.Errorf("posterntest: %s %s: decode the answer: %v", method, path, err)
		}
	}
	return resp.StatusCode
}

// Profile writes a login profile directory for the user, as postern login
// would (key, certificate, known_hosts with the host CA, ssh_config,
// profile.json), and returns it: for client commands and `postern mcp`.
func (u *User) Profile(s *Service) string {
	u.t.Helper()
	dir := u.t.TempDir()
	key, err := os.ReadFile(u.KeyFile)
	if err != nil {
		u.t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(s.SSHAddr)
	pf, _ := json.Marshal(map[string]any{"bastion": s.HTTPURL, "bastion_host": host, "ssh_address": net.JoinHostPort(host, port),
		"username": u.Identity.Username, "principals": u.Cert.ValidPrincipals,
		"valid_after": time.Unix(int64(u.Cert.ValidAfter), 0).UTC(), "valid_before": time.Unix(int64(u.Cert.ValidBefore), 0).UTC()})
	for name, data := range map[string][]byte{
		"id_ed25519": key, "id_ed25519-cert.pub": ssh.MarshalAuthorizedKey(u.Cert),
		"known_hosts": []byte(s.Authority.HostCALine() + "\n"), "ssh_config": []byte("# written by posterntest\n"),
		"profile.json": pf,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			u.t.Fatal(err)
		}
	}
	return dir
}

// SSH runs the stock ssh client with the user's config and args (and env
// entries such as POSTERN_JSON_ERRORS=1, which ssh sends) and waits for it.
func (u *User) SSH(env []string, stdin []byte, args ...string) testutil.Result {
	u.t.Helper()
	r, err := u.run(env, stdin, args)
	if err != nil {
		u.t.Fatal(err)
	}
	return r
}

// SSHAsync runs ssh like SSH, in the background.
func (u *User) SSHAsync(env []string, args ...string) <-chan testutil.Result {
	ch := make(chan testutil.Result, 1)
	go func() {
		r, err := u.run(env, nil, args)
		if err != nil {
			r = testutil.Result{Code: -1, Stderr: []byte(err.Error())}
		}
		ch <- r
	}()
	return ch
}

func (u *User) run(env []string, stdin []byte, args []string) (testutil.Result, error) {
	sshArgs := []string{"-F", u.SSHConfig}
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		sshArgs = append(sshArgs, "-o", "SendEnv="+name)
	}
	return testutil.Run(env, stdin, "ssh", append(sshArgs, args...)...)
}

// PTY runs ssh with the user's config in a pty of cols x rows.
func (u *User) PTY(t *testing.T, cols, rows uint16, args ...string) *testutil.PTY {
	t.Helper()
	return testutil.StartPTY(t, cols, rows, "ssh", append([]string{"-F", u.SSHConfig}, args...)...)
}
