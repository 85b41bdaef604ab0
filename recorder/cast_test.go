package recorder

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/posternhq/postern/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata")

// castScript is the event sequence of the golden files.
func castScript(e *Encoder, dst []byte) []byte {
	ms := time.Millisecond
	dst = e.AppendOutput(dst, 0, []byte("$ "))
	dst = e.AppendInput(dst, 1500*ms, []byte("echo \"héllo\" \\ 世界\r"))
	dst = e.AppendOutput(dst, 1500*ms+1, []byte("echo \"héllo\" \\ 世界\r\n"))
	dst = e.AppendOutput(dst, 1600*ms, []byte("tab\tbell\abs\bff\fnul\x00esc\x1b[0m del\x7f\n"))
	dst = e.AppendOutput(dst, 1700*ms, []byte("bad \xff\xfe utf8 \xe4\xb8")) // carried tail
	dst = e.AppendOutput(dst, 1800*ms, []byte("\x96 emoji 🙂 <&> \u2028\n"))  // completes 世 (e4 b8 96)
	dst = e.AppendResize(dst, 2*time.Second, 120, 40)
	dst = e.AppendMarker(dst, 2*time.Second+123456*time.Microsecond, "approval \"granted\"")
	dst = e.AppendOutput(dst, 3*time.Second+333333*time.Microsecond, []byte("done\r\n"))
	dst = e.AppendExit(dst, 3*time.Second+666667*time.Microsecond, 3)
	return e.AppendFlush(dst, 4*time.Second)
}

func goldenHeader() Header {
	return Header{Width: 80, Height: 24, Timestamp: 1767225600, Term: "xterm-256color",
		Command: "bash -l", Env: map[string]string{"SHELL": "/bin/bash"}}
}

func TestEncoderGolden(t *testing.T) {
	for _, version := range []int{2, 3} {
		t.Run(map[int]string{2: "v2", 3: "v3"}[version], func(t *testing.T) {
			e, err := NewEncoder(version)
			if err != nil {
				t.Fatal(err)
			}
			got, err := e.AppendHeader(nil, goldenHeader())
			if err != nil {
				t.Fatal(err)
			}
			got = castScript(e, got)
			path := filepath.Join("testdata", map[int]string{2: "golden_v2.cast", 3: "golden_v3.cast"}[version])
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("got\n%s\nwant\n%s", got, want)
			}
		})
	}
}

