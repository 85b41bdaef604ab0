package login

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// Mode selects how Login obtains an ID token.
type Mode int

// The login modes.
const (
	// ModeBrowser runs the authorization code flow with PKCE and a loopback
	// redirect (the default).
	ModeBrowser Mode = iota
	// ModeDevice runs the device authorization grant.
	ModeDevice
	// ModeTokenFile reads an ID token from Options.TokenFile.
	ModeTokenFile
	// ModeTokenEnv reads an ID token from the environment variable Options.TokenEnv.
	ModeTokenEnv
	// ModeTokenSource asks Options.TokenSource for an ID token (postern
	// agent).
	ModeTokenSource
)

// String returns the mode's name.
func (m Mode) String() string {
	switch m {
	case ModeBrowser:
		return "browser"
	case ModeDevice:
		return "device"
	case ModeTokenFile:
		return "token-file"
	case ModeTokenEnv:
		return "token-env"
	case ModeTokenSource:
		return "token-source"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Options configures Login. The zero value, with Bastion set, runs the
// browser flow into the default profile directory.
type Options struct {
	// Bastion is the bastion's HTTP API base URL. Required.
	Bastion string
	// Dir is the profile directory; ~/.postern/<bastion-host>/ if empty.
	Dir string
	// Mode selects the token flow; ModeBrowser if zero.
	Mode Mode
	// TokenFile is the file holding an ID token, for ModeTokenFile.
	TokenFile string
	// TokenEnv names the environment variable holding an ID token, for ModeTokenEnv.
	TokenEnv string
	// TokenSource yields the ID token, for ModeTokenSource.
	TokenSource TokenSource
	// Issuer selects an issuer from the bastion's list by name; required only
	// when the bastion offers several interactive issuers.
	Issuer string
	// LoginHint names the account to sign in as (the OIDC login_hint
	// parameter): identity providers may pre-fill it, and the development
	// issuer signs in as that user instead of its default one. None if
	// empty.
	LoginHint string
	// TTL is the requested certificate lifetime; the bastion's default for
	// the identity's kind if zero. The bastion may shorten it.
	TTL time.Duration
	// Quiet reports whether to print nothing on success.
	Quiet bool
	// Force reports whether to renew a certificate that is still fresh.
	Force bool
	// JSONErrors reports whether the profile's ssh_config asks the bastion
	// for JSON error messages on sessions (SetEnv POSTERN_JSON_ERRORS=1), for
	// agents that parse them.
	JSONErrors bool
	// NoBrowser reports whether to only print the authorization URL instead
	// of opening a browser.
	NoBrowser bool
	// OpenBrowser opens a URL for the browser flow; nil means xdg-open if it
	// is installed (the URL is printed either way). It must return without
	// waiting for the sign-in: the loopback callback is answered only after
	// it returns.
	OpenBrowser func(url string) error
	// HTTPClient is used for the bastion and the identity provider; a client
	// with a 30s timeout if nil.
	HTTPClient *http.Client
	// Out receives the success summary; io.Discard if nil.
	Out io.Writer
	// Err receives prompts (URLs, device codes) and progress; io.Discard if nil.
	Err io.Writer
	// Now is the clock; time.Now if nil.
	Now func() time.Time
}

func (o *Options) setDefaults() {
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Err == nil {
		o.Err = io.Discard
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Quiet {
		o.Out = io.Discard
	}
}

// progress returns where progress notes go: Err, or nowhere when Quiet.
// Prompts the user must act on (a URL, a device code) always go to Err.
func (o *Options) progress() io.Writer {
	if o.Quiet {
		return io.Discard
	}
	return o.Err
}

// Login obtains an ID token, exchanges it at the bastion for a user
// certificate and writes the profile directory. It returns the profile,
// which is the existing one when its certificate is still fresh (more than a
// fifth of its lifetime left) and Force is false.
//
// Errors the bastion reports are *ServerError values; their text is the
// server's message and code and never contains the token.
func Login(ctx context.Context, opts Options) (*Profile, error) {
	o := opts
	o.setDefaults()
	u, err := parseBastionURL(o.Bastion)
	if err != nil {
		return nil, err
	}
	base := strings.TrimRight(u.String(), "/")
	dir := o.Dir
	if dir == "" {
		if dir, err = DefaultDir(base); err != nil {
			return nil, err
		}
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, fmt.Errorf("profile directory: %w", err)
	}

	if !o.Force {
		if p, ok := freshProfile(dir, base, o.Issuer, o.Now()); ok {
			if p.JSONErrors != o.JSONErrors {
				p.JSONErrors = o.JSONErrors
				if err := writeProfileConfig(p); err != nil {
					return nil, err
				}
			}
			fmt.Fprintf(o.Out, "Certificate for %s is still valid until %s (use --force to renew).\n",
				p.Username, p.ValidBefore.Local().Format(time.RFC1123))
			return p, nil
		}
	}

	// A token given as input is read first, so a missing one fails fast.
	var token, issuer string
	switch o.Mode {
	case ModeTokenFile:
		token, err = tokenFromFile(o.TokenFile)
	case ModeTokenEnv:
		token, err = tokenFromEnv(o.TokenEnv)
	case ModeTokenSource:
		if o.TokenSource == nil {
			err = errors.New("no token source")
		} else if token, err = o.TokenSource.Token(ctx); err != nil {
			err = &TokenSourceError{Source: o.TokenSource.String(), Err: err}
		}
	case ModeBrowser, ModeDevice:
	default:
		err = fmt.Errorf("unknown login mode %v", o.Mode)
	}
	if err != nil {
		return nil, err
	}
	api := &apiClient{base: base, hc: o.HTTPClient}
	cfg, err := api.fetchConfig(ctx)
	if err != nil {
		return nil, err
	}
	if o.Mode == ModeBrowser || o.Mode == ModeDevice {
		iss, err := pickIssuer(cfg.Issuers, o.Issuer)
		if err != nil {
			return nil, err
		}
		issuer = iss.Name
		switch {
		case iss.Protocol == ProtocolSAML && o.Mode == ModeDevice:
			err = fmt.Errorf("%s is a SAML identity provider: it signs in only in a browser (omit --device)", iss.Name)
		case iss.Protocol == ProtocolSAML:
			token, err = samlToken(ctx, &o, iss)
		case o.Mode == ModeDevice:
			token, err = deviceToken(ctx, &o, iss)
		default:
			token, err = browserToken(ctx, &o, iss)
		}
		if err != nil {
			return nil, err
		}
	}

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create profile directory: %w", err)
	}
	signer, err := loadOrCreateKey(dir, "postern@"+u.Hostname())
	if err != nil {
		return nil, err
	}
	pub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	cr, err := api.requestCert(ctx, token, pub, o.TTL)
	if err != nil {
		return nil, err
	}
	cert, err := parseIssuedCert(cr.Certificate, signer.PublicKey())
	if err != nil {
		return nil, err
	}
	hostCA := cr.HostCA
	if hostCA == "" {
		hostCA = cfg.HostCA
	}
	p := newProfile(dir)
	p.JSONErrors = o.JSONErrors
	err = writeProfile(p, profileInput{
		bastion: base, sshAddress: cfg.SSHAddress, hostCA: hostCA, issuer: issuer,
		cert: cert, certLine: cr.Certificate, serial: strings.Trim(string(cr.Serial), `"`),
	})
	if err != nil {
		return nil, err
	}
	printSummary(o.Out, p)
	return p, nil
}

// freshProfile returns the profile in dir if it belongs to bastion (and
// issuer, if named), and its certificate is fresh at now and matches the key
// beside it.
func freshProfile(dir, bastion, issuer string, now time.Time) (*Profile, bool) {
	p, err := LoadProfile(dir)
	if err != nil || p.Bastion != bastion || (issuer != "" && p.Issuer != issuer) || !p.Fresh(now) {
		return nil, false
	}
	if _, err := p.Signer(); err != nil { // key and certificate must pair up
		return nil, false
	}
	for _, f := range []string{p.KnownHosts, p.SSHConfig} {
		if _, err := os.Stat(f); err != nil {
			return nil, false
		}
	}
	return p, true
}

// parseIssuedCert checks that the bastion's answer is a user certificate for
// our key.
func parseIssuedCert(line string, key ssh.PublicKey) (*ssh.Certificate, error) {
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return nil, fmt.Errorf("the bastion sent an unreadable certificate: %w", err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok || cert.CertType != ssh.UserCert {
		return nil, errors.New("the bastion sent something other than a user certificate")
	}
	if string(cert.Key.Marshal()) != string(key.Marshal()) {
		return nil, errors.New("the bastion certified a different key")
	}
	return cert, nil
}

// pickIssuer selects the issuer for an interactive flow: the one named, or
// the only interactive (human) issuer.
func pickIssuer(issuers []IssuerInfo, name string) (IssuerInfo, error) {
	var names []string
	for _, is := range issuers {
		if name != "" && is.Name == name {
			return is, nil
		}
		names = append(names, is.Name)
	}
	if name != "" {
		return IssuerInfo{}, fmt.Errorf("the bastion has no issuer %q (it has: %s)", name, strings.Join(names, ", "))
	}
	var human []IssuerInfo
	for _, is := range issuers {
		if is.Kind == "" || is.Kind == "human" {
			human = append(human, is)
		}
	}
	switch len(human) {
	case 0:
		return IssuerInfo{}, errors.New("the bastion offers no interactive login; use --token-file or --token-env")
	case 1:
		return human[0], nil
	}
	names = names[:0]
	for _, is := range human {
		names = append(names, is.Name)
	}
	return IssuerInfo{}, fmt.Errorf("the bastion offers several issuers; choose one with --issuer (%s)", strings.Join(names, ", "))
}

// scopes returns the scopes to request from iss, always including openid.
func scopes(iss IssuerInfo) []string {
	s := slices.Clone(iss.Scopes)
	if len(s) == 0 {
		s = []string{"openid", "email", "profile"}
	}
	if !slices.Contains(s, "openid") {
		s = append([]string{"openid"}, s...)
	}
	return s
}

// TokenSourceError is a token source's failure, as Login reports it: the
// bastion was not asked.
type TokenSourceError struct {
	// Source names the source.
	Source string
	// Err is its failure (never holding a token).
	Err error
}

func (e *TokenSourceError) Error() string { return e.Source + ": " + e.Err.Error() }

func (e *TokenSourceError) Unwrap() error { return e.Err }

// tokenFromFile reads an ID token from a file.
func tokenFromFile(path string) (string, error) {
	if path == "" {
		return "", errors.New("no token file given")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	return t, nil
}

// tokenFromEnv reads an ID token from an environment variable.
func tokenFromEnv(name string) (string, error) {
	if name == "" {
		return "", errors.New("no token environment variable given")
	}
	t := strings.TrimSpace(os.Getenv(name))
	if t == "" {
		return "", fmt.Errorf("environment variable %s is empty or unset", name)
	}
	return t, nil
}

// printSummary tells the user what was written and how to use it.
func printSummary(w io.Writer, p *Profile) {
	cfg := sshQuote(p.SSHConfig)
	fmt.Fprintf(w, "Logged in to %s as %s; certificate valid until %s.\n",
		p.Bastion, p.Username, p.ValidBefore.Local().Format(time.RFC1123))
	fmt.Fprintf(w, "Principals: %s\n", strings.Join(p.Principals, ", "))
	fmt.Fprintf(w, "Connect through the bastion with:\n")
	fmt.Fprintf(w, "  ssh -F %s -J %s <login>@<target>\n", cfg, p.BastionHost)
	fmt.Fprintf(w, "or add this line at the top of ~/.ssh/config to use plain ssh -J %s:\n", p.BastionHost)
	fmt.Fprintf(w, "  Include %s\n", cfg)
	fmt.Fprintf(w, "(its Host * block offers the certificate to every host; narrow it to your targets if you include it).\n")
}
