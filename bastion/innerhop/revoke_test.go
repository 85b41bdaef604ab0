package innerhop

import (
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/state"
)

// exitEnded is the documented exit status of a session postern ends
// (docs/exit-codes.md).
const exitEnded = 255

// TestRevokedCertificateEndsSessionsWithNotice: when the outer connection's
// certificate is revoked, each open session through stock ssh — an exec
// and an interactive shell on an ssh target, an exec on a command target,
// recorded or not — prints "postern: certificate
// revoked" on stderr and exits with 255, and the recording and audit log
// say why it ended.
func TestRevokedCertificateEndsSessionsWithNotice(t *testing.T) {
	for _, record := range []string{"required", "off"} {
		for _, kind := range []string{"exec", "shell", "command target"} {
			t.Run(kind+"/record "+record, func(t *testing.T) {
				rev := &revocationFlag{}
				f := newHopFixture(t, fixtureOpts{record: record, revoked: rev})
				if kind == "command target" {
					f.setTargets(config.Target{Name: "web-1", Kind: config.KindCommand, Command: []string{"/bin/sh", "-c"}})
				} else {
					f.setTargets(sshTarget("web-1", startSSHD(t, f.auth)))
				}
				var code int
				var stderr string
				if kind != "shell" {
					res := f.sshInBackground("web-1", "echo started; sleep 60")
					f.waitEvent(state.EventSessionStart, 1)
					rev.revoked.Store(true)
					select {
					case r := <-res:
						if r.err != nil {
							t.Fatal(r.err)
						}
						code, stderr = r.r.Code, string(r.r.Stderr)
					case <-time.After(30 * time.Second):
						t.Fatal("the session of a revoked certificate stays open")
					}
				} else {
					c := startPTYClient(t, 80, 24, "-F", f.sshCfg, "-tt", "web-1")
					c.Send("echo MARK-$((40+2))\r")
					c.Expect(`MARK-42`)
					rev.revoked.Store(true)
					var out string
					code, out = c.Wait()
					stderr = out // a pty merges stdout and stderr
				}
				if code != exitEnded || !strings.Contains(stderr, "postern: certificate revoked") {
					t.Errorf("exit %d, stderr %q; want %d and \"postern: certificate revoked\"", code, stderr, exitEnded)
				}
				end := f.waitEvent(state.EventSessionEnd, 1)[0]
				if end.Details["ended_by"] != "revoked" || end.Details["exit_status"] != exitEnded {
					t.Errorf("session.end %v; want ended_by revoked, exit_status %d", end.Details, exitEnded)
				}
				if record == "required" {
					if ms := f.checkCast(end.Session).markers(); !strings.Contains(ms, "exit 255") {
						t.Errorf("recording markers %q; want exit 255", ms)
					}
				}
			})
		}
	}
}
