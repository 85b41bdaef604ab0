//go:build bench

package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/state"
)

// TestCompare runs every row of the comparison and writes
// bench/results/latest.md and latest.json. Knobs (environment):
// POSTERN_BENCH_REPS (repetitions, default 5), POSTERN_BENCH_BULK_MIB (cat
// size, default 64), POSTERN_BENCH_SESSIONS (idle sessions, default 1000),
// POSTERN_BENCH_GOGC (GOGC of the postern process), POSTERN_BIN (a built
// postern instead of building one), POSTERN_BENCH_OUT (results directory),
// POSTERN_BENCH_ONLY (comma-separated subset of bulk, forward, setup,
// keystroke, sessions, certs, memory).
func TestCompare(t *testing.T) {
	start := time.Now()
	testutil.Need(t, "/usr/sbin/sshd", "ssh")
	reps := envInt("POSTERN_BENCH_REPS", 5)
	bulk := envInt("POSTERN_BENCH_BULK_MIB", 64) << 20
	idle := envInt("POSTERN_BENCH_SESSIONS", 1000)
	e := newEnv(t, bulk)
	t.Logf("environment up in %v; postern at %s", time.Since(start).Round(time.Millisecond), e.postern.addr)

	r := &Report{Started: start.UTC(), Machine: describeMachine()}
	r.Settings = []string{
		fmt.Sprintf("ciphers %s and %s on every hop of both sides (the target sshd offers only the cipher under test, so postern's upstream hop uses it too); key exchange %s on both (OpenSSH's default post-quantum exchange would cost OpenSSH alone ~130 ms per handshake)", ssh.CipherAES128GCM, ssh.CipherChaCha20Poly1305, kex),
		"OpenSSH side: stock sshd as the jump host (ssh -J); postern side: the postern binary, one process, log level warn",
		fmt.Sprintf("text workload: base64 of random bytes in 76-column lines; zeros: NUL bytes (worst case for the recorder); bulk output is `cat` of a %d MiB file (zeros: %d MiB) on the target sshd; forwards stream %d MiB from a TCP source", bulk>>20, bulk>>21, streamSize>>20),
		fmt.Sprintf("one warm-up, then %d repetitions with OpenSSH and postern runs alternating; figures are median (min–max)", reps),
		"GOGC of postern: " + orDefault(os.Getenv("POSTERN_BENCH_GOGC"), "default (100)"),
	}

	only := map[string]bool{}
	for _, k := range strings.Split(os.Getenv("POSTERN_BENCH_ONLY"), ",") {
		if k = strings.TrimSpace(k); k != "" {
			only[k] = true
		}
	}
	want := func(k string) bool { return len(only) == 0 || only[k] }
	var bulkRows, cpuRows, rec []Row
	if want("bulk") {
		var cpu []CPURow
		bulkRows, cpuRows, cpu = e.bulk(reps, bulk)
		r.CPU = append(r.CPU, cpu...)
	}
	for _, row := range bulkRows {
		if !strings.HasPrefix(row.Name, "recorded") {
			r.Rows = append(r.Rows, row)
		} else {
			rec = append(rec, row)
		}
	}
	if want("forward") {
		rows, cpu := e.forward(reps)
		r.Rows = append(r.Rows, rows...)
		r.CPU = append(r.CPU, cpu...)
	}
	r.Rows = append(r.Rows, rec...)
	if want("setup") {
		r.Rows = append(r.Rows, e.setup(2*reps))
	}
	if want("keystroke") {
		r.Rows = append(r.Rows, e.keystroke(2000))
	}
	if want("sessions") {
		r.Rows = append(r.Rows, e.sessions(3, 3*time.Second))
		r.Rows = append(r.Rows, e.sessionsSSH(3, 3*time.Second)...)
	}
	if want("certs") {
		r.Rows = append(r.Rows, certIssuance(t)...)
	}
	if want("memory") {
		r.Rows = append(r.Rows, e.memory(idle)...)
	}
	r.Rows = append(r.Rows, cpuRows...)
	r.Duration = time.Since(start).Round(time.Second).String()

	writeReport(t, r, "latest")
}

// Load clients.
const (
	clientXCrypto = "x/crypto"
	clientSSH     = "stock ssh"
)

// loadClients are the clients every throughput row is measured with: the
// x/crypto client in this process, and the stock OpenSSH client (what
// users run), a process of its own.
var loadClients = []string{clientXCrypto, clientSSH}

// transfer is one measured repetition of a path: the wall time the rate is
// taken over, the bytes moved, and the CPU time of each process on the
// path: the middle (postern, or OpenSSH's jump sshd with its
// per-connection processes), the target sshd (with its session's
// processes) and the client.
type transfer struct {
	wall                   time.Duration
	bytes                  int64
	middle, target, client time.Duration
}

