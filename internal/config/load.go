package config

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/posternhq/postern/guardrails/mask"
	"github.com/posternhq/postern/internal/netguard"
)

// MaxFileSize bounds the configuration file.
const MaxFileSize = 4 << 20

// Load reads, expands and validates the configuration file at path. Secret
// references (${env:NAME}, ${file:/path}) are expanded in every string value;
// defaults are applied; the result is validated.
func Load(path string) (*Config, error) { return LoadWith(path, nil) }

// LoadWith is Load with override applied to the decoded file before defaults
// and validation (command-line flags such as --data-dir use it).
func LoadWith(path string, override func(*Config)) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if len(b) > MaxFileSize {
		return nil, fmt.Errorf("config %s: larger than %d bytes", path, MaxFileSize)
	}
	cfg, err := ParseWith(b, override)
	if err != nil {
		var ve *ValidationError
		if errors.As(err, &ve) {
			ve.File = path // each problem reads "FILE:LINE: key.path: …"
			return nil, err
		}
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes, expands, applies defaults to and validates a configuration.
// Unknown keys are errors, so a typo never silently disables a setting.
func Parse(b []byte) (*Config, error) { return ParseWith(b, nil) }

// ParseWith is Parse with override applied before defaults and validation.
func ParseWith(b []byte, override func(*Config)) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	cfg := &Config{}
	k := &keyChecker{lines: map[string]int{}, secret: map[*yaml.Node]bool{}}
	if len(root.Content) > 0 {
		if err := expandSecrets(&root, "", k.secret); err != nil {
			return nil, err
		}
		// Unknown keys and values of the wrong shape are found on the
		// file's own tree (see keyChecker), so that each names its line.
		k.check(&root, reflect.TypeFor[Config](), "")
		if len(k.problems) > 0 {
			return nil, &ValidationError{Problems: k.problems}
		}
		if err := root.Decode(cfg); err != nil {
			return nil, decodeError(err)
		}
	}
	if override != nil {
		override(cfg)
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		var ve *ValidationError
		if errors.As(err, &ve) {
			for i := range ve.Problems {
				if ve.Problems[i].Line == 0 {
					ve.Problems[i].Line = lineOf(k.lines, ve.Problems[i].Path)
				}
			}
		}
		return nil, err
	}
	return cfg, nil
}

// decodeError reports a decoding failure the key check did not foresee,
// with yaml.v3's line numbers.
func decodeError(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return fmt.Errorf("invalid config: %s", strings.Join(te.Errors, "; "))
	}
	return fmt.Errorf("invalid config: %w", err)
}

var secretRef = regexp.MustCompile(`\$\{(env|file|credential):([^}]+)\}`)

// expandSecrets replaces ${env:NAME}, ${file:/path} and ${credential:NAME}
// (a systemd credential) in scalar values. An
// unset variable or unreadable file is an error naming the key path; the value
// itself is never printed.
func expandSecrets(n *yaml.Node, path string, expanded map[*yaml.Node]bool) error {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if err := expandSecrets(c, path, expanded); err != nil {
				return err
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := expandSecrets(n.Content[i+1], joinPath(path, n.Content[i].Value), expanded); err != nil {
				return err
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if err := expandSecrets(c, fmt.Sprintf("%s[%d]", path, i), expanded); err != nil {
				return err
			}
		}
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "${") {
			return nil
		}
		var firstErr error
		n.Value = secretRef.ReplaceAllStringFunc(n.Value, func(m string) string {
			sub := secretRef.FindStringSubmatch(m)
			v, err := resolveRef(sub[1], sub[2])
			if err != nil && firstErr == nil {
				firstErr = fmt.Errorf("%s: %w", path, err)
			}
			return v
		})
		if firstErr != nil {
			return firstErr
		}
		// An expanded value is always a string, never reinterpreted as YAML.
		n.Tag = "!!str"
		n.Style = yaml.DoubleQuotedStyle
		expanded[n] = true
	}
	return nil
}

