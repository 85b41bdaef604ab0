//go:build bench

package bench

import (
	"cmp"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/state"
)

// TestAB compares two postern binaries, for changes whose effect is smaller
// than the noise of wall-clock rates on a shared machine. The binaries at
// $POSTERN_BENCH_A and $POSTERN_BENCH_B (each this tree's build if unset)
// serve the same targets, and each
// round runs every path once through each, in alternating order, with the
// stock ssh client. It logs, per path, the medians of the CPU time per GiB
// (or per session) of postern (user and system), of the target sshd and of
// the client, for A and for B, and B ÷ A. CPU time is what the kernel
// accounts to each process; unlike a rate it does not fall when the
// neighbours take the CPU.
//
// $POSTERN_BENCH_AB_PATHS picks the paths (comma-separated; default
// plain-aes,rec-aes): plain-C, rec-C and pass-C (bulk output of `head -c`
// through the unrecorded or recorded inner hop, or passthrough, with cipher
// C = aes or chacha; a "zeros-" prefix sends NUL bytes instead of text),
// forward-C (`ssh -W` to a tcp target) and sessions (recorded sessions to
// the command target, 4 clients at a time). $POSTERN_BENCH_REPS sets the
// rounds (default 5), $POSTERN_BENCH_BULK_MIB the bulk size (default 64).
func TestAB(t *testing.T) {
	testutil.Need(t, "/usr/sbin/sshd", "ssh")
	// Either binary defaults to this tree's build: with neither set, the run
	// is an A/A comparison, which shows the noise a real one must exceed.
	binA, binB := os.Getenv("POSTERN_BENCH_A"), os.Getenv("POSTERN_BENCH_B")
	if binA == "" || binB == "" {
		built := testutil.PosternBinary(t)
		binA, binB = cmp.Or(binA, built), cmp.Or(binB, built)
	}
	reps := envInt("POSTERN_BENCH_REPS", 5)
	size := envInt("POSTERN_BENCH_BULK_MIB", 64) << 20
	paths := strings.Split(orDefault(os.Getenv("POSTERN_BENCH_AB_PATHS"), "plain-aes,rec-aes"), ",")
	e := newEnvWith(t, size, false)
	sides := []struct {
		name string
		p    *postern
		cfg  string
	}{{name: "A"}, {name: "B"}}
	for i, bin := range []string{binA, binB} {
		p := e.startPosternBin(sides[i].name, bin)
		sides[i].p, sides[i].cfg = p, e.writeSSHConfigFor(p, "ssh_config_"+sides[i].name)
	}
	e.sshCfg = sides[0].cfg
	_, srcPort, _ := net.SplitHostPort(e.sources["text"])

	type sample struct {
		user, sys, target, client time.Duration
		units                     float64
	}
	// run measures one path once through postern p.
	run := func(path string, p *postern, cfg string) sample {
		var s sample
		u0, s0 := procCPU(p.pid)
		name, workload := path, "text"
		if rest, ok := strings.CutPrefix(path, "zeros-"); ok {
			name, workload = rest, "zeros"
		}
		kind, cipher, _ := strings.Cut(name, "-")
		var target int
		switch kind {
		case "plain", "rec", "pass":
			target = e.targets[kind+"-"+cipher].PID()
		}
		tc0, tn := treeCPU(target)
		switch kind {
		case "plain", "rec", "pass":
			sealed := p.countEvents(state.EventSessionSealed)
			r, err := runSSH("-F", cfg, "web-"+name, fmt.Sprintf("head -c %d %s", size, e.payloads[workload]))
			if err != nil || r.bytes != int64(size) {
				t.Fatalf("%s: %d bytes, %v", path, r.bytes, err)
			}
			if kind == "rec" {
				p.awaitEvents(t, state.EventSessionSealed, sealed+1, time.Minute)
			}
			s.client, s.units = r.cpu, float64(r.bytes)/(1<<30)
		case "forward":
			r, err := runSSH("-F", cfg, "-W", net.JoinHostPort("src-text", srcPort), "pj-"+cipher)
			if err != nil || r.bytes != streamSize {
				t.Fatalf("%s: %d bytes, %v", path, r.bytes, err)
			}
			s.client, s.units = r.cpu, float64(r.bytes)/(1<<30)
		case "sessions":
			const workers, each = 4, 10
			sealed := p.countEvents(state.EventSessionSealed)
			var mu sync.Mutex
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for range each {
						r, err := runSSH("-F", cfg, "cmd-true", "true")
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						s.client += r.cpu
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			if t.Failed() {
				t.FailNow()
			}
			p.awaitEvents(t, state.EventSessionSealed, sealed+workers*each, time.Minute)
			s.units = workers * each
		default:
			t.Fatalf("unknown path %q", path)
		}
		u1, s1 := procCPU(p.pid)
		s.user, s.sys = u1-u0, s1-s0
		s.target = settledTreeCPU(target, tn) - tc0
		return s
	}
	for _, path := range paths {
		res := map[string][]sample{}
		for i := 0; i <= reps; i++ {
			order := []int{0, 1}
			if i%2 == 1 {
				order = []int{1, 0}
			}
			for _, k := range order {
				s := run(path, sides[k].p, sides[k].cfg)
				if i > 0 { // the first round is the warm-up
					res[sides[k].name] = append(res[sides[k].name], s)
				}
			}
		}
		unit := "GiB"
		if path == "sessions" {
			unit = "session"
		}
		med := func(side string, f func(sample) time.Duration) float64 {
			var v Samples
			for _, s := range res[side] {
				v = append(v, f(s).Seconds()*1e3/s.units)
			}
			return v.Median()
		}
		cols := []struct {
			name string
			f    func(sample) time.Duration
		}{
			{"postern user", func(s sample) time.Duration { return s.user }},
			{"postern sys", func(s sample) time.Duration { return s.sys }},
			{"postern", func(s sample) time.Duration { return s.user + s.sys }},
			{"target", func(s sample) time.Duration { return s.target }},
			{"client", func(s sample) time.Duration { return s.client }},
			{"whole path", func(s sample) time.Duration { return s.user + s.sys + s.target + s.client }},
		}
		var b strings.Builder
		fmt.Fprintf(&b, "%s: ms CPU per %s, medians of %d rounds", path, unit, reps)
		for _, c := range cols {
			a, bb := med("A", c.f), med("B", c.f)
			fmt.Fprintf(&b, "\n  %-13s A %8.1f  B %8.1f  B÷A %.3f", c.name, a, bb, bb/a)
		}
		t.Log(b.String())
	}
}

// procCPU returns the user and system CPU time of process pid itself.
func procCPU(pid int) (user, sys time.Duration) {
	fs, err := statFields(pid)
	if err != nil {
		return 0, 0
	}
	u, _ := strconv.ParseInt(fs[11], 10, 64)
	s, _ := strconv.ParseInt(fs[12], 10, 64)
	return time.Duration(u) * time.Second / clockTicks, time.Duration(s) * time.Second / clockTicks
}
