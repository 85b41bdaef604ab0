package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sync/errgroup"

	"github.com/posternhq/postern/approval"
	"github.com/posternhq/postern/audit"
	"github.com/posternhq/postern/bastion"
	"github.com/posternhq/postern/bastion/innerhop"
	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/guardrails"
	"github.com/posternhq/postern/guardrails/pgproxy"
	"github.com/posternhq/postern/internal/buildinfo"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/httpx"
	"github.com/posternhq/postern/internal/netguard"
	"github.com/posternhq/postern/internal/netx"
	"github.com/posternhq/postern/lock"
	"github.com/posternhq/postern/mcpserver"
	"github.com/posternhq/postern/players"
	"github.com/posternhq/postern/players/web"
	"github.com/posternhq/postern/policy"
	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/state"
)

// ServiceOptions are the process-level inputs of a Service.
type ServiceOptions struct {
	// Version is reported by /v1/config.
	Version string
	// Log is the process logger; required.
	Log *slog.Logger
	// Reload re-reads the configuration (SIGHUP); nil disables reloading.
	Reload func() (*config.Config, error)
	// Ready, if set, is called once both listeners are up, with their addresses.
	Ready func(sshAddr, httpAddr net.Addr)
}

// Service is a whole postern: the HTTP API, the SSH bastion, the recorder and
// the state store, wired from one configuration. Run owns all of them: it
// opens them, serves until its context ends, then shuts them down in order
// (stop accepting, drain sessions, seal recordings, close the store).
type Service struct {
	opts ServiceOptions
	log  *slog.Logger

	mu  sync.Mutex
	cfg *config.Config

	reg       *prometheus.Registry
	state     *state.Store
	authority *certs.Authority
	policy    *policy.Engine
	grants    policy.GrantsFunc
	directory policy.GroupsFunc // SCIM-provisioned groups; nil without SCIM
	recorder  *recorder.Recorder
	masking   *guardrails.Policy
	inner     *innerhop.Server
	ssh       *bastion.Server
	http      *http.Server
	devIdP    http.Handler // the development issuer; nil outside --dev
	locks     *lock.Locker
	mcp       *mcpserver.Handler

	// httpAddr and sshAddr are the listeners' real addresses (a reloaded
	// configuration gets the same ports filled in as the running one).
	httpAddr, sshAddr string
}

// NewService validates what can be checked without side effects. Run does the rest.
func NewService(cfg *config.Config, opts ServiceOptions) (*Service, error) {
	if opts.Log == nil {
		return nil, errors.New("bastion: ServiceOptions.Log is required")
	}
	if cfg.Dev {
		if !DevModeBuilt {
			_, err := newDevIdP(cfg, opts.Log)
			return nil, err
		}
		for _, a := range []string{cfg.Listen.HTTP, cfg.Listen.SSH} {
			if !isLoopbackListen(a) {
				return nil, fmt.Errorf("development mode listens on loopback only; %s is not a loopback address", a)
			}
		}
	}
	return &Service{opts: opts, log: opts.Log, cfg: cfg}, nil
}

func isLoopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// Run opens every component, serves until ctx ends, then shuts down within
// drain. The SIGHUP channel, if non-nil, triggers a configuration reload.
func (s *Service) Run(ctx context.Context, hup <-chan struct{}) (err error) {
	cfg := s.cfg
	s.reg = prometheus.NewRegistry()
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildinfo.Collector())

	// Listeners first: in dev mode the issuer URL must carry the real port.
	var sshLn net.Listener
	if sshLn, err = net.Listen("tcp", cfg.Listen.SSH); err != nil {
		return fmt.Errorf("listen ssh %s: %w", cfg.Listen.SSH, err)
	}
	if proxies := config.ParsePrefixes(cfg.SSH.TrustedProxies); len(proxies) > 0 {
		// Connections from the load balancers carry the client's address
		// in a PROXY protocol header.
		sshLn = netx.NewProxyListener(sshLn, proxies, 0, s.log.With("component", "proxy-protocol"))
	}
	defer sshLn.Close()
	httpLn, err := net.Listen("tcp", cfg.Listen.HTTP)
	if err != nil {
		return fmt.Errorf("listen http %s: %w", cfg.Listen.HTTP, err)
	}
	defer httpLn.Close()
	s.httpAddr, s.sshAddr = httpLn.Addr().String(), sshLn.Addr().String()
	if cfg.Dev {
		cfg.ReloadDev(s.httpAddr, s.sshAddr)
	} else {
		cfg.FillPorts(s.httpAddr, s.sshAddr)
	}

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	// The replica name owns the sessions this process records: recovery
	// touches only its own, and a live follow asked on another replica is
	// forwarded to the advertised address (POSTERN_ADVERTISE_HOST, set to the
	// pod IP by the Helm chart).
	advertise := ""
	if h := os.Getenv("POSTERN_ADVERTISE_HOST"); h != "" {
		_, port, _ := net.SplitHostPort(httpLn.Addr().String())
		advertise = "http://" + net.JoinHostPort(h, port)
	}
	replica, err := ReplicaName(advertise, cfg.DataDir)
	if err != nil {
		return fmt.Errorf("replica name: %w", err)
	}
	if s.state, err = state.Open(ctx, cfg.State, state.Options{AuditFile: cfg.Audit.File, Log: s.log}); err != nil {
		return fmt.Errorf("open state store: %w", err)
	}
	defer s.state.Close()
	if s.authority, err = loadAuthority(ctx, cfg, s.state); err != nil {
		return fmt.Errorf("load certificate authorities: %w", err)
	}
	if s.policy, err = policy.New(cfg); err != nil {
		return err
	}
	store, err := recorder.OpenStore(ctx, cfg.Storage)
	if err != nil {
		return fmt.Errorf("open recording store: %w", err)
	}
	indexer, sealed, err := newIndexer(cfg, s.state, store, replica, s.log, s.reg)
	if err != nil {
		return err
	}
	s.recorder, err = recorder.New(recorder.Options{Sealed: sealed,
		Store: store, State: s.state, SpoolDir: filepath.Join(cfg.DataDir, "spool"),
		Format: cfg.Recording.Format, BufferSize: cfg.Recording.BufferSize, OnOverflow: cfg.Recording.OnOverflow,
		FsyncInterval: cfg.Recording.FsyncInterval.D(), MinSpoolFree: cfg.Recording.MinSpoolFree,
		Replica: replica, Signer: s.authority.Audit, CheckpointInterval: checkpointInterval(cfg), Log: s.log, Metrics: s.reg,
	})
	if err != nil {
		return fmt.Errorf("start recorder: %w", err)
	}
	defer s.recorder.Close() // stops background seals; their spools stay for Recover
	started := time.Now()
	// Alive before anything else: another replica must not take this one's
	// sessions (recovered just below) for a dead replica's.
	if err := s.state.Heartbeat(ctx, replica, started); err != nil {
		return fmt.Errorf("replica heartbeat: %w", err)
	}
	if n, err := s.recorder.Recover(ctx); err != nil {
		s.log.Error("recovering interrupted recordings", "err", err)
	} else if n > 0 {
		s.log.Warn("recovered interrupted recordings", "count", n)
	}

	if cfg.Dev {
		s.log.Warn("DEVELOPMENT MODE: embedded OIDC issuer auto-approves logins; insecure, loopback only", "issuer", cfg.PublicURL+config.DevIssuerPath)
		if s.devIdP, err = newDevIdP(cfg, s.log.With("component", "devidp")); err != nil {
			return fmt.Errorf("start development issuer: %w", err)
		}
	}

	audit := func(ctx context.Context, e state.Event) {
		if _, err := s.state.Append(ctx, e); err != nil {
			s.log.Error("audit append failed", "type", e.Type, "err", err)
		}
	}
	verifier, err := certs.NewVerifier(ctx, cfg.Identity.Issuers, certs.VerifierOptions{Log: s.log, Metrics: s.reg,
		Aliases: func(issuer, subject string) string { return s.config().AliasOf(issuer, subject) }})
	if err != nil {
		return fmt.Errorf("identity issuers: %w", err)
	}
	// The kill switch: every path in (certificates, SSH, API, web) asks it,
	// and what runs long registers with it to be ended.
	s.locks, err = lock.New(ctx, lock.Options{
		Store: s.state, Notify: s.state.Notify, Subscribe: s.state.Subscribe, Audit: audit,
		Roles: func(id certs.Identity) []string { return s.currentPolicy().Roles(id) },
		Log:   s.log.With("component", "locks"), Metrics: s.reg,
	})
	if err != nil {
		return err
	}
	defer s.locks.Close()
	lockedFresh := func(ctx context.Context, id certs.Identity) error {
		return s.locks.CheckFresh(ctx, lock.Subject{Identity: id})
	}
	locked := func(id certs.Identity) error { return s.locks.Check(lock.Subject{Identity: id}) }
	samlSP, err := newSAML(cfg, s.state, func(issuer, subject string) string { return s.config().AliasOf(issuer, subject) },
		audit, s.log, s.reg)
	if err != nil {
		return err
	}
	issuer, err := certs.NewIssuer(certs.IssuerOptions{
		Authority: s.authority, Verifier: tokenVerifier(verifier, samlSP), Policy: policyGrant{s}, TTL: cfg.Identity.CertTTL,
		RateLimit: cfg.Identity.RateLimit, Audit: audit, Locked: lockedFresh, Record: s.recordIssued,
		Log: s.log, Metrics: s.reg,
	})
	if err != nil {
		return err
	}

	masking, err := guardrails.NewPolicy(cfg)
	if err != nil {
		return fmt.Errorf("masking: %w", err)
	}
	s.masking = masking
	scimSrv, directory, err := newSCIM(ctx, cfg, s.state, s.locks, s.log, s.reg)
	if err != nil {
		return err
	}
	s.directory = directoryGroups(directory)
	configuredGroups := func(key string) []string { return s.config().Approvals.Groups[key] }
	broker, err := approval.NewBroker(approval.Options{
		Store: s.state, PublicURL: cfg.PublicURL, Audit: audit, Notify: s.state.Notify, Subscribe: s.state.Subscribe,
		Groups: configuredGroups, Approver: scimApprover(directory, configuredGroups),
		RateLimit: cfg.Approvals.RateLimit,
		Log:       s.log.With("component", "approvals"), Metrics: s.reg,
	})
	if err != nil {
		return fmt.Errorf("approvals: %w", err)
	}
	defer broker.Close()
	s.grants = broker.PolicyGrants()
	s.policy = s.policy.WithGrants(s.grants).WithGroups(s.directory)
	var slack http.Handler
	if sc := cfg.Approvals.Slack; sc.WebhookURL != "" || sc.SigningSecret != "" {
		if slack, err = approval.NewSlack(broker, sc, approval.SlackOptions{Log: s.log.With("component", "slack"),
			Terminate: s.terminateFromSlack}); err != nil {
			return fmt.Errorf("approvals.slack: %w", err)
		}
	}
	for i, wh := range cfg.Approvals.Webhooks {
		if _, err := approval.NewWebhook(broker, wh, approval.WebhookOptions{}); err != nil {
			return fmt.Errorf("approvals.webhooks[%d]: %w", i, err)
		}
	}
	// No forward reaches postern's own listeners, HTTP included, whatever
	// address it names them by (the SSH server adds its own).
	own := &netguard.Listeners{}
	own.Add(httpLn.Addr())
	inner, err := innerhop.New(innerhop.Options{
		Authority: s.authority, Policy: s.currentPolicy, Recorder: s.recorder, Audit: audit,
		Approver: NewApprovalGate(broker, s.log.With("component", "approvals")), Locks: s.locks, Moderation: s.locks,
		Masking: masking, Log: s.log, Metrics: s.reg, UpstreamReuse: cfg.SSH.UpstreamReuse,
		OwnListeners: own,
		// audit appends to s.state, where the recorder indexes.
		RecordingAudit: true,
	})
	if err != nil {
		return err
	}
	s.inner = inner
	pg, err := pgproxy.New(pgproxy.Options{
		Recorder: s.recorder, Store: store, Audit: audit, Approver: NewStatementGate(broker, s.log.With("component", "approvals")),
		Log: s.log.With("component", "pgproxy"), Metrics: s.reg,
	})
	if err != nil {
		return err
	}
	sshHostKey, err := hostKey(ctx, s.state)
	if err != nil {
		return err
	}
	s.ssh, err = bastion.NewServer(bastion.Options{
		Authority: s.authority, Policy: s.policy, Audit: s.state, Revocations: s.state, Locks: s.locks, Renewals: s.state,
		Handlers: map[string]bastion.TargetHandler{
			bastion.HandlerSSH:      inner,
			bastion.HandlerCommand:  inner,
			bastion.HandlerTCP:      bastion.Splice,
			bastion.HandlerPostgres: pgproxy.Handler{Proxy: pg, Masking: masking},
		},
		HostKey: sshHostKey, HostNames: hostNames(cfg),
		Config: cfg.SSH, OwnListeners: own, Log: s.log, Metrics: s.reg,
	})
	if err != nil {
		return err
	}

	apiAuth := &certs.APIAuth{
		Authority: s.authority, Verifier: verifier, TrustedProxies: config.ParsePrefixes(cfg.HTTP.TrustedProxies),
		Revoked: func(serial uint64) (bool, error) { return s.state.IsRevoked(context.Background(), serial) },
		Locked:  locked,
	}
	locksAPI, err := lock.NewAPI(lock.APIOptions{Locker: s.locks, Auth: apiAuth, Permissions: s.permissions, Log: s.log})
	if err != nil {
		return fmt.Errorf("locks API: %w", err)
	}
	mcpHandler, err := mcpserver.NewHandler(mcpserver.HandlerOptions{
		Auth: apiAuth, Version: s.opts.Version, Log: s.log.With("component", "mcp"),
		Caller: mcpCallers(issuer, s.authority, sshLn.Addr(), httpLn.Addr(), cfg.PublicURL, apiAuth.TrustedProxies),
	})
	if err != nil {
		return fmt.Errorf("MCP endpoint: %w", err)
	}
	s.mcp = mcpHandler
	approvalsAPI, err := approval.NewAPI(approval.APIOptions{
		Broker: broker, Auth: apiAuth, Permissions: s.permissions, Log: s.log,
		TargetExists: func(_ certs.Identity, name string) bool { _, ok := s.currentPolicy().Lookup(name); return ok },
	})
	if err != nil {
		return fmt.Errorf("approvals API: %w", err)
	}
	follow := FollowAcrossReplicas(s.recorder.Follow, s.state, replica, &http.Client{})
	var ui http.Handler
	if is, ok := web.PickIssuer(cfg.Identity.Issuers); ok || samlSP != nil {
		key, err := web.CookieKey(ctx, s.state)
		if err != nil {
			return fmt.Errorf("web UI cookie key: %w", err)
		}
		ui, err = web.New(web.Options{
			PublicURL: cfg.PublicURL, Issuer: is.IssuerURL, ClientID: is.ClientID, ClientSecret: is.ClientSecret,
			Scopes: is.Scopes, Verifier: verifier, Permissions: s.permissions,
			State: s.state, Store: store, Follow: follow, CookieKey: key, Log: s.log, Metrics: s.reg,
			Approvals: webApprovals{broker: broker}, Locked: locked, OnWatch: s.joinSession, Locks: webLocks{locker: s.locks}, SearchDisabled: indexer == nil,
			SAML: webSAML(samlSP),
		})
		if err != nil {
			return fmt.Errorf("web UI: %w", err)
		}
	}
	// The development issuer is mounted in dev mode only: outside it the
	// handler is nil, and a nil *devidp.Provider in the interface would be
	// mounted and panic on every request.
	var devIdP http.Handler
	if s.devIdP != nil {
		devIdP = s.devIdP
	}
	// No WriteTimeout: the live follow and live view stream for a session's
	// whole length. Reads and headers are bounded (slowloris).
	s.http = &http.Server{
		Handler: httpx.WithRequestID(WithForwarding(newMux(httpHandlers{
			certs: issuer.Handler(certs.HandlerOptions{TrustedProxies: config.ParsePrefixes(cfg.HTTP.TrustedProxies)}), devIdP: devIdP, registry: s.reg, log: s.log,
			sessions: players.NewAPI(players.APIOptions{
				Auth: apiAuth, Permissions: s.permissions, OnFollow: s.joinSession,
				State: s.state, Store: store, Follow: follow, Log: s.log, Metrics: s.reg, SearchDisabled: indexer == nil,
			}),
			ui: ui, approvals: approvalsAPI, slack: slack, locks: locksAPI, mcp: mcpHandler, saml: samlHandler(samlSP),
			scim:  scimHandler(scimSrv),
			ready: func(ctx context.Context) (map[string]string, error) { return s.ready(ctx, store) },
			config: func() publicConfig {
				s.mu.Lock()
				defer s.mu.Unlock()
				pc := newPublicConfig(s.cfg, s.authority.HostCALine(), s.opts.Version)
				pc.Issuers = append(pc.Issuers, samlIssuers(samlSP)...)
				return pc
			},
		}))),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}

	// The checkpointer and the export outlive the listeners: their last
	// pass, after the sessions are sealed, covers the whole chain.
	runAudit, err := s.auditJobs(ctx, cfg, store, replica)
	if err != nil {
		return err
	}
	auditCtx, stopAudit := context.WithCancel(context.WithoutCancel(ctx))
	var auditJobs sync.WaitGroup
	stopAuditJobs := sync.OnceFunc(func() { stopAudit(); auditJobs.Wait() })
	defer stopAuditJobs() // before the state store closes
	for _, job := range runAudit {
		auditJobs.Go(func() { job(auditCtx) })
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := s.ssh.Serve(sshLn); err != nil && !errors.Is(err, bastion.ErrServerClosed) {
			return fmt.Errorf("ssh server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := s.http.Serve(httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-hup:
				s.reload(gctx)
			}
		}
	})
	g.Go(func() error { return s.heartbeat(gctx, replica, started, cfg.Replicas, cfg.SharedState()) })
	g.Go(func() error {
		<-gctx.Done()
		err := s.shutdown()
		stopAuditJobs()
		return err
	})
	if indexer != nil {
		g.Go(func() error { indexer.Run(gctx); return nil })
	}
	if directory != nil {
		g.Go(func() error { directory.Run(gctx, directoryPoll); return nil })
	}
	s.log.Info("postern serving", "ssh", sshLn.Addr().String(), "http", httpLn.Addr().String(), "public_url", cfg.PublicURL)
	if s.opts.Ready != nil {
		s.opts.Ready(sshLn.Addr(), httpLn.Addr())
	}
	return g.Wait()
}

