package main

import (
	"fmt"
	"os/user"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/posternhq/postern/state"
)

// newCARevokeCmd is `postern ca revoke SERIAL [--reason R]`: it records the
// serial as revoked in the state store, which appends the cert.revoked audit
// event. The bastion checks every authentication against the store, so the
// certificate is refused from the next connection on, and open connections
// that use it end within a minute.
func newCARevokeCmd(g *globalFlags) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "revoke SERIAL",
		Short: "Revoke a user certificate by serial number",
		Long: `revoke records a certificate serial (decimal, as ssh-keygen -L -f CERT shows it
and as auth events report it) as revoked. The bastion refuses the certificate
from the next authentication on and closes connections that use it within a
minute. Revoking a serial twice keeps the first record.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			serial, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil || serial == 0 {
				return fmt.Errorf("%q is not a certificate serial (a positive decimal number, as ssh-keygen -L shows)", args[0])
			}
			cfg, err := loadConfig(g)
			if err != nil {
				return err
			}
			st, err := state.Open(cmd.Context(), cfg.State, state.Options{AuditFile: cfg.Audit.File})
			if err != nil {
				return fmt.Errorf("open state store: %w", err)
			}
			defer st.Close()
			by := "postern-cli"
			if u, err := user.Current(); err == nil {
				by = u.Username
			}
			// Revoke appends the cert.revoked audit event itself.
			if err := st.Revoke(cmd.Context(), serial, reason, by); err != nil {
				return fmt.Errorf("revoke: %w", err)
			}
			fmt.Fprintf(g.stdout, "revoked certificate serial %d\n", serial)
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why the certificate is revoked (recorded in the audit log)")
	return cmd
}
