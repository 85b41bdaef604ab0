package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/state"
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
            whose sshd must trust user certificates: TrustedUserCAKeys, with
            "AuthorizedPrincipalsCommand /bin/echo <target>:%u": see
            docs/security.md)
  --host    "@cert-authority * <key>" known_hosts lines of the host CA
  --target  authorized_keys lines of the target CA (put them in every target's
            TrustedUserCAKeys file)
  --audit   the audit signing key's public key(s), what 'postern audit verify
            --audit-key' trusts: give it to auditors through a channel of its
            own

Keys are read, never generated: run postern serve once first. With a
PostgreSQL state store, generated keys are read from it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(g)
			if err != nil {
				return err
			}
			var ks certs.KeyStore
			if cfg.SharedState() {
				// Replicas keep generated keys in the shared state store.
				st, err := state.Open(cmd.Context(), cfg.State, state.Options{})
				if err != nil {
					return fmt.Errorf("open state store: %w", err)
				}
				defer st.Close()
				ks = st
			}
			out, err := exportCA(cmd.Context(), cfg, ks, user, host, target, auditKey)
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
// Generated keys are read from ks (the shared state store) when it is not
// nil, else from the data directory.
func exportCA(ctx context.Context, cfg *config.Config, ks certs.KeyStore, user, host, target, auditKey bool) (string, error) {
	open := func(name string, c config.CA) (*certs.CA, error) {
		if ks != nil {
			return certs.OpenCAFrom(ctx, name, c, cfg.DataDir, ks)
		}
		return certs.OpenCA(name, c, cfg.DataDir)
	}
	switch {
	case auditKey:
		var k *certs.AuditKey
		var err error
		if ks != nil {
			k, err = certs.OpenAuditKeyFrom(ctx, cfg.CA.Audit, cfg.DataDir, ks)
		} else {
			k, err = certs.OpenAuditKey(cfg.CA.Audit, cfg.DataDir)
		}
		if err != nil {
			return "", err
		}
		return strings.Join(k.AuthorizedKeys(), "\n"), nil
	case user:
		ca, err := open(certs.CAUser, cfg.CA.User)
		if err != nil {
			return "", err
		}
		return strings.Join(ca.AuthorizedKeys(), "\n"), nil
	case host:
		ca, err := open(certs.CAHost, cfg.CA.Host)
		if err != nil {
			return "", err
		}
		return (&certs.Authority{Host: ca}).HostCALine(), nil
	case target:
		ca, err := open(certs.CATarget, cfg.CA.Target)
		if err != nil {
			return "", err
		}
		return strings.Join(ca.AuthorizedKeys(), "\n"), nil
	}
	return "", fmt.Errorf("choose one of --user, --host, --target or --audit")
}
