package bastion

import (
	"log/slog"
	"net"
	"net/netip"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
)

// ConnInfo is what authentication decided about one outer SSH connection. The
// auth callback creates it once; every channel handler reads it and never
// decides authentication again.
type ConnInfo struct {
	// ID identifies the connection in logs and audit events.
	ID string
	// Identity is who the user certificate says the user is.
	Identity certs.Identity
	// Cert is the verified user certificate.
	Cert *ssh.Certificate
	// Key is the certified public key. The inner hop accepts only this key.
	Key ssh.PublicKey
	// Login is the user name of the outer connection.
	Login string
	// Remote is the client's address.
	Remote netip.AddrPort
	// Expires is when the connection must end (certificate expiry, or sooner if
	// a role says so).
	Expires time.Time
	// Log carries conn and identity attributes.
	Log *slog.Logger
}

// RemoteAddr returns the client's address as a net.Addr, or nil if it is
// not known.
func (ci *ConnInfo) RemoteAddr() net.Addr {
	if ci.Remote.IsValid() {
		return net.TCPAddrFromAddrPort(ci.Remote)
	}
	return nil
}
