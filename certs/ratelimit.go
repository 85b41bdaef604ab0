package certs

import (
	"net/netip"
	"time"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/keyrate"
)

// Rate limit defaults (requests per minute), used when config.RateLimit
// fields are zero.
const (
	DefaultRatePerIdentity = 30
	DefaultRatePerSource   = 120
)

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
// most keyrate.MaxEntries (100,000) entries, dropping the longest idle when full. A RateLimiter is
// safe for concurrent use.
type RateLimiter struct {
	now      func() time.Time
	source   *keyrate.Table
	identity *keyrate.Table
}

// NewRateLimiter returns a limiter for cfg; now is the clock (time.Now if nil).
func NewRateLimiter(cfg config.RateLimit, now func() time.Time) *RateLimiter {
	if now == nil {
		now = time.Now
	}
	return &RateLimiter{
		now:      now,
		source:   keyrate.New(orDefaultInt(cfg.PerSource, DefaultRatePerSource)),
		identity: keyrate.New(orDefaultInt(cfg.PerIdentity, DefaultRatePerIdentity)),
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
	return l.source.Allow(key, l.now())
}

// AllowIdentity reports whether a request by the identity keyed by key may
// proceed, and if not, how long until one would.
func (l *RateLimiter) AllowIdentity(key string) (bool, time.Duration) {
	return l.identity.Allow(key, l.now())
}
