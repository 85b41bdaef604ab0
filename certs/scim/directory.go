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
	st      *state.Store
	cfgs    []config.SCIM
	aliases aliases
	log     *slog.Logger

	mu    sync.RWMutex
	users map[string]*entry // by directory + "\x00" + id
	// bySubject finds the entry of an identity: issuer + "\x00" + subject
	// (lowercased for userName and email subjects).
	bySubject map[string]*entry
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

// NewDirectory returns a Directory over st for the SCIM clients cfgs, with
// the people identity.aliases names (approvers named by an alias are looked
// up by their identities), and loads it once.
func NewDirectory(ctx context.Context, st *state.Store, cfgs []config.SCIM, al []config.Alias, log *slog.Logger) (*Directory, error) {
	d := &Directory{st: st, cfgs: cfgs, aliases: newAliases(al), log: log}
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
	bySubject := map[string]*entry{}
	for _, u := range us {
		e := users[u.Directory+"\x00"+u.ID]
		slices.Sort(e.groups)
		var a attributes
		_ = json.Unmarshal([]byte(u.Attributes), &a)
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
	d.users, d.bySubject = users, bySubject
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

// Approver checks an approver against the directory before a decision.
// The approver stands for its own issuer identity and, if identity.aliases
// maps it to a person (or it is named by the person's alias key, as a
// Slack approver may be), every identity of that person. If the directory
// knows none of them, the approver is returned as it came. If it knows
// some and none is active (deactivated or deleted), the decision is
// refused. Otherwise the approver decides with the groups its active
// entries are provisioned in.
func (d *Directory) Approver(id certs.Identity) (certs.Identity, error) {
	known, active := false, false
	var groups []string
	for _, x := range d.aliases.identities(id) {
		e := d.lookup(x)
		if e == nil {
			continue
		}
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
	switch {
	case !known:
		return id, nil
	case !active:
		return id, &usererr.Error{Status: http.StatusForbidden, Code: CodeDeprovisioned,
			Msg: "your account was deprovisioned by the identity provider"}
	}
	slices.Sort(groups)
	id.Groups = groups
	return id, nil
}
