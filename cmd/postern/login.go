package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/posternhq/postern/certs/login"
	"github.com/posternhq/postern/internal/usererr"
)

// loginFlags are the flags of postern login.
type loginFlags struct {
	bastion   string
	device    bool
	tokenFile string
	tokenEnv  string
	dir       string
	issuer    string
	as        string
	ttl       time.Duration
	quiet     bool
	force     bool
	noBrowser bool
	json      bool
}

// newLoginCmd returns postern login: obtain an ID token, exchange it for a
// short-lived SSH certificate and write a profile directory for ssh.
func newLoginCmd(g *globalFlags) *cobra.Command {
	var f loginFlags
	cmd := &cobra.Command{
		Use:   "login --bastion URL [--device | --token-file F | --token-env VAR] [--dir DIR]",
		Short: "Sign in and get a short-lived SSH certificate",
		Long: `Sign in with the bastion's identity provider and get a short-lived SSH
certificate. The key, certificate, known_hosts and an ssh_config are written to
the profile directory (default ~/.postern/<bastion-host>/):

  ssh -F ~/.postern/<bastion-host>/ssh_config -J <bastion-host> <login>@<target>

By default a browser sign-in is started (authorization code with PKCE and a
loopback redirect); --device prints a code to enter on another device; agents
pass an ID token with --token-file or --token-env.

If the current certificate has more than a fifth of its lifetime left, login
says until when it is valid and does nothing else; --force renews it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			err := runLogin(cmd, g, f)
			if err != nil {
				// Printed here so the message reads "postern login: …";
				// the error without a message only sets the status.
				fmt.Fprintln(g.stderr, "postern login:", err)
				return &usererr.Error{Exit: 1}
			}
			return nil
		},
	}
	bindLoginFlags(cmd.Flags(), &f)
	cmd.MarkFlagsMutuallyExclusive("device", "token-file", "token-env")
	return cmd
}

// bindLoginFlags defines login's flags on fl, stored in f.
func bindLoginFlags(fl *pflag.FlagSet, f *loginFlags) {
	fl.StringVar(&f.bastion, "bastion", os.Getenv("POSTERN_BASTION"), "bastion URL, e.g. https://bastion.example.com (default $POSTERN_BASTION)")
	fl.BoolVar(&f.device, "device", false, "sign in with a code on another device (RFC 8628) instead of a local browser")
	fl.StringVar(&f.tokenFile, "token-file", "", "read an OIDC ID token from this file (agents)")
	fl.StringVar(&f.tokenEnv, "token-env", "", "read an OIDC ID token from this environment variable (agents)")
	fl.StringVar(&f.dir, "dir", "", "profile directory (default ~/.postern/<bastion-host>)")
	fl.StringVar(&f.issuer, "issuer", "", "issuer name, when the bastion offers several")
	fl.StringVar(&f.as, "as", "", "account to sign in as (sent as the OIDC login_hint; with serve --dev: dev or reviewer)")
	fl.DurationVar(&f.ttl, "ttl", 0, "requested certificate lifetime, e.g. 1h (default: the bastion's)")
	fl.BoolVarP(&f.quiet, "quiet", "q", false, "print nothing on success")
	fl.BoolVar(&f.force, "force", false, "renew even if the current certificate is still fresh")
	fl.BoolVar(&f.noBrowser, "no-browser", false, "print the sign-in URL instead of opening a browser")
	fl.BoolVar(&f.json, "json", false, "make the profile ask the bastion for JSON error messages (for agents)")
}

// runLogin runs the login the flags describe.
func runLogin(cmd *cobra.Command, g *globalFlags, f loginFlags) error {
	o, err := loginOptions(g, f)
	if err != nil {
		return err
	}
	_, err = login.Login(cmd.Context(), o)
	return err
}

// loginOptions maps the flags to login.Options.
func loginOptions(g *globalFlags, f loginFlags) (login.Options, error) {
	if f.bastion == "" {
		return login.Options{}, errors.New("no bastion: pass --bastion URL or set POSTERN_BASTION")
	}
	if f.ttl < 0 {
		return login.Options{}, errors.New("--ttl must be positive")
	}
	o := login.Options{
		Bastion:    f.bastion,
		Dir:        f.dir,
		Issuer:     f.issuer,
		LoginHint:  f.as,
		TTL:        f.ttl,
		Quiet:      f.quiet,
		Force:      f.force,
		NoBrowser:  f.noBrowser,
		JSONErrors: f.json,
		Out:        g.stdout,
		Err:        g.stderr,
	}
	switch {
	case f.device:
		o.Mode = login.ModeDevice
	case f.tokenFile != "":
		o.Mode, o.TokenFile = login.ModeTokenFile, f.tokenFile
	case f.tokenEnv != "":
		o.Mode, o.TokenEnv = login.ModeTokenEnv, f.tokenEnv
	}
	return o, nil
}
