package bastion

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/netguard"
	"github.com/posternhq/postern/internal/pgtest"
	"github.com/posternhq/postern/internal/sshdtest"
	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/policy"
	"github.com/posternhq/postern/state"
)

// devConfig is the policy of most end-to-end tests: role "devs" (group dev)
// reaches the given targets as login, with local forwarding and a catch-all
// allow list (which must not open loopback, link-local, ...).
func devConfig(login string, targets ...config.Target) *config.Config {
	var names []config.TargetSelector
	for _, t := range targets {
		if t.Name != "web-9" {
			names = append(names, config.TargetSelector{Name: t.Name})
		}
	}
	return &config.Config{
		Targets: targets,
		Roles: []config.Role{{
			Name:       "devs",
			Match:      config.RoleMatch{Groups: []string{"dev"}},
			Targets:    names,
			Logins:     []string{login},
			Forwarding: config.Forwarding{Local: true, Allow: []string{"0.0.0.0/0:*", "::/0:*"}},
		}},
	}
}

// passthroughTarget is a test sshd as a passthrough ssh target. The sshd
// trusts the user CA itself (that is what passthrough requires), with
// passthroughSSHDConfig.
func passthroughTarget(name string, s *sshdtest.Server) config.Target {
	return config.Target{Name: name, Kind: config.KindSSH, Address: s.Addr(), Passthrough: true}
}

// e2e is a bastion with a passthrough sshd target "sshd-1", an unreachable
// target "web-9" outside every role, and an echo tcp target "echo".
type e2e struct {
	*bxFixture
	sshd *sshdtest.Server
	echo string
	cfg  string // ssh_config for alice
}

func newE2E(t *testing.T, extra ...config.Target) *e2e {
	t.Helper()
	// The sshd must trust the user CA, which the fixture creates: start the
	// bastion first, then the sshd, then install the policy with SetPolicy.
	f := newBX(t, bxOptions{mod: func(o *Options) { o.Resolver = hostsResolver{} }})
	sshd := sshdtest.Start(t, sshdtest.Options{TrustedUserCAKeys: []ssh.PublicKey{f.auth.User.PublicKey()},
		Extra: passthroughSSHDConfig("sshd-1")})
	echo := testutil.EchoServer(t)
	targets := append([]config.Target{
		passthroughTarget("sshd-1", sshd),
		{Name: "web-9", Kind: config.KindSSH, Address: "127.0.0.1:1"},
		{Name: "echo", Kind: config.KindTCP, Address: echo},
	}, extra...)
	eng, err := policy.New(devConfig(f.login, targets...))
	if err != nil {
		t.Fatal(err)
	}
	f.srv.SetPolicy(eng)
	kh := sshd.KnownHostsLine("sshd-1") + "\n" + sshd.KnownHostsLine() + "\n"
	appendFile(t, f.known, kh)
	e := &e2e{bxFixture: f, sshd: sshd, echo: echo}
	key, cert, _ := f.userKey(certSpec{principals: []string{f.login, certs.PassthroughPrincipal("sshd-1", f.login)}})
	e.cfg = f.sshConfig(key, cert)
	return e
}

// passthroughSSHDConfig is the sshd_config docs/security.md gives a
// passthrough target named name: it takes a login only from the principal
// "<name>:<login>".
func passthroughSSHDConfig(name string) []string {
	return []string{"AuthorizedPrincipalsCommand /bin/echo " + name + ":%u", "AuthorizedPrincipalsCommandUser nobody"}
}

func appendFile(t *testing.T, path, data string) {
	t.Helper()
	fh, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := fh.WriteString(data); err != nil {
		t.Fatal(err)
	}
}