func resolveRef(kind, arg string) (string, error) {
	switch kind {
	case "env":
		v, ok := os.LookupEnv(arg)
		if !ok {
			return "", fmt.Errorf("environment variable %s is not set (set it, or remove the ${env:%s} reference)", arg, arg)
		}
		return v, nil
	case "file":
		b, err := os.ReadFile(arg)
		if err != nil {
			return "", fmt.Errorf("cannot read secret file %s (check the path and permissions)", arg)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	case "credential":
		// systemd's LoadCredential= hands the service private copies of
		// secrets in $CREDENTIALS_DIRECTORY.
		dir := os.Getenv("CREDENTIALS_DIRECTORY")
		if dir == "" {
			return "", fmt.Errorf("${credential:%s} needs $CREDENTIALS_DIRECTORY, which systemd sets for a unit with LoadCredential= (outside systemd, set it to the directory holding the credential files)", arg)
		}
		if strings.ContainsAny(arg, "/\\") || arg == "." || arg == ".." {
			return "", fmt.Errorf("credential name %q: a plain name, as in LoadCredential=NAME:/path", arg)
		}
		b, err := os.ReadFile(filepath.Join(dir, arg))
		if err != nil {
			return "", fmt.Errorf("cannot read credential %s from $CREDENTIALS_DIRECTORY (is there a LoadCredential=%s:… line in the unit?)", arg, arg)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	return "", fmt.Errorf("unknown reference ${%s:…} (use ${env:NAME}, ${file:/path} or ${credential:NAME})", kind)
}

func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// SetDefaults fills every zero field that has a documented default. It is
// idempotent.
func (c *Config) SetDefaults() {
	if c.Listen.SSH == "" {
		c.Listen.SSH = ":2222"
	}
	if c.Listen.HTTP == "" {
		c.Listen.HTTP = ":8080"
	}
	if c.DataDir == "" {
		c.DataDir = "/var/lib/postern"
	}
	if abs, err := filepath.Abs(c.DataDir); err == nil {
		c.DataDir = abs
	}
	if c.PublicURL == "" {
		c.PublicURL = "http://" + loopbackIfUnspecified(c.Listen.HTTP)
	}
	if c.SSHAddress == "" {
		c.SSHAddress = loopbackIfUnspecified(c.Listen.SSH)
	}
	if c.Storage == "" {
		c.Storage = "file://" + filepath.Join(c.DataDir, "recordings")
	}
	if c.State == "" {
		c.State = "sqlite://" + filepath.Join(c.DataDir, "state.db")
	}
	if c.Audit.File == "" {
		c.Audit.File = filepath.Join(c.DataDir, "audit.jsonl")
	}
	setDur(&c.Audit.CheckpointInterval, "10s")
	if c.Audit.Anchor.Storage == "" {
		c.Audit.Anchor.Storage = "on"
	}
	setDur(&c.Audit.Export.S3.Window, "5m")
	if c.Audit.Export.HTTP.Format == "" {
		c.Audit.Export.HTTP.Format = "otlp"
	}
	if c.Audit.Export.HTTP.BatchSize == 0 {
		c.Audit.Export.HTTP.BatchSize = 500
	}
	setDur(&c.Audit.Export.HTTP.Timeout, "10s")
	t := &c.Identity.CertTTL
	setDur(&t.Human, "8h")
	setDur(&t.Agent, "15m")
	setDur(&t.Max, "24h")
	if c.Identity.RateLimit.PerIdentity == 0 {
		c.Identity.RateLimit.PerIdentity = 30
	}
	if c.Identity.RateLimit.PerSource == 0 {
		c.Identity.RateLimit.PerSource = 120
	}
	for i := range c.Identity.Issuers {
		is := &c.Identity.Issuers[i]
		switch is.Profile {
		case ProfileGitHubActions:
			if is.IssuerURL == "" {
				is.IssuerURL = GitHubActionsIssuer
			}
			if is.Kind == "" {
				is.Kind = "agent"
			}
		case ProfileKubernetes:
			if is.Kind == "" {
				is.Kind = "agent"
			}
		}
		if is.Kind == "" {
			is.Kind = "human"
		}
		if is.Audience == "" {
			is.Audience = is.ClientID
		}
		if is.UsernameClaim == "" {
			is.UsernameClaim = "email"
			if is.Kind == "agent" {
				is.UsernameClaim = "sub"
			}
		}
	}
	setDur(&c.SSH.HandshakeTimeout, "15s")
	setDur(&c.SSH.IdleTimeout, "30m")
	if c.SSH.MaxConnections == 0 {
		c.SSH.MaxConnections = 10000
	}
	if c.SSH.MaxConnectionsPerSource == 0 {
		c.SSH.MaxConnectionsPerSource = 200
	}
	if c.SSH.Penalty.MaxFailures == 0 {
		c.SSH.Penalty.MaxFailures = 20
	}
	setDur(&c.SSH.Penalty.Window, "1m")
	setDur(&c.SSH.Penalty.Duration, "30s")
	setDur(&c.SSH.Penalty.MaxDuration, "10m")
	setDur(&c.SSH.UpstreamReuse.Idle, "30s")
	setDur(&c.SSH.UpstreamReuse.MaxAge, "10m")
	if c.Recording.Format == "" {
		c.Recording.Format = "v2"
	}
	if c.Recording.BufferSize == 0 {
		c.Recording.BufferSize = 1 << 20
	}
	if c.Recording.OnOverflow == "" {
		c.Recording.OnOverflow = "block"
	}
	setDur(&c.Recording.FsyncInterval, "1s")
	setDur(&c.Recording.CheckpointInterval, "2s")
	setDur(&c.Replicas.Heartbeat, "2s")
	setDur(&c.Replicas.DeadAfter, "20s")
	for i := range c.Roles {
		r := &c.Roles[i]
		if r.Record == "" {
			r.Record = "required"
		}
		if r.Interactive == "" {
			r.Interactive = "allow"
		}
		for j := range r.Rules {
			if r.Rules[j].Approvals == 0 {
				r.Rules[j].Approvals = 1
			}
			setDur(&r.Rules[j].Timeout, "5m")
		}
	}
}

func setDur(d *Duration, def string) {
	if *d == 0 {
		v, _ := ParseDuration(def)
		*d = v
	}
}

// ParseDuration parses a Go duration string into a Duration.
func ParseDuration(s string) (Duration, error) {
	var d Duration
	err := d.UnmarshalYAML(&yaml.Node{Kind: yaml.ScalarNode, Value: s})
	return d, err
}

// loopbackIfUnspecified turns ":2222" or "0.0.0.0:2222" into "127.0.0.1:2222",
// the address a client on this machine would dial.
func loopbackIfUnspecified(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// Validate checks the configuration and returns every problem found, each
// naming the key path and how to fix it.
func (c *Config) Validate() error {
	var v validator
	v.addr("listen.ssh", c.Listen.SSH)
	v.addr("listen.http", c.Listen.HTTP)
	if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.add("public_url", "must be an http(s) URL such as https://bastion.example.com")
	}
	if !filepath.IsAbs(c.DataDir) {
		v.add("data_dir", "must be an absolute path")
	}
	v.storeURL("storage", c.Storage, "file", "s3")
	v.storeURL("state", c.State, "sqlite", "postgres", "postgresql")
	for _, ca := range []struct {
		name string
		ca   CA
	}{{"ca.user", c.CA.User}, {"ca.host", c.CA.Host}, {"ca.target", c.CA.Target}} {
		switch ca.ca.Algorithm {
		case "", "ed25519", "ecdsa-p256", "rsa-3072":
		default:
			v.add(ca.name+".algorithm", "must be ed25519, ecdsa-p256 or rsa-3072")
		}
	}
	if a := c.CA.Audit.Algorithm; a != "" && a != "ed25519" {
		v.add("ca.audit.algorithm", "the audit signing key is always ed25519; drop the setting")
	}
	validateAudit(&v, c.Audit)
	c.validateIdentity(&v)
	c.validateSAML(&v)
	c.validateSCIM(&v)
	if c.Recording.Format != "v2" && c.Recording.Format != "v3" {
		v.add("recording.format", "must be v2 or v3")
	}
	if c.Recording.OnOverflow != "block" && c.Recording.OnOverflow != "drop" {
		v.add("recording.on_overflow", "must be block or drop")
	}
	if c.Recording.MinSpoolFree < 0 {
		v.add("recording.min_spool_free", "must be zero (off) or a number of bytes")
	}
	if c.Recording.BufferSize < 64<<10 {
		v.add("recording.buffer_size", "must be at least 65536 bytes")
	}
	if ci := c.Recording.CheckpointInterval.D(); ci < 100*time.Millisecond || ci > 5*time.Minute {
		v.add("recording.checkpoint_interval", "must be between 100ms and 5m (it bounds what a killed replica loses)")
	}
	if hb := c.Replicas.Heartbeat.D(); hb < 100*time.Millisecond {
		v.add("replicas.heartbeat", "must be at least 100ms")
	} else if c.Replicas.DeadAfter.D() < 3*hb {
		v.add("replicas.dead_after", "must be at least three heartbeats (replicas.heartbeat), or a slow heartbeat passes for a death")
	}
	if c.SSH.MaxConnections < 0 || c.SSH.MaxConnectionsPerSource < 0 {
		v.add("ssh.max_connections", "must not be negative")
	}
	validatePenalty(&v, c.SSH.Penalty)
	for i, p := range c.SSH.TrustedProxies {
		if _, err := ParsePrefix(p); err != nil {
			v.add(fmt.Sprintf("ssh.trusted_proxies[%d]", i), "must be an IP address or CIDR prefix of a load balancer")
		}
	}
	for i, p := range c.HTTP.TrustedProxies {
		if _, err := ParsePrefix(p); err != nil {
			v.add(fmt.Sprintf("http.trusted_proxies[%d]", i), "must be an IP address or CIDR prefix of a proxy")
		}
	}
	if c.SSH.UpstreamReuse.Idle < 0 {
		v.add("ssh.upstream_reuse.idle", "must not be negative")
	}
	if c.SSH.UpstreamReuse.MaxAge < 0 {
		v.add("ssh.upstream_reuse.max_age", "must not be negative")
	}
	targets := c.validateTargets(&v)
	c.validateRoles(&v, targets)
	c.validateApprovals(&v)
	c.validateSearch(&v)
	validateMasking(&v, "masking", c.Masking)
	for i, r := range c.Roles {
		validateMasking(&v, fmt.Sprintf("roles[%d].masking", i), r.Masking)
	}
	return v.err()
}

func (c *Config) validateIdentity(v *validator) {
	names := map[string]bool{}
	for i, is := range c.Identity.Issuers {
		p := fmt.Sprintf("identity.issuers[%d]", i)
		switch {
		case is.Name == "":
			v.add(p+".name", "missing; give the issuer a short name used in roles")
		case names[is.Name]:
			v.add(p+".name", fmt.Sprintf("duplicate issuer name %q", is.Name))
		case !validName.MatchString(is.Name):
			v.add(p+".name", "use letters, digits, '.', '_' and '-' only (the name starts identity keys, <issuer>:<subject>)")
		case is.Name == "alias":
			v.add(p+".name", `"alias" is reserved for identity aliases; choose another name`)
		}
		names[is.Name] = true
		if u, err := url.Parse(is.IssuerURL); err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && isLoopbackHost(u.Hostname()))) {
			v.add(p+".issuer_url", "must be an https URL (http only on loopback) equal to the tokens' iss claim")
		}
		if is.Audience == "" {
			v.add(p+".audience", "missing; set audience (or client_id) to the aud the tokens carry")
		}
		if is.Kind != "human" && is.Kind != "agent" {
			v.add(p+".kind", "must be human or agent")
		}
		switch is.Profile {
		case "", ProfileGitHubActions, ProfileKubernetes:
		default:
			v.add(p+".profile", "must be github-actions or kubernetes (or empty)")
		}
		for j, c := range is.Claims {
			if c == "" || strings.HasPrefix(c, "/") || strings.HasSuffix(c, "/") || strings.ContainsAny(c, " \t\n") {
				v.add(fmt.Sprintf("%s.claims[%d]", p, j), "must be a claim name (a/b for a nested claim)")
			}
		}
	}
	for _, p := range c.Identity.SAML.Providers {
		names[p.Name] = true // SAML providers are issuers of identities too (validateSAML checks them)
	}
	c.validateAliases(v, names)
	t := c.Identity.CertTTL
	for _, d := range []struct {
		key string
		d   Duration
	}{{"human", t.Human}, {"agent", t.Agent}, {"max", t.Max}} {
		if d.d < Duration(1e9*60) {
			v.add("identity.cert_ttl."+d.key, "must be at least 1m")
		}
	}
	if t.Human > t.Max || t.Agent > t.Max {
		v.add("identity.cert_ttl", "human and agent must not exceed max")
	}
	if c.Identity.RateLimit.PerIdentity < 0 || c.Identity.RateLimit.PerSource < 0 {
		v.add("identity.rate_limit", "must not be negative")
	}
}

// validAliasName is what an alias may be called: it is shown as a name and
// used in keys (alias:<name>).
var validAliasName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]*$`)

// validateAliases checks identity.aliases: named, each identity an
// "<issuer>:<subject>" of a configured issuer, and no identity in two
// aliases.
func (c *Config) validateAliases(v *validator, issuers map[string]bool) {
	aliases, owner := map[string]bool{}, map[string]string{}
	for i, a := range c.Identity.Aliases {
		p := fmt.Sprintf("identity.aliases[%d]", i)
		switch {
		case !validAliasName.MatchString(a.Name):
			v.add(p+".name", "missing or not a name; use letters, digits, '.', '_', '-' and '@'")
		case aliases[a.Name]:
			v.add(p+".name", fmt.Sprintf("duplicate alias %q", a.Name))
		}
		aliases[a.Name] = true
		if len(a.Identities) == 0 {
			v.add(p+".identities", `empty; list the person's identities as "<issuer>:<subject>"`)
		}
		for j, key := range a.Identities {
			is, sub, ok := strings.Cut(key, ":")
			switch {
			case !ok || sub == "":
				v.add(fmt.Sprintf("%s.identities[%d]", p, j), `must be "<issuer>:<subject>", e.g. corp:00u1abcd`)
			case !issuers[is] && !(c.Dev && is == "dev"):
				v.add(fmt.Sprintf("%s.identities[%d]", p, j), fmt.Sprintf("unknown issuer %q (define it under identity.issuers or identity.saml.providers)", is))
			case owner[key] != "":
				v.add(fmt.Sprintf("%s.identities[%d]", p, j), fmt.Sprintf("%s is already in alias %q", key, owner[key]))
			default:
				owner[key] = a.Name
			}
		}
	}
}

