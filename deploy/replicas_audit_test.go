package deploy_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver, to tamper with the shared store

	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/state"
)

// auditVerify runs `postern audit verify` with the given arguments and
// returns its output and exit status.
func auditVerify(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(testutil.PosternBinary(t), append([]string{"audit", "verify"}, args...)...).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("postern audit verify: %v\n%s", err, out)
	return "", -1
}

// waitSealed waits until the session of user is sealed in the shared index.
func waitSealed(t *testing.T, st *state.Store, user string) state.Session {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		rows, err := st.ListSessions(context.Background(), state.SessionFilter{User: user})
		if err == nil && len(rows) == 1 && rows[0].SealSeq > 0 {
			return rows[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("the session of %s is not sealed 30s after it ended: %+v, %v", user, rows, err)
		}
		time.Sleep(20 * time.Millisecond) // polling the shared index; no event to wait on
	}
}

// TestReplicasAuditVerify: two replicas share PostgreSQL and a recording
// store, each with its own audit file holding only its own events. `postern
// audit verify` passes on each replica (its file checked as chain segments
// against the shared chain) and cluster-wide (every replica's file); the
// replicas' checkpoints, signed with the shared audit key, are anchored in
// the recording store. When the tail of the shared chain is cut in
// PostgreSQL, the other replica's file tells.
func TestReplicasAuditVerify(t *testing.T) {
	c := newCluster(t)
	a, b := c.start(t, "A"), c.start(t, "B")
	st := openState(t, c)
	for i, r := range []*replica{a, b, a, b} {
		user := fmt.Sprintf("user%d@example.com", i)
		signer, _ := c.user(t, user)
		cs := r.dialCat(t, signer)
		if err := cs.echo("hello from " + r.name); err != nil {
			t.Fatal(err)
		}
		cs.stdin.(io.Closer).Close()
		if err := cs.sess.Wait(); err != nil {
			t.Fatalf("%s: session exit: %v", r.name, err)
		}
		cs.close()
		waitSealed(t, st, user)
	}
	// The checkpointers (1 s) cover the head and anchor it in the store.
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for {
		head, _, err := st.Head(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cps, err := st.Checkpoints(ctx, head-1, 1)
		if err == nil && len(cps) == 1 && cps[0].Anchored {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no anchored checkpoint of seq %d 30s after the last session", head)
		}
		time.Sleep(50 * time.Millisecond) // polling the shared store for the checkpointer's work
	}
	if !fileContains(filepath.Join(c.storage, "audit", "checkpoints"), `"record"`) {
		t.Error("no checkpoint anchored in the recording store")
	}

	aFile, bFile := filepath.Join(a.data, "audit.jsonl"), filepath.Join(b.data, "audit.jsonl")
	for _, args := range [][]string{
		{"--config", a.config},
		{"--config", b.config},
		{"--config", a.config, "--audit-file", bFile},
		{"--config", b.config, "--audit-file", aFile},
	} {
		out, code := auditVerify(t, args...)
		t.Logf("audit verify %v:\n%s", args, out)
		if code != 0 || !strings.Contains(out, "audit log intact") || !strings.Contains(out, "sealed recordings") {
			t.Fatalf("audit verify %v: exit %d\n%s", args, code, out)
		}
		if !strings.Contains(out, "segments") {
			t.Errorf("audit verify %v did not check an audit file:\n%s", args, out)
		}
	}

	// Cut the tail: B's last events vanish from the shared chain. A's own
	// view (its file) is intact; B's file has the events the chain lost.
	last, err := st.ListEvents(ctx, state.EventFilter{Limit: 1, Newest: true})
	if err != nil || len(last) != 1 {
		t.Fatal(err)
	}
	srvExec := func(q string) {
		t.Helper()
		if _, err := openRaw(t, c).ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	srvExec(fmt.Sprintf(`DELETE FROM audit_events WHERE seq > %d`, last[0].Seq-2))
	srvExec(`DELETE FROM audit_checkpoints`)
	out, code := auditVerify(t, "--config", a.config, "--audit-file", bFile)
	t.Logf("audit verify after the tail was cut:\n%s", out)
	if code != 1 || !strings.Contains(out, bFile) || !strings.Contains(out, "cut from its tail") {
		t.Fatalf("audit verify after the tail was cut: exit %d; want 1 naming %s\n%s", code, bFile, out)
	}
	if !strings.Contains(out, "events were cut from the tail") {
		t.Errorf("the anchored checkpoints did not tell the cut:\n%s", out)
	}
}

// openRaw opens the shared PostgreSQL database directly: the access an
// attacker with the database's credentials has.
func openRaw(t *testing.T, c *cluster) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", c.stateURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