// auditJobs builds the audit checkpointer (anchored to the recording store
// unless audit.anchor.storage is off, and to the HTTP sink if one is
// configured) and the continuous export, and returns their Run functions.
func (s *Service) auditJobs(ctx context.Context, cfg *config.Config, store recorder.Store, replica string) ([]func(context.Context), error) {
	log := s.log.With("component", "audit")
	var anchors []audit.Anchor
	if cfg.Audit.Anchor.Storage == "on" {
		anchors = append(anchors, &audit.StorageAnchor{Objects: store})
	}
	var sink *audit.HTTPSink
	if h := cfg.Audit.Export.HTTP; h.URL != "" {
		var err error
		sink, err = audit.NewHTTPSink(audit.HTTPSinkOptions{URL: h.URL, Format: h.Format, Token: h.Token,
			Headers: h.Headers, Timeout: h.Timeout.D(), Instance: replica})
		if err != nil {
			return nil, fmt.Errorf("audit.export.http: %w", err)
		}
		anchors = append(anchors, sink)
	}
	cp, err := audit.NewCheckpointer(audit.CheckpointerOptions{
		State: s.state, Signer: s.authority.Audit, Interval: cfg.Audit.CheckpointInterval.D(), Anchors: anchors,
		By: replica, Log: log, Metrics: s.reg,
	})
	if err != nil {
		return nil, err
	}
	jobs := []func(context.Context){cp.Run}
	var exportStore audit.Objects
	if u := cfg.Audit.Export.S3.URL; u != "" {
		if exportStore, err = recorder.OpenStore(ctx, u); err != nil {
			return nil, fmt.Errorf("audit.export.s3.url: %w", err)
		}
	}
	if exportStore != nil || sink != nil {
		x, err := audit.NewExporter(audit.ExporterOptions{
			State: s.state, Signer: s.authority.Audit, Owner: replica, S3: exportStore, Window: cfg.Audit.Export.S3.Window.D(),
			HTTP: sink, BatchSize: cfg.Audit.Export.HTTP.BatchSize, Log: log, Metrics: s.reg,
		})
		if err != nil {
			return nil, err
		}
		jobs = append(jobs, x.Run)
	}
	return jobs, nil
}

