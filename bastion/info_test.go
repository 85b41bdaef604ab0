package bastion

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/policy"
)

func TestBastionSession(t *testing.T) {
	e := newE2E(t)
	base := []string{"-F", e.cfg, "-p", strconv.Itoa(e.port), e.login + "@localhost"}

	t.Run("shell", func(t *testing.T) {
		res := bxRun(t, "", "ssh", base...)
		if res.code != 0 {
			t.Fatalf("code %d, stderr %q", res.code, res.stderr)
		}
		for _, want := range []string{
			"you are alice@example.com (issuer corp, human)",
			"groups:  dev",
			"roles:   devs",
			"sshd-1",
			"ssh -J " + e.login + "@localhost:" + strconv.Itoa(e.port) + " " + e.login + "@sshd-1",
			"ssh -N -L",
		} {
			if !strings.Contains(res.stdout, want) {
				t.Errorf("stdout lacks %q:\n%s", want, res.stdout)
			}
		}
		t.Logf("ssh bastion:\n%s", res.stdout)
		if strings.Contains(res.stdout, "web-9") {
			t.Errorf("stdout lists web-9, which no role reaches:\n%s", res.stdout)
		}
	})
	t.Run("whoami with pty", func(t *testing.T) {
		res := bxRun(t, "", "ssh", append([]string{"-tt"}, append(base, "whoami")...)...)
		if res.code != 0 || !strings.Contains(res.stdout, "alice@example.com") || !strings.Contains(res.stdout, "\r\n") {
			t.Fatalf("code %d, stdout %q", res.code, res.stdout)
		}
	})
	t.Run("targets --json", func(t *testing.T) {
		res := bxRun(t, "", "ssh", append(base, "targets", "--json")...)
		if res.code != 0 {
			t.Fatalf("code %d, stderr %q", res.code, res.stderr)
		}
		var inf Info
		if err := json.Unmarshal([]byte(res.stdout), &inf); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, res.stdout)
		}
		if inf.User != "alice@example.com" || inf.Issuer != "corp" || len(inf.Roles) != 1 || inf.Expires == "" {
			t.Errorf("info = %+v", inf)
		}
		var names []string
		for _, ti := range inf.Targets {
			names = append(names, ti.Name)
			if ti.Name == "echo" && (ti.Kind != config.KindTCP || len(ti.How) != 1 || !ti.Forward) {
				t.Errorf("echo = %+v", ti)
			}
		}
		if strings.Join(names, ",") != "sshd-1,echo" {
			t.Errorf("targets = %v; want sshd-1,echo", names)
		}
	})
	t.Run("unknown command", func(t *testing.T) {
		res := bxRun(t, "", "ssh", append(base, "rm", "-rf", "/")...)
		if res.code != exitUsage || !strings.Contains(res.stderr, "postern: the bastion runs no commands") {
			t.Fatalf("code %d, stderr %q", res.code, res.stderr)
		}
	})
	t.Run("subsystem refused", func(t *testing.T) {
		res := bxRun(t, "", "ssh", append([]string{"-s"}, append(base, "sftp")...)...)
		if res.code == 0 || !strings.Contains(res.stderr, "subsystem request failed") {
			t.Fatalf("code %d, stderr %q", res.code, res.stderr)
		}
	})
	t.Run("agent forwarding refused", func(t *testing.T) {
		res := bxRun(t, "", "ssh", append([]string{"-A", "-o", "IdentityAgent=/dev/null"}, append(base, "whoami")...)...)
		if res.code != 0 {
			t.Fatalf("code %d, stderr %q", res.code, res.stderr)
		}
	})
	t.Run("sftp to the bastion refused", func(t *testing.T) {
		res := bxRun(t, "", "sftp", "-F", e.cfg, "-P", strconv.Itoa(e.port), "-b", "-", e.login+"@localhost")
		if res.code == 0 {
			t.Fatalf("sftp to the bastion succeeded")
		}
	})
}

// TestSessionRequests drives the bastion's session channel with x/crypto to
// check the answers to each request type and the stderr notices.
func TestSessionRequests(t *testing.T) {
	f := newBX(t, bxOptions{})
	c, _, err := f.dial(certSpec{}, f.login)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	var stdout, stderr strings.Builder
	sess.Stdout, sess.Stderr = &stdout, &stderr
	want := map[string]bool{
		"pty-req":                    true,
		"env":                        true,
		"window-change":              true,
		"auth-agent-req@openssh.com": false,
		"x11-req":                    false,
		"subsystem":                  false,
		"signal":                     false,
	}
	payloads := map[string][]byte{
		"pty-req": ssh.Marshal(struct {
			Term             string
			Cols, Rows, W, H uint32
			Modes            string
		}{"xterm", 80, 24, 0, 0, ""}),
		"env":           ssh.Marshal(struct{ Name, Value string }{"LANG", "C"}),
		"window-change": ssh.Marshal(struct{ Cols, Rows, W, H uint32 }{100, 30, 0, 0}),
		"subsystem":     ssh.Marshal(struct{ Name string }{"sftp"}),
		"x11-req": ssh.Marshal(struct {
			Single        bool
			Proto, Cookie string
			Screen        uint32
		}{false, "MIT-MAGIC-COOKIE-1", "00", 0}),
	}
	for _, typ := range []string{"pty-req", "env", "window-change", "auth-agent-req@openssh.com", "x11-req", "subsystem", "signal"} {
		ok, err := sess.SendRequest(typ, true, payloads[typ])
		if err != nil || ok != want[typ] {
			t.Errorf("%s = %v, %v; want %v", typ, ok, err, want[typ])
		}
	}
	if err := sess.Run("whoami"); err != nil {
		t.Fatalf("whoami: %v", err)
	}
	for _, notice := range []string{"agent forwarding is not available", "X11 forwarding is not available", "subsystems are not available"} {
		if !strings.Contains(stderr.String(), notice) {
			t.Errorf("stderr lacks %q: %q", notice, stderr.String())
		}
	}
	if !strings.Contains(stdout.String(), "(issuer corp, human)\r\n") {
		t.Errorf("stdout with pty = %q; want CRLF lines", stdout.String())
	}
	if !strings.Contains(stdout.String(), "roles:   none; you may reach no target") {
		t.Errorf("stdout = %q; want the no-roles notice", stdout.String())
	}
}

// TestInfoTextShowsRulesAndModeration: `ssh bastion` tells an agent which
// commands are held or denied where, which targets are exec-only and which
// wait for a moderator.
func TestInfoTextShowsRulesAndModeration(t *testing.T) {
	var b strings.Builder
	(&serverConn{}).writeInfoText(&b, Info{User: "bot", Issuer: "ci", Kind: "agent", Roles: []string{"agents"},
		Targets: []TargetInfo{
			{Access: policy.Access{Name: "web-1", Kind: "ssh", Logins: []string{"deploy"}, Record: "required", Moderated: true,
				Rules: []policy.RuleInfo{{Match: `\bdeploy\b`, Action: "approve", Approvers: []string{"sre"}},
					{Glob: "shutdown*", Action: "deny"}}}},
			{Access: policy.Access{Name: "web-2", Kind: "ssh", Logins: []string{"deploy"}, Record: "required", Interactive: true}},
		}})
	out := b.String()
	for _, want := range []string{"on web-1:", "commands only (no interactive shell)", "sessions wait until a moderator watches them",
		`\bdeploy\b: held for approval by sre`, "shutdown*: denied"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "on web-2:") {
		t.Errorf("web-2 has nothing to say but is listed:\n%s", out)
	}
}
