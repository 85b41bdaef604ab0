package innerhop

import (
	"strconv"
	"strings"
	"testing"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/pgtest"
	"github.com/posternhq/postern/state"
)

// TestCommandTargetPsql: a psql command target against a real PostgreSQL,
// reached with stock ssh -J, with the database password injected from the
// target's env (the agent never sees it). Both an exec query and an
// interactive psql session are recorded, and their casts hold the queries
// and their results.
func TestCommandTargetPsql(t *testing.T) {
	pg := pgtest.Start(t)
	pg.Exec(t, "CREATE TABLE orders (id int, item text); INSERT INTO orders VALUES (1, 'widget'), (2, 'gadget'); GRANT SELECT ON orders TO "+pgtest.PasswordUser)
	f := newHopFixture(t, fixtureOpts{record: "required"})
	base := []string{"psql", "-X", "-h", "127.0.0.1", "-p", strconv.Itoa(pg.Port()), "-U", pgtest.PasswordUser, "-d", "postgres"}
	f.setTargets(config.Target{Name: "psql-db", Kind: config.KindCommand,
		Command: base, Exec: append(append([]string{}, base...), "-A", "-t", "-c"),
		Env: map[string]string{"PGPASSWORD": pgtest.Password}})

	r := f.ssh(nil, "psql-db", "select item from orders order by id")
	if r.Code != 0 || string(r.Stdout) != "widget\ngadget\n" {
		t.Fatalf("exec query: exit %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	execEnd := f.waitEvent(state.EventSessionEnd, 1)[0]
	c := f.checkCast(execEnd.Session)
	if !strings.Contains(string(c.output), "widget\ngadget") || c.meta["command"] != "select item from orders order by id" {
		t.Errorf("exec recording: output %q, metadata %v", c.output, c.meta)
	}

	// Interactive psql in a pty: the typed query and its result table are in
	// the recording, as the user saw them.
	r = f.ssh([]byte("select count(*) as n_orders from orders;\n\\q\n"), "-tt", "psql-db")
	if r.Code != 0 || !strings.Contains(string(r.Stdout), "n_orders") {
		t.Fatalf("interactive psql: exit %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	shellEnd := f.waitEvent(state.EventSessionEnd, 2)[1]
	c = f.checkCast(shellEnd.Session)
	for _, want := range []string{"select count(*) as n_orders from orders;", "n_orders", "2"} {
		if !strings.Contains(string(c.output), want) {
			t.Errorf("interactive recording lacks %q: %q", want, c.output)
		}
	}
	if strings.Contains(f.logs.String(), pgtest.Password) {
		t.Errorf("logs leak the database password")
	}
}
