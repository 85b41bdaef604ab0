package netguard

import (
	"net"
	"net/netip"
	"testing"
)

func TestParseHost(t *testing.T) {
	tests := []struct {
		host string
		want string // "" means not an IP literal
	}{
		{"127.0.0.1", "127.0.0.1"},
		{"2130706433", "127.0.0.1"},
		{"0x7f000001", "127.0.0.1"},
		{"0X7F000001", "127.0.0.1"},
		{"0177.0.0.1", "127.0.0.1"},
		{"0177.0000.0.01", "127.0.0.1"},
		{"127.1", "127.0.0.1"},
		{"127.0.1", "127.0.0.1"},
		{"0x7f.1", "127.0.0.1"},
		{"0x7f.0x0.0x0.0x1", "127.0.0.1"},
		{"127.0.0.1.", "127.0.0.1"},
		{"[::1]", "::1"},
		{"::1", "::1"},
		{"::ffff:127.0.0.1", "127.0.0.1"},
		{"[::ffff:7f00:1]", "127.0.0.1"},
		{"fe80::1%eth0", "fe80::1"},
		{"[fe80::1%25eth0]", "fe80::1"},
		{"0", "0.0.0.0"},
		{"0x", "0.0.0.0"},
		{"169.254.169.254", "169.254.169.254"},
		{"2852039166", "169.254.169.254"},
		{"0xa9.0xfe.0xa9.0xfe", "169.254.169.254"},
		{"1681915904", "100.64.0.0"},
		{"10.0.0.1", "10.0.0.1"},
		{"4294967295", "255.255.255.255"},
		{"4294967296", ""},
		{"256.0.0.1", ""},
		{"1.2.3.256", ""},
		{"1.2.65536", ""},
		{"08.0.0.1", ""}, // 8 is not an octal digit
		{"1.2.3.4.5", ""},
		{"1..2", ""},
		{"example.com", ""},
		{"0x7g000001", ""},
		{"", ""},
		{"[]", ""},
		{"[::1", ""},
		{"::ffff:0177.0.0.1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			ip, ok := ParseHost(tt.host)
			got := ""
			if ok {
				got = ip.String()
			}
			if got != tt.want {
				t.Errorf("ParseHost(%q) = %q; want %q", tt.host, got, tt.want)
			}
		})
	}
}

