package innerhop

import (
	"testing"

	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/state"
)

// newTestRecorder returns a recorder with a file store in dir and its spool
// in spool.
func newTestRecorder(t testing.TB, dir, spool string, st *state.Store) *recorder.Recorder {
	t.Helper()
	store, err := recorder.NewFileStore(dir)
	if err != nil {
		t.Fatalf("file store: %v", err)
	}
	r, err := recorder.New(recorder.Options{Store: store, SpoolDir: spool, State: st})
	if err != nil {
		t.Fatalf("recorder: %v", err)
	}
	return r
}
