package mask

import (
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"
)

// Rule is one masking rule: a built-in detector or a custom pattern, and
// optionally column name patterns (database results).
type Rule struct {
	// Name labels the replacement ([MASKED:name]); the detector's name, or
	// "custom" for a pattern, if empty.
	Name string
	// Detector is a built-in detector name (see Detectors).
	Detector string
	// Pattern is a custom regular expression (Go syntax). If it has a group
	// named v, only that group is replaced.
	Pattern string
	// Columns are case-insensitive globs over result column names whose
	// values are masked as a whole.
	Columns []string
}

// DefaultMaxCarry is the default bound of a Scanner's carry.
const DefaultMaxCarry = 4096

// Masker applies compiled rules. It is immutable and safe for concurrent
// use; a nil *Masker masks nothing.
type Masker struct {
	rules   []compiled
	pem     bool
	columns []column
	// MaxCarry bounds what a Scanner holds back between writes.
	maxCarry int
}

type compiled struct {
	label  []byte // [MASKED:name]
	re     *regexp.Regexp
	vgroup int // index of the value group, 0 if none
	valid  func([]byte) bool
	pre    func([]byte) bool
	runs   *[256]bool
	digits int
}

type column struct {
	glob  string
	label string
}

// New compiles rules. It returns nil (mask nothing) for no rules.
func New(rules []Rule) (*Masker, error) {
	if len(rules) == 0 {
		return nil, nil
	}
	m := &Masker{maxCarry: DefaultMaxCarry}
	seen := map[string]bool{}
	for i, r := range rules {
		name := r.Name
		var c compiled
		switch {
		case r.Detector != "" && r.Pattern != "":
			return nil, fmt.Errorf("masking rule %d: set detector or pattern, not both", i)
		case r.Detector == DetectorPrivateKey:
			m.pem = true
			for _, g := range r.Columns {
				m.columns = append(m.columns, column{glob: strings.ToLower(g), label: r.Detector})
			}
			continue
		case r.Detector != "":
			d, ok := detectors[r.Detector]
			if !ok {
				return nil, fmt.Errorf("masking rule %d: unknown detector %q", i, r.Detector)
			}
			if name == "" {
				name = r.Detector
			}
			c = compiled{re: d.re, valid: d.valid, pre: d.pre, runs: d.runs, digits: d.runDigits}
		case r.Pattern != "":
			re, err := regexp.Compile(r.Pattern)
			if err != nil {
				return nil, fmt.Errorf("masking rule %d: pattern: %w", i, err)
			}
			if re.MatchString("") {
				return nil, fmt.Errorf("masking rule %d: pattern matches the empty string", i)
			}
			if name == "" {
				name = "custom"
			}
			c = compiled{re: re}
		case len(r.Columns) == 0:
			return nil, fmt.Errorf("masking rule %d: needs a detector, a pattern or columns", i)
		}
		if name == "" {
			name = "column"
		}
		for _, g := range r.Columns {
			if _, err := path.Match(g, ""); err != nil {
				return nil, fmt.Errorf("masking rule %d: column pattern %q: %w", i, g, err)
			}
			m.columns = append(m.columns, column{glob: strings.ToLower(g), label: name})
		}
		if c.re == nil {
			continue
		}
		key := name + "\x00" + c.re.String()
		if seen[key] {
			continue
		}
		seen[key] = true
		c.label = []byte("[MASKED:" + name + "]")
		c.vgroup = c.re.SubexpIndex(valueGroup)
		if c.vgroup < 0 {
			c.vgroup = 0
		}
		m.rules = append(m.rules, c)
	}
	return m, nil
}

// WithMaxCarry returns a copy of m whose scanners hold back at most n bytes
// (n >= 64).
func (m *Masker) WithMaxCarry(n int) *Masker {
	if m == nil {
		return nil
	}
	c := *m
	c.maxCarry = max(n, 64)
	return &c
}

