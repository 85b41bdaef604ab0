//go:build bench

package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/server"
	"github.com/posternhq/postern/state"
)

// idleChildEnv names the configuration file a child process of
// TestIdleSessions serves (see idleChild).
const idleChildEnv = "POSTERN_BENCH_IDLE_CHILD"

// exactHeapEnv makes the child sample every allocation in its heap profile.
const exactHeapEnv = "POSTERN_BENCH_EXACT_HEAP"

// TestMain runs the postern child of TestIdleSessions or the reaper of the
// stock client (proc_test.go) when the test binary is started as one, and
// the tests otherwise.
func TestMain(m *testing.M) {
	if os.Getenv(reaperEnv) != "" {
		os.Exit(reaper(os.Args[1:]))
	}
	if cfg := os.Getenv(idleChildEnv); cfg != "" {
		if os.Getenv(exactHeapEnv) != "" {
			// Every allocation is sampled, so that the heap profile's
			// per-session figures are exact rather than 512 KiB
			// samples.
			runtime.MemProfileRate = 1
		}
		os.Exit(idleChild(cfg))
	}
	os.Exit(m.Run())
}

// TestIdleSessions measures what one idle recorded session costs postern:
// goroutines (grouped by where they were created and where they wait),
// runtime.MemStats StackInuse and HeapInuse, and PSS, each as the delta
// between 20 and 20+N open sessions divided by N
// ($POSTERN_BENCH_IDLE_SESSIONS, default 300). Postern runs as a
// server.Service in a child process (this test binary, see TestMain), so
// every figure is postern's alone: the x/crypto clients and the idle
// target run in this process. $POSTERN_BENCH_IDLE_GOGC sets the child's
// GOGC; with $POSTERN_BENCH_PROFILE set, the child writes idle.heap there.
func TestIdleSessions(t *testing.T) {
	n := envInt("POSTERN_BENCH_IDLE_SESSIONS", 300)
	e := newIdleEnv(t)
	child := startIdleChild(t, e, os.Getenv("POSTERN_BENCH_IDLE_GOGC"))
	p := &postern{addr: child.addr, dataDir: child.dataDir}

	var hops []*hop
	t.Cleanup(func() {
		for _, h := range hops {
			h.Close()
		}
	})
	open := func(count int) {
		opened := openIdleSessions(t, e, p, count)
		hops = append(hops, opened...)
		p.awaitEvents(t, state.EventSessionStart, len(hops), 2*time.Minute)
	}
	open(20)
	before := child.measure(t)
	open(n)
	after := child.measure(t)
	if dir := os.Getenv("POSTERN_BENCH_PROFILE"); dir != "" {
		child.command(t, "heap "+filepath.Join(dir, "idle.heap"))
		t.Logf("heap profile %s", filepath.Join(dir, "idle.heap"))
	}

	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) }
	t.Logf("%d idle recorded sessions (pty + shell), GOGC %s; per session:", n, orDefault(os.Getenv("POSTERN_BENCH_IDLE_GOGC"), "default"))
	t.Logf("  goroutines   %6.2f", per(uint64(after.Goroutines), uint64(before.Goroutines)))
	t.Logf("  StackInuse   %6.1f KiB (%.1f KiB before the collections that let idle stacks shrink)",
		per(after.StackInuse, before.StackInuse)/1024, per(after.StackRaw, before.StackRaw)/1024)
	t.Logf("  HeapInuse    %6.1f KiB", per(after.HeapInuse, before.HeapInuse)/1024)
	t.Logf("  HeapAlloc    %6.1f KiB", per(after.HeapAlloc, before.HeapAlloc)/1024)
	t.Logf("  Sys          %6.1f KiB", per(after.Sys, before.Sys)/1024)
	t.Logf("  PSS          %6.1f KiB", (after.PSSKiB-before.PSSKiB)/float64(n))
	t.Logf("goroutines per session by creation site | where they wait:")
	type site struct {
		key string
		d   float64
	}
	var sites []site
	for k, v := range after.Sites {
		if d := float64(v-before.Sites[k]) / float64(n); d > 0.05 || d < -0.05 {
			sites = append(sites, site{k, d})
		}
	}
	slices.SortFunc(sites, func(a, b site) int {
		if a.d != b.d {
			if a.d > b.d {
				return -1
			}
			return 1
		}
		return strings.Compare(a.key, b.key)
	})
	for _, s := range sites {
		t.Logf("  %5.2f  %s", s.d, s.key)
	}
}

// idleStats is what the child reports for one measurement.
type idleStats struct {
	Goroutines int
	StackRaw   uint64 // StackInuse before the collections of measureSelf
	StackInuse uint64
	HeapInuse  uint64
	HeapAlloc  uint64
	Sys        uint64
	PSSKiB     float64
	Sites      map[string]int // goroutines by "created by | waits in"
}

// idleChildProc is a running child postern.
type idleChildProc struct {
	addr    string
	dataDir string
	pid     int
	in      io.Writer
	out     *bufio.Reader
	mu      sync.Mutex
}

