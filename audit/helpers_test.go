package audit_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver, to tamper with a PostgreSQL store

	"github.com/posternhq/postern/audit"
	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/pgtest"
	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/state"
)

func TestMain(m *testing.M) { os.Exit(pgtest.RunMain(m)) }

// backends are the state stores every evidence test runs on.
var backends = []string{"sqlite", "postgres"}

// env is one postern's evidence: a state store of a backend, a file
// recording store, the audit key, a recorder that signs its seals, and a
// checkpointer anchored in the recording store.
type env struct {
	t       *testing.T
	backend string
	dir     string
	url     string
	st      *state.Store
	store   recorder.Store
	key     *certs.AuditKey
	keys    *audit.Keyring
	rec     *recorder.Recorder
	cp      *audit.Checkpointer
	file    string // this replica's audit file
	db      *sql.DB
}

func newEnv(t *testing.T, backend string) *env {
	t.Helper()
	return newEnvStore(t, backend, nil)
}

// newEnvStore is newEnv with the recordings in store (a file store in the
// env's directory if nil).
func newEnvStore(t *testing.T, backend string, store recorder.Store) *env {
	t.Helper()
	e := &env{t: t, backend: backend, dir: t.TempDir(), store: store}
	switch backend {
	case "postgres":
		if testing.Short() {
			t.Skip("starts PostgreSQL")
		}
		srv := pgtest.Shared(t)
		e.url = srv.PasswordDSN(srv.NewDB(t))
	default:
		e.url = "sqlite://" + filepath.Join(e.dir, "state.db")
	}
	var err error
	if e.store == nil {
		if e.store, err = recorder.NewFileStore(filepath.Join(e.dir, "recordings")); err != nil {
			t.Fatal(err)
		}
	}
	e.file = filepath.Join(e.dir, "audit.jsonl")
	e.open()
	if e.key, err = certs.LoadAuditKey(config.CA{}, e.dir); err != nil {
		t.Fatal(err)
	}
	if e.keys, err = audit.NewKeyring(e.key.Trusted()); err != nil {
		t.Fatal(err)
	}
	e.startRecorder()
	return e
}

// open (re)opens the state store.
func (e *env) open() {
	e.t.Helper()
	st, err := state.Open(context.Background(), e.url, state.Options{AuditFile: e.file})
	if err != nil {
		e.t.Fatal(err)
	}
	e.st = st
	e.t.Cleanup(func() { st.Close() })
}

func (e *env) startRecorder() {
	e.t.Helper()
	rec, err := recorder.New(recorder.Options{Store: e.store, State: e.st, SpoolDir: filepath.Join(e.dir, "spool"),
		Signer: e.key, Replica: "r-test"})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { rec.Close() })
	e.rec = rec
	cp, err := audit.NewCheckpointer(audit.CheckpointerOptions{State: e.st, Signer: e.key, By: "r-test",
		Anchors: []audit.Anchor{&audit.StorageAnchor{Objects: e.store}}})
	if err != nil {
		e.t.Fatal(err)
	}
	e.cp = cp
}

// record records and seals one session of identity on target.
func (e *env) record(identity, target string) *recorder.Sealed {
	e.t.Helper()
	return e.recordKey(identity, "corp:"+identity, target)
}

// recordKey records and seals a session of identity with identity key key
// ("" records as postern did before sessions had keys).
func (e *env) recordKey(identity, key, target string) *recorder.Sealed {
	e.t.Helper()
	ctx := context.Background()
	s, err := e.rec.Start(ctx, recorder.Meta{Identity: identity, Issuer: "corp", IdentityKey: key, Role: "ops", Target: target,
		Login: "deploy", Kind: state.KindExec, Command: "uptime"})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := s.Output([]byte("up 3 days\r\n")); err != nil {
		e.t.Fatal(err)
	}
	zero := 0
	sealed, err := s.Finish(ctx, recorder.Result{ExitStatus: &zero})
	if err != nil {
		e.t.Fatal(err)
	}
	return sealed
}

// event appends a plain event.
func (e *env) event(typ, actor string) state.Event {
	e.t.Helper()
	ev, err := e.st.Append(context.Background(), state.Event{Type: typ, Actor: actor, Target: "web-1", Details: map[string]any{"n": 1}})
	if err != nil {
		e.t.Fatal(err)
	}
	return ev
}

