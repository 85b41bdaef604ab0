package certs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/promx"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/state"
)

// TokenVerifier turns a raw OIDC ID token into an identity. *Verifier
// implements it. An error that is an *usererr.Error is passed to the caller as is
// (with status 401 if it has none); any other error is answered with
// "invalid_token".
type TokenVerifier interface {
	Verify(ctx context.Context, rawIDToken string) (Identity, error)
}

// Grant is what the role policy allows an identity: the roles that matched,
// the logins certificates may name as principals, the certificate extensions
// and a lifetime cap.
type Grant struct {
	// Roles are the names of the matching roles, for audit events.
	Roles []string
	// Logins are the logins the roles grant. No logins means no
	// certificate. They are not principals: postern logs in to targets with
	// its own target certificates.
	Logins []string
	// Passthrough are the principals for passthrough ssh targets, which see
	// the user certificate itself: PassthroughPrincipal(target, login) for
	// every passthrough target and login the roles grant (sshd accepts them
	// through AuthorizedPrincipalsCommand, docs/security.md).
	Passthrough []string
	// PermitPTY grants the permit-pty extension.
	PermitPTY bool
	// PermitPortForwarding grants the permit-port-forwarding extension.
	PermitPortForwarding bool
	// PermitAgentForwarding grants the permit-agent-forwarding extension.
	PermitAgentForwarding bool
	// PermitX11Forwarding grants the permit-X11-forwarding extension.
	PermitX11Forwarding bool
	// MaxTTL caps the certificate lifetime; no extra cap if zero.
	MaxTTL time.Duration
}

// Policy decides what an identity may be granted. policy implements
// it from the configured roles.
type Policy interface {
	Grant(Identity) Grant
}

// Request is one certificate request.
type Request struct {
	// Token is the raw OIDC ID token (the bearer token of POST /v1/certs).
	Token string
	// PublicKey is the key to certify: ed25519, ECDSA, RSA of at least 2048
	// bits, or their security-key variants.
	PublicKey ssh.PublicKey
	// TTL asks for a shorter lifetime than the default; the default if zero.
	TTL time.Duration
	// Source is the caller's address, for rate limiting and audit.
	Source netip.Addr
}

// Issued is a signed certificate and what went into it.
type Issued struct {
	// Cert is the signed user certificate.
	Cert *ssh.Certificate
	// Identity is the verified identity carried in the certificate.
	Identity Identity
	// Principals are the certificate's principals (sorted).
	Principals []string
	// ValidAfter and ValidBefore bound the certificate's validity.
	ValidAfter, ValidBefore time.Time
	// Serial is the certificate's serial number (for `postern ca revoke`).
	Serial uint64
}

// IssuerOptions configures an Issuer. Authority, Verifier and Policy are
// required; everything else has a working zero value.
type IssuerOptions struct {
	// Authority signs with its user CA.
	Authority *Authority
	// Verifier checks bearer tokens.
	Verifier TokenVerifier
	// Policy grants logins and extensions.
	Policy Policy
	// TTL bounds certificate lifetimes; 8h for humans, 15m for agents, capped
	// at 24h, when fields are zero.
	TTL config.CertTTL
	// RateLimit bounds requests per identity and per source; see RateLimiter
	// for the defaults.
	RateLimit config.RateLimit
	// Audit receives a cert.issued event per certificate and a cert.denied
	// event per refusal after the token was verified; none if nil.
	Audit func(ctx context.Context, e state.Event)
	// Locked refuses a verified identity that a lock matches (the kill
	// switch, lock.Locker.CheckFresh); its error, a *usererr.Error, is the
	// answer and is audited as cert.denied. No lock check if nil.
	Locked func(ctx context.Context, id Identity) error
	// Record keeps each issued certificate for renewals (the bastion lets
	// a connection run on with a newer certificate of the same key); a
	// failure is logged, the certificate still issued. None if nil.
	Record func(ctx context.Context, c *Issued) error
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// Log receives one line per issuance or refusal; nothing is logged if nil.
	Log *slog.Logger
	// Metrics registers postern_certs_issued_total and
	// postern_cert_requests_failed_total; not registered if nil.
	Metrics prometheus.Registerer
}

// Issuer runs the certificate issuance pipeline: defaults → identity (verify
// the token) → locks → role policy → limits → sign → validate. It is safe for
// concurrent use; it owns its rate limiter and its metrics.
type Issuer struct {
	authority *Authority
	verifier  TokenVerifier
	policy    Policy
	ttl       config.CertTTL
	audit     func(context.Context, state.Event)
	locked    func(context.Context, Identity) error
	record    func(context.Context, *Issued) error
	now       func() time.Time
	log       *slog.Logger
	limiter   *RateLimiter
	issued    *prometheus.CounterVec
	failed    *prometheus.CounterVec
	latency   *prometheus.HistogramVec
}