func decodeAll(t testing.TB, b []byte) (Header, []Event) {
	t.Helper()
	d := NewDecoder(bytes.NewReader(b))
	h, err := d.Header()
	if err != nil {
		t.Fatalf("Header: %v", err)
	}
	var evs []Event
	for {
		ev, err := d.Next()
		if errors.Is(err, io.EOF) {
			return h, evs
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		evs = append(evs, ev)
	}
}

func TestRoundTrip(t *testing.T) {
	for _, version := range []int{2, 3} {
		e, _ := NewEncoder(version)
		b, _ := e.AppendHeader(nil, goldenHeader())
		b = castScript(e, b)
		h, evs := decodeAll(t, b)
		if h.Version != version || h.Width != 80 || h.Height != 24 || h.Term != "xterm-256color" || h.Command != "bash -l" || h.Timestamp != 1767225600 {
			t.Errorf("v%d header = %+v", version, h)
		}
		var out, in strings.Builder
		var codes []string
		for _, ev := range evs {
			codes = append(codes, ev.Code)
			switch ev.Code {
			case CodeOutput:
				out.WriteString(ev.Data)
			case CodeInput:
				in.WriteString(ev.Data)
			}
		}
		wantOut := "$ echo \"héllo\" \\ 世界\r\ntab\tbell\abs\bff\fnul\x00esc\x1b[0m del\x7f\nbad \ufffd\ufffd utf8 世 emoji 🙂 <&> \u2028\ndone\r\n"
		if out.String() != wantOut {
			t.Errorf("v%d output = %q; want %q", version, out.String(), wantOut)
		}
		if in.String() != "echo \"héllo\" \\ 世界\r" {
			t.Errorf("v%d input = %q", version, in.String())
		}
		last := evs[len(evs)-1]
		wantLast := Event{Time: 3*time.Second + 666667*time.Microsecond, Code: CodeExit, Data: "3"}
		if version == 2 {
			wantLast.Code, wantLast.Data = CodeMarker, "exit status 3"
		}
		if last != wantLast {
			t.Errorf("v%d last = %+v; want %+v", version, last, wantLast)
		}
		if evs[1].Time != 1500*time.Millisecond || evs[2].Time != 1500*time.Millisecond {
			t.Errorf("v%d times %v %v; want 1.5s (truncated to µs)", version, evs[1].Time, evs[2].Time)
		}
	}
}

var utf8Samples = []string{
	"日本語のテキスト、中文字符和한국어",
	"emoji 🙂👍🏽🇩🇪 family 👨‍👩‍👧",
	"mixed aé€𐍈\r\n\x1b[31mred\x1b[0m",
}

func TestUTF8SplitEveryOffset(t *testing.T) {
	for _, version := range []int{2, 3} {
		for _, s := range utf8Samples {
			for i := 0; i <= len(s); i++ {
				for j := i; j <= len(s); j++ {
					e, _ := NewEncoder(version)
					b, _ := e.AppendHeader(nil, Header{Width: 80, Height: 24})
					b = e.AppendOutput(b, time.Millisecond, []byte(s[:i]))
					b = e.AppendInput(b, time.Millisecond, []byte("x\xe4")) // interleaved input carry must not mix
					b = e.AppendOutput(b, 2*time.Millisecond, []byte(s[i:j]))
					b = e.AppendOutput(b, 3*time.Millisecond, []byte(s[j:]))
					b = e.AppendFlush(b, 4*time.Millisecond)
					_, evs := decodeAll(t, b)
					var out strings.Builder
					for _, ev := range evs {
						if ev.Code == CodeOutput {
							out.WriteString(ev.Data)
						}
					}
					if out.String() != s {
						t.Fatalf("v%d split %d,%d: got %q; want %q", version, i, j, out.String(), s)
					}
				}
			}
		}
	}
}

func TestInvalidUTF8(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string
		want   string
	}{
		{name: "lone continuation", chunks: []string{"a\x80b"}, want: "a\ufffdb"},
		{name: "overlong", chunks: []string{"\xc0\xaf"}, want: "\ufffd\ufffd"},
		{name: "surrogate", chunks: []string{"\xed\xa0\x80"}, want: "\ufffd\ufffd\ufffd"},
		{name: "truncated then ascii", chunks: []string{"\xe4\xb8", "x"}, want: "\ufffdx"},
		{name: "truncated at end", chunks: []string{"ok\xf0\x9f"}, want: "ok\ufffd"},
		{name: "carry across three writes", chunks: []string{"\xf0", "\x9f", "\x99\x82"}, want: "🙂"},
		{name: "0xff", chunks: []string{"\xff"}, want: "\ufffd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, _ := NewEncoder(2)
			b, _ := e.AppendHeader(nil, Header{Width: 1, Height: 1})
			for _, c := range tt.chunks {
				b = e.AppendOutput(b, 0, []byte(c))
			}
			b = e.AppendFlush(b, 0)
			_, evs := decodeAll(t, b)
			var got strings.Builder
			for _, ev := range evs {
				got.WriteString(ev.Data)
			}
			if got.String() != tt.want {
				t.Errorf("got %q; want %q", got.String(), tt.want)
			}
			if !utf8.Valid(b) {
				t.Errorf("cast is not valid UTF-8")
			}
		})
	}
}

func TestV3IntervalsDoNotDrift(t *testing.T) {
	// 100000 events 1/3 ms apart: each interval is rounded to µs, but the
	// sum must equal the last absolute time exactly.
	e, _ := NewEncoder(3)
	b, _ := e.AppendHeader(nil, Header{Width: 80, Height: 24})
	const n = 100000
	var last time.Duration
	for i := 1; i <= n; i++ {
		last = time.Duration(i) * time.Second / 3000
		b = e.AppendOutput(b, last, []byte("."))
	}
	_, evs := decodeAll(t, b)
	if len(evs) != n {
		t.Fatalf("events = %d; want %d", len(evs), n)
	}
	got := evs[n-1].Time
	if want := last.Truncate(time.Microsecond); got != want {
		t.Errorf("last time = %v; want %v", got, want)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Time < evs[i-1].Time {
			t.Fatalf("time went back at %d", i)
		}
	}
}

func TestTimeNeverGoesBack(t *testing.T) {
	e, _ := NewEncoder(2)
	b, _ := e.AppendHeader(nil, Header{Width: 80, Height: 24})
	b = e.AppendOutput(b, 2*time.Second, []byte("a"))
	b = e.AppendOutput(b, time.Second, []byte("b"))
	_, evs := decodeAll(t, b)
	if evs[1].Time != 2*time.Second {
		t.Errorf("time = %v; want clamped to 2s", evs[1].Time)
	}
}

