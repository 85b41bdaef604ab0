package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/posternhq/postern/internal/buildinfo"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/server"
)

func newServeCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the bastion (SSH + HTTP API)",
		Long: "Run the bastion. With --dev it needs no configuration: loopback listeners, generated CAs, " +
			"file storage, SQLite state, an embedded development OIDC issuer and a recorded `demo` target.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			cfg, err := loadConfig(g)
			if err != nil {
				return err
			}
			var reload func() (*config.Config, error)
			if g.Config != "" {
				reload = func() (*config.Config, error) { return loadConfig(g) }
			}
			svc, err := server.NewService(cfg, server.ServiceOptions{
				Version: buildinfo.Get().Version, Log: log, Reload: reload,
				Ready: func(sshAddr, httpAddr net.Addr) {
					if cfg.Dev {
						printDevTour(g, cfg)
					}
				},
			})
			if err != nil {
				return err
			}
			hup := make(chan struct{}, 1)
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGHUP)
			defer signal.Stop(sig)
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			go func() { // ends with ctx; forwards SIGHUP without blocking
				for {
					select {
					case <-ctx.Done():
						return
					case <-sig:
						select {
						case hup <- struct{}{}:
						default:
						}
					}
				}
			}()
			return svc.Run(ctx, hup)
		},
	}
	cmd.Flags().StringVar(&g.sshListen, "ssh-listen", "", "SSH listen address (overrides listen.ssh; port 0 picks a free port)")
	cmd.Flags().StringVar(&g.httpListen, "http-listen", "", "HTTP listen address (overrides listen.http; port 0 picks a free port)")
	return cmd
}

// printDevTour prints the exact commands that give a recorded session on
// this machine.
func printDevTour(g *globalFlags, cfg *config.Config) {
	u, _ := url.Parse(cfg.PublicURL)
	host := u.Hostname()
	sshHost, _, _ := net.SplitHostPort(cfg.SSHAddress)
	fmt.Fprintf(g.stderr, `
  postern is running in development mode (insecure, loopback only).

  Log in (the development issuer signs you in as "dev"):
      postern login --bastion %[1]s
  Open a recorded shell on the built-in demo target:
      ssh -F ~/.postern/%[2]s/ssh_config -J %[3]s dev@demo
  Replay the newest recording, and check the audit log:
      asciinema play "$(ls -t %[4]s/recordings/*/*/*/*.cast | head -n 1)"
      postern audit verify --dev --data-dir %[4]s
  Commands starting with rm or sudo wait for approval; approve them as the
  development reviewer:
      postern login --bastion %[1]s --as reviewer --dir ~/.postern-reviewer
      postern approvals ls --dir ~/.postern-reviewer
      postern approvals approve <request-id> --dir ~/.postern-reviewer

`, cfg.PublicURL, host, sshHost, cfg.DataDir)
}
