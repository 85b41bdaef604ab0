// Package netx holds postern's small network helpers that more than one
// package needs: acknowledging SSH handshake packets at once (QuickAck,
// HandshakeConn) and telling loopback listen addresses apart.
//
// It imports nothing of postern.
package netx
