package guardrails

import (
	"fmt"
	"slices"
	"strings"
	"sync"

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

// Policy resolves the masking rules (global plus per role) of a
// session's roles. It is safe for concurrent use; Update swaps the rules on
// a configuration reload (sessions keep the masks they started with). A nil
// *Policy masks nothing.
type Policy struct {
	mu     sync.Mutex
	global []config.MaskRule
	roles  map[string][]config.MaskRule
	cache  map[string]Masks // by Decision.Role
}

// NewPolicy compiles the masking rules of cfg.
func NewPolicy(cfg *config.Config) (*Policy, error) {
	p := &Policy{}
	if err := p.Update(cfg); err != nil {
		return nil, err
	}
	return p, nil
}

// Update replaces the rules by those of cfg; on error the old rules stay.
func (p *Policy) Update(cfg *config.Config) error {
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
func (p *Policy) For(roles string) Masks {
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

func (p *Policy) compile(rules []config.MaskRule) (Masks, error) {
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
