package lock

import (
	"context"
	"sync"

	"github.com/posternhq/postern/state"
)

// entry is one tracked live session.
type entry struct {
	s    Subject
	end  func(cause error)
	once sync.Once
}

// Track registers a live session serving s; end ends it with a cause (a
// *usererr.Error from Refusal) and must not block for long. If an active
// lock already matches s, Track registers nothing and returns that lock's
// refusal: the session must not start. Otherwise the returned untrack
// removes the registration; call it when the session is over.
func (l *Locker) Track(s Subject, end func(cause error)) (untrack func(), err error) {
	if err := l.Check(s); err != nil {
		return func() {}, err
	}
	e := &entry{s: s, end: end}
	l.mu.Lock()
	l.tracked[e] = struct{}{}
	locks := l.locks
	l.mu.Unlock()
	// A lock may have arrived between the check and the registration.
	if lk, ok := l.find(locks, s); ok {
		l.terminate(e, lk)
	}
	return func() {
		l.mu.Lock()
		delete(l.tracked, e)
		l.mu.Unlock()
	}, nil
}

// enforce ends every tracked entry that an active lock matches.
func (l *Locker) enforce() {
	l.mu.Lock()
	locks := l.locks
	entries := make([]*entry, 0, len(l.tracked))
	for e := range l.tracked {
		entries = append(entries, e)
	}
	l.mu.Unlock()
	if len(locks) == 0 {
		return
	}
	for _, e := range entries {
		if lk, ok := l.find(locks, e.s); ok {
			l.terminate(e, lk)
		}
	}
}

// terminate ends e because of lk, once, and audits it.
func (l *Locker) terminate(e *entry, lk state.Lock) {
	e.once.Do(func() {
		l.terminated.WithLabelValues(lk.Kind).Inc()
		l.log.Info("ending a live session: locked", "lock", lk.ID, "kind", lk.Kind, "identity", e.s.Identity.Username,
			"target", e.s.Target, "session", e.s.Session, "conn", e.s.Conn)
		if l.opts.Audit != nil {
			d := map[string]any{"lock": lk.ID, "kind": lk.Kind}
			if e.s.Conn != "" {
				d["conn"] = e.s.Conn
			}
			l.opts.Audit(context.Background(), state.Event{Type: state.EventLockEnforced, Actor: e.s.Identity.Username,
				Target: e.s.Target, Session: e.s.Session, Details: d})
		}
		e.end(Refusal(lk))
	})
}
