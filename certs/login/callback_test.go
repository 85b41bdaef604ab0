package login

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestCallback drives the loopback redirect handler over real loopback HTTP:
// a wrong state is refused without ending the login, the right state
// delivers the code exactly once, and the page reports the outcome.
func TestCallback(t *testing.T) {
	cb := newCallback("the-state")
	srv := httptest.NewServer(cb)
	t.Cleanup(srv.Close)

	get := func(q url.Values) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + "/callback?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	noResult := func() {
		t.Helper()
		select {
		case r := <-cb.results:
			t.Fatalf("a refused request delivered %+v", r)
		default:
		}
	}

	tests := []struct {
		name       string
		q          url.Values
		wantStatus int
		wantBody   string
	}{
		{"state mismatch", url.Values{"state": {"forged"}, "code": {"c"}}, http.StatusBadRequest, "state mismatch"},
		{"no state", url.Values{"code": {"c"}}, http.StatusBadRequest, "state mismatch"},
		{"error with forged state", url.Values{"state": {"forged"}, "error": {"access_denied"}}, http.StatusBadRequest, "state mismatch"},
		{"no code", url.Values{"state": {"the-state"}}, http.StatusBadRequest, "no code"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := get(tt.q)
			if status != tt.wantStatus || !strings.Contains(body, tt.wantBody) {
				t.Errorf("got %d %q; want %d containing %q", status, body, tt.wantStatus, tt.wantBody)
			}
			noResult()
		})
	}
	if resp, err := http.Get(srv.URL + "/other"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /other = %v, %v; want 404", resp, err)
	}

	// The right state delivers the code; the page waits for the outcome.
	type answer struct {
		status int
		body   string
	}
	done := make(chan answer, 1)
	go func() {
		resp, err := http.Get(srv.URL + "/callback?state=the-state&code=good-code")
		if err != nil {
			t.Errorf("callback: %v", err)
			done <- answer{}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		done <- answer{resp.StatusCode, string(b)}
	}()
	var r callbackResult
	select {
	case r = <-cb.results:
	case <-time.After(10 * time.Second):
		t.Fatal("no result delivered")
	}
	if r.code != "good-code" || r.err != nil {
		t.Fatalf("result = %+v; want code good-code", r)
	}
	r.reply <- nil
	if a := <-done; a.status != http.StatusOK || !strings.Contains(a.body, "You can close this tab") {
		t.Errorf("page = %d %q; want 200 saying you can close this tab", a.status, a.body)
	}

	// A replayed response is refused.
	if status, _ := get(url.Values{"state": {"the-state"}, "code": {"again"}}); status != http.StatusConflict {
		t.Errorf("second response = %d; want %d", status, http.StatusConflict)
	}
	noResult()
}

// TestCallbackProviderError checks that an error from the identity provider
// (with the right state) ends the login with that error.
func TestCallbackProviderError(t *testing.T) {
	cb := newCallback("s")
	srv := httptest.NewServer(cb)
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL + "/callback?state=s&error=access_denied&error_description=%3Cb%3Enope%3C%2Fb%3E")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || strings.Contains(string(b), "<b>") {
		t.Errorf("page = %d %q; want 403 with the description escaped", resp.StatusCode, b)
	}
	r := <-cb.results
	if r.err == nil || !strings.Contains(r.err.Error(), "access_denied") {
		t.Errorf("result error = %v; want access_denied", r.err)
	}
}

// TestCallbackReportsFailure checks the page when the code exchange fails.
func TestCallbackReportsFailure(t *testing.T) {
	cb := newCallback("s")
	srv := httptest.NewServer(cb)
	t.Cleanup(srv.Close)
	go func() {
		r := <-cb.results
		r.reply <- errors.New("exchange failed")
	}()
	resp, err := http.Get(srv.URL + "/callback?state=s&code=c")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || strings.Contains(string(b), "exchange failed") {
		t.Errorf("page = %d %q; want 403 without the internal error", resp.StatusCode, b)
	}
}

func TestServerError(t *testing.T) {
	tests := []struct {
		name, ctype, body string
		status            int
		want              string
	}{
		{"api error", "application/json", `{"error":"token expired","code":"token_expired"}`, 401, "token expired (token_expired)"},
		{"json without type", "", `{"error":"no role grants you access","code":"no_access"}`, 403, "no role grants you access (no_access)"},
		{"proxy page", "text/html", `<html>bad gateway secret-internal</html>`, 502, "the bastion answered 502 Bad Gateway (http_502)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.ctype != "" {
					w.Header().Set("Content-Type", tt.ctype)
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}))
			t.Cleanup(srv.Close)
			c := &apiClient{base: srv.URL, hc: srv.Client()}
			_, err := c.requestCert(t.Context(), "tok", "ssh-ed25519 AAAA", 0)
			var se *ServerError
			if !errors.As(err, &se) || err.Error() != tt.want || se.Status != tt.status {
				t.Errorf("err = %v; want %q", err, tt.want)
			}
		})
	}
}