// AliasOf returns the alias identity.aliases gives the identity issuer
// vouched for as subject; "" if none.
func (c *Config) AliasOf(issuer, subject string) string {
	key := issuer + ":" + subject
	for _, a := range c.Identity.Aliases {
		for _, k := range a.Identities {
			if k == key {
				return a.Name
			}
		}
	}
	return ""
}

// IsPersonKey reports whether key names a person the configuration knows:
// "alias:<name>" of a defined alias, or "<issuer>:<subject>" of a configured
// issuer.
func (c *Config) IsPersonKey(key string) bool {
	is, rest, ok := strings.Cut(key, ":")
	if !ok || rest == "" {
		return false
	}
	if is == "alias" {
		for _, a := range c.Identity.Aliases {
			if a.Name == rest {
				return true
			}
		}
		return false
	}
	if c.Dev && is == "dev" {
		return true
	}
	for _, i := range c.Identity.Issuers {
		if i.Name == is {
			return true
		}
	}
	for _, p := range c.Identity.SAML.Providers {
		if p.Name == is {
			return true
		}
	}
	return false
}

func (c *Config) validateTargets(v *validator) map[string]bool {
	names := map[string]bool{}
	for i, t := range c.Targets {
		p := fmt.Sprintf("targets[%d]", i)
		if t.Name == "" {
			v.add(p+".name", "missing; give every target a name")
		} else if !validName.MatchString(t.Name) {
			v.add(p+".name", "use letters, digits, '.', '_' and '-' only")
		} else if names[t.Name] {
			v.add(p+".name", fmt.Sprintf("duplicate target name %q", t.Name))
		}
		names[t.Name] = true
		for _, a := range t.Aliases {
			names[a] = true
		}
		switch t.Kind {
		case KindSSH, KindTCP:
			if _, port, err := net.SplitHostPort(t.Address); err != nil || port == "" {
				v.add(p+".address", "must be host:port")
			} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
				v.add(p+".address", "port must be 1-65535")
			}
			if len(t.Command)+len(t.Exec) > 0 {
				v.add(p+".command", "only command targets run a command")
			}
			if len(t.Subsystems) > 0 {
				v.add(p+".subsystems", "only command targets run subsystem programs (an ssh target's sshd serves its own)")
			}
		case KindCommand:
			if len(t.Command) == 0 {
				v.add(p+".command", "missing; a command target needs a program, e.g. [psql, --no-psqlrc]")
			}
			if t.Address != "" {
				v.add(p+".address", "command targets have no address")
			}
			for name, argv := range t.Subsystems {
				if name == "" || len(argv) == 0 || argv[0] == "" {
					v.add(p+".subsystems."+name, "give a subsystem name and the program to run, e.g. sftp: [/usr/lib/openssh/sftp-server]")
				}
			}
		default:
			v.add(p+".kind", "must be ssh, tcp or command")
		}
		if t.Kind == KindSSH && !t.Passthrough && t.HostKey == "" && t.KnownHosts == "" && t.HostCA == "" {
			v.add(p+".host_key", "an ssh target needs host_key, known_hosts or host_ca so its host key can be verified")
		}
		if t.Protocol != "" && t.Protocol != "postgres" {
			v.add(p+".protocol", "must be postgres or empty")
		}
		if (t.DatabaseUser != "" || t.DatabasePassword != "") && (t.Kind != KindTCP || t.Protocol != "postgres") {
			v.add(p+".database_user", "only tcp targets with protocol: postgres take database credentials")
		}
		if t.DatabasePassword != "" && t.DatabaseUser == "" {
			v.add(p+".database_password", "needs database_user")
		}
	}
	return names
}

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

