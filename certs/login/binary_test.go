package login_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/certs/login"
	"github.com/posternhq/postern/internal/testutil"
)

// TestEndToEndDexBinary is TestEndToEndDex through the built postern
// binary: postern login --token-file writes a profile ssh uses; re-running
// says the certificate is still valid; --quiet prints nothing; a refusal is
// printed as "postern login: <error> (<code>)" with exit status 1.
func TestEndToEndDexBinary(t *testing.T) {
	e := startDexE2E(t)
	b, d, tokenFile, tg, principals := e.bastion, e.dex, e.tokenFile, e.target, alicePrincipals
	bin := testutil.PosternBinary(t)
	dir := filepath.Join(t.TempDir(), "profile")
	run := func(args ...string) (stdout, stderr string, code int) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "POSTERN_BASTION="+b.URL)
		var o, e strings.Builder
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee):
			code = ee.ExitCode()
		default:
			t.Fatal(err)
		}
		return o.String(), e.String(), code
	}
	out, errs, code := run("login", "--token-file", tokenFile, "--dir", dir)
	if code != 0 {
		t.Fatalf("postern login exited %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	if !strings.Contains(out, "-J "+"127.0.0.1 <login>@<target>") {
		t.Errorf("stdout lacks the usage line:\n%s", out)
	}
	p, err := login.LoadProfile(dir)
	if err != nil {
		t.Fatal(err)
	}
	checkKeygenList(t, b, p, principals, 8*time.Hour) // the human default
	checkSSH(t, p, tg)

	out, _, code = run("login", "--token-file", tokenFile, "--dir", dir)
	if code != 0 || !strings.Contains(out, "still valid until") {
		t.Errorf("second login: exit %d, stdout %q; want exit 0 saying still valid", code, out)
	}
	out, errs, code = run("login", "--quiet", "--force", "--token-file", tokenFile, "--dir", dir)
	if code != 0 || out != "" || errs != "" {
		t.Errorf("quiet forced login: exit %d, stdout %q, stderr %q; want exit 0 and no output", code, out, errs)
	}

	// A user no role admits gets the server's message and code.
	other := filepath.Join(t.TempDir(), "mallory-token")
	mallory := d.PasswordToken(t, "mallory@example.com", "battery staple")
	if err := os.WriteFile(other, []byte(mallory), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errs, code = run("login", "--token-file", other, "--dir", t.TempDir())
	if code != 1 || out != "" || errs != "postern login: no role grants you access (no_access)\n" {
		t.Errorf("refused login: exit %d, stdout %q, stderr %q; want exit 1 and the server's error", code, out, errs)
	}
	if strings.Contains(errs, mallory) {
		t.Error("the token was printed")
	}
}
