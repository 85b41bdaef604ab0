package innerhop

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/posternhq/postern/internal/testutil"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/sshdtest"
	"github.com/posternhq/postern/policy"
	"github.com/posternhq/postern/state"
)

// reuseTarget starts a test sshd and a counting proxy in front of it and
// makes it target web-1. Every login postern makes to web-1 is one
// connection accepted by the proxy.
func reuseTarget(t *testing.T, f *hopFixture) (*sshdtest.Server, *cutProxy) {
	t.Helper()
	sshd := startSSHD(t, f.auth)
	proxy := startCutProxy(t, sshd.Addr())
	tg := sshTarget("web-1", sshd)
	tg.Address = proxy.addr
	f.setTargets(tg)
	return sshd, proxy
}

// reuseCount returns postern_upstream_reuse_total{result}.
func reuseCount(f *hopFixture, result string) int {
	return int(promtest.ToFloat64(f.hop.metrics.reuse.WithLabelValues(result)))
}

// wantAccepted checks how many connections (logins) the proxy accepted.
func wantAccepted(t *testing.T, p *cutProxy, want int) {
	t.Helper()
	if got, _ := p.counts(); got != want {
		t.Errorf("logins to the target: got %d; want %d", got, want)
	}
}

// wantRun runs command on web-1 with the stock client and checks its output.
func wantRun(t *testing.T, f *hopFixture, cfg, command, want string) {
	t.Helper()
	r := runClient(t, "ssh", nil, "-F", cfg, "web-1", command)
	if r.Code != 0 || string(r.Stdout) != want {
		t.Fatalf("ssh web-1 %q: exit %d stdout %q stderr %q; want exit 0 and %q", command, r.Code, r.Stdout, r.Stderr, want)
	}
}

var acceptedRe = regexp.MustCompile(`Accepted publickey for \S+ from .* ID (\S+) `)

// TestUpstreamReuseSequentialHops: three ssh -J hops in a row by the same
// identity use one login to the target (one TCP connection, one "Accepted
// publickey" in sshd's log, naming the first session), each session is
// audited and recorded on its own, and the audit says which login it used.
func TestUpstreamReuseSequentialHops(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{record: "required"})
	sshd, proxy := reuseTarget(t, f)

	words := []string{"first", "second", "third"}
	for _, w := range words {
		wantRun(t, f, f.sshCfg, "echo "+w, w+"\n")
	}
	wantAccepted(t, proxy, 1)
	if _, open := proxy.counts(); open != 1 {
		t.Errorf("connections to the target after the hops: got %d; want 1 (the idle login)", open)
	}

	starts := f.waitEvent(state.EventSessionStart, len(words))
	wantLogin := "alice/" + starts[0].Session
	for i, e := range starts {
		want := map[bool]string{true: "fresh", false: "reused"}[i == 0]
		if e.Details["upstream"] != want || e.Details["upstream_login"] != wantLogin {
			t.Errorf("session.start %d: upstream %v, upstream_login %v; want %s and %s",
				i, e.Details["upstream"], e.Details["upstream_login"], want, wantLogin)
		}
	}
	// The target logged one login, named by the first session.
	line := sshd.WaitLog(t, acceptedRe, 10*time.Second)
	if m := acceptedRe.FindStringSubmatch(line); m[1] != wantLogin {
		t.Errorf("sshd logged key id %q; want %q", m[1], wantLogin)
	}
	if n := len(acceptedRe.FindAllString(sshd.Log(), -1)); n != 1 {
		t.Errorf("sshd logged %d logins; want 1", n)
	}
	// Each session has its own recording with only its own output.
	ends := f.waitEvent(state.EventSessionEnd, len(words))
	for i, e := range ends {
		if e.Details["exit_status"] != 0 || e.Details["recorded"] != true {
			t.Errorf("session.end %d: %v; want exit 0, recorded", i, e.Details)
		}
	}
	for i, e := range starts {
		out := string(f.checkCast(e.Session).output)
		for j, w := range words {
			if got := strings.Contains(out, w); got != (i == j) {
				t.Errorf("recording of session %d holds %q: %v; want %v (output %q)", i, w, got, i == j, out)
			}
		}
	}
	if hit, miss := reuseCount(f, reuseHit), reuseCount(f, reuseMiss); hit != 2 || miss != 1 {
		t.Errorf("reuse metric: hit %d miss %d; want 2 and 1", hit, miss)
	}
}

