package login

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
	"golang.org/x/term"
)

// interactiveTimeout bounds how long the browser flow waits for the user.
const interactiveTimeout = 10 * time.Minute

// provider discovers iss and returns its OAuth configuration and an ID token
// verifier for the issuer's client.
func provider(ctx context.Context, iss IssuerInfo, redirect string) (*oauth2.Config, *oidc.IDTokenVerifier, error) {
	if iss.IssuerURL == "" || iss.ClientID == "" {
		return nil, nil, fmt.Errorf("issuer %q has no URL or client id in the bastion's configuration", iss.Name)
	}
	p, err := oidc.NewProvider(ctx, iss.IssuerURL)
	if err != nil {
		return nil, nil, fmt.Errorf("discover issuer %s: %w", iss.IssuerURL, err)
	}
	conf := &oauth2.Config{
		ClientID:    iss.ClientID,
		Endpoint:    p.Endpoint(),
		RedirectURL: redirect,
		Scopes:      scopes(iss),
	}
	return conf, p.VerifierContext(ctx, &oidc.Config{ClientID: iss.ClientID}), nil
}

// idToken extracts and verifies the ID token of a token response. A non-empty
// nonce must match the token's.
func idToken(ctx context.Context, tok *oauth2.Token, v *oidc.IDTokenVerifier, nonce string) (string, error) {
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return "", errors.New("the identity provider returned no ID token (is the openid scope allowed?)")
	}
	idt, err := v.Verify(ctx, raw)
	if err != nil {
		return "", fmt.Errorf("verify ID token: %w", err)
	}
	if nonce != "" && subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(nonce)) != 1 {
		return "", errors.New("the ID token's nonce does not match this login")
	}
	return raw, nil
}

// randomString returns 32 random bytes, base64url-encoded.
func randomString() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it crashes the program instead)
	return base64.RawURLEncoding.EncodeToString(b)
}

// browserToken runs the authorization code flow with PKCE and a loopback
// redirect (RFC 8252 §7.3) and returns a verified ID token.
func browserToken(ctx context.Context, o *Options, iss IssuerInfo) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, interactiveTimeout)
	defer cancel()
	ctx = oidc.ClientContext(ctx, o.HTTPClient)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("listen for the login callback: %w", err)
	}
	redirect := "http://127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port) + "/callback"
	conf, verifier, err := provider(ctx, iss, redirect)
	if err != nil {
		ln.Close()
		return "", err
	}
	state, nonce, pkce := randomString(), randomString(), oauth2.GenerateVerifier()
	authOpts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(pkce), oidc.Nonce(nonce)}
	if o.LoginHint != "" {
		authOpts = append(authOpts, oauth2.SetAuthURLParam("login_hint", o.LoginHint))
	}
	authURL := conf.AuthCodeURL(state, authOpts...)

	cb := newCallback(state)
	defer serveCallback(ln, cb)()

	var followDone chan struct{}
	if iss.Dev {
		// The development issuer approves every request: follow the
		// authorization URL ourselves; its last redirect lands on cb.
		fmt.Fprintf(o.progress(), "Signing in with the development issuer %s (no browser needed).\n", iss.IssuerURL)
		followDone = make(chan struct{})
		go func() {
			defer close(followDone)
			if err := follow(ctx, o.HTTPClient, authURL); err != nil {
				cb.fail(fmt.Errorf("follow the development issuer's authorization URL: %w", err))
			}
		}()
	} else {
		fmt.Fprintf(o.Err, "To sign in, open this URL in a browser on this machine:\n\n  %s\n\n", authURL)
		if !o.NoBrowser {
			if err := openBrowser(o, authURL); err == nil {
				fmt.Fprintln(o.progress(), "A browser window should have opened; waiting for the sign-in to finish.")
			}
		}
	}
	if followDone != nil {
		defer func() { cancel(); <-followDone }()
	}

	res, err := awaitCallback(ctx, cb)
	if err != nil {
		return "", err
	}
	tok, err := conf.Exchange(ctx, res.code, oauth2.VerifierOption(pkce))
	if err == nil {
		var raw string
		if raw, err = idToken(ctx, tok, verifier, nonce); err == nil {
			res.reply <- nil
			return raw, nil
		}
	} else {
		err = fmt.Errorf("exchange the authorization code: %w", err)
	}
	res.reply <- err
	return "", err
}

