package main

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
)

func TestCAExport(t *testing.T) {
	dir := t.TempDir()
	cfg, err := config.Dev(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := certs.LoadAuthority(cfg.CA, cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	exportCmd := func(args ...string) (string, error) {
		var out bytes.Buffer
		g := &globalFlags{Dev: true, DataDir: dir, stdout: &out, stderr: &out}
		c := newCACmd(g)
		c.SetOut(&out)
		c.SetErr(&out)
		c.SetArgs(append([]string{"export"}, args...))
		err := c.Execute()
		return out.String(), err
	}
	for _, tc := range []struct {
		flag string
		ca   *certs.CA
	}{
		{"--user", a.User},
		{"--target", a.Target},
	} {
		out, err := exportCmd(tc.flag)
		if err != nil {
			t.Fatalf("ca export %s: %v", tc.flag, err)
		}
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(out))
		if err != nil || !tc.ca.IsTrusted(pub) {
			t.Errorf("ca export %s = %q; want the %s CA key", tc.flag, out, tc.ca.Name())
		}
	}
	out, err := exportCmd("--host")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(out), a.HostCALine(); got != want {
		t.Errorf("ca export --host = %q; want %q", got, want)
	}
	for _, args := range [][]string{{}, {"--user", "--host"}} {
		if _, err := exportCmd(args...); err == nil {
			t.Errorf("ca export %q succeeded; want exactly one of --user, --host, --target required", args)
		}
	}
	// Export never generates keys.
	empty := t.TempDir()
	var out2 bytes.Buffer
	g := &globalFlags{Dev: true, DataDir: empty, stdout: &out2, stderr: &out2}
	c := newCACmd(g)
	c.SetOut(&out2)
	c.SetErr(&out2)
	c.SetArgs([]string{"export", "--user"})
	if err := c.Execute(); err == nil || !strings.Contains(err.Error(), "postern serve") {
		t.Errorf("export from an empty data dir: %v; want a hint to start postern serve", err)
	}
}
