package login_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/posternhq/postern/certs/devidp"
	"github.com/posternhq/postern/certs/devidp/devidptest"
	"github.com/posternhq/postern/certs/login"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/posterntest"
	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/state"
)

// agentEnv is a whole postern trusting an in-process OP as two workload
// issuers — a Kubernetes cluster (k8s) and GitHub Actions (github) — with
// agent certificates of the shortest lifetime (1m), a role for the ci
// namespace's runner and one for acme/app on main, both on an sshd target
// web-1.
type agentEnv struct {
	svc   *posterntest.Service
	k8s   *devidptest.Server
	gh    *devidptest.Server
	login string
}

func newAgentEnv(t *testing.T) *agentEnv {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	e := &agentEnv{login: u.Username, k8s: devidptest.Start(t, devidp.Options{}), gh: devidptest.Start(t, devidp.Options{})}
	dataDir := t.TempDir()
	auth := posterntest.Authority(t, dataDir)
	_, web := posterntest.SSHD(t, auth, "web-1")
	e.svc = posterntest.Start(t, &config.Config{
		DataDir: dataDir,
		Identity: config.Identity{
			Issuers: []config.Issuer{
				{Name: "k8s", Profile: config.ProfileKubernetes, IssuerURL: e.k8s.URL, Audience: "postern"},
				{Name: "github", Profile: config.ProfileGitHubActions, IssuerURL: e.gh.URL, Audience: "postern",
					Require: map[string]string{"repository_owner": "acme"}},
			},
			CertTTL: config.CertTTL{Agent: config.Duration(time.Minute)},
		},
		Targets: []config.Target{web},
		Roles: []config.Role{
			{Name: "ci-runner", Match: config.RoleMatch{Issuers: []string{"k8s"},
				Claims: map[string]string{"kubernetes.io/namespace": "ci", "kubernetes.io/serviceaccount": "runner"}},
				Targets: []config.TargetSelector{{Name: "web-1"}}, Logins: []string{e.login}},
			{Name: "deploy-main", Match: config.RoleMatch{Issuers: []string{"github"},
				Claims: map[string]string{"repository": "acme/*", "ref": "refs/heads/main"}},
				Targets: []config.TargetSelector{{Name: "web-1"}}, Logins: []string{e.login}},
		},
	})
	return e
}

// logBuffer is a goroutine-safe slog sink.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// sshProfile runs the stock ssh client with the profile's ssh_config
// through the bastion to web-1.
func sshProfile(p *login.Profile, login string, args ...string) (testutil.Result, error) {
	full := append([]string{"-F", p.SSHConfig, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
		"-o", "GlobalKnownHostsFile=/dev/null", "-o", "IdentityAgent=none", "-o", "ConnectTimeout=10",
		"-J", p.BastionHost, login + "@web-1"}, args...)
	return testutil.Run(nil, nil, "ssh", full...)
}

// TestAgentRenewsAcrossExpiry: postern agent with a Kubernetes projected
// token file (rotated while it runs) keeps a 1-minute certificate fresh; a
// session opened with the first certificate runs on past that
// certificate's expiry (the bastion finds the renewal of the same key and
// audits auth.renewed), and a new session after it uses the renewed
// certificate. Takes a little over a minute.
func TestAgentRenewsAcrossExpiry(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a certificate to expire")
	}
	e := newAgentEnv(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeToken := func() {
		t.Helper()
		if err := os.WriteFile(tokenFile+".new", []byte(e.k8s.Mint(t, devidptest.KubernetesClaims("ci", "runner", "postern"))), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tokenFile+".new", tokenFile); err != nil { // as the kubelet does
			t.Fatal(err)
		}
	}
	writeToken()
	dir := t.TempDir()
	logs := &logBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- login.RunAgent(ctx, login.AgentOptions{
			Login:  login.Options{Bastion: e.svc.HTTPURL, Dir: dir},
			Source: login.FileTokenSource{Path: tokenFile},
			Log:    slog.New(slog.NewTextHandler(logs, nil)),
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("RunAgent: %v", err)
		}
	})
	first := waitProfile(t, dir, nil)
	if first.Username != "system:serviceaccount:ci:runner" || first.ValidBefore.Sub(time.Now()) > 70*time.Second {
		t.Fatalf("first certificate: %s until %s", first.Username, first.ValidBefore)
	}
	writeToken() // rotated: the next renewal reads the new one

	// A session that outlives the first certificate.
	long := make(chan testutil.Result, 1)
	secs := int(time.Until(first.ValidBefore).Seconds()) + 12
	go func() {
		r, err := sshProfile(first, e.login, "for i in $(seq "+strconv.Itoa(secs)+"); do echo tick $i; sleep 1; done; echo survived")
		if err != nil {
			r = testutil.Result{Code: -1, Stderr: []byte(err.Error())}
		}
		long <- r
	}()
	second := waitProfile(t, dir, first)
	if second.Serial == first.Serial || !second.ValidBefore.After(first.ValidBefore) {
		t.Fatalf("renewal: serial %s until %s after %s until %s", second.Serial, second.ValidBefore, first.Serial, first.ValidBefore)
	}
	var r testutil.Result
	select {
	case r = <-long:
	case <-time.After(time.Until(first.ValidBefore) + 90*time.Second):
		t.Fatal("the long session did not end")
	}
	if r.Code != 0 || !strings.Contains(string(r.Stdout), "survived") {
		t.Fatalf("the long session ended with %d after %d ticks; stderr %q\nagent log:\n%s", r.Code,
			strings.Count(string(r.Stdout), "tick"), r.Stderr, logs.String())
	}
	if time.Now().Before(first.ValidBefore) {
		t.Fatal("the long session ended before the first certificate expired")
	}
	e.svc.WaitEvent(state.EventAuthRenewed, nil)
	latest, err := login.LoadProfile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := sshProfile(latest, e.login, "echo fresh"); err != nil || r.Code != 0 || !strings.Contains(string(r.Stdout), "fresh") {
		t.Errorf("a new session after the first certificate expired: %+v %v", r, err)
	}
	if !strings.Contains(logs.String(), "certificate renewed") {
		t.Errorf("the agent reported no renewal:\n%s", logs.String())
	}
}