// TestClassify covers every well-known metadata endpoint and the local
// host, in IPv4 and in each IPv6 form that carries an IPv4 address.
func TestClassify(t *testing.T) {
	tests := []struct{ ip, code string }{
		// The local host.
		{"127.0.0.1", CodeLoopback},
		{"127.255.0.9", CodeLoopback},
		{"::1", CodeLoopback},
		{"::ffff:127.0.0.1", CodeLoopback},
		{"0.0.0.0", CodeUnspecified},
		{"0.1.2.3", CodeUnspecified},
		{"::", CodeUnspecified},
		// Metadata, IPv4: AWS/GCP/Azure/OCI/OpenStack/DigitalOcean/IBM, AWS
		// DNS and NTP, ECS, EKS Pod Identity, Tencent, Scaleway, Alibaba,
		// Azure WireServer, OCI legacy.
		{"169.254.169.254", CodeMetadata},
		{"169.254.169.253", CodeMetadata},
		{"169.254.169.123", CodeMetadata},
		{"169.254.170.2", CodeMetadata},
		{"169.254.170.23", CodeMetadata},
		{"169.254.0.23", CodeMetadata},
		{"169.254.42.42", CodeMetadata},
		{"100.100.100.200", CodeMetadata},
		{"168.63.129.16", CodeMetadata},
		{"192.0.0.192", CodeMetadata},
		// Metadata, IPv6: AWS IMDS and EKS, GCP, OCI, Scaleway, Linode, OpenStack.
		{"fd00:ec2::254", CodeMetadata},
		{"fd00:ec2::23", CodeMetadata},
		{"fd00:ec2::253", CodeMetadata},
		{"fd20:ce::254", CodeMetadata},
		{"fd00:c1::a9fe:a9fe", CodeMetadata},
		{"fd00:42::42", CodeMetadata},
		{"fd00:a9fe:a9fe::1", CodeMetadata},
		{"fe80::a9fe:a9fe", CodeMetadata},
		// The metadata address in every IPv6 form that carries it.
		{"::ffff:169.254.169.254", CodeMetadata},
		{"::a9fe:a9fe", CodeMetadata},                          // IPv4-compatible
		{"::ffff:0:a9fe:a9fe", CodeMetadata},                   // SIIT
		{"64:ff9b::a9fe:a9fe", CodeMetadata},                   // NAT64
		{"64:ff9b:1::a9fe:a9fe", CodeMetadata},                 // local-use NAT64, /96
		{"64:ff9b:1:a9fe:a9:fe00::", CodeMetadata},             // local-use NAT64, /48 (RFC 6052 layout)
		{"2002:a9fe:a9fe::1", CodeMetadata},                    // 6to4
		{"2001:0:a9fe:a9fe::1", CodeMetadata},                  // Teredo server
		{"2001:0:4136:e378:8000:63bf:5601:5601", CodeMetadata}, // Teredo client (obfuscated 169.254.169.254)
		{"2001:db8::5efe:a9fe:a9fe", CodeMetadata},             // ISATAP
		{"2001:db8::200:5efe:a9fe:a9fe", CodeMetadata},
		{"2001:db8::5efe:7f00:1", CodeLoopback},
		{"2002:7f00:1::", CodeLoopback},
		{"64:ff9b::7f00:1", CodeLoopback},
		{"::7f00:1", CodeLoopback},
		{"64:ff9b::6464:64c8", CodeMetadata}, // Alibaba via NAT64
		{"2002:a83f:8110::", CodeMetadata},   // Azure WireServer via 6to4
		// Link-local (Kubernetes node-local DNS), multicast.
		{"169.254.20.10", CodeLinkLocal},
		{"169.254.1.1", CodeLinkLocal},
		{"fe80::1", CodeLinkLocal},
		{"febf::1", CodeLinkLocal},
		{"224.0.0.1", CodeMulticast},
		{"239.1.1.1", CodeMulticast},
		{"255.255.255.255", CodeMulticast},
		{"ff02::1", CodeMulticast},
		{"::ffff:0:e000:1", CodeMulticast},
		// Ordinary addresses.
		{"10.0.0.1", ""},
		{"192.168.1.1", ""},
		{"100.100.100.201", ""},
		{"168.63.129.17", ""},
		{"2001:db8::1", ""},
		{"64:ff9b::a00:1", ""},
		{"2002:a00:1::", ""},
		{"fd00:ec3::254", ""},
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			sp, ok := Classify(netip.MustParseAddr(tt.ip))
			got := ""
			if ok {
				got = sp.Code
			}
			if got != tt.code {
				t.Errorf("Classify(%s) = %q; want %q", tt.ip, got, tt.code)
			}
		})
	}
}

func TestCovers(t *testing.T) {
	md, _ := Classify(netip.MustParseAddr("169.254.169.254"))
	ll, _ := Classify(netip.MustParseAddr("169.254.1.1"))
	tests := []struct {
		sp    Special
		allow string
		want  bool
	}{
		{md, "169.254.169.254/32", true},
		{md, "169.254.0.0/16", false},
		{md, "0.0.0.0/0", false},
		{ll, "169.254.0.0/16", true},
		{ll, "169.254.1.0/24", true},
		{ll, "0.0.0.0/0", false},
	}
	for _, tt := range tests {
		if got := tt.sp.Covers(netip.MustParsePrefix(tt.allow)); got != tt.want {
			t.Errorf("%s covered by %s = %v; want %v", tt.sp.Prefix, tt.allow, got, tt.want)
		}
	}
	if md.Covers(netip.Prefix{}) {
		t.Error("no prefix covers a special range")
	}
}

func TestMetadataName(t *testing.T) {
	for _, h := range []string{"metadata.google.internal", "METADATA.google.internal.", "metadata", "instance-data", "metadata.tencentyun.com", "api.metadata.cloud.ibm.com"} {
		if !MetadataName(h) {
			t.Errorf("MetadataName(%q) = false", h)
		}
	}
	for _, h := range []string{"example.com", "metadata.example.com", "google.internal"} {
		if MetadataName(h) {
			t.Errorf("MetadataName(%q) = true", h)
		}
	}
}

