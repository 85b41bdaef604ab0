package devidp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// Lifetimes of the in-memory records; expired ones are purged on writes.
const (
	authRequestTTL  = 10 * time.Minute
	accessTokenTTL  = 10 * time.Minute
	refreshTokenTTL = 24 * time.Hour
)

// storage is the protocol engine's view of the provider: one public client,
// the configured users, and in-memory authorization requests, codes, access
// tokens and device authorizations. mu guards every map.
type storage struct {
	p *Provider

	mu       sync.Mutex
	requests map[string]*authRequest  // by request id
	codes    map[string]string        // authorization code → request id
	tokens   map[string]*accessToken  // by token id
	refresh  map[string]*refreshToken // by token value
	devices  map[string]*deviceEntry  // by device code
	userCode map[string]string        // user code → device code
}

var (
	_ op.Storage                    = (*storage)(nil)
	_ op.DeviceAuthorizationStorage = (*storage)(nil)
	_ op.CanSetUserinfoFromRequest  = (*storage)(nil)
)

func newStorage(p *Provider) *storage {
	return &storage{
		p:        p,
		requests: make(map[string]*authRequest),
		codes:    make(map[string]string),
		tokens:   make(map[string]*accessToken),
		refresh:  make(map[string]*refreshToken),
		devices:  make(map[string]*deviceEntry),
		userCode: make(map[string]string),
	}
}

// authRequest is one authorization request; it implements op.AuthRequest.
type authRequest struct {
	id            string
	created       time.Time
	clientID      string
	redirectURI   string
	scopes        []string
	state, nonce  string
	responseType  oidc.ResponseType
	responseMode  oidc.ResponseMode
	codeChallenge *oidc.CodeChallenge
	loginHint     string

	subject  string
	authTime time.Time
	done     bool
}

func (a *authRequest) GetID() string                         { return a.id }
func (a *authRequest) GetACR() string                        { return "" }
func (a *authRequest) GetAMR() []string                      { return nil }
func (a *authRequest) GetAudience() []string                 { return []string{a.clientID} }
func (a *authRequest) GetAuthTime() time.Time                { return a.authTime }
func (a *authRequest) GetClientID() string                   { return a.clientID }
func (a *authRequest) GetCodeChallenge() *oidc.CodeChallenge { return a.codeChallenge }
func (a *authRequest) GetNonce() string                      { return a.nonce }
func (a *authRequest) GetRedirectURI() string                { return a.redirectURI }
func (a *authRequest) GetResponseType() oidc.ResponseType    { return a.responseType }
func (a *authRequest) GetResponseMode() oidc.ResponseMode    { return a.responseMode }
func (a *authRequest) GetScopes() []string                   { return a.scopes }
func (a *authRequest) GetState() string                      { return a.state }
func (a *authRequest) GetSubject() string                    { return a.subject }
func (a *authRequest) Done() bool                            { return a.done }

type accessToken struct {
	subject  string
	clientID string
	scopes   []string
	expires  time.Time
}

// refreshToken is one refresh token; it implements op.RefreshTokenRequest.
// Tokens rotate: each use replaces the token with a new one.
type refreshToken struct {
	subject  string
	clientID string
	scopes   []string
	amr      []string
	authTime time.Time
	expires  time.Time
}

func (r *refreshToken) GetAMR() []string                 { return r.amr }
func (r *refreshToken) GetAudience() []string            { return []string{r.clientID} }
func (r *refreshToken) GetAuthTime() time.Time           { return r.authTime }
func (r *refreshToken) GetClientID() string              { return r.clientID }
func (r *refreshToken) GetScopes() []string              { return r.scopes }
func (r *refreshToken) GetSubject() string               { return r.subject }
func (r *refreshToken) SetCurrentScopes(scopes []string) { r.scopes = scopes }

type deviceEntry struct {
	userCode string
	state    op.DeviceAuthorizationState
}

func randomID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// purgeLocked drops expired records. The caller holds s.mu.
func (s *storage) purgeLocked(now time.Time) {
	for id, r := range s.requests {
		if now.Sub(r.created) > authRequestTTL {
			delete(s.requests, id)
		}
	}
	for code, id := range s.codes {
		if _, ok := s.requests[id]; !ok {
			delete(s.codes, code)
		}
	}
	for id, t := range s.tokens {
		if now.After(t.expires) {
			delete(s.tokens, id)
		}
	}
	for v, r := range s.refresh {
		if now.After(r.expires) {
			delete(s.refresh, v)
		}
	}
	for dc, d := range s.devices {
		if now.After(d.state.Expires.Add(time.Minute)) {
			delete(s.userCode, d.userCode)
			delete(s.devices, dc)
		}
	}
}

