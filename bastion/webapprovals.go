package bastion

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/posternhq/postern/approval"
	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/players/web"
	"github.com/posternhq/postern/state"
)

// webApprovals adapts the approval broker to the web UI's approvals pages.
// The UI shows the pages only to approvers and admins, so its decisions are
// trusted like those of the API.
type webApprovals struct {
	broker *approval.Broker
	log    *slog.Logger
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

// Decide passes the broker's refusals through (their text is shown to the
// approver) and hides anything else behind a short message.
func (w webApprovals) Decide(ctx context.Context, id string, approver certs.Identity, approve bool, reason string) error {
	_, err := w.broker.Decide(ctx, id, approval.Decision{Approver: approver, Trusted: true,
		Approve: approve, Reason: reason, Via: "web"})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, approval.ErrNotFound), errors.Is(err, approval.ErrDecided),
		errors.Is(err, approval.ErrSelfApproval), errors.Is(err, approval.ErrNotApprover):
		return err
	default:
		w.log.Error("web approval decision", "request", id, "err", err)
		return errors.New("the decision could not be recorded; try again")
	}
}
