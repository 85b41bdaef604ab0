package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/posterntest"
)

// TestDevIssuerOnlyInDevMode: outside --dev nothing is mounted at the
// development issuer's path: its URLs are plain 404s, and nothing panics.
func TestDevIssuerOnlyInDevMode(t *testing.T) {
	svc := posterntest.Start(t, &config.Config{PublicURL: "https://bastion.test"})
	for _, path := range []string{
		config.DevIssuerPath + "/.well-known/openid-configuration",
		config.DevIssuerPath + "/keys",
		config.DevIssuerPath + "/auth?client_id=x",
		config.DevIssuerPath + "/token",
	} {
		resp, err := http.Get(svc.HTTPURL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e struct{ Code string }
		if resp.StatusCode != http.StatusNotFound || json.Unmarshal(body, &e) != nil || e.Code != "not_found" {
			t.Errorf("GET %s: %d %s; want 404 not_found", path, resp.StatusCode, body)
		}
	}
	if logs := svc.Logs(); strings.Contains(logs, "panic") {
		t.Errorf("the service logged a panic:\n%s", logs)
	}
}