// MaskColumn returns the label of the first rule whose column patterns match
// name (case-insensitive), or "" when the column is not masked as a whole.
func (m *Masker) MaskColumn(name string) string {
	if m == nil || len(m.columns) == 0 {
		return ""
	}
	lname := strings.ToLower(name)
	for _, c := range m.columns {
		if ok, _ := path.Match(c.glob, lname); ok {
			return c.label
		}
	}
	return ""
}

// ColumnLabel is the replacement of a value masked by its column.
func ColumnLabel(label string) []byte { return []byte("[MASKED:" + label + "]") }

// Mask returns v with every match replaced, and the number of matches. v is
// returned as is when nothing matched; otherwise the result is a new slice.
func (m *Masker) Mask(v []byte) ([]byte, int) {
	if m == nil {
		return v, 0
	}
	out, n, _ := m.maskAppend(nil, v, len(v), true)
	if n == 0 {
		return v, 0
	}
	return out, n
}

// span is one match to replace.
type span struct {
	start, end int
	label      []byte
}

// matches returns the non-overlapping matches in p, sorted by start.
func (m *Masker) matches(dst []span, p []byte) []span {
	dst = dst[:0]
	for i := range m.rules {
		r := &m.rules[i]
		if r.pre != nil && !r.pre(p) {
			continue
		}
		if r.runs != nil {
			forRuns(p, r.runs, r.digits, func(s, e int) {
				for _, loc := range r.re.FindAllIndex(p[s:e], -1) {
					if r.valid == nil || r.valid(p[s+loc[0]:s+loc[1]]) {
						dst = append(dst, span{s + loc[0], s + loc[1], r.label})
					}
				}
			})
			continue
		}
		if r.vgroup == 0 && r.valid == nil {
			for _, loc := range r.re.FindAllIndex(p, -1) {
				dst = append(dst, span{loc[0], loc[1], r.label})
			}
			continue
		}
		for _, loc := range r.re.FindAllSubmatchIndex(p, -1) {
			s, e := loc[0], loc[1]
			if r.vgroup > 0 {
				if loc[2*r.vgroup] < 0 {
					continue
				}
				s, e = loc[2*r.vgroup], loc[2*r.vgroup+1]
			}
			if r.valid != nil && !r.valid(p[loc[0]:loc[1]]) {
				continue
			}
			dst = append(dst, span{s, e, r.label})
		}
	}
	if len(dst) < 2 {
		return dst
	}
	sort.Slice(dst, func(i, j int) bool {
		if dst[i].start != dst[j].start {
			return dst[i].start < dst[j].start
		}
		return dst[i].end > dst[j].end
	})
	// Merge overlaps: a later match inside or across an earlier one widens it.
	out := dst[:1]
	for _, s := range dst[1:] {
		last := &out[len(out)-1]
		if s.start < last.end {
			last.end = max(last.end, s.end)
			continue
		}
		out = append(out, s)
	}
	return out
}

// maskAppend appends p[:cut] to dst with matches replaced. Matches that end
// after cut are not emitted: when final is false and such a match starts
// before cut, cut moves back to its start (if that keeps the carry within
// bounds). It returns dst, the number of matches replaced and the final cut.
func (m *Masker) maskAppend(dst, p []byte, cut int, final bool) ([]byte, int, int) {
	var buf [8]span
	ms := m.matches(buf[:0], p)
	if !final {
		for _, s := range ms {
			if s.end > cut && s.start < cut && len(p)-s.start <= m.maxCarry {
				cut = s.start
				break
			}
		}
	}
	n, i := 0, 0
	for _, s := range ms {
		if s.start >= cut {
			break
		}
		if s.end > cut {
			// A match longer than the carry: mask what is final.
			s.end = cut
		}
		dst = append(dst, p[i:s.start]...)
		dst = append(dst, s.label...)
		i = s.end
		n++
	}
	dst = append(dst, p[i:cut]...)
	return dst, n, cut
}