func (c *Config) validateRoles(v *validator, targets map[string]bool) {
	issuers := map[string]bool{}
	for _, is := range c.Identity.Issuers {
		issuers[is.Name] = true
	}
	for _, p := range c.Identity.SAML.Providers {
		issuers[p.Name] = true
	}
	if c.Dev {
		issuers["dev"] = true
	}
	names := map[string]bool{}
	for i, r := range c.Roles {
		p := fmt.Sprintf("roles[%d]", i)
		if r.Name == "" {
			v.add(p+".name", "missing; give every role a name")
		} else if names[r.Name] {
			v.add(p+".name", fmt.Sprintf("duplicate role name %q", r.Name))
		}
		names[r.Name] = true
		if len(r.Match.Issuers)+len(r.Match.Groups)+len(r.Match.Users)+len(r.Match.Claims) == 0 {
			v.add(p+".match", "empty; a role must match issuers, groups, users or claims (it would match everyone)")
		}
		if r.Moderation.Timeout < 0 {
			v.add(p+".moderation.timeout", "must not be negative")
		}
		if !r.Moderation.Required && (r.Moderation.Timeout != 0 || len(r.Moderation.Moderators) > 0) {
			v.add(p+".moderation", "timeout and moderators need required: true")
		}
		for k, pat := range r.Match.Claims {
			if k == "" {
				v.add(p+".match.claims", "a claim name is empty")
			} else if _, err := path.Match(pat, ""); err != nil {
				v.add(fmt.Sprintf("%s.match.claims.%s", p, k), fmt.Sprintf("%q is not a valid glob", pat))
			}
		}
		if len(r.Match.Users) > 0 && len(r.Match.Issuers) == 0 && len(issuers) > 1 {
			v.add(p+".match.issuers", "missing; with several issuers, a role that matches users must name the issuers too (two issuers may vouch for the same username)")
		}
		for j, is := range r.Match.Issuers {
			if !issuers[is] {
				v.add(fmt.Sprintf("%s.match.issuers[%d]", p, j), fmt.Sprintf("unknown issuer %q (define it under identity.issuers or identity.saml.providers)", is))
			}
		}
		for j, s := range r.Targets {
			if s.Name == "" && len(s.Labels) == 0 {
				v.add(fmt.Sprintf("%s.targets[%d]", p, j), "empty selector; use a name glob or {labels: {...}}")
			}
		}
		for j, l := range r.Logins {
			if l == "" || strings.ContainsAny(l, " \t\n,*") {
				v.add(fmt.Sprintf("%s.logins[%d]", p, j), "must be a plain user name")
			}
		}
		for j, port := range r.Ports {
			if port < 1 || port > 65535 {
				v.add(fmt.Sprintf("%s.ports[%d]", p, j), "must be 1-65535")
			}
		}
		switch r.Record {
		case "required", "optional", "off":
		default:
			v.add(p+".record", "must be required, optional or off")
		}
		switch r.Interactive {
		case "allow", "deny":
		default:
			v.add(p+".interactive", "must be allow or deny")
		}
		for j, perm := range r.Permissions {
			switch perm {
			case "auditor", "approver", "moderator", "admin":
			default:
				v.add(fmt.Sprintf("%s.permissions[%d]", p, j), "must be auditor, approver, moderator or admin")
			}
		}
		for j, a := range r.Forwarding.Allow {
			if err := checkAllow(a); err != nil {
				v.add(fmt.Sprintf("%s.forwarding.allow[%d]", p, j), err.Error())
			}
		}
		for j, a := range r.Forwarding.TargetAllow {
			if _, _, _, _, err := ParseTargetAllow(a); err != nil {
				v.add(fmt.Sprintf("%s.forwarding.target_allow[%d]", p, j), err.Error())
			}
		}
		for j, rule := range r.Rules {
			rp := fmt.Sprintf("%s.rules[%d]", p, j)
			if (rule.Match == "") == (rule.Glob == "") {
				v.add(rp, "set exactly one of match (regular expression) or glob")
			}
			if rule.Match != "" {
				if _, err := regexp.Compile(rule.Match); err != nil {
					v.add(rp+".match", "not a valid regular expression: "+err.Error())
				}
			}
			if c, ok := strings.CutPrefix(rule.Match, "sql:"); ok && !sqlClasses[c] {
				v.add(rp+".match", "unknown statement class; use sql:drop, sql:truncate, sql:alter, sql:delete-without-where or sql:update-without-where")
			}
			switch rule.Action {
			case "allow", "deny":
			case "approve":
				if len(rule.Approvers) == 0 {
					v.add(rp+".approvers", "an approve rule needs approver groups or users")
				}
			default:
				v.add(rp+".action", "must be allow, deny or approve")
			}
			if rule.Approvals < 1 {
				v.add(rp+".approvals", "must be at least 1")
			}
		}
	}
}

