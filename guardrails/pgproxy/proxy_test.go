package pgproxy

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/posternhq/postern/guardrails/mask"
	"github.com/posternhq/postern/internal/pgtest"
	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/state"
)

func TestMain(m *testing.M) { os.Exit(pgtest.RunMain(m)) }

const testCard = "4111 1111 1111 1111"

// fixture is a real PostgreSQL behind a Proxy listening on 127.0.0.1.
type fixture struct {
	t      *testing.T
	pg     *pgtest.Server
	db     string
	addr   string
	recDir string
	proxy  *Proxy

	mu     sync.Mutex
	events []state.Event
}

func (f *fixture) audit(_ context.Context, e state.Event) {
	f.mu.Lock()
	f.events = append(f.events, e)
	f.mu.Unlock()
}

func (f *fixture) queries() []state.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []state.Event
	for _, e := range f.events {
		if e.Type == EventQuery {
			out = append(out, e)
		}
	}
	return out
}

func psqlBin(t testing.TB) string {
	for _, p := range []string{"/usr/lib/postgresql/15/bin/psql"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("psql")
	if err != nil {
		testutil.Missing(t, "psql is not installed")
	}
	return p
}

func newFixture(t *testing.T, s Session, approver StatementApprover) *fixture {
	f := &fixture{t: t, pg: pgtest.Shared(t), recDir: t.TempDir()}
	f.db = f.pg.NewDB(t)
	f.pg.ExecDB(t, f.db, "CREATE TABLE cards (id int, holder text, card_number text); "+
		"INSERT INTO cards VALUES (1, 'alice', '"+testCard+"'), (2, 'bob', '5500 0000 0000 0004'); "+
		"CREATE TABLE scratch (v int); INSERT INTO scratch VALUES (1),(2); "+
		"GRANT ALL ON cards, scratch TO "+pgtest.PasswordUser)
	store, err := recorder.NewFileStore(f.recDir)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := recorder.New(recorder.Options{Store: store, SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	f.proxy, err = New(Options{Recorder: rec, Store: store, Audit: f.audit, Approver: approver})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			cc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer cc.Close()
				up, err := net.Dial("tcp", f.pg.Addr())
				if err != nil {
					t.Errorf("dial postgres: %v", err)
					return
				}
				defer up.Close()
				if err := f.proxy.Serve(context.Background(), cc, up, s); err != nil {
					t.Logf("serve: %v", err)
				}
			})
		}
	})
	return f
}

// psql runs a script through the proxy as the given user with no password.
func (f *fixture) psql(user, script string) (string, string) {
	f.t.Helper()
	host, port, _ := net.SplitHostPort(f.addr)
	cmd := exec.Command(psqlBin(f.t), "-X", "-A", "-t", "-h", host, "-p", port, "-U", user, "-d", f.db, "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	cmd.Env = append(os.Environ(), "PGPASSWORD=", "PGCONNECT_TIMEOUT=10", "PGSSLMODE=prefer")
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	_ = cmd.Run()
	return out.String(), errb.String()
}

// cast returns the recorded output of the only sql recording and the query log.
func (f *fixture) cast() (string, string, map[string]any) {
	f.t.Helper()
	var castPath string
	deadline := time.Now().Add(10 * time.Second)
	for castPath == "" {
		_ = filepath.WalkDir(f.recDir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && strings.HasSuffix(p, ".queries.jsonl") {
				castPath = strings.TrimSuffix(p, ".queries.jsonl") + ".cast"
			}
			return nil
		})
		if castPath == "" && time.Now().After(deadline) {
			f.t.Fatal("no recording")
		}
		time.Sleep(5 * time.Millisecond)
	}
	data, err := os.ReadFile(castPath)
	if err != nil {
		f.t.Fatal(err)
	}
	d := recorder.NewDecoder(strings.NewReader(string(data)))
	if _, err := d.Header(); err != nil {
		f.t.Fatal(err)
	}
	var out strings.Builder
	var markers []string
	for {
		e, err := d.Next()
		if err != nil {
			break
		}
		if e.Code == "o" {
			out.WriteString(e.Data)
		}
		if e.Code == "m" {
			markers = append(markers, e.Data)
		}
	}
	qlog, _ := os.ReadFile(strings.TrimSuffix(castPath, ".cast") + ".queries.jsonl")
	meta := map[string]any{"markers": strings.Join(markers, ",")}
	if mb, err := os.ReadFile(strings.TrimSuffix(castPath, ".cast") + ".json"); err == nil {
		meta["json"] = string(mb)
	}
	return out.String(), string(qlog), meta
}

