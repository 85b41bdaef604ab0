package server

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/httpx"
)

// issuerInfo is one issuer as /v1/config describes it to clients.
type issuerInfo struct {
	Name      string   `json:"name"`
	IssuerURL string   `json:"issuer_url"`
	ClientID  string   `json:"client_id"`
	Scopes    []string `json:"scopes"`
	Kind      string   `json:"kind"`
	Dev       bool     `json:"dev,omitempty"`
	// Protocol is "saml" for a SAML identity provider (empty: OIDC).
	Protocol string `json:"protocol,omitempty"`
	// LoginURL starts a SAML login (see certs/saml).
	LoginURL string `json:"login_url,omitempty"`
	// DisplayName is a SAML provider's name for people.
	DisplayName string `json:"display_name,omitempty"`
}

// publicConfig is the body of GET /v1/config: what a client needs to log in.
type publicConfig struct {
	Issuers    []issuerInfo `json:"issuers"`
	SSHAddress string       `json:"ssh_address"`
	HostCA     string       `json:"host_ca"`
	PublicURL  string       `json:"public_url"`
	Version    string       `json:"version,omitempty"`
}

func newPublicConfig(cfg *config.Config, hostCA, version string) publicConfig {
	pc := publicConfig{SSHAddress: cfg.SSHAddress, HostCA: hostCA, PublicURL: cfg.PublicURL, Version: version}
	for _, is := range cfg.Identity.Issuers {
		scopes := is.Scopes
		if len(scopes) == 0 {
			scopes = []string{"openid", "email", "profile"}
			if is.GroupsClaim == "groups" {
				scopes = append(scopes, "groups")
			}
		}
		pc.Issuers = append(pc.Issuers, issuerInfo{
			Name: is.Name, IssuerURL: is.IssuerURL, ClientID: is.ClientID, Scopes: scopes, Kind: is.Kind,
			Dev: cfg.Dev && is.Name == "dev",
		})
	}
	return pc
}

// httpHandlers are the pieces the API mux routes to.
type httpHandlers struct {
	certs     http.Handler // POST /v1/certs
	sessions  http.Handler // /v1/sessions…
	ui        http.Handler // /ui/, nil without an interactive issuer
	approvals http.Handler // /v1/approvals…
	slack     http.Handler // POST /v1/slack/actions, nil without Slack
	locks     http.Handler // /v1/locks…
	mcp       http.Handler // /v1/mcp: the MCP endpoint (streamable HTTP)
	saml      http.Handler // /v1/saml/…, nil without SAML providers
	scim      http.Handler // /v1/scim/…, nil without SCIM clients
	devIdP    http.Handler // the development issuer, nil outside --dev
	registry  *prometheus.Registry
	ready     func(ctx context.Context) (map[string]string, error)
	config    func() publicConfig
	log       *slog.Logger
}

// newMux routes the HTTP API (DESIGN §4).
func newMux(h httpHandlers) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		status, err := h.ready(ctx)
		if err != nil {
			h.log.Warn("not ready", "err", err)
			httpx.Fail(w, http.StatusServiceUnavailable, "not_ready", "not ready")
			return
		}
		status["status"] = "ready"
		httpx.WriteJSON(w, http.StatusOK, status)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(h.registry, promhttp.HandlerOpts{Registry: h.registry}))
	mux.HandleFunc("GET /v1/config", func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, h.config())
	})
	mux.Handle("/v1/certs", h.certs)
	mux.Handle("/v1/sessions", h.sessions)
	mux.Handle("/v1/sessions/", h.sessions)
	mux.Handle("/v1/approvals", h.approvals)
	mux.Handle("/v1/approvals/", h.approvals)
	mux.Handle("/v1/locks", h.locks)
	mux.Handle("/v1/locks/", h.locks)
	mux.Handle("/v1/mcp", h.mcp)
	if h.slack != nil {
		mux.Handle("POST /v1/slack/actions", h.slack)
	}
	if h.saml != nil {
		mux.Handle("/v1/saml/", h.saml)
	}
	if h.scim != nil {
		mux.Handle("/v1/scim/", h.scim)
	}
	if h.ui != nil {
		mux.Handle("/ui/", h.ui)
		mux.Handle("GET /{$}", http.RedirectHandler("/ui/", http.StatusFound))
	}
	if h.devIdP != nil {
		mux.Handle(config.DevIssuerPath+"/", h.devIdP)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httpx.Fail(w, http.StatusNotFound, "not_found", "no such endpoint")
	})
	return mux
}