// TestListenersReaches: a listener on every address is reached through
// every local address and its IPv6 forms, on its port only.
func TestListenersReaches(t *testing.T) {
	var l Listeners
	l.Add(&net.TCPAddr{IP: net.IPv6zero, Port: 2222})
	l.Add(&net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 8080})
	local := interfaceAddrs()
	tests := []struct {
		ip   string
		port int
		want bool
	}{
		{"127.0.0.1", 2222, true},
		{"127.3.4.5", 2222, true},
		{"0.0.0.0", 2222, true},
		{"::", 2222, true},
		{"::1", 2222, true},
		{"::ffff:127.0.0.1", 2222, true},
		{"64:ff9b::7f00:1", 2222, true},
		{"127.0.0.1", 8080, true},
		{"127.0.0.2", 8080, true},
		{"0.0.0.0", 8080, true},
		{"10.255.255.1", 8080, false},
		{"127.0.0.1", 8081, false},
		{"192.0.2.1", 2222, false},
	}
	for _, a := range local {
		tests = append(tests, struct {
			ip   string
			port int
			want bool
		}{a.String(), 2222, true})
	}
	for _, tt := range tests {
		if got := l.Reaches(netip.MustParseAddr(tt.ip), tt.port); got != tt.want {
			t.Errorf("Reaches(%s, %d) = %v; want %v", tt.ip, tt.port, got, tt.want)
		}
	}
	// From another host, loopback is that host's; this host's interface
	// addresses still reach the listeners.
	for _, a := range local {
		if !a.IsLoopback() && !l.ReachesFrom(a, 2222, false) {
			t.Errorf("ReachesFrom(%s, 2222, other host) = false", a)
		}
	}
	for _, ip := range []string{"127.0.0.1", "0.0.0.0", "::1", "::ffff:127.0.0.1"} {
		if l.ReachesFrom(netip.MustParseAddr(ip), 2222, false) {
			t.Errorf("ReachesFrom(%s, 2222, other host) = true; that is the other host's loopback", ip)
		}
		if !l.ReachesFrom(netip.MustParseAddr(ip), 2222, true) {
			t.Errorf("ReachesFrom(%s, 2222, same host) = false", ip)
		}
	}
	if !l.Local(netip.MustParseAddr("127.0.0.1")) || l.Local(netip.MustParseAddr("192.0.2.1")) {
		t.Error("Local misjudges loopback or a documentation address")
	}
	var none *Listeners
	if none.Reaches(netip.MustParseAddr("127.0.0.1"), 2222) {
		t.Error("a nil Listeners reaches something")
	}
}

func FuzzParseHost(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "2130706433", "0x7f.1", "0177.0.0.1", "[::1]", "fe80::1%eth0", "::ffff:127.0.0.1", "a.b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ip, ok := ParseHost(s)
		if ok && !ip.IsValid() {
			t.Errorf("ParseHost(%q) = invalid address with ok", s)
		}
		if ok && ip.Is4In6() {
			t.Errorf("ParseHost(%q) = %s, a mapped address (must be unmapped)", s, ip)
		}
		// A canonical IPv4 literal must parse to itself.
		if a, err := netip.ParseAddr(s); err == nil && a.Is4() && (!ok || ip != a) {
			t.Errorf("ParseHost(%q) = %v, %v; want %v", s, ip, ok, a)
		}
	})
}

// FuzzClassify: an IPv4 address in a special range stays special in every
// IPv6 form that carries it.
func FuzzClassify(f *testing.F) {
	for _, s := range [][4]byte{{127, 0, 0, 1}, {169, 254, 169, 254}, {100, 100, 100, 200}, {10, 0, 0, 1}} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, a, b, c, d byte) {
		v4 := netip.AddrFrom4([4]byte{a, b, c, d})
		sp, special := Classify(v4)
		forms := []netip.Addr{
			netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff, 12: a, 13: b, 14: c, 15: d}),
			netip.AddrFrom16([16]byte{0: 0, 1: 0x64, 2: 0xff, 3: 0x9b, 12: a, 13: b, 14: c, 15: d}),
			netip.AddrFrom16([16]byte{0: 0x20, 1: 0x02, 2: a, 3: b, 4: c, 5: d}),
			netip.AddrFrom16([16]byte{0: 0x20, 1: 0x01, 4: a, 5: b, 6: c, 7: d}),
			netip.AddrFrom16([16]byte{0: 0x20, 1: 0x01, 12: a ^ 0xff, 13: b ^ 0xff, 14: c ^ 0xff, 15: d ^ 0xff}),
		}
		for _, ip := range forms {
			got, ok := Classify(ip)
			if special && (!ok || sp.Code == CodeMetadata && got.Code != CodeMetadata) {
				t.Errorf("Classify(%s) = %v, %v; %s is %s", ip, got.Code, ok, v4, sp.Code)
			}
		}
	})
}
