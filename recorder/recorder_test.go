package recorder

import (
	"bufio"
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
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/state"
)

type env struct {
	rec   *Recorder
	st    *state.Store
	store *FileStore
	reg   *prometheus.Registry
	spool string
}

func newEnv(t *testing.T, opts Options) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := state.Open(context.Background(), "sqlite://"+filepath.Join(dir, "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	store, err := NewFileStore(filepath.Join(dir, "recordings"))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	opts.Store, opts.State, opts.Metrics = store, st, reg
	if opts.SpoolDir == "" {
		opts.SpoolDir = filepath.Join(dir, "spool")
	}
	rec, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return &env{rec: rec, st: st, store: store, reg: reg, spool: opts.SpoolDir}
}

func (e *env) metric(t *testing.T, name, label string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && (len(m.GetLabel()) == 0 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

func readObject(t *testing.T, s Store, key string) []byte {
	t.Helper()
	rc, err := s.Open(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func outputOf(evs []Event, code string) string {
	var b strings.Builder
	for _, ev := range evs {
		if ev.Code == code {
			b.WriteString(ev.Data)
		}
	}
	return b.String()
}

func TestSessionFinishSeals(t *testing.T) {
	for _, format := range []string{"v2", "v3"} {
		t.Run(format, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, Options{Format: format, Replica: "r1"})
			s, err := e.rec.Start(ctx, Meta{Identity: "alice", Issuer: "corp", Role: "sre", Target: "web-1", Login: "deploy",
				Kind: state.KindShell, Term: "xterm", Width: 100, Height: 30, Env: map[string]string{"SHELL": "/bin/bash", "SECRET": "x"}})
			if err != nil {
				t.Fatal(err)
			}
			row, err := e.st.GetSession(ctx, s.ID())
			if err != nil || row.Status != state.StatusRunning || row.Replica != "r1" {
				t.Fatalf("row at start = %+v, %v", row, err)
			}
			if e.metric(t, "postern_recordings_active", "") != 1 {
				t.Errorf("active gauge != 1")
			}
			s.Output([]byte("$ "))
			s.Input([]byte("ls\r"))
			s.Output([]byte("ls\r\nfile\xe4\xb8"))
			s.Output([]byte("\x96\r\n"))
			s.Resize(120, 40)
			s.Marker("flagged")
			exit := 2
			wantExit := ""
			if format == "v3" {
				wantExit = "2"
			}
			sealed, err := s.Finish(ctx, Result{ExitStatus: &exit})
			if err != nil {
				t.Fatal(err)
			}
			cast := readObject(t, e.store, sealed.Object)
			sum := sha256.Sum256(cast)
			if hex.EncodeToString(sum[:]) != sealed.SHA256 || int64(len(cast)) != sealed.Size {
				t.Errorf("sealed digest/size do not match the stored object")
			}
			if !strings.HasPrefix(sealed.Object, time.Now().UTC().Format("2006/01/02")+"/") || !strings.HasSuffix(sealed.Object, s.ID()+".cast") {
				t.Errorf("object key = %q", sealed.Object)
			}
			h, evs := decodeAll(t, cast)
			if h.Width != 100 || h.Height != 30 || h.Env["SECRET"] != "" || h.Env["SHELL"] != "/bin/bash" {
				t.Errorf("header = %+v", h)
			}
			if got := outputOf(evs, CodeOutput); got != "$ ls\r\nfile世\r\n" {
				t.Errorf("output = %q", got)
			}
			if got := outputOf(evs, CodeInput); got != "ls\r" {
				t.Errorf("input = %q", got)
			}
			if got := outputOf(evs, CodeResize); got != "120x40" {
				t.Errorf("resize = %q", got)
			}
			if got := outputOf(evs, CodeExit); got != wantExit {
				t.Errorf("exit event = %q; want %q", got, wantExit)
			}
			if got := outputOf(evs, CodeMarker); got != "flagged" {
				t.Errorf("markers = %q; want only the caller's", got)
			}
			// The index row, the seal event and the metadata agree.
			row, err = e.st.GetSession(ctx, s.ID())
			if err != nil {
				t.Fatal(err)
			}
			if row.Status != state.StatusFinished || row.SHA256 != sealed.SHA256 || row.SealSeq != sealed.SealSeq || row.ExitStatus == nil || *row.ExitStatus != 2 || row.BytesOut != 15 || row.BytesIn != 3 {
				t.Errorf("row = %+v", row)
			}
			evsAudit, err := e.st.Events(ctx, sealed.SealSeq-2, 2)
			if err != nil {
				t.Fatal(err)
			}
			if evsAudit[0].Type != state.EventSessionEnd || evsAudit[1].Type != state.EventSessionSealed || evsAudit[1].Details["sha256"] != sealed.SHA256 {
				t.Errorf("audit = %+v", evsAudit)
			}
			var md Metadata
			if err := json.Unmarshal(readObject(t, e.store, sealed.MetaObject), &md); err != nil {
				t.Fatal(err)
			}
			if md.SHA256 != sealed.SHA256 || md.SealSeq != sealed.SealSeq || md.Identity != "alice" || md.Format != format || md.Approvals == nil || md.Duration < 0 || md.End == nil {
				t.Errorf("metadata = %+v", md)
			}
			rep, err := e.st.Verify(ctx)
			if err != nil || !rep.OK() || rep.Sessions != 1 {
				t.Errorf("verify = %+v, %v", rep, err)
			}
			if bad, err := VerifySessions(ctx, e.st, e.store); err != nil || len(bad) != 0 {
				t.Errorf("VerifySessions = %v, %v", bad, err)
			}
			if _, err := os.Stat(filepath.Join(e.spool, s.ID()+".cast")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("spool file left behind: %v", err)
			}
			if got := e.metric(t, "postern_recording_bytes_total", ""); got != 18 {
				t.Errorf("bytes_total = %v; want 18", got)
			}
			if e.metric(t, "postern_recordings_active", "") != 0 {
				t.Errorf("active gauge != 0")
			}
			if err := s.Output([]byte("late")); !errors.Is(err, ErrFinished) {
				t.Errorf("Output after Finish = %v; want ErrFinished", err)
			}
			if _, err := s.Finish(ctx, Result{}); !errors.Is(err, ErrFinished) {
				t.Errorf("second Finish = %v; want ErrFinished", err)
			}

			// Tampering with the stored cast is caught by VerifySessions.
			p := filepath.Join(e.store.Root(), filepath.FromSlash(sealed.Object))
			if err := os.WriteFile(p, bytes.Replace(cast, []byte("file"), []byte("fila"), 1), 0o600); err != nil {
				t.Fatal(err)
			}
			if bad, err := VerifySessions(ctx, e.st, e.store); err != nil || fmt.Sprint(bad) != "["+s.ID()+"]" {
				t.Errorf("VerifySessions after tamper = %v, %v", bad, err)
			}
		})
	}
}

func TestNilSession(t *testing.T) {
	var s *Session
	if s.Output([]byte("x")) != nil || s.Input([]byte("x")) != nil || s.Resize(1, 1) != nil || s.Marker("m") != nil || s.Err() != nil || s.ID() != "" {
		t.Error("nil session methods must be no-ops")
	}
	s.SetEcho(false)
	if sealed, err := s.Finish(context.Background(), Result{}); sealed != nil || err != nil {
		t.Errorf("Finish = %v, %v", sealed, err)
	}
}

func TestEchoOffMasksInput(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	s, err := e.rec.Start(ctx, Meta{ID: "echo1"})
	if err != nil {
		t.Fatal(err)
	}
	s.Input([]byte("sudo ls\r"))
	s.SetEcho(false)
	s.Input([]byte("pässwörd🙂\x7f!\r"))
	s.SetEcho(true)
	s.Input([]byte("ok\r"))
	sealed, err := s.Finish(ctx, Result{})
	if err != nil {
		t.Fatal(err)
	}
	cast := readObject(t, e.store, sealed.Object)
	_, evs := decodeAll(t, cast)
	if got, want := outputOf(evs, CodeInput), "sudo ls\r*********\x7f*\rok\r"; got != want {
		t.Errorf("input = %q; want %q", got, want)
	}
	if bytes.Contains(cast, []byte("w\u00f6rd")) {
		t.Error("password reached the cast")
	}
}

// gate blocks the spool writer until opened.
type gate struct {
	once sync.Once
	ch   chan struct{}
}

func newGate(r *Recorder) *gate {
	g := &gate{ch: make(chan struct{})}
	r.beforeWrite = func() { <-g.ch }
	return g
}

func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }

func TestOverflowBlockFailsRecording(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{BufferSize: 16 << 10, OnOverflow: OverflowBlock})
	g := newGate(e.rec)
	t.Cleanup(g.open)
	s, err := e.rec.Start(ctx, Meta{ID: "block1"})
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("y"), 4096)
	start := time.Now()
	var werr error
	for i := 0; i < 100 && werr == nil; i++ {
		werr = s.Output(chunk)
	}
	if !errors.Is(werr, ErrOverflow) || !errors.Is(s.Err(), ErrOverflow) {
		t.Fatalf("Output err = %v, Err = %v; want ErrOverflow", werr, s.Err())
	}
	if d := time.Since(start); d < BlockTimeout || d > BlockTimeout+5*time.Second {
		t.Errorf("failed after %v; want about %v", d, BlockTimeout)
	}
	if got := e.metric(t, "postern_recording_errors_total", "overflow"); got != 1 {
		t.Errorf("overflow errors = %v; want 1", got)
	}
	if err := s.Input([]byte("more")); !errors.Is(err, ErrOverflow) {
		t.Errorf("later Input = %v; want the failure", err)
	}
	g.open()
	sealed, err := s.Finish(ctx, Result{})
	if err != nil {
		t.Fatal(err)
	}
	if sealed.Status != state.StatusFailed {
		t.Errorf("status = %q; want failed", sealed.Status)
	}
	// What was written is still a valid cast.
	decodeAll(t, readObject(t, e.store, sealed.Object))
}