// follow GETs u with c, following redirects, and discards the final page.
func follow(ctx context.Context, c *http.Client, u string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s", resp.Status)
	}
	return nil
}

// openBrowser opens u with o.OpenBrowser, or xdg-open if present.
func openBrowser(o *Options, u string) error {
	if o.OpenBrowser != nil {
		return o.OpenBrowser(u)
	}
	path, err := exec.LookPath("xdg-open")
	if err != nil {
		return err
	}
	cmd := exec.Command(path, u)
	if err := cmd.Start(); err != nil {
		return err
	}
	// xdg-open hands the URL to the desktop and exits; reap it in the
	// background rather than hold the login up.
	go func() { _ = cmd.Wait() }()
	return nil
}

// callbackResult is what the loopback redirect delivered: a code (with a
// channel on which the flow reports the outcome, for the page) or an error.
type callbackResult struct {
	code  string
	err   error
	reply chan error
}

// callback serves the loopback redirect. It accepts exactly one request
// whose state matches; requests with another state are refused and the
// login keeps waiting, so a stray or forged request cannot end it.
type callback struct {
	state   string
	results chan callbackResult // buffered 1; the first result wins
	once    sync.Once
}

// serveCallback serves cb on ln and returns the function that stops it
// (cutting off a callback still waiting for its reply).
func serveCallback(ln net.Listener, cb *callback) (stop func()) {
	srv := &http.Server{Handler: cb, ReadHeaderTimeout: 10 * time.Second}
	serveDone := make(chan struct{})
	go func() {
		defer close(serveDone)
		_ = srv.Serve(ln) // returns http.ErrServerClosed after Shutdown
	}()
	return func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		if srv.Shutdown(sctx) != nil {
			_ = srv.Close()
		}
		<-serveDone
	}
}

// awaitCallback waits for the browser to reach cb (or ctx to end). A
// callback that carries an error has the error shown on its page and
// returned; otherwise the caller sends the result's reply.
func awaitCallback(ctx context.Context, cb *callback) (callbackResult, error) {
	var res callbackResult
	select {
	case res = <-cb.results:
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return res, errors.New("timed out waiting for the browser sign-in")
		}
		return res, fmt.Errorf("sign-in cancelled: %w", ctx.Err())
	}
	if res.err != nil {
		if res.reply != nil {
			res.reply <- res.err
		}
		return res, res.err
	}
	return res, nil
}

func newCallback(state string) *callback {
	return &callback{state: state, results: make(chan callbackResult, 1)}
}

// deliver hands r to the flow if no result was delivered yet.
func (c *callback) deliver(r callbackResult) bool {
	ok := false
	c.once.Do(func() { c.results <- r; ok = true })
	return ok
}

// fail ends the flow with err if it has not ended yet.
func (c *callback) fail(err error) { c.deliver(callbackResult{err: err}) }

// ServeHTTP handles /callback.
func (c *callback) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/callback" {
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(c.state)) != 1 {
		page(w, http.StatusBadRequest, "Sign-in refused",
			"This sign-in response does not belong to the login in progress (state mismatch).")
		return
	}
	if e := q.Get("error"); e != "" {
		msg := e
		if d := q.Get("error_description"); d != "" {
			msg += ": " + d
		}
		c.fail(fmt.Errorf("the identity provider refused the sign-in: %s", msg))
		page(w, http.StatusForbidden, "Sign-in failed", "The identity provider refused the sign-in: "+msg)
		return
	}
	code := q.Get("code")
	if code == "" {
		page(w, http.StatusBadRequest, "Sign-in refused", "The sign-in response carries no code.")
		return
	}
	reply := make(chan error, 1)
	if !c.deliver(callbackResult{code: code, reply: reply}) {
		page(w, http.StatusConflict, "Already signed in", "This login has already received a response. You can close this tab.")
		return
	}
	select {
	case err := <-reply:
		if err != nil {
			page(w, http.StatusForbidden, "Sign-in failed", "postern login could not complete the sign-in; see the terminal.")
			return
		}
		page(w, http.StatusOK, "Signed in", "postern login received your sign-in. You can close this tab.")
	case <-r.Context().Done():
	}
}