func TestAppendSeconds(t *testing.T) {
	tests := []struct {
		us   int64
		want string
	}{
		{0, "0.0"}, {1, "0.000001"}, {1500000, "1.5"}, {123456789, "123.456789"}, {3000000, "3.0"}, {100, "0.0001"},
	}
	for _, tt := range tests {
		if got := string(appendSeconds(nil, tt.us)); got != tt.want {
			t.Errorf("appendSeconds(%d) = %q; want %q", tt.us, got, tt.want)
		}
	}
}

func TestDecoderTornAndErrors(t *testing.T) {
	good := "{\"version\": 2, \"width\": 80, \"height\": 24}\n[0.5, \"o\", \"a\"]\n"
	d := NewDecoder(strings.NewReader(good + "[1.0, \"o\", \"b"))
	if ev, err := d.Next(); err != nil || ev.Data != "a" {
		t.Fatalf("Next = %+v, %v", ev, err)
	}
	if _, err := d.Next(); !errors.Is(err, ErrTornLine) {
		t.Fatalf("err = %v; want ErrTornLine", err)
	}
	if _, err := d.Next(); !errors.Is(err, io.EOF) || !d.Torn() {
		t.Fatalf("err = %v torn %v; want EOF after torn line", err, d.Torn())
	}

	bad := []struct{ name, in string }{
		{"empty", ""},
		{"v1", `{"version": 1, "width": 80, "height": 24}` + "\n"},
		{"no size", `{"version": 2}` + "\n"},
		{"v3 no term", `{"version": 3}` + "\n"},
		{"not json", "hello\n"},
		{"bad event", `{"version": 2, "width": 1, "height": 1}` + "\n[1, \"o\"]\n"},
		{"negative time", `{"version": 2, "width": 1, "height": 1}` + "\n[-1, \"o\", \"\"]\n"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDecoder(strings.NewReader(tt.in))
			_, err := d.Next()
			if err == nil || errors.Is(err, io.EOF) {
				t.Errorf("err = %v; want a decode error", err)
			}
		})
	}
}

func TestDecoderV3Comments(t *testing.T) {
	in := `{"version": 3, "term": {"cols": 100, "rows": 50, "type": "xterm"}}` + "\n# comment\n[0.5, \"o\", \"a\"]\n\n[0.25, \"x\", 0]\n"
	h, evs := decodeAll(t, []byte(in))
	if h.Width != 100 || h.Height != 50 || h.Term != "xterm" {
		t.Errorf("header = %+v", h)
	}
	if len(evs) != 2 || evs[1].Time != 750*time.Millisecond || evs[1].Data != "0" {
		t.Errorf("events = %+v", evs)
	}
}

// TestAsciinemaReadsCast checks the cast with the real asciinema 2.2
// player: `asciinema cat` must print exactly the recorded output.
func TestAsciinemaReadsCast(t *testing.T) {
	for _, bin := range []string{"asciinema", "script"} {
		if _, err := exec.LookPath(bin); err != nil {
			testutil.Missing(t, "%s not installed", bin)
		}
	}
	e, _ := NewEncoder(2)
	b, _ := e.AppendHeader(nil, goldenHeader())
	want := ""
	for _, s := range append(utf8Samples, "tab\tnul-less ctl \x1b[1mbold\x1b[0m \"q\" \\ end\r\n") {
		for i := 0; i < len(s); i += 5 {
			chunk := s[i:min(i+5, len(s))]
			b = e.AppendOutput(b, time.Duration(i)*time.Millisecond, []byte(chunk))
		}
		want += s
	}
	b = e.AppendMarker(b, time.Second, "marker")
	b = e.AppendExit(b, time.Second, 0)
	path := filepath.Join(t.TempDir(), "t.cast")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("script", "-qec", "asciinema cat "+path, "/dev/null").CombinedOutput()
	if err != nil {
		t.Fatalf("asciinema cat: %v\n%s", err, out)
	}
	if string(out) != want {
		t.Errorf("asciinema cat printed %q; want %q", out, want)
	}
}