// validateApprovals checks that Slack approvers and approvals.groups name
// people by identity key: a bare username would make one person of every
// issuer's user of that name.
func (c *Config) validateApprovals(v *validator) {
	if c.Approvals.RateLimit.PerMinute < 0 {
		v.add("approvals.rate_limit.per_minute", "must not be negative (0 is the default, 10)")
	}
	for _, id := range sortedKeys(c.Approvals.Slack.Approvers) {
		if key := c.Approvals.Slack.Approvers[id]; !c.IsPersonKey(key) {
			v.add("approvals.slack.approvers."+id, fmt.Sprintf(`%q is not an identity key; write "<issuer>:<subject>" or "alias:<name>" (identity.aliases)`, key))
		}
	}
	for _, key := range sortedKeys(c.Approvals.Groups) {
		if !c.IsPersonKey(key) {
			v.add("approvals.groups."+key, `not an identity key; write "<issuer>:<subject>" or "alias:<name>" (identity.aliases)`)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// checkAllow validates a forwarding.allow entry: "CIDR:port" or "CIDR:lo-hi".
func checkAllow(s string) error {
	_, _, _, err := ParseAllow(s)
	return err
}

// ParseAllow splits a forwarding.allow entry into its prefix and port range.
func ParseAllow(s string) (prefix string, lo, hi int, err error) {
	i := strings.LastIndex(s, ":")
	if i < 0 {
		return "", 0, 0, errors.New(`must be "CIDR:port" or "CIDR:low-high", e.g. 10.0.0.0/8:5432`)
	}
	prefix, ports := s[:i], s[i+1:]
	prefix = strings.TrimSuffix(strings.TrimPrefix(prefix, "["), "]")
	if _, _, e := net.ParseCIDR(prefix); e != nil {
		return "", 0, 0, fmt.Errorf("%q is not a CIDR prefix such as 10.0.0.0/8", prefix)
	}
	loS, hiS, isRange := strings.Cut(ports, "-")
	if !isRange {
		hiS = loS
	}
	lo, e1 := strconv.Atoi(loS)
	hi, e2 := strconv.Atoi(hiS)
	if e1 != nil || e2 != nil || lo < 1 || hi > 65535 || lo > hi {
		return "", 0, 0, fmt.Errorf("%q is not a port or port range within 1-65535", ports)
	}
	return prefix, lo, hi, nil
}

// ParseTargetAllow splits a forwarding.target_allow entry: "CIDR:ports"
// (prefix valid) or "name:ports" (name set, lower case, without a final
// dot), where ports is a port, lo-hi or "*" (every port). A bare address is
// a single-address prefix; IPv6 may be bracketed.
func ParseTargetAllow(s string) (prefix netip.Prefix, name string, lo, hi int, err error) {
	i := strings.LastIndex(s, ":")
	if i < 0 {
		return netip.Prefix{}, "", 0, 0, errors.New(`must be "CIDR:port", "CIDR:low-high" or "name:port", e.g. 10.0.0.0/8:5432 or db.internal:5432`)
	}
	host, ports := strings.TrimSuffix(strings.TrimPrefix(s[:i], "["), "]"), s[i+1:]
	if ports == "*" {
		lo, hi = 1, 65535
	} else {
		loS, hiS, isRange := strings.Cut(ports, "-")
		if !isRange {
			hiS = loS
		}
		var e1, e2 error
		lo, e1 = strconv.Atoi(loS)
		hi, e2 = strconv.Atoi(hiS)
		if e1 != nil || e2 != nil || lo < 1 || hi > 65535 || lo > hi {
			return netip.Prefix{}, "", 0, 0, fmt.Errorf("%q is not a port, port range within 1-65535 or *", ports)
		}
	}
	if p, perr := ParsePrefix(host); perr == nil {
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0)).Masked()
		}
		return p, "", lo, hi, nil
	}
	name = strings.ToLower(strings.TrimSuffix(host, "."))
	if _, numeric := netguard.ParseHost(name); numeric || !netguard.ValidDNSName(name) || strings.Trim(name, "0123456789.") == "" {
		return netip.Prefix{}, "", 0, 0, fmt.Errorf("%q is neither a CIDR prefix, an address nor a host name", host)
	}
	return netip.Prefix{}, name, lo, hi, nil
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

type validator struct{ errs []Problem }

func (v *validator) add(path, msg string) { v.errs = append(v.errs, Problem{Path: path, Msg: msg}) }

func (v *validator) addr(path, a string) {
	if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
		v.add(path, `must be host:port or ":port"`)
	}
}

