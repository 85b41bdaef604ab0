package devidp

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"
)

// Defaults used when Options leaves a field empty.
const (
	DefaultClientID = "postern"
	DefaultTokenTTL = 10 * time.Minute
	defaultKeyBits  = 2048
	devicePoll      = time.Second
	deviceLifetime  = 10 * time.Minute
	loginPath       = "/login"
	devicePath      = "/device"
)

// User is an account of the development issuer.
type User struct {
	// Username is the preferred_username claim and the sub claim.
	Username string
	// Email is the email claim (always reported verified).
	Email string
	// Groups is the groups claim.
	Groups []string
}

// DefaultUsers is the account list used when Options.Users is empty.
func DefaultUsers() []User {
	return []User{{
		Username: "dev",
		Email:    "dev@example.com",
		Groups:   []string{"dev", "auditors", "approvers", "admins"},
	}}
}

// Options configures a Provider. Only Issuer is required.
type Options struct {
	// Issuer is the issuer URL, e.g. http://127.0.0.1:8080 or
	// http://localhost:8080/oidc. Its host must be a loopback address or
	// localhost; anything else is refused.
	Issuer string
	// ClientID is the one public client; "postern" if empty. It must use
	// PKCE (S256) and redirect to http://127.0.0.1:<any port>/callback or
	// http://localhost:<any port>/callback (RFC 8252).
	ClientID string
	// Users are the accounts; DefaultUsers() if empty.
	Users []User
	// DefaultUser is the Username (or Email) that authorization and device
	// requests are approved as; the first user if empty.
	DefaultUser string
	// SigningKey signs ID tokens; a fresh RSA-2048 key if nil.
	SigningKey *rsa.PrivateKey
	// KeyID is the signing key's kid; derived from the public key if empty.
	KeyID string
	// VerificationKeys are extra public keys published in the JWKS beside
	// the signing key (to rehearse key rollover, or for tokens minted with
	// WithSigner). The provider never signs with them. None if empty.
	VerificationKeys []jose.JSONWebKey
	// TokenTTL is the ID token lifetime; 10m if zero.
	TokenTTL time.Duration
	// Now is the clock for minted tokens and logins; time.Now if nil. The
	// protocol engine stamps tokens of the regular flows with the real time.
	Now func() time.Time
	// Log receives the provider's own events (start warning, approvals);
	// discarded if nil. The protocol engine logs failed requests through
	// slog's default logger, which it offers no way to replace.
	Log *slog.Logger
}

// Provider is the embedded development OpenID provider. Create it with New and
// serve it with ServeHTTP at the issuer's path. It keeps everything in
// memory; it is safe for concurrent use.
type Provider struct {
	issuer   string
	path     string // issuer path without trailing slash; "" at the root
	clientID string
	users    []User
	defUser  User
	key      *rsa.PrivateKey
	keyID    string
	extraMu  sync.Mutex
	extra    []jose.JSONWebKey // guarded by extraMu
	ttl      time.Duration
	now      func() time.Time
	log      *slog.Logger

	op      *op.Provider
	store   *storage
	mux     *http.ServeMux
	devPage *template.Template
}

// New returns a Provider for opts. It logs a warning that the issuer is
// insecure: it approves every request without asking anyone.
func New(opts Options) (*Provider, error) {
	issuer := strings.TrimSuffix(opts.Issuer, "/")
	u, err := url.Parse(issuer)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("development issuer %q: want an http URL such as http://127.0.0.1:8080", opts.Issuer)
	}
	if !loopbackHost(u.Hostname()) {
		return nil, fmt.Errorf("development issuer %q: host must be loopback (127.0.0.1, ::1 or localhost); the development issuer approves everyone and must never be reachable from the network", opts.Issuer)
	}
	p := &Provider{
		issuer:   issuer,
		path:     strings.TrimSuffix(u.Path, "/"),
		clientID: opts.ClientID,
		users:    opts.Users,
		key:      opts.SigningKey,
		keyID:    opts.KeyID,
		extra:    slices.Clone(opts.VerificationKeys),
		ttl:      opts.TokenTTL,
		now:      opts.Now,
		log:      opts.Log,
	}
	if p.clientID == "" {
		p.clientID = DefaultClientID
	}
	if len(p.users) == 0 {
		p.users = DefaultUsers()
	}
	for i, usr := range p.users {
		if usr.Username == "" {
			return nil, fmt.Errorf("development issuer: user %d has no username", i)
		}
	}
	p.defUser = p.users[0]
	if opts.DefaultUser != "" {
		usr, ok := p.user(opts.DefaultUser)
		if !ok {
			return nil, fmt.Errorf("development issuer: default user %q is not among the users", opts.DefaultUser)
		}
		p.defUser = usr
	}
	if p.key == nil {
		if p.key, err = rsa.GenerateKey(rand.Reader, defaultKeyBits); err != nil {
			return nil, fmt.Errorf("generate development signing key: %w", err)
		}
	}
	if p.keyID == "" {
		sum := sha256.Sum256(p.key.N.Bytes())
		p.keyID = "devidp-" + hex.EncodeToString(sum[:8])
	}
	if p.ttl <= 0 {
		p.ttl = DefaultTokenTTL
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.store = newStorage(p)

	var cryptoKey [32]byte
	if _, err := rand.Read(cryptoKey[:]); err != nil {
		return nil, fmt.Errorf("generate development token key: %w", err)
	}
	cfg := &op.Config{
		CryptoKey:             cryptoKey,
		CodeMethodS256:        true,
		GrantTypeRefreshToken: true,
		SupportedUILocales:    []language.Tag{language.English},
		SupportedScopes:       []string{"openid", "email", "profile", "groups", "offline_access"},
		DeviceAuthorization: op.DeviceAuthorizationConfig{
			Lifetime:     deviceLifetime,
			PollInterval: devicePoll,
			UserFormPath: p.path + devicePath,
			UserCode:     op.UserCodeBase20,
		},
	}
	var opts2 []op.Option
	if u.Scheme == "http" {
		opts2 = append(opts2, op.WithAllowInsecure())
	}
	p.op, err = op.NewProvider(cfg, p.store, op.StaticIssuer(p.issuer), opts2...)
	if err != nil {
		return nil, fmt.Errorf("create development OpenID provider: %w", err)
	}
	p.devPage = template.Must(template.New("device").Parse(devicePageHTML))
	p.mux = http.NewServeMux()
	p.mux.HandleFunc("GET "+loginPath, p.handleLogin)
	p.mux.HandleFunc(devicePath, p.handleDevice)
	p.mux.Handle("/", p.op)

	p.log.Warn("development OIDC issuer: insecure, loopback only; every login is approved without a password",
		slog.String("issuer", p.issuer), slog.String("client_id", p.clientID),
		slog.String("default_user", p.defUser.Username))
	return p, nil
}

