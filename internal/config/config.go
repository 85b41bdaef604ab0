package config

import (
	"fmt"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole configuration file. Its zero value, after Defaults,
// describes a bastion with no issuers, targets or roles: it runs, and denies
// everything.
type Config struct {
	// Listen holds the listening addresses.
	Listen Listen `yaml:"listen"`
	// PublicURL is the URL clients use to reach the HTTP API; derived from
	// Listen.HTTP if empty.
	PublicURL string `yaml:"public_url"`
	// SSHAddress is the host:port clients dial for SSH, as written into the
	// profile ssh_config; derived from Listen.SSH if empty.
	SSHAddress string `yaml:"ssh_address"`
	// DataDir holds generated CA keys, the spool and the default stores;
	// "/var/lib/postern" if empty.
	DataDir string `yaml:"data_dir"`
	// CA configures the three certificate authorities.
	CA CAs `yaml:"ca"`
	// Identity configures OIDC issuers and certificate lifetimes.
	Identity Identity `yaml:"identity"`
	// Storage is the recording store URL; file://<data_dir>/recordings if empty.
	Storage string `yaml:"storage"`
	// State is the state store URL; sqlite://<data_dir>/state.db if empty.
	State string `yaml:"state"`
	// Audit configures the audit log file export.
	Audit Audit `yaml:"audit"`
	// SSH configures connection hygiene on the SSH listener.
	SSH SSH `yaml:"ssh"`
	// HTTP configures the HTTP listener behind proxies.
	HTTP HTTP `yaml:"http"`
	// Recording configures the recorder.
	Recording Recording `yaml:"recording"`
	// Replicas configures heartbeats between replicas.
	Replicas Replicas `yaml:"replicas"`
	// Targets is the inventory of reachable hosts, services and commands.
	Targets []Target `yaml:"targets"`
	// Roles bind identities to targets. With no roles, everything is denied.
	Roles []Role `yaml:"roles"`
	// Approvals configures approval channels.
	Approvals Approvals `yaml:"approvals"`
	// Masking holds masking rules that apply to every role.
	Masking Masking `yaml:"masking"`
	// Search configures search across recordings.
	Search Search `yaml:"search"`
	// Dev reports whether the embedded development defaults are in force
	// (set by `postern serve --dev`, never from the file).
	Dev bool `yaml:"-"`
}

// SharedState reports whether the state store is one several replicas can
// share (PostgreSQL), as opposed to a SQLite file.
func (c *Config) SharedState() bool {
	return strings.HasPrefix(c.State, "postgres://") || strings.HasPrefix(c.State, "postgresql://")
}

// Listen holds listening addresses.
type Listen struct {
	// SSH is the SSH listener; ":2222" if empty.
	SSH string `yaml:"ssh"`
	// HTTP is the HTTP API listener; ":8080" if empty.
	HTTP string `yaml:"http"`
}

// CAs configures the user, host and target certificate authorities.
type CAs struct {
	// User signs certificates users present to postern.
	User CA `yaml:"user"`
	// Host signs postern's host certificate and per-target inner-hop host certificates.
	Host CA `yaml:"host"`
	// Target signs the short-lived certificates postern presents to targets.
	Target CA `yaml:"target"`
	// Audit is the audit signing key (ed25519 only): it signs audit
	// checkpoints and sealed recordings' digest records. Its generated key
	// file is <data_dir>/ca/audit_key.
	Audit CA `yaml:"audit"`
}

// CA configures one certificate authority.
type CA struct {
	// KeyFile is the private key path; <data_dir>/ca/<name>_ca if empty
	// (generated with mode 0600 on first start).
	KeyFile string `yaml:"key_file"`
	// Key is an inline PEM private key, usually "${env:…}" or "${file:…}";
	// it takes precedence over KeyFile.
	Key string `yaml:"key"`
	// Algorithm for a generated key: ed25519 (default), ecdsa-p256, rsa-3072.
	Algorithm string `yaml:"algorithm"`
	// Trusted lists extra public keys (authorized_keys format) this CA also
	// accepts, for rotation.
	Trusted []string `yaml:"trusted"`
}

// Identity configures OIDC issuers, SAML identity providers and certificate
// lifetimes.
type Identity struct {
	// Issuers that may vouch for users and agents.
	Issuers []Issuer `yaml:"issuers"`
	// CertTTL bounds certificate lifetimes.
	CertTTL CertTTL `yaml:"cert_ttl"`
	// RateLimit bounds certificate requests.
	RateLimit RateLimit `yaml:"rate_limit"`
	// Aliases say which identities of several issuers are one person; none
	// if empty (every issuer and subject is a person of its own).
	Aliases []Alias `yaml:"aliases"`
	// SAML configures SAML identity providers for browser logins.
	SAML SAML `yaml:"saml"`
	// SCIM lists the SCIM clients that provision users and groups; none if
	// empty.
	SCIM []SCIM `yaml:"scim"`
}

// Alias names one person known to several issuers. Its identities share one
// key (alias:<name>) for grants, approvals and the self-approval check.
type Alias struct {
	// Name is the person's name: letters, digits, '.', '_', '-' and '@'.
	Name string `yaml:"name"`
	// Identities are the person's identities, each "<issuer>:<subject>"
	// (the issuer's configured name and the token's sub claim).
	Identities []string `yaml:"identities"`
}

// Issuer profiles.
const (
	ProfileGitHubActions = "github-actions"
	ProfileKubernetes    = "kubernetes"
	// GitHubActionsIssuer is the issuer of GitHub Actions OIDC tokens.
	GitHubActionsIssuer = "https://token.actions.githubusercontent.com"
)

// ProfileClaims are the claims each issuer profile keeps in the identity.
var ProfileClaims = map[string][]string{
	ProfileGitHubActions: {"repository", "repository_owner", "ref", "ref_type", "job_workflow_ref", "workflow_ref",
		"environment", "actor", "event_name"},
	ProfileKubernetes: {"kubernetes.io/namespace", "kubernetes.io/serviceaccount"},
}

// Issuer is one trusted OIDC issuer.
type Issuer struct {
	// Name identifies the issuer in roles and audit events.
	Name string `yaml:"name"`
	// Profile presets a workload issuer: github-actions (GitHub Actions
	// OIDC tokens: issuer_url defaults to GitHub's, kind agent, and the
	// claims repository, repository_owner, ref, ref_type, job_workflow_ref,
	// workflow_ref, environment, actor and event_name are kept for role
	// matches) or kubernetes (projected service-account tokens: kind agent,
	// kubernetes.io/namespace and kubernetes.io/serviceaccount kept); none
	// if empty.
	Profile string `yaml:"profile"`
	// IssuerURL must equal the tokens' iss claim.
	IssuerURL string `yaml:"issuer_url"`
	// ClientID is the OAuth client for interactive login; also the expected
	// audience when Audience is empty.
	ClientID string `yaml:"client_id"`
	// ClientSecret for confidential clients; empty for public (PKCE) clients.
	ClientSecret string `yaml:"client_secret"`
	// Audience is the expected aud claim; ClientID if empty.
	Audience string `yaml:"audience"`
	// Kind is human (default) or agent.
	Kind string `yaml:"kind"`
	// UsernameClaim selects the username; "email" for humans, "sub" for agents if empty.
	UsernameClaim string `yaml:"username_claim"`
	// GroupsClaim selects groups; none if empty.
	GroupsClaim string `yaml:"groups_claim"`
	// Require lists claims that must be present with exactly these values.
	Require map[string]string `yaml:"require"`
	// Claims lists further token claims kept in the identity for roles'
	// match.claims (beside those of the profile); a name with '/' walks
	// nested objects ("kubernetes.io/namespace"), and an object found at the
	// end gives its "name". None if empty.
	Claims []string `yaml:"claims"`
	// Scopes for interactive login; "openid email profile" plus groups if empty.
	Scopes []string `yaml:"scopes"`
}

// CertTTL bounds certificate lifetimes.
type CertTTL struct {
	// Human is the lifetime for people; 8h if zero.
	Human Duration `yaml:"human"`
	// Agent is the lifetime for workloads; 15m if zero.
	Agent Duration `yaml:"agent"`
	// Max caps any requested lifetime; 24h if zero.
	Max Duration `yaml:"max"`
}

// RateLimit bounds certificate requests.
type RateLimit struct {
	// PerIdentity is requests per minute per identity; 30 if zero.
	PerIdentity int `yaml:"per_identity"`
	// PerSource is requests per minute per source address; 120 if zero.
	PerSource int `yaml:"per_source"`
}

// Audit configures the audit log's local file, its signed checkpoints,
// where they are anchored, and the continuous export.
type Audit struct {
	// File is the JSONL file every event is appended to; <data_dir>/audit.jsonl if empty.
	File string `yaml:"file"`
	// CheckpointInterval is how often a signed checkpoint of the chain head
	// is taken (when events were added since the last one); 10s if zero.
	CheckpointInterval Duration `yaml:"checkpoint_interval"`
	// Anchor says where checkpoints are written outside the state store.
	Anchor AuditAnchor `yaml:"anchor"`
	// Export streams audit events to S3 objects and an HTTP log sink.
	Export AuditExport `yaml:"export"`
}

// AuditAnchor says where signed checkpoints are written besides the state
// store.
type AuditAnchor struct {
	// Storage writes every checkpoint to the recording store under
	// audit/checkpoints/ (with the store's S3 Object Lock retention, if
	// set): "on" (the default when empty) or "off".
	Storage string `yaml:"storage"`
}

// AuditExport configures the continuous export of audit events.
type AuditExport struct {
	// S3 writes the events as JSONL objects, one per time window, each
	// ending with a signed checkpoint; off if its URL is empty.
	S3 AuditExportS3 `yaml:"s3"`
	// HTTP posts the events (and every checkpoint) to a log collector;
	// off if its URL is empty.
	HTTP AuditExportHTTP `yaml:"http"`
}

// AuditExportS3 writes audit events as JSONL objects.
type AuditExportS3 struct {
	// URL is the object store: s3://bucket/prefix?… (the settings of
	// storage, Object Lock included) or file:///dir; off if empty.
	URL string `yaml:"url"`
	// Window is how much time one object covers; 5m if zero.
	Window Duration `yaml:"window"`
}

// AuditExportHTTP posts audit events to a log collector.
type AuditExportHTTP struct {
	// URL receives the POSTs (for OTLP, the collector's /v1/logs; for HEC,
	// /services/collector/event); off if empty.
	URL string `yaml:"url"`
	// Format is otlp (OpenTelemetry logs, OTLP/HTTP JSON; the default) or
	// hec (Splunk HTTP Event Collector).
	Format string `yaml:"format"`
	// Token is sent as "Authorization: Bearer <token>" (otlp) or
	// "Authorization: Splunk <token>" (hec); none if empty.
	Token string `yaml:"token"`
	// Headers are added to every request.
	Headers map[string]string `yaml:"headers"`
	// BatchSize is the most events one request carries; 500 if zero.
	BatchSize int `yaml:"batch_size"`
	// Timeout bounds one request; 10s if zero.
	Timeout Duration `yaml:"timeout"`
}

// SSH configures connection hygiene.
type SSH struct {
	// HandshakeTimeout bounds the SSH handshake; 15s if zero.
	HandshakeTimeout Duration `yaml:"handshake_timeout"`
	// IdleTimeout closes connections without traffic; 30m if zero.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// MaxConnections caps concurrent connections; 10000 if zero.
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerSource caps concurrent connections from one IP; 200 if zero.
	MaxConnectionsPerSource int `yaml:"max_connections_per_source"`
	// Penalty refuses new connections from a source address that keeps
	// failing authentication.
	Penalty Penalty `yaml:"penalty"`
	// UpstreamReuse keeps the login to an ssh target open after an inner hop
	// ends, for the next inner hop of the same identity, login and target.
	UpstreamReuse UpstreamReuse `yaml:"upstream_reuse"`
	// TrustedProxies lists the TCP load balancers (addresses or CIDR
	// prefixes) in front of the SSH listener that send the PROXY protocol
	// (v1 or v2): a connection from one of them must begin with a PROXY
	// header, whose source address is then the client's for limits,
	// penalties, audit events and certificate source-address options. None
	// if empty.
	TrustedProxies []string `yaml:"trusted_proxies"`
}

// HTTP configures the HTTP listener.
type HTTP struct {
	// TrustedProxies lists the proxies (addresses or CIDR prefixes) in front
	// of the HTTP listener whose X-Forwarded-For hops are believed: the
	// client is the first hop from the right that is not one of them. None
	// if empty: the peer address is the client's.
	TrustedProxies []string `yaml:"trusted_proxies"`
}

// Penalty refuses, at accept and before any handshake work, new connections
// from a source address that failed authentication MaxFailures times within
// Window. The refusal lasts Duration, doubling for each repeat offence up to
// MaxDuration.
type Penalty struct {
	// MaxFailures is how many failed authentications from one address within
	// Window start a penalty; 20 if zero.
	MaxFailures int `yaml:"max_failures"`
	// Window is the period failures are counted over; 1m if zero.
	Window Duration `yaml:"window"`
	// Duration is how long a first penalty refuses the address; 30s if zero.
	Duration Duration `yaml:"duration"`
	// MaxDuration caps a repeated penalty; 10m if zero.
	MaxDuration Duration `yaml:"max_duration"`
	// Exempt lists addresses and CIDR prefixes that are never penalised (a
	// load balancer or NAT that many users share).
	Exempt []string `yaml:"exempt"`
	// Disabled turns penalties off.
	Disabled bool `yaml:"disabled"`
}

// UpstreamReuse keeps an authenticated login to an ssh target for reuse by
// a later inner hop of the same identity, role, login and target, so that a
// short command does not pay for a new SSH handshake with the target.
type UpstreamReuse struct {
	// Idle is how long an unused upstream login is kept; 30s if zero.
	Idle Duration `yaml:"idle"`
	// MaxAge bounds how long after its login an upstream connection is
	// handed out again; 10m if zero.
	MaxAge Duration `yaml:"max_age"`
	// Disabled turns reuse off: every inner hop logs in to the target afresh.
	Disabled bool `yaml:"disabled"`
}

// Recording configures the recorder.
type Recording struct {
	// Format is v2 (default) or v3.
	Format string `yaml:"format"`
	// BufferSize is the per-session bounded buffer in bytes; 1 MiB if zero.
	BufferSize int `yaml:"buffer_size"`
	// OnOverflow is "block" (default: block briefly, then fail closed) or "drop"
	// (drop with an audited gap).
	OnOverflow string `yaml:"on_overflow"`
	// FsyncInterval is how often the spool is fsynced; 1s if zero.
	FsyncInterval Duration `yaml:"fsync_interval"`
	// MinSpoolFree refuses new recorded sessions (fail closed) while the
	// spool's file system has less free space than this many bytes; never
	// if zero (the default).
	MinSpoolFree int64 `yaml:"min_spool_free"`
	// CheckpointInterval is how often, with a PostgreSQL state store, each
	// recording's new bytes are copied into the state store, so that
	// another replica can complete the recording if this one dies: a killed
	// replica loses at most this much of a session (plus the time one
	// checkpoint takes). 2s if zero; unused with SQLite.
	CheckpointInterval Duration `yaml:"checkpoint_interval"`
}

// Replicas configures how replicas sharing a PostgreSQL state store watch
// each other.
type Replicas struct {
	// Heartbeat is how often a replica records that it is alive; 2s if zero.
	Heartbeat Duration `yaml:"heartbeat"`
	// DeadAfter is how long a replica may go without a heartbeat before
	// another one takes it for dead and completes the recordings it left
	// running; 20s if zero. At least three heartbeats.
	DeadAfter Duration `yaml:"dead_after"`
}

// Target is one entry of the inventory.
type Target struct {
	// Name is what users type (ssh -J bastion NAME).
	Name string `yaml:"name"`
	// Aliases are other names (and addresses) that select this target.
	Aliases []string `yaml:"aliases"`
	// Kind is ssh, tcp or command.
	Kind string `yaml:"kind"`
	// Address is host:port for ssh and tcp targets.
	Address string `yaml:"address"`
	// HostKey pins an ssh target's host key (authorized_keys format).
	HostKey string `yaml:"host_key"`
	// KnownHosts is a known_hosts file to verify an ssh target's host key.
	KnownHosts string `yaml:"known_hosts"`
	// HostCA trusts host certificates from this CA key for an ssh target.
	HostCA string `yaml:"host_ca"`
	// Passthrough forwards an ssh target's bytes without terminating the inner
	// hop: nothing is recorded and the target must trust the user CA.
	Passthrough bool `yaml:"passthrough"`
	// Protocol is an application protocol of a tcp target (postgres).
	Protocol string `yaml:"protocol"`
	// Command is the program (and arguments) a command target runs for an
	// interactive session.
	Command []string `yaml:"command"`
	// Exec is the program (and arguments) for an exec request; the exec
	// string is appended as one final argument. Command if empty.
	Exec []string `yaml:"exec"`
	// Subsystems maps SSH subsystem names to the program a command target
	// runs for them (no pty, in the same directory and environment as its
	// command), e.g. {sftp: [/usr/lib/openssh/sftp-server]} so that sftp and
	// scp (whose default mode is SFTP) work; a subsystem not listed is
	// refused with a "postern:" line. None if empty.
	Subsystems map[string][]string `yaml:"subsystems"`
	// Env is injected into a command target's environment (secrets allowed).
	Env map[string]string `yaml:"env"`
	// RunAs is the OS user a command target runs as; postern's own user if empty.
	RunAs string `yaml:"run_as"`
	// Dir is a command target's working directory; a fresh temporary directory if empty.
	Dir string `yaml:"dir"`
	// PrivateKey is a stored upstream credential for an ssh target (PEM), used
	// instead of a target-CA certificate.
	PrivateKey string `yaml:"private_key"`
	// DatabaseUser is the upstream user of a postgres tcp target; postern
	// authenticates as it, so clients need no database password. The
	// client's startup user is kept if empty.
	DatabaseUser string `yaml:"database_user"`
	// DatabasePassword is DatabaseUser's password (secrets allowed); with it
	// postern answers the server's password challenge itself.
	DatabasePassword string `yaml:"database_password"`
	// Labels select the target in roles.
	Labels map[string]string `yaml:"labels"`
}

// Target kinds.
const (
	KindSSH     = "ssh"
	KindTCP     = "tcp"
	KindCommand = "command"
)

// Role binds identities to targets and rights.
type Role struct {
	// Name identifies the role.
	Name string `yaml:"name"`
	// Match selects the identities the role applies to.
	Match RoleMatch `yaml:"match"`
	// Targets selects targets by name glob or labels.
	Targets []TargetSelector `yaml:"targets"`
	// Logins the role may use on its targets.
	Logins []string `yaml:"logins"`
	// Ports limits tcp ports; any port of a tcp target, 22 of an ssh target if empty.
	Ports []int `yaml:"ports"`
	// Record is required, optional or off; required if empty.
	Record string `yaml:"record"`
	// Interactive is allow (default) or deny (exec only).
	Interactive string `yaml:"interactive"`
	// Forwarding rights.
	Forwarding Forwarding `yaml:"forwarding"`
	// MaxSession caps a session's length; the certificate's expiry if zero.
	MaxSession Duration `yaml:"max_session"`
	// Rules flag commands: first match wins.
	Rules []Rule `yaml:"rules"`
	// Permissions grants API rights: auditor, approver, moderator, admin.
	Permissions []string `yaml:"permissions"`
	// Masking holds masking rules for this role's sessions, added to the
	// global ones.
	Masking Masking `yaml:"masking"`
	// Moderation holds a session until a moderator watches it.
	Moderation Moderation `yaml:"moderation"`
}

// Moderation makes a role's sessions wait, before their command or shell
// runs, until a moderator joins them read-only (postern watch, the web
// UI's live view).
type Moderation struct {
	// Required turns it on.
	Required bool `yaml:"required"`
	// Timeout ends a session no moderator joined within it; 5m if zero.
	Timeout Duration `yaml:"timeout"`
	// Moderators are the groups, or people by identity key
	// ("<issuer>:<subject>" or "alias:<name>"), whose watching counts; any
	// holder of the moderator or admin permission if empty. A username
	// names nobody.
	Moderators []string `yaml:"moderators"`
}

// Masking holds masking rules.
type Masking struct {
	// Rules are applied together; every match is replaced.
	Rules []MaskRule `yaml:"rules"`
}

// MaskRule masks matches of a detector or pattern, or values of columns.
type MaskRule struct {
	// Name labels the replacement ([MASKED:name]); the detector's name if empty.
	Name string `yaml:"name"`
	// Detector is a built-in detector: aws_key, aws_secret, private_key, jwt,
	// bearer, github_token, slack_token, url_password, email, credit_card,
	// iban, phone.
	Detector string `yaml:"detector"`
	// Pattern is a custom regular expression (alternative to Detector).
	Pattern string `yaml:"pattern"`
	// Columns are globs over database result column names whose values are
	// masked whole (postgres targets).
	Columns []string `yaml:"columns"`
	// AppliesTo lists recording (what is stored) and/or stream (what the
	// client receives); both if empty.
	AppliesTo []string `yaml:"applies_to"`
}

// Where masking rules apply.
const (
	MaskRecording = "recording"
	MaskStream    = "stream"
)

// RoleMatch selects identities. Every non-empty list must match.
type RoleMatch struct {
	// Issuers lists issuer names.
	Issuers []string `yaml:"issuers"`
	// Groups lists groups; any one suffices.
	Groups []string `yaml:"groups"`
	// Users lists usernames (globs allowed).
	Users []string `yaml:"users"`
	// Claims must all match the identity's kept claims (see
	// identity.issuers[].profile and .claims); values are globs.
	Claims map[string]string `yaml:"claims"`
}

// TargetSelector selects targets by a name glob or by labels.
type TargetSelector struct {
	// Name is a glob over target names.
	Name string `yaml:"name"`
	// Labels must all match.
	Labels map[string]string `yaml:"labels"`
}

// UnmarshalYAML accepts a plain string (a name glob) or a mapping.
func (s *TargetSelector) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		s.Name = n.Value
		return nil
	}
	type plain TargetSelector
	return n.Decode((*plain)(s))
}