func (v *validator) storeURL(path, s string, schemes ...string) {
	u, err := url.Parse(s)
	if err != nil {
		v.add(path, "not a URL")
		return
	}
	for _, sc := range schemes {
		if u.Scheme == sc {
			return
		}
	}
	v.add(path, fmt.Sprintf("scheme must be one of %s", strings.Join(schemes, ", ")))
}

func (v *validator) err() error {
	if len(v.errs) == 0 {
		return nil
	}
	return &ValidationError{Problems: v.errs}
}

// Problem is one thing wrong in a configuration.
type Problem struct {
	// Path is the key path of the offending key, e.g. roles[1].rules[0].match.
	Path string
	// Line is the line of the key in the file; 0 if unknown (a
	// configuration not read from YAML, or a key that is missing).
	Line int
	// Msg says what is wrong and how to fix it.
	Msg string
}

// String returns "line N: key.path: message" (without the line if unknown).
func (p Problem) String() string {
	s := p.Path + ": " + p.Msg
	if p.Path == "" {
		s = p.Msg
	}
	if p.Line > 0 {
		return fmt.Sprintf("line %d: %s", p.Line, s)
	}
	return s
}

// ValidationError lists every problem found in a configuration.
type ValidationError struct {
	// File is the configuration file, if it was read from one.
	File string
	// Problems are in the order found.
	Problems []Problem
}

