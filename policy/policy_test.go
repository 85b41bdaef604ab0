package policy

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
)

func testConfig() *config.Config {
	return &config.Config{
		Targets: []config.Target{
			{Name: "web-1", Kind: "ssh", Address: "10.0.0.5:22", Labels: map[string]string{"env": "prod"}},
			{Name: "web-2", Kind: "ssh", Address: "10.0.0.6:2222", Aliases: []string{"www"}, Labels: map[string]string{"env": "staging"}},
			{Name: "pg-prod", Kind: "tcp", Address: "pg.internal:5432", Protocol: "postgres"},
			{Name: "psql-prod", Kind: "command", Command: []string{"psql"}},
			{Name: "db-9", Kind: "tcp", Address: "10.0.0.9:5432"},
		},
		Roles: []config.Role{
			{
				Name:       "agents",
				Match:      config.RoleMatch{Groups: []string{"agents"}, Issuers: []string{"github"}},
				Targets:    []config.TargetSelector{{Name: "web-*"}, {Name: "pg-prod"}},
				Logins:     []string{"deploy"},
				Record:     "required",
				Forwarding: config.Forwarding{Local: true},
			},
			{
				Name:        "staging-humans",
				Match:       config.RoleMatch{Users: []string{"*@example.com"}},
				Targets:     []config.TargetSelector{{Labels: map[string]string{"env": "staging"}}, {Name: "psql-*"}, {Name: "db-9"}},
				Logins:      []string{"ubuntu", "deploy"},
				Ports:       []int{5432, 6432},
				Record:      "optional",
				Interactive: "deny",
				MaxSession:  config.Duration(time.Hour),
				Forwarding:  config.Forwarding{Local: true, Allow: []string{"10.1.0.0/16:443", "10.1.2.0/24:8000-8100"}},
				Permissions: []string{"auditor"},
			},
			{
				Name:        "admins",
				Match:       config.RoleMatch{Groups: []string{"sre"}, Users: []string{"alice@example.com"}},
				Targets:     []config.TargetSelector{{Name: "*"}},
				Logins:      []string{"root"},
				Record:      "off",
				Permissions: []string{"approver", "admin"},
				Forwarding:  config.Forwarding{Allow: []string{"127.0.0.1/32:5432"}},
			},
		},
	}
}

var (
	agent = certs.Identity{Issuer: "github", Username: "repo:x/y", Groups: []string{"agents"}}
	bob   = certs.Identity{Issuer: "corp", Username: "bob@example.com"}
	alice = certs.Identity{Issuer: "corp", Username: "alice@example.com", Groups: []string{"sre"}}
	eve   = certs.Identity{Issuer: "corp", Username: "eve@evil.test", Groups: []string{"agents"}}
)

func mustEngine(t *testing.T) *Engine {
	t.Helper()
	e, err := New(testConfig())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e
}

