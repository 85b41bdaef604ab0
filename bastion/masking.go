package bastion

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/posternhq/postern/guardrails/mask"
	"github.com/posternhq/postern/internal/config"
)

// Masks are the compiled masking rules of one session's roles: Recording
// masks what is stored, Stream what the client receives. A nil Masker
// masks nothing.
type Masks struct {
	// Recording applies to recordings (and SQL transcripts and query logs).
	Recording *mask.Masker
	// Stream applies to what the client receives.
	Stream *mask.Masker
}

// MaskPolicy resolves the masking rules (global plus per role) of a
// session's roles. It is safe for concurrent use; Update swaps the rules on
// a configuration reload (sessions keep the masks they started with). A nil
// *MaskPolicy masks nothing.
type MaskPolicy struct {
	mu     sync.Mutex
	global []config.MaskRule
	roles  map[string][]config.MaskRule
	cache  map[string]Masks // by Decision.Role
}

// NewMaskPolicy compiles the masking rules of cfg.
func NewMaskPolicy(cfg *config.Config) (*MaskPolicy, error) {
	p := &MaskPolicy{}
	if err := p.Update(cfg); err != nil {
		return nil, err
	}
	return p, nil
}

// Update replaces the rules by those of cfg; on error the old rules stay.
func (p *MaskPolicy) Update(cfg *config.Config) error {
	roles := map[string][]config.MaskRule{}
	if _, err := p.compile(cfg.Masking.Rules); err != nil {
		return err
	}
	for _, r := range cfg.Roles {
		if _, err := p.compile(r.Masking.Rules); err != nil {
			return fmt.Errorf("role %s: %w", r.Name, err)
		}
		roles[r.Name] = r.Masking.Rules
	}
	p.mu.Lock()
	p.global, p.roles, p.cache = cfg.Masking.Rules, roles, map[string]Masks{}
	p.mu.Unlock()
	return nil
}

// For returns the masks of a decision's roles (Decision.Role, names
// separated by commas): the global rules and every named role's.
func (p *MaskPolicy) For(roles string) Masks {
	if p == nil {
		return Masks{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if m, ok := p.cache[roles]; ok {
		return m
	}
	rules := slices.Clone(p.global)
	for _, name := range strings.Split(roles, ",") {
		rules = append(rules, p.roles[strings.TrimSpace(name)]...)
	}
	m, _ := p.compile(rules) // every rule compiled in Update
	if len(p.cache) < 1024 {
		p.cache[roles] = m
	}
	return m
}

func (p *MaskPolicy) compile(rules []config.MaskRule) (Masks, error) {
	var rec, stream []mask.Rule
	for _, r := range rules {
		mr := mask.Rule{Name: r.Name, Detector: r.Detector, Pattern: r.Pattern, Columns: r.Columns}
		if len(r.AppliesTo) == 0 || slices.Contains(r.AppliesTo, config.MaskRecording) {
			rec = append(rec, mr)
		}
		if len(r.AppliesTo) == 0 || slices.Contains(r.AppliesTo, config.MaskStream) {
			stream = append(stream, mr)
		}
	}
	var m Masks
	var err error
	if m.Recording, err = mask.New(rec); err != nil {
		return Masks{}, err
	}
	if m.Stream, err = mask.New(stream); err != nil {
		return Masks{}, err
	}
	return m, nil
}

// streamFlushDelay is how long a stream masker holds back a partial line
// before sending it: output that pauses longer than this (a prompt) reaches
// the client, and a secret split by such a pause is not caught.
var streamFlushDelay = 25 * time.Millisecond

// maskWriter masks a stream on its way to the client. Write passes what is
// final at once and holds back the trailing partial line (see
// [mask.Scanner]); a timer sends it after streamFlushDelay without more
// output, and Flush sends it at the end of the stream.
type maskWriter struct {
	w io.Writer

	mu     sync.Mutex
	sc     *mask.Scanner
	timer  *time.Timer
	err    error
	closed bool
}

func newMaskWriter(w io.Writer, m *mask.Masker) *maskWriter {
	mw := &maskWriter{w: w, sc: m.NewScanner()}
	mw.timer = time.AfterFunc(time.Hour, mw.timedFlush)
	mw.timer.Stop()
	return mw
}

// Write masks p and writes what is final. It reports len(p) written when
// the masked bytes were written.
func (m *maskWriter) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return 0, m.err
	}
	m.timer.Stop()
	out, _ := m.sc.Next(p)
	if len(out) > 0 {
		if _, err := m.w.Write(out); err != nil {
			m.err = err
			return 0, err
		}
	}
	if m.sc.Pending() && !m.closed {
		m.timer.Reset(streamFlushDelay)
	}
	return len(p), nil
}

func (m *maskWriter) timedFlush() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.flushLocked()
}

func (m *maskWriter) flushLocked() {
	if m.err != nil {
		return
	}
	if out, _ := m.sc.Flush(); len(out) > 0 {
		if _, err := m.w.Write(out); err != nil {
			m.err = err
		}
	}
}

// Flush writes what is held back and stops the timer; later writes are
// still masked.
func (m *maskWriter) Flush() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.timer.Stop()
	m.flushLocked()
}

// maskStream wraps w, the client side of one output stream of s, with the
// stream masking of s's roles. Without stream rules it returns w and a
// no-op flush: the bytes then take the unmasked path untouched.
func (s *hopSession) maskStream(w io.Writer) (io.Writer, func()) {
	m := s.c.h.opts.Masking.For(s.c.decision.Role).Stream
	if m == nil {
		return w, func() {}
	}
	mw := newMaskWriter(w, m)
	return mw, mw.Flush
}