// checkpointInterval is the recorder's checkpoint interval: with a shared
// (PostgreSQL) state store, recording.checkpoint_interval; with SQLite none
// (one replica, whose spool is on the disk it restarts with).
func checkpointInterval(cfg *config.Config) time.Duration {
	if !cfg.SharedState() {
		return 0
	}
	return cfg.Recording.CheckpointInterval.D()
}

// shutdown stops accepting, drains sessions for up to 30 s, then closes.
func (s *Service) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s.log.Info("shutting down")
	herr := s.http.Shutdown(ctx)
	// The MCP endpoint's connections to the SSH listener go with it, before
	// the SSH server waits for its connections to drain.
	s.mcp.Close()
	err := errors.Join(herr, s.ssh.Shutdown(ctx))
	s.inner.Close() // the idle upstream logins, once no inner hop is left
	return err
}

// reload re-reads the configuration and, if it passes Check (the CA keys
// and every file it references, as a start would), applies what can change
// in place: the policy (targets, roles), the masking rules, the per-source
// penalty settings (ssh.penalty) and upstream login reuse (ssh.upstream_reuse,
// which also closes idle logins). Other changed keys keep their running
// values until a restart; the log line and the config.reload audit event name
// both lists. A configuration that does not pass keeps the running one and
// says why.
func (s *Service) reload(ctx context.Context) {
	if s.opts.Reload == nil {
		s.log.Warn("reload requested but no configuration file to reload")
		return
	}
	next, err := s.opts.Reload()
	if err == nil {
		next.FillPorts(s.httpAddr, s.sshAddr)
		err = Check(ctx, next, CheckOptions{})
	}
	var plan ReloadPlan
	var merged *config.Config
	var eng *policy.Engine
	if err == nil {
		s.mu.Lock()
		running := s.cfg
		s.mu.Unlock()
		plan, merged = PlanReload(running, next)
		eng, err = policy.New(merged)
	}
	if err == nil {
		eng = eng.WithGrants(s.grants).WithGroups(s.directory)
		if s.masking != nil {
			err = s.masking.Update(merged)
		}
	}
	if err == nil {
		err = s.ssh.SetPenalty(merged.SSH.Penalty)
	}
	details := map[string]any{}
	switch {
	case err != nil:
		details["outcome"], details["error"] = "rejected", err.Error()
		s.log.Error("configuration reload rejected; keeping the running configuration", "err", err)
	default:
		s.mu.Lock()
		s.cfg, s.policy = merged, eng
		s.mu.Unlock()
		s.ssh.SetPolicy(eng)
		s.inner.SetUpstreamReuse(merged.SSH.UpstreamReuse)
		details["outcome"] = "applied"
		details["applied"], details["restart_needed"] = orEmpty(plan.Applied), orEmpty(plan.RestartNeeded)
		msg := "configuration reloaded"
		if len(plan.Applied) == 0 && len(plan.RestartNeeded) == 0 {
			msg = "configuration reloaded: unchanged"
		}
		s.log.Info(msg, "applied", plan.Applied, "restart_needed", plan.RestartNeeded,
			"targets", len(merged.Targets), "roles", len(merged.Roles))
		if len(plan.RestartNeeded) > 0 {
			s.log.Warn("configuration changes that need a restart were not applied", "keys", plan.RestartNeeded)
		}
	}
	if _, aerr := s.state.Append(ctx, state.Event{Type: state.EventConfigReload, Actor: "postern", Details: details}); aerr != nil {
		s.log.Error("audit append failed", "err", aerr)
	}
}

