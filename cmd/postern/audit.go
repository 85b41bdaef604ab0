package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/posternhq/postern/audit"
	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/players"
	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/state"
)

// Exit statuses of `postern audit verify`.
const (
	// exitTampered: the evidence was checked and problems were found.
	exitTampered = 1
	// exitCannotVerify: the evidence could not be checked (a missing
	// store, no audit key).
	exitCannotVerify = 2
)

// newAuditCmd is `postern audit`: verify, export and search the audit log.
func newAuditCmd(g *globalFlags) *cobra.Command {
	c := &cobra.Command{
		Use:   "audit",
		Short: "Verify, export and search the audit log",
	}
	c.AddCommand(newAuditVerifyCmd(g), newAuditExportCmd(g), newAuditLsCmd(g))
	return c
}

type auditVerifyFlags struct {
	offline     string
	auditKey    string
	files       []string
	checkpoints []string
	asJSON      bool
}

func newAuditVerifyCmd(g *globalFlags) *cobra.Command {
	var f auditVerifyFlags
	c := &cobra.Command{
		Use:   "verify [--audit-file FILE]... [--checkpoints FILE]... | --offline DIR [--audit-key FILE]",
		Short: "Verify the audit chain, its signed checkpoints and every sealed recording",
		Long: `verify checks the evidence postern keeps and reports every problem, naming
the sequence number or row and what differs:

  - the audit chain in the state store: every event's hash and link, and no
    missing event;
  - every signed checkpoint (in the state store, in the recording store under
    audit/checkpoints/, and in any --checkpoints file collected from a log
    sink): its signature, and that the chain still matches it — a chain that
    was rewritten and re-hashed, or whose tail was cut, does not;
  - every sealed recording: its signed seal, the index row (every field, and
    seal_seq), the stored cast's digest and the metadata JSON beside it;
  - every revocation against its cert.revoked event;
  - this replica's audit file (audit.file) and every --audit-file (other
    replicas' files): each is a sequence of chain segments, and every line must
    be the chain's event at its sequence number.

With --offline DIR it verifies an evidence bundle written by
'postern audit export', with no access to postern's stores; give the audit
public key with --audit-key (from 'postern ca export --audit', obtained
independently of the bundle).

Exit status: 0 if everything is intact, 1 if a problem was found, 2 if the
evidence could not be verified (a missing store, no audit key).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAuditVerify(cmd.Context(), g, f)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.offline, "offline", "", "verify the evidence bundle in `DIR` instead of the stores")
	fl.StringVar(&f.auditKey, "audit-key", "", "trust the audit public key(s) in `FILE` (authorized_keys lines) instead of the configured ones")
	fl.StringArrayVar(&f.files, "audit-file", nil, "also check another replica's audit `FILE` against the chain (repeatable)")
	fl.StringArrayVar(&f.checkpoints, "checkpoints", nil, "also check the chain against the signed checkpoints in `FILE`, one per line (repeatable)")
	fl.BoolVar(&f.asJSON, "json", false, "print the report as JSON")
	return c
}

// cannotVerify is an exit with status 2.
func cannotVerify(err error) error {
	return &usererr.Error{Exit: exitCannotVerify, Msg: err.Error()}
}

func runAuditVerify(ctx context.Context, g *globalFlags, f auditVerifyFlags) error {
	var opts audit.VerifyOptions
	for _, p := range f.checkpoints {
		cps, err := audit.ReadCheckpoints(p)
		if err != nil {
			return cannotVerify(fmt.Errorf("--checkpoints: %w", err))
		}
		opts.Checkpoints = append(opts.Checkpoints, cps...)
	}
	for _, p := range f.files {
		opts.Files = append(opts.Files, audit.File{Path: p})
	}
	if f.auditKey != "" {
		k, err := audit.ReadKeyring(f.auditKey)
		if err != nil {
			return cannotVerify(fmt.Errorf("--audit-key: %w", err))
		}
		opts.Keys = k
	}
	var src audit.Source
	var warning string
	if f.offline != "" {
		b, err := audit.OpenBundle(f.offline)
		if err != nil {
			return cannotVerify(err)
		}
		if opts.Keys == nil {
			k, err := audit.ParseKeyring(b.Keys())
			if err != nil {
				return cannotVerify(fmt.Errorf("the bundle carries no usable audit key (%v): pass --audit-key", err))
			}
			opts.Keys = k
			warning = "warning: checked with the audit key inside the bundle; pass --audit-key with a key obtained independently (postern ca export --audit)"
		}
		src = b
	} else {
		cfg, st, store, err := openEvidence(ctx, g)
		if err != nil {
			return err
		}
		defer st.Close()
		if opts.Keys == nil {
			if opts.Keys, err = auditKeyring(ctx, cfg, st); err != nil {
				return cannotVerify(err)
			}
		}
		s := &audit.StoreSource{State: st, Objects: store}
		if cfg.Audit.Anchor.Storage == "on" {
			s.Anchor = &audit.StorageAnchor{Objects: store}
		}
		src = s
		opts.Files = append([]audit.File{{Path: cfg.Audit.File, Optional: true}}, opts.Files...)
		opts.CheckpointInterval = cfg.Audit.CheckpointInterval.D()
	}
	rep, err := audit.Verify(ctx, src, opts)
	if err != nil {
		return cannotVerify(fmt.Errorf("verify: %w", err))
	}
	if f.asJSON {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printReport(g.stdout, rep, warning)
	}
	if !rep.OK() {
		return &usererr.Error{Exit: exitTampered, Msg: fmt.Sprintf("audit verification failed (%d problems in %d events, %d sealed recordings)",
			len(rep.Problems), rep.Events, rep.Sealed)}
	}
	return nil
}

// openEvidence loads the configuration and opens its state store and
// recording store for reading; a store that does not exist is an exit with
// status 2, and nothing is created.
func openEvidence(ctx context.Context, g *globalFlags) (*config.Config, *state.Store, recorder.Store, error) {
	cfg, err := loadConfig(g)
	if err != nil {
		return nil, nil, nil, err
	}
	st, err := state.Open(ctx, cfg.State, state.Options{MustExist: true})
	if errors.Is(err, state.ErrNoStore) {
		return nil, nil, nil, cannotVerify(fmt.Errorf("the state store is missing (%v): nothing to verify; check --config, --data-dir and state", err))
	}
	if err != nil {
		return nil, nil, nil, cannotVerify(fmt.Errorf("open state store: %w", err))
	}
	store, err := recorder.OpenExistingStore(ctx, cfg.Storage)
	if err != nil {
		st.Close()
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, nil, cannotVerify(fmt.Errorf("the recording store is missing (%v); check storage", err))
		}
		return nil, nil, nil, cannotVerify(fmt.Errorf("open recording store: %w", err))
	}
	return cfg, st, store, nil
}

// auditKeyring is the configured audit public keys (ca.audit, read-only).
func auditKeyring(ctx context.Context, cfg *config.Config, st *state.Store) (*audit.Keyring, error) {
	k, err := openAuditKey(ctx, cfg, st)
	if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	return audit.NewKeyring(k.Trusted())
}

// openAuditKey opens the audit signing key without generating it: from its
// configuration, or where postern generated it (the shared state store
// with PostgreSQL, the data directory with SQLite).
func openAuditKey(ctx context.Context, cfg *config.Config, st *state.Store) (*certs.AuditKey, error) {
	if cfg.SharedState() {
		return certs.OpenAuditKeyFrom(ctx, cfg.CA.Audit, cfg.DataDir, st)
	}
	return certs.OpenAuditKey(cfg.CA.Audit, cfg.DataDir)
}

func printReport(w io.Writer, rep *audit.Report, warning string) {
	if warning != "" {
		fmt.Fprintln(w, warning)
	}
	for _, p := range rep.Problems {
		fmt.Fprintln(w, p)
	}
	if rep.OK() {
		fmt.Fprintf(w, "audit log intact: %d events, %d sealed recordings\n", rep.Events, rep.Sealed)
	}
	fmt.Fprintf(w, "%s: events %d to %d, %d revocations; %d signed checkpoints match, the last at seq %d\n",
		rep.Source, rep.First, rep.Last, rep.Revocations, rep.Checkpoints, rep.Covered)
	for _, fr := range rep.Files {
		if !fr.Missing {
			fmt.Fprintf(w, "audit file %s: %d events in %d segments\n", fr.Path, fr.Events, fr.Segments)
		}
	}
	for _, n := range rep.Notes {
		fmt.Fprintln(w, "note:", n)
	}
}

func newAuditExportCmd(g *globalFlags) *cobra.Command {
	var since, until, out string
	c := &cobra.Command{
		Use:   "export --since WHEN [--until WHEN] -o DIR",
		Short: "Write an evidence bundle that verifies offline",
		Long: `export writes the audit events between --since and --until (widened to whole
signed checkpoints), their checkpoints, the index rows, casts and metadata of
the recordings sealed among them, the revocations they record and the audit
public keys into DIR, which must not exist or be empty. Anyone can then check
it with 'postern audit verify --offline DIR --audit-key KEYFILE', without
access to postern's stores.

When the audit signing key is readable here and no checkpoint covers the end of
the range yet, export takes one (and anchors it as the server would).
WHEN is an RFC 3339 time or a duration before now (24h, 7d).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("-o DIR is required")
			}
			now := time.Now()
			s, err := players.ParseWhen(since, now)
			if err != nil {
				return fmt.Errorf("--since: %w", err)
			}
			u, err := players.ParseWhen(until, now)
			if err != nil {
				return fmt.Errorf("--until: %w", err)
			}
			return runAuditExport(cmd.Context(), g, s, u, out)
		},
	}
	fl := c.Flags()
	fl.StringVar(&since, "since", "", "first event time: RFC 3339 or a duration ago (default: the first event)")
	fl.StringVar(&until, "until", "", "events before this time: RFC 3339 or a duration ago (default: now)")
	fl.StringVarP(&out, "output", "o", "", "the bundle `DIR` to write")
	return c
}

