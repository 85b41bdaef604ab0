package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/posternhq/postern/internal/atomicfile"
	"github.com/posternhq/postern/state"
)

// An evidence bundle is a directory an auditor can verify with no access
// to postern's stores (`postern audit verify --offline DIR`):
//
//	manifest.json       what the bundle holds (BundleManifest)
//	events.jsonl        the audit events from seq From to To, one per line
//	checkpoints.jsonl   signed checkpoints of seq From-1 to To, one envelope per line
//	sessions.jsonl      the index rows of the recordings sealed in the range
//	revocations.jsonl   the revocation rows of the revocations in the range
//	audit_keys.pub      the audit public keys (prefer one obtained independently)
//	objects/<key>       the casts and metadata JSON of those recordings
//
// The range is widened to whole checkpoints: it starts right after a
// checkpoint (or at seq 1) and ends at one, so every event is covered by a
// signature.
const (
	bundleManifest    = "manifest.json"
	bundleEvents      = "events.jsonl"
	bundleCheckpoints = "checkpoints.jsonl"
	bundleSessions    = "sessions.jsonl"
	bundleRevocations = "revocations.jsonl"
	bundleKeys        = "audit_keys.pub"
	bundleObjects     = "objects"
	bundleFormat      = "postern-audit-bundle"
)

// BundleManifest describes an evidence bundle.
type BundleManifest struct {
	// Format is "postern-audit-bundle".
	Format string `json:"format"`
	// Version is 1.
	Version int `json:"version"`
	// From and To are the first and last sequence numbers of the events.
	From int64 `json:"from"`
	To   int64 `json:"to"`
	// Since and Until are the time range asked for (Until exclusive);
	// zero if unbounded.
	Since time.Time `json:"since,omitzero"`
	Until time.Time `json:"until,omitzero"`
	// Created is when the bundle was written.
	Created time.Time `json:"created"`
	// Events, Checkpoints, Sessions and Revocations count what it holds.
	Events      int64 `json:"events"`
	Checkpoints int   `json:"checkpoints"`
	Sessions    int   `json:"sessions"`
	Revocations int   `json:"revocations"`
}

// BundleOptions configure WriteBundle.
type BundleOptions struct {
	// Source is the live evidence; required.
	Source *StoreSource
	// Checkpointer, if set, takes a checkpoint of the head when no
	// checkpoint covers the end of the range yet; without one the bundle
	// ends at the last checkpoint.
	Checkpointer *Checkpointer
	// Keys are the audit public keys as authorized_keys lines.
	Keys []string
	// Since and Until bound the events by time (Until exclusive);
	// unbounded if zero.
	Since, Until time.Time
	// Now is the clock; time.Now if nil.
	Now func() time.Time
}

