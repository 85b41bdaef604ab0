package testutil

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestFreePortAndWaitPort(t *testing.T) {
	port := FreePort(t)
	if port <= 0 || port > 65535 {
		t.Fatalf("got port %d; want 1..65535", port)
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatalf("listen on the free port: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	WaitPort(t, l.Addr().String(), 5*time.Second)
}

func TestAwaitPortTimesOut(t *testing.T) {
	addr := FreeAddr(t)
	err := AwaitPort(addr, 100*time.Millisecond, nil)
	if err == nil {
		t.Fatalf("AwaitPort(%s) on a closed port: got nil; want an error", addr)
	}
}

func TestAwaitPortStopsWhenProcessExits(t *testing.T) {
	p := Start(t, "sh", []string{"-c", "exit 3"})
	err := AwaitPort(FreeAddr(t), time.Minute, p.Done())
	if !errors.Is(err, errExited) {
		t.Fatalf("got %v; want errExited", err)
	}
}

func TestWaitLine(t *testing.T) {
	p := Start(t, "sh", []string{"-c", "echo starting; echo 'listening on port 1234' >&2; exec sleep 600"})
	got := p.WaitLine(t, regexp.MustCompile(`listening on port \d+`), 10*time.Second)
	if want := "listening on port 1234"; got != want {
		t.Fatalf("got %q; want %q", got, want)
	}
	if !strings.Contains(p.Output(), "starting") {
		t.Fatalf("output %q lacks stdout line", p.Output())
	}
}

func TestAwaitLineProcessExits(t *testing.T) {
	p := Start(t, "sh", []string{"-c", "echo oops; exit 2"})
	_, err := p.AwaitLine(regexp.MustCompile("ready"), time.Minute)
	if err == nil || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("got %v; want an 'exited' error", err)
	}
	if p.Err() == nil {
		t.Fatalf("Err() = nil; want exit status 2")
	}
}

func TestAwaitLineTimeout(t *testing.T) {
	p := Start(t, "sleep", []string{"600"})
	_, err := p.AwaitLine(regexp.MustCompile("ready"), 50*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "within") {
		t.Fatalf("got %v; want a timeout error", err)
	}
}

func TestAwaitLineUnterminatedLastLine(t *testing.T) {
	p := Start(t, "printf", []string{"a\nready"})
	line, err := p.AwaitLine(regexp.MustCompile("^ready$"), 10*time.Second)
	if err != nil || line != "ready" {
		t.Fatalf("got %q, %v; want \"ready\", nil", line, err)
	}
}

func TestStopKillsProcessGroup(t *testing.T) {
	p := Start(t, "sh", []string{"-c", "sleep 600 & echo child $!; wait"})
	line := p.WaitLine(t, regexp.MustCompile(`^child \d+$`), 10*time.Second)
	child, err := strconv.Atoi(strings.TrimPrefix(line, "child "))
	if err != nil {
		t.Fatal(err)
	}
	p.Stop()
	p.Stop() // idempotent
	select {
	case <-p.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	// The child was reparented; it is dead once it is gone or a zombie.
	deadline := time.Now().Add(10 * time.Second)
	for alive(child) {
		if time.Now().After(deadline) {
			t.Fatalf("child %d still alive after Stop", child)
		}
		time.Sleep(10 * time.Millisecond) // polling for reaping, bounded by deadline
	}
}

func TestStopWithGrace(t *testing.T) {
	p := Start(t, "sh", []string{"-c", "trap 'echo bye; exit 0' TERM; echo up; while :; do sleep 0.01; done"})
	p.WaitLine(t, regexp.MustCompile("^up$"), 10*time.Second)
	p.StopWith(syscall.SIGTERM, 10*time.Second)
	if _, err := p.AwaitLine(regexp.MustCompile("^bye$"), time.Second); err != nil {
		t.Fatalf("no graceful exit: %v; output %q", err, p.Output())
	}
}

func TestEnvAndDir(t *testing.T) {
	dir := t.TempDir()
	p := Start(t, "sh", []string{"-c", "echo $POSTERN_X; pwd"}, Env("POSTERN_X=hello"), Dir(dir))
	<-p.Done()
	want := "hello\n" + dir + "\n"
	if got := p.Output(); got != want {
		t.Fatalf("got %q; want %q", got, want)
	}
}

func TestRepoRoot(t *testing.T) {
	root := RepoRoot(t)
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("RepoRoot() = %s without go.mod: %v", root, err)
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func TestToolFromEnv(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "fake-tool")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("POSTERN_FAKE_TOOL", bin)
	if got := Tool(t, "POSTERN_FAKE_TOOL", "fake-tool", "fake", "example.com/fake"); got != bin {
		t.Fatalf("got %q; want %q", got, bin)
	}
}

func TestBuildToolFailsClearly(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "tools", "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := buildTool(root, filepath.Join(root, "bin", "nothing"), "empty", "example.com/does/not/exist")
	if err == nil || !strings.Contains(err.Error(), "make tools") {
		t.Fatalf("got %v; want a build error pointing at make tools", err)
	}
	if _, serr := os.Stat(filepath.Join(root, "bin", "nothing")); serr == nil {
		t.Fatal("a failed build left a binary behind")
	}
}

func TestPickPortBelowEphemeralRange(t *testing.T) {
	for range 20 {
		port, err := PickPort()
		if err != nil {
			t.Fatal(err)
		}
		if ephemeralStart-portFloor >= 1000 && (port < portFloor || port >= ephemeralStart) {
			t.Fatalf("got port %d; want within [%d, %d)", port, portFloor, ephemeralStart)
		}
	}
}

func TestPortInUse(t *testing.T) {
	tests := []struct {
		name string
		out  string
		want bool
	}{
		{name: "sshd", out: "Bind to port 123 on 127.0.0.1 failed: Address already in use.\n", want: true},
		{name: "postgres", out: `LOG:  could not bind IPv4 address "127.0.0.1": Address already in use`, want: true},
		{name: "go", out: "listen tcp 127.0.0.1:1: bind: address already in use", want: true},
		{name: "other", out: "permission denied", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := PortInUse(tt.out); got != tt.want {
				t.Fatalf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func TestEchoServer(t *testing.T) {
	addr := EchoServer(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "ping" {
		t.Fatalf("got %q, %v; want \"ping\" then EOF", got, err)
	}
}

func TestServeClosesOpenConnsAtCleanup(t *testing.T) {
	var client net.Conn
	t.Run("serve", func(t *testing.T) {
		addr := EchoServer(t)
		var err error
		if client, err = net.Dial("tcp", addr); err != nil {
			t.Fatal(err)
		}
		if _, err := client.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1)
		if _, err := io.ReadFull(client, buf); err != nil {
			t.Fatal(err)
		}
	}) // the subtest's cleanup closes the server side
	defer client.Close()
	if err := client.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Read(make([]byte, 1)); err == nil {
		t.Fatal("read after cleanup succeeded; want EOF or reset")
	}
}

func TestStopKillsDescendantsInOtherSessions(t *testing.T) {
	// setsid puts the grandchild in its own session and process group, as
	// sshd does for each connection.
	p := Start(t, "sh", []string{"-c", "setsid sh -c 'echo grandchild $$; exec sleep 600' & wait"})
	line := p.WaitLine(t, regexp.MustCompile(`^grandchild \d+$`), 10*time.Second)
	gc, err := strconv.Atoi(strings.TrimPrefix(line, "grandchild "))
	if err != nil {
		t.Fatal(err)
	}
	if pgid, _ := syscall.Getpgid(gc); pgid == p.PID() {
		t.Fatalf("grandchild %d is in the leader's group; the test needs another group", gc)
	}
	p.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for alive(gc) {
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d in another session still alive after Stop", gc)
		}
		time.Sleep(10 * time.Millisecond) // polling for reaping, bounded by deadline
	}
}

func TestExitedPortInUse(t *testing.T) {
	taken := Start(t, "sh", []string{"-c", "echo 'bind: address already in use' >&2; exit 1"})
	if !ExitedPortInUse(taken) {
		t.Errorf("process that lost its port: got false; want true")
	}
	other := Start(t, "sh", []string{"-c", "echo 'no such file'; exit 1"})
	if ExitedPortInUse(other) {
		t.Errorf("process that failed otherwise: got true; want false")
	}
	running := Start(t, "sleep", []string{"600"})
	if ExitedPortInUse(running) {
		t.Errorf("running process: got true; want false")
	}
}
