package bastion

import (
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
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
	// Expires is when the certificate the connection authenticated with
	// expires; zero if never. Expiry gives the current end, which a renewal
	// moves.
	Expires time.Time
	// Log carries conn and identity attributes.
	Log *slog.Logger

	// renewed is the expiry (unix nanoseconds) and serial of the newest
	// renewal of the certificate, zero if none.
	renewed       atomic.Int64
	renewedSerial atomic.Uint64
}

// Expiry returns when the connection must end: the certificate's expiry,
// or that of a newer certificate the same identity got for the same key
// (a renewal: postern agent) once the bastion found it. Zero if never.
func (ci *ConnInfo) Expiry() time.Time {
	if n := ci.renewed.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return ci.Expires
}

// renew moves the connection's end to a renewal's expiry.
func (ci *ConnInfo) renew(serial uint64, until time.Time) {
	ci.renewedSerial.Store(serial)
	ci.renewed.Store(until.UnixNano())
}

// serial is the serial of the certificate the connection now rides on.
func (ci *ConnInfo) serial() uint64 {
	if s := ci.renewedSerial.Load(); s != 0 {
		return s
	}
	return ci.Cert.Serial
}

// RemoteAddr returns the client's address as a net.Addr, or nil if it is
// not known.
func (ci *ConnInfo) RemoteAddr() net.Addr {
	if ci.Remote.IsValid() {
		return net.TCPAddrFromAddrPort(ci.Remote)
	}
	return nil
}