func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
		switch {
		case e.File != "" && p.Line > 0:
			lines[i] = fmt.Sprintf("%s:%d: %s", e.File, p.Line, Problem{Path: p.Path, Msg: p.Msg})
		case e.File != "":
			lines[i] = e.File + ": " + lines[i]
		}
	}
	if len(lines) == 1 {
		return "invalid config: " + lines[0]
	}
	return "invalid config:\n  " + strings.Join(lines, "\n  ")
}

// sqlClasses are the statement classes rules may match as "sql:<class>"
// (postgres targets; see guardrails/pgproxy).
var sqlClasses = map[string]bool{
	"drop": true, "truncate": true, "alter": true, "delete-without-where": true, "update-without-where": true,
}

// validateMasking checks masking rules: a known detector, a compiling
// pattern or column globs, and applies_to values.
func validateMasking(v *validator, p string, m Masking) {
	for i, r := range m.Rules {
		rp := fmt.Sprintf("%s.rules[%d]", p, i)
		var mr []mask.Rule
		mr = append(mr, mask.Rule{Name: r.Name, Detector: r.Detector, Pattern: r.Pattern, Columns: r.Columns})
		switch {
		case r.Detector != "" && !mask.KnownDetector(r.Detector):
			v.add(rp+".detector", "unknown detector; use one of "+strings.Join(mask.Detectors(), ", "))
		default:
			if _, err := mask.New(mr); err != nil {
				v.add(rp, strings.TrimPrefix(err.Error(), "masking rule 0: "))
			}
		}
		for j, a := range r.AppliesTo {
			if a != MaskRecording && a != MaskStream {
				v.add(fmt.Sprintf("%s.applies_to[%d]", rp, j), "must be recording or stream")
			}
		}
	}
}

