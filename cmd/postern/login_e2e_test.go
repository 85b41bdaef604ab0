package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/bastion/innerhop"
	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/certs/login"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/dextest"
	"github.com/posternhq/postern/internal/sshdtest"
	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/server"
)

// TestLoginEndToEndService is issue 2's path through the whole bastion: a real
// Dex vouches for alice → postern login against the real server.Service
// (its /v1/config and /v1/certs) → the stock ssh client, with nothing but the
// profile's ssh_config, jumps through the bastion to a real sshd target that
// trusts only the target CA.
func TestLoginEndToEndService(t *testing.T) {
	testutil.Need(t, "ssh")
	d := dextest.Start(t, dextest.Options{Users: []dextest.User{
		{Email: "alice@example.com", Password: "correct horse", Groups: []string{"sre"}},
	}})

	data := t.TempDir()
	cfg := &config.Config{
		Listen:  config.Listen{SSH: testutil.FreeAddr(t), HTTP: testutil.FreeAddr(t)},
		DataDir: data,
	}
	cfg.Identity.Issuers = []config.Issuer{{
		Name: "corp", IssuerURL: d.Issuer(), ClientID: d.ClientID(), Kind: "human",
		UsernameClaim: "email", GroupsClaim: "groups",
	}}
	cfg.SetDefaults()
	// The CAs are generated here first so the target can trust the target
	// CA; the service loads the same keys from the data directory.
	auth, err := certs.LoadAuthority(cfg.CA, cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	target := sshdtest.Start(t, sshdtest.Options{TrustedUserCAKeys: auth.Target.Trusted()})
	cfg.Targets = []config.Target{{
		Name: "web-1", Kind: config.KindSSH, Address: target.Addr(),
		HostKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(target.HostKey()))),
	}}
	cfg.Roles = []config.Role{{
		Name: "sre", Match: config.RoleMatch{Groups: []string{"sre"}},
		Targets: []config.TargetSelector{{Name: "web-*"}}, Logins: []string{"root"},
		Forwarding: config.Forwarding{Local: true}, Record: "optional",
		Interactive: "deny",
	}}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}

	serveForTest(t, cfg, slog.LevelWarn)

	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(d.PasswordToken(t, "alice@example.com", "correct horse")), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := login.Login(t.Context(), login.Options{
		Bastion: cfg.PublicURL, Dir: filepath.Join(t.TempDir(), "profile"),
		Mode: login.ModeTokenFile, TokenFile: tokenFile,
	})
	if err != nil {
		t.Fatal(err)
	}
	if p.Username != "alice@example.com" || p.SSHAddress != cfg.SSHAddress {
		t.Errorf("profile user %q at %s; want alice@example.com at %s", p.Username, p.SSHAddress, cfg.SSHAddress)
	}

	cmd := exec.Command("ssh", "-F", p.SSHConfig, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
		"-o", "ConnectTimeout=10", "-J", p.BastionHost, "root@web-1", "echo hello from $(id -un)")
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "hello from root" {
		t.Fatalf("ssh -J %s root@web-1: %v\n%s\ntarget log:\n%s", p.BastionHost, err, out, target.Log())
	}
	if log := target.Log(); !strings.Contains(log, "Accepted publickey for root") || !strings.Contains(log, "alice@example.com") {
		t.Errorf("the target did not see a target-CA certificate for alice:\n%s", log)
	}

	shell := func() (int, string) {
		t.Helper()
		var stderr strings.Builder
		cmd := exec.Command("ssh", "-F", p.SSHConfig, "-o", "BatchMode=yes", "-T", "-J", p.BastionHost, "root@web-1")
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("shell on an exec-only role: %v; want a refusal", err)
		}
		return ee.ExitCode(), stderr.String()
	}
	if code, stderr := shell(); code != innerhop.ExitDenied || strings.Contains(stderr, `"code"`) ||
		!strings.Contains(stderr, "interactive sessions are not allowed") {
		t.Errorf("shell: exit %d, stderr %q; want exit %d and a human message", code, stderr, innerhop.ExitDenied)
	}

	// login --json on the fresh profile: the bastion's refusal of a shell
	// (the role is exec-only) now reaches ssh's stderr as JSON, with the
	// documented status.
	if _, err := login.Login(t.Context(), login.Options{
		Bastion: cfg.PublicURL, Dir: p.Dir, Mode: login.ModeTokenFile, TokenFile: tokenFile, JSONErrors: true,
	}); err != nil {
		t.Fatal(err)
	}
	if code, stderr := shell(); code != innerhop.ExitDenied || !strings.Contains(stderr, `"code":"interactive_denied"`) {
		t.Errorf("shell with a --json profile: exit %d, stderr %q; want exit %d and a JSON error", code, stderr, innerhop.ExitDenied)
	}
}

// loginTestLog sends log lines to the test log.
type loginTestLog struct{ t *testing.T }

func (w loginTestLog) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// serveForTest runs the service of cfg (validated, with fixed listen
// addresses) in the test's process until the test ends, logging at level
// and above to the test's log, and waits until both listeners answer.
func serveForTest(t *testing.T, cfg *config.Config, level slog.Level) {
	t.Helper()
	svc, err := server.NewService(cfg, server.ServiceOptions{
		Log: slog.New(slog.NewTextHandler(loginTestLog{t}, &slog.HandlerOptions{Level: level})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("service: %v", err)
		}
	})
	testutil.WaitPort(t, cfg.Listen.HTTP, 30*time.Second)
	testutil.WaitPort(t, cfg.Listen.SSH, 30*time.Second)
}
