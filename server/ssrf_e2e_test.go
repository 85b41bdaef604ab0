package server_test

import (
	"net"
	"strings"
	"testing"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/posterntest"
	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/state"
)

// TestForwardsNeverReachPostern: with a role that may forward anywhere,
// loopback included, stock ssh -W reaches a service on loopback but never
// postern's own HTTP or SSH listener (the HTTP one on 0.0.0.0), by any
// address that reaches them; nor a cloud metadata endpoint that a broader
// allow prefix covers.
func TestForwardsNeverReachPostern(t *testing.T) {
	echo := testutil.EchoServer(t)
	cfg := &config.Config{
		Listen:    config.Listen{HTTP: "0.0.0.0:0"},
		PublicURL: "https://bastion.test",
		Roles: []config.Role{{Name: "ops", Match: config.RoleMatch{Users: []string{"alice"}}, Logins: []string{testLogin(t)},
			Forwarding: config.Forwarding{Local: true, Allow: []string{"127.0.0.0/8:1-65535", "0.0.0.0/8:1-65535", "::1/128:1-65535",
				"169.254.0.0/16:1-65535", "100.64.0.0/10:1-65535", "fd00::/8:1-65535", "0.0.0.0/0:1-65535", "::/0:1-65535"}}}},
	}
	svc := posterntest.Start(t, cfg)
	u := svc.User(alice, testLogin(t))
	// Loopback is allowed: the echo server answers.
	if r := u.SSH(nil, []byte("ping"), "-W", echo, "bastion"); r.Code != 0 || string(r.Stdout) != "ping" {
		t.Fatalf("ssh -W %s: exit %d stdout %q stderr %q; want the echo", echo, r.Code, r.Stdout, r.Stderr)
	}
	_, httpPort, _ := net.SplitHostPort(strings.TrimPrefix(svc.HTTPURL, "http://"))
	_, sshPort, _ := net.SplitHostPort(svc.SSHAddr)
	tests := []struct{ dest, code string }{
		{"127.0.0.1:" + httpPort, "ssrf_own_listener"},
		{"127.0.0.2:" + httpPort, "ssrf_own_listener"},
		{"127.1.2.3:" + httpPort, "ssrf_own_listener"},
		{"0.0.0.0:" + httpPort, "ssrf_own_listener"},
		{"[::1]:" + httpPort, "ssrf_own_listener"},
		{"[::ffff:127.0.0.9]:" + httpPort, "ssrf_own_listener"},
		{"2130706434:" + httpPort, "ssrf_own_listener"},
		{"127.0.0.1:" + sshPort, "ssrf_own_listener"},
		{"127.0.0.3:" + sshPort, "ssrf_own_listener"},
		{"169.254.169.254:80", "ssrf_metadata"},
		{"100.100.100.200:80", "ssrf_metadata"},
		{"[fd00:ec2::254]:80", "ssrf_metadata"},
		{"metadata.google.internal:80", "ssrf_metadata"},
	}
	for _, tt := range tests {
		r := u.SSH(nil, nil, "-W", tt.dest, "bastion")
		if r.Code == 0 {
			t.Errorf("ssh -W %s: exit 0, stdout %q; want refused", tt.dest, r.Stdout)
			continue
		}
		host, port, _ := net.SplitHostPort(tt.dest)
		want := net.JoinHostPort(host, port)
		svc.WaitEvent(state.EventChannelDeny, func(e state.Event) bool {
			return e.Details["dest"] == want && e.Details["code"] == tt.code
		})
	}
}
