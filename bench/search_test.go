//go:build bench

package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/internal/pgtest"
	"github.com/posternhq/postern/internal/sshdtest"
	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/search"
	"github.com/posternhq/postern/state"
)

// Search benchmarks (make bench-search):
//
//   - TestSearchIndexCost records sessions of three shapes through the stock
//     ssh client and a whole postern in this process, and compares the CPU
//     the search indexer spends on them with the CPU of recording them;
//   - TestSearchQuery builds an index of 10,000 sessions (SQLite, and
//     PostgreSQL when it is installed) and times queries over it.

// metric reads one unlabelled sample (or the sum of a labelled one's
// samples) from postern's /metrics.
func metric(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var sum float64
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		f, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		sum += f
	}
	return sum
}

// shellCommands are what the interactive workload types, key by key.
var shellCommands = []string{
	"ls -la /etc", "cat /etc/os-release", "ps aux | head -40", "df -h", "grep -c root /etc/passwd", "id", "uname -a",
	"find /usr/share/doc -maxdepth 1 | head -100", "env | sort | head -30", "ls -la /var/log", "tail -20 /etc/services",
	"du -sh /usr/share/* 2>/dev/null | sort -h | tail -15", "echo done-$((6*7))",
}

// costPostern is one postern binary of the cost comparison.
type costPostern struct {
	name   string
	proc   *testutil.Proc
	http   string // base URL
	sshCfg string
	search bool
	st     *state.Store // a second handle on its state store
}

