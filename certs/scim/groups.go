package scim

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/elimity-com/scim"
	scimerrors "github.com/elimity-com/scim/errors"
	"github.com/elimity-com/scim/optional"

	"github.com/posternhq/postern/state"
)

// groups is the /Groups resource of one client. A group's displayName is
// the group name roles (match.groups) and approver lists name.
type groups struct {
	s *Server
	c *client
}

// groupResource returns g as the SCIM library answers it, with its
// members' userNames as their display.
func (h groups) resource(r *http.Request, g state.SCIMGroup) scim.Resource {
	var a attributes
	_ = json.Unmarshal([]byte(g.Attributes), &a)
	if a == nil {
		a = attributes{}
	}
	a.set("displayName", g.DisplayName)
	names := map[string]string{}
	if us, err := h.s.opts.State.SCIMUsers(r.Context(), h.c.cfg.Name); err == nil {
		for _, u := range us {
			names[u.ID] = u.UserName
		}
	}
	members := []any{}
	for _, m := range g.Members {
		members = append(members, map[string]any{"value": m, "display": names[m], "type": "User"})
	}
	a.set("members", members)
	created, modified := g.Created, g.Modified
	res := scim.Resource{ID: g.ID, Attributes: scim.ResourceAttributes(a),
		Meta: scim.Meta{Created: &created, LastModified: &modified, Version: fmt.Sprintf(`W/"%d"`, g.Version)}}
	if g.ExternalID != "" {
		res.ExternalID = optional.NewString(g.ExternalID)
	}
	return res
}

// build returns the group a stores as id: members are the user ids of
// provisioned users of this client (others are dropped, and logged).
func (h groups) build(r *http.Request, id string, a attributes) (state.SCIMGroup, error) {
	name := strings.TrimSpace(a.str("displayName"))
	if name == "" {
		return state.SCIMGroup{}, badRequest("displayName is required")
	}
	known := map[string]bool{}
	us, err := h.s.opts.State.SCIMUsers(r.Context(), h.c.cfg.Name)
	if err != nil {
		return state.SCIMGroup{}, err
	}
	for _, u := range us {
		if !u.Deleted {
			known[u.ID] = true
		}
	}
	var members []string
	v, _ := a.get("members")
	list, _ := v.([]any)
	for _, m := range list {
		mm, ok := m.(map[string]any)
		if !ok {
			continue
		}
		val := attributes(mm).str("value")
		switch {
		case val == "" || slices.Contains(members, val):
		case !known[val]:
			h.s.log.Warn("scim: group member is not a provisioned user; left out", "client", h.c.cfg.Name, "group", name, "member", val)
		default:
			members = append(members, val)
		}
	}
	ext := a.str("externalId")
	a.del("members")
	a.del("externalId")
	b, err := json.Marshal(a)
	if err != nil {
		return state.SCIMGroup{}, badRequest("attributes cannot be stored")
	}
	return state.SCIMGroup{Directory: h.c.cfg.Name, ID: id, DisplayName: name, ExternalID: ext, Members: members, Attributes: string(b)}, nil
}

// attributesOf returns a stored group as attributes a PATCH applies to.
func attributesOf(g state.SCIMGroup) attributes {
	var a attributes
	_ = json.Unmarshal([]byte(g.Attributes), &a)
	if a == nil {
		a = attributes{}
	}
	a.set("displayName", g.DisplayName)
	if g.ExternalID != "" {
		a.set("externalId", g.ExternalID)
	}
	members := []any{}
	for _, m := range g.Members {
		members = append(members, map[string]any{"value": m})
	}
	a.set("members", members)
	return a
}

func (h groups) put(r *http.Request, g state.SCIMGroup, op string) (scim.Resource, error) {
	g, err := h.s.opts.State.PutSCIMGroup(r.Context(), g, map[string]any{"op": op})
	if errors.Is(err, state.ErrConflict) {
		return scim.Resource{}, scimerrors.ScimErrorUniqueness
	}
	if err != nil {
		return scim.Resource{}, err
	}
	h.s.changed(r.Context())
	h.s.log.Info("scim: group "+op, "client", h.c.cfg.Name, "group", g.DisplayName, "members", len(g.Members))
	return h.resource(r, g), nil
}

// Create provisions a group.
func (h groups) Create(r *http.Request, in scim.ResourceAttributes) (scim.Resource, error) {
	g, err := h.build(r, newID(), stored(in))
	if err != nil {
		return scim.Resource{}, err
	}
	return h.put(r, g, "create")
}

func (h groups) get(r *http.Request, id string) (state.SCIMGroup, error) {
	g, err := h.s.opts.State.GetSCIMGroup(r.Context(), h.c.cfg.Name, id)
	if errors.Is(err, state.ErrNotFound) {
		return g, scimerrors.ScimErrorResourceNotFound(id)
	}
	return g, err
}

// Get returns a group.
func (h groups) Get(r *http.Request, id string) (scim.Resource, error) {
	g, err := h.get(r, id)
	if err != nil {
		return scim.Resource{}, err
	}
	return h.resource(r, g), nil
}

// GetAll lists the groups that pass the request's filter.
func (h groups) GetAll(r *http.Request, params scim.ListRequestParams) (scim.Page, error) {
	all, err := h.s.opts.State.SCIMGroups(r.Context(), h.c.cfg.Name)
	if err != nil {
		return scim.Page{}, err
	}
	var rs []scim.Resource
	for _, g := range all {
		if res := h.resource(r, g); passes(params, res) {
			rs = append(rs, res)
		}
	}
	return page(rs, params), nil
}

// Replace replaces a group (PUT).
func (h groups) Replace(r *http.Request, id string, in scim.ResourceAttributes) (scim.Resource, error) {
	if _, err := h.get(r, id); err != nil {
		return scim.Resource{}, err
	}
	g, err := h.build(r, id, stored(in))
	if err != nil {
		return scim.Resource{}, err
	}
	return h.put(r, g, "replace")
}

// Patch applies PATCH operations to a group (members added, removed or
// replaced; displayName replaced).
func (h groups) Patch(r *http.Request, id string, ops []scim.PatchOperation) (scim.Resource, error) {
	before, err := h.get(r, id)
	if err != nil {
		return scim.Resource{}, err
	}
	a := attributesOf(before)
	for _, op := range ops {
		if err := applyPatch(a, op); err != nil {
			return scim.Resource{}, err
		}
	}
	g, err := h.build(r, id, a)
	if err != nil {
		return scim.Resource{}, err
	}
	return h.put(r, g, "patch")
}

// Delete removes a group.
func (h groups) Delete(r *http.Request, id string) error {
	err := h.s.opts.State.DeleteSCIMGroup(r.Context(), h.c.cfg.Name, id)
	if errors.Is(err, state.ErrNotFound) {
		return scimerrors.ScimErrorResourceNotFound(id)
	}
	if err == nil {
		h.s.changed(r.Context())
	}
	return err
}