// Issuer returns the issuer URL (the iss claim of its tokens).
func (p *Provider) Issuer() string { return p.issuer }

// ClientID returns the client id tokens are issued for (their aud claim).
func (p *Provider) ClientID() string { return p.clientID }

// KeyID returns the kid of the signing key.
func (p *Provider) KeyID() string { return p.keyID }

// PublicKey returns the public half of the signing key.
func (p *Provider) PublicKey() *rsa.PublicKey { return &p.key.PublicKey }

// AddVerificationKey publishes another public key in the JWKS from now on,
// as an identity provider does before it rolls over to a new signing key.
// Only the public part of k is served.
func (p *Provider) AddVerificationKey(k jose.JSONWebKey) {
	p.extraMu.Lock()
	defer p.extraMu.Unlock()
	p.extra = append(p.extra, k)
}

// verificationKeys returns a copy of the extra published keys.
func (p *Provider) verificationKeys() []jose.JSONWebKey {
	p.extraMu.Lock()
	defer p.extraMu.Unlock()
	return slices.Clone(p.extra)
}

// ServeHTTP serves the provider. Mount it at the issuer's path: for an issuer
// http://127.0.0.1:8080/oidc, mux.Handle("/oidc/", p); at the root, "/".
// Requests outside the issuer's path are answered 404.
func (p *Provider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p.path != "" {
		rest, ok := strings.CutPrefix(r.URL.Path, p.path)
		if !ok || rest != "" && rest[0] != '/' {
			http.NotFound(w, r)
			return
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path = rest
		r2.URL.RawPath = ""
		r = r2
	}
	p.mux.ServeHTTP(w, r)
}

// user finds a configured user by username or email.
func (p *Provider) user(name string) (User, bool) {
	for _, u := range p.users {
		if u.Username == name || (u.Email != "" && strings.EqualFold(u.Email, name)) {
			return u, true
		}
	}
	return User{}, false
}

// handleLogin completes an authorization request without a login page: as
// the login_hint user when that names a configured user, else as the default
// user.
func (p *Provider) handleLogin(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	usr, err := p.store.completeAuthRequest(id, p.defUser)
	if err != nil {
		p.log.Info("development login refused", slog.Any("err", err))
		http.Error(w, "unknown or expired authorization request, or unknown login_hint user", http.StatusBadRequest)
		return
	}
	p.log.Info("development login approved", slog.String("user", usr.Username))
	ctx := op.ContextWithIssuer(r.Context(), p.issuer)
	http.Redirect(w, r, op.AuthCallbackURL(p.op)(ctx, id), http.StatusFound)
}

// handleDevice is the device verification page (RFC 8628 §3.3). Visiting it
// with a user_code approves that code as the default user, or as the user
// named by the "user" form field; without a code it shows a small form.
func (p *Provider) handleDevice(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	data := struct {
		Users    []User
		Message  string
		Approved bool
	}{Users: p.users}
	code := strings.TrimSpace(r.Form.Get("user_code"))
	if code != "" {
		usr := p.defUser
		status := http.StatusOK
		if name := r.Form.Get("user"); name != "" {
			var ok bool
			if usr, ok = p.user(name); !ok {
				status = http.StatusBadRequest
				data.Message = "Unknown user."
			}
		}
		if status == http.StatusOK {
			if err := p.store.completeDevice(code, usr); err != nil {
				status = http.StatusBadRequest
				data.Message = "Unknown or expired code."
				p.log.Info("development device approval refused", slog.Any("err", err))
			} else {
				data.Approved = true
				data.Message = "Approved as " + usr.Username + ". You can close this page."
				p.log.Info("development device approval", slog.String("user", usr.Username))
			}
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(status)
	} else {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
	}
	if err := p.devPage.Execute(w, data); err != nil {
		p.log.Warn("render device page", slog.Any("err", err))
	}
}

const devicePageHTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>postern development sign-in</title></head>
<body>
<h1>postern development sign-in</h1>
<p><strong>Insecure development issuer:</strong> every request is approved.</p>
{{with .Message}}<p>{{.}}</p>{{end}}
{{if not .Approved}}
<form method="post">
<label>Code <input name="user_code" autofocus></label>
<label>User <select name="user">{{range .Users}}<option value="{{.Username}}">{{.Username}} ({{.Email}})</option>{{end}}</select></label>
<button type="submit">Approve</button>
</form>
{{end}}
</body></html>
`

// loopbackHost reports whether host is localhost or a loopback IP address.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

var errNotFound = errors.New("not found")
