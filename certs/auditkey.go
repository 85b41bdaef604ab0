package certs

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/internal/config"
)

// CAAudit names the audit signing key in configuration (ca.audit) and
// messages; its generated key file is <data_dir>/ca/audit_key.
const CAAudit = "audit"

// keyFileName is the generated key file of the key called name.
func keyFileName(name string) string {
	if name == CAAudit {
		return "audit_key"
	}
	return name + "_ca"
}

// AuditKey is the audit signing key: an ed25519 key of its own (never one of
// the CAs) that signs audit checkpoints and the digest records of sealed
// recordings, plus the public keys a verifier also accepts while a new key
// rolls out (ca.audit.trusted). It is loaded like a CA (inline key, key
// file, or generated in the data directory) and is safe for concurrent use.
type AuditKey struct {
	ca *CA
}

// LoadAuditKey loads the audit signing key from cfg (ca.audit), generating
// <dataDir>/ca/audit_key on first use. The key, and every trusted key, must
// be ed25519.
func LoadAuditKey(cfg config.CA, dataDir string) (*AuditKey, error) {
	return loadAuditKey(context.Background(), cfg, dataDir, nil, true)
}

// OpenAuditKey is LoadAuditKey for verifiers and `postern ca export
// --audit`: it never generates a key and falls back to the public key file
// when the private key is not readable (then the key cannot sign).
func OpenAuditKey(cfg config.CA, dataDir string) (*AuditKey, error) {
	return loadAuditKey(context.Background(), cfg, dataDir, nil, false)
}

// OpenAuditKeyFrom is OpenAuditKey for replicas sharing a state store: a
// generated key is read from ks (see LoadAuthorityFrom), never created.
func OpenAuditKeyFrom(ctx context.Context, cfg config.CA, dataDir string, ks KeyStore) (*AuditKey, error) {
	return loadAuditKey(ctx, cfg, dataDir, ks, false)
}

func loadAuditKey(ctx context.Context, cfg config.CA, dataDir string, ks KeyStore, generate bool) (*AuditKey, error) {
	if cfg.Algorithm != "" && cfg.Algorithm != AlgorithmEd25519 {
		return nil, errors.New("ca.audit.algorithm: the audit signing key is always ed25519")
	}
	ca, err := loadCA(ctx, CAAudit, cfg, dataDir, ks, generate)
	if err != nil {
		return nil, err
	}
	for i, k := range ca.trusted {
		if k.Type() != ssh.KeyAlgoED25519 {
			if i == 0 && ca.signer != nil {
				return nil, fmt.Errorf("ca.audit: the key at %s is %s; the audit signing key must be ed25519", ca.source, k.Type())
			}
			return nil, fmt.Errorf("ca.audit: trusted key %s is %s; audit keys are ed25519", ssh.FingerprintSHA256(k), k.Type())
		}
	}
	return &AuditKey{ca: ca}, nil
}

// CanSign reports whether the private key was loaded.
func (k *AuditKey) CanSign() bool { return k.ca.signer != nil }

// KeyID returns the SHA256 fingerprint of the signing key
// ("SHA256:…", as ssh-keygen -l prints it); signed records name their key
// by it.
func (k *AuditKey) KeyID() string { return ssh.FingerprintSHA256(k.ca.PublicKey()) }

// Sign returns the raw 64-byte Ed25519 signature of msg.
func (k *AuditKey) Sign(msg []byte) ([]byte, error) {
	if k.ca.signer == nil {
		return nil, fmt.Errorf("ca.audit: the private key at %s is not readable here", k.ca.source)
	}
	sig, err := k.ca.signer.Sign(rand.Reader, msg)
	if err != nil {
		return nil, fmt.Errorf("audit signature: %w", err)
	}
	return sig.Blob, nil
}

// Trusted returns every public key a verifier accepts, the signing key
// first.
func (k *AuditKey) Trusted() []ssh.PublicKey { return k.ca.Trusted() }

// AuthorizedKeys returns one "ssh-ed25519 AAAA… postern-audit-key" line per
// trusted key, signing key first: what `postern ca export --audit` prints
// and what `postern audit verify --audit-key` reads.
func (k *AuditKey) AuthorizedKeys() []string {
	lines := make([]string, 0, len(k.ca.trusted))
	for _, pub := range k.ca.trusted {
		lines = append(lines, keyLine(pub)+" postern-audit-key")
	}
	return lines
}
