package netx

import (
	"net"
	"syscall"
)

// QuickAck asks the kernel to acknowledge what c has received at once
// instead of delaying the ACK (TCP_QUICKACK; the kernel clears it again on
// its own). During an SSH handshake the peer often sends two small packets
// back to back while Nagle's algorithm is on in its socket (the OpenSSH
// client turns TCP_NODELAY on only after authentication, sshd only for
// interactive sessions): the second packet then waits for the ACK of the
// first, and a delayed ACK costs about 40 ms, twice per handshake. Callers
// ignore the error: the ACK is then merely late. Connections that are not
// TCP sockets are left alone.
func QuickAck(c net.Conn) error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
	}); err != nil {
		return err
	}
	return serr
}
