package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/state"
)

// checkRun runs `postern check` in-process and returns its exit status,
// stdout and the message it would print.
func checkRun(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), append([]string{"check"}, args...), &out, &errb)
	switch ue := usererr.As(err); {
	case err == nil:
		return 0, out.String(), errb.String()
	case ue != nil && ue.Exit != 0:
		return ue.Exit, out.String(), ue.Msg
	}
	return 1, out.String(), err.Error()
}

// TestCheck: postern check accepts a configuration that would start and
// exits 1 naming every problem otherwise: a bad value with its file line, a
// CA key that does not parse or is readable by others, a missing known_hosts
// file, a stored private key that is not one, an unreachable state store
// with --connect; it never creates the data directory's keys.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	keys := t.TempDir()
	if _, err := certs.LoadAuthority(config.CAs{}, keys); err != nil {
		t.Fatal(err)
	}
	write := func(name, body string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", fmt.Sprintf(`data_dir: %s
ca:
  user: {key_file: %s/ca/user_ca}
targets:
  - {name: echo, kind: command, command: [cat]}
roles:
  - {name: r, match: {groups: [g]}, targets: [echo], logins: [me]}
`, data, keys), 0o600)
	code, out, msg := checkRun(t, "--config", good)
	if code != 0 || !strings.Contains(out, "good.yaml: OK (1 targets, 1 roles, 0 issuers)") {
		t.Fatalf("check of a valid config: exit %d, %q, %q", code, out, msg)
	}
	if _, err := os.Stat(filepath.Join(data, "ca")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("check created %s/ca: %v", data, err)
	}
	if code, out, _ := checkRun(t, "--config", good, "-q"); code != 0 || out != "" {
		t.Errorf("check -q: exit %d, %q", code, out)
	}

	loose := write("loose_ca", "not a key", 0o644)
	garbage := write("garbage_ca", "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n", 0o600)
	bad := write("bad.yaml", fmt.Sprintf(`data_dir: %s
ca:
  user: {key_file: %s}
  host: {key_file: %s}
targets:
  - {name: web, kind: ssh, address: "h:22", known_hosts: %s/missing_known_hosts}
  - {name: db, kind: ssh, address: "h:22", host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl", private_key: "nope"}
`, data, loose, garbage, dir), 0o600)
	code, _, msg = checkRun(t, "--config", bad)
	for _, want := range []string{
		"ca.user.key_file: " + loose + " is readable by group or others",
		"ca.host.key_file: " + garbage,
		"targets[0].known_hosts: open " + dir + "/missing_known_hosts: no such file or directory",
		"targets[1].private_key: not an unencrypted private key",
	} {
		if code != 1 || !strings.Contains(msg, want) {
			t.Errorf("check of a bad config: exit %d; message lacks %q:\n%s", code, want, msg)
		}
	}

	typo := write("typo.yaml", "listen: {ssh: \":0\"}\n\nrecording:\n  fsync_intervl: 1s\n", 0o600)
	if code, _, msg := checkRun(t, "--config", typo); code != 1 || !strings.Contains(msg, typo+`:4: recording.fsync_intervl: unknown key "fsync_intervl"; did you mean "fsync_interval"?`) {
		t.Errorf("check of a typo: exit %d, %q", code, msg)
	}

	unreachable := write("pg.yaml", fmt.Sprintf("data_dir: %s\nstate: postgres://nobody:pw@127.0.0.1:%d/none?sslmode=disable&connect_timeout=5\n", data, testutil.FreePort(t)), 0o600)
	if code, _, _ := checkRun(t, "--config", unreachable); code != 0 {
		t.Errorf("check without --connect reached for the state store")
	}
	if code, _, msg := checkRun(t, "--config", unreachable, "--connect"); code != 1 || !strings.Contains(msg, "state: connect to state store") || strings.Contains(msg, ":pw@") {
		t.Errorf("check --connect of an unreachable state store: exit %d, %q", code, msg)
	}
	if code, _, msg := checkRun(t); code != 1 || !strings.Contains(msg, "--config") {
		t.Errorf("check without a config: exit %d, %q", code, msg)
	}
}

// TestReloadReportsAppliedAndRestartNeeded: a SIGHUP reload applies the
// policy and says which changed keys it applied and which need a restart
// (in the log and the config.reload audit event); it refuses a
// configuration whose new CA key does not parse, keeping the running one.
func TestReloadReportsAppliedAndRestartNeeded(t *testing.T) {
	if testing.Short() {
		t.Skip("runs postern serve")
	}
	bin := testutil.PosternBinary(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "postern.yaml")
	base := fmt.Sprintf(`listen: {ssh: "127.0.0.1:0", http: "127.0.0.1:0"}
data_dir: %s
targets:
  - {name: echo, kind: command, command: [cat]}
roles:
  - {name: r, match: {groups: [g]}, targets: [echo], logins: [me]}
`, dir)
	if err := os.WriteFile(cfgPath, []byte(base), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := testutil.Start(t, bin, []string{"serve", "--config", cfgPath, "--log-format", "json"})
	srv.WaitLine(t, servingLine, 30*time.Second)

	changed := base + "  - {name: r2, match: {groups: [h]}, targets: [echo], logins: [me]}\nidentity: {cert_ttl: {human: 2h}}\n"
	if err := os.WriteFile(cfgPath, []byte(changed), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := srv.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	line := srv.WaitLine(t, regexp.MustCompile(`"msg":"configuration reloaded".*`), 30*time.Second)
	var rep struct {
		Applied       []string `json:"applied"`
		RestartNeeded []string `json:"restart_needed"`
		Roles         int      `json:"roles"`
	}
	if err := json.Unmarshal([]byte(line), &rep); err != nil {
		t.Fatal(err)
	}
	if strings.Join(rep.Applied, ",") != "roles" || strings.Join(rep.RestartNeeded, ",") != "identity.cert_ttl" || rep.Roles != 2 {
		t.Errorf("reload report %s; want roles applied, identity.cert_ttl needing a restart, 2 roles", line)
	}

	garbage := filepath.Join(dir, "broken_ca")
	if err := os.WriteFile(garbage, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, []byte(changed+"ca: {user: {key_file: "+garbage+"}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := srv.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	line = srv.WaitLine(t, regexp.MustCompile(`"msg":"configuration reload rejected.*`), 30*time.Second)
	if !strings.Contains(line, "ca.user.key_file") {
		t.Errorf("rejection %s does not name ca.user.key_file", line)
	}
	select {
	case <-srv.Done():
		t.Fatalf("postern exited after a rejected reload:\n%s", srv.Output())
	default:
	}

	st, err := state.Open(context.Background(), "sqlite://"+filepath.Join(dir, "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var reloads []string
	// The event is appended just after the log line: poll for it.
	for deadline := time.Now().Add(30 * time.Second); len(reloads) < 2 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		evs, err := st.Events(context.Background(), 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		reloads = reloads[:0]
		for _, e := range evs {
			if e.Type == state.EventConfigReload {
				b, _ := json.Marshal(e.Details)
				reloads = append(reloads, string(b))
			}
		}
	}
	if len(reloads) != 2 || !strings.Contains(reloads[0], `"applied":["roles"]`) || !strings.Contains(reloads[0], `"restart_needed":["identity.cert_ttl"]`) ||
		!strings.Contains(reloads[1], `"outcome":"rejected"`) {
		t.Errorf("config.reload events = %v", reloads)
	}
}