func TestAuthorize(t *testing.T) {
	e := mustEngine(t)
	tests := []struct {
		name     string
		id       certs.Identity
		target   string
		login    string
		port     int
		want     bool
		code     string
		record   string
		interact bool
		role     string
	}{
		{name: "agent web-1 deploy", id: agent, target: "web-1", login: "deploy", port: 22, want: true, record: "required", interact: true, role: "agents"},
		{name: "agent any login", id: agent, target: "web-1", port: 22, want: true, record: "required", interact: true, role: "agents"},
		{name: "agent wrong login", id: agent, target: "web-1", login: "root", port: 22, code: CodeLoginNotAllow},
		{name: "agent wrong port", id: agent, target: "web-1", login: "deploy", port: 2200, code: CodePortNotAllow},
		{name: "agent ssh default port 22 for non-22 target", id: agent, target: "web-2", login: "deploy", port: 22, want: true, record: "required", interact: true, role: "agents"},
		{name: "agent ssh own port", id: agent, target: "web-2", login: "deploy", port: 2222, want: true, record: "required", interact: true},
		{name: "agent tcp", id: agent, target: "pg-prod", port: 5432, want: true, record: "required", interact: true},
		{name: "agent tcp other port", id: agent, target: "pg-prod", port: 6432, code: CodePortNotAllow},
		{name: "agent target not in role", id: agent, target: "db-9", port: 5432, code: CodeTargetNotAllow},
		{name: "agent command not in role", id: agent, target: "psql-prod", code: CodeTargetNotAllow},
		{name: "bob staging", id: bob, target: "web-2", login: "ubuntu", port: 22, want: true, record: "optional", interact: false, role: "staging-humans"},
		{name: "bob prod", id: bob, target: "web-1", login: "ubuntu", port: 22, code: CodeTargetNotAllow},
		{name: "bob role ports", id: bob, target: "db-9", port: 6432, want: true, record: "optional"},
		{name: "bob role ports exclude target port", id: bob, target: "db-9", port: 5433, code: CodePortNotAllow},
		{name: "bob command any port", id: bob, target: "psql-prod", login: "deploy", port: 0, want: true, record: "optional"},
		{name: "alice merges roles", id: alice, target: "web-2", login: "root", port: 22, want: true, record: "off", interact: true, role: "admins"},
		{name: "alice merges staging", id: alice, target: "web-2", login: "ubuntu", port: 22, want: true, record: "optional", role: "staging-humans"},
		{name: "alice any", id: alice, target: "web-2", port: 22, want: true, record: "off", interact: true, role: "staging-humans,admins"},
		{name: "eve wrong issuer", id: eve, target: "web-1", login: "deploy", port: 22, code: CodeNoRole},
		{name: "unknown target", id: agent, target: "nope", port: 22, code: CodeTargetNotAllow},
		{name: "empty identity", id: certs.Identity{}, target: "web-1", port: 22, code: CodeNoRole},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg, _ := e.Lookup(tt.target)
			d := e.Authorize(tt.id, tg, tt.login, tt.port)
			if d.Allow != tt.want {
				t.Fatalf("Allow = %v (code %s); want %v", d.Allow, d.Code, tt.want)
			}
			if !tt.want {
				if d.Code != tt.code {
					t.Errorf("Code = %q; want %q", d.Code, tt.code)
				}
				name := tt.target
				if tg == nil {
					name = ""
				}
				if want := "postern: " + name + ": not allowed for " + tt.id.Username; d.Reason != want {
					t.Errorf("Reason = %q; want %q", d.Reason, want)
				}
				return
			}
			if d.Record != tt.record {
				t.Errorf("Record = %q; want %q", d.Record, tt.record)
			}
			if tt.interact && !d.Interactive {
				t.Errorf("Interactive = false; want true")
			}
			if tt.role != "" && d.Role != tt.role {
				t.Errorf("Role = %q; want %q", d.Role, tt.role)
			}
		})
	}
}

func TestDenyMessageSameForMissingAndForbidden(t *testing.T) {
	e := mustEngine(t)
	tg, _ := e.Lookup("db-9")
	forbidden := e.Authorize(agent, tg, "", 5432)
	missing := DenyMessage("db-9", agent)
	if forbidden.Reason != missing {
		t.Errorf("forbidden %q; missing %q; want equal", forbidden.Reason, missing)
	}
	if got := DenyMessage("a\x1b[2Jb", agent); strings.ContainsRune(got, 0x1b) {
		t.Errorf("DenyMessage kept an escape: %q", got)
	}
}

func TestMergeMaxSessionAndForwarding(t *testing.T) {
	e := mustEngine(t)
	tg, _ := e.Lookup("web-2")
	d := e.Authorize(bob, tg, "ubuntu", 22)
	if d.MaxSession != time.Hour {
		t.Errorf("MaxSession = %v; want 1h", d.MaxSession)
	}
	d = e.Authorize(alice, tg, "", 22)
	if d.MaxSession != 0 {
		t.Errorf("MaxSession = %v; want 0 (one role is unbounded)", d.MaxSession)
	}
	if !d.Forwarding.Local || len(d.Forwarding.Allow) != 3 {
		t.Errorf("Forwarding = %+v; want local with 3 allow entries", d.Forwarding)
	}
}