// TestUpstreamReuseKey: a pooled login goes only to an inner hop of the same
// identity and login.
func TestUpstreamReuseKey(t *testing.T) {
	tests := []struct {
		name      string
		identity  *certs.Identity // of the second hop; alice's if nil
		login     string          // of the second hop; the test login if empty
		wantReuse bool
	}{
		{name: "same identity and login", wantReuse: true},
		{name: "other identity with the same username",
			identity: &certs.Identity{Issuer: "other-issuer", Subject: "alice-elsewhere", Username: "alice", Kind: certs.KindHuman}},
		{name: "other login", login: "nobody"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newHopFixture(t, fixtureOpts{logins: []string{"nobody"}})
			_, proxy := reuseTarget(t, f)
			wantRun(t, f, f.sshCfg, "id -un", f.login+"\n")

			cfg := f.sshCfg
			if tt.identity != nil {
				keyFile, certFile := sshdtest.WriteClientKey(t, f.userKey, f.signUserAs(f.userPub, *tt.identity, time.Hour))
				cfg = f.writeSSHConfig(keyFile, certFile)
			}
			args := []string{"-F", cfg}
			if tt.login != "" {
				args = append(args, "-l", tt.login)
			}
			r := runClient(t, "ssh", nil, append(args, "web-1", "id -un")...)
			// On a reused login the command runs as the test login; as
			// nobody, whose shell refuses commands, it does not.
			ranAsFirst := string(r.Stdout) == f.login+"\n"
			if ranAsFirst != (tt.login == "") {
				t.Errorf("second hop printed %q (exit %d, stderr %q); ran as %s: %v", r.Stdout, r.Code, r.Stderr, f.login, ranAsFirst)
			}
			wantLogins := 2
			if tt.wantReuse {
				wantLogins = 1
			}
			wantAccepted(t, proxy, wantLogins)
		})
	}
}

// TestUpstreamReuseIdleExpiry: an idle login is closed after Idle, and the
// next hop logs in afresh.
func TestUpstreamReuseIdleExpiry(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{reuse: config.UpstreamReuse{Idle: config.Duration(300 * time.Millisecond)}})
	_, proxy := reuseTarget(t, f)
	wantRun(t, f, f.sshCfg, "echo one", "one\n")
	proxy.waitOpen(t, 0) // closed by the pool after Idle
	if n := reuseCount(f, reuseExpired); n != 1 {
		t.Errorf("expired logins: got %d; want 1", n)
	}
	wantRun(t, f, f.sshCfg, "echo two", "two\n")
	wantAccepted(t, proxy, 2)
}

// TestUpstreamReuseMaxAge: a login past MaxAge is not handed out again.
func TestUpstreamReuseMaxAge(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{reuse: config.UpstreamReuse{MaxAge: config.Duration(time.Nanosecond)}})
	_, proxy := reuseTarget(t, f)
	wantRun(t, f, f.sshCfg, "echo one", "one\n")
	proxy.waitOpen(t, 0) // too old to go back to the pool
	wantRun(t, f, f.sshCfg, "echo two", "two\n")
	wantAccepted(t, proxy, 2)
}

// TestUpstreamReuseDisabled: with reuse disabled every hop logs in afresh and
// its login is closed when it ends.
func TestUpstreamReuseDisabled(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{reuse: config.UpstreamReuse{Disabled: true}})
	_, proxy := reuseTarget(t, f)
	for i, w := range []string{"one", "two"} {
		wantRun(t, f, f.sshCfg, "echo "+w, w+"\n")
		proxy.waitOpen(t, 0)
		wantAccepted(t, proxy, i+1)
	}
	starts := f.waitEvent(state.EventSessionStart, 2)
	for i, e := range starts {
		if e.Details["upstream"] != "fresh" {
			t.Errorf("session.start %d: upstream %v; want fresh", i, e.Details["upstream"])
		}
	}
}

// revocationFlag is a revocation list that revokes every certificate while
// set.
type revocationFlag struct{ revoked atomic.Bool }

func (r *revocationFlag) IsRevoked(context.Context, uint64) (bool, error) {
	return r.revoked.Load(), nil
}