func TestProxyAuditGateMask(t *testing.T) {
	deny, _ := ParseRule("sql:drop", ActionDeny)
	trunc, _ := ParseRule(`(?i)^truncate\b`, ActionDeny)
	rec, _ := mask.New([]mask.Rule{{Name: "card", Columns: []string{"card*"}}, {Detector: mask.DetectorEmail}})
	stream, _ := mask.New([]mask.Rule{{Name: "card", Columns: []string{"card*"}}})
	f := newFixture(t, Session{
		Identity: "alice", Target: "pg", Record: "required", Rules: []Rule{deny, trunc},
		Recording: rec, Stream: stream,
		DatabaseUser: pgtest.PasswordUser, DatabasePassword: pgtest.Password,
	}, nil)
	out, errOut := f.psql("whoever", `
SELECT current_user;
SELECT holder, card_number FROM cards ORDER BY id;
DROP TABLE scratch;
SELECT count(*) FROM scratch;
TRUNCATE scratch;
SELECT 'mail bob@example.com';
`)
	if !strings.Contains(out, pgtest.PasswordUser+"\n") {
		t.Errorf("not authenticated upstream as the configured user: %q %q", out, errOut)
	}
	if strings.Contains(out, testCard) || !strings.Contains(out, "alice|[MASKED:card]") {
		t.Errorf("card numbers reached the client: %q", out)
	}
	if !strings.Contains(errOut, "statement denied by policy: DROP") || !strings.Contains(errOut, "denied by policy: TRUNCATE") {
		t.Errorf("stderr %q; want the denials", errOut)
	}
	if !strings.Contains(out, "\n2\n") {
		t.Errorf("the session did not stay usable after the denial (scratch must still have 2 rows): %q", out)
	}
	if got := f.pg.ExecDB(t, f.db, "SELECT count(*) FROM scratch"); got != "2" {
		t.Errorf("scratch has %s rows; the DROP or TRUNCATE ran", got)
	}
	transcript, qlog, meta := f.cast()
	if strings.Contains(transcript, testCard) || !strings.Contains(transcript, "alice | [MASKED:card]") {
		t.Errorf("transcript %q", transcript)
	}
	if !strings.Contains(transcript, "=> DROP TABLE scratch;") || !strings.Contains(transcript, "ERROR:  postern: statement denied by policy: DROP") {
		t.Errorf("transcript lacks the denial: %q", transcript)
	}
	if !strings.Contains(transcript, "[MASKED:email]") {
		t.Errorf("recording masker not applied to values: %q", transcript)
	}
	if !strings.Contains(meta["markers"].(string), "masking applied") || !strings.Contains(meta["json"].(string), `"masked": true`) {
		t.Errorf("markers %v", meta)
	}
	if n := strings.Count(qlog, "\n"); n != 6 {
		t.Errorf("query log has %d lines; want 6:\n%s", n, qlog)
	}
	qs := f.queries()
	var denied, withRows int
	for _, e := range qs {
		if e.Details["outcome"] == "denied" {
			denied++
		}
		if e.Details["rows"] == int64(2) {
			withRows++
		}
	}
	if len(qs) != 6 || denied != 2 || withRows < 1 {
		t.Errorf("audit: %d queries, %d denied, %d with 2 rows: %v", len(qs), denied, withRows, qs)
	}
}

type approverFunc func(context.Context, StatementRequest) error

func (f approverFunc) ApproveStatement(ctx context.Context, r StatementRequest) error {
	return f(ctx, r)
}