// pathProcs names the processes a transfer is accounted to.
type pathProcs struct {
	middle, target int // PIDs of process trees
}

// measure runs one transfer with f and takes each process's CPU time
// around it. f returns the bytes moved, the wall time of the rate and, for
// the stock client, its own CPU time (for the x/crypto client, this
// process's CPU time is taken instead). Trees are read once the processes
// of a connection that f closed have been reaped; wait, if not nil, runs
// before the middle's CPU is read (the recording's seal).
func measure(pp pathProcs, client string, f func() (int64, time.Duration, time.Duration, error), wait func()) (transfer, error) {
	m0, mn := treeCPU(pp.middle)
	t0, tn := treeCPU(pp.target)
	self0 := selfCPU()
	n, wall, ccpu, err := f()
	if err != nil {
		return transfer{}, err
	}
	self1 := selfCPU()
	if wait != nil {
		wait()
	}
	tr := transfer{wall: wall, bytes: n, client: ccpu,
		middle: settledTreeCPU(pp.middle, mn) - m0, target: settledTreeCPU(pp.target, tn) - t0}
	if client == clientXCrypto {
		tr.client = self1 - self0
	}
	return tr, nil
}

// cpuPerGiB summarises one process's CPU time per GiB moved over runs.
func cpuPerGiB(runs []transfer, which func(transfer) time.Duration) Figure {
	var s Samples
	for _, r := range runs {
		if r.bytes > 0 {
			s = append(s, which(r).Seconds()*1e3/(float64(r.bytes)/(1<<30)))
		}
	}
	return NewFigure("ms/GiB", s)
}

// cpuRow is the CPU table's line for one path and client.
func cpuRow(path, variant, client, side string, runs []transfer) CPURow {
	return CPURow{Path: path, Variant: variant, Client: client, Side: side,
		Middle:    cpuPerGiB(runs, func(r transfer) time.Duration { return r.middle }),
		Target:    cpuPerGiB(runs, func(r transfer) time.Duration { return r.target }),
		ClientCPU: cpuPerGiB(runs, func(r transfer) time.Duration { return r.client }),
		Total:     cpuPerGiB(runs, func(r transfer) time.Duration { return r.middle + r.target + r.client })}
}

// bulkModes are the paths of the bulk rows: OpenSSH's jump host, postern's
// unrecorded and recorded inner hop, and postern's passthrough.
var bulkModes = []string{"openssh", "plain", "rec", "pass"}

// bulkNames describes the bulk modes in the CPU table.
var bulkNames = map[string]string{
	"openssh": "OpenSSH -J (jump sshd)", "plain": "postern inner hop, unrecorded",
	"rec": "postern inner hop, recorded", "pass": "postern passthrough (spliced)",
}