// TestUpstreamReuseDirtyHopsCloseTheLogin: a hop that forwarded a remote
// port, whose session was ended by policy, or whose certificate was revoked
// mid-session does not give its login back; the next hop logs in afresh.
func TestUpstreamReuseDirtyHopsCloseTheLogin(t *testing.T) {
	echo := testutil.EchoServer(t)
	tests := []struct {
		name string
		opts fixtureOpts
		// dirty runs the hop that must not give its login back.
		dirty func(t *testing.T, f *hopFixture, rev *revocationFlag)
	}{
		{
			name: "remote forward",
			opts: fixtureOpts{forwarding: config.Forwarding{Remote: true, TargetAllow: []string{"127.0.0.1:*", "[::1]:*"}}},
			dirty: func(t *testing.T, f *hopFixture, _ *revocationFlag) {
				r := f.ssh(nil, "-o", "ExitOnForwardFailure=yes", "-R", "0:"+echo, "web-1", "echo forwarded")
				if r.Code != 0 || string(r.Stdout) != "forwarded\n" {
					t.Fatalf("ssh -R: exit %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
				}
			},
		},
		{
			name: "session ended by policy",
			opts: fixtureOpts{interactive: policy.InteractiveDeny},
			dirty: func(t *testing.T, f *hopFixture, _ *revocationFlag) {
				if r := f.ssh(nil, "-T", "web-1"); r.Code != ExitDenied {
					t.Fatalf("shell for an exec-only role: exit %d (stderr %q); want %d", r.Code, r.Stderr, ExitDenied)
				}
			},
		},
		{
			name: "certificate revoked mid-session",
			opts: fixtureOpts{revoked: &revocationFlag{}},
			dirty: func(t *testing.T, f *hopFixture, rev *revocationFlag) {
				done := f.sshInBackground("web-1", "echo started; exec sleep 60")
				f.waitEvent(state.EventSessionStart, 2)
				rev.revoked.Store(true)
				res := <-done
				if res.err != nil {
					t.Fatal(res.err)
				}
				if res.r.Code == 0 {
					t.Fatalf("revoked session exited 0; want it ended")
				}
				rev.revoked.Store(false)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newHopFixture(t, tt.opts)
			_, proxy := reuseTarget(t, f)
			rev, _ := tt.opts.revoked.(*revocationFlag)
			// A clean hop first: its login is pooled, and the dirty hop
			// takes it.
			wantRun(t, f, f.sshCfg, "echo clean", "clean\n")
			before, _ := proxy.counts()
			tt.dirty(t, f, rev)
			proxy.waitOpen(t, 0)
			wantAccepted(t, proxy, before)
			wantRun(t, f, f.sshCfg, "echo after", "after\n")
			wantAccepted(t, proxy, before+1)
		})
	}
}

// TestUpstreamReuseTargetKilled: the target's sshd is killed while the login
// sits in the pool; the next hop works, on a fresh login to the restarted
// target.
func TestUpstreamReuseTargetKilled(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{})
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	hostKey, _ := ssh.NewSignerFromKey(priv)
	opts := sshdtest.Options{TrustedUserCAKeys: []ssh.PublicKey{f.auth.Target.PublicKey()}, HostKey: hostKey}
	first := sshdtest.Start(t, opts)
	proxy := startCutProxy(t, first.Addr())
	tg := sshTarget("web-1", first)
	tg.Address = proxy.addr
	f.setTargets(tg)

	wantRun(t, f, f.sshCfg, "echo one", "one\n")
	first.Kill()
	proxy.waitOpen(t, 0)
	second := sshdtest.Start(t, opts)
	proxy.setTo(second.Addr())
	wantRun(t, f, f.sshCfg, "echo two", "two\n")
	wantAccepted(t, proxy, 2)
	if n := reuseCount(f, reuseDead); n != 1 {
		t.Errorf("dead logins: got %d; want 1", n)
	}
}

