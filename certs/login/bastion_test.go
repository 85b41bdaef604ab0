package login_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/certs/login"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/policy"
)

// testBastion is the bastion's HTTP API as login sees it, run in-process on
// 127.0.0.1: GET /v1/config from the configuration, POST /v1/certs from the
// real issuance pipeline (certs.Issuer with a real OIDC verifier and the role
// policy engine).
type testBastion struct {
	URL       string
	Authority *certs.Authority
	Config    *config.Config // read-only once started

	mu         sync.Mutex
	sshAddress string
}

// SetSSHAddress changes the SSH address /v1/config advertises.
func (b *testBastion) SetSSHAddress(addr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sshAddress = addr
}

func (b *testBastion) sshAddr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sshAddress
}

// bastionOptions configures startBastion.
type bastionOptions struct {
	// Issuers are the trusted OIDC issuers.
	Issuers []config.Issuer
	// Dev names the issuers /v1/config marks as the development issuer.
	Dev map[string]bool
	// Roles are the roles; one granting root to group "dev" if nil.
	Roles []config.Role
	// SSHAddress is the advertised SSH address; "127.0.0.1:2222" if empty.
	SSHAddress string
	// RateLimit bounds certificate requests; the defaults if zero.
	RateLimit config.RateLimit
}

func startBastion(t testing.TB, o bastionOptions) *testBastion {
	t.Helper()
	cfg := &config.Config{DataDir: t.TempDir(), SSHAddress: o.SSHAddress}
	cfg.Identity.Issuers = o.Issuers
	cfg.Roles = o.Roles
	cfg.Identity.RateLimit = o.RateLimit
	if cfg.Roles == nil {
		cfg.Roles = []config.Role{{
			Name: "devs", Match: config.RoleMatch{Groups: []string{"dev"}},
			Targets: []config.TargetSelector{{Name: "*"}}, Logins: []string{"root"},
			Forwarding: config.Forwarding{Local: true},
		}}
	}
	if cfg.SSHAddress == "" {
		cfg.SSHAddress = "127.0.0.1:2222"
	}
	// The real sshd of the end-to-end tests stands in for the bastion's SSH
	// side and takes the certificate itself, as a passthrough target does:
	// certificates carry its principal ("stand-in:<login>", standInSSHD).
	cfg.Targets = append(cfg.Targets, config.Target{Name: "stand-in", Kind: config.KindSSH, Address: "127.0.0.1:1", Passthrough: true})
	cfg.SetDefaults()
	auth, err := certs.LoadAuthority(cfg.CA, cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	ver, err := certs.NewVerifier(t.Context(), cfg.Identity.Issuers, certs.VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := certs.NewIssuer(certs.IssuerOptions{
		Authority: auth, Verifier: ver, Policy: pol, TTL: cfg.Identity.CertTTL, RateLimit: cfg.Identity.RateLimit,
	})
	if err != nil {
		t.Fatal(err)
	}
	b := &testBastion{Authority: auth, Config: cfg, sshAddress: cfg.SSHAddress}
	srv := httptest.NewUnstartedServer(nil)
	mux := http.NewServeMux()
	mux.Handle("POST /v1/certs", iss.Handler(certs.HandlerOptions{}))
	mux.HandleFunc("GET /v1/config", func(w http.ResponseWriter, r *http.Request) {
		var out login.BastionConfig
		for _, is := range cfg.Identity.Issuers {
			sc := is.Scopes
			if len(sc) == 0 {
				sc = []string{"openid", "email", "profile", "groups"}
			}
			out.Issuers = append(out.Issuers, login.IssuerInfo{
				Name: is.Name, IssuerURL: is.IssuerURL, ClientID: is.ClientID, Scopes: sc, Kind: is.Kind, Dev: o.Dev[is.Name],
			})
		}
		out.SSHAddress, out.HostCA, out.PublicURL = b.sshAddr(), auth.HostCALine(), "http://"+r.Host
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
	srv.Config.Handler = mux
	srv.Start()
	t.Cleanup(srv.Close)
	b.URL = srv.URL
	return b
}

// devIssuer is the config entry for a devidp issuer at url: username from
// preferred_username, groups from groups.
func devIssuer(name, url string) config.Issuer {
	return config.Issuer{
		Name: name, IssuerURL: url, ClientID: "postern", Kind: "human",
		UsernameClaim: "preferred_username", GroupsClaim: "groups",
	}
}

// netipLoopback is 127.0.0.1, the source the test bastion sees.
var netipLoopback = netip.MustParseAddr("127.0.0.1")
