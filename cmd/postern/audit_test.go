package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/state"
)

// recordOne records and seals one session into the dev configuration under
// dir, as the server would: seals signed with the audit key.
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
	key, err := certs.LoadAuditKey(cfg.CA.Audit, cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := recorder.New(recorder.Options{Store: store, State: st, SpoolDir: filepath.Join(cfg.DataDir, "spool"), Signer: key})
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

// runCLI runs the postern command line in-process with --dev --data-dir
// dir and the given arguments.
func runCLI(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(context.Background(), append([]string{"--dev", "--data-dir", dir}, args...), &out, &out)
	return out.String(), err
}

func auditVerify(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	return runCLI(t, dir, append([]string{"audit", "verify"}, args...)...)
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
	ee := usererr.As(err)
	if ee == nil || ee.Exit != exitTampered || !strings.Contains(out, "session "+sealed.ID+": recording "+sealed.Object+" differs") {
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
	if !strings.Contains(out, "seq 2 (session.end): the stored hash does not match") {
		t.Errorf("verify after row tamper = %q; want seq 2 named", out)
	}
}

// TestAuditVerifyMissingStore: verify pointed at a data directory that does
// not exist says the store is missing, exits 2 and creates nothing.
func TestAuditVerifyMissingStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nowhere")
	out, err := auditVerify(t, dir)
	ee := usererr.As(err)
	if ee == nil || ee.Exit != exitCannotVerify || !strings.Contains(ee.Msg, "the state store is missing") {
		t.Fatalf("verify of a missing data dir = %q, %v; want exit 2 saying the store is missing", out, err)
	}
	if strings.Contains(out, "intact") {
		t.Errorf("verify of a missing data dir printed %q", out)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("verify created %s (stat: %v)", dir, err)
	}
}

// TestAuditExportOffline: a bundle exported from the CLI verifies offline
// with the key from `ca export --audit` after the whole data directory is
// deleted; a bundle whose cast was edited does not.
func TestAuditExportOffline(t *testing.T) {
	dir := t.TempDir()
	cfg, err := config.Dev(dir)
	if err != nil {
		t.Fatal(err)
	}
	sealed := recordOne(t, cfg)
	keyOut, err := runCLI(t, dir, "ca", "export", "--audit")
	if err != nil || !strings.HasPrefix(keyOut, "ssh-ed25519 ") {
		t.Fatalf("ca export --audit = %q, %v", keyOut, err)
	}
	keyFile := filepath.Join(t.TempDir(), "audit.pub")
	if err := os.WriteFile(keyFile, []byte(keyOut), 0o644); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(t.TempDir(), "bundle")
	out, err := runCLI(t, dir, "audit", "export", "--since", "1h", "-o", bundle)
	if err != nil || !strings.Contains(out, "events 1 to 3 (3), 1 checkpoints, 1 recordings") {
		t.Fatalf("audit export = %q, %v", out, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	out, err = runCLI(t, t.TempDir(), "audit", "verify", "--offline", bundle, "--audit-key", keyFile)
	if err != nil || !strings.Contains(out, "audit log intact: 3 events, 1 sealed recordings") {
		t.Fatalf("offline verify = %q, %v", out, err)
	}
	out, _ = runCLI(t, t.TempDir(), "audit", "verify", "--offline", bundle)
	if !strings.Contains(out, "warning: checked with the audit key inside the bundle") {
		t.Errorf("offline verify without --audit-key = %q; want a warning", out)
	}
	if err := os.WriteFile(filepath.Join(bundle, "objects", filepath.FromSlash(sealed.Object)), []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = runCLI(t, t.TempDir(), "audit", "verify", "--offline", bundle, "--audit-key", keyFile)
	ee := usererr.As(err)
	if ee == nil || ee.Exit != exitTampered || !strings.Contains(out, "session "+sealed.ID+": recording") {
		t.Fatalf("offline verify of an edited bundle = %q, %v; want exit 1 naming the session", out, err)
	}
}

// TestAuditLs lists and filters events from the state store, as a table
// and as JSON.
func TestAuditLs(t *testing.T) {
	dir := t.TempDir()
	cfg, err := config.Dev(dir)
	if err != nil {
		t.Fatal(err)
	}
	sealed := recordOne(t, cfg)
	out, err := runCLI(t, dir, "audit", "ls")
	if err != nil || !strings.Contains(out, "SEQ") || strings.Count(out, "\n") != 4 || !strings.Contains(out, "session.sealed") {
		t.Fatalf("audit ls = %q, %v", out, err)
	}
	out, err = runCLI(t, dir, "audit", "ls", "--type", "session.s*", "--actor", "alice", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for line := range strings.Lines(out) {
		var e state.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if e.Session != sealed.ID {
			t.Errorf("event %d of session %q; want %s", e.Seq, e.Session, sealed.ID)
		}
		types = append(types, e.Type)
	}
	if strings.Join(types, ",") != "session.start,session.sealed" {
		t.Errorf("types %v; want session.start then session.sealed", types)
	}
	out, err = runCLI(t, dir, "audit", "ls", "--actor", "nobody")
	if err != nil || !strings.Contains(out, "no audit events match") {
		t.Errorf("audit ls --actor nobody = %q, %v", out, err)
	}
	if _, err := runCLI(t, dir, "audit", "ls", "--since", "yesterday"); err == nil || !strings.Contains(err.Error(), "--since") {
		t.Errorf("audit ls --since yesterday: %v; want an error naming --since", err)
	}
}