// CreateAuthRequest stores a validated authorization request. PKCE with
// S256 is required: the client is public.
func (s *storage) CreateAuthRequest(_ context.Context, req *oidc.AuthRequest, _ string) (op.AuthRequest, error) {
	if req.CodeChallenge == "" || req.CodeChallengeMethod != oidc.CodeChallengeMethodS256 {
		return nil, oidc.ErrInvalidRequest().WithDescription("PKCE with code_challenge_method=S256 is required")
	}
	id, err := randomID()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	a := &authRequest{
		id:            id,
		created:       now,
		clientID:      req.ClientID,
		redirectURI:   req.RedirectURI,
		scopes:        req.Scopes,
		state:         req.State,
		nonce:         req.Nonce,
		responseType:  req.ResponseType,
		responseMode:  req.ResponseMode,
		codeChallenge: &oidc.CodeChallenge{Challenge: req.CodeChallenge, Method: req.CodeChallengeMethod},
		loginHint:     req.LoginHint,
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.purgeLocked(now)
	s.requests[id] = a
	return a, nil
}

// completeAuthRequest approves request id as its login_hint user, or def.
func (s *storage) completeAuthRequest(id string, def User) (User, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.requests[id]
	if !ok {
		return User{}, fmt.Errorf("auth request %q: %w", id, errNotFound)
	}
	usr := def
	if a.loginHint != "" {
		if usr, ok = s.p.user(a.loginHint); !ok {
			return User{}, fmt.Errorf("login_hint %q: %w", a.loginHint, errNotFound)
		}
	}
	a.subject = usr.Username
	a.authTime = s.p.now()
	a.done = true
	return usr, nil
}

// AuthRequestByID returns a stored request.
func (s *storage) AuthRequestByID(_ context.Context, id string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.requests[id]
	if !ok {
		return nil, fmt.Errorf("auth request: %w", errNotFound)
	}
	return a, nil
}

// AuthRequestByCode returns the request an authorization code was issued for.
func (s *storage) AuthRequestByCode(_ context.Context, code string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.requests[s.codes[code]]
	if !ok {
		return nil, fmt.Errorf("authorization code: %w", errNotFound)
	}
	return a, nil
}

// SaveAuthCode records the code issued for request id.
func (s *storage) SaveAuthCode(_ context.Context, id, code string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.codes[code] = id
	return nil
}

// DeleteAuthRequest forgets a request and its code, so a code is used once.
func (s *storage) DeleteAuthRequest(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.requests, id)
	for code, rid := range s.codes {
		if rid == id {
			delete(s.codes, code)
		}
	}
	return nil
}

// CreateAccessToken stores an opaque access token (usable at userinfo).
func (s *storage) CreateAccessToken(_ context.Context, req op.TokenRequest) (string, time.Time, error) {
	id, err := randomID()
	if err != nil {
		return "", time.Time{}, err
	}
	now := time.Now()
	t := &accessToken{subject: req.GetSubject(), scopes: req.GetScopes(), expires: now.Add(accessTokenTTL), clientID: s.p.clientID}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.purgeLocked(now)
	s.tokens[id] = t
	return id, t.expires, nil
}

// CreateAccessAndRefreshTokens issues an access token and a refresh token
// (for requests with the offline_access scope). When current is set, this is
// a refresh: current is consumed and replaced.
func (s *storage) CreateAccessAndRefreshTokens(ctx context.Context, req op.TokenRequest, current string) (string, string, time.Time, error) {
	accessID, exp, err := s.CreateAccessToken(ctx, req)
	if err != nil {
		return "", "", time.Time{}, err
	}
	value, err := randomID()
	if err != nil {
		return "", "", time.Time{}, err
	}
	now := time.Now()
	rt := &refreshToken{subject: req.GetSubject(), clientID: s.p.clientID, scopes: req.GetScopes(), expires: now.Add(refreshTokenTTL)}
	if ir, ok := req.(op.IDTokenRequest); ok {
		rt.amr, rt.authTime = ir.GetAMR(), ir.GetAuthTime()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if current != "" {
		if _, ok := s.refresh[current]; !ok {
			return "", "", time.Time{}, op.ErrInvalidRefreshToken
		}
		delete(s.refresh, current)
	}
	s.refresh[value] = rt
	return accessID, value, exp, nil
}

// TokenRequestByRefreshToken returns the grant behind a refresh token.
func (s *storage) TokenRequestByRefreshToken(_ context.Context, value string) (op.RefreshTokenRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt, ok := s.refresh[value]
	if !ok || time.Now().After(rt.expires) {
		return nil, op.ErrInvalidRefreshToken
	}
	cp := *rt
	cp.scopes = append([]string(nil), rt.scopes...)
	return &cp, nil
}

// TerminateSession drops the user's access tokens.
func (s *storage) TerminateSession(_ context.Context, userID, clientID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, t := range s.tokens {
		if t.subject == userID && t.clientID == clientID {
			delete(s.tokens, id)
		}
	}
	for v, r := range s.refresh {
		if r.subject == userID && r.clientID == clientID {
			delete(s.refresh, v)
		}
	}
	return nil
}

// RevokeToken drops an access token; unknown tokens are already revoked.
func (s *storage) RevokeToken(_ context.Context, tokenOrID, _, _ string) *oidc.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.tokens, tokenOrID)
	delete(s.refresh, tokenOrID)
	return nil
}

