// Package netx holds postern's small network helpers that more than one
// package needs: acknowledging SSH handshake packets at once (QuickAck,
// HandshakeConn), telling loopback listen addresses apart, and a listener
// that takes clients' addresses from the PROXY protocol headers of trusted
// load balancers (ProxyListener).
//
// It imports nothing of postern.
package netx
