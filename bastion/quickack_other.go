//go:build !linux

package bastion

import "net"

// quickAck does nothing where TCP_QUICKACK does not exist.
func quickAck(net.Conn) error { return nil }
