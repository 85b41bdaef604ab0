package bastion

import (
	"net/netip"
	"testing"
)

func TestParseIPHost(t *testing.T) {
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
			ip, ok := parseIPHost(tt.host)
			got := ""
			if ok {
				got = ip.String()
			}
			if got != tt.want {
				t.Errorf("parseIPHost(%q) = %q; want %q", tt.host, got, tt.want)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	tests := []struct{ ip, code string }{
		{"127.0.0.1", codeLoopback},
		{"127.255.0.9", codeLoopback},
		{"::1", codeLoopback},
		{"::ffff:127.0.0.1", codeLoopback},
		{"64:ff9b::a9fe:a9fe", codeLinkLocal},
		{"0.0.0.0", codeUnspecified},
		{"0.1.2.3", codeUnspecified},
		{"::", codeUnspecified},
		{"169.254.169.254", codeLinkLocal},
		{"fe80::1", codeLinkLocal},
		{"febf::1", codeLinkLocal},
		{"224.0.0.1", codeMulticast},
		{"239.1.1.1", codeMulticast},
		{"255.255.255.255", codeMulticast},
		{"ff02::1", codeMulticast},
		{"10.0.0.1", ""},
		{"192.168.1.1", ""},
		{"2001:db8::1", ""},
		{"64:ff9b::a00:1", ""},
	}
	for _, tt := range tests {
		sp, ok := classify(netip.MustParseAddr(tt.ip))
		got := ""
		if ok {
			got = sp.code
		}
		if got != tt.code {
			t.Errorf("classify(%s) = %q; want %q", tt.ip, got, tt.code)
		}
	}
}

func FuzzParseIPHost(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "2130706433", "0x7f.1", "0177.0.0.1", "[::1]", "fe80::1%eth0", "::ffff:127.0.0.1", "a.b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ip, ok := parseIPHost(s)
		if ok && !ip.IsValid() {
			t.Errorf("parseIPHost(%q) = invalid address with ok", s)
		}
		if ok && ip.Is4In6() {
			t.Errorf("parseIPHost(%q) = %s, a mapped address (must be unmapped)", s, ip)
		}
		// A canonical IPv4 literal must parse to itself.
		if a, err := netip.ParseAddr(s); err == nil && a.Is4() && (!ok || ip != a) {
			t.Errorf("parseIPHost(%q) = %v, %v; want %v", s, ip, ok, a)
		}
	})
}
