package dextest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/oauth2"
	"golang.org/x/sync/errgroup"

	"github.com/posternhq/postern/internal/atomicfile"
	"github.com/posternhq/postern/internal/testutil"
)

// DefaultClientID is the client ID used when Options.ClientID is empty.
const DefaultClientID = "postern"

const startTimeout = 60 * time.Second

// User is a static Dex user.
type User struct {
	// Email is the login name and the email claim.
	Email string
	// Username is the name and preferred_username claims; the part of
	// Email before "@" if empty.
	Username string
	// Password is the plain password; it is stored as a bcrypt hash.
	Password string
	// Groups is the groups claim (with the "groups" scope); none if empty.
	Groups []string
}

// Options configures a test Dex.
type Options struct {
	// ClientID is the static client's ID; DefaultClientID if empty.
	ClientID string
	// ClientSecret is the static client's secret. If empty the client is
	// public (no secret), as a CLI doing PKCE or the device flow would be.
	ClientSecret string
	// RedirectURIs are the client's allowed redirect URIs; none if empty
	// (Dex still allows loopback redirects for public clients).
	RedirectURIs []string
	// Users are the static users.
	Users []User
	// IDTokenTTL is the ID token lifetime; Dex's default (24h) if zero.
	IDTokenTTL time.Duration
}

// Dex is a running Dex provider.
type Dex struct {
	issuer string
	addr   string
	opts   Options
	proc   *testutil.Proc
}

// Start runs Dex on a free 127.0.0.1 port and returns once its discovery
// document is served.
func Start(t testing.TB, opts Options) *Dex {
	t.Helper()
	bin := Binary(t)
	if opts.ClientID == "" {
		opts.ClientID = DefaultClientID
	}
	// A port taken between picking and binding makes Dex exit; retry with
	// another port a few times.
	for attempt := 1; ; attempt++ {
		addr := testutil.FreeAddr(t)
		d := &Dex{issuer: "http://" + addr + "/dex", addr: addr, opts: opts}
		cfg, err := config(d.issuer, addr, opts)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(t.TempDir(), "dex.json") // JSON is YAML
		if err := os.WriteFile(file, cfg, 0o600); err != nil {
			t.Fatalf("write dex config: %v", err)
		}
		d.proc = testutil.Start(t, bin, []string{"serve", file})
		err = testutil.AwaitPort(addr, startTimeout, d.proc.Done())
		if err == nil {
			// The port may answer for another process that took it.
			err = d.waitDiscovery()
		}
		if err == nil {
			return d
		}
		if attempt < 3 && testutil.ExitedPortInUse(d.proc) {
			continue
		}
		d.proc.Stop()
		t.Fatalf("start dex: %v\n%s", err, d.proc.Output())
	}
}

// Binary returns the Dex binary, building it if needed (see the package
// documentation).
func Binary(t testing.TB) string {
	t.Helper()
	return testutil.Tool(t, "POSTERN_DEX", "dex", "dex", "github.com/dexidp/dex/cmd/dex")
}

