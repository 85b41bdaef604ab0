package innerhop

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/state"
)

// castCheck is what a test learns from a recording.
type castCheck struct {
	header recorder.Header
	events []recorder.Event
	output []byte // the 'o' events concatenated
	input  []byte // the 'i' events concatenated
	meta   map[string]any
}

func (c *castCheck) codes(code string) []recorder.Event {
	var out []recorder.Event
	for _, e := range c.events {
		if e.Code == code {
			out = append(out, e)
		}
	}
	return out
}

// markers returns the marker labels, one a line.
func (c *castCheck) markers() string {
	var ms []string
	for _, e := range c.codes("m") {
		ms = append(ms, e.Data)
	}
	return strings.Join(ms, "\n")
}

// checkCast reads the recording of session id, checks that it is asciicast
// v2 that Debian's asciinema plays, and that its metadata digest matches.
func (f *hopFixture) checkCast(id string) *castCheck {
	f.t.Helper()
	path := f.castFile(id)
	data, err := os.ReadFile(path)
	if err != nil {
		f.t.Fatalf("read cast: %v", err)
	}
	c := &castCheck{}
	d := recorder.NewDecoder(bytes.NewReader(data))
	if c.header, err = d.Header(); err != nil {
		f.t.Fatalf("cast header: %v", err)
	}
	if c.header.Version != 2 {
		f.t.Errorf("cast version = %d; want 2", c.header.Version)
	}
	for {
		e, err := d.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			f.t.Fatalf("cast event: %v", err)
		}
		c.events = append(c.events, e)
		switch e.Code {
		case "o":
			c.output = append(c.output, e.Data...)
		case "i":
			c.input = append(c.input, e.Data...)
		}
	}
	metaPath := strings.TrimSuffix(path, ".cast") + ".json"
	mb, err := os.ReadFile(metaPath)
	if err != nil {
		f.t.Fatalf("read metadata: %v", err)
	}
	if err := json.Unmarshal(mb, &c.meta); err != nil {
		f.t.Fatalf("metadata: %v", err)
	}
	sum := sha256.Sum256(data)
	if c.meta["sha256"] != hex.EncodeToString(sum[:]) {
		f.t.Errorf("metadata sha256 = %v; want %x", c.meta["sha256"], sum)
	}
	if _, err := exec.LookPath("asciinema"); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "asciinema", "play", "-i", "0.1", path)
		cmd.Stdout = io.Discard
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			f.t.Errorf("asciinema play: %v: %s", err, stderr.String())
		}
	}
	return c
}

func TestInnerHopRecordedExec(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{record: "required"})
	sshd := startSSHD(t, f.auth)
	f.setTargets(sshTarget("web-1", sshd))

	r := f.ssh(nil, "web-1", "echo hello; echo err >&2; exit 7")
	if r.Code != 7 || string(r.Stdout) != "hello\n" {
		t.Fatalf("exit %d stdout %q stderr %q; want 7 and hello", r.Code, r.Stdout, r.Stderr)
	}
	f.waitEvent(state.EventSessionEnd, 1)
	c := f.checkCast(f.lastSession())
	if got, want := string(c.output), "hello\nerr\n"; got != want && got != "err\nhello\n" {
		t.Errorf("recorded output %q; want %q", got, want)
	}
	var markers []string
	for _, e := range c.codes("m") {
		markers = append(markers, e.Data)
	}
	if !strings.Contains(strings.Join(markers, "|"), "exec: echo hello; echo err >&2; exit 7") || !strings.Contains(strings.Join(markers, "|"), "exit 7") {
		t.Errorf("markers %q; want exec and exit markers", markers)
	}
	if c.header.Width != 80 || c.header.Height != 24 {
		t.Errorf("header size %dx%d; want 80x24 without a pty", c.header.Width, c.header.Height)
	}
	if c.meta["exit_status"] != float64(7) || c.meta["target"] != "web-1" || c.meta["identity"] != "alice" {
		t.Errorf("metadata %v; want exit 7, target web-1, identity alice", c.meta)
	}
}

func TestInnerHopRecordedLargeOutput(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{record: "required"})
	sshd := startSSHD(t, f.auth)
	f.setTargets(sshTarget("web-1", sshd))

	const size = 10 << 20
	r := f.ssh(nil, "web-1", fmt.Sprintf("head -c %d /dev/urandom | base64 -w 76", size*3/4))
	if r.Code != 0 {
		t.Fatalf("exit %d stderr %q", r.Code, r.Stderr)
	}
	if len(r.Stdout) < size {
		t.Fatalf("received %d bytes; want at least %d", len(r.Stdout), size)
	}
	f.waitEvent(state.EventSessionEnd, 1)
	c := f.checkCast(f.lastSession())
	if !bytes.Equal(c.output, r.Stdout) {
		t.Errorf("recorded output (%d bytes) differs from what the client received (%d bytes)", len(c.output), len(r.Stdout))
	}
}