// GetRefreshTokenInfo identifies a refresh token for revocation.
func (s *storage) GetRefreshTokenInfo(_ context.Context, _ string, value string) (string, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt, ok := s.refresh[value]
	if !ok {
		return "", "", op.ErrInvalidRefreshToken
	}
	return rt.subject, value, nil
}

// signingKey adapts the provider's RSA key to op.SigningKey and op.Key.
type signingKey struct{ p *Provider }

func (k signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k signingKey) Algorithm() jose.SignatureAlgorithm          { return jose.RS256 }
func (k signingKey) ID() string                                  { return k.p.keyID }
func (k signingKey) Use() string                                 { return "sig" }
func (k signingKey) Key() any                                    { return k.p.key }

type publicKey struct{ signingKey }

func (k publicKey) Key() any { return &k.p.key.PublicKey }

// extraKey adapts a configured verification key to op.Key.
type extraKey struct{ k jose.JSONWebKey }

func (k extraKey) ID() string                         { return k.k.KeyID }
func (k extraKey) Algorithm() jose.SignatureAlgorithm { return jose.SignatureAlgorithm(k.k.Algorithm) }
func (k extraKey) Use() string                        { return "sig" }
func (k extraKey) Key() any                           { return k.k.Public().Key }

// SigningKey returns the ID token signing key.
func (s *storage) SigningKey(context.Context) (op.SigningKey, error) {
	return signingKey{s.p}, nil
}

// SignatureAlgorithms lists RS256, the only algorithm the provider signs with.
func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

// KeySet returns the public keys served at the JWKS endpoint.
func (s *storage) KeySet(context.Context) ([]op.Key, error) {
	keys := []op.Key{publicKey{signingKey{s.p}}}
	for _, k := range s.p.verificationKeys() {
		keys = append(keys, extraKey{k})
	}
	return keys, nil
}

// client is the provider's one public, native client.
type client struct{ p *Provider }

func (c client) GetID() string { return c.p.clientID }
func (c client) RedirectURIs() []string {
	// Native client: any port on these loopback URIs matches (RFC 8252 §7.3).
	// /callback is postern login's loopback listener; /ui/callback is the web
	// UI served by postern serve --dev on loopback.
	return []string{"http://127.0.0.1/callback", "http://localhost/callback",
		"http://127.0.0.1/ui/callback", "http://localhost/ui/callback"}
}
func (c client) PostLogoutRedirectURIs() []string    { return nil }
func (c client) ApplicationType() op.ApplicationType { return op.ApplicationTypeNative }
func (c client) AuthMethod() oidc.AuthMethod         { return oidc.AuthMethodNone }
func (c client) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}
func (c client) LoginURL(id string) string            { return c.p.path + loginPath + "?id=" + id }
func (c client) AccessTokenType() op.AccessTokenType  { return op.AccessTokenTypeBearer }
func (c client) IDTokenLifetime() time.Duration       { return c.p.ttl }
func (c client) DevMode() bool                        { return false }
func (c client) IsScopeAllowed(scope string) bool     { return scope == "groups" }
func (c client) IDTokenUserinfoClaimsAssertion() bool { return true }
func (c client) ClockSkew() time.Duration             { return 0 }
func (c client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c client) GrantTypes() []oidc.GrantType {
	return []oidc.GrantType{oidc.GrantTypeCode, oidc.GrantTypeDeviceCode, oidc.GrantTypeRefreshToken}
}

// GetClientByClientID returns the one client.
func (s *storage) GetClientByClientID(_ context.Context, id string) (op.Client, error) {
	if id != s.p.clientID {
		return nil, fmt.Errorf("client %q: %w", id, errNotFound)
	}
	return client{s.p}, nil
}

// AuthorizeClientIDSecret refuses: the client is public and has no secret.
func (s *storage) AuthorizeClientIDSecret(context.Context, string, string) error {
	return errors.New("the development client is public and has no secret")
}