// TestUpstreamReuseSilentlyDeadLogin: the path to the target dies without a
// reset while the login sits in the pool. The next hop's first channel gets
// no answer; postern drops the login and logs in afresh, and the user sees
// only the command's output.
func TestUpstreamReuseSilentlyDeadLogin(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{probe: 500 * time.Millisecond})
	_, proxy := reuseTarget(t, f)
	wantRun(t, f, f.sshCfg, "echo one", "one\n")
	proxy.freeze()
	wantRun(t, f, f.sshCfg, "echo two", "two\n")
	wantAccepted(t, proxy, 2)
	if hit, dead := reuseCount(f, reuseHit), reuseCount(f, reuseDead); hit != 1 || dead != 1 {
		t.Errorf("reuse metric: hit %d dead %d; want 1 and 1", hit, dead)
	}
	starts := f.waitEvent(state.EventSessionStart, 2)
	if got := starts[1].Details["upstream"]; got != "fresh" {
		t.Errorf("second session: upstream %v; want fresh", got)
	}
}

// TestUpstreamReuseExclusive: a login is used by one inner hop at a time: a
// hop that starts while another holds the login logs in afresh, and both
// logins are pooled afterwards.
func TestUpstreamReuseExclusive(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{})
	_, proxy := reuseTarget(t, f)
	wantRun(t, f, f.sshCfg, "echo warm", "warm\n")

	c := f.innerClient(t, "web-1")
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	stdin, _ := s.StdinPipe()
	var out strings.Builder
	s.Stdout = &out
	if err := s.Start("cat"); err != nil {
		t.Fatal(err)
	}
	f.waitEvent(state.EventSessionStart, 2)
	wantRun(t, f, f.sshCfg, "echo meanwhile", "meanwhile\n")
	wantAccepted(t, proxy, 2)

	_, _ = io.WriteString(stdin, "held\n")
	stdin.Close()
	if err := s.Wait(); err != nil || out.String() != "held\n" {
		t.Errorf("held session: %v, output %q; want held", err, out.String())
	}
	c.Close()
	proxy.waitOpen(t, 2) // both logins idle in the pool
	wantRun(t, f, f.sshCfg, "echo after", "after\n")
	wantAccepted(t, proxy, 2)
}

// fakeLoginConn is an ssh.Conn for pool unit tests: Close ends it the way a
// closed connection ends (its channels close, Wait returns).
type fakeLoginConn struct {
	ssh.Conn
	chans chan ssh.NewChannel
	reqs  chan *ssh.Request
	once  sync.Once
}

func newFakeLoginConn() *fakeLoginConn {
	return &fakeLoginConn{chans: make(chan ssh.NewChannel), reqs: make(chan *ssh.Request)}
}

func (c *fakeLoginConn) Close() error {
	c.once.Do(func() {
		close(c.chans)
		close(c.reqs)
	})
	return nil
}

func (c *fakeLoginConn) Wait() error { return errors.New("closed") }

