package battery

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/recorder"
)

// verifyCast checks that the cast at path has the metadata's digest and
// decodes as asciicast, and returns its output text.
func verifyCast(t testing.TB, path string, m castMeta) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("recording %s: %v", m.ID, err)
	}
	sum := sha256.Sum256(b)
	if got := hex.EncodeToString(sum[:]); got != m.SHA256 {
		t.Errorf("recording %s: sha256 %s; metadata says %s", m.ID, got, m.SHA256)
	}
	if int64(len(b)) != m.Size {
		t.Errorf("recording %s: %d bytes; metadata says %d", m.ID, len(b), m.Size)
	}
	dec := recorder.NewDecoder(bytes.NewReader(b))
	var out strings.Builder
	for {
		ev, err := dec.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("recording %s does not decode: %v", m.ID, err)
		}
		if ev.Code == "o" {
			out.WriteString(ev.Data)
		}
	}
	return out.String()
}

// TestKilledMidSessionRecordingRecovered: postern is SIGKILLed while a
// recorded session is streaming. After a restart on the same data directory
// the interrupted recording is sealed: its digest matches its metadata, it
// decodes, and it holds every line the target had echoed back before the
// kill (fsync_interval bounds what may be lost; the client saw these lines,
// so they were already spooled).
func TestKilledMidSessionRecordingRecovered(t *testing.T) {
	s := startService(t, serviceOptions{Recording: "fsync_interval: 100ms"})
	h, err := s.dialHop(s.userSigner(t, "kill@example.com", nil), "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	sess, err := h.Inner.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	stdin, _ := sess.StdinPipe()
	stdout, _ := sess.StdoutPipe()
	if err := sess.Start("exec cat"); err != nil {
		t.Fatal(err)
	}
	var seen bytes.Buffer
	buf := make([]byte, 4096)
	for i := range 20 {
		line := fmt.Sprintf("line %03d before the kill\n", i)
		if _, err := stdin.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
		for !bytes.Contains(seen.Bytes(), []byte(line)) {
			n, err := stdout.Read(buf)
			if err != nil {
				t.Fatalf("read echo: %v", err)
			}
			seen.Write(buf[:n])
		}
	}
	// The tap hands output to the recorder asynchronously: wait until the
	// last line is in the spool file, then kill without warning.
	s.waitSpool(t, "line 019 before the kill")
	s.proc.Stop()
	h.Close()

	if got := s.recordings(t); len(got) != 0 {
		t.Fatalf("a sealed recording exists before recovery: %v", got)
	}
	s.start()
	s.proc.WaitLine(t, regexpRecovered, 30*time.Second)
	recs := s.recordings(t)
	if len(recs) != 1 {
		t.Fatalf("%d recordings after restart; want 1 recovered", len(recs))
	}
	for path, m := range recs {
		out := verifyCast(t, path, m)
		for i := range 20 {
			if line := fmt.Sprintf("line %03d before the kill", i); !strings.Contains(out, line) {
				t.Errorf("recovered recording lost %q; output:\n%s", line, out)
			}
		}
		if m.Status != "interrupted" {
			t.Errorf("recovered recording status %q; want interrupted", m.Status)
		}
	}
}

var regexpRecovered = regexp.MustCompile(`recovered interrupted recordings`)

// waitSpool waits until some spool file contains text.
func (s *service) waitSpool(t testing.TB, text string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		files, _ := filepath.Glob(filepath.Join(s.data, "spool", "*"))
		for _, f := range files {
			if b, err := os.ReadFile(f); err == nil && bytes.Contains(b, []byte(text)) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no spool file holds %q after 10s (files: %v)", text, files)
		}
		time.Sleep(10 * time.Millisecond) // polling a file; there is no event to wait on
	}
}