// Default certificate lifetimes.
const (
	DefaultHumanTTL = 8 * time.Hour
	DefaultAgentTTL = 15 * time.Minute
	DefaultMaxTTL   = 24 * time.Hour
	// MinTTL is the shortest lifetime a request may ask for.
	MinTTL = time.Minute
)

// Error codes of the issuance pipeline.
const (
	CodeBadPublicKey = "bad_public_key"
	CodeWeakKey      = "weak_key"
	CodeBadTTL       = "bad_ttl"
	CodeTokenMissing = "token_missing"
	CodeNoAccess     = "no_access"
	// CodeTooManyPrincipals: the roles grant more passthrough logins than a
	// certificate can carry.
	CodeTooManyPrincipals = "too_many_principals"
	CodeRateLimited       = "rate_limited"
	CodeInternal          = "internal"
)

// NewIssuer returns an Issuer for opts.
func NewIssuer(opts IssuerOptions) (*Issuer, error) {
	if opts.Authority == nil || opts.Authority.User == nil || opts.Authority.User.Signer() == nil {
		return nil, errors.New("certs: issuer needs an authority with a user CA signing key")
	}
	if opts.Verifier == nil {
		return nil, errors.New("certs: issuer needs a token verifier")
	}
	if opts.Policy == nil {
		return nil, errors.New("certs: issuer needs a policy")
	}
	i := &Issuer{
		authority: opts.Authority,
		verifier:  opts.Verifier,
		policy:    opts.Policy,
		ttl:       opts.TTL,
		audit:     opts.Audit,
		locked:    opts.Locked,
		record:    opts.Record,
		now:       opts.Now,
		log:       opts.Log,
	}
	if i.now == nil {
		i.now = time.Now
	}
	if i.log == nil {
		i.log = slog.New(slog.DiscardHandler)
	}
	i.limiter = NewRateLimiter(opts.RateLimit, i.now)
	i.issued = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "postern_certs_issued_total",
		Help: "User certificates issued, by OIDC issuer and identity kind.",
	}, []string{"issuer", "kind"})
	i.failed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "postern_cert_requests_failed_total",
		Help: "Certificate requests refused, by error code.",
	}, []string{"code"})
	i.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "postern_cert_issue_seconds",
		Help:    "Certificate requests from receipt to answer (token verification, policy, signing, audit), by result (issued, refused).",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	}, []string{"result"})
	r := &promx.Registrar{Reg: opts.Metrics} // two issuers on one registry share their counters
	i.issued = promx.Add(r, i.issued)
	i.failed = promx.Add(r, i.failed)
	i.latency = promx.Add(r, i.latency)
	if r.Err != nil {
		return nil, fmt.Errorf("certs: %w", r.Err)
	}
	return i, nil
}

// issuance is the state one request carries through the pipeline.
type issuance struct {
	req        Request
	now        time.Time
	verified   bool // the token was verified: refusals are audited
	id         Identity
	grant      Grant
	principals []string
	ttl        time.Duration
	cert       *ssh.Certificate
	via        string // what proved the identity instead of a token (IssueFor); "" for a token
}

// step is one stage of the pipeline; steps run in order and the first error
// ends the request.
type step func(*Issuer, context.Context, *issuance) error

var pipeline = []step{
	(*Issuer).stepDefaults,
	(*Issuer).stepIdentity,
	(*Issuer).stepLocks,
	(*Issuer).stepPolicy,
	(*Issuer).stepLimits,
	(*Issuer).stepSign,
	(*Issuer).stepValidate,
}

// provenPipeline is the pipeline of IssueFor: the same steps but the
// token's verification, the identity being proven already.
var provenPipeline = []step{
	(*Issuer).stepDefaults,
	(*Issuer).stepLocks,
	(*Issuer).stepPolicy,
	(*Issuer).stepLimits,
	(*Issuer).stepSign,
	(*Issuer).stepValidate,
}

// Issue runs the pipeline for r. Refusals are *usererr.Error values whose Msg is safe
// to show the caller.
func (i *Issuer) Issue(ctx context.Context, r Request) (*Issued, error) {
	return i.run(ctx, &issuance{req: r}, pipeline)
}