// checkpoint takes a checkpoint of the head now.
func (e *env) checkpoint() audit.Checkpoint {
	e.t.Helper()
	cp, took, err := e.cp.Checkpoint(context.Background(), true)
	if err != nil || !took {
		e.t.Fatalf("checkpoint: took %v, %v", took, err)
	}
	return cp
}

// source is the live evidence.
func (e *env) source() *audit.StoreSource {
	return &audit.StoreSource{State: e.st, Objects: e.store, Anchor: &audit.StorageAnchor{Objects: e.store}}
}

// verify verifies the live evidence with this replica's audit file.
func (e *env) verify() *audit.Report {
	e.t.Helper()
	rep, err := audit.Verify(context.Background(), e.source(), audit.VerifyOptions{Keys: e.keys, Files: []audit.File{{Path: e.file}}})
	if err != nil {
		e.t.Fatalf("verify: %v", err)
	}
	return rep
}

// mustBeIntact fails the test with the report's problems.
func mustBeIntact(t *testing.T, rep *audit.Report) {
	t.Helper()
	if !rep.OK() {
		t.Fatalf("verify found problems in a healthy store:\n  %s", strings.Join(rep.Problems, "\n  "))
	}
}

// wantProblem fails unless one problem contains every part.
func wantProblem(t *testing.T, rep *audit.Report, parts ...string) {
	t.Helper()
	for _, p := range rep.Problems {
		ok := true
		for _, part := range parts {
			if !strings.Contains(p, part) {
				ok = false
				break
			}
		}
		if ok {
			return
		}
	}
	t.Errorf("no problem contains %q; got:\n  %s", parts, strings.Join(rep.Problems, "\n  "))
}

// sql is raw access to the state store's database: the attacker's.
func (e *env) sql() *sql.DB {
	e.t.Helper()
	if e.db != nil {
		return e.db
	}
	driver, dsn := "sqlite", strings.TrimPrefix(e.url, "sqlite://")
	if e.backend == "postgres" {
		driver, dsn = "pgx", e.url
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { db.Close() })
	e.db = db
	return db
}

// exec runs a statement with '?' placeholders on the store's database.
func (e *env) exec(q string, args ...any) {
	e.t.Helper()
	if e.backend == "postgres" {
		n := 0
		var b strings.Builder
		for _, c := range q {
			if c == '?' {
				n++
				fmt.Fprintf(&b, "$%d", n)
				continue
			}
			b.WriteRune(c)
		}
		q = b.String()
	}
	if _, err := e.sql().Exec(q, args...); err != nil {
		e.t.Fatalf("tamper: %s: %v", q, err)
	}
}

// storedTime is how the state store writes times.
func storedTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000Z07:00") }

// rewriteChain is the database attacker's full rewrite: every event goes
// through edit (which may change it, or drop it by returning false), and
// the chain is renumbered and re-hashed so that every link checks.
func (e *env) rewriteChain(edit func(*state.Event) bool) {
	e.t.Helper()
	evs, err := e.st.Events(context.Background(), 0, 1_000_000)
	if err != nil {
		e.t.Fatal(err)
	}
	e.exec(`DELETE FROM audit_events`)
	prev := state.GenesisPrev
	seq := int64(0)
	for _, ev := range evs {
		if !edit(&ev) {
			continue
		}
		seq++
		ev.Seq, ev.Prev = seq, prev
		if ev.Hash, err = state.Hash(ev); err != nil {
			e.t.Fatal(err)
		}
		details := ""
		if len(ev.Details) > 0 {
			b, _ := json.Marshal(ev.Details)
			details = string(b)
		}
		e.exec(`INSERT INTO audit_events (seq, time, type, actor, source, target, session, details, prev, hash)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, ev.Seq, storedTime(ev.Time), ev.Type, ev.Actor, ev.Source, ev.Target,
			ev.Session, details, ev.Prev, ev.Hash)
		prev = ev.Hash
	}
}

// objectPath is the file of a recording store object.
func (e *env) objectPath(key string) string {
	return filepath.Join(e.dir, "recordings", filepath.FromSlash(key))
}