func TestJumpRunsCommandOnTarget(t *testing.T) {
	e := newE2E(t)
	res := bxRun(t, "", "ssh", "-F", e.cfg, "-J", e.jump(), e.login+"@sshd-1", "echo hello-from-target")
	if res.code != 0 || strings.TrimSpace(res.stdout) != "hello-from-target" {
		t.Fatalf("ssh -J: code %d, stdout %q, stderr %q", res.code, res.stdout, res.stderr)
	}
	// The same target by address: the bastion as "localhost", the target as 127.0.0.1.
	res = bxRun(t, "", "ssh", "-F", e.cfg, "-J", e.jump(), "-p", strconv.Itoa(e.sshd.Port()), e.login+"@127.0.0.1", "echo by-address")
	if res.code != 0 || strings.TrimSpace(res.stdout) != "by-address" {
		t.Fatalf("ssh -J by address: code %d, stdout %q, stderr %q", res.code, res.stdout, res.stderr)
	}
	e.waitEvent(state.EventAuthSuccess, func(ev state.Event) bool { return ev.Actor == alice.Username })
	start := e.waitEvent(state.EventForwardStart, func(ev state.Event) bool { return ev.Target == "sshd-1" })
	if detail(start, "role") != "devs" {
		t.Errorf("forward.start role = %q; want devs", detail(start, "role"))
	}
	end := e.waitEvent(state.EventForwardEnd, func(ev state.Event) bool { return ev.Target == "sshd-1" })
	if up, _ := strconv.Atoi(detail(end, "bytes_up")); up == 0 {
		t.Errorf("forward.end bytes_up = %q; want > 0", detail(end, "bytes_up"))
	}
	if got := counterValue(t, e.srv.metrics.bytesDown); got == 0 {
		t.Errorf("postern_forwarded_bytes_total{direction=down} = 0")
	}
	if got := counterValue(t, e.srv.metrics.channels.WithLabelValues(channelDirectTCPIP, "open")); got != 2 {
		t.Errorf("channels open = %v; want 2", got)
	}
}

func TestSCPAndSFTPThroughJump(t *testing.T) {
	e := newE2E(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.txt")
	payload := strings.Repeat("postern scp payload\n", 5000)
	if err := os.WriteFile(src, []byte(payload), 0o644); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "dst.txt")
	res := bxRun(t, "", "scp", "-F", e.cfg, "-J", e.jump(), src, e.login+"@sshd-1:"+dst)
	if res.code != 0 {
		t.Fatalf("scp: code %d, stderr %q", res.code, res.stderr)
	}
	if got, _ := os.ReadFile(dst); string(got) != payload {
		t.Fatalf("scp copied %d bytes; want %d", len(got), len(payload))
	}
	back := filepath.Join(dir, "back.txt")
	res = bxRun(t, "get "+dst+" "+back+"\n", "sftp", "-F", e.cfg, "-J", e.jump(), "-b", "-", e.login+"@sshd-1")
	if res.code != 0 {
		t.Fatalf("sftp: code %d, stderr %q", res.code, res.stderr)
	}
	if got, _ := os.ReadFile(back); string(got) != payload {
		t.Fatalf("sftp fetched %d bytes; want %d", len(got), len(payload))
	}
}

func TestLocalForwardToPostgres(t *testing.T) {
	if _, err := os.Stat("/usr/bin/psql"); err != nil {
		testutil.Need(t, "psql")
	}
	pg := pgtest.Start(t)
	e := newE2E(t, config.Target{Name: "pg", Kind: config.KindTCP, Address: pg.Addr(), Protocol: "postgres"})
	local := testutil.FreePort(t)
	fwd := testutil.Start(t, "ssh", []string{"-F", e.cfg, "-N", "-p", strconv.Itoa(e.port),
		"-L", "127.0.0.1:" + strconv.Itoa(local) + ":pg:" + strconv.Itoa(pg.Port()), e.login + "@localhost"})
	if err := testutil.AwaitPort(net.JoinHostPort("127.0.0.1", strconv.Itoa(local)), 30*time.Second, fwd.Done()); err != nil {
		t.Fatalf("ssh -L never listened: %v; output %s", err, fwd.Output())
	}
	out := bxRun(t, "", "psql", "-X", "-A", "-t", "-h", "127.0.0.1", "-p", strconv.Itoa(local), "-U", pgtest.Superuser,
		"-d", "postgres", "-c", "select 1")
	if out.code != 0 || strings.TrimSpace(out.stdout) != "1" {
		t.Fatalf("psql through -L: code %d, stdout %q, stderr %q", out.code, out.stdout, out.stderr)
	}
	e.waitEvent(state.EventForwardEnd, func(ev state.Event) bool { return ev.Target == "pg" })
}