// bulk measures `head -c N` of a file on the target through OpenSSH's
// jump host, postern's unrecorded and recorded inner hop and postern's
// passthrough, with both load clients. It returns the throughput rows, the
// CPU-cost-of-recording rows and the CPU table.
func (e *env) bulk(reps, size int) (rows, recRows []Row, cpu []CPURow) {
	t := e.t
	for _, c := range ciphers {
		for _, w := range workloads {
			n := size
			wreps := reps
			if w == "zeros" {
				n, wreps = size/2, max(3, reps-2)
			}
			path := e.payloads[w]
			cmd := fmt.Sprintf("head -c %d %s", n, path)
			hops := map[string]*hop{}
			for _, m := range bulkModes {
				var h *hop
				var err error
				if m == "openssh" {
					h, err = e.viaOpenSSH(c.short, c.name)
				} else {
					h, err = e.viaPostern(e.postern, c.name, "web-"+m+"-"+c.short)
				}
				if err != nil {
					t.Fatalf("%s %s: %v", m, c.short, err)
				}
				defer h.Close()
				hops[m] = h
			}
			procs := func(m string) pathProcs {
				if m == "openssh" {
					return pathProcs{middle: e.jump.PID(), target: e.targets["plain-"+c.short].PID()}
				}
				return pathProcs{middle: e.postern.pid, target: e.targets[m+"-"+c.short].PID()}
			}
			sshHost := func(m string) string {
				if m == "openssh" {
					return "o-" + c.short
				}
				return "web-" + m + "-" + c.short
			}
			res := map[string]map[string][]transfer{clientXCrypto: {}, clientSSH: {}}
			for i := 0; i <= wreps; i++ {
				for _, cl := range loadClients {
					for j := range bulkModes {
						m := bulkModes[(i+j)%len(bulkModes)] // rotate the order
						sealed := e.postern.countEvents(state.EventSessionSealed)
						var wait func()
						if m == "rec" {
							wait = func() { e.postern.awaitEvents(t, state.EventSessionSealed, sealed+1, 2*time.Minute) }
						}
						tr, err := measure(procs(m), cl, func() (int64, time.Duration, time.Duration, error) {
							if cl == clientSSH {
								r, err := runSSH("-F", e.sshCfg, sshHost(m), cmd)
								return r.bytes, r.flow, r.cpu, err
							}
							t0 := time.Now()
							got, err := catFile(hops[m].inner, path, n)
							return got, time.Since(t0), 0, err
						}, wait)
						if err != nil {
							t.Fatalf("%s %s %s %s: %v", cl, m, c.short, w, err)
						}
						if tr.bytes != int64(n) {
							t.Fatalf("%s %s %s %s: read %d bytes; want %d", cl, m, c.short, w, tr.bytes, n)
						}
						if i > 0 { // the first round is the warm-up
							res[cl][m] = append(res[cl][m], tr)
						}
					}
				}
			}
			variant := c.short + ", " + w
			for _, cl := range loadClients {
				mbps := func(m string) Samples {
					var s Samples
					for _, r := range res[cl][m] {
						s = append(s, float64(r.bytes)/r.wall.Seconds()/1e6)
					}
					return s
				}
				base := NewFigure("MB/s", mbps("openssh"))
				timing := "wall time from the session's start to its exit status"
				if cl == clientSSH {
					timing = "`ssh -F cfg HOST 'head -c N FILE'` (ProxyJump in the config), output to a pipe; wall time from the first byte of output to the last (the handshakes are left out)"
				}
				for _, m := range []string{"plain", "rec", "pass"} {
					f := NewFigure("MB/s", mbps(m))
					row := Row{Variant: variant, Client: cl, Postern: f, OpenSSH: base, Value: f.Median / base.Median, ValueUnit: "×"}
					switch m {
					case "plain":
						row.Name = "unrecorded -J bulk output (inner hop)"
						row.Note = "the client runs `head -c N FILE` on the target through the jump host; postern terminates the inner hop (record: off); " + timing
						if w == "text" {
							row.Check(true, 1.25)
						}
					case "rec":
						row.Name = "recorded -J bulk output ÷ OpenSSH unrecorded"
						row.Note = "same, with postern recording the session (asciicast v2 to the spool, then sealed into the file store)"
						if w == "text" {
							row.Check(true, 1.0)
						}
					case "pass":
						row.Name = "passthrough -J bulk output (spliced, unrecorded)"
						row.Note = "same through a passthrough target: postern splices the client's own SSH stream to the target"
					}
					rows = append(rows, row)
				}
				pcpu := func(m string) Samples {
					var s Samples
					for _, r := range res[cl][m] {
						s = append(s, r.middle.Seconds()*1e3)
					}
					return s
				}
				cr, cp := NewFigure("ms CPU", pcpu("rec")), NewFigure("ms CPU", pcpu("plain"))
				row := Row{Name: "CPU cost of recording (recorded ÷ unrecorded inner hop)", Variant: variant, Client: cl,
					Postern: cr, OpenSSH: Figure{}, Value: cr.Median / cp.Median, ValueUnit: "×",
					Note: "postern process CPU time (utime+stime) per transfer, recorded (including sealing) over unrecorded"}
				row.Note += fmt.Sprintf("; %s: unrecorded median %s", variant+", "+cl, cp)
				if w == "text" {
					row.Check(false, 1.10)
				}
				recRows = append(recRows, row)
				for _, m := range bulkModes {
					side := "postern"
					if m == "openssh" {
						side = "OpenSSH"
					}
					cpu = append(cpu, cpuRow(bulkNames[m], variant, cl, side, res[cl][m]))
				}
			}
			for _, h := range hops {
				h.Close()
			}
		}
	}
	return rows, recRows, cpu
}

// catFile runs `head -c n path` (cat of the first n bytes) and discards
// the output, returning how many bytes arrived.
func catFile(c *ssh.Client, path string, n int) (int64, error) {
	s, err := c.NewSession()
	if err != nil {
		return 0, fmt.Errorf("session: %w", err)
	}
	defer s.Close()
	out, err := s.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := s.Start(fmt.Sprintf("head -c %d %s", n, path)); err != nil {
		return 0, fmt.Errorf("start: %w", err)
	}
	got, err := io.Copy(io.Discard, out)
	if err != nil {
		return got, fmt.Errorf("read: %w", err)
	}
	if err := s.Wait(); err != nil {
		return got, fmt.Errorf("wait: %w", err)
	}
	return got, nil
}

