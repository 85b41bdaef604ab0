package bastion

import (
	"context"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/guardrails/pgproxy"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/pgtest"
	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/policy"
	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/state"
)

// TestPostgresThroughBastion runs psql through ssh -L and the real bastion
// to a postgres target: statements are audited and recorded, a deny rule
// blocks DROP TABLE with the session still usable, and a card-number
// column arrives masked at the client and in the recording.
func TestPostgresThroughBastion(t *testing.T) {
	if _, err := os.Stat("/usr/bin/psql"); err != nil {
		testutil.Need(t, "psql")
	}
	pg := pgtest.Start(t)
	pg.Exec(t, "CREATE TABLE payments (id int, card_number text, note text); "+
		"INSERT INTO payments VALUES (1, '4111 1111 1111 1111', 'ok'), (2, '5500 0000 0000 0004', 'key AKIAIOSFODNN7EXAMPLE')")
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	target := config.Target{Name: "pg", Kind: config.KindTCP, Address: pg.Addr(), Protocol: "postgres"}
	cfg := devConfig(u.Username, target)
	cfg.Roles[0].Record = "required"
	cfg.Roles[0].Rules = []config.Rule{{Match: "sql:drop", Action: "deny", Approvals: 1}}
	cfg.Masking.Rules = []config.MaskRule{{Name: "card", Columns: []string{"card*"}}, {Detector: "aws_key"}}
	mp, err := NewMaskPolicy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	recDir := t.TempDir()
	store, err := recorder.NewFileStore(recDir)
	if err != nil {
		t.Fatal(err)
	}
	var f *bxFixture
	f = newBX(t, bxOptions{mod: func(o *Options) {
		rec, err := recorder.New(recorder.Options{Store: store, SpoolDir: t.TempDir(), State: nil})
		if err != nil {
			t.Fatal(err)
		}
		px, err := pgproxy.New(pgproxy.Options{Recorder: rec, Store: store, Audit: func(ctx context.Context, e state.Event) {
			if _, err := o.Audit.Append(ctx, e); err != nil {
				t.Errorf("audit: %v", err)
			}
		}})
		if err != nil {
			t.Fatal(err)
		}
		o.Postgres, o.Masking = px, mp
	}})
	eng, err := policy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.srv.SetPolicy(eng)
	key, cert, _ := f.userKey(certSpec{})
	sshCfg := f.sshConfig(key, cert)

	local := testutil.FreePort(t)
	fwd := testutil.Start(t, "ssh", []string{"-F", sshCfg, "-N", "-p", strconv.Itoa(f.port),
		"-L", "127.0.0.1:" + strconv.Itoa(local) + ":pg:" + strconv.Itoa(pg.Port()), f.login + "@localhost"})
	if err := testutil.AwaitPort(net.JoinHostPort("127.0.0.1", strconv.Itoa(local)), 30*time.Second, fwd.Done()); err != nil {
		t.Fatalf("ssh -L never listened: %v; output %s", err, fwd.Output())
	}
	out := bxRun(t, "SELECT id, card_number, note FROM payments ORDER BY id;\nDROP TABLE payments;\nSELECT count(*) FROM payments;\n",
		"psql", "-X", "-A", "-t", "-h", "127.0.0.1", "-p", strconv.Itoa(local), "-U", pgtest.Superuser, "-d", "postgres", "-f", "-")
	if strings.Contains(out.stdout, "4111") || !strings.Contains(out.stdout, "1|[MASKED:card]|ok") ||
		!strings.Contains(out.stdout, "[MASKED:aws_key]") {
		t.Errorf("client got %q", out.stdout)
	}
	if !strings.Contains(out.stderr, "statement denied by policy: DROP") || !strings.HasSuffix(strings.TrimSpace(out.stdout), "2") {
		t.Errorf("DROP not denied or session unusable: stdout %q stderr %q", out.stdout, out.stderr)
	}
	if got := pg.Exec(t, "SELECT count(*) FROM payments"); got != "2" {
		t.Fatalf("the table is gone")
	}
	ev := f.waitEvent(pgproxy.EventQuery, hasDetail("outcome", "denied"))
	if detail(ev, "statement") != "DROP TABLE payments" {
		t.Errorf("denied statement audited as %q", detail(ev, "statement"))
	}
	if n := len(f.events(pgproxy.EventQuery)); n != 3 {
		t.Errorf("%d sql.query events; want 3", n)
	}
	// The recording is sealed when the forward ends.
	var cast string
	deadline := time.Now().Add(15 * time.Second)
	for cast == "" && time.Now().Before(deadline) {
		_ = filepath.WalkDir(recDir, func(p string, d fs.DirEntry, err error) error {
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
