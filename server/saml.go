package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/certs/saml"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/players/web"
	"github.com/posternhq/postern/state"
)

// samlWebCallback is the path of the web UI's SAML callback; the SAML
// service provider accepts PublicURL + this path as a redirect URI.
const samlWebCallback = "/ui/saml/callback"

// newSAML returns the SAML service provider, or nil when no SAML provider
// is configured.
func newSAML(cfg *config.Config, st *state.Store, aliases func(issuer, subject string) string, audit func(context.Context, state.Event),
	log *slog.Logger, reg prometheus.Registerer) (*saml.SP, error) {
	if len(cfg.Identity.SAML.Providers) == 0 {
		return nil, nil
	}
	sp, err := saml.New(saml.Options{Config: cfg.Identity.SAML, PublicURL: cfg.PublicURL, State: st, Aliases: aliases,
		WebRedirect: strings.TrimRight(cfg.PublicURL, "/") + samlWebCallback, Audit: audit, Log: log.With("component", "saml"), Metrics: reg})
	if err != nil {
		return nil, fmt.Errorf("identity.saml: %w", err)
	}
	return sp, nil
}

// tokenVerifier is what POST /v1/certs verifies bearer tokens with: OIDC ID
// tokens, and SAML login codes when a SAML provider is configured.
func tokenVerifier(oidc certs.TokenVerifier, sp *saml.SP) certs.TokenVerifier {
	if sp == nil {
		return oidc
	}
	return certs.LoginCodes{Tokens: oidc, Codes: sp}
}

// samlIssuers lists the SAML providers as /v1/config describes them.
func samlIssuers(sp *saml.SP) []issuerInfo {
	if sp == nil {
		return nil
	}
	var out []issuerInfo
	for _, p := range sp.Providers() {
		out = append(out, issuerInfo{Name: p.Name, Kind: string(certs.KindHuman), Protocol: "saml", LoginURL: p.LoginURL,
			DisplayName: p.DisplayName})
	}
	return out
}

// samlHandler returns sp as the /v1/saml/ handler, nil (no route) without
// SAML providers.
func samlHandler(sp *saml.SP) http.Handler {
	if sp == nil {
		return nil
	}
	return sp
}

// webSAML adapts the service provider to the web UI, nil without one.
func webSAML(sp *saml.SP) web.SAMLLogins {
	if sp == nil {
		return nil
	}
	return webSAMLAdapter{sp}
}

type webSAMLAdapter struct{ sp *saml.SP }

func (a webSAMLAdapter) Providers() []web.SAMLProvider {
	var out []web.SAMLProvider
	for _, p := range a.sp.Providers() {
		out = append(out, web.SAMLProvider{Name: p.Name, DisplayName: p.DisplayName, LoginURL: p.LoginURL})
	}
	return out
}

func (a webSAMLAdapter) Redeem(ctx context.Context, code, verifier, redirectURI string) (certs.Identity, error) {
	return a.sp.Redeem(ctx, code, verifier, redirectURI)
}
