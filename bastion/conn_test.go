package bastion

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/policy"
	"github.com/posternhq/postern/state"
)

// waitClosed waits until the server closes nc (a read returns an error).
func waitClosed(t *testing.T, nc net.Conn, within time.Duration) {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(within))
	buf := make([]byte, 4096)
	for {
		_, err := nc.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection still open after %v", within)
		}
		return
	}
}

func TestHandshakeTimeout(t *testing.T) {
	f := newBX(t, bxOptions{mod: func(o *Options) { o.Config.HandshakeTimeout = config.Duration(300 * time.Millisecond) }})
	nc, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	start := time.Now()
	waitClosed(t, nc, 10*time.Second) // the client never sends its version
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("closed after %v; want about the 300ms handshake timeout", d)
	}
}

func TestConnectionLimits(t *testing.T) {
	f := newBX(t, bxOptions{mod: func(o *Options) { o.Config.MaxConnectionsPerSource = 2 }})
	c1, _, err := f.dial(certSpec{}, f.login)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.dial(certSpec{}, f.login); err != nil {
		t.Fatal(err)
	}
	nc, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	waitClosed(t, nc, 10*time.Second)
	if got := counterValue(t, f.srv.metrics.connsRefused.WithLabelValues("limit_source")); got != 1 {
		t.Errorf("refused{limit_source} = %v; want 1", got)
	}
	c1.Close()
	// Once a connection ends there is room again.
	deadline := time.Now().Add(10 * time.Second)
	for f.srv.ActiveConnections() > 1 {
		if time.Now().After(deadline) {
			t.Fatalf("connection count stays %d", f.srv.ActiveConnections())
		}
		time.Sleep(10 * time.Millisecond) // polling the count with a deadline
	}
	if _, _, err := f.dial(certSpec{}, f.login); err != nil {
		t.Errorf("dial after a slot freed: %v", err)
	}

	g := newBX(t, bxOptions{mod: func(o *Options) { o.Config.MaxConnections = 1 }})
	if _, _, err := g.dial(certSpec{}, g.login); err != nil {
		t.Fatal(err)
	}
	if _, _, err := g.dial(certSpec{}, g.login); err == nil {
		t.Errorf("second connection accepted over the global limit")
	}
	if got := counterValue(t, g.srv.metrics.connsRefused.WithLabelValues("limit_global")); got != 1 {
		t.Errorf("refused{limit_global} = %v; want 1", got)
	}
}

func TestIdleTimeout(t *testing.T) {
	f := newBX(t, bxOptions{mod: func(o *Options) { o.Config.IdleTimeout = config.Duration(400 * time.Millisecond) }})
	c, _, err := f.dial(certSpec{}, f.login)
	if err != nil {
		t.Fatal(err)
	}
	// Traffic keeps it open past the timeout.
	for range 6 {
		if _, _, err := c.SendRequest("keepalive@openssh.com", true, nil); err != nil {
			t.Fatalf("keepalive: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // spacing traffic below the idle timeout is the point of this test
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("idle connection not closed")
	}
}

func TestConnectionEndsAtCertExpiry(t *testing.T) {
	f := newBX(t, bxOptions{})
	c, _, err := f.dial(certSpec{mod: func(c *ssh.Certificate) {
		c.ValidBefore = uint64(time.Now().Add(2 * time.Second).Unix())
	}}, f.login)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("connection outlived its certificate")
	}
}

func TestMaxSessionEndsForward(t *testing.T) {
	echo := testutil.EchoServer(t)
	f := newBX(t, bxOptions{})
	cfg := devConfig(f.login, config.Target{Name: "echo", Kind: config.KindTCP, Address: echo})
	cfg.Roles[0].MaxSession = config.Duration(500 * time.Millisecond)
	eng, err := policy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.srv.SetPolicy(eng)
	c, _, err := f.dial(certSpec{}, f.login)
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(echo)
	ch, err := openDirect(c, "echo", atoi(port))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, ch)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("forward outlived max_session")
	}
}

