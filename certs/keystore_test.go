package certs

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/state"
	"golang.org/x/crypto/ssh"
)

// memKeyStore is a KeyStore in memory, counting generations.
type memKeyStore struct {
	mu        sync.Mutex
	m         map[string][]byte
	generated int
}

func (k *memKeyStore) Secret(_ context.Context, name string, gen func() ([]byte, error)) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if v, ok := k.m[name]; ok {
		return v, nil
	}
	v, err := gen()
	if err != nil {
		return nil, err
	}
	k.generated++
	k.m[name] = v
	return v, nil
}

func (k *memKeyStore) LookupSecret(_ context.Context, name string) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if v, ok := k.m[name]; ok {
		return v, nil
	}
	return nil, state.ErrNotFound
}

// TestLoadAuthorityFromKeyStore: replicas sharing a key store get the same
// generated CAs and write no private key to their data directories (only
// the public keys); a configured key and a key file left by an older
// postern take precedence; opening for export never generates.
func TestLoadAuthorityFromKeyStore(t *testing.T) {
	ctx := context.Background()
	ks := &memKeyStore{m: map[string][]byte{}}
	if _, err := OpenCAFrom(ctx, CAUser, config.CA{}, t.TempDir(), ks); err == nil || !strings.Contains(err.Error(), "start postern serve once") {
		t.Errorf("OpenCAFrom before any replica generated the key: %v", err)
	}
	dirA, dirB := t.TempDir(), t.TempDir()
	a, err := LoadAuthorityFrom(ctx, config.CAs{Target: config.CA{Algorithm: AlgorithmECDSAP256}}, dirA, ks)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadAuthorityFrom(ctx, config.CAs{Target: config.CA{Algorithm: AlgorithmECDSAP256}}, dirB, ks)
	if err != nil {
		t.Fatal(err)
	}
	if ks.generated != 4 {
		t.Errorf("generated %d keys; want 4 (one per CA and the audit key, shared)", ks.generated)
	}
	if !bytes.Equal(a.Audit.Trusted()[0].Marshal(), b.Audit.Trusted()[0].Marshal()) || !a.Audit.CanSign() {
		t.Error("replicas have different audit keys")
	}
	for _, pair := range [][2]*CA{{a.User, b.User}, {a.Host, b.Host}, {a.Target, b.Target}} {
		if !bytes.Equal(pair[0].PublicKey().Marshal(), pair[1].PublicKey().Marshal()) {
			t.Errorf("replicas have different %s CAs", pair[0].Name())
		}
	}
	if a.Target.PublicKey().Type() != ssh.KeyAlgoECDSA256 {
		t.Errorf("target CA is %s; want ECDSA P-256 as configured", a.Target.PublicKey().Type())
	}
	for _, dir := range []string{dirA, dirB} {
		names := dirNames(t, filepath.Join(dir, "ca"))
		if strings.Join(names, ",") != "audit_key.pub,host_ca.pub,target_ca.pub,user_ca.pub" {
			t.Errorf("%s/ca holds %v; want the public keys only", dir, names)
		}
	}
	pub, err := os.ReadFile(filepath.Join(dirA, "ca", "target_ca.pub"))
	if err != nil || !strings.HasPrefix(string(pub), keyLine(a.Target.PublicKey())) {
		t.Errorf("target_ca.pub = %q, %v", pub, err)
	}
	exp, err := OpenCAFrom(ctx, CAHost, config.CA{}, t.TempDir(), ks)
	if err != nil || !exp.IsTrusted(a.Host.PublicKey()) || exp.Signer() == nil {
		t.Errorf("OpenCAFrom after generation: %v", err)
	}
	// A configured algorithm that contradicts the stored key is refused.
	if _, err := LoadAuthorityFrom(ctx, config.CAs{User: config.CA{Algorithm: AlgorithmRSA3072}}, t.TempDir(), ks); err == nil ||
		!strings.Contains(err.Error(), "ca.user.algorithm is rsa-3072 but the key kept in the state store is ssh-ed25519") {
		t.Errorf("algorithm mismatch: %v", err)
	}

	// A key file left in the data directory by an older postern is used.
	legacy := t.TempDir()
	old, err := LoadCA(CAUser, config.CA{}, legacy)
	if err != nil {
		t.Fatal(err)
	}
	c, err := LoadAuthorityFrom(ctx, config.CAs{}, legacy, ks)
	if err != nil || !bytes.Equal(c.User.PublicKey().Marshal(), old.PublicKey().Marshal()) {
		t.Errorf("legacy user CA not used: %v", err)
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}
