package innerhop

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/state"
)

// TestInnerHopTargetKilledMidSession: the target's sshd (and every process
// it forked) is killed while a recorded session runs. The client sees
// "postern: web-1: connection lost" with ExitUpstreamFailed, the session's
// end event says it was ended by connection_lost, and the recording is
// sealed with the output the target had sent.
func TestInnerHopTargetKilledMidSession(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{record: "required"})
	sshd := startSSHD(t, f.auth)
	f.setTargets(sshTarget("web-1", sshd))
	done := f.sshInBackground("web-1", "echo started before the kill; exec sleep 60")
	f.waitEvent(state.EventSessionStart, 1)
	waitSpoolHolds(t, f.spoolDir, "started before the kill")
	sshd.Kill()
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	if res.r.Code != ExitUpstreamFailed || !strings.Contains(string(res.r.Stderr), "postern: web-1: connection lost") {
		t.Errorf("exit %d stderr %q; want %d and the connection lost message", res.r.Code, res.r.Stderr, ExitUpstreamFailed)
	}
	ev := f.waitEvent(state.EventSessionEnd, 1)[0]
	if got, _ := ev.Details["ended_by"].(string); got != "connection_lost" {
		t.Errorf("session end details %v; want ended_by connection_lost", ev.Details)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var cast []byte
		_ = filepath.WalkDir(f.recDir, func(p string, d os.DirEntry, err error) error {
			if err == nil && strings.HasSuffix(p, ev.Session+".cast") {
				cast, _ = os.ReadFile(p)
			}
			return nil
		})
		if bytes.Contains(cast, []byte("started before the kill")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no sealed recording of %s holds the output before the kill: %q", ev.Session, cast)
		}
		time.Sleep(20 * time.Millisecond) // sealing follows the end event; polling the store
	}
}

// waitSpoolHolds waits until a file in dir contains text.
func waitSpoolHolds(t testing.TB, dir, text string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		files, _ := filepath.Glob(filepath.Join(dir, "*"))
		for _, p := range files {
			if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(text)) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no spool file holds %q", text)
		}
		time.Sleep(10 * time.Millisecond) // polling a file; there is no event to wait on
	}
}
