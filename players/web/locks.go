package web

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/players"
	"github.com/posternhq/postern/state"
)

// Locks is what the locks page and the Terminate button need from the
// kill switch; the bastion adapts its lock.Locker to it.
type Locks interface {
	// List returns the locks in force, oldest first.
	List(ctx context.Context) ([]state.Lock, error)
	// Lock makes a lock; a usererr.Error's message (a bad request) is
	// shown to the person.
	Lock(ctx context.Context, r LockRequest) (state.Lock, error)
	// Unlock removes lock id on behalf of by.
	Unlock(ctx context.Context, id, by string) error
}

// LockRequest is a lock made in the UI.
type LockRequest struct {
	// Kind is identity, role, target or session.
	Kind string
	// Name is the role, target or session id; Issuer, Subject and Username
	// name an identity.
	Name, Issuer, Subject, Username string
	// Reason says why.
	Reason string
	// TTL lifts the lock after it; never if zero.
	TTL time.Duration
	// By is who locks.
	By string
}

// mayLock reports whether id may make and remove every lock (admin).
func (u *UI) mayLock(id certs.Identity) bool {
	return u.opts.Locks != nil && u.hasPerm(id, players.PermAdmin)
}

// mayTerminate reports whether id may see the locks and terminate
// sessions (admin or moderator).
func (u *UI) mayTerminate(id certs.Identity) bool {
	return u.opts.Locks != nil && u.hasPerm(id, players.PermAdmin, players.PermModerator)
}

func (u *UI) hasPerm(id certs.Identity, perms ...string) bool {
	if u.opts.Permissions == nil {
		return false
	}
	have := u.opts.Permissions(id)
	return slices.ContainsFunc(perms, func(p string) bool { return slices.Contains(have, p) })
}

// needModerator says what the locks page needs.
const needModerator = "locks need the admin (or moderator) permission"

// lockRoutes serves /ui/locks (GET: the page; POST: make a lock) and
// /ui/locks/{id}/remove; rest is the path after /locks.
func (u *UI) lockRoutes(w http.ResponseWriter, r *http.Request, rest string) {
	if u.opts.Locks == nil {
		u.errorPage(w, r, http.StatusNotFound, "There is no such page.")
		return
	}
	switch {
	case rest == "" || rest == "/":
		if r.Method == http.MethodPost {
			u.withPerm(w, r, true, u.mayTerminate, needModerator, u.makeLock)
		} else {
			u.withPerm(w, r, false, u.mayTerminate, needModerator, u.locksPage)
		}
	case strings.HasSuffix(rest, "/remove"):
		id := strings.TrimSuffix(strings.TrimPrefix(rest, "/"), "/remove")
		if !validApprovalID(id) || strings.Contains(r.URL.RawPath, "%") {
			u.errorPage(w, r, http.StatusBadRequest, "That is not a lock id.")
			return
		}
		u.withPerm(w, r, true, u.mayLock, "removing a lock needs the admin permission", func(w http.ResponseWriter, r *http.Request, s session) {
			f := u.flashFor(u.opts.Locks.Unlock(r.Context(), id, s.Identity.Username), "Lock "+id+" removed.")
			u.redirectFlash(w, r, f, "/locks")
		})
	default:
		u.errorPage(w, r, http.StatusNotFound, "There is no such page.")
	}
}

// withPerm runs page for a logged-in identity that may: GET pages when
// post is false, POST with a valid CSRF token when it is true. It sends
// others to the login (a GET) or answers 403, saying what is needed.
func (u *UI) withPerm(w http.ResponseWriter, r *http.Request, post bool, may func(certs.Identity) bool, need string,
	page func(http.ResponseWriter, *http.Request, session)) {
	w.Header().Set("Cache-Control", "no-store")
	if post && r.Method != http.MethodPost || !post && r.Method != http.MethodGet && r.Method != http.MethodHead {
		u.errorPage(w, r, http.StatusMethodNotAllowed, "Method not allowed.")
		return
	}
	s, ok := u.currentSession(r)
	if !ok {
		if post {
			u.errorPage(w, r, http.StatusForbidden, "Your login has expired. Log in again and retry.")
			return
		}
		ret := strings.TrimPrefix(r.URL.RequestURI(), u.base)
		http.Redirect(w, r, u.base+"/login?return="+url.QueryEscape(ret), http.StatusFound)
		return
	}
	if !may(s.Identity) {
		u.render(w, r, http.StatusForbidden, "forbidden.html", pageData{Session: &s, Title: "Forbidden",
			Message: "You are logged in as " + s.Identity.Display() + ", but " + need + "."})
		return
	}
	if post && !u.checkCSRF(r, s) {
		u.errorPage(w, r, http.StatusForbidden, "The request did not carry a valid form token. Reload the page and try again.")
		return
	}
	page(w, r, s)
}

