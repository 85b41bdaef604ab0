package scimtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Client drives one SCIM endpoint (<public_url>/v1/scim/<name>).
type Client struct {
	// BaseURL is the endpoint's base URL.
	BaseURL string
	// Token is the bearer token.
	Token string

	t    testing.TB
	http *http.Client
}

// New returns a client of the endpoint at baseURL with token.
func New(t testing.TB, baseURL, token string) *Client {
	return &Client{BaseURL: strings.TrimSuffix(baseURL, "/"), Token: token, t: t, http: &http.Client{Timeout: 30 * time.Second}}
}

// Do sends a request with body (JSON, none if nil) and returns the status
// and the decoded answer (nil if empty).
func (c *Client) Do(method, path string, body any) (int, map[string]any) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.BaseURL+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/scim+json")
	req.Header.Set("Accept", "application/scim+json")
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("scimtest: %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			c.t.Fatalf("scimtest: %s %s: %s, not JSON: %s", method, path, resp.Status, raw)
		}
	}
	return resp.StatusCode, out
}

// Must sends a request and fails the test unless the status is want.
func (c *Client) Must(want int, method, path string, body any) map[string]any {
	c.t.Helper()
	code, out := c.Do(method, path, body)
	if code != want {
		c.t.Fatalf("scimtest: %s %s = %d %v; want %d", method, path, code, out, want)
	}
	return out
}

// User is a user as Okta provisions it: userName, the same primary work
// email, a name, active.
func User(userName string, active bool) map[string]any {
	given, _, _ := strings.Cut(userName, "@")
	return map[string]any{
		"schemas":  []string{"urn:ietf:params:scim:schemas:core:2.0:User"},
		"userName": userName,
		"name":     map[string]any{"givenName": given, "familyName": "Test"},
		"emails":   []any{map[string]any{"primary": true, "value": userName, "type": "work"}},
		"active":   active,
	}
}

// Group is a group as clients create it, with members (user ids).
func Group(name string, members ...string) map[string]any {
	ms := []any{}
	for _, m := range members {
		ms = append(ms, map[string]any{"value": m})
	}
	return map[string]any{"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:Group"}, "displayName": name, "members": ms}
}

// CreateUser provisions User(userName, true) and returns its id.
func (c *Client) CreateUser(userName string) string {
	c.t.Helper()
	return c.id(c.Must(http.StatusCreated, http.MethodPost, "/Users", User(userName, true)))
}

// id returns a created resource's id.
func (c *Client) id(out map[string]any) string {
	c.t.Helper()
	id, _ := out["id"].(string)
	if id == "" {
		c.t.Fatalf("scimtest: created resource without an id: %v", out)
	}
	return id
}

// SetActive activates or deactivates user id, as Okta does.
func (c *Client) SetActive(id string, active bool) {
	c.t.Helper()
	c.Must(http.StatusOK, http.MethodPatch, "/Users/"+id, Patch(map[string]any{"op": "replace", "value": map[string]any{"active": active}}))
}

// DeleteUser deletes user id.
func (c *Client) DeleteUser(id string) {
	c.t.Helper()
	c.Must(http.StatusNoContent, http.MethodDelete, "/Users/"+id, nil)
}

// CreateGroup provisions Group(name, members...) and returns its id.
func (c *Client) CreateGroup(name string, members ...string) string {
	c.t.Helper()
	return c.id(c.Must(http.StatusCreated, http.MethodPost, "/Groups", Group(name, members...)))
}

// AddMember adds user to group.
func (c *Client) AddMember(group, user string) {
	c.t.Helper()
	c.Must(http.StatusOK, http.MethodPatch, "/Groups/"+group, Patch(map[string]any{"op": "add", "path": "members",
		"value": []any{map[string]any{"value": user}}}))
}

// RemoveMember removes user from group.
func (c *Client) RemoveMember(group, user string) {
	c.t.Helper()
	c.Must(http.StatusOK, http.MethodPatch, "/Groups/"+group, Patch(map[string]any{"op": "remove",
		"path": fmt.Sprintf(`members[value eq %q]`, user)}))
}

// Patch is a PatchOp message of ops.
func Patch(ops ...map[string]any) map[string]any {
	return map[string]any{"schemas": []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"}, "Operations": ops}
}
