package deploy_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/pgtest"
	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/state"
)

// TestReplicasPostgresRestart: the shared PostgreSQL crashes while a
// recorded session runs. New logins are refused while it is down (the
// revocation check fails closed), the open session keeps working (its
// recording keeps spooling), and once PostgreSQL is back new logins work
// again and the session's recording is sealed with the audit chain intact.
func TestReplicasPostgresRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and a postern replica")
	}
	testutil.PosternBinary(t)
	srv := pgtest.Start(t) // its own server: this test kills it
	c := &cluster{stateURL: srv.PasswordDSN(srv.NewDB(t)), storage: t.TempDir(), caDir: t.TempDir()}
	auth, err := certs.LoadAuthority(config.CAs{}, c.caDir)
	if err != nil {
		t.Fatal(err)
	}
	c.auth = auth
	a := c.start(t, "A")
	alice, _ := c.user(t, "alice@example.com")
	cs := a.dialCat(t, alice)
	if err := cs.echo("before the crash"); err != nil {
		t.Fatal(err)
	}

	srv.Kill()
	bob, _ := c.user(t, "bob@example.com")
	if err := a.canLogIn(bob); err == nil {
		t.Fatal("a login succeeded while the state store was down; want it refused (fail closed)")
	}
	if err := cs.echo("while postgres is down"); err != nil {
		t.Fatalf("the open session broke while PostgreSQL was down: %v", err)
	}

	srv.Restart(t)
	deadline := time.Now().Add(30 * time.Second)
	for a.canLogIn(bob) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("logins did not recover after PostgreSQL restarted; A's log:\n%s", a.proc.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := cs.echo("after the restart"); err != nil {
		t.Fatal(err)
	}
	// End the session cleanly: cat exits at end of input.
	if err := cs.stdin.(io.Closer).Close(); err != nil {
		t.Fatal(err)
	}
	if err := cs.sess.Wait(); err != nil {
		t.Fatalf("session end: %v", err)
	}
	cs.close()

	st := openState(t, c)
	ctx := context.Background()
	var row state.Session
	for {
		rows, err := st.ListSessions(ctx, state.SessionFilter{User: "alice@example.com"})
		if err == nil && len(rows) == 1 && rows[0].SHA256 != "" {
			row = rows[0]
			break
		}
		if time.Now().After(deadline.Add(30 * time.Second)) {
			t.Fatalf("alice's session was not sealed: %v %v; A's log:\n%s", rows, err, a.proc.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if row.Status != state.StatusFinished {
		t.Errorf("session status %q; want %q", row.Status, state.StatusFinished)
	}
	rep, err := st.Verify(ctx)
	if err != nil || !rep.OK() {
		t.Errorf("audit chain after the crash: %+v, %v", rep, err)
	}
	if !fileContains(c.storage, "while postgres is down") {
		t.Errorf("the recording lacks what was typed while PostgreSQL was down")
	}
}