func TestInnerHopRecordedUTF8Split(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{record: "required"})
	sshd := startSSHD(t, f.auth)
	f.setTargets(sshTarget("web-1", sshd))

	text := "日本語 😀 ü 한국어 🎉"
	b := []byte(text)
	// One printf per piece: each split point of the text becomes a write
	// boundary on the target.
	var cmd strings.Builder
	var want []byte
	for i := 1; i < len(b); i++ {
		fmt.Fprintf(&cmd, "printf '%s'; printf '%s'; printf '|';", octal(b[:i]), octal(b[i:]))
		want = append(want, b...)
		want = append(want, '|')
	}
	r := f.ssh(nil, "web-1", cmd.String())
	if r.Code != 0 || !bytes.Equal(r.Stdout, want) {
		t.Fatalf("exit %d: got %q; want %q (stderr %q)", r.Code, r.Stdout, want, r.Stderr)
	}
	f.waitEvent(state.EventSessionEnd, 1)
	c := f.checkCast(f.lastSession())
	if !bytes.Equal(c.output, r.Stdout) {
		t.Errorf("recorded output %q; want %q", c.output, r.Stdout)
	}
	for _, e := range c.codes("o") {
		if !utf8.ValidString(e.Data) || strings.ContainsRune(e.Data, utf8.RuneError) {
			t.Errorf("event %q is not clean UTF-8", e.Data)
		}
	}
}

// octal spells bytes as printf octal escapes.
func octal(b []byte) string {
	var s strings.Builder
	for _, c := range b {
		fmt.Fprintf(&s, "\\%03o", c)
	}
	return s.String()
}

func TestInnerHopRecordingDirUnwritable(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{record: "required"})
	sshd := startSSHD(t, f.auth)
	f.setTargets(sshTarget("web-1", sshd))
	breakRecorderSpool(t, f)
	r := f.ssh(nil, "web-1", "echo should-not-run")
	if r.Code != ExitRecordingUnavailable {
		t.Errorf("exit = %d; want %d (stderr %q)", r.Code, ExitRecordingUnavailable, r.Stderr)
	}
	if !strings.Contains(string(r.Stderr), "postern: recording unavailable; session ended") {
		t.Errorf("stderr = %q; want the recording message", r.Stderr)
	}
	if len(r.Stdout) != 0 {
		t.Errorf("stdout = %q; want nothing", r.Stdout)
	}

	t.Run("optional goes on", func(t *testing.T) {
		f.cfg.Roles[0].Record = "optional"
		f.setTargets(f.cfg.Targets...)
		r := f.ssh(nil, "web-1", "echo runs")
		if r.Code != 0 || string(r.Stdout) != "runs\n" {
			t.Errorf("exit %d stdout %q; want the command to run unrecorded", r.Code, r.Stdout)
		}
	})
}

// TestInnerHopAuditJoinsRecording: with Options.RecordingAudit and a
// recorder on the audit's state store, a recorded session's session.start
// and session.end commit in the recording's own two state transactions
// (index row, seal) instead of two more of their own, with the same events
// in the same order. Without a state store behind the recorder, the events
// go to Audit as before.
func TestInnerHopAuditJoinsRecording(t *testing.T) {
	ctx := context.Background()
	st, err := state.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := newHopFixture(t, fixtureOpts{record: "required", state: st, recordingAudit: true})
	sshd := startSSHD(t, f.auth)
	f.setTargets(sshTarget("web-1", sshd))

	w0, g0 := st.WriteStats()
	if r := f.ssh(nil, "web-1", "echo hi; exit 3"); r.Code != 3 {
		t.Fatalf("exit %d stderr %q; want 3", r.Code, r.Stderr)
	}
	var evs []state.Event
	deadline := time.Now().Add(30 * time.Second)
	for {
		if evs, err = st.Events(ctx, 0, 100); err != nil {
			t.Fatal(err)
		}
		if n := len(evs); n > 0 && evs[n-1].Type == state.EventSessionEnd && evs[n-1].Source == "bastion" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no session.end of the inner hop in %d events", len(evs))
		}
		time.Sleep(20 * time.Millisecond)
	}
	var got []string
	for _, e := range evs {
		got = append(got, e.Type+"/"+e.Source)
	}
	want := []string{"session.start/", "session.start/bastion", "session.end/", "session.sealed/", "session.end/bastion"}
	if !slices.Equal(got, want) {
		t.Errorf("events %v; want %v", got, want)
	}
	start, end := evs[1], evs[4]
	if start.Details["recorded"] != true || start.Details["conn"] == nil || start.Time.IsZero() {
		t.Errorf("session.start details %v", start.Details)
	}
	if end.Details["recorded"] != true || fmt.Sprint(end.Details["exit_status"]) != "3" || start.Session != end.Session {
		t.Errorf("session.end %v; want recorded, exit 3, the session of the start", end.Details)
	}
	if w1, g1 := st.WriteStats(); w1-w0 != 2 || g1-g0 != 2 {
		t.Errorf("%d state writes in %d transactions; want 2 in 2", w1-w0, g1-g0)
	}
	if rep, err := st.Verify(ctx); err != nil || !rep.OK() {
		t.Errorf("Verify = %+v, %v", rep, err)
	}
	if n := len(f.events.ofType(state.EventSessionStart)); n != 0 {
		t.Errorf("%d session.start events went to Audit as well", n)
	}

	// A recorder without a state store: the events go to Audit.
	g := newHopFixture(t, fixtureOpts{record: "required", recordingAudit: true})
	g.setTargets(sshTarget("web-1", startSSHD(t, g.auth)))
	if r := g.ssh(nil, "web-1", "exit 4"); r.Code != 4 {
		t.Fatalf("exit %d stderr %q; want 4", r.Code, r.Stderr)
	}
	ends := g.waitEvent(state.EventSessionEnd, 1)
	if len(g.events.ofType(state.EventSessionStart)) != 1 || ends[0].Details["recorded"] != true || ends[0].Details["exit_status"] != 4 {
		t.Errorf("events without a state store: start %d, end %v", len(g.events.ofType(state.EventSessionStart)), ends[0].Details)
	}
}
