package server_test

import (
	"context"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/approval"
	"github.com/posternhq/postern/guardrails/pgproxy"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/pgtest"
	"github.com/posternhq/postern/internal/posterntest"
	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/lock"
	"github.com/posternhq/postern/state"
)

// pgEnv is a whole postern with a PostgreSQL target "pg" that alice reaches
// with ssh -L, and the local port of that forward.
type pgEnv struct {
	*gateEnv
	pg    *pgtest.Server
	local int
}

// newPGEnv starts PostgreSQL and a postern whose role for alice has rules
// and may forward to pg; masking applies cfg.Masking.
func newPGEnv(t *testing.T, rules []config.Rule, masking config.Masking) *pgEnv {
	t.Helper()
	return newPGEnvWith(t, rules, masking, nil)
}

// newPGEnvWith is newPGEnv with edit applied to the configuration first.
func newPGEnvWith(t *testing.T, rules []config.Rule, masking config.Masking, edit func(*config.Config)) *pgEnv {
	t.Helper()
	if _, err := os.Stat("/usr/bin/psql"); err != nil {
		testutil.Need(t, "psql")
	}
	pg := pgtest.Start(t)
	e := &gateEnv{slack: posterntest.NewSlack(t), login: testLogin(t), dir: t.TempDir()}
	e.cfg = &config.Config{
		PublicURL: "https://bastion.test",
		Identity:  config.Identity{Issuers: testIssuers},
		Targets:   []config.Target{{Name: "pg", Kind: config.KindTCP, Address: pg.Addr(), Protocol: "postgres"}},
		Roles: []config.Role{{
			Name:       "ops",
			Match:      config.RoleMatch{Users: []string{"alice"}},
			Targets:    []config.TargetSelector{{Name: "pg"}},
			Logins:     []string{e.login},
			Record:     "required",
			Rules:      rules,
			Forwarding: config.Forwarding{Local: true},
		}},
		Masking: masking,
		Approvals: config.Approvals{
			Slack:  e.slack.Config(map[string]string{"UCAROL": "corp:carol-sub"}),
			Groups: map[string][]string{"corp:carol-sub": {"sre"}},
		},
	}
	if edit != nil {
		edit(e.cfg)
	}
	e.svc = posterntest.Start(t, e.cfg)
	e.user = e.svc.User(alice, e.login)
	local := testutil.FreePort(t)
	fwd := testutil.Start(t, "ssh", []string{"-F", e.user.SSHConfig, "-N",
		"-L", "127.0.0.1:" + strconv.Itoa(local) + ":pg:" + strconv.Itoa(pg.Port()), "bastion"})
	if err := testutil.AwaitPort(net.JoinHostPort("127.0.0.1", strconv.Itoa(local)), 30*time.Second, fwd.Done()); err != nil {
		t.Fatalf("ssh -L never listened: %v; output %s", err, fwd.Output())
	}
	return &pgEnv{gateEnv: e, pg: pg, local: local}
}