// Forwarding lists forwarding rights.
type Forwarding struct {
	// Local allows -L / -J to permitted targets.
	Local bool `yaml:"local"`
	// Remote allows -R (tcpip-forward).
	Remote bool `yaml:"remote"`
	// Agent allows agent forwarding on the inner hop.
	Agent bool `yaml:"agent"`
	// X11 allows X11 forwarding on the inner hop.
	X11 bool `yaml:"x11"`
	// Allow lists destinations outside the inventory ("CIDR:port" or
	// "CIDR:lo-hi") that -L may reach; none if empty.
	Allow []string `yaml:"allow"`
	// TargetAllow lists the destinations, as the role's ssh targets see
	// them, that forwards through those targets may use: -L and -W connect
	// to them (with Local), -R listens on them (with Remote). Entries are
	// "CIDR:port", "CIDR:lo-hi" or "name:port" (a host name the target
	// resolves, matched exactly); none if empty, so no forward through a
	// target is allowed. Loopback, link-local, metadata and, on a target
	// that is postern's own host, postern's listeners are refused unless an
	// entry names them (the listeners: always).
	TargetAllow []string `yaml:"target_allow"`
}

// Rule flags commands.
type Rule struct {
	// Match is a regular expression over the command line.
	Match string `yaml:"match"`
	// Glob is a shell glob over the command line (alternative to Match).
	Glob string `yaml:"glob"`
	// Action is allow, deny or approve.
	Action string `yaml:"action"`
	// Approvers are groups, or people by identity key ("<issuer>:<subject>"
	// or "alias:<name>"), that may approve.
	Approvers []string `yaml:"approvers"`
	// Approvals is the number of approvals required; 1 if zero.
	Approvals int `yaml:"approvals"`
	// Timeout before a pending request is denied; 5m if zero.
	Timeout Duration `yaml:"timeout"`
}

