package certs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/promx"
	"github.com/posternhq/postern/internal/usererr"
)

// Token verification error codes (contract: they appear as "code" in HTTP
// error bodies and never change).
const (
	// CodeInvalidToken: not a compact signed JWT, oversized, or malformed.
	CodeInvalidToken = "invalid_token"
	// CodeUnsupportedAlg: signed with "none", an HMAC or another refused algorithm.
	CodeUnsupportedAlg = "unsupported_alg"
	// CodeBadSignature: the signature does not verify with the named key.
	CodeBadSignature = "bad_signature"
	// CodeUnknownKey: the issuer's key set has no key with the token's key id.
	CodeUnknownKey = "unknown_key"
	// CodeWrongIssuer: the iss claim names no configured issuer.
	CodeWrongIssuer = "wrong_issuer"
	// CodeWrongAudience: the token is not meant for postern (aud, azp).
	CodeWrongAudience = "wrong_audience"
	// CodeTokenExpired: exp is past (beyond the allowed clock skew).
	CodeTokenExpired = "token_expired"
	// CodeTokenNotYetValid: nbf is in the future (beyond the allowed clock skew).
	CodeTokenNotYetValid = "token_not_yet_valid"
	// CodeMissingClaim: a needed claim is absent; the message names it.
	CodeMissingClaim = "missing_claim"
	// CodeClaimMismatch: a claim does not have the required value or type.
	CodeClaimMismatch = "claim_mismatch"
	// CodeIssuerUnavailable: the issuer could not be discovered or its
	// keys fetched yet; answered with 503, retry later.
	CodeIssuerUnavailable = "issuer_unavailable"
)

const (
	maxTokenSize          = 16 << 10
	clockSkew             = 2 * time.Minute // IdP and postern clocks may differ this much either way
	jwksMaxBytes          = 1 << 20
	discoveryTimeout      = 10 * time.Second
	defaultMinKeyRefresh  = 10 * time.Second
	discoveryBackoffStart = time.Second
	discoveryBackoffMax   = 30 * time.Second
	defaultHTTPTimeout    = 10 * time.Second
	metricIssuerUnknown   = "unknown"
	metricResultOK        = "ok"
	defaultUsernameHuman  = "email"
	defaultUsernameAgent  = "sub"
	claimEmailVerified    = "email_verified"
	claimAuthorizedParty  = "azp"
	claimNotBefore        = "nbf"
	claimExpiry           = "exp"
	claimSubject          = "sub"
	claimIssuer           = "iss"
	claimAudience         = "aud"
	metaJWKSURI           = "jwks_uri"
)

// signingAlgs are the only algorithms a token may be signed with: asymmetric
// ones, so that a public key can never double as an HMAC secret, and never
// "none".
var signingAlgs = []string{
	oidc.RS256, oidc.RS384, oidc.RS512,
	oidc.PS256, oidc.PS384, oidc.PS512,
	oidc.ES256, oidc.ES384, oidc.ES512,
	oidc.EdDSA,
}

// VerifierOptions configures a Verifier. The zero value works.
type VerifierOptions struct {
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// HTTPClient fetches discovery documents and key sets; a client with a
	// 10s timeout if nil.
	HTTPClient *http.Client
	// Log receives discovery and verification events; discarded if nil.
	// Tokens are never logged.
	Log *slog.Logger
	// Metrics registers postern_token_verifications_total; not registered
	// if nil.
	Metrics prometheus.Registerer
	// Aliases returns the alias (identity.aliases) of the identity issuer
	// (its configured name) vouched for as subject, "" if none; it sets
	// Identity.Alias. No aliases if nil.
	Aliases func(issuer, subject string) string
}