// forward measures a direct-tcpip forward (ssh -W / -L) to a TCP source
// streaming 256 MiB, through OpenSSH's jump host and through postern, with
// both load clients. The TCP source runs in this process: with the
// x/crypto client its CPU time is counted as the client's.
func (e *env) forward(reps int) (rows []Row, cpu []CPURow) {
	t := e.t
	for _, c := range ciphers {
		oj, err := e.dialJump(c.name)
		if err != nil {
			t.Fatal(err)
		}
		pj, err := e.dialPostern(e.postern, c.name)
		if err != nil {
			t.Fatal(err)
		}
		src := e.sources["text"]
		_, port, _ := net.SplitHostPort(src)
		dial := map[string]func() (net.Conn, error){
			"openssh": func() (net.Conn, error) { return oj.Dial("tcp", src) },
			"postern": func() (net.Conn, error) { return pj.Dial("tcp", net.JoinHostPort("src-text", port)) },
		}
		sshArgs := map[string][]string{
			"openssh": {"-F", e.sshCfg, "-W", src, "oj-" + c.short},
			"postern": {"-F", e.sshCfg, "-W", net.JoinHostPort("src-text", port), "pj-" + c.short},
		}
		middle := map[string]int{"openssh": e.jump.PID(), "postern": e.postern.pid}
		res := map[string]map[string][]transfer{clientXCrypto: {}, clientSSH: {}}
		for i := 0; i <= reps; i++ {
			for _, cl := range loadClients {
				for _, m := range alternate(i) {
					tr, err := measure(pathProcs{middle: middle[m]}, cl, func() (int64, time.Duration, time.Duration, error) {
						if cl == clientSSH {
							r, err := runSSH(sshArgs[m]...)
							return r.bytes, r.flow, r.cpu, err
						}
						nc, err := dial[m]()
						if err != nil {
							return 0, 0, 0, err
						}
						defer nc.Close()
						t0 := time.Now()
						n, err := io.Copy(io.Discard, nc)
						return n, time.Since(t0), 0, err
					}, nil)
					if err != nil || tr.bytes != streamSize {
						t.Fatalf("forward %s %s: %d bytes, %v", cl, m, tr.bytes, err)
					}
					if i > 0 {
						res[cl][m] = append(res[cl][m], tr)
					}
				}
			}
		}
		oj.Close()
		pj.Close()
		for _, cl := range loadClients {
			mbps := func(m string) Samples {
				var s Samples
				for _, r := range res[cl][m] {
					s = append(s, float64(r.bytes)/r.wall.Seconds()/1e6)
				}
				return s
			}
			p, o := NewFigure("MB/s", mbps("postern")), NewFigure("MB/s", mbps("openssh"))
			row := Row{Name: "raw forward throughput (ssh -W/-L)", Variant: c.short, Client: cl, Postern: p, OpenSSH: o,
				Value: p.Median / o.Median, ValueUnit: "×",
				Note: fmt.Sprintf("the client opens a direct-tcpip channel (x/crypto: Dial; stock ssh: `ssh -W HOST:PORT JUMP`, first byte to last) to a TCP source that sends %d MiB of text and closes; postern reaches it as a tcp target (splice path)", streamSize>>20)}
			row.Check(true, 1.25)
			rows = append(rows, row)
			cpu = append(cpu,
				cpuRow("OpenSSH jump, raw forward", c.short+", text", cl, "OpenSSH", res[cl]["openssh"]),
				cpuRow("postern, raw forward", c.short+", text", cl, "postern", res[cl]["postern"]))
		}
	}
	return rows, cpu
}

// setup measures the wall time of the stock `ssh -J … true`.
func (e *env) setup(reps int) Row {
	t := e.t
	res := map[string]Samples{}
	hosts := map[string]string{"openssh": "o-aes", "postern": "web-rec-aes"}
	for i := 0; i <= reps; i++ {
		for _, m := range alternate(i) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			cmd := exec.CommandContext(ctx, "ssh", "-F", e.sshCfg, hosts[m], "true")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			t0 := time.Now()
			err := cmd.Run()
			wall := time.Since(t0)
			cancel()
			if err != nil {
				t.Fatalf("ssh %s true: %v\n%s", hosts[m], err, stderr.String())
			}
			if i > 0 {
				res[m] = append(res[m], float64(wall.Microseconds())/1e3)
			}
		}
	}
	p, o := NewFigure("ms", res["postern"]), NewFigure("ms", res["openssh"])
	row := Row{Name: "session set-up latency (ssh -J … true, wall)", Variant: "aes, recorded", Client: "stock ssh",
		Postern: p, OpenSSH: o, Value: p.Median / o.Median, ValueUnit: "×",
		Note: "stock OpenSSH client, `ssh -F cfg -J JUMP TARGET true` (ProxyJump in the config), wall time of the whole command; postern records the session"}
	row.Check(false, 0.5)
	return row
}

