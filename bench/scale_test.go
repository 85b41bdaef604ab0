//go:build bench

package bench

import (
	"bytes"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/internal/pgtest"
	"github.com/posternhq/postern/internal/s3test"
	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/state"
)

// TestScale is the scale-out row (`make bench-scale`): two postern
// replicas share a PostgreSQL state store and an S3 recording store
// (versitygw) and nothing else, and hold more and more idle recorded
// sessions ($POSTERN_BENCH_SCALE_LEVELS, default 100,1000,5000, split
// evenly over the replicas; pty + shell to an in-process x/crypto target).
// At each level it measures, with the sessions held:
//
//   - the replicas' CPU time per second while nothing else happens (what
//     holding the sessions costs: flushers, heartbeats, checkpoints);
//   - new recorded sessions to a command target running /bin/true, opened
//     by 8 x/crypto clients in parallel for $POSTERN_BENCH_SCALE_SECONDS
//     (default 10) against both replicas in turn: sessions per second,
//     set-up latency (connect, authenticate, inner hop, exec, exit status;
//     p50 and p99) and the replicas' CPU time per session;
//   - the replicas' PSS per held session.
//
// It writes bench/results/scale.md and scale.json ($POSTERN_BENCH_OUT).
func TestScale(t *testing.T) {
	start := time.Now()
	testutil.Need(t, "/usr/sbin/sshd")
	levels := envInts("POSTERN_BENCH_SCALE_LEVELS", []int{100, 1000, 5000})
	burst := time.Duration(envInt("POSTERN_BENCH_SCALE_SECONDS", 10)) * time.Second
	e := newIdleEnv(t)
	pg := pgtest.Start(t)
	stateURL := pg.PasswordDSN(pg.NewDB(t))
	s3 := s3test.Start(t)
	s3.CreateBucket(t, "recordings")
	storage := fmt.Sprintf("s3://recordings/rec?endpoint=%s&path_style=true&region=%s", url.QueryEscape(s3.Endpoint()), s3.Region())
	env := []string{"AWS_ACCESS_KEY_ID=" + s3.AccessKey(), "AWS_SECRET_ACCESS_KEY=" + s3.SecretKey(), "AWS_REGION=" + s3.Region(),
		"AWS_EC2_METADATA_DISABLED=true", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"POSTERN_ADVERTISE_HOST=127.0.0.1"}
	if g := os.Getenv("POSTERN_BENCH_GOGC"); g != "" {
		env = append(env, "GOGC="+g)
	}
	var replicas []*postern
	for _, name := range []string{"A", "B"} {
		p := &postern{dataDir: filepath.Join(e.dir, "postern-"+name)}
		cfg := filepath.Join(e.dir, name+".yaml")
		if err := os.WriteFile(cfg, []byte(scaleConfig(e, p.dataDir, stateURL, storage)), 0o600); err != nil {
			t.Fatal(err)
		}
		p.proc = testutil.Start(t, testutil.PosternBinary(t), []string{"serve", "--config", cfg, "--log-format", "json", "--log-level", "warn"},
			testutil.Env(env...))
		p.pid = p.proc.PID()
		p.addr = e.awaitListen(p)
		replicas = append(replicas, p)
	}
	count := func(typ string) int {
		n := 0
		for _, p := range replicas {
			n += p.countEvents(typ)
		}
		return n
	}
	await := func(typ string, n int, timeout time.Duration) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for count(typ) < n {
			if time.Now().After(deadline) {
				t.Fatalf("only %d of %d %s events after %v", count(typ), n, typ, timeout)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	cpu := func() time.Duration {
		var sum time.Duration
		for _, p := range replicas {
			c, _ := treeCPU(p.pid)
			sum += c
		}
		return sum
	}
	pssSum := func() float64 {
		var sum float64
		for _, p := range replicas {
			v, err := pss(p.pid)
			if err != nil {
				t.Fatal(err)
			}
			sum += v
		}
		return sum
	}

	r := &Report{Started: start.UTC(), Machine: describeMachine()}
	r.Settings = []string{
		"two postern replicas (the binary, log level warn) sharing a PostgreSQL state store and an S3 recording store (versitygw), nothing else",
		fmt.Sprintf("held sessions: idle recorded sessions (pty + shell, stdin open) of x/crypto clients to an in-process x/crypto target, half on each replica; levels %v", levels),
		fmt.Sprintf("new sessions: 8 x/crypto clients for %v per level, alternating replicas: connect, authenticate with the certificate, inner hop to a command target running /bin/true (recorded), exec, exit status; aes128-gcm, curve25519-sha256", burst),
		"GOGC of postern: " + orDefault(os.Getenv("POSTERN_BENCH_GOGC"), "default (100)"),
	}
	var held []*hop
	t.Cleanup(func() {
		for _, h := range held {
			h.Close()
		}
	})
	for i := 0; i < 10; i++ { // warm-up: the first logins and PostgreSQL's connection pools
		if _, err := e.scaleSession(replicas[i%2]); err != nil {
			t.Fatalf("warm-up session: %v", err)
		}
	}
	basePSS := pssSum()
	baseHeld := 0
	for _, level := range levels {
		if level < len(held) {
			continue
		}
		started := count(state.EventSessionStart)
		var next atomic.Int64
		opened := openIdleHops(t, level-len(held), func() (*hop, error) {
			return e.viaPostern(replicas[next.Add(1)%2], ssh.CipherAES128GCM, "idle-rec")
		})
		held = append(held, opened...)
		await(state.EventSessionStart, started+len(opened), 5*time.Minute)
		// Let the new sessions' first checkpoints (the cast header) pass
		// before the holding cost is read.
		time.Sleep(2 * time.Second)

		// Holding: CPU per second with nothing else happening.
		c0, w0 := cpu(), time.Now()
		time.Sleep(5 * time.Second)
		idleCPU := (cpu() - c0).Seconds() / time.Since(w0).Seconds()
		perHeld := (pssSum() - basePSS) / float64(len(held)-baseHeld)

		// New sessions while they are held.
		sealed := count(state.EventSessionSealed)
		var mu sync.Mutex
		var lat Samples
		var failed atomic.Value
		var turn atomic.Int64
		c0, w0 = cpu(), time.Now()
		stop := w0.Add(burst)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for time.Now().Before(stop) {
					d, err := e.scaleSession(replicas[turn.Add(1)%2])
					if err != nil {
						failed.Store(err)
						return
					}
					mu.Lock()
					lat = append(lat, float64(d.Microseconds())/1e3)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		wall := time.Since(w0)
		if err, ok := failed.Load().(error); ok {
			t.Fatalf("new session with %d held: %v", len(held), err)
		}
		await(state.EventSessionSealed, sealed+len(lat), 2*time.Minute)
		perSession := (cpu() - c0).Seconds() * 1e3 / float64(len(lat))
		rate := float64(len(lat)) / wall.Seconds()
		variant := fmt.Sprintf("%d held", len(held))
		t.Logf("%s: %.1f new sessions/s, set-up p50 %.1f ms p99 %.1f ms, %.1f ms CPU per new session, %.0f ms CPU/s holding, %.0f KiB PSS per held session",
			variant, rate, lat.Median(), lat.Quantile(0.99), perSession, idleCPU*1e3, perHeld)
		rows := []Row{
			{Name: "scale-out: new recorded sessions per second, 2 replicas (PostgreSQL + S3)", Variant: variant, Client: clientXCrypto,
				Postern: Figure{Median: rate, Min: rate, Max: rate, N: 1, Unit: "sessions/s"}, Value: rate, ValueUnit: "/s",
				Note: "wall rate of 8 x/crypto clients opening recorded sessions to a command target (/bin/true) on both replicas in turn, with the idle sessions held; the machine's whole CPU, load generator included"},
			{Name: "scale-out: session set-up latency, p99", Variant: variant, Client: clientXCrypto,
				Postern: Figure{Median: lat.Quantile(0.99), Min: lat.Median(), Max: lat.Max(), N: len(lat), Unit: "ms p99"}, Value: lat.Quantile(0.99), ValueUnit: "ms",
				Note: "connect, authenticate, inner hop, exec true, exit status; figures are p99 (median–max)"},
			{Name: "scale-out: replicas' CPU per new session", Variant: variant, Client: clientXCrypto,
				Postern: Figure{Median: perSession, Min: perSession, Max: perSession, N: 1, Unit: "ms CPU"}, Value: perSession, ValueUnit: "ms",
				Note: "both replicas' CPU time (utime + stime, with their children: /bin/true) during the new sessions, over their number"},
			{Name: "scale-out: replicas' CPU while holding the sessions", Variant: variant, Client: clientXCrypto,
				Postern: Figure{Median: idleCPU * 1e3, Min: idleCPU * 1e3, Max: idleCPU * 1e3, N: 1, Unit: "ms CPU per second"}, Value: idleCPU * 1e3, ValueUnit: "ms/s",
				Note: "both replicas' CPU time over 5 s with the sessions held and nothing else happening"},
			{Name: "scale-out: memory per held session (PSS delta ÷ sessions)", Variant: variant, Client: clientXCrypto,
				Postern: Figure{Median: perHeld, Min: perHeld, Max: perHeld, N: 1, Unit: "KiB"}, Value: perHeld, ValueUnit: "KiB",
				Note: "both replicas' PSS (smaps_rollup) with the sessions held, less before any, over the number held"},
		}
		r.Rows = append(r.Rows, rows...)
	}
	slices.SortStableFunc(r.Rows, func(a, b Row) int { return strings.Compare(a.Name, b.Name) })
	r.Duration = time.Since(start).Round(time.Second).String()
	writeReport(t, r, "scale")
}

// scaleSession opens one recorded session to the command target through p
// and runs exec true, returning the wall time from dial to exit status.
func (e *env) scaleSession(p *postern) (time.Duration, error) {
	t0 := time.Now()
	h, err := e.viaPostern(p, ssh.CipherAES128GCM, "cmd-true")
	if err != nil {
		return 0, err
	}
	defer h.Close()
	s, err := h.inner.NewSession()
	if err != nil {
		return 0, err
	}
	defer s.Close()
	if err := s.Run("true"); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

// scaleConfig is a replica's configuration: the shared state and recording
// stores, the CAs of the env, the idle target and a command target, both
// recorded.
func scaleConfig(e *env, dataDir, stateURL, storage string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "listen:\n  ssh: 127.0.0.1:0\n  http: 127.0.0.1:0\ndata_dir: %s\nstate: %q\nstorage: %q\n", dataDir, stateURL, storage)
	b.WriteString("ca:\n")
	for _, n := range []string{"user", "host", "target"} {
		fmt.Fprintf(&b, "  %s:\n    key_file: %s\n", n, filepath.Join(e.caDir, "ca", n+"_ca"))
	}
	b.WriteString("ssh:\n  max_connections_per_source: 10000\n  max_connections: 20000\n")
	fmt.Fprintf(&b, "targets:\n  - name: idle-rec\n    kind: ssh\n    address: %s\n    host_key: %q\n", e.idle.addr,
		strings.TrimSpace(string(ssh.MarshalAuthorizedKey(e.idle.hostKey))))
	b.WriteString("  - name: cmd-true\n    kind: command\n    command: [/bin/true]\n")
	fmt.Fprintf(&b, "roles:\n  - name: recorded\n    match:\n      users: [alice]\n    logins: [%s]\n    record: required\n    targets: [idle-rec, cmd-true]\n", e.login)
	return b.String()
}

// writeReport writes r as NAME.md and NAME.json to $POSTERN_BENCH_OUT
// (default bench/results) and prints the Markdown.
func writeReport(t *testing.T, r *Report, name string) {
	t.Helper()
	var md bytes.Buffer
	if err := r.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(os.Stdout, md.String())
	out := os.Getenv("POSTERN_BENCH_OUT")
	if out == "" {
		out = filepath.Join(testutil.RepoRoot(t), "bench", "results")
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, name+".md"), md.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, name+".json"), js.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// envInts reads a comma-separated list of positive integers, def if unset
// or malformed.
func envInts(name string, def []int) []int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return def
		}
		out = append(out, n)
	}
	return out
}
