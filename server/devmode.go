//go:build !nodevidp

package server

import (
	"log/slog"
	"net/http"

	"github.com/posternhq/postern/certs/devidp"
	"github.com/posternhq/postern/internal/config"
)

// DevModeBuilt reports whether this binary includes development mode (the
// embedded OIDC issuer of `serve --dev`). Release binaries and the container
// image are built with -tags nodevidp, which leaves the issuer and its
// dependencies out.
const DevModeBuilt = true

// devUsers are the development issuer's accounts: dev, who works on the
// demo target, and reviewer, who approves dev's held commands (`postern login
// --as reviewer`); a requester never approves their own request.
var devUsers = []devidp.User{
	{Username: "dev", Email: "dev@example.com", Groups: []string{"dev", "auditors", "admins"}},
	{Username: "reviewer", Email: "reviewer@example.com", Groups: []string{"reviewers", "auditors"}},
}

// newDevIdP returns the embedded development issuer for a --dev
// configuration.
func newDevIdP(cfg *config.Config, log *slog.Logger) (http.Handler, error) {
	return devidp.New(devidp.Options{
		Issuer: cfg.PublicURL + config.DevIssuerPath, ClientID: config.DevClientID,
		Users: devUsers, DefaultUser: "dev", Log: log,
	})
}