// Verifier checks OIDC ID tokens from several configured issuers and maps
// their claims to an Identity. It is safe for concurrent use.
//
// A token is matched to an issuer by its (not yet trusted) iss claim and then
// verified in full by go-oidc against that issuer alone: signature through
// the issuer's JWKS, issuer, audience, expiry; the Verifier adds not-before
// with 2 minutes of clock skew, authorized party (azp) when the token names several
// audiences, required claims (string claims, exact match), and the username
// and groups claims. Only
// asymmetric signatures (RS*, PS*, ES*, EdDSA) are accepted.
//
// Availability: NewVerifier contacts no identity provider, so postern starts
// while an IdP is down. Each issuer is discovered on first use; a failed
// discovery is retried on later calls after a backoff that doubles from 1 s to
// 30 s, and those calls fail with issuer_unavailable (503) in between. Once
// discovered, the provider metadata is cached for the Verifier's lifetime.
// Signing keys are fetched from the issuer's jwks_uri and cached: tokens
// signed with a cached key verify without any network access, so they keep
// working while the JWKS endpoint is unreachable. A token whose key id is not
// cached triggers one refresh of the key set (at most one every 10 s per
// issuer, shared by concurrent callers); if the key is still unknown, or the
// refresh fails, the token fails with unknown_key.
//
// Usernames: with the default username claim of humans (email), a token
// whose email_verified claim is false is refused; an absent email_verified
// is accepted, as several providers only issue verified addresses and omit it.
//
// Every failure is a *usererr.Error with Status 401 (503 for issuer_unavailable) and
// one of the Code* constants; messages never contain the token.
type Verifier struct {
	byURL   map[string]*trustedIssuer
	now     func() time.Time
	client  *http.Client
	log     *slog.Logger
	results *prometheus.CounterVec
	// minKeyRefresh is the least time between two fetches of one issuer's
	// key set; tests lower it.
	minKeyRefresh time.Duration
	aliases       func(issuer, subject string) string // nil: no aliases
}

// trustedIssuer is the state of one configured issuer. verifier is set once
// discovery succeeds and never changes afterwards.
type trustedIssuer struct {
	cfg           config.Issuer
	audience      string
	usernameClaim string
	kind          Kind
	keep          []string // claims kept in the identity (profile's, then the claims list)

	mu        sync.Mutex
	verifier  *oidc.IDTokenVerifier
	keys      *keySet
	nextTry   time.Time
	backoff   time.Duration
	discovery singleflight.Group
}

// NewVerifier returns a Verifier for issuers. It validates the configuration
// but contacts no identity provider (see Verifier).
func NewVerifier(ctx context.Context, issuers []config.Issuer, opts VerifierOptions) (*Verifier, error) {
	_ = ctx // discovery is lazy; the context of each Verify call is used instead
	v := &Verifier{
		byURL:         make(map[string]*trustedIssuer, len(issuers)),
		now:           opts.Now,
		client:        opts.HTTPClient,
		log:           opts.Log,
		minKeyRefresh: defaultMinKeyRefresh,
		aliases:       opts.Aliases,
	}
	if v.now == nil {
		v.now = time.Now
	}
	if v.client == nil {
		v.client = &http.Client{Timeout: defaultHTTPTimeout}
	}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	names := make(map[string]bool, len(issuers))
	for i, c := range issuers {
		path := fmt.Sprintf("identity.issuers[%d]", i)
		switch c.Profile {
		case "":
		case config.ProfileGitHubActions, config.ProfileKubernetes:
			if c.Kind == "" {
				c.Kind = string(KindAgent)
			}
			if c.IssuerURL == "" && c.Profile == config.ProfileGitHubActions {
				c.IssuerURL = config.GitHubActionsIssuer
			}
		default:
			return nil, fmt.Errorf("%s.profile: %q is not github-actions or kubernetes", path, c.Profile)
		}
		if c.Name == "" {
			return nil, fmt.Errorf("%s.name: is empty; give the issuer a name", path)
		}
		if names[c.Name] {
			return nil, fmt.Errorf("%s.name: %q is used twice; names must be unique", path, c.Name)
		}
		names[c.Name] = true
		u, err := url.Parse(c.IssuerURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fmt.Errorf("%s.issuer_url: %q is not an http(s) URL; write the issuer exactly as its tokens' iss claim", path, c.IssuerURL)
		}
		if _, dup := v.byURL[c.IssuerURL]; dup {
			return nil, fmt.Errorf("%s.issuer_url: %q is configured twice; list each issuer once", path, c.IssuerURL)
		}
		is := &trustedIssuer{cfg: c, audience: c.Audience}
		if is.audience == "" {
			is.audience = c.ClientID
		}
		if is.audience == "" {
			return nil, fmt.Errorf("%s: neither audience nor client_id is set; set the audience tokens are issued for", path)
		}
		switch Kind(c.Kind) {
		case "", KindHuman:
			is.kind = KindHuman
			is.usernameClaim = defaultUsernameHuman
		case KindAgent:
			is.kind = KindAgent
			is.usernameClaim = defaultUsernameAgent
		default:
			return nil, fmt.Errorf("%s.kind: %q is not a kind; write human or agent", path, c.Kind)
		}
		if c.UsernameClaim != "" {
			is.usernameClaim = c.UsernameClaim
		}
		is.keep = append(slices.Clone(config.ProfileClaims[c.Profile]), c.Claims...)
		v.byURL[c.IssuerURL] = is
	}
	v.results = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "postern_token_verifications_total",
		Help: "OIDC token verifications by configured issuer name and result (ok or an error code).",
	}, []string{"issuer", "result"})
	// Several Verifiers (e.g. after a reload) share one counter.
	var err error
	if v.results, err = promx.Register(opts.Metrics, v.results); err != nil {
		return nil, fmt.Errorf("token verification metric: %w", err)
	}
	return v, nil
}