// TestProxyExtendedAndApproval uses pgx (extended protocol): parameters are
// audited with their types; an approve rule holds a statement until the
// approver answers.
func TestProxyExtendedAndApproval(t *testing.T) {
	approve, _ := ParseRule("sql:delete-without-where", ActionApprove)
	deny, _ := ParseRule("sql:alter", ActionDeny)
	stream, _ := mask.New([]mask.Rule{{Name: "card", Columns: []string{"card_number"}}})
	held := make(chan StatementRequest, 1)
	var verdict error
	f := newFixture(t, Session{Identity: "agent", Target: "pg", Record: "optional", Rules: []Rule{approve, deny}, Stream: stream},
		approverFunc(func(ctx context.Context, r StatementRequest) error {
			held <- r
			return verdict
		}))
	host, port, _ := net.SplitHostPort(f.addr)
	ctx := context.Background()
	cfg, err := pgx.ParseConfig("host=" + host + " port=" + port + " user=postgres dbname=" + f.db + " sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var holder, card string
	if err := conn.QueryRow(ctx, "SELECT holder, card_number FROM cards WHERE id = $1", 1).Scan(&holder, &card); err != nil {
		t.Fatal(err)
	}
	if card != "[MASKED:card]" || holder != "alice" {
		t.Errorf("got %q %q", holder, card)
	}
	_, err = conn.Exec(ctx, "ALTER TABLE scratch ADD COLUMN w int")
	if err == nil || !strings.Contains(err.Error(), "denied by policy: ALTER") {
		t.Errorf("ALTER: %v", err)
	}
	verdict = errors.New("rejected by bob")
	_, err = conn.Exec(ctx, "DELETE FROM scratch")
	if err == nil || !strings.Contains(err.Error(), "rejected by bob") {
		t.Errorf("DELETE without WHERE: %v", err)
	}
	if r := <-held; r.Statement != "DELETE FROM scratch" || r.Identity != "agent" {
		t.Errorf("approval request %+v", r)
	}
	verdict = nil
	tag, err := conn.Exec(ctx, "DELETE FROM scratch")
	if err != nil || tag.RowsAffected() != 2 {
		t.Errorf("approved DELETE: %v %v", tag, err)
	}
	<-held
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM cards WHERE id > $1", 0).Scan(&n); err != nil || n != 2 {
		t.Errorf("session unusable after denials: %d %v", n, err)
	}
	conn.Close(ctx)
	var sawParams bool
	for _, e := range f.queries() {
		if p, ok := e.Details["params"].([]string); ok && len(p) == 1 && (p[0] == "int4" || p[0] == "int8") {
			sawParams = true
		}
	}
	if !sawParams {
		t.Errorf("no audited parameter types: %v", f.queries())
	}
}

// TestProxyAuthentication relays the client's own SCRAM exchange when no
// credential is configured, and reports a wrong configured credential.
func TestProxyAuthentication(t *testing.T) {
	f := newFixture(t, Session{Identity: "alice", Target: "pg", Record: "off"}, nil)
	host, port, _ := net.SplitHostPort(f.addr)
	run := func(password string) (string, error) {
		cmd := exec.Command(psqlBin(t), "-X", "-A", "-t", "-h", host, "-p", port, "-U", pgtest.PasswordUser, "-d", f.db, "-c", "select current_user")
		cmd.Env = append(os.Environ(), "PGPASSWORD="+password, "PGSSLMODE=disable")
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if out, err := run(pgtest.Password); err != nil || out != pgtest.PasswordUser {
		t.Errorf("relayed SCRAM: %q %v", out, err)
	}
	if out, err := run("wrong"); err == nil || !strings.Contains(out, "password authentication failed") {
		t.Errorf("relayed SCRAM with a wrong password: %q %v", out, err)
	}

	bad := newFixture(t, Session{Identity: "alice", Target: "pg", Record: "off",
		DatabaseUser: pgtest.PasswordUser, DatabasePassword: "not-it"}, nil)
	out, errOut := bad.psql("x", "select 1;")
	if out != "" || !strings.Contains(errOut, "password authentication failed") {
		t.Errorf("wrong configured credential: %q %q", out, errOut)
	}
}

func TestSplitAndClassify(t *testing.T) {
	got := splitStatements("select 'a;b'; -- c;\n drop table x; $$ ; $$; /* ; */ delete from t")
	if len(got) != 4 {
		t.Fatalf("split %q", got)
	}
	for _, c := range []struct {
		sql  string
		want []string
	}{
		{"DROP TABLE x", []string{ClassDrop}},
		{"  /* hi */ truncate t", []string{ClassTruncate}},
		{"delete from t", []string{ClassDeleteNoWhere}},
		{"DELETE FROM t WHERE id = 1", nil},
		{"update t set a = 1", []string{ClassUpdateNoWhere}},
		{"alter table t add column c int", []string{ClassAlter}},
		{"select 1", nil},
	} {
		if got := classes(normalize(c.sql)); strings.Join(got, ",") != strings.Join(c.want, ",") {
			t.Errorf("classes(%q) = %v; want %v", c.sql, got, c.want)
		}
	}
}
