package web

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/players"
	"github.com/posternhq/postern/state"
)

// PermApprover is the permission that lets an identity see and decide
// approval requests in the UI (admin does too).
const PermApprover = "approver"

// Approvals is what the approvals pages need from the approval broker. The
// bastion adapts its broker to it; the web UI does not depend on the
// bastion.
type Approvals interface {
	// List returns requests with status (all if empty), newest first, at
	// most limit of them.
	List(ctx context.Context, status string, limit int) ([]state.Approval, error)
	// Get returns one request; its error wraps state.ErrNotFound for an
	// unknown id.
	Get(ctx context.Context, id string) (state.Approval, error)
	// Decide records approver's decision on request id. The message of a
	// usererr.Error is shown to the approver (self-approval, already
	// decided, not an approver); any other error is logged only.
	Decide(ctx context.Context, id string, approver certs.Identity, approve bool, reason string) error
}

// Limits of the approvals pages.
const (
	maxPendingListed = 200
	maxDecidedListed = 50
	maxReasonLen     = 1000
	flashTTL         = time.Minute
)

// Flash cookie names; __Host- prefixed when the UI is served over https.
const (
	flashCookie       = "postern_flash"
	secureFlashCookie = "__Host-postern_flash"
)

// flash is a one-time message shown after a decision's redirect, kept in a
// short-lived sealed cookie so that it cannot be forged through a link.
type flash struct {
	Text    string `json:"text"`
	Error   bool   `json:"error,omitempty"`
	Expires int64  `json:"exp"`
}

func (u *UI) flashCookieName() string {
	if u.secure {
		return secureFlashCookie
	}
	return flashCookie
}

// mayApprove reports whether id may see the approvals pages.
func (u *UI) mayApprove(id certs.Identity) bool {
	if u.opts.Approvals == nil || u.opts.Permissions == nil {
		return false
	}
	p := u.opts.Permissions(id)
	return slices.Contains(p, PermApprover) || slices.Contains(p, players.PermAdmin)
}

// validApprovalID accepts request ids (ULIDs) and nothing that could
// change the meaning of a URL.
func validApprovalID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// approvalRoutes serves /ui/approvals, /ui/approvals/{id} and
// /ui/approvals/{id}/approve|deny; rest is the path after /approvals.
func (u *UI) approvalRoutes(w http.ResponseWriter, r *http.Request, rest string) {
	if u.opts.Approvals == nil {
		u.errorPage(w, r, http.StatusNotFound, "There is no such page.")
		return
	}
	if rest == "" || rest == "/" {
		u.withApprover(w, r, false, u.approvalsPage)
		return
	}
	raw, action, _ := strings.Cut(strings.TrimPrefix(rest, "/"), "/")
	if !validApprovalID(raw) || strings.Contains(r.URL.RawPath, "%") {
		u.errorPage(w, r, http.StatusBadRequest, "That is not an approval request id.")
		return
	}
	switch action {
	case "":
		u.withApprover(w, r, false, func(w http.ResponseWriter, r *http.Request, s session) { u.approvalPage(w, r, s, raw) })
	case "approve", "deny":
		u.withApprover(w, r, true, func(w http.ResponseWriter, r *http.Request, s session) {
			u.decide(w, r, s, raw, action == "approve")
		})
	default:
		u.errorPage(w, r, http.StatusNotFound, "There is no such page.")
	}
}

// withApprover runs page for a logged-in approver or admin (see withPerm).
func (u *UI) withApprover(w http.ResponseWriter, r *http.Request, post bool, page func(http.ResponseWriter, *http.Request, session)) {
	u.withPerm(w, r, post, u.mayApprove, "approval requests need the approver (or admin) permission", page)
}

func (u *UI) approvalsPage(w http.ResponseWriter, r *http.Request, s session) {
	pending, err := u.opts.Approvals.List(r.Context(), state.ApprovalPending, maxPendingListed)
	if err != nil {
		u.internalError(w, r, err)
		return
	}
	recent, err := u.opts.Approvals.List(r.Context(), "", maxDecidedListed+len(pending))
	if err != nil {
		u.internalError(w, r, err)
		return
	}
	var decided []state.Approval
	for _, a := range recent {
		if a.Status != state.ApprovalPending && len(decided) < maxDecidedListed {
			decided = append(decided, a)
		}
	}
	u.render(w, r, http.StatusOK, "approvals.html", pageData{Title: "Approvals", Session: &s,
		Pending: pending, Decided: decided})
}

func (u *UI) approvalPage(w http.ResponseWriter, r *http.Request, s session, id string) {
	a, err := u.opts.Approvals.Get(r.Context(), id)
	if errors.Is(err, state.ErrNotFound) {
		u.errorPage(w, r, http.StatusNotFound, "There is no such approval request.")
		return
	}
	if err != nil {
		u.internalError(w, r, err)
		return
	}
	d := pageData{Title: "Approval request " + a.ID, Session: &s, Approval: &a}
	if c, err := r.Cookie(u.flashCookieName()); err == nil {
		var f flash
		if u.sealer.open(u.flashCookieName(), c.Value, &f) == nil && f.Expires >= u.now().Unix() {
			d.Flash = &f
		}
		u.clearCookie(w, u.flashCookieName())
	}
	u.render(w, r, http.StatusOK, "approval.html", d)
}

// decide records the logged-in approver's decision and redirects back to
// the request's page with a flash message saying how it went.
func (u *UI) decide(w http.ResponseWriter, r *http.Request, s session, id string, approve bool) {
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	f := flash{Expires: u.now().Add(flashTTL).Unix()}
	switch {
	case len(reason) > maxReasonLen:
		f.Text, f.Error = "The reason is too long.", true
	default:
		if err := u.opts.Approvals.Decide(r.Context(), id, s.Identity, approve, reason); err != nil {
			if r.Context().Err() != nil {
				return
			}
			why := "the decision could not be recorded; try again"
			if e := usererr.As(err); e != nil {
				why = e.Msg
				u.log.Info("approval decision refused", "request", id, "approver", s.Identity.Username, "err", err)
			} else {
				u.log.Error("approval decision failed", "request", id, "approver", s.Identity.Username, "err", err)
			}
			f.Text, f.Error = "Not recorded: "+why+".", true
		} else if approve {
			f.Text = "Your approval is recorded."
		} else {
			f.Text = "Your denial is recorded."
		}
	}
	if err := u.setCookie(w, u.flashCookieName(), f, flashTTL); err != nil {
		u.internalError(w, r, err)
		return
	}
	http.Redirect(w, r, u.base+"/approvals/"+id, http.StatusSeeOther)
}
