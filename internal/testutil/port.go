package testutil

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. The
// port is released before returning, so a process started right after can
// bind it; collisions are possible but rare, since the kernel hands out
// ephemeral ports in rotation.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatalf("release free port %d: %v", port, err)
	}
	return port
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