// TestChannelDenials drives the stock client with -W (what -J does) and
// checks the client-visible message and the audit event of each denial.
func TestChannelDenials(t *testing.T) {
	e := newE2E(t, config.Target{Name: "cmd-1", Kind: config.KindCommand, Command: []string{"true"}})
	echoPort := "9" // not the echo target's port: 127.0.0.1:9 is outside the inventory
	tests := []struct {
		name   string
		dest   string
		shown  string // the host in the message
		code   string
		target string
	}{
		{"target not in role", "web-9:22", "web-9", policy.CodeTargetNotAllow, "web-9"},
		{"target does not exist", "web-10:22", "web-10", codeResolve, ""},
		{"forbidden port", "echo:1", "echo", policy.CodePortNotAllow, "echo"},
		{"loopback literal", "127.0.0.1:" + echoPort, "127.0.0.1", codeLoopback, ""},
		{"loopback name", "localhost:" + echoPort, "localhost", codeLoopback, ""},
		{"metadata", "169.254.169.254:80", "169.254.169.254", codeMetadata, ""},
		{"link-local", "169.254.1.1:80", "169.254.1.1", codeLinkLocal, ""},
		{"ipv6 loopback", "[::1]:" + echoPort, "::1", codeLoopback, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := bxRun(t, "", "ssh", "-F", e.cfg, "-o", "LogLevel=INFO", "-p", strconv.Itoa(e.port), "-W", tt.dest, e.login+"@localhost")
			want := "postern: " + tt.shown + ": not allowed for alice@example.com"
			if res.code == 0 || !strings.Contains(res.stderr, want) {
				t.Fatalf("ssh -W %s: code %d, stderr %q; want %q", tt.dest, res.code, res.stderr, want)
			}
			ev := e.waitEvent(state.EventChannelDeny, hasDetail("dest", tt.dest))
			if detail(ev, "code") != tt.code || ev.Target != tt.target || ev.Actor != alice.Username {
				t.Errorf("channel.deny = code %q target %q actor %q; want %q %q %q", detail(ev, "code"), ev.Target, ev.Actor, tt.code, tt.target, alice.Username)
			}
		})
	}
	t.Run("inner hop not available", func(t *testing.T) {
		res := bxRun(t, "", "ssh", "-F", e.cfg, "-o", "LogLevel=INFO", "-p", strconv.Itoa(e.port), "-W", "cmd-1:22", e.login+"@localhost")
		if !strings.Contains(res.stderr, "postern: cmd-1: not available") {
			t.Fatalf("stderr %q; want not available", res.stderr)
		}
		e.waitEvent(state.EventChannelDeny, hasDetail("code", codeUnavailable))
	})
	if got := counterValue(t, e.srv.metrics.channels.WithLabelValues(channelDirectTCPIP, "denied")); got < float64(len(tests)) {
		t.Errorf("channels denied = %v; want >= %d", got, len(tests))
	}
}

// TestWrongLoginOnPassthroughTarget: a passthrough target's sshd checks the
// login against the certificate's principals itself.
func TestWrongLoginOnPassthroughTarget(t *testing.T) {
	e := newE2E(t)
	res := bxRun(t, "", "ssh", "-F", e.cfg, "-J", e.jump(), "nobody@sshd-1", "true")
	if res.code == 0 || !strings.Contains(res.stderr, "Permission denied") {
		t.Fatalf("code %d, stderr %q; want Permission denied from the target", res.code, res.stderr)
	}
}

