package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/posternhq/postern/internal/buildinfo"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/usererr"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if ue := usererr.As(err); ue != nil && ue.Exit != 0 {
			if ue.Msg != "" {
				fmt.Fprintln(os.Stderr, "postern:", ue.Msg)
			}
			os.Exit(ue.Exit)
		}
		fmt.Fprintln(os.Stderr, "postern:", err)
		os.Exit(1)
	}
}

// globalFlags are the flags every subcommand shares.
type globalFlags struct {
	Config    string // --config, $POSTERN_CONFIG
	Dev       bool   // --dev: embedded development defaults
	DataDir   string // --data-dir
	LogFormat string // --log-format text|json
	LogLevel  string // --log-level debug|info|warn|error

	// sshListen and httpListen override the listen addresses (serve only).
	sshListen, httpListen string

	stdout, stderr io.Writer
}

// run builds the command tree and executes it. It is main without the process
// exits, so tests can drive the whole CLI in-process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	g := &globalFlags{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "postern",
		Short:         "SSH bastion and terminal session recorder",
		Long:          "postern verifies OIDC identities, issues short-lived SSH certificates, forwards and records every session through it.",
		SilenceUsage:  true,
		SilenceErrors: true,
		// --version prints what `postern version` does: version, commit, Go.
		Version: buildinfo.Get().String(),
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&g.Config, "config", os.Getenv("POSTERN_CONFIG"), "configuration file (default $POSTERN_CONFIG)")
	pf.BoolVar(&g.Dev, "dev", false, "use the embedded development defaults (loopback only, insecure)")
	pf.StringVar(&g.DataDir, "data-dir", "", "data directory (overrides data_dir; ./.postern with --dev)")
	pf.StringVar(&g.LogFormat, "log-format", "", "log format: text or json (default text on a terminal, json otherwise)")
	pf.StringVar(&g.LogLevel, "log-level", "info", "log level: debug, info, warn or error")

	root.AddCommand(
		newServeCmd(g),
		newCheckCmd(g),
		newLoginCmd(g),
		newCACmd(g),
		newAuditCmd(g),
		newSessionsCmd(g),
		newPlayCmd(g),
		newWatchCmd(g),
		newApprovalsCmd(g),
		newRequestCmd(g),
		newLockCmd(g),
		newMCPCmd(g),
		newAgentCmd(g),
		newVersionCmd(g),
	)
	return root
}

// loadConfig returns the configuration the flags select: --config FILE, or the
// development defaults with --dev. Defaults are applied and it is validated.
func loadConfig(g *globalFlags) (*config.Config, error) {
	switch {
	case g.Config != "":
		return config.LoadWith(g.Config, func(c *config.Config) {
			if g.DataDir != "" {
				c.DataDir = g.DataDir
			}
			if g.sshListen != "" {
				c.Listen.SSH = g.sshListen
			}
			if g.httpListen != "" {
				c.Listen.HTTP = g.httpListen
			}
		})
	case g.Dev:
		c, err := config.Dev(g.DataDir)
		if err != nil {
			return nil, err
		}
		if g.sshListen != "" || g.httpListen != "" {
			ssh, http := c.Listen.SSH, c.Listen.HTTP
			if g.sshListen != "" {
				ssh = g.sshListen
			}
			if g.httpListen != "" {
				http = g.httpListen
			}
			c.ReloadDev(http, ssh)
		}
		return c, nil
	}
	return nil, errors.New("no configuration: pass --config FILE (or set POSTERN_CONFIG), or use --dev for the embedded development defaults")
}

// logger builds the process logger: text on a terminal, JSON otherwise, unless
// --log-format says.
func (g *globalFlags) logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.LogLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %q is not debug, info, warn or error", g.LogLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	format := g.LogFormat
	if format == "" {
		format = "json"
		if f, ok := g.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			format = "text"
		}
	}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(g.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(g.stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: %q is not text or json", format)
}

func newVersionCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, the commit and the Go version of this build",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(g.stdout, buildinfo.Get())
			return nil
		},
	}
}