// keystroke measures single-byte round trips in an interactive session
// with a pty (the target runs `cat` in raw mode): OpenSSH's jump host
// against a recorded postern session.
func (e *env) keystroke(n int) Row {
	t := e.t
	type echo struct {
		in  io.Writer
		out io.Reader
	}
	open := func(h *hop) echo {
		s, err := h.inner.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.RequestPty("xterm", 24, 80, ssh.TerminalModes{ssh.ECHO: 0}); err != nil {
			t.Fatal(err)
		}
		in, _ := s.StdinPipe()
		out, _ := s.StdoutPipe()
		if err := s.Start("stty raw -echo && printf READY && exec cat"); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 0, 64)
		one := make([]byte, 64)
		for !bytes.Contains(buf, []byte("READY")) {
			k, err := out.Read(one)
			if err != nil {
				t.Fatalf("waiting for the echo shell: %v (%q)", err, buf)
			}
			buf = append(buf, one[:k]...)
		}
		return echo{in: in, out: out}
	}
	oh, err := e.viaOpenSSH("aes", ssh.CipherAES128GCM)
	if err != nil {
		t.Fatal(err)
	}
	defer oh.Close()
	ph, err := e.viaPostern(e.postern, ssh.CipherAES128GCM, "web-rec-aes")
	if err != nil {
		t.Fatal(err)
	}
	defer ph.Close()
	sides := map[string]echo{"openssh": open(oh), "postern": open(ph)}
	rtt := func(x echo, count int) Samples {
		s := make(Samples, 0, count)
		b := []byte{0}
		got := make([]byte, 1)
		for i := range count {
			b[0] = 'a' + byte(i%26)
			t0 := time.Now()
			if _, err := x.in.Write(b); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(x.out, got); err != nil || got[0] != b[0] {
				t.Fatalf("echo: %q, %v", got, err)
			}
			s = append(s, float64(time.Since(t0).Nanoseconds())/1e6)
		}
		return s
	}
	for _, m := range []string{"openssh", "postern"} {
		rtt(sides[m], 200) // warm-up
	}
	res := map[string]Samples{}
	for range 2 {
		for _, m := range []string{"openssh", "postern"} {
			res[m] = append(res[m], rtt(sides[m], n/2)...)
		}
	}
	p99p, p99o := res["postern"].Quantile(0.99), res["openssh"].Quantile(0.99)
	row := Row{Name: "keystroke round trip, recorded, added p99", Variant: "aes, pty", Client: "x/crypto",
		Postern:   Figure{Median: p99p, Min: res["postern"].Median(), Max: res["postern"].Max(), N: len(res["postern"]), Unit: "ms p99"},
		OpenSSH:   Figure{Median: p99o, Min: res["openssh"].Median(), Max: res["openssh"].Max(), N: len(res["openssh"]), Unit: "ms p99"},
		Value:     p99p - p99o,
		ValueUnit: "ms",
		Note:      fmt.Sprintf("x/crypto client, pty, `cat` in raw mode on the target; %d one-byte round trips per side in alternating blocks; figures are p99 (median–max)", n),
	}
	row.Check(false, 1)
	return row
}

