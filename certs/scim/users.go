package scim

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/elimity-com/scim"
	scimerrors "github.com/elimity-com/scim/errors"
	"github.com/elimity-com/scim/optional"

	"github.com/posternhq/postern/state"
)

// users is the /Users resource of one client.
type users struct {
	s *Server
	c *client
}

// resource returns u as the SCIM library answers it.
func userResource(u state.SCIMUser) scim.Resource {
	var a attributes
	_ = json.Unmarshal([]byte(u.Attributes), &a)
	a.set("active", u.Active)
	created, modified := u.Created, u.Modified
	r := scim.Resource{ID: u.ID, Attributes: scim.ResourceAttributes(a),
		Meta: scim.Meta{Created: &created, LastModified: &modified, Version: fmt.Sprintf(`W/"%d"`, u.Version)}}
	if u.ExternalID != "" {
		r.ExternalID = optional.NewString(u.ExternalID)
	}
	return r
}

// build returns the user a of client c stores as id; its externalId is
// kept in its own column.
func (h users) build(id string, a attributes) (state.SCIMUser, error) {
	userName := strings.TrimSpace(a.str("userName"))
	if userName == "" {
		return state.SCIMUser{}, badRequest("userName is required")
	}
	ext := a.str("externalId")
	a.del("externalId")
	b, err := json.Marshal(a)
	if err != nil {
		return state.SCIMUser{}, badRequest("attributes cannot be stored")
	}
	return state.SCIMUser{Directory: h.c.cfg.Name, ID: id, UserName: userName, ExternalID: ext, Active: a.active(), Attributes: string(b)}, nil
}

func storeError(err error) error {
	if errors.Is(err, state.ErrConflict) {
		return scimerrors.ScimErrorUniqueness
	}
	return err
}

// Create provisions a user. A user created deactivated is locked at once;
// a user that takes the userName of a deleted one has the deleted one's
// locks removed.
func (h users) Create(r *http.Request, in scim.ResourceAttributes) (scim.Resource, error) {
	u, err := h.build(newID(), stored(in))
	if err != nil {
		return scim.Resource{}, err
	}
	var tombs []state.SCIMUser
	all, err := h.s.opts.State.SCIMUsers(r.Context(), h.c.cfg.Name)
	if err != nil {
		return scim.Resource{}, err
	}
	for _, o := range all {
		if o.Deleted && strings.EqualFold(o.UserName, u.UserName) {
			tombs = append(tombs, o)
		}
	}
	u, err = h.s.opts.State.PutSCIMUser(r.Context(), u, map[string]any{"op": "create"})
	if err != nil {
		return scim.Resource{}, storeError(err)
	}
	if err := h.s.transition(r.Context(), h.c, u, tombs); err != nil {
		return scim.Resource{}, err
	}
	h.s.changed(r.Context())
	h.s.log.Info("scim: user created", "client", h.c.cfg.Name, "user", u.UserName, "active", u.Active)
	return userResource(u), nil
}

// get returns the user id, refusing deleted ones.
func (h users) get(r *http.Request, id string) (state.SCIMUser, error) {
	u, err := h.s.opts.State.GetSCIMUser(r.Context(), h.c.cfg.Name, id)
	if errors.Is(err, state.ErrNotFound) || err == nil && u.Deleted {
		return state.SCIMUser{}, scimerrors.ScimErrorResourceNotFound(id)
	}
	return u, err
}

// Get returns a user.
func (h users) Get(r *http.Request, id string) (scim.Resource, error) {
	u, err := h.get(r, id)
	if err != nil {
		return scim.Resource{}, err
	}
	return userResource(u), nil
}

