package config

import (
	"strings"
	"testing"
)

func TestParseMasking(t *testing.T) {
	base := `
public_url: https://bastion.example.com
data_dir: /var/lib/postern
identity:
  issuers:
    - {name: corp, issuer_url: https://dex.example.com/dex, client_id: postern}
targets:
  - {name: pg, kind: tcp, address: pg.internal:5432, protocol: postgres, database_user: app, database_password: pw}
masking:
  rules:
    - {detector: aws_key}
    - {name: card, detector: credit_card, columns: ["card*"], applies_to: [recording, stream]}
roles:
  - name: r
    match: {issuers: [corp]}
    targets: [pg]
    masking:
      rules:
        - {name: ticket, pattern: 'T-\d+', applies_to: [recording]}
`
	cfg, err := Parse([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Masking.Rules) != 2 || cfg.Roles[0].Masking.Rules[0].Name != "ticket" || cfg.Targets[0].DatabaseUser != "app" {
		t.Fatalf("masking not parsed: %+v", cfg.Masking)
	}
	for _, c := range []struct{ repl, want string }{
		{"{detector: aws_key}", "unknown detector"},
		{"{detector: aws_key}", "must be recording or stream"},
		{"{detector: aws_key}", "missing closing"},
	} {
		bad := base
		switch c.want {
		case "unknown detector":
			bad = strings.Replace(bad, c.repl, "{detector: nope}", 1)
		case "must be recording or stream":
			bad = strings.Replace(bad, c.repl, "{detector: aws_key, applies_to: [disk]}", 1)
		default:
			bad = strings.Replace(bad, c.repl, "{pattern: '('}", 1)
		}
		if _, err := Parse([]byte(bad)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v", c.want, err)
		}
	}
	badClass := strings.Replace(base, "targets: [pg]", "targets: [pg]\n    rules: [{match: 'sql:dropp', action: deny}]", 1)
	if _, err := Parse([]byte(badClass)); err == nil || !strings.Contains(err.Error(), "unknown statement class") {
		t.Errorf("unknown sql class: %v", err)
	}
	okClass := strings.Replace(base, "targets: [pg]", "targets: [pg]\n    rules: [{match: 'sql:drop', action: deny}]", 1)
	if _, err := Parse([]byte(okClass)); err != nil {
		t.Errorf("sql:drop rule: %v", err)
	}
	bad := strings.Replace(base, "protocol: postgres, ", "", 1)
	if _, err := Parse([]byte(bad)); err == nil || !strings.Contains(err.Error(), "database credentials") {
		t.Errorf("credentials on a plain tcp target: %v", err)
	}
}
