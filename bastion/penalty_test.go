package bastion

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/state"
)

// testClock is a clock the test moves by hand; safe for concurrent use.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock { return &testClock{t: time.Now()} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// penaltyStep is one operation on a penaltyBox in TestPenaltyBox.
type penaltyStep struct {
	op   string // fail, forgive, blocked, advance
	addr string
	d    time.Duration // advance: by how much
	// want: fail started a penalty; blocked: the source is penalised.
	want bool
	// dur: the duration of the penalty a fail starts.
	dur time.Duration
}

func fails(addr string, n int) []penaltyStep {
	var s []penaltyStep
	for range n {
		s = append(s, penaltyStep{op: "fail", addr: addr})
	}
	return s
}

func steps(parts ...[]penaltyStep) []penaltyStep {
	var s []penaltyStep
	for _, p := range parts {
		s = append(s, p...)
	}
	return s
}

func one(s penaltyStep) []penaltyStep { return []penaltyStep{s} }

func TestPenaltyBox(t *testing.T) {
	base := config.Penalty{
		MaxFailures: 3, Window: config.Duration(time.Minute),
		Duration: config.Duration(30 * time.Second), MaxDuration: config.Duration(10 * time.Minute),
	}
	with := func(mod func(*config.Penalty)) config.Penalty {
		p := base
		p.Exempt = nil
		mod(&p)
		return p
	}
	start := func(addr string, dur time.Duration) []penaltyStep {
		return one(penaltyStep{op: "fail", addr: addr, want: true, dur: dur})
	}
	blocked := func(addr string, want bool) []penaltyStep {
		return one(penaltyStep{op: "blocked", addr: addr, want: want})
	}
	advance := func(d time.Duration) []penaltyStep { return one(penaltyStep{op: "advance", d: d}) }
	forgive := func(addr string) []penaltyStep { return one(penaltyStep{op: "forgive", addr: addr}) }
	const a, b = "192.0.2.1", "192.0.2.2"

	tests := []struct {
		name  string
		cfg   config.Penalty
		steps []penaltyStep
	}{
		{name: "threshold", cfg: base, steps: steps(
			fails(a, 2), blocked(a, false), start(a, 30*time.Second), blocked(a, true), blocked(b, false))},
		{name: "defaults: 20 failures, 30s", cfg: config.Penalty{}, steps: steps(
			fails(a, 19), blocked(a, false), start(a, 30*time.Second), blocked(a, true))},
		{name: "failures inside the window add up", cfg: base, steps: steps(
			fails(a, 1), advance(59*time.Second), fails(a, 1), start(a, 30*time.Second))},
		{name: "the window's end restarts the count", cfg: base, steps: steps(
			fails(a, 2), advance(time.Minute), fails(a, 2), blocked(a, false), start(a, 30*time.Second))},
		{name: "the penalty ends after its duration", cfg: base, steps: steps(
			fails(a, 2), start(a, 30*time.Second), advance(29*time.Second), blocked(a, true),
			advance(time.Second), blocked(a, false))},
		{name: "failures while penalised are not counted", cfg: base, steps: steps(
			fails(a, 2), start(a, 30*time.Second), fails(a, 10), advance(30*time.Second), blocked(a, false),
			fails(a, 2), blocked(a, false), start(a, time.Minute))},
		{name: "repeat offences double up to max_duration", cfg: with(func(p *config.Penalty) { p.MaxDuration = config.Duration(2 * time.Minute) }), steps: steps(
			fails(a, 2), start(a, 30*time.Second), advance(30*time.Second),
			fails(a, 2), start(a, time.Minute), advance(time.Minute),
			fails(a, 2), start(a, 2*time.Minute), advance(2*time.Minute),
			fails(a, 2), start(a, 2*time.Minute))},
		{name: "an offence is forgotten max_duration after its penalty", cfg: base, steps: steps(
			fails(a, 2), start(a, 30*time.Second), advance(30*time.Second+10*time.Minute),
			fails(a, 2), start(a, 30*time.Second))},
		{name: "IPv4 sources are single addresses", cfg: base, steps: steps(
			fails(a, 2), fails(b, 2), blocked(a, false), blocked(b, false), start(b, 30*time.Second), blocked(a, false))},
		{name: "IPv6 sources are /64s", cfg: base, steps: steps(
			fails("2001:db8::1", 1), fails("2001:db8::2", 1), start("2001:db8::ffff:1", 30*time.Second),
			blocked("2001:db8::9", true), blocked("2001:db8:0:1::1", false))},
		{name: "an IPv4-mapped address is its IPv4 address", cfg: base, steps: steps(
			fails("::ffff:192.0.2.1", 2), start(a, 30*time.Second), blocked("::ffff:192.0.2.1", true))},
		{name: "exempt prefixes are never penalised", cfg: with(func(p *config.Penalty) { p.Exempt = []string{"192.0.2.0/24", "2001:db8::5"} }), steps: steps(
			fails(a, 10), blocked(a, false), fails("2001:db8::5", 10), blocked("2001:db8::5", false),
			fails("2001:db8::6", 2), start("2001:db8::6", 30*time.Second), blocked("2001:db8::5", false), blocked("2001:db8::7", true))},
		{name: "disabled", cfg: with(func(p *config.Penalty) { p.Disabled = true }), steps: steps(
			fails(a, 10), blocked(a, false))},
		{name: "forgive takes back one failure", cfg: base, steps: steps(
			fails(a, 2), forgive(a), fails(a, 1), blocked(a, false), start(a, 30*time.Second))},
		{name: "forgive does not lift a penalty", cfg: base, steps: steps(
			fails(a, 2), start(a, 30*time.Second), forgive(a), blocked(a, true))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newTestClock()
			box, err := newPenaltyBox(tt.cfg, clk.Now)
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range tt.steps {
				var addr netip.Addr
				if s.addr != "" {
					addr = netip.MustParseAddr(s.addr)
				}
				switch s.op {
				case "advance":
					clk.Advance(s.d)
				case "forgive":
					box.forgive(addr)
				case "blocked":
					until, got := box.blocked(addr)
					if got != s.want {
						t.Fatalf("step %d: blocked(%s) = %v; want %v", i, s.addr, got, s.want)
					}
					if got && !until.After(clk.Now()) {
						t.Errorf("step %d: blocked until %v; want after now", i, until)
					}
				case "fail":
					p, got := box.fail(addr)
					if got != s.want {
						t.Fatalf("step %d: fail(%s) started a penalty: %v; want %v", i, s.addr, got, s.want)
					}
					if got && p.Duration != s.dur {
						t.Errorf("step %d: penalty of %v; want %v", i, p.Duration, s.dur)
					}
					if got && !p.Source.Contains(addr.Unmap()) {
						t.Errorf("step %d: penalty of source %v; want the one holding %v", i, p.Source, addr)
					}
				default:
					t.Fatalf("step %d: unknown op %q", i, s.op)
				}
			}
		})
	}
}

