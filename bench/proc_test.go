//go:build bench

package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// CPU accounting by process. Every figure is user + system CPU time, which
// the kernel keeps per process (and, once a child is reaped, adds to its
// parent's cutime/cstime), so it does not depend on how busy the machine
// is the way wall-clock rates do.

// treeCPU returns the CPU time of root and every live descendant, with what
// their reaped children used, and the number of processes counted. sshd
// forks per connection and reaps its children, so a connection that ended
// is in the listener's cutime and one still open in its own processes.
func treeCPU(root int) (time.Duration, int) {
	type proc struct {
		parent int
		ticks  int64
	}
	procs := map[int]proc{}
	for _, pid := range pids() {
		fs, err := statFields(pid)
		if err != nil {
			continue
		}
		parent, _ := strconv.Atoi(fs[1])
		var ticks int64
		for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime
			v, _ := strconv.ParseInt(fs[i], 10, 64)
			ticks += v
		}
		procs[pid] = proc{parent: parent, ticks: ticks}
	}
	var sum int64
	n := 0
	for pid, p := range procs {
		for q := pid; q > 1; q = procs[q].parent {
			if q == root {
				sum += p.ticks
				n++
				break
			}
			if _, ok := procs[q]; !ok {
				break
			}
		}
	}
	return time.Duration(sum) * time.Second / clockTicks, n
}

// statFields returns the fields of /proc/PID/stat after the command name:
// state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return nil, errors.New("malformed /proc stat")
	}
	fs := strings.Fields(s[i+2:])
	if len(fs) < 15 {
		return nil, errors.New("short /proc stat")
	}
	return fs, nil
}

// settledTreeCPU waits (up to 5 s) until root's tree is back to at most n
// processes, so that the processes of a connection that just closed have
// been reaped into the listener's cutime, and returns its CPU time.
func settledTreeCPU(root, n int) time.Duration {
	deadline := time.Now().Add(5 * time.Second)
	for {
		cpu, m := treeCPU(root)
		if m <= n || time.Now().After(deadline) {
			return cpu
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// selfCPU is the CPU time of this test process: the x/crypto load clients
// (and the TCP sources and the idle target, which sit idle during the
// throughput rows).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return rusageCPU(&ru)
}

func rusageCPU(ru *syscall.Rusage) time.Duration {
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reaperEnv makes the test binary run as reaper (see TestMain).
const reaperEnv = "POSTERN_BENCH_REAPER"

// prSetChildSubreaper is PR_SET_CHILD_SUBREAPER of prctl(2).
const prSetChildSubreaper = 36

// reaper runs args as a child process with this process's standard files,
// as the subreaper of its process tree: ssh leaves its ProxyJump child
// (`ssh -W`) to finish on its own, and that orphan is reparented here
// rather than to init, so waiting for it puts its CPU time into this
// process's rusage. It then writes its own CPU time in nanoseconds to file
// descriptor 3, so the caller can subtract it, and exits with the child's
// status.
func reaper(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "reaper: no command")
		return 2
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); e != 0 {
		fmt.Fprintln(os.Stderr, "reaper: prctl:", e)
		return 2
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := cmd.Run()
	for {
		var ws syscall.WaitStatus
		_, werr := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(werr, syscall.EINTR) {
			continue
		}
		if werr != nil {
			break // ECHILD: every descendant is reaped
		}
	}
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	if f := os.NewFile(3, "cpu"); f != nil {
		fmt.Fprintf(f, "%d\n", rusageCPU(&ru).Nanoseconds())
		f.Close()
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	default:
		fmt.Fprintln(os.Stderr, "reaper:", err)
		return 2
	}
}

// clientRun is one run of the stock ssh client.
type clientRun struct {
	bytes int64         // bytes of standard output
	total time.Duration // from start to exit
	flow  time.Duration // from the first byte of output to the last
	cpu   time.Duration // CPU time of ssh and every process it started
}

// runSSH runs `ssh ARGS` under the reaper, discards and counts its
// standard output, and measures it. Standard input stays open (an empty
// pipe) until ssh exits, as it does for an interactive client.
func runSSH(args ...string) (clientRun, error) {
	var r clientRun
	cmd := exec.Command(os.Args[0], append([]string{"ssh"}, args...)...)
	cmd.Env = append(os.Environ(), reaperEnv+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return r, err
	}
	defer stdin.Close()
	out, err := cmd.StdoutPipe()
	if err != nil {
		return r, err
	}
	cpuR, cpuW, err := os.Pipe()
	if err != nil {
		return r, err
	}
	defer cpuR.Close()
	cmd.ExtraFiles = []*os.File{cpuW}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		cpuW.Close()
		return r, err
	}
	cpuW.Close()
	buf := make([]byte, 256<<10)
	var first, last time.Time
	for {
		n, rerr := out.Read(buf)
		if n > 0 {
			if r.bytes == 0 {
				first = time.Now()
			}
			r.bytes += int64(n)
			last = time.Now()
		}
		if rerr != nil {
			if !errors.Is(rerr, io.EOF) {
				err = rerr
			}
			break
		}
	}
	stdin.Close()
	werr := cmd.Wait()
	r.total = time.Since(t0)
	if r.bytes > 0 {
		r.flow = last.Sub(first)
	}
	if werr != nil {
		return r, fmt.Errorf("ssh %s: %v: %s", strings.Join(args, " "), werr, strings.TrimSpace(stderr.String()))
	}
	if err != nil {
		return r, err
	}
	line, _ := bufio.NewReader(cpuR).ReadString('\n')
	self, _ := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.cpu = rusageCPU(ru) - time.Duration(self)
	}
	return r, nil
}