// validatePenalty checks ssh.penalty.
func validatePenalty(v *validator, p Penalty) {
	if p.MaxFailures < 0 {
		v.add("ssh.penalty.max_failures", "must not be negative")
	}
	if p.Window < 0 {
		v.add("ssh.penalty.window", "must not be negative")
	}
	if p.Duration < 0 {
		v.add("ssh.penalty.duration", "must not be negative")
	}
	if p.MaxDuration < p.Duration {
		v.add("ssh.penalty.max_duration", "must not be shorter than ssh.penalty.duration")
	}
	for i, e := range p.Exempt {
		if _, err := ParsePrefix(e); err != nil {
			v.add(fmt.Sprintf("ssh.penalty.exempt[%d]", i), "must be an IP address or CIDR prefix")
		}
	}
}

// ParsePrefixes parses a validated list of addresses and CIDR prefixes
// (entries that do not parse are skipped; Validate reports them).
func ParsePrefixes(list []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range list {
		if p, err := ParsePrefix(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// ParsePrefix parses an IP address (a single-address prefix) or a CIDR
// prefix such as 10.0.0.0/8.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// validateAudit checks the audit section.
func validateAudit(v *validator, a Audit) {
	if a.CheckpointInterval < Duration(time.Second) || a.CheckpointInterval > Duration(time.Hour) {
		v.add("audit.checkpoint_interval", "must be between 1s and 1h")
	}
	if a.Anchor.Storage != "on" && a.Anchor.Storage != "off" {
		v.add("audit.anchor.storage", "must be on or off")
	}
	if a.Export.S3.URL != "" {
		v.storeURL("audit.export.s3.url", a.Export.S3.URL, "s3", "file")
	}
	if a.Export.S3.Window < Duration(time.Second) || a.Export.S3.Window > Duration(24*time.Hour) {
		v.add("audit.export.s3.window", "must be between 1s and 24h")
	}
	h := a.Export.HTTP
	if h.URL != "" {
		if u, err := url.Parse(h.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.add("audit.export.http.url", "must be an http(s) URL such as https://collector.example.com:4318/v1/logs")
		} else if u.User != nil {
			v.add("audit.export.http.url", "must not carry credentials; use token or headers")
		}
	}
	if h.Format != "otlp" && h.Format != "hec" {
		v.add("audit.export.http.format", "must be otlp or hec")
	}
	if h.BatchSize < 1 || h.BatchSize > 10000 {
		v.add("audit.export.http.batch_size", "must be between 1 and 10000")
	}
	if h.Timeout <= 0 {
		v.add("audit.export.http.timeout", "must be positive")
	}
}