// The issuance pipeline takes a *Verifier as its TokenVerifier.
var _ TokenVerifier = (*Verifier)(nil)

// Verify checks rawIDToken and returns the identity it vouches for; every
// error is a *usererr.Error (see Verifier).
func (v *Verifier) Verify(ctx context.Context, rawIDToken string) (Identity, error) {
	is, id, err := v.verify(ctx, rawIDToken)
	name := metricIssuerUnknown
	if is != nil {
		name = is.cfg.Name
	}
	result := metricResultOK
	if err != nil {
		e := usererr.As(err)
		result = e.Code
		v.log.LogAttrs(ctx, slog.LevelInfo, "token rejected",
			slog.String("issuer", name), slog.String("code", e.Code), slog.Any("err", e.Err))
	}
	v.results.WithLabelValues(name, result).Inc()
	return id, err
}

// tokenError returns a *usererr.Error with Status 401.
func tokenError(code, msg string, cause error) *usererr.Error {
	return &usererr.Error{Status: http.StatusUnauthorized, Code: code, Msg: msg, Err: cause}
}

// jwtHeader is the part of a JOSE header the Verifier looks at before
// verification.
type jwtHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
}

func (v *Verifier) verify(ctx context.Context, raw string) (*trustedIssuer, Identity, error) {
	if len(raw) > maxTokenSize {
		return nil, Identity{}, tokenError(CodeInvalidToken, "token is too large", nil)
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, Identity{}, tokenError(CodeInvalidToken, "token is not a signed JWT", nil)
	}
	var hdr jwtHeader
	if err := decodeSegment(parts[0], &hdr); err != nil {
		return nil, Identity{}, tokenError(CodeInvalidToken, "token header is malformed", err)
	}
	if !slices.Contains(signingAlgs, hdr.Alg) {
		return nil, Identity{}, tokenError(CodeUnsupportedAlg, "token signing algorithm is not accepted", fmt.Errorf("alg %q", hdr.Alg))
	}
	// The payload is read unverified only to choose the issuer; everything
	// else is checked after the signature.
	var unverified struct {
		Iss any `json:"iss"`
	}
	if err := decodeSegment(parts[1], &unverified); err != nil {
		return nil, Identity{}, tokenError(CodeInvalidToken, "token payload is malformed", err)
	}
	iss, _ := unverified.Iss.(string)
	if iss == "" {
		return nil, Identity{}, tokenError(CodeMissingClaim, "token has no iss claim", nil)
	}
	is := v.byURL[iss]
	if is == nil {
		return nil, Identity{}, tokenError(CodeWrongIssuer, "token issuer is not trusted", fmt.Errorf("iss %q", iss))
	}
	idv, err := v.discover(ctx, is)
	if err != nil {
		return is, Identity{}, err
	}

	res := &sigResult{}
	tok, err := idv.Verify(context.WithValue(ctx, sigResultKey{}, res), raw)
	if err != nil {
		return is, Identity{}, v.classify(is, res, err)
	}
	var claims map[string]any
	if err := tok.Claims(&claims); err != nil {
		return is, Identity{}, tokenError(CodeInvalidToken, "token claims are malformed", err)
	}
	if err := v.checkClaims(is, claims); err != nil {
		return is, Identity{}, err
	}
	id, err := is.identity(claims)
	if err == nil && v.aliases != nil {
		id.Alias = v.aliases(id.Issuer, id.Subject)
	}
	return is, id, err
}

