package innerhop

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/netguard"
	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/policy"
	"github.com/posternhq/postern/state"
)

// TestInnerHopForwardPolicy: forwards through an ssh target (stock ssh -W,
// -L and -R through the inner hop to a real sshd) are decided by the
// role's forwarding.target_allow with the destination as the target sees
// it: default deny, loopback and metadata only where an entry names them,
// postern's own listener never (the target here is postern's own host), and
// every refusal audited with its code.
func TestInnerHopForwardPolicy(t *testing.T) {
	echo := testutil.EchoServer(t)
	_, echoPort, _ := net.SplitHostPort(echo)
	other := testutil.EchoServer(t) // a loopback service no entry names
	// The -R port is one the machine just had free (a fixed one may be taken
	// by any other program); the listed range holds it and ports around it.
	rport := testutil.FreePort(t)
	lo, hi := max(rport-50, 1024), rport+50
	f := newHopFixture(t, fixtureOpts{forwarding: config.Forwarding{Local: true, Remote: true,
		TargetAllow: []string{echo, "169.254.0.0/16:80", "fd00::/8:80", "db.internal:5432", fmt.Sprintf("127.0.0.1:%d-%d", lo, hi)}}})
	sshd := startSSHD(t, f.auth)
	f.setTargets(sshTarget("web-1", sshd))
	_, outerPort, _ := net.SplitHostPort(f.outer)

	in := []byte("through web-1\n")
	if r := f.ssh(in, "-W", echo, "web-1"); !bytes.Equal(r.Stdout, in) {
		t.Fatalf("-W %s (allowed): stdout %q exit %d stderr %q", echo, r.Stdout, r.Code, r.Stderr)
	}
	tests := []struct{ dest, code string }{
		{other, policy.CodeNotInAllowList},                        // the target's loopback, not listed
		{"[::1]:" + echoPort, policy.CodeNotInAllowList},          // another spelling of loopback, not listed
		{"0x7f000001:" + echoPort[:1], policy.CodeNotInAllowList}, // hex loopback, another port
		{"169.254.169.254:80", netguard.CodeMetadata},             // listed link-local does not open metadata
		{"[fd00:ec2::254]:80", netguard.CodeMetadata},
		{"[::ffff:169.254.169.254]:80", netguard.CodeMetadata},
		{"metadata.google.internal:80", netguard.CodeMetadata},
		{"10.1.2.3:5432", policy.CodeNotInAllowList},
		{"db.internal.evil:5432", policy.CodeNotInAllowList},
	}
	for _, tt := range tests {
		before := len(f.events.ofType(state.EventChannelDeny))
		r := f.ssh([]byte("x"), "-W", tt.dest, "web-1")
		if r.Code == 0 || len(r.Stdout) != 0 {
			t.Errorf("-W %s: exit %d stdout %q; want refused", tt.dest, r.Code, r.Stdout)
			continue
		}
		ev := f.waitEvent(state.EventChannelDeny, before+1)[before]
		if ev.Details["code"] != tt.code || ev.Details["hop"] != "inner" || ev.Details["channel"] != "direct-tcpip" {
			t.Errorf("-W %s: audit %v; want code %s on the inner hop", tt.dest, ev.Details, tt.code)
		}
	}

	// -L through the target works for the listed destination only.
	local := testutil.FreePort(t)
	fwd := testutil.Start(t, "ssh", []string{"-F", f.sshCfg, "-N", "-o", "ExitOnForwardFailure=yes",
		"-L", "127.0.0.1:" + strconv.Itoa(local) + ":" + echo, "web-1"})
	laddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(local))
	if err := testutil.AwaitPort(laddr, 30*time.Second, fwd.Done()); err != nil {
		t.Fatalf("ssh -L never listened: %v; output %s", err, fwd.Output())
	}
	c, err := net.Dial("tcp", laddr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write(in)
	got := make([]byte, len(in))
	if _, err := c.Read(got); err != nil || !bytes.Equal(got, in) {
		t.Errorf("-L to %s: %q, %v", echo, got, err)
	}
	c.Close()

	// -R: the bind address and port must be listed too.
	r := f.ssh(nil, "-o", "ExitOnForwardFailure=yes", "-R", fmt.Sprintf("127.0.0.1:%d:%s", rport, echo), "web-1", "echo bound")
	if r.Code != 0 || string(r.Stdout) != "bound\n" {
		t.Errorf("-R on a listed port: exit %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	for _, spec := range []string{"0:" + echo, fmt.Sprintf("127.0.0.1:%d:%s", hi+1, echo), fmt.Sprintf("0.0.0.0:%d:%s", rport, echo)} {
		before := len(f.events.ofType(state.EventChannelDeny))
		r := f.ssh(nil, "-o", "ExitOnForwardFailure=yes", "-R", spec, "web-1", "echo bound")
		if r.Code == 0 || strings.Contains(string(r.Stdout), "bound") {
			t.Errorf("-R %s: exit %d stdout %q; want refused", spec, r.Code, r.Stdout)
			continue
		}
		if ev := f.waitEvent(state.EventChannelDeny, before+1)[before]; ev.Details["channel"] != "tcpip-forward" {
			t.Errorf("-R %s: audit %v; want a tcpip-forward denial", spec, ev.Details)
		}
	}

	// postern's own listener is never reached, whatever the entries say:
	// web-1 runs on postern's host, so its loopback is postern's.
	f.setRole(func(r *config.Role) {
		r.Forwarding.TargetAllow = []string{"127.0.0.0/8:*", "0.0.0.0/8:*", "[::1]:*", "localhost:*"}
	})
	for _, dest := range []string{f.outer, "127.0.0.2:" + outerPort, "0.0.0.0:" + outerPort, "localhost:" + outerPort, "[::1]:" + outerPort} {
		before := len(f.events.ofType(state.EventChannelDeny))
		if r := f.ssh(nil, "-W", dest, "web-1"); r.Code == 0 {
			t.Errorf("-W %s (postern's own listener): exit 0; want refused", dest)
			continue
		}
		if ev := f.waitEvent(state.EventChannelDeny, before+1)[before]; ev.Details["code"] != netguard.CodeOwnListener {
			t.Errorf("-W %s: audit %v; want %s", dest, ev.Details, netguard.CodeOwnListener)
		}
	}
	if r := f.ssh(in, "-W", echo, "web-1"); !bytes.Equal(r.Stdout, in) {
		t.Errorf("-W %s under 127.0.0.0/8: stdout %q exit %d", echo, r.Stdout, r.Code)
	}
}
