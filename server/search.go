package server

import (
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/search"
	"github.com/posternhq/postern/state"
)

// newIndexer returns the search indexer and the recorder's Sealed hook
// that feeds it, or nil and nil when search.disabled is set.
func newIndexer(cfg *config.Config, st *state.Store, store recorder.Store, replica string, log *slog.Logger,
	reg prometheus.Registerer) (*search.Indexer, func(string), error) {
	if cfg.Search.Disabled {
		return nil, nil, nil
	}
	ix, err := search.New(search.Options{State: st, Store: store, Replica: replica,
		Limits: search.Limits{MaxOutputText: cfg.Search.MaxOutputText}, Log: log.With("component", "search"), Metrics: reg})
	if err != nil {
		return nil, nil, fmt.Errorf("search: %w", err)
	}
	return ix, ix.Enqueue, nil
}
