package pgtest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/internal/testutil"
)

func TestMain(m *testing.M) { os.Exit(RunMain(m)) }

func TestSelectOne(t *testing.T) {
	s := Start(t)
	testutil.WaitPort(t, s.Addr(), 5*time.Second)
	if got := s.Exec(t, "select 1"); got != "1" {
		t.Fatalf("select 1: got %q; want %q", got, "1")
	}
}

func TestPasswordUser(t *testing.T) {
	s := Shared(t)
	psql := binDir() + "/psql"
	run := func(dsn string) (string, error) {
		cmd := exec.Command(psql, "-X", "-A", "-t", "-c", "select current_user", dsn)
		cmd.Env = append(os.Environ(), "PGPASSWORD=") // no ambient password
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	got, err := run(s.PasswordDSN("postern"))
	if err != nil || got != PasswordUser {
		t.Fatalf("login with password: got %q, %v; want %q", got, err, PasswordUser)
	}
	bad := strings.Replace(s.PasswordDSN("postern"), Password, "wrong", 1)
	out, err := run(bad)
	if err == nil || !strings.Contains(out, "password authentication failed") {
		t.Fatalf("login with a wrong password: got %q, %v; want password authentication failed", out, err)
	}
}

func TestSharedNewDB(t *testing.T) {
	s := Shared(t)
	if s2 := Shared(t); s2 != s {
		t.Fatal("Shared returned two servers")
	}
	for _, name := range []string{"a", "b"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			db := s.NewDB(t)
			s.ExecDB(t, db, "create table x (v text); insert into x values ('"+name+"')")
			if got := s.ExecDB(t, db, "select v from x"); got != name {
				t.Fatalf("got %q; want %q", got, name)
			}
		})
	}
}

func TestExecError(t *testing.T) {
	s := Shared(t)
	_, err := s.Psql("postgres", "select * from no_such_table")
	if err == nil || !strings.Contains(err.Error(), "no_such_table") {
		t.Fatalf("got %v; want an error naming the table", err)
	}
}

func TestKill(t *testing.T) {
	s := Start(t)
	s.Kill()
	if s.Running() {
		t.Fatal("Running() after Kill; want false")
	}
	if _, err := s.Psql("postgres", "select 1"); err == nil {
		t.Fatal("query after Kill succeeded")
	}
}