// sessions measures new recorded sessions per second to the command target
// (connect, authenticate, inner hop, exec true, close) and divides by the
// CPU time postern spent, so the figure is per core of postern.
func (e *env) sessions(reps int, d time.Duration) Row {
	t := e.t
	workers := 4 * runtime.NumCPU()
	one := func() error {
		h, err := e.viaPostern(e.postern, ssh.CipherAES128GCM, "cmd-true")
		if err != nil {
			return err
		}
		defer h.Close()
		s, err := h.inner.NewSession()
		if err != nil {
			return err
		}
		defer s.Close()
		return s.Run("true")
	}
	burst := func(d time.Duration) (int, time.Duration, time.Duration) {
		sealed := e.postern.countEvents(state.EventSessionSealed)
		cpu0, _ := cpuTime(e.postern.pid)
		var done atomic.Int64
		var failed atomic.Value
		stop := time.Now().Add(d)
		t0 := time.Now()
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for time.Now().Before(stop) {
					if err := one(); err != nil {
						failed.Store(err)
						return
					}
					done.Add(1)
				}
			})
		}
		wg.Wait()
		wall := time.Since(t0)
		if err, ok := failed.Load().(error); ok {
			t.Fatalf("session to cmd-true: %v", err)
		}
		e.postern.awaitEvents(t, state.EventSessionSealed, sealed+int(done.Load()), time.Minute)
		cpu1, _ := cpuTime(e.postern.pid)
		return int(done.Load()), wall, cpu1 - cpu0
	}
	burst(time.Second) // warm-up
	var perCore, perSec Samples
	for range reps {
		n, wall, cpu := burst(d)
		perCore = append(perCore, float64(n)/cpu.Seconds())
		perSec = append(perSec, float64(n)/wall.Seconds())
	}
	// OpenSSH reference: exec true straight to the target sshd, no jump.
	var ref Samples
	oneSSHD := func() error {
		c, err := ssh.Dial("tcp", e.targets["plain-aes"].Addr(), clientConfig(e.login, e.plain, ssh.FixedHostKey(e.targets["plain-aes"].HostKey()), ssh.CipherAES128GCM))
		if err != nil {
			return err
		}
		defer c.Close()
		s, err := c.NewSession()
		if err != nil {
			return err
		}
		defer s.Close()
		return s.Run("true")
	}
	{
		var done atomic.Int64
		stop := time.Now().Add(d)
		t0 := time.Now()
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for time.Now().Before(stop) {
					if err := oneSSHD(); err != nil {
						t.Errorf("sshd exec true: %v", err)
						return
					}
					done.Add(1)
				}
			})
		}
		wg.Wait()
		ref = append(ref, float64(done.Load())/time.Since(t0).Seconds())
	}
	p := NewFigure("sessions/s per postern CPU-second", perCore)
	row := Row{Name: "new recorded sessions per second to a command target, per core", Variant: "aes", Client: "x/crypto",
		Postern: p, OpenSSH: NewFigure("sessions/s (sshd exec true, whole machine)", ref), Value: p.Median, ValueUnit: "/s",
		Note: fmt.Sprintf("%d x/crypto clients in parallel for %v per repetition: connect, authenticate with the certificate, open the inner hop to the command target `/bin/true`, exec, close; every session recorded and sealed; divided by postern's CPU time (wall rate on the whole machine, load generator included: %s)", workers, d, NewFigure("sessions/s", perSec))}
	row.Check(true, 300)
	return row
}

// sessionsSSH measures sessions per CPU-second with the stock client
// (`ssh -F cfg HOST true`, ProxyJump in the config, 4 clients in
// parallel): recorded sessions to the command target per postern
// CPU-second, and sessions to the same sshd target (`true` run by sshd)
// per CPU-second of the jump host: postern recording them against
// OpenSSH's jump sshd forwarding them.
func (e *env) sessionsSSH(reps int, d time.Duration) []Row {
	t := e.t
	const workers = 4
	// burst runs the clients for d and returns the sessions, the wall time
	// and the CPU time of the middle's process tree.
	burst := func(host string, middle int, d time.Duration) (int, time.Duration, time.Duration) {
		sealed := e.postern.countEvents(state.EventSessionSealed)
		c0, n0 := treeCPU(middle)
		var done atomic.Int64
		var failed atomic.Value
		stop := time.Now().Add(d)
		t0 := time.Now()
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for time.Now().Before(stop) {
					if _, err := runSSH("-F", e.sshCfg, host, "true"); err != nil {
						failed.Store(err)
						return
					}
					done.Add(1)
				}
			})
		}
		wg.Wait()
		wall := time.Since(t0)
		if err, ok := failed.Load().(error); ok {
			t.Fatalf("ssh %s true: %v", host, err)
		}
		if middle == e.postern.pid {
			e.postern.awaitEvents(t, state.EventSessionSealed, sealed+int(done.Load()), time.Minute)
		}
		return int(done.Load()), wall, settledTreeCPU(middle, n0) - c0
	}
	perCPU := func(host string, middle int) (Samples, Samples) {
		burst(host, middle, time.Second) // warm-up
		var perCore, perSec Samples
		for range reps {
			n, wall, cpu := burst(host, middle, d)
			perCore = append(perCore, float64(n)/cpu.Seconds())
			perSec = append(perSec, float64(n)/wall.Seconds())
		}
		return perCore, perSec
	}
	cmdCore, cmdSec := perCPU("cmd-true", e.postern.pid)
	recCore, recSec := perCPU("web-rec-aes", e.postern.pid)
	jumpCore, jumpSec := perCPU("o-aes", e.jump.PID())
	p := NewFigure("sessions/s per postern CPU-second", cmdCore)
	cmd := Row{Name: "new recorded sessions per second to a command target, per core", Variant: "aes", Client: clientSSH,
		Postern: p, Value: p.Median, ValueUnit: "/s",
		Note: fmt.Sprintf("%d stock ssh clients in parallel for %v per repetition, `ssh -F cfg cmd-true true` (ProxyJump): a new outer and inner connection per session, recorded and sealed; divided by postern's CPU time, its child /bin/true included (wall rate on the whole machine: %s)", workers, d, NewFigure("sessions/s", cmdSec))}
	cmd.Check(true, 300)
	pr, o := NewFigure("sessions/s per jump-host CPU-second", recCore), NewFigure("sessions/s per jump-host CPU-second", jumpCore)
	jump := Row{Name: "ssh -J TARGET true: sessions per CPU-second of the jump host", Variant: "aes, postern recorded", Client: clientSSH,
		Postern: pr, OpenSSH: o, Value: pr.Median / o.Median, ValueUnit: "×",
		Note: fmt.Sprintf("%d stock ssh clients in parallel, `ssh -F cfg HOST true` to the same kind of sshd target (which runs true); postern terminates the inner hop, reuses its upstream login and records; OpenSSH's jump sshd forwards; CPU time of postern against the jump sshd with its per-connection processes (wall rates: postern %s, OpenSSH %s)", workers, NewFigure("sessions/s", recSec), NewFigure("sessions/s", jumpSec))}
	return []Row{cmd, jump}
}

