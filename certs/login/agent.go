package login

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// Defaults of AgentOptions.
const (
	defaultRenewLeft  = 3 // renew when a third of the lifetime is left
	defaultMinBackoff = time.Second
	defaultMaxBackoff = time.Minute
	// minRenewLead is the least time before expiry a renewal is attempted.
	minRenewLead = 30 * time.Second
)

// AgentOptions configures RunAgent. Login (with Bastion) and Source are
// required.
type AgentOptions struct {
	// Login is the login to repeat: Bastion, Dir, TTL, JSONErrors,
	// HTTPClient. Mode, TokenSource and Force are set by RunAgent.
	Login Options
	// Source yields the workload's token at every renewal.
	Source TokenSource
	// MinBackoff and MaxBackoff bound the wait between failed attempts,
	// which doubles from one to the other; 1s and 1m if zero.
	MinBackoff, MaxBackoff time.Duration
	// Once exchanges one token and returns.
	Once bool
	// Log reports every renewal and every failure; discarded if nil.
	Log *slog.Logger
}

// RenewalError is a failed renewal: which stage failed (token: the token
// source; exchange: the bastion refused or could not be reached), why,
// and until when the current certificate is still valid (zero if there is
// none).
type RenewalError struct {
	Stage      string
	Err        error
	ValidUntil time.Time
}

func (e *RenewalError) Error() string { return e.Stage + ": " + e.Err.Error() }

func (e *RenewalError) Unwrap() error { return e.Err }

// RunAgent keeps the profile's certificate fresh for a workload: it
// exchanges a token from Source for a certificate, writes the profile (the
// certificate file is replaced atomically; the key is kept, so a process
// that reads the pair always gets a matching one), and renews when a third
// of the lifetime is left. A failure (the token source, the bastion) is
// reported and retried with a backoff doubling from MinBackoff to
// MaxBackoff, never past the certificate's expiry. It returns when ctx ends
// (nil), or after the first exchange with Once (its error).
func RunAgent(ctx context.Context, opts AgentOptions) error {
	if opts.Source == nil {
		return errors.New("agent: no token source")
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = defaultMinBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = defaultMaxBackoff
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lo := opts.Login
	lo.Mode, lo.TokenSource, lo.Force = ModeTokenSource, opts.Source, true
	lo.setDefaults()
	lo.Quiet = true
	var current *Profile
	if p, err := LoadProfile(profileDir(lo)); err == nil && p.Valid(lo.Now()) {
		current = p
	}
	backoff := time.Duration(0)
	for {
		wait := time.Duration(0)
		if current != nil && backoff == 0 {
			wait = renewIn(current, lo.Now())
		}
		if backoff > 0 {
			wait = backoff
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
		p, err := Login(ctx, lo)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			current, backoff = p, 0
			log.Info("certificate renewed", "profile", p.Dir, "identity", p.Username, "serial", p.Serial,
				"valid_before", p.ValidBefore.UTC().Format(time.RFC3339), "next_renewal_in", renewIn(p, lo.Now()).Round(time.Second))
			if opts.Once {
				return nil
			}
			continue
		}
		rerr := &RenewalError{Stage: "exchange", Err: err}
		var tse *TokenSourceError
		if errors.As(err, &tse) {
			rerr.Stage = "token"
		}
		if current != nil && current.Valid(lo.Now()) {
			rerr.ValidUntil = current.ValidBefore
		}
		if opts.Once {
			return rerr
		}
		backoff = min(max(2*backoff, opts.MinBackoff), opts.MaxBackoff)
		if left := time.Until(rerr.ValidUntil); !rerr.ValidUntil.IsZero() && left > 0 && backoff > left/2 {
			backoff = max(left/2, opts.MinBackoff) // try again before the certificate runs out
		}
		attrs := []any{"stage", rerr.Stage, "err", err.Error(), "retry_in", backoff.Round(time.Millisecond)}
		if rerr.ValidUntil.IsZero() {
			log.Error("renewal failed and no valid certificate is left: new sessions fail until it succeeds", attrs...)
		} else {
			log.Warn("renewal failed; the current certificate stays valid until "+rerr.ValidUntil.UTC().Format(time.RFC3339), attrs...)
		}
	}
}

// profileDir is the directory Login writes for lo.
func profileDir(lo Options) string {
	if lo.Dir != "" {
		return lo.Dir
	}
	d, err := DefaultDir(lo.Bastion)
	if err != nil {
		return ""
	}
	return d
}

// renewIn is how long from now until p should be renewed: when a third of
// its lifetime is left, and at least minRenewLead before it expires.
func renewIn(p *Profile, now time.Time) time.Duration {
	life := p.ValidBefore.Sub(p.ValidAfter)
	lead := max(life/defaultRenewLeft, minRenewLead)
	return max(p.ValidBefore.Add(-lead).Sub(now), 0)
}
