package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/posternhq/postern/certs/login"
	"github.com/posternhq/postern/internal/atomicfile"
	"github.com/posternhq/postern/players"
)

// clientFlags select the bastion and the login profile of a client command.
type clientFlags struct {
	bastion string // --bastion, $POSTERN_BASTION
	dir     string // --dir
}

func (c *clientFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&c.bastion, "bastion", "", "bastion URL (default $POSTERN_BASTION, else the profile's)")
	fs.StringVar(&c.dir, "dir", "", "profile directory written by postern login (default ~/.postern/<bastion-host>)")
}

// client opens the login profile and returns a sessions API client.
func (c *clientFlags) client() (*players.Client, error) {
	api, err := login.OpenAPIClient(c.bastion, c.dir, login.APIClientOptions{})
	if err != nil {
		return nil, err
	}
	return &players.Client{API: api}, nil
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func newSessionsCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sessions",
		Short: "List, search, show and export recorded sessions",
		Long: `List, search, show and export the sessions the bastion recorded. The
auditor (or admin) permission sees every session, the moderator permission
also the running ones (ls --status running), anyone else their own;
authenticates with the profile of postern login.`,
	}
	cmd.AddCommand(newSessionsLsCmd(g), newSessionsShowCmd(g), newSessionsExportCmd(g), newSessionsSearchCmd(g))
	return cmd
}

func newSessionsLsCmd(g *globalFlags) *cobra.Command {
	var cf clientFlags
	var user, key, target, role, status, since, until, grep string
	var limit int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls [--user U] [--identity-key K] [--target T] [--role R] [--status S] [--since DUR] [--until TIME] [--grep TEXT] [--json]",
		Short: "List recorded sessions, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			q := url.Values{"user": {user}, "identity_key": {key}, "target": {target}, "role": {role}, "status": {status},
				"since": {since}, "until": {until}, "q": {grep}}
			if limit > 0 {
				q.Set("limit", strconv.Itoa(limit))
			}
			rows, err := c.List(cmd.Context(), q)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			if len(rows) == 0 {
				fmt.Fprintln(g.stderr, "no sessions match")
				return nil
			}
			return players.WriteTable(g.stdout, rows, time.Now())
		},
	}
	fl := cmd.Flags()
	cf.register(fl)
	fl.StringVar(&user, "user", "", "only sessions of this username (one username may be several identities)")
	fl.StringVar(&key, "identity-key", "", `only sessions of this identity: "<issuer>:<subject>" or "alias:<name>"`)
	fl.StringVar(&target, "target", "", "only sessions on this target")
	fl.StringVar(&role, "role", "", "only sessions granted by this role")
	fl.StringVar(&status, "status", "", "only sessions with this status: running, finished, interrupted, denied or failed")
	fl.StringVar(&since, "since", "", "only sessions started since: a duration ago (24h, 7d) or an RFC 3339 time")
	fl.StringVar(&until, "until", "", "only sessions started before: a duration ago or an RFC 3339 time")
	fl.StringVar(&grep, "grep", "", "only sessions whose id, user, target, login or command contains TEXT")
	fl.IntVar(&limit, "limit", 100, "at most this many sessions")
	fl.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newSessionsSearchCmd(g *globalFlags) *cobra.Command {
	var cf clientFlags
	var identity, key, target, since, until string
	var limit int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "search QUERY [--identity U] [--identity-key K] [--target T] [--since DUR] [--until TIME] [--json]",
		Short: "Search every recording: commands, typed lines, SQL, SFTP operations and output",
		Long: `Search the text of every recording: exec command lines, lines typed in
interactive sessions (never those typed at a password prompt), SQL statements
sent to PostgreSQL targets, SFTP file operations and terminal output. Each hit
names the session and the moment in it (AT); replay it in the web UI from that
moment, or with postern play.

QUERY is words that must all appear in one hit; "quoted words" must appear
next to each other, in order; punctuation separates words, so /etc/sudoers
finds the phrase "etc sudoers"; a trailing * matches any word it starts
(sudo*). Case is ignored. Hits come newest session first.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			q := url.Values{"q": {strings.Join(args, " ")}, "identity": {identity}, "identity_key": {key}, "target": {target},
				"since": {since}, "until": {until}}
			if limit > 0 {
				q.Set("limit", strconv.Itoa(limit))
			}
			hits, err := c.Search(cmd.Context(), q)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(hits)
			}
			if len(hits) == 0 {
				fmt.Fprintln(g.stderr, "nothing matches")
				return nil
			}
			return players.WriteSearchTable(g.stdout, hits)
		},
	}
	fl := cmd.Flags()
	cf.register(fl)
	fl.StringVar(&identity, "identity", "", "only sessions of this username (one username may be several identities)")
	fl.StringVar(&key, "identity-key", "", `only sessions of this identity: "<issuer>:<subject>" or "alias:<name>"`)
	fl.StringVar(&target, "target", "", "only sessions on this target")
	fl.StringVar(&since, "since", "", "only sessions started since: a duration ago (24h, 7d) or an RFC 3339 time")
	fl.StringVar(&until, "until", "", "only sessions started before: a duration ago or an RFC 3339 time")
	fl.IntVar(&limit, "limit", 100, "at most this many hits")
	fl.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newSessionsShowCmd(g *globalFlags) *cobra.Command {
	var cf clientFlags
	var asJSON, verify bool
	cmd := &cobra.Command{
		Use:   "show ID [--json] [--verify]",
		Short: "Show a session's metadata, approvals and integrity",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			d, err := c.Show(cmd.Context(), args[0], verify)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(d)
			}
			return players.WriteDetail(g.stdout, d)
		},
	}
	cf.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&verify, "verify", false, "hash the stored recording on the server (slower) instead of the cheap seal and size check")
	return cmd
}

func newSessionsExportCmd(g *globalFlags) *cobra.Command {
	var cf clientFlags
	var out, format string
	cmd := &cobra.Command{
		Use:   "export ID [-o FILE] [--format v2|v3]",
		Short: "Download a session's recording as an asciicast file",
		Long: `Download a session's recording as an asciicast file that asciinema and
asciinema-player replay. v2 (the default) is what every player reads,
including Debian's asciinema 2.2; v3 needs asciinema 3 or asciinema-player 3.10+.
-o - writes to standard output.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var version int
			switch format {
			case "v2", "2":
				version = 2
			case "v3", "3":
				version = 3
			default:
				return fmt.Errorf("--format %q: want v2 or v3", format)
			}
			id, ok := players.NormalizeID(args[0])
			if !ok {
				return fmt.Errorf("%q is not a session id", args[0])
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			if out == "" {
				out = id + ".cast"
			}
			if out == "-" {
				return c.Export(cmd.Context(), id, g.stdout, version, nil)
			}
			return exportToFile(cmd, g, c, id, out, version)
		},
	}
	cf.register(cmd.Flags())
	cmd.Flags().StringVarP(&out, "output", "o", "", "output file (default ID.cast; - for standard output)")
	cmd.Flags().StringVar(&format, "format", "v2", "asciicast version: v2 or v3")
	return cmd
}