// TestSSRFSpellings opens direct-tcpip channels with raw host strings, as a
// hostile client could, against a role whose allow list is a catch-all.
func TestSSRFSpellings(t *testing.T) {
	e := newE2E(t)
	c, _, err := e.dial(certSpec{}, e.login)
	if err != nil {
		t.Fatal(err)
	}
	// Port 9 of 127.0.0.1 is no inventory target, unlike the echo target's port.
	ps, port := "9", 9
	tests := []struct{ host, code string }{
		{"127.0.0.1", codeLoopback},
		{"2130706433", codeLoopback},
		{"0x7f000001", codeLoopback},
		{"0177.0.0.1", codeLoopback},
		{"127.1", codeLoopback},
		{"0x7f.1", codeLoopback},
		{"127.0.0.1.", codeLoopback},
		{"[::1]", codeLoopback},
		{"::1", codeLoopback},
		{"::ffff:127.0.0.1", codeLoopback},
		{"[::ffff:7f00:1]", codeLoopback},
		{"0.0.0.0", codeUnspecified},
		{"0", codeUnspecified},
		{"::", codeUnspecified},
		{"169.254.169.254", codeMetadata},
		{"0xa9fea9fe", codeMetadata},
		{"169.254.1.1", codeLinkLocal},
		{"[fd00:ec2::254]", codeMetadata},
		{"fd20:ce::254", codeMetadata},
		{"100.100.100.200", codeMetadata},
		{"1684301000", codeMetadata}, // 100.100.100.200 as one decimal
		{"168.63.129.16", codeMetadata},
		{"192.0.0.192", codeMetadata},
		{"64:ff9b::a9fe:a9fe", codeMetadata},
		{"2002:a9fe:a9fe::", codeMetadata},
		{"2001:0:a9fe:a9fe::1", codeMetadata},
		{"::ffff:0:a9fe:a9fe", codeMetadata},
		{"metadata.google.internal", codeMetadata},
		{"METADATA.GOOGLE.INTERNAL.", codeMetadata},
		{"instance-data", codeMetadata},
		{"fe80::1%lo", codeLinkLocal},
		{"[fe80::1%25lo]", codeLinkLocal},
		{"224.0.0.1", codeMulticast},
		{"ff02::1", codeMulticast},
		{"64:ff9b::7f00:1", codeLoopback},
		{"localhost", codeLoopback},
		{"bad host\n", codeBadHost},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			ch, err := openDirect(c, tt.host, port)
			if err == nil {
				ch.Close()
				t.Fatalf("channel to %q opened; want refusal", tt.host)
			}
			var oce *ssh.OpenChannelError
			if !errors.As(err, &oce) || oce.Reason != ssh.Prohibited || !strings.HasPrefix(oce.Message, "postern: ") || !strings.HasSuffix(oce.Message, ": not allowed for alice@example.com") {
				t.Fatalf("error %v; want administratively prohibited, not allowed", err)
			}
			dest := policy.Printable(net.JoinHostPort(tt.host, ps))
			ev := e.waitEvent(state.EventChannelDeny, hasDetail("dest", dest))
			if got := detail(ev, "code"); got != tt.code {
				t.Errorf("code = %q; want %q", got, tt.code)
			}
		})
	}
}

// hostsResolver keeps end-to-end tests off the network's DNS: it knows
// localhost and no other name.
type hostsResolver struct{}

