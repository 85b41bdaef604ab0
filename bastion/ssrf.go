package bastion

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/policy"
)

// Resolver resolves destination names outside the inventory. *net.Resolver
// implements it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// resolveTimeout bounds one DNS lookup for a forward.
const resolveTimeout = 5 * time.Second

// Denial codes of the SSRF guard, in audit events.
const (
	codeBadHost      = "bad_host"
	codeResolve      = "resolve_failed"
	codeLoopback     = "ssrf_loopback"
	codeUnspecified  = "ssrf_unspecified"
	codeLinkLocal    = "ssrf_link_local"
	codeMulticast    = "ssrf_multicast"
	codeOwnListener  = "ssrf_own_listener"
	codeDestNotAllow = policy.CodeNotInAllowList
)

// special is an address range a forward may reach only when a role's
// forwarding.allow names a prefix inside it (a catch-all such as 0.0.0.0/0
// does not count).
type special struct {
	prefix netip.Prefix
	code   string
}

var specials = []special{
	{netip.MustParsePrefix("127.0.0.0/8"), codeLoopback},
	{netip.MustParsePrefix("::1/128"), codeLoopback},
	{netip.MustParsePrefix("0.0.0.0/8"), codeUnspecified}, // "this network": 0.0.0.0 and 0.x reach the local host
	{netip.MustParsePrefix("::/128"), codeUnspecified},
	{netip.MustParsePrefix("169.254.0.0/16"), codeLinkLocal}, // includes cloud metadata 169.254.169.254
	{netip.MustParsePrefix("fe80::/10"), codeLinkLocal},
	{netip.MustParsePrefix("224.0.0.0/4"), codeMulticast},
	{netip.MustParsePrefix("255.255.255.255/32"), codeMulticast},
	{netip.MustParsePrefix("ff00::/8"), codeMulticast},
}

var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// classify returns the special range ip falls in, if any. IPv4-mapped and
// NAT64 (64:ff9b::/96) addresses are judged by the IPv4 address they carry.
func classify(ip netip.Addr) (special, bool) {
	ip = ip.Unmap().WithZone("")
	if nat64.Contains(ip) {
		b := ip.As16()
		if s, ok := classify(netip.AddrFrom4([4]byte(b[12:]))); ok {
			return s, true
		}
	}
	for _, s := range specials {
		if s.prefix.Contains(ip) {
			return s, true
		}
	}
	return special{}, false
}

// parseIPHost parses host as an IP address in any spelling a resolver or
// inet_aton might accept, before any DNS: dotted quads with decimal, hex
// (0x7f) or octal (0177) parts, the short forms a, a.b, a.b.c (127.1,
// 0x7f.1, 2130706433), bracketed IPv6 ([::1]), IPv4-mapped IPv6
// (::ffff:127.0.0.1), zone ids (fe80::1%eth0, dropped) and one trailing dot.
// It reports false for anything that is not a numeric address.
//
// The standard library's parsers accept only canonical forms, which is why
// this one is written here.
func parseIPHost(host string) (netip.Addr, bool) {
	h := strings.TrimSuffix(host, ".")
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	if i := strings.IndexByte(h, '%'); i >= 0 {
		h = h[:i]
	}
	if h == "" {
		return netip.Addr{}, false
	}
	if ip, err := netip.ParseAddr(h); err == nil {
		return ip.Unmap(), true
	}
	if strings.Contains(h, ":") {
		return netip.Addr{}, false
	}
	parts := strings.Split(h, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	vals := make([]uint64, len(parts))
	for i, p := range parts {
		v, ok := parseInetPart(p)
		if !ok {
			return netip.Addr{}, false
		}
		vals[i] = v
	}
	// The last part fills the remaining bytes (inet_aton).
	var n uint64
	for i, v := range vals[:len(vals)-1] {
		if v > 0xff {
			return netip.Addr{}, false
		}
		n |= v << (24 - 8*i)
	}
	last := vals[len(vals)-1]
	if last >= 1<<(8*(5-len(vals))) {
		return netip.Addr{}, false
	}
	n |= last
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), true
}

