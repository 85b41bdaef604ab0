package bastion

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/policy"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t testing.TB) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() {
		a.Close()
		b.Close()
	})
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

// TestSpliceHalfClose: EOF from the client reaches the destination as a
// half-close, the destination can still answer, and both ends are closed
// when both directions are done.
func TestSpliceHalfClose(t *testing.T) {
	client, clientSide := tcpPair(t)
	destSide, dest := tcpPair(t)
	done := make(chan spliceStats, 1)
	go func() { done <- splice(context.Background(), clientSide, destSide, nil, nil) }()

	req := bytes.Repeat([]byte("q"), 300<<10)
	go func() {
		client.Write(req)
		client.CloseWrite()
	}()
	got, err := io.ReadAll(dest) // ends at the half-close
	if err != nil || len(got) != len(req) {
		t.Fatalf("destination read %d bytes, %v; want %d", len(got), err, len(req))
	}
	if _, err := dest.Write([]byte("answer after EOF")); err != nil {
		t.Fatal(err)
	}
	dest.CloseWrite()
	resp, err := io.ReadAll(client)
	if err != nil || string(resp) != "answer after EOF" {
		t.Fatalf("client read %q, %v", resp, err)
	}
	select {
	case st := <-done:
		if st.Up != int64(len(req)) || st.Down != 16 || st.Err != nil {
			t.Errorf("stats = %+v; want up %d, down 16", st, len(req))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("splice did not return after both EOFs")
	}
}

// TestSpliceContextCancel: ending the context closes both ends.
func TestSpliceContextCancel(t *testing.T) {
	client, clientSide := tcpPair(t)
	destSide, dest := tcpPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		splice(ctx, clientSide, destSide, nil, nil)
		close(done)
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("splice ignored its context")
	}
	for _, c := range []net.Conn{client, dest} {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Errorf("end still open after cancel")
		}
	}
}

func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		testutil.Missing(t, "no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// TestForwardLoad opens 500 concurrent direct-tcpip forwards (over 5 SSH
// connections) to an echo server, moves 16 KiB through each and closes
// them; goroutines and open file descriptors must return to their baseline.
func TestForwardLoad(t *testing.T) {
	const (
		conns    = 5
		perConn  = 100
		payload  = 16 << 10
		slackFDs = 0
	)
	echo := testutil.EchoServer(t)
	f := newBX(t, bxOptions{})
	eng, err := policy.New(devConfig(f.login, config.Target{Name: "echo", Kind: config.KindTCP, Address: echo}))
	if err != nil {
		t.Fatal(err)
	}
	f.srv.SetPolicy(eng)
	_, ps, _ := net.SplitHostPort(echo)
	port, _ := strconv.Atoi(ps)
	var clients []*ssh.Client
	for range conns {
		c, _, err := f.dial(certSpec{}, f.login)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	data := make([]byte, payload)
	rand.Read(data)

	round := func() {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, conns*perConn)
		for _, c := range clients {
			for range perConn {
				wg.Go(func() {
					ch, err := openDirect(c, "echo", port)
					if err != nil {
						errs <- err
						return
					}
					defer ch.Close()
					go func() {
						ch.Write(data)
						ch.CloseWrite()
					}()
					got, err := io.ReadAll(ch)
					if err != nil || !bytes.Equal(got, data) {
						errs <- fmt.Errorf("echo returned %d bytes, %v", len(got), err)
					}
				})
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("forward: %v", err)
		}
	}
	// A first round warms up pools (state store connections, buffers).
	round()
	waitSettled := func(wantG, wantFD int) (int, int) {
		deadline := time.Now().Add(20 * time.Second)
		for {
			g, fd := runtime.NumGoroutine(), openFDs(t)
			if g <= wantG && fd <= wantFD || time.Now().After(deadline) {
				return g, fd
			}
			time.Sleep(20 * time.Millisecond) // polling counts with a deadline
		}
	}
	baseG, baseFD := waitSettledBaseline(t, runtime.NumGoroutine(), openFDs(t))
	start := time.Now()
	round()
	elapsed := time.Since(start)
	g, fd := waitSettled(baseG, baseFD+slackFDs)
	if g > baseG || fd > baseFD+slackFDs {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t.Fatalf("after load: %d goroutines (baseline %d), %d fds (baseline %d)\n%s", g, baseG, fd, baseFD, buf[:n])
	}
	if n := f.srv.ActiveConnections(); n != conns {
		t.Errorf("%d connections; want %d", n, conns)
	}
	t.Logf("%d forwards of %d KiB in %v; goroutines %d, fds %d", conns*perConn, payload>>10, elapsed, g, fd)
}

// waitSettledBaseline samples goroutines and fds until two samples agree,
// so background goroutines of the warm-up round have ended.
func waitSettledBaseline(t *testing.T, g, fd int) (int, int) {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // sampling interval of a settling check
		g2, fd2 := runtime.NumGoroutine(), openFDs(t)
		if g2 == g && fd2 == fd {
			return g, fd
		}
		g, fd = g2, fd2
	}
	return g, fd
}

// BenchmarkSplice measures the splice itself between two loopback TCP
// connections: 64 KiB writes on one side, drained on the other.
func BenchmarkSplice(b *testing.B) {
	client, clientSide := tcpPair(b)
	destSide, dest := tcpPair(b)
	done := make(chan struct{})
	go func() {
		splice(context.Background(), clientSide, destSide, nil, nil)
		close(done)
	}()
	drained := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(io.Discard, dest)
		drained <- n
	}()
	chunk := make([]byte, 64<<10)
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := client.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	client.CloseWrite()
	if n := <-drained; n != int64(b.N)*int64(len(chunk)) {
		b.Fatalf("drained %d bytes; want %d", n, int64(b.N)*int64(len(chunk)))
	}
	b.StopTimer()
	dest.Close()
	<-done
}

