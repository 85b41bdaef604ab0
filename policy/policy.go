package policy

import (
	"fmt"
	"net"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
)

// Record values.
const (
	RecordRequired = "required"
	RecordOptional = "optional"
	RecordOff      = "off"
)

// Interactive values.
const (
	InteractiveAllow = "allow"
	InteractiveDeny  = "deny"
)

// Permission names a role may grant on the HTTP API.
const (
	PermAuditor  = "auditor"
	PermApprover = "approver"
	PermAdmin    = "admin"
	// PermModerator may watch live sessions (as a moderator, for roles
	// that require one) and terminate them.
	PermModerator = "moderator"
)

// Decision codes. They are stable and appear in audit events.
const (
	CodeAllowed        = "allowed"
	CodeNoRole         = "no_role" // no role matches the identity
	CodeTargetNotAllow = "target_not_allowed"
	CodeLoginNotAllow  = "login_not_allowed"
	CodePortNotAllow   = "port_not_allowed"
	CodeNoForwarding   = "forwarding_not_allowed"
	CodeNotInAllowList = "destination_not_allowed"
)

// Target is one inventory entry with its parsed fields.
type Target struct {
	config.Target

	// Host is the host part of Address (empty for command targets).
	Host string
	// Port is the resolved port: Address's port, 22 for an ssh target without
	// one, 0 for command targets.
	Port int
	// HostKeys are the pinned host keys (from HostKey), if any.
	HostKeys []ssh.PublicKey
	// HostCAKey is the parsed HostCA, if any.
	HostCAKey ssh.PublicKey
}

// Dial returns the host:port to dial for port (a port the policy allowed).
// For an ssh target it is always the target's own address.
func (t *Target) Dial(port int) string {
	if t.Kind == config.KindSSH || port == 0 {
		port = t.Port
	}
	return net.JoinHostPort(t.Host, strconv.Itoa(port))
}

// Decision is the outcome of an authorization.
type Decision struct {
	// Allow reports whether the access is allowed.
	Allow bool
	// Reason is the user-visible text of a denial. It never says whether the
	// target exists.
	Reason string
	// Code is a stable machine code for audit events (Code* constants).
	Code string
	// Role names the matching roles that allowed the access, comma-separated.
	Role string
	// Record is required, optional or off.
	Record string
	// Interactive reports whether interactive (pty/shell) sessions are allowed.
	Interactive bool
	// Forwarding is the union of the matching roles' forwarding rights.
	Forwarding config.Forwarding
	// Rules are the command rules of the matching roles, in role order.
	Rules []config.Rule
	// MaxSession caps a session's length; zero means the certificate's expiry.
	MaxSession time.Duration
	// Prefix is, for AllowForward, the most specific forwarding.allow prefix
	// that covered the destination.
	Prefix netip.Prefix
	// Moderation holds the session until a moderator joins: required only
	// when every allowing role requires it (the most permissive wins), with
	// the longest timeout and every role's moderators.
	Moderation Moderation
}

// Moderation is the moderation a decision requires.
type Moderation struct {
	// Required reports whether a moderator must join before the session runs.
	Required bool
	// Timeout is how long the session waits for one.
	Timeout time.Duration
	// Moderators are the groups or identity keys whose watching counts; any
	// holder of the moderator or admin permission if empty.
	Moderators []string
}

// DefaultModerationTimeout is how long a moderated session waits for a
// moderator unless its role says otherwise.
const DefaultModerationTimeout = 5 * time.Minute

