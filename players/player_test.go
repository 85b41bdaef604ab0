package players

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func fileSource(t *testing.T, name string) Source {
	t.Helper()
	path := filepath.Join("testdata", name)
	return func() (io.ReadCloser, error) { return os.Open(path) }
}

// onceSource can be opened once, like a pipe.
func onceSource(t *testing.T, name string) Source {
	t.Helper()
	opened := false
	src := fileSource(t, name)
	return func() (io.ReadCloser, error) {
		if opened {
			return nil, ErrNotSeekable
		}
		opened = true
		return src()
	}
}

func newPlayer(t *testing.T, src Source, opts Options) *Player {
	t.Helper()
	p, err := New(src, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func secs(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

func allFrames(t *testing.T, p *Player) []Frame {
	t.Helper()
	var out []Frame
	for {
		f, err := p.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		out = append(out, f)
	}
}

func TestPlayerTiming(t *testing.T) {
	tests := []struct {
		name  string
		cast  string
		limit time.Duration
		want  []float64 // playback positions of every event
	}{
		{name: "v2 no limit", cast: "session_v2.cast", want: []float64{0.5, 1, 1, 11, 12, 12.5, 13, 14, 14}},
		{name: "v3 no limit", cast: "session_v3.cast", want: []float64{0.5, 1, 1, 11, 12, 12.5, 13, 14, 14}},
		{name: "v2 limit 2s", cast: "session_v2.cast", limit: 2 * time.Second, want: []float64{0.5, 1, 1, 3, 4, 4.5, 5, 6, 6}},
		{name: "v3 limit 0.4s", cast: "session_v3.cast", limit: 400 * time.Millisecond, want: []float64{0.4, 0.8, 0.8, 1.2, 1.6, 2.0, 2.4, 2.8, 2.8}},
		{name: "header limit", cast: "idle_limit.cast", want: []float64{0.1, 1.6, 1.7}},
		{name: "option beats header", cast: "idle_limit.cast", limit: time.Second, want: []float64{0.1, 1.1, 1.2}},
		{name: "torn last line", cast: "torn.cast", want: []float64{0.1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPlayer(t, fileSource(t, tt.cast), Options{IdleTimeLimit: tt.limit})
			frames := allFrames(t, p)
			if len(frames) != len(tt.want) {
				t.Fatalf("got %d frames; want %d", len(frames), len(tt.want))
			}
			for i, f := range frames {
				if d := f.At - secs(tt.want[i]); d > time.Microsecond || d < -time.Microsecond {
					t.Errorf("frame %d (%s %q): got at %v; want %v", i, f.Event.Code, f.Event.Data, f.At, secs(tt.want[i]))
				}
			}
		})
	}
}

func TestPlayerSeek(t *testing.T) {
	tests := []struct {
		name    string
		src     func(*testing.T) Source
		seeks   []float64
		wantOut string
		wantPos float64
	}{
		{name: "forward", src: func(t *testing.T) Source { return fileSource(t, "session_v2.cast") },
			seeks: []float64{2}, wantOut: "hello world\r\n", wantPos: 2},
		{name: "forward twice", src: func(t *testing.T) Source { return fileSource(t, "session_v2.cast") },
			seeks: []float64{0.7, 12}, wantOut: "hello world\r\nafter idle\r\n", wantPos: 12},
		{name: "backward replays after a reset", src: func(t *testing.T) Source { return fileSource(t, "session_v2.cast") },
			seeks: []float64{12, 0.7}, wantOut: "hello world\r\nafter idle\r\n" + resetTerminal + "hello ", wantPos: 0.7},
		{name: "past the end", src: func(t *testing.T) Source { return fileSource(t, "session_v3.cast") },
			seeks: []float64{100}, wantOut: "hello world\r\nafter idle\r\ndone é\r\n", wantPos: 14},
		{name: "backward on a pipe is ignored", src: func(t *testing.T) Source { return onceSource(t, "session_v2.cast") },
			seeks: []float64{2, 0}, wantOut: "hello world\r\n", wantPos: 2},
		{name: "negative clamps to start", src: func(t *testing.T) Source { return fileSource(t, "session_v2.cast") },
			seeks: []float64{1, -5}, wantOut: "hello world\r\n" + resetTerminal, wantPos: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPlayer(t, tt.src(t), Options{})
			var out bytes.Buffer
			var pos time.Duration
			for _, s := range tt.seeks {
				var err error
				if pos, err = p.Seek(&out, secs(s)); err != nil {
					t.Fatalf("Seek(%v): %v", s, err)
				}
			}
			if out.String() != tt.wantOut {
				t.Errorf("got output %q; want %q", out.String(), tt.wantOut)
			}
			if pos != secs(tt.wantPos) || p.Position() != secs(tt.wantPos) {
				t.Errorf("got position %v (Position %v); want %v", pos, p.Position(), secs(tt.wantPos))
			}
		})
	}
}

func TestPlayerMarkers(t *testing.T) {
	for _, cast := range []string{"session_v2.cast", "session_v3.cast"} {
		t.Run(cast, func(t *testing.T) {
			p := newPlayer(t, fileSource(t, cast), Options{IdleTimeLimit: 2 * time.Second})
			var out bytes.Buffer
			var labels []string
			for {
				m, ok, err := p.NextMarker(&out)
				if err != nil {
					t.Fatal(err)
				}
				if !ok {
					break
				}
				labels = append(labels, m.Label)
			}
			want := []string{"command: ls", "approval granted"}
			if cast == "session_v2.cast" {
				want = append(want, "exit status 0")
			}
			if strings.Join(labels, "|") != strings.Join(want, "|") {
				t.Errorf("got markers %q; want %q", labels, want)
			}
			if got := len(p.Markers()); got != len(want) {
				t.Errorf("got %d listed markers; want %d", got, len(want))
			}
			// Back from the end: the last marker more than 1s back.
			out.Reset()
			m, ok, err := p.PrevMarker(&out, time.Second)
			if err != nil || !ok || m.Label != "approval granted" || p.Position() != 5*time.Second {
				t.Fatalf("PrevMarker = %+v, %v, %v at %v; want approval granted at 5s", m, ok, err, p.Position())
			}
			if !strings.HasPrefix(out.String(), resetTerminal) || !strings.HasSuffix(out.String(), "after idle\r\n") {
				t.Errorf("replayed output %q; want a reset and the output up to the marker", out.String())
			}
			m, ok, _ = p.PrevMarker(io.Discard, time.Second)
			if !ok || m.Label != "command: ls" {
				t.Errorf("second PrevMarker = %+v; want command: ls", m)
			}
			if _, ok, _ = p.PrevMarker(io.Discard, time.Second); ok || p.Position() != 0 {
				t.Errorf("PrevMarker before the first marker: found %v at %v; want none at 0", ok, p.Position())
			}
			if got := len(p.Markers()); got != len(want) {
				t.Errorf("after replays got %d listed markers; want %d (no duplicates)", got, len(want))
			}
		})
	}
}

// autoClock is a virtual clock on which every wait completes at once by
// advancing the time.
type autoClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *autoClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *autoClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

// stampWriter records the virtual time of every write.
type stampWriter struct {
	clock Clock
	start time.Time
	at    []time.Duration
	data  []string
}

func (w *stampWriter) Write(b []byte) (int, error) {
	w.at = append(w.at, w.clock.Now().Sub(w.start))
	w.data = append(w.data, string(b))
	return len(b), nil
}

func TestPlayerRunTiming(t *testing.T) {
	tests := []struct {
		name  string
		speed float64
		limit time.Duration
		want  []float64 // wall times of the output writes
	}{
		{name: "speed 1", speed: 1, want: []float64{0.5, 1, 11, 14}},
		{name: "speed 2", speed: 2, want: []float64{0.25, 0.5, 5.5, 7}},
		{name: "speed 2 limit 2s", speed: 2, limit: 2 * time.Second, want: []float64{0.25, 0.5, 1.5, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &autoClock{now: time.Unix(1000, 0)}
			p := newPlayer(t, fileSource(t, "session_v2.cast"), Options{Speed: tt.speed, IdleTimeLimit: tt.limit, Clock: clock})
			w := &stampWriter{clock: clock, start: clock.Now()}
			if err := p.Run(context.Background(), w, nil); err != nil {
				t.Fatalf("Run: %v", err)
			}
			if got := strings.Join(w.data, ""); got != "hello world\r\nafter idle\r\ndone é\r\n" {
				t.Errorf("got output %q", got)
			}
			if len(w.at) != len(tt.want) {
				t.Fatalf("got %d writes; want %d", len(w.at), len(tt.want))
			}
			for i := range w.at {
				if d := w.at[i] - secs(tt.want[i]); d > time.Millisecond || d < -time.Millisecond {
					t.Errorf("write %d at %v; want %v", i, w.at[i], secs(tt.want[i]))
				}
			}
		})
	}
}

// frozenClock never fires: playback moves only by controls.
type frozenClock struct{ now time.Time }

func (c frozenClock) Now() time.Time                       { return c.now }
func (c frozenClock) After(time.Duration) <-chan time.Time { return nil }

func TestPlayerRunControls(t *testing.T) {
	tests := []struct {
		name    string
		cmds    []Command
		wantOut string
		wantPos float64
	}{
		{name: "step while paused", cmds: []Command{CmdPause, CmdStep, CmdStep, CmdQuit},
			wantOut: "hello world\r\n", wantPos: 1},
		{name: "step while playing does nothing", cmds: []Command{CmdStep, CmdQuit}, wantOut: "", wantPos: 0},
		{name: "seek forward and back", cmds: []Command{CmdSeekFwd, CmdSeekFwd, CmdSeekBack, CmdQuit},
			wantOut: "hello world\r\n" + resetTerminal + "hello world\r\n", wantPos: 5},
		{name: "seek past the end finishes", cmds: []Command{CmdSeekFwd, CmdSeekFwd, CmdSeekFwd},
			wantOut: "hello world\r\nafter idle\r\ndone é\r\n", wantPos: 14},
		{name: "markers", cmds: []Command{CmdNextMarker, CmdNextMarker, CmdPrevMarker, CmdQuit},
			wantOut: "hello world\r\nafter idle\r\n" + resetTerminal + "hello world\r\n", wantPos: 1},
		{name: "speed keys keep position", cmds: []Command{CmdFaster, CmdFaster, CmdSlower, CmdSlower, CmdSlower, CmdQuit},
			wantOut: "", wantPos: 0},
		{name: "step to the end finishes", cmds: []Command{CmdPause, CmdStep, CmdStep, CmdStep, CmdStep, CmdStep},
			wantOut: "hello world\r\nafter idle\r\ndone é\r\n", wantPos: 14},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPlayer(t, fileSource(t, "session_v2.cast"), Options{Clock: frozenClock{time.Unix(1000, 0)}})
			cmds := make(chan Command)
			done := make(chan error, 1)
			var out bytes.Buffer
			go func() { done <- p.Run(context.Background(), &out, cmds) }()
			for _, c := range tt.cmds {
				select {
				case cmds <- c:
				case err := <-done:
					done <- err
				}
			}
			if err := <-done; err != nil {
				t.Fatalf("Run: %v", err)
			}
			if out.String() != tt.wantOut {
				t.Errorf("got output %q; want %q", out.String(), tt.wantOut)
			}
			if p.Position() != secs(tt.wantPos) {
				t.Errorf("got position %v; want %v", p.Position(), secs(tt.wantPos))
			}
		})
	}
}

func TestPlayerRunCancel(t *testing.T) {
	p := newPlayer(t, fileSource(t, "session_v2.cast"), Options{Clock: frozenClock{time.Unix(1000, 0)}})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Run(ctx, io.Discard, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v; want context.Canceled", err)
	}
}

func TestPlayerBadCast(t *testing.T) {
	src := func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("not a cast\n")), nil }
	if _, err := New(src, Options{}); err == nil {
		t.Fatal("New accepted a file that is not a cast")
	}
}