func (u *UI) locksPage(w http.ResponseWriter, r *http.Request, s session) {
	ls, err := u.opts.Locks.List(r.Context())
	if err != nil {
		u.internalError(w, r, err)
		return
	}
	d := pageData{Title: "Locks", Session: &s, Locks: ls, MayLock: u.mayLock(s.Identity), Flash: u.takeFlash(w, r)}
	u.render(w, r, http.StatusOK, "locks.html", d)
}

// makeLock makes the lock the form describes: any kind for an admin, a
// session lock (terminate) for a moderator.
func (u *UI) makeLock(w http.ResponseWriter, r *http.Request, s session) {
	req := LockRequest{Kind: r.PostFormValue("kind"), Name: strings.TrimSpace(r.PostFormValue("name")),
		Issuer: strings.TrimSpace(r.PostFormValue("issuer")), Subject: strings.TrimSpace(r.PostFormValue("subject")),
		Username: strings.TrimSpace(r.PostFormValue("username")), Reason: strings.TrimSpace(r.PostFormValue("reason")),
		By: s.Identity.Username}
	back := "/locks"
	if req.Kind == state.LockSession && r.PostFormValue("from") == "session" {
		back = "/sessions/" + req.Name
	}
	if req.Kind != state.LockSession && !u.mayLock(s.Identity) {
		u.redirectFlash(w, r, flash{Text: "Not locked: only an admin locks identities, roles and targets.", Error: true}, back)
		return
	}
	if d := r.PostFormValue("for"); d != "" {
		ttl, err := time.ParseDuration(d)
		if err != nil || ttl <= 0 {
			u.redirectFlash(w, r, flash{Text: "Not locked: for must be a duration such as 1h.", Error: true}, back)
			return
		}
		req.TTL = ttl
	}
	lk, err := u.opts.Locks.Lock(r.Context(), req)
	ok := "Locked (lock " + lk.ID + ")."
	if req.Kind == state.LockSession {
		ok = "Session terminated (lock " + lk.ID + ")."
	}
	u.redirectFlash(w, r, u.flashFor(err, ok), back)
}

// flashFor is the flash message of an action's outcome.
func (u *UI) flashFor(err error, ok string) flash {
	if err == nil {
		return flash{Text: ok}
	}
	why := "it could not be done; try again"
	if e := usererr.As(err); e != nil {
		why = e.Msg
	} else {
		u.log.Error("lock action failed", "err", err)
	}
	return flash{Text: "Not done: " + why + ".", Error: true}
}

// redirectFlash sets a flash message and redirects to path under the UI.
func (u *UI) redirectFlash(w http.ResponseWriter, r *http.Request, f flash, path string) {
	f.Expires = u.now().Add(flashTTL).Unix()
	if err := u.setCookie(w, u.flashCookieName(), f, flashTTL); err != nil {
		u.internalError(w, r, err)
		return
	}
	http.Redirect(w, r, u.base+path, http.StatusSeeOther)
}

// takeFlash returns the pending flash message, if any, and clears it.
func (u *UI) takeFlash(w http.ResponseWriter, r *http.Request) *flash {
	c, err := r.Cookie(u.flashCookieName())
	if err != nil {
		return nil
	}
	u.clearCookie(w, u.flashCookieName())
	var f flash
	if u.sealer.open(u.flashCookieName(), c.Value, &f) == nil && f.Expires >= u.now().Unix() {
		return &f
	}
	return nil
}