// Approvals configures approval channels.
type Approvals struct {
	// Slack posts requests to an incoming webhook and takes decisions from
	// interactivity callbacks.
	Slack Slack `yaml:"slack"`
	// Webhooks receive every request as signed JSON.
	Webhooks []Webhook `yaml:"webhooks"`
	// RateLimit bounds the approval requests one identity makes for one
	// target.
	RateLimit ApprovalRateLimit `yaml:"rate_limit"`
	// Groups lists the groups of approvers known only by their identity key
	// (Slack users: "<issuer>:<subject>" or "alias:<name>"), so they can
	// decide rules whose approvers are groups; API and CLI approvers take
	// their groups from their login instead. None if empty.
	Groups map[string][]string `yaml:"groups"`
}

// ApprovalRateLimit bounds approval requests per identity and target, so
// that a loop of held commands cannot flood the approvers' channels.
type ApprovalRateLimit struct {
	// PerMinute is how many requests one identity may make for one target
	// per minute, after a burst of a sixth of it (at least 5); 10 if zero.
	PerMinute int `yaml:"per_minute"`
	// Disabled turns the limit off.
	Disabled bool `yaml:"disabled"`
}

// Slack configures the Slack approval channel.
type Slack struct {
	// WebhookURL is the incoming webhook.
	WebhookURL string `yaml:"webhook_url"`
	// SigningSecret verifies interactivity callbacks.
	SigningSecret string `yaml:"signing_secret"`
	// Approvers maps Slack user ids to postern people, by identity key:
	// "<issuer>:<subject>" or "alias:<name>".
	Approvers map[string]string `yaml:"approvers"`
}

// Webhook is a generic approval webhook.
type Webhook struct {
	// URL receives POSTed JSON.
	URL string `yaml:"url"`
	// Secret keys the HMAC-SHA256 signature header.
	Secret string `yaml:"secret"`
}

// Duration is a time.Duration written as "15m" in YAML.
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("%q is not a duration (write e.g. 90s, 15m, 8h)", n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }
