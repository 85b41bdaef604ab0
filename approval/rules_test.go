package approval

import (
	"strings"
	"testing"

	"github.com/posternhq/postern/internal/config"
)

func mustRules(t testing.TB, rules ...config.Rule) *Rules {
	t.Helper()
	r, err := CompileRules(rules)
	if err != nil {
		t.Fatalf("CompileRules: %v", err)
	}
	return r
}

func TestRulesMatch(t *testing.T) {
	r := mustRules(t,
		config.Rule{Match: `^\s*sudo\b`, Action: ActionApprove, Approvers: []string{"sre"}},
		config.Rule{Match: `rm\s+-rf`, Action: ActionApprove, Approvers: []string{"sre"}, Approvals: 2},
		config.Rule{Match: `(?i)\bdrop\s+table\b`, Action: ActionDeny},
		config.Rule{Glob: "kubectl delete *", Action: ActionApprove, Approvers: []string{"platform"}},
		config.Rule{Glob: "ls*", Action: ActionAllow},
		config.Rule{Match: `\b(shutdown|reboot|mkfs)\b`, Action: ActionDeny},
	)
	tests := []struct {
		cmd    string
		index  int // -1: no match
		action string
	}{
		{"sudo ls", 0, ActionApprove},
		{"  sudo -i", 0, ActionApprove},
		{"sudoedit x", -1, ""},
		{"echo sudo", -1, ""},
		{"rm -rf /var/tmp/x", 1, ActionApprove},
		{"sudo rm -rf /", 0, ActionApprove}, // first match wins
		{"psql -c 'DROP TABLE users'", 2, ActionDeny},
		{"kubectl delete pod/web-1 -n prod", 3, ActionApprove},
		{"kubectl get pods", -1, ""},
		{"ls -la /etc", 4, ActionAllow},
		{"ls; reboot", 4, ActionAllow}, // glob and allow come first: order matters
		{"echo x && reboot", 5, ActionDeny},
	}
	for _, tt := range tests {
		m, ok := r.Match(tt.cmd)
		if (tt.index < 0) == ok || (ok && (m.Index != tt.index || m.Action() != tt.action)) {
			t.Errorf("Match(%q) = %d %q %v; want %d %q", tt.cmd, m.Index, m.Action(), ok, tt.index, tt.action)
		}
	}
	m, _ := r.Match("rm -rf x")
	if m.Required() != 2 || m.Timeout() != DefaultTimeout || m.Pattern() != `rm\s+-rf` {
		t.Errorf("match details: %d %s %q", m.Required(), m.Timeout(), m.Pattern())
	}
}

func TestCompileRulesErrors(t *testing.T) {
	for _, tt := range []struct {
		rule config.Rule
		want string
	}{
		{config.Rule{Action: ActionDeny}, "missing match or glob"},
		{config.Rule{Match: "(", Action: ActionDeny}, "not a regular expression"},
		{config.Rule{Glob: "[", Action: ActionDeny}, "not a valid glob"},
		{config.Rule{Match: "x", Glob: "x", Action: ActionDeny}, "not both"},
		{config.Rule{Match: "x", Action: ActionApprove}, "needs approvers"},
		{config.Rule{Match: "x", Action: "maybe"}, "is not allow, deny or approve"},
	} {
		if _, err := CompileRules([]config.Rule{tt.rule}); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("CompileRules(%+v) = %v; want %q", tt.rule, err, tt.want)
		}
	}
}

func FuzzRuleMatch(f *testing.F) {
	f.Add(`^\s*sudo\b`, "sudo *", "sudo ls /")
	f.Add(`rm\s+-rf`, "*[a-z]?", "rm  -rf /")
	f.Add(`(`, "[", "\x00/\xff")
	f.Fuzz(func(t *testing.T, re, glob, cmd string) {
		r, err := CompileRules([]config.Rule{{Match: re, Action: ActionDeny}, {Glob: glob, Action: ActionAllow}})
		if err != nil {
			return
		}
		m, ok := r.Match(cmd)
		if ok && m.Index != 0 && m.Index != 1 {
			t.Fatalf("index %d", m.Index)
		}
		if m2, ok2 := r.Match(cmd); ok2 != ok || m2.Index != m.Index {
			t.Fatal("Match is not deterministic")
		}
	})
}
