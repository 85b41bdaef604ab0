package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/certs/scim"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/lock"
	"github.com/posternhq/postern/policy"
	"github.com/posternhq/postern/state"
)

// newSCIM returns the SCIM endpoint and the directory every replica keeps,
// or nils when no SCIM client is configured.
func newSCIM(ctx context.Context, cfg *config.Config, st *state.Store, locks *lock.Locker, log *slog.Logger,
	reg prometheus.Registerer) (*scim.Server, *scim.Directory, error) {
	if len(cfg.Identity.SCIM) == 0 {
		return nil, nil, nil
	}
	log = log.With("component", "scim")
	dir, err := scim.NewDirectory(ctx, st, cfg.Identity.SCIM, cfg.Identity.Aliases, log)
	if err != nil {
		return nil, nil, fmt.Errorf("scim directory: %w", err)
	}
	srv, err := scim.NewServer(scim.Options{Clients: cfg.Identity.SCIM, State: st, Locker: scimLocker{locks}, Directory: dir,
		Aliases: cfg.Identity.Aliases, Log: log, Metrics: reg})
	if err != nil {
		return nil, nil, err
	}
	return srv, dir, nil
}

// scimLocker is the kill switch as SCIM deprovisioning uses it.
type scimLocker struct{ l *lock.Locker }

func (s scimLocker) LockIdentity(ctx context.Context, id certs.Identity, reason, by string) (string, error) {
	lk, err := s.l.Lock(ctx, lock.Spec{Kind: state.LockIdentity, Identity: id, Reason: reason, By: by})
	return lk.ID, err
}

func (s scimLocker) Unlock(ctx context.Context, id, by string) error {
	if err := s.l.Unlock(ctx, id, by); err != nil && !errors.Is(err, lock.ErrNotFound) {
		return err
	}
	return nil
}

// directoryGroups is the policy's view of the SCIM directory (nil without
// one: roles match the login's groups).
func directoryGroups(dir *scim.Directory) policy.GroupsFunc {
	if dir == nil {
		return nil
	}
	return dir.Groups
}

// scimApprover checks approvers against the SCIM directory before their
// decisions: a deprovisioned one is refused, a known one decides with its
// provisioned groups, plus, for one that came without groups of its own (a
// Slack approver), those approvals.groups gives its key. Nil without a
// directory.
func scimApprover(dir *scim.Directory, configured func(key string) []string) func(certs.Identity) (certs.Identity, error) {
	if dir == nil {
		return nil
	}
	return func(id certs.Identity) (certs.Identity, error) {
		bare := len(id.Groups) == 0
		id, err := dir.Approver(id)
		if err != nil || !bare || len(id.Groups) == 0 {
			return id, err
		}
		for _, g := range configured(id.Key()) {
			if !slices.Contains(id.Groups, g) {
				id.Groups = append(id.Groups, g)
			}
		}
		return id, nil
	}
}

// scimHandler returns the SCIM endpoint as the /v1/scim/ handler, nil (no
// route) without SCIM clients.
func scimHandler(srv *scim.Server) http.Handler {
	if srv == nil {
		return nil
	}
	return srv
}

// directoryPoll is how often a replica reloads the SCIM directory even
// without an announced change (a lost notification).
const directoryPoll = 5 * time.Second
