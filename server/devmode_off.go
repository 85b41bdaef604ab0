//go:build nodevidp

package server

import (
	"errors"
	"log/slog"
	"net/http"

	"github.com/posternhq/postern/internal/config"
)

// DevModeBuilt reports whether this binary includes development mode; this
// one was built with -tags nodevidp (a release build).
const DevModeBuilt = false

// newDevIdP refuses: this build has no development issuer.
func newDevIdP(*config.Config, *slog.Logger) (http.Handler, error) {
	return nil, errors.New("this postern is a release build without development mode (built with -tags nodevidp); run it with --config FILE, or build it with `go build ./cmd/postern` for --dev")
}
