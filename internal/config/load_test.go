package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseFull(t *testing.T) {
	t.Setenv("PG_PROD_PASSWORD", "s3cret: with colon")
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "slack")
	if err := os.WriteFile(secretFile, []byte("signing-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := `
listen: {ssh: ":2222", http: ":8080"}
public_url: https://bastion.example.com
data_dir: /var/lib/postern
identity:
  issuers:
    - {name: corp, issuer_url: https://dex.example.com/dex, client_id: postern, kind: human, username_claim: email, groups_claim: groups}
    - {name: github, issuer_url: https://token.actions.githubusercontent.com, audience: postern, kind: agent, require: {repository_owner: my-org}}
  cert_ttl: {human: 8h, agent: 15m, max: 24h}
  aliases:
    - {name: alice, identities: ["corp:00u1alice", "github:repo:my-org/tools:ref:refs/heads/main"]}
targets:
  - {name: web-1, kind: ssh, address: 10.0.0.5:22, host_key: "ssh-ed25519 AAAA", labels: {env: prod}}
  - {name: pg-prod, kind: tcp, address: pg.internal:5432, protocol: postgres}
  - {name: psql-prod, kind: command, command: [psql, --no-psqlrc], env: {PGPASSWORD: "${env:PG_PROD_PASSWORD}"}}
roles:
  - name: agents
    match: {groups: [agents], issuers: [github]}
    targets: ["web-*", "pg-prod", {labels: {env: staging}}]
    logins: [deploy]
    forwarding: {local: true, allow: ["10.0.0.0/8:5432"]}
    rules:
      - {match: '^\s*sudo\b', action: approve, approvers: [sre], timeout: 2m}
      - {match: '\b(shutdown|reboot)\b', action: deny}
approvals:
  slack: {webhook_url: "https://hooks.slack.example/x", signing_secret: "${file:` + secretFile + `}", approvers: {U012AB3CD: "alias:alice", U045EF6GH: "corp:00u2bob"}}
`
	c, err := Parse([]byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got, want := c.Targets[2].Env["PGPASSWORD"], "s3cret: with colon"; got != want {
		t.Errorf("env secret = %q; want %q", got, want)
	}
	if got, want := c.Approvals.Slack.SigningSecret, "signing-secret"; got != want {
		t.Errorf("file secret = %q; want %q", got, want)
	}
	r := c.Roles[0]
	if r.Targets[0].Name != "web-*" || r.Targets[2].Labels["env"] != "staging" {
		t.Errorf("target selectors = %+v", r.Targets)
	}
	if r.Record != "required" || r.Rules[0].Timeout.D() != 2*time.Minute || r.Rules[1].Timeout.D() != 5*time.Minute {
		t.Errorf("role defaults = %+v", r)
	}
	if c.Identity.Issuers[1].UsernameClaim != "sub" || c.Identity.Issuers[0].Audience != "postern" {
		t.Errorf("issuer defaults = %+v", c.Identity.Issuers)
	}
	if got := c.AliasOf("github", "repo:my-org/tools:ref:refs/heads/main"); got != "alice" {
		t.Errorf("AliasOf = %q; want alice", got)
	}
	if c.Storage != "file:///var/lib/postern/recordings" || c.State != "sqlite:///var/lib/postern/state.db" {
		t.Errorf("store defaults = %q %q", c.Storage, c.State)
	}
}

func TestParseErrorsNameKeyPath(t *testing.T) {
	tests := []struct {
		name, src, want string
	}{
		{"unknown key", "listen: {ssh: ':22', htp: ':80'}", `line 1: listen.htp: unknown key "htp"; did you mean "http"?`},
		{"bad duration", "identity: {cert_ttl: {human: forever}}", `"forever" is not a duration`},
		{"missing env", "approvals: {slack: {signing_secret: '${env:POSTERN_TEST_UNSET_VAR}'}}", "approvals.slack.signing_secret: environment variable POSTERN_TEST_UNSET_VAR is not set"},
		{"missing file", "approvals: {slack: {signing_secret: '${file:/nonexistent/x}'}}", "approvals.slack.signing_secret: cannot read secret file"},
		{"bad listen", "listen: {ssh: 'nope'}", "listen.ssh: must be host:port"},
		{"bad storage", "storage: ftp://x", "storage: scheme must be one of file, s3"},
		{"target kind", "targets: [{name: a, kind: vnc, address: 'h:1'}]", "targets[0].kind: must be ssh, tcp or command"},
		{"target addr", "targets: [{name: a, kind: tcp, address: h}]", "targets[0].address: must be host:port"},
		{"ssh host key", "targets: [{name: a, kind: ssh, address: 'h:22'}]", "targets[0].host_key: an ssh target needs"},
		{"dup target", "targets: [{name: a, kind: tcp, address: 'h:1'}, {name: a, kind: tcp, address: 'h:2'}]", `targets[1].name: duplicate target name "a"`},
		{"command missing", "targets: [{name: c, kind: command}]", "targets[0].command: missing"},
		{"role match empty", "roles: [{name: r, targets: ['*']}]", "roles[0].match: empty"},
		{"role unknown issuer", "roles: [{name: r, match: {issuers: [nope]}}]", `roles[0].match.issuers[0]: unknown issuer "nope"`},
		{"role record", "roles: [{name: r, match: {groups: [g]}, record: sometimes}]", "roles[0].record: must be required, optional or off"},
		{"rule regexp", "roles: [{name: r, match: {groups: [g]}, rules: [{match: '(', action: deny}]}]", "roles[0].rules[0].match: not a valid regular expression"},
		{"rule approvers", "roles: [{name: r, match: {groups: [g]}, rules: [{match: x, action: approve}]}]", "roles[0].rules[0].approvers"},
		{"rule action", "roles: [{name: r, match: {groups: [g]}, rules: [{match: x, action: maybe}]}]", "roles[0].rules[0].action"},
		{"allow cidr", "roles: [{name: r, match: {groups: [g]}, forwarding: {allow: ['10.0.0.0:22']}}]", "roles[0].forwarding.allow[0]"},
		{"issuer url", "identity: {issuers: [{name: x, issuer_url: 'http://idp.example.com', client_id: c}]}", "identity.issuers[0].issuer_url: must be an https URL"},
		{"issuer kind", "identity: {issuers: [{name: x, issuer_url: 'https://idp', client_id: c, kind: robot}]}", "identity.issuers[0].kind: must be human or agent"},
		{"ttl order", "identity: {cert_ttl: {human: 48h}}", "identity.cert_ttl: human and agent must not exceed max"},
		{"not yaml", "listen: [", "not valid YAML"},
		{"permissions", "roles: [{name: r, match: {groups: [g]}, permissions: [root]}]", "roles[0].permissions[0]"},
		{"issuer profile", "identity: {issuers: [{name: x, profile: gitlab, issuer_url: 'https://idp', audience: a}]}", "identity.issuers[0].profile: must be github-actions or kubernetes"},
		{"kubernetes needs its issuer", "identity: {issuers: [{name: x, profile: kubernetes, audience: a}]}", "identity.issuers[0].issuer_url"},
		{"issuer claim name", "identity: {issuers: [{name: x, issuer_url: 'https://idp', audience: a, claims: ['/ns']}]}", "identity.issuers[0].claims[0]"},
		{"claim glob", "roles: [{name: r, match: {claims: {ref: 'refs/[x'}}}]", "roles[0].match.claims.ref"},
		{"issuer name", "identity: {issuers: [{name: 'a:b', issuer_url: 'https://idp', client_id: c}]}", "identity.issuers[0].name: use letters"},
		{"issuer named alias", "identity: {issuers: [{name: alias, issuer_url: 'https://idp', client_id: c}]}", `identity.issuers[0].name: "alias" is reserved`},
		{"alias identity", "identity: {aliases: [{name: al, identities: [nosubject]}]}", "identity.aliases[0].identities[0]: must be"},
		{"alias issuer", "identity: {aliases: [{name: al, identities: ['nope:1']}]}", `identity.aliases[0].identities[0]: unknown issuer "nope"`},
		{"alias twice", "identity: {issuers: [{name: x, issuer_url: 'https://idp', client_id: c}], aliases: [{name: a, identities: ['x:1']}, {name: b, identities: ['x:1']}]}", `identity.aliases[1].identities[0]: x:1 is already in alias "a"`},
		{"alias name", "identity: {aliases: [{identities: []}]}", "identity.aliases[0].name"},
		{"slack approver username", "approvals: {slack: {approvers: {U1: bob@example.com}}}", "approvals.slack.approvers.U1: \"bob@example.com\" is not an identity key"},
		{"slack approver unknown alias", "approvals: {slack: {approvers: {U1: 'alias:bob'}}}", "approvals.slack.approvers.U1"},
		{"target_allow port", "roles: [{name: r, match: {groups: [g]}, forwarding: {target_allow: ['db.internal:99999']}}]", "roles[0].forwarding.target_allow[0]: \"99999\" is not a port"},
		{"target_allow host", "roles: [{name: r, match: {groups: [g]}, forwarding: {target_allow: ['db internal:5432']}}]", "roles[0].forwarding.target_allow[0]: \"db internal\" is neither"},
		{"target_allow cidr", "roles: [{name: r, match: {groups: [g]}, forwarding: {target_allow: ['10.0.0.0/33:1']}}]", "roles[0].forwarding.target_allow[0]"},
		{"target_allow no port", "roles: [{name: r, match: {groups: [g]}, forwarding: {target_allow: ['db']}}]", "roles[0].forwarding.target_allow[0]: must be"},
		{"users without issuers", "identity: {issuers: [{name: x, issuer_url: 'https://idp', client_id: c}, {name: y, issuer_url: 'https://idp2', client_id: c}]}\nroles: [{name: r, match: {users: [bob]}}]", "roles[0].match.issuers: missing"},
		{"groups username", "approvals: {groups: {bob: [sre]}}", "approvals.groups.bob: not an identity key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.src))
			if err == nil {
				t.Fatalf("Parse succeeded; want error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %q; want it to contain %q", err, tt.want)
			}
		})
	}
}

// TestIssuerProfiles: a github-actions issuer needs nothing but its
// audience (GitHub's issuer, kind agent); a role may match on claims alone.
func TestIssuerProfiles(t *testing.T) {
	c, err := Parse([]byte(`identity: {issuers: [{name: gh, profile: github-actions, audience: postern}, {name: k8s, profile: kubernetes, issuer_url: 'https://k8s.example.com', audience: postern}]}
roles: [{name: r, match: {claims: {repository: 'acme/app'}}}]`))
	if err != nil {
		t.Fatal(err)
	}
	if gh := c.Identity.Issuers[0]; gh.IssuerURL != GitHubActionsIssuer || gh.Kind != "agent" || gh.UsernameClaim != "sub" {
		t.Errorf("github-actions issuer after defaults = %+v", gh)
	}
	if k := c.Identity.Issuers[1]; k.Kind != "agent" {
		t.Errorf("kubernetes issuer after defaults = %+v", k)
	}
}

// TestErrorsNameFileLine: every problem names the key path and the line of
// the offending key in the file as written (comments, flow style and
// expanded secrets notwithstanding), in words rather than Go type names,
// with the nearest valid key for a misspelled one.
func TestErrorsNameFileLine(t *testing.T) {
	t.Setenv("POSTERN_TEST_WORD", "not-a-number-secret")
	src := `# postern
listen: {ssh: "127.0.0.1:2222"}   # line 2

recording:
  # the fsync interval
  fsync_interval: 5x
roles:
  - name: a
    match: {groups: [x]}
    targets: ["*"]
  - name: b
    # a typo below
    mtach: {groups: [y]}
    rules:
      - {match: x, action: deny, aprovers: [sre]}
ssh:
  max_connections: "${env:POSTERN_TEST_WORD}"
  penalty: {disabled: maybe}
  upstream_reuse: [idle]
targets: {name: t}
`
	path := filepath.Join(t.TempDir(), "postern.yaml")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if err == nil {
		t.Fatal("Load succeeded")
	}
	for _, want := range []string{
		path + `:6: recording.fsync_interval: "5x" is not a duration (write e.g. 90s, 15m, 8h)`,
		path + `:13: roles[1].mtach: unknown key "mtach"; did you mean "match"?`,
		path + `:15: roles[1].rules[0].aprovers: unknown key "aprovers"; did you mean "approvers"?`,
		path + `:17: ssh.max_connections: must be a whole number (the value of a ${env:…} or ${file:…} reference given)`,
		path + `:18: ssh.penalty.disabled: must be true or false ("maybe" given)`,
		path + `:19: ssh.upstream_reuse: must be a mapping of keys (a list given)`,
		path + `:20: targets: must be a list (a mapping given)`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not contain\n  %s\ngot:\n%s", want, err)
		}
	}
	for _, never := range []string{"not-a-number-secret", "config.Role", "!!str", "into int", "field "} {
		if strings.Contains(err.Error(), never) {
			t.Errorf("error shows %q:\n%s", never, err)
		}
	}

	// Validation problems name the line of their key too.
	src = "listen: {ssh: \":22\"}\nroles:\n  - name: r\n    match: {groups: [g]}\n\n    record: sometimes\n"
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), path+":6: roles[0].record: must be required, optional or off") {
		t.Errorf("validation error = %v; want it on line 6", err)
	}
	// An unknown key far from every valid one lists the valid keys.
	if _, err := Parse([]byte("recording: {zzzzzzzz: 1}")); err == nil ||
		!strings.Contains(err.Error(), `unknown key "zzzzzzzz"; valid keys here: buffer_size,`) {
		t.Errorf("far-off key: %v", err)
	}
}

func TestNearest(t *testing.T) {
	keys := []string{"approvers", "approvals", "match", "glob", "action", "timeout", "fsync_interval"}
	for _, tc := range []struct{ in, want string }{
		{"mtach", "match"}, {"aprovers", "approvers"}, {"Action", "action"}, {"fsync-interval", "fsync_interval"},
		{"timout", "timeout"}, {"glb", "glob"}, {"zz", ""}, {"banana", ""}, {"a", ""},
	} {
		if got := nearest(tc.in, keys); got != tc.want {
			t.Errorf("nearest(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

// TestCredentialReference: ${credential:NAME} reads a systemd credential
// from $CREDENTIALS_DIRECTORY; without that directory, or with a name that
// is a path, it is an error naming the key and what to do.
func TestCredentialReference(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "slack"), []byte("from-systemd\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	src := "approvals: {slack: {signing_secret: '${credential:slack}'}}"
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	if _, err := Parse([]byte(src)); err == nil || !strings.Contains(err.Error(), "approvals.slack.signing_secret: ${credential:slack} needs $CREDENTIALS_DIRECTORY") {
		t.Errorf("without the directory: %v", err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	c, err := Parse([]byte(src))
	if err != nil || c.Approvals.Slack.SigningSecret != "from-systemd" {
		t.Fatalf("Parse = %v, %v", c, err)
	}
	for _, bad := range []string{"../slack", "missing"} {
		if _, err := Parse([]byte("approvals: {slack: {signing_secret: '${credential:" + bad + "}'}}")); err == nil {
			t.Errorf("${credential:%s} accepted", bad)
		}
	}
}

func TestSecretNeverInError(t *testing.T) {
	t.Setenv("POSTERN_TEST_SECRET", "hunter2")
	_, err := Parse([]byte("identity: {issuers: [{name: x, issuer_url: '${env:POSTERN_TEST_SECRET}', client_id: c}]}"))
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("got %v; want an error without the secret", err)
	}
}

func TestEmptyConfigDeniesEverything(t *testing.T) {
	c, err := Parse(nil)
	if err != nil {
		t.Fatalf("Parse(empty): %v", err)
	}
	if len(c.Roles) != 0 || len(c.Targets) != 0 || c.Listen.SSH != ":2222" || c.SSHAddress != "127.0.0.1:2222" {
		t.Errorf("defaults = %+v", c)
	}
}

func TestDev(t *testing.T) {
	c, err := Dev(t.TempDir())
	if err != nil {
		t.Fatalf("Dev: %v", err)
	}
	if !c.Dev || c.Targets[0].Name != "demo" || c.Identity.Issuers[0].IssuerURL != "http://127.0.0.1:8080/dev/oidc" {
		t.Errorf("dev config = %+v", c)
	}
	c.ReloadDev("127.0.0.1:9999", "127.0.0.1:2200")
	if c.Identity.Issuers[0].IssuerURL != "http://127.0.0.1:9999/dev/oidc" || c.SSHAddress != "127.0.0.1:2200" {
		t.Errorf("after ReloadDev: %+v", c)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("listen: {ssh: ':2222'}"))
	f.Add([]byte("roles: [{name: r, match: {groups: [g]}, targets: ['*', {labels: {a: b}}]}]"))
	f.Add([]byte("targets: [{name: a, kind: tcp, address: 'h:1'}]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err == nil && c.Validate() != nil {
			t.Fatalf("Parse accepted a config that Validate rejects")
		}
	})
}

// TestAuditSection: the audit section's defaults, and a full one parsed.
func TestAuditSection(t *testing.T) {
	c, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	a := c.Audit
	if a.CheckpointInterval.D() != 10*time.Second || a.Anchor.Storage != "on" || a.Export.S3.URL != "" || a.Export.S3.Window.D() != 5*time.Minute ||
		a.Export.HTTP.URL != "" || a.Export.HTTP.Format != "otlp" || a.Export.HTTP.BatchSize != 500 || a.Export.HTTP.Timeout.D() != 10*time.Second {
		t.Errorf("audit defaults %+v", a)
	}
	t.Setenv("OTLP_TOKEN", "tok")
	c, err = Parse([]byte(`
ca: {audit: {key_file: /etc/postern/audit_key, trusted: ["ssh-ed25519 AAAA old"]}}
audit:
  checkpoint_interval: 30s
  anchor: {storage: off}
  export:
    s3: {url: "s3://archive/postern?region=eu-west-1", window: 1m}
    http: {url: "https://collector:4318/v1/logs", format: hec, token: "${env:OTLP_TOKEN}", headers: {X-Team: sre}, batch_size: 50, timeout: 3s}
`))
	if err != nil {
		t.Fatal(err)
	}
	a = c.Audit
	if c.CA.Audit.KeyFile != "/etc/postern/audit_key" || len(c.CA.Audit.Trusted) != 1 || a.CheckpointInterval.D() != 30*time.Second ||
		a.Anchor.Storage != "off" || a.Export.S3.Window.D() != time.Minute || a.Export.HTTP.Format != "hec" || a.Export.HTTP.Token != "tok" ||
		a.Export.HTTP.Headers["X-Team"] != "sre" || a.Export.HTTP.BatchSize != 50 || a.Export.HTTP.Timeout.D() != 3*time.Second {
		t.Errorf("audit section %+v, ca.audit %+v", a, c.CA.Audit)
	}
}
