package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/posternhq/postern/approval"
	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/lock"
	"github.com/posternhq/postern/players/web"
	"github.com/posternhq/postern/state"
)

// webApprovals adapts the approval broker to the web UI's approvals pages.
// The UI shows the pages only to approvers and admins, so its decisions are
// trusted like those of the API.
type webApprovals struct {
	broker *approval.Broker
}

var _ web.Approvals = webApprovals{}

func (w webApprovals) List(ctx context.Context, status string, limit int) ([]state.Approval, error) {
	return w.broker.List(ctx, status, limit)
}

func (w webApprovals) Get(ctx context.Context, id string) (state.Approval, error) {
	a, err := w.broker.Get(ctx, id)
	if errors.Is(err, approval.ErrNotFound) {
		return a, fmt.Errorf("approval %s: %w", id, state.ErrNotFound)
	}
	return a, err
}

// Decide records the decision; the broker's refusals are user-visible
// errors the UI shows, anything else it logs.
func (w webApprovals) Decide(ctx context.Context, id string, approver certs.Identity, approve bool, reason string) error {
	_, err := w.broker.Decide(ctx, id, approval.Decision{Approver: approver, Trusted: true,
		Approve: approve, Reason: reason, Via: "web"})
	return err
}

// webLocks adapts the kill switch to the web UI's locks page and Terminate
// button. The UI lets admins make any lock and moderators session locks.
type webLocks struct {
	locker *lock.Locker
}

var _ web.Locks = webLocks{}

func (w webLocks) List(ctx context.Context) ([]state.Lock, error) {
	return w.locker.List(ctx, false, 0)
}

func (w webLocks) Lock(ctx context.Context, r web.LockRequest) (state.Lock, error) {
	return w.locker.Lock(ctx, lock.Spec{Kind: r.Kind, Name: r.Name, Reason: r.Reason, TTL: r.TTL, By: r.By,
		Identity: certs.Identity{Issuer: r.Issuer, Subject: r.Subject, Username: r.Username}})
}

func (w webLocks) Unlock(ctx context.Context, id, by string) error {
	return w.locker.Unlock(ctx, id, by)
}
