//go:build bench

package bench

import (
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/state"
)

// TestProfile runs postern in a child process (this test binary serving
// the same configuration as TestCompare's postern, see TestMain) and
// writes CPU profiles of its hot paths to $POSTERN_BENCH_PROFILE (default:
// a temporary directory, logged), each driven by the stock ssh client:
// unrecorded.cpu and recorded.cpu (`head -c` of 64 MiB of text through the
// inner hop, aes128-gcm, $POSTERN_BENCH_PROFILE_REPS times, default 3), forward.cpu (256 MiB through `ssh -W`
// to a tcp target), sessions.cpu (recorded sessions to the command
// target, 4 clients in parallel, $POSTERN_BENCH_PROFILE_SESSIONS in all,
// default 100); and idle.heap, a heap profile with
// $POSTERN_BENCH_PROFILE_IDLE (default 300) idle recorded sessions of
// x/crypto clients open (POSTERN_BENCH_PROFILE_HEAP_ONLY stops after it).
// Only postern's own frames are in the profiles. For each it logs the
// load-independent figures: CPU time of postern, of the target sshd and
// of the client per GiB (or per session), and postern's allocations (count
// and bytes) per GiB (or per session). $POSTERN_BENCH_PROFILE_ONLY picks a
// comma-separated subset of unrecorded, recorded, forward, sessions, idle.
// Read the profiles with `go tool pprof -top bench.test recorded.cpu`. Heap
// profiles taken before and after each (NAME.heap0, NAME.heap1) give the
// allocations by site: `go tool pprof -sample_index=alloc_objects -base
// NAME.heap0 NAME.heap1`.
// With $POSTERN_BENCH_PROFILE_CALLGRIND set, the child runs under
// valgrind's callgrind, which counts the instructions postern executes
// during each (the same whatever else runs on the machine) into
// prof.callgrind.PID.N files in the profile directory; read the totals
// with callgrind_annotate. With $POSTERN_BENCH_PROFILE_STRACE set, strace -c counts postern's
// system calls during each into NAME.strace.
func TestProfile(t *testing.T) {
	testutil.Need(t, "/usr/sbin/sshd", "ssh")
	out := os.Getenv("POSTERN_BENCH_PROFILE")
	if out == "" {
		out = t.TempDir()
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	only := map[string]bool{}
	for _, k := range strings.Split(os.Getenv("POSTERN_BENCH_PROFILE_ONLY"), ",") {
		if k = strings.TrimSpace(k); k != "" {
			only[k] = true
		}
	}
	want := func(k string) bool { return len(only) == 0 || only[k] }
	e := newEnvWith(t, 64<<20, false)
	dataDir := filepath.Join(e.dir, "postern-prof")
	child := startChild(t, e, "prof", e.config(dataDir), dataDir, os.Getenv("POSTERN_BENCH_GOGC"))
	p := &postern{pid: child.pid, addr: child.addr, dataDir: dataDir}
	e.postern = p
	e.sshCfg = e.writeSSHConfig()

	// profile runs f under a CPU profile of the child and logs the CPU time
	// of postern, of the target's tree and of the clients, and postern's
	// allocations, each per unit (GiB or session) of what f returns.
	profile := func(name string, target int, unit string, f func() (float64, time.Duration)) {
		if !want(name) {
			return
		}
		cg := os.Getenv(callgrindEnv) != ""
		file := filepath.Join(out, name+".cpu")
		if !cg { // no SIGPROF under callgrind
			child.command(t, "cpu "+file)
		}
		a0 := child.alloc(t)
		if !cg {
			child.command(t, "heap "+filepath.Join(out, name+".heap0"))
		}
		p0, _ := treeCPU(p.pid)
		t0, tn := treeCPU(target)
		var trace *exec.Cmd
		if os.Getenv("POSTERN_BENCH_PROFILE_STRACE") != "" {
			// Count postern's system calls (strace -c) during f.
			trace = exec.Command("strace", "-c", "-f", "-q", "-p", strconv.Itoa(p.pid), "-o", filepath.Join(out, name+".strace"))
			if err := trace.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second) // strace attaches to every thread
		}
		if cg {
			callgrindControl(t, p.pid, "-z")
			callgrindControl(t, p.pid, "-i", "on")
		}
		w0 := time.Now()
		units, client := f()
		wall := time.Since(w0)
		if cg {
			callgrindControl(t, p.pid, "-i", "off")
			callgrindControl(t, p.pid, "-d", name)
		}
		if trace != nil {
			_ = trace.Process.Signal(os.Interrupt)
			_ = trace.Wait()
		}
		a1 := child.alloc(t)
		if !cg {
			child.command(t, "heap "+filepath.Join(out, name+".heap1"))
			child.command(t, "cpu-stop")
		}
		p1, _ := treeCPU(p.pid)
		t1 := settledTreeCPU(target, tn)
		per := func(d time.Duration) float64 { return d.Seconds() * 1e3 / units }
		t.Logf("%s: %.3g %s in %v; per %s: postern %.1f ms CPU, %.0f allocs, %.0f KiB allocated, %.2f GCs; target %.1f ms CPU; client %.1f ms CPU; profile %s",
			name, units, unit, wall.Round(time.Millisecond), unit, per(p1-p0), float64(a1.Mallocs-a0.Mallocs)/units,
			float64(a1.TotalAlloc-a0.TotalAlloc)/1024/units, float64(a1.NumGC-a0.NumGC)/units, per(t1-t0), per(client), file)
	}

	// Idle recorded sessions: a heap profile (inuse_space) with them open.
	if n := envInt("POSTERN_BENCH_PROFILE_IDLE", 300); n > 0 && want("idle") {
		hops := openIdleSessions(t, e, p, n)
		p.awaitEvents(t, state.EventSessionStart, n, time.Minute)
		file := filepath.Join(out, "idle.heap")
		child.command(t, "heap "+file)
		t.Logf("idle: %d sessions, heap profile %s", n, file)
		sealed := p.countEvents(state.EventSessionSealed)
		for _, h := range hops {
			h.Close()
		}
		// Their seals must not weigh on the profiles below.
		p.awaitEvents(t, state.EventSessionSealed, sealed+n, 2*time.Minute)
	}
	if os.Getenv("POSTERN_BENCH_PROFILE_HEAP_ONLY") != "" {
		return
	}

	const gib = 1 << 30
	const size = 64 << 20
	cat := func(host string, rec bool) func() (float64, time.Duration) {
		return func() (float64, time.Duration) {
			var moved int64
			var client time.Duration
			for range envInt("POSTERN_BENCH_PROFILE_REPS", 3) {
				sealed := p.countEvents(state.EventSessionSealed)
				r, err := runSSH("-F", e.sshCfg, host, fmt.Sprintf("head -c %d %s", size, e.payloads["text"]))
				if err != nil {
					t.Fatal(err)
				}
				if r.bytes != size {
					t.Fatalf("%s: %d bytes; want %d", host, r.bytes, size)
				}
				if rec {
					p.awaitEvents(t, state.EventSessionSealed, sealed+1, time.Minute)
				}
				moved += r.bytes
				client += r.cpu
			}
			return float64(moved) / gib, client
		}
	}
	profile("unrecorded", e.targets["plain-aes"].PID(), "GiB", cat("web-plain-aes", false))
	profile("recorded", e.targets["rec-aes"].PID(), "GiB", cat("web-rec-aes", true))
	_, port, _ := net.SplitHostPort(e.sources["text"])
	profile("forward", 0, "GiB", func() (float64, time.Duration) {
		r, err := runSSH("-F", e.sshCfg, "-W", net.JoinHostPort("src-text", port), "pj-aes")
		if err != nil {
			t.Fatal(err)
		}
		if r.bytes != streamSize {
			t.Fatalf("forward: %d bytes; want %d", r.bytes, streamSize)
		}
		return float64(r.bytes) / gib, r.cpu
	})
	sessions := func(host string) func() (float64, time.Duration) {
		return func() (float64, time.Duration) {
			const workers = 4
			each := envInt("POSTERN_BENCH_PROFILE_SESSIONS", 100) / workers
			sealed := p.countEvents(state.EventSessionSealed)
			ev0 := p.eventCounts()
			var mu sync.Mutex
			var client time.Duration
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for range each {
						r, err := runSSH("-F", e.sshCfg, host, "true")
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						client += r.cpu
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			if t.Failed() {
				t.FailNow()
			}
			p.awaitEvents(t, state.EventSessionSealed, sealed+workers*each, time.Minute)
			ev1 := p.eventCounts()
			var b strings.Builder
			for _, typ := range slices.Sorted(maps.Keys(ev1)) {
				if d := ev1[typ] - ev0[typ]; d > 0 {
					fmt.Fprintf(&b, " %s %.2f", typ, float64(d)/float64(workers*each))
				}
			}
			t.Logf("sessions: audit events per session:%s", b.String())
			return float64(workers * each), client
		}
	}
	profile("sessions", 0, "session", sessions("cmd-true"))
	profile("sessions-ssh", e.targets["rec-aes"].PID(), "session", sessions("web-rec-aes"))
}

// callgrindEnv runs TestProfile's child under callgrind (any non-empty
// value; the output goes to the profile directory).
const callgrindEnv = "POSTERN_BENCH_PROFILE_CALLGRIND"

// callgrindControl runs callgrind_control with args on the child pid.
func callgrindControl(t *testing.T, pid int, args ...string) {
	t.Helper()
	out, err := exec.Command("callgrind_control", append(args, strconv.Itoa(pid))...).CombinedOutput()
	if err != nil {
		t.Fatalf("callgrind_control %v: %v\n%s", args, err, out)
	}
}
