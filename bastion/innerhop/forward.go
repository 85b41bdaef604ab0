package innerhop

import (
	"net"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/internal/netguard"
	"github.com/posternhq/postern/policy"
	"github.com/posternhq/postern/state"
)

// Forwards through an ssh target (ssh -J bastion -W host:port web-1, -L and
// -R on the inner connection) are decided like forwards on the outer hop,
// with the destination as the target sees it:
//
//   - a role that matches the identity and reaches the target with the
//     login must grant forwarding.local (-L, -W) or forwarding.remote (-R),
//     and its forwarding.target_allow must cover the destination: an address
//     by prefix, a host name (which the target resolves) by its exact name;
//   - loopback, "this network", link-local, multicast and cloud metadata
//     addresses (in any spelling, and in any IPv6 form carrying them) need an
//     entry inside that range; well-known metadata host names are refused;
//   - postern's own listeners are refused whatever the entries say: on a
//     target that is postern's own host, by any local address (and the name
//     localhost); on any other target, by postern's host's own addresses.
//
// A refused channel gets "postern: <dest>: not allowed for <user>" and a
// refused tcpip-forward a failure reply; both are audited as channel.deny
// with the code (policy or netguard), hop inner, and the destination.

// forwardDest is the destination of a forward through the target.
type forwardDest struct {
	host string     // as the client sent it
	ip   netip.Addr // valid when host is an address in any spelling
	port int
}

// newForwardDest parses host as an address in any spelling netguard knows;
// otherwise it is a name the target resolves.
func newForwardDest(host string, port int) forwardDest {
	d := forwardDest{host: host, port: port}
	if ip, ok := netguard.ParseHost(host); ok {
		d.ip = ip
	}
	return d
}

func (d forwardDest) String() string {
	return policy.Printable(net.JoinHostPort(d.host, strconv.Itoa(d.port)))
}

// checkForward decides a forward through the target in direction dir
// (policy.ViaLocal or ViaRemote). It returns the refusal code, "" if the
// forward may go.
func (c *hopConn) checkForward(d forwardDest, dir string) string {
	eng := c.h.opts.Policy()
	if eng == nil {
		return policy.CodeTargetNotAllow
	}
	if !d.ip.IsValid() {
		if !netguard.ValidDNSName(d.host) {
			return "bad_host"
		}
		if netguard.MetadataName(d.host) {
			return netguard.CodeMetadata
		}
	}
	dec := eng.AllowViaTarget(c.ci.Identity, c.t, c.login, d.ip, d.host, d.port, dir)
	if !dec.Allow {
		return dec.Code
	}
	var addrs []netip.Addr
	if d.ip.IsValid() {
		if sp, ok := netguard.Classify(d.ip); ok && !sp.Covers(dec.Prefix) {
			return sp.Code
		}
		addrs = []netip.Addr{d.ip}
	} else if isLocalhostName(d.host) {
		addrs = []netip.Addr{netip.AddrFrom4([4]byte{127, 0, 0, 1}), netip.IPv6Loopback()}
	}
	if dir != policy.ViaRemote {
		same := c.targetIsLocal()
		for _, a := range addrs {
			if c.h.opts.OwnListeners.ReachesFrom(a, d.port, same) {
				return netguard.CodeOwnListener
			}
		}
	}
	return ""
}

// isLocalhostName reports whether a host name means the host itself
// (localhost and names under it, RFC 6761).
func isLocalhostName(h string) bool {
	h = strings.ToLower(strings.TrimRight(h, "."))
	return h == "localhost" || strings.HasSuffix(h, ".localhost")
}

// targetIsLocal reports whether the target's login runs on postern's own
// host (its address, as connected, is one of this host's).
func (c *hopConn) targetIsLocal() bool {
	if c.up == nil {
		return false
	}
	ta, ok := c.up.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return true // unknown: assume the worst
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return true
	}
	return c.h.opts.OwnListeners.Local(ip)
}

// denyForward audits a refused forward through the target.
func (c *hopConn) denyForward(kind string, d forwardDest, code string) {
	c.log.Info("forward through target refused", "type", kind, "dest", d.String(), "code", code)
	c.h.audit(c.ctx, state.Event{Type: state.EventChannelDeny, Actor: c.ci.Identity.String(), Target: c.t.Name,
		Details: map[string]any{"channel": kind, "dest": d.String(), "login": c.login, "hop": "inner", "code": code,
			"role": c.decision.Role}})
}

// allowDirectTCPIP decides a direct-tcpip channel through the target, and
// refuses (with the message and audit event) one it does not allow.
func (c *hopConn) allowDirectTCPIP(nc ssh.NewChannel) bool {
	var p hopDirectTCPIP
	if err := ssh.Unmarshal(nc.ExtraData(), &p); err != nil || p.Port > 65535 || p.Host == "" {
		_ = nc.Reject(ssh.ConnectionFailed, "postern: malformed forward request")
		c.denyForward("direct-tcpip", forwardDest{host: p.Host, port: int(p.Port)}, "bad_request")
		return false
	}
	d := newForwardDest(p.Host, int(p.Port))
	if code := c.checkForward(d, policy.ViaLocal); code != "" {
		_ = nc.Reject(ssh.Prohibited, policy.DenyMessage(net.JoinHostPort(p.Host, strconv.Itoa(d.port)), c.ci.Identity))
		c.denyForward("direct-tcpip", d, code)
		return false
	}
	return true
}

// tcpipForward is the tcpip-forward and cancel-tcpip-forward payload (RFC
// 4254 §7.1).
type tcpipForward struct {
	Address string
	Port    uint32
}

// allowTCPIPForward decides a tcpip-forward request (-R through the target):
// the bind address as the target reads it ("" and "*" are every address,
// "localhost" the loopback ones).
func (c *hopConn) allowTCPIPForward(payload []byte) bool {
	var p tcpipForward
	if err := ssh.Unmarshal(payload, &p); err != nil || p.Port > 65535 {
		c.denyForward("tcpip-forward", forwardDest{}, "bad_request")
		return false
	}
	var dests []forwardDest
	switch p.Address {
	case "", "*":
		dests = []forwardDest{newForwardDest("0.0.0.0", int(p.Port)), newForwardDest("::", int(p.Port))}
	case "localhost":
		dests = []forwardDest{newForwardDest("127.0.0.1", int(p.Port)), newForwardDest("::1", int(p.Port))}
	default:
		dests = []forwardDest{newForwardDest(p.Address, int(p.Port))}
	}
	for _, d := range dests {
		if code := c.checkForward(d, policy.ViaRemote); code != "" {
			c.denyForward("tcpip-forward", forwardDest{host: p.Address, port: int(p.Port)}, code)
			return false
		}
	}
	return true
}
