package netx

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// ProxyHeaderTimeout bounds how long a trusted proxy may take to send the
// PROXY protocol header of a connection.
const ProxyHeaderTimeout = 10 * time.Second

// maxPendingHeaders bounds the connections whose PROXY header is being read
// at once; more wait in the kernel's accept queue.
const maxPendingHeaders = 512

// ProxyListener is a listener behind TCP load balancers that speak the
// PROXY protocol (v1 text or v2 binary, as HAProxy defines it): a
// connection from an address in Trusted must begin with a PROXY header,
// and Accept returns it with the client's address (the header's source) as
// RemoteAddr, so that per-source limits and penalties apply to clients
// rather than to the load balancer. A header from any other address is not
// looked for: its bytes reach the server unchanged (for SSH, a failed
// version exchange), so nobody else can claim an address. A trusted
// connection whose header is missing, malformed or slower than
// ProxyHeaderTimeout is closed; a LOCAL header (a load balancer's own health
// check) keeps the proxy's address.
//
// Headers are read on a goroutine per connection (at most 512 at once), so
// a slow or silent peer never holds up Accept. The header parser is
// go-proxyproto's; this type adds the trust decision and the concurrency
// the bastion's accept loop needs.
type ProxyListener struct {
	ln      net.Listener
	trusted []netip.Prefix
	timeout time.Duration
	log     *slog.Logger

	conns chan net.Conn
	errc  chan error
	slots chan struct{}
	done  chan struct{}
	once  sync.Once
}

// NewProxyListener wraps ln. log receives refused connections (nil
// discards); timeout bounds a header (ProxyHeaderTimeout if zero).
func NewProxyListener(ln net.Listener, trusted []netip.Prefix, timeout time.Duration, log *slog.Logger) *ProxyListener {
	if timeout <= 0 {
		timeout = ProxyHeaderTimeout
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &ProxyListener{
		ln: ln, trusted: trusted, timeout: timeout, log: log,
		conns: make(chan net.Conn), errc: make(chan error, 1),
		slots: make(chan struct{}, maxPendingHeaders), done: make(chan struct{}),
	}
	go p.acceptLoop() // ends when ln is closed
	return p
}

// Accept returns the next connection, with the client's address for one
// that came through a trusted proxy.
func (p *ProxyListener) Accept() (net.Conn, error) {
	select {
	case c := <-p.conns:
		return c, nil
	case err := <-p.errc:
		return nil, err
	case <-p.done:
		return nil, net.ErrClosed
	}
}

// Close closes the listener; connections whose header is still being read
// are closed too.
func (p *ProxyListener) Close() error {
	p.once.Do(func() { close(p.done) })
	return p.ln.Close()
}

// Addr returns the listener's address.
func (p *ProxyListener) Addr() net.Addr { return p.ln.Addr() }

func (p *ProxyListener) acceptLoop() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			select {
			case p.errc <- err:
			case <-p.done:
			}
			return
		}
		if !p.isTrusted(c.RemoteAddr()) {
			p.deliver(c)
			continue
		}
		select {
		case p.slots <- struct{}{}:
		case <-p.done:
			c.Close()
			return
		}
		go func() { // bounded by slots and by the header deadline
			defer func() { <-p.slots }()
			pc, err := p.readHeader(c)
			if err != nil {
				p.log.Warn("connection from a trusted proxy refused", "remote", c.RemoteAddr().String(), "err", err)
				c.Close()
				return
			}
			p.deliver(pc)
		}()
	}
}

func (p *ProxyListener) deliver(c net.Conn) {
	select {
	case p.conns <- c:
	case <-p.done:
		c.Close()
	}
}

func (p *ProxyListener) isTrusted(a net.Addr) bool {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return false
	}
	addr := ap.Addr().Unmap()
	for _, pre := range p.trusted {
		if pre.Contains(addr) {
			return true
		}
	}
	return false
}

// readHeader reads c's PROXY header and returns c with the client's
// address.
func (p *ProxyListener) readHeader(c net.Conn) (net.Conn, error) {
	if err := c.SetReadDeadline(time.Now().Add(p.timeout)); err != nil {
		return nil, err
	}
	br := bufio.NewReader(c)
	h, err := proxyproto.Read(br)
	if err != nil {
		return nil, fmt.Errorf("PROXY protocol header: %w", err)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return nil, err
	}
	pc := &proxiedConn{Conn: c, r: br, remote: c.RemoteAddr()}
	if h.Command.IsProxy() && h.SourceAddr != nil {
		if _, ok := h.SourceAddr.(*net.TCPAddr); ok {
			pc.remote = h.SourceAddr
		}
	}
	return pc, nil
}

// proxiedConn is a connection whose PROXY header has been read: reads come
// first from what the header reader buffered, and RemoteAddr is the
// client's.
type proxiedConn struct {
	net.Conn
	r      *bufio.Reader
	remote net.Addr
}

func (c *proxiedConn) Read(b []byte) (int, error) {
	if c.r.Buffered() > 0 {
		return c.r.Read(b)
	}
	return c.Conn.Read(b)
}

func (c *proxiedConn) RemoteAddr() net.Addr { return c.remote }

// SyscallConn gives the underlying socket, for socket options (QuickAck).
func (c *proxiedConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("not a socket")
	}
	return sc.SyscallConn()
}

// SetLinger sets SO_LINGER on the underlying TCP connection.
func (c *proxiedConn) SetLinger(sec int) error {
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		return tc.SetLinger(sec)
	}
	return nil
}
