package login

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"time"
)

// A TokenSource yields a workload's current OIDC ID token: what `postern
// agent` exchanges for a certificate each time it renews one.
type TokenSource interface {
	// Token returns the current token. Errors never contain a token.
	Token(ctx context.Context) (string, error)
	// String names the source in reports ("file /var/run/…").
	String() string
}

// maxToken bounds a token read from a source.
const maxToken = 16 << 10

// FileTokenSource reads the token from a file that another system keeps
// fresh (a Kubernetes projected service-account token, rotated by the
// kubelet): the file is read afresh every time.
type FileTokenSource struct {
	// Path is the file.
	Path string
}

// Token implements TokenSource.
func (f FileTokenSource) Token(context.Context) (string, error) {
	return tokenFromFile(f.Path)
}

func (f FileTokenSource) String() string { return "file " + f.Path }

// GitHub Actions' environment variables for requesting an OIDC token (set
// for jobs with `permissions: id-token: write`).
const (
	GitHubTokenURLEnv     = "ACTIONS_ID_TOKEN_REQUEST_URL"
	GitHubTokenRequestEnv = "ACTIONS_ID_TOKEN_REQUEST_TOKEN"
)

// GitHubActionsTokenSource requests a token for Audience from the GitHub
// Actions token service, as a job does: GET the request URL with
// &audience=, authorized by the request token as a bearer; the answer is
// {"value": "<token>"}.
type GitHubActionsTokenSource struct {
	// URL and RequestToken are the job's ACTIONS_ID_TOKEN_REQUEST_URL and
	// ACTIONS_ID_TOKEN_REQUEST_TOKEN.
	URL, RequestToken string
	// Audience is the aud the token is for (the bastion issuer's
	// audience).
	Audience string
	// HTTPClient sends the request; a client with a 30s timeout if nil.
	HTTPClient *http.Client
}

// GitHubActionsFromEnv returns the source of the job's environment, or an
// error naming what is missing.
func GitHubActionsFromEnv(audience string) (*GitHubActionsTokenSource, error) {
	u, tok := os.Getenv(GitHubTokenURLEnv), os.Getenv(GitHubTokenRequestEnv)
	if u == "" || tok == "" {
		return nil, fmt.Errorf("%s and %s are not set; give the job the permission id-token: write", GitHubTokenURLEnv, GitHubTokenRequestEnv)
	}
	return &GitHubActionsTokenSource{URL: u, RequestToken: tok, Audience: audience}, nil
}

// Token implements TokenSource.
func (g *GitHubActionsTokenSource) Token(ctx context.Context) (string, error) {
	u, err := url.Parse(g.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") {
		return "", errors.New("the token request URL is not an http(s) URL")
	}
	q := u.Query()
	if g.Audience != "" {
		q.Set("audience", g.Audience)
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", fmt.Errorf("token request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+g.RequestToken)
	req.Header.Set("Accept", "application/json")
	hc := g.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("token request to %s: %w", u.Host, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxToken+1024))
	if err != nil {
		return "", fmt.Errorf("read the token answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("token request to %s: %s", u.Host, resp.Status)
	}
	var out struct {
		Value string `json:"value"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return "", errors.New("the token answer is not JSON {\"value\": …}")
	}
	if tok := strings.TrimSpace(out.Value); tok != "" {
		return tok, nil
	}
	return "", errors.New("the token answer holds no token")
}

func (g *GitHubActionsTokenSource) String() string { return "GitHub Actions OIDC" }

// CommandTokenSource runs a command and takes what it prints on stdout as
// the token (a cloud CLI's print-identity-token, a vault read).
type CommandTokenSource struct {
	// Argv is the program and its arguments (no shell).
	Argv []string
	// Timeout bounds one run; 30s if zero.
	Timeout time.Duration
}

// Token implements TokenSource.
func (c CommandTokenSource) Token(ctx context.Context) (string, error) {
	if len(c.Argv) == 0 {
		return "", errors.New("no token command")
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Argv[0], c.Argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &limitWriter{w: &stdout, n: maxToken + 1}, &limitWriter{w: &stderr, n: 512}
	if err := cmd.Run(); err != nil {
		// stderr is the command's own words, never the token (stdout).
		msg := strings.TrimSpace(stderr.String())
		if msg != "" {
			return "", fmt.Errorf("token command %s: %w: %s", c.Argv[0], err, msg)
		}
		return "", fmt.Errorf("token command %s: %w", c.Argv[0], err)
	}
	tok := strings.TrimSpace(stdout.String())
	switch {
	case tok == "":
		return "", fmt.Errorf("token command %s printed no token", c.Argv[0])
	case len(tok) > maxToken:
		return "", fmt.Errorf("token command %s printed more than a token", c.Argv[0])
	}
	return tok, nil
}

func (c CommandTokenSource) String() string { return "command " + c.Argv[0] }

// limitWriter keeps the first n bytes written.
type limitWriter struct {
	w io.Writer
	n int
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		l.n -= k
		_, _ = l.w.Write(p[:k])
	}
	return len(p), nil
}