// classify turns a go-oidc failure into a *usererr.Error. go-oidc verifies the
// signature first; once res shows it passed, the Verifier's own claim checks
// on the signed payload name the precise cause.
func (v *Verifier) classify(is *trustedIssuer, res *sigResult, err error) error {
	if res.err != nil {
		return res.err
	}
	if res.payload == nil {
		// go-oidc refused the token before the key set saw it.
		return tokenError(CodeInvalidToken, "token is malformed", err)
	}
	var claims map[string]any
	if jerr := json.Unmarshal(res.payload, &claims); jerr != nil {
		return tokenError(CodeInvalidToken, "token claims are malformed", errors.Join(err, jerr))
	}
	var expired *oidc.TokenExpiredError
	if errors.As(err, &expired) {
		if _, ok := claims[claimExpiry]; !ok {
			return tokenError(CodeMissingClaim, "token has no exp claim", err)
		}
		return tokenError(CodeTokenExpired, "token has expired", err)
	}
	if cerr := v.checkClaims(is, claims); cerr != nil {
		return cerr
	}
	return tokenError(CodeInvalidToken, "token is invalid", err)
}

// checkClaims checks the registered claims of a payload whose signature has
// been verified: issuer, audience and authorized party, expiry and
// not-before with skew, subject, and the issuer's required claims.
func (v *Verifier) checkClaims(is *trustedIssuer, claims map[string]any) error {
	if iss, _ := claims[claimIssuer].(string); iss != is.cfg.IssuerURL {
		return tokenError(CodeWrongIssuer, "token issuer is not trusted", nil)
	}
	aud, ok := stringList(claims[claimAudience])
	if !ok || len(aud) == 0 {
		return tokenError(CodeMissingClaim, "token has no aud claim", nil)
	}
	if !slices.Contains(aud, is.audience) {
		return tokenError(CodeWrongAudience, "token is not meant for postern", nil)
	}
	if len(aud) > 1 {
		if azp, _ := claims[claimAuthorizedParty].(string); azp != is.audience {
			return tokenError(CodeWrongAudience, "token with several audiences was not issued to postern (azp)", nil)
		}
	}
	now := v.now()
	exp, ok := numericDate(claims[claimExpiry])
	if !ok {
		return tokenError(CodeMissingClaim, "token has no exp claim", nil)
	}
	if !now.Before(exp.Add(clockSkew)) {
		return tokenError(CodeTokenExpired, "token has expired", nil)
	}
	if raw, present := claims[claimNotBefore]; present {
		nbf, ok := numericDate(raw)
		if !ok {
			return tokenError(CodeInvalidToken, "token nbf claim is malformed", nil)
		}
		if now.Add(clockSkew).Before(nbf) {
			return tokenError(CodeTokenNotYetValid, "token is not valid yet", nil)
		}
	}
	if sub, _ := claims[claimSubject].(string); sub == "" {
		return tokenError(CodeMissingClaim, "token has no sub claim", nil)
	}
	for _, name := range sortedKeys(is.cfg.Require) {
		got, present := claims[name]
		if !present {
			return tokenError(CodeMissingClaim, "token lacks required claim "+name, nil)
		}
		if s, ok := got.(string); !ok || s != is.cfg.Require[name] {
			return tokenError(CodeClaimMismatch, "token claim "+name+" does not have the required value", nil)
		}
	}
	return nil
}