func runAuditExport(ctx context.Context, g *globalFlags, since, until time.Time, dir string) error {
	cfg, st, store, err := openEvidence(ctx, g)
	if err != nil {
		return err
	}
	defer st.Close()
	key, err := openAuditKey(ctx, cfg, st)
	if err != nil {
		return fmt.Errorf("audit key: %w", err)
	}
	src := &audit.StoreSource{State: st, Objects: store}
	var anchors []audit.Anchor
	if cfg.Audit.Anchor.Storage == "on" {
		src.Anchor = &audit.StorageAnchor{Objects: store}
		anchors = append(anchors, src.Anchor)
	}
	opts := audit.BundleOptions{Source: src, Keys: key.AuthorizedKeys(), Since: since, Until: until}
	if key.CanSign() {
		if opts.Checkpointer, err = audit.NewCheckpointer(audit.CheckpointerOptions{
			State: st, Signer: key, Interval: cfg.Audit.CheckpointInterval.D(), Anchors: anchors, By: "postern audit export",
		}); err != nil {
			return err
		}
	}
	m, err := audit.WriteBundle(ctx, dir, opts)
	if err != nil {
		return fmt.Errorf("audit export: %w", err)
	}
	fmt.Fprintf(g.stdout, "wrote %s: events %d to %d (%d), %d checkpoints, %d recordings, %d revocations\n",
		dir, m.From, m.To, m.Events, m.Checkpoints, m.Sessions, m.Revocations)
	return nil
}