func (hostsResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if strings.EqualFold(host, "localhost") {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// staticResolver answers every name with addrs and counts lookups.
type staticResolver struct {
	addrs []netip.Addr
	calls atomic.Int32
}

func (r *staticResolver) LookupNetIP(_ context.Context, _, _ string) ([]netip.Addr, error) {
	r.calls.Add(1)
	return r.addrs, nil
}

// TestForwardOutsideInventory: an explicit forwarding.allow entry opens a
// loopback destination, a name is resolved once and the checked address is
// dialed, and a name resolving to one forbidden address is refused.
func TestForwardOutsideInventory(t *testing.T) {
	res := &staticResolver{addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}
	echo := testutil.EchoServer(t)
	_, ps, _ := net.SplitHostPort(echo)
	port, _ := strconv.Atoi(ps)
	f := newBX(t, bxOptions{mod: func(o *Options) { o.Resolver = res }})
	cfg := &config.Config{Roles: []config.Role{
		{Name: "devs", Match: config.RoleMatch{Groups: []string{"dev"}}, Logins: []string{f.login},
			Forwarding: config.Forwarding{Local: true, Allow: []string{"127.0.0.1/32:" + ps, "0.0.0.0/0:*"}}},
		{Name: "nofwd", Match: config.RoleMatch{Users: []string{"bob@*"}}, Logins: []string{f.login},
			Forwarding: config.Forwarding{Allow: []string{"127.0.0.1/32:" + ps}}},
	}}
	eng, err := policy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.srv.SetPolicy(eng)
	c, _, err := f.dial(certSpec{}, f.login)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"127.0.0.1", "echo.rebind.test"} {
		ch, err := openDirect(c, host, port)
		if err != nil {
			t.Fatalf("open %s: %v", host, err)
		}
		if _, err := ch.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		ch.CloseWrite()
		got, err := io.ReadAll(ch)
		if err != nil || string(got) != "ping" {
			t.Fatalf("echo through %s = %q, %v", host, got, err)
		}
		ch.Close()
	}
	if n := res.calls.Load(); n != 1 {
		t.Errorf("resolver called %d times; want 1 (names are resolved once, IPs never)", n)
	}
	// Another port on loopback is not covered by the /32 entry: the catch-all does not count.
	if _, err := openDirect(c, "127.0.0.1", port+1); err == nil {
		t.Errorf("loopback port outside the allow entry opened")
	}
	// Resolving to one allowed and one forbidden address is refused.
	res.addrs = []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("169.254.169.254")}
	if _, err := openDirect(c, "mixed.test", port); err == nil {
		t.Errorf("a name with a link-local address opened")
	}
	f.waitEvent(state.EventChannelDeny, func(ev state.Event) bool {
		return detail(ev, "code") == codeMetadata && detail(ev, "addr") == "169.254.169.254"
	})
	// A role with an allow list but without forwarding.local cannot forward.
	cb, _, err := f.dial(certSpec{id: bobID()}, f.login)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openDirect(cb, "127.0.0.1", port); err == nil {
		t.Errorf("forward without forwarding.local opened")
	}
	f.waitEvent(state.EventChannelDeny, hasDetail("code", policy.CodeNoForwarding))
}