// identity maps verified claims to an Identity.
func (is *trustedIssuer) identity(claims map[string]any) (Identity, error) {
	user, _ := claims[is.usernameClaim].(string)
	if user == "" {
		return Identity{}, tokenError(CodeMissingClaim, "token lacks username claim "+is.usernameClaim, nil)
	}
	// An email nobody verified names nobody: refuse it as a username.
	if is.usernameClaim == defaultUsernameHuman {
		if verified, ok := claims[claimEmailVerified].(bool); ok && !verified {
			return Identity{}, tokenError(CodeClaimMismatch, "token email is not verified", nil)
		}
	}
	id := Identity{
		Issuer:   is.cfg.Name,
		Subject:  claims[claimSubject].(string), // checked by checkClaims
		Username: user,
		Kind:     is.kind,
	}
	for _, name := range is.keep {
		if v, ok := claimValue(claims, name); ok {
			if id.Claims == nil {
				id.Claims = map[string]string{}
			}
			id.Claims[name] = v
		}
	}
	if is.cfg.GroupsClaim != "" {
		if raw, present := claims[is.cfg.GroupsClaim]; present && raw != nil {
			groups, ok := stringList(raw)
			if !ok {
				return Identity{}, tokenError(CodeClaimMismatch, "token claim "+is.cfg.GroupsClaim+" is not a list of strings", nil)
			}
			id.Groups = groups
		}
	}
	return id, nil
}

// maxClaimValue bounds a kept claim's value: the identity rides in every
// certificate.
const maxClaimValue = 256

// claimValue reads a kept claim: name's '/' walks nested objects, and an
// object found at the end gives its "name" (a Kubernetes token's
// kubernetes.io/serviceaccount). Only strings (and numbers and booleans,
// written as JSON writes them) are kept.
func claimValue(claims map[string]any, name string) (string, bool) {
	var v any = claims
	if _, ok := claims[name]; ok {
		v = claims[name] // a top-level claim whose name has a '/'
	} else {
		for part := range strings.SplitSeq(name, "/") {
			m, ok := v.(map[string]any)
			if !ok {
				return "", false
			}
			v = m[part]
		}
	}
	if m, ok := v.(map[string]any); ok {
		v = m["name"]
	}
	var s string
	switch t := v.(type) {
	case string:
		s = t
	case bool, float64:
		b, _ := json.Marshal(t)
		s = string(b)
	default:
		return "", false
	}
	if s == "" || len(s) > maxClaimValue {
		return "", false
	}
	return s, true
}

// discover returns the issuer's go-oidc verifier, discovering the provider
// on first use. Concurrent callers share one discovery; after a failure,
// calls fail fast until the backoff has passed.
func (v *Verifier) discover(ctx context.Context, is *trustedIssuer) (*oidc.IDTokenVerifier, error) {
	is.mu.Lock()
	if is.verifier != nil {
		defer is.mu.Unlock()
		return is.verifier, nil
	}
	if v.now().Before(is.nextTry) {
		is.mu.Unlock()
		return nil, unavailable(nil)
	}
	is.mu.Unlock()

	ch := is.discovery.DoChan("discover", func() (any, error) {
		// The discovery outlives a caller that gives up: others may wait on it.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), discoveryTimeout)
		defer cancel()
		return v.discoverOnce(dctx, is)
	})
	select {
	case <-ctx.Done():
		return nil, unavailable(ctx.Err())
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*oidc.IDTokenVerifier), nil
	}
}

func unavailable(cause error) *usererr.Error {
	return &usererr.Error{Status: http.StatusServiceUnavailable, Code: CodeIssuerUnavailable,
		Msg: "identity provider is unavailable, try again shortly", Err: cause}
}