// IssueFor issues a certificate for id, an identity that another
// credential already proved (via names it, e.g. "mcp": the MCP endpoint
// acting for a caller the API authenticated), so r.Token is not used. Every
// other step applies as for Issue — locks, the role policy, the rate
// limits, the lifetime caps — and the cert.issued event says via.
func (i *Issuer) IssueFor(ctx context.Context, id Identity, r Request, via string) (*Issued, error) {
	if id.Username == "" || id.Issuer == "" {
		return nil, &usererr.Error{Status: http.StatusUnauthorized, Code: CodeInvalidToken, Msg: "no identity"}
	}
	return i.run(ctx, &issuance{req: r, id: id, verified: true, via: via}, provenPipeline)
}

// run runs steps for is and reports the outcome.
func (i *Issuer) run(ctx context.Context, is *issuance, steps []step) (*Issued, error) {
	start := time.Now()
	r := is.req
	for _, s := range steps {
		if err := s(i, ctx, is); err != nil {
			i.latency.WithLabelValues("refused").Observe(time.Since(start).Seconds())
			e := usererr.As(err)
			if e == nil {
				e = &usererr.Error{Status: http.StatusInternalServerError, Code: CodeInternal, Msg: "internal error", Err: err}
			}
			i.refused(ctx, is, e)
			return nil, e
		}
	}
	out := &Issued{
		Cert:        is.cert,
		Identity:    is.id,
		Principals:  is.principals,
		ValidAfter:  time.Unix(int64(is.cert.ValidAfter), 0),
		ValidBefore: time.Unix(int64(is.cert.ValidBefore), 0),
		Serial:      is.cert.Serial,
	}
	i.issued.WithLabelValues(is.id.Issuer, kindOf(is.id)).Inc()
	if i.record != nil {
		if err := i.record(ctx, out); err != nil {
			i.log.Error("record issued certificate; it cannot renew open connections", "serial", out.Serial, "err", err)
		}
	}
	i.log.LogAttrs(ctx, slog.LevelInfo, "certificate issued",
		slog.String("identity", is.id.Username),
		slog.String("issuer", is.id.Issuer),
		slog.String("kind", kindOf(is.id)),
		slog.String("source", addrString(r.Source)),
		slog.Uint64("serial", out.Serial),
		slog.Any("principals", out.Principals),
		slog.Time("valid_before", out.ValidBefore),
		slog.String("key", ssh.FingerprintSHA256(r.PublicKey)))
	if i.audit != nil {
		details := map[string]any{
			"serial":       strconv.FormatUint(out.Serial, 10),
			"key_id":       is.cert.KeyId,
			"principals":   out.Principals,
			"valid_after":  out.ValidAfter.UTC().Format(time.RFC3339),
			"valid_before": out.ValidBefore.UTC().Format(time.RFC3339),
			"kind":         kindOf(is.id),
			"issuer":       is.id.Issuer,
			"subject":      is.id.Subject,
			"roles":        is.grant.Roles,
			"key":          ssh.FingerprintSHA256(r.PublicKey),
		}
		if is.via != "" {
			details["via"] = is.via
		}
		i.audit(ctx, state.Event{Time: is.now, Type: state.EventCertIssued, Actor: is.id.Username,
			Source: addrString(r.Source), Details: details})
	}
	i.latency.WithLabelValues("issued").Observe(time.Since(start).Seconds())
	return out, nil
}

func (i *Issuer) refused(ctx context.Context, is *issuance, e *usererr.Error) {
	i.failed.WithLabelValues(e.Code).Inc()
	attrs := []slog.Attr{
		slog.String("code", e.Code),
		slog.String("source", addrString(is.req.Source)),
	}
	if is.verified {
		attrs = append(attrs, slog.String("identity", is.id.Username), slog.String("issuer", is.id.Issuer))
	}
	if e.Err != nil {
		attrs = append(attrs, slog.String("err", e.Err.Error()))
	}
	level := slog.LevelInfo
	if e.HTTPStatus() >= 500 {
		level = slog.LevelError
	}
	i.log.LogAttrs(ctx, level, "certificate refused", attrs...)
	if !is.verified || i.audit == nil {
		return
	}
	i.audit(ctx, state.Event{
		Time:   is.now,
		Type:   state.EventCertDenied,
		Actor:  is.id.Username,
		Source: addrString(is.req.Source),
		Details: map[string]any{
			"code":    e.Code,
			"reason":  e.Msg,
			"kind":    kindOf(is.id),
			"issuer":  is.id.Issuer,
			"subject": is.id.Subject,
			"roles":   is.grant.Roles,
		},
	})
}