// psql runs statements through the forward.
func (e *pgEnv) psql(t *testing.T, sql string) testutil.Result {
	t.Helper()
	r, err := testutil.Run(nil, []byte(sql), "psql", "-X", "-A", "-t", "-h", "127.0.0.1", "-p", strconv.Itoa(e.local),
		"-U", pgtest.Superuser, "-d", "postgres", "-f", "-")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestPostgresThroughBastion runs psql through ssh -L and a whole postern
// to a postgres target: statements are audited and recorded, a deny rule
// blocks DROP TABLE with the session still usable, and a card-number
// column arrives masked at the client and in the recording.
func TestPostgresThroughBastion(t *testing.T) {
	e := newPGEnv(t, []config.Rule{{Match: "sql:drop", Action: "deny", Approvals: 1}},
		config.Masking{Rules: []config.MaskRule{{Name: "card", Columns: []string{"card*"}}, {Detector: "aws_key"}}})
	e.pg.Exec(t, "CREATE TABLE payments (id int, card_number text, note text); "+
		"INSERT INTO payments VALUES (1, '4111 1111 1111 1111', 'ok'), (2, '5500 0000 0000 0004', 'key AKIAIOSFODNN7EXAMPLE')")
	out := e.psql(t, "SELECT id, card_number, note FROM payments ORDER BY id;\nDROP TABLE payments;\nSELECT count(*) FROM payments;\n")
	stdout, stderr := string(out.Stdout), string(out.Stderr)
	if strings.Contains(stdout, "4111") || !strings.Contains(stdout, "1|[MASKED:card]|ok") ||
		!strings.Contains(stdout, "[MASKED:aws_key]") {
		t.Errorf("client got %q", stdout)
	}
	if !strings.Contains(stderr, "statement denied by policy: DROP") || !strings.HasSuffix(strings.TrimSpace(stdout), "2") {
		t.Errorf("DROP not denied or session unusable: stdout %q stderr %q", stdout, stderr)
	}
	if got := e.pg.Exec(t, "SELECT count(*) FROM payments"); got != "2" {
		t.Fatalf("the table is gone")
	}
	ev := e.svc.WaitEvent(pgproxy.EventQuery, func(ev state.Event) bool { return ev.Details["outcome"] == "denied" })
	if ev.Details["statement"] != "DROP TABLE payments" {
		t.Errorf("denied statement audited as %q", ev.Details["statement"])
	}
	if n := len(e.svc.Events(pgproxy.EventQuery)); n != 3 {
		t.Errorf("%d sql.query events; want 3", n)
	}
	// The recording is sealed when the forward ends: the test's cleanup
	// ends ssh -L only later, so wait for the query log the recording
	// writes beside its cast.
	var cast string
	deadline := time.Now().Add(15 * time.Second)
	for cast == "" && time.Now().Before(deadline) {
		_ = filepath.WalkDir(e.svc.Recordings, func(p string, d fs.DirEntry, err error) error {
			if err == nil && strings.HasSuffix(p, ".queries.jsonl") {
				cast = strings.TrimSuffix(p, ".queries.jsonl") + ".cast"
			}
			return nil
		})
		time.Sleep(10 * time.Millisecond)
	}
	data, err := os.ReadFile(cast)
	if err != nil {
		t.Fatalf("no sql recording: %v", err)
	}
	if strings.Contains(string(data), "4111") || strings.Contains(string(data), "AKIAIOSFODNN7EXAMPLE") ||
		!strings.Contains(string(data), "[MASKED:card]") || !strings.Contains(string(data), "DROP TABLE payments") {
		t.Errorf("recording %s", data)
	}
}

// TestPostgresDropApprovedViaSlack runs psql through a whole postern to a
// real PostgreSQL: one DROP TABLE is held and approved by a signed Slack
// callback, another is denied there, and the session stays usable.
func TestPostgresDropApprovedViaSlack(t *testing.T) {
	e := newPGEnv(t, []config.Rule{{Match: "sql:drop", Action: "approve", Approvers: []string{"sre"}, Approvals: 1,
		Timeout: config.Duration(time.Minute)}}, config.Masking{})
	e.pg.Exec(t, "CREATE TABLE a (v int); CREATE TABLE b (v int)")
	done := make(chan testutil.Result, 1)
	go func() {
		r, err := testutil.Run(nil, []byte("DROP TABLE a;\nDROP TABLE b;\nSELECT count(*) FROM b;\n"), "psql", "-X", "-A", "-t",
			"-h", "127.0.0.1", "-p", strconv.Itoa(e.local), "-U", pgtest.Superuser, "-d", "postgres", "-f", "-")
		if err != nil {
			r.Stderr = []byte(err.Error())
		}
		done <- r
	}()
	e.slack.Click(e.svc, "UCAROL", approval.SlackActionApprove, e.slack.NextRequest())
	e.slack.Click(e.svc, "UCAROL", approval.SlackActionDeny, e.slack.NextRequest())
	r := waitResult(t, done)
	stdout, stderr := string(r.Stdout), string(r.Stderr)
	if !strings.Contains(stderr, "denied by an approver") || !strings.HasPrefix(stdout, "DROP TABLE\n") || !strings.HasSuffix(stdout, "\n0\n") {
		t.Errorf("stdout %q stderr %q", stdout, stderr)
	}
	if got := e.pg.Exec(t, "SELECT count(*) FROM pg_tables WHERE tablename IN ('a', 'b')"); got != "1" {
		t.Errorf("%s of the tables left; want b only", got)
	}
}

// TestPostgresSessionLockE2E: a moderator's Terminate (a session lock) ends
// the PostgreSQL session it names and no other, and psql prints the reason; a
// target lock ends the rest.
func TestPostgresSessionLockE2E(t *testing.T) {
	e := newPGEnvWith(t, nil, config.Masking{}, func(cfg *config.Config) {
		cfg.Roles = append(cfg.Roles,
			config.Role{Name: "mod", Match: config.RoleMatch{Users: []string{"mod"}}, Permissions: []string{"moderator"}},
			config.Role{Name: "sec", Match: config.RoleMatch{Users: []string{"sec"}}, Permissions: []string{"admin"}})
	})
	moderator, admin := e.svc.User(mod, e.login), e.svc.User(sec, e.login)
	sleep := func() <-chan testutil.Result {
		done := make(chan testutil.Result, 1)
		go func() {
			r, err := testutil.Run(nil, []byte("SELECT pg_sleep(120);\n"), "psql", "-X", "-A", "-t", "-h", "127.0.0.1",
				"-p", strconv.Itoa(e.local), "-U", pgtest.Superuser, "-d", "postgres", "-f", "-")
			if err != nil {
				r.Code, r.Stderr = -1, []byte(err.Error())
			}
			done <- r
		}()
		return done
	}
	first, second := sleep(), sleep()
	var running []state.Session
	deadline := time.Now().Add(30 * time.Second)
	for len(running) < 2 {
		var err error
		if running, err = e.svc.State.ListSessions(context.Background(), state.SessionFilter{Target: "pg", Status: state.StatusRunning}); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d PostgreSQL sessions running after 30s; want 2", len(running))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Which psql is which session is not known; end one and see which
	// psql ends.
	lockVia(t, moderator, lock.CreateBody{Kind: "session", Name: running[0].ID, Reason: "wrong database"})
	var other <-chan testutil.Result
	select {
	case r := <-first:
		other = second
		terminated(t, r, "postern: session terminated: wrong database")
	case r := <-second:
		other = first
		terminated(t, r, "postern: session terminated: wrong database")
	case <-time.After(30 * time.Second):
		t.Fatal("no PostgreSQL session ended after its session lock")
	}
	s, err := e.svc.State.GetSession(context.Background(), running[1].ID)
	if err != nil || s.Status != state.StatusRunning {
		t.Errorf("the other session is %q (%v); want running", s.Status, err)
	}
	select {
	case r := <-other:
		t.Fatalf("the other psql ended too: %d %s", r.Code, r.Stderr)
	default:
	}

	lockVia(t, admin, lock.CreateBody{Kind: "target", Name: "pg", Reason: "restoring backups", For: "1h"})
	select {
	case r := <-other:
		terminated(t, r, "postern: target pg is locked: restoring backups")
	case <-time.After(30 * time.Second):
		t.Fatal("the PostgreSQL session on the locked target runs on")
	}
}

// terminated checks that psql failed and printed why.
func terminated(t *testing.T, r testutil.Result, why string) {
	t.Helper()
	if r.Code == 0 || !strings.Contains(string(r.Stderr), why) {
		t.Errorf("psql: exit %d, stderr %q; want a failure that says %q", r.Code, r.Stderr, why)
	}
}