func (v *Verifier) discoverOnce(ctx context.Context, is *trustedIssuer) (*oidc.IDTokenVerifier, error) {
	is.mu.Lock()
	if is.verifier != nil {
		defer is.mu.Unlock()
		return is.verifier, nil
	}
	is.mu.Unlock()

	p, err := oidc.NewProvider(oidc.ClientContext(ctx, v.client), is.cfg.IssuerURL)
	var meta map[string]any
	if err == nil {
		err = p.Claims(&meta)
	}
	jwksURL, _ := meta[metaJWKSURI].(string)
	if err == nil && jwksURL == "" {
		err = errors.New("discovery document has no jwks_uri")
	}

	is.mu.Lock()
	defer is.mu.Unlock()
	if err != nil {
		is.backoff = min(max(is.backoff*2, discoveryBackoffStart), discoveryBackoffMax)
		is.nextTry = v.now().Add(is.backoff)
		v.log.Warn("OIDC discovery failed", slog.String("issuer", is.cfg.Name),
			slog.Duration("retry_in", is.backoff), slog.Any("err", err))
		return nil, unavailable(fmt.Errorf("discover %s: %w", is.cfg.IssuerURL, err))
	}
	is.keys = &keySet{url: jwksURL, client: v.client, now: v.now, minRefresh: v.minKeyRefresh, log: v.log.With(slog.String("issuer", is.cfg.Name))}
	is.verifier = oidc.NewVerifier(is.cfg.IssuerURL, is.keys, &oidc.Config{
		ClientID:             is.audience,
		SupportedSigningAlgs: signingAlgs,
		// go-oidc checks expiry without leeway; shifting its clock grants
		// the same skew the Verifier allows for not-before.
		Now: func() time.Time { return v.now().Add(-clockSkew) },
	})
	is.backoff, is.nextTry = 0, time.Time{}
	v.log.Info("OIDC issuer discovered", slog.String("issuer", is.cfg.Name), slog.String("url", is.cfg.IssuerURL))
	return is.verifier, nil
}

// sigResultKey carries a *sigResult through go-oidc to the key set.
type sigResultKey struct{}

// sigResult is what the key set learnt while go-oidc verified a token: the
// precise signature failure, or the payload once the signature verified.
type sigResult struct {
	err     *usererr.Error
	payload []byte
}

// keySet is an oidc.KeySet over an issuer's jwks_uri. It is written here
// rather than taken from go-oidc's RemoteKeySet for two reasons: that one
// re-fetches the key set on every failed verification, which would let anyone
// holding garbage tokens make postern hammer the identity provider, and it
// does not say whether a key id was unknown or a signature was wrong, which
// the error codes distinguish.
type keySet struct {
	url        string
	client     *http.Client
	now        func() time.Time
	minRefresh time.Duration
	log        *slog.Logger

	mu          sync.RWMutex
	keys        []jose.JSONWebKey
	fetched     bool      // keys has been loaded at least once
	lastAttempt time.Time // of the last fetch, failed or not
	lastErr     error     // of the last fetch; nil if it succeeded
	refresh     singleflight.Group
}

// VerifySignature implements oidc.KeySet.
func (k *keySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	res, _ := ctx.Value(sigResultKey{}).(*sigResult)
	if res == nil {
		res = &sigResult{}
	}
	payload, err := k.verify(ctx, jwt)
	if err != nil {
		res.err = err
		return nil, err
	}
	res.payload = payload
	return payload, nil
}

