package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
)

// newCACmd is `postern ca`: export CA public keys, revoke certificates.
func newCACmd(g *globalFlags) *cobra.Command {
	c := &cobra.Command{
		Use:   "ca",
		Short: "Export certificate authority keys and revoke certificates",
		Args:  cobra.NoArgs,
	}
	c.AddCommand(newCAExportCmd(g), newCARevokeCmd(g))
	return c
}

// newCAExportCmd is `postern ca export --user|--host|--target|--audit`.
func newCAExportCmd(g *globalFlags) *cobra.Command {
	var user, host, target, auditKey bool
	c := &cobra.Command{
		Use:   "export --user|--host|--target|--audit",
		Short: "Print a CA's public key line(s) for sshd or known_hosts",
		Long: `Print the public key line(s) of one certificate authority, signing key first,
then any extra keys it still trusts during a rotation:

  --user    authorized_keys lines of the user CA (for targets marked passthrough,
            whose sshd must trust user certificates: TrustedUserCAKeys)
  --host    "@cert-authority * <key>" known_hosts lines of the host CA
  --target  authorized_keys lines of the target CA (put them in every target's
            TrustedUserCAKeys file)
  --audit   the audit signing key's public key(s), what 'postern audit verify
            --audit-key' trusts: give it to auditors through a channel of its
            own

Keys are read, never generated: run postern serve once first.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(g)
			if err != nil {
				return err
			}
			out, err := exportCA(cfg, user, host, target, auditKey)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), out)
			return err
		},
	}
	f := c.Flags()
	f.BoolVar(&user, "user", false, "the user CA (authorized_keys lines)")
	f.BoolVar(&host, "host", false, "the host CA (@cert-authority known_hosts lines)")
	f.BoolVar(&target, "target", false, "the target CA (authorized_keys lines for TrustedUserCAKeys)")
	f.BoolVar(&auditKey, "audit", false, "the audit signing key (public key lines for audit verify --audit-key)")
	c.MarkFlagsMutuallyExclusive("user", "host", "target", "audit")
	c.MarkFlagsOneRequired("user", "host", "target", "audit")
	return c
}

// exportCA returns the lines `ca export` prints for the selected CA.
func exportCA(cfg *config.Config, user, host, target, auditKey bool) (string, error) {
	switch {
	case auditKey:
		k, err := certs.OpenAuditKey(cfg.CA.Audit, cfg.DataDir)
		if err != nil {
			return "", err
		}
		return strings.Join(k.AuthorizedKeys(), "\n"), nil
	case user:
		ca, err := certs.OpenCA(certs.CAUser, cfg.CA.User, cfg.DataDir)
		if err != nil {
			return "", err
		}
		return strings.Join(ca.AuthorizedKeys(), "\n"), nil
	case host:
		ca, err := certs.OpenCA(certs.CAHost, cfg.CA.Host, cfg.DataDir)
		if err != nil {
			return "", err
		}
		return (&certs.Authority{Host: ca}).HostCALine(), nil
	case target:
		ca, err := certs.OpenCA(certs.CATarget, cfg.CA.Target, cfg.DataDir)
		if err != nil {
			return "", err
		}
		return strings.Join(ca.AuthorizedKeys(), "\n"), nil
	}
	return "", fmt.Errorf("choose one of --user, --host, --target or --audit")
}
