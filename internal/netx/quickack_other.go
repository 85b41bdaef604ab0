//go:build !linux

package netx

import "net"

// QuickAck does nothing where TCP_QUICKACK does not exist.
func QuickAck(net.Conn) error { return nil }
