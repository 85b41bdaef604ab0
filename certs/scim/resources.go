package scim

import (
	"fmt"
	"strings"

	"github.com/elimity-com/scim"
	"github.com/elimity-com/scim/errors"
	filter "github.com/scim2/filter-parser/v2"
)

// attributes are a SCIM resource's attributes, as a client sent them
// (names compare without case, RFC 7643 §2.1).
type attributes map[string]any

// get returns the value of attribute name, whatever its case.
func (a attributes) get(name string) (any, bool) {
	if v, ok := a[name]; ok {
		return v, true
	}
	for k, v := range a {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return nil, false
}

// key returns the spelling a has for attribute name, or name.
func (a attributes) key(name string) string {
	for k := range a {
		if strings.EqualFold(k, name) {
			return k
		}
	}
	return name
}

// set sets attribute name, keeping the spelling a has for it.
func (a attributes) set(name string, v any) { a[a.key(name)] = v }

// del removes attribute name.
func (a attributes) del(name string) { delete(a, a.key(name)) }

// str returns a string attribute, "" if absent or not a string.
func (a attributes) str(name string) string {
	v, _ := a.get(name)
	s, _ := v.(string)
	return s
}

// active returns SCIM "active": true when absent (RFC 7643 says nothing;
// every client sends it, and a user is created to be used). Clients that
// send a string ("False", Entra ID) are understood.
func (a attributes) active() bool {
	v, ok := a.get("active")
	if !ok {
		return true
	}
	switch t := v.(type) {
	case bool:
		return t
	case string:
		return !strings.EqualFold(t, "false")
	}
	return true
}

// emails returns the values of the emails attribute.
func (a attributes) emails() []string {
	v, _ := a.get("emails")
	list, _ := v.([]any)
	var out []string
	for _, e := range list {
		if m, ok := e.(map[string]any); ok {
			if s := attributes(m).str("value"); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

// primaryEmail returns the primary email (the first if none is marked).
func (a attributes) primaryEmail() string {
	v, _ := a.get("emails")
	list, _ := v.([]any)
	first := ""
	for _, e := range list {
		m, ok := e.(map[string]any)
		if !ok {
			continue
		}
		val := attributes(m).str("value")
		if p, _ := attributes(m).get("primary"); p == true {
			return val
		}
		if first == "" {
			first = val
		}
	}
	return first
}

// stored returns the attributes postern keeps: everything but the common
// attributes the server assigns (id, meta, schemas).
func stored(in scim.ResourceAttributes) attributes {
	out := attributes{}
	for k, v := range in {
		switch strings.ToLower(k) {
		case "id", "meta", "schemas":
			continue
		}
		out[k] = v
	}
	return out
}

// badRequest is a SCIM 400 with detail.
func badRequest(detail string) error { return errors.ScimErrorBadRequest(detail) }

// invalidPath is a SCIM 400 (invalidPath) for a PATCH path postern does
// not apply.
func invalidPath(p *filter.Path) error {
	return errors.ScimError{ScimType: errors.ScimTypeInvalidPath, Detail: fmt.Sprintf("unsupported path %v", p), Status: 400}
}

// applyPatch applies one PATCH operation to a (RFC 7644 §3.5.2): with no
// path a replace/add of a map of attributes; a path to an attribute or a
// sub-attribute of a complex one; a path with a value filter on a
// multi-valued attribute of complex values (emails[type eq "work"].value,
// members[value eq "…"]).
func applyPatch(a attributes, op scim.PatchOperation) error {
	if op.Path == nil {
		m, ok := op.Value.(map[string]any)
		if !ok || op.Op == "remove" {
			return badRequest("a patch without a path must add or replace a map of attributes")
		}
		for k, v := range m {
			if strings.Contains(k, ".") && !strings.Contains(k, ":") {
				// "name.givenName": a sub-attribute (Entra ID sends these).
				parent, sub, _ := strings.Cut(k, ".")
				pm, _ := a.get(parent)
				pmap, _ := pm.(map[string]any)
				if pmap == nil {
					pmap = map[string]any{}
				}
				attributes(pmap).set(sub, v)
				a.set(parent, pmap)
				continue
			}
			if op.Op == "add" {
				if list, ok := v.([]any); ok {
					cur, _ := a.get(k)
					curList, _ := cur.([]any)
					a.set(k, append(curList, list...))
					continue
				}
			}
			a.set(k, v)
		}
		return nil
	}
	p := op.Path
	name := p.AttributePath.AttributeName
	sub := p.AttributePath.SubAttribute
	if p.SubAttribute != nil {
		sub = p.SubAttribute
	}
	if p.AttributePath.URIPrefix != nil {
		// An extension's attribute: kept under the extension's URI.
		uri := *p.AttributePath.URIPrefix
		ext, _ := a.get(uri)
		em, _ := ext.(map[string]any)
		if em == nil {
			em = map[string]any{}
		}
		inner := op
		inner.Path = &filter.Path{AttributePath: filter.AttributePath{AttributeName: name, SubAttribute: sub}, ValueExpression: p.ValueExpression}
		if err := applyPatch(attributes(em), inner); err != nil {
			return err
		}
		a.set(uri, em)
		return nil
	}
	if p.ValueExpression != nil {
		cur, _ := a.get(name)
		list, _ := cur.([]any)
		var kept []any
		matched := false
		for _, e := range list {
			m, ok := e.(map[string]any)
			if !ok || !matches(p.ValueExpression, attributes(m)) {
				kept = append(kept, e)
				continue
			}
			matched = true
			switch {
			case op.Op == "remove" && sub == nil:
				continue // drop the element
			case op.Op == "remove":
				attributes(m).del(*sub)
			case sub != nil:
				attributes(m).set(*sub, op.Value)
			default:
				if nm, ok := op.Value.(map[string]any); ok {
					for k, v := range nm {
						attributes(m).set(k, v)
					}
				}
			}
			kept = append(kept, m)
		}
		if !matched && op.Op != "remove" && sub != nil {
			// RFC 7644 §3.5.2.1: a filter that matches nothing on add is
			// an add of a new element; Entra ID relies on it for emails.
			m := map[string]any{*sub: op.Value}
			addFilterValues(p.ValueExpression, m)
			kept = append(kept, m)
		}
		a.set(name, kept)
		return nil
	}
	if sub != nil {
		cur, _ := a.get(name)
		m, _ := cur.(map[string]any)
		if m == nil {
			m = map[string]any{}
		}
		if op.Op == "remove" {
			attributes(m).del(*sub)
		} else {
			attributes(m).set(*sub, op.Value)
		}
		a.set(name, m)
		return nil
	}
	switch op.Op {
	case "remove":
		if list, ok := op.Value.([]any); ok {
			// Entra ID: remove these values from a multi-valued attribute.
			cur, _ := a.get(name)
			curList, _ := cur.([]any)
			a.set(name, without(curList, list))
			return nil
		}
		a.del(name)
	case "add":
		if list, ok := op.Value.([]any); ok {
			cur, _ := a.get(name)
			curList, _ := cur.([]any)
			a.set(name, append(curList, list...))
			return nil
		}
		a.set(name, op.Value)
	default:
		a.set(name, op.Value)
	}
	return nil
}

// without returns list without the elements whose "value" is the value of
// an element of drop.
func without(list, drop []any) []any {
	gone := map[string]bool{}
	for _, d := range drop {
		if m, ok := d.(map[string]any); ok {
			gone[fmt.Sprint(attributes(m).str("value"))] = true
		}
	}
	var out []any
	for _, e := range list {
		if m, ok := e.(map[string]any); ok && gone[attributes(m).str("value")] {
			continue
		}
		out = append(out, e)
	}
	return out
}

// matches evaluates a value filter on one complex value. It knows the
// comparisons clients send in PATCH paths: eq, ne, co, sw, ew, pr, and, or,
// not.
func matches(e filter.Expression, m attributes) bool {
	switch x := e.(type) {
	case *filter.AttributeExpression:
		v, ok := m.get(x.AttributePath.AttributeName)
		if x.Operator == filter.PR {
			return ok && v != nil && v != ""
		}
		got, want := fmt.Sprint(v), fmt.Sprint(x.CompareValue)
		if !ok {
			return x.Operator == filter.NE
		}
		switch x.Operator {
		case filter.EQ:
			return strings.EqualFold(got, want)
		case filter.NE:
			return !strings.EqualFold(got, want)
		case filter.CO:
			return strings.Contains(strings.ToLower(got), strings.ToLower(want))
		case filter.SW:
			return strings.HasPrefix(strings.ToLower(got), strings.ToLower(want))
		case filter.EW:
			return strings.HasSuffix(strings.ToLower(got), strings.ToLower(want))
		}
		return false
	case *filter.LogicalExpression:
		if x.Operator == filter.AND {
			return matches(x.Left, m) && matches(x.Right, m)
		}
		return matches(x.Left, m) || matches(x.Right, m)
	case *filter.NotExpression:
		return !matches(x.Expression, m)
	}
	return false
}

// addFilterValues copies the eq comparisons of a value filter into a new
// element (emails[type eq "work"].value → {"type": "work", "value": …}).
func addFilterValues(e filter.Expression, m map[string]any) {
	switch x := e.(type) {
	case *filter.AttributeExpression:
		if x.Operator == filter.EQ {
			m[x.AttributePath.AttributeName] = x.CompareValue
		}
	case *filter.LogicalExpression:
		if x.Operator == filter.AND {
			addFilterValues(x.Left, m)
			addFilterValues(x.Right, m)
		}
	}
}