// WriteBundle writes the evidence of the events between opts.Since and
// opts.Until, widened to whole checkpoints, into dir, which must not exist
// or be empty.
func WriteBundle(ctx context.Context, dir string, opts BundleOptions) (BundleManifest, error) {
	st := opts.Source.State
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	m := BundleManifest{Format: bundleFormat, Version: 1, Since: opts.Since, Until: opts.Until, Created: now().UTC()}
	first, err := st.ListEvents(ctx, state.EventFilter{Since: opts.Since, Until: opts.Until, Limit: 1})
	if err != nil {
		return m, err
	}
	last, err := st.ListEvents(ctx, state.EventFilter{Since: opts.Since, Until: opts.Until, Limit: 1, Newest: true})
	if err != nil {
		return m, err
	}
	if len(first) == 0 || len(last) == 0 {
		return m, errors.New("no audit events in that time range")
	}
	cps, err := checkpointsBySeq(ctx, opts.Source)
	if err != nil {
		return m, err
	}
	m.From, m.To = 1, 0
	for _, c := range cps {
		if c.cp.Seq <= first[0].Seq-1 {
			m.From = c.cp.Seq + 1
		}
		if c.cp.Seq >= last[0].Seq && m.To == 0 {
			m.To = c.cp.Seq
		}
	}
	if m.To == 0 {
		if opts.Checkpointer == nil {
			return m, fmt.Errorf("no signed checkpoint covers seq %d yet: wait for the next one (audit.checkpoint_interval)", last[0].Seq)
		}
		if _, _, err := opts.Checkpointer.Checkpoint(ctx, true); err != nil {
			return m, err
		}
		if cps, err = checkpointsBySeq(ctx, opts.Source); err != nil {
			return m, err
		}
		for _, c := range cps {
			if c.cp.Seq >= last[0].Seq {
				m.To = c.cp.Seq
				break
			}
		}
		if m.To == 0 {
			return m, fmt.Errorf("no signed checkpoint covers seq %d", last[0].Seq)
		}
	}
	if err := prepareDir(dir); err != nil {
		return m, err
	}
	w := &bundleWriter{dir: dir}
	var sealed []string
	revoked := map[string]bool{}
	err = w.lines(bundleEvents, func(emit func(any) error) error {
		for after := m.From - 1; after < m.To; {
			evs, err := st.Events(ctx, after, 1000)
			if err != nil {
				return err
			}
			if len(evs) == 0 {
				break
			}
			for _, e := range evs {
				if e.Seq > m.To {
					return nil
				}
				if err := emit(e); err != nil {
					return err
				}
				m.Events++
				after = e.Seq
				switch e.Type {
				case state.EventSessionSealed:
					sealed = append(sealed, e.Session)
				case state.EventCertRevoked:
					s, _ := e.Details["serial"].(string)
					revoked[s] = true
				}
			}
		}
		return nil
	})
	if err != nil {
		return m, err
	}
	err = w.lines(bundleCheckpoints, func(emit func(any) error) error {
		for _, c := range cps {
			if c.cp.Seq >= m.From-1 && c.cp.Seq <= m.To {
				for _, env := range c.envs {
					if err := emit(env); err != nil {
						return err
					}
					m.Checkpoints++
				}
			}
		}
		return nil
	})
	if err != nil {
		return m, err
	}
	err = w.lines(bundleSessions, func(emit func(any) error) error {
		for _, id := range sealed {
			row, err := st.GetSession(ctx, id)
			if errors.Is(err, state.ErrNotFound) {
				continue // verification reports the missing row
			}
			if err != nil {
				return err
			}
			if err := emit(row); err != nil {
				return err
			}
			m.Sessions++
			for _, key := range []string{row.Object, sidecarKey(row.Object)} {
				if err := w.copyObject(ctx, opts.Source.Objects, key); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return m, err
	}
	revs, err := st.Revocations(ctx)
	if err != nil {
		return m, err
	}
	err = w.lines(bundleRevocations, func(emit func(any) error) error {
		for _, r := range revs {
			if revoked[fmt.Sprint(r.Serial)] {
				if err := emit(r); err != nil {
					return err
				}
				m.Revocations++
			}
		}
		return nil
	})
	if err != nil {
		return m, err
	}
	keys := strings.Join(opts.Keys, "\n") + "\n"
	if err := atomicfile.Write(filepath.Join(dir, bundleKeys), []byte(keys), 0o644); err != nil {
		return m, err
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return m, err
	}
	return m, atomicfile.Write(filepath.Join(dir, bundleManifest), append(b, '\n'), 0o644)
}

// sidecarKey is the metadata key beside a cast key (recorder.MetaKey).
func sidecarKey(castKey string) string {
	return strings.TrimSuffix(castKey, filepath.Ext(castKey)) + ".json"
}

// seqCheckpoints are the distinct envelopes found for one sequence number.
type seqCheckpoints struct {
	cp   Checkpoint
	envs []Envelope
}

// checkpointsBySeq returns every checkpoint of src (unverified: the
// auditor verifies), by sequence number, each envelope once.
func checkpointsBySeq(ctx context.Context, src *StoreSource) ([]*seqCheckpoints, error) {
	found, err := src.Checkpoints(ctx)
	if err != nil {
		return nil, err
	}
	by := map[int64]*seqCheckpoints{}
	seen := map[string]bool{}
	for _, fc := range found {
		var cp Checkpoint
		if fc.Err != "" || fc.Deleted != "" || decodeRecord(fc.Envelope, &cp) != nil || seen[fc.Envelope.Sig] {
			continue
		}
		seen[fc.Envelope.Sig] = true
		if by[cp.Seq] == nil {
			by[cp.Seq] = &seqCheckpoints{cp: cp}
		}
		by[cp.Seq].envs = append(by[cp.Seq].envs, fc.Envelope)
	}
	out := make([]*seqCheckpoints, 0, len(by))
	for _, c := range by {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].cp.Seq < out[j].cp.Seq })
	return out, nil
}

// prepareDir creates dir (0700), or accepts it empty.
func prepareDir(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return os.MkdirAll(dir, 0o700)
	case err != nil:
		return err
	case len(entries) > 0:
		return fmt.Errorf("%s is not empty", dir)
	}
	return nil
}