func (k *keySet) verify(ctx context.Context, jwt string) ([]byte, *usererr.Error) {
	algs := make([]jose.SignatureAlgorithm, len(signingAlgs))
	for i, a := range signingAlgs {
		algs[i] = jose.SignatureAlgorithm(a)
	}
	jws, err := jose.ParseSignedCompact(jwt, algs)
	if err != nil {
		return nil, tokenError(CodeInvalidToken, "token is malformed", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, tokenError(CodeInvalidToken, "token must carry exactly one signature", nil)
	}
	hdr := jws.Signatures[0].Header

	k.mu.RLock()
	keys, fetched := k.keys, k.fetched
	k.mu.RUnlock()
	candidates := matchingKeys(keys, hdr.KeyID, hdr.Algorithm)
	if len(candidates) == 0 {
		var ferr error
		keys, ferr = k.refreshKeys(ctx)
		if ferr != nil {
			if !fetched {
				return nil, unavailable(ferr)
			}
			return nil, tokenError(CodeUnknownKey, "token signing key is not known", ferr)
		}
		candidates = matchingKeys(keys, hdr.KeyID, hdr.Algorithm)
		if len(candidates) == 0 {
			return nil, tokenError(CodeUnknownKey, "token signing key is not known", fmt.Errorf("kid %q", hdr.KeyID))
		}
	}
	var verr error
	for _, key := range candidates {
		payload, err := jws.Verify(&key)
		if err == nil {
			return payload, nil
		}
		verr = err
	}
	return nil, tokenError(CodeBadSignature, "token signature is invalid", verr)
}

// matchingKeys returns the keys that may have signed a token with kid and
// alg: the key with that id (every key if the token names none) whose
// declared algorithm, if any, is alg.
func matchingKeys(keys []jose.JSONWebKey, kid, alg string) []jose.JSONWebKey {
	var out []jose.JSONWebKey
	for _, key := range keys {
		if kid != "" && key.KeyID != kid {
			continue
		}
		if key.Algorithm != "" && key.Algorithm != alg {
			continue
		}
		out = append(out, key)
	}
	return out
}

// refreshKeys fetches the key set unless that was tried less than minRefresh
// ago, and returns the keys now cached with the error of the latest fetch.
// Concurrent callers share one fetch.
func (k *keySet) refreshKeys(ctx context.Context) ([]jose.JSONWebKey, error) {
	ch := k.refresh.DoChan("refresh", func() (any, error) {
		k.mu.RLock()
		recent := !k.lastAttempt.IsZero() && k.now().Sub(k.lastAttempt) < k.minRefresh
		keys, lastErr := k.keys, k.lastErr
		k.mu.RUnlock()
		if recent {
			return keys, lastErr
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), discoveryTimeout)
		defer cancel()
		fresh, err := k.fetch(fctx)
		k.mu.Lock()
		defer k.mu.Unlock()
		k.lastAttempt, k.lastErr = k.now(), err
		if err != nil {
			k.log.Warn("JWKS fetch failed; keeping cached keys", slog.Int("cached", len(k.keys)), slog.Any("err", err))
			return k.keys, err
		}
		k.keys, k.fetched = fresh, true
		k.log.Debug("JWKS fetched", slog.Int("keys", len(fresh)))
		return fresh, nil
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case r := <-ch:
		keys, _ := r.Val.([]jose.JSONWebKey)
		return keys, r.Err
	}
}

// fetch downloads and parses the key set, keeping only asymmetric public
// signing keys; keys of types it does not know are skipped.
func (k *keySet) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, fmt.Errorf("build JWKS request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get JWKS: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, jwksMaxBytes))
	if err != nil {
		return nil, fmt.Errorf("read JWKS: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get JWKS: status %s", resp.Status)
	}
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("decode JWKS: %w", err)
	}
	var keys []jose.JSONWebKey
	for _, raw := range doc.Keys {
		var key jose.JSONWebKey
		if err := json.Unmarshal(raw, &key); err != nil {
			continue
		}
		if key.Use != "" && key.Use != "sig" {
			continue
		}
		switch pub := key.Key.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
		case *rsa.PrivateKey:
			key.Key = &pub.PublicKey
		case *ecdsa.PrivateKey:
			key.Key = &pub.PublicKey
		case ed25519.PrivateKey:
			key.Key = pub.Public()
		default:
			// Symmetric or unknown keys never verify tokens.
			continue
		}
		keys = append(keys, key)
	}
	return keys, nil
}

// decodeSegment decodes one base64url JWT segment as JSON into v.
func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return fmt.Errorf("decode segment: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode segment json: %w", err)
	}
	return nil
}

// stringList reads a claim that is a string or a list of strings.
func stringList(v any) ([]string, bool) {
	switch t := v.(type) {
	case string:
		return []string{t}, true
	case []any:
		out := make([]string, 0, len(t))
		for _, e := range t {
			s, ok := e.(string)
			if !ok {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	}
	return nil, false
}

// numericDate reads a JWT NumericDate (seconds since the epoch).
func numericDate(v any) (time.Time, bool) {
	f, ok := v.(float64)
	if !ok {
		return time.Time{}, false
	}
	sec := int64(f)
	return time.Unix(sec, int64((f-float64(sec))*1e9)), true
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
