package promx

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers c on reg and returns it, or returns the collector of
// the same type already registered under the same name (the components then
// share it). A nil reg keeps c private. Any other registration error is
// returned.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if reg == nil {
		return c, nil
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("register metric: %w", err)
	}
	return c, nil
}

// Registrar registers several collectors and keeps the first error, for
// constructors that register a list.
type Registrar struct {
	Reg prometheus.Registerer
	Err error
}

// Add is Register on r.Reg with the error kept in r.Err.
func Add[C prometheus.Collector](r *Registrar, c C) C {
	got, err := Register(r.Reg, c)
	if err != nil {
		r.Err = errors.Join(r.Err, err)
	}
	return got
}