func TestPenaltyDetails(t *testing.T) {
	clk := newTestClock()
	box, err := newPenaltyBox(config.Penalty{MaxFailures: 2}, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		addr, wantSource string
	}{
		{"198.51.100.7", "198.51.100.7"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"::ffff:198.51.100.8", "198.51.100.8"},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			addr := netip.MustParseAddr(tt.addr)
			box.fail(addr)
			p, ok := box.fail(addr)
			if !ok {
				t.Fatal("no penalty after max_failures")
			}
			if got := p.sourceString(); got != tt.wantSource {
				t.Errorf("source = %q; want %q", got, tt.wantSource)
			}
			if p.Failures != 2 || p.Offence != 1 || !p.Until.Equal(clk.Now().Add(30*time.Second)) {
				t.Errorf("penalty = %+v; want 2 failures, offence 1, until now+30s", p)
			}
		})
	}
}

// TestPenaltyCap: beyond the cap the entry that expires soonest is evicted,
// so a penalised source outlives sources that are only counting.
func TestPenaltyCap(t *testing.T) {
	clk := newTestClock()
	box, err := newPenaltyBox(config.Penalty{MaxFailures: 3}, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	box.max = 3
	a, b, c, d := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3"), netip.MustParseAddr("192.0.2.4")
	for range 3 {
		box.fail(a)
	}
	clk.Advance(time.Second)
	box.fail(b)
	box.fail(b)
	clk.Advance(time.Second)
	box.fail(c)
	box.fail(c)
	clk.Advance(time.Second)
	box.fail(d) // evicts b: its window ends first
	if got := box.len(); got != 3 {
		t.Errorf("tracked %d sources; want the cap, 3", got)
	}
	if _, ok := box.blocked(a); !ok {
		t.Errorf("penalised source evicted; want it kept over counting ones")
	}
	if _, ok := box.fail(b); ok {
		t.Errorf("evicted source kept its count: penalised at its third failure")
	}
	// b came back and evicted c; c's two failures are gone too.
	if _, ok := box.fail(c); ok {
		t.Errorf("evicted source kept its count: penalised at its third failure")
	}
	if got := box.len(); got != 3 {
		t.Errorf("tracked %d sources; want 3", got)
	}

	// Every source penalised: the one whose penalty ends first goes.
	box, err = newPenaltyBox(config.Penalty{MaxFailures: 1}, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	box.max = 2
	for _, x := range []netip.Addr{a, b, c} {
		box.fail(x)
		clk.Advance(time.Second)
	}
	for _, tt := range []struct {
		addr netip.Addr
		want bool
	}{{a, false}, {b, true}, {c, true}} {
		if _, got := box.blocked(tt.addr); got != tt.want {
			t.Errorf("all penalised, cap 2: blocked(%v) = %v; want %v", tt.addr, got, tt.want)
		}
	}
}

// TestPenaltyPrunesExpired: sources whose window and penalty memory have
// passed are dropped as the box is used.
func TestPenaltyPrunesExpired(t *testing.T) {
	clk := newTestClock()
	box, err := newPenaltyBox(config.Penalty{MaxFailures: 2}, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		box.fail(netip.AddrFrom4([4]byte{10, 0, byte(i / 256), byte(i)}))
	}
	p := netip.MustParseAddr("192.0.2.9")
	box.fail(p)
	box.fail(p) // penalised: kept for its 30s penalty plus 10m of memory
	if got := box.len(); got != 101 {
		t.Fatalf("tracked %d; want 101", got)
	}
	clk.Advance(time.Minute)
	box.fail(netip.MustParseAddr("192.0.2.10"))
	if got := box.len(); got != 2 {
		t.Errorf("after the window: tracked %d; want 2 (the penalised source and the new one)", got)
	}
	clk.Advance(30*time.Second + 10*time.Minute)
	box.fail(netip.MustParseAddr("192.0.2.11"))
	if got := box.len(); got != 1 {
		t.Errorf("after the penalty memory: tracked %d; want 1", got)
	}
}

func TestPenaltyConfigure(t *testing.T) {
	box, err := newPenaltyBox(config.Penalty{MaxFailures: 1}, newTestClock().Now)
	if err != nil {
		t.Fatal(err)
	}
	const a, v6a, v6b = "192.0.2.1", "2001:db8::1", "2001:db8::2"
	one := config.Penalty{MaxFailures: 1}
	tests := []struct {
		name    string
		cfg     config.Penalty
		addr    string
		fail    bool // addr fails once after configure
		wantErr bool
		blocked bool
	}{
		{name: "penalised", cfg: one, addr: a, fail: true, blocked: true},
		{name: "bad exempt entry keeps the settings", cfg: config.Penalty{Exempt: []string{"lb.example"}}, addr: a, wantErr: true, blocked: true},
		{name: "same settings keep the penalty", cfg: one, addr: a, blocked: true},
		{name: "an exempt source is let in", cfg: config.Penalty{MaxFailures: 1, Exempt: []string{"192.0.2.0/24"}}, addr: a, blocked: false},
		{name: "and forgotten: not refused without the exemption", cfg: one, addr: a, blocked: false},
		{name: "penalised again", cfg: one, addr: a, fail: true, blocked: true},
		{name: "disabled forgets every source", cfg: config.Penalty{Disabled: true}, addr: a, blocked: false},
		{name: "enabled again starts afresh", cfg: one, addr: a, blocked: false},
		{name: "ipv6 penalised", cfg: one, addr: v6a, fail: true, blocked: true},
		{name: "ipv6: one exempt address keeps the rest of its /64 penalised", cfg: config.Penalty{MaxFailures: 1, Exempt: []string{v6a}}, addr: v6b, blocked: true},
		{name: "ipv6: the exempt address is let in", cfg: config.Penalty{MaxFailures: 1, Exempt: []string{v6a}}, addr: v6a, blocked: false},
		{name: "ipv6: an exempt /48 forgets the /64", cfg: config.Penalty{MaxFailures: 1, Exempt: []string{"2001:db8::/48"}}, addr: v6b, blocked: false},
		{name: "ipv6: still forgotten without the exemption", cfg: one, addr: v6b, blocked: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := box.configure(tt.cfg)
			if (err != nil) != tt.wantErr {
				t.Fatalf("configure: %v; want error %v", err, tt.wantErr)
			}
			addr := netip.MustParseAddr(tt.addr)
			if tt.fail {
				box.fail(addr)
			}
			if _, got := box.blocked(addr); got != tt.blocked {
				t.Errorf("blocked(%s) = %v; want %v", tt.addr, got, tt.blocked)
			}
		})
	}
}

// TestPenaltyConcurrent: many goroutines failing and checking at once (run
// with -race); each source starts exactly one penalty.
func TestPenaltyConcurrent(t *testing.T) {
	box, err := newPenaltyBox(config.Penalty{MaxFailures: 10}, newTestClock().Now)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	started := map[netip.Prefix]int{}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				addr := netip.AddrFrom4([4]byte{192, 0, 2, byte(w*4 + i%4)})
				if p, ok := box.fail(addr); ok {
					mu.Lock()
					started[p.Source]++
					mu.Unlock()
				}
				box.blocked(addr)
				if i%7 == 0 {
					box.forgive(addr)
				}
			}
		})
	}
	wg.Wait()
	if len(started) != 32 {
		t.Errorf("%d sources penalised; want 32", len(started))
	}
	for src, n := range started {
		if n != 1 {
			t.Errorf("%v: %d penalties started; want 1 (the clock stands still)", src, n)
		}
	}
}

