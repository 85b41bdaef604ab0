package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/posternhq/postern/internal/usererr"

	"github.com/spf13/cobra"

	"github.com/posternhq/postern/certs/login"
)

func newAgentCmd(g *globalFlags) *cobra.Command {
	var bastion, dir, tokenFile, audience string
	var github, once, asJSON bool
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "agent --bastion URL (--token-file F | --github-actions [--audience A] | -- COMMAND [ARGS]) [--dir DIR] [--ttl D] [--once]",
		Short: "Keep a workload's certificate fresh from its workload identity token",
		Long: `Run beside an agent or a CI job: exchange the workload's OIDC token for a
short certificate, write the profile (as postern login does: ssh_config, key,
certificate, known_hosts), and renew it when a third of its lifetime is left.
The certificate file is replaced atomically and the key is kept, so ssh and
postern mcp always read a matching pair; the bastion lets a connection opened
with an earlier certificate of the same key run on past that certificate's
expiry. Failures (the token source, the bastion) are reported on stderr and
retried with a backoff from 1s to 1m, sooner when the current certificate is
about to expire.

Token sources:
  --token-file F        a file another system keeps fresh (a Kubernetes
                        projected service-account token)
  --github-actions      the job's ACTIONS_ID_TOKEN_REQUEST_URL and
                        ACTIONS_ID_TOKEN_REQUEST_TOKEN, for --audience
                        (default postern); needs permissions: id-token: write
  -- COMMAND [ARGS]     a command that prints a token on stdout

--once exchanges one token and exits (0, or 1 with the reason).`,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			var src login.TokenSource
			n := 0
			if tokenFile != "" {
				src, n = login.FileTokenSource{Path: tokenFile}, n+1
			}
			if github {
				gh, err := login.GitHubActionsFromEnv(audience)
				if err != nil {
					return &usererr.Error{Exit: 2, Msg: err.Error()}
				}
				src, n = gh, n+1
			}
			if dash := cmd.ArgsLenAtDash(); dash >= 0 && len(args) > dash {
				src, n = login.CommandTokenSource{Argv: args[dash:]}, n+1
			} else if len(args) > 0 {
				return &usererr.Error{Exit: 2, Msg: "unexpected arguments; put a token command after --"}
			}
			if n != 1 {
				return &usererr.Error{Exit: 2, Msg: "give one token source: --token-file, --github-actions or -- COMMAND"}
			}
			if bastion == "" {
				return &usererr.Error{Exit: 2, Msg: "--bastion is required (or set POSTERN_BASTION)"}
			}
			err = login.RunAgent(cmd.Context(), login.AgentOptions{
				Login:  login.Options{Bastion: bastion, Dir: dir, TTL: ttl, JSONErrors: asJSON},
				Source: src, Once: once, Log: log.With("component", "agent", "source", src.String()),
			})
			var re *login.RenewalError
			if errors.As(err, &re) {
				return &usererr.Error{Exit: 1, Msg: fmt.Sprintf("%s failed: %v", re.Stage, re.Err)}
			}
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&bastion, "bastion", os.Getenv("POSTERN_BASTION"), "bastion URL (default $POSTERN_BASTION)")
	fl.StringVar(&dir, "dir", "", "profile directory (default ~/.postern/<bastion-host>)")
	fl.StringVar(&tokenFile, "token-file", "", "read the token from this file at every renewal")
	fl.BoolVar(&github, "github-actions", false, "request the token from GitHub Actions")
	fl.StringVar(&audience, "audience", "postern", "the audience of a GitHub Actions token")
	fl.DurationVar(&ttl, "ttl", 0, "requested certificate lifetime (default: the bastion's for agents)")
	fl.BoolVar(&once, "once", false, "exchange one token and exit")
	fl.BoolVar(&asJSON, "json", false, "make the profile ask the bastion for JSON error messages")
	return cmd
}
