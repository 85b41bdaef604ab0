package lock

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/state"
)

// ExitNoModerator is the exit status of a session whose role requires a
// moderator when none joined in time (contract, see docs/exit-codes.md).
const ExitNoModerator = 119

// joinChannel is the store notification channel of "someone joined session
// X" (the payload is X).
const joinChannel = "postern_joins"

// modPoll is how often a waiting session re-reads who joined, in case a
// hint was lost.
const modPoll = time.Second

// Join records that moderator joined session (watched it live: postern
// watch, the web UI's live view) and wakes the session if it waits for a
// moderator, on whichever replica runs it. The caller has checked that
// moderator may moderate (the moderator or admin permission); whether the
// moderator counts for the session's role is the waiting side's decision.
func (l *Locker) Join(ctx context.Context, session string, moderator certs.Identity) error {
	if err := l.opts.Store.JoinSession(ctx, state.Join{Session: session, Who: moderator.Username,
		Issuer: moderator.Issuer, Subject: moderator.Subject, Key: moderator.Key(), Groups: moderator.Groups}); err != nil {
		return fmt.Errorf("record the join: %w", err)
	}
	l.log.Info("moderator joined a session", "session", session, "moderator", moderator.Key())
	l.wake(session)
	if l.opts.Notify != nil {
		if err := l.opts.Notify(context.WithoutCancel(ctx), joinChannel, session); err != nil {
			l.log.Warn("publish a join; the waiting replica sees it at its next poll", "session", session, "err", err)
		}
	}
	return nil
}

// ModerationWait is a session waiting for a moderator.
type ModerationWait struct {
	// Session is the session's id.
	Session string
	// Requester is whose session it is; they never moderate themselves.
	Requester certs.Identity
	// Moderators are the groups or people, by identity key ("<issuer>:<subject>"
	// or "alias:<name>", as certs.Identity.Names reads them), whose joining
	// counts; anyone who joined (the join path checked the permission) if
	// empty. A username names nobody.
	Moderators []string
	// Timeout is how long to wait.
	Timeout time.Duration
}

// WaitModerator blocks until a moderator who counts for w joined w.Session,
// and returns their join (who, by username and key); or returns a
// *usererr.Error (exit ExitNoModerator) when w.Timeout passes first, or
// ctx's error.
func (l *Locker) WaitModerator(ctx context.Context, w ModerationWait) (state.Join, error) {
	wake := make(chan struct{}, 1)
	l.mu.Lock()
	if l.waiters[w.Session] == nil {
		l.waiters[w.Session] = map[chan struct{}]struct{}{}
	}
	l.waiters[w.Session][wake] = struct{}{}
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.waiters[w.Session], wake)
		if len(l.waiters[w.Session]) == 0 {
			delete(l.waiters, w.Session)
		}
		l.mu.Unlock()
	}()
	deadline := time.NewTimer(w.Timeout)
	defer deadline.Stop()
	poll := time.NewTicker(modPoll)
	defer poll.Stop()
	for {
		js, err := l.opts.Store.Joins(ctx, w.Session)
		if err != nil && ctx.Err() == nil {
			l.log.Warn("read who joined a session", "session", w.Session, "err", err)
		}
		for _, j := range js {
			if counts(j, w) {
				return j, nil
			}
		}
		select {
		case <-ctx.Done():
			return state.Join{}, ctx.Err()
		case <-deadline.C:
			return state.Join{}, &usererr.Error{Status: http.StatusForbidden, Code: "moderator_timeout", Exit: ExitNoModerator, Global: true,
				Msg: fmt.Sprintf("no moderator joined within %s; session not started", w.Timeout)}
		case <-wake:
		case <-poll.C:
		}
	}
}

// counts reports whether j's moderator counts for w. People are compared by
// identity key, never by username: a join without a key (recorded before
// joins had keys) counts for nothing, a requester without a key is moderated
// by nobody, and the requester never counts, under any issuer that
// identity.aliases maps to them. Entries of w.Moderators name a moderator by
// group or by key, as approvers are named (certs.Identity.Names).
func counts(j state.Join, w ModerationWait) bool {
	mod, ok := joinIdentity(j)
	if !ok || w.Requester.Key() == "" || samePerson(mod, w.Requester) {
		return false
	}
	if len(w.Moderators) == 0 {
		return true
	}
	return slices.ContainsFunc(w.Moderators, mod.Names) || mod.InGroup(w.Moderators...)
}

// joinIdentity returns the identity a join recorded: the issuer and subject
// it was vouched for as, and its alias when its key is an alias key. It
// reports false for a join whose key is empty (recorded before joins had
// keys) or that its issuer and subject do not explain (changed by hand).
func joinIdentity(j state.Join) (certs.Identity, bool) {
	id := certs.Identity{Issuer: j.Issuer, Subject: j.Subject, Username: j.Who, Groups: j.Groups}
	if alias, ok := strings.CutPrefix(j.Key, certs.AliasKeyPrefix); ok {
		id.Alias = alias
	}
	return id, j.Key != "" && id.Key() == j.Key
}

// samePerson reports whether a and b are one person: equal keys, or the key
// of one names the issuer and subject of the other (a person aliased on one
// side only, as with a certificate issued before the alias was configured).
func samePerson(a, b certs.Identity) bool {
	return a.SameAs(b) || a.Names(b.Key()) || b.Names(a.Key())
}

// wake wakes this process's waiters on session.
func (l *Locker) wake(session string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ch := range l.waiters[session] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// listenJoins wakes local waiters on join hints from other replicas until
// ctx ends; a broken subscription leaves the waiters to their poll.
func (l *Locker) listenJoins(ctx context.Context, joins <-chan string) {
	if joins == nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case id, ok := <-joins:
			if !ok {
				if ctx.Err() == nil {
					l.log.Warn("moderator join hints stopped; waiting sessions poll", "err", errors.New("subscription closed"))
				}
				return
			}
			l.wake(id)
		}
	}
}