// TestPenaltyAllocs: checking a source at accept and counting a failure of
// a tracked source do not allocate.
func TestPenaltyAllocs(t *testing.T) {
	box, err := newPenaltyBox(config.Penalty{MaxFailures: 1 << 30}, newTestClock().Now)
	if err != nil {
		t.Fatal(err)
	}
	v4, v6 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	box.fail(v4)
	box.fail(v6)
	tests := []struct {
		name string
		f    func()
	}{
		{"blocked ipv4", func() { box.blocked(v4) }},
		{"blocked ipv6", func() { box.blocked(v6) }},
		{"blocked untracked", func() { box.blocked(netip.MustParseAddr("198.51.100.1")) }},
		{"fail tracked ipv4", func() { box.fail(v4) }},
		{"fail tracked ipv6", func() { box.fail(v6) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := testing.AllocsPerRun(1000, tt.f); got != 0 {
				t.Errorf("allocs = %v; want 0", got)
			}
		})
	}
}

// penaltyFixture is a bastion with penalties of p on a hand-moved clock.
func penaltyFixture(t *testing.T, p config.Penalty) (*bxFixture, *testClock) {
	t.Helper()
	clk := newTestClock()
	f := newBX(t, bxOptions{mod: func(o *Options) {
		o.Now = clk.Now
		o.Config.Penalty = p
	}})
	return f, clk
}