func TestOverflowDropRecordsGap(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{BufferSize: 16 << 10, OnOverflow: OverflowDrop})
	g := newGate(e.rec)
	t.Cleanup(g.open)
	s, err := e.rec.Start(ctx, Meta{ID: "drop1", Identity: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("z"), 1000)
	var sent int64
	for range 200 {
		if err := s.Output(chunk); err != nil {
			t.Fatalf("Output under drop policy = %v", err)
		}
		sent += int64(len(chunk))
	}
	dropped := e.metric(t, "postern_recording_dropped_bytes_total", "")
	if dropped == 0 {
		t.Fatal("nothing dropped with a blocked writer")
	}
	g.open()
	// Wait until the writer has returned a chunk: space is back.
	for deadline := time.Now().Add(10 * time.Second); len(s.tokens) == 0; runtime.Gosched() {
		if time.Now().After(deadline) {
			t.Fatal("writer never freed a chunk")
		}
	}
	if err := s.Output([]byte("after")); err != nil {
		t.Fatal(err)
	}
	sealed, err := s.Finish(ctx, Result{})
	if err != nil {
		t.Fatal(err)
	}
	if sealed.Status != state.StatusFinished {
		t.Errorf("status = %q; want finished", sealed.Status)
	}
	_, evs := decodeAll(t, readObject(t, e.store, sealed.Object))
	want := fmt.Sprintf("gap: %d bytes dropped", int64(dropped))
	if got := outputOf(evs, CodeMarker); got != want {
		t.Errorf("markers = %q; want %q", got, want)
	}
	out := outputOf(evs, CodeOutput)
	if int64(len(out))+int64(dropped) != sent+5 || !strings.HasSuffix(out, "after") {
		t.Errorf("recorded %d + dropped %v != sent %d", len(out), dropped, sent+5)
	}
	audit, err := e.st.Events(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range audit {
		if ev.Type == state.EventRecordingError {
			found = found || fmt.Sprint(ev.Details["dropped_bytes"]) == fmt.Sprint(int64(dropped)) && ev.Session == "drop1"
		}
	}
	if !found {
		t.Errorf("no recording.error audit event for the gap: %+v", audit)
	}
}

func TestLargeWritesSplitAcrossChunks(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{BufferSize: 32 << 10, Format: "v3"})
	s, err := e.rec.Start(ctx, Meta{ID: "large1"})
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	cjk := []byte(strings.Repeat("漢字かな🙂\"\\\x00\x1b", 4000))
	for _, p := range [][]byte{make([]byte, 300<<10), cjk, bytes.Repeat([]byte("abc\n"), 50000)} {
		for len(p) > 0 {
			n := min(len(p), 70001) // odd size: splits characters
			if err := s.Output(p[:n]); err != nil {
				t.Fatal(err)
			}
			want.Write(p[:n])
			p = p[n:]
		}
	}
	sealed, err := s.Finish(ctx, Result{})
	if err != nil {
		t.Fatal(err)
	}
	cast := readObject(t, e.store, sealed.Object)
	_, evs := decodeAll(t, cast)
	if got := outputOf(evs, CodeOutput); got != want.String() {
		t.Errorf("output differs: got %d bytes; want %d", len(got), want.Len())
	}
	sc := bufio.NewScanner(bytes.NewReader(cast))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if len(sc.Bytes()) > e.rec.chunkSize {
			t.Fatalf("line of %d bytes exceeds the chunk size %d", len(sc.Bytes()), e.rec.chunkSize)
		}
	}
}

func TestConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{BufferSize: 64 << 10})
	s, err := e.rec.Start(ctx, Meta{ID: "conc1"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 500 {
				var err error
				switch g {
				case 0:
					err = s.Output([]byte("out-line\r\n"))
				case 1:
					err = s.Input([]byte("k"))
				case 2:
					err = s.Resize(80+i%10, 24)
				case 3:
					if i%50 == 0 {
						err = s.Marker("m")
					}
					s.SetEcho(i%2 == 0)
				}
				if err != nil {
					t.Errorf("write: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	sealed, err := s.Finish(ctx, Result{})
	if err != nil {
		t.Fatal(err)
	}
	_, evs := decodeAll(t, readObject(t, e.store, sealed.Object))
	if got := outputOf(evs, CodeOutput); got != strings.Repeat("out-line\r\n", 500) {
		t.Errorf("output has %d bytes; want %d", len(got), 5000)
	}
	if n := len(outputOf(evs, CodeInput)); n != 500 {
		t.Errorf("input has %d bytes; want 500", n)
	}
}

func TestFollowLiveSession(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	s, err := e.rec.Start(ctx, Meta{ID: "live1", Width: 90, Height: 20})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := e.rec.Follow(ctx, "live1")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	br := bufio.NewReader(rc)
	hdr, err := br.ReadString('\n')
	if err != nil || !strings.Contains(hdr, `"width":90`) {
		t.Fatalf("header = %q, %v", hdr, err)
	}
	for i := range 3 {
		msg := fmt.Sprintf("line %d", i)
		if err := s.Output([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		line, err := br.ReadString('\n') // arrives within the flush interval
		if err != nil || !strings.Contains(line, msg) {
			t.Fatalf("followed line = %q, %v; want %q", line, err, msg)
		}
	}
	exit := 0
	s.Output([]byte("last words"))
	done := make(chan error, 1)
	go func() {
		_, err := s.Finish(ctx, Result{ExitStatus: &exit})
		done <- err
	}()
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("read to end: %v", err)
	}
	if !strings.Contains(string(rest), "last words") {
		t.Errorf("tail = %q; want the last output", rest)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// After the session is sealed Follow serves the stored cast.
	rc2, err := e.rec.Follow(ctx, "live1")
	if err != nil {
		t.Fatal(err)
	}
	defer rc2.Close()
	stored, _ := io.ReadAll(rc2)
	if !bytes.HasSuffix(stored, rest) || !bytes.HasPrefix(stored, []byte(hdr)) {
		t.Error("stored cast differs from what was followed")
	}
	if _, err := e.rec.Follow(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Follow(nope) = %v; want ErrNotFound", err)
	}
}

func TestFollowCancel(t *testing.T) {
	e := newEnv(t, Options{})
	s, err := e.rec.Start(context.Background(), Meta{ID: "live2"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Finish(context.Background(), Result{}) })
	ctx, cancel := context.WithCancel(context.Background())
	rc, err := e.rec.Follow(ctx, "live2")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	br := bufio.NewReader(rc)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := br.ReadString('\n'); !errors.Is(err, context.Canceled) {
		t.Errorf("read after cancel = %v; want context.Canceled", err)
	}
}

func TestRecover(t *testing.T) {
	hdr := `{"version":2,"width":80,"height":24,"timestamp":1767225600}` + "\n"
	tests := []struct {
		name       string
		spool      string
		format     string
		wantOutput string
		wantMarker time.Duration
	}{
		{name: "torn last line", spool: hdr + `[0.5, "o", "hello "]` + "\n" + `[1.25, "o", "wor`, wantOutput: "hello ", wantMarker: 500 * time.Millisecond},
		{name: "clean end", spool: hdr + `[0.5, "o", "a"]` + "\n" + `[2.0, "i", "b"]` + "\n", wantOutput: "a", wantMarker: 2 * time.Second},
		{name: "header only", spool: hdr, wantOutput: ""},
		{name: "torn header", spool: `{"version":2,"wid`, wantOutput: ""},
		{name: "empty", spool: "", wantOutput: ""},
		{name: "v3 torn", format: "v3", spool: `{"version":3,"term":{"cols":80,"rows":24}}` + "\n" + `[0.5, "o", "x"]` + "\n" + `[0.25, "o"`, wantOutput: "x", wantMarker: 500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, Options{Replica: "r1"})
			start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			format := tt.format
			if format == "" {
				format = "v2"
			}
			for _, row := range []state.Session{
				{ID: "crashed", Identity: "alice", Start: start, Status: state.StatusRunning, Replica: "r1", Object: CastKey("crashed", start),
					Meta: map[string]any{"format": format, "width": 100, "height": 50}},
				{ID: "elsewhere", Start: start, Status: state.StatusRunning, Replica: "r2", Object: CastKey("elsewhere", start)},
			} {
				if err := e.st.PutSession(ctx, row); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(e.spool, "crashed.cast"), []byte(tt.spool), 0o600); err != nil {
				t.Fatal(err)
			}
			n, err := e.rec.Recover(ctx)
			if err != nil || n != 1 {
				t.Fatalf("Recover = %d, %v; want 1", n, err)
			}
			row, err := e.st.GetSession(ctx, "crashed")
			if err != nil {
				t.Fatal(err)
			}
			if row.Status != state.StatusInterrupted || row.SealSeq == 0 || row.End == nil {
				t.Errorf("row = %+v", row)
			}
			cast := readObject(t, e.store, row.Object)
			h, evs := decodeAll(t, cast) // no torn line
			if tt.name == "torn header" && (h.Width != 100 || h.Height != 50) {
				t.Errorf("rebuilt header = %+v", h)
			}
			if len(evs) == 0 || outputOf(evs, CodeOutput) != tt.wantOutput {
				t.Errorf("events = %+v", evs)
			}
			last := evs[len(evs)-1]
			if last.Code != CodeMarker || last.Data != "interrupted" || last.Time != tt.wantMarker {
				t.Errorf("last event = %+v; want interrupted marker at %v", last, tt.wantMarker)
			}
			if bad, err := VerifySessions(ctx, e.st, e.store); err != nil || len(bad) != 0 {
				t.Errorf("VerifySessions = %v, %v", bad, err)
			}
			if other, _ := e.st.GetSession(ctx, "elsewhere"); other.Status != state.StatusRunning {
				t.Errorf("another replica's session was touched: %+v", other)
			}
			// A second Recover finds nothing of ours.
			if n, err := e.rec.Recover(ctx); n != 0 || err != nil {
				t.Errorf("second Recover = %d, %v", n, err)
			}
		})
	}
}

func TestRecoverSkipsLiveAndReportsMissing(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	s, err := e.rec.Start(ctx, Meta{ID: "live"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Finish(ctx, Result{}) })
	if err := e.st.PutSession(ctx, state.Session{ID: "lost", Start: time.Now(), Status: state.StatusRunning, Object: CastKey("lost", time.Now())}); err != nil {
		t.Fatal(err)
	}
	n, err := e.rec.Recover(ctx)
	if n != 0 || err == nil {
		t.Errorf("Recover = %d, %v; want 0 and an error for the lost spool", n, err)
	}
	if e.metric(t, "postern_recording_errors_total", "recover") != 1 {
		t.Error("recover error not counted")
	}
	if row, _ := e.st.GetSession(ctx, "live"); row.Status != state.StatusRunning {
		t.Errorf("live session touched: %+v", row)
	}
}

func TestStartValidation(t *testing.T) {
	e := newEnv(t, Options{})
	if _, err := e.rec.Start(context.Background(), Meta{ID: "../etc/passwd"}); err == nil {
		t.Error("path-like id accepted")
	}
	if _, err := New(Options{}); err == nil {
		t.Error("New without a store accepted")
	}
	if _, err := New(Options{Store: e.store, Format: "v4"}); err == nil {
		t.Error("format v4 accepted")
	}
	if _, err := New(Options{Store: e.store, OnOverflow: "ignore"}); err == nil {
		t.Error("on_overflow ignore accepted")
	}
	// Two recorders may share a registry.
	if _, err := New(Options{Store: e.store, Metrics: e.reg, SpoolDir: e.spool}); err != nil {
		t.Errorf("second recorder on one registry: %v", err)
	}
}

func BenchmarkSessionOutput(b *testing.B) {
	text := bytes.Repeat([]byte("ZGF0YSBkYXRhIGRhdGEgZGF0YSBkYXRhIGRhdGEgZGF0YSBkYXRhIGRhdGEgZGF0YSBkYXRh\r\n"), 32768/74)
	dir := b.TempDir()
	store, err := NewFileStore(filepath.Join(dir, "store"))
	if err != nil {
		b.Fatal(err)
	}
	rec, err := New(Options{Store: store, SpoolDir: filepath.Join(dir, "spool")})
	if err != nil {
		b.Fatal(err)
	}
	s, err := rec.Start(context.Background(), Meta{})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Output(text); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if _, err := s.Finish(context.Background(), Result{}); err != nil {
		b.Fatal(err)
	}
}

func TestRecoverAlreadyStored(t *testing.T) {
	// A crash after the upload but before the index update: the spool is
	// gone, the object is stored; Recover seals the stored object.
	ctx := context.Background()
	e := newEnv(t, Options{})
	start := time.Now()
	key := CastKey("stored", start)
	cast := "{\"version\":2,\"width\":80,\"height\":24}\n[0.1, \"o\", \"x\"]\n"
	if err := e.store.Put(ctx, key, strings.NewReader(cast), int64(len(cast)), ContentTypeCast); err != nil {
		t.Fatal(err)
	}
	if err := e.st.PutSession(ctx, state.Session{ID: "stored", Start: start, Status: state.StatusRunning, Object: key}); err != nil {
		t.Fatal(err)
	}
	if n, err := e.rec.Recover(ctx); n != 1 || err != nil {
		t.Fatalf("Recover = %d, %v", n, err)
	}
	row, _ := e.st.GetSession(ctx, "stored")
	sum := sha256.Sum256([]byte(cast))
	if row.Status != state.StatusInterrupted || row.SHA256 != hex.EncodeToString(sum[:]) || row.Size != int64(len(cast)) {
		t.Errorf("row = %+v", row)
	}
	if rep, err := e.st.Verify(ctx); err != nil || !rep.OK() {
		t.Errorf("Verify = %+v, %v", rep, err)
	}
}

func TestFollowDuringSeal(t *testing.T) {
	// Follow opened at any point around Finish returns the whole cast.
	ctx := context.Background()
	e := newEnv(t, Options{})
	for i := range 20 {
		id := fmt.Sprintf("seal%d", i)
		s, err := e.rec.Start(ctx, Meta{ID: id})
		if err != nil {
			t.Fatal(err)
		}
		s.Output([]byte("payload"))
		done := make(chan struct{})
		go func() {
			defer close(done)
			if _, err := s.Finish(ctx, Result{}); err != nil {
				t.Errorf("Finish: %v", err)
			}
		}()
		rc, err := e.rec.Follow(ctx, id)
		if err != nil {
			t.Fatalf("Follow during seal: %v", err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		<-done
		if err != nil || !strings.Contains(string(b), "payload") {
			t.Fatalf("followed %q, %v", b, err)
		}
	}
}

func TestFinishAcrossFileSystems(t *testing.T) {
	// A spool on another file system than the store is copied, not renamed.
	shm, err := os.MkdirTemp("/dev/shm", "postern-spool-")
	if err != nil {
		testutil.Missing(t, "no /dev/shm: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	ctx := context.Background()
	e := newEnv(t, Options{SpoolDir: shm})
	s, err := e.rec.Start(ctx, Meta{ID: "xdev"})
	if err != nil {
		t.Fatal(err)
	}
	s.Output([]byte("across"))
	sealed, err := s.Finish(ctx, Result{})
	if err != nil {
		t.Fatal(err)
	}
	cast := readObject(t, e.store, sealed.Object)
	sum := sha256.Sum256(cast)
	if hex.EncodeToString(sum[:]) != sealed.SHA256 || !bytes.Contains(cast, []byte("across")) {
		t.Error("copied cast does not match its digest")
	}
	if _, err := os.Stat(filepath.Join(shm, "xdev.cast")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("spool left behind: %v", err)
	}
}

// TestAsciinemaReadsRecording plays a cast made by the whole data path
// (small chunks, split characters, markers, resize) with the real asciinema.
func TestAsciinemaReadsRecording(t *testing.T) {
	for _, bin := range []string{"asciinema", "script"} {
		if _, err := exec.LookPath(bin); err != nil {
			testutil.Missing(t, "%s not installed", bin)
		}
	}
	ctx := context.Background()
	e := newEnv(t, Options{BufferSize: 32 << 10})
	s, err := e.rec.Start(ctx, Meta{ID: "play1", Term: "xterm", Env: map[string]string{"SHELL": "/bin/sh"}})
	if err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	text := strings.Repeat("日本語 emoji 🙂 \"quoted\" \\ tab\t\x1b[1mbold\x1b[0m\r\n", 400)
	for i := 0; i < len(text); i += 7 {
		p := text[i:min(i+7, len(text))]
		if err := s.Output([]byte(p)); err != nil {
			t.Fatal(err)
		}
		want.WriteString(p)
		if i%700 == 0 {
			s.Input([]byte("x"))
			s.Resize(100, 30)
			s.Marker("m")
		}
	}
	exit := 0
	sealed, err := s.Finish(ctx, Result{ExitStatus: &exit})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(e.store.Root(), filepath.FromSlash(sealed.Object))
	out, err := exec.Command("script", "-qec", "asciinema cat "+path, "/dev/null").CombinedOutput()
	if err != nil {
		t.Fatalf("asciinema cat: %v\n%s", err, out)
	}
	if string(out) != want.String() {
		t.Errorf("asciinema cat printed %d bytes; want %d", len(out), want.Len())
	}
}

func TestTruncateTorn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.cast")
	for _, tt := range []struct{ in, want string }{
		{"h\n[1]\n[2", "h\n[1]\n"},
		{"h\n", "h\n"},
		{"torn", ""},
	} {
		if err := os.WriteFile(path, []byte(tt.in), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := truncateTorn(path); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(path); string(got) != tt.want {
			t.Errorf("truncateTorn(%q) left %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestWriteFailureFailsRecording(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	started := make(chan *Session, 1)
	var once sync.Once
	e.rec.beforeWrite = func() {
		once.Do(func() { (<-started).f.Close() }) // the next write fails
	}
	s, err := e.rec.Start(ctx, Meta{ID: "wfail"})
	if err != nil {
		t.Fatal(err)
	}
	started <- s
	s.Output([]byte("lost"))
	for deadline := time.Now().Add(10 * time.Second); s.Err() == nil; runtime.Gosched() {
		if time.Now().After(deadline) {
			t.Fatal("write failure never surfaced")
		}
	}
	if err := s.Output([]byte("more")); err == nil {
		t.Error("Output after a write failure succeeded")
	}
	if got := e.metric(t, "postern_recording_errors_total", "write"); got != 1 {
		t.Errorf("write errors = %v; want 1", got)
	}
	sealed, err := s.Finish(ctx, Result{})
	if err != nil {
		t.Fatal(err)
	}
	if sealed.Status != state.StatusFailed {
		t.Errorf("status = %q; want failed", sealed.Status)
	}
	decodeAll(t, readObject(t, e.store, sealed.Object))
	if bad, err := VerifySessions(ctx, e.st, e.store); err != nil || len(bad) != 0 {
		t.Errorf("VerifySessions = %v, %v", bad, err)
	}
}

func TestFinishStatus(t *testing.T) {
	tests := []struct {
		name string
		res  Result
		want string
	}{
		{name: "clean", res: Result{}, want: state.StatusFinished},
		{name: "interrupted with reason", res: Result{Interrupted: true, Error: "certificate expired"}, want: state.StatusInterrupted},
		{name: "session error", res: Result{Error: "upstream closed"}, want: state.StatusFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, Options{})
			s, err := e.rec.Start(ctx, Meta{})
			if err != nil {
				t.Fatal(err)
			}
			sealed, err := s.Finish(ctx, tt.res)
			if err != nil {
				t.Fatal(err)
			}
			if _, evs := decodeAll(t, readObject(t, e.store, sealed.Object)); len(evs) != 1 || evs[0].Code != CodeOutput {
				t.Errorf("events of an empty session = %+v; want one empty output", evs)
			}
			row, _ := e.st.GetSession(ctx, s.ID())
			if sealed.Status != tt.want || row.Status != tt.want {
				t.Errorf("status = %q (row %q); want %q", sealed.Status, row.Status, tt.want)
			}
		})
	}
}

func TestFollowOtherReplica(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{Replica: "r1"})
	if err := e.st.PutSession(ctx, state.Session{ID: "remote", Start: time.Now(), Status: state.StatusRunning, Replica: "r2"}); err != nil {
		t.Fatal(err)
	}
	_, err := e.rec.Follow(ctx, "remote")
	if err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "r2") {
		t.Errorf("Follow of another replica's session = %v; want an error naming r2", err)
	}
}

func TestCallerEventsCommitWithTheRecording(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	w0, g0 := e.st.WriteStats()
	s, err := e.rec.Start(ctx, Meta{ID: "joined", Identity: "alice", Target: "web",
		Events: []state.Event{{Type: state.EventSessionStart, Actor: "alice", Target: "web", Session: "joined", Details: map[string]any{"by": "caller"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Output([]byte("hello\r\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Finish(ctx, Result{Events: []state.Event{{Type: state.EventSessionEnd, Actor: "alice", Target: "web", Session: "joined", Details: map[string]any{"by": "caller"}}}}); err != nil {
		t.Fatal(err)
	}
	// One state transaction at the start and one at the seal, each
	// carrying the caller's event.
	if w1, g1 := e.st.WriteStats(); w1-w0 != 2 || g1-g0 != 2 {
		t.Errorf("writes %d in %d transactions; want 2 in 2", w1-w0, g1-g0)
	}
	evs, err := e.st.Events(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range evs {
		by, _ := ev.Details["by"].(string)
		got = append(got, ev.Type+"/"+by)
	}
	want := []string{"session.start/", "session.start/caller", "session.end/", "session.sealed/", "session.end/caller"}
	if !slices.Equal(got, want) {
		t.Errorf("events %v; want %v", got, want)
	}
	if rep, err := e.st.Verify(ctx); err != nil || !rep.OK() {
		t.Errorf("Verify = %+v, %v", rep, err)
	}

	// A caller event that cannot be appended undoes the whole seal
	// transaction: it is one commit.
	s2, err := e.rec.Start(ctx, Meta{ID: "undone"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Finish(ctx, Result{Events: []state.Event{{Session: "undone"}}}); err == nil {
		t.Fatal("Finish appended an event without a type")
	}
	if row, err := e.st.GetSession(ctx, "undone"); err != nil || row.SealSeq != 0 {
		t.Errorf("session after the failed seal: %+v, %v; want not sealed", row, err)
	}
}

func TestCallerEventsNeedAState(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	store, err := NewFileStore(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := New(Options{Store: store, SpoolDir: filepath.Join(dir, "spool")})
	if err != nil {
		t.Fatal(err)
	}
	if rec.HasState() {
		t.Error("HasState without a state store")
	}
	ev := []state.Event{{Type: state.EventSessionStart}}
	if _, err := rec.Start(ctx, Meta{ID: "a", Events: ev}); err == nil {
		t.Error("Start took events without a state store")
	}
	s, err := rec.Start(ctx, Meta{ID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Finish(ctx, Result{Events: ev}); err == nil {
		t.Error("Finish took events without a state store")
	}
	if _, err := s.Finish(ctx, Result{}); err != nil {
		t.Errorf("Finish after the refusal: %v", err)
	}
}