// certIssuance runs the certs package's issuance and OIDC verification
// benchmarks (single goroutine, so per core) and combines them.
func certIssuance(t *testing.T) []Row {
	cmd := exec.Command("go", "test", "-run", "^$", "-bench", "^(BenchmarkIssue|BenchmarkVerify)$", "-benchtime", "2s", "-count", "3", "./certs")
	cmd.Dir = testutil.RepoRoot(t)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("certs benchmarks: %v\n%s", err, out)
	}
	ns := map[string]Samples{}
	re := regexp.MustCompile(`(?m)^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op`)
	for _, m := range re.FindAllStringSubmatch(string(out), -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		ns[m[1]] = append(ns[m[1]], v)
	}
	issue := ns["BenchmarkIssue"]
	if len(issue) == 0 {
		t.Fatalf("no BenchmarkIssue result in:\n%s", out)
	}
	var rows []Row
	for _, alg := range []string{"RS256", "ES256"} {
		v := ns["BenchmarkVerify/"+alg]
		if len(v) == 0 {
			t.Fatalf("no BenchmarkVerify/%s result in:\n%s", alg, out)
		}
		var per Samples
		for i := range min(len(v), len(issue)) {
			per = append(per, 1e9/(v[i]+issue[i]))
		}
		f := NewFigure("certificates/s", per)
		row := Row{Name: "certificate issuance including OIDC verification, per core", Variant: alg + " ID token", Client: "go test -bench",
			Postern: f, Value: f.Median, ValueUnit: "/s",
			Note: fmt.Sprintf("certs BenchmarkVerify (real token verification, keys cached) plus BenchmarkIssue (policy grant, ed25519 signature, audit), one goroutine; verify %.0f µs, issue %.0f µs (medians of 3)", v.Median()/1e3, issue.Median()/1e3)}
		row.Check(true, 2000)
		rows = append(rows, row)
	}
	return rows
}