func TestLookup(t *testing.T) {
	e := mustEngine(t)
	tests := []struct {
		host, want string
	}{
		{"web-1", "web-1"},
		{"WEB-1", "web-1"},
		{"web-1:22", "web-1"},
		{"web-1:2200", "web-1"},
		{"www", "web-2"},
		{"www:22", "web-2"},
		{"10.0.0.6:2222", "web-2"},
		{"10.0.0.6", "web-2"},
		{"10.0.0.6:22", "web-2"},
		{"pg.internal:5432", "pg-prod"},
		{"psql-prod", "psql-prod"},
		{"nope", ""},
		{"10.0.0.7:22", ""},
		{"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			tg, ok := e.Lookup(tt.host)
			got := ""
			if ok {
				got = tg.Name
			}
			if got != tt.want {
				t.Errorf("Lookup(%q) = %q; want %q", tt.host, got, tt.want)
			}
		})
	}
	if tg, _ := e.Lookup("web-2"); tg.Dial(22) != "10.0.0.6:2222" {
		t.Errorf("Dial(22) = %q; want 10.0.0.6:2222", tg.Dial(22))
	}
	if tg, _ := e.Lookup("db-9"); tg.Dial(6432) != "10.0.0.9:6432" {
		t.Errorf("Dial(6432) = %q; want 10.0.0.9:6432", tg.Dial(6432))
	}
}

func TestAllowForward(t *testing.T) {
	e := mustEngine(t)
	tests := []struct {
		name   string
		id     certs.Identity
		ip     string
		port   int
		want   bool
		code   string
		prefix string
	}{
		{"in cidr", bob, "10.1.3.4", 443, true, "", "10.1.0.0/16"},
		{"most specific", bob, "10.1.2.4", 8050, true, "", "10.1.2.0/24"},
		{"wrong port", bob, "10.1.3.4", 444, false, CodeNotInAllowList, ""},
		{"outside", bob, "10.2.0.1", 443, false, CodeNotInAllowList, ""},
		{"mapped", bob, "::ffff:10.1.3.4", 443, true, "", "10.1.0.0/16"},
		{"no forwarding.local", alice, "127.0.0.1", 5432, false, CodeNoForwarding, ""},
		{"no role", eve, "10.1.3.4", 443, false, CodeNoRole, ""},
		{"agent has no allow list", agent, "10.1.3.4", 443, false, CodeNotInAllowList, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := e.AllowForward(tt.id, netip.MustParseAddr(tt.ip), tt.port)
			if d.Allow != tt.want {
				t.Fatalf("Allow = %v (%s); want %v", d.Allow, d.Code, tt.want)
			}
			if !tt.want && d.Code != tt.code {
				t.Errorf("Code = %q; want %q", d.Code, tt.code)
			}
			if tt.want && d.Prefix.String() != tt.prefix {
				t.Errorf("Prefix = %s; want %s", d.Prefix, tt.prefix)
			}
		})
	}
}