// page writes a minimal HTML page.
func page(w http.ResponseWriter, status int, title, body string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	fmt.Fprintf(w, "<!doctype html><meta charset=utf-8><title>postern: %s</title><h1>%s</h1><p>%s</p>\n",
		html.EscapeString(title), html.EscapeString(title), html.EscapeString(body))
}

// deviceToken runs the device authorization grant (RFC 8628) and returns a
// verified ID token. Polling (interval, slow_down, expiry) is x/oauth2's.
func deviceToken(ctx context.Context, o *Options, iss IssuerInfo) (string, error) {
	ctx = oidc.ClientContext(ctx, o.HTTPClient)
	conf, verifier, err := provider(ctx, iss, "")
	if err != nil {
		return "", err
	}
	if conf.Endpoint.DeviceAuthURL == "" {
		return "", fmt.Errorf("issuer %s does not support device login; run postern login without --device", iss.Name)
	}
	da, err := conf.DeviceAuth(ctx)
	if err != nil {
		return "", fmt.Errorf("start device login: %w", err)
	}
	fmt.Fprintf(o.Err, "To sign in, visit %s and enter the code:\n\n  %s\n\n", da.VerificationURI, da.UserCode)
	if da.VerificationURIComplete != "" {
		fmt.Fprintf(o.Err, "or open %s\n\n", da.VerificationURIComplete)
	}

	pollCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	if iss.Dev && da.VerificationURIComplete != "" {
		// The development issuer approves whoever visits the complete URL,
		// as the user its "user" field names.
		approve := da.VerificationURIComplete
		if o.LoginHint != "" {
			if u, err := url.Parse(approve); err == nil {
				q := u.Query()
				q.Set("user", o.LoginHint)
				u.RawQuery = q.Encode()
				approve = u.String()
			}
		}
		wg.Go(func() {
			if err := follow(pollCtx, o.HTTPClient, approve); err != nil && pollCtx.Err() == nil {
				fmt.Fprintf(o.progress(), "Could not approve the device code automatically: %v\n", err)
			}
		})
	}
	wg.Go(func() { waitIndicator(pollCtx, o.progress(), "Waiting for the sign-in to be approved") })
	tok, err := conf.DeviceAccessToken(pollCtx, da)
	cancel()
	wg.Wait()
	if err != nil {
		var re *oauth2.RetrieveError
		switch {
		case errors.As(err, &re) && re.ErrorCode == "access_denied":
			return "", errors.New("the sign-in was denied")
		case errors.As(err, &re) && re.ErrorCode == "expired_token",
			errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			return "", errors.New("the device code expired before the sign-in was approved; run postern login --device again")
		case errors.Is(err, context.Canceled):
			return "", fmt.Errorf("sign-in cancelled: %w", err)
		}
		return "", fmt.Errorf("device login: %w", err)
	}
	return idToken(ctx, tok, verifier, "")
}

// waitIndicator shows that the login is waiting until ctx is done: a spinner
// on a terminal, one plain line otherwise.
func waitIndicator(ctx context.Context, w io.Writer, msg string) {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		fmt.Fprintf(w, "%s...\n", msg)
		return
	}
	frames := []rune(`|/-\`)
	t := time.NewTicker(150 * time.Millisecond)
	defer t.Stop()
	start := time.Now()
	for i := 0; ; i++ {
		fmt.Fprintf(w, "\r%c %s (%s) ", frames[i%len(frames)], msg, time.Since(start).Truncate(time.Second))
		select {
		case <-ctx.Done():
			fmt.Fprint(w, "\r\033[K")
			return
		case <-t.C:
		}
	}
}
