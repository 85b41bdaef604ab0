package bastion

import (
	"container/heap"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/posternhq/postern/internal/config"
)

// Defaults of config.Penalty.
const (
	defaultPenaltyMaxFailures = 20
	defaultPenaltyWindow      = time.Minute
	defaultPenaltyDuration    = 30 * time.Second
	defaultPenaltyMaxDuration = 10 * time.Minute
)

// maxPenaltySources caps the sources a penaltyBox tracks. A source costs
// about 230 bytes of heap with its map and heap slots (measured), so a full
// box holds about 15 MiB. Beyond the cap the entry that would be forgotten
// soonest is evicted first (see penaltyBox.insert).
const maxPenaltySources = 1 << 16

// ipv6PenaltyBits is the prefix length IPv6 sources are grouped by: one
// site usually holds a whole /64, and counting its addresses one by one
// would let it try 2^64 times as often.
const ipv6PenaltyBits = 64

// penaltyBox counts failed authentications per source and says which
// sources are penalised: refused at accept, before any handshake work.
//
// A source is an IPv4 address or an IPv6 /64. Failures are counted in a
// fixed window that opens at a source's first failure and lasts Window; the
// MaxFailures-th failure inside it starts a penalty of Duration and clears
// the count. A penalty that starts within MaxDuration after the source's
// previous one ended is a repeat offence and lasts twice the previous one,
// up to MaxDuration. Because the window is fixed, a source that spreads its
// failures across a window boundary can fail up to 2*MaxFailures-1 times
// within one Window before it is penalised. Exempt prefixes are never
// counted nor refused.
//
// The box holds at most maxPenaltySources entries; entries whose window,
// penalty and repeat-offence memory have all passed are dropped as the box
// is used. Its methods are safe for concurrent use and do not allocate
// except to track a new source.
type penaltyBox struct {
	now func() time.Time
	max int // cap on tracked sources

	mu      sync.Mutex
	set     penaltySettings
	entries map[netip.Prefix]*penaltyEntry
	byExp   penaltyHeap // every entry, soonest expiry first
}

// penaltySettings is config.Penalty parsed, with defaults applied.
type penaltySettings struct {
	maxFailures                   int
	window, duration, maxDuration time.Duration
	exempt                        []netip.Prefix
	disabled                      bool
}

// penaltyEntry is the state of one source.
type penaltyEntry struct {
	source    netip.Prefix
	failures  int       // in the current window
	windowEnd time.Time // failures count until then
	until     time.Time // penalised until then; zero if never
	offences  int       // penalties in a row, each within maxDuration of the last
	expires   time.Time // when the entry holds nothing worth keeping
	index     int       // in penaltyBox.byExp
}

// penalty describes a penalty that has just started.
type penalty struct {
	// Source is the penalised address (IPv4) or /64 (IPv6).
	Source netip.Prefix
	// Failures is how many failures within the window started it.
	Failures int
	// Duration is how long it refuses the source.
	Duration time.Duration
	// Until is when it ends.
	Until time.Time
	// Offence counts the source's penalties in a row, 1 for the first.
	Offence int
}

// sourceString is p's Source as audited and logged: the bare address for
// an IPv4 source, the prefix for an IPv6 /64.
func (p penalty) sourceString() string {
	if p.Source.IsSingleIP() {
		return p.Source.Addr().String()
	}
	return p.Source.String()
}

// newPenaltyBox returns a box with the settings of p; now is the clock
// (time.Now if nil).
func newPenaltyBox(p config.Penalty, now func() time.Time) (*penaltyBox, error) {
	if now == nil {
		now = time.Now
	}
	b := &penaltyBox{now: now, max: maxPenaltySources, entries: map[netip.Prefix]*penaltyEntry{}}
	if err := b.configure(p); err != nil {
		return nil, err
	}
	return b, nil
}

// parsePenalty applies the defaults of config.Penalty and parses its
// exempt prefixes.
func parsePenalty(p config.Penalty) (penaltySettings, error) {
	s := penaltySettings{
		maxFailures: orInt(p.MaxFailures, defaultPenaltyMaxFailures),
		window:      orDur(p.Window.D(), defaultPenaltyWindow),
		duration:    orDur(p.Duration.D(), defaultPenaltyDuration),
		maxDuration: orDur(p.MaxDuration.D(), defaultPenaltyMaxDuration),
		disabled:    p.Disabled,
	}
	s.maxDuration = max(s.maxDuration, s.duration)
	for i, e := range p.Exempt {
		pfx, err := config.ParsePrefix(e)
		if err != nil {
			return penaltySettings{}, fmt.Errorf("ssh.penalty.exempt[%d]: %w", i, err)
		}
		s.exempt = append(s.exempt, pfx)
	}
	return s, nil
}

// configure replaces the box's settings. Sources keep their counts and
// penalties, except that a source now inside an exempt prefix is forgotten
// (exempting an address and reloading lifts its penalty for good), and
// turning penalties off forgets every source.
func (b *penaltyBox) configure(p config.Penalty) error {
	s, err := parsePenalty(p)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.set = s
	if s.disabled {
		clear(b.entries)
		b.byExp = b.byExp[:0]
		return nil
	}
	kept := b.byExp[:0]
	for _, e := range b.byExp {
		if b.exemptSource(e.source) {
			delete(b.entries, e.source)
			continue
		}
		b.setExpiry(e)
		kept = append(kept, e)
	}
	clear(b.byExp[len(kept):])
	b.byExp = kept
	for i, e := range b.byExp {
		e.index = i
	}
	heap.Init(&b.byExp)
	return nil
}