func TestVisibleAndPermissions(t *testing.T) {
	e := mustEngine(t)
	var names []string
	for _, a := range e.Visible(bob) {
		names = append(names, a.Name)
	}
	if want := []string{"web-2", "psql-prod", "db-9"}; !slices.Equal(names, want) {
		t.Errorf("Visible(bob) = %v; want %v", names, want)
	}
	v := e.Visible(agent)
	if len(v) != 3 || v[0].Name != "web-1" || !slices.Equal(v[0].Logins, []string{"deploy"}) || !slices.Equal(v[0].Ports, []int{22}) {
		t.Errorf("Visible(agent) = %+v", v)
	}
	if v[1].Name != "web-2" || !slices.Equal(v[1].Ports, []int{2222}) {
		t.Errorf("Visible(agent)[1] = %+v; want web-2 on port 2222", v[1])
	}
	if len(e.Visible(eve)) != 0 {
		t.Errorf("Visible(eve) not empty")
	}
	if got := e.Permissions(alice); !slices.Equal(got, []string{"admin", "approver", "auditor"}) {
		t.Errorf("Permissions(alice) = %v", got)
	}
	if got := e.Permissions(agent); len(got) != 0 {
		t.Errorf("Permissions(agent) = %v; want none", got)
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *config.Config)
		want   string
	}{
		{"target name missing", func(c *config.Config) { c.Targets[0].Name = "" }, "targets[0]: name: missing"},
		{"target bad kind", func(c *config.Config) { c.Targets[1].Kind = "rdp" }, "targets[1]: kind:"},
		{"tcp no port", func(c *config.Config) { c.Targets[2].Address = "pg.internal" }, "targets[2]: address:"},
		{"command no command", func(c *config.Config) { c.Targets[3].Command = nil }, "targets[3]: command: missing"},
		{"dup alias", func(c *config.Config) { c.Targets[1].Aliases = []string{"web-1"} }, "targets[1]:"},
		{"passthrough tcp", func(c *config.Config) { c.Targets[2].Passthrough = true }, "targets[2]: passthrough"},
		{"bad host key", func(c *config.Config) { c.Targets[0].HostKey = "nope" }, "targets[0]: host_key"},
		{"role no name", func(c *config.Config) { c.Roles[0].Name = "" }, "roles[0].name"},
		{"role dup name", func(c *config.Config) { c.Roles[1].Name = "agents" }, "roles[1].name"},
		{"role empty match", func(c *config.Config) { c.Roles[0].Match = config.RoleMatch{} }, "roles[0].match: empty"},
		{"bad glob", func(c *config.Config) { c.Roles[1].Targets[1].Name = "[" }, "roles[1].targets[1]"},
		{"empty selector", func(c *config.Config) { c.Roles[0].Targets = append(c.Roles[0].Targets, config.TargetSelector{}) }, "roles[0].targets[2]: empty"},
		{"bad record", func(c *config.Config) { c.Roles[0].Record = "maybe" }, "roles[0].record"},
		{"bad interactive", func(c *config.Config) { c.Roles[0].Interactive = "yes" }, "roles[0].interactive"},
		{"bad port", func(c *config.Config) { c.Roles[1].Ports = []int{70000} }, "roles[1].ports[0]"},
		{"bad allow", func(c *config.Config) { c.Roles[1].Forwarding.Allow = []string{"10.0.0.0/8"} }, "roles[1].forwarding.allow[0]"},
		{"bad allow range", func(c *config.Config) { c.Roles[1].Forwarding.Allow = []string{"10.0.0.0/8:90-80"} }, "roles[1].forwarding.allow[0]"},
		{"bad rule regexp", func(c *config.Config) {
			c.Roles[0].Rules = []config.Rule{{Match: "(", Action: "deny"}}
		}, "roles[0].rules[0].match"},
		{"approve without approvers", func(c *config.Config) {
			c.Roles[0].Rules = []config.Rule{{Match: "sudo", Action: "approve"}}
		}, "roles[0].rules[0].approvers"},
		{"bad permission", func(c *config.Config) { c.Roles[0].Permissions = []string{"root"} }, "roles[0].permissions[0]"},
		{"bad login", func(c *config.Config) { c.Roles[0].Logins = []string{"a b"} }, "roles[0].logins[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig()
			tt.mutate(c)
			_, err := New(c)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("New error = %v; want prefix %q", err, tt.want)
			}
		})
	}
}

func TestNewDoesNotRetainConfig(t *testing.T) {
	c := testConfig()
	e, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	c.Roles[0].Logins[0] = "root"
	c.Targets[0].Labels["env"] = "staging"
	tg, _ := e.Lookup("web-1")
	if d := e.Authorize(agent, tg, "deploy", 22); !d.Allow {
		t.Errorf("mutating the config changed the engine")
	}
	if tg.Labels["env"] != "prod" {
		t.Errorf("target labels alias the config")
	}
}

func FuzzParseAllow(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8:443", "[fd00::/8]:22", "::1/128:1-65535", "1.2.3.4:*", "x", "1.2.3.4:0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := parseAllow(s)
		if err == nil && (a.lo < 1 || a.hi > 65535 || a.lo > a.hi || !a.prefix.IsValid()) {
			t.Errorf("parseAllow(%q) = %+v without error", s, a)
		}
	})
}

