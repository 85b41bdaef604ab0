package netguard

import (
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Codes of the special ranges and refusals, as they appear in audit events.
const (
	CodeLoopback    = "ssrf_loopback"
	CodeUnspecified = "ssrf_unspecified"
	CodeLinkLocal   = "ssrf_link_local"
	CodeMetadata    = "ssrf_metadata"
	CodeMulticast   = "ssrf_multicast"
	CodeOwnListener = "ssrf_own_listener"
)

// Special is an address range a forward may reach only when a role's allow
// list names a prefix inside it (a catch-all such as 0.0.0.0/0 does not
// count; see Covers).
type Special struct {
	// Prefix is the range.
	Prefix netip.Prefix
	// Code says what the range is (Code* constants).
	Code string
}

// Covers reports whether an allow prefix opens sp: it must lie inside sp's
// range (so that naming 169.254.0.0/16 opens link-local but not the metadata
// address inside it, which needs that address itself).
func (sp Special) Covers(allow netip.Prefix) bool {
	return allow.IsValid() && allow.Bits() >= sp.Prefix.Bits() && sp.Prefix.Contains(allow.Addr())
}

func pfx(s, code string) Special { return Special{Prefix: netip.MustParsePrefix(s), Code: code} }

// specials are checked in order: the metadata endpoints before the
// link-local range most of them are in.
var specials = []Special{
	// Cloud metadata, IPv4.
	pfx("169.254.169.0/24", CodeMetadata),   // AWS, GCP, Azure, OCI, OpenStack, DigitalOcean, IBM, Hetzner, Vultr, Linode…: .254; AWS DNS .253, NTP .123
	pfx("169.254.170.0/24", CodeMetadata),   // AWS ECS task metadata and credentials (.2), EKS Pod Identity (.23)
	pfx("169.254.0.23/32", CodeMetadata),    // Tencent Cloud
	pfx("169.254.42.42/32", CodeMetadata),   // Scaleway
	pfx("100.100.100.200/32", CodeMetadata), // Alibaba Cloud
	pfx("168.63.129.16/32", CodeMetadata),   // Azure WireServer
	pfx("192.0.0.192/32", CodeMetadata),     // Oracle Cloud (OCI) legacy
	// Cloud metadata, IPv6.
	pfx("fd00:ec2::/32", CodeMetadata),          // AWS IMDS (fd00:ec2::254), DNS, NTP, EKS Pod Identity (fd00:ec2::23)
	pfx("fd20:ce::254/128", CodeMetadata),       // Google Cloud
	pfx("fd00:c1::a9fe:a9fe/128", CodeMetadata), // Oracle Cloud (OCI)
	pfx("fd00:42::42/128", CodeMetadata),        // Scaleway
	pfx("fd00:a9fe:a9fe::1/128", CodeMetadata),  // Linode (Akamai)
	pfx("fe80::a9fe:a9fe/128", CodeMetadata),    // OpenStack
	// The local host, link-local, multicast.
	pfx("127.0.0.0/8", CodeLoopback),
	pfx("::1/128", CodeLoopback),
	pfx("0.0.0.0/8", CodeUnspecified), // "this network": 0.0.0.0 and 0.x reach the local host
	pfx("::/128", CodeUnspecified),
	pfx("169.254.0.0/16", CodeLinkLocal), // includes Kubernetes node-local addresses (169.254.20.10)
	pfx("fe80::/10", CodeLinkLocal),
	pfx("224.0.0.0/4", CodeMulticast),
	pfx("255.255.255.255/32", CodeMulticast),
	pfx("ff00::/8", CodeMulticast),
}

// Classify returns the special range ip falls in, if any: ip itself, or for
// an IPv6 address, any IPv4 address it carries (see EmbeddedIPv4) — a NAT64
// gateway, 6to4 relay or Teredo server may deliver those to the IPv4 address.
//
// When ip is special in more than one way (an IPv6 form read two ways), the
// range first in the table wins: metadata before the rest.
func Classify(ip netip.Addr) (Special, bool) {
	ip = ip.Unmap().WithZone("")
	best := classifyOne(ip)
	for _, v4 := range EmbeddedIPv4(ip) {
		best = min(best, classifyOne(v4))
	}
	if best == len(specials) {
		return Special{}, false
	}
	return specials[best], true
}

// classifyOne returns the index of the first special range holding ip,
// len(specials) if none does.
func classifyOne(ip netip.Addr) int {
	for i, s := range specials {
		if s.Prefix.Contains(ip) {
			return i
		}
	}
	return len(specials)
}

var (
	v4Compatible = netip.MustParsePrefix("::/96")           // deprecated IPv4-compatible ::a.b.c.d
	siit         = netip.MustParsePrefix("::ffff:0:0:0/96") // IPv4-translated (RFC 2765)
	nat64        = netip.MustParsePrefix("64:ff9b::/96")    // well-known NAT64 prefix (RFC 6052)
	nat64Local   = netip.MustParsePrefix("64:ff9b:1::/48")  // local-use NAT64 (RFC 8215)
	sixToFour    = netip.MustParsePrefix("2002::/16")       // 6to4 (RFC 3056)
	teredo       = netip.MustParsePrefix("2001::/32")       // Teredo (RFC 4380)
)

// EmbeddedIPv4 returns the IPv4 addresses an IPv6 address carries in the
// well-known forms: IPv4-compatible (::a.b.c.d), SIIT (::ffff:0:a.b.c.d),
// NAT64 (64:ff9b::/96, and the local-use 64:ff9b:1::/48 read both as a /96
// and as a /48 per RFC 6052), 6to4 (2002:AABB:CCDD::/48), Teredo (the server
// and the obfuscated client address) and ISATAP (an interface identifier of
// 0:5efe or 200:5efe). IPv4-mapped addresses are unmapped by callers first.
func EmbeddedIPv4(ip netip.Addr) []netip.Addr {
	if !ip.Is6() || ip.Is4In6() {
		return nil
	}
	b := ip.As16()
	at := func(i int) netip.Addr { return netip.AddrFrom4([4]byte(b[i : i+4])) }
	var out []netip.Addr
	switch {
	case v4Compatible.Contains(ip) && ip != netip.IPv6Unspecified() && ip != netip.IPv6Loopback():
		out = append(out, at(12))
	case siit.Contains(ip), nat64.Contains(ip):
		out = append(out, at(12))
	case nat64Local.Contains(ip):
		out = append(out, at(12), netip.AddrFrom4([4]byte{b[6], b[7], b[9], b[10]}))
	case sixToFour.Contains(ip):
		out = append(out, at(2))
	case teredo.Contains(ip):
		c := [4]byte{b[12] ^ 0xff, b[13] ^ 0xff, b[14] ^ 0xff, b[15] ^ 0xff}
		out = append(out, at(4), netip.AddrFrom4(c))
	}
	if b[9] == 0 && b[10] == 0x5e && b[11] == 0xfe && (b[8] == 0 || b[8] == 2) {
		out = append(out, at(12)) // ISATAP, under any prefix
	}
	return out
}

// metadataNames are host names that reach a cloud provider's metadata
// service from inside its network.
var metadataNames = map[string]bool{
	"metadata":                        true,
	"metadata.google.internal":        true,
	"metadata.goog":                   true,
	"instance-data":                   true,
	"instance-data.ec2.internal":      true,
	"metadata.tencentyun.com":         true,
	"metadata.platformequinix.com":    true,
	"metadata.packet.net":             true,
	"api.metadata.cloud.ibm.com":      true,
	"metadata.azure.com":              true,
	"metadata.internal":               true,
	"metadata.ec2.internal":           true,
	"instance-data.ec2.amazonaws.com": true,
}

// MetadataName reports whether host (any case, with or without a final
// dot) is a well-known cloud metadata host name.
func MetadataName(host string) bool {
	return metadataNames[strings.ToLower(strings.TrimSuffix(host, "."))]
}

// ParseHost parses host as an IP address in any spelling a resolver or
// inet_aton might accept, before any DNS: dotted quads with decimal, hex
// (0x7f) or octal (0177) parts, the short forms a, a.b, a.b.c (127.1,
// 0x7f.1, 2130706433), bracketed IPv6 ([::1]), IPv4-mapped IPv6
// (::ffff:127.0.0.1, returned unmapped), zone ids (fe80::1%eth0, dropped)
// and one trailing dot. It reports false for anything that is not a numeric
// address.
//
// The standard library's parsers accept only canonical forms, which is why
// this one is written here.
func ParseHost(host string) (netip.Addr, bool) {
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

// ValidDNSName reports whether host may be looked up as a DNS name.
func ValidDNSName(host string) bool {
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

// interfaceRefresh bounds how stale Listeners' view of the host's own
// addresses may be.
const interfaceRefresh = 10 * time.Second

// Listeners is the set of the bastion's own listening sockets (SSH and
// HTTP). No forward may reach them, whatever a role allows: a listener is
// reached through its own address, and a listener on any address (or on a
// loopback one) through every address that is the local host's: 127/8,
// ::1, 0.0.0.0 and ::, every interface address, and those addresses as
// IPv6 forms carrying them. Its methods are safe for concurrent use; the
// zero value holds no listener.
type Listeners struct {
	mu    sync.Mutex
	addrs []netip.AddrPort
	local []netip.Addr // interface addresses, refreshed every interfaceRefresh
	at    time.Time
}

// Add records a listener's address (a *net.TCPAddr or anything whose
// String is ip:port); addresses that are not ip:port are ignored.
func (l *Listeners) Add(a net.Addr) {
	if a == nil {
		return
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.addrs = append(l.addrs, netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port()))
}

// Reaches reports whether a connection from this host to ip:port may reach
// one of the listeners. It errs towards yes: any local address on a
// listener's port counts.
func (l *Listeners) Reaches(ip netip.Addr, port int) bool { return l.reaches(ip, port, true) }

// ReachesFrom is Reaches for a connection made by another host (an ssh
// target forwarding for a client): unless sameHost says that host is this
// one, its loopback and unspecified addresses are its own, and only this
// host's other addresses reach the listeners.
func (l *Listeners) ReachesFrom(ip netip.Addr, port int, sameHost bool) bool {
	return l.reaches(ip, port, sameHost)
}

// Local reports whether ip is one of this host's addresses: loopback,
// unspecified or "this network", or an interface address.
func (l *Listeners) Local(ip netip.Addr) bool {
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.isLocal(ip.Unmap().WithZone(""))
}

func (l *Listeners) reaches(ip netip.Addr, port int, sameHost bool) bool {
	if l == nil {
		return false
	}
	ip = ip.Unmap().WithZone("")
	l.mu.Lock()
	defer l.mu.Unlock()
	var own []netip.Addr
	for _, ap := range l.addrs {
		if int(ap.Port()) == port {
			own = append(own, ap.Addr())
		}
	}
	if len(own) == 0 {
		return false
	}
	cands := append([]netip.Addr{ip}, EmbeddedIPv4(ip)...)
	for _, c := range cands {
		if !sameHost && (c.IsLoopback() || c.IsUnspecified() || thisNetwork.Contains(c)) {
			continue // the other host's own
		}
		if slices.Contains(own, c) || l.isLocal(c) {
			return true
		}
	}
	return false
}

// isLocal reports whether ip is one of the host's own addresses. Called
// with mu held.
func (l *Listeners) isLocal(ip netip.Addr) bool {
	if ip.IsLoopback() || ip.IsUnspecified() || thisNetwork.Contains(ip) {
		return true
	}
	if now := time.Now(); l.local == nil || now.Sub(l.at) > interfaceRefresh {
		l.local, l.at = interfaceAddrs(), now
	}
	return slices.Contains(l.local, ip)
}

var thisNetwork = netip.MustParsePrefix("0.0.0.0/8")

// interfaceAddrs lists the host's own addresses.
func interfaceAddrs() []netip.Addr {
	ifas, err := net.InterfaceAddrs()
	if err != nil {
		return []netip.Addr{}
	}
	out := []netip.Addr{}
	for _, a := range ifas {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap().WithZone(""))
		}
	}
	return out
}
