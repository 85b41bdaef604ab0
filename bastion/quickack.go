package bastion

import (
	"net"
	"sync/atomic"
)

// handshakeConn acknowledges every read at once (quickAck) until done is
// called: the SSH handshake's small back-to-back packets then never wait for
// a delayed ACK. Afterwards it is a plain net.Conn.
type handshakeConn struct {
	net.Conn
	handshaking atomic.Bool
}

func newHandshakeConn(nc net.Conn) *handshakeConn {
	c := &handshakeConn{Conn: nc}
	c.handshaking.Store(true)
	return c
}

func (c *handshakeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && c.handshaking.Load() {
		_ = quickAck(c.Conn)
	}
	return n, err
}

// done ends the handshake phase.
func (c *handshakeConn) done() { c.handshaking.Store(false) }
