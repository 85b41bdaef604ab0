package devidptest

import (
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/posternhq/postern/certs/devidp"
)

// Server is a devidp.Provider served over HTTP on 127.0.0.1 with a random
// port. The embedded Provider gives Issuer, ClientID, MintIDToken and the rest.
type Server struct {
	*devidp.Provider
	// URL is the issuer URL, http://127.0.0.1:PORT.
	URL string

	srv       *httptest.Server
	closeOnce sync.Once
}

// Start serves a provider configured by opts (Issuer is set to the server's
// URL) until the test ends or Close is called.
func Start(t testing.TB, opts devidp.Options) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("devidptest: listen: %v", err)
	}
	url := "http://" + ln.Addr().String()
	opts.Issuer = url
	p, err := devidp.New(opts)
	if err != nil {
		ln.Close()
		t.Fatalf("devidptest: %v", err)
	}
	srv := httptest.NewUnstartedServer(p)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	s := &Server{Provider: p, URL: url, srv: srv}
	t.Cleanup(s.Close)
	return s
}

// Close stops the HTTP server, making the issuer unreachable (its
// discovery document and key set included). It is safe to call twice.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.srv.CloseClientConnections()
		s.srv.Close()
	})
}

// Client returns an HTTP client for the server.
func (s *Server) Client() *http.Client { return s.srv.Client() }

// Mint returns MintIDToken(claims, opts...) and fails the test on error.
func (s *Server) Mint(t testing.TB, claims map[string]any, opts ...devidp.MintOption) string {
	t.Helper()
	tok, err := s.MintIDToken(claims, opts...)
	if err != nil {
		t.Fatalf("devidptest: %v", err)
	}
	return tok
}

// notWorkload removes the claims the provider adds for people, which
// workload tokens do not carry.
var notWorkload = map[string]any{"email": nil, "email_verified": nil, "name": nil, "preferred_username": nil,
	"groups": nil, "azp": nil, "client_id": nil, "auth_time": nil}

// GitHubActionsClaims are the claims of a GitHub Actions OIDC token (as
// GitHub documents them) of a workflow run on ref of repo ("acme/app"), for
// audience aud; pass them to Mint. The issuer is the provider's own.
func GitHubActionsClaims(repo, ref, aud string) map[string]any {
	owner, _, _ := strings.Cut(repo, "/")
	c := map[string]any{
		"sub": "repo:" + repo + ":ref:" + ref, "aud": aud,
		"jti": "a1b2c3", "ref": ref, "ref_type": "branch", "sha": "0123456789abcdef0123456789abcdef01234567",
		"repository": repo, "repository_owner": owner, "repository_id": "74", "repository_owner_id": "65",
		"repository_visibility": "private", "actor": "octocat", "actor_id": "12", "run_id": "9001", "run_number": "7",
		"run_attempt": "1", "runner_environment": "github-hosted", "workflow": "deploy", "event_name": "push",
		"head_ref": "", "base_ref": "",
		"job_workflow_ref": repo + "/.github/workflows/deploy.yml@" + ref,
		"workflow_ref":     repo + "/.github/workflows/deploy.yml@" + ref,
	}
	maps.Copy(c, notWorkload)
	return c
}

// KubernetesClaims are the claims of a Kubernetes projected
// service-account token of service account sa in namespace ns, for
// audience aud; pass them to Mint.
func KubernetesClaims(ns, sa, aud string) map[string]any {
	c := map[string]any{
		"sub": "system:serviceaccount:" + ns + ":" + sa, "aud": []string{aud}, "jti": "d4e5f6",
		"kubernetes.io": map[string]any{
			"namespace":      ns,
			"node":           map[string]any{"name": "node-1", "uid": "11111111-2222-3333-4444-555555555555"},
			"pod":            map[string]any{"name": sa + "-7d9f8c-x2x4q", "uid": "66666666-7777-8888-9999-000000000000"},
			"serviceaccount": map[string]any{"name": sa, "uid": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"},
			"warnafter":      1700003600,
		},
	}
	maps.Copy(c, notWorkload)
	return c
}
