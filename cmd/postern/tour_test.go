package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/recorder"
)

// servingLine matches the JSON log line that names the bound addresses.
var servingLine = regexp.MustCompile(`"msg":"postern serving".*`)

// TestDevTour walks the README's five-minute tour with the real binary, the
// stock OpenSSH client and asciinema: serve --dev, login, a recorded exec and a
// recorded interactive session on the demo target, then audit verify.
func TestDevTour(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts postern and runs ssh")
	}
	testutil.Need(t, "ssh", "asciinema")
	bin := testutil.PosternBinary(t)
	data := t.TempDir()
	profile := t.TempDir()

	srv := testutil.Start(t, bin, []string{"serve", "--dev", "--data-dir", data,
		"--ssh-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--log-format", "json"})
	line := srv.WaitLine(t, servingLine, 30*time.Second)
	var serving struct{ SSH, HTTP string }
	if err := json.Unmarshal([]byte(line), &serving); err != nil {
		t.Fatalf("parse %q: %v", line, err)
	}
	bastionURL := "http://" + serving.HTTP

	login := exec.Command(bin, "login", "--bastion", bastionURL, "--dir", profile, "--no-browser")
	if out, err := login.CombinedOutput(); err != nil {
		t.Fatalf("postern login: %v\n%s", err, out)
	}
	sshConfig := filepath.Join(profile, "ssh_config")
	jump := "127.0.0.1"

	// A recorded exec: output, stderr and exit status pass through.
	var stdout, stderr bytes.Buffer
	run := exec.Command("ssh", "-F", sshConfig, "-o", "BatchMode=yes", "-J", jump, "dev@demo",
		"echo hello from the demo; echo to-stderr >&2; exit 3")
	run.Stdout, run.Stderr = &stdout, &stderr
	err := run.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("ssh exec: err = %v; want exit status 3\nstdout: %s\nstderr: %s\nserver log:\n%s", err, stdout.String(), stderr.String(), srv.Output())
	}
	if got := stdout.String(); !strings.Contains(got, "hello from the demo") {
		t.Errorf("stdout = %q; want the echo", got)
	}
	if !strings.Contains(stderr.String(), "to-stderr") {
		t.Errorf("stderr = %q; want to-stderr", stderr.String())
	}

	// The dev role's deny rule stops a flagged command before it runs, with
	// the documented exit status (docs/exit-codes.md).
	denied := exec.Command("ssh", "-F", sshConfig, "-o", "BatchMode=yes", "-J", jump, "dev@demo", "mkfs --version")
	out, err := denied.CombinedOutput()
	if !errors.As(err, &ee) || ee.ExitCode() != 120 || !strings.Contains(string(out), "postern:") {
		t.Errorf("deny rule: err = %v, output %q; want exit 120 and a postern: line", err, out)
	}

	// The approvals story of the tour: dev's `rm` is held until the
	// development reviewer (postern login --as reviewer) approves it.
	held := exec.Command("ssh", "-F", sshConfig, "-o", "BatchMode=yes", "-J", jump, "dev@demo",
		"rm -f notes.txt; echo removed-after-approval")
	var heldOut, heldErr testutil.LockedBuffer
	held.Stdout, held.Stderr = &heldOut, &heldErr
	if err := held.Start(); err != nil {
		t.Fatal(err)
	}
	heldDone := make(chan error, 1)
	go func() { heldDone <- held.Wait() }()
	reviewer := t.TempDir()
	if out, err := exec.Command(bin, "login", "--bastion", bastionURL, "--as", "reviewer", "--dir", reviewer, "--no-browser").CombinedOutput(); err != nil {
		t.Fatalf("postern login --as reviewer: %v\n%s", err, out)
	}
	var pending []struct{ ID, Requester, Command string }
	for deadline := time.Now().Add(30 * time.Second); len(pending) == 0; {
		out, err := exec.Command(bin, "approvals", "ls", "--json", "--dir", reviewer).CombinedOutput()
		if err != nil {
			t.Fatalf("approvals ls as reviewer: %v\n%s", err, out)
		}
		if err := json.Unmarshal(out, &pending); err != nil {
			t.Fatalf("approvals ls --json: %v\n%s", err, out)
		}
		if len(pending) == 0 {
			select {
			case err := <-heldDone:
				t.Fatalf("the held command ended before approval: %v\nstdout %s\nstderr %s", err, heldOut.String(), heldErr.String())
			case <-time.After(100 * time.Millisecond): // polling the API; the hold has no event a client can wait on
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pending request 30s after dev's rm; server log:\n%s", srv.Output())
		}
	}
	if pending[0].Requester != "dev (dev)" {
		t.Errorf("pending request %+v; want dev's", pending[0])
	}
	// dev cannot approve their own request.
	if out, err := exec.Command(bin, "approvals", "approve", pending[0].ID, "--dir", profile).CombinedOutput(); err == nil {
		t.Errorf("dev approved their own request:\n%s", out)
	}
	if out, err := exec.Command(bin, "approvals", "approve", pending[0].ID, "--reason", "tour", "--dir", reviewer).CombinedOutput(); err != nil {
		t.Fatalf("approvals approve as reviewer: %v\n%s", err, out)
	}
	select {
	case err := <-heldDone:
		if err != nil || !strings.Contains(heldOut.String(), "removed-after-approval") || !strings.Contains(heldErr.String(), pending[0].ID) {
			t.Errorf("held command after approval: %v\nstdout %s\nstderr %s", err, heldOut.String(), heldErr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the command was not released 30s after the approval; server log:\n%s", srv.Output())
	}

	// sftp and scp (SFTP mode) to the demo target, whose sftp subsystem is
	// OpenSSH's sftp-server.
	sessions := 4 // the exec, the denied one, the held one, the shell
	if config.SFTPServer() != "" {
		sessions += 2
		xfer := t.TempDir()
		src := filepath.Join(xfer, "up.txt")
		if err := os.WriteFile(src, []byte("through the demo target\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("scp", "-F", sshConfig, "-o", "BatchMode=yes", "-J", jump, src, "dev@demo:"+filepath.Join(xfer, "scp.txt")).CombinedOutput(); err != nil {
			t.Errorf("scp to demo: %v\n%s", err, out)
		}
		batch := filepath.Join(xfer, "batch")
		if err := os.WriteFile(batch, []byte("get "+filepath.Join(xfer, "scp.txt")+" "+filepath.Join(xfer, "back.txt")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("sftp", "-F", sshConfig, "-o", "BatchMode=yes", "-J", jump, "-b", batch, "dev@demo").CombinedOutput(); err != nil {
			t.Errorf("sftp from demo: %v\n%s", err, out)
		}
		if b, err := os.ReadFile(filepath.Join(xfer, "back.txt")); err != nil || string(b) != "through the demo target\n" {
			t.Errorf("file round trip through demo: %q, %v", b, err)
		}
	}

	// A recorded interactive shell (a pty forced with -tt).
	shell := exec.Command("ssh", "-F", sshConfig, "-o", "BatchMode=yes", "-tt", "-J", jump, "dev@demo")
	shell.Stdin = strings.NewReader("echo typed-in-the-shell\nexit\n")
	if out, err := shell.CombinedOutput(); err != nil || !strings.Contains(string(out), "typed-in-the-shell") {
		t.Fatalf("interactive ssh: %v\n%s", err, out)
	}

	// A session is sealed just after the client sees it end: wait for both
	// metadata files (written last) rather than assume.
	var casts []string
	deadline := time.Now().Add(15 * time.Second)
	for {
		metas, _ := filepath.Glob(filepath.Join(data, "recordings", "*", "*", "*", "*.json"))
		casts, _ = filepath.Glob(filepath.Join(data, "recordings", "*", "*", "*", "*.cast"))
		if len(metas) >= sessions && len(casts) >= sessions {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("recordings = %v; want %d sealed casts\nserver log:\n%s", casts, sessions, srv.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	var sawExec, sawShell bool
	for _, c := range casts {
		out := castOutput(t, c)
		sawExec = sawExec || strings.Contains(out, "hello from the demo")
		sawShell = sawShell || strings.Contains(out, "typed-in-the-shell")
		if meta, err := os.ReadFile(strings.TrimSuffix(c, ".cast") + ".json"); err != nil || !bytes.Contains(meta, []byte(`"sha256"`)) {
			t.Errorf("metadata of %s: %v %s", c, err, meta)
		}
		play := exec.Command("asciinema", "play", "-i", "0.01", c)
		if out, err := play.CombinedOutput(); err != nil {
			t.Errorf("asciinema play %s: %v\n%s", c, err, out)
		}
	}
	if !sawExec || !sawShell {
		t.Errorf("recordings lack the session output (exec %v, shell %v)", sawExec, sawShell)
	}
	// The README's command that plays one recording (the newest), from the
	// directory that holds the data directory, as the tour runs it.
	newest := exec.Command("sh", "-c", `asciinema play -i 0.01 "$(ls -t `+filepath.Base(data)+`/recordings/*/*/*/*.cast | head -n 1)"`)
	newest.Dir = filepath.Dir(data)
	if out, err := newest.CombinedOutput(); err != nil || !strings.Contains(string(out), "typed-in-the-shell") {
		t.Errorf("playing the newest recording: %v\n%s", err, out)
	}

	// The players: list the sessions through the API with the login profile,
	// then replay one by id.
	ls := exec.Command(bin, "sessions", "ls", "--json", "--bastion", bastionURL, "--dir", profile)
	lsOut, err := ls.CombinedOutput()
	if err != nil {
		t.Fatalf("sessions ls: %v\n%s", err, lsOut)
	}
	var rows []struct {
		ID, Target, Identity string
	}
	if err := json.Unmarshal(lsOut, &rows); err != nil || len(rows) != sessions {
		t.Fatalf("sessions ls --json = %s (%v); want %d rows", lsOut, err, sessions)
	}
	for _, r := range rows {
		if r.Target != "demo" || r.Identity != "dev" {
			t.Errorf("session row = %+v; want target demo, identity dev", r)
		}
	}
	play := exec.Command(bin, "play", "--speed", "100", "--bastion", bastionURL, "--dir", profile, rows[0].ID)
	if out, err := play.CombinedOutput(); err != nil || len(out) == 0 {
		t.Errorf("postern play %s: %v\n%s", rows[0].ID, err, out)
	}

	verify := exec.Command(bin, "audit", "verify", "--dev", "--data-dir", data)
	out, err = verify.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "intact") {
		t.Errorf("audit verify: %v\n%s", err, out)
	}
}

// castOutput returns the concatenated "o" data of a cast file.
func castOutput(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := recorder.NewDecoder(bufio.NewReader(f))
	var b strings.Builder
	for {
		ev, err := dec.Next()
		if err != nil {
			break
		}
		if ev.Code == "o" {
			b.WriteString(ev.Data)
		}
	}
	return b.String()
}