// dialFrom connects an x/crypto client from the loopback address local
// (Linux routes all of 127.0.0.0/8 to lo) with auth, checking the
// bastion's host certificate. The client is closed when the test ends.
func (f *bxFixture) dialFrom(local string, auth ...ssh.AuthMethod) (*ssh.Client, error) {
	f.t.Helper()
	checker := &ssh.CertChecker{IsHostAuthority: func(k ssh.PublicKey, _ string) bool {
		return f.auth.Host.IsTrusted(k)
	}}
	conf := &ssh.ClientConfig{
		User: f.login, Auth: auth, HostKeyCallback: checker.CheckHostKey,
		HostKeyAlgorithms: []string{ssh.CertAlgoED25519v01}, Timeout: 10 * time.Second,
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 10 * time.Second}
	nc, err := d.Dial("tcp", f.addr)
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

// goodAuth returns a key with a valid user certificate for alice.
func (f *bxFixture) goodAuth() ssh.AuthMethod {
	f.t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(priv)
	cs, err := ssh.NewCertSigner(f.newCert(signer.PublicKey(), certSpec{}), signer)
	if err != nil {
		f.t.Fatal(err)
	}
	return ssh.PublicKeys(cs)
}

// plainSigners returns n fresh keys without certificates.
func plainSigners(t *testing.T, n int) []ssh.Signer {
	t.Helper()
	var out []ssh.Signer
	for range n {
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		s, err := ssh.NewSignerFromKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// probe connects from local with plain TCP and reads the bastion's first
// line: its SSH version if it is served, "" if the connection is closed
// before postern sends anything (refused at accept).
func (f *bxFixture) probe(local string) string {
	f.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 10 * time.Second}
	nc, err := d.Dial("tcp", f.addr)
	if errors.Is(err, syscall.ECONNRESET) {
		return "" // reset before connect returned: refused at accept
	}
	if err != nil {
		f.t.Fatalf("dial from %s: %v", local, err)
	}
	defer nc.Close()
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(nc).ReadString('\n')
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		f.t.Fatalf("probe from %s: no version and not closed after 10s", local)
	}
	return strings.TrimSpace(line)
}

// waitIdle waits until the bastion has finished with every connection, so
// that whatever their ends count has been counted.
func (f *bxFixture) waitIdle() {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for f.srv.ActiveConnections() != 0 {
		if time.Now().After(deadline) {
			f.t.Fatalf("%d connections still open", f.srv.ActiveConnections())
		}
		time.Sleep(10 * time.Millisecond) // polling the server's connection count with a deadline
	}
}

// eventsFrom returns the audit events of type typ with source src.
func (f *bxFixture) eventsFrom(typ, src string) []state.Event {
	var out []state.Event
	for _, e := range f.events(typ) {
		if e.Source == src {
			out = append(out, e)
		}
	}
	return out
}

const serverVersion = "SSH-2.0-postern"

// TestPenaltyRefusesAtAccept: a source that fails max_failures times is
// refused at accept, before postern sends its version, while a client from
// another address keeps working; the penalty is audited once, and when it
// ends the source is served again.
func TestPenaltyRefusesAtAccept(t *testing.T) {
	f, clk := penaltyFixture(t, config.Penalty{MaxFailures: 3})
	const attacker, user = "127.0.0.2", "127.0.0.1"
	for i := range 3 {
		_, err := f.dialFrom(attacker, ssh.PublicKeys(plainSigners(t, 1)...))
		if err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
			t.Fatalf("bad dial %d: %v; want unable to authenticate", i, err)
		}
	}
	if got := f.probe(attacker); got != "" {
		t.Errorf("penalised source read %q; want the connection closed before any version", got)
	}
	if _, err := f.dialFrom(attacker, f.goodAuth()); err == nil || strings.Contains(err.Error(), "unable to authenticate") {
		t.Errorf("good certificate from the penalised source: %v; want refused before authentication", err)
	}
	if _, err := f.dialFrom(user, f.goodAuth()); err != nil {
		t.Errorf("client from another address: %v; want served", err)
	}
	if got := counterValue(t, f.srv.metrics.connsRefused.WithLabelValues("penalty")); got != 2 {
		t.Errorf("refused{penalty} = %v; want 2", got)
	}
	if got := counterValue(t, f.srv.metrics.penalties); got != 1 {
		t.Errorf("postern_auth_penalties_total = %v; want 1", got)
	}
	pen := f.events(state.EventAuthPenalty)
	if len(pen) != 1 {
		t.Fatalf("%d auth.penalty events; want 1", len(pen))
	}
	if e := pen[0]; e.Source != attacker || detail(e, "failures") != "3" || detail(e, "duration") != "30s" || detail(e, "offence") != "1" {
		t.Errorf("auth.penalty = source %q details %v; want %s, 3 failures, 30s, offence 1", e.Source, e.Details, attacker)
	}
	if got := len(f.eventsFrom(state.EventAuthFailure, attacker)); got != 3 {
		t.Errorf("%d auth.failure events from %s; want 3 (refused connections are not audited)", got, attacker)
	}
	if log := f.logBuf.String(); !strings.Contains(log, "source penalised") || !strings.Contains(log, "reason=penalty") {
		t.Errorf("log lacks the penalty and refusal lines:\n%s", log)
	}

	clk.Advance(30 * time.Second)
	if got := f.probe(attacker); got != serverVersion {
		t.Errorf("after the penalty: read %q; want %q", got, serverVersion)
	}
	if _, err := f.dialFrom(attacker, f.goodAuth()); err != nil {
		t.Errorf("good certificate after the penalty: %v; want served", err)
	}
	if got := len(f.events(state.EventAuthPenalty)); got != 1 {
		t.Errorf("%d auth.penalty events; want still 1", got)
	}
}

