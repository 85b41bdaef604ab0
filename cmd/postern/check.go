package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/server"
)

// newCheckCmd is `postern check --config FILE`: validate a configuration
// without serving, like sshd -t.
func newCheckCmd(g *globalFlags) *cobra.Command {
	var connect, quiet bool
	cmd := &cobra.Command{
		Use:   "check --config FILE [--connect]",
		Short: "Validate a configuration without serving (like sshd -t)",
		Long: `check reads the configuration as postern serve would and validates it without
serving: every key and value (errors name the file line and the key path),
the CA keys it names (they must parse and be readable), the files and keys
targets reference (known_hosts, private keys, subsystem programs), the
policy and the masking rules. With --connect it also reaches the state store
(without migrating it) and the recording store. It exits 0 when the
configuration would start, 1 otherwise, listing every problem. The Helm chart
runs it before a new version of the configuration is rolled out.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.Config == "" && !g.Dev {
				return fmt.Errorf("check needs --config FILE (or $POSTERN_CONFIG)")
			}
			cfg, err := loadConfig(g)
			if err == nil {
				err = server.Check(cmd.Context(), cfg, server.CheckOptions{Connect: connect})
			}
			if err != nil {
				return &usererr.Error{Exit: 1, Code: "config_invalid", Msg: configName(g) + " does not pass:\n  " + strings.ReplaceAll(err.Error(), "\n", "\n  "), Err: err}
			}
			if !quiet {
				fmt.Fprintf(g.stdout, "%s: OK (%d targets, %d roles, %d issuers)\n", configName(g), len(cfg.Targets), len(cfg.Roles), len(cfg.Identity.Issuers))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&connect, "connect", false, "also reach the state store and the recording store")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print nothing when the configuration is valid")
	return cmd
}

// configName names the configuration the flags select.
func configName(g *globalFlags) string {
	if g.Config != "" {
		return g.Config
	}
	return "the development configuration"
}
