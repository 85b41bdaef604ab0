package certs

import (
	"net/netip"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/posternhq/postern/internal/config"
)

// Rate limit defaults (requests per minute), used when config.RateLimit
// fields are zero.
const (
	DefaultRatePerIdentity = 30
	DefaultRatePerSource   = 120
)

// maxLimiterEntries bounds each limiter table. Past it, the entries idle the
// longest are dropped first.
const maxLimiterEntries = 100_000

// RateLimiter is the pair of token-bucket limits on certificate requests:
// per source address (checked before the token is verified, so a flood costs
// no verification) and per identity (issuer and subject, checked after).
//
// Defaults: 30 requests per minute per identity and 120 per minute per source
// (config identity.rate_limit.per_identity and per_source); each bucket holds
// a burst of a sixth of the per-minute count, at least 5 (so 5 and 20).
// IPv6 sources are limited per /64, since one host commonly owns a whole /64.
//
// Memory is bounded: a bucket idle long enough to have refilled is the same as
// a new one, so such entries are swept once a minute, and each table holds at
// most 100,000 entries, dropping the longest idle when full. A RateLimiter is
// safe for concurrent use.
type RateLimiter struct {
	now      func() time.Time
	source   *limiterTable
	identity *limiterTable
}

// NewRateLimiter returns a limiter for cfg; now is the clock (time.Now if nil).
func NewRateLimiter(cfg config.RateLimit, now func() time.Time) *RateLimiter {
	if now == nil {
		now = time.Now
	}
	return &RateLimiter{
		now:      now,
		source:   newLimiterTable(orDefaultInt(cfg.PerSource, DefaultRatePerSource)),
		identity: newLimiterTable(orDefaultInt(cfg.PerIdentity, DefaultRatePerIdentity)),
	}
}

func orDefaultInt(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// AllowSource reports whether a request from addr may proceed, and if not,
// how long until one would. An invalid addr shares one bucket.
func (l *RateLimiter) AllowSource(addr netip.Addr) (bool, time.Duration) {
	key := "-"
	if addr.IsValid() {
		addr = addr.Unmap()
		if addr.Is6() {
			key = netip.PrefixFrom(addr, 64).Masked().String()
		} else {
			key = addr.String()
		}
	}
	return l.source.allow(key, l.now())
}

// AllowIdentity reports whether a request by the identity keyed by key may
// proceed, and if not, how long until one would.
func (l *RateLimiter) AllowIdentity(key string) (bool, time.Duration) {
	return l.identity.allow(key, l.now())
}

type limiterEntry struct {
	lim  *rate.Limiter
	seen time.Time
}

type limiterTable struct {
	limit rate.Limit
	burst int
	idle  time.Duration // time for an empty bucket to refill

	mu        sync.Mutex
	entries   map[string]*limiterEntry
	lastSweep time.Time
}

func newLimiterTable(perMinute int) *limiterTable {
	burst := max(perMinute/6, 5)
	limit := rate.Limit(float64(perMinute) / 60)
	return &limiterTable{
		limit:   limit,
		burst:   burst,
		idle:    time.Duration(float64(burst) / float64(limit) * float64(time.Second)),
		entries: make(map[string]*limiterEntry),
	}
}

func (t *limiterTable) allow(key string, now time.Time) (bool, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Sub(t.lastSweep) >= time.Minute {
		t.sweep(now)
	}
	e, ok := t.entries[key]
	if !ok {
		if len(t.entries) >= maxLimiterEntries {
			t.evictOldest()
		}
		e = &limiterEntry{lim: rate.NewLimiter(t.limit, t.burst)}
		t.entries[key] = e
	}
	e.seen = now
	if e.lim.AllowN(now, 1) {
		return true, 0
	}
	r := e.lim.ReserveN(now, 1)
	wait := r.DelayFrom(now)
	r.CancelAt(now)
	return false, wait
}

// sweep drops the entries whose bucket has refilled.
func (t *limiterTable) sweep(now time.Time) {
	t.lastSweep = now
	for k, e := range t.entries {
		if now.Sub(e.seen) >= t.idle {
			delete(t.entries, k)
		}
	}
}

// evictOldest drops the tenth of the entries idle the longest.
func (t *limiterTable) evictOldest() {
	seen := make([]time.Time, 0, len(t.entries))
	for _, e := range t.entries {
		seen = append(seen, e.seen)
	}
	slices.SortFunc(seen, time.Time.Compare)
	n := max(len(seen)/10, 1)
	cutoff := seen[n-1]
	for k, e := range t.entries {
		if e.seen.Before(cutoff) {
			delete(t.entries, k)
			n--
		}
	}
	// Entries last seen exactly at the cutoff go until n are gone.
	for k, e := range t.entries {
		if n <= 0 {
			break
		}
		if e.seen.Equal(cutoff) {
			delete(t.entries, k)
			n--
		}
	}
}

func (t *limiterTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.entries)
}
