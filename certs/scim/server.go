package scim

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/elimity-com/scim"
	scimerrors "github.com/elimity-com/scim/errors"
	"github.com/elimity-com/scim/optional"
	"github.com/elimity-com/scim/schema"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/httpx"
	"github.com/posternhq/postern/internal/promx"
	"github.com/posternhq/postern/state"
)

// Locker locks and unlocks identities: the kill switch (the lock package's
// Locker, which server adapts). A lock ends the identity's live sessions on
// every replica and refuses its certificates, logins, API calls and web
// sessions.
type Locker interface {
	// LockIdentity locks id (issuer and subject) with reason on behalf of
	// by and returns the lock's id.
	LockIdentity(ctx context.Context, id certs.Identity, reason, by string) (string, error)
	// Unlock removes the lock lockID on behalf of by; a lock that is gone
	// already is not an error.
	Unlock(ctx context.Context, lockID, by string) error
}

// Options configures NewServer. Clients, State and Locker are required.
type Options struct {
	// Clients are the configured SCIM clients (identity.scim).
	Clients []config.SCIM
	// State keeps the provisioned users and groups.
	State *state.Store
	// Locker locks deprovisioned identities.
	Locker Locker
	// Aliases are identity.aliases: a deprovisioned user whose identity an
	// alias maps to a person has the alias locked (every identity of the
	// person), not the one identity.
	Aliases []config.Alias
	// Directory is reloaded at once after each change this server makes
	// (other replicas reload on the store's announcement); none if nil.
	Directory *Directory
	// Log receives provisioning events; discarded if nil.
	Log *slog.Logger
	// Metrics registers postern_scim_requests_total; not registered if nil.
	Metrics prometheus.Registerer
}

// Server is the SCIM 2.0 endpoint of every configured client, under
// /v1/scim/<name>/ (RFC 7644: /Users, /Groups, their PATCH, PUT, DELETE
// and filtered lists; /ServiceProviderConfig, /Schemas, /ResourceTypes).
// Each client authenticates with its own bearer token. It is safe for
// concurrent use.
type Server struct {
	opts     Options
	aliases  aliases
	log      *slog.Logger
	clients  map[string]*client
	requests *prometheus.CounterVec
	mu       sync.Mutex // serialises changes to one user's locks
}

// client is one configured SCIM client and its endpoint.
type client struct {
	cfg     config.SCIM
	token   [sha256.Size]byte
	handler http.Handler
}

// PathPrefix is where the SCIM endpoints live: PathPrefix + name.
const PathPrefix = "/v1/scim/"

// maxBody bounds a SCIM request body.
const maxBody = 1 << 20

// allowStrings turns on elimity-com/scim's acceptance of "True"/"False"
// strings for booleans, which Microsoft Entra ID sends for "active". It is
// a package-wide switch of that library; postern is its only user.
var allowStrings sync.Once

// NewServer returns the SCIM endpoint of opts.Clients.
func NewServer(opts Options) (*Server, error) {
	if opts.State == nil || opts.Locker == nil {
		return nil, errors.New("scim: a state store and a locker are required")
	}
	allowStrings.Do(func() { schema.SetAllowStringValues(true) })
	s := &Server{opts: opts, aliases: newAliases(opts.Aliases), log: opts.Log, clients: map[string]*client{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	for i, c := range opts.Clients {
		if len(c.BearerToken) < 32 {
			return nil, fmt.Errorf("identity.scim[%d].bearer_token: at least 32 characters", i)
		}
		cl := &client{cfg: c, token: sha256.Sum256([]byte(c.BearerToken))}
		srv, err := scim.NewServer(&scim.ServerArgs{
			ServiceProviderConfig: &scim.ServiceProviderConfig{
				MaxResults: 200, SupportFiltering: true, SupportPatch: true,
				AuthenticationSchemes: []scim.AuthenticationScheme{{Type: scim.AuthenticationTypeOauthBearerToken,
					Name: "Bearer token", Description: "The token configured as identity.scim[].bearer_token", Primary: true}},
			},
			ResourceTypes: []scim.ResourceType{
				{ID: optional.NewString("User"), Name: "User", Endpoint: "/Users", Description: optional.NewString("Users"),
					Schema:           schema.CoreUserSchema(),
					SchemaExtensions: []scim.SchemaExtension{{Schema: schema.ExtensionEnterpriseUser()}},
					Handler:          users{s: s, c: cl}},
				{ID: optional.NewString("Group"), Name: "Group", Endpoint: "/Groups", Description: optional.NewString("Groups"),
					Schema: schema.CoreGroupSchema(), Handler: groups{s: s, c: cl}},
			},
		}, scim.WithLogger(scimLogger{s.log}))
		if err != nil {
			return nil, fmt.Errorf("identity.scim[%d]: %w", i, err)
		}
		cl.handler = http.StripPrefix(strings.TrimSuffix(PathPrefix, "/")+"/"+c.Name, srv)
		s.clients[c.Name] = cl
	}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "postern_scim_requests_total",
		Help: "SCIM requests, by client and HTTP status code.",
	}, []string{"client", "code"})
	var err error
	if s.requests, err = promx.Register(opts.Metrics, s.requests); err != nil {
		return nil, fmt.Errorf("scim: %w", err)
	}
	return s, nil
}

// scimLogger sends the library's errors to the log.
type scimLogger struct{ log *slog.Logger }