// waitProfile waits until dir holds a profile other than prev, with a
// certificate valid now.
func waitProfile(t *testing.T, dir string, prev *login.Profile) *login.Profile {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		p, err := login.LoadProfile(dir)
		if err == nil && p.Valid(time.Now()) && (prev == nil || p.Serial != prev.Serial) {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("no (new) profile in %s: %v", dir, err)
		}
		time.Sleep(100 * time.Millisecond) // polling files another goroutine writes
	}
}

// TestAgentTokenSources: one exchange (--once) with a GitHub Actions token
// from the job's token service (the env/URL pair) and with a command;
// roles match the token's claims (a feature branch gets no access); a
// failing source is reported by stage and the bastion is not asked.
func TestAgentTokenSources(t *testing.T) {
	e := newAgentEnv(t)
	// The job's token service: ACTIONS_ID_TOKEN_REQUEST_URL, authorized by
	// ACTIONS_ID_TOKEN_REQUEST_TOKEN, minting for the audience asked.
	ref := "refs/heads/main"
	var mu sync.Mutex
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer job-request-token" {
			http.Error(w, "bad request token", http.StatusUnauthorized)
			return
		}
		mu.Lock()
		tok := e.gh.Mint(t, devidptest.GitHubActionsClaims("acme/app", ref, r.URL.Query().Get("audience")))
		mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]string{"value": tok})
	}))
	t.Cleanup(svc.Close)
	t.Setenv(login.GitHubTokenURLEnv, svc.URL+"/token?api-version=2.0")
	t.Setenv(login.GitHubTokenRequestEnv, "job-request-token")
	gh, err := login.GitHubActionsFromEnv("postern")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	once := func(src login.TokenSource, dir string) error {
		return login.RunAgent(context.Background(), login.AgentOptions{Login: login.Options{Bastion: e.svc.HTTPURL, Dir: dir},
			Source: src, Once: true})
	}
	if err := once(gh, dir); err != nil {
		t.Fatal(err)
	}
	p, err := login.LoadProfile(dir)
	if err != nil || p.Username != "repo:acme/app:ref:refs/heads/main" {
		t.Fatalf("profile after a GitHub Actions exchange: %+v %v", p, err)
	}
	if r, err := sshProfile(p, e.login, "echo from-actions"); err != nil || r.Code != 0 {
		t.Errorf("ssh with the GitHub Actions certificate: %+v %v", r, err)
	}
	mu.Lock()
	ref = "refs/heads/feature"
	mu.Unlock()
	err = once(gh, t.TempDir())
	var re *login.RenewalError
	if !errors.As(err, &re) || re.Stage != "exchange" || !strings.Contains(err.Error(), "no_access") {
		t.Errorf("a feature branch's token: %v; want the bastion's no_access", err)
	}
	t.Setenv(login.GitHubTokenRequestEnv, "stale")
	stale, _ := login.GitHubActionsFromEnv("postern")
	if err := once(stale, t.TempDir()); !errors.As(err, &re) || re.Stage != "token" || !strings.Contains(err.Error(), "401") {
		t.Errorf("a token service that refuses: %v; want a token-stage failure", err)
	}
	t.Setenv(login.GitHubTokenURLEnv, "")
	if _, err := login.GitHubActionsFromEnv("postern"); err == nil || !strings.Contains(err.Error(), "id-token: write") {
		t.Errorf("outside GitHub Actions: %v", err)
	}

	// A command that prints a token.
	tokenFile := filepath.Join(t.TempDir(), "tok")
	if err := os.WriteFile(tokenFile, []byte(e.k8s.Mint(t, devidptest.KubernetesClaims("ci", "runner", "postern"))), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := once(login.CommandTokenSource{Argv: []string{"cat", tokenFile}}, t.TempDir()); err != nil {
		t.Errorf("command source: %v", err)
	}
	err = once(login.CommandTokenSource{Argv: []string{"sh", "-c", "echo no such secret >&2; exit 3"}}, t.TempDir())
	if !errors.As(err, &re) || re.Stage != "token" || !strings.Contains(err.Error(), "no such secret") {
		t.Errorf("a failing command: %v", err)
	}
	if err := once(login.CommandTokenSource{Argv: []string{"true"}}, t.TempDir()); err == nil || !strings.Contains(err.Error(), "printed no token") {
		t.Errorf("a command that prints nothing: %v", err)
	}
	// A missing token file, while running: reported and retried, not fatal.
	logs := &logBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err = login.RunAgent(ctx, login.AgentOptions{Login: login.Options{Bastion: e.svc.HTTPURL, Dir: t.TempDir()},
		Source: login.FileTokenSource{Path: filepath.Join(t.TempDir(), "absent")}, MinBackoff: 100 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Errorf("RunAgent with a failing source returned %v; want to keep retrying until its context ends", err)
	}
	if n := strings.Count(logs.String(), "renewal failed"); n < 3 || !strings.Contains(logs.String(), "stage=token") ||
		!strings.Contains(logs.String(), "no valid certificate") {
		t.Errorf("%d failures reported:\n%s", n, logs.String())
	}
}