// startIdleChild starts the child postern and waits until it serves.
func startIdleChild(t *testing.T, e *env, gogc string) *idleChildProc {
	t.Helper()
	dataDir := filepath.Join(e.dir, "postern-idle")
	var env []string
	if os.Getenv("POSTERN_BENCH_PROFILE") != "" {
		// A heap profile is asked for: sample every allocation (which
		// costs memory of its own, so not otherwise).
		env = append(env, exactHeapEnv+"=1")
	}
	return startChild(t, e, "idle", idleConfig(e, dataDir), dataDir, gogc, env...)
}

// startChild starts a child postern (this test binary, see TestMain)
// serving the configuration cfgText, and waits until it serves.
func startChild(t *testing.T, e *env, name, cfgText, dataDir, gogc string, env ...string) *idleChildProc {
	t.Helper()
	cfg := filepath.Join(e.dir, name+".yaml")
	if err := os.WriteFile(cfg, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	if os.Getenv(callgrindEnv) != "" {
		out := os.Getenv("POSTERN_BENCH_PROFILE")
		// Run the child under callgrind with instrumentation off; the
		// caller turns it on around what it measures (callgrindOn).
		cmd = exec.Command("valgrind", "--tool=callgrind", "--instr-atstart=no",
			"--callgrind-out-file="+filepath.Join(out, name+".callgrind.%p"), os.Args[0])
		// callgrind cannot follow the signals of asynchronous preemption.
		env = append(env, "GODEBUG=asyncpreemptoff=1")
	}
	cmd.Env = append(append(os.Environ(), env...), idleChildEnv+"="+cfg)
	if gogc != "" {
		cmd.Env = append(cmd.Env, "GOGC="+gogc)
	}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close() // the child stops at EOF on its input
		if err := cmd.Wait(); err != nil {
			t.Errorf("child postern: %v", err)
		}
	})
	c := &idleChildProc{dataDir: dataDir, pid: cmd.Process.Pid, in: in, out: bufio.NewReader(out)}
	line, err := c.out.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready ") {
		t.Fatalf("child postern: got %q, %v; want ready <addr>", line, err)
	}
	c.addr = strings.TrimSpace(strings.TrimPrefix(line, "ready "))
	return c
}

// command sends one command line to the child and returns its answer line.
func (c *idleChildProc) command(t *testing.T, cmd string) string {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := io.WriteString(c.in, cmd+"\n"); err != nil {
		t.Fatalf("idle child %s: %v", cmd, err)
	}
	line, err := c.out.ReadString('\n')
	if err != nil {
		t.Fatalf("idle child %s: %v", cmd, err)
	}
	if strings.HasPrefix(line, "error ") {
		t.Fatalf("idle child %s: %s", cmd, line)
	}
	return line
}

// allocStats are the child's cumulative allocation counters.
type allocStats struct {
	Mallocs    uint64 // heap objects allocated
	TotalAlloc uint64 // bytes allocated
	NumGC      uint32 // completed GC cycles
}

// alloc asks the child for its allocation counters.
func (c *idleChildProc) alloc(t *testing.T) allocStats {
	t.Helper()
	var s allocStats
	if err := json.Unmarshal([]byte(c.command(t, "alloc")), &s); err != nil {
		t.Fatalf("child alloc: %v", err)
	}
	return s
}

// measure asks the child for its figures.
func (c *idleChildProc) measure(t *testing.T) idleStats {
	t.Helper()
	var s idleStats
	if err := json.Unmarshal([]byte(c.command(t, "measure")), &s); err != nil {
		t.Fatalf("idle child measure: %v", err)
	}
	return s
}

// idleChild serves postern with the configuration at cfgPath and answers
// commands on stdin, one per line: "measure" (a JSON idleStats line),
// "heap <file>" (writes a heap profile), "alloc" (cumulative allocation
// counts, JSON), "cpu <file>" (starts a CPU profile), "cpu-stop" (ends
// it). It stops at EOF.
func idleChild(cfgPath string) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "idle child:", err)
		return 1
	}
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		return fail(err)
	}
	cfg, err := config.Parse(b)
	if err != nil {
		return fail(err)
	}
	ready := make(chan string, 1)
	svc, err := server.NewService(cfg, server.ServiceOptions{Log: slog.New(slog.DiscardHandler),
		Ready: func(sshAddr, _ net.Addr) { ready <- sshAddr.String() }})
	if err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx, nil) }()
	select {
	case addr := <-ready:
		fmt.Printf("ready %s\n", addr)
	case err := <-done:
		return fail(err)
	}
	var cpuFile *os.File
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(sc.Text(), " ")
		switch cmd {
		case "measure":
			b, err := json.Marshal(measureSelf())
			if err != nil {
				fmt.Printf("error %v\n", err)
				continue
			}
			fmt.Printf("%s\n", b)
		case "heap":
			runtime.GC()
			f, err := os.Create(arg)
			if err == nil {
				err = pprof.Lookup("heap").WriteTo(f, 0)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
			if err != nil {
				fmt.Printf("error %v\n", err)
				continue
			}
			fmt.Println("ok")
		case "alloc":
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			fmt.Printf("{\"Mallocs\":%d,\"TotalAlloc\":%d,\"NumGC\":%d}\n", ms.Mallocs, ms.TotalAlloc, ms.NumGC)
		case "cpu":
			f, err := os.Create(arg)
			if err == nil {
				if err = pprof.StartCPUProfile(f); err != nil {
					f.Close()
				} else {
					cpuFile = f
				}
			}
			if err != nil {
				fmt.Printf("error %v\n", err)
				continue
			}
			fmt.Println("ok")
		case "cpu-stop":
			pprof.StopCPUProfile()
			if cpuFile != nil {
				cpuFile.Close()
				cpuFile = nil
			}
			fmt.Println("ok")
		default:
			fmt.Printf("error unknown command %q\n", cmd)
		}
	}
	cancel()
	if err := <-done; err != nil {
		return fail(err)
	}
	return 0
}