// stepDefaults fills in the clock, checks what can be checked without the
// token (public key, requested ttl) and applies the per-source rate limit, so
// that a flood costs no token verification.
func (i *Issuer) stepDefaults(_ context.Context, is *issuance) error {
	is.now = i.now()
	if err := CheckPublicKey(is.req.PublicKey); err != nil {
		return err
	}
	if is.req.TTL < 0 || (is.req.TTL > 0 && is.req.TTL < MinTTL) {
		return &usererr.Error{Code: CodeBadTTL, Msg: "ttl must be at least " + MinTTL.String()}
	}
	if ok, wait := i.limiter.AllowSource(is.req.Source); !ok {
		return rateLimited(wait, "source")
	}
	return nil
}

// stepIdentity verifies the bearer token.
func (i *Issuer) stepIdentity(ctx context.Context, is *issuance) error {
	if is.req.Token == "" {
		return &usererr.Error{Status: http.StatusUnauthorized, Code: CodeTokenMissing, Msg: "missing bearer token"}
	}
	id, err := i.verifier.Verify(ctx, is.req.Token)
	if err != nil {
		if e := usererr.As(err); e != nil {
			c := *e
			if c.Status == 0 {
				c.Status = http.StatusUnauthorized
			}
			return &c
		}
		return &usererr.Error{Status: http.StatusUnauthorized, Code: CodeInvalidToken, Msg: "invalid token", Err: err}
	}
	if id.Username == "" || id.Issuer == "" {
		return &usererr.Error{Status: http.StatusUnauthorized, Code: CodeInvalidToken, Msg: "token names no user",
			Err: errors.New("verifier returned an identity without username or issuer")}
	}
	is.id, is.verified = id, true
	return nil
}

// stepLocks refuses an identity that a lock matches.
func (i *Issuer) stepLocks(ctx context.Context, is *issuance) error {
	if i.locked == nil {
		return nil
	}
	return i.locked(ctx, is.id)
}

// MaxPrincipals is the most principals a certificate may carry: OpenSSH
// refuses certificates with more (SSHKEY_CERT_MAX_PRINCIPALS).
const MaxPrincipals = 256

// PassthroughPrincipal is the principal that lets a certificate log in to
// the passthrough ssh target target as login: "<target>:<login>". A
// passthrough sshd accepts only its own ("AuthorizedPrincipalsCommand
// /bin/echo <target>:%u"), so a login granted on one target never opens
// another, and a bare login is never a principal.
func PassthroughPrincipal(target, login string) string { return target + ":" + login }

// stepPolicy asks the role policy for a grant and derives the principals:
// the username (the login at the bastion) and the passthrough principals,
// deduplicated and sorted. The granted logins themselves are not
// principals: a stock sshd that trusted the user CA would otherwise take
// any of them on any target.
func (i *Issuer) stepPolicy(_ context.Context, is *issuance) error {
	is.grant = i.policy.Grant(is.id)
	logins := slices.DeleteFunc(slices.Clone(is.grant.Logins), func(s string) bool { return s == "" })
	if len(logins) == 0 {
		return &usererr.Error{Status: http.StatusForbidden, Code: CodeNoAccess, Msg: "no role grants you access"}
	}
	p := append(slices.Clone(is.grant.Passthrough), is.id.Username)
	slices.Sort(p)
	is.principals = slices.Compact(p)
	if len(is.principals) > MaxPrincipals {
		return &usererr.Error{Status: http.StatusForbidden, Code: CodeTooManyPrincipals,
			Msg: fmt.Sprintf("your roles grant more passthrough logins than one certificate can carry (%d); ask an operator to narrow them", MaxPrincipals)}
	}
	return nil
}

// stepLimits applies the per-identity rate limit and computes the lifetime.
func (i *Issuer) stepLimits(_ context.Context, is *issuance) error {
	if ok, wait := i.limiter.AllowIdentity(is.id.Issuer + "\x00" + is.id.Subject); !ok {
		return rateLimited(wait, "identity")
	}
	is.ttl = i.lifetime(is.id.Kind, is.req.TTL, is.grant.MaxTTL)
	return nil
}