// GetAll lists the users that pass the request's filter.
func (h users) GetAll(r *http.Request, params scim.ListRequestParams) (scim.Page, error) {
	all, err := h.s.opts.State.SCIMUsers(r.Context(), h.c.cfg.Name)
	if err != nil {
		return scim.Page{}, err
	}
	var rs []scim.Resource
	for _, u := range all {
		if u.Deleted {
			continue
		}
		if res := userResource(u); passes(params, res) {
			rs = append(rs, res)
		}
	}
	return page(rs, params), nil
}

// passes reports whether res passes the list request's filter, if any
// (which may name id and externalId beside the attributes).
func passes(params scim.ListRequestParams, res scim.Resource) bool {
	if params.FilterValidator == nil {
		return true
	}
	view := map[string]any{"id": res.ID}
	if res.ExternalID.Present() {
		view["externalId"] = res.ExternalID.Value()
	}
	for k, v := range res.Attributes {
		view[k] = v
	}
	return params.FilterValidator.PassesFilter(view) == nil
}

// page cuts resources to the requested page.
func page(rs []scim.Resource, params scim.ListRequestParams) scim.Page {
	total := len(rs)
	start := max(params.StartIndex-1, 0)
	if start > len(rs) {
		start = len(rs)
	}
	rs = rs[start:]
	if params.Count >= 0 && params.Count < len(rs) {
		rs = rs[:params.Count]
	}
	if rs == nil {
		rs = []scim.Resource{}
	}
	return scim.Page{TotalResults: total, Resources: rs}
}

// Replace replaces a user's attributes (PUT).
func (h users) Replace(r *http.Request, id string, in scim.ResourceAttributes) (scim.Resource, error) {
	before, err := h.get(r, id)
	if err != nil {
		return scim.Resource{}, err
	}
	u, err := h.build(id, stored(in))
	if err != nil {
		return scim.Resource{}, err
	}
	return h.put(r, before, u, "replace")
}

// Patch applies PATCH operations to a user.
func (h users) Patch(r *http.Request, id string, ops []scim.PatchOperation) (scim.Resource, error) {
	before, err := h.get(r, id)
	if err != nil {
		return scim.Resource{}, err
	}
	var a attributes
	if err := json.Unmarshal([]byte(before.Attributes), &a); err != nil {
		return scim.Resource{}, err
	}
	a.set("active", before.Active)
	if before.ExternalID != "" {
		a.set("externalId", before.ExternalID)
	}
	for _, op := range ops {
		if err := applyPatch(a, op); err != nil {
			return scim.Resource{}, err
		}
	}
	u, err := h.build(id, a)
	if err != nil {
		return scim.Resource{}, err
	}
	return h.put(r, before, u, "patch")
}

// put stores a changed user and applies its transition.
func (h users) put(r *http.Request, before, u state.SCIMUser, op string) (scim.Resource, error) {
	u, err := h.s.opts.State.PutSCIMUser(r.Context(), u, map[string]any{"op": op})
	if err != nil {
		return scim.Resource{}, storeError(err)
	}
	if err := h.s.transition(r.Context(), h.c, u, nil); err != nil {
		return scim.Resource{}, err
	}
	h.s.changed(r.Context())
	if before.Active != u.Active {
		h.s.log.Info("scim: user active changed", "client", h.c.cfg.Name, "user", u.UserName, "active", u.Active)
	}
	return userResource(u), nil
}

// Delete deprovisions a user: it stays as a tombstone (invisible over
// SCIM) so that postern keeps refusing it, and its identities are locked.
func (h users) Delete(r *http.Request, id string) error {
	before, err := h.get(r, id)
	if err != nil {
		return err
	}
	u := before
	u.Deleted, u.Active = true, false
	u, err = h.s.opts.State.PutSCIMUser(r.Context(), u, map[string]any{"op": "delete"})
	if err != nil {
		return err
	}
	if err := h.s.transition(r.Context(), h.c, u, nil); err != nil {
		return err
	}
	h.s.changed(r.Context())
	h.s.log.Info("scim: user deleted", "client", h.c.cfg.Name, "user", u.UserName)
	return nil
}
