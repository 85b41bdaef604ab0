package policy

import (
	"slices"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
)

// Grant implements [certs.Policy]: what certificates issued to id may carry.
// Roles are the matching roles; Logins the union of their logins (in role
// order); permit-pty if any matching role allows interactive sessions;
// permit-port-forwarding, -agent- and -X11- if any grants forwarding.local,
// agent or x11. Roles do not cap the certificate lifetime (MaxTTL is zero):
// max_session caps sessions on the bastion instead.
func (e *Engine) Grant(id certs.Identity) certs.Grant {
	var g certs.Grant
	for _, r := range e.matching(id) {
		g.Roles = append(g.Roles, r.cfg.Name)
		for _, l := range r.cfg.Logins {
			if !slices.Contains(g.Logins, l) {
				g.Logins = append(g.Logins, l)
			}
		}
		if r.cfg.Interactive != InteractiveDeny {
			g.PermitPTY = true
		}
		f := r.cfg.Forwarding
		g.PermitPortForwarding = g.PermitPortForwarding || f.Local
		g.PermitAgentForwarding = g.PermitAgentForwarding || f.Agent
		g.PermitX11Forwarding = g.PermitX11Forwarding || f.X11
	}
	g.Passthrough = e.passthroughPrincipals(id)
	return g
}

// passthroughPrincipals lists, in inventory order, the principal of every
// passthrough ssh target and login the roles matching id grant.
func (e *Engine) passthroughPrincipals(id certs.Identity) []string {
	rs := e.matching(id)
	var out []string
	for _, t := range e.targets {
		if t.Kind != config.KindSSH || !t.Passthrough {
			continue
		}
		for _, r := range rs {
			if !r.targets[t] {
				continue
			}
			for _, l := range r.cfg.Logins {
				if p := certs.PassthroughPrincipal(t.Name, l); !slices.Contains(out, p) {
					out = append(out, p)
				}
			}
		}
	}
	return out
}

var _ certs.Policy = (*Engine)(nil)
