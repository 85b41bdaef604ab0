package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/internal/testutil"
)

// TestCIWaitsForAptLock: .ci/run's wait_for_apt returns only after the
// process holding an apt lock file has let it go, saying what it waits for
// meanwhile; with no holder it returns at once; a holder that outlasts
// APT_WAIT_SECONDS makes it fail with a message.
func TestCIWaitsForAptLock(t *testing.T) {
	testutil.Need(t, "bash", "sleep")
	script := filepath.Join(root(t), ".ci", "aptwait.sh")
	lock := filepath.Join(t.TempDir(), "lock-frontend")
	if err := os.WriteFile(lock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"APT_LOCK_FILES=" + lock}
	wait := func(extra ...string) *testutil.Proc {
		return testutil.Start(t, "bash", []string{"-c", `. "$0"; wait_for_apt && echo free`, script},
			testutil.Env(append(env, extra...)...))
	}

	// Nobody holds the lock: free at once.
	p := wait()
	p.WaitLine(t, regexp.MustCompile(`^free$`), 30*time.Second)

	// A holder (as dpkg holds its lock file open while it runs).
	holder := testutil.Start(t, "bash", []string{"-c", `exec 9<"$0"; echo holding; exec sleep 600`, lock})
	holder.WaitLine(t, regexp.MustCompile(`holding`), 10*time.Second)
	p = wait()
	p.WaitLine(t, regexp.MustCompile(`waiting for another package manager to finish \(pid \d+`), 30*time.Second)
	select {
	case <-p.Done():
		t.Fatalf("wait_for_apt returned while the lock was held:\n%s", p.Output())
	default:
	}
	holder.Stop()
	p.WaitLine(t, regexp.MustCompile(`^free$`), 30*time.Second)
	if !strings.Contains(p.Output(), "the other package manager finished") {
		t.Errorf("no message when the wait ended:\n%s", p.Output())
	}

	// A holder that outlasts the bound: wait_for_apt fails and says so.
	holder = testutil.Start(t, "bash", []string{"-c", `exec 9<"$0"; echo holding; exec sleep 600`, lock})
	holder.WaitLine(t, regexp.MustCompile(`holding`), 10*time.Second)
	cmd := exec.Command("bash", "-c", `. "$0"; wait_for_apt`, script)
	cmd.Env = append(os.Environ(), append(env, "APT_WAIT_SECONDS=1")...)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "still holds the apt lock after 1s") {
		t.Errorf("wait_for_apt with a holder beyond the bound: %v\n%s", err, out)
	}
	holder.Stop()
}
