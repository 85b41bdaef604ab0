package devidptest

import (
	"net"
	"net/http"
	"net/http/httptest"
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
