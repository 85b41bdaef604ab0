package bastion

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/posternhq/postern/internal/config"
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