// Access describes one target an identity may reach, for `ssh bastion`.
type Access struct {
	// Name is the target's name.
	Name string `json:"name"`
	// Kind is ssh, tcp or command.
	Kind string `json:"kind"`
	// Logins are the logins usable on an ssh or command target.
	Logins []string `json:"logins,omitempty"`
	// Ports are the ports usable on the target (none for command targets).
	Ports []int `json:"ports,omitempty"`
	// Record is required, optional or off.
	Record string `json:"record"`
	// Passthrough reports whether the target is an ssh target whose bytes are
	// forwarded without terminating the inner hop (never recorded).
	Passthrough bool `json:"passthrough,omitempty"`
	// Forward reports whether -L forwarding to a tcp target is allowed.
	Forward bool `json:"forward,omitempty"`
	// Interactive reports whether shells (a pty) are allowed; exec only if
	// false. Always false for tcp targets.
	Interactive bool `json:"interactive"`
	// Rules are the command rules of the granting roles, in the order they
	// apply (first match wins): which commands run, are held for approval
	// or are denied.
	Rules []RuleInfo `json:"rules,omitempty"`
	// Moderated reports whether sessions wait for a moderator to join
	// before they run (every granting role requires it).
	Moderated bool `json:"moderated,omitempty"`
	// Roles names the roles that grant the access.
	Roles []string `json:"roles"`
}

// RuleInfo is one command rule as `ssh bastion targets --json` shows it.
type RuleInfo struct {
	// Match is the rule's regular expression; Glob its shell glob.
	Match string `json:"match,omitempty"`
	Glob  string `json:"glob,omitempty"`
	// Action is allow, deny or approve.
	Action string `json:"action"`
	// Approvers are who may approve (approve rules).
	Approvers []string `json:"approvers,omitempty"`
}

// DenyMessage is the user-visible text of every denial of name for id. It is
// the same for targets that do not exist and targets that are not allowed.
func DenyMessage(name string, id certs.Identity) string {
	return fmt.Sprintf("postern: %s: not allowed for %s", Printable(name), Printable(id.Username))
}

