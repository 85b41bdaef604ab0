package innerhop

import (
	"bytes"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/state"
)

func TestCommandTargetExec(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{record: "required"})
	f.setTargets(config.Target{Name: "psql-prod", Kind: config.KindCommand,
		Command: []string{"/bin/sh", "-c"}, Env: map[string]string{"PGPASSWORD": "s3cr3t-value"}})

	tests := []struct {
		name       string
		cmd        string
		stdin      []byte
		wantOut    string
		wantErr    string
		wantStatus int
	}{
		{name: "argument", cmd: `echo "$0|$PGPASSWORD"; exit 4`, wantOut: "/bin/sh|s3cr3t-value\n", wantStatus: 4},
		{name: "stderr", cmd: "echo oops >&2", wantErr: "oops\n"},
		{name: "stdin", cmd: "tr a-z A-Z", stdin: []byte("select 1;\n"), wantOut: "SELECT 1;\n"},
		{name: "no client env", cmd: `echo "${SSH_AUTH_SOCK:-none} $USER"`, wantOut: "none " + testLogin(t) + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.ssh(tt.stdin, "psql-prod", tt.cmd)
			if r.Code != tt.wantStatus || string(r.Stdout) != tt.wantOut || !strings.Contains(string(r.Stderr), tt.wantErr) {
				t.Errorf("exit %d stdout %q stderr %q; want %d %q %q", r.Code, r.Stdout, r.Stderr, tt.wantStatus, tt.wantOut, tt.wantErr)
			}
		})
	}
	ends := f.waitEvent(state.EventSessionEnd, len(tests))
	c := f.checkCast(ends[0].Session)
	if string(c.output) != "/bin/sh|s3cr3t-value\n" {
		t.Errorf("recorded output %q", c.output)
	}
	if c.meta["kind"] != "command" || c.meta["exit_status"] != float64(4) {
		t.Errorf("metadata %v; want kind command, exit 4", c.meta)
	}
	for _, e := range f.events.ofType(state.EventSessionStart) {
		if strings.Contains(strings.ToLower(strings.Join(mapStrings(e.Details), " ")), "s3cr3t") {
			t.Errorf("audit event leaks the secret: %v", e)
		}
	}
	if strings.Contains(f.logs.String(), "s3cr3t") {
		t.Errorf("logs leak the secret")
	}
}

func mapStrings(m map[string]any) []string {
	var out []string
	for k, v := range m {
		out = append(out, k, strings.TrimSpace(strings.ReplaceAll(strings.ReplaceAll(toString(v), "\n", " "), "\t", " ")))
	}
	return out
}

func toString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return ""
}

func TestCommandTargetDirAndProcessGroup(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{})
	f.setTargets(config.Target{Name: "tool", Kind: config.KindCommand, Command: []string{"/bin/sh", "-c"}})
	// A background child keeps running after the command exits; the
	// session end kills the whole group.
	r := f.ssh(nil, "tool", "pwd; sleep 300 >/dev/null 2>&1 & echo $!")
	if r.Code != 0 {
		t.Fatalf("exit %d stderr %q", r.Code, r.Stderr)
	}
	lines := strings.Fields(string(r.Stdout))
	if len(lines) != 2 {
		t.Fatalf("output %q; want a directory and a pid", r.Stdout)
	}
	f.waitEvent(state.EventSessionEnd, 1)
	if _, err := os.Stat(lines[0]); !os.IsNotExist(err) {
		t.Errorf("working directory %s still exists (err %v)", lines[0], err)
	}
	if !exits(t, lines[1]) {
		t.Errorf("background process %s survived the session", lines[1])
	}
}

// exits reports whether process pid exits within 10 seconds (a zombie has
// exited). It waits on a pidfd, which becomes readable at exit.
func exits(t *testing.T, pid string) bool {
	t.Helper()
	n, err := strconv.Atoi(pid)
	if err != nil {
		t.Fatalf("pid %q: %v", pid, err)
	}
	fd, err := unix.PidfdOpen(n, 0)
	if err != nil {
		return true // ESRCH: gone already
	}
	defer unix.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		k, err := unix.Poll(fds, 10_000)
		if err == unix.EINTR {
			continue
		}
		return err == nil && k == 1
	}
}

func TestCommandTargetRunAs(t *testing.T) {
	if os.Getuid() != 0 {
		testutil.Missing(t, "run_as needs root")
	}
	if _, err := user.Lookup("nobody"); err != nil {
		testutil.Missing(t, "no user nobody")
	}
	f := newHopFixture(t, fixtureOpts{})
	f.setTargets(config.Target{Name: "tool", Kind: config.KindCommand, Command: []string{"/bin/sh", "-c"}, RunAs: "nobody"})
	r := f.ssh(nil, "tool", `id -un; echo "$HOME"; test -w . && echo writable`)
	if r.Code != 0 || !strings.HasPrefix(string(r.Stdout), "nobody\n") || !strings.Contains(string(r.Stdout), "writable") {
		t.Errorf("exit %d stdout %q stderr %q; want nobody in a writable directory", r.Code, r.Stdout, r.Stderr)
	}
}

func TestCommandTargetInteractive(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{record: "required"})
	f.setTargets(config.DemoTarget())

	c := startPTYClient(t, 100, 30, "-F", f.sshCfg, "-tt", "demo")
	c.Send("PS1='demo$ '; echo MARK-$((40+2))\r")
	c.Expect(`MARK-42`)
	c.Send("stty size; tty\r")
	c.Expect(`30 100\r\n/dev/pts/`)
	c.Resize(120, 40)
	// The pty is postern's own: input is masked exactly while echo is off.
	c.Send("stty -echo; printf '%s? ' pw; read -r pw; stty echo; echo len-${#pw}\r")
	c.Expect(`pw\? `)
	c.Send("topsecret\r")
	c.Expect(`len-9`)
	c.Send("exit 3\r")
	code, out := c.Wait()
	if code != 3 {
		t.Errorf("exit = %d; want 3", code)
	}
	f.waitEvent(state.EventSessionEnd, 1)
	cast := f.checkCast(f.lastSession())
	var resized bool
	for _, e := range cast.codes("r") {
		resized = resized || e.Data == "120x40"
	}
	if !resized {
		t.Errorf("no r event 120x40")
	}
	if !strings.Contains(out, string(cast.output)) {
		t.Errorf("recorded output is not what the client received:\nrecorded %q\nreceived %q", cast.output, out)
	}
	if strings.Contains(string(cast.input), "topsecret") {
		t.Errorf("the no-echo input was recorded in clear: %q", cast.input)
	}
	if !strings.Contains(string(cast.input), "stty size") {
		t.Errorf("input %q; want ordinary typing", cast.input)
	}
}

func TestDemoTarget(t *testing.T) {
	d := config.DemoTarget()
	if d.Name != "demo" || d.Kind != config.KindCommand || len(d.Command) == 0 || d.Dir != "" {
		t.Errorf("DemoTarget() = %+v; want a command target named demo in a throwaway directory", d)
	}
	f := newHopFixture(t, fixtureOpts{record: "required"})
	f.setTargets(d)
	r := f.ssh(nil, "demo", `echo "one arg" | tr a-z A-Z; pwd`)
	lines := strings.Split(strings.TrimSpace(string(r.Stdout)), "\n")
	if r.Code != 0 || len(lines) != 2 || lines[0] != "ONE ARG" {
		t.Fatalf("exec on demo: exit %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	f.waitEvent(state.EventSessionEnd, 1)
	if _, err := os.Stat(lines[1]); !os.IsNotExist(err) {
		t.Errorf("demo directory %s outlived the session", lines[1])
	}
}

// TestCommandTargetSubsystems: a command target with subsystems.sftp runs
// OpenSSH's sftp-server for stock sftp and scp (SFTP mode), in its working
// directory, with the SFTP operations audited; a command target without it
// refuses the subsystem with a postern: line that says why, instead of
// "subsystem request failed".
func TestCommandTargetSubsystems(t *testing.T) {
	server := config.SFTPServer()
	if server == "" {
		testutil.Missing(t, "no sftp-server installed (openssh-sftp-server)")
	}
	testutil.Need(t, "sftp", "scp")
	f := newHopFixture(t, fixtureOpts{record: "required"})
	dir := t.TempDir()
	f.setTargets(
		config.Target{Name: "files", Kind: config.KindCommand, Command: []string{"/bin/sh"}, Dir: dir,
			Subsystems: map[string][]string{"sftp": {server}}},
		config.Target{Name: "tool", Kind: config.KindCommand, Command: []string{"/bin/sh"}},
	)
	src := filepath.Join(t.TempDir(), "up.txt")
	data := []byte("postern sftp through a command target\n")
	writeTestFile(t, src, string(data))

	batch := filepath.Join(t.TempDir(), "batch")
	writeTestFile(t, batch, "put "+src+" up.txt\nrename up.txt moved.txt\nls\n")
	if r := runClient(t, "sftp", nil, "-F", f.sshCfg, "-b", batch, "files"); r.Code != 0 || !strings.Contains(string(r.Stdout), "moved.txt") {
		t.Fatalf("sftp: exit %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "moved.txt")); err != nil || !bytes.Equal(got, data) {
		t.Errorf("file put through sftp: %q, %v", got, err)
	}
	down := filepath.Join(t.TempDir(), "down.txt")
	if r := runClient(t, "scp", nil, "-F", f.sshCfg, "-q", "files:moved.txt", down); r.Code != 0 {
		t.Fatalf("scp (SFTP mode): exit %d stderr %q", r.Code, r.Stderr)
	}
	if got, _ := os.ReadFile(down); !bytes.Equal(got, data) {
		t.Errorf("scp down: %q", got)
	}
	f.waitEvent(state.EventSessionEnd, 2)
	var ops []string
	for _, e := range f.events.ofType(state.EventSFTP) {
		ops = append(ops, e.Details["op"].(string))
	}
	if !slices.Contains(ops, "rename") || !slices.Contains(ops, "close") {
		t.Errorf("sftp operations audited: %v; want rename and close", ops)
	}

	r := runClient(t, "sftp", nil, "-F", f.sshCfg, "-b", batch, "tool")
	if r.Code == 0 || !strings.Contains(string(r.Stderr), `postern: tool: tool is a command target without a "sftp" subsystem`) ||
		strings.Contains(string(r.Stderr), "subsystem request failed") {
		t.Errorf("sftp to a target without the subsystem: exit %d stderr %q", r.Code, r.Stderr)
	}
	r = runClient(t, "scp", nil, "-F", f.sshCfg, "-q", src, "tool:x")
	if r.Code == 0 || !strings.Contains(string(r.Stderr), `postern: tool: tool is a command target without a "sftp" subsystem`) {
		t.Errorf("scp to a target without the subsystem: exit %d stderr %q", r.Code, r.Stderr)
	}
}