// exemptSource reports whether every address of src is exempt. b.mu is
// held.
func (b *penaltyBox) exemptSource(src netip.Prefix) bool {
	for _, p := range b.set.exempt {
		if p.Bits() <= src.Bits() && p.Contains(src.Addr()) {
			return true
		}
	}
	return false
}

// sourceOf returns the source addr is counted under: the address itself
// for IPv4, its /64 for IPv6.
func sourceOf(addr netip.Addr) netip.Prefix {
	addr = addr.Unmap()
	if addr.Is4() {
		return netip.PrefixFrom(addr, 32)
	}
	p, _ := addr.WithZone("").Prefix(ipv6PenaltyBits)
	return p
}

// exempt reports whether addr is in an exempt prefix. b.mu is held.
func (b *penaltyBox) exempt(addr netip.Addr) bool {
	for _, p := range b.set.exempt {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// blocked reports whether addr is penalised now, and until when.
func (b *penaltyBox) blocked(addr netip.Addr) (time.Time, bool) {
	addr = addr.Unmap()
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.set.disabled || b.exempt(addr) {
		return time.Time{}, false
	}
	e := b.entries[sourceOf(addr)]
	if e == nil || !now.Before(e.until) {
		return time.Time{}, false
	}
	return e.until, true
}

// fail counts one failed authentication from addr. It reports the penalty
// that failure started, if any. Failures of a source that is already
// penalised (connections accepted before the penalty began) are not
// counted: they neither extend nor repeat the penalty.
func (b *penaltyBox) fail(addr netip.Addr) (penalty, bool) {
	addr = addr.Unmap()
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.set.disabled || b.exempt(addr) {
		return penalty{}, false
	}
	b.prune(now)
	src := sourceOf(addr)
	e := b.entries[src]
	if e == nil {
		e = b.insert(src)
	}
	if now.Before(e.until) {
		return penalty{}, false
	}
	if e.failures == 0 || !now.Before(e.windowEnd) {
		e.failures, e.windowEnd = 0, now.Add(b.set.window)
	}
	e.failures++
	if e.failures < b.set.maxFailures {
		b.setExpiry(e)
		heap.Fix(&b.byExp, e.index)
		return penalty{}, false
	}
	if e.offences > 0 && now.Sub(e.until) >= b.set.maxDuration {
		e.offences = 0 // the last penalty is too long ago to be repeated
	}
	e.offences++
	d := b.set.duration
	for i := 1; i < e.offences && d < b.set.maxDuration; i++ {
		d *= 2
	}
	d = min(d, b.set.maxDuration)
	p := penalty{Source: src, Failures: e.failures, Duration: d, Until: now.Add(d), Offence: e.offences}
	e.until = p.Until
	e.failures, e.windowEnd = 0, time.Time{}
	b.setExpiry(e)
	heap.Fix(&b.byExp, e.index)
	return p, true
}

// forgive takes back one failure of addr that is still counted; a source
// that is penalised stays penalised. A connection that authenticates after
// some of its keys failed calls it, so that a user whose agent offers plain
// keys before the certificate is not penalised for logging in often.
func (b *penaltyBox) forgive(addr netip.Addr) {
	addr = addr.Unmap()
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entries[sourceOf(addr)]
	if e == nil || e.failures == 0 || !now.Before(e.windowEnd) || now.Before(e.until) {
		return
	}
	e.failures--
}

// len returns the number of sources tracked.
func (b *penaltyBox) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.entries)
}

// insert tracks a new source, evicting first if the box is full: the entry
// that expires soonest goes, so one that is merely counting failures is
// dropped before one that is penalised. b.mu is held.
func (b *penaltyBox) insert(src netip.Prefix) *penaltyEntry {
	for len(b.entries) >= b.max && len(b.byExp) > 0 {
		b.remove(b.byExp[0])
	}
	e := &penaltyEntry{source: src}
	b.entries[src] = e
	heap.Push(&b.byExp, e)
	return e
}

// prune drops the entries that have expired by now. b.mu is held.
func (b *penaltyBox) prune(now time.Time) {
	for len(b.byExp) > 0 && !now.Before(b.byExp[0].expires) {
		b.remove(b.byExp[0])
	}
}

func (b *penaltyBox) remove(e *penaltyEntry) {
	heap.Remove(&b.byExp, e.index)
	delete(b.entries, e.source)
}

// setExpiry sets when e holds nothing worth keeping: its window has ended
// and its repeat-offence memory (maxDuration after its penalty) has passed.
// b.mu is held.
func (b *penaltyBox) setExpiry(e *penaltyEntry) {
	var exp time.Time
	if e.failures > 0 {
		exp = e.windowEnd
	}
	if !e.until.IsZero() {
		if m := e.until.Add(b.set.maxDuration); m.After(exp) {
			exp = m
		}
	}
	e.expires = exp
}

// penaltyHeap orders entries by expiry, soonest first (container/heap).
type penaltyHeap []*penaltyEntry

func (h penaltyHeap) Len() int           { return len(h) }
func (h penaltyHeap) Less(i, j int) bool { return h[i].expires.Before(h[j].expires) }
func (h penaltyHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}

func (h *penaltyHeap) Push(x any) {
	e := x.(*penaltyEntry)
	e.index = len(*h)
	*h = append(*h, e)
}

func (h *penaltyHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.index = -1
	return e
}