// TestSearchIndexCost: two postern processes, identical but for
// search.disabled, record the same sessions (the stock ssh client, one
// sshd target), alternating. For each session shape it reports postern's
// process CPU per session with search off (the recording CPU), the CPU the
// indexer's thread spent (postern_search_index_cpu_seconds_total) and the
// process CPU difference between the two.
func TestSearchIndexCost(t *testing.T) {
	testutil.Need(t, "ssh")
	e := newIdentityEnv(t)
	keyFile, certFile := sshdtest.WriteClientKey(t, e.userKey, e.certSigner.PublicKey().(*ssh.Certificate))
	target := sshdtest.Start(t, sshdtest.Options{TrustedUserCAKeys: []ssh.PublicKey{e.auth.Target.PublicKey()},
		Extra: []string{"KexAlgorithms " + kex}})
	known := filepath.Join(e.dir, "known_hosts")
	if err := os.WriteFile(known, []byte(e.auth.HostCALine()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(e.dir, "app.log")
	writeLog(t, logFile, 8<<20)
	var ps []*costPostern
	for _, on := range []bool{true, false} {
		p := &costPostern{name: map[bool]string{true: "search-on", false: "search-off"}[on], search: on}
		dataDir := filepath.Join(e.dir, p.name)
		sshPort, httpPort := testutil.FreePort(t), testutil.FreePort(t)
		var b strings.Builder
		fmt.Fprintf(&b, "listen:\n  ssh: 127.0.0.1:%d\n  http: 127.0.0.1:%d\ndata_dir: %s\n", sshPort, httpPort, dataDir)
		b.WriteString("ca:\n")
		for _, n := range []string{"user", "host", "target"} {
			fmt.Fprintf(&b, "  %s:\n    key_file: %s\n", n, filepath.Join(e.caDir, "ca", n+"_ca"))
		}
		fmt.Fprintf(&b, "search:\n  disabled: %v\n", !on)
		fmt.Fprintf(&b, "targets:\n  - name: web-1\n    kind: ssh\n    address: %s\n    host_key: %q\n", target.Addr(),
			strings.TrimSpace(string(ssh.MarshalAuthorizedKey(target.HostKey()))))
		fmt.Fprintf(&b, "roles:\n  - name: ops\n    match:\n      users: [alice]\n    logins: [%s]\n    record: required\n    targets: [web-1]\n", e.login)
		cfg := filepath.Join(e.dir, p.name+".yaml")
		var err error
		if err = os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		p.proc = testutil.Start(t, testutil.PosternBinary(t), []string{"serve", "--config", cfg, "--log-level", "warn"})
		p.http = fmt.Sprintf("http://127.0.0.1:%d", httpPort)
		if err := testutil.AwaitPort(fmt.Sprintf("127.0.0.1:%d", httpPort), 60*time.Second, p.proc.Done()); err != nil {
			t.Fatalf("%s: %v\n%s", p.name, err, p.proc.Output())
		}
		var c strings.Builder
		fmt.Fprintf(&c, "Host bastion\n  HostName 127.0.0.1\n  Port %d\n  User alice\n", sshPort)
		fmt.Fprintf(&c, "Host web-1\n  ProxyJump bastion\n  User %s\n", e.login)
		fmt.Fprintf(&c, "Host *\n  IdentityFile %s\n  CertificateFile %s\n  UserKnownHostsFile %s\n  GlobalKnownHostsFile /dev/null\n", keyFile, certFile, known)
		fmt.Fprintf(&c, "  StrictHostKeyChecking yes\n  KexAlgorithms %s\n  BatchMode yes\n  IdentitiesOnly yes\n  IdentityAgent none\n", kex)
		c.WriteString("  LogLevel ERROR\n  ControlMaster no\n  ControlPath none\n  UpdateHostKeys no\n")
		if p.st, err = state.Open(context.Background(), "sqlite://"+filepath.Join(dataDir, "state.db"), state.Options{}); err != nil {
			t.Fatal(err)
		}
		defer p.st.Close()
		p.sshCfg = filepath.Join(e.dir, p.name+".ssh_config")
		if err := os.WriteFile(p.sshCfg, []byte(c.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	sshRun := func(p *costPostern, cmd string) {
		r, err := testutil.Run(nil, nil, "ssh", "-F", p.sshCfg, "web-1", cmd)
		if err != nil || r.Code != 0 {
			t.Fatalf("%s: ssh %q: %v %s", p.name, cmd, err, r.Stderr)
		}
	}
	shapes := []struct {
		name string
		reps int
		run  func(p *costPostern)
	}{
		{"interactive shell, 13 commands typed key by key", 12, func(p *costPostern) {
			c := testutil.StartPTY(t, 120, 40, "ssh", "-F", p.sshCfg, "-tt", "web-1")
			c.Expect(`[#$] `)
			for _, cmd := range shellCommands {
				for _, ch := range cmd + "\r" {
					c.Send(string(ch))
				}
			}
			c.Expect(`done-42`)
			c.Send("exit\r")
			c.Wait()
		}},
		{"exec, ~150 KB of output", 12, func(p *costPostern) { sshRun(p, "ls -la /usr/bin /usr/lib; ps aux") }},
		{"exec, cat of an 8 MiB log", 4, func(p *costPostern) { sshRun(p, "cat "+logFile) }},
	}
	// settle waits until p has sealed (and, with search, indexed) every
	// session so far, so that a session's CPU is counted whole. It reads
	// p's state store from this process, so that waiting costs p nothing.
	settle := func(p *costPostern, sessions int) {
		deadline := time.Now().Add(2 * time.Minute)
		for {
			sealed, err := p.st.ListSessions(context.Background(), state.SessionFilter{Status: state.StatusFinished})
			if err != nil {
				t.Fatal(err)
			}
			idx := int64(sessions)
			if p.search {
				st, err := p.st.SearchStats(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				idx = st.Sessions
			}
			if len(sealed) >= sessions && idx >= int64(sessions) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d sealed, %d indexed of %d", p.name, len(sealed), idx, sessions)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	type acc struct{ cpu, index time.Duration }
	res := map[string]map[string]*acc{}
	done := 0
	for _, sh := range shapes {
		res[sh.name] = map[string]*acc{}
		for _, p := range ps {
			res[sh.name][p.name] = &acc{}
			sh.run(p) // warm-up
		}
		done++
		for _, p := range ps {
			settle(p, done)
		}
		for i := range sh.reps {
			for j := range ps {
				p := ps[(i+j)%len(ps)] // alternate the order
				c0, _ := cpuTime(p.proc.PID())
				i0 := metric(t, p.http, "postern_search_index_cpu_seconds_total")
				sh.run(p)
				settle(p, done+1)
				c1, _ := cpuTime(p.proc.PID())
				i1 := metric(t, p.http, "postern_search_index_cpu_seconds_total")
				res[sh.name][p.name].cpu += c1 - c0
				res[sh.name][p.name].index += time.Duration((i1 - i0) * float64(time.Second))
			}
			done++
		}
	}
	t.Logf("load average at the end: %s", loadAvg())
	t.Log("| session shape | postern CPU per session, search off | indexer thread CPU per session | indexer ÷ recording | postern CPU per session, search on |")
	t.Log("|---|---|---|---|---|")
	for _, sh := range shapes {
		n := float64(sh.reps)
		off := res[sh.name]["search-off"].cpu.Seconds() * 1e3 / n
		on := res[sh.name]["search-on"].cpu.Seconds() * 1e3 / n
		idx := res[sh.name]["search-on"].index.Seconds() * 1e3 / n
		t.Logf("| %s | %.1f ms | %.2f ms | %.1f%% | %.1f ms (%+.0f%%) |", sh.name, off, idx, 100*idx/off, on, 100*(on-off)/off)
	}
}

// loadAvg returns the 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// writeLog writes size bytes of application log lines.
func writeLog(t *testing.T, path string, size int) {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	var b bytes.Buffer
	g := corpus{r: r}
	for b.Len() < size {
		b.WriteString(g.logLine(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(b.Len()) * time.Millisecond)))
		b.WriteByte('\n')
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// corpus generates terminal sessions that look like the ones a bastion
// records: prompts, commands typed key by key, listings, logs with
// timestamps, addresses and ids, SQL sessions.
type corpus struct{ r *rand.Rand }

var (
	users    = []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "deploy-bot", "ci-agent"}
	hosts    = []string{"web-1", "web-2", "web-3", "api-1", "api-2", "db-1", "db-2", "cache-1", "batch-1", "bastion-test"}
	commands = []string{
		"ls -la /etc", "cat /etc/os-release", "sudo systemctl restart nginx", "journalctl -u nginx --since today",
		"kubectl get pods -n prod", "kubectl logs deploy/api -n prod --tail=50", "docker ps", "df -h", "free -m",
		"tail -f /var/log/syslog", "grep ERROR /var/log/app/app.log", "psql -U app -d orders", "vim /etc/nginx/nginx.conf",
		"sudo vim /etc/sudoers", "git pull --rebase", "make deploy", "top -b -n 1 | head -20", "ps aux | grep java",
		"curl -s localhost:8080/healthz", "cat /etc/passwd", "ss -tlnp", "uptime", "crontab -l", "aws s3 ls s3://backups/",
		"terraform plan", "ansible-playbook site.yml --check", "redis-cli info memory", "htop", "less /var/log/auth.log",
	}
	words = strings.Fields(`request served upstream timeout connection reset retry worker started stopped queue job
		failed succeeded cache miss hit user login logout session token refresh payment order invoice shipment
		customer account balance transfer pending approved rejected backup snapshot volume disk memory cpu load`)
	sqls = []string{
		"SELECT * FROM orders WHERE id = %d", "UPDATE accounts SET balance = balance - %d WHERE id = 7",
		"DELETE FROM sessions WHERE expires < now()", "DROP TABLE tmp_import_%d", "INSERT INTO audit VALUES (%d, 'x')",
		"SELECT count(*) FROM customers", "ALTER TABLE orders ADD COLUMN note text", "TRUNCATE staging_%d",
	}
)

func (g *corpus) pick(s []string) string { return s[g.r.IntN(len(s))] }

func (g *corpus) logLine(at time.Time) string {
	var w []string
	for range 4 + g.r.IntN(8) {
		w = append(w, g.pick(words))
	}
	return fmt.Sprintf("%s %s app[%d]: %s id=%08x ip=10.%d.%d.%d dur=%dms", at.Format(time.RFC3339Nano), g.pick(hosts),
		1000+g.r.IntN(30000), strings.Join(w, " "), g.r.Uint32(), g.r.IntN(255), g.r.IntN(255), g.r.IntN(255), g.r.IntN(5000))
}

// session returns a cast of one session: a shell with typed commands and
// their output (about outKB KiB of it), or a SQL session.
func (g *corpus) session(outKB int) []byte {
	e, _ := recorder.NewEncoder(2)
	cast, _ := e.AppendHeader(nil, recorder.Header{Width: 120, Height: 40})
	at := time.Duration(0)
	host, user := g.pick(hosts), g.pick(users)
	prompt := fmt.Sprintf("\x1b]0;%s@%s: ~\x07\x1b[01;32m%s@%s\x1b[00m:\x1b[01;34m~\x1b[00m$ ", user, host, user, host)
	out := 0
	for out < outKB<<10 {
		cast = e.AppendOutput(cast, at, []byte(prompt))
		cmd := g.pick(commands)
		if g.r.IntN(4) == 0 {
			cmd = fmt.Sprintf(g.pick(sqls), g.r.IntN(100000))
		}
		for _, ch := range cmd {
			at += time.Duration(50+g.r.IntN(150)) * time.Millisecond
			cast = e.AppendInput(cast, at, []byte(string(ch)))
			cast = e.AppendOutput(cast, at+time.Millisecond, []byte(string(ch)))
		}
		at += 300 * time.Millisecond
		cast = e.AppendInput(cast, at, []byte("\r"))
		var o bytes.Buffer
		o.WriteString("\r\n")
		for range 5 + g.r.IntN(60) {
			o.WriteString(g.logLine(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).Add(at)))
			o.WriteString("\r\n")
		}
		out += o.Len()
		at += 20 * time.Millisecond
		cast = e.AppendOutput(cast, at, o.Bytes())
		at += time.Duration(1+g.r.IntN(20)) * time.Second
	}
	return e.AppendExit(cast, at, 0)
}

// buildIndex records n synthetic sessions into st (index rows and search
// entries) and returns the cast bytes indexed and the CPU spent
// extracting and indexing.
func buildIndex(t *testing.T, st *state.Store, n int) (castBytes int64, cpu time.Duration) {
	t.Helper()
	ctx := context.Background()
	g := &corpus{r: rand.New(rand.NewPCG(7, 11))}
	start := time.Now().Add(-time.Duration(n) * time.Minute)
	for i := range n {
		cast := g.session(4 + g.r.IntN(60))
		id := fmt.Sprintf("01JBENCH%018d", i)
		begin := start.Add(time.Duration(i) * time.Minute)
		end := begin.Add(10 * time.Minute)
		row := state.Session{ID: id, Identity: users[i%len(users)], Issuer: "corp", Role: "ops", Target: hosts[i%len(hosts)],
			Login: "deploy", Kind: state.KindShell, Start: begin, End: &end, Status: state.StatusFinished, Object: id + ".cast",
			Size: int64(len(cast))}
		if err := st.PutSession(ctx, row); err != nil {
			t.Fatal(err)
		}
		c0 := selfCPU()
		res, err := search.Extract(bytes.NewReader(cast), row, nil, search.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.IndexSession(ctx, id, begin, res.Entries, res.Truncated, nil); err != nil {
			t.Fatal(err)
		}
		cpu += selfCPU() - c0
		castBytes += int64(len(cast))
		if (i+1)%2000 == 0 {
			t.Logf("%d sessions indexed", i+1)
		}
	}
	return castBytes, cpu
}

// TestSearchQuery times queries over 10,000 indexed sessions.
func TestSearchQuery(t *testing.T) {
	n := envInt("POSTERN_BENCH_SEARCH_SESSIONS", 10000)
	reps := envInt("POSTERN_BENCH_SEARCH_REPS", 100)
	backends := []string{"sqlite"}
	if _, err := os.Stat("/usr/lib/postgresql"); err == nil {
		backends = append(backends, "postgres")
	}
	queries := []state.SearchQuery{
		{Text: "sudoers"},
		{Text: "/etc/sudoers"},
		{Text: `"drop table"`},
		{Text: "kubectl logs"},
		{Text: "timeout"},
		{Text: "kube*"},
		{Text: "payment failed", Identity: "alice"},
		{Text: "timeout", Target: "db-1", Since: time.Now().Add(-24 * time.Hour)},
		{Text: "zzzznothing"},
	}
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			url := "sqlite://" + filepath.Join(t.TempDir(), "state.db")
			if backend == "postgres" {
				srv := pgtest.Shared(t)
				url = srv.PasswordDSN(srv.NewDB(t))
			}
			st, err := state.Open(context.Background(), url, state.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			castBytes, cpu := buildIndex(t, st, n)
			stats, _ := st.SearchStats(context.Background())
			t.Logf("%s: %d sessions, %.1f MiB of casts, %d entries, %.1f MiB of entry text; extract+index CPU %v (%.2f ms per session)",
				backend, n, float64(castBytes)/(1<<20), stats.Entries, float64(stats.Bytes)/(1<<20), cpu.Round(time.Millisecond),
				float64(cpu.Microseconds())/1e3/float64(n))
			if backend == "sqlite" {
				if _, err := st.Events(context.Background(), 0, 1); err == nil { // checkpoint the WAL into the file
					db := strings.TrimPrefix(url, "sqlite://")
					st.Close()
					st, _ = state.Open(context.Background(), url, state.Options{})
					fi, _ := os.Stat(db)
					t.Logf("sqlite: database file %.1f MiB for %.1f MiB of casts", float64(fi.Size())/(1<<20), float64(castBytes)/(1<<20))
				}
			}
			t.Log("| query | hits | p50 | p95 | p99 |")
			t.Log("|---|---|---|---|---|")
			for _, q := range queries {
				var s Samples
				var hits int
				for range reps {
					t0 := time.Now()
					h, err := st.Search(context.Background(), q)
					if err != nil {
						t.Fatal(err)
					}
					s = append(s, float64(time.Since(t0).Microseconds())/1e3)
					hits = len(h)
				}
				desc := q.Text
				if q.Identity != "" {
					desc += " (user " + q.Identity + ")"
				}
				if q.Target != "" {
					desc += " (target " + q.Target + ", last 24h)"
				}
				t.Logf("| `%s` | %d | %.1f ms | %.1f ms | %.1f ms |", desc, hits, s.Quantile(0.5), s.Quantile(0.95), s.Quantile(0.99))
			}
		})
	}
}