func (l scimLogger) Error(args ...any) { l.log.Warn("scim: " + fmt.Sprint(args...)) }

// ServeHTTP authenticates the client by its bearer token and hands the
// request to its SCIM server.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, _ := strings.CutPrefix(r.URL.Path, PathPrefix)
	name, _, _ := strings.Cut(rest, "/")
	cl := s.clients[name]
	sw := &httpx.StatusWriter{ResponseWriter: w}
	defer func() {
		label := name
		if cl == nil {
			label = "unknown"
		}
		s.requests.WithLabelValues(label, fmt.Sprint(sw.Status())).Inc()
	}()
	if cl == nil {
		scimError(sw, http.StatusNotFound, "no such SCIM endpoint")
		return
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	if !ok || subtle.ConstantTimeCompare(sum[:], cl.token[:]) != 1 {
		sw.Header().Set("WWW-Authenticate", `Bearer realm="postern-scim"`)
		scimError(sw, http.StatusUnauthorized, "a valid bearer token is required")
		return
	}
	r.Body = http.MaxBytesReader(sw, r.Body, maxBody)
	cl.handler.ServeHTTP(sw, r)
}

// scimError writes a SCIM error body.
func scimError(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", "application/scim+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(scimerrors.ScimError{Status: status, Detail: detail})
}

// changed reloads this replica's directory after a change it made.
func (s *Server) changed(ctx context.Context) {
	if d := s.opts.Directory; d != nil {
		if err := d.Reload(ctx); err != nil {
			s.log.Warn("scim: reloading the directory failed", "err", err)
		}
	}
}

// identities returns the identities a user of client c stands for: one per
// issuer the client speaks for, with the user's subject attribute.
func (c *client) identities(u state.SCIMUser) []certs.Identity {
	var a attributes
	_ = json.Unmarshal([]byte(u.Attributes), &a)
	var out []certs.Identity
	for _, is := range c.cfg.Issuers {
		if subj := subjectOf(is.Subject, u, a); subj != "" {
			out = append(out, certs.Identity{Issuer: is.Issuer, Subject: subj, Username: u.UserName})
		}
	}
	return out
}

// live reports whether a user may use postern.
func live(u *state.SCIMUser) bool { return u != nil && u.Active && !u.Deleted }

// transition applies what user after's state means for its identities,
// idempotently (a client retries a request that failed half way): a user
// that is not live (deactivated or deleted) and has no locks recorded yet
// is locked, once per identity it stands for; a live user has the locks
// recorded for it removed, and so do the deleted users it takes the place
// of (tombs: same userName) whose identities it stands for too. A lock an
// administrator removed by hand stays removed until the user's next
// deprovisioning.
func (s *Server) transition(ctx context.Context, c *client, after state.SCIMUser, tombs []state.SCIMUser) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	by := "scim:" + c.cfg.Name
	st := s.opts.State
	if !live(&after) {
		have, err := st.SCIMLocks(ctx, c.cfg.Name, after.ID)
		if err != nil || len(have) > 0 {
			return err
		}
		reason := "deactivated by the identity provider (SCIM " + c.cfg.Name + ")"
		if after.Deleted {
			reason = "deleted by the identity provider (SCIM " + c.cfg.Name + ")"
		}
		var locked []certs.Identity
		for _, id := range c.identities(after) {
			id = s.aliases.lockable(id)
			if slices.ContainsFunc(locked, func(o certs.Identity) bool { return o.Key() == id.Key() }) {
				continue
			}
			locked = append(locked, id)
			lockID, err := s.opts.Locker.LockIdentity(ctx, id, reason, by)
			if err != nil {
				return fmt.Errorf("lock %s/%s: %w", id.Issuer, id.Subject, err)
			}
			// Recorded one by one: a failure after the first lock leaves
			// what was made findable for the unlock.
			if err := st.AddSCIMLocks(ctx, c.cfg.Name, after.ID, []string{lockID}); err != nil {
				return err
			}
			s.log.Info("scim: identity locked", "client", c.cfg.Name, "user", after.UserName, "issuer", id.Issuer,
				"subject", id.Subject, "lock", lockID)
		}
		return nil
	}
	var mine []certs.Identity
	for _, id := range c.identities(after) {
		mine = append(mine, s.aliases.lockable(id))
	}
	users := []string{after.ID}
	for _, t := range tombs {
		if !slices.ContainsFunc(c.identities(t), func(id certs.Identity) bool {
			return !slices.ContainsFunc(mine, func(m certs.Identity) bool { return m.Key() == s.aliases.lockable(id).Key() })
		}) {
			users = append(users, t.ID)
		}
	}
	for _, userID := range users {
		locks, err := st.SCIMLocks(ctx, c.cfg.Name, userID)
		if err != nil {
			return err
		}
		for _, l := range locks {
			if err := s.opts.Locker.Unlock(ctx, l, by); err != nil {
				return fmt.Errorf("unlock %s: %w", l, err)
			}
			s.log.Info("scim: identity unlocked", "client", c.cfg.Name, "user", after.UserName, "lock", l)
		}
		if len(locks) > 0 {
			if err := st.ForgetSCIMLocks(ctx, c.cfg.Name, userID, locks); err != nil {
				return err
			}
		}
	}
	return nil
}

// newID returns a resource id.
func newID() string { return ulid.Make().String() }
