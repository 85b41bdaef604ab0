package approval

import (
	"context"
	"time"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/policy"
)

// grantsLookupTimeout bounds one read of the grants for an authorization.
const grantsLookupTimeout = 2 * time.Second

// PolicyGrants returns the grants lookup for policy.Engine.WithGrants: the
// active just-in-time grants of an identity, read from the store. A store
// error yields no grants (fail closed) and is logged.
func (b *Broker) PolicyGrants() policy.GrantsFunc {
	return func(id certs.Identity) []policy.AccessGrant {
		ctx, cancel := context.WithTimeout(context.Background(), grantsLookupTimeout)
		defer cancel()
		key := id.Key()
		if key == "" {
			return nil
		}
		gs, err := b.opts.Store.ActiveGrants(ctx, key)
		if err != nil {
			b.log.Error("read just-in-time grants", "identity", key, "err", err)
			return nil
		}
		out := make([]policy.AccessGrant, 0, len(gs))
		for _, g := range gs {
			out = append(out, policy.AccessGrant{ID: g.ID, Target: g.Target, Logins: g.Logins, Expires: g.Expires})
		}
		return out
	}
}

// RevokeGrant revokes the grant of an approved access request (the grant id
// is the request id) on behalf of by.
func (b *Broker) RevokeGrant(ctx context.Context, id, by string) error {
	if err := b.opts.Store.RevokeGrant(ctx, id, by); err != nil {
		return err
	}
	b.log.Info("just-in-time grant revoked", "grant", id, "by", by)
	return nil
}