func TestShutdownDrainsThenCloses(t *testing.T) {
	f := newBX(t, bxOptions{})
	c, _, err := f.dial(certSpec{}, f.login)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := f.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown with an open connection = %v; want deadline exceeded", err)
	}
	if err := c.Wait(); err == nil {
		t.Logf("client saw a clean close")
	}
	if n := f.srv.ActiveConnections(); n != 0 {
		t.Errorf("%d connections after Shutdown", n)
	}
	if _, err := net.Dial("tcp", f.addr); err == nil {
		t.Errorf("listener still accepts after Shutdown")
	}
}

func TestHostKeyFileAndCert(t *testing.T) {
	dir := t.TempDir()
	auth, err := certs.LoadAuthority(config.CAs{}, dir)
	if err != nil {
		t.Fatal(err)
	}
	eng, _ := policy.New(&config.Config{})
	path := filepath.Join(dir, "keys", "host_key")
	s1, err := NewServer(Options{Authority: auth, Policy: eng, HostKeyFile: path, HostNames: []string{"bastion.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("host key file: %v, mode %v; want 0600", err, st.Mode().Perm())
	}
	s2, err := NewServer(Options{Authority: auth, Policy: eng, HostKeyFile: path})
	if err != nil {
		t.Fatal(err)
	}
	if string(s1.HostKey().Marshal()) != string(s2.HostKey().Marshal()) {
		t.Errorf("the host key was not reused from the file")
	}
	cert := s1.HostCertificate()
	if cert == nil || cert.CertType != ssh.HostCert || cert.ValidPrincipals[0] != "bastion.example.com" || !auth.Host.IsTrusted(cert.SignatureKey) {
		t.Fatalf("host certificate = %+v", cert)
	}
	if ttl := time.Until(time.Unix(int64(cert.ValidBefore), 0)); ttl < 23*time.Hour || ttl > 25*time.Hour {
		t.Errorf("host certificate valid for %v; want 24h", ttl)
	}
	// Near expiry the certificate is re-signed.
	s1.now = func() time.Time { return time.Now().Add(13 * time.Hour) }
	if _, err := s1.hostSigners(); err != nil {
		t.Fatal(err)
	}
	if s1.HostCertificate().Serial == cert.Serial {
		t.Errorf("host certificate not refreshed 11h before expiry")
	}
	if s2.HostCertificate() != nil {
		t.Errorf("host certificate without host names")
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

func TestChannelLimitPerConnection(t *testing.T) {
	echo := testutil.EchoServer(t)
	f := newBX(t, bxOptions{})
	f.srv.maxChans = 3
	eng, err := policy.New(devConfig(f.login, config.Target{Name: "echo", Kind: config.KindTCP, Address: echo}))
	if err != nil {
		t.Fatal(err)
	}
	f.srv.SetPolicy(eng)
	c, _, err := f.dial(certSpec{}, f.login)
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(echo)
	var open []ssh.Channel
	for range 3 {
		ch, err := openDirect(c, "echo", atoi(port))
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, ch)
	}
	_, err = openDirect(c, "echo", atoi(port))
	var oce *ssh.OpenChannelError
	if !errors.As(err, &oce) || oce.Reason != ssh.ResourceShortage {
		t.Fatalf("fourth channel: %v; want resource shortage", err)
	}
	open[0].Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ch, err := openDirect(c, "echo", atoi(port))
		if err == nil {
			ch.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no channel after one closed: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // the server frees the slot when its splice ends
	}
}

// TestRevocationEndsOpenConnection: revoking the certificate of an open
// connection closes it at the next periodic check.
func TestRevocationEndsOpenConnection(t *testing.T) {
	f := newBX(t, bxOptions{mod: func(o *Options) { o.RevocationRecheck = 100 * time.Millisecond }})
	c, cert, err := f.dial(certSpec{}, f.login)
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := f.dial(certSpec{}, f.login)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store.Revoke(context.Background(), cert.Serial, "test", "admin@example.com"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("connection with a revoked certificate stays open")
	}
	f.waitEvent(state.EventAuthFailure, hasDetail("phase", "open_connection"))
	if ok, _, err := other.SendRequest("keepalive@openssh.com", true, nil); err != nil || !ok {
		t.Errorf("the other connection was closed too: %v %v", ok, err)
	}
}