func newAuditLsCmd(g *globalFlags) *cobra.Command {
	var f state.EventFilter
	var since, until string
	var asJSON bool
	c := &cobra.Command{
		Use:   "ls [--actor U] [--target T] [--type T] [--session ID] [--since WHEN] [--until WHEN] [--limit N] [--json]",
		Short: "List audit events from the state store",
		Long: `ls lists the audit events that match every filter given, oldest first: the
last --limit of them (100 by default; 0 for all). --type takes an exact type
or a prefix ending in '*' (session.*). WHEN is an RFC 3339 time or a duration
before now (24h, 7d). It reads the state store directly (SQLite or
PostgreSQL), so it runs where the configuration is.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			now := time.Now()
			var err error
			if f.Since, err = players.ParseWhen(since, now); err != nil {
				return fmt.Errorf("--since: %w", err)
			}
			if f.Until, err = players.ParseWhen(until, now); err != nil {
				return fmt.Errorf("--until: %w", err)
			}
			if f.Limit < 0 {
				return errors.New("--limit: want 0 (all) or a positive number")
			}
			f.Newest = true
			cfg, err := loadConfig(g)
			if err != nil {
				return err
			}
			st, err := state.Open(cmd.Context(), cfg.State, state.Options{MustExist: true})
			if err != nil {
				return fmt.Errorf("open state store: %w", err)
			}
			defer st.Close()
			evs, err := st.ListEvents(cmd.Context(), f)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetEscapeHTML(false)
				for _, e := range evs {
					if err := enc.Encode(e); err != nil {
						return err
					}
				}
				return nil
			}
			if len(evs) == 0 {
				fmt.Fprintln(g.stderr, "no audit events match")
				return nil
			}
			return writeEvents(g.stdout, evs)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.Actor, "actor", "", "only events of this actor (identity)")
	fl.StringVar(&f.Actor, "identity", "", "alias of --actor")
	fl.StringVar(&f.Target, "target", "", "only events on this target")
	fl.StringVar(&f.Type, "type", "", "only events of this type, or type prefix ending in '*'")
	fl.StringVar(&f.Session, "session", "", "only events of this session")
	fl.StringVar(&since, "since", "", "only events since: RFC 3339 or a duration ago")
	fl.StringVar(&until, "until", "", "only events before: RFC 3339 or a duration ago")
	fl.IntVar(&f.Limit, "limit", 100, "at most this many (the newest), 0 for all")
	fl.BoolVar(&asJSON, "json", false, "print one JSON event per line (the chain's canonical form)")
	return c
}

// writeEvents prints events as a table.
func writeEvents(w io.Writer, evs []state.Event) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tTYPE\tACTOR\tTARGET\tSESSION\tDETAILS")
	for _, e := range evs {
		d := ""
		if len(e.Details) > 0 {
			b, _ := json.Marshal(e.Details)
			d = string(b)
			if len(d) > 120 {
				d = d[:117] + "…"
			}
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.Time.Format(time.RFC3339), e.Type,
			dash(e.Actor), dash(e.Target), dash(e.Session), strings.ReplaceAll(d, "\t", " "))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
