package players

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/internal/testutil"
)

func exportFile(t *testing.T, cast string, opts ExportOptions) []byte {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", cast))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out bytes.Buffer
	if err := Export(&out, f, opts); err != nil {
		t.Fatalf("Export(%s): %v", cast, err)
	}
	return out.Bytes()
}

// castLines splits a cast into its header object and event arrays.
func castLines(t *testing.T, b []byte) (map[string]any, [][]any) {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(b))
	var header map[string]any
	var events [][]any
	for sc.Scan() {
		line := sc.Bytes()
		if header == nil {
			if err := json.Unmarshal(line, &header); err != nil {
				t.Fatalf("header %q: %v", line, err)
			}
			continue
		}
		var ev []any
		if err := json.Unmarshal(line, &ev); err != nil || len(ev) != 3 {
			t.Fatalf("event line %q: not [time, code, data] (%v)", line, err)
		}
		events = append(events, ev)
	}
	if !bytes.HasSuffix(b, []byte("\n")) {
		t.Error("export does not end with a newline")
	}
	return header, events
}

func TestExportV3Structure(t *testing.T) {
	for _, src := range []string{"session_v2.cast", "session_v3.cast"} {
		t.Run(src, func(t *testing.T) {
			header, events := castLines(t, exportFile(t, src, ExportOptions{Version: 3}))
			term, _ := header["term"].(map[string]any)
			if header["version"] != 3.0 || term["cols"] != 80.0 || term["rows"] != 24.0 || term["type"] != "xterm-256color" {
				t.Errorf("header %v; want version 3, term 80x24 xterm-256color", header)
			}
			if _, ok := header["width"]; ok {
				t.Error("v3 header carries the v2 width field")
			}
			wantCodes := "o o m o i r m o x"
			var codes []string
			var total float64
			for _, ev := range events {
				iv := ev[0].(float64)
				if iv < 0 {
					t.Errorf("negative interval in %v", ev)
				}
				total += iv
				codes = append(codes, ev[1].(string))
			}
			if strings.Join(codes, " ") != wantCodes {
				t.Errorf("got codes %q; want %q", strings.Join(codes, " "), wantCodes)
			}
			if d := total - 14; d > 1e-6 || d < -1e-6 {
				t.Errorf("intervals sum to %v; want 14", total)
			}
			if last := events[len(events)-1]; last[2] != "0" {
				t.Errorf("exit event %v; want status 0", last)
			}
			if events[7][2] != "done é\r\n" {
				t.Errorf("got %q; want UTF-8 kept", events[7][2])
			}
		})
	}
}

func TestExportV3ExitFromMetadata(t *testing.T) {
	st := 3
	_, events := castLines(t, exportFile(t, "idle_limit.cast", ExportOptions{Version: 3, ExitStatus: &st}))
	last := events[len(events)-1]
	if last[1] != "x" || last[2] != "3" {
		t.Errorf("last event %v; want [_, x, 3]", last)
	}
}

func TestExportV2(t *testing.T) {
	for _, src := range []string{"session_v2.cast", "session_v3.cast", "torn.cast"} {
		t.Run(src, func(t *testing.T) {
			out := exportFile(t, src, ExportOptions{Version: 2})
			header, events := castLines(t, out)
			if header["version"] != 2.0 || header["width"] == nil || header["height"] == nil {
				t.Errorf("header %v; want version 2 with width and height", header)
			}
			prev := -1.0
			for _, ev := range events {
				if ev[0].(float64) < prev {
					t.Errorf("time goes back at %v", ev)
				}
				prev = ev[0].(float64)
				if ev[1] == "x" {
					t.Errorf("v2 export carries an x event: %v", ev)
				}
			}
			// The export replays in the player the same way as the source.
			p := newPlayer(t, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(out)), nil }, Options{})
			var got bytes.Buffer
			p.Seek(&got, time.Hour)
			q := newPlayer(t, fileSource(t, src), Options{})
			var want bytes.Buffer
			q.Seek(&want, time.Hour)
			if got.String() != want.String() {
				t.Errorf("export replays %q; source replays %q", got.String(), want.String())
			}
		})
	}
}

// TestExportAsciinemaPlay checks that Debian's asciinema 2.2 plays a v2
// export to the end.
func TestExportAsciinemaPlay(t *testing.T) {
	bin, err := exec.LookPath("asciinema")
	if err != nil {
		testutil.Missing(t, "asciinema is not installed (apt-get install asciinema)")
	}
	for _, src := range []string{"session_v2.cast", "session_v3.cast"} {
		t.Run(src, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "export.cast")
			if err := os.WriteFile(path, exportFile(t, src, ExportOptions{Version: 2}), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "play", "-i", "0.1", path)
			cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("asciinema play: %v\n%s", err, out)
			}
			if !strings.Contains(string(out), "after idle") || !strings.Contains(string(out), "done é") {
				t.Errorf("asciinema play printed %q; want the recorded output", out)
			}
		})
	}
}

// FuzzExport checks that any input either fails cleanly or exports to a
// cast that decodes again, in both versions.
func FuzzExport(f *testing.F) {
	for _, name := range []string{"session_v2.cast", "session_v3.cast", "idle_limit.cast", "torn.cast"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, v := range []int{2, 3} {
			var out bytes.Buffer
			if err := Export(&out, bytes.NewReader(in), ExportOptions{Version: v}); err != nil {
				continue
			}
			p, err := New(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(out.Bytes())), nil }, Options{})
			if err != nil {
				t.Fatalf("v%d export does not decode: %v\n%q", v, err, out.Bytes())
			}
			for {
				_, err := p.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("v%d export has a bad event: %v\n%q", v, err, out.Bytes())
				}
			}
		}
	})
}
