package config

import (
	"strings"
	"testing"
)

// TestEveryInvalidValueNamesItsKey covers each check of Validate not in
// TestParseErrorsNameKeyPath: every invalid value is refused with an error
// that names the key path of the bad value.
func TestEveryInvalidValueNamesItsKey(t *testing.T) {
	const role = "roles: [{name: r, match: {groups: [g]}, "
	tests := []struct {
		name, src, want string
	}{
		{"public url scheme", "public_url: ftp://bastion", "public_url: must be an http(s) URL"},
		{"ca algorithm", "ca: {user: {algorithm: dsa}}", "ca.user.algorithm: must be ed25519, ecdsa-p256 or rsa-3072"},
		{"recording format", "recording: {format: v9}", "recording.format: must be v2 or v3"},
		{"recording overflow", "recording: {on_overflow: explode}", "recording.on_overflow: must be block or drop"},
		{"recording buffer", "recording: {buffer_size: 100}", "recording.buffer_size: must be at least 65536 bytes"},
		{"negative connections", "ssh: {max_connections: -1}", "ssh.max_connections: must not be negative"},
		{"penalty failures", "ssh: {penalty: {max_failures: -3}}", "ssh.penalty.max_failures: must not be negative"},
		{"penalty window", "ssh: {penalty: {window: -1s}}", "ssh.penalty.window: must not be negative"},
		{"penalty max below duration", "ssh: {penalty: {duration: 5m, max_duration: 1m}}", "ssh.penalty.max_duration: must not be shorter than ssh.penalty.duration"},
		{"penalty exempt", "ssh: {penalty: {exempt: ['10.0.0.0/33']}}", "ssh.penalty.exempt[0]: must be an IP address or CIDR prefix"},
		{"penalty exempt name", "ssh: {penalty: {exempt: [lb.example]}}", "ssh.penalty.exempt[0]: must be an IP address or CIDR prefix"},
		{"upstream idle", "ssh: {upstream_reuse: {idle: -1s}}", "ssh.upstream_reuse.idle: must not be negative"},
		{"upstream max age", "ssh: {upstream_reuse: {max_age: -1m}}", "ssh.upstream_reuse.max_age: must not be negative"},
		{"issuer name missing", "identity: {issuers: [{issuer_url: 'https://idp', client_id: c}]}", "identity.issuers[0].name: missing"},
		{"issuer name duplicate", "identity: {issuers: [{name: x, issuer_url: 'https://a', client_id: c}, {name: x, issuer_url: 'https://b', client_id: c}]}", `identity.issuers[1].name: duplicate issuer name "x"`},
		{"issuer audience", "identity: {issuers: [{name: x, issuer_url: 'https://idp'}]}", "identity.issuers[0].audience: missing"},
		{"cert ttl tiny", "identity: {cert_ttl: {agent: 10s}}", "identity.cert_ttl.agent: must be at least 1m"},
		{"target name missing", "targets: [{kind: tcp, address: 'h:1'}]", "targets[0].name: missing"},
		{"target name characters", "targets: [{name: 'a b/c', kind: tcp, address: 'h:1'}]", "targets[0].name: use letters, digits"},
		{"target port zero", "targets: [{name: a, kind: tcp, address: 'h:0'}]", "targets[0].address: port must be 1-65535"},
		{"target port too big", "targets: [{name: a, kind: tcp, address: 'h:70000'}]", "targets[0].address: port must be 1-65535"},
		{"command on tcp", "targets: [{name: a, kind: tcp, address: 'h:1', command: [sh]}]", "targets[0].command: only command targets run a command"},
		{"address on command", "targets: [{name: a, kind: command, command: [sh], address: 'h:1'}]", "targets[0].address: command targets have no address"},
		{"protocol", "targets: [{name: a, kind: tcp, address: 'h:1', protocol: mysql}]", "targets[0].protocol: must be postgres or empty"},
		{"database user without postgres", "targets: [{name: a, kind: tcp, address: 'h:1', database_user: u}]", "targets[0].database_user: only tcp targets with protocol: postgres"},
		{"database password alone", "targets: [{name: a, kind: tcp, address: 'h:1', protocol: postgres, database_password: p}]", "targets[0].database_password: needs database_user"},
		{"role name missing", "roles: [{match: {groups: [g]}}]", "roles[0].name: missing"},
		{"role name duplicate", "roles: [{name: r, match: {groups: [g]}}, {name: r, match: {groups: [h]}}]", `roles[1].name: duplicate role name "r"`},
		{"empty target selector", role + "targets: [{}]}]", "roles[0].targets[0]: empty selector"},
		{"login with spaces", role + "logins: ['root; rm -rf /']}]", "roles[0].logins[0]: must be a plain user name"},
		{"login empty", role + "logins: ['']}]", "roles[0].logins[0]: must be a plain user name"},
		{"port out of range", role + "ports: [0]}]", "roles[0].ports[0]: must be 1-65535"},
		{"port negative", role + "ports: [22, -5]}]", "roles[0].ports[1]: must be 1-65535"},
		{"interactive", role + "interactive: sometimes}]", "roles[0].interactive: must be allow or deny"},
		{"rule match and glob", role + "rules: [{match: x, glob: 'y*', action: deny}]}]", "roles[0].rules[0]: set exactly one of match"},
		{"rule neither", role + "rules: [{action: deny}]}]", "roles[0].rules[0]: set exactly one of match"},
		{"allow bad port", role + "forwarding: {allow: ['10.0.0.0/8:99999']}}]", "roles[0].forwarding.allow[0]"},
		{"state scheme", "state: mysql://db", "state: scheme must be one of"},
		{"ssh trusted proxy", "ssh: {trusted_proxies: [lb.example]}", "ssh.trusted_proxies[0]: must be an IP address or CIDR prefix"},
		{"http trusted proxy", "http: {trusted_proxies: ['10.0.0.0/40']}", "http.trusted_proxies[0]: must be an IP address or CIDR prefix"},
		{"checkpoint interval", "recording: {checkpoint_interval: 10ms}", "recording.checkpoint_interval: must be between 100ms and 5m"},
		{"dead after", "replicas: {heartbeat: 5s, dead_after: 6s}", "replicas.dead_after: must be at least three heartbeats"},
		{"subsystem on ssh target", "targets: [{name: a, kind: ssh, address: 'h:22', host_key: k, subsystems: {sftp: [x]}}]", "targets[0].subsystems: only command targets run subsystem programs"},
		{"subsystem without program", "targets: [{name: a, kind: command, command: [sh], subsystems: {sftp: []}}]", "targets[0].subsystems.sftp: give a subsystem name and the program"},
		{"storage not a url", "storage: '::'", "storage:"},
		{"http listen", "listen: {http: 'localhost'}", "listen.http: must be host:port"},
		{"audit key algorithm", "ca: {audit: {algorithm: rsa-3072}}", "ca.audit.algorithm: the audit signing key is always ed25519"},
		{"checkpoint interval", "audit: {checkpoint_interval: 10ms}", "audit.checkpoint_interval: must be between 1s and 1h"},
		{"anchor storage", "audit: {anchor: {storage: maybe}}", "audit.anchor.storage: must be on or off"},
		{"export s3 scheme", "audit: {export: {s3: {url: 'ftp://x'}}}", "audit.export.s3.url: scheme must be one of s3, file"},
		{"export s3 window", "audit: {export: {s3: {url: 's3://b', window: 48h}}}", "audit.export.s3.window: must be between 1s and 24h"},
		{"export http url", "audit: {export: {http: {url: 'collector:4318'}}}", "audit.export.http.url: must be an http(s) URL"},
		{"export http credentials", "audit: {export: {http: {url: 'https://u:p@collector'}}}", "audit.export.http.url: must not carry credentials"},
		{"export http format", "audit: {export: {http: {url: 'https://c', format: syslog}}}", "audit.export.http.format: must be otlp or hec"},
		{"export http batch", "audit: {export: {http: {url: 'https://c', batch_size: 20000}}}", "audit.export.http.batch_size: must be between 1 and 10000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.src))
			if err == nil {
				t.Fatalf("Parse(%q) succeeded; want error containing %q", tt.src, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %q; want it to contain %q", err, tt.want)
			}
		})
	}
}