// TestOwnListenerRefused: no address that reaches one of postern's own
// listeners (the SSH listener, and the HTTP listener the wiring adds) opens
// a forward, even where the role allows loopback, "this network" and the
// listener's exact address.
func TestOwnListenerRefused(t *testing.T) {
	httpLn, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer httpLn.Close()
	own := &netguard.Listeners{}
	own.Add(httpLn.Addr())
	f := newBX(t, bxOptions{mod: func(o *Options) { o.OwnListeners = own }})
	httpPort := httpLn.Addr().(*net.TCPAddr).Port
	eng, err := policy.New(&config.Config{Roles: []config.Role{{Name: "devs", Match: config.RoleMatch{Groups: []string{"dev"}},
		Logins: []string{f.login}, Forwarding: config.Forwarding{Local: true, Allow: []string{
			"127.0.0.1/32:" + strconv.Itoa(f.port), "127.0.0.0/8:*", "::1/128:*", "0.0.0.0/8:*", "::/128:*", "0.0.0.0/0:*", "::/0:*"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	f.srv.SetPolicy(eng)
	c, _, err := f.dial(certSpec{}, f.login)
	if err != nil {
		t.Fatal(err)
	}
	hosts := []string{"127.0.0.1", "127.0.0.2", "127.255.255.254", "0.0.0.0", "0", "2130706433", "0x7f.1",
		"::ffff:127.0.0.1", "::1", "::", "localhost"}
	if ifas, err := net.InterfaceAddrs(); err == nil {
		for _, a := range ifas {
			if p, err := netip.ParsePrefix(a.String()); err == nil && !p.Addr().Is6() {
				hosts = append(hosts, p.Addr().String())
			}
		}
	}
	for _, port := range []int{f.port, httpPort} {
		for _, host := range hosts {
			ch, err := openDirect(c, host, port)
			if err == nil {
				ch.Close()
				t.Errorf("forward to %s:%d (postern's own listener) opened", host, port)
				continue
			}
			dest := policy.Printable(net.JoinHostPort(host, strconv.Itoa(port)))
			if got := detail(f.waitEvent(state.EventChannelDeny, hasDetail("dest", dest)), "code"); got != codeOwnListener {
				t.Errorf("%s: code %q; want %q", dest, got, codeOwnListener)
			}
		}
	}
}

func bobID() (id certs.Identity) {
	id = alice
	id.Username, id.Subject, id.Groups = "bob@example.com", "b1", nil
	return id
}

// TestTargetHandlerGetsChannel: command targets go to the handler
// registered for their kind, with the connection's ConnInfo.
func TestTargetHandlerGetsChannel(t *testing.T) {
	f := newBX(t, bxOptions{mod: func(o *Options) { o.Handlers[HandlerCommand] = TargetHandlerFunc(serveTestInner) }})
	eng, err := policy.New(devConfig(f.login, config.Target{Name: "cmd-1", Kind: config.KindCommand, Command: []string{"true"}}))
	if err != nil {
		t.Fatal(err)
	}
	f.srv.SetPolicy(eng)
	c, _, err := f.dial(certSpec{}, f.login)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := openDirect(c, "cmd-1", 22)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(ch)
	if string(got) != "inner cmd-1 alice@example.com" {
		t.Errorf("inner wrote %q", got)
	}
	f.waitEvent(state.EventChannelOpen, func(ev state.Event) bool { return ev.Target == "cmd-1" })
	// SetPolicy: a new policy without the role denies the next channel.
	empty, _ := policy.New(&config.Config{})
	f.srv.SetPolicy(empty)
	if _, err := openDirect(c, "cmd-1", 22); err == nil {
		t.Errorf("channel opened after the policy was replaced by an empty one")
	}
}

func serveTestInner(_ context.Context, tc *TargetChannel) {
	ch, err := tc.Accept()
	if err != nil {
		return
	}
	defer ch.Close()
	io.WriteString(ch, "inner "+tc.Target.Name+" "+tc.Conn.Identity.Username)
	ch.CloseWrite()
}

func FuzzDirectTCPIPPayload(f *testing.F) {
	f.Add(ssh.Marshal(directTCPIP{Host: "web-1", Port: 22, OriginIP: "127.0.0.1", OriginPort: 1}))
	f.Add([]byte{0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		var p directTCPIP
		if err := ssh.Unmarshal(b, &p); err != nil {
			return
		}
		_ = policy.Printable(net.JoinHostPort(p.Host, strconv.Itoa(int(p.Port))))
		if ip, ok := netguard.ParseHost(p.Host); ok {
			netguard.Classify(ip)
		}
	})
}

// TestPanicInHandlerEndsOnlyItsConnection: a handler that panics ends its
// own connection with a notice; the server keeps serving the next one and
// counts the panic.
func TestPanicInHandlerEndsOnlyItsConnection(t *testing.T) {
	f := newBX(t, bxOptions{mod: func(o *Options) {
		o.Handlers[HandlerCommand] = TargetHandlerFunc(func(ctx context.Context, tc *TargetChannel) {
			if tc.Target.Name == "boom" {
				panic("handler bug")
			}
			serveTestInner(ctx, tc)
		})
	}})
	eng, err := policy.New(devConfig(f.login,
		config.Target{Name: "boom", Kind: config.KindCommand, Command: []string{"true"}},
		config.Target{Name: "cmd-1", Kind: config.KindCommand, Command: []string{"true"}}))
	if err != nil {
		t.Fatal(err)
	}
	f.srv.SetPolicy(eng)
	c, _, err := f.dial(certSpec{}, f.login)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openDirect(c, "boom", 22); err == nil {
		t.Error("a channel to the panicking handler opened")
	}
	if err := c.Wait(); err == nil {
		t.Error("the connection did not end with an error")
	}
	c2, _, err := f.dial(certSpec{}, f.login)
	if err != nil {
		t.Fatalf("the server stopped serving after a panic: %v", err)
	}
	ch, err := openDirect(c2, "cmd-1", 22)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := io.ReadAll(ch); string(got) != "inner cmd-1 alice@example.com" {
		t.Errorf("second connection read %q", got)
	}
	if n := counterValue(t, f.srv.metrics.panics.WithLabelValues("channel")); n != 1 {
		t.Errorf("postern_panics_total{where=channel} = %v; want 1", n)
	}
	if !strings.Contains(f.logBuf.String(), "handler bug") {
		t.Error("the panic was not logged")
	}
}