// memory opens n idle recorded sessions (pty + shell) through a fresh
// postern to the in-process idle target and reports the PSS delta per
// session; the OpenSSH side opens a smaller number of jump connections to
// the same target and reports the jump host's PSS delta per connection.
func (e *env) memory(n int) []Row {
	t := e.t
	p := e.startPostern("mem")
	openIdle := func(dial func() (*hop, error), count int) []*hop { return openIdleHops(t, count, dial) }
	closeAll := func(hs []*hop) {
		for _, h := range hs {
			h.Close()
		}
	}
	dialPostern := func() (*hop, error) { return e.viaPostern(p, ssh.CipherAES128GCM, "idle-rec") }
	warm := openIdle(dialPostern, 20)
	p.awaitEvents(t, state.EventSessionStart, 20, time.Minute)
	before, err := pss(p.pid)
	if err != nil {
		t.Fatal(err)
	}
	hs := openIdle(dialPostern, n)
	p.awaitEvents(t, state.EventSessionStart, 20+n, 2*time.Minute)
	after, err := pss(p.pid)
	if err != nil {
		t.Fatal(err)
	}
	closeAll(hs)
	closeAll(warm)
	perPostern := (after - before) / float64(n)

	// OpenSSH: jump connections with a session each through the jump host
	// (direct-tcpip to the idle target), measured on the jump's processes.
	m := min(n, 100)
	idleTgt := e.idle
	dialJump := func() (*hop, error) {
		jc, err := e.dialJump(ssh.CipherAES128GCM)
		if err != nil {
			return nil, err
		}
		h := &hop{jump: jc}
		nc, err := jc.Dial("tcp", idleTgt.addr)
		if err != nil {
			h.Close()
			return nil, err
		}
		conn, chans, reqs, err := ssh.NewClientConn(nc, idleTgt.addr, clientConfig(e.login, e.plain, ssh.FixedHostKey(idleTgt.hostKey), ssh.CipherAES128GCM))
		if err != nil {
			h.Close()
			return nil, err
		}
		h.inner = ssh.NewClient(conn, chans, reqs)
		return h, nil
	}
	jpid := e.jumpPID()
	ob := treePSS(jpid)
	ohs := openIdle(dialJump, m)
	oa := treePSS(jpid)
	closeAll(ohs)
	perOpenSSH := (oa - ob) / float64(m)

	row := Row{Name: "memory per idle recorded session (PSS delta ÷ sessions)", Variant: fmt.Sprintf("%d sessions, pty+shell", n), Client: "x/crypto",
		Postern:   Figure{Median: perPostern, Min: perPostern, Max: perPostern, N: 1, Unit: "KiB"},
		OpenSSH:   Figure{Median: perOpenSSH, Min: perOpenSSH, Max: perOpenSSH, N: 1, Unit: fmt.Sprintf("KiB (jump host, %d connections)", m)},
		Value:     perPostern,
		ValueUnit: "KiB",
		Note:      fmt.Sprintf("a fresh postern process; %d idle recorded sessions (each its own client connection, inner hop, upstream connection and recording) to an in-process x/crypto target; PSS from /proc/PID/smaps_rollup before (%0.f KiB, 20 sessions open) and after (%.0f KiB); OpenSSH: PSS of the jump sshd and all its per-connection processes", n, before, after),
	}
	row.Check(false, 150)
	return []Row{row}
}

// jumpPID returns the PID of the OpenSSH jump host's listener process.
func (e *env) jumpPID() int {
	for _, pid := range pids() {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(string(b), "sshd") && listensOn(pid, e.jump.Addr()) {
			return pid
		}
	}
	e.t.Fatalf("no process listens on %s", e.jump.Addr())
	return 0
}

func listensOn(pid int, addr string) bool {
	for _, a := range listeningAddrs(pid) {
		if a == addr {
			return true
		}
	}
	return false
}

func pids() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// treePSS sums the PSS of root and all its descendants (sshd's
// per-connection processes start their own sessions, so the process group
// does not hold them).
func treePSS(root int) float64 {
	parent := map[int]int{}
	for _, pid := range pids() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		fs := strings.Fields(s[i+2:])
		if len(fs) < 2 {
			continue
		}
		parent[pid], _ = strconv.Atoi(fs[1])
	}
	var sum float64
	for pid := range parent {
		for p := pid; p > 1; p = parent[p] {
			if p == root {
				if v, err := pss(pid); err == nil {
					sum += v
				}
				break
			}
		}
	}
	return sum
}

// describeMachine reports CPUs, CPU model, ssh -V, the Go version and the kernel.
func describeMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				m.CPUModel = strings.TrimSpace(l[strings.IndexByte(l, ':')+1:])
				break
			}
		}
	}
	if out, err := exec.Command("ssh", "-V").CombinedOutput(); err == nil {
		m.SSH = strings.TrimSpace(string(out))
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// alternate returns the two sides in the order of round i: OpenSSH first
// in even rounds, postern first in odd ones.
func alternate(i int) []string {
	if i%2 == 0 {
		return []string{"openssh", "postern"}
	}
	return []string{"postern", "openssh"}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// openIdleHops opens count idle sessions (pty + shell, stdin kept open as an
// interactive client keeps it) over hops from dial, 16 at a time. On any
// failure it closes what it opened and ends the test.
func openIdleHops(t *testing.T, count int, dial func() (*hop, error)) []*hop {
	t.Helper()
	hops := make([]*hop, count)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= count {
					return
				}
				h, err := dial()
				if err != nil {
					t.Errorf("idle session %d: %v", i, err)
					return
				}
				s, err := h.inner.NewSession()
				if err == nil {
					// Without a reader the x/crypto client sends EOF at once.
					_, err = s.StdinPipe()
				}
				if err == nil {
					err = s.RequestPty("xterm", 24, 80, ssh.TerminalModes{})
				}
				if err == nil {
					err = s.Shell()
				}
				if err != nil {
					t.Errorf("idle session %d: %v", i, err)
					h.Close()
					return
				}
				hops[i] = h
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		for _, h := range hops {
			if h != nil {
				h.Close()
			}
		}
		t.FailNow()
	}
	return hops
}