// orEmpty returns keys, or an empty list rather than nil (for JSON).
func orEmpty(keys []string) []string {
	if keys == nil {
		return []string{}
	}
	return keys
}

// config returns the current configuration (it changes on reload).
func (s *Service) config() *config.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

func (s *Service) currentPolicy() *policy.Engine {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.policy
}

// ready reports whether the state store answers; it is what a load balancer
// needs. For stores that can tell (S3) the body also says whether the
// recording store is reachable: an S3 outage does not make a replica unready,
// because recordings keep spooling locally and upload when S3 returns.
func (s *Service) ready(ctx context.Context, store recorder.Store) (map[string]string, error) {
	status := map[string]string{"state": "ok"}
	if _, err := s.state.Events(ctx, 0, 1); err != nil {
		return nil, fmt.Errorf("state store: %w", err)
	}
	if c, ok := store.(interface{ Check(context.Context) error }); ok {
		status["recordings"] = "ok"
		if err := c.Check(ctx); err != nil {
			s.log.Warn("recording store unreachable; recordings are spooling", "err", err)
			status["recordings"] = "unreachable; spooling locally"
		}
	}
	return status, nil
}

// joinSession records a moderator joining a running session they follow
// live (postern watch, the web UI): only holders of the moderator or admin
// permission join; an auditor's watch is a watch.
func (s *Service) joinSession(ctx context.Context, who certs.Identity, session string) {
	ps := s.permissions(who)
	if !slices.Contains(ps, policy.PermModerator) && !slices.Contains(ps, policy.PermAdmin) {
		return
	}
	if err := s.locks.Join(ctx, session, who); err != nil {
		s.log.Error("record a moderator joining a session", "session", session, "moderator", who.Username, "err", err)
	}
}

