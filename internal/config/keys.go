package config

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// checkKeys walks the parsed YAML tree against the Config schema before it
// is decoded, so that every unknown key, and every value of the wrong shape
// (a list where a mapping belongs, a word where a number belongs, a duration
// that does not parse), is reported with its key path and the line it is on
// in the file, in words rather than Go type names, with the nearest valid
// key when a key is misspelled. yaml.v3 reports unknown keys only from a
// decoder (whose line numbers would be those of the tree re-encoded after
// secret expansion, not of the file) and type errors with Go type names; the
// schema walk has neither problem. It also records the line of every key
// path, so that Validate's problems can name lines too.
type keyChecker struct {
	problems []Problem
	lines    map[string]int      // key path → line
	secret   map[*yaml.Node]bool // scalars holding an expanded secret reference: never shown
}

var (
	durationType = reflect.TypeFor[Duration]()
	selectorType = reflect.TypeFor[TargetSelector]()
	scimIssuer   = reflect.TypeFor[SCIMIssuer]()
)

func (k *keyChecker) add(n *yaml.Node, path, msg string) {
	k.problems = append(k.problems, Problem{Path: path, Line: n.Line, Msg: msg})
}

// check checks node n, found at path, against type t.
func (k *keyChecker) check(n *yaml.Node, t reflect.Type, path string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.DocumentNode {
		for _, c := range n.Content {
			k.check(c, t, path)
		}
		return
	}
	if path != "" {
		if _, seen := k.lines[path]; !seen {
			k.lines[path] = n.Line
		}
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return // an empty value leaves the zero value (the default)
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == durationType:
		if n.Kind != yaml.ScalarNode {
			k.add(n, path, "must be a duration such as 90s, 15m or 8h")
		} else if _, err := time.ParseDuration(n.Value); err != nil {
			k.add(n, path, fmt.Sprintf("%s is not a duration (write e.g. 90s, 15m, 8h)", k.shape(n)))
		}
		return
	case t == selectorType && n.Kind == yaml.ScalarNode:
		return // a name glob
	case t == scimIssuer && n.Kind == yaml.ScalarNode:
		return // an issuer name
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			k.add(n, path, "must be a mapping of keys ("+k.shape(n)+" given)")
			return
		}
		k.mapping(n, t, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			k.add(n, path, "must be a list ("+k.shape(n)+" given)")
			return
		}
		for i, c := range n.Content {
			k.check(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			k.add(n, path, "must be a mapping ("+k.shape(n)+" given)")
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k.check(n.Content[i+1], t.Elem(), joinPath(path, n.Content[i].Value))
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			k.add(n, path, "must be a single value ("+k.shape(n)+" given)")
		}
	case reflect.Int, reflect.Int64, reflect.Int32:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			k.add(n, path, fmt.Sprintf("must be a whole number (%s given)", k.shape(n)))
		} else if _, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, t.Bits()); err != nil {
			k.add(n, path, fmt.Sprintf("%s is out of range", n.Value))
		}
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			k.add(n, path, fmt.Sprintf("must be true or false (%s given)", k.shape(n)))
		}
	}
}

// mapping checks the keys of a mapping node against struct type t.
func (k *keyChecker) mapping(n *yaml.Node, t reflect.Type, path string) {
	fields := yamlFields(t)
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		if key.Value == "<<" { // a YAML merge key: its mapping's keys are this one's
			k.check(val, t, path)
			continue
		}
		p := joinPath(path, key.Value)
		f, ok := fields[key.Value]
		if !ok {
			k.problems = append(k.problems, Problem{Path: p, Line: key.Line, Msg: unknownKey(key.Value, fields)})
			continue
		}
		k.lines[p] = key.Line
		k.check(val, f, p)
	}
}

// yamlFields maps the YAML keys of struct type t to their field types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = f.Type
	}
	return m
}

// unknownKey is the message for an unknown key: the nearest valid key if
// one is close, else the valid keys.
func unknownKey(key string, fields map[string]reflect.Type) string {
	names := make([]string, 0, len(fields))
	for n := range fields {
		names = append(names, n)
	}
	slices.Sort(names)
	if s := nearest(key, names); s != "" {
		return fmt.Sprintf("unknown key %q; did you mean %q?", key, s)
	}
	return fmt.Sprintf("unknown key %q; valid keys here: %s", key, strings.Join(names, ", "))
}

// nearest returns the candidate closest to key (case, '-' and '_' aside, by
// optimal string alignment distance) if it is close enough to be a likely
// typo, else "".
func nearest(key string, candidates []string) string {
	norm := func(s string) string { return strings.ReplaceAll(strings.ToLower(s), "-", "_") }
	nk := norm(key)
	best, bestD := "", -1
	for _, c := range candidates {
		d := osaDistance(nk, norm(c))
		if bestD < 0 || d < bestD {
			best, bestD = c, d
		}
	}
	limit := 2
	if len(nk) <= 4 {
		limit = 1
	}
	if bestD >= 0 && bestD <= limit && bestD < len(nk) {
		return best
	}
	return ""
}

// osaDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and transpositions of adjacent
// characters each cost one.
func osaDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

// shape names a node for messages: its shape, or a scalar quoted (cut to
// 40 bytes). A scalar that holds an expanded secret reference is never
// shown.
func (k *keyChecker) shape(n *yaml.Node) string {
	switch {
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case k.secret[n]:
		return "the value of a ${env:…} or ${file:…} reference"
	case len(n.Value) > 40:
		return strconv.Quote(n.Value[:40] + "…")
	}
	return strconv.Quote(n.Value)
}

// lineOf returns the line of the longest prefix of path that has one.
func lineOf(lines map[string]int, path string) int {
	for p := path; p != ""; {
		if l, ok := lines[p]; ok {
			return l
		}
		i := strings.LastIndexAny(p, ".[")
		if i <= 0 {
			break
		}
		p = p[:i]
	}
	return 0
}