// BenchmarkSpliceSSH measures a forward through the bastion: an x/crypto
// client's direct-tcpip channel spliced to a TCP sink.
func BenchmarkSpliceSSH(b *testing.B) {
	sinkLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer sinkLn.Close()
	drained := make(chan int64, 1)
	go func() {
		c, err := sinkLn.Accept()
		if err != nil {
			return
		}
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		drained <- n
	}()
	f := newBX(b, bxOptions{})
	eng, err := policy.New(devConfig(f.login, config.Target{Name: "sink", Kind: config.KindTCP, Address: sinkLn.Addr().String()}))
	if err != nil {
		b.Fatal(err)
	}
	f.srv.SetPolicy(eng)
	c, _, err := f.dial(certSpec{}, f.login)
	if err != nil {
		b.Fatal(err)
	}
	_, ps, _ := net.SplitHostPort(sinkLn.Addr().String())
	port, _ := strconv.Atoi(ps)
	ch, err := openDirect(c, "sink", port)
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 32<<10)
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := ch.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	ch.CloseWrite()
	if n := <-drained; n != int64(b.N)*int64(len(chunk)) {
		b.Fatalf("drained %d; want %d", n, int64(b.N)*int64(len(chunk)))
	}
	b.StopTimer()
	ch.Close()
}

// BenchmarkIdleForwardMemory reports the memory (heap plus stacks, both
// ends in this process: bastion, x/crypto client and echo server) that one
// idle forward holds, as "B/forward". b.N is ignored beyond the first run.
func BenchmarkIdleForwardMemory(b *testing.B) {
	const n = 200
	echo := testutil.EchoServer(b)
	f := newBX(b, bxOptions{})
	eng, err := policy.New(devConfig(f.login, config.Target{Name: "echo", Kind: config.KindTCP, Address: echo}))
	if err != nil {
		b.Fatal(err)
	}
	f.srv.SetPolicy(eng)
	c, _, err := f.dial(certSpec{}, f.login)
	if err != nil {
		b.Fatal(err)
	}
	_, ps, _ := net.SplitHostPort(echo)
	port, _ := strconv.Atoi(ps)
	measure := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse + ms.StackInuse
	}
	for range b.N {
		before := measure()
		var chans []ssh.Channel
		for range n {
			ch, err := openDirect(c, "echo", port)
			if err != nil {
				b.Fatal(err)
			}
			// One round trip so both splice directions have run.
			ch.Write([]byte("x"))
			if _, err := io.ReadFull(ch, make([]byte, 1)); err != nil {
				b.Fatal(err)
			}
			chans = append(chans, ch)
		}
		after := measure()
		b.ReportMetric(float64(after-before)/n, "B/forward")
		for _, ch := range chans {
			ch.Close()
		}
	}
}