// config renders Dex's configuration file.
func config(issuer, addr string, opts Options) ([]byte, error) {
	type password struct {
		Email             string   `json:"email"`
		Hash              string   `json:"hash"`
		Username          string   `json:"username"`
		PreferredUsername string   `json:"preferredUsername"`
		UserID            string   `json:"userID"`
		Groups            []string `json:"groups,omitempty"`
	}
	hashes := make([]string, len(opts.Users))
	var g errgroup.Group
	for i, u := range opts.Users {
		g.Go(func() error {
			h, err := hashPassword(u.Password)
			if err != nil {
				return fmt.Errorf("hash password of %s: %w", u.Email, err)
			}
			hashes[i] = h
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var pws []password
	for i, u := range opts.Users {
		hash := hashes[i]
		name := u.Username
		if name == "" {
			name = localPart(u.Email)
		}
		sum := sha256.Sum256([]byte(u.Email))
		pws = append(pws, password{
			Email: u.Email, Hash: hash, Username: name, PreferredUsername: name,
			UserID: hex.EncodeToString(sum[:8]), Groups: u.Groups,
		})
	}
	client := map[string]any{
		"id":           opts.ClientID,
		"name":         "postern test client",
		"redirectURIs": opts.RedirectURIs,
	}
	if opts.ClientSecret != "" {
		client["secret"] = opts.ClientSecret
	} else {
		client["public"] = true
	}
	cfg := map[string]any{
		"issuer":  issuer,
		"storage": map[string]any{"type": "memory"},
		"web":     map[string]any{"http": addr},
		"logger":  map[string]any{"level": "info", "format": "text"},
		"oauth2": map[string]any{
			"skipApprovalScreen": true,
			"passwordConnector":  "local",
		},
		"enablePasswordDB": true,
		"staticPasswords":  pws,
		"staticClients":    []any{client},
	}
	if opts.IDTokenTTL > 0 {
		cfg["expiry"] = map[string]any{"idTokens": opts.IDTokenTTL.String()}
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode dex config: %w", err)
	}
	return b, nil
}

// hashCache maps a password to its bcrypt hash. Dex rejects hashes with a
// cost below 10, and one such hash takes seconds under the race detector,
// so each distinct password is hashed once per machine: kept in memory and
// in a file under the system temporary directory (these are test passwords).
var hashCache sync.Map // string -> string

func hashPassword(pw string) (string, error) {
	if h, ok := hashCache.Load(pw); ok {
		return h.(string), nil
	}
	sum := sha256.Sum256([]byte("postern-dextest|" + pw))
	file := filepath.Join(os.TempDir(), "postern-dextest-bcrypt", hex.EncodeToString(sum[:16]))
	// The file is named by a digest of the password; checking the hash
	// against the password would cost as much as making it, so only its
	// form is checked.
	if b, err := os.ReadFile(file); err == nil && validHash(b) {
		h, _ := hashCache.LoadOrStore(pw, string(b))
		return h.(string), nil
	}
	b, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
	if err != nil {
		return "", err
	}
	storeHash(file, b)
	h, _ := hashCache.LoadOrStore(pw, string(b))
	return h.(string), nil
}

func validHash(b []byte) bool {
	cost, err := bcrypt.Cost(b)
	return err == nil && cost == bcrypt.DefaultCost && len(b) == 60
}

// storeHash writes a hash to the machine-wide cache. Failures only cost
// time later, so they are ignored.
func storeHash(file string, hash []byte) {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return
	}
	_ = atomicfile.Write(file, hash, 0o600)
}

func localPart(email string) string {
	for i := range len(email) {
		if email[i] == '@' {
			return email[:i]
		}
	}
	return email
}

// waitDiscovery polls the discovery document until Dex serves it.
func (d *Dex) waitDiscovery() error {
	url := d.issuer + "/.well-known/openid-configuration"
	probe := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(startTimeout)
	for {
		resp, err := probe.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("discovery at %s not served within %v: %w", url, startTimeout, err)
		}
		select {
		case <-d.proc.Done():
			return fmt.Errorf("dex exited: %v", d.proc.Err())
		case <-time.After(20 * time.Millisecond): // polling interval, not a readiness guess
		}
	}
}

// Issuer returns the issuer URL, "http://127.0.0.1:PORT/dex".
func (d *Dex) Issuer() string { return d.issuer }

// Addr returns the listening address, "127.0.0.1:PORT".
func (d *Dex) Addr() string { return d.addr }

// ClientID returns the static client's ID.
func (d *Dex) ClientID() string { return d.opts.ClientID }

// ClientSecret returns the static client's secret ("" for a public client).
func (d *Dex) ClientSecret() string { return d.opts.ClientSecret }

// TokenURL returns the token endpoint.
func (d *Dex) TokenURL() string { return d.issuer + "/token" }

// AuthURL returns the authorization endpoint.
func (d *Dex) AuthURL() string { return d.issuer + "/auth" }

// Log returns what Dex has logged so far.
func (d *Dex) Log() string { return d.proc.Output() }

// Kill stops Dex at once, for outage tests.
func (d *Dex) Kill() { d.proc.Stop() }

// PasswordToken returns an ID token for the user through the password
// grant, with scopes openid, email, profile and groups. It fails the test
// if Dex refuses.
func (d *Dex) PasswordToken(t testing.TB, email, password string) string {
	t.Helper()
	tok, err := d.Token(context.Background(), email, password)
	if err != nil {
		t.Fatalf("dex password grant for %s: %v", email, err)
	}
	return tok
}

// Token is the test-free form of [Dex.PasswordToken]; it returns Dex's
// refusal as an error.
func (d *Dex) Token(ctx context.Context, email, password string) (string, error) {
	cfg := oauth2.Config{
		ClientID:     d.opts.ClientID,
		ClientSecret: d.opts.ClientSecret,
		Endpoint: oauth2.Endpoint{
			AuthURL:   d.AuthURL(),
			TokenURL:  d.TokenURL(),
			AuthStyle: oauth2.AuthStyleInParams,
		},
		Scopes: []string{"openid", "email", "profile", "groups"},
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tok, err := cfg.PasswordCredentialsToken(ctx, email, password)
	if err != nil {
		return "", fmt.Errorf("password grant: %w", err)
	}
	id, ok := tok.Extra("id_token").(string)
	if !ok || id == "" {
		return "", fmt.Errorf("password grant: no id_token in the response")
	}
	return id, nil
}

// String describes the provider for test logs.
func (d *Dex) String() string {
	return "dex " + d.issuer + " (client " + strconv.Quote(d.opts.ClientID) + ")"
}

// Page is where Browse ended: the browser (with its cookies), the last
// page's URL, status and body.
type Page struct {
	Client *http.Client
	URL    *url.URL
	Status int
	Body   string
}

// Browse plays a person at Dex's pages: it opens start and submits every
// form it meets (the local password form, the device code form) with email
// and password, following redirects, until a page without a form, or a page
// under stopPrefix (a path, e.g. the web UI's "/ui"; none if empty). It is
// safe in goroutines other than the test's.
func Browse(start, email, password, stopPrefix string) (*Page, error) {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	resp, err := c.Get(start)
	for range 6 {
		if err != nil {
			return nil, fmt.Errorf("browse %s: %w", start, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		page := resp.Request.URL
		m := formRe.FindSubmatch(body)
		if m == nil || (stopPrefix != "" && strings.HasPrefix(page.Path, stopPrefix)) {
			return &Page{Client: c, URL: page, Status: resp.StatusCode, Body: string(body)}, nil
		}
		action, perr := page.Parse(html.UnescapeString(string(m[1])))
		if perr != nil {
			return nil, fmt.Errorf("form action %q: %w", m[1], perr)
		}
		form := url.Values{}
		for _, in := range inputRe.FindAllSubmatch(m[2], -1) {
			name := nameRe.FindSubmatch(in[1])
			value := valueRe.FindSubmatch(in[1])
			if name != nil && value != nil {
				form.Set(string(name[1]), html.UnescapeString(string(value[1])))
			}
		}
		form.Set("login", email)
		form.Set("password", password)
		start = action.String()
		resp, err = c.PostForm(start, form)
	}
	return nil, fmt.Errorf("browse: too many forms, the last at %s", start)
}

var (
	formRe  = regexp.MustCompile(`(?is)<form[^>]*action="([^"]*)"(.*?)</form>`)
	inputRe = regexp.MustCompile(`(?is)<input([^>]*)>`)
	nameRe  = regexp.MustCompile(`name="([^"]*)"`)
	valueRe = regexp.MustCompile(`value="([^"]*)"`)
)