// Printable returns s cut to 128 bytes with control characters replaced, safe
// to echo back to a terminal.
func Printable(s string) string {
	if len(s) > 128 {
		s = s[:128]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}

type allowEntry struct {
	prefix netip.Prefix
	lo, hi int
}

type role struct {
	cfg     config.Role
	allow   []allowEntry
	via     []viaEntry // forwarding.target_allow
	targets map[*Target]bool
}

// viaEntry is one forwarding.target_allow entry: a prefix or a host name,
// and a port range.
type viaEntry struct {
	prefix netip.Prefix // valid for an address entry
	name   string       // set for a name entry
	lo, hi int
}

// Engine evaluates roles against identities. It is immutable after New.
type Engine struct {
	roles   []*role
	targets []*Target
	byName  map[string]*Target // name, alias, "host:port" address
	byHost  map[string][]*Target
	grants  GrantsFunc // just-in-time grants (grants.go); none if nil
	groups  GroupsFunc // provisioned groups (directory.go); the login's own if nil
}

// New validates the roles and targets of cfg and builds an Engine. Errors
// name the key path (e.g. roles[1].targets[0]: ...) and the fix. cfg is not
// retained or modified.
func New(cfg *config.Config) (*Engine, error) {
	e := &Engine{byName: map[string]*Target{}, byHost: map[string][]*Target{}}
	for i, tc := range cfg.Targets {
		t, err := parseTarget(tc)
		if err != nil {
			return nil, fmt.Errorf("targets[%d]: %w", i, err)
		}
		keys := append([]string{t.Name}, t.Aliases...)
		if t.Host != "" {
			keys = append(keys, net.JoinHostPort(t.Host, strconv.Itoa(t.Port)))
		}
		for _, k := range keys {
			k = strings.ToLower(k)
			if o, dup := e.byName[k]; dup {
				return nil, fmt.Errorf("targets[%d]: %q is also used by target %q; names, aliases and addresses must be unique", i, k, o.Name)
			}
			e.byName[k] = t
		}
		if t.Host != "" {
			h := strings.ToLower(t.Host)
			e.byHost[h] = append(e.byHost[h], t)
		}
		e.targets = append(e.targets, t)
	}
	names := map[string]bool{}
	for i, rc := range cfg.Roles {
		r, err := e.parseRole(rc)
		if err != nil {
			return nil, fmt.Errorf("roles[%d]%s", i, err)
		}
		if names[rc.Name] {
			return nil, fmt.Errorf("roles[%d].name: %q is used twice; role names must be unique", i, rc.Name)
		}
		names[rc.Name] = true
		e.roles = append(e.roles, r)
	}
	return e, nil
}

func parseTarget(tc config.Target) (*Target, error) {
	t := &Target{Target: tc}
	// Deep-copy the slices and maps we keep, so the caller's config can change.
	t.Aliases = slices.Clone(tc.Aliases)
	t.Command = slices.Clone(tc.Command)
	t.Env = cloneMap(tc.Env)
	t.Labels = cloneMap(tc.Labels)
	if tc.Name == "" {
		return nil, fmt.Errorf("name: missing; every target needs a name")
	}
	if strings.ContainsAny(tc.Name, "*?[]\\ \t\n/@:") {
		return nil, fmt.Errorf("name: %q contains glob, space or address characters; use letters, digits, '-', '_' and '.'", tc.Name)
	}
	switch tc.Kind {
	case config.KindSSH, config.KindTCP:
		if tc.Address == "" {
			return nil, fmt.Errorf("address: missing; write host:port")
		}
		host, port, err := net.SplitHostPort(tc.Address)
		if err != nil {
			if tc.Kind != config.KindSSH {
				return nil, fmt.Errorf("address: %q is not host:port", tc.Address)
			}
			host, port = strings.Trim(tc.Address, "[]"), "22"
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 || host == "" {
			return nil, fmt.Errorf("address: %q is not host:port with a port in 1-65535", tc.Address)
		}
		t.Host, t.Port = host, p
		if len(tc.Command) > 0 {
			return nil, fmt.Errorf("command: only command targets run a command")
		}
	case config.KindCommand:
		if len(tc.Command) == 0 || tc.Command[0] == "" {
			return nil, fmt.Errorf("command: missing; list the program and its arguments")
		}
		if tc.Address != "" {
			return nil, fmt.Errorf("address: a command target has no address; remove it")
		}
	case "":
		return nil, fmt.Errorf("kind: missing; write ssh, tcp or command")
	default:
		return nil, fmt.Errorf("kind: %q is not ssh, tcp or command", tc.Kind)
	}
	if tc.Passthrough && tc.Kind != config.KindSSH {
		return nil, fmt.Errorf("passthrough: only ssh targets can be passthrough")
	}
	if tc.HostKey != "" {
		rest := []byte(tc.HostKey)
		for len(strings.TrimSpace(string(rest))) > 0 {
			k, _, _, r, err := ssh.ParseAuthorizedKey(rest)
			if err != nil {
				return nil, fmt.Errorf("host_key: not an authorized_keys line (ssh-ed25519 AAAA…)")
			}
			t.HostKeys = append(t.HostKeys, k)
			rest = r
		}
	}
	if tc.HostCA != "" {
		k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(tc.HostCA))
		if err != nil {
			return nil, fmt.Errorf("host_ca: not an authorized_keys line (ssh-ed25519 AAAA…)")
		}
		t.HostCAKey = k
	}
	return t, nil
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// parseRole returns errors starting with ".key: " or ": " for the caller to
// prefix with roles[i].
func (e *Engine) parseRole(rc config.Role) (*role, error) {
	r := &role{targets: map[*Target]bool{}}
	r.cfg = rc
	r.cfg.Logins = slices.Clone(rc.Logins)
	r.cfg.Ports = slices.Clone(rc.Ports)
	r.cfg.Rules = slices.Clone(rc.Rules)
	r.cfg.Permissions = slices.Clone(rc.Permissions)
	r.cfg.Forwarding.Allow = slices.Clone(rc.Forwarding.Allow)
	r.cfg.Match.Issuers = slices.Clone(rc.Match.Issuers)
	r.cfg.Match.Groups = slices.Clone(rc.Match.Groups)
	r.cfg.Match.Users = slices.Clone(rc.Match.Users)
	r.cfg.Match.Claims = cloneMap(rc.Match.Claims)
	r.cfg.Moderation.Moderators = slices.Clone(rc.Moderation.Moderators)
	if rc.Name == "" {
		return nil, fmt.Errorf(".name: missing; every role needs a name")
	}
	m := rc.Match
	if len(m.Issuers)+len(m.Groups)+len(m.Users)+len(m.Claims) == 0 {
		return nil, fmt.Errorf(".match: empty; list issuers, groups, users or claims (users: [\"*\"] matches everyone)")
	}
	for k, pat := range m.Claims {
		if _, err := path.Match(pat, ""); err != nil || k == "" {
			return nil, fmt.Errorf(".match.claims.%s: %q is not a valid glob", k, pat)
		}
	}
	for j, u := range m.Users {
		if _, err := path.Match(u, ""); err != nil {
			return nil, fmt.Errorf(".match.users[%d]: %q is not a valid glob", j, u)
		}
	}
	for j, sel := range rc.Targets {
		switch {
		case sel.Name != "" && len(sel.Labels) > 0:
			return nil, fmt.Errorf(".targets[%d]: give a name glob or labels, not both", j)
		case sel.Name != "":
			if _, err := path.Match(sel.Name, ""); err != nil {
				return nil, fmt.Errorf(".targets[%d]: %q is not a valid glob", j, sel.Name)
			}
		case len(sel.Labels) == 0:
			return nil, fmt.Errorf(".targets[%d]: empty selector; write a name glob or {labels: {k: v}}", j)
		}
		for _, t := range e.targets {
			if selects(sel, t) {
				r.targets[t] = true
			}
		}
	}
	for j, l := range rc.Logins {
		if l == "" || strings.ContainsAny(l, " \t\n:@/*?") {
			return nil, fmt.Errorf(".logins[%d]: %q is not a login name", j, l)
		}
	}
	for j, p := range rc.Ports {
		if p < 1 || p > 65535 {
			return nil, fmt.Errorf(".ports[%d]: %d is not a port in 1-65535", j, p)
		}
	}
	switch rc.Record {
	case "", RecordRequired, RecordOptional, RecordOff:
	default:
		return nil, fmt.Errorf(".record: %q is not required, optional or off", rc.Record)
	}
	switch rc.Interactive {
	case "", InteractiveAllow, InteractiveDeny:
	default:
		return nil, fmt.Errorf(".interactive: %q is not allow or deny", rc.Interactive)
	}
	if rc.MaxSession < 0 {
		return nil, fmt.Errorf(".max_session: must not be negative")
	}
	for j, a := range rc.Forwarding.Allow {
		ae, err := parseAllow(a)
		if err != nil {
			return nil, fmt.Errorf(".forwarding.allow[%d]: %w", j, err)
		}
		r.allow = append(r.allow, ae)
	}
	r.cfg.Forwarding.TargetAllow = slices.Clone(rc.Forwarding.TargetAllow)
	for j, a := range rc.Forwarding.TargetAllow {
		p, name, lo, hi, err := config.ParseTargetAllow(a)
		if err != nil {
			return nil, fmt.Errorf(".forwarding.target_allow[%d]: %w", j, err)
		}
		r.via = append(r.via, viaEntry{prefix: p, name: name, lo: lo, hi: hi})
	}
	for j, rule := range rc.Rules {
		switch {
		case rule.Match != "" && rule.Glob != "":
			return nil, fmt.Errorf(".rules[%d]: give match or glob, not both", j)
		case rule.Match != "":
			if _, err := regexp.Compile(rule.Match); err != nil {
				return nil, fmt.Errorf(".rules[%d].match: not a regular expression: %w", j, err)
			}
		case rule.Glob != "":
			if _, err := path.Match(rule.Glob, ""); err != nil {
				return nil, fmt.Errorf(".rules[%d].glob: %q is not a valid glob", j, rule.Glob)
			}
		default:
			return nil, fmt.Errorf(".rules[%d]: missing match or glob", j)
		}
		switch rule.Action {
		case "allow", "deny":
		case "approve":
			if len(rule.Approvers) == 0 {
				return nil, fmt.Errorf(".rules[%d].approvers: an approve rule needs approvers", j)
			}
		default:
			return nil, fmt.Errorf(".rules[%d].action: %q is not allow, deny or approve", j, rule.Action)
		}
	}
	for j, p := range rc.Permissions {
		switch p {
		case PermAuditor, PermApprover, PermAdmin, PermModerator:
		default:
			return nil, fmt.Errorf(".permissions[%d]: %q is not auditor, approver, moderator or admin", j, p)
		}
	}
	return r, nil
}

// parseAllow parses "CIDR:port", "CIDR:lo-hi" or "CIDR:*"; an IPv6 CIDR may be
// bracketed ("[fd00::/8]:443"). A bare address is a /32 or /128.
func parseAllow(s string) (allowEntry, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return allowEntry{}, fmt.Errorf("%q lacks a port; write CIDR:port or CIDR:lo-hi", s)
	}
	cidr, ports := strings.Trim(s[:i], "[]"), s[i+1:]
	var ae allowEntry
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		a, aerr := netip.ParseAddr(cidr)
		if aerr != nil {
			return allowEntry{}, fmt.Errorf("%q: %q is not a CIDR", s, cidr)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	ae.prefix = p.Masked()
	if ports == "*" {
		ae.lo, ae.hi = 1, 65535
		return ae, nil
	}
	lo, hi, isRange := strings.Cut(ports, "-")
	if !isRange {
		hi = lo
	}
	ae.lo, err = strconv.Atoi(lo)
	if err == nil {
		ae.hi, err = strconv.Atoi(hi)
	}
	if err != nil || ae.lo < 1 || ae.hi > 65535 || ae.lo > ae.hi {
		return allowEntry{}, fmt.Errorf("%q: %q is not a port or lo-hi range in 1-65535", s, ports)
	}
	return ae, nil
}

func selects(sel config.TargetSelector, t *Target) bool {
	if sel.Name != "" {
		ok, _ := path.Match(sel.Name, t.Name)
		return ok
	}
	if len(sel.Labels) == 0 {
		return false
	}
	for k, v := range sel.Labels {
		if tv, ok := t.Labels[k]; !ok || tv != v {
			return false
		}
	}
	return true
}

func (r *role) matches(id certs.Identity) bool {
	m := r.cfg.Match
	if len(m.Issuers) > 0 && !slices.Contains(m.Issuers, id.Issuer) {
		return false
	}
	if len(m.Groups) > 0 && !id.InGroup(m.Groups...) {
		return false
	}
	for k, pat := range m.Claims {
		v, ok := id.Claims[k]
		if !ok {
			return false
		}
		if match, _ := path.Match(pat, v); !match {
			return false
		}
	}
	if len(m.Users) > 0 {
		ok := false
		for _, u := range m.Users {
			if match, _ := path.Match(u, id.Username); match {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return id.Username != ""
}

// ports returns the ports r may use on t.
func (r *role) ports(t *Target) []int {
	switch t.Kind {
	case config.KindSSH:
		if t.Port == 22 {
			return []int{22}
		}
		return []int{t.Port, 22}
	case config.KindTCP:
		if len(r.cfg.Ports) > 0 {
			return r.cfg.Ports
		}
		return []int{t.Port}
	}
	return nil
}

func (r *role) record() string {
	if r.cfg.Record == "" {
		return RecordRequired
	}
	return r.cfg.Record
}

var recordRank = map[string]int{RecordRequired: 0, RecordOptional: 1, RecordOff: 2}

// Lookup finds the target named host: by name, alias or address, where host
// is a name or "host:port". An exact "host:port" address wins; otherwise a
// name or alias finds its target whatever the port (Authorize checks it), and
// an address host finds a target only if one target alone has that host.
func (e *Engine) Lookup(host string) (*Target, bool) {
	host = strings.ToLower(host)
	if t, ok := e.byName[host]; ok {
		return t, true
	}
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = strings.Trim(host, "[]")
		if ts := e.byHost[h]; len(ts) == 1 {
			return ts[0], true
		}
		return nil, false
	}
	if t, ok := e.byName[h]; ok {
		return t, true
	}
	if ts := e.byHost[h]; len(ts) == 1 {
		return ts[0], true
	}
	return nil, false
}

// Targets returns the inventory in configuration order.
func (e *Engine) Targets() []*Target { return slices.Clone(e.targets) }

func (e *Engine) matching(id certs.Identity) []*role {
	id = e.withDirectoryGroups(id)
	var rs []*role
	for _, r := range e.roles {
		if r.matches(id) {
			rs = append(rs, r)
		}
	}
	return rs
}

// Authorize decides whether id may reach target as login on port. An empty
// login means "some login": for ssh and command targets the decision then
// only requires that a matching role has at least one login (the inner hop
// checks the actual login). tcp targets ignore login. A nil target is denied
// with the same message as a forbidden one.
func (e *Engine) Authorize(id certs.Identity, target *Target, login string, port int) Decision {
	d, ok := e.authorize(id, target, login, port)
	if !ok && e.grants != nil {
		if gd, ok := e.authorizeGrant(id, target, login, port, time.Now()); ok {
			return gd
		}
	}
	return d
}

// authorize is Authorize by roles alone.
func (e *Engine) authorize(id certs.Identity, target *Target, login string, port int) (Decision, bool) {
	name := ""
	if target != nil {
		name = target.Name
	}
	deny := func(code string) (Decision, bool) {
		return Decision{Reason: DenyMessage(name, id), Code: code, Record: RecordRequired}, false
	}
	rs := e.matching(id)
	if len(rs) == 0 {
		return deny(CodeNoRole)
	}
	if target == nil {
		return deny(CodeTargetNotAllow)
	}
	code := CodeTargetNotAllow
	var ok []*role
	for _, r := range rs {
		if !r.targets[target] {
			continue
		}
		if target.Kind != config.KindTCP {
			if len(r.cfg.Logins) == 0 || (login != "" && !slices.Contains(r.cfg.Logins, login)) {
				code = CodeLoginNotAllow
				continue
			}
		}
		if target.Kind != config.KindCommand && !slices.Contains(r.ports(target), port) {
			if code != CodeLoginNotAllow {
				code = CodePortNotAllow
			}
			continue
		}
		ok = append(ok, r)
	}
	if len(ok) == 0 {
		return deny(code)
	}
	return merge(ok), true
}

// merge combines the decisions of several allowing roles, most permissive
// first (see the package documentation).
func merge(rs []*role) Decision {
	d := Decision{Allow: true, Code: CodeAllowed, Record: RecordRequired}
	var names []string
	unbounded := false
	d.Moderation.Required = len(rs) > 0
	for _, r := range rs {
		m := r.cfg.Moderation
		d.Moderation.Required = d.Moderation.Required && m.Required
		if m.Required {
			d.Moderation.Timeout = max(d.Moderation.Timeout, orDefault(m.Timeout.D(), DefaultModerationTimeout))
			for _, mod := range m.Moderators {
				if !slices.Contains(d.Moderation.Moderators, mod) {
					d.Moderation.Moderators = append(d.Moderation.Moderators, mod)
				}
			}
		}
		names = append(names, r.cfg.Name)
		if rec := r.record(); recordRank[rec] > recordRank[d.Record] {
			d.Record = rec
		}
		if r.cfg.Interactive != InteractiveDeny {
			d.Interactive = true
		}
		f := r.cfg.Forwarding
		d.Forwarding.Local = d.Forwarding.Local || f.Local
		d.Forwarding.Remote = d.Forwarding.Remote || f.Remote
		d.Forwarding.Agent = d.Forwarding.Agent || f.Agent
		d.Forwarding.X11 = d.Forwarding.X11 || f.X11
		for _, a := range f.Allow {
			if !slices.Contains(d.Forwarding.Allow, a) {
				d.Forwarding.Allow = append(d.Forwarding.Allow, a)
			}
		}
		d.Rules = append(d.Rules, r.cfg.Rules...)
		ms := r.cfg.MaxSession.D()
		if ms == 0 {
			unbounded = true
		} else if ms > d.MaxSession {
			d.MaxSession = ms
		}
	}
	if unbounded {
		d.MaxSession = 0
	}
	if !d.Moderation.Required {
		d.Moderation = Moderation{}
	}
	d.Role = strings.Join(names, ",")
	return d
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// AllowForward decides whether id may forward (-L) to ip:port, a destination
// outside the inventory. It requires a matching role with forwarding.local
// whose forwarding.allow covers ip and port; Decision.Prefix is the most
// specific covering prefix across all such roles. The caller applies its own
// refusals (loopback, link-local, ...) on top.
func (e *Engine) AllowForward(id certs.Identity, ip netip.Addr, port int) Decision {
	ip = ip.Unmap().WithZone("")
	name := netip.AddrPortFrom(ip, uint16(port)).String()
	rs := e.matching(id)
	if len(rs) == 0 {
		return Decision{Reason: DenyMessage(name, id), Code: CodeNoRole, Record: RecordRequired}
	}
	var ok []*role
	best := netip.Prefix{}
	code := CodeNotInAllowList
	for _, r := range rs {
		covered := false
		for _, a := range r.allow {
			if a.prefix.Contains(ip) && port >= a.lo && port <= a.hi {
				covered = true
				if !best.IsValid() || a.prefix.Bits() > best.Bits() {
					best = a.prefix
				}
			}
		}
		if !covered {
			continue
		}
		if !r.cfg.Forwarding.Local {
			code = CodeNoForwarding
			continue
		}
		ok = append(ok, r)
	}
	if len(ok) == 0 {
		return Decision{Reason: DenyMessage(name, id), Code: code, Record: RecordRequired}
	}
	d := merge(ok)
	d.Prefix = best
	return d
}

// Forward directions through a target (AllowViaTarget).
const (
	// ViaLocal is -L or -W through an ssh target: a direct-tcpip channel
	// the target opens to the destination.
	ViaLocal = "local"
	// ViaRemote is -R through an ssh target: a tcpip-forward the target
	// listens on.
	ViaRemote = "remote"
)

// AllowViaTarget decides whether id, logged in to target t as login, may
// forward through it to a destination as the target sees it: ip (when the
// client named an address) or the host name host (matched exactly,
// ignoring case and a final dot), and port (0 for -R asks for any port,
// which only an entry covering every port allows). It requires a role that
// matches id and reaches t with login, grants forwarding.local (ViaLocal)
// or forwarding.remote (ViaRemote), and whose forwarding.target_allow
// covers the destination. Decision.Prefix is the most specific covering
// prefix across those roles (invalid for a name). The caller applies its
// own refusals (loopback, link-local, metadata, postern's listeners) on
// top, as for AllowForward. Just-in-time grants never allow forwards.
func (e *Engine) AllowViaTarget(id certs.Identity, t *Target, login string, ip netip.Addr, host string, port int, dir string) Decision {
	name := host
	if ip.IsValid() {
		ip = ip.Unmap().WithZone("")
		name = ip.String()
	}
	dest := net.JoinHostPort(name, strconv.Itoa(port))
	deny := func(code string) Decision {
		return Decision{Reason: DenyMessage(dest, id), Code: code, Record: RecordRequired}
	}
	rs := e.matching(id)
	if len(rs) == 0 {
		return deny(CodeNoRole)
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	code := CodeTargetNotAllow
	best := netip.Prefix{}
	var ok []*role
	for _, r := range rs {
		if t == nil || !r.targets[t] || !slices.Contains(r.cfg.Logins, login) {
			continue
		}
		if code == CodeTargetNotAllow {
			code = CodeNotInAllowList
		}
		covered := false
		for _, v := range r.via {
			if port == 0 && (v.lo != 1 || v.hi != 65535) || port != 0 && (port < v.lo || port > v.hi) {
				continue
			}
			switch {
			case ip.IsValid() && v.prefix.IsValid() && v.prefix.Contains(ip):
				covered = true
				if !best.IsValid() || v.prefix.Bits() > best.Bits() {
					best = v.prefix
				}
			case !ip.IsValid() && v.name != "" && v.name == host:
				covered = true
			}
		}
		if !covered {
			continue
		}
		if dir == ViaRemote && !r.cfg.Forwarding.Remote || dir != ViaRemote && !r.cfg.Forwarding.Local {
			code = CodeNoForwarding
			continue
		}
		ok = append(ok, r)
	}
	if len(ok) == 0 {
		return deny(code)
	}
	d := merge(ok)
	d.Prefix = best
	return d
}

// Visible lists the targets id may reach, with logins, ports and how, in
// inventory order.
func (e *Engine) Visible(id certs.Identity) []Access {
	rs := e.matching(id)
	var out []Access
	for _, t := range e.targets {
		var a *Access
		for _, r := range rs {
			if !r.targets[t] {
				continue
			}
			if t.Kind != config.KindTCP && len(r.cfg.Logins) == 0 {
				continue
			}
			if a == nil {
				a = &Access{Name: t.Name, Kind: t.Kind, Record: RecordRequired, Passthrough: t.Passthrough}
			}
			a.Roles = append(a.Roles, r.cfg.Name)
			if t.Kind != config.KindTCP {
				for _, l := range r.cfg.Logins {
					if !slices.Contains(a.Logins, l) {
						a.Logins = append(a.Logins, l)
					}
				}
			}
			for _, p := range r.ports(t) {
				if !slices.Contains(a.Ports, p) && !(t.Kind == config.KindSSH && p == 22 && t.Port != 22) {
					a.Ports = append(a.Ports, p)
				}
			}
			if recordRank[r.record()] > recordRank[a.Record] {
				a.Record = r.record()
			}
			a.Forward = a.Forward || (t.Kind == config.KindTCP && r.cfg.Forwarding.Local)
			a.Interactive = a.Interactive || (t.Kind != config.KindTCP && r.cfg.Interactive != InteractiveDeny)
			if len(a.Roles) == 1 {
				a.Moderated = r.cfg.Moderation.Required
			} else {
				a.Moderated = a.Moderated && r.cfg.Moderation.Required
			}
			for _, rule := range r.cfg.Rules {
				a.Rules = append(a.Rules, RuleInfo{Match: rule.Match, Glob: rule.Glob, Action: rule.Action,
					Approvers: slices.Clone(rule.Approvers)})
			}
		}
		if a != nil {
			sort.Ints(a.Ports)
			out = append(out, *a)
		}
	}
	return out
}

// Roles returns the names of the roles that match id.
func (e *Engine) Roles(id certs.Identity) []string {
	var names []string
	for _, r := range e.matching(id) {
		names = append(names, r.cfg.Name)
	}
	return names
}

// Permissions returns the API permissions (auditor, approver, moderator, admin) granted
// to id by its matching roles, sorted and without duplicates.
func (e *Engine) Permissions(id certs.Identity) []string {
	var ps []string
	for _, r := range e.matching(id) {
		for _, p := range r.cfg.Permissions {
			if !slices.Contains(ps, p) {
				ps = append(ps, p)
			}
		}
	}
	sort.Strings(ps)
	return ps
}
