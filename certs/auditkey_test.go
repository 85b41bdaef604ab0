package certs_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
)

// TestAuditKeyGenerated: the audit key is generated next to the CAs as
// ca/audit_key (0600, with a .pub), is its own key, signs raw Ed25519
// signatures, and is read back the same on the next load.
func TestAuditKeyGenerated(t *testing.T) {
	dir := t.TempDir()
	a, err := certs.LoadAuthority(config.CAs{}, dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "ca", "audit_key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("audit_key: %v, %v; want mode 0600", fi, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "ca", "audit_key.pub")); err != nil {
		t.Fatal(err)
	}
	pub := a.Audit.Trusted()[0]
	for _, ca := range []*certs.CA{a.User, a.Host, a.Target} {
		if ca.IsTrusted(pub) {
			t.Fatalf("the audit key is the %s CA's key", ca.Name())
		}
	}
	sig, err := a.Audit.Sign([]byte("message"))
	if err != nil {
		t.Fatal(err)
	}
	edPub := pub.(ssh.CryptoPublicKey).CryptoPublicKey().(ed25519.PublicKey)
	if !ed25519.Verify(edPub, []byte("message"), sig) {
		t.Error("Sign is not a plain Ed25519 signature")
	}
	if a.Audit.KeyID() != ssh.FingerprintSHA256(pub) || !strings.HasPrefix(a.Audit.KeyID(), "SHA256:") {
		t.Errorf("KeyID %q", a.Audit.KeyID())
	}
	again, err := certs.LoadAuditKey(config.CA{}, dir)
	if err != nil || again.KeyID() != a.Audit.KeyID() {
		t.Fatalf("reload: %v, %v", again, err)
	}
	lines := again.AuthorizedKeys()
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "ssh-ed25519 ") || !strings.HasSuffix(lines[0], " postern-audit-key") {
		t.Errorf("AuthorizedKeys = %q", lines)
	}
}

// TestAuditKeyRotationAndReadOnly: trusted keys are listed after the
// signing key; a reader that cannot read the private key gets the public
// key and cannot sign; OpenAuditKey never generates one.
func TestAuditKeyRotationAndReadOnly(t *testing.T) {
	dir := t.TempDir()
	old, err := certs.LoadAuditKey(config.CA{}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	k, err := certs.LoadAuditKey(config.CA{Trusted: old.AuthorizedKeys()}, dir)
	if err != nil {
		t.Fatal(err)
	}
	if tr := k.Trusted(); len(tr) != 2 || ssh.FingerprintSHA256(tr[1]) != old.KeyID() {
		t.Fatalf("trusted keys %d; want the signing key then the old one", len(tr))
	}
	if _, err := certs.OpenAuditKey(config.CA{}, t.TempDir()); err == nil || !strings.Contains(err.Error(), "no key") {
		t.Errorf("OpenAuditKey of an empty data dir: %v; want no key", err)
	}
	if os.Getuid() == 0 {
		return // root reads a 0000 file anyway
	}
	if err := os.Chmod(filepath.Join(dir, "ca", "audit_key"), 0); err != nil {
		t.Fatal(err)
	}
	ro, err := certs.OpenAuditKey(config.CA{}, dir)
	if err != nil || ro.CanSign() || ro.KeyID() != k.KeyID() {
		t.Fatalf("read-only open: %v, %v", ro, err)
	}
	if _, err := ro.Sign([]byte("x")); err == nil {
		t.Error("a public-only audit key signed")
	}
}

// TestAuditKeyRefusesOtherAlgorithms: the audit key and its trusted keys
// are ed25519 only.
func TestAuditKeyRefusesOtherAlgorithms(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(ec, "")
	if err != nil {
		t.Fatal(err)
	}
	ecSigner, _ := ssh.NewSignerFromKey(ec)
	tests := []struct {
		name string
		cfg  config.CA
		want string
	}{
		{"ecdsa key", config.CA{Key: string(pem.EncodeToMemory(block))}, "must be ed25519"},
		{"rsa algorithm", config.CA{Algorithm: "rsa-3072"}, "always ed25519"},
		{"ecdsa trusted key", config.CA{Trusted: []string{string(ssh.MarshalAuthorizedKey(ecSigner.PublicKey()))}}, "audit keys are ed25519"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := certs.LoadAuditKey(tt.cfg, t.TempDir())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v; want %q", err, tt.want)
			}
		})
	}
}