// recordIssued keeps an issued certificate for renewals of open
// connections (bastion.Options.Renewals).
func (s *Service) recordIssued(ctx context.Context, c *certs.Issued) error {
	return s.state.RecordIssued(ctx, state.IssuedCert{Serial: c.Serial, KeyFingerprint: ssh.FingerprintSHA256(c.Cert.Key),
		Issuer: c.Identity.Issuer, Subject: c.Identity.Subject, Principals: c.Principals, ValidBefore: c.ValidBefore})
}

// terminateFromSlack ends the session of a held command: the Slack
// message's Terminate button, clicked by a configured Slack approver.
func (s *Service) terminateFromSlack(ctx context.Context, a state.Approval, by string) error {
	_, err := s.locks.Lock(ctx, lock.Spec{Kind: state.LockSession, Name: a.Session, By: "slack:" + by,
		Reason: "terminated from Slack by " + by + " (request " + a.ID + ")"})
	return err
}

// permissions returns an identity's API permissions under the current policy.
func (s *Service) permissions(id certs.Identity) []string { return s.currentPolicy().Permissions(id) }

// policyGrant lets issuance always see the current policy.
type policyGrant struct{ s *Service }

func (p policyGrant) Grant(id certs.Identity) certs.Grant { return p.s.currentPolicy().Grant(id) }

// hostNames are the principals of postern's own host certificate: the names a
// client may type for the bastion.
func hostNames(cfg *config.Config) []string {
	seen := map[string]bool{}
	var names []string
	add := func(h string) {
		if h != "" && !seen[h] {
			seen[h] = true
			names = append(names, h)
		}
	}
	if h, _, err := net.SplitHostPort(cfg.SSHAddress); err == nil {
		add(h)
	}
	if u, err := urlHost(cfg.PublicURL); err == nil {
		add(u)
	}
	add("localhost")
	add("127.0.0.1")
	return names
}

func urlHost(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	return u.Hostname(), nil
}
