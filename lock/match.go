package lock

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/state"
)

// Subject is what a check or a tracked live session is about. Zero fields
// match no lock of their kind: a Subject with only an Identity is matched by
// identity and role locks alone.
type Subject struct {
	// Identity is who acts. Identity locks match its Issuer and Subject.
	Identity certs.Identity
	// Target is the target a session reaches; "" if none.
	Target string
	// Session is the session id; "" if none.
	Session string
	// Conn names the connection, for the audit event of an enforcement.
	Conn string
}

// matches reports whether lk applies to s at now, given the roles of s's
// identity (computed only when a role lock needs them).
func matches(lk state.Lock, s Subject, now time.Time, roles func() []string) bool {
	if !lk.Active(now) {
		return false
	}
	switch lk.Kind {
	case state.LockIdentity:
		// The lock names a key (issuer and subject, or "alias" and a
		// person's name): it matches the identity with that key, and an
		// aliased person by any of the issuer identities the alias maps.
		return lk.Issuer != "" && lk.Subject != "" && s.Identity.Names(certs.IdentityKey(lk.Issuer, lk.Subject))
	case state.LockRole:
		return s.Identity.Username != "" && slices.Contains(roles(), lk.Name)
	case state.LockTarget:
		return s.Target != "" && lk.Name == s.Target
	case state.LockSession:
		return s.Session != "" && lk.Name == s.Session
	}
	return false
}

// find returns the first of locks that matches s, if any.
func (l *Locker) find(locks []state.Lock, s Subject) (state.Lock, bool) {
	var roles []string
	rolesDone := false
	rolesOf := func() []string {
		if !rolesDone && l.opts.Roles != nil {
			roles, rolesDone = l.opts.Roles(s.Identity), true
		}
		return roles
	}
	now := l.now()
	for _, lk := range locks {
		if matches(lk, s, now, rolesOf) {
			return lk, true
		}
	}
	return state.Lock{}, false
}

// Check returns a "locked" *usererr.Error if an active lock matches s, by
// the locks in memory (see the package documentation), and nil otherwise.
func (l *Locker) Check(s Subject) error {
	l.mu.Lock()
	locks := l.locks
	l.mu.Unlock()
	if lk, ok := l.find(locks, s); ok {
		return Refusal(lk)
	}
	return nil
}

// CheckFresh is Check after re-reading the active locks from the store, so
// that a lock just made on another replica is seen. A store that cannot
// answer fails closed: the error is a *usererr.Error with status 503.
func (l *Locker) CheckFresh(ctx context.Context, s Subject) error {
	if err := l.reload(ctx); err != nil {
		return &usererr.Error{Status: http.StatusServiceUnavailable, Code: "locks_unavailable",
			Msg: "cannot check locks; try again", Exit: ExitLocked, Global: true, Err: err}
	}
	return l.Check(s)
}

// Refusal is the user-visible error of lk: code "locked", status 403, exit
// status ExitLocked, and a message that says what is locked and why.
func Refusal(lk state.Lock) *usererr.Error {
	what := ""
	switch lk.Kind {
	case state.LockIdentity:
		what = "your access is locked"
	case state.LockRole:
		what = fmt.Sprintf("role %s is locked", lk.Name)
	case state.LockTarget:
		what = fmt.Sprintf("target %s is locked", lk.Name)
	case state.LockSession:
		what = "session terminated"
	}
	return &usererr.Error{Status: http.StatusForbidden, Code: CodeLocked, Exit: ExitLocked, Global: true,
		Msg: fmt.Sprintf("%s: %s (lock %s)", what, lk.Reason, lk.ID)}
}