type bundleWriter struct{ dir string }

// lines writes a JSONL file from what fill emits.
func (w *bundleWriter) lines(name string, fill func(emit func(any) error) error) error {
	f, err := atomicfile.New(filepath.Join(w.dir, name), 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	bw := bufio.NewWriter(f)
	err = fill(func(v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		bw.Write(b)
		return bw.WriteByte('\n')
	})
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return f.Commit()
}

// copyObject copies a stored object into objects/<key>; a missing object
// is left out (verification reports it).
func (w *bundleWriter) copyObject(ctx context.Context, objs Objects, key string) error {
	p, err := objectPath(w.dir, key)
	if err != nil {
		return err
	}
	rc, err := objs.Open(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", key, err)
	}
	defer rc.Close()
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	f, err := atomicfile.New(p, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := io.Copy(f, rc); err != nil {
		return fmt.Errorf("copy %s: %w", key, err)
	}
	return f.Commit()
}

// objectPath maps an object key to its file in the bundle, refusing keys
// that would leave it.
func objectPath(dir, key string) (string, error) {
	p := filepath.FromSlash(key)
	if key == "" || !filepath.IsLocal(p) {
		return "", fmt.Errorf("object key %q cannot be stored in a bundle", key)
	}
	return filepath.Join(dir, bundleObjects, p), nil
}

// Bundle is an evidence bundle opened for verification. It implements
// Source.
type Bundle struct {
	dir         string
	manifest    BundleManifest
	events      []state.Event
	checkpoints []FoundCheckpoint
	sessions    []state.Session
	revocations []state.Revocation
	keys        []byte
	next        int // where the last Events call ended
}

var _ Source = (*Bundle)(nil)

// OpenBundle reads the bundle in dir.
func OpenBundle(dir string) (*Bundle, error) {
	b := &Bundle{dir: dir}
	raw, err := os.ReadFile(filepath.Join(dir, bundleManifest))
	if err != nil {
		return nil, fmt.Errorf("%s is not an evidence bundle: %w", dir, err)
	}
	if err := json.Unmarshal(raw, &b.manifest); err != nil || b.manifest.Format != bundleFormat {
		return nil, fmt.Errorf("%s: %s is not a postern evidence bundle manifest", dir, bundleManifest)
	}
	if b.manifest.Version != 1 {
		return nil, fmt.Errorf("%s: bundle version %d is not supported", dir, b.manifest.Version)
	}
	if b.manifest.From < 1 {
		return nil, fmt.Errorf("%s: the manifest's range starts at %d", dir, b.manifest.From)
	}
	err = readLines(filepath.Join(dir, bundleEvents), func(line []byte, n int) error {
		var e state.Event
		if err := jsonUnmarshal(line, &e); err != nil {
			return fmt.Errorf("%s line %d: not an audit event", bundleEvents, n)
		}
		b.events = append(b.events, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = readLines(filepath.Join(dir, bundleCheckpoints), func(line []byte, n int) error {
		fc := FoundCheckpoint{Where: fmt.Sprintf("bundle %s:%d", bundleCheckpoints, n)}
		env, ok := envelopeIn(line)
		if !ok {
			fc.Err = "not a signed checkpoint"
		}
		fc.Envelope = env
		b.checkpoints = append(b.checkpoints, fc)
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = readLines(filepath.Join(dir, bundleSessions), func(line []byte, n int) error {
		var s state.Session
		if err := json.Unmarshal(line, &s); err != nil {
			return fmt.Errorf("%s line %d: not a session row", bundleSessions, n)
		}
		b.sessions = append(b.sessions, s)
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = readLines(filepath.Join(dir, bundleRevocations), func(line []byte, n int) error {
		var r state.Revocation
		if err := json.Unmarshal(line, &r); err != nil {
			return fmt.Errorf("%s line %d: not a revocation row", bundleRevocations, n)
		}
		b.revocations = append(b.revocations, r)
		return nil
	})
	if err != nil {
		return nil, err
	}
	b.keys, _ = os.ReadFile(filepath.Join(dir, bundleKeys))
	return b, nil
}

// readLines calls fn for every non-blank line of path (numbered from 1).
func readLines(path string, fn func(line []byte, n int) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("evidence bundle: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 64<<20)
	for n := 1; sc.Scan(); n++ {
		if len(strings.TrimSpace(sc.Text())) == 0 {
			continue
		}
		if err := fn(sc.Bytes(), n); err != nil {
			return fmt.Errorf("evidence bundle: %w", err)
		}
	}
	return sc.Err()
}

// Manifest returns the bundle's manifest.
func (b *Bundle) Manifest() BundleManifest { return b.manifest }

// Keys returns the audit public keys the bundle carries (authorized_keys
// lines); an auditor should rather use keys obtained independently.
func (b *Bundle) Keys() []byte { return b.keys }

// Name returns "bundle DIR".
func (b *Bundle) Name() string { return "bundle " + b.dir }

// From returns the manifest's first sequence number.
func (b *Bundle) From() int64 { return b.manifest.From }

// Offline returns true.
func (b *Bundle) Offline() bool { return true }

// Events returns the bundle's events after after, in file order: a call
// with the Seq of the last event a previous call returned continues where
// it ended, so that events out of order (a tampered bundle) are each seen
// once.
func (b *Bundle) Events(_ context.Context, after int64, limit int) ([]state.Event, error) {
	var i int
	switch {
	case after == b.manifest.From-1:
		i = 0
	case b.next > 0 && after == b.events[b.next-1].Seq:
		i = b.next
	default:
		i = sort.Search(len(b.events), func(i int) bool { return b.events[i].Seq > after })
	}
	end := min(i+limit, len(b.events))
	b.next = end
	return b.events[i:end], nil
}

// Checkpoints returns the bundle's checkpoints.
func (b *Bundle) Checkpoints(context.Context) ([]FoundCheckpoint, error) { return b.checkpoints, nil }

// Sessions returns the bundle's session rows.
func (b *Bundle) Sessions(context.Context) ([]state.Session, error) { return b.sessions, nil }

// Revocations returns the bundle's revocation rows.
func (b *Bundle) Revocations(context.Context) ([]state.Revocation, error) { return b.revocations, nil }

// Open opens objects/<key>.
func (b *Bundle) Open(_ context.Context, key string) (io.ReadCloser, error) {
	p, err := objectPath(b.dir, key)
	if err != nil {
		return nil, err
	}
	return os.Open(p)
}