// exportToFile downloads into a temporary file beside out and renames it
// into place, so an interrupted download never leaves a partial cast.
func exportToFile(cmd *cobra.Command, g *globalFlags, c *players.Client, id, out string, version int) error {
	f, err := atomicfile.New(out, 0o600)
	if err != nil {
		return fmt.Errorf("create output: %w", err)
	}
	defer f.Close() // discards it unless committed
	var progress func(done, total int64)
	if isTerminal(g.stderr) {
		progress = newProgressBar(g.stderr)
	}
	if err := c.Export(cmd.Context(), id, f, version, progress); err != nil {
		return err
	}
	if progress != nil {
		fmt.Fprintln(g.stderr)
	}
	if err := f.Commit(); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	fmt.Fprintf(g.stderr, "wrote %s\n", out)
	return nil
}

// progressBarMin is the download size from which a progress bar is drawn.
const progressBarMin = 1 << 20

// newProgressBar returns a progress callback that redraws one line of w at
// most ten times a second, for downloads of at least progressBarMin bytes.
func newProgressBar(w io.Writer) func(done, total int64) {
	var last time.Time
	return func(done, total int64) {
		if total >= 0 && total < progressBarMin {
			return
		}
		now := time.Now()
		if now.Sub(last) < 100*time.Millisecond && done != total {
			return
		}
		last = now
		if total <= 0 {
			fmt.Fprintf(w, "\r%s", mib(done))
			return
		}
		const width = 30
		n := int(done * width / total)
		bar := make([]byte, width)
		for i := range bar {
			bar[i] = ' '
			if i < n {
				bar[i] = '='
			}
		}
		fmt.Fprintf(w, "\r[%s] %s / %s %3d%%", bar, mib(done), mib(total), done*100/total)
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// errNoSession is returned for an argument that is neither a file, a URL
// nor a session id.
var errNoSession = errors.New("not a file, URL or session id")
