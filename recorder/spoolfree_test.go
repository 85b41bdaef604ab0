package recorder

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestSpoolFull: with less free spool space than MinSpoolFree, Start
// refuses new recordings with a clear error (fail closed); with enough, it
// records.
func TestSpoolFull(t *testing.T) {
	e := newEnv(t, Options{MinSpoolFree: 1 << 62})
	_, err := e.rec.Start(context.Background(), Meta{Identity: "alice", Target: "web-1"})
	if !errors.Is(err, ErrSpoolFull) || !strings.Contains(err.Error(), "MiB free") {
		t.Fatalf("Start on a full spool: %v; want ErrSpoolFull with the figures", err)
	}
	if got := e.metric(t, "postern_recording_errors_total", "spool_full"); got != 1 {
		t.Errorf("spool_full errors = %v; want 1", got)
	}
	if e.rec.Active() != 0 {
		t.Errorf("%d active recordings after a refused start; want 0", e.rec.Active())
	}

	e = newEnv(t, Options{MinSpoolFree: 1})
	s, err := e.rec.Start(context.Background(), Meta{Identity: "alice", Target: "web-1"})
	if err != nil {
		t.Fatalf("Start with free space: %v", err)
	}
	if _, err := s.Finish(context.Background(), Result{}); err != nil {
		t.Fatal(err)
	}
}
