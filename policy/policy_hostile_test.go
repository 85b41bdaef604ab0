package policy

import (
	"net/netip"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/posternhq/postern/certs"
)

// FuzzAuthorize drives the policy matcher with arbitrary identities, target
// names, logins and ports against the test configuration. Whatever the
// input, an allowed access must come from a role the identity really
// matches, for a login that role lists; and a forward is only allowed inside
// a forwarding.allow prefix of such a role.
func FuzzAuthorize(f *testing.F) {
	f.Add("github", "repo:x/y", "agents", "web-1", "deploy", 22, "10.1.0.5", 443)
	f.Add("corp", "bob@example.com", "", "www:2222", "ubuntu", 2222, "10.1.2.3", 8050)
	f.Add("corp", "alice@example.com", "sre", "psql-prod", "root", 0, "127.0.0.1", 5432)
	f.Add("corp", "eve@evil.test", "agents", "WEB-1", "deploy", 22, "::ffff:10.1.0.1", 443)
	f.Add("corp", "x@example.com\x00", "sre,agents", "10.0.0.6:2222", "root ", 65536, "0.0.0.0", -1)
	e, err := New(testConfig())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, issuer, user, groups, host, login string, port int, ip string, fport int) {
		id := certs.Identity{Issuer: issuer, Username: user}
		if groups != "" {
			id.Groups = strings.Split(groups, ",")
		}
		matchesSome := func() []string {
			var roles []string
			for _, r := range testConfig().Roles {
				m := r.Match
				ok := len(m.Issuers) == 0 || slices.Contains(m.Issuers, issuer)
				byGroup := len(m.Groups) > 0 && slices.ContainsFunc(m.Groups, func(g string) bool { return slices.Contains(id.Groups, g) })
				byUser := slices.ContainsFunc(m.Users, func(p string) bool { ok, _ := path.Match(p, user); return ok })
				if ok && (byGroup || byUser) {
					roles = append(roles, r.Name)
				}
			}
			return roles
		}()
		tg, found := e.Lookup(host)
		if found {
			d := e.Authorize(id, tg, login, port)
			if d.Allow {
				if len(matchesSome) == 0 {
					t.Fatalf("%+v allowed %s as %q with no matching role", id, tg.Name, login)
				}
				var logins []string
				for _, r := range testConfig().Roles {
					if slices.Contains(matchesSome, r.Name) {
						logins = append(logins, r.Logins...)
					}
				}
				if tg.Kind != "tcp" && !slices.Contains(logins, login) {
					t.Fatalf("%+v allowed %s as %q; the matching roles list %v", id, tg.Name, login, logins)
				}
			}
		}
		if a, err := netip.ParseAddr(ip); err == nil && fport > 0 && fport < 65536 {
			d := e.AllowForward(id, a, fport)
			if d.Allow {
				if len(matchesSome) == 0 {
					t.Fatalf("%+v may forward to %s:%d with no matching role", id, a, fport)
				}
				if !d.Prefix.IsValid() || !d.Prefix.Contains(a.Unmap()) && !d.Prefix.Contains(a) {
					t.Fatalf("%+v may forward to %s:%d outside the prefix %v", id, a, fport, d.Prefix)
				}
			}
		}
	})
}