func BenchmarkAuthorize(b *testing.B) {
	c := testConfig()
	for i := 0; i < 200; i++ {
		c.Targets = append(c.Targets, config.Target{Name: "host-" + string(rune('a'+i%26)) + strings.Repeat("x", i/26), Kind: "ssh", Address: "10.9.0.1:" + itoa(1000+i)})
	}
	for i := 0; i < 20; i++ {
		c.Roles = append(c.Roles, config.Role{Name: "r" + itoa(i), Match: config.RoleMatch{Groups: []string{"g" + itoa(i)}}, Targets: []config.TargetSelector{{Name: "host-*"}}, Logins: []string{"x"}})
	}
	e, err := New(c)
	if err != nil {
		b.Fatal(err)
	}
	id := certs.Identity{Issuer: "corp", Username: "alice@example.com", Groups: []string{"sre", "g3", "g7"}}
	b.ReportAllocs()
	for b.Loop() {
		tg, _ := e.Lookup("web-2:22")
		if d := e.Authorize(id, tg, "root", 22); !d.Allow {
			b.Fatal("denied")
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestGrant(t *testing.T) {
	e := mustEngine(t)
	g := e.Grant(alice)
	if !slices.Equal(g.Roles, []string{"staging-humans", "admins"}) || !slices.Equal(g.Logins, []string{"ubuntu", "deploy", "root"}) {
		t.Errorf("Grant(alice) = %+v", g)
	}
	if !g.PermitPTY || !g.PermitPortForwarding || g.PermitAgentForwarding {
		t.Errorf("Grant(alice) permits = %+v", g)
	}
	if g := e.Grant(bob); g.PermitPTY {
		t.Errorf("Grant(bob).PermitPTY = true; want false (interactive: deny)")
	}
	if g := e.Grant(eve); len(g.Logins) != 0 || len(g.Roles) != 0 {
		t.Errorf("Grant(eve) = %+v; want nothing", g)
	}
}

// TestRoleMatchClaims: a role matching on kept token claims (globs) admits
// exactly the workloads whose claims all match: a repository on its main
// branch, a namespace's service account.
func TestRoleMatchClaims(t *testing.T) {
	cfg := &config.Config{
		Targets: []config.Target{{Name: "web-1", Kind: "ssh", Address: "10.0.0.5:22"}},
		Roles: []config.Role{
			{Name: "deploy-main", Match: config.RoleMatch{Issuers: []string{"github"},
				Claims: map[string]string{"repository": "acme/*", "ref": "refs/heads/main"}},
				Targets: []config.TargetSelector{{Name: "web-1"}}, Logins: []string{"deploy"}},
			{Name: "ci-runner", Match: config.RoleMatch{Claims: map[string]string{"kubernetes.io/namespace": "ci",
				"kubernetes.io/serviceaccount": "runner"}},
				Targets: []config.TargetSelector{{Name: "web-1"}}, Logins: []string{"ci"}},
		},
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	gh := func(repo, ref string) certs.Identity {
		return certs.Identity{Issuer: "github", Username: "repo:" + repo, Claims: map[string]string{"repository": repo, "ref": ref}}
	}
	k8s := func(ns, sa string) certs.Identity {
		return certs.Identity{Issuer: "k8s", Username: "system:serviceaccount:" + ns + ":" + sa,
			Claims: map[string]string{"kubernetes.io/namespace": ns, "kubernetes.io/serviceaccount": sa}}
	}
	tests := []struct {
		name string
		id   certs.Identity
		want []string
	}{
		{"repo on main", gh("acme/app", "refs/heads/main"), []string{"deploy-main"}},
		{"repo on a branch", gh("acme/app", "refs/heads/feature"), nil},
		{"another owner", gh("evil/app", "refs/heads/main"), nil},
		{"the glob does not cross /", gh("acme/app/sub", "refs/heads/main"), nil},
		{"no claims", certs.Identity{Issuer: "github", Username: "x"}, nil},
		{"the runner", k8s("ci", "runner"), []string{"ci-runner"}},
		{"another service account", k8s("ci", "default"), nil},
		{"another namespace", k8s("prod", "runner"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := e.Roles(tt.id); !slices.Equal(got, tt.want) {
				t.Errorf("roles = %v; want %v", got, tt.want)
			}
		})
	}
	cfg.Roles[0].Match.Claims["ref"] = "refs/[heads"
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "match.claims.ref") {
		t.Errorf("a bad glob: %v", err)
	}
}

func TestAllowViaTarget(t *testing.T) {
	cfg := &config.Config{
		Targets: []config.Target{{Name: "web-1", Kind: config.KindSSH, Address: "10.0.0.5:22"}, {Name: "web-2", Kind: config.KindSSH, Address: "10.0.0.6:22"}},
		Roles: []config.Role{
			{Name: "ops", Match: config.RoleMatch{Groups: []string{"ops"}}, Targets: []config.TargetSelector{{Name: "web-1"}},
				Logins: []string{"deploy"}, Forwarding: config.Forwarding{Local: true,
					TargetAllow: []string{"10.1.0.0/16:5432", "10.1.2.0/24:5432", "db.internal.:5432", "127.0.0.1:*"}}},
			{Name: "noremote", Match: config.RoleMatch{Groups: []string{"ops"}}, Targets: []config.TargetSelector{{Name: "web-2"}},
				Logins: []string{"deploy"}, Forwarding: config.Forwarding{Local: true, TargetAllow: []string{"0.0.0.0/0:*"}}},
		},
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ops := certs.Identity{Issuer: "corp", Subject: "o", Username: "ops", Groups: []string{"ops"}}
	web1, _ := e.Lookup("web-1")
	web2, _ := e.Lookup("web-2")
	ip := netip.MustParseAddr
	tests := []struct {
		name   string
		t      *Target
		login  string
		ip     netip.Addr
		host   string
		port   int
		dir    string
		code   string
		prefix string
	}{
		{"listed prefix, most specific", web1, "deploy", ip("10.1.2.3"), "", 5432, ViaLocal, CodeAllowed, "10.1.2.0/24"},
		{"wider prefix", web1, "deploy", ip("10.1.9.9"), "", 5432, ViaLocal, CodeAllowed, "10.1.0.0/16"},
		{"other port", web1, "deploy", ip("10.1.2.3"), "", 5433, ViaLocal, CodeNotInAllowList, ""},
		{"name, any case and final dot", web1, "deploy", netip.Addr{}, "DB.internal.", 5432, ViaLocal, CodeAllowed, "invalid Prefix"},
		{"name not listed", web1, "deploy", netip.Addr{}, "db.internal.evil", 5432, ViaLocal, CodeNotInAllowList, ""},
		{"address is not a name", web1, "deploy", ip("10.9.9.9"), "db.internal", 5432, ViaLocal, CodeNotInAllowList, ""},
		{"login not the role's", web1, "root", ip("10.1.2.3"), "", 5432, ViaLocal, CodeTargetNotAllow, ""},
		{"remote without the right", web1, "deploy", ip("127.0.0.1"), "", 8080, ViaRemote, CodeNoForwarding, ""},
		{"port 0 needs every port", web2, "deploy", ip("10.0.0.1"), "", 0, ViaLocal, CodeAllowed, "0.0.0.0/0"},
		{"port 0, a range", web1, "deploy", ip("10.1.2.3"), "", 0, ViaLocal, CodeNotInAllowList, ""},
		{"other target's entries", web2, "deploy", netip.Addr{}, "db.internal", 5432, ViaLocal, CodeNotInAllowList, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := e.AllowViaTarget(ops, tt.t, tt.login, tt.ip, tt.host, tt.port, tt.dir)
			if d.Code != tt.code || d.Allow != (tt.code == CodeAllowed) {
				t.Fatalf("code %q allow %v; want %q", d.Code, d.Allow, tt.code)
			}
			if d.Allow && d.Prefix.String() != tt.prefix {
				t.Errorf("prefix %s; want %s", d.Prefix, tt.prefix)
			}
		})
	}
	if d := e.AllowViaTarget(certs.Identity{Issuer: "corp", Subject: "x", Username: "x"}, web1, "deploy", ip("10.1.2.3"), "", 5432, ViaLocal); d.Allow || d.Code != CodeNoRole {
		t.Errorf("identity without a role: %+v", d)
	}
}