// SetUserinfoFromScopes is deprecated by the engine; SetUserinfoFromRequest
// does the work.
func (s *storage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}

// SetUserinfoFromRequest fills ID token claims: email, email_verified, name,
// preferred_username and groups, whatever the scopes (development only).
func (s *storage) SetUserinfoFromRequest(_ context.Context, info *oidc.UserInfo, req op.IDTokenRequest, _ []string) error {
	return s.setUserinfo(info, req.GetSubject())
}

func (s *storage) setUserinfo(info *oidc.UserInfo, subject string) error {
	usr, ok := s.p.user(subject)
	if !ok {
		return fmt.Errorf("user %q: %w", subject, errNotFound)
	}
	info.Subject = usr.Username
	info.PreferredUsername = usr.Username
	info.Name = usr.Username
	if usr.Email != "" {
		info.Email = usr.Email
		info.EmailVerified = oidc.Bool(true)
	}
	groups := usr.Groups
	if groups == nil {
		groups = []string{}
	}
	info.AppendClaims("groups", groups)
	return nil
}

// SetUserinfoFromToken answers the userinfo endpoint for an access token.
func (s *storage) SetUserinfoFromToken(_ context.Context, info *oidc.UserInfo, tokenID, _, _ string) error {
	s.mu.Lock()
	t, ok := s.tokens[tokenID]
	s.mu.Unlock()
	if !ok || time.Now().After(t.expires) {
		return errors.New("access token is invalid or expired")
	}
	return s.setUserinfo(info, t.subject)
}

// SetIntrospectionFromToken answers token introspection.
func (s *storage) SetIntrospectionFromToken(_ context.Context, resp *oidc.IntrospectionResponse, tokenID, _, clientID string) error {
	s.mu.Lock()
	t, ok := s.tokens[tokenID]
	s.mu.Unlock()
	if !ok || time.Now().After(t.expires) || clientID != s.p.clientID {
		return errors.New("access token is invalid or expired")
	}
	info := new(oidc.UserInfo)
	if err := s.setUserinfo(info, t.subject); err != nil {
		return err
	}
	resp.SetUserInfo(info)
	resp.Scope = t.scopes
	resp.ClientID = t.clientID
	resp.Expiration = oidc.FromTime(t.expires)
	return nil
}

// GetPrivateClaimsFromScopes adds no access token claims.
func (s *storage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil
}

// GetKeyByIDAndClientID refuses: JWT client authentication is not offered.
func (s *storage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errors.New("JWT profile is not supported by the development issuer")
}

// ValidateJWTProfileScopes refuses: the JWT profile grant is not offered.
func (s *storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errors.New("JWT profile is not supported by the development issuer")
}

// Health reports the in-memory storage healthy.
func (s *storage) Health(context.Context) error { return nil }

// StoreDeviceAuthorization records a new device authorization.
func (s *storage) StoreDeviceAuthorization(_ context.Context, clientID, deviceCode, userCode string, expires time.Time, scopes []string) error {
	if clientID != s.p.clientID {
		return fmt.Errorf("client %q: %w", clientID, errNotFound)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.purgeLocked(time.Now())
	if _, dup := s.userCode[userCode]; dup {
		return op.ErrDuplicateUserCode
	}
	s.devices[deviceCode] = &deviceEntry{
		userCode: userCode,
		state:    op.DeviceAuthorizationState{ClientID: clientID, Scopes: scopes, Expires: expires},
	}
	s.userCode[userCode] = deviceCode
	return nil
}

// GetDeviceAuthorizatonState returns a copy of a device authorization's
// state. A completed authorization is returned once and then forgotten, so
// a device code yields one set of tokens.
func (s *storage) GetDeviceAuthorizatonState(ctx context.Context, clientID, deviceCode string) (*op.DeviceAuthorizationState, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.devices[deviceCode]
	if !ok || d.state.ClientID != clientID {
		return nil, fmt.Errorf("device code: %w", errNotFound)
	}
	st := d.state
	st.Scopes = append([]string(nil), d.state.Scopes...)
	if st.Done {
		delete(s.devices, deviceCode)
		delete(s.userCode, d.userCode)
	}
	return &st, nil
}

// completeDevice approves the device authorization with userCode as usr.
func (s *storage) completeDevice(userCode string, usr User) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.devices[s.userCode[strings.ToUpper(userCode)]]
	if !ok || time.Now().After(d.state.Expires) {
		return fmt.Errorf("user code: %w", errNotFound)
	}
	d.state.Done = true
	d.state.Subject = usr.Username
	d.state.AuthTime = s.p.now()
	return nil
}
