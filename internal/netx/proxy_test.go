package netx

import (
	"bufio"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

func listen(t *testing.T, trusted string, timeout time.Duration) *ProxyListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := NewProxyListener(ln, []netip.Prefix{netip.MustParsePrefix(trusted)}, timeout, nil)
	t.Cleanup(func() { p.Close() })
	return p
}

// dial connects to p and writes pre.
func dial(t *testing.T, p *ProxyListener, pre []byte) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if len(pre) > 0 {
		if _, err := c.Write(pre); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// accept returns the next connection and the first n bytes read from it.
func accept(t *testing.T, p *ProxyListener, n int) (net.Conn, string) {
	t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := p.Accept()
		ch <- res{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		t.Cleanup(func() { r.c.Close() })
		buf := make([]byte, n)
		if _, err := io.ReadFull(r.c, buf); err != nil {
			t.Fatal(err)
		}
		return r.c, string(buf)
	case <-time.After(30 * time.Second):
		t.Fatal("Accept returned nothing in 30s")
	}
	return nil, ""
}

func v2Header(t *testing.T, src string) []byte {
	t.Helper()
	s, _ := net.ResolveTCPAddr("tcp", src)
	d, _ := net.ResolveTCPAddr("tcp", "10.0.0.1:2222")
	h := proxyproto.HeaderProxyFromAddrs(2, s, d)
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestProxyListener: a trusted proxy's connections carry the client's
// address from a v1 or v2 header, with the bytes after the header intact;
// a LOCAL header keeps the proxy's address; a trusted connection without a
// header, or a silent one, is dropped without holding up the others; an
// untrusted peer's header is not believed.
func TestProxyListener(t *testing.T) {
	p := listen(t, "127.0.0.0/8", 300*time.Millisecond)

	dial(t, p, []byte("PROXY TCP4 203.0.113.9 10.0.0.1 51234 2222\r\nSSH-2.0-v1\r\n"))
	c, data := accept(t, p, 12)
	if c.RemoteAddr().String() != "203.0.113.9:51234" || data != "SSH-2.0-v1\r\n" {
		t.Errorf("v1: remote %s data %q", c.RemoteAddr(), data)
	}

	dial(t, p, append(v2Header(t, "[2001:db8::7]:4000"), "SSH-2.0-v2\r\n"...))
	c, data = accept(t, p, 12)
	if c.RemoteAddr().String() != "[2001:db8::7]:4000" || data != "SSH-2.0-v2\r\n" {
		t.Errorf("v2: remote %s data %q", c.RemoteAddr(), data)
	}

	local, err := (&proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}).Format()
	if err != nil {
		t.Fatal(err)
	}
	dial(t, p, append(local, "x"...))
	c, data = accept(t, p, 1)
	if ap, _ := netip.ParseAddrPort(c.RemoteAddr().String()); !ap.Addr().IsLoopback() || data != "x" {
		t.Errorf("LOCAL: remote %s data %q; want the proxy's address", c.RemoteAddr(), data)
	}

	// No header from a trusted proxy, and a silent one: both dropped; the
	// good connection behind them is accepted at once.
	bad := dial(t, p, []byte("SSH-2.0-no-header\r\n"))
	silent := dial(t, p, nil)
	dial(t, p, []byte("PROXY TCP4 198.51.100.1 10.0.0.1 1 2222\r\nok"))
	c, data = accept(t, p, 2)
	if c.RemoteAddr().String() != "198.51.100.1:1" || data != "ok" {
		t.Errorf("after bad ones: remote %s data %q", c.RemoteAddr(), data)
	}
	for _, conn := range []net.Conn{bad, silent} {
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := bufio.NewReader(conn).ReadByte(); err == nil {
			t.Error("a trusted connection without a valid header was not closed")
		}
	}

	// An untrusted peer: its "header" is just data.
	q := listen(t, "10.0.0.0/8", time.Second)
	dial(t, q, []byte("PROXY TCP4 203.0.113.9 10.0.0.1 51234 2222\r\n"))
	c, data = accept(t, q, 6)
	if ap, _ := netip.ParseAddrPort(c.RemoteAddr().String()); !ap.Addr().IsLoopback() || data != "PROXY " {
		t.Errorf("untrusted: remote %s data %q; want the peer and the raw bytes", c.RemoteAddr(), data)
	}

	q.Close()
	if _, err := q.Accept(); err == nil {
		t.Error("Accept after Close succeeded")
	}
}
