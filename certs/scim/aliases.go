package scim

import (
	"strings"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
)

// aliases is identity.aliases as SCIM needs it: the person an identity
// belongs to, and the identities of a person.
type aliases struct {
	of  map[string]string           // "<issuer>:<subject>" → alias name
	ids map[string][]certs.Identity // alias name → its identities
}

func newAliases(cfg []config.Alias) aliases {
	a := aliases{of: map[string]string{}, ids: map[string][]certs.Identity{}}
	for _, al := range cfg {
		for _, key := range al.Identities {
			is, sub, ok := strings.Cut(key, ":")
			if !ok {
				continue
			}
			a.of[key] = al.Name
			a.ids[al.Name] = append(a.ids[al.Name], certs.Identity{Issuer: is, Subject: sub, Alias: al.Name})
		}
	}
	return a
}

// lockable returns what to lock for identity id: the person's alias when
// identity.aliases maps id to one (a lock of the alias holds them through
// every issuer it maps), else id itself.
func (a aliases) lockable(id certs.Identity) certs.Identity {
	if name := a.of[certs.IdentityKey(id.Issuer, id.Subject)]; name != "" {
		return certs.Identity{Issuer: strings.TrimSuffix(certs.AliasKeyPrefix, ":"), Subject: name, Username: id.Username}
	}
	return id
}

// identities returns the issuer identities id stands for: id itself, and
// every identity of its alias (an approver named by an alias key has no
// issuer identity of its own).
func (a aliases) identities(id certs.Identity) []certs.Identity {
	var out []certs.Identity
	if id.Issuer != "" && id.Subject != "" {
		out = append(out, id)
	}
	name := id.Alias
	if name == "" {
		name = a.of[certs.IdentityKey(id.Issuer, id.Subject)]
	}
	for _, o := range a.ids[name] {
		if o.Issuer != id.Issuer || o.Subject != id.Subject {
			out = append(out, o)
		}
	}
	return out
}
