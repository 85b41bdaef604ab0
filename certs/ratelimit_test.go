package certs

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/keyrate"
)

func TestRateLimiterDefaults(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	l := NewRateLimiter(config.RateLimit{}, func() time.Time { return now })
	for _, tc := range []struct {
		name      string
		allow     func() (bool, time.Duration)
		wantBurst int
	}{
		{"identity 30/min burst 5", func() (bool, time.Duration) { return l.AllowIdentity("corp\x00alice") }, 5},
		{"source 120/min burst 20", func() (bool, time.Duration) { return l.AllowSource(netip.MustParseAddr("192.0.2.1")) }, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := range tc.wantBurst {
				if ok, _ := tc.allow(); !ok {
					t.Fatalf("request %d refused; want a burst of %d", i+1, tc.wantBurst)
				}
			}
			ok, wait := tc.allow()
			if ok {
				t.Fatalf("request %d allowed; want refused after the burst", tc.wantBurst+1)
			}
			if wait <= 0 || wait > 2*time.Second {
				t.Errorf("wait = %v; want (0, 2s]", wait)
			}
		})
	}
	// Refill: at 30/min one token returns every 2s.
	now = now.Add(2 * time.Second)
	if ok, _ := l.AllowIdentity("corp\x00alice"); !ok {
		t.Error("no token after 2s at 30/min")
	}
	if ok, _ := l.AllowIdentity("corp\x00alice"); ok {
		t.Error("two tokens after 2s at 30/min")
	}
}

func TestRateLimiterIPv6Prefix(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	l := NewRateLimiter(config.RateLimit{PerSource: 6}, func() time.Time { return now }) // burst 5
	for i := range 5 {
		a := netip.MustParseAddr(fmt.Sprintf("2001:db8:1:2::%x", i+1))
		if ok, _ := l.AllowSource(a); !ok {
			t.Fatalf("request %d refused", i)
		}
	}
	if ok, _ := l.AllowSource(netip.MustParseAddr("2001:db8:1:2:ffff::1")); ok {
		t.Error("another address in the same /64 got a fresh bucket")
	}
	if ok, _ := l.AllowSource(netip.MustParseAddr("2001:db8:1:3::1")); !ok {
		t.Error("another /64 was limited")
	}
	// IPv4-mapped addresses share the IPv4 bucket.
	for range 5 {
		l.AllowSource(netip.MustParseAddr("192.0.2.7"))
	}
	if ok, _ := l.AllowSource(netip.MustParseAddr("::ffff:192.0.2.7")); ok {
		t.Error("IPv4-mapped address escaped the IPv4 bucket")
	}
}

func TestRateLimiterBoundedMemory(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	l := NewRateLimiter(config.RateLimit{}, func() time.Time { return now })
	for i := range 1000 {
		l.AllowIdentity(fmt.Sprint("id-", i))
	}
	if got := l.identity.Len(); got != 1000 {
		t.Fatalf("entries = %d; want 1000", got)
	}
	// Idle long enough for every bucket to refill: the next sweep drops them.
	now = now.Add(time.Minute)
	l.AllowIdentity("fresh")
	if got := l.identity.Len(); got != 1 {
		t.Errorf("entries after sweep = %d; want 1", got)
	}
	// The table never exceeds its cap, even with no idle entries.
	for i := range keyrate.MaxEntries + 500 {
		l.AllowSource(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
	if got := l.source.Len(); got > keyrate.MaxEntries || got < keyrate.MaxEntries*8/10 {
		t.Errorf("entries = %d; want at most %d, and only the oldest tenth evicted at a time", got, keyrate.MaxEntries)
	}
}

func TestRateLimiterConcurrent(t *testing.T) {
	l := NewRateLimiter(config.RateLimit{PerIdentity: 600}, nil) // burst 100
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for range 8 {
		wg.Go(func() {
			for range 50 {
				if ok, _ := l.AllowIdentity("shared"); ok {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	// 400 requests within well under a second: the burst (100) plus at most
	// a few refilled tokens get through.
	if allowed < 100 || allowed > 110 {
		t.Errorf("allowed = %d; want about 100", allowed)
	}
}