// TestPenaltyCountsConnections: a handshake counts one failure if it
// reached authentication and did not authenticate, however many keys it
// tried; one that authenticates counts none; probes that never reach
// authentication count none.
func TestPenaltyCountsConnections(t *testing.T) {
	lying := func(t *testing.T, f *bxFixture) ssh.AuthMethod {
		// A certificate for a key the client does not hold: refused by
		// x/crypto's signature check, before verifyKey.
		s := plainSigners(t, 2)
		return ssh.PublicKeys(&lyingSigner{pub: f.newCert(s[0].PublicKey(), certSpec{}), signer: s[1]})
	}
	tests := []struct {
		name string
		// attempt makes one connection from src; it reports whether it
		// authenticated.
		attempt func(t *testing.T, f *bxFixture, src string) bool
		// wantPenalised: after two attempts with max_failures 2.
		wantPenalised bool
		// wantFailures: auth.failure events of the first attempt.
		wantFailures int
	}{
		{name: "client with no keys gives up", wantPenalised: true, attempt: func(t *testing.T, f *bxFixture, src string) bool {
			_, err := f.dialFrom(src)
			return err == nil
		}},
		{name: "key never proved", wantPenalised: true, attempt: func(t *testing.T, f *bxFixture, src string) bool {
			_, err := f.dialFrom(src, lying(t, f))
			return err == nil
		}},
		{name: "six refused keys, max auth tries", wantPenalised: true, wantFailures: 6, attempt: func(t *testing.T, f *bxFixture, src string) bool {
			_, err := f.dialFrom(src, ssh.PublicKeys(plainSigners(t, 8)...))
			return err == nil
		}},
		{name: "plain keys before the certificate", wantPenalised: false, wantFailures: 2, attempt: func(t *testing.T, f *bxFixture, src string) bool {
			_, priv, _ := ed25519.GenerateKey(rand.Reader)
			signer, _ := ssh.NewSignerFromKey(priv)
			cs, _ := ssh.NewCertSigner(f.newCert(signer.PublicKey(), certSpec{}), signer)
			c, err := f.dialFrom(src, ssh.PublicKeys(append(plainSigners(t, 2), cs)...))
			if err == nil {
				c.Close()
			}
			return err == nil
		}},
		{name: "client refuses the host key", wantPenalised: false, attempt: func(t *testing.T, f *bxFixture, src string) bool {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
			nc, err := d.Dial("tcp", f.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			_, _, _, err = ssh.NewClientConn(nc, f.addr, &ssh.ClientConfig{
				User: f.login, HostKeyCallback: func(string, net.Addr, ssh.PublicKey) error { return errors.New("unknown host") },
			})
			return err == nil
		}},
		{name: "TCP probe", wantPenalised: false, attempt: func(t *testing.T, f *bxFixture, src string) bool {
			f.probe(src)
			return false
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _ := penaltyFixture(t, config.Penalty{MaxFailures: 2})
			src := fmt.Sprintf("127.0.0.%d", 10+i)
			wantAuth := strings.HasPrefix(tt.name, "plain keys")
			if got := tt.attempt(t, f, src); got != wantAuth {
				t.Fatalf("first attempt authenticated: %v; want %v", got, wantAuth)
			}
			f.waitIdle()
			if got := len(f.eventsFrom(state.EventAuthFailure, src)); got != tt.wantFailures {
				t.Errorf("%d auth.failure events for one connection; want %d", got, tt.wantFailures)
			}
			if got := f.probe(src); got != serverVersion {
				t.Fatalf("after one attempt: read %q; want %q (one connection is one failure)", got, serverVersion)
			}
			tt.attempt(t, f, src)
			f.waitIdle()
			got := f.probe(src) == ""
			if got != tt.wantPenalised {
				t.Errorf("penalised after two attempts: %v; want %v", got, tt.wantPenalised)
			}
			if n := len(f.events(state.EventAuthPenalty)); n != map[bool]int{true: 1}[tt.wantPenalised] {
				t.Errorf("%d auth.penalty events; want %d", n, map[bool]int{true: 1}[tt.wantPenalised])
			}
		})
	}
}

// TestPenaltyExemptAndReload: an exempt source is never refused, and
// SetPenalty (a configuration reload) takes effect at once.
func TestPenaltyExemptAndReload(t *testing.T) {
	const lb, other = "127.0.0.20", "127.0.0.21"
	f, _ := penaltyFixture(t, config.Penalty{MaxFailures: 1, Exempt: []string{lb}})
	for range 3 {
		if _, err := f.dialFrom(lb, ssh.PublicKeys(plainSigners(t, 1)...)); err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
			t.Fatalf("exempt source: %v; want unable to authenticate (served, not refused)", err)
		}
	}
	if _, err := f.dialFrom(other, ssh.PublicKeys(plainSigners(t, 1)...)); err == nil {
		t.Fatal("bad key authenticated")
	}
	tests := []struct {
		name    string
		cfg     config.Penalty
		wantLB  string
		wantOth string
	}{
		{name: "as configured", cfg: config.Penalty{MaxFailures: 1, Exempt: []string{lb}}, wantLB: serverVersion, wantOth: ""},
		{name: "both exempt", cfg: config.Penalty{MaxFailures: 1, Exempt: []string{"127.0.0.16/28"}}, wantLB: serverVersion, wantOth: serverVersion},
		{name: "none exempt: the exemption lifted the penalty for good", cfg: config.Penalty{MaxFailures: 1}, wantLB: serverVersion, wantOth: serverVersion},
		{name: "disabled", cfg: config.Penalty{Disabled: true}, wantLB: serverVersion, wantOth: serverVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := f.srv.SetPenalty(tt.cfg); err != nil {
				t.Fatal(err)
			}
			if got := f.probe(lb); got != tt.wantLB {
				t.Errorf("%s read %q; want %q", lb, got, tt.wantLB)
			}
			if got := f.probe(other); got != tt.wantOth {
				t.Errorf("%s read %q; want %q", other, got, tt.wantOth)
			}
		})
	}
	if err := f.srv.SetPenalty(config.Penalty{Exempt: []string{"10.0.0.0/33"}}); err == nil {
		t.Error("SetPenalty accepted a bad exempt prefix")
	}
}

// TestRefusalLogRateLimited: refusals are logged at most once per
// refusalLogEvery and reason; the next line counts those left out.
func TestRefusalLogRateLimited(t *testing.T) {
	var l refusalLog
	t0 := time.Now()
	tests := []struct {
		reason   string
		at       time.Duration
		wantLog  bool
		wantLeft int
	}{
		{"penalty", 0, true, 0},
		{"penalty", time.Second, false, 0},
		{"limit_source", time.Second, true, 0},
		{"penalty", 9 * time.Second, false, 0},
		{"penalty", refusalLogEvery, true, 2},
		{"penalty", refusalLogEvery + time.Second, false, 0},
	}
	for i, tt := range tests {
		n, ok := l.allow(tt.reason, t0.Add(tt.at))
		if ok != tt.wantLog || n != tt.wantLeft {
			t.Errorf("%d: allow(%s, +%v) = %d, %v; want %d, %v", i, tt.reason, tt.at, n, ok, tt.wantLeft, tt.wantLog)
		}
	}
}
