package innerhop

import (
	"context"
	"testing"
	"time"

	"github.com/posternhq/postern/state"
)

func TestInnerHopShutdown(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{record: "required"})
	sshd := startSSHD(t, f.auth)
	f.setTargets(sshTarget("web-1", sshd))
	done := f.sshInBackground("web-1", "echo started; exec sleep 60")
	f.waitEvent(state.EventSessionStart, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_ = f.server.Shutdown(ctx)
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	if res.r.Code != ExitUpstreamFailed {
		t.Errorf("exit = %d; want %d (stderr %q)", res.r.Code, ExitUpstreamFailed, res.r.Stderr)
	}
	// The server closes the outer connection as it cancels the session
	// context, so whether the inner hop's notice still reaches the client
	// is a race; the exit status and the sealed recording are not.
	// The recording is sealed as interrupted, not lost.
	ev := f.waitEvent(state.EventSessionEnd, 1)
	c := f.checkCast(ev[0].Session)
	if c.meta["status"] != "interrupted" {
		t.Errorf("metadata status %v; want interrupted", c.meta["status"])
	}
}
