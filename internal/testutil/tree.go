package testutil

import (
	"os"
	"strconv"
	"strings"
	"syscall"
)

// killTree kills the process group of root and every descendant of root,
// wherever its process group or session: a daemon's per-connection
// children often start their own session (sshd does), so killing the group
// alone would leave them running. The tree is frozen with SIGSTOP until no
// new process appears, so nothing forks past the kill.
func killTree(root int) {
	stopped := map[int]bool{}
	for range 20 {
		added := false
		for _, pid := range descendants(root) {
			if !stopped[pid] {
				stopped[pid] = true
				added = true
				_ = syscall.Kill(pid, syscall.SIGSTOP)
			}
		}
		if !added {
			break
		}
	}
	_ = syscall.Kill(-root, syscall.SIGKILL)
	_ = syscall.Kill(root, syscall.SIGKILL)
	for pid := range stopped {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// descendants returns the PIDs of all live descendants of root, read from
// /proc. It returns nil where /proc is not available.
func descendants(root int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, ok := parentOf(pid); ok {
			children[ppid] = append(children[ppid], pid)
		}
	}
	var out []int
	queue := []int{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// parentOf reads the parent PID from /proc/<pid>/stat; the fields after
// the command name (which may hold spaces and parentheses) are
// "state ppid ...".
func parentOf(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	return ppid, err == nil
}
