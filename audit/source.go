package audit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/posternhq/postern/state"
)

// StoreSource is the live evidence: the state store's chain, index,
// revocations and stored checkpoints, the recordings in their store, and
// the checkpoints anchored in it.
type StoreSource struct {
	// State is the state store.
	State *state.Store
	// Objects is the recording store.
	Objects Objects
	// Anchor, if set, is where checkpoints are anchored in the recording
	// store.
	Anchor *StorageAnchor
}

var _ Source = (*StoreSource)(nil)

// Name returns "state store".
func (s *StoreSource) Name() string { return "state store" }

// From returns 1: the store holds the whole chain.
func (s *StoreSource) From() int64 { return 1 }

// Offline returns false.
func (s *StoreSource) Offline() bool { return false }

// Events returns events from the store.
func (s *StoreSource) Events(ctx context.Context, after int64, limit int) ([]state.Event, error) {
	return s.State.Events(ctx, after, limit)
}

// Checkpoints returns the checkpoints stored in the state store and those
// anchored in the recording store.
func (s *StoreSource) Checkpoints(ctx context.Context) ([]FoundCheckpoint, error) {
	var out []FoundCheckpoint
	var after int64
	for {
		cps, err := s.State.Checkpoints(ctx, after, 1000)
		if err != nil {
			return nil, err
		}
		for _, c := range cps {
			fc := FoundCheckpoint{Where: "state store"}
			if err := jsonUnmarshal([]byte(c.Envelope), &fc.Envelope); err != nil {
				fc.Err = fmt.Sprintf("checkpoint %d is not a signed checkpoint", c.Seq)
			}
			out = append(out, fc)
			after = c.Seq
		}
		if len(cps) < 1000 {
			break
		}
	}
	if s.Anchor != nil {
		anchored, err := s.Anchor.Checkpoints(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, anchored...)
	}
	return out, nil
}

// Sessions returns every row of the sessions index.
func (s *StoreSource) Sessions(ctx context.Context) ([]state.Session, error) {
	return s.State.ListSessions(ctx, state.SessionFilter{})
}

// Revocations returns every revocation.
func (s *StoreSource) Revocations(ctx context.Context) ([]state.Revocation, error) {
	return s.State.Revocations(ctx)
}

// Open opens a recording or metadata object.
func (s *StoreSource) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	return s.Objects.Open(ctx, key)
}

// ReadCheckpoints reads checkpoints collected from a log sink or an export:
// one per line, either the envelope itself or an object with the envelope
// under "envelope" (as the exports write them); anything before the first
// '{' of a line (a syslog prefix) is skipped, and lines that hold no
// envelope are ignored.
func ReadCheckpoints(path string) ([]FoundCheckpoint, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 16<<20)
	var out []FoundCheckpoint
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		i := strings.IndexByte(line, '{')
		if i < 0 {
			continue
		}
		if env, ok := envelopeIn([]byte(line[i:])); ok {
			out = append(out, FoundCheckpoint{Envelope: env, Where: fmt.Sprintf("%s:%d", path, n)})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, errors.New(path + ": no signed checkpoint in it")
	}
	return out, nil
}

// envelopeIn finds a signed record in a JSON line: the envelope itself, or
// under "envelope".
func envelopeIn(b []byte) (Envelope, bool) {
	var line struct {
		Envelope
		Wrapped *Envelope `json:"envelope"`
	}
	if jsonUnmarshal(b, &line) != nil {
		return Envelope{}, false
	}
	if line.Wrapped != nil && line.Wrapped.Record != "" {
		return *line.Wrapped, true
	}
	if line.Record != "" && line.Sig != "" {
		return line.Envelope, true
	}
	return Envelope{}, false
}