// parseInetPart parses one inet_aton component: 0x/0X hex, leading-0 octal,
// or decimal, at most 32 bits.
func parseInetPart(p string) (uint64, bool) {
	if p == "" {
		return 0, false
	}
	base := 10
	switch {
	case len(p) > 1 && (p[:2] == "0x" || p[:2] == "0X"):
		base, p = 16, p[2:]
		if p == "" {
			return 0, true // "0x" is 0 to inet_aton
		}
	case len(p) > 1 && p[0] == '0':
		base, p = 8, p[1:]
	}
	for _, c := range p {
		if !(c >= '0' && c <= '9' || base == 16 && (c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F')) {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(p, base, 32)
	return v, err == nil
}

// validDNSName reports whether host may be looked up as a DNS name.
func validDNSName(host string) bool {
	if host == "" || len(host) > 253 {
		return false
	}
	for _, c := range host {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// guardError is a refused destination: code for the audit event and the
// address that was refused.
type guardError struct {
	code string
	addr netip.Addr
	err  error
}

func (e *guardError) Error() string {
	if e.err != nil {
		return fmt.Sprintf("%s %s: %v", e.code, e.addr, e.err)
	}
	return fmt.Sprintf("%s %s", e.code, e.addr)
}

func (e *guardError) Unwrap() error { return e.err }

// guardDest turns host (as the client typed it) and port into the addresses
// a forward may dial, or a *guardError. Numeric spellings are parsed here;
// a name is resolved once and every address it resolves to must pass, so the
// caller dials the checked addresses and never the name (a DNS answer that
// changes between check and dial cannot win). Each address must be covered
// by a role's forwarding.allow; special ranges (loopback, unspecified,
// link-local, multicast) and the bastion's own listeners need an allow prefix
// inside that range (or naming exactly that listener address).
func (s *Server) guardDest(ctx context.Context, eng *policy.Engine, id certs.Identity, host string, port int) ([]netip.Addr, policy.Decision, error) {
	var addrs []netip.Addr
	if ip, ok := parseIPHost(host); ok {
		addrs = []netip.Addr{ip}
	} else {
		if !validDNSName(host) {
			return nil, policy.Decision{}, &guardError{code: codeBadHost}
		}
		rctx, cancel := context.WithTimeout(ctx, resolveTimeout)
		defer cancel()
		res, err := s.resolver.LookupNetIP(rctx, "ip", host)
		if err != nil || len(res) == 0 {
			if err == nil {
				err = errors.New("no addresses")
			}
			return nil, policy.Decision{}, &guardError{code: codeResolve, err: err}
		}
		for _, a := range res {
			addrs = append(addrs, a.Unmap().WithZone(""))
		}
	}
	var dec policy.Decision
	for i, ip := range addrs {
		d := eng.AllowForward(id, ip, port)
		if !d.Allow {
			return nil, d, &guardError{code: d.Code, addr: ip}
		}
		if sp, ok := classify(ip); ok {
			if !d.Prefix.IsValid() || d.Prefix.Bits() < sp.prefix.Bits() || !sp.prefix.Contains(d.Prefix.Addr()) {
				return nil, d, &guardError{code: sp.code, addr: ip}
			}
		}
		if s.isOwnListener(ip, port) && d.Prefix.Bits() != ip.BitLen() {
			return nil, d, &guardError{code: codeOwnListener, addr: ip}
		}
		if i == 0 {
			dec = d
		}
	}
	return addrs, dec, nil
}

// isOwnListener reports whether ip:port is one of the bastion's listeners.
// A listener on an unspecified address counts on every local interface.
func (s *Server) isOwnListener(ip netip.Addr, port int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ap := range s.listenAddrs {
		if int(ap.Port()) != port {
			continue
		}
		if ap.Addr().Unmap() == ip {
			return true
		}
		if ap.Addr().IsUnspecified() {
			for _, la := range s.localAddrs {
				if la == ip {
					return true
				}
			}
		}
	}
	return false
}

// interfaceAddrs lists the host's own addresses, for isOwnListener.
func interfaceAddrs() []netip.Addr {
	ifas, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range ifas {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap().WithZone(""))
		}
	}
	return out
}
