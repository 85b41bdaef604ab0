package innerhop

import (
	"strings"
	"testing"

	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/state"
)

// startPTYClient runs the stock ssh client in a pty, as a person would.
func startPTYClient(t *testing.T, cols, rows uint16, args ...string) *testutil.PTY {
	t.Helper()
	return testutil.StartPTY(t, cols, rows, "ssh", args...)
}

func TestInnerHopInteractiveShell(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{record: "required"})
	sshd := startSSHD(t, f.auth)
	f.setTargets(sshTarget("web-1", sshd))

	c := startPTYClient(t, 90, 30, "-F", f.sshCfg, "-tt", "web-1")
	// The login shell's prompt varies; drive it with markers instead.
	c.Send("PS1='$ '; echo MARK-$((40+2))\r")
	c.Expect(`MARK-42`)
	c.Send("stty size\r")
	c.Expect(`30 90`)
	c.Resize(132, 43)
	// The prompt is spelled so that the echo of this line does not match.
	c.Send("printf '%s: ' Password; stty -echo; read -r secret; stty echo; echo; echo got-${#secret}\r")
	c.Expect(`Password: `)
	c.Send("hunter2\r")
	c.Expect(`got-7`)
	c.Send("exit 5\r")
	code, out := c.Wait()
	if code != 5 {
		t.Errorf("exit = %d; want 5", code)
	}
	f.waitEvent(state.EventSessionEnd, 1)
	cast := f.checkCast(f.lastSession())
	if cast.header.Width != 90 || cast.header.Height != 30 || cast.header.Term != "xterm" {
		t.Errorf("header %+v; want 90x30 xterm", cast.header)
	}
	var resized bool
	for _, e := range cast.codes("r") {
		resized = resized || e.Data == "132x43"
	}
	if !resized {
		t.Errorf("no r event 132x43 in %v", cast.codes("r"))
	}
	// What the client's terminal showed contains what was recorded, byte
	// for byte (ssh's raw mode passes output through untouched).
	if !strings.Contains(out, string(cast.output)) {
		t.Errorf("recorded output is not what the client received:\nrecorded %q\nreceived %q", cast.output, out)
	}
	if strings.Contains(string(cast.input), "hunter2") {
		t.Errorf("the password was recorded in clear: %q", cast.input)
	}
	if !strings.Contains(string(cast.input), "*******") {
		t.Errorf("input %q; want the password masked", cast.input)
	}
	if !strings.Contains(string(cast.input), "stty size") {
		t.Errorf("input %q; want ordinary typing recorded", cast.input)
	}
}