// measureSelf collects the child's figures. Several collections let idle
// goroutine stacks shrink, as the periodic GC of a long-running postern
// does; the scavenger is left alone, so PSS is what the process holds.
func measureSelf() idleStats {
	var raw runtime.MemStats
	runtime.ReadMemStats(&raw)
	for range 4 {
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s := idleStats{Goroutines: runtime.NumGoroutine(), StackRaw: raw.StackInuse, StackInuse: ms.StackInuse, HeapInuse: ms.HeapInuse,
		HeapAlloc: ms.HeapAlloc, Sys: ms.Sys,
		Sites: goroutineSites()}
	if v, err := pss(os.Getpid()); err == nil {
		s.PSSKiB = v
	}
	return s
}

var (
	goroutineHeader = regexp.MustCompile(`^goroutine \d+ \[`)
	createdBy       = regexp.MustCompile(`^created by (\S+)`)
)

// goroutineSites counts the goroutines by the function that created them and
// the first function of theirs that is not the runtime's (where they wait),
// from the debug=2 goroutine dump.
func goroutineSites() map[string]int {
	buf := make([]byte, 64<<20)
	buf = buf[:runtime.Stack(buf, true)]
	sites := map[string]int{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		lines := strings.Split(g, "\n")
		if len(lines) == 0 || !goroutineHeader.MatchString(lines[0]) {
			continue
		}
		waits, creator := "", "(main)"
		for i := 1; i < len(lines); i++ {
			l := lines[i]
			if strings.HasPrefix(l, "\t") {
				continue
			}
			if m := createdBy.FindStringSubmatch(l); m != nil {
				creator = m[1]
				if i+1 < len(lines) {
					creator += " (" + fileLine(lines[i+1]) + ")"
				}
				break
			}
			fn := l
			if j := strings.LastIndexByte(fn, '('); j > 0 {
				fn = fn[:j]
			}
			if waits == "" && !strings.HasPrefix(fn, "runtime.") && !strings.HasPrefix(fn, "sync.") &&
				!strings.HasPrefix(fn, "internal/") && !strings.HasPrefix(fn, "time.") {
				waits = fn
				if i+1 < len(lines) {
					waits += " (" + fileLine(lines[i+1]) + ")"
				}
			}
		}
		sites[creator+" | "+waits]++
	}
	return sites
}

// fileLine shortens "\t/dir/file.go:12 +0x1f" to "file.go:12".
func fileLine(l string) string {
	l = strings.TrimSpace(l)
	if i := strings.IndexByte(l, ' '); i > 0 {
		l = l[:i]
	}
	return filepath.Base(l)
}

// newIdleEnv starts only what the idle row needs: the CAs, the user's key
// and certificate, and the in-process idle target.
func newIdleEnv(t *testing.T) *env {
	t.Helper()
	e := newIdentityEnv(t)
	e.idle = startIdleTarget(t)
	return e
}

// idleConfig is the child's configuration: the idle target, recorded.
func idleConfig(e *env, dataDir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "listen:\n  ssh: 127.0.0.1:0\n  http: 127.0.0.1:0\ndata_dir: %s\n", dataDir)
	b.WriteString("ca:\n")
	for _, n := range []string{"user", "host", "target"} {
		fmt.Fprintf(&b, "  %s:\n    key_file: %s\n", n, filepath.Join(e.caDir, "ca", n+"_ca"))
	}
	b.WriteString("ssh:\n  max_connections_per_source: 5000\n  max_connections: 20000\n")
	fmt.Fprintf(&b, "targets:\n  - name: idle-rec\n    kind: ssh\n    address: %s\n    host_key: %q\n", e.idle.addr,
		strings.TrimSpace(string(ssh.MarshalAuthorizedKey(e.idle.hostKey))))
	fmt.Fprintf(&b, "roles:\n  - name: recorded\n    match:\n      users: [alice]\n    logins: [%s]\n    record: required\n    targets: [idle-rec]\n", e.login)
	return b.String()
}

// openIdleSessions opens count idle recorded sessions (pty + shell) to the
// idle target through p, 16 at a time.
func openIdleSessions(t *testing.T, e *env, p *postern, count int) []*hop {
	t.Helper()
	return openIdleHops(t, count, func() (*hop, error) { return e.viaPostern(p, ssh.CipherAES128GCM, "idle-rec") })
}