// lifetime is the kind's default lifetime, shortened by a request, capped by
// the configured maximum and by the grant.
func (i *Issuer) lifetime(kind Kind, requested, grantMax time.Duration) time.Duration {
	ttl := orDefault(i.ttl.Human.D(), DefaultHumanTTL)
	if kind == KindAgent {
		ttl = orDefault(i.ttl.Agent.D(), DefaultAgentTTL)
	}
	if requested > 0 && requested < ttl {
		ttl = requested
	}
	ttl = min(ttl, orDefault(i.ttl.Max.D(), DefaultMaxTTL))
	if grantMax > 0 {
		ttl = min(ttl, grantMax)
	}
	return ttl
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// stepSign builds and signs the certificate with the user CA.
func (i *Issuer) stepSign(_ context.Context, is *issuance) error {
	ext := map[string]string{IdentityExtension: EncodeIdentity(is.id)}
	if is.grant.PermitPTY {
		ext["permit-pty"] = ""
	}
	if is.grant.PermitPortForwarding {
		ext["permit-port-forwarding"] = ""
	}
	if is.grant.PermitAgentForwarding {
		ext["permit-agent-forwarding"] = ""
	}
	if is.grant.PermitX11Forwarding {
		ext["permit-X11-forwarding"] = ""
	}
	cert, err := i.authority.Sign(is.req.PublicKey, SignOptions{CA: i.authority.User, Type: ssh.UserCert,
		KeyID: fmt.Sprintf("postern:%s:%s", is.id.Issuer, is.id.Username), SerialInKeyID: true,
		Principals: is.principals, TTL: is.ttl, Backdate: certBackdate, Extensions: ext, Now: is.now})
	if err != nil {
		return err
	}
	is.cert = cert
	return nil
}

// stepValidate checks the signed certificate the way the bastion will, so a
// certificate postern would refuse is never handed out.
func (i *Issuer) stepValidate(_ context.Context, is *issuance) error {
	if _, err := i.authority.CheckUserCert(is.cert, is.id.Username, is.req.Source, is.now); err != nil {
		return &usererr.Error{Status: http.StatusInternalServerError, Code: CodeInternal, Msg: "internal error",
			Err: fmt.Errorf("validate issued certificate: %w", err)}
	}
	return nil
}

// CheckPublicKey reports why pub may not be certified: missing or a
// certificate (bad_public_key), DSA or RSA under 2048 bits (weak_key), or an
// unknown type. It returns nil for acceptable keys.
func CheckPublicKey(pub ssh.PublicKey) error {
	if pub == nil {
		return &usererr.Error{Code: CodeBadPublicKey, Msg: "missing public key"}
	}
	if _, ok := pub.(*ssh.Certificate); ok {
		return &usererr.Error{Code: CodeBadPublicKey, Msg: "send a plain public key, not a certificate"}
	}
	switch t := pub.Type(); t {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoSKED25519, ssh.KeyAlgoSKECDSA256,
		ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521:
		return nil
	case ssh.KeyAlgoRSA:
		if n := rsaBits(pub); n < 2048 {
			return &usererr.Error{Code: CodeWeakKey, Msg: fmt.Sprintf("RSA key has %d bits; use at least 2048 (or ed25519)", n)}
		}
		return nil
	case ssh.KeyAlgoDSA:
		return &usererr.Error{Code: CodeWeakKey, Msg: "DSA keys are not accepted; use ed25519"}
	default:
		return &usererr.Error{Code: CodeBadPublicKey, Msg: "unsupported key type " + printable(t)}
	}
}

// ParsePublicKey parses an authorized_keys line and checks it with
// CheckPublicKey.
func ParsePublicKey(line string) (ssh.PublicKey, error) {
	pub, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		if f := strings.Fields(line); len(f) > 0 && f[0] == ssh.KeyAlgoDSA {
			// The SSH library no longer parses DSA keys at all.
			return nil, &usererr.Error{Code: CodeWeakKey, Msg: "DSA keys are not accepted; use ed25519"}
		}
		return nil, &usererr.Error{Code: CodeBadPublicKey, Msg: "public_key is not an SSH public key", Err: err}
	}
	if len(rest) > 0 {
		return nil, &usererr.Error{Code: CodeBadPublicKey, Msg: "send exactly one public key"}
	}
	if err := CheckPublicKey(pub); err != nil {
		return nil, err
	}
	return pub, nil
}

func rateLimited(wait time.Duration, what string) *usererr.Error {
	return &usererr.Error{Status: http.StatusTooManyRequests, Code: CodeRateLimited,
		Msg: "too many certificate requests; retry later", RetryAfter: wait, Err: &RetryAfterError{Wait: wait, Scope: what}}
}

// RetryAfterError is the cause inside a rate_limited *usererr.Error: how long until a
// request would be allowed, and which limit (source or identity) was hit.
type RetryAfterError struct {
	// Wait is how long until a request would be allowed.
	Wait time.Duration
	// Scope is "source" or "identity".
	Scope string
}

// Error describes the limit that was hit, for logs.
func (e *RetryAfterError) Error() string {
	return "rate limited per " + e.Scope + " for " + e.Wait.String()
}

func kindOf(id Identity) string {
	if id.Kind == "" {
		return string(KindHuman)
	}
	return string(id.Kind)
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.Unmap().String()
}
