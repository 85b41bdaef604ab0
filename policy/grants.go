package policy

import (
	"slices"
	"time"

	"github.com/posternhq/postern/certs"
)

// CodeAllowedByGrant is the decision code of an access allowed by a
// just-in-time grant rather than a role.
const CodeAllowedByGrant = "allowed_by_grant"

// AccessGrant is a just-in-time grant: an approved access request that adds
// one target to an identity's reach until it expires.
type AccessGrant struct {
	// ID identifies the grant (audit, revocation).
	ID string
	// Target is the target's name.
	Target string
	// Logins are the logins allowed on an ssh or command target; if empty,
	// the logins of the identity's matching roles.
	Logins []string
	// Expires is when the grant stops applying.
	Expires time.Time
}

// GrantsFunc returns the active grants of an identity. It is called on every
// authorization that the roles alone deny, so it should be cheap (cached).
type GrantsFunc func(id certs.Identity) []AccessGrant

// WithGrants returns a copy of e that also allows what grants returns: when
// no role allows an access, an unexpired grant for the target does, with
// record: required, the command rules of the identity's matching roles (so
// approvals still apply) and a session cap at the grant's expiry. e itself
// is not changed.
func (e *Engine) WithGrants(grants GrantsFunc) *Engine {
	c := *e
	c.grants = grants
	return &c
}

// authorizeGrant looks for a grant of target for id.
func (e *Engine) authorizeGrant(id certs.Identity, target *Target, login string, port int, now time.Time) (Decision, bool) {
	if e.grants == nil || target == nil || id.Key() == "" {
		return Decision{}, false
	}
	rs := e.matching(id)
	for _, g := range e.grants(id) {
		if g.Target != target.Name || !now.Before(g.Expires) {
			continue
		}
		logins := g.Logins
		if len(logins) == 0 {
			for _, r := range rs {
				logins = append(logins, r.cfg.Logins...)
			}
		}
		if target.Kind != "tcp" && (len(logins) == 0 || (login != "" && !slices.Contains(logins, login))) {
			continue
		}
		switch target.Kind {
		case "ssh":
			if port != 22 && port != target.Port {
				continue
			}
		case "tcp":
			if port != target.Port {
				continue
			}
		}
		d := Decision{Allow: true, Code: CodeAllowedByGrant, Role: "grant:" + g.ID, Record: RecordRequired,
			Interactive: true, MaxSession: g.Expires.Sub(now)}
		for _, r := range rs {
			d.Rules = append(d.Rules, r.cfg.Rules...)
		}
		return d, true
	}
	return Decision{}, false
}
