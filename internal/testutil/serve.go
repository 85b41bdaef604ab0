package testutil

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Serve accepts connections on l until the test ends and runs handle for
// each in its own goroutine. Serve owns l and every accepted connection:
// at cleanup it closes the listener and all open connections, then waits
// for the handlers to return. handle need not close its connection.
func Serve(t testing.TB, l net.Listener, handle func(net.Conn)) {
	t.Helper()
	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return // listener closed at cleanup
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				handle(c)
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// EchoServer starts a TCP echo server on 127.0.0.1 for forwarding tests
// and returns its address. Each connection gets back what it sends; at the
// client's EOF the server half-closes, then closes.
func EchoServer(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen for echo server: %v", err)
	}
	Serve(t, l, func(c net.Conn) {
		if _, err := io.Copy(c, c); err != nil {
			return
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	})
	return l.Addr().String()
}
