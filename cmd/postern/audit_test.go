package main

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/state"
)

// recordOne records and seals one session into the dev configuration under dir.
func recordOne(t *testing.T, cfg *config.Config) *recorder.Sealed {
	t.Helper()
	ctx := context.Background()
	st, err := state.Open(ctx, cfg.State, state.Options{AuditFile: cfg.Audit.File})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	store, err := recorder.OpenStore(ctx, cfg.Storage)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := recorder.New(recorder.Options{Store: store, State: st, SpoolDir: filepath.Join(cfg.DataDir, "spool")})
	if err != nil {
		t.Fatal(err)
	}
	s, err := rec.Start(ctx, recorder.Meta{Identity: "alice", Target: "demo", Kind: state.KindShell})
	if err != nil {
		t.Fatal(err)
	}
	s.Output([]byte("hello\r\n"))
	sealed, err := s.Finish(ctx, recorder.Result{})
	if err != nil {
		t.Fatal(err)
	}
	return sealed
}

func auditVerify(t *testing.T, dir string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	g := &globalFlags{Dev: true, DataDir: dir, stdout: &out, stderr: &out}
	c := newAuditCmd(g)
	c.SetOut(&out)
	c.SetErr(&out)
	c.SetArgs([]string{"verify"})
	err := c.ExecuteContext(context.Background())
	return out.String(), err
}

func TestAuditVerify(t *testing.T) {
	dir := t.TempDir()
	cfg, err := config.Dev(dir)
	if err != nil {
		t.Fatal(err)
	}
	sealed := recordOne(t, cfg)
	recordOne(t, cfg)

	out, err := auditVerify(t, dir)
	if err != nil || !strings.Contains(out, "audit log intact: 6 events, 2 sealed recordings") {
		t.Fatalf("verify = %q, %v; want intact", out, err)
	}

	// Tamper with a stored cast.
	p := filepath.Join(strings.TrimPrefix(cfg.Storage, "file://"), filepath.FromSlash(sealed.Object))
	if err := os.WriteFile(p, []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = auditVerify(t, dir)
	var ee exitError
	if err == nil || !asExit(err, &ee) || ee.code != 1 || !strings.Contains(out, "recording "+sealed.ID) {
		t.Fatalf("verify after cast tamper = %q, %v; want exit 1 naming %s", out, err, sealed.ID)
	}

	// Tamper with an audit row.
	db, err := sql.Open("sqlite", strings.TrimPrefix(cfg.State, "sqlite://"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE audit_events SET actor = 'mallory' WHERE seq = 2`); err != nil {
		t.Fatal(err)
	}
	out, _ = auditVerify(t, dir)
	if !strings.Contains(out, "audit log broken at seq 2") {
		t.Errorf("verify after row tamper = %q; want seq 2 named", out)
	}
}

func asExit(err error, ee *exitError) bool {
	e, ok := err.(exitError)
	if ok {
		*ee = e
	}
	return ok
}
