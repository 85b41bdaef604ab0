package testutil

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. The
// port is released before returning, so the process started next can bind
// it. Ports come from below the kernel's ephemeral range when there is room
// there: outgoing connections (of every test running on the machine) take
// their local ports from that range, and would otherwise grab a port
// between FreePort and the server's bind.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := PickPort()
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	return port
}

// Bounds of the ports FreePort prefers: [portFloor, ephemeral start).
const portFloor = 10000

var (
	rangeOnce      sync.Once
	ephemeralStart int
)

// PickPort is the test-free form of [FreePort].
func PickPort() (int, error) {
	rangeOnce.Do(func() {
		b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
		if err != nil {
			return
		}
		if f := strings.Fields(string(b)); len(f) == 2 {
			ephemeralStart, _ = strconv.Atoi(f[0])
		}
	})
	if span := ephemeralStart - portFloor; span >= 1000 {
		for range 100 {
			port := portFloor + rand.IntN(span)
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			if err != nil {
				continue // taken; try another
			}
			if err := l.Close(); err != nil {
				return 0, fmt.Errorf("release port %d: %w", port, err)
			}
			return port, nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("release port %d: %w", port, err)
	}
	return port, nil
}

// PortInUse reports whether a server's output says its port was taken
// between [FreePort] and its bind, so a harness can retry with another.
func PortInUse(output string) bool {
	return strings.Contains(strings.ToLower(output), "address already in use")
}

// FreeAddr returns "127.0.0.1:PORT" for a port from [FreePort].
func FreeAddr(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", FreePort(t))
}

// WaitPort dials addr until a TCP connection succeeds, and fails the test
// if none does within timeout.
func WaitPort(t testing.TB, addr string, timeout time.Duration) {
	t.Helper()
	if err := AwaitPort(addr, timeout, nil); err != nil {
		t.Fatal(err)
	}
}

// errExited is returned by AwaitPort when the process serving the port is
// gone before the port answered.
var errExited = errors.New("process exited")

// AwaitPort dials addr until a TCP connection succeeds or timeout passes.
// If done is not nil and is closed first (the serving process exited), it
// gives up at once. It is the test-free form of [WaitPort].
func AwaitPort(addr string, timeout time.Duration, done <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for delay := time.Millisecond; ; delay = min(delay*2, 50*time.Millisecond) {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return conn.Close()
		}
		lastErr = err
		if time.Now().After(deadline) {
			return fmt.Errorf("port %s did not answer within %v: %w", addr, timeout, lastErr)
		}
		// Back off between dials; this is polling a port, not waiting for a
		// fixed time, and it ends as soon as the port answers.
		timer := time.NewTimer(delay)
		select {
		case <-timer.C:
		case <-done:
			timer.Stop()
			return fmt.Errorf("port %s: %w before it answered", addr, errExited)
		}
	}
}

// ExitedPortInUse reports whether p exited, or exits within a second,
// having said its port was taken (see [PortInUse]). Harnesses call it when
// readiness failed, to decide whether to retry on another port: a server
// whose port was grabbed exits at once, while a port that answers for
// some other process makes the readiness check fail first.
func ExitedPortInUse(p *Proc) bool {
	select {
	case <-p.Done():
	case <-time.After(time.Second):
		return false
	}
	return PortInUse(p.Output())
}