func BenchmarkEncodeOutput(b *testing.B) {
	text := bytes.Repeat([]byte("ZGF0YSBkYXRhIGRhdGEgZGF0YSBkYXRhIGRhdGEgZGF0YSBkYXRhIGRhdGEgZGF0YSBkYXRh\r\n"), 32768/74)
	binary := make([]byte, 32768)
	for i := range binary {
		binary[i] = byte(i * 7)
	}
	for _, w := range []struct {
		name string
		p    []byte
	}{{"text", text}, {"binary", binary}, {"zeros", make([]byte, 32768)}} {
		b.Run(w.name, func(b *testing.B) {
			e, _ := NewEncoder(2)
			dst := make([]byte, 0, 8*len(w.p))
			b.SetBytes(int64(len(w.p)))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				dst = e.AppendOutput(dst[:0], time.Duration(i)*time.Millisecond, w.p)
			}
		})
	}
}

// BenchmarkEncodeOutputJSON is the encoding/json baseline the hand-written
// escaper replaces (compare MB/s with BenchmarkEncodeOutput in one run).
func BenchmarkEncodeOutputJSON(b *testing.B) {
	text := bytes.Repeat([]byte("ZGF0YSBkYXRhIGRhdGEgZGF0YSBkYXRhIGRhdGEgZGF0YSBkYXRhIGRhdGEgZGF0YSBkYXRh\r\n"), 32768/74)
	binary := make([]byte, 32768)
	for i := range binary {
		binary[i] = byte(i * 7)
	}
	for _, w := range []struct {
		name string
		p    []byte
	}{{"text", text}, {"binary", binary}, {"zeros", make([]byte, 32768)}} {
		b.Run(w.name, func(b *testing.B) {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			b.SetBytes(int64(len(w.p)))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				buf.Reset()
				if err := enc.Encode([]any{float64(i) / 1000, "o", string(w.p)}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestMarkerWithTornCharacter(t *testing.T) {
	e, _ := NewEncoder(2)
	b, _ := e.AppendHeader(nil, Header{Width: 1, Height: 1})
	b = e.AppendMarker(b, 0, "cut \xe4\xb8")
	_, evs := decodeAll(t, b)
	if len(evs) != 1 || evs[0].Data != "cut \ufffd" {
		t.Errorf("events = %+v", evs)
	}
}

// BenchmarkDecode measures reading a cast back (players, search indexing):
// text output in 4 KiB events, the shape a shell session records.
func BenchmarkDecode(b *testing.B) {
	line := []byte("\x1b[01;34mdrwxr-xr-x\x1b[0m  2 root root  4096 Mar  1 10:00 \x1b[01;32msudoers.d\x1b[0m\r\n")
	chunk := bytes.Repeat(line, 4096/len(line))
	e, _ := NewEncoder(2)
	cast, _ := e.AppendHeader(nil, Header{Width: 80, Height: 24})
	for i := range 2048 {
		cast = e.AppendOutput(cast, time.Duration(i)*time.Millisecond, chunk)
	}
	b.SetBytes(int64(len(cast)))
	b.ReportAllocs()
	for b.Loop() {
		d := NewDecoder(bytes.NewReader(cast))
		for {
			if _, err := d.Next(); err != nil {
				break
			}
		}
	}
}

func TestDecoderSkipData(t *testing.T) {
	e, _ := NewEncoder(2)
	cast, _ := e.AppendHeader(nil, Header{Width: 80, Height: 24})
	big := bytes.Repeat([]byte("0123456789abcdef\r\n"), 20000) // one 360 KB line: longer than the reader's buffer
	cast = e.AppendOutput(cast, time.Second, []byte("hello"))
	cast = e.AppendOutput(cast, 2*time.Second, big)
	cast = e.AppendInput(cast, 3*time.Second, []byte("typed"))
	cast = e.AppendOutput(cast, 4*time.Second, big)
	cast = e.AppendMarker(cast, 5*time.Second, "done")
	for _, skip := range []string{"", "o"} {
		d := NewDecoder(bytes.NewReader(cast))
		d.SkipData(skip)
		var got []string
		for {
			ev, err := d.Next()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Fatalf("skip %q: %v", skip, err)
				}
				break
			}
			got = append(got, fmt.Sprintf("%v %s %d", ev.Time, ev.Code, len(ev.Data)))
		}
		want := []string{"1s o 5", "2s o 360000", "3s i 5", "4s o 360000", "5s m 4"}
		if skip == "o" {
			want = []string{"1s o 0", "2s o 0", "3s i 5", "4s o 0", "5s m 4"}
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("skip %q: got %v; want %v", skip, got, want)
		}
	}
}
