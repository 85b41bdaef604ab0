package approval

import (
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/posternhq/postern/internal/config"
)

// Rule actions.
const (
	ActionAllow   = "allow"
	ActionDeny    = "deny"
	ActionApprove = "approve"
)

// DefaultTimeout is how long a request waits when its rule sets no timeout.
const DefaultTimeout = 5 * time.Minute

// Match is the rule a command matched.
type Match struct {
	// Index is the rule's position in the list.
	Index int
	// Rule is the rule itself.
	Rule config.Rule
}

// Action is the rule's action.
func (m Match) Action() string { return m.Rule.Action }

// Pattern is the rule's match or glob, for messages and audit events.
func (m Match) Pattern() string {
	if m.Rule.Match != "" {
		return m.Rule.Match
	}
	return m.Rule.Glob
}

// Timeout is the rule's timeout, DefaultTimeout if unset.
func (m Match) Timeout() time.Duration {
	if d := m.Rule.Timeout.D(); d > 0 {
		return d
	}
	return DefaultTimeout
}

// Required is the number of approvals the rule needs, at least 1.
func (m Match) Required() int {
	return max(m.Rule.Approvals, 1)
}

type compiled struct {
	rule config.Rule
	re   *regexp.Regexp
}

// Rules is a compiled, ordered rule list. It is immutable and safe for
// concurrent use.
type Rules struct {
	rules []compiled
}

// CompileRules compiles rules in order. Errors name the rule (rules[i]).
func CompileRules(rules []config.Rule) (*Rules, error) {
	r := &Rules{}
	for i, rule := range rules {
		c := compiled{rule: rule}
		switch {
		case rule.Match != "" && rule.Glob != "":
			return nil, fmt.Errorf("rules[%d]: give match or glob, not both", i)
		case rule.Match != "":
			re, err := regexp.Compile(rule.Match)
			if err != nil {
				return nil, fmt.Errorf("rules[%d].match: not a regular expression: %w", i, err)
			}
			c.re = re
		case rule.Glob != "":
			if _, err := path.Match(rule.Glob, ""); err != nil {
				return nil, fmt.Errorf("rules[%d].glob: %q is not a valid glob: %w", i, rule.Glob, err)
			}
		default:
			return nil, fmt.Errorf("rules[%d]: missing match or glob", i)
		}
		switch rule.Action {
		case ActionAllow, ActionDeny:
		case ActionApprove:
			if len(rule.Approvers) == 0 {
				return nil, fmt.Errorf("rules[%d].approvers: an approve rule needs approvers", i)
			}
		default:
			return nil, fmt.Errorf("rules[%d].action: %q is not allow, deny or approve", i, rule.Action)
		}
		r.rules = append(r.rules, c)
	}
	return r, nil
}

// Len is the number of rules.
func (r *Rules) Len() int {
	if r == nil {
		return 0
	}
	return len(r.rules)
}

// Match returns the first rule that matches command. A regular expression
// matches anywhere in the line (anchor it with ^ and $ to match all of it); a
// glob must match the whole line, trimmed of surrounding blanks, where * also
// matches / and spaces. Without a match, ok is false and the command runs.
func (r *Rules) Match(command string) (m Match, ok bool) {
	if r == nil {
		return Match{}, false
	}
	trimmed := strings.TrimSpace(command)
	for i, c := range r.rules {
		if c.re != nil {
			if c.re.MatchString(command) {
				return Match{Index: i, Rule: c.rule}, true
			}
			continue
		}
		if globMatch(c.rule.Glob, trimmed) {
			return Match{Index: i, Rule: c.rule}, true
		}
	}
	return Match{}, false
}

// globMatch matches a shell glob against a whole command line: * is any run
// of characters (spaces and slashes included), ? one character, [...] a class.
func globMatch(pattern, s string) bool {
	// path.Match stops * at '/'; replace '/' on both sides with NUL, which a
	// command line cannot contain, so that * crosses it.
	const slash = "\x00"
	if strings.Contains(s, slash) {
		return false
	}
	ok, err := path.Match(strings.ReplaceAll(pattern, "/", slash), strings.ReplaceAll(s, "/", slash))
	return err == nil && ok
}
