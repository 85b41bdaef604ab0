package keyrate

import (
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// MaxEntries bounds a Table. Past it, the entries idle the longest are
// dropped first.
const MaxEntries = 100_000

type entry struct {
	lim  *rate.Limiter
	seen time.Time
}

// Table holds one token bucket per key: perMinute tokens a minute, with a
// burst of a sixth of that, at least 5. Memory is bounded: a bucket idle
// long enough to have refilled is the same as a new one, so such entries
// are swept once a minute, and the table holds at most MaxEntries,
// dropping the longest idle when full. A Table is safe for concurrent use.
type Table struct {
	limit rate.Limit
	burst int
	idle  time.Duration // time for an empty bucket to refill

	mu        sync.Mutex
	entries   map[string]*entry
	lastSweep time.Time
}

// New returns a table allowing perMinute requests a minute per key.
func New(perMinute int) *Table {
	burst := max(perMinute/6, 5)
	limit := rate.Limit(float64(perMinute) / 60)
	return &Table{
		limit:   limit,
		burst:   burst,
		idle:    time.Duration(float64(burst) / float64(limit) * float64(time.Second)),
		entries: make(map[string]*entry),
	}
}

// Burst is how many requests a fresh key may make at once.
func (t *Table) Burst() int { return t.burst }

// Allow reports whether a request for key may proceed at now, and if not,
// how long until one would.
func (t *Table) Allow(key string, now time.Time) (bool, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Sub(t.lastSweep) >= time.Minute {
		t.sweep(now)
	}
	e, ok := t.entries[key]
	if !ok {
		if len(t.entries) >= MaxEntries {
			t.evictOldest()
		}
		e = &entry{lim: rate.NewLimiter(t.limit, t.burst)}
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

// Len returns the number of keys held.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.entries)
}

// sweep drops the entries whose bucket has refilled.
func (t *Table) sweep(now time.Time) {
	t.lastSweep = now
	for k, e := range t.entries {
		if now.Sub(e.seen) >= t.idle {
			delete(t.entries, k)
		}
	}
}

// evictOldest drops the tenth of the entries idle the longest.
func (t *Table) evictOldest() {
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