// TestUpstreamPool drives the pool's bookkeeping with fake logins: bounds,
// most recent first, MaxAge, Disabled, reset and close.
func TestUpstreamPool(t *testing.T) {
	target := &policy.Target{Target: config.Target{Name: "web-1"}}
	key := upstreamKey{target: target, addr: "127.0.0.1:22", login: "root", issuer: "test", subject: "alice-sub", username: "alice", role: "ops"}
	other := key
	other.subject = "mallory-sub"
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	newPool := func(cfg config.UpstreamReuse) *upstreamPool {
		return newUpstreamPool(cfg, clock, slog.New(slog.DiscardHandler), nil)
	}
	// login makes a login for key as if an inner hop had logged in, and
	// gives it back.
	login := func(p *upstreamPool, key upstreamKey) (*upstreamLogin, bool) {
		c := newFakeLoginConn()
		u := p.newLogin(c, c.chans, c.reqs, key, fmt.Sprint("alice/", time.Now().UnixNano()), &hopUpstream{})
		return u, p.put(u)
	}

	t.Run("per key bound and most recent first", func(t *testing.T) {
		p := newPool(config.UpstreamReuse{})
		defer p.close()
		var kept []*upstreamLogin
		for i := range maxIdleUpstreamsPerKey + 1 {
			u, ok := login(p, key)
			if want := i < maxIdleUpstreamsPerKey; ok != want {
				t.Fatalf("put %d: kept %v; want %v", i, ok, want)
			}
			if ok {
				kept = append(kept, u)
			} else {
				_ = u.conn.Close()
			}
		}
		if got := p.take(other, &hopUpstream{}); got != nil {
			t.Errorf("take for another identity: got a login; want none")
		}
		if got := p.take(key, &hopUpstream{}); got != kept[len(kept)-1] {
			t.Errorf("take: got %p; want the most recent %p", got, kept[len(kept)-1])
		}
		if got, want := p.idleCount(), maxIdleUpstreamsPerKey-1; got != want {
			t.Errorf("idle: got %d; want %d", got, want)
		}
	})
	t.Run("max age", func(t *testing.T) {
		p := newPool(config.UpstreamReuse{MaxAge: config.Duration(time.Minute)})
		defer p.close()
		u, ok := login(p, key)
		if !ok {
			t.Fatal("fresh login not kept")
		}
		now.Add(int64(time.Minute))
		if got := p.take(key, &hopUpstream{}); got != nil {
			t.Errorf("take after max age: got a login; want none")
		}
		<-u.done // closed by take
		old := &upstreamLogin{pool: p, key: key, born: clock().Add(-2 * time.Minute), done: make(chan struct{})}
		if p.put(old) {
			t.Errorf("put of a login past max age: kept; want refused")
		}
	})
	t.Run("dead login leaves the pool", func(t *testing.T) {
		p := newPool(config.UpstreamReuse{})
		defer p.close()
		u, _ := login(p, key)
		_ = u.conn.Close() // the target closed it
		<-u.done
		if got := p.idleCount(); got != 0 {
			t.Errorf("idle after the target closed the login: %d; want 0", got)
		}
	})
	t.Run("disabled keeps nothing", func(t *testing.T) {
		p := newPool(config.UpstreamReuse{Disabled: true})
		defer p.close()
		if u, ok := login(p, key); ok {
			t.Errorf("disabled pool kept a login")
		} else {
			_ = u.conn.Close()
		}
	})
	t.Run("reset and close empty the pool", func(t *testing.T) {
		p := newPool(config.UpstreamReuse{})
		a, _ := login(p, key)
		p.reset(config.UpstreamReuse{})
		<-a.done
		b, _ := login(p, other)
		p.close()
		<-b.done
		if u, ok := login(p, key); ok {
			t.Errorf("closed pool kept a login")
		} else {
			_ = u.conn.Close()
		}
	})
}

// BenchmarkInnerHopSetup measures what upstream login reuse is for: the
// wall time of `ssh -J bastion web-1 true` with the stock client, recorded,
// 20 hops in a row per iteration, through postern with reuse, postern
// without, and a stock sshd as the jump host (the yardstick).
func BenchmarkInnerHopSetup(b *testing.B) {
	const hops = 20
	modes := []string{"openssh-jump", "postern-fresh", "postern-reused"}
	configs := map[string]string{}
	for _, mode := range modes {
		f := newHopFixture(b, fixtureOpts{record: "required", quiet: true,
			reuse: config.UpstreamReuse{Disabled: mode == "postern-fresh"}})
		target := sshdtest.Start(b, sshdtest.Options{
			TrustedUserCAKeys: []ssh.PublicKey{f.auth.Target.PublicKey()},
			AuthorizedKeys:    []ssh.PublicKey{f.userPub},
		})
		f.setTargets(sshTarget("web-1", target))
		configs[mode] = f.sshCfg
		if mode == "openssh-jump" {
			jump := sshdtest.Start(b, sshdtest.Options{AuthorizedKeys: []ssh.PublicKey{f.userPub}})
			configs[mode] = jumpSSHConfig(b, f, jump, target)
		}
	}
	spent := map[string]time.Duration{}
	n := 0
	for b.Loop() {
		for _, mode := range modes {
			for range hops {
				cmd := exec.Command("ssh", "-F", configs[mode], "web-1", "true")
				var stderr strings.Builder
				cmd.Stderr = &stderr
				start := time.Now()
				if err := cmd.Run(); err != nil {
					b.Fatalf("%s: %v: %s", mode, err, stderr.String())
				}
				spent[mode] += time.Since(start)
			}
		}
		n++
	}
	for _, mode := range modes {
		b.ReportMetric(float64(spent[mode].Microseconds())/1e3/float64(n*hops), mode+"-ms/hop")
	}
	b.ReportMetric(float64(spent["postern-reused"])/float64(spent["openssh-jump"]), "reused/jump")
	b.ReportMetric(float64(spent["postern-fresh"])/float64(spent["openssh-jump"]), "fresh/jump")
}
