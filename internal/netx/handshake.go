package netx

import (
	"net"
	"sync/atomic"
)

// HandshakeConn acknowledges every read at once (QuickAck) until Done is
// called: the SSH handshake's small back-to-back packets then never wait for
// a delayed ACK. Afterwards it is a plain net.Conn.
type HandshakeConn struct {
	net.Conn
	handshaking atomic.Bool
}

// NewHandshakeConn wraps nc in the handshake phase.
func NewHandshakeConn(nc net.Conn) *HandshakeConn {
	c := &HandshakeConn{Conn: nc}
	c.handshaking.Store(true)
	return c
}

func (c *HandshakeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && c.handshaking.Load() {
		_ = QuickAck(c.Conn)
	}
	return n, err
}

// Done ends the handshake phase.
func (c *HandshakeConn) Done() { c.handshaking.Store(false) }
