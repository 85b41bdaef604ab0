package scim

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/state"
)

// Directory is every replica's view of what the SCIM clients provisioned:
// who is active, who was deprovisioned, who is in which group. It keeps a
// copy in memory, reloaded when a replica announces a change
// (state.NotifySCIM) and every poll interval as a fallback, so the
// questions the policy and the approvals ask on every channel and every
// decision cost a map lookup.
type Directory struct {
	st   *state.Store
	cfgs []config.SCIM
	log  *slog.Logger

	mu    sync.RWMutex
	users map[string]*entry // by directory + "\x00" + id
	// bySubject finds the entry of an identity: issuer + "\x00" + subject
	// (lowercased for userName and email subjects).
	bySubject map[string]*entry
	// byName finds entries by a username (userName or an email, lowercased).
	byName map[string][]*entry
}

// entry is one provisioned user as the directory sees it.
type entry struct {
	dir      string
	id       string
	userName string
	active   bool
	deleted  bool
	groups   []string
}

// CodeDeprovisioned is the code of a refusal for a deprovisioned identity.
const CodeDeprovisioned = "deprovisioned"

// NewDirectory returns a Directory over st for the SCIM clients cfgs, and
// loads it once.
func NewDirectory(ctx context.Context, st *state.Store, cfgs []config.SCIM, log *slog.Logger) (*Directory, error) {
	d := &Directory{st: st, cfgs: cfgs, log: log}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if err := d.Reload(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

// Run reloads the directory on every announced change and every poll until
// ctx ends. A replica that misses an announcement catches up at the next
// poll.
func (d *Directory) Run(ctx context.Context, poll time.Duration) {
	hints, err := d.st.Subscribe(ctx, state.NotifySCIM)
	if err != nil {
		d.log.Warn("scim: cannot subscribe to directory changes; polling only", "err", err)
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-hints:
			if !ok {
				hints = nil // the subscription ended: poll until it is made again
				if h, err := d.st.Subscribe(ctx, state.NotifySCIM); err == nil {
					hints = h
				}
			}
		case <-tick.C:
		}
		if err := d.Reload(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn("scim: reloading the directory failed", "err", err)
		}
	}
}

// Reload reads the directory from the store.
func (d *Directory) Reload(ctx context.Context) error {
	us, err := d.st.SCIMUsers(ctx, "")
	if err != nil {
		return err
	}
	gs, err := d.st.SCIMGroups(ctx, "")
	if err != nil {
		return err
	}
	users := map[string]*entry{}
	for _, u := range us {
		users[u.Directory+"\x00"+u.ID] = &entry{dir: u.Directory, id: u.ID, userName: u.UserName, active: u.Active && !u.Deleted,
			deleted: u.Deleted}
	}
	for _, g := range gs {
		for _, m := range g.Members {
			if e := users[g.Directory+"\x00"+m]; e != nil && !slices.Contains(e.groups, g.DisplayName) {
				e.groups = append(e.groups, g.DisplayName)
			}
		}
	}
	bySubject, byName := map[string]*entry{}, map[string][]*entry{}
	for _, u := range us {
		e := users[u.Directory+"\x00"+u.ID]
		slices.Sort(e.groups)
		names := []string{u.UserName}
		var a attributes
		if json.Unmarshal([]byte(u.Attributes), &a) == nil {
			names = append(names, a.emails()...)
		}
		for _, n := range names {
			if n != "" {
				byName[strings.ToLower(n)] = append(byName[strings.ToLower(n)], e)
			}
		}
		for _, c := range d.cfgs {
			if c.Name != u.Directory {
				continue
			}
			for _, is := range c.Issuers {
				if subj := subjectOf(is.Subject, u, a); subj != "" {
					key := is.Issuer + "\x00" + subjectKey(is.Subject, subj)
					// A live user wins over a deleted one with the same subject.
					if old := bySubject[key]; old == nil || old.deleted {
						bySubject[key] = e
					}
				}
			}
		}
	}
	d.mu.Lock()
	d.users, d.bySubject, d.byName = users, bySubject, byName
	d.mu.Unlock()
	return nil
}

// subjectOf returns the value of user u's attribute that is an identity's
// subject (see config.SCIMIssuer.Subject).
func subjectOf(attr string, u state.SCIMUser, a attributes) string {
	switch attr {
	case config.SCIMSubjectExternalID:
		return u.ExternalID
	case config.SCIMSubjectEmail:
		return a.primaryEmail()
	}
	return u.UserName
}

// subjectKey normalises a subject for lookups: userName and email compare
// without case (SCIM userName is case-insensitive), an externalId exactly.
func subjectKey(attr, subject string) string {
	if attr == config.SCIMSubjectExternalID {
		return subject
	}
	return strings.ToLower(subject)
}

// lookup returns the directory's entry for an identity of a covered issuer.
func (d *Directory) lookup(id certs.Identity) *entry {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if e := d.bySubject[id.Issuer+"\x00"+id.Subject]; e != nil {
		return e
	}
	return d.bySubject[id.Issuer+"\x00"+strings.ToLower(id.Subject)]
}

// Covers reports whether a SCIM client speaks for identities of issuer.
func (d *Directory) Covers(issuer string) bool {
	for _, c := range d.cfgs {
		for _, is := range c.Issuers {
			if is.Issuer == issuer {
				return true
			}
		}
	}
	return false
}

// Groups returns the groups a SCIM client provisioned for id, and whether
// the directory knows id: the groups role matches use in place of those its
// login carried. A deprovisioned identity has none.
func (d *Directory) Groups(id certs.Identity) ([]string, bool) {
	e := d.lookup(id)
	if e == nil {
		return nil, false
	}
	if !e.active {
		return nil, true
	}
	return slices.Clone(e.groups), true
}

// Approver checks an approver against the directory before a decision:
// an approver the directory knows gets its provisioned groups, and a
// deprovisioned one (deactivated or deleted) is refused. An approver known
// only by username (a Slack click mapped to one) is looked up by userName
// and email in every directory; it is refused if any entry for that name is
// deprovisioned and none is active.
func (d *Directory) Approver(id certs.Identity) (certs.Identity, error) {
	refuse := &usererr.Error{Status: http.StatusForbidden, Code: CodeDeprovisioned,
		Msg: "your account was deprovisioned by the identity provider"}
	if id.Issuer != "" {
		e := d.lookup(id)
		switch {
		case e == nil:
			return id, nil
		case !e.active:
			return id, refuse
		}
		id.Groups = slices.Clone(e.groups)
		return id, nil
	}
	d.mu.RLock()
	es := d.byName[strings.ToLower(id.Username)]
	d.mu.RUnlock()
	var groups []string
	known, active := false, false
	for _, e := range es {
		known = true
		if e.active {
			active = true
			for _, g := range e.groups {
				if !slices.Contains(groups, g) {
					groups = append(groups, g)
				}
			}
		}
	}
	if known && !active {
		return id, refuse
	}
	if active {
		slices.Sort(groups)
		id.Groups = groups
	}
	return id, nil
}
